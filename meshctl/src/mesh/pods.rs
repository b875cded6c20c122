//! The kubelet's part of the local mesh: running the pods the control plane
//! planned (`istiod-local serve --plan`), which are the chart's Deployments
//! and the ingress gateway after Istio's sidecar injection, with every value
//! already resolved. Here each pod gets its network namespace, its volumes
//! (directories and projected files under the pod's root folder), its init
//! containers run to completion, then its containers start, each as the
//! user its security context names and as PID 1 of its own PID namespace.
//!
//! Container images map to local builds: Istio's proxy image to Istio's
//! pilot-agent (with the proxy's bootstrap template where the image keeps
//! it), the chart's model-service image to the model-service binary.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use model_service::config::env as service_env;
use serde::Deserialize;

use super::network::{Netns, Network};
use super::state::Kind;
use super::supervisor::{Isolation, Ready, Spec};
use crate::image::spec::MODEL_SERVICE_BINARY;

/// `istiod-local`'s plan: the pods a kubelet would run.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub pods: Vec<PodPlan>,
    /// Istio's warnings about the resources.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Objects of kinds no controller of the local cluster reads.
    #[serde(default)]
    pub skipped: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodPlan {
    pub name: String,
    pub namespace: String,
    pub ip: Ipv4Addr,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub sysctls: Vec<Sysctl>,
    #[serde(default)]
    pub init_containers: Vec<ContainerPlan>,
    pub containers: Vec<ContainerPlan>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Sysctl {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ContainerPlan {
    pub name: String,
    pub image: String,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<EnvVar>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub ready: Option<HttpProbe>,
    #[serde(default)]
    pub dirs: Vec<Mount>,
    #[serde(default)]
    pub files: Vec<ProjectedFile>,
    #[serde(default)]
    pub ports: Vec<ContainerPort>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HttpProbe {
    pub port: u16,
    pub path: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Mount {
    pub path: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ProjectedFile {
    pub path: String,
    pub content: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ContainerPort {
    pub name: String,
    pub port: u16,
}

/// The proxy container Istio's injector adds.
pub const PROXY_CONTAINER: &str = "istio-proxy";
/// Envoy's Prometheus listener in Istio's bootstrap (not redirected).
pub const ENVOY_STATS_PORT: u16 = 15090;
/// pilot-agent's status port: merged app and Envoy metrics, health.
pub const AGENT_STATUS_PORT: u16 = 15020;

/// Local builds standing in for the container images.
#[derive(Debug, Clone)]
pub struct Images {
    pub pilot_agent: PathBuf,
    pub bootstrap_template: PathBuf,
    pub model_service: PathBuf,
    pub models_dir: PathBuf,
}

/// What a container runs locally.
enum Image {
    /// Istio's proxyv2 image: pilot-agent (and, through it, Envoy).
    IstioProxy,
    /// The chart's model-service image.
    ModelService,
}

impl Image {
    /// By the image's repository name, whatever its registry and tag.
    fn of(reference: &str) -> Option<Image> {
        let repository = reference.split(['@']).next()?;
        let name = repository.rsplit('/').next()?;
        let name = name.split(':').next()?;
        match name {
            "proxyv2" => Some(Image::IstioProxy),
            n if n == MODEL_SERVICE_BINARY => Some(Image::ModelService),
            _ => None,
        }
    }
}

/// The role a container plays, which names its component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Gateway,
    Sidecar,
    ModelService,
}

impl Role {
    pub fn kind(self) -> Kind {
        match self {
            Role::Gateway => Kind::Gateway,
            Role::Sidecar => Kind::Sidecar,
            Role::ModelService => Kind::ModelService,
        }
    }
}

/// What a pod's containers run.
pub struct PodSpecs {
    pub init: Vec<Spec>,
    pub containers: Vec<(Spec, Role)>,
}

/// A pod being run: its plan, network namespace and root folder.
pub struct Pod {
    pub plan: PodPlan,
    pub netns: Netns,
    pub root: PathBuf,
}

impl Pod {
    /// Creates the pod's namespace and root folder with its volumes.
    pub fn create(plan: PodPlan, network: &Network, pods_dir: &Path) -> anyhow::Result<Pod> {
        let sysctls: Vec<_> = plan
            .sysctls
            .iter()
            .map(|s| (s.name.clone(), s.value.clone()))
            .collect();
        let netns = network
            .add_pod(plan.ip, &sysctls)
            .with_context(|| format!("network for pod {}.{}", plan.name, plan.namespace))?;
        let root = pods_dir.join(&plan.namespace).join(&plan.name);
        let pod = Pod { plan, netns, root };
        pod.materialize()?;
        Ok(pod)
    }

    pub fn id(&self) -> String {
        format!("{}.{}", self.plan.name, self.plan.namespace)
    }

    /// The pod's `version` label (the chart's per-version Deployments).
    pub fn version(&self) -> Option<&str> {
        self.plan.labels.get("version").map(String::as_str)
    }

    /// The replica number the synthesized pod name ends with.
    fn replica(&self) -> usize {
        self.plan
            .name
            .rsplit('-')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// Volumes: every mount path a directory under the root, owned by the
    /// container's user (an emptyDir), projected files written into them.
    fn materialize(&self) -> anyhow::Result<()> {
        // Every container user must reach its working directory.
        make_dir(&self.root, 0o755)?;
        for c in self
            .plan
            .init_containers
            .iter()
            .chain(&self.plan.containers)
        {
            let owner = c.uid.zip(c.gid.or(c.uid));
            for dir in &c.dirs {
                let path = self.path(&dir.path);
                make_dir(&path, 0o755)?;
                if let Some((uid, gid)) = owner {
                    std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                        .with_context(|| format!("chown {}", path.display()))?;
                }
            }
            for file in &c.files {
                let path = self.path(&file.path);
                if let Some(parent) = path.parent() {
                    make_dir(parent, 0o755)?;
                }
                std::fs::write(&path, &file.content)
                    .with_context(|| format!("write {}", path.display()))?;
            }
        }
        Ok(())
    }

    /// A path inside the pod's containers, under the pod's root folder.
    fn path(&self, inside: &str) -> PathBuf {
        self.root.join(inside.trim_start_matches('/'))
    }

    /// What each container runs: init containers (in order), then the
    /// containers with their roles.
    pub fn specs(&self, images: &Images, logs: &Path, ingress: &str) -> anyhow::Result<PodSpecs> {
        let mut init = Vec::new();
        for c in &self.plan.init_containers {
            let mut spec = self.spec(c, images, logs, &format!("{}-{}", self.plan.name, c.name))?;
            spec.ready = Ready::Exited;
            init.push(spec);
        }
        let mut containers = Vec::new();
        for c in &self.plan.containers {
            let role = self.role(c);
            let spec = self.spec(c, images, logs, &self.component_name(role, ingress))?;
            containers.push((spec, role));
        }
        Ok(PodSpecs { init, containers })
    }

    fn role(&self, c: &ContainerPlan) -> Role {
        match (
            c.name.as_str(),
            c.args.first().map(String::as_str),
            c.args.get(1).map(String::as_str),
        ) {
            (PROXY_CONTAINER, Some("proxy"), Some("router")) => Role::Gateway,
            (PROXY_CONTAINER, _, _) => Role::Sidecar,
            _ => Role::ModelService,
        }
    }

    /// `gateway` (the pod `ingress` names: the one the port-forward
    /// reaches), `sidecar-v1`, `model-v1`; replicas after the first get
    /// `-<n>`, other gateways their pod's name.
    pub fn component_name(&self, role: Role, ingress: &str) -> String {
        let base = match (role, self.version()) {
            (Role::Gateway, _) if self.plan.name == ingress => return "gateway".into(),
            (Role::Gateway, _) => return format!("gateway-{}", self.plan.name),
            (Role::Sidecar, Some(v)) => format!("sidecar-{v}"),
            (Role::ModelService, Some(v)) => format!("model-{v}"),
            (Role::Sidecar, None) => format!("sidecar-{}", self.plan.name),
            (Role::ModelService, None) => format!("app-{}", self.plan.name),
        };
        match self.replica() {
            0 => base,
            n => format!("{base}-{n}"),
        }
    }

    fn spec(
        &self,
        c: &ContainerPlan,
        images: &Images,
        logs: &Path,
        name: &str,
    ) -> anyhow::Result<Spec> {
        let image = Image::of(&c.image).with_context(|| {
            format!(
                "pod {}: container {} uses image {}, which has no local build (known: Istio's proxyv2, the chart's {MODEL_SERVICE_BINARY})",
                self.id(),
                c.name,
                c.image
            )
        })?;
        let mut env: Vec<(String, String)> = c
            .env
            .iter()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect();
        // The images' PATH; Istio's iptables setup runs iptables-restore from it.
        env.push((
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ));
        let program = match image {
            Image::IstioProxy => {
                let template = self.path("var/lib/istio/envoy/envoy_bootstrap_tmpl.json");
                if let Some(parent) = template.parent() {
                    make_dir(parent, 0o755)?;
                }
                std::fs::copy(&images.bootstrap_template, &template)
                    .with_context(|| format!("copy {}", images.bootstrap_template.display()))?;
                images.pilot_agent.clone()
            }
            Image::ModelService => {
                // The image sets MODELS_DIR to where it keeps the models.
                if !env.iter().any(|(k, _)| k == service_env::MODELS_DIR) {
                    env.push((
                        service_env::MODELS_DIR.into(),
                        images.models_dir.display().to_string(),
                    ));
                }
                images.model_service.clone()
            }
        };
        let mut args = c.command.iter().skip(1).cloned().collect::<Vec<_>>();
        args.extend(c.args.iter().cloned());
        let ready = match &c.ready {
            Some(probe) => Ready::Http(format!(
                "http://{}:{}{}",
                self.plan.ip, probe.port, probe.path
            )),
            None => Ready::Started,
        };
        Ok(Spec {
            name: name.to_string(),
            program,
            args,
            env,
            clear_env: true,
            log: logs.join(format!("{name}.log")),
            ready,
            isolation: Isolation {
                netns: Some(self.netns.path()),
                user: c.uid.map(|uid| (uid, c.gid.unwrap_or(uid))),
                cwd: Some(self.root.clone()),
                pid_namespace: true,
            },
        })
    }

    /// The container's ports, plus the proxy's well-known ones.
    pub fn ports(&self, role: Role) -> BTreeMap<String, u16> {
        let mut ports = BTreeMap::new();
        for c in &self.plan.containers {
            if (c.name == PROXY_CONTAINER) != (role != Role::ModelService) {
                continue;
            }
            for p in &c.ports {
                ports.insert(p.name.clone(), p.port);
            }
        }
        if role != Role::ModelService {
            ports.insert("stats".into(), ENVOY_STATS_PORT);
            ports.insert("status".into(), AGENT_STATUS_PORT);
        }
        ports
    }
}

fn make_dir(path: &Path, mode: u32) -> anyhow::Result<()> {
    std::fs::create_dir_all(path).with_context(|| format!("create {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_map_by_repository_name() {
        assert!(matches!(
            Image::of("docker.io/istio/proxyv2:1.30.0"),
            Some(Image::IstioProxy)
        ));
        assert!(matches!(
            Image::of("registry.istio.io/testing/proxyv2:latest"),
            Some(Image::IstioProxy)
        ));
        assert!(matches!(
            Image::of("ghcr.io/sms-checker/model-service@sha256:abc"),
            Some(Image::ModelService)
        ));
        assert!(matches!(
            Image::of("localhost:5000/model-service:0.1.0"),
            Some(Image::ModelService)
        ));
        assert!(Image::of("nginx:1.27").is_none());
    }
}
