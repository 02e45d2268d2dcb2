//! Configuration of the DHT driver.

use std::net::SocketAddr;
use std::sync::Arc;

use shoal_proto::NodeId;
use shoal_proto::address::TestRanges;
use std::time::Duration;

use crate::core::membership::MembershipConfig;
use crate::core::rate::RateConfig;
use crate::core::store::StoreConfig;
use crate::core::table::TableConfig;

use super::persist::DhtPersistence;

/// Everything the driver needs besides the identity. Defaults suit a production network.
#[derive(Debug, Clone)]
pub struct DhtConfig {
    /// Proof-of-work bits every node id must carry. Default
    /// [`shoal_proto::DEFAULT_DIFFICULTY`].
    pub difficulty: u32,
    /// Nodes to join through, each with the node id its TLS certificate must prove
    /// (pinned `NODEID@HOST:PORT` entries, resolved). Default none.
    pub bootstrap: Vec<(NodeId, SocketAddr)>,
    /// A network on one machine or LAN (`local_network = true`): loopback and private
    /// addresses may be dialled and advertised. Default false: node records and
    /// bootstrap entries naming a non-routable address are refused
    /// ([`shoal_proto::address`]).
    pub local_network: bool,
    /// Test harnesses only: address ranges treated as globally routable on the public
    /// network (see [`shoal_proto::address`]). Default none.
    pub test_address_ranges: TestRanges,
    /// Bucket size and result count (Kademlia's k). Default 20.
    pub k: usize,
    /// Requests in flight per lookup (Kademlia's α). Default 3.
    pub alpha: usize,
    /// Request timeout before any round trip was measured. Default 2 s.
    pub initial_timeout: Duration,
    /// Bounds of the adaptive request timeout. Defaults 250 ms and 5 s.
    pub min_timeout: Duration,
    pub max_timeout: Duration,
    /// How long a request may run at all (a timed-out request may still answer late
    /// within this). Default 10 s.
    pub hard_timeout: Duration,
    /// Buckets not looked up for this long are refreshed. Default 15 min.
    pub refresh_interval: Duration,
    /// Entries not heard from for this long are pinged. Default 5 min.
    pub liveness_interval: Duration,
    /// Records put through this handle are republished this often. Default 30 min.
    pub republish_interval: Duration,
    /// Held records are pushed to the current k closest this often. Default 20 min.
    pub replicate_interval: Duration,
    /// Run the membership crawler (uplinks do; storage nodes need not). Default false.
    pub crawl: bool,
    /// Pause between two crawl requests: the crawl's rate bound. Default 200 ms.
    pub crawl_interval: Duration,
    /// Concurrent dial-backs of claimed addresses at most; more are dropped. Default 16.
    pub max_dialbacks: usize,
    /// Software version put in the node record. Default this crate's version.
    pub version: String,
    pub table: TableConfig,
    pub store: StoreConfig,
    pub membership: MembershipConfig,
    /// Requests the Discovery service answers per peer (IPv4 address or IPv6 /64): a
    /// token bucket, default 50 per second with bursts of 200; more get
    /// RESOURCE_EXHAUSTED.
    pub rate: RateConfig,
    /// Where the records this node holds and the nodes it verified are kept across
    /// restarts (see [`DhtPersistence`]). Default none: a restart starts empty.
    pub persistence: Option<Arc<dyn DhtPersistence>>,
    /// The verified peers are written to `persistence` this often (and at shutdown).
    /// Default 1 min.
    pub peers_save_interval: Duration,
    /// A client's record reads go straight to the closest nodes of the key found within
    /// this long (one round, no join; see [`crate::core::node`], *Records*). Default
    /// 30 min.
    pub known_closest_ttl: Duration,
    /// The closest of record keys an earlier run found ([`DhtHandle::known_closest`](super::DhtHandle::known_closest)),
    /// for a client to read from before it joins. Older than `known_closest_ttl`,
    /// and node records that fail their checks, are dropped. Default none.
    pub known_closest: Vec<KnownClosest>,
}

/// The closest nodes of one record key as a run found them, kept by the owner across
/// runs: each node record in its wire encoding (a signed `pb::NodeRecord`), checked
/// again when read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownClosest {
    pub key: shoal_proto::RecordKey,
    pub found_unix_ms: u64,
    pub nodes: Vec<Vec<u8>>,
}

impl DhtConfig {
    /// Which addresses this network dials and accepts in records.
    pub fn address_scope(&self) -> shoal_proto::address::AddressScope {
        shoal_proto::address::AddressScope::from_local_network(self.local_network)
            .with_test_ranges(self.test_address_ranges)
    }
}

impl Default for DhtConfig {
    fn default() -> Self {
        Self {
            difficulty: shoal_proto::DEFAULT_DIFFICULTY,
            bootstrap: Vec::new(),
            local_network: false,
            test_address_ranges: TestRanges::default(),
            k: 20,
            alpha: 3,
            initial_timeout: Duration::from_secs(2),
            min_timeout: Duration::from_millis(250),
            max_timeout: Duration::from_secs(5),
            hard_timeout: Duration::from_secs(10),
            refresh_interval: Duration::from_secs(15 * 60),
            liveness_interval: Duration::from_secs(5 * 60),
            republish_interval: Duration::from_secs(30 * 60),
            replicate_interval: Duration::from_secs(20 * 60),
            crawl: false,
            crawl_interval: Duration::from_millis(200),
            max_dialbacks: 16,
            version: env!("CARGO_PKG_VERSION").to_string(),
            table: TableConfig::default(),
            store: StoreConfig::default(),
            membership: MembershipConfig::default(),
            rate: RateConfig::default(),
            persistence: None,
            peers_save_interval: Duration::from_secs(60),
            known_closest_ttl: Duration::from_secs(30 * 60),
            known_closest: Vec::new(),
        }
    }
}

/// The fields of the local node record that the host changes while running.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordFields {
    /// `ip:port` where the node's gRPC server answers (at most 8).
    pub addresses: Vec<SocketAddr>,
    /// Bytes the node will still accept.
    pub free_space: u64,
}
