//! The local mesh's pod network, shaped like a one-node cluster's.
//!
//! Each pod gets a network namespace of its own (so Istio's init container
//! can install its redirect rules there, and every pod has its own address
//! and ports), wired by a veth pair to a bridge in a "node" namespace that
//! also holds the control plane's address. One more veth pair joins the host
//! to that bridge, so meshctl, Prometheus and the port-forward reach pods by
//! address. Every namespace is held by a process that dies with meshctl;
//! when the last process in a namespace exits, the kernel removes it and its
//! links, so nothing is left behind however meshctl ends.
//!
//! ```text
//!  host: smsmesh<N> 10.213.N.254 ─┐
//!  node: br0 10.213.N.1 ──────────┼── p0 ─ pod 0: eth0 10.213.N.2
//!                                 └── p1 ─ pod 1: eth0 10.213.N.3 ...
//! ```

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};
use nix::sched::CloneFlags;

/// Subnets come from 10.213.0.0/16, one /24 per running mesh.
const SUBNET_PREFIX: [u8; 2] = [10, 213];
/// The host's end of the link into the node namespace.
const HOST_LINK: &str = "smsmesh";

/// A network namespace, held open by a process that only sleeps.
pub struct Netns {
    holder: Child,
}

impl Netns {
    /// A new, empty network namespace (only a loopback, down).
    pub fn new() -> anyhow::Result<Netns> {
        let mut command = Command::new("sleep");
        command
            .arg("infinity")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let meshctl = nix::unistd::getpid();
        // SAFETY: only async-signal-safe calls (unshare, then die_with's) run
        // between fork and exec.
        unsafe {
            command.pre_exec(move || {
                nix::sched::unshare(CloneFlags::CLONE_NEWNET)?;
                super::supervisor::die_with(meshctl)
            });
        }
        let holder = command
            .spawn()
            .context("create a network namespace (needs root: CAP_SYS_ADMIN, CAP_NET_ADMIN)")?;
        Ok(Netns { holder })
    }

    pub fn pid(&self) -> u32 {
        self.holder.id()
    }

    /// What a process opens to join the namespace.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.pid()))
    }

    /// Runs `ip args...` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<()> {
        self.run("ip", args)
    }

    /// Sets a namespaced sysctl (e.g. `net.ipv4.ip_unprivileged_port_start`)
    /// inside it, as the kubelet does for a pod's security context.
    pub fn sysctl(&self, name: &str, value: &str) -> anyhow::Result<()> {
        self.run("sysctl", &["-q", "-w", &format!("{name}={value}")])
    }

    fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let ns = File::open(self.path()).context("open the network namespace")?;
        let mut command = Command::new(program);
        command.args(args);
        // SAFETY: setns is async-signal-safe; the file is opened before fork.
        unsafe {
            command.pre_exec(move || {
                nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET)?;
                Ok(())
            });
        }
        run(command, program, args)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

fn run(mut command: Command, program: &str, args: &[&str]) -> anyhow::Result<()> {
    let output = command
        .output()
        .with_context(|| format!("run `{program}` (Debian packages iproute2, procps)"))?;
    if !output.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn host_ip(args: &[&str]) -> anyhow::Result<()> {
    let mut command = Command::new("ip");
    command.args(args);
    run(command, "ip", args)
}

/// The node namespace with its bridge, and the host's link to it.
pub struct Network {
    /// The third octet of 10.213.N.0/24.
    index: u8,
    node: Netns,
    next_link: std::sync::atomic::AtomicUsize,
}

impl Network {
    /// Creates the node namespace and links the host to it, on the first
    /// 10.213.N.0/24 no address of the host is in. A lock file keeps two
    /// meshes starting at once from taking the same one.
    pub fn create() -> anyhow::Result<Network> {
        let lock_path = std::env::temp_dir().join("meshctl-networks.lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("open {}", lock_path.display()))?;
        let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, err)| err)
            .context("lock the subnet allocation")?;
        let used = host_addresses()?;
        let index = (0..=u8::MAX)
            .find(|i| {
                !used
                    .iter()
                    .any(|a| a.octets()[..3] == [SUBNET_PREFIX[0], SUBNET_PREFIX[1], *i])
            })
            .context("every 10.213.N.0/24 is in use on this host")?;
        let node = Netns::new()?;
        let network = Network {
            index,
            node,
            next_link: std::sync::atomic::AtomicUsize::new(0),
        };
        let node_pid = network.node.pid().to_string();
        let host_link = network.host_link();
        network.node.ip(&["link", "set", "lo", "up"])?;
        network.node.ip(&["link", "add", "br0", "type", "bridge"])?;
        network.node.ip(&[
            "addr",
            "add",
            &network.cidr_address(network.node_ip()),
            "dev",
            "br0",
        ])?;
        network.node.ip(&["link", "set", "br0", "up"])?;
        host_ip(&[
            "link", "add", &host_link, "type", "veth", "peer", "name", "host0", "netns", &node_pid,
        ])?;
        network
            .node
            .ip(&["link", "set", "host0", "master", "br0", "up"])?;
        host_ip(&[
            "addr",
            "add",
            &network.cidr_address(network.host_ip()),
            "dev",
            &host_link,
        ])?;
        host_ip(&["link", "set", &host_link, "up"])?;
        drop(lock);
        Ok(network)
    }

    fn host_link(&self) -> String {
        format!("{HOST_LINK}{}", self.index)
    }

    fn address(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(SUBNET_PREFIX[0], SUBNET_PREFIX[1], self.index, host)
    }

    fn cidr_address(&self, ip: Ipv4Addr) -> String {
        format!("{ip}/24")
    }

    /// The pod network, e.g. `10.213.3.0/24`.
    pub fn cidr(&self) -> String {
        format!("{}/24", self.address(0))
    }

    /// The node's address: the pods' default gateway and the control plane's.
    pub fn node_ip(&self) -> Ipv4Addr {
        self.address(1)
    }

    /// The host's address on the pod network.
    pub fn host_ip(&self) -> Ipv4Addr {
        self.address(254)
    }

    pub fn node(&self) -> &Netns {
        &self.node
    }

    /// A pod's namespace: `eth0` with `ip`, a default route through the
    /// node, loopback up, and the pod's namespaced sysctls.
    pub fn add_pod(&self, ip: Ipv4Addr, sysctls: &[(String, String)]) -> anyhow::Result<Netns> {
        let pod = Netns::new()?;
        let n = self
            .next_link
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let link = format!("p{n}");
        let pod_pid = pod.pid().to_string();
        self.node.ip(&[
            "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", &pod_pid,
        ])?;
        self.node
            .ip(&["link", "set", &link, "master", "br0", "up"])?;
        pod.ip(&["link", "set", "lo", "up"])?;
        pod.ip(&["addr", "add", &self.cidr_address(ip), "dev", "eth0"])?;
        pod.ip(&["link", "set", "eth0", "up"])?;
        pod.ip(&[
            "route",
            "add",
            "default",
            "via",
            &self.node_ip().to_string(),
        ])?;
        for (name, value) in sysctls {
            pod.sysctl(name, value)?;
        }
        Ok(pod)
    }
}

/// Every IPv4 address on the host's interfaces.
fn host_addresses() -> anyhow::Result<Vec<Ipv4Addr>> {
    let output = Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .context("run `ip` (Debian package iproute2)")?;
    Ok(String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "inet")
        .filter_map(|w| w[1].split('/').next()?.parse().ok())
        .collect())
}
