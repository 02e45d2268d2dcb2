//! A local Shoal network on this machine: N storage nodes on `127.0.N.1` (distinct /24s
//! on loopback), node 1 the DHT seed and the rest joining through it, each with its own
//! directory under the devnet dir, so a second `devnet up` on the same dir resumes with
//! every piece intact.
//!
//! Layout of the devnet dir:
//! - `devnet.toml`: the network's fixed parameters (base port, difficulty, allocation);
//! - `nodes/node-NN/`: an ordinary storage-node directory (`storage-node info --dir` works);
//! - `running.json`: the nodes' addresses while `devnet up` runs (read by `devnet status`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use shoal_proto::Identity;
use storage_node::config::{NodeDir, Overrides};
use storage_node::{ByteSize, Config, RunningNode};

/// The parameters a devnet keeps for its whole life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevnetParams {
    /// Port of every node's gRPC server (piece store + DHT); HTTP is the next port.
    pub base_port: u16,
    /// Proof-of-work bits of the network: low, so that setup takes seconds.
    pub difficulty: u32,
    /// Disk space each node offers.
    pub allocate: ByteSize,
}

/// One node as `running.json` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEntry {
    pub index: usize,
    pub node_id: String,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
}

/// What `running.json` holds while `devnet up` runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunningInfo {
    pub pid: u32,
    pub nodes: Vec<NodeEntry>,
}

/// A running devnet.
#[derive(Debug)]
pub struct Devnet {
    dir: PathBuf,
    params: DevnetParams,
    nodes: Vec<RunningNode>,
}

const PARAMS_FILE: &str = "devnet.toml";
const RUNNING_FILE: &str = "running.json";

fn node_ip(index: usize) -> anyhow::Result<IpAddr> {
    let octet = u8::try_from(index + 1)
        .ok()
        .filter(|o| *o < 255)
        .context("a devnet has at most 254 nodes")?;
    Ok(IpAddr::V4(Ipv4Addr::new(127, 0, octet, 1)))
}

fn node_dir(dir: &Path, index: usize) -> PathBuf {
    dir.join("nodes").join(format!("node-{:02}", index + 1))
}

/// The gRPC address of node `index` (node 0 is the seed).
pub fn grpc_address(params: &DevnetParams, index: usize) -> anyhow::Result<SocketAddr> {
    Ok(SocketAddr::new(node_ip(index)?, params.base_port))
}

/// Loads `devnet.toml`, or writes it from `requested` on first use. A later run keeps
/// the stored parameters (the nodes' addresses and identities depend on them).
pub fn load_or_create_params(dir: &Path, requested: &DevnetParams) -> anyhow::Result<DevnetParams> {
    let path = dir.join(PARAMS_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text)
            .with_context(|| format!("{} is not a devnet file", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if requested.base_port == 0 || requested.base_port == u16::MAX {
                bail!("the base port must be between 1 and 65534");
            }
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let text = toml::to_string(requested)?;
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(requested.clone())
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Number of nodes already set up in `dir`.
pub fn existing_nodes(dir: &Path) -> usize {
    (0..254)
        .take_while(|i| NodeDir(node_dir(dir, *i)).config().exists())
        .count()
}

impl Devnet {
    /// Sets up whatever nodes `dir` lacks (at least `nodes` in all) and starts them all.
    pub async fn up(dir: &Path, nodes: usize, requested: &DevnetParams) -> anyhow::Result<Self> {
        let params = load_or_create_params(dir, requested)?;
        let count = nodes.max(existing_nodes(dir)).max(1);
        let seed = grpc_address(&params, 0)?;
        let mut running = Vec::with_capacity(count);
        let mut devnet = Devnet {
            dir: dir.to_owned(),
            params: params.clone(),
            nodes: Vec::new(),
        };
        for i in 0..count {
            let ndir = node_dir(dir, i);
            let paths = NodeDir(ndir.clone());
            if !paths.config().exists() {
                let ip = node_ip(i)?;
                let config = Config {
                    listen: SocketAddr::new(ip, params.base_port),
                    http: SocketAddr::new(ip, params.base_port + 1),
                    allocate: params.allocate,
                    difficulty: params.difficulty,
                    bootstrap: if i == 0 {
                        Vec::new()
                    } else {
                        // Pinned: the seed (set up first) must prove its node id.
                        let seed_id = Identity::load(&NodeDir(node_dir(dir, 0)).identity())?;
                        vec![format!("{}@{seed}", seed_id.node_id())]
                    },
                    // A devnet lives on this machine's 127.0.N.1 addresses.
                    local_network: true,
                    ..Config::default()
                };
                let setup_dir = ndir.clone();
                tokio::task::spawn_blocking(move || {
                    storage_node::setup::setup(&setup_dir, &config, false, 1, |_| {
                        ControlFlow::Continue(())
                    })
                })
                .await??;
            }
            let config =
                storage_node::config::load(&ndir, Overrides::default(), Overrides::default())?;
            let identity = Identity::load(&paths.identity())?;
            let node = match storage_node::start(&config, identity, &paths.storage()).await {
                Ok(node) => node,
                Err(e) => {
                    // Stop what already runs before reporting.
                    devnet.nodes = running;
                    devnet.shutdown().await.ok();
                    return Err(e).with_context(|| {
                        format!(
                            "cannot start node {} ({}); is another devnet running on this address?",
                            i + 1,
                            config.listen
                        )
                    });
                }
            };
            running.push(node);
        }
        devnet.nodes = running;
        devnet.write_running()?;
        Ok(devnet)
    }

    /// Waits until the seed's routing table holds every other node, so that an uplink
    /// started now sees the whole network. Returns whether that happened in `deadline`.
    pub async fn wait_joined(&self, deadline: Duration) -> bool {
        let Some(seed) = self.nodes.first() else {
            return true;
        };
        let want = self.nodes.len() - 1;
        shoal_test_kit::wait_until(deadline, "every node in the seed's table", || async {
            seed.dht().table().len() >= want
        })
        .await
        .is_ok()
    }

    pub fn params(&self) -> &DevnetParams {
        &self.params
    }

    pub fn nodes(&self) -> &[RunningNode] {
        &self.nodes
    }

    /// The seed node's gRPC address: what uplinks bootstrap from.
    pub fn seed(&self) -> SocketAddr {
        self.nodes
            .first()
            .map(|n| n.grpc_addr())
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 1, 1], self.params.base_port)))
    }

    /// The seed node pinned, `NODEID@IP:PORT`: the bootstrap entry uplinks get.
    pub fn seed_pinned(&self) -> Option<String> {
        self.nodes
            .first()
            .map(|n| format!("{}@{}", n.node_id(), n.grpc_addr()))
    }

    pub fn entries(&self) -> Vec<NodeEntry> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(index, n)| NodeEntry {
                index,
                node_id: n.node_id().to_hex(),
                grpc: n.grpc_addr(),
                http: n.http_addr(),
            })
            .collect()
    }

    fn write_running(&self) -> anyhow::Result<()> {
        let info = RunningInfo {
            pid: std::process::id(),
            nodes: self.entries(),
        };
        let path = self.dir.join(RUNNING_FILE);
        std::fs::write(&path, serde_json::to_vec_pretty(&info)?)
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// Stops every node (each cleanly: uploads aborted, metadata flushed).
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = std::fs::remove_file(self.dir.join(RUNNING_FILE));
        let mut first_error = None;
        for node in self.nodes.into_iter().rev() {
            if let Err(e) = node.shutdown().await {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

/// A node's state as `devnet status` reports it.
#[derive(Debug)]
pub struct NodeStatus {
    pub entry: NodeEntry,
    /// `/api/status` JSON, or why it could not be fetched.
    pub status: Result<serde_json::Value, String>,
}

/// Asks every node listed in `running.json` for its `/api/status`.
pub async fn status(dir: &Path) -> anyhow::Result<Vec<NodeStatus>> {
    let path = dir.join(RUNNING_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if dir.join(PARAMS_FILE).exists() {
                bail!(
                    "the devnet in {} is not running (start it with `devnet up`)",
                    dir.display()
                );
            }
            bail!(
                "no devnet in {} (create one with `devnet up --dir {}`)",
                dir.display(),
                dir.display()
            );
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let info: RunningInfo = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a devnet status file", path.display()))?;
    let mut out = Vec::with_capacity(info.nodes.len());
    for entry in info.nodes {
        let status = match tokio::time::timeout(
            Duration::from_secs(3),
            crate::http_get(entry.http, "/api/status"),
        )
        .await
        {
            Ok(Ok((200, body))) => serde_json::from_str(&body).map_err(|e| e.to_string()),
            Ok(Ok((code, _))) => Err(format!("HTTP {code}")),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer within 3 s".into()),
        };
        out.push(NodeStatus { entry, status });
    }
    Ok(out)
}

/// The devnet's access grant and the uplink config directory that uses it.
#[derive(Debug, Clone)]
pub struct UplinkAccess {
    pub grant: String,
    pub grant_file: PathBuf,
    pub config_dir: PathBuf,
}

/// Creates (first run) or reads the devnet's access grant, and writes the uplink config
/// for this network into `DIR/uplink`: the grant (bootstrap = the seed node, and the
/// devnet's proof-of-work difficulty) and a `config.toml` that names the difficulty too.
/// `seed` is the seed node pinned, `NODEID@IP:PORT`.
pub fn ensure_uplink_access(dir: &Path, seed: &str) -> anyhow::Result<UplinkAccess> {
    let params_path = dir.join(PARAMS_FILE);
    let params: DevnetParams = toml::from_str(
        &std::fs::read_to_string(&params_path)
            .with_context(|| format!("cannot read {}", params_path.display()))?,
    )?;
    let config_dir = dir.join("uplink");
    let paths = uplink::config::Paths::resolve(Some(config_dir.clone()))?;
    let grant_file = dir.join("grant.txt");
    let grant = match paths.load_grant() {
        Ok(grant) => grant,
        Err(_) => {
            let access = uplink::Access::new(uplink::RootSecret::random(), vec![seed.to_owned()])
                .with_difficulty(params.difficulty);
            let grant = access.to_grant()?;
            paths.save_grant(&grant)?;
            grant
        }
    };
    // Checked, so a damaged grant file is reported here rather than by the uplink.
    uplink::Access::from_grant(&grant).context("the devnet's access grant is damaged")?;
    std::fs::write(&grant_file, format!("{grant}\n"))
        .with_context(|| format!("cannot write {}", grant_file.display()))?;
    let config_file = paths.config_file();
    let text = match std::fs::read_to_string(&config_file) {
        // A devnet made before `local_network` existed gains the line.
        Ok(text) if !text.contains("local_network") => Some(format!(
            "{text}# The devnet lives on this machine's 127.0.N.1 addresses.\nlocal_network = true\n"
        )),
        Ok(_) => None,
        Err(_) => Some(format!(
            "# Uplink configuration for the devnet in {}.\n\
             # Proof-of-work bits of this network's node ids.\n\
             difficulty = {}\n\
             # The devnet lives on this machine's 127.0.N.1 addresses.\n\
             local_network = true\n",
            dir.display(),
            params.difficulty
        )),
    };
    if let Some(text) = text {
        std::fs::write(&config_file, text)
            .with_context(|| format!("cannot write {}", config_file.display()))?;
    }
    Ok(UplinkAccess {
        grant,
        grant_file,
        config_dir,
    })
}

/// How often a running devnet renews the leases of its uplink's data.
pub const RENEW_INTERVAL: Duration = Duration::from_secs(3600);

/// Keeps the devnet uplink's data alive while the devnet runs (issue 12: a long-running
/// devnet renews in the background). It is a catalog writer of its own in `DIR/renewer`
/// (same grant and config as `DIR/uplink`), so the uplink's config dir stays free for
/// the CLI; every round pulls what the CLI published, then renews everything.
#[derive(Debug)]
pub struct DevnetRenewer {
    renewer: uplink::maintain::Renewer,
    dht: std::sync::Arc<uplink::discovery::DhtNodes>,
}

impl DevnetRenewer {
    /// Stops renewing and leaves the DHT.
    pub async fn stop(self) {
        self.renewer.stop().await;
        self.dht.shutdown().await;
    }
}

/// Starts the devnet's background renewer (see [`DevnetRenewer`]).
pub async fn spawn_renewer(
    dir: &Path,
    access: &UplinkAccess,
    interval: Duration,
) -> anyhow::Result<DevnetRenewer> {
    use std::sync::Arc;
    use uplink::config::{CachedNodes, Paths};
    let grant = uplink::Access::from_grant(&access.grant).context("the devnet's grant")?;
    let file = Paths::resolve(Some(access.config_dir.clone()))?.load_config()?;
    let config = file.uplink_config(&access.config_dir.join("config.toml"))?;
    let paths = Paths::resolve(Some(dir.join("renewer")))?;
    std::fs::create_dir_all(&paths.config_dir)
        .with_context(|| format!("cannot create {}", paths.config_dir.display()))?;
    let owner = grant.owner().node_id().to_hex();
    let catalog = uplink::catalog::Catalog::open(&paths.catalog_dir(&owner), paths.writer_id()?)
        .context("cannot open the renewer's catalog")?;
    let mut bootstrap = Vec::new();
    for peer in grant.bootstrap() {
        let pinned: shoal_proto::tls::PinnedPeer = peer.parse()?;
        bootstrap.extend(pinned.resolve().await?);
    }
    let difficulty = file
        .difficulty
        .or(grant.difficulty())
        .unwrap_or(shoal_proto::DEFAULT_DIFFICULTY);
    let identity = Arc::new(Identity::from_seed(*grant.owner().seed()));
    let dht = Arc::new(uplink::discovery::DhtNodes::new(
        identity,
        bootstrap,
        difficulty,
        file.address_scope(),
    ));
    let nodes = Arc::new(CachedNodes::new(dht.clone(), Duration::from_secs(60)));
    let up = uplink::Uplink::with_network_catalog(
        grant,
        Arc::new(uplink::grpc::GrpcPieceStore::default()),
        nodes,
        catalog,
        config,
        dht.clone(),
    )?;
    Ok(DevnetRenewer {
        renewer: uplink::maintain::spawn_renewer(up, interval),
        dht,
    })
}
