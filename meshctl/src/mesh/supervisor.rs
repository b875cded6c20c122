//! Child processes of the local mesh: each in its own process group, logged
//! to its own file, killed with meshctl if meshctl itself dies.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    #[error("cannot open log {path}: {source}")]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start {name} ({program}): {source}")]
    Spawn {
        name: String,
        program: String,
        source: std::io::Error,
    },
    #[error("{name} exited ({status}) before it was ready; see {log}")]
    Exited {
        name: String,
        status: ExitStatus,
        log: PathBuf,
    },
    #[error("{name} was not ready at {url} after {timeout:?}; see {log}")]
    NotReady {
        name: String,
        url: String,
        timeout: Duration,
        log: PathBuf,
    },
}

/// How to start one component, so it can be restarted the same way.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
    /// Polled until it answers 200 before the component counts as up.
    pub ready_url: String,
}

pub struct Component {
    pub spec: Spec,
    child: Option<Child>,
    /// The last exit status seen, reported once.
    pub exited: Option<ExitStatus>,
}

impl Component {
    pub fn new(spec: Spec) -> Component {
        Component {
            spec,
            child: None,
            exited: None,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the process (stdout and stderr appended to its log).
    pub fn start(&mut self) -> Result<(), SuperviseError> {
        let spec = &self.spec;
        let log = File::options()
            .create(true)
            .append(true)
            .open(&spec.log)
            .map_err(|source| SuperviseError::Log {
                path: spec.log.clone(),
                source,
            })?;
        let err = log.try_clone().map_err(|source| SuperviseError::Log {
            path: spec.log.clone(),
            source,
        })?;
        let mut command = Command::new(&spec.program);
        command
            .args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0);
        // SAFETY: only async-signal-safe calls (prctl, getppid) run between
        // fork and exec.
        #[cfg(target_os = "linux")]
        {
            let meshctl = nix::unistd::getpid();
            unsafe {
                command.pre_exec(move || {
                    // If meshctl dies without cleaning up, the kernel kills the child.
                    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                    // meshctl may have died before the line above ran.
                    if nix::unistd::getppid() != meshctl {
                        return Err(std::io::Error::other("meshctl exited during start"));
                    }
                    Ok(())
                });
            }
        }
        let child = command.spawn().map_err(|source| SuperviseError::Spawn {
            name: spec.name.clone(),
            program: spec.program.display().to_string(),
            source,
        })?;
        self.child = Some(child);
        self.exited = None;
        Ok(())
    }

    /// `Some(status)` the first time the process is seen to have exited.
    pub fn poll_exit(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = child.try_wait().ok().flatten()?;
        self.child = None;
        self.exited = Some(status);
        Some(status)
    }

    /// Polls the ready URL until it answers 200, the process exits, or
    /// `timeout` passes.
    /// Gives up early, without error, once `cancel` is set (Ctrl-C).
    pub fn wait_ready(
        &mut self,
        timeout: Duration,
        cancel: &AtomicBool,
    ) -> Result<(), SuperviseError> {
        let deadline = Instant::now() + timeout;
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(1)))
            .http_status_as_error(false)
            .build()
            .new_agent();
        loop {
            if let Some(status) = self.poll_exit() {
                return Err(SuperviseError::Exited {
                    name: self.spec.name.clone(),
                    status,
                    log: self.spec.log.clone(),
                });
            }
            if cancel.load(Ordering::Relaxed) {
                return Ok(());
            }
            if agent
                .get(&self.spec.ready_url)
                .call()
                .is_ok_and(|r| r.status() == 200)
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(SuperviseError::NotReady {
                    name: self.spec.name.clone(),
                    url: self.spec.ready_url.clone(),
                    timeout,
                    log: self.spec.log.clone(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the whole process group: SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = Pid::from_raw(child.id() as i32);
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.exited = Some(status);
                // Children of the child may linger in the group.
                let _ = killpg(group, Signal::SIGKILL);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = killpg(group, Signal::SIGKILL);
        self.exited = child.wait().ok();
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// Truncates a log so each run starts with a fresh one.
pub fn fresh_log(path: &Path) -> Result<(), SuperviseError> {
    File::create(path)
        .map(drop)
        .map_err(|source| SuperviseError::Log {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path, script: &str) -> Spec {
        Spec {
            name: "sh".into(),
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![("GREETING".into(), "hello".into())],
            log: dir.join("sh.log"),
            ready_url: "http://127.0.0.1:1/never".into(),
        }
    }

    /// Running, not a zombie waiting for a reaper.
    fn alive(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit(')')
                .next()
                .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
        })
    }

    #[test]
    fn logs_output_and_stops_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        // The shell starts a grandchild in the same group; stop must end both.
        let grandchild_file = dir.path().join("grandchild");
        let script = format!(
            "echo $GREETING; sleep 30 & echo $! > {}; wait",
            grandchild_file.display()
        );
        let mut component = Component::new(spec(dir.path(), &script));
        component.start().unwrap();
        let pid = component.pid().unwrap();
        let start = Instant::now();
        let grandchild: u32 = loop {
            if let Some(pid) = std::fs::read_to_string(&grandchild_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                break pid;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "grandchild never started"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        component.stop(Duration::from_secs(2));
        assert!(component.exited.is_some());
        assert!(!alive(pid));
        std::thread::sleep(Duration::from_millis(100));
        assert!(!alive(grandchild), "grandchild {grandchild} survived");
        let log = std::fs::read_to_string(dir.path().join("sh.log")).unwrap();
        assert!(log.starts_with("hello"), "{log}");
    }

    #[test]
    fn a_process_that_exits_early_is_not_ready() {
        let dir = tempfile::tempdir().unwrap();
        let mut component = Component::new(spec(dir.path(), "exit 3"));
        component.start().unwrap();
        let err = component
            .wait_ready(Duration::from_secs(5), &AtomicBool::new(false))
            .unwrap_err();
        assert!(matches!(err, SuperviseError::Exited { .. }), "{err}");
        assert!(err.to_string().contains("sh.log"));
    }
}
