//! The release images, built without Docker by `meshctl image build`, pushed
//! to a real registry (Debian's `docker-registry`) with skopeo and pulled
//! back with skopeo into a fresh OCI layout.
//!
//! The filter image is Istio's "compat" variant: a single
//! `application/vnd.oci.image.layer.v1.tar+gzip` layer holding `plugin.wasm`.
//! Everything below reads the pulled layouts with plain JSON and tar, not
//! with the code that wrote them.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use meshctl::workspace::FILTER_WASM;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sms_checker_tests::process::Process;
use sms_checker_tests::{filter_wasm, free_port, meshctl_bin, tool, wait_for, workspace_root};

const TAG: &str = "0.1.0-test";
const NAMESPACE: &str = "sms";
const FILTER: &str = "sms-checker-filter";
const MODEL_SERVICE: &str = "model-service";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const SKOPEO: &str = "/usr/bin/skopeo";
// What the model-service image promises; the Dockerfile must say the same.
const USER: &str = "65532:65532";
const ENTRYPOINT: &str = "/model-service";
const PORT: u16 = 8081;
const MODELS_ENV: &str = "MODELS_DIR=/models";
const DOCKER_REGISTRY: &str = "/usr/bin/docker-registry";

/// The static build the image holds (`make model-service-musl`).
fn model_service_musl_bin() -> PathBuf {
    tool(
        "MODEL_SERVICE_MUSL_BIN",
        "target/x86_64-unknown-linux-musl/release/model-service",
    )
}

fn models_dir() -> PathBuf {
    workspace_root().join("model-service/models")
}

fn run(mut command: Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("start {command:?}: {err}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The build inputs, copied once so the checks compare against exactly what
/// was built even if `make wasm` runs again meanwhile.
struct Inputs {
    wasm: PathBuf,
    binary: PathBuf,
    models: PathBuf,
}

impl Inputs {
    fn snapshot(work: &Path) -> Inputs {
        let dir = work.join("inputs");
        fs::create_dir_all(dir.join("models")).expect("inputs dir");
        let inputs = Inputs {
            wasm: dir.join("plugin.wasm"),
            binary: dir.join("model-service"),
            models: dir.join("models"),
        };
        fs::copy(filter_wasm(), &inputs.wasm).expect("copy wasm");
        fs::copy(model_service_musl_bin(), &inputs.binary).expect("copy binary");
        let models = models_dir();
        for (name, bytes) in tree(&models) {
            let path = inputs.models.join(name);
            fs::create_dir_all(path.parent().expect("parent")).expect("models subdir");
            fs::write(path, bytes).expect("copy model");
        }
        assert!(
            !tree(&inputs.models).is_empty(),
            "no models in {}",
            models.display()
        );
        inputs
    }

    fn build(&self, out: &Path) -> String {
        let mut command = Command::new(meshctl_bin());
        command
            .args(["image", "build", "--tag", TAG, "--out"])
            .arg(out)
            .arg("--filter-wasm")
            .arg(&self.wasm)
            .arg("--model-service-bin")
            .arg(&self.binary)
            .arg("--models-dir")
            .arg(&self.models);
        String::from_utf8(run(command).stdout).expect("utf-8 output")
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    model_service::dataset::hex(&Sha256::digest(bytes))
}

/// Every file under `dir`, relative path → bytes.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in fs::read_dir(dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).expect("under root");
                out.insert(
                    rel.display().to_string(),
                    fs::read(&path).expect("read file"),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// A pulled OCI layout, read with nothing but serde_json.
struct Pulled {
    dir: PathBuf,
    manifest_digest: String,
    manifest: Value,
}

impl Pulled {
    fn open(dir: &Path) -> Pulled {
        let index: Value =
            serde_json::from_slice(&fs::read(dir.join("index.json")).expect("index.json"))
                .expect("index.json is JSON");
        let manifests = index["manifests"].as_array().expect("manifests");
        assert_eq!(manifests.len(), 1, "one image in {}", dir.display());
        let manifest_digest = manifests[0]["digest"].as_str().expect("digest").to_string();
        let pulled = Pulled {
            dir: dir.to_path_buf(),
            manifest_digest: manifest_digest.clone(),
            manifest: Value::Null,
        };
        let manifest = serde_json::from_slice(&pulled.blob(&manifest_digest)).expect("manifest");
        Pulled { manifest, ..pulled }
    }

    /// A blob, checked against its digest.
    fn blob(&self, digest: &str) -> Vec<u8> {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        let bytes = fs::read(self.dir.join("blobs/sha256").join(hex)).expect("blob");
        assert_eq!(sha256_hex(&bytes), hex, "blob {digest} is intact");
        bytes
    }

    fn config(&self) -> Value {
        assert_eq!(self.manifest["config"]["mediaType"], OCI_CONFIG);
        let digest = self.manifest["config"]["digest"]
            .as_str()
            .expect("config digest");
        serde_json::from_slice(&self.blob(digest)).expect("config JSON")
    }

    /// The only layer, gunzipped, after checking the manifest says so.
    fn single_layer_tar(&self) -> Vec<u8> {
        assert_eq!(self.manifest["schemaVersion"], 2);
        assert_eq!(self.manifest["mediaType"], OCI_MANIFEST);
        let layers = self.manifest["layers"].as_array().expect("layers");
        assert_eq!(layers.len(), 1, "a single layer");
        assert_eq!(layers[0]["mediaType"], OCI_LAYER_GZIP);
        let blob = self.blob(layers[0]["digest"].as_str().expect("layer digest"));
        assert_eq!(
            layers[0]["size"].as_u64(),
            Some(blob.len() as u64),
            "layer size"
        );
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(blob.as_slice())
            .read_to_end(&mut tar)
            .expect("layer is gzip");
        tar
    }
}

/// Debian's docker-registry on 127.0.0.1, storing in a temp dir.
struct Registry {
    _process: Process,
    host: String,
}

fn start_registry(work: &Path) -> Registry {
    let port = free_port();
    let storage = work.join("registry-storage");
    fs::create_dir_all(&storage).expect("storage dir");
    let config = work.join("registry.yml");
    fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            storage.display()
        ),
    )
    .expect("write registry config");
    let mut command = Command::new(tool("DOCKER_REGISTRY_BIN", DOCKER_REGISTRY));
    command.arg("serve").arg(&config);
    let mut process = Process::spawn("docker-registry", command, &work.join("registry.log"));
    let host = format!("127.0.0.1:{port}");
    let url = format!("http://{host}/v2/");
    wait_for(
        "docker-registry to answer /v2/",
        Duration::from_secs(20),
        || {
            if let Some(status) = process.try_wait() {
                panic!("docker-registry exited ({status}):\n{}", process.log());
            }
            ureq::get(&url).call().ok().map(|_| ())
        },
    );
    Registry {
        _process: process,
        host,
    }
}

fn skopeo_pull(registry: &Registry, name: &str, into: &Path) -> Pulled {
    let mut command = Command::new(tool("SKOPEO_BIN", SKOPEO));
    command
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!(
            "docker://{}/{NAMESPACE}/{name}:{TAG}",
            registry.host
        ))
        .arg(format!("oci:{}:{TAG}", into.display()));
    run(command);
    Pulled::open(into)
}

/// The value printed after `label` on the line that starts with it.
fn printed_after<'a>(stdout: &'a str, section: &str, label: &str) -> &'a str {
    let start = stdout
        .find(section)
        .unwrap_or_else(|| panic!("{section:?} in:\n{stdout}"));
    stdout[start..]
        .lines()
        .find_map(|line| line.trim().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{label:?} after {section:?} in:\n{stdout}"))
}

#[test]
fn images_round_trip_through_a_registry_and_are_reproducible() {
    let work = tempfile::tempdir().expect("tempdir");
    let first = work.path().join("build-1");
    let second = work.path().join("build-2");

    // Reproducible: two builds from the same inputs are byte-identical.
    let inputs = Inputs::snapshot(work.path());
    let build_output = inputs.build(&first);
    inputs.build(&second);
    for name in [FILTER, MODEL_SERVICE] {
        assert_eq!(
            tree(&first.join(name)),
            tree(&second.join(name)),
            "{name}: two builds differ"
        );
    }

    let registry = start_registry(work.path());
    let mut push = Command::new(meshctl_bin());
    push.args([
        "image",
        "push",
        "--tag",
        TAG,
        "--tls-verify=false",
        "--skopeo",
        SKOPEO,
    ])
    .arg("--registry")
    .arg(format!("{}/{NAMESPACE}", registry.host))
    .arg("--images")
    .arg(&first);
    let stdout = String::from_utf8(run(push).stdout).expect("utf-8");

    // Filter: pulled back byte for byte, in the compat layout Istio reads.
    let wasm = fs::read(&inputs.wasm).expect("read wasm");
    let filter = skopeo_pull(&registry, FILTER, &work.path().join("pulled-filter"));
    let filter_ref = format!("{}/{NAMESPACE}/{FILTER}", registry.host);
    assert_eq!(
        printed_after(&stdout, &format!("pushed {filter_ref}"), "digest"),
        filter.manifest_digest,
        "push prints the digest the registry serves"
    );
    assert_eq!(
        filter.manifest["annotations"]["module.wasm.image/variant"],
        "compat"
    );
    let filter_tar = filter.single_layer_tar();
    let mut archive = tar::Archive::new(filter_tar.as_slice());
    let mut files = Vec::new();
    for entry in archive.entries().expect("tar entries") {
        let mut entry = entry.expect("entry");
        let path = entry.path().expect("path").display().to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).expect("read");
        files.push((path, bytes));
    }
    assert_eq!(files.len(), 1, "only plugin.wasm in the filter layer");
    assert_eq!(files[0].0, "plugin.wasm");
    assert!(files[0].1 == wasm, "plugin.wasm round-trips byte for byte");
    let wasm_sha = sha256_hex(&wasm);
    assert_eq!(
        printed_after(&stdout, &format!("pushed {filter_ref}"), "plugin.wasm"),
        format!("sha256:{wasm_sha}")
    );
    assert!(
        build_output.contains(&format!("sha256:{wasm_sha}")),
        "build prints the module's SHA-256:\n{build_output}"
    );
    // Istio compares `sha256` with the manifest digest for oci:// URLs.
    let filter_hex = filter.manifest_digest.trim_start_matches("sha256:");
    assert!(
        stdout.contains(&format!(
            "--set filter.url=oci://{filter_ref}@{}",
            filter.manifest_digest
        )) && stdout.contains(&format!("--set filter.sha256={filter_hex}")),
        "chart flags pin the filter by digest:\n{stdout}"
    );

    // The registry itself serves that digest for the tag.
    let response = ureq::get(&format!(
        "http://{}/v2/{NAMESPACE}/{FILTER}/manifests/{TAG}",
        registry.host
    ))
    .header("Accept", OCI_MANIFEST)
    .call()
    .expect("manifest GET");
    assert_eq!(
        response
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok()),
        Some(filter.manifest_digest.as_str())
    );

    // Model-service: config, files, and a binary that serves /predict.
    let model = skopeo_pull(&registry, MODEL_SERVICE, &work.path().join("pulled-model"));
    let model_ref = format!("{}/{NAMESPACE}/{MODEL_SERVICE}", registry.host);
    assert_eq!(
        printed_after(&stdout, &format!("pushed {model_ref}"), "digest"),
        model.manifest_digest
    );
    assert!(
        stdout.contains(&format!("--set modelService.image.repository={model_ref}"))
            && stdout.contains(&format!(
                "--set modelService.image.digest={}",
                model.manifest_digest
            )),
        "chart flags pin the model-service by digest:\n{stdout}"
    );
    for (name, pulled) in [(FILTER, &filter), (MODEL_SERVICE, &model)] {
        let built = Pulled::open(&first.join(name));
        assert_eq!(
            built.manifest_digest, pulled.manifest_digest,
            "{name}: the registry holds exactly what was built"
        );
    }
    let config = model.config();
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");
    let process = &config["config"];
    assert_eq!(process["User"], USER);
    assert_eq!(process["Entrypoint"], serde_json::json!([ENTRYPOINT]));
    assert_eq!(
        process["ExposedPorts"],
        serde_json::json!({format!("{PORT}/tcp"): {}})
    );
    assert!(
        process["Env"]
            .as_array()
            .expect("Env")
            .contains(&Value::from(MODELS_ENV)),
        "MODELS_DIR points at the models in the image: {process}"
    );
    let layer_tar = model.single_layer_tar();
    assert_eq!(
        config["rootfs"]["diff_ids"],
        serde_json::json!([format!("sha256:{}", sha256_hex(&layer_tar))])
    );

    let rootfs = work.path().join("rootfs");
    tar::Archive::new(layer_tar.as_slice())
        .unpack(&rootfs)
        .expect("unpack model-service layer");
    let binary = rootfs.join("model-service");
    assert_eq!(
        fs::read(&binary).expect("binary in image"),
        fs::read(&inputs.binary).expect("built binary")
    );
    assert_eq!(
        tree(&rootfs.join("models")),
        tree(&inputs.models),
        "the image holds the models as checked out"
    );
    assert_eq!(
        fs::metadata(&binary).expect("stat").permissions().mode() & 0o777,
        0o755
    );
    serve_and_predict(&binary, &rootfs.join("models"), work.path());

    chart_takes_the_printed_flags(&stdout, &filter, &filter_ref, &model, &model_ref);
}

/// The `--set` flags `push` prints are accepted by the chart (its schema
/// included) and pin what was pushed.
fn chart_takes_the_printed_flags(
    stdout: &str,
    filter: &Pulled,
    filter_ref: &str,
    model: &Pulled,
    model_ref: &str,
) {
    let flags: Vec<&str> = stdout
        .split_whitespace()
        .skip_while(|word| *word != "--set")
        .filter(|word| *word != "\\")
        .collect();
    assert_eq!(flags.len(), 8, "four --set flags in:\n{stdout}");
    let mut command = Command::new(sms_checker_tests::helm_bin());
    command
        .args(["template", "sms-checker"])
        .arg(workspace_root().join("manifests/sms-checker"))
        .args(&flags);
    let rendered = String::from_utf8(run(command).stdout).expect("utf-8");
    let objects: Vec<Value> = rendered
        .split("\n---")
        .filter_map(|doc| serde_norway::from_str::<Option<Value>>(doc).expect("YAML"))
        .collect();
    let of_kind = |kind: &'static str| objects.iter().filter(move |o| o["kind"] == kind);
    let plugins: Vec<&Value> = of_kind("WasmPlugin").collect();
    assert!(!plugins.is_empty(), "WasmPlugins rendered");
    let filter_hex = filter.manifest_digest.trim_start_matches("sha256:");
    for plugin in plugins {
        let spec = &plugin["spec"];
        assert_eq!(
            spec["url"],
            format!("oci://{filter_ref}@{}", filter.manifest_digest)
        );
        assert_eq!(spec["sha256"], filter_hex);
    }
    let images: Vec<&Value> = of_kind("Deployment")
        .flat_map(|d| {
            d["spec"]["template"]["spec"]["containers"]
                .as_array()
                .expect("containers")
        })
        .map(|c| &c["image"])
        .collect();
    assert!(!images.is_empty(), "Deployments rendered");
    for image in images {
        assert_eq!(*image, format!("{model_ref}@{}", model.manifest_digest));
    }
}

/// Starts the binary taken out of the image and asks it for a prediction.
fn serve_and_predict(binary: &Path, models: &Path, work: &Path) {
    let port = free_port();
    let mut command = Command::new(binary);
    command
        .env_clear()
        .env("MODELS_DIR", models)
        .env("MODEL_VERSION", "v1")
        .env("SERVER_HOST", "127.0.0.1")
        .env("SERVER_PORT", port.to_string());
    let mut server = Process::spawn("model-service", command, &work.join("model-service.log"));
    let base = format!("http://127.0.0.1:{port}");
    wait_for("model-service /ready", Duration::from_secs(30), || {
        if let Some(status) = server.try_wait() {
            panic!("model-service exited ({status}):\n{}", server.log());
        }
        ureq::get(&format!("{base}/ready")).call().ok().map(|_| ())
    });
    let mut response = ureq::post(&format!("{base}/predict"))
        .header("Content-Type", "application/json")
        .send(r#"{"sms": "WINNER!! You have won a FREE prize. Call 09061701461 to claim now"}"#)
        .unwrap_or_else(|err| panic!("POST /predict: {err}\n{}", server.log()));
    let prediction = response
        .headers()
        .get("x-model-prediction")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body: Value = serde_json::from_str(&response.body_mut().read_to_string().expect("body"))
        .expect("JSON body");
    assert_eq!(prediction.as_deref(), Some("spam"), "body: {body}");
    assert_eq!(body["result"], "spam", "body: {body}");
}

#[test]
fn build_fails_clearly_without_the_wasm_module() {
    let work = tempfile::tempdir().expect("tempdir");
    let missing = work.path().join("nope.wasm");
    let output = Command::new(meshctl_bin())
        .args(["image", "build", "--out"])
        .arg(work.path().join("out"))
        .arg("--filter-wasm")
        .arg(&missing)
        .output()
        .expect("run meshctl");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("filter Wasm module not found") && stderr.contains("make wasm"),
        "{stderr}"
    );
    assert!(
        !work.path().join("out").exists(),
        "nothing written on failure"
    );
}

/// The instructions of a Dockerfile's last stage, comments and blank lines
/// dropped, each as (INSTRUCTION, arguments).
fn runtime_stage(dockerfile: &str) -> Vec<(String, String)> {
    let path = workspace_root().join(dockerfile);
    let text = fs::read_to_string(&path).unwrap_or_else(|err| panic!("{dockerfile}: {err}"));
    let instructions: Vec<(String, String)> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (op, args) = line.split_once(' ').unwrap_or((line, ""));
            (op.to_uppercase(), args.trim().to_string())
        })
        .collect();
    let last_from = instructions
        .iter()
        .rposition(|(op, _)| op == "FROM")
        .unwrap_or_else(|| panic!("{dockerfile} has no FROM"));
    instructions[last_from..].to_vec()
}

#[test]
fn dockerfiles_describe_the_same_images() {
    let owned = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(op, args)| (op.to_string(), args.to_string()))
            .collect()
    };
    let port = PORT.to_string();
    let entrypoint = format!("[\"{ENTRYPOINT}\"]");
    let model = runtime_stage("model-service/Dockerfile");
    assert_eq!(
        model,
        owned(&[
            ("FROM", "scratch"),
            (
                "COPY",
                "--from=builder /src/target/x86_64-unknown-linux-musl/release/model-service /model-service"
            ),
            ("COPY", "model-service/models /models"),
            ("ENV", MODELS_ENV),
            ("USER", USER),
            ("EXPOSE", &port),
            ("ENTRYPOINT", &entrypoint),
        ])
    );
    // meshctl's image: what meshctl::image::spec::meshctl builds.
    use meshctl::image::spec::{MESHCTL_BINARY, MESHCTL_PORT};
    assert_eq!(
        runtime_stage("meshctl/Dockerfile"),
        owned(&[
            ("FROM", "scratch"),
            (
                "COPY",
                &format!(
                    "--from=builder /src/target/x86_64-unknown-linux-musl/release/meshctl /{MESHCTL_BINARY}"
                )
            ),
            ("USER", USER),
            ("EXPOSE", &MESHCTL_PORT.to_string()),
            ("ENTRYPOINT", &format!("[\"/{MESHCTL_BINARY}\"]")),
        ])
    );
    assert_eq!(
        runtime_stage("filter/Dockerfile"),
        owned(&[
            ("FROM", "scratch"),
            ("COPY", &format!("{FILTER_WASM} /plugin.wasm")),
        ])
    );
    // The filter's build context is the repository root, where .dockerignore
    // must let the module through while keeping the rest of target/ out.
    let ignore = fs::read_to_string(workspace_root().join(".dockerignore")).expect(".dockerignore");
    let lines: Vec<&str> = ignore.lines().map(str::trim).collect();
    assert!(lines.contains(&"target"), "{ignore}");
    assert!(
        lines.contains(&format!("!{FILTER_WASM}").as_str()),
        "{ignore}"
    );
}
