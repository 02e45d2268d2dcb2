//! The tokio/tonic driver: owns sockets, timers and tasks, and drives the one protocol
//! state machine of the core ([`crate::core::node::Node`]).
//!
//! [`Dht::start`] returns a [`DhtHandle`]. A storage node mounts [`DhtHandle::service`] on
//! its tonic server and supplies the changing fields of its node record through a
//! `watch` channel; an uplink starts in [`Mode::Client`], sends no sender record and so
//! never enters anyone's table.
//!
//! One task ([`task::run`]) owns the node and is the only one to touch it: it starts the
//! operations the handle asks for (a join too: [`crate::core::node::Node::join`]), takes
//! the requests the Discovery service received (over a bounded queue, each with a
//! oneshot for the answer; a full queue is answered `RESOURCE_EXHAUSTED`), sends the
//! requests the node queues (each a future it polls), feeds their answers and the node's
//! timers back in, and hands finished operations to their callers. After the steps that
//! may change them it publishes what the handle's synchronous getters read (table,
//! membership, dial-backs: [`snapshot::Snapshot`]). No protocol rule lives here. What
//! remains at this edge: checking signatures and proof of work of what arrives, the
//! request budget per peer, client channels, the signed local record, and metrics.
//!
//! Its modules and the direction of their imports (each arrow: "uses"). The parts use
//! this module's declarations; this module only starts them (`Dht::start`); apart from
//! that, no module uses one that uses it (checked with a script over the
//! `crate::`/`super::` paths):
//!
//! ```text
//!   mod (Dht::start, Inner, helpers) ──> task, service, persist, config, snapshot
//!   handle   ──> mod, persist, snapshot  the public operations; shutdown
//!   task     ──> mod, persist, snapshot  the one task that owns and drives the node
//!   service  ──> mod, rpc                the Discovery gRPC service (rpc: write tokens)
//!   inner    ──> mod, snapshot           shared state, record checks, known peers
//!   snapshot ──> mod                     what the getters read, published by the task
//!   rpc      ──> mod                     outgoing calls and the checks of what they bring
//!   config   ──> persist                 settings;  persist ──> mod: the store
//!   every one ──> crate::core, crate::error, crate::metrics (never the other way)
//! ```

mod config;
mod handle;
mod inner;
mod persist;
mod rpc;
mod service;
mod snapshot;
mod task;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use rand::RngExt;
use shoal_proto::address::AddressScope;
use shoal_proto::messages::{MutableRecord, NodeRecord};
use shoal_proto::pb::discovery_client::DiscoveryClient;
use shoal_proto::pb::discovery_server::DiscoveryServer;
use shoal_proto::{Identity, NodeId, RecordKey, Signed, pb};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub use config::{DhtConfig, KnownClosest, RecordFields};
pub use persist::{
    DhtPersistence, MAX_KNOWN_PEERS, MAX_REMEMBERED_TRIES, MIN_JOIN_ANSWERS, MemoryPersistence,
    PersistError,
};
pub use service::DiscoveryService;

use crate::core::key::Subnet;
use crate::core::lookup::PeerData;
pub use crate::core::node::PutReport;
use crate::core::node::{self as core_node, Contact, Node, NodeConfig, OpId, Outcome, PutError};
use crate::core::rate::RateLimiter;
use crate::core::store::{RecordRefused, StoreChange};
use crate::core::verified::VerifiedCache;
use crate::error::{DhtError, ServeError};
use crate::metrics::Metrics;

/// Largest encoded Discovery message: 21 node records of at most ~700 bytes plus a 4 KiB
/// record fit well within it.
pub(crate) const MAX_DISCOVERY_MESSAGE: usize = 64 * 1024;

/// A verified node record, shared.
pub type Peer = Arc<Signed<NodeRecord>>;

/// Requests the Discovery service may have waiting for the driver task; one more is
/// answered `RESOURCE_EXHAUSTED` (the per-peer budget keeps any one peer far below).
const MAX_QUEUED_REQUESTS: usize = 1024;

/// Node records remembered as checked (per generation; see [`VerifiedCache`]): enough for
/// every record a node meets in a network of thousands, ~100 bytes each.
const VERIFIED_RECORDS: usize = 4096;

impl PeerData for Peer {
    fn newer_than(&self, other: &Self) -> bool {
        self.timestamp_ms > other.timestamp_ms
    }
}

/// The address a node is dialled at: the first one of its record.
// LATER: try the other advertised addresses when the first does not answer.
pub(crate) fn dial_addr(p: &Signed<NodeRecord>) -> Option<SocketAddr> {
    p.addresses.first().copied()
}

pub(crate) fn subnet_of(p: &Signed<NodeRecord>) -> Subnet {
    dial_addr(p).map_or(Subnet::of(&std::net::Ipv4Addr::UNSPECIFIED.into()), |a| {
        Subnet::of(&a.ip())
    })
}

/// Checks a node record from the network, without a cache: well formed, signed by its
/// key, with `difficulty` bits of proof of work, every address dialable in `scope`.
pub(crate) fn check_node_record(
    what: &'static str,
    m: pb::NodeRecord,
    difficulty: u32,
    scope: AddressScope,
) -> Result<Signed<NodeRecord>, ServeError> {
    let rec =
        Signed::<NodeRecord>::try_from(m).map_err(|source| ServeError::Wire { what, source })?;
    shoal_proto::identity::verify_work(&rec.node_id(), difficulty).map_err(ServeError::Work)?;
    // Never dial wherever a record says: a record naming an address this network does
    // not route is refused whole, before anything (table, membership, the verified
    // cache) learns of it.
    scope
        .check_all(&rec.addresses)
        .map_err(|source| ServeError::Address { what, source })?;
    Ok(rec)
}

/// The core's view of a checked node record.
pub(crate) fn contact(p: &Peer) -> Contact<Peer> {
    Contact {
        id: p.node_id(),
        subnet: subnet_of(p),
        free_space: p.free_space,
        data: p.clone(),
    }
}

/// How this participant takes part.
#[derive(Debug)]
pub enum Mode {
    /// A storage node: serves the Discovery service and enters others' tables. The
    /// host sends new [`RecordFields`] whenever its addresses or free space change.
    Node(watch::Receiver<RecordFields>),
    /// An uplink: looks up, reads and writes records, samples membership; sends no
    /// sender record and never enters a table.
    Client,
}

/// Starts DHT participants.
#[derive(Debug)]
pub struct Dht;

fn node_config(c: &DhtConfig, client: bool) -> NodeConfig {
    NodeConfig {
        k: c.k,
        alpha: c.alpha,
        client,
        initial_timeout_ms: ms(c.initial_timeout),
        min_timeout_ms: ms(c.min_timeout),
        max_timeout_ms: ms(c.max_timeout),
        hard_timeout_ms: ms(c.hard_timeout),
        refresh_ms: ms(c.refresh_interval),
        liveness_ms: ms(c.liveness_interval),
        republish_ms: ms(c.republish_interval),
        replicate_ms: ms(c.replicate_interval),
        crawl_ms: if c.crawl { ms(c.crawl_interval) } else { 0 },
        max_dialbacks: c.max_dialbacks,
        table: c.table.clone(),
        store: c.store.clone(),
        membership: Some(c.membership.clone()),
        persist: c.persistence.is_some() && !client,
        known_closest_ms: ms(c.known_closest_ttl),
        ..NodeConfig::default()
    }
}

impl Dht {
    /// Starts the DHT's driver task and returns the handle. Call
    /// [`DhtHandle::bootstrap`] to join. Must run inside a tokio runtime.
    pub fn start(
        identity: Arc<Identity>,
        config: DhtConfig,
        mode: Mode,
    ) -> Result<DhtHandle, DhtError> {
        let scope = config.address_scope();
        for (_, addr) in &config.bootstrap {
            scope.check(addr).map_err(|source| DhtError::Address {
                what: "bootstrap entry",
                addr: *addr,
                source,
            })?;
        }
        let metrics = Metrics::new()?;
        let (fields, client) = match mode {
            Mode::Node(rx) => (Some(rx), false),
            Mode::Client => (None, true),
        };
        let mut rng = rand::rng();
        let node = Node::new(
            identity.node_id(),
            node_config(&config, client),
            0,
            rng.random(),
            rng.random(),
        );
        let (cmds, rx) = mpsc::unbounded_channel();
        let (inbound, inbound_rx) = mpsc::channel(MAX_QUEUED_REQUESTS);
        let (persist_tx, persist_rx) = match &config.persistence {
            Some(_) => {
                let (tx, rx) = mpsc::unbounded_channel();
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let inner = Arc::new(Inner {
            view: watch::channel(Arc::new(snapshot::Snapshot::of(&node))).0,
            inbound,
            cmds,
            channels: Mutex::new(HashMap::new()),
            verified: Mutex::new(VerifiedCache::new(VERIFIED_RECORDS)),
            rate: Mutex::new(RateLimiter::new(config.rate)),
            local: Mutex::new(None),
            started_at_ms: shoal_proto::time::unix_ms(),
            epoch: Instant::now(),
            cancel: CancellationToken::new(),
            task: Mutex::new(None),
            persist_tx,
            writer: Mutex::new(None),
            writer_stop: CancellationToken::new(),
            loaded: watch::channel(false).0,
            remembered: Mutex::new(Vec::new()),
            identity,
            config,
            client,
            metrics,
        });
        if let Some(rx) = &fields {
            let current = rx.borrow().clone();
            inner.sign_local(&current)?;
        }
        if let (Some(store), Some(changes)) = (inner.config.persistence.clone(), persist_rx) {
            let writer = tokio::spawn(persist::run_writer(
                inner.clone(),
                store,
                changes,
                inner.config.peers_save_interval,
                inner.writer_stop.clone(),
            ));
            *lock(&inner.writer) = Some(writer);
        }
        let handle = tokio::spawn(task::run(inner.clone(), node, rx, inbound_rx, fields));
        *lock(&inner.task) = Some(handle);
        Ok(DhtHandle { inner })
    }
}

/// One node of the membership list.
#[derive(Debug, Clone)]
pub struct MemberInfo {
    pub record: Peer,
    /// Milliseconds since the unix epoch when it last answered us.
    pub last_seen_unix_ms: Option<u64>,
}

/// A node this participant verified (it answered at the address its signed record
/// names), with when it last did: a way into the network for the next start.
#[derive(Debug, Clone)]
pub struct KnownPeer {
    pub record: Peer,
    pub last_seen_unix_ms: u64,
}

/// One routing-table entry, for status pages and tests.
#[derive(Debug, Clone)]
pub struct TableEntry {
    pub record: Peer,
    pub subnet: Subnet,
    pub failures: u32,
}

/// The running DHT. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DhtHandle {
    inner: Arc<Inner>,
}

/// Locks a mutex, recovering from poisoning (a panicked holder leaves plain data behind).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Starts an operation on the node; returns its id.
pub(crate) type Start = Box<dyn FnOnce(&mut Node<Peer>, u64, u64) -> OpId + Send>;

/// A request from the handle to the driver task.
pub(crate) enum Cmd {
    /// Start an operation; its outcome (a failed join: the error naming every entry
    /// tried) goes to `reply`.
    Op {
        start: Start,
        reply: oneshot::Sender<Result<Outcome<Peer>, DhtError>>,
    },
    /// Stop republishing the record under this key.
    Forget(RecordKey),
    /// The closest found per record key within the TTL: how long ago, and them.
    KnownClosest(oneshot::Sender<Vec<(RecordKey, u64, Vec<Peer>)>>),
}

/// A request the Discovery service received and checked, for the driver task to answer.
pub(crate) struct Inbound {
    pub sender: Option<Contact<Peer>>,
    /// Who a write token is bound to (the peer's IP address).
    pub requester: Vec<u8>,
    pub request: core_node::Request,
    pub reply: oneshot::Sender<Result<core_node::Response<Peer>, RecordRefused>>,
}

pub(crate) struct Inner {
    /// What the handle's getters read; only the driver task, the node's owner, writes it.
    pub(crate) view: watch::Sender<Arc<snapshot::Snapshot>>,
    /// Requests for the driver task to answer (bounded: see [`MAX_QUEUED_REQUESTS`]).
    pub(crate) inbound: mpsc::Sender<Inbound>,
    cmds: mpsc::UnboundedSender<Cmd>,
    identity: Arc<Identity>,
    pub(crate) config: DhtConfig,
    client: bool,
    channels: Mutex<HashMap<(NodeId, SocketAddr), DiscoveryClient<Channel>>>,
    verified: Mutex<VerifiedCache<Peer>>,
    /// Per-peer request budget of the Discovery service.
    pub(crate) rate: Mutex<RateLimiter>,
    local: Mutex<Option<Peer>>,
    started_at_ms: u64,
    epoch: Instant,
    pub(crate) cancel: CancellationToken,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Changes of the record store for the writer task (with a store only).
    pub(crate) persist_tx: Option<mpsc::UnboundedSender<StoreChange>>,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    writer_stop: CancellationToken,
    /// Set once what the store kept has been read (at once without a store).
    pub(crate) loaded: watch::Sender<bool>,
    /// Peers read back from the store, checked, newest first.
    pub(crate) remembered: Mutex<Vec<KnownPeer>>,
    pub(crate) metrics: Metrics,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("node", &self.identity.node_id())
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[path = "driver_tests.rs"]
mod tests;
