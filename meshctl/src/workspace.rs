//! Where the workspace keeps what meshctl reads by default, relative to the
//! workspace root (meshctl runs from there, as `make` runs it). The end-to-end
//! tests find the same files through these constants; the Makefile's copies
//! (`make` builds them) are checked against them by `tests/tests/make_names.rs`.

/// The cohort filter module (`make wasm`).
pub const FILTER_WASM: &str = "target/wasm32-wasip1/wasm-release/sms_checker_filter.wasm";
/// The model-service release binary the local mesh runs (`make model-service`).
pub const MODEL_SERVICE_BIN: &str = "target/release/model-service";
/// The model-service built statically, for its image (`make model-service-musl`).
pub const MODEL_SERVICE_MUSL_BIN: &str = "target/x86_64-unknown-linux-musl/release/model-service";
/// The trained models (v1.json, v2.json, v3.json).
pub const MODELS_DIR: &str = "model-service/models";
/// This project's Helm chart.
pub const CHART: &str = "manifests/sms-checker";
/// Helm (`make tools`).
pub const HELM: &str = ".tools/bin/helm";
/// Envoy (`make tools`).
pub const ENVOY: &str = ".tools/bin/envoy";
/// Istio's control plane, agent, charts and bootstrap template (`make istio`).
pub const ISTIO_DIR: &str = ".tools/istio";
/// Values for Istio's istiod chart on the local mesh.
pub const ISTIOD_VALUES: &str = "istiod-local/istiod-values.yaml";
/// Values for Istio's gateway chart (the filter's stat tags).
pub const GATEWAY_VALUES: &str = "manifests/istio/gateway-values.yaml";
/// The local mesh's run folder (`make run`, `make set`, `make rollout`).
pub const RUN_DIR: &str = ".run";
/// Where `make rollout` serves the rollout's metrics, and the local mesh's
/// Prometheus scrapes them.
pub const ROLLOUT_METRICS_ADDR: &str = "127.0.0.1:9469";
/// The OCI layouts `meshctl image build` writes (`make images`).
pub const IMAGES_DIR: &str = "target/images";
