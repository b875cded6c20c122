//! The local mesh leaves nothing behind: Ctrl-C stops every process, and
//! if meshctl itself is killed its children die with it.

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sms_checker_tests::mesh::{LocalMesh, MeshOptions, parallel, pid_alive, predict};
use sms_checker_tests::wait_for;

fn component_pids(mesh: &LocalMesh) -> Vec<(String, u32)> {
    let pids: Vec<(String, u32)> = mesh
        .components()
        .into_iter()
        .map(|c| {
            (
                c.name.clone(),
                c.pid.unwrap_or_else(|| panic!("{} has no pid", c.name)),
            )
        })
        .collect();
    // Gateway, Prometheus, and a sidecar and a service per version.
    assert_eq!(pids.len(), 8, "{pids:?}");
    for (name, pid) in &pids {
        assert!(pid_alive(*pid), "{name} ({pid}) is not running");
    }
    pids
}

#[test]
fn ctrl_c_stops_every_process_and_each_logged_to_its_own_file() {
    let mut mesh = LocalMesh::start(&[]);
    let output = mesh.output();
    for url in ["/sms", "/stats/prometheus", "/metrics"] {
        assert!(
            output.contains(url),
            "meshctl prints the {url} URLs:\n{output}"
        );
    }
    let pids = component_pids(&mesh);
    for component in mesh.components() {
        let log = std::fs::read_to_string(&component.log).unwrap_or_default();
        assert!(
            !log.is_empty(),
            "{} logged nothing to {}",
            component.name,
            component.log.display()
        );
    }
    let status = mesh.interrupt().expect("meshctl exits on SIGINT");
    assert!(status.success(), "meshctl exit status {status}");
    for (name, pid) in &pids {
        assert!(!pid_alive(*pid), "{name} ({pid}) survived Ctrl-C");
    }
    assert!(
        !mesh.run_dir().join("state.json").exists(),
        "state.json is removed on exit"
    );
}

#[test]
fn killing_meshctl_takes_its_children_with_it() {
    let mesh = LocalMesh::start(&["versions.v3.enabled=false"]);
    let pids: Vec<(String, u32)> = mesh
        .components()
        .into_iter()
        .filter_map(|c| Some((c.name, c.pid?)))
        .collect();
    assert_eq!(pids.len(), 6, "{pids:?}");
    kill(Pid::from_raw(mesh.meshctl_pid() as i32), Signal::SIGKILL).expect("kill meshctl");
    wait_for(
        "every child to die with meshctl",
        Duration::from_secs(10),
        || pids.iter().all(|(_, pid)| !pid_alive(*pid)).then_some(()),
    );
}

#[test]
fn without_prometheus_the_mesh_says_so_and_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mesh = LocalMesh::start_with(MeshOptions {
        prometheus: Some(dir.path().join("no-prometheus-here")),
        ..MeshOptions::default()
    });
    let output = mesh.output();
    assert!(output.contains("Prometheus not found at"), "{output}");
    assert!(output.contains("running without it"), "{output}");
    assert!(mesh.components().iter().all(|c| c.kind != "prometheus"));
    let gateway = mesh.url("");
    for reply in parallel(20, 4, |agent, _| {
        predict(agent, &gateway, None, "hello there")
    }) {
        assert_eq!(reply.status, 200, "{reply:?}");
    }
}
