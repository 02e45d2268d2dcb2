//! The tokio/tonic driver: owns sockets, timers and tasks, and drives the one protocol
//! state machine of the core ([`crate::core::node::Node`]).
//!
//! [`Dht::start`] returns a [`DhtHandle`]. A storage node mounts [`DhtHandle::service`] on
//! its tonic server and supplies the changing fields of its node record through a
//! `watch` channel; an uplink starts in [`Mode::Client`], sends no sender record and so
//! never enters anyone's table.
//!
//! One task ([`task::run`]) drives the node: it starts the operations the handle asks
//! for, sends the requests the node queues (each a future it polls), feeds their answers
//! and the node's timers back in, and hands finished operations to their callers. The
//! node sits behind a single mutex only so that the Discovery service can answer a
//! request and the handle's synchronous getters can read, each in a short critical
//! section that never awaits; no protocol rule lives here. What remains at this edge:
//! checking signatures and proof of work of what arrives, client channels, the signed
//! local record, and metrics.

mod config;
mod persist;
mod rpc;
mod service;
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
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub use config::{DhtConfig, RecordFields};
pub use persist::{
    DhtPersistence, MAX_KNOWN_PEERS, MAX_REMEMBERED_TRIES, MIN_JOIN_ANSWERS, MemoryPersistence,
    PersistError,
};
pub use service::DiscoveryService;

use crate::core::key::Subnet;
use crate::core::lookup::PeerData;
pub use crate::core::node::PutReport;
use crate::core::node::{Contact, Node, NodeConfig, OpId, Outcome, PutError};
use crate::core::rate::RateLimiter;
use crate::core::store::StoreChange;
use crate::core::verified::VerifiedCache;
use crate::error::{DhtError, ServeError};
use crate::metrics::Metrics;

/// A verified node record, shared.
pub type Peer = Arc<Signed<NodeRecord>>;

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
        let scope = AddressScope::from_local_network(config.local_network);
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
        let (persist_tx, persist_rx) = match &config.persistence {
            Some(_) => {
                let (tx, rx) = mpsc::unbounded_channel();
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let inner = Arc::new(Inner {
            node: Mutex::new(node),
            wake: Notify::new(),
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
        let handle = tokio::spawn(task::run(inner.clone(), rx, fields));
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

impl DhtHandle {
    /// The Discovery gRPC service to mount on the host's tonic server.
    pub fn service(&self) -> DiscoveryServer<DiscoveryService> {
        DiscoveryServer::new(DiscoveryService::new(self.inner.clone()))
            .max_decoding_message_size(service::MAX_DISCOVERY_MESSAGE)
            .max_encoding_message_size(service::MAX_DISCOVERY_MESSAGE)
    }

    /// Joins the network: pings the configured bootstrap entries and, when fewer than
    /// [`MIN_JOIN_ANSWERS`] of them answer, up to [`MAX_REMEMBERED_TRIES`] of the nodes
    /// verified before (persisted, newest first), each with the usual deadline; then
    /// looks up our own id and refreshes every bucket. Returns the routing-table size.
    /// Fails, naming every node tried and why, only when nobody answered and the table
    /// is empty.
    pub async fn bootstrap(&self) -> Result<usize, DhtError> {
        let inner = &self.inner;
        // What the store kept must be read before the remembered peers are known.
        let mut loaded = inner.loaded.subscribe();
        if loaded.wait_for(|l| *l).await.is_err() {
            return Err(DhtError::Shutdown);
        }
        let configured = inner.config.bootstrap.clone();
        let mut tried: Vec<String> = Vec::new();
        let mut answered = inner.ping_all(&configured, &mut tried).await;
        let mut remembered_tried = 0;
        if answered < MIN_JOIN_ANSWERS {
            let local = inner.identity.node_id();
            let candidates: Vec<(NodeId, SocketAddr)> = lock(&inner.remembered)
                .iter()
                .filter_map(|p| Some((p.record.node_id(), dial_addr(&p.record)?)))
                .filter(|(id, addr)| *id != local && !configured.contains(&(*id, *addr)))
                .take(MAX_REMEMBERED_TRIES)
                .collect();
            remembered_tried = candidates.len();
            if !candidates.is_empty() {
                let n = inner.ping_all(&candidates, &mut tried).await;
                if n > 0 {
                    tracing::info!(
                        answered = n,
                        tried = candidates.len(),
                        "joining through nodes remembered from before"
                    );
                }
                answered += n;
            }
        }
        if answered == 0 && lock(&inner.node).table().is_empty() {
            if tried.is_empty() {
                return Err(DhtError::NoPeers);
            }
            return Err(DhtError::BootstrapFailed {
                configured: configured.len(),
                remembered: remembered_tried,
                reasons: tried.join("; "),
            });
        }
        match inner.op(|n, now, unix| n.bootstrap(now, unix)).await? {
            Outcome::Bootstrapped { table } => Ok(table),
            _ => Err(DhtError::NoPeers),
        }
    }

    /// The nodes this participant verified, newest first, at most `limit`: those that
    /// answered at their advertised address during this run (routing table and
    /// membership), then those remembered from before it. For a host that wants more
    /// than one way in (an uplink adding bootstrap entries to a grant).
    pub fn known_peers(&self, limit: usize) -> Vec<KnownPeer> {
        self.inner.known_peers(limit)
    }

    /// Writes the known peers to the store now (they are also written every
    /// `peers_save_interval` and at shutdown). Does nothing without a store.
    pub async fn save_known_peers(&self) {
        if let Some(store) = self.inner.config.persistence.clone() {
            persist::save_peers(&self.inner, &store).await;
        }
    }

    /// Finds node `id` and returns its record as it answered at its address, or `None`
    /// if it could not be reached.
    pub async fn find_node(&self, id: NodeId) -> Result<Option<Peer>, DhtError> {
        if let Some(local) = lock(&self.inner.local)
            .as_ref()
            .filter(|p| p.node_id() == id)
        {
            return Ok(Some(local.clone()));
        }
        match self
            .inner
            .op(move |n, now, unix| n.find_node(now, unix, id))
            .await?
        {
            Outcome::Found(p) => Ok(p),
            _ => Err(DhtError::NoPeers),
        }
    }

    /// The k closest reachable nodes to `target`, nearest first.
    pub async fn closest(&self, target: [u8; 32]) -> Result<Vec<Peer>, DhtError> {
        match self
            .inner
            .op(move |n, now, unix| n.closest(now, unix, target))
            .await?
        {
            Outcome::Closest { results, .. } => Ok(results),
            _ => Err(DhtError::NoPeers),
        }
    }

    /// Stores `record` on the k nodes closest to its key, found along disjoint paths;
    /// with `expected_seq`, only where the held seq is that one (compare-and-swap). The
    /// record is then republished by this handle until [`DhtHandle::forget_record`].
    pub async fn put_record(
        &self,
        record: Signed<MutableRecord>,
        expected_seq: Option<u64>,
    ) -> Result<PutReport, DhtError> {
        let outcome = self
            .inner
            .op(move |n, now, unix| n.put_record(now, unix, record, expected_seq))
            .await?;
        match outcome {
            Outcome::Put(Ok(report)) => Ok(report),
            Outcome::Put(Err(PutError::CompareAndSwap)) => Err(DhtError::CasMismatch),
            Outcome::Put(Err(PutError::Failed { refused, failed })) => {
                Err(DhtError::PutFailed { refused, failed })
            }
            _ => Err(DhtError::NoPeers),
        }
    }

    /// Stops republishing the record under `key`.
    pub fn forget_record(&self, key: &RecordKey) {
        self.inner.with_node(|n, _, _| n.forget_record(key));
    }

    /// The newest live record under `key` held by the k closest nodes, read along
    /// disjoint paths.
    pub async fn get_record(
        &self,
        key: RecordKey,
    ) -> Result<Option<Signed<MutableRecord>>, DhtError> {
        match self
            .inner
            .op(move |n, now, unix| n.get_record(now, unix, key))
            .await?
        {
            Outcome::Record(r) => Ok(r),
            _ => Err(DhtError::NoPeers),
        }
    }

    /// Up to `n` live members, one per /24 (/48), with at least `min_free_space` bytes
    /// free, that answered within `max_age`, chosen uniformly over subnets.
    pub fn sample(
        &self,
        n: usize,
        min_free_space: u64,
        max_age: std::time::Duration,
    ) -> Vec<MemberInfo> {
        let now = self.inner.now();
        let node = lock(&self.inner.node);
        let Some(members) = node.members() else {
            return Vec::new();
        };
        members
            .sample(n, min_free_space, ms(max_age), now, &mut rand::rng())
            .into_iter()
            .map(|m| self.inner.member_info(m))
            .collect()
    }

    /// Every known member with when it last answered.
    pub fn members(&self) -> Vec<MemberInfo> {
        let node = lock(&self.inner.node);
        node.members()
            .map(|m| m.iter().map(|m| self.inner.member_info(m)).collect())
            .unwrap_or_default()
    }

    /// Runs `n` crawl steps now (the background crawler does this at its bounded rate).
    pub async fn crawl(&self, n: usize) {
        for _ in 0..n {
            if self
                .inner
                .op(|n, now, unix| n.crawl(now, unix))
                .await
                .is_err()
            {
                return;
            }
        }
    }

    /// The routing table's entries.
    pub fn table(&self) -> Vec<TableEntry> {
        lock(&self.inner.node)
            .table()
            .iter()
            .map(|e| TableEntry {
                record: e.data.clone(),
                subnet: e.subnet,
                failures: e.failures,
            })
            .collect()
    }

    /// Dial-backs and liveness checks still running.
    pub fn pending_dialbacks(&self) -> usize {
        lock(&self.inner.node).dialing()
    }

    /// The currently signed local record (node mode).
    pub fn local_record(&self) -> Option<Peer> {
        lock(&self.inner.local).clone()
    }

    pub fn node_id(&self) -> NodeId {
        self.inner.identity.node_id()
    }

    /// The DHT's metrics (to read them directly).
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Registers the `shoal_dht_*` metrics into the host's registry.
    pub fn register_metrics(
        &self,
        registry: &prometheus::Registry,
    ) -> Result<(), prometheus::Error> {
        self.inner.metrics.register(registry)
    }

    /// Stops the driver task and waits for it. The gRPC service stops with the host's
    /// server; call this after stopping it.
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        let task = lock(&self.inner.task).take();
        if let Some(t) = task {
            let _ = t.await;
        }
        // The record store's last changes go to the writer, which writes them and the
        // known peers, then ends.
        if let Some(tx) = &self.inner.persist_tx {
            let mut node = lock(&self.inner.node);
            while let Some(o) = node.poll_output() {
                if let crate::core::node::Output::Store(c) = o {
                    let _ = tx.send(c);
                }
            }
        }
        self.inner.writer_stop.cancel();
        let writer = lock(&self.inner.writer).take();
        if let Some(w) = writer
            && tokio::time::timeout(persist::LOAD_DEADLINE, w)
                .await
                .is_err()
        {
            tracing::warn!("DHT store: the last writes did not finish in time");
        }
    }
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

/// A request to the driver task.
pub(crate) struct Cmd {
    pub start: Start,
    pub reply: oneshot::Sender<Outcome<Peer>>,
}

pub(crate) struct Inner {
    /// The protocol state machine, driven by the task.
    pub(crate) node: Mutex<Node<Peer>>,
    /// Tells the task the node queued outputs outside its loop (a served request).
    pub(crate) wake: Notify,
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

impl Inner {
    /// Which addresses this network dials and accepts in records.
    pub(crate) fn scope(&self) -> AddressScope {
        AddressScope::from_local_network(self.config.local_network)
    }

    /// The core's clock: milliseconds since this DHT started.
    pub(crate) fn now(&self) -> u64 {
        ms(self.epoch.elapsed())
    }

    pub(crate) fn epoch(&self) -> Instant {
        self.epoch
    }

    fn unix_of(&self, now: u64) -> u64 {
        let age = self.now().saturating_sub(now);
        shoal_proto::time::unix_ms().saturating_sub(age)
    }

    /// Runs `f` on the node (never across an await), then wakes the task to send what
    /// it queued.
    pub(crate) fn with_node<R>(&self, f: impl FnOnce(&mut Node<Peer>, u64, u64) -> R) -> R {
        let r = f(
            &mut lock(&self.node),
            self.now(),
            shoal_proto::time::unix_ms(),
        );
        self.wake.notify_one();
        r
    }

    /// Has the task start an operation and waits for its outcome.
    async fn op(
        &self,
        start: impl FnOnce(&mut Node<Peer>, u64, u64) -> OpId + Send + 'static,
    ) -> Result<Outcome<Peer>, DhtError> {
        let (reply, rx) = oneshot::channel();
        self.cmds
            .send(Cmd {
                start: Box::new(start),
                reply,
            })
            .map_err(|_| DhtError::Shutdown)?;
        match rx.await.map_err(|_| DhtError::Shutdown)? {
            Outcome::NoPeers => Err(DhtError::NoPeers),
            o => Ok(o),
        }
    }

    fn member_info(&self, m: &crate::core::membership::Member<Peer>) -> MemberInfo {
        MemberInfo {
            record: m.data.clone(),
            last_seen_unix_ms: m.last_seen.map(|t| self.unix_of(t)),
        }
    }

    /// Signs a new local record with `fields`; its timestamp is strictly newer.
    pub(crate) fn sign_local(&self, fields: &RecordFields) -> Result<Peer, DhtError> {
        if fields.addresses.is_empty() {
            return Err(DhtError::NoAddress);
        }
        for addr in &fields.addresses {
            self.scope()
                .check(addr)
                .map_err(|source| DhtError::Address {
                    what: "the node record's address",
                    addr: *addr,
                    source,
                })?;
        }
        let prev = lock(&self.local).as_ref().map_or(0, |p| p.timestamp_ms);
        let body = NodeRecord {
            public_key: *self.identity.public_key(),
            addresses: fields.addresses.clone(),
            free_space: fields.free_space,
            version: self.config.version.clone(),
            started_at_ms: self.started_at_ms,
            timestamp_ms: shoal_proto::time::unix_ms().max(prev + 1),
        };
        let signed = Signed::sign(body, &self.identity)?;
        // What peers will check, checked here first.
        let checked = Signed::<NodeRecord>::try_from(pb::NodeRecord::from(&signed))
            .map_err(DhtError::LocalRecord)?;
        let peer = Arc::new(checked);
        *lock(&self.local) = Some(peer.clone());
        Ok(peer)
    }

    /// Checks a node record from the network: well formed, signed by its key, with enough
    /// proof of work, every address allowed in this network. Bytes identical to a record
    /// checked before give that record back without checking again.
    pub(crate) fn check_node_record(
        &self,
        what: &'static str,
        m: pb::NodeRecord,
    ) -> Result<Peer, ServeError> {
        let digest = *blake3::hash(&prost::Message::encode_to_vec(&m)).as_bytes();
        let checks = &self.metrics.record_checks;
        if let Some(peer) = lock(&self.verified).get(&digest) {
            checks.with_label_values(&["cached"]).inc();
            return Ok(peer);
        }
        let checked =
            check_node_record(what, m, self.config.difficulty, self.scope()).map(Arc::new);
        match checked {
            Ok(peer) => {
                checks.with_label_values(&["verified"]).inc();
                lock(&self.verified).insert(digest, peer.clone());
                Ok(peer)
            }
            Err(e) => {
                checks.with_label_values(&["rejected"]).inc();
                Err(e)
            }
        }
    }

    /// The sender record put in requests (none in client mode).
    pub(crate) fn sender(&self) -> Option<pb::NodeRecord> {
        if self.client {
            return None;
        }
        lock(&self.local)
            .as_ref()
            .map(|p| pb::NodeRecord::from(&**p))
    }

    pub(crate) fn local_record(&self) -> Option<Peer> {
        lock(&self.local).clone()
    }

    /// Pings every `(id, addr)` at once, each with the usual deadline; reports who
    /// answered to the node and each failure into `tried`. Returns how many answered.
    async fn ping_all(&self, peers: &[(NodeId, SocketAddr)], tried: &mut Vec<String>) -> usize {
        let pings = peers
            .iter()
            .map(|(id, addr)| async move { (*id, *addr, self.ping(*addr, *id).await) });
        let mut answered = 0;
        for (id, addr, result) in futures::future::join_all(pings).await {
            match result {
                Ok(peer) => {
                    answered += 1;
                    let at_advertised = dial_addr(&peer) == Some(addr);
                    self.with_node(|n, now, _| n.on_contact(now, contact(&peer), at_advertised));
                }
                Err(e) => {
                    tracing::warn!(%addr, node = %id, error = %e, "node did not answer the join");
                    tried.push(format!("{id}@{addr}: {e}"));
                }
            }
        }
        answered
    }

    /// See [`DhtHandle::known_peers`].
    pub(crate) fn known_peers(&self, limit: usize) -> Vec<KnownPeer> {
        let mut best: HashMap<NodeId, KnownPeer> = HashMap::new();
        let mut offer = |record: &Peer, seen: u64| {
            let id = record.node_id();
            match best.get(&id) {
                Some(k) if k.last_seen_unix_ms >= seen => {}
                _ => {
                    best.insert(
                        id,
                        KnownPeer {
                            record: record.clone(),
                            last_seen_unix_ms: seen,
                        },
                    );
                }
            }
        };
        {
            let node = lock(&self.node);
            // Table entries were admitted only after answering at their address.
            for e in node.table().iter().filter(|e| e.failures == 0) {
                offer(&e.data, self.unix_of(e.last_seen));
            }
            if let Some(m) = node.members() {
                for m in m.iter() {
                    if let Some(seen) = m.last_seen {
                        offer(&m.data, self.unix_of(seen));
                    }
                }
            }
        }
        for k in lock(&self.remembered).iter() {
            offer(&k.record, k.last_seen_unix_ms);
        }
        let local = self.identity.node_id();
        let mut peers: Vec<KnownPeer> = best
            .into_values()
            .filter(|k| k.record.node_id() != local)
            .collect();
        peers.sort_unstable_by(|a, b| {
            b.last_seen_unix_ms
                .cmp(&a.last_seen_unix_ms)
                .then_with(|| a.record.node_id().0.cmp(&b.record.node_id().0))
        });
        peers.truncate(limit);
        peers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(identity: &Identity, free_space: u64) -> pb::NodeRecord {
        let body = NodeRecord {
            public_key: *identity.public_key(),
            addresses: vec!["127.0.3.1:7777".parse().unwrap()],
            free_space,
            version: "test".into(),
            started_at_ms: 1,
            timestamp_ms: 2,
        };
        pb::NodeRecord::from(&Signed::sign(body, identity).unwrap())
    }

    fn checks(dht: &DhtHandle, result: &str) -> u64 {
        dht.inner
            .metrics
            .record_checks
            .with_label_values(&[result])
            .get()
    }

    #[tokio::test]
    async fn a_record_seen_before_is_not_verified_again_but_altered_bytes_are_refused() {
        let config = DhtConfig {
            difficulty: 0,
            local_network: true,
            ..DhtConfig::default()
        };
        let dht = Dht::start(Arc::new(Identity::random()), config, Mode::Client).unwrap();
        let inner = &dht.inner;
        let peer = Identity::random();
        let good = record(&peer, 10);

        let first = inner.check_node_record("test", good.clone()).unwrap();
        let again = inner.check_node_record("test", good.clone()).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "the cached record is returned");
        assert_eq!((checks(&dht, "verified"), checks(&dht, "cached")), (1, 1));

        // Same signature, another body: the cache must not vouch for it.
        let mut body_changed = good.clone();
        body_changed.free_space = 11;
        assert!(inner.check_node_record("test", body_changed).is_err());
        // Same body, another signature.
        let mut sig_changed = good.clone();
        sig_changed.signature[0] ^= 1;
        assert!(inner.check_node_record("test", sig_changed).is_err());
        // Another key's signature over the same body.
        let mut resigned = record(&Identity::random(), 10);
        resigned.public_key = good.public_key.clone();
        assert!(inner.check_node_record("test", resigned).is_err());
        assert_eq!(checks(&dht, "rejected"), 3);
        assert_eq!(checks(&dht, "verified"), 1);
        dht.shutdown().await;
    }

    #[tokio::test]
    async fn proof_of_work_is_checked_before_a_record_is_cached() {
        let config = DhtConfig {
            difficulty: 30,
            ..DhtConfig::default()
        };
        let dht = Dht::start(Arc::new(Identity::random()), config, Mode::Client).unwrap();
        // A random key has 30 trailing zero bits with probability 2^-30.
        let weak = record(&Identity::random(), 10);
        for _ in 0..2 {
            assert!(matches!(
                dht.inner.check_node_record("test", weak.clone()),
                Err(ServeError::Work(_))
            ));
        }
        assert_eq!(checks(&dht, "cached"), 0);
        dht.shutdown().await;
    }

    #[tokio::test]
    async fn a_public_network_refuses_records_bootstrap_entries_and_its_own_record_naming_local_addresses()
     {
        let public = DhtConfig {
            difficulty: 0,
            ..DhtConfig::default()
        };
        let dht = Dht::start(Arc::new(Identity::random()), public.clone(), Mode::Client).unwrap();
        // A signed, valid record at 127.0.3.1: refused, never cached, twice.
        let local = record(&Identity::random(), 10);
        for _ in 0..2 {
            let err = dht
                .inner
                .check_node_record("test", local.clone())
                .unwrap_err();
            assert!(matches!(err, ServeError::Address { .. }), "{err}");
            assert!(err.to_string().contains("loopback"), "{err}");
            assert_eq!(
                tonic::Status::from(err).code(),
                tonic::Code::InvalidArgument
            );
        }
        assert_eq!((checks(&dht, "cached"), checks(&dht, "verified")), (0, 0));
        dht.shutdown().await;

        // A bootstrap entry at a private address.
        let private = DhtConfig {
            bootstrap: vec![(NodeId([1; 32]), "192.168.1.2:7777".parse().unwrap())],
            ..public.clone()
        };
        let err = Dht::start(Arc::new(Identity::random()), private, Mode::Client).unwrap_err();
        assert!(
            matches!(
                &err,
                DhtError::Address {
                    what: "bootstrap entry",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("private"), "{err}");

        // A node that would advertise a loopback address.
        let (_tx, rx) = watch::channel(RecordFields {
            addresses: vec!["127.0.0.1:7777".parse().unwrap()],
            free_space: 1,
        });
        let err = Dht::start(Arc::new(Identity::random()), public, Mode::Node(rx)).unwrap_err();
        assert!(matches!(err, DhtError::Address { .. }), "{err}");

        // The same record and entries on a local network are fine.
        let (_tx, rx) = watch::channel(RecordFields {
            addresses: vec!["127.0.0.1:7777".parse().unwrap()],
            free_space: 1,
        });
        let dht = Dht::start(
            Arc::new(Identity::random()),
            DhtConfig {
                difficulty: 0,
                local_network: true,
                bootstrap: vec![(NodeId([1; 32]), "192.168.1.2:7777".parse().unwrap())],
                ..DhtConfig::default()
            },
            Mode::Node(rx),
        )
        .unwrap();
        assert!(dht.inner.check_node_record("test", local).is_ok());
        dht.shutdown().await;
    }
}
