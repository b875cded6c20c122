//! Shared support for the end-to-end tests: where the tools and data are,
//! free loopback ports, and processes that are always stopped.

pub mod alerts;
pub mod browser;
pub mod chart;
pub mod envoy;
pub mod http;
pub mod mesh;
pub mod process;
pub mod receiver;
pub mod rendered;
pub mod report;
pub mod schemas;
pub mod users;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use meshctl::workspace;

/// The workspace root (the folder holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits inside the workspace")
        .to_path_buf()
}

/// `$SMS_SHARED_DIR`, else `../shared` beside the checkout (the
/// model-service's, whose dataset lives there).
pub use model_service::dataset::shared_dir;

/// A tool installed by `make tools`: `$ENV_VAR` if set, else `default` under
/// the workspace root. Fails loudly rather than skipping: a missing tool is a
/// broken set-up, not a passing test.
pub fn tool(env_var: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(env_var)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(default));
    assert!(
        path.exists(),
        "{default} not found at {} (set {env_var}, or build it: `make tools`, `make wasm`, ...; see `make help`)",
        path.display()
    );
    path
}

pub fn envoy_bin() -> PathBuf {
    tool("ENVOY_BIN", workspace::ENVOY)
}

pub fn helm_bin() -> PathBuf {
    tool("HELM_BIN", workspace::HELM)
}

/// The cohort filter module (`make wasm`).
pub fn filter_wasm() -> PathBuf {
    tool("FILTER_WASM", workspace::FILTER_WASM)
}

/// The model-service binary (release build, `make model-service`).
pub fn model_service_bin() -> PathBuf {
    tool("MODEL_SERVICE_BIN", workspace::MODEL_SERVICE_BIN)
}

/// Istio's control plane, agent, charts and bootstrap template (`make istio`).
pub fn istio_dir() -> PathBuf {
    tool("ISTIO_DIR", workspace::ISTIO_DIR)
}

/// The `meshctl` binary (`make meshctl`).
pub fn meshctl_bin() -> PathBuf {
    tool("MESHCTL_BIN", "target/debug/meshctl")
}

/// The value the workspace's Makefile gives `variable`, as `make` itself
/// expands it, with any value of it in this process's environment left out
/// (so a `?=` default shows).
pub fn make_variable(variable: &str) -> String {
    let output = std::process::Command::new("make")
        .current_dir(workspace_root())
        .args(["--no-print-directory", "--silent", "--eval"])
        .arg(format!(
            "print-make-variable: ; @printf '%s\\n' '$({variable})'"
        ))
        .arg("print-make-variable")
        // A make running these tests passes its own flags down; this one
        // only reads the Makefile.
        .env_remove(variable)
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("MAKELEVEL")
        .output()
        .expect("run make");
    assert!(
        output.status.success(),
        "make could not print {variable}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .trim_end()
        .to_string()
}

/// The first value of header `name` in `headers` (names lower-cased).
pub fn header_value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// A port that was free on 127.0.0.1 a moment ago (the kernel picks it, so
/// tests can run beside each other on a busy machine).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("bind an ephemeral port on 127.0.0.1")
}

/// Polls `check` every 50 ms until it returns `Some`, or panics with `what`
/// after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a finished command printed, stdout then stderr, for messages.
pub fn printed(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
