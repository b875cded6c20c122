//! `meshctl image`: the filter and the model-service as OCI images, built
//! without a container engine, reproducibly, and pushed with skopeo.
//!
//! `build` writes two OCI image layouts (`<out>/sms-checker-filter`,
//! `<out>/model-service`); `push` copies them to a registry and prints the
//! digests and the chart's `--set` flags that pin them.

mod layer;
mod layout;
mod push;
pub mod spec;

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgAction, Args, Subcommand};

use crate::workspace;
use layout::Layout;
use push::Registry;

/// Repository names, as the chart's defaults spell them
/// (`filter.url`, `modelService.image.repository`).
pub const FILTER_IMAGE: &str = "sms-checker-filter";
pub const MODEL_SERVICE_IMAGE: &str = "model-service";
/// The chart's `gate.image.repository` default.
pub const MESHCTL_IMAGE: &str = "meshctl";

#[derive(Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Build both images as OCI layouts on disk (same inputs, same digests)
    Build(BuildArgs),
    /// Push the built layouts with skopeo; print digests and chart values
    Push(PushArgs),
}

#[derive(Args)]
struct BuildArgs {
    /// The filter module (`make wasm`)
    #[arg(long, default_value = workspace::FILTER_WASM)]
    filter_wasm: PathBuf,
    /// The model-service binary, statically linked (x86_64-unknown-linux-musl)
    #[arg(long, default_value = workspace::MODEL_SERVICE_MUSL_BIN)]
    model_service_bin: PathBuf,
    /// The trained models, copied to /models in the image
    #[arg(long, default_value = workspace::MODELS_DIR)]
    models_dir: PathBuf,
    /// meshctl built statically (x86_64-unknown-linux-musl), for the gate's
    /// image; without it only the filter and model-service images are built
    #[arg(long)]
    meshctl_bin: Option<PathBuf>,
    /// Where the layouts go
    #[arg(long, default_value = workspace::IMAGES_DIR)]
    out: PathBuf,
    /// Tag recorded in each layout
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    tag: String,
}

#[derive(Args)]
struct PushArgs {
    /// Destination: host[:port][/namespace], e.g. 127.0.0.1:5000/sms-checker
    #[arg(long)]
    registry: Registry,
    /// Where `build` wrote the layouts
    #[arg(long, default_value = workspace::IMAGES_DIR)]
    images: PathBuf,
    /// Tag to push (the one the layouts were built with)
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    tag: String,
    /// Require HTTPS with verified certificates (false for a local registry)
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    tls_verify: bool,
    /// The skopeo binary
    #[arg(long, default_value = "skopeo")]
    skopeo: PathBuf,
}

/// Failures of building or pushing an image, each naming what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{what} not found at {path} ({hint})", path = path.display())]
    MissingInput {
        what: &'static str,
        path: PathBuf,
        hint: &'static str,
    },
    #[error("{path} is not a WebAssembly module (no \\0asm header)", path = path.display())]
    NotWasm { path: PathBuf },
    #[error("{path} cannot run in a scratch image: {reason}", path = path.display())]
    NotStatic { path: PathBuf, reason: String },
    #[error("models directory {path} holds no files", path = path.display())]
    EmptyModels { path: PathBuf },
    #[error("cannot put {path} into an image: {reason}", path = path.display())]
    UnsupportedEntry { path: PathBuf, reason: &'static str },
    #[error("{path}: {source}", path = path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("layer archive: {0}")]
    Layer(#[from] std::io::Error),
    #[error("serializing image JSON: {0}")]
    Json(serde_json::Error),
    #[error("invalid OCI document: {0}")]
    Spec(String),
    #[error("{path} is not an OCI image layout (no oci-layout file; run `make images`)", path = path.display())]
    NotALayout { path: PathBuf },
    #[error("{path} has no image tagged {tag:?} (built with another --tag?)", path = path.display())]
    TagNotFound { path: PathBuf, tag: String },
    #[error("blob {path} does not match its digest {expected} (found {actual})", path = path.display())]
    DigestMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("the filter image in {path} holds no plugin.wasm", path = path.display())]
    NoPluginWasm { path: PathBuf },
    #[error("invalid registry {value:?}: {reason}")]
    InvalidRegistry { value: String, reason: &'static str },
    #[error("invalid tag {tag:?}: use letters, digits, '_', '.', '-' (not first), at most 128")]
    InvalidTag { tag: String },
    #[error("skopeo failed: {detail}\n  command: {command}")]
    Skopeo { command: String, detail: String },
    #[error("{destination} has digest {pushed}, but the built image is {built}")]
    PushedDigestChanged {
        destination: String,
        built: String,
        pushed: String,
    },
}

pub fn run(args: ImageArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        ImageCommand::Build(args) => build(&args)?,
        ImageCommand::Push(args) => push(&args)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn build(args: &BuildArgs) -> Result<(), ImageError> {
    push::check_tag(&args.tag)?;
    let filter = spec::filter(&args.filter_wasm)?;
    let model_service = spec::model_service(&args.model_service_bin, &args.models_dir)?;
    let meshctl = args.meshctl_bin.as_deref().map(spec::meshctl).transpose()?;
    let mut images = vec![
        (FILTER_IMAGE, &filter),
        (MODEL_SERVICE_IMAGE, &model_service),
    ];
    images.extend(meshctl.as_ref().map(|image| (MESHCTL_IMAGE, image)));
    for (name, image) in images {
        let dir = args.out.join(name);
        let written = layout::write(&dir, &args.tag, image)?;
        println!(
            "{name:<20} {}  oci:{}:{}",
            written.manifest_digest,
            dir.display(),
            args.tag
        );
    }
    let wasm = wasm_in_layout(&Layout::open(&args.out.join(FILTER_IMAGE))?, &args.tag)?;
    println!(
        "{:<20} sha256:{}",
        spec::FILTER_FILE,
        layer::sha256_hex(&wasm)
    );
    Ok(())
}

/// `plugin.wasm` out of the filter layout's (last) layer, the way Istio's
/// fetcher finds it.
fn wasm_in_layout(layout: &Layout, tag: &str) -> Result<Vec<u8>, ImageError> {
    let (_, manifest) = layout.manifest(tag)?;
    let no_wasm = || ImageError::NoPluginWasm {
        path: layout.dir().to_path_buf(),
    };
    let last = manifest.layers().last().ok_or_else(no_wasm)?;
    let blob = layout.blob(last.digest())?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(blob.as_slice()));
    for entry in archive.entries()? {
        let mut entry = entry?;
        let is_wasm = entry
            .path()?
            .file_name()
            .is_some_and(|name| name == spec::FILTER_FILE);
        if is_wasm {
            let mut wasm = Vec::new();
            entry.read_to_end(&mut wasm)?;
            return Ok(wasm);
        }
    }
    Err(no_wasm())
}

fn push(args: &PushArgs) -> Result<(), ImageError> {
    push::check_tag(&args.tag)?;
    let (filter_repo, filter_digest) = push_one(args, FILTER_IMAGE)?;
    let (model_repo, model_digest) = push_one(args, MODEL_SERVICE_IMAGE)?;
    // meshctl's image when `build` made one (`--meshctl-bin`).
    let gate = if args.images.join(MESHCTL_IMAGE).exists() {
        Some(push_one(args, MESHCTL_IMAGE)?)
    } else {
        None
    };
    println!();
    println!("Pin them in the chart (helm upgrade --install ... with):");
    let mut flags = push::chart_set_flags(&filter_repo, &filter_digest, &model_repo, &model_digest);
    if let Some((repo, digest)) = gate {
        flags.extend(push::gate_set_flags(&repo, &digest));
    }
    println!("  {}", flags.join(" \\\n  "));
    Ok(())
}

/// Pushes one layout; returns the repository and the digest it now has there.
fn push_one(args: &PushArgs, name: &str) -> Result<(String, String), ImageError> {
    let dir = args.images.join(name);
    let layout = Layout::open(&dir)?;
    let (descriptor, _) = layout.manifest(&args.tag)?;
    let built = descriptor.digest().to_string();
    let destination = format!("{}/{name}", args.registry);
    let digest = push::skopeo_copy(&args.skopeo, &dir, &destination, &args.tag, args.tls_verify)?;
    if digest != built {
        return Err(ImageError::PushedDigestChanged {
            destination,
            built,
            pushed: digest,
        });
    }
    println!("pushed {destination}:{}", args.tag);
    println!("  digest       {digest}");
    if name == FILTER_IMAGE {
        let wasm = wasm_in_layout(&layout, &args.tag)?;
        println!(
            "  plugin.wasm  sha256:{}  (the module's bytes)",
            layer::sha256_hex(&wasm)
        );
    }
    Ok((destination, digest))
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const MODULE: &[u8] = b"\0asm\x01\0\0\0module";

    /// Builds both layouts from stand-in inputs (a minimal static ELF).
    fn built(tmp: &std::path::Path) -> PathBuf {
        let wasm = tmp.join("m.wasm");
        fs::write(&wasm, MODULE).expect("wasm");
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        let binary = tmp.join("model-service");
        fs::write(&binary, elf).expect("binary");
        let models = tmp.join("models");
        fs::create_dir_all(&models).expect("models");
        fs::write(models.join("v1.json"), b"{}").expect("model");
        let meshctl = tmp.join("meshctl");
        fs::copy(&binary, &meshctl).expect("meshctl");
        let out = tmp.join("images");
        build(&BuildArgs {
            filter_wasm: wasm,
            model_service_bin: binary,
            meshctl_bin: Some(meshctl),
            models_dir: models,
            out: out.clone(),
            tag: "t".to_string(),
        })
        .expect("build");
        out
    }

    /// A stand-in for skopeo: a shell script with the given body.
    fn fake_skopeo(tmp: &std::path::Path, body: &str) -> PathBuf {
        let path = tmp.join("skopeo");
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("script");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    fn push_args(images: PathBuf, skopeo: PathBuf) -> PushArgs {
        PushArgs {
            registry: "127.0.0.1:1/ns".parse().expect("registry"),
            images,
            tag: "t".to_string(),
            tls_verify: false,
            skopeo,
        }
    }

    #[test]
    fn the_module_comes_back_out_of_the_layout() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let out = built(tmp.path());
        let layout = Layout::open(&out.join(FILTER_IMAGE)).expect("open");
        assert_eq!(wasm_in_layout(&layout, "t").expect("wasm"), MODULE);
        let model = Layout::open(&out.join(MODEL_SERVICE_IMAGE)).expect("open");
        assert!(matches!(
            wasm_in_layout(&model, "t"),
            Err(ImageError::NoPluginWasm { .. })
        ));
    }

    // meshctl's image: the binary at /meshctl, run as the non-root user,
    // exposing the gate's port; nothing else in its one layer.
    #[test]
    fn the_meshctl_image_runs_the_gate() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let out = built(tmp.path());
        let layout = Layout::open(&out.join(MESHCTL_IMAGE)).expect("open");
        let (_, manifest) = layout.manifest("t").expect("manifest");
        let config: serde_json::Value =
            serde_json::from_slice(&layout.blob(manifest.config().digest()).expect("config"))
                .expect("config JSON");
        let process = &config["config"];
        assert_eq!(process["Entrypoint"], serde_json::json!(["/meshctl"]));
        assert_eq!(process["User"], "65532:65532");
        assert!(
            process["ExposedPorts"].get("8090/tcp").is_some(),
            "{process}"
        );
        assert_eq!(manifest.layers().len(), 1);
        let blob = layout.blob(manifest.layers()[0].digest()).expect("layer");
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(blob.as_slice()));
        let paths: Vec<String> = archive
            .entries()
            .expect("entries")
            .map(|e| {
                e.expect("entry")
                    .path()
                    .expect("path")
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(paths, ["meshctl"]);
    }

    #[test]
    fn a_registry_that_changes_the_digest_is_an_error() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let out = built(tmp.path());
        let other = format!("sha256:{}", "0".repeat(64));
        let skopeo = fake_skopeo(
            tmp.path(),
            &format!(
                "while [ $# -gt 0 ]; do [ \"$1\" = --digestfile ] && echo {other} > \"$2\"; shift; done"
            ),
        );
        let err = push(&push_args(out, skopeo)).expect_err("digest changed");
        match err {
            ImageError::PushedDigestChanged {
                destination,
                pushed,
                ..
            } => {
                assert_eq!(destination, "127.0.0.1:1/ns/sms-checker-filter");
                assert_eq!(pushed, other);
            }
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn skopeo_failures_carry_its_message() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let out = built(tmp.path());
        let skopeo = fake_skopeo(
            tmp.path(),
            "echo 'unauthorized: authentication required' >&2; exit 1",
        );
        let err = push(&push_args(out, skopeo)).expect_err("skopeo failed");
        let message = err.to_string();
        assert!(
            message.contains("unauthorized: authentication required"),
            "{message}"
        );
        assert!(
            message.contains("docker://127.0.0.1:1/ns/sms-checker-filter:t"),
            "{message}"
        );
    }

    #[test]
    fn pushing_before_building_says_what_to_run() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let err = push(&push_args(
            tmp.path().join("nothing"),
            PathBuf::from("skopeo"),
        ))
        .expect_err("no layouts");
        assert!(err.to_string().contains("run `make images`"), "{err}");
    }
}
