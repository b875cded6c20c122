//! The local mesh leaves nothing behind: Ctrl-C stops every process, and
//! if meshctl itself is killed its children die with it.

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sms_checker_tests::mesh::{Kind, LocalMesh, MeshOptions, pid_alive};
use sms_checker_tests::users::{parallel, predict};
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
    // The control plane, the gateway, Prometheus, and a sidecar and a
    // service per version.
    assert_eq!(pids.len(), 9, "{pids:?}");
    for (name, pid) in &pids {
        assert!(pid_alive(*pid), "{name} ({pid}) is not running");
    }
    pids
}

#[test]
fn ctrl_c_stops_every_process_and_each_logged_to_its_own_file() {
    let mut mesh = LocalMesh::start(&[]);
    let output = mesh.output();
    for url in ["/sms", "/stats/prometheus"] {
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

/// Whether the host still has its link into the mesh's pod network: the
/// kernel removes it once every process in the mesh's namespaces is gone.
fn mesh_network_exists(mesh: &LocalMesh) -> bool {
    let node = mesh.state().network.node_ip.clone();
    let host = node
        .rsplit_once('.')
        .map(|(net, _)| format!("{net}.254"))
        .unwrap_or_default();
    let output = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .expect("run ip");
    String::from_utf8_lossy(&output.stdout).contains(&format!("inet {host}/"))
}

#[test]
fn killing_meshctl_takes_its_children_with_it() {
    let mesh = LocalMesh::start(&["versions.v3.enabled=false"]);
    let pids: Vec<(String, u32)> = mesh
        .components()
        .into_iter()
        .filter_map(|c| Some((c.name, c.pid?)))
        .collect();
    assert_eq!(pids.len(), 7, "{pids:?}");
    assert!(mesh_network_exists(&mesh));
    kill(Pid::from_raw(mesh.meshctl_pid() as i32), Signal::SIGKILL).expect("kill meshctl");
    wait_for(
        "every child to die with meshctl",
        Duration::from_secs(10),
        || pids.iter().all(|(_, pid)| !pid_alive(*pid)).then_some(()),
    );
    // Envoy, started by Istio's agent, is no child of meshctl: it goes with
    // its container's PID namespace. Once nothing runs in the pods' network
    // namespaces, the kernel removes them, and the host's link with them.
    wait_for(
        "the mesh's network namespaces to go",
        Duration::from_secs(10),
        || (!mesh_network_exists(&mesh)).then_some(()),
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
    assert!(mesh.components().iter().all(|c| c.kind != Kind::Prometheus));
    let gateway = mesh.gateway();
    for reply in parallel(20, 4, |agent, _| {
        predict(agent, &gateway, None, "hello there")
    }) {
        assert_eq!(reply.status, 200, "{reply:?}");
    }
}
