//! Wiring only: parse the configuration, load the model, serve.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use model_service::app::{self, AppState};
use model_service::config::{Cli, Command, EvaluateArgs, LogFormat, ServeArgs, TrainArgs};
use model_service::dataset::Dataset;
use model_service::model::{Model, Scores, Version};
use model_service::train;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Serve(cli.serve)) {
        Command::Serve(args) => serve(args),
        Command::Train(args) => train_models(&args),
        Command::Evaluate(args) => evaluate(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!(error = %message, "model-service failed");
            eprintln!("model-service: {message}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    // A panic is a bug: make sure it reaches the structured log too.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!(panic = %info, "panic");
        default_hook(info);
    }));
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

fn serve(args: ServeArgs) -> Result<(), String> {
    init_logging(args.log_format);
    tracing::info!(
        service_version = env!("CARGO_PKG_VERSION"),
        model_version = %args.model_version,
        models_dir = %args.models_dir.display(),
        "starting model-service"
    );
    let drain = args.drain()?;
    let headers = args.headers.names().map_err(|e| e.to_string())?;
    let model = Model::load(&args.models_dir, args.model_version).map_err(|e| e.to_string())?;
    tracing::info!(
        version = %model.version,
        classifier = %model.classifier,
        accuracy = model.scores.accuracy,
        "model loaded"
    );
    let state = AppState::new(model, headers).map_err(|e| format!("metrics registry: {e}"))?;
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if args.threads > 0 {
        builder.worker_threads(args.threads);
    }
    let runtime = builder
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    runtime.block_on(async move {
        let addr = SocketAddr::new(args.host, args.port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        tracing::info!(%addr, "listening");
        app::serve(listener, state, app::shutdown_signal(), drain)
            .await
            .map_err(|e| format!("server error: {e}"))
    })
}

fn print_table(rows: &[(Version, String, Scores)]) {
    println!(
        "{:<8} {:<46} {:>9} {:>9} {:>9} {:>8}",
        "version", "classifier", "accuracy", "precision", "recall", "spam_f1"
    );
    for (version, classifier, m) in rows {
        println!(
            "{:<8} {:<46} {:>9.4} {:>9.4} {:>9.4} {:>8.4}",
            version.as_str(),
            classifier,
            m.accuracy,
            m.precision,
            m.recall,
            m.f1
        );
    }
}

fn train_models(args: &TrainArgs) -> Result<(), String> {
    let dataset = Dataset::load(&args.data.dataset_path()).map_err(|e| e.to_string())?;
    let versions = if args.versions.is_empty() {
        Version::ALL.to_vec()
    } else {
        args.versions.clone()
    };
    std::fs::create_dir_all(&args.data.models_dir)
        .map_err(|e| format!("create {}: {e}", args.data.models_dir.display()))?;
    let mut rows = Vec::new();
    for version in versions {
        let artifact = train::train(version, &dataset)
            .map_err(|e| format!("training {version} gave an invalid model: {e}"))?;
        let path = args.data.models_dir.join(version.file_name());
        let bytes = artifact
            .to_bytes()
            .map_err(|e| format!("serialise {version}: {e}"))?;
        std::fs::write(&path, bytes).map_err(|e| format!("write {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
        rows.push((version, artifact.classifier, artifact.scores));
    }
    print_table(&rows);
    Ok(())
}

fn evaluate(args: &EvaluateArgs) -> Result<(), String> {
    let dataset = Dataset::load(&args.data.dataset_path()).map_err(|e| e.to_string())?;
    let split = train::split(&dataset);
    println!(
        "test split: {} of {} messages (seed {}, stratified)",
        split.test.len(),
        dataset.messages.len(),
        model_service::dataset::SPLIT_SEED
    );
    let mut rows = Vec::new();
    for version in Version::ALL {
        let model = Model::load(&args.data.models_dir, version).map_err(|e| e.to_string())?;
        let scores = train::evaluate(&model, &dataset, &split);
        if scores != model.scores {
            println!("note: {version} scores differ from those recorded in its artifact");
        }
        rows.push((version, model.classifier.clone(), scores));
    }
    print_table(&rows);
    Ok(())
}
