//! Child processes of the local mesh: each in its own process group, logged
//! to its own file, killed with meshctl if meshctl itself dies.
//!
//! A process may run as a container would: inside a pod's network
//! namespace, as the pod spec's user, as PID 1 of its own PID namespace (so
//! that when it dies, everything it started dies with it, as Istio's agent
//! relies on for Envoy), with a termination signal for that PID 1 only.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    #[error("cannot open {path}: {source}")]
    Open {
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
    #[error("{name} was not ready ({what}) after {timeout:?}; see {log}")]
    NotReady {
        name: String,
        what: String,
        timeout: Duration,
        log: PathBuf,
    },
}

/// When a started process counts as up.
#[derive(Debug, Clone, PartialEq)]
pub enum Ready {
    /// Once this URL answers 200.
    Http(String),
    /// Once this file exists.
    File(PathBuf),
    /// Once it has exited with status 0 (an init container).
    Exited,
    /// As soon as it runs.
    Started,
}

/// A container's isolation: the pod's network namespace, the user and group
/// from its security context, and its working directory (the pod's root).
#[derive(Debug, Clone, Default)]
pub struct Isolation {
    /// `/proc/<pid>/ns/net` of the process holding the namespace.
    pub netns: Option<PathBuf>,
    pub user: Option<(u32, u32)>,
    pub cwd: Option<PathBuf>,
    /// Run as PID 1 of a new PID namespace.
    pub pid_namespace: bool,
}

/// How to start one component, so it can be restarted the same way.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Start with only `env` (a container's environment), not meshctl's.
    pub clear_env: bool,
    pub log: PathBuf,
    pub ready: Ready,
    pub isolation: Isolation,
}

pub struct Component {
    pub spec: Spec,
    child: Option<Child>,
    /// The last exit status seen, reported once.
    pub exited: Option<ExitStatus>,
}

/// util-linux's `unshare` and `setpriv`: PID namespace, then the user
/// switch, then the parent-death signal (a credential change clears it, so
/// it must come last).
const UNSHARE: &str = "unshare";
const SETPRIV: &str = "setpriv";

impl Spec {
    fn command(&self) -> Result<Command, SuperviseError> {
        let iso = &self.isolation;
        let mut argv: Vec<String> = Vec::new();
        if iso.pid_namespace {
            argv.extend([UNSHARE, "--pid", "--kill-child=KILL", "--"].map(String::from));
        }
        if let Some((uid, gid)) = iso.user {
            argv.extend([
                SETPRIV.to_string(),
                format!("--reuid={uid}"),
                format!("--regid={gid}"),
                "--clear-groups".into(),
                "--pdeathsig=KILL".into(),
                "--".into(),
            ]);
        }
        let mut command = match argv.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&self.program);
                c
            }
            None => Command::new(&self.program),
        };
        command.args(&self.args);
        if self.clear_env {
            command.env_clear();
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(cwd) = &iso.cwd {
            command.current_dir(cwd);
        }
        let netns = match &iso.netns {
            Some(path) => Some(File::open(path).map_err(|source| SuperviseError::Open {
                path: path.clone(),
                source,
            })?),
            None => None,
        };
        let meshctl = nix::unistd::getpid();
        // SAFETY: only async-signal-safe calls (setns, then die_with's) run
        // between fork and exec; the namespace file is opened before fork.
        unsafe {
            command.pre_exec(move || {
                if let Some(ns) = &netns {
                    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
                }
                die_with(meshctl)
            });
        }
        Ok(command)
    }
}

/// Makes the kernel kill the calling process when `parent` (meshctl) dies,
/// even without cleaning up. For `pre_exec`: only async-signal-safe calls
/// (prctl, getppid) and no allocation.
pub(super) fn die_with(parent: Pid) -> std::io::Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
    // The parent may have died before the line above ran. std hands only
    // the errno to the parent, so a message would be lost anyway.
    if nix::unistd::getppid() != parent {
        return Err(nix::errno::Errno::EINVAL.into());
    }
    Ok(())
}

impl Component {
    pub fn new(spec: Spec) -> Component {
        Component {
            spec,
            child: None,
            exited: None,
        }
    }

    /// The pid meshctl started (a PID-namespace wrapper, for containers).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The process the component is about: the container's PID 1 when it
    /// runs in its own PID namespace, else the process itself.
    pub fn main_pid(&self) -> Option<u32> {
        let pid = self.pid()?;
        if !self.spec.isolation.pid_namespace {
            return Some(pid);
        }
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
        children.split_whitespace().next()?.parse().ok()
    }

    /// Starts the process (stdout and stderr appended to its log).
    pub fn start(&mut self) -> Result<(), SuperviseError> {
        let spec = &self.spec;
        let open = |path: &Path| {
            File::options()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| SuperviseError::Open {
                    path: path.to_path_buf(),
                    source,
                })
        };
        let mut command = spec.command()?;
        command
            .stdin(Stdio::null())
            .stdout(open(&spec.log)?)
            .stderr(open(&spec.log)?)
            .process_group(0);
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

    /// Waits until the component is ready (see [`Ready`]), the process
    /// exits, or `timeout` passes. Gives up early, without error, once
    /// `cancel` is set (Ctrl-C).
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
                if self.spec.ready == Ready::Exited && status.success() {
                    return Ok(());
                }
                return Err(SuperviseError::Exited {
                    name: self.spec.name.clone(),
                    status,
                    log: self.spec.log.clone(),
                });
            }
            if cancel.load(Ordering::Relaxed) {
                return Ok(());
            }
            let ready = match &self.spec.ready {
                Ready::Http(url) => agent.get(url).call().is_ok_and(|r| r.status() == 200),
                Ready::File(path) => path.exists(),
                Ready::Started => true,
                Ready::Exited => false,
            };
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(SuperviseError::NotReady {
                    name: self.spec.name.clone(),
                    what: match &self.spec.ready {
                        Ready::Http(url) => format!("{url} did not answer 200"),
                        Ready::File(path) => format!("{} did not appear", path.display()),
                        _ => "it did not finish".into(),
                    },
                    timeout,
                    log: self.spec.log.clone(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Asks the process to stop: SIGTERM to its main process only (as the
    /// kubelet signals a container's PID 1, which then drains what it runs).
    pub fn terminate(&self) {
        if let Some(pid) = self.main_pid() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
    }

    /// Stops the whole process group: SIGTERM to the main process, then
    /// SIGKILL to the group after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        self.terminate();
        self.finish(grace);
    }

    /// Waits up to `grace` for an exit after [`Component::terminate`], then
    /// kills whatever is left of the group.
    pub fn finish(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = Pid::from_raw(child.id() as i32);
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

/// Stops components together: all are signalled first, then each gets up to
/// `grace` (so shutting down a mesh takes one grace period, not one each).
pub fn stop_all(components: &mut [Component], grace: Duration) {
    for component in components.iter() {
        component.terminate();
    }
    let deadline = Instant::now() + grace;
    for component in components.iter_mut() {
        component.finish(deadline.saturating_duration_since(Instant::now()));
    }
}

/// Truncates a log so each run starts with a fresh one.
pub fn fresh_log(path: &Path) -> Result<(), SuperviseError> {
    File::create(path)
        .map(drop)
        .map_err(|source| SuperviseError::Open {
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
            clear_env: false,
            log: dir.join("sh.log"),
            ready: Ready::Http("http://127.0.0.1:1/never".into()),
            isolation: Isolation::default(),
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
            "trap 'exit 0' TERM; echo $GREETING; sleep 30 & echo $! > {}; wait",
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

    #[test]
    fn an_init_container_is_ready_when_it_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let mut ok = spec(dir.path(), "exit 0");
        ok.ready = Ready::Exited;
        let mut component = Component::new(ok);
        component.start().unwrap();
        component
            .wait_ready(Duration::from_secs(5), &AtomicBool::new(false))
            .unwrap();
    }

    #[test]
    fn a_container_gets_only_its_own_environment() {
        let dir = tempfile::tempdir().unwrap();
        let mut container = spec(dir.path(), "echo \"[$GREETING][$HOME]\"");
        container.clear_env = true;
        container.ready = Ready::Exited;
        let mut component = Component::new(container);
        component.start().unwrap();
        component
            .wait_ready(Duration::from_secs(5), &AtomicBool::new(false))
            .unwrap();
        let log = std::fs::read_to_string(dir.path().join("sh.log")).unwrap();
        assert_eq!(log.trim(), "[hello][]");
    }
}
