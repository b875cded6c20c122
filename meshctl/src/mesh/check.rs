//! What Istio makes of the values, said for a person: `meshctl run
//! --check`, Istio's own messages, and what a proxy refused.

use std::net::Ipv4Addr;
use std::process::ExitCode;

use anyhow::{Context, bail};

use super::istio;
use super::run::{Inputs, preflight};
use super::state::ComponentState;
use super::{RunArgs, values};

/// `meshctl run --check`: Istio's validation and translation of the charts,
/// each proxy's configuration written to `<run-dir>/istio`.
pub fn check(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let inputs = Inputs::new(args.clone())?;
    preflight(&inputs.args, &inputs.istio)?;
    std::fs::create_dir_all(&inputs.run_dir)?;
    // The addresses the dump uses; nothing listens on them.
    let node_ip = Ipv4Addr::new(10, 244, 0, 1);
    let rendered = values::render(&inputs, &inputs.args.set)?;
    let files = rendered.write(&inputs, node_ip)?;
    let out = inputs.run_dir.join("istio");
    let _ = std::fs::remove_dir_all(&out);
    let mut command = std::process::Command::new(inputs.istio.istiod_local());
    command
        .arg("dump")
        .args(files.flags())
        .args(["--pod-cidr", "10.244.0.0/24", "--ca-dir"])
        .arg(inputs.run_dir.join("ca"))
        .arg("--bootstrap-template")
        .arg(inputs.istio.bootstrap_template())
        .arg("--out")
        .arg(&out);
    let output = command.output().context("run istiod-local dump")?;
    if !output.status.success() {
        bail!(
            "{}",
            istio_message(&String::from_utf8_lossy(&output.stderr))
        );
    }
    for finding in rendered.findings() {
        println!("  - {finding}");
    }
    println!(
        "Istio accepts the configuration; each proxy's bootstrap and xDS resources are in {}",
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The lines istiod-local printed about the input (Istio's messages),
/// without its runtime logging.
pub fn istio_message(log: &str) -> String {
    let lines: Vec<&str> = log
        .lines()
        .skip_while(|l| !l.starts_with("istiod-local:"))
        .filter(|l| !l.contains("\terror\t") && !l.contains("\twarn\t") && !l.contains("\tinfo\t"))
        .collect();
    if lines.is_empty() {
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(15)..].join("\n")
    } else {
        lines.join("\n")
    }
}

/// Explains each refusal with the proxy's own log: for a Wasm plugin, the
/// filter's message about its configuration.
pub fn rejections(rejected: &[istio::Rejection], components: &[ComponentState]) -> Vec<String> {
    rejected
        .iter()
        .map(|r| {
            let component = components
                .iter()
                .find(|c| c.pod.as_deref() == Some(r.proxy.as_str()) && c.kind.is_proxy());
            let name = component.map_or(r.proxy.as_str(), |c| c.name.as_str());
            // The filter's last word is the one about this configuration.
            let said: Option<String> = component
                .and_then(|c| std::fs::read_to_string(&c.log).ok())
                .and_then(|log| {
                    log.lines()
                        .filter_map(|l| l.split_once("wasm log").map(|(_, m)| m))
                        .next_back()
                        .map(|m| m.split_once(": ").map_or(m, |(_, m)| m).split('\t').next().unwrap_or(m).trim().to_string())
                });
            let mut line = format!("{name} ({}) refused its {} configuration: {}", r.proxy, r.kind, r.error);
            if let Some(last) = said {
                line.push_str(&format!("; the filter says: {last}"));
            }
            if r.kind == "ECDS" {
                line.push_str(
                    " (Envoy keeps the filter's earlier configuration; with none, it answers that filter's requests with 500, whatever the WasmPlugin's failStrategy)",
                );
            }
            line
        })
        .collect()
}
