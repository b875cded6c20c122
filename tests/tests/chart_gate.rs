//! The gate as a chart option (`gate.*`): off by default; on, a
//! Deployment and a Service that select only the gate's pods, run meshctl
//! with flags meshctl itself accepts, and carry the chart's canary weight.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use sms_checker_tests::chart::{find, of_kind};
use sms_checker_tests::rendered::{get, render_error, render_valid};
use sms_checker_tests::{free_port, meshctl_bin, wait_for};

fn args(deployment: &Value) -> Vec<String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("the gate's args")
        .iter()
        .map(|a| a.as_str().expect("a string").to_string())
        .collect()
}

#[test]
fn the_gate_is_off_by_default_and_a_deployment_and_service_when_on() {
    let defaults = render_valid(&[]);
    assert!(find(&defaults, "Deployment", "model-service-gate").is_none());
    let objects = render_valid(&[
        ("gate.enabled", "true"),
        ("istio.trafficSplit.stable", "75"),
        ("istio.trafficSplit.canary", "25"),
        ("gate.maxErrorIncrease", "0.01"),
        ("gate.image.digest", &format!("sha256:{}", "a".repeat(64))),
    ]);
    let deployment = get(&objects, "Deployment", "model-service-gate");
    let service = get(&objects, "Service", "model-service-gate");
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    // The Service reaches the gate and nothing else: its selector matches the
    // gate's pods, and no model-service pod.
    let selector = service["spec"]["selector"].as_object().expect("a selector");
    for (key, value) in selector {
        assert_eq!(&pod_labels[key], value, "the gate's pods carry {key}");
    }
    for model in of_kind(&objects, "Deployment")
        .into_iter()
        .filter(|d| d["metadata"]["name"] != "model-service-gate")
    {
        let labels = &model["spec"]["template"]["metadata"]["labels"];
        assert!(
            selector.iter().any(|(k, v)| &labels[k] != v),
            "the gate's Service would select {}",
            model["metadata"]["name"]
        );
    }
    assert_eq!(pod_labels["sidecar.istio.io/inject"], "false");
    let image = &deployment["spec"]["template"]["spec"]["containers"][0]["image"];
    assert_eq!(
        image.as_str(),
        Some(format!("ghcr.io/sms-checker/meshctl@sha256:{}", "a".repeat(64)).as_str())
    );
    let args = args(deployment);
    assert_eq!(&args[..2], ["gate", "serve"]);
    for flag in [
        "--canary-weight=25",
        "--max-error-increase=0.01",
        &format!("--listen=0.0.0.0:{}", meshctl::gate::PORT),
    ] {
        assert!(args.iter().any(|a| a == flag), "{flag} in {args:?}");
    }
    // Without a canary there is no weight to check new users against.
    let objects = render_valid(&[("gate.enabled", "true"), ("versions.v2.enabled", "false")]);
    let args = self::args(get(&objects, "Deployment", "model-service-gate"));
    assert!(
        !args.iter().any(|a| a.starts_with("--canary-weight")),
        "{args:?}"
    );
}

// With the NetworkPolicy on, the gate gets its own: only the controllers'
// namespaces reach its port.
#[test]
fn the_gate_admits_only_the_controllers_namespaces() {
    let objects = render_valid(&[
        ("gate.enabled", "true"),
        ("security.networkPolicy.enabled", "true"),
        ("gate.callerNamespaces[0]", "flagger"),
    ]);
    let policy = get(&objects, "NetworkPolicy", "model-service-gate");
    let from = &policy["spec"]["ingress"][0]["from"];
    assert_eq!(from.as_array().map(Vec::len), Some(1));
    assert_eq!(
        from[0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "flagger"
    );
    assert_eq!(policy["spec"]["ingress"][0]["ports"][0]["port"], 8090);
}

// The rendered flags are meshctl's: the binary starts with them (its own
// --listen and --prometheus swapped for local ones) and answers /healthz.
#[test]
fn the_rendered_flags_start_meshctl_gate() {
    let objects = render_valid(&[("gate.enabled", "true"), ("gate.icc", "0.1")]);
    let port = free_port();
    let args: Vec<String> = args(get(&objects, "Deployment", "model-service-gate"))
        .into_iter()
        .map(|a| {
            if a.starts_with("--listen=") {
                format!("--listen=127.0.0.1:{port}")
            } else if a.starts_with("--prometheus=") {
                format!("--prometheus=http://127.0.0.1:{}", free_port())
            } else {
                a
            }
        })
        .collect();
    let mut gate = Command::new(meshctl_bin())
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start meshctl gate serve");
    let health = format!("http://127.0.0.1:{port}/healthz");
    let answered = std::panic::catch_unwind(|| {
        wait_for("the gate's /healthz", Duration::from_secs(20), || {
            ureq::get(&health).call().ok().map(|r| r.status().as_u16())
        })
    });
    let exited = gate.try_wait().ok().flatten();
    let _ = gate.kill();
    let output = gate.wait_with_output().expect("gate output");
    assert_eq!(
        answered.ok(),
        Some(200),
        "exited {exited:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn bad_gate_values_are_refused_naming_the_field() {
    for (sets, says) in [
        (
            &[("gate.prometheusUrl", "https://p:9090")][..],
            "/gate/prometheusUrl",
        ),
        (&[("gate.confidence", "1")][..], "/gate/confidence"),
        (&[("gate.minInterval", "soon")][..], "/gate/minInterval"),
        (&[("gate.port", "80")][..], "/gate/port"),
    ] {
        let message = render_error(sets);
        assert!(message.contains(says), "{sets:?}: {message}");
    }
}
