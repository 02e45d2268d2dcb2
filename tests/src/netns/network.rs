//! [`NetnsNetwork`]: `storage-node` processes, each in a network namespace of its own,
//! on a bridge inside a hub namespace, and client namespaces where the `uplink` CLI and
//! gateway run. See the module doc of [`super`].

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use shoal_proto::address::{AddressScope, TestRanges};
use shoal_proto::{Identity, NodeId};
use shoal_test_kit::Run;
use storage_node::{ByteSize, Config};
use uplink::discovery::DhtNodes;
use uplink::store::{NodeCandidate, NodeSource};
use uplink::{Access, RootSecret};

use super::plumbing::{self, PREFIX};
use crate::process_net::Binaries;

/// Proof-of-work bits of the harness's network: low, so that setup takes milliseconds.
pub const DIFFICULTY: u32 = 2;
/// The gRPC port of every node (each node has an address of its own).
pub const GRPC_PORT: u16 = 7777;
/// The HTTP (metrics, status) port of every node.
pub const HTTP_PORT: u16 = 7778;
/// The bridge every interface is on while the network is whole.
const MAIN_BRIDGE: &str = "br0";
/// How long a node may take to print its ready line.
const READY_LIMIT: Duration = Duration::from_secs(60);
/// Third octet of the first client namespace (nodes use 1..=199).
const FIRST_CLIENT_OCTET: u8 = 200;

static INSTANCES: AtomicU32 = AtomicU32::new(0);

/// How a [`NetnsNetwork`] is built.
#[derive(Debug, Clone)]
pub struct NetnsOptions {
    /// Storage nodes, node `i` (0-based) at `10.N.(i+1).2`.
    pub nodes: usize,
    /// The first `seeds` nodes are the DHT seeds: every node bootstraps from them and
    /// the access grant names them.
    pub seeds: usize,
    /// Client namespaces, client `j` at `10.N.(200+j).2`.
    pub clients: usize,
    /// Allocation of every node.
    pub allocate: ByteSize,
    /// Lines added to every uplink config dir's `config.toml` (a scheme, timeouts).
    pub uplink_config: String,
}

impl Default for NetnsOptions {
    fn default() -> Self {
        Self {
            nodes: 10,
            seeds: 1,
            clients: 1,
            allocate: ByteSize(4 << 30),
            uplink_config: String::new(),
        }
    }
}

/// Where a new node goes and what it says about itself.
#[derive(Debug, Clone, Default)]
pub struct NodeSpec {
    /// Its address (default: `10.N.(index+1).2`, a /24 of its own).
    pub ip: Option<Ipv4Addr>,
    /// The `external_address` it advertises instead of its own (a lie, for tests).
    pub external_address: Option<SocketAddr>,
}

/// A member of the network: its links can be cut and moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Member {
    Node(usize),
    Client(usize),
}

/// One storage node: its namespace, its link in the hub, its directory, its process.
#[derive(Debug)]
pub struct NsNode {
    pub ns: String,
    hub_end: String,
    pub ip: Ipv4Addr,
    pub dir: PathBuf,
    /// Hex node id.
    pub node_id: String,
    child: Option<Child>,
}

impl NsNode {
    /// `NODEID@IP:PORT`.
    pub fn pinned(&self) -> String {
        format!("{}@{}", self.node_id, self.grpc())
    }

    pub fn grpc(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip), GRPC_PORT)
    }

    pub fn http(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip), HTTP_PORT)
    }

    /// Its process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// A namespace for clients (`uplink` commands, the gateway).
#[derive(Debug)]
pub struct NsClient {
    pub ns: String,
    hub_end: String,
    pub ip: Ipv4Addr,
}

/// Runs the `uplink` binary in one client namespace.
#[derive(Debug, Clone)]
pub struct UplinkRunner {
    pub ns: String,
    pub uplink: PathBuf,
}

impl UplinkRunner {
    /// `ip netns exec NS uplink --config-dir DIR ARGS` (killed when dropped).
    pub fn command(&self, dir: &Path, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("ip");
        c.args(["netns", "exec", &self.ns])
            .arg(&self.uplink)
            .arg("--config-dir")
            .arg(dir)
            .args(args)
            .env("RUST_LOG", "warn,s3s=off")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        c
    }

    /// Runs one command bounded by `limit` (killed past it, and the run fails).
    pub async fn run(&self, dir: &Path, args: &[&str], limit: Duration) -> anyhow::Result<Run> {
        let mut cmd = self.command(dir, args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = cmd.spawn().context("cannot run uplink in its namespace")?;
        let out = tokio::time::timeout(limit, child.wait_with_output())
            .await
            .with_context(|| format!("timed out after {limit:?}"))??;
        Ok(Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stdout_bytes: out.stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// The network. Dropping it (or [`NetnsNetwork::teardown`]) kills every process it
/// started (by pid) and deletes every namespace it made, even on a panic.
#[derive(Debug)]
pub struct NetnsNetwork {
    /// `shoalns-PID-INSTANCE`, the prefix of every namespace of this network.
    tag: String,
    /// The second octet: every address is `10.octet.X.Y`.
    octet: u8,
    hub: String,
    /// Every namespace made, in order (deleted in reverse).
    namespaces: Vec<String>,
    /// Bridges made in the hub besides the main one (one per partition group).
    bridges: Vec<String>,
    nodes: Vec<NsNode>,
    clients: Vec<NsClient>,
    bins: Binaries,
    root: Option<tempfile::TempDir>,
    seeds: Vec<String>,
    grant: String,
    options: NetnsOptions,
}

impl NetnsNetwork {
    /// Builds the namespaces, sets up and starts the nodes (seeds first), and makes the
    /// access grant; does not wait for the DHT (see [`NetnsNetwork::wait_seen`]). Fails
    /// with the reason when namespaces cannot be made (root and iproute2 are needed).
    pub fn start(bins: Binaries, options: NetnsOptions) -> anyhow::Result<Self> {
        if options.nodes == 0 || options.nodes > 199 || options.clients > 50 {
            bail!("1 to 199 nodes and at most 50 client namespaces");
        }
        if options.seeds == 0 || options.seeds > options.nodes {
            bail!("1 to {} seeds", options.nodes);
        }
        // Namespaces of harnesses that were killed before they could clean up.
        for ns in plumbing::orphaned_namespaces() {
            let _ = plumbing::delete_namespace(&ns);
        }
        let pid = std::process::id();
        let instance = INSTANCES.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{PREFIX}{pid}-{instance}");
        let octet = 16 + ((pid + instance * 37) % 224) as u8;
        let root = tempfile::Builder::new().prefix("shoal-netns").tempdir()?;
        let mut net = Self {
            hub: format!("{tag}-hub"),
            tag,
            octet,
            namespaces: Vec::new(),
            bridges: Vec::new(),
            nodes: Vec::new(),
            clients: Vec::new(),
            bins,
            root: Some(root),
            seeds: Vec::new(),
            grant: String::new(),
            options: options.clone(),
        };
        // From here on, `Drop` removes whatever was made.
        plumbing::add_namespace(&net.hub)?;
        net.namespaces.push(net.hub.clone());
        plumbing::add_bridge(&net.hub, MAIN_BRIDGE)?;
        for j in 0..options.clients {
            net.add_client(j)?;
        }
        for i in 0..options.nodes {
            net.add_node(NodeSpec::default())?;
            if i + 1 == options.seeds {
                net.seeds = net.nodes.iter().map(NsNode::pinned).collect();
            }
        }
        net.grant = Access::new(RootSecret::random(), net.seeds.clone()).to_grant()?;
        Ok(net)
    }

    fn add_client(&mut self, j: usize) -> anyhow::Result<()> {
        let ns = format!("{}-c{j}", self.tag);
        plumbing::add_namespace(&ns)?;
        self.namespaces.push(ns.clone());
        let ip = Ipv4Addr::new(10, self.octet, FIRST_CLIENT_OCTET + j as u8, 2);
        let hub_end = format!("c{j}");
        plumbing::attach(&self.hub, MAIN_BRIDGE, &hub_end, &ns, &format!("{ip}/16"))?;
        self.clients.push(NsClient { ns, hub_end, ip });
        Ok(())
    }

    /// The test range of this network, `10.N.0.0/16`.
    pub fn test_range(&self) -> String {
        format!("10.{}.0.0/16", self.octet)
    }

    /// The address scope of this network's nodes and uplinks.
    pub fn scope(&self) -> AddressScope {
        let ranges = TestRanges::parse(&[self.test_range()]).unwrap_or_default();
        AddressScope::Public.with_test_ranges(ranges)
    }

    /// The address `10.N.third.fourth` of this network.
    pub fn address(&self, third: u8, fourth: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.octet, third, fourth)
    }

    /// Sets up and starts one more node (in a namespace of its own); returns its index.
    pub fn add_node(&mut self, spec: NodeSpec) -> anyhow::Result<usize> {
        let i = self.nodes.len();
        if i >= 199 {
            bail!("at most 199 nodes");
        }
        let ip = spec.ip.unwrap_or(self.address(i as u8 + 1, 2));
        let ns = format!("{}-n{i}", self.tag);
        plumbing::add_namespace(&ns)?;
        self.namespaces.push(ns.clone());
        let hub_end = format!("n{i}");
        plumbing::attach(&self.hub, MAIN_BRIDGE, &hub_end, &ns, &format!("{ip}/16"))?;
        let dir = self.work_dir()?.join(format!("node{i:03}"));
        let own = SocketAddr::new(IpAddr::V4(ip), GRPC_PORT);
        let config = Config {
            listen: own,
            http: SocketAddr::new(IpAddr::V4(ip), HTTP_PORT),
            external_address: spec.external_address.map(|a| a.to_string()),
            allocate: self.options.allocate,
            difficulty: DIFFICULTY,
            bootstrap: self
                .seeds
                .iter()
                .filter(|s| !s.ends_with(&format!("@{own}")))
                .cloned()
                .collect(),
            test_address_ranges: vec![self.test_range()],
            ..Config::default()
        };
        let identity =
            storage_node::setup::setup(&dir, &config, false, 1, |_| ControlFlow::Continue(()))?;
        self.nodes.push(NsNode {
            ns,
            hub_end,
            ip,
            dir,
            node_id: identity.node_id().to_hex(),
            child: None,
        });
        self.restart(i)?;
        Ok(i)
    }

    fn work_dir(&self) -> anyhow::Result<&Path> {
        Ok(self
            .root
            .as_ref()
            .context("the network was torn down")?
            .path())
    }

    /// Starts node `i` (again) on its directory, address and identity, and waits for its
    /// ready line.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        let bin = self.bins.storage_node.clone();
        let node = self.nodes.get_mut(i).context("no such node")?;
        if node.child.is_some() {
            bail!("node {i} is running");
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.with_extension("log"))?;
        // `ip netns exec` execs the command itself: the child's pid is the node's.
        let mut child = Command::new("ip")
            .args(["netns", "exec", &node.ns])
            .arg(&bin)
            .arg("run")
            .arg("--dir")
            .arg(&node.dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("cannot start storage-node in its namespace")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref() {
                match line {
                    Ok(l) if l.starts_with("ready ") => {
                        let _ = tx.send(l);
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
            // Keep reading, so that a later line never meets a closed pipe.
            lines.for_each(drop);
        });
        match rx.recv_timeout(READY_LIMIT) {
            Ok(_) => {
                node.child = Some(child);
                Ok(())
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "node {i} did not get ready within {READY_LIMIT:?}; see {}",
                    node.dir.with_extension("log").display()
                )
            }
        }
    }

    /// Kills node `i` at once (SIGKILL, by its pid), as a machine that loses power.
    pub fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        let node = self.nodes.get_mut(i).context("no such node")?;
        let mut child = node
            .child
            .take()
            .with_context(|| format!("node {i} is not running"))?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Whether node `i`'s process runs (it has not exited).
    pub fn is_running(&mut self, i: usize) -> bool {
        self.nodes
            .get_mut(i)
            .and_then(|n| n.child.as_mut())
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn hub_end(&self, m: Member) -> anyhow::Result<&str> {
        Ok(match m {
            Member::Node(i) => &self.nodes.get(i).context("no such node")?.hub_end,
            Member::Client(j) => &self.clients.get(j).context("no such client")?.hub_end,
        })
    }

    /// Cuts `m` off the network (its link in the hub goes down).
    pub fn cut(&self, m: Member) -> anyhow::Result<()> {
        plumbing::set_link(&self.hub, self.hub_end(m)?, false)
    }

    /// Plugs `m` back in.
    pub fn reconnect(&self, m: Member) -> anyhow::Result<()> {
        plumbing::set_link(&self.hub, self.hub_end(m)?, true)
    }

    /// Splits the network: group `g` gets a bridge of its own, so its members reach
    /// each other and nobody else; members in no group stay on the main bridge.
    pub fn split(&mut self, groups: &[Vec<Member>]) -> anyhow::Result<()> {
        for (g, members) in groups.iter().enumerate() {
            let bridge = format!("brp{g}");
            if !self.bridges.contains(&bridge) {
                plumbing::add_bridge(&self.hub, &bridge)?;
                self.bridges.push(bridge.clone());
            }
            for m in members {
                plumbing::move_to_bridge(&self.hub, self.hub_end(*m)?, &bridge)?;
            }
        }
        Ok(())
    }

    /// Puts `members` back on the main bridge (the end of their split).
    pub fn merge(&self, members: &[Member]) -> anyhow::Result<()> {
        for m in members {
            plumbing::move_to_bridge(&self.hub, self.hub_end(*m)?, MAIN_BRIDGE)?;
        }
        Ok(())
    }

    /// Heals every split and cut: every link up, on the main bridge.
    pub fn heal(&self) -> anyhow::Result<()> {
        let ends = self
            .nodes
            .iter()
            .map(|n| &n.hub_end)
            .chain(self.clients.iter().map(|c| &c.hub_end));
        for end in ends {
            plumbing::move_to_bridge(&self.hub, end, MAIN_BRIDGE)?;
            plumbing::set_link(&self.hub, end, true)?;
        }
        Ok(())
    }

    pub fn nodes(&self) -> &[NsNode] {
        &self.nodes
    }

    pub fn node(&self, i: usize) -> &NsNode {
        &self.nodes[i]
    }

    pub fn client(&self, j: usize) -> &NsClient {
        &self.clients[j]
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The seeds, pinned.
    pub fn seeds(&self) -> &[String] {
        &self.seeds
    }

    /// The access grant (naming the seeds).
    pub fn grant(&self) -> &str {
        &self.grant
    }

    pub fn bins(&self) -> &Binaries {
        &self.bins
    }

    /// A scratch directory inside the network's temp dir.
    pub fn scratch(&self, name: &str) -> anyhow::Result<PathBuf> {
        let p = self.work_dir()?.join("scratch").join(name);
        std::fs::create_dir_all(&p)?;
        Ok(p)
    }

    /// The `config.toml` of this network's uplink config dirs.
    pub fn uplink_config(&self) -> String {
        format!(
            "difficulty = {DIFFICULTY}\ntest_address_ranges = [\"{}\"]\n{}",
            self.test_range(),
            self.options.uplink_config
        )
    }

    /// A new config dir named `name` with this network's `config.toml` (no grant yet).
    pub fn new_config_dir(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.work_dir()?.join("uplink").join(name);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("config.toml"), self.uplink_config())?;
        Ok(dir)
    }

    /// What runs `uplink` commands in client namespace `client` (independent of the
    /// network's lifetime, for workers running beside faults).
    pub fn runner(&self, client: usize) -> anyhow::Result<UplinkRunner> {
        Ok(UplinkRunner {
            ns: self
                .clients
                .get(client)
                .context("no such client")?
                .ns
                .clone(),
            uplink: self.bins.uplink.clone(),
        })
    }

    /// `ip netns exec CLIENT-NS uplink --config-dir DIR ARGS` (killed when dropped).
    pub fn uplink_command(
        &self,
        client: usize,
        dir: &Path,
        args: &[&str],
    ) -> anyhow::Result<tokio::process::Command> {
        Ok(self.runner(client)?.command(dir, args))
    }

    /// Runs one `uplink` command in client namespace `client`, bounded by `limit` (the
    /// process is killed past it and the run fails).
    pub async fn uplink(
        &self,
        client: usize,
        dir: &Path,
        args: &[&str],
        limit: Duration,
    ) -> anyhow::Result<Run> {
        self.runner(client)?.run(dir, args, limit).await
    }

    /// [`NetnsNetwork::uplink`] that must succeed; returns its stdout.
    pub async fn uplink_ok(
        &self,
        client: usize,
        dir: &Path,
        args: &[&str],
        limit: Duration,
    ) -> anyhow::Result<String> {
        let run = self.uplink(client, dir, args, limit).await?;
        if !run.success() {
            bail!("uplink {args:?} failed ({:?}): {}", run.code, run.stderr);
        }
        Ok(run.stdout)
    }

    /// A config dir `name` of client `client` with the grant imported.
    pub async fn import(&self, client: usize, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.new_config_dir(name)?;
        self.uplink_ok(
            client,
            &dir,
            &["access", "import", &self.grant],
            Duration::from_secs(120),
        )
        .await?;
        Ok(dir)
    }

    /// The nodes a DHT client in client namespace `client`, joining through the seeds
    /// with this network's public-network rules, finds (verified node records only).
    pub async fn sample(&self, client: usize, wanted: usize) -> anyhow::Result<Vec<NodeCandidate>> {
        let ns = self
            .clients
            .get(client)
            .context("no such client")?
            .ns
            .clone();
        let seeds = self
            .nodes
            .iter()
            .take(self.options.seeds)
            .map(|n| {
                let id = NodeId::from_hex(&n.node_id).context("a node id that is not hex")?;
                Ok((id, n.grpc()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let scope = self.scope();
        plumbing::in_namespace(&ns, Duration::from_secs(60), move || async move {
            let probe = DhtNodes::new(Arc::new(Identity::random()), seeds, DIFFICULTY, scope);
            let found = probe.sample(wanted).await;
            probe.shutdown().await;
            Ok(found?)
        })
        .await
    }

    /// Waits (at most `limit`) until a DHT client in client namespace `client` finds
    /// at least `n` nodes.
    pub async fn wait_seen(&self, client: usize, n: usize, limit: Duration) -> anyhow::Result<()> {
        let end = tokio::time::Instant::now() + limit;
        let mut last = 0;
        loop {
            if let Ok(found) = self.sample(client, n).await {
                last = found.len();
                if last >= n {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() >= end {
                bail!("a DHT client found {last} nodes, not {n}, within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Node `i`'s metric `name` (the first sample), read from inside its namespace.
    pub async fn metric(&self, i: usize, name: &str) -> anyhow::Result<f64> {
        let node = self.nodes.get(i).context("no such node")?;
        let (ns, http, name) = (node.ns.clone(), node.http(), name.to_owned());
        plumbing::in_namespace(&ns, Duration::from_secs(5), move || async move {
            let (code, body) = crate::http_get(http, "/metrics").await?;
            if code != 200 {
                bail!("/metrics answered {code}");
            }
            body.lines()
                .find_map(|l| l.strip_prefix(name.as_str())?.strip_prefix(' '))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .with_context(|| format!("no metric {name}"))
        })
        .await
    }

    /// Kills every process (by pid) and deletes every namespace this network made;
    /// returns the first error (it goes on after one).
    pub fn teardown(&mut self) -> anyhow::Result<()> {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let mut first = Ok(());
        while let Some(ns) = self.namespaces.pop() {
            if plumbing::namespace_exists(&ns)
                && let Err(e) = plumbing::delete_namespace(&ns)
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        if let Some(root) = self.root.take() {
            if std::env::var_os("SHOAL_NETNS_KEEP").is_some() {
                eprintln!("SHOAL_NETNS_KEEP: kept {}", root.keep().display());
            } else {
                let _ = root.close();
            }
        }
        first
    }
}

impl Drop for NetnsNetwork {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("netns teardown: {e:#}");
        }
    }
}
