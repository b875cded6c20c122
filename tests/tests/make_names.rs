//! Facts the Makefile and the Rust code both need, written in each
//! language: the Makefile's value is the one `make` expands, compared with
//! the Rust constant the tools and tests use.

use std::path::{Component, Path, PathBuf};

use meshctl::workspace;
use sms_checker_tests::schemas::CRD_PINS_FILE;
use sms_checker_tests::{make_variable, workspace_root};

/// `path` with `.` and `..` folded away, without touching the file system
/// (make's `abspath` does the same).
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// What make builds or reads where meshctl and the tests look by default.
#[test]
fn build_outputs_and_tools_are_where_meshctl_looks() {
    for (variable, path) in [
        ("FILTER_WASM", workspace::FILTER_WASM),
        ("MODEL_SERVICE_BIN", workspace::MODEL_SERVICE_BIN),
        ("MODEL_SERVICE_MUSL", workspace::MODEL_SERVICE_MUSL_BIN),
        ("MODEL_SERVICE_MODELS", workspace::MODELS_DIR),
        ("CHART", workspace::CHART),
        ("HELM", workspace::HELM),
        ("ENVOY", workspace::ENVOY),
        ("ISTIO_DIR", workspace::ISTIO_DIR),
        ("IMAGES_DIR", workspace::IMAGES_DIR),
    ] {
        assert_eq!(
            PathBuf::from(make_variable(variable)),
            workspace_root().join(path),
            "make's {variable} and meshctl::workspace"
        );
    }
}

/// The shared folder's default: make exports it to everything it runs, and
/// the model-service (and through it the tests) falls back to it.
#[test]
fn the_shared_folder_defaults_to_the_same_place() {
    let fallback = lexical(&model_service::dataset::default_shared_dir());
    assert_eq!(PathBuf::from(make_variable("SMS_SHARED_DIR")), fallback);
}

/// `make chart-crds` fetches and checks the CRDs the chart tests load,
/// from the same pins file.
#[test]
fn the_pinned_crds_are_the_ones_the_chart_tests_load() {
    assert_eq!(
        PathBuf::from(make_variable("CRD_PINS")),
        workspace_root().join(CRD_PINS_FILE)
    );
    assert_eq!(
        PathBuf::from(make_variable("CRD_CHECK_BIN")),
        workspace_root().join(".tools/bin/crd-check")
    );
}

/// Where `make rollout` serves the rollout's metrics is where the local
/// mesh's Prometheus scrapes them.
#[test]
fn the_rollout_serves_its_metrics_where_the_local_prometheus_scrapes() {
    assert_eq!(
        make_variable("ROLLOUT_METRICS_ADDR"),
        workspace::ROLLOUT_METRICS_ADDR
    );
}
