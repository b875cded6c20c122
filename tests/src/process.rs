//! Child processes that cannot outlive the test that started them.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;

/// A running process in its own process group, its output in a log file.
/// Dropping it stops the whole group (SIGTERM, then SIGKILL after 5 s), so a
/// failing assertion leaves nothing behind.
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `command` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Process {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|err| panic!("open log {}: {err}", log.display()));
        let err = out.try_clone().expect("clone log file handle");
        command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("start {name} ({command:?}): {err}"));
        Process {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The log so far, for assertions and failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `Some(exit status)` once the process has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends `signal` to the process group.
    pub fn signal(&self, signal: Signal) {
        let _ = killpg(Pid::from_raw(self.child.id() as i32), signal);
    }

    /// Stops the process group and waits for it; returns its exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        if let Some(status) = self.try_wait() {
            return Some(status);
        }
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.signal(Signal::SIGKILL);
        self.child.wait().ok()
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The release model-service serving `version` on a free 127.0.0.1 port,
/// configured through its environment, its log in `log_dir/service.log`.
/// Returns once `/ready` answers, with `http://127.0.0.1:<port>`.
pub fn start_model_service(version: &str, log_dir: &Path) -> (Process, String) {
    use model_service::config::env;

    let port = crate::free_port();
    let mut command = Command::new(crate::model_service_bin());
    command
        .arg("serve")
        .env(env::MODEL_VERSION, version)
        .env(env::SERVER_HOST, "127.0.0.1")
        .env(env::SERVER_PORT, port.to_string())
        .env(
            env::MODELS_DIR,
            crate::workspace_root().join(meshctl::workspace::MODELS_DIR),
        )
        // Warnings and panics only: schemathesis sends thousands of requests.
        .env("RUST_LOG", "warn");
    let service = Process::spawn("model-service", command, &log_dir.join("service.log"));
    let base = format!("http://127.0.0.1:{port}");
    crate::wait_for("model-service /ready", Duration::from_secs(30), || {
        ureq::get(format!("{base}/ready")).call().ok()
    });
    (service, base)
}
