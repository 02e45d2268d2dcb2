//! The node's configuration: one struct, every field documented with its default, read
//! from `config.toml`, then `SHOAL_NODE_*` environment variables, then command-line flags
//! (later ones win), all resolved in [`resolve`].

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_proto::address::{AddressRefused, AddressScope, TestRanges};

use crate::error::ConfigError;
use crate::size::ByteSize;

/// File names inside a node directory.
pub const CONFIG_FILE: &str = "config.toml";
pub const IDENTITY_FILE: &str = "identity.key";
pub const STORAGE_DIR: &str = "storage";

/// Prefix of the environment variables that override the file.
pub const ENV_PREFIX: &str = "SHOAL_NODE_";

/// Everything a storage node needs to run, except its directory and identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the gRPC server (piece store and DHT, one port) listens on.
    /// Default `0.0.0.0:7777`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// `HOST:PORT` that other nodes and uplinks dial, when it differs from `listen` (NAT,
    /// port forwarding, a public DNS name). Default: none, the listen address is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_address: Option<String>,
    /// Address of the HTTP server for `/metrics`, `/api/status` and the dashboard.
    /// Default `127.0.0.1:7778` (local only; expose it deliberately).
    #[serde(default = "default_http")]
    pub http: SocketAddr,
    /// Disk space offered to the network, e.g. `500GB`, `2TiB`. Never exceeded. Required.
    #[serde(default)]
    pub allocate: ByteSize,
    /// `HOST:PORT` of DHT nodes to join through. Default: none.
    #[serde(default)]
    pub bootstrap: Vec<String>,
    /// Proof-of-work bits the network requires of node ids. Default 19
    /// (`shoal_proto::DEFAULT_DIFFICULTY`).
    #[serde(default = "default_difficulty")]
    pub difficulty: u32,
    /// Most piece-store requests one IP address may have open at once. Default 64.
    #[serde(default = "default_max_streams_per_peer")]
    pub max_streams_per_peer: usize,
    /// Most piece-store requests one IP address (IPv6: one /64) may start per second,
    /// with bursts of twice that; more are refused (RESOURCE_EXHAUSTED) before their
    /// order is even decoded. 0 turns the limit off. Default 2000.
    #[serde(default = "default_max_piece_calls_per_second")]
    pub max_piece_calls_per_second: u32,
    /// An upload that sends nothing for this long is aborted and leaves nothing behind
    /// (milliseconds). Default 30000.
    #[serde(default = "default_stall_timeout_ms")]
    pub stall_timeout_ms: u64,
    /// Least average rate an upload must keep once `upload_grace_ms` has passed, in
    /// bytes per second; a slower one is cut (RESOURCE_EXHAUSTED) and its reservation
    /// freed. 0 turns the check off. Default 4096.
    #[serde(default = "default_min_upload_rate")]
    pub min_upload_rate: u64,
    /// How long an upload may go at any rate before `min_upload_rate` applies
    /// (milliseconds). Default 30000.
    #[serde(default = "default_upload_grace_ms")]
    pub upload_grace_ms: u64,
    /// How often the expiry worker removes pieces whose lease ended (milliseconds).
    /// Default 60000.
    #[serde(default = "default_expiry_interval_ms")]
    pub expiry_interval_ms: u64,
    /// Latest lease an upload or renew order may ask for, from now (milliseconds);
    /// later ones are refused (FAILED_PRECONDITION). Default one year.
    #[serde(default = "default_max_lease_ms")]
    pub max_lease_ms: u64,
    /// Write piece data with `O_DIRECT` (Linux), bypassing the page cache; falls back to
    /// buffered writes by itself on a file system that refuses it. Default true.
    #[serde(default = "default_direct_io")]
    pub direct_io: bool,
    /// The network lives on one machine or LAN (devnet, tests, a home lab): loopback and
    /// private addresses may be listened on, advertised, dialled and accepted in node
    /// records. Default false: the public network, where every address must be globally
    /// routable ([`shoal_proto::address`]).
    #[serde(default)]
    pub local_network: bool,
    /// For test harnesses only: address ranges (CIDR, e.g. `["10.77.0.0/16"]`) whose
    /// addresses count as globally routable while every other public-network rule
    /// holds, for a network of private hosts that exists only inside the harness's
    /// network namespaces ([`shoal_proto::address::TestRanges`]). Default none; never
    /// set it on a real network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test_address_ranges: Vec<String>,
    /// Most bytes one owner key may store on this node (each piece counts its size plus
    /// a fixed 4 KiB overhead), e.g. `50GB`. Default: none, only the allocation bounds an
    /// owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes_per_owner: Option<ByteSize>,
    /// When set, `/metrics` answers only requests with `Authorization: Bearer TOKEN`
    /// (for a metrics port reachable by others). Default: none; then `/metrics` answers
    /// requests for an IP address, `localhost` or a single-label host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_token: Option<String>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 7777))
}
fn default_http() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7778))
}
fn default_difficulty() -> u32 {
    shoal_proto::DEFAULT_DIFFICULTY
}
fn default_max_streams_per_peer() -> usize {
    64
}
fn default_max_piece_calls_per_second() -> u32 {
    2000
}
fn default_stall_timeout_ms() -> u64 {
    30_000
}
fn default_min_upload_rate() -> u64 {
    crate::protocol::MIN_UPLOAD_RATE
}
fn default_upload_grace_ms() -> u64 {
    crate::protocol::UPLOAD_GRACE.as_millis() as u64
}
fn default_expiry_interval_ms() -> u64 {
    60_000
}
fn default_max_lease_ms() -> u64 {
    365 * 24 * 3600 * 1000
}
fn default_direct_io() -> bool {
    true
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            external_address: None,
            http: default_http(),
            allocate: ByteSize(0),
            bootstrap: Vec::new(),
            difficulty: default_difficulty(),
            max_streams_per_peer: default_max_streams_per_peer(),
            max_piece_calls_per_second: default_max_piece_calls_per_second(),
            stall_timeout_ms: default_stall_timeout_ms(),
            min_upload_rate: default_min_upload_rate(),
            upload_grace_ms: default_upload_grace_ms(),
            expiry_interval_ms: default_expiry_interval_ms(),
            max_lease_ms: default_max_lease_ms(),
            direct_io: default_direct_io(),
            local_network: false,
            test_address_ranges: Vec::new(),
            max_bytes_per_owner: None,
            metrics_token: None,
        }
    }
}

/// Values given on the command line or in the environment; `None` leaves a field as is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub external_address: Option<String>,
    pub http: Option<SocketAddr>,
    pub allocate: Option<ByteSize>,
    pub bootstrap: Option<Vec<String>>,
    pub difficulty: Option<u32>,
    pub max_streams_per_peer: Option<usize>,
    pub stall_timeout_ms: Option<u64>,
    pub min_upload_rate: Option<u64>,
    pub upload_grace_ms: Option<u64>,
    pub expiry_interval_ms: Option<u64>,
    pub max_lease_ms: Option<u64>,
    pub direct_io: Option<bool>,
    pub local_network: Option<bool>,
    pub max_bytes_per_owner: Option<ByteSize>,
}

fn parse<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    value
        .trim()
        .parse()
        .map_err(|e: T::Err| ConfigError::Invalid {
            source_name: "environment variable",
            key: key.to_owned(),
            reason: e.to_string(),
        })
}

impl Overrides {
    /// Reads `SHOAL_NODE_*` variables (pass `std::env::vars()`). `SHOAL_NODE_BOOTSTRAP`
    /// is comma-separated. `SHOAL_NODE_DIR` names the directory and `SHOAL_NODE_IDENTITY`
    /// the identity file (when not `DIR/identity.key`); the CLI reads both.
    /// Unknown `SHOAL_NODE_*` names are refused, so a typo does not go unnoticed.
    pub fn from_env(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let mut o = Self::default();
        for (key, value) in vars {
            let Some(name) = key.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            match name {
                "DIR" | "IDENTITY" => {}
                "LISTEN" => o.listen = Some(parse(&key, &value)?),
                "EXTERNAL_ADDRESS" => o.external_address = Some(value.trim().to_owned()),
                "HTTP" => o.http = Some(parse(&key, &value)?),
                "ALLOCATE" => o.allocate = Some(parse(&key, &value)?),
                "BOOTSTRAP" => {
                    o.bootstrap = Some(
                        value
                            .split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .collect(),
                    )
                }
                "DIFFICULTY" => o.difficulty = Some(parse(&key, &value)?),
                "MAX_STREAMS_PER_PEER" => o.max_streams_per_peer = Some(parse(&key, &value)?),
                "STALL_TIMEOUT_MS" => o.stall_timeout_ms = Some(parse(&key, &value)?),
                "MIN_UPLOAD_RATE" => o.min_upload_rate = Some(parse(&key, &value)?),
                "UPLOAD_GRACE_MS" => o.upload_grace_ms = Some(parse(&key, &value)?),
                "EXPIRY_INTERVAL_MS" => o.expiry_interval_ms = Some(parse(&key, &value)?),
                "MAX_LEASE_MS" => o.max_lease_ms = Some(parse(&key, &value)?),
                "DIRECT_IO" => o.direct_io = Some(parse(&key, &value)?),
                "LOCAL_NETWORK" => o.local_network = Some(parse(&key, &value)?),
                "MAX_BYTES_PER_OWNER" => o.max_bytes_per_owner = Some(parse(&key, &value)?),
                _ => {
                    return Err(ConfigError::Invalid {
                        source_name: "environment variable",
                        key,
                        reason: "unknown setting".into(),
                    });
                }
            }
        }
        Ok(o)
    }

    fn apply(self, c: &mut Config) {
        let Overrides {
            listen,
            external_address,
            http,
            allocate,
            bootstrap,
            difficulty,
            max_streams_per_peer,
            stall_timeout_ms,
            min_upload_rate,
            upload_grace_ms,
            expiry_interval_ms,
            max_lease_ms,
            direct_io,
            local_network,
            max_bytes_per_owner,
        } = self;
        if let Some(v) = listen {
            c.listen = v;
        }
        if let Some(v) = external_address {
            c.external_address = Some(v).filter(|s| !s.is_empty());
        }
        if let Some(v) = http {
            c.http = v;
        }
        if let Some(v) = allocate {
            c.allocate = v;
        }
        if let Some(v) = bootstrap {
            c.bootstrap = v;
        }
        if let Some(v) = difficulty {
            c.difficulty = v;
        }
        if let Some(v) = max_streams_per_peer {
            c.max_streams_per_peer = v;
        }
        if let Some(v) = stall_timeout_ms {
            c.stall_timeout_ms = v;
        }
        if let Some(v) = min_upload_rate {
            c.min_upload_rate = v;
        }
        if let Some(v) = upload_grace_ms {
            c.upload_grace_ms = v;
        }
        if let Some(v) = expiry_interval_ms {
            c.expiry_interval_ms = v;
        }
        if let Some(v) = max_lease_ms {
            c.max_lease_ms = v;
        }
        if let Some(v) = direct_io {
            c.direct_io = v;
        }
        if let Some(v) = local_network {
            c.local_network = v;
        }
        if let Some(v) = max_bytes_per_owner {
            c.max_bytes_per_owner = Some(v).filter(|b| b.0 > 0);
        }
    }
}

/// The one place configuration is resolved: file (if any) < environment < flags, then
/// validated.
pub fn resolve(
    file: Option<(&Path, &str)>,
    env: Overrides,
    flags: Overrides,
) -> Result<Config, ConfigError> {
    let mut config = match file {
        Some((path, text)) => toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(e),
        })?,
        None => Config::default(),
    };
    env.apply(&mut config);
    flags.apply(&mut config);
    config.validate()?;
    Ok(config)
}

/// Reads `DIR/config.toml` and resolves it with the environment and flags.
pub fn load(dir: &Path, env: Overrides, flags: Overrides) -> Result<Config, ConfigError> {
    let path = dir.join(CONFIG_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ConfigError::NotSetUp {
                dir: dir.to_owned(),
            });
        }
        Err(source) => return Err(ConfigError::Read { path, source }),
    };
    resolve(Some((&path, &text)), env, flags)
}

fn host_port(key: &str, value: &str) -> Result<(), ConfigError> {
    let ok = value
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            source_name: "setting",
            key: key.to_owned(),
            reason: format!("{value:?} is not HOST:PORT"),
        })
    }
}

impl Config {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.allocate.0 == 0 {
            return Err(ConfigError::NoAllocation);
        }
        if let Some(a) = &self.external_address {
            host_port("external_address", a)?;
        }
        TestRanges::parse(&self.test_address_ranges).map_err(|e| ConfigError::Invalid {
            source_name: "setting",
            key: "test_address_ranges".into(),
            reason: e.to_string(),
        })?;
        self.check_advertised()?;
        for b in &self.bootstrap {
            let invalid = |reason: String| ConfigError::Invalid {
                source_name: "setting",
                key: "bootstrap".into(),
                reason,
            };
            let peer = b
                .parse::<shoal_proto::tls::PinnedPeer>()
                .map_err(|e| invalid(e.to_string()))?;
            // An IP is checked here; a name once resolved, at start.
            if let Ok(addr) = peer.address.parse::<SocketAddr>() {
                self.address_scope()
                    .check(&addr)
                    .map_err(|e| invalid(format!("`{b}`: {e}")))?;
            }
        }
        if self.difficulty > shoal_proto::identity::MAX_DIFFICULTY {
            return Err(ConfigError::Invalid {
                source_name: "setting",
                key: "difficulty".into(),
                reason: format!(
                    "above the maximum of {}",
                    shoal_proto::identity::MAX_DIFFICULTY
                ),
            });
        }
        let positive = [
            ("max_streams_per_peer", self.max_streams_per_peer as u64),
            ("stall_timeout_ms", self.stall_timeout_ms),
            ("expiry_interval_ms", self.expiry_interval_ms),
            ("max_lease_ms", self.max_lease_ms),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(ConfigError::Invalid {
                    source_name: "setting",
                    key: key.into(),
                    reason: "must be above 0".into(),
                });
            }
        }
        Ok(())
    }

    /// Which addresses this node's network dials and accepts.
    pub fn address_scope(&self) -> AddressScope {
        AddressScope::from_local_network(self.local_network).with_test_ranges(self.test_ranges())
    }

    /// The declared `test_address_ranges` (checked when the config was resolved).
    pub fn test_ranges(&self) -> TestRanges {
        TestRanges::parse(&self.test_address_ranges).unwrap_or_default()
    }

    /// What the node will advertise must be routable in its network: `external_address`
    /// when it is an IP (a name is checked once resolved, at start), else a concrete
    /// `listen` address. A node on `0.0.0.0` without `external_address` advertises
    /// nothing (it runs as a DHT client and says so).
    fn check_advertised(&self) -> Result<(), ConfigError> {
        let (key, addr) = match &self.external_address {
            Some(a) => match a.parse::<SocketAddr>() {
                Ok(addr) => ("external_address", addr),
                Err(_) => return Ok(()),
            },
            None if self.listen.ip().is_unspecified() => return Ok(()),
            // Port 0 listens on a port chosen at start: only the IP is in question.
            None => (
                "listen",
                SocketAddr::new(self.listen.ip(), self.listen.port().max(1)),
            ),
        };
        self.address_scope()
            .check(&addr)
            .map_err(|e| ConfigError::Invalid {
                source_name: "setting",
                key: key.into(),
                reason: match e {
                    AddressRefused::NonRoutable(n) => format!(
                        "{addr} is a {} address, which other nodes on the public network cannot dial and refuse to; set `external_address` to the address others dial, or `local_network = true` (`--local-network`, SHOAL_NODE_LOCAL_NETWORK=true) for a network on one machine or LAN",
                        n.kind
                    ),
                    AddressRefused::Undialable(u) => u.to_string(),
                },
            })
    }

    pub fn stall_timeout(&self) -> Duration {
        Duration::from_millis(self.stall_timeout_ms)
    }

    pub fn expiry_interval(&self) -> Duration {
        Duration::from_millis(self.expiry_interval_ms)
    }

    /// `config.toml` with every field and its documentation.
    pub fn to_documented_toml(&self) -> String {
        let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
        let mut out = String::from(
            "# Shoal storage node configuration.\n\
             # Every setting can be overridden by an environment variable SHOAL_NODE_<NAME>\n\
             # (e.g. SHOAL_NODE_ALLOCATE=2TiB) and by the flag of `storage-node run`;\n\
             # flags win over the environment, which wins over this file.\n\n",
        );
        let mut field = |doc: &str, line: String| {
            for l in doc.lines() {
                let _ = writeln!(out, "# {l}");
            }
            let _ = writeln!(out, "{line}\n");
        };
        field(
            "Address the gRPC server (piece store and DHT) listens on.\nDefault \"0.0.0.0:7777\".",
            format!("listen = {}", q(&self.listen.to_string())),
        );
        field(
            "HOST:PORT that other nodes and uplinks dial, when it differs from `listen`\n(NAT, port forwarding, a DNS name). Default: unset, the listen address is used.",
            match &self.external_address {
                Some(a) => format!("external_address = {}", q(a)),
                None => "# external_address = \"node.example.com:7777\"".into(),
            },
        );
        field(
            "Address of the HTTP server: /metrics (Prometheus), /api/status (JSON) and the\ndashboard at /. Default \"127.0.0.1:7778\" (local only; expose it deliberately).",
            format!("http = {}", q(&self.http.to_string())),
        );
        field(
            "Disk space offered to the network: a number with a unit, decimal (KB, MB, GB,\nTB) or binary (KiB, MiB, GiB, TiB). The node never stores more. Required.",
            format!("allocate = {}", q(&self.allocate.to_string())),
        );
        field(
            "DHT nodes to join the network through, each NODEID@HOST:PORT: the node id pins\nthe node's TLS key, so nobody else can answer in its place. Default: none.",
            format!(
                "bootstrap = [{}]",
                self.bootstrap
                    .iter()
                    .map(|b| q(b))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        field(
            "Proof-of-work bits the network requires of node ids. Default 18.",
            format!("difficulty = {}", self.difficulty),
        );
        field(
            "Most piece-store requests one IP address may have open at once. Default 64.",
            format!("max_streams_per_peer = {}", self.max_streams_per_peer),
        );
        field(
            "Most piece-store requests one IP address may start per second (bursts of twice\nthat); more are refused before their order is read. 0 turns it off. Default 2000.",
            format!(
                "max_piece_calls_per_second = {}",
                self.max_piece_calls_per_second
            ),
        );
        field(
            "An upload that sends nothing for this many milliseconds is aborted and leaves\nnothing behind. Default 30000.",
            format!("stall_timeout_ms = {}", self.stall_timeout_ms),
        );
        field(
            "Least average upload rate, in bytes per second, once upload_grace_ms has passed;\na slower upload is cut and its space freed. 0 turns it off. Default 4096.",
            format!("min_upload_rate = {}", self.min_upload_rate),
        );
        field(
            "How long, in milliseconds, an upload may go at any rate before min_upload_rate\napplies. Default 30000.",
            format!("upload_grace_ms = {}", self.upload_grace_ms),
        );
        field(
            "How often, in milliseconds, expired pieces are removed. Default 60000.",
            format!("expiry_interval_ms = {}", self.expiry_interval_ms),
        );
        field(
            "Latest lease, in milliseconds from now, that an upload or renew order may ask\nfor; later ones are refused and the uplink renews up to this. Default 31536000000\n(one year).",
            format!("max_lease_ms = {}", self.max_lease_ms),
        );
        field(
            "Write piece data with O_DIRECT (Linux), bypassing the page cache: less CPU and\nfaster durable writes. A file system that refuses it (the node logs this once)\ngets buffered writes by itself; false forces them. Default true.",
            format!("direct_io = {}", self.direct_io),
        );
        field(
            "The network lives on one machine or LAN (devnet, tests, a home lab): loopback\nand private addresses may be listened on, advertised, dialled and accepted in\nnode records. Default false: the public network, where every address must be\nglobally routable.",
            format!("local_network = {}", self.local_network),
        );
        field(
            "For test harnesses only: address ranges (CIDR) counted as globally routable,\nfor a network of private hosts that exists only inside the harness. Default none;\nnever set it on a real network.",
            if self.test_address_ranges.is_empty() {
                "# test_address_ranges = [\"10.77.0.0/16\"]".into()
            } else {
                format!(
                    "test_address_ranges = [{}]",
                    self.test_address_ranges
                        .iter()
                        .map(|r| q(r))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
        );
        field(
            "Most bytes one owner key may store on this node (each piece counts its size\nplus a fixed 4 KiB overhead), e.g. \"50GB\". Uploads past it are refused\n(RESOURCE_EXHAUSTED, reason owner_quota). Default: unset, only the allocation\nbounds an owner.",
            match self.max_bytes_per_owner {
                Some(b) => format!("max_bytes_per_owner = {}", q(&b.to_string())),
                None => "# max_bytes_per_owner = \"50GB\"".into(),
            },
        );
        field(
            "Serve /metrics only to requests with `Authorization: Bearer TOKEN`, for a metrics\nport others can reach. Default: none; then /metrics answers requests for an IP\naddress, localhost or a single-label host name (never another site's name).",
            match &self.metrics_token {
                Some(t) => format!("metrics_token = {}", q(t)),
                None => "# metrics_token = \"a-long-random-string\"".into(),
            },
        );
        out
    }
}

/// Paths inside a node directory.
#[derive(Debug, Clone)]
pub struct NodeDir(pub PathBuf);

impl NodeDir {
    pub fn config(&self) -> PathBuf {
        self.0.join(CONFIG_FILE)
    }
    pub fn identity(&self) -> PathBuf {
        self.0.join(IDENTITY_FILE)
    }
    pub fn storage(&self) -> PathBuf {
        self.0.join(STORAGE_DIR)
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
