//! The CLI's configuration: where files live and what `config.toml` may say.
//!
//! Layout (default, or everything under `--config-dir` / `SHOAL_CONFIG_DIR`):
//! - `<config dir>/config.toml` — [`FileConfig`], optional;
//! - `<config dir>/access` — the access grant (mode 0600);
//! - `<data dir>/catalog-<owner id prefix>/` — the sled catalog of that access, so
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

use crate::client::UplinkConfig;
use crate::codec::{CodecKind, Scheme};
use shoal_proto::NodeId;
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
}

impl FileConfig {
    /// Resolves the file's settings over the library defaults.
    pub fn uplink_config(&self, path: &Path) -> Result<UplinkConfig, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let mut c = UplinkConfig::default();
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
        Ok(c)
    }
}

/// Parses one `nodes` entry: `NODEID@IP:PORT` (the node id pins the node's TLS key).
pub fn parse_node(entry: &str) -> Result<(NodeId, SocketAddr), String> {
    let pinned: PinnedPeer = entry.parse().map_err(|e: PinnedPeerError| e.to_string())?;
    let addr = pinned
        .address
        .parse()
        .map_err(|_| format!("`{entry}`: `{}` is not IP:PORT", pinned.address))?;
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

    pub fn access_file(&self) -> PathBuf {
        self.config_dir.join("access")
    }

    /// The catalog of the access whose owner id is `owner_hex`.
    pub fn catalog_dir(&self, owner_hex: &str) -> PathBuf {
        self.data_dir
            .join(format!("catalog-{}", &owner_hex[..owner_hex.len().min(16)]))
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

    pub fn load_grant(&self) -> Result<String, ConfigError> {
        let path = self.access_file();
        match fs::read_to_string(&path) {
            Ok(g) => Ok(g.trim().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ConfigError::NoAccess),
            Err(source) => Err(ConfigError::Io { path, source }),
        }
    }

    /// Writes the grant with mode 0600 (it is the owner's whole secret), atomically.
    pub fn save_grant(&self, grant: &str) -> Result<(), ConfigError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ConfigError::Io { path, source }
        };
        fs::create_dir_all(&self.config_dir).map_err(io(&self.config_dir))?;
        let path = self.access_file();
        let tmp = path.with_extension("tmp");
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io(&tmp))?;
        f.write_all(grant.as_bytes()).map_err(io(&tmp))?;
        f.write_all(b"\n").map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        fs::rename(&tmp, &path).map_err(io(&path))?;
        Ok(())
    }
}

/// Caches another [`NodeSource`] for `ttl`, so a recursive copy of many files does not
/// rediscover the network for every object.
pub struct CachedNodes<S> {
    inner: S,
    ttl: Duration,
    cache: Mutex<Option<(Instant, Vec<NodeCandidate>)>>,
}

impl<S> std::fmt::Debug for CachedNodes<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedNodes")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl<S: NodeSource> CachedNodes<S> {
    pub fn new(inner: S, ttl: Duration) -> Self {
        Self {
            inner,
            ttl,
            cache: Mutex::default(),
        }
    }
}

impl<S: NodeSource> NodeSource for CachedNodes<S> {
    fn sample(&self, wanted: usize) -> BoxFuture<'_, Result<Vec<NodeCandidate>, DiscoveryError>> {
        Box::pin(async move {
            {
                let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((at, nodes)) = cache.as_ref()
                    && at.elapsed() < self.ttl
                {
                    return Ok(nodes.clone());
                }
            }
            let nodes = self.inner.sample(wanted).await?;
            self.cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .replace((Instant::now(), nodes.clone()));
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
        let paths = Paths::resolve(Some(dir.path().to_path_buf())).unwrap();
        assert!(matches!(paths.load_grant(), Err(ConfigError::NoAccess)));
        paths.save_grant("shoal1abc").unwrap();
        assert_eq!(paths.load_grant().unwrap(), "shoal1abc");
        let mode = fs::metadata(paths.access_file())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
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
        let unpinned = parse_node(&c.nodes[0]).unwrap_err();
        assert!(unpinned.contains("NODEID@HOST:PORT"), "{unpinned}");
        assert_eq!(
            parse_node(&c.nodes[1]).unwrap(),
            (NodeId([7; 32]), "127.0.2.1:7000".parse().unwrap())
        );
        assert!(parse_node("zz@127.0.0.1:1").is_err());
        assert!(parse_node("localhost").is_err());
        assert!(parse_node(&format!("{}@localhost:1", NodeId([7; 32]))).is_err());
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
}
