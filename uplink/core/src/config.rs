//! The CLI's configuration: where files live and what `config.toml` may say.
//!
//! Layout (default, or everything under `--config-dir` / `SHOAL_CONFIG_DIR`):
//! - `<config dir>/config.toml` — [`FileConfig`], optional;
//! - `<config dir>/access` — the access grant (mode 0600);
//! - `<data dir>/catalog-<owner id prefix>/` — the catalog of that access (`catalog.sqlite`
//!   and its `publish.lock`; see [`crate::catalog::store`]), so
//!   that another access on the same machine sees its own (empty) catalog.
//!
//! Default dirs: `$XDG_CONFIG_HOME/shoal/uplink` and `$XDG_DATA_HOME/shoal/uplink` (or the
//! platform's equivalents, via `dirs`).

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::catalog::WriterId;
use crate::client::UplinkConfig;
use crate::codec::{CodecKind, Scheme};
use shoal_proto::NodeId;
use shoal_proto::address::{AddressScope, TestRanges};
use shoal_proto::tls::{PinnedPeer, PinnedPeerError};

use crate::store::{DiscoveryError, NodeCandidate, NodeSource};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot find a home directory for the configuration; set SHOAL_CONFIG_DIR")]
    NoHome,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("no access yet: run `uplink access create` or `uplink access import GRANT`")]
    NoAccess,
    #[error("the access grant is not private: {0}")]
    Insecure(#[from] shoal_proto::private::Insecure),
}

/// What `config.toml` may set. Every field is optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// A fixed list of storage nodes to use instead of DHT discovery (for closed test
    /// setups): `NODEID@IP:PORT`, the node id in hex pinning the node's TLS key (a node
    /// that cannot prove it is never used). Default: none, nodes are found through the
    /// DHT, joined via the access grant's bootstrap peers.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Proof-of-work bits the network requires of node ids; nodes below it are ignored.
    /// Default `shoal_proto::DEFAULT_DIFFICULTY` (19). A devnet writes its own.
    pub difficulty: Option<u32>,
    /// Redundancy scheme `k/repair/success/total`. Default `29/35/80/110`.
    pub scheme: Option<String>,
    /// `reed-solomon-simd` (default) or `reed-solomon-erasure`.
    pub codec: Option<String>,
    /// Use a smaller scheme on a network too small for `scheme`. Default true.
    pub allow_smaller_scheme: Option<bool>,
    /// Files copied in parallel by `cp -r`. Default 4.
    pub parallelism: Option<usize>,
    /// Seconds before a stalled piece transfer is given up. Default 30.
    pub piece_timeout_secs: Option<u64>,
    /// Milliseconds the long tail of a segment's piece uploads gets, once `success`
    /// receipts are in, to deliver more receipts (all recorded). 0 commits at once.
    /// Default 2000.
    pub long_tail_grace_ms: Option<u64>,
    /// Keep the catalog in the network (default `true`): every command first pulls what
    /// other writers published and exits 0 only once its own changes are published.
    /// `false` keeps it on this machine only, for closed test setups whose nodes serve
    /// no DHT; a machine lost then loses its catalog.
    pub network_catalog: Option<bool>,
    /// Redundancy of the catalog's own blobs, `k/repair/success/total` with at most 28
    /// pieces. Default `8/12/16/24`.
    pub catalog_scheme: Option<String>,
    /// Publishes between two snapshots of the whole catalog. Default 64.
    pub snapshot_every: Option<u64>,
    /// Lease of new pieces, and how far `uplink renew` extends every piece, in seconds.
    /// Default 7776000 (90 days). Nodes refuse more than their `max_lease` (default one
    /// year); `renew` then asks for exactly their limit.
    pub default_lease_secs: Option<u64>,
    /// The network lives on one machine or LAN (devnet, tests): loopback and private
    /// addresses may be dialled. Default false: bootstrap peers, `nodes` entries and
    /// node records must name globally routable addresses ([`shoal_proto::address`]).
    pub local_network: Option<bool>,
    /// For test harnesses only: address ranges (CIDR, e.g. `["10.77.0.0/16"]`) whose
    /// addresses count as globally routable while every other public-network rule
    /// holds ([`shoal_proto::address::TestRanges`]). Default none.
    pub test_address_ranges: Option<Vec<String>>,
}

impl FileConfig {
    /// Which addresses this uplink dials (a malformed test range is refused by
    /// [`FileConfig::uplink_config`]).
    pub fn address_scope(&self) -> AddressScope {
        let ranges = self
            .test_address_ranges
            .as_deref()
            .map(TestRanges::parse)
            .and_then(Result::ok)
            .unwrap_or_default();
        AddressScope::from_local_network(self.local_network.unwrap_or(false))
            .with_test_ranges(ranges)
    }

    /// Resolves the file's settings over the library defaults.
    pub fn uplink_config(&self, path: &Path) -> Result<UplinkConfig, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let mut c = UplinkConfig::default();
        if let Some(r) = &self.test_address_ranges {
            TestRanges::parse(r).map_err(|e| invalid(e.to_string()))?;
        }
        if let Some(s) = &self.scheme {
            c.scheme = s.parse::<Scheme>().map_err(|e| invalid(e.to_string()))?;
        }
        if let Some(s) = &self.codec {
            c.codec = s.parse::<CodecKind>().map_err(invalid)?;
        }
        if let Some(b) = self.allow_smaller_scheme {
            c.allow_smaller_scheme = b;
        }
        if let Some(t) = self.piece_timeout_secs {
            c.piece_timeout = Duration::from_secs(t.max(1));
        }
        if let Some(t) = self.long_tail_grace_ms {
            c.long_tail_grace = Duration::from_millis(t);
        }
        if let Some(s) = &self.catalog_scheme {
            c.catalog_scheme = s.parse::<Scheme>().map_err(|e| invalid(e.to_string()))?;
            if c.catalog_scheme.total > crate::client::MAX_CATALOG_PIECES {
                return Err(invalid(format!(
                    "catalog_scheme {s} has more than {} pieces",
                    crate::client::MAX_CATALOG_PIECES
                )));
            }
        }
        if let Some(n) = self.snapshot_every {
            c.snapshot_every = n.max(1);
        }
        if let Some(secs) = self.default_lease_secs {
            if secs == 0 {
                return Err(invalid("default_lease_secs must be above 0".into()));
            }
            c.default_lease = Duration::from_secs(secs);
        }
        Ok(c)
    }
}

/// Parses one `nodes` entry: `NODEID@IP:PORT` (the node id pins the node's TLS key),
/// whose address `scope` allows.
pub fn parse_node(entry: &str, scope: AddressScope) -> Result<(NodeId, SocketAddr), String> {
    let pinned: PinnedPeer = entry.parse().map_err(|e: PinnedPeerError| e.to_string())?;
    let addr = pinned
        .address
        .parse()
        .map_err(|_| format!("`{entry}`: `{}` is not IP:PORT", pinned.address))?;
    scope.check(&addr).map_err(|e| format!("`{entry}`: {e}"))?;
    Ok((pinned.id, addr))
}

/// A fixed node list (config.toml `nodes`), used instead of DHT discovery in closed
/// setups: every entry is pinned, and used as it is (free space unknown).
#[derive(Debug, Clone)]
pub struct ConfiguredNodes {
    known: Vec<NodeCandidate>,
}

impl ConfiguredNodes {
    pub fn new(entries: &[(NodeId, SocketAddr)]) -> Self {
        let known = entries
            .iter()
            .map(|(id, addr)| NodeCandidate {
                id: *id,
                public_key: None,
                address: *addr,
                free_space: u64::MAX,
            })
            .collect();
        Self { known }
    }
}

impl NodeSource for ConfiguredNodes {
    fn sample(&self, _wanted: usize) -> BoxFuture<'_, Result<Vec<NodeCandidate>, DiscoveryError>> {
        Box::pin(async move {
            if self.known.is_empty() {
                return Err(DiscoveryError(
                    "no storage nodes: add `nodes = [\"NODEID@IP:PORT\"]` to config.toml or bootstrap peers to the grant".into(),
                ));
            }
            Ok(self.known.clone())
        })
    }
}

/// Where this CLI keeps its files.
#[derive(Debug, Clone)]
pub struct Paths {
    pub config_dir: PathBuf,
    pub data_dir: PathBuf,
}

impl Paths {
    /// `override_dir` (from `--config-dir` or `SHOAL_CONFIG_DIR`) holds everything;
    /// otherwise the platform's config and data dirs.
    pub fn resolve(override_dir: Option<PathBuf>) -> Result<Self, ConfigError> {
        if let Some(d) = override_dir {
            return Ok(Self {
                config_dir: d.clone(),
                data_dir: d,
            });
        }
        let config = dirs::config_dir().ok_or(ConfigError::NoHome)?;
        let data = dirs::data_dir().ok_or(ConfigError::NoHome)?;
        Ok(Self {
            config_dir: config.join("shoal").join("uplink"),
            data_dir: data.join("shoal").join("uplink"),
        })
    }

    pub fn config_file(&self) -> PathBuf {
        self.config_dir.join("config.toml")
    }

    /// The last node sample, kept for the next command (see [`CachedNodes`]).
    pub fn node_cache_file(&self) -> PathBuf {
        self.config_dir.join("nodes-cache.json")
    }

    pub fn access_file(&self) -> PathBuf {
        self.config_dir.join("access")
    }

    /// The catalog of the access whose owner id is `owner_hex`.
    pub fn catalog_dir(&self, owner_hex: &str) -> PathBuf {
        self.data_dir
            .join(format!("catalog-{}", &owner_hex[..owner_hex.len().min(16)]))
    }

    /// The file holding this config dir's writer id.
    pub fn writer_file(&self) -> PathBuf {
        self.config_dir.join("writer-id")
    }

    /// This config dir's writer id, made (random) and saved on first use.
    pub fn writer_id(&self) -> Result<WriterId, ConfigError> {
        let path = self.writer_file();
        match fs::read_to_string(&path) {
            Ok(text) => WriterId::from_hex(&text).ok_or_else(|| ConfigError::Invalid {
                path,
                reason: "not a writer id (32 hex digits); remove the file to make a new one".into(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = WriterId::random();
                write_atomic(&self.config_dir, &path, id.to_hex().as_bytes(), 0o644)?;
                Ok(id)
            }
            Err(source) => Err(ConfigError::Io { path, source }),
        }
    }

    /// Saves `id` as this config dir's writer id (the catalog moved to it).
    pub fn set_writer_id(&self, id: WriterId) -> Result<(), ConfigError> {
        write_atomic(
            &self.config_dir,
            &self.writer_file(),
            id.to_hex().as_bytes(),
            0o644,
        )
    }

    pub fn load_config(&self) -> Result<FileConfig, ConfigError> {
        let path = self.config_file();
        match fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| ConfigError::Invalid {
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
            Err(source) => Err(ConfigError::Io { path, source }),
        }
    }

    /// The saved grant; refused when others on this machine may read the file.
    pub fn load_grant(&self) -> Result<String, ConfigError> {
        let path = self.access_file();
        match fs::metadata(&path) {
            Ok(meta) => shoal_proto::private::check_file(&path, &meta)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConfigError::NoAccess);
            }
            Err(source) => return Err(ConfigError::Io { path, source }),
        }
        match fs::read_to_string(&path) {
            Ok(g) => Ok(g.trim().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ConfigError::NoAccess),
            Err(source) => Err(ConfigError::Io { path, source }),
        }
    }

    /// The epoch of the gateway's derived credentials on this machine (0 until the first
    /// `uplink gateway --rotate-credentials`).
    pub fn gateway_epoch(&self) -> Result<u64, ConfigError> {
        let path = self.config_dir.join(GATEWAY_EPOCH_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => text.trim().parse().map_err(|e| ConfigError::Invalid {
                path,
                reason: format!("not an epoch number: {e}"),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(source) => Err(ConfigError::Io { path, source }),
        }
    }

    /// Saves the gateway's credential epoch (mode 0600), atomically.
    pub fn save_gateway_epoch(&self, epoch: u64) -> Result<(), ConfigError> {
        write_atomic(
            &self.config_dir,
            &self.config_dir.join(GATEWAY_EPOCH_FILE),
            format!("{epoch}\n").as_bytes(),
            0o600,
        )
    }

    /// Writes the grant with mode 0600 (it is the owner's whole secret), atomically.
    pub fn save_grant(&self, grant: &str) -> Result<(), ConfigError> {
        write_atomic(
            &self.config_dir,
            &self.access_file(),
            format!("{grant}\n").as_bytes(),
            0o600,
        )
    }
}

/// The file, in the config dir, holding the gateway's credential epoch.
const GATEWAY_EPOCH_FILE: &str = "gateway-epoch";

/// Writes `path` (in `dir`, made if missing) with `mode` through a synced temp file.
fn write_atomic(dir: &Path, path: &Path, bytes: &[u8], mode: u32) -> Result<(), ConfigError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ConfigError::Io { path, source }
    };
    shoal_proto::private::create_dir(dir).map_err(io(dir))?;
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))?;
    Ok(())
}

/// Caches another [`NodeSource`] for `ttl`, so a recursive copy of many files does not
/// rediscover the network for every object; with [`CachedNodes::persisted_in`], also
/// across processes, so that consecutive commands within `ttl` skip the DHT join too.
///
/// A cached sample answers only requests for at most as many nodes as it was taken for:
/// a larger request (an upload replacing failed nodes asks for more) samples afresh.
/// The cache holds one sample of the source as it was, so the placement rules that
/// apply to a fresh sample (one node per /24) apply to it unchanged.
pub struct CachedNodes<S> {
    inner: S,
    ttl: Duration,
    cache: Mutex<Option<(Instant, usize, Vec<NodeCandidate>)>>,
    /// The cache file and the network it is for (a sample of another network, e.g.
    /// after `access import`, is not used).
    file: Option<(PathBuf, String)>,
}

impl<S> std::fmt::Debug for CachedNodes<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedNodes")
            .field("ttl", &self.ttl)
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

/// Largest node cache file read (a few hundred nodes take a few tens of KiB).
const MAX_NODE_CACHE_FILE: u64 = 4 << 20;

/// The node cache file: one sample and when it was taken.
#[derive(Debug, Serialize, Deserialize)]
struct NodeCacheFile {
    /// Which network the sample is of (see [`CachedNodes::persisted_in`]).
    network: String,
    /// Unix time of the sample, ms.
    taken_ms: u64,
    /// Nodes asked for.
    wanted: usize,
    nodes: Vec<CachedNode>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CachedNode {
    id: String,
    public_key: Option<String>,
    address: SocketAddr,
    free_space: u64,
}

impl CachedNode {
    fn of(n: &NodeCandidate) -> Self {
        Self {
            id: n.id.to_hex(),
            public_key: n.public_key.map(|k| k.to_hex()),
            address: n.address,
            free_space: n.free_space,
        }
    }

    fn candidate(&self) -> Option<NodeCandidate> {
        let public_key = match &self.public_key {
            Some(hex) => Some(
                shoal_proto::ids::from_hex::<32>(hex)
                    .and_then(|b| shoal_proto::PublicKey::from_bytes("public_key", &b).ok())?,
            ),
            None => None,
        };
        let id = NodeId::from_hex(&self.id)?;
        // A key that does not hash to the id would make every receipt fail: drop it.
        if public_key.is_some_and(|k| k.node_id() != id) {
            return None;
        }
        Some(NodeCandidate {
            id,
            public_key,
            address: self.address,
            free_space: self.free_space,
        })
    }
}

impl<S: NodeSource> CachedNodes<S> {
    pub fn new(inner: S, ttl: Duration) -> Self {
        Self {
            inner,
            ttl,
            cache: Mutex::default(),
            file: None,
        }
    }

    /// Also keeps the last sample in `file` (for `ttl`), for the next process. `network`
    /// names the network the source samples (e.g. its bootstrap peers and difficulty): a
    /// file written for another one is ignored.
    pub fn persisted_in(mut self, file: PathBuf, network: String) -> Self {
        self.file = Some((file, network));
        self
    }

    /// The sample in the cache file, if it is readable, younger than `ttl` and was taken
    /// for at least `wanted` nodes. Anything else (no file, a damaged one, a clock that
    /// went back) counts as no cache.
    fn load(&self, wanted: usize) -> Option<(Instant, usize, Vec<NodeCandidate>)> {
        let (path, network) = self.file.as_ref()?;
        let file = fs::File::open(path).ok()?;
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut std::io::Read::take(file, MAX_NODE_CACHE_FILE),
            &mut text,
        )
        .ok()?;
        let cached: NodeCacheFile = serde_json::from_str(&text).ok()?;
        let age = shoal_proto::time::unix_ms().checked_sub(cached.taken_ms)?;
        if u128::from(age) >= self.ttl.as_millis()
            || cached.wanted < wanted
            || cached.network != *network
        {
            return None;
        }
        let nodes: Vec<NodeCandidate> = cached
            .nodes
            .iter()
            .map(CachedNode::candidate)
            .collect::<Option<_>>()?;
        let taken = Instant::now().checked_sub(Duration::from_millis(age))?;
        (!nodes.is_empty()).then_some((taken, cached.wanted, nodes))
    }

    /// Writes the sample to the cache file (atomically: a temp file renamed over it).
    /// Best effort: a cache that cannot be written only costs the next command a join.
    fn save(&self, wanted: usize, nodes: &[NodeCandidate]) {
        let Some((path, network)) = &self.file else {
            return;
        };
        let cached = NodeCacheFile {
            network: network.clone(),
            taken_ms: shoal_proto::time::unix_ms(),
            wanted,
            nodes: nodes.iter().map(CachedNode::of).collect(),
        };
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let written = serde_json::to_vec(&cached)
            .map_err(std::io::Error::other)
            .and_then(|bytes| fs::write(&tmp, bytes))
            .and_then(|()| fs::rename(&tmp, path));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            tracing::debug!(error = %e, path = %path.display(), "cannot write the node cache");
        }
    }
}

impl<S: NodeSource> NodeSource for CachedNodes<S> {
    fn sample(&self, wanted: usize) -> BoxFuture<'_, Result<Vec<NodeCandidate>, DiscoveryError>> {
        Box::pin(async move {
            {
                let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((at, for_wanted, nodes)) = cache.as_ref()
                    && at.elapsed() < self.ttl
                    && *for_wanted >= wanted
                {
                    return Ok(nodes.clone());
                }
            }
            if let Some((taken, for_wanted, nodes)) = self.load(wanted) {
                // In memory for what is left of the file's `ttl`.
                self.cache
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .replace((taken, for_wanted, nodes.clone()));
                return Ok(nodes);
            }
            let nodes = self.inner.sample(wanted).await?;
            self.cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .replace((Instant::now(), wanted, nodes.clone()));
            self.save(wanted, &nodes);
            Ok(nodes)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_file_is_private_and_config_parses() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::resolve(Some(dir.path().join("config"))).unwrap();
        assert!(matches!(paths.load_grant(), Err(ConfigError::NoAccess)));
        paths.save_grant("shoal1abc").unwrap();
        assert_eq!(paths.load_grant().unwrap(), "shoal1abc");
        let mode = fs::metadata(paths.access_file())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Issue 27: a grant others may read is refused at load, saying what to run;
        // the config dir made here is private.
        let dir_mode = fs::metadata(&paths.config_dir)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        fs::set_permissions(paths.access_file(), fs::Permissions::from_mode(0o644)).unwrap();
        let err = paths.load_grant().unwrap_err();
        assert!(matches!(err, ConfigError::Insecure(_)), "{err}");
        assert!(err.to_string().contains("chmod 600"), "{err}");
        fs::set_permissions(paths.access_file(), fs::Permissions::from_mode(0o600)).unwrap();
        assert!(paths.load_grant().is_ok());
        assert!(paths.load_config().unwrap().nodes.is_empty());
        let id = NodeId([7; 32]).to_hex();
        fs::write(
            paths.config_file(),
            format!(
                "nodes = [\"127.0.1.1:7000\", \"{id}@127.0.2.1:7000\"]\nscheme = \"3/5/7/10\"\n"
            ),
        )
        .unwrap();
        let c = paths.load_config().unwrap();
        // An unpinned entry is refused, saying how to pin it.
        let local = AddressScope::Local;
        let unpinned = parse_node(&c.nodes[0], local).unwrap_err();
        assert!(unpinned.contains("NODEID@HOST:PORT"), "{unpinned}");
        assert_eq!(
            parse_node(&c.nodes[1], local).unwrap(),
            (NodeId([7; 32]), "127.0.2.1:7000".parse().unwrap())
        );
        // Without `local_network = true` a loopback node is refused, saying so.
        assert_eq!(c.address_scope(), AddressScope::Public);
        let refused = parse_node(&c.nodes[1], c.address_scope()).unwrap_err();
        assert!(
            refused.contains("loopback") && refused.contains("local_network = true"),
            "{refused}"
        );
        assert!(parse_node(&format!("{id}@203.0.114.1:7000"), c.address_scope()).is_ok());
        assert!(parse_node("zz@127.0.0.1:1", local).is_err());
        assert!(parse_node("localhost", local).is_err());
        assert!(parse_node(&format!("{}@localhost:1", NodeId([7; 32])), local).is_err());
        fs::write(paths.config_file(), "local_network = true\n").unwrap();
        assert_eq!(paths.load_config().unwrap().address_scope(), local);
        // A test harness's declared range is public for the uplink; nothing else is.
        fs::write(
            paths.config_file(),
            "test_address_ranges = [\"10.77.0.0/16\"]\n",
        )
        .unwrap();
        let t = paths.load_config().unwrap();
        assert!(parse_node(&format!("{id}@10.77.4.2:7000"), t.address_scope()).is_ok());
        assert!(parse_node(&format!("{id}@10.78.4.2:7000"), t.address_scope()).is_err());
        assert!(parse_node(&format!("{id}@127.0.0.1:7000"), t.address_scope()).is_err());
        fs::write(
            paths.config_file(),
            "test_address_ranges = [\"10.77.0.1/16\"]\n",
        )
        .unwrap();
        let bad = paths.load_config().unwrap();
        assert!(bad.uplink_config(&paths.config_file()).is_err());
        assert_eq!(
            c.uplink_config(&paths.config_file())
                .unwrap()
                .scheme
                .to_string(),
            "3/5/7/10"
        );
        fs::write(paths.config_file(), "scheme = \"3/5/7\"\n").unwrap();
        let c = paths.load_config().unwrap();
        assert!(c.uplink_config(&paths.config_file()).is_err());
        fs::write(paths.config_file(), "bogus = 1\n").unwrap();
        assert!(paths.load_config().is_err());
    }

    /// Counts the samples it is asked for.
    #[derive(Debug, Default)]
    struct Counting(std::sync::atomic::AtomicUsize);

    impl NodeSource for Counting {
        fn sample(
            &self,
            wanted: usize,
        ) -> BoxFuture<'_, Result<Vec<NodeCandidate>, DiscoveryError>> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let identity = shoal_proto::Identity::from_seed([3; 32]);
            let nodes = (0..wanted.min(5))
                .map(|i| NodeCandidate {
                    id: identity.node_id(),
                    public_key: Some(*identity.public_key()),
                    address: SocketAddr::from(([127, 0, i as u8 + 1, 1], 7000)),
                    free_space: 1 << 30,
                })
                .collect();
            Box::pin(async move { Ok(nodes) })
        }
    }

    fn samples(c: &CachedNodes<Counting>) -> usize {
        c.inner.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[tokio::test]
    async fn node_cache_file_spares_the_next_process_a_sample_within_its_ttl_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nodes-cache.json");
        let ttl = Duration::from_secs(60);
        let open = |network: &str, ttl| {
            CachedNodes::new(Counting::default(), ttl).persisted_in(file.clone(), network.into())
        };
        // The first process samples and writes the file.
        let first = open("net-a", ttl);
        let nodes = first.sample(5).await.unwrap();
        assert_eq!(samples(&first), 1);
        assert!(file.exists());
        // The next process, same network, within the TTL: served from the file, as is.
        let next = open("net-a", ttl);
        let cached = next.sample(5).await.unwrap();
        assert_eq!(samples(&next), 0);
        assert_eq!(cached.len(), nodes.len());
        for (a, b) in cached.iter().zip(&nodes) {
            assert_eq!(
                (a.id, a.public_key, a.address, a.free_space),
                (b.id, b.public_key, b.address, b.free_space)
            );
        }
        // A request for more nodes than the sample was taken for samples afresh.
        let more = open("net-a", ttl);
        more.sample(6).await.unwrap();
        assert_eq!(samples(&more), 1);
        // Another network's file, an expired one, or a damaged one is not used.
        let other = open("net-b", ttl);
        other.sample(5).await.unwrap();
        assert_eq!(samples(&other), 1);
        let expired = open("net-b", Duration::ZERO);
        expired.sample(5).await.unwrap();
        assert_eq!(samples(&expired), 1);
        fs::write(&file, "{ not json").unwrap();
        let damaged = open("net-b", ttl);
        damaged.sample(5).await.unwrap();
        assert_eq!(samples(&damaged), 1);
        // A key that does not hash to its node id is refused with the whole file.
        let text = fs::read_to_string(&file).unwrap();
        let forged = text.replacen(
            &shoal_proto::Identity::from_seed([3; 32])
                .public_key()
                .to_hex(),
            &shoal_proto::Identity::from_seed([4; 32])
                .public_key()
                .to_hex(),
            1,
        );
        assert_ne!(forged, text);
        fs::write(&file, forged).unwrap();
        let forged = open("net-b", ttl);
        forged.sample(5).await.unwrap();
        assert_eq!(samples(&forged), 1);
    }
}
