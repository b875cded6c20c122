//! Istio for the local mesh: its istiod and gateway charts rendered with
//! helm, its control plane (`istiod-local`, Istio's pilot and CA) started on
//! the rendered manifests, and the control plane's API for live changes.
//!
//! The chart's Gateway names the ingress gateway by a label (`istio:
//! <selector>`); the local mesh installs Istio's gateway chart under the
//! matching release (`istio-<selector>`), in the namespace the chart puts
//! the gateway's WasmPlugin in (`istio.gateway.namespace`), as a cluster
//! operator would have.

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::chart::{self, Object, Render};

/// What `make istio` puts in `.tools/istio`.
#[derive(Debug, Clone)]
pub struct IstioDir(pub PathBuf);

impl IstioDir {
    pub fn istiod_local(&self) -> PathBuf {
        self.0.join("istiod-local")
    }
    pub fn pilot_agent(&self) -> PathBuf {
        self.0.join("pilot-agent")
    }
    pub fn bootstrap_template(&self) -> PathBuf {
        self.0.join("envoy_bootstrap_tmpl.json")
    }
    fn chart(&self, name: &str) -> PathBuf {
        self.0.join("charts").join(name)
    }
}

/// istiod's secure port (xDS and the CA), where every proxy connects.
pub const ISTIOD_PORT: u16 = 15012;
/// Istio's own namespace, and its root namespace.
pub const ISTIO_NAMESPACE: &str = "istio-system";

/// Istio's install for the local mesh: the istiod chart with the values
/// that make its output fit upstream Envoy (`istiod_values`), pointed at
/// the local control plane's address.
pub fn render_istiod(
    helm: &Path,
    istio: &IstioDir,
    istiod_values: &Path,
    node_ip: Ipv4Addr,
    envoy: &Path,
) -> anyhow::Result<String> {
    let address = format!("{node_ip}:{ISTIOD_PORT}");
    chart::render(
        helm,
        &Render {
            chart: istio.chart("istiod"),
            release: "istiod".into(),
            namespace: Some(ISTIO_NAMESPACE.into()),
            values: vec![istiod_values.to_path_buf()],
            sets: vec![
                format!("meshConfig.defaultConfig.discoveryAddress={address}"),
                format!("global.caAddress={address}"),
                format!("meshConfig.defaultConfig.binaryPath={}", envoy.display()),
            ],
        },
    )
    .context("render Istio's istiod chart")
}

/// An ingress gateway the chart's Gateway resources select.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingress {
    /// The value of the `istio` label.
    pub selector: String,
    pub namespace: String,
}

impl Ingress {
    /// Istio's gateway chart derives `istio: <name without istio->` from
    /// the release name.
    pub fn release(&self) -> String {
        format!("istio-{}", self.selector)
    }

    /// The gateway chart's pod of replica 0, as the cluster synthesis names it.
    pub fn first_pod(&self) -> String {
        format!("{}-0", self.release())
    }
}

/// The ingress gateways to install, and any Gateway the routes refer to
/// that the chart does not render (the user's own, in a cluster), which the
/// local mesh stands in for.
pub struct Ingresses {
    pub gateways: Vec<Ingress>,
    /// Stand-in Gateway resources, as YAML documents.
    pub stand_ins: Vec<(String, String)>,
}

/// The default ingress gateway of an Istio install.
const DEFAULT_SELECTOR: &str = "ingressgateway";

pub fn ingresses(objects: &[Object]) -> anyhow::Result<Ingresses> {
    let mut out = Ingresses {
        gateways: Vec::new(),
        stand_ins: Vec::new(),
    };
    let gateway_namespace = |selector: &str| {
        objects
            .iter()
            .filter(|o| o.kind == "WasmPlugin" || o.kind == "TrafficExtension")
            .find(|o| {
                o.doc
                    .pointer("/spec/selector/matchLabels/istio")
                    .and_then(Value::as_str)
                    == Some(selector)
            })
            .map_or(ISTIO_NAMESPACE.to_string(), |o| o.namespace().to_string())
    };
    let mut add = |selector: &str| {
        let ingress = Ingress {
            selector: selector.to_string(),
            namespace: gateway_namespace(selector),
        };
        if !out.gateways.contains(&ingress) {
            out.gateways.push(ingress);
        }
    };
    let gateways: Vec<&Object> = objects.iter().filter(|o| o.kind == "Gateway").collect();
    for gateway in &gateways {
        if gateway.doc["apiVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("gateway.networking.k8s.io/"))
        {
            bail!(
                "Gateway/{}: a Gateway API Gateway's pods are deployed by Istio's gateway controller, which needs a Kubernetes API server; the local mesh runs istio.routingApi=VirtualService (Istio's translation of the Gateway API mode: make istio-test)",
                gateway.name
            );
        }
        let selector = gateway
            .doc
            .pointer("/spec/selector")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        match (
            selector.len(),
            selector.get("istio").and_then(Value::as_str),
        ) {
            (1, Some(name)) => add(name),
            _ => bail!(
                "Gateway/{}: selector {} — the local mesh runs Istio's gateway chart, whose pods carry `istio: <name>`",
                gateway.name,
                Value::Object(selector)
            ),
        }
    }
    // Routes bound to a Gateway the chart does not render.
    for vs in objects.iter().filter(|o| o.kind == "VirtualService") {
        let hosts: Vec<String> = vs
            .doc
            .pointer("/spec/hosts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|h| h.contains('.') || *h == "*")
            .map(str::to_string)
            .collect();
        for name in vs
            .doc
            .pointer("/spec/gateways")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            let (namespace, short) = name.split_once('/').unwrap_or((vs.namespace(), name));
            let rendered = gateways
                .iter()
                .any(|g| g.name == short && g.namespace() == namespace);
            if name == "mesh"
                || rendered
                || out
                    .stand_ins
                    .iter()
                    .any(|(id, _)| id == &format!("{short}.{namespace}"))
            {
                continue;
            }
            add(DEFAULT_SELECTOR);
            let doc = json!({
                "apiVersion": "networking.istio.io/v1",
                "kind": "Gateway",
                "metadata": {"name": short, "namespace": namespace},
                "spec": {
                    "selector": {"istio": DEFAULT_SELECTOR},
                    "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": hosts}],
                },
            });
            out.stand_ins.push((
                format!("{short}.{namespace}"),
                serde_norway::to_string(&doc)?,
            ));
        }
    }
    Ok(out)
}

/// Istio's gateway chart for `ingress`, with this project's gateway values
/// (the filter's stat tags, as the chart's README asks of a cluster).
pub fn render_gateway(
    helm: &Path,
    istio: &IstioDir,
    gateway_values: &Path,
    ingress: &Ingress,
) -> anyhow::Result<String> {
    chart::render(
        helm,
        &Render {
            chart: istio.chart("gateway"),
            release: ingress.release(),
            namespace: Some(ingress.namespace.clone()),
            values: vec![gateway_values.to_path_buf()],
            sets: Vec::new(),
        },
    )
    .with_context(|| {
        format!(
            "render Istio's gateway chart for `istio: {}`",
            ingress.selector
        )
    })
}

/// The port the gateway pod listens on for a Gateway server port: the
/// gateway Service's target port for it, else the port itself (Istio's rule
/// when no Service port matches).
pub fn gateway_target_port(gateway_manifest: &[Object], server_port: u16) -> u16 {
    gateway_manifest
        .iter()
        .filter(|o| o.kind == "Service")
        .flat_map(|o| {
            o.doc
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .find(|p| p["port"].as_u64() == Some(u64::from(server_port)))
        .and_then(|p| p["targetPort"].as_u64())
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(server_port)
}

/// The first server port of the chart's Gateways (80 when there is none).
pub fn gateway_server_port(objects: &[Object]) -> u16 {
    objects
        .iter()
        .filter(|o| o.kind == "Gateway")
        .find_map(|o| {
            o.doc
                .pointer("/spec/servers/0/port/number")
                .and_then(Value::as_u64)
        })
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(80)
}

/// The hosts the chart's Gateways serve, for the URLs meshctl prints.
pub fn gateway_hosts(objects: &[Object]) -> Vec<String> {
    objects
        .iter()
        .filter(|o| o.kind == "Gateway")
        .flat_map(|o| {
            o.doc
                .pointer("/spec/servers/0/hosts")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|h| {
            h.as_str()
                .map(|h| h.rsplit('/').next().unwrap_or(h).to_string())
        })
        .collect()
}

/// What istiod-local answers to an apply.
#[derive(Debug, Clone, Deserialize)]
pub struct Applied {
    #[serde(default)]
    pub created: Vec<String>,
    #[serde(default)]
    pub updated: Vec<String>,
    #[serde(default)]
    pub deleted: Vec<String>,
    #[serde(default)]
    pub synced: Vec<String>,
    #[serde(default)]
    pub rejected: Vec<Rejection>,
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// A proxy refusing what the control plane sent it (an xDS NACK).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct Rejection {
    /// `<pod>.<namespace>`.
    pub proxy: String,
    /// LDS, RDS, CDS, EDS or ECDS.
    #[serde(rename = "type")]
    pub kind: String,
    pub error: String,
}

/// How the proxies stand with the control plane.
#[derive(Debug, Clone, Deserialize)]
pub struct Status {
    #[serde(default)]
    pub rejected: Vec<Rejection>,
}

/// The connected proxies and what they refused.
pub fn status(control: &Path) -> anyhow::Result<Status> {
    let (status, reply) = request(control, "GET", "/status", "")?;
    if status != 200 {
        bail!("the control plane answered {status}: {reply}");
    }
    serde_json::from_str(&reply).context("read istiod-local's status")
}

/// Hands new manifests to the running control plane, which applies the
/// Istio resources and returns once every proxy acknowledged the push. A
/// refusal carries Istio's own message.
pub fn apply(control: &Path, manifests: &[String]) -> anyhow::Result<Applied> {
    let body = json!({ "manifests": manifests }).to_string();
    let (status, reply) = request(control, "POST", "/apply", &body)?;
    if status != 200 {
        let message = serde_json::from_str::<Value>(&reply)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or(reply);
        bail!("{message}");
    }
    serde_json::from_str(&reply).context("read istiod-local's answer")
}

/// One HTTP/1.1 request over the control socket (`Connection: close`; the
/// server always sends a small body with its length, read to the end).
fn request(socket: &Path, method: &str, path: &str, body: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = UnixStream::connect(socket)
        .with_context(|| format!("connect to the control plane at {}", socket.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: istiod-local\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("malformed answer from the control plane")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("malformed status from the control plane")?;
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chart::parse_objects;

    const GATEWAY: &str = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: default}\nspec:\n  selector: {istio: custom-gateway}\n  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [a.example]}]\n";

    #[test]
    fn the_gateway_runs_where_the_chart_puts_its_plugin() {
        for kind in ["WasmPlugin", "TrafficExtension"] {
            let yaml = format!(
                "{GATEWAY}---\napiVersion: extensions.istio.io/v1alpha1\nkind: {kind}\nmetadata: {{name: p, namespace: ingress}}\nspec: {{selector: {{matchLabels: {{istio: custom-gateway}}}}}}\n"
            );
            let found = ingresses(&parse_objects(&yaml).unwrap()).unwrap();
            assert_eq!(
                found.gateways,
                [Ingress {
                    selector: "custom-gateway".into(),
                    namespace: "ingress".into()
                }],
                "{kind}"
            );
            assert_eq!(found.gateways[0].release(), "istio-custom-gateway");
            assert!(found.stand_ins.is_empty());
        }
    }

    #[test]
    fn a_gateway_api_gateway_is_refused_with_the_reason() {
        let yaml = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec: {gatewayClassName: istio}\n";
        let err = ingresses(&parse_objects(yaml).unwrap()).err().unwrap();
        assert!(
            err.to_string().contains("Gateway/gw: a Gateway API Gateway's pods are deployed by Istio's gateway controller"),
            "{err}"
        );
    }

    #[test]
    fn routes_to_a_gateway_outside_the_chart_get_a_stand_in() {
        let yaml = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs, namespace: default}\nspec: {hosts: [a.example, svc], gateways: [theirs, mesh]}\n";
        let found = ingresses(&parse_objects(yaml).unwrap()).unwrap();
        assert_eq!(found.gateways[0].selector, DEFAULT_SELECTOR);
        assert_eq!(found.stand_ins.len(), 1);
        assert!(
            found.stand_ins[0].1.contains("a.example"),
            "{}",
            found.stand_ins[0].1
        );
        assert!(!found.stand_ins[0].1.contains("svc"));
    }

    #[test]
    fn a_selector_istio_s_gateway_chart_cannot_match_is_refused() {
        let yaml = GATEWAY.replace("{istio: custom-gateway}", "{app: mine}");
        let err = ingresses(&parse_objects(&yaml).unwrap()).err().unwrap();
        assert!(err.to_string().contains("istio: <name>"), "{err}");
    }

    #[test]
    fn the_gateway_service_maps_the_server_port() {
        let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: g}\nspec: {ports: [{port: 80, targetPort: 8080}]}\n";
        let objects = parse_objects(svc).unwrap();
        assert_eq!(gateway_target_port(&objects, 80), 8080);
        assert_eq!(gateway_target_port(&objects, 8443), 8443);
    }
}
