//! The tokio/tonic driver: owns sockets, timers and tasks, and feeds the sans-IO core.
//!
//! [`Dht::start`] returns a [`DhtHandle`]. A storage node mounts [`DhtHandle::service`] on
//! its tonic server and supplies the changing fields of its node record through a
//! `watch` channel; an uplink starts in [`Mode::Client`], sends no sender record and so
//! never enters anyone's table.

mod config;
mod rpc;
mod service;
mod workers;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rand::RngExt;
use shoal_proto::messages::{MutableRecord, NodeRecord};
use shoal_proto::pb::discovery_client::DiscoveryClient;
use shoal_proto::pb::discovery_server::DiscoveryServer;
use shoal_proto::{Identity, NodeId, RecordKey, Signed, pb};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub use config::{DhtConfig, RecordFields};
pub use service::DiscoveryService;

use crate::core::key::{Subnet, distance};
use crate::core::lookup::{Lookup, LookupConfig, PeerData, PeerState, RttEstimator, Step};
use crate::core::membership::Membership;
use crate::core::store::RecordStore;
use crate::core::table::{Insert, RoutingTable};
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

impl Dht {
    /// Starts the DHT's background workers and returns the handle. Call
    /// [`DhtHandle::bootstrap`] to join. Must run inside a tokio runtime.
    pub fn start(
        identity: Arc<Identity>,
        config: DhtConfig,
        mode: Mode,
    ) -> Result<DhtHandle, DhtError> {
        let metrics = Metrics::new()?;
        let (fields, client) = match mode {
            Mode::Node(rx) => (Some(rx), false),
            Mode::Client => (None, true),
        };
        let local_id = identity.node_id();
        let rtt = RttEstimator::new(
            ms(config.initial_timeout),
            ms(config.min_timeout),
            ms(config.max_timeout),
        );
        let inner = Arc::new_cyclic(|me| Inner {
            me: me.clone(),
            table: Mutex::new(RoutingTable::new(local_id, config.table.clone())),
            store: Mutex::new(RecordStore::new(config.store.clone())),
            members: Mutex::new(Membership::new(config.membership.clone())),
            rtt: Mutex::new(rtt),
            channels: Mutex::new(HashMap::new()),
            dialing: Mutex::new(HashSet::new()),
            verified: Mutex::new(VerifiedCache::new(VERIFIED_RECORDS)),
            dialbacks: Arc::new(Semaphore::new(config.max_dialbacks.max(1))),
            owned: Mutex::new(HashMap::new()),
            local: Mutex::new(None),
            started_at_ms: shoal_proto::time::unix_ms(),
            epoch: Instant::now(),
            cancel: CancellationToken::new(),
            tasks: Mutex::new(JoinSet::new()),
            identity,
            config,
            client,
            metrics,
        });
        if let Some(rx) = fields {
            let current = rx.borrow().clone();
            inner.sign_local(&current)?;
            let worker = inner.clone();
            inner.spawn(async move { worker.publish_worker(rx).await });
        }
        workers::spawn_all(&inner);
        Ok(DhtHandle { inner })
    }
}

/// What a DHT put achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutReport {
    /// Nodes that now hold the record.
    pub stored: usize,
    /// Nodes that refused it, with their reason.
    pub refused: Vec<(NodeId, String)>,
    /// Nodes that did not answer.
    pub failed: usize,
}

/// One node of the membership list.
#[derive(Debug, Clone)]
pub struct MemberInfo {
    pub record: Peer,
    /// Milliseconds since the unix epoch when it last answered us.
    pub last_seen_unix_ms: Option<u64>,
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

    /// Joins through the configured bootstrap addresses: pings them, looks up our own id
    /// and refreshes every bucket. Returns the routing-table size.
    pub async fn bootstrap(&self) -> Result<usize, DhtError> {
        self.inner.bootstrap().await
    }

    /// Finds node `id` and returns its record as it answered at its address, or `None`
    /// if it could not be reached.
    pub async fn find_node(&self, id: NodeId) -> Result<Option<Peer>, DhtError> {
        self.inner.find_node(id).await
    }

    /// The k closest reachable nodes to `target`, nearest first.
    pub async fn closest(&self, target: [u8; 32]) -> Result<Vec<Peer>, DhtError> {
        Ok(self.inner.lookup(target, None).await?.results)
    }

    /// Stores `record` on the k nodes closest to its key; with `expected_seq`, only where
    /// the held seq is that one (compare-and-swap). The record is then republished by
    /// this handle until [`DhtHandle::forget_record`].
    pub async fn put_record(
        &self,
        record: Signed<MutableRecord>,
        expected_seq: Option<u64>,
    ) -> Result<PutReport, DhtError> {
        let report = self.inner.put_record(&record, expected_seq).await?;
        lock(&self.inner.owned).insert(record.key(), record);
        Ok(report)
    }

    /// Stops republishing the record under `key`.
    pub fn forget_record(&self, key: &RecordKey) {
        lock(&self.inner.owned).remove(key);
    }

    /// The newest live record under `key` held by the k closest nodes.
    pub async fn get_record(
        &self,
        key: RecordKey,
    ) -> Result<Option<Signed<MutableRecord>>, DhtError> {
        self.inner.get_record(key).await
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
        let members = lock(&self.inner.members);
        members
            .sample(n, min_free_space, ms(max_age), now, &mut rand::rng())
            .into_iter()
            .map(|m| self.inner.member_info(m))
            .collect()
    }

    /// Every known member with when it last answered.
    pub fn members(&self) -> Vec<MemberInfo> {
        let members = lock(&self.inner.members);
        members.iter().map(|m| self.inner.member_info(m)).collect()
    }

    /// Runs `n` crawl steps now (the background crawler does this at its bounded rate).
    pub async fn crawl(&self, n: usize) {
        for _ in 0..n {
            self.inner.crawl_step().await;
        }
    }

    /// The routing table's entries.
    pub fn table(&self) -> Vec<TableEntry> {
        lock(&self.inner.table)
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
        lock(&self.inner.dialing).len()
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

    /// Stops every background worker and waits for them. The gRPC service stops with the
    /// host's server; call this after stopping it.
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        let mut tasks = std::mem::take(&mut *lock(&self.inner.tasks));
        while tasks.join_next().await.is_some() {}
    }
}

/// Locks a mutex, recovering from poisoning (a panicked holder leaves plain data behind).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What a lookup found.
#[derive(Debug)]
pub(crate) struct LookupOutcome {
    pub results: Vec<Peer>,
    /// Newest record per node id seen in any answer.
    pub seen: HashMap<NodeId, Peer>,
    /// Newest valid mutable record among the answers (record lookups).
    pub record: Option<Signed<MutableRecord>>,
    /// Nodes that answered a record lookup with an older record or none.
    pub stale_holders: Vec<Peer>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    me: std::sync::Weak<Inner>,
    identity: Arc<Identity>,
    config: DhtConfig,
    client: bool,
    table: Mutex<RoutingTable<Peer>>,
    store: Mutex<RecordStore>,
    members: Mutex<Membership<Peer>>,
    rtt: Mutex<RttEstimator>,
    channels: Mutex<HashMap<(NodeId, SocketAddr), DiscoveryClient<Channel>>>,
    dialing: Mutex<HashSet<NodeId>>,
    verified: Mutex<VerifiedCache<Peer>>,
    dialbacks: Arc<Semaphore>,
    owned: Mutex<HashMap<RecordKey, Signed<MutableRecord>>>,
    local: Mutex<Option<Peer>>,
    started_at_ms: u64,
    epoch: Instant,
    cancel: CancellationToken,
    tasks: Mutex<JoinSet<()>>,
    metrics: Metrics,
}

impl Inner {
    /// The core's clock: milliseconds since this DHT started.
    pub(crate) fn now(&self) -> u64 {
        ms(self.epoch.elapsed())
    }

    fn unix_of(&self, now: u64) -> u64 {
        let age = self.now().saturating_sub(now);
        shoal_proto::time::unix_ms().saturating_sub(age)
    }

    pub(crate) fn spawn<F>(&self, f: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let cancel = self.cancel.clone();
        let mut tasks = lock(&self.tasks);
        // Reap finished tasks so the set does not grow with short-lived ones.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = f => {}
            }
        });
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
    /// proof of work. Bytes identical to a record checked before give that record back
    /// without checking again.
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
        let checked = Signed::<NodeRecord>::try_from(m)
            .map_err(|source| ServeError::Wire { what, source })
            .and_then(|rec| {
                shoal_proto::identity::verify_work(&rec.node_id(), self.config.difficulty)
                    .map_err(ServeError::Work)?;
                Ok(Arc::new(rec))
            });
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

    /// A node answered us at `addr`: it enters (or refreshes in) the table.
    pub(crate) fn on_answered(&self, peer: &Peer, addr: SocketAddr) {
        let now = self.now();
        lock(&self.members).on_answer(
            peer.node_id(),
            subnet_of(peer),
            peer.free_space,
            peer.clone(),
            now,
        );
        if dial_addr(peer) != Some(addr) {
            // It answered, but its record names another address: we have not verified
            // that one, so it does not enter the table on this answer.
            return;
        }
        let mut table = lock(&self.table);
        let id = peer.node_id();
        let data = match table.get(&id) {
            Some(e) if e.data.timestamp_ms > peer.timestamp_ms => e.data.clone(),
            _ => peer.clone(),
        };
        let outcome = table.observe(id, subnet_of(&data), data, now);
        self.metrics.table_size.set(table.len() as i64);
        drop(table);
        match outcome {
            Insert::SubnetBucketFull => self
                .metrics
                .peers_refused
                .with_label_values(&["subnet_bucket"])
                .inc(),
            Insert::SubnetTableFull => self
                .metrics
                .peers_refused
                .with_label_values(&["subnet_table"])
                .inc(),
            Insert::Pending { check: Some(check) } => self.check_liveness(check),
            Insert::Pending { check: None } => {}
            Insert::Added | Insert::Updated | Insert::Local => {}
        }
    }

    pub(crate) fn on_request_failed(&self, id: &NodeId) {
        self.metrics.requests_failed.inc();
        let mut table = lock(&self.table);
        table.on_failure(id);
        self.metrics.table_size.set(table.len() as i64);
        drop(table);
        lock(&self.members).on_failure(id);
    }

    /// Pings `id` (the least recently seen entry of a full bucket) in the background.
    fn check_liveness(&self, id: NodeId) {
        let Some(addr) = lock(&self.table).get(&id).and_then(|e| dial_addr(&e.data)) else {
            return;
        };
        if !lock(&self.dialing).insert(id) {
            return;
        }
        let Some(me) = self.self_arc() else {
            lock(&self.dialing).remove(&id);
            return;
        };
        self.spawn(async move {
            match me.ping(addr, id).await {
                Ok(peer) => me.on_answered(&peer, addr),
                Err(_) => me.on_request_failed(&id),
            }
            lock(&me.dialing).remove(&id);
        });
    }

    /// A request arrived from `sender`: refresh it if we know this exact record, else
    /// dial its claimed address back before it may enter the table.
    pub(crate) fn on_sender(&self, sender: Peer) {
        let id = sender.node_id();
        if id == self.identity.node_id() {
            return;
        }
        lock(&self.members).observe(
            id,
            subnet_of(&sender),
            sender.free_space,
            sender.clone(),
            self.now(),
        );
        {
            let table = lock(&self.table);
            if let Some(e) = table.get_any(&id)
                && e.data.timestamp_ms >= sender.timestamp_ms
            {
                // Same (or older) record as one whose address we verified (in a bucket
                // or in the replacement cache).
                return;
            }
        }
        let Some(addr) = dial_addr(&sender) else {
            return;
        };
        // Not worth a dial-back if the table would not take it.
        let refusal = lock(&self.table).precheck(&id, subnet_of(&sender), self.now());
        match refusal {
            None => {}
            Some(Insert::SubnetBucketFull) => {
                self.metrics
                    .peers_refused
                    .with_label_values(&["subnet_bucket"])
                    .inc();
                return;
            }
            Some(Insert::SubnetTableFull) => {
                self.metrics
                    .peers_refused
                    .with_label_values(&["subnet_table"])
                    .inc();
                return;
            }
            Some(_) => return,
        }
        let Ok(permit) = self.dialbacks.clone().try_acquire_owned() else {
            self.metrics
                .peers_refused
                .with_label_values(&["dialback_busy"])
                .inc();
            return;
        };
        if !lock(&self.dialing).insert(id) {
            return;
        }
        let Some(me) = self.self_arc() else {
            lock(&self.dialing).remove(&id);
            return;
        };
        self.spawn(async move {
            match me.ping(addr, id).await {
                Ok(peer) => me.on_answered(&peer, addr),
                Err(e) => {
                    tracing::debug!(%addr, node = %id, error = %e, "dial-back failed");
                    me.metrics.dialbacks_failed.inc();
                    me.metrics
                        .peers_refused
                        .with_label_values(&["unreachable"])
                        .inc();
                }
            }
            lock(&me.dialing).remove(&id);
            drop(permit);
        });
    }

    fn self_arc(&self) -> Option<Arc<Inner>> {
        self.me.upgrade()
    }

    fn lookup_config(&self) -> LookupConfig {
        LookupConfig {
            k: self.config.k,
            alpha: self.config.alpha,
            max_candidates: self.config.k * 10,
        }
    }

    /// Runs one iterative lookup; with `record`, asks GetRecord for that key.
    pub(crate) async fn lookup(
        &self,
        target: [u8; 32],
        record: Option<RecordKey>,
    ) -> Result<LookupOutcome, DhtError> {
        let kind = if record.is_some() { "record" } else { "node" };
        self.metrics.lookups.with_label_values(&[kind]).inc();
        let seeds: Vec<(NodeId, Peer)> = lock(&self.table)
            .closest(&target, self.config.k, false)
            .into_iter()
            .map(|e| (e.id, e.data.clone()))
            .collect();
        if seeds.is_empty() {
            return Err(DhtError::NoPeers);
        }
        let timeout = lock(&self.rtt).timeout();
        let mut lookup = Lookup::new(
            target,
            Some(self.identity.node_id()),
            seeds,
            self.lookup_config(),
            timeout,
        );
        let mut pending = FuturesUnordered::new();
        let mut seen: HashMap<NodeId, Peer> = HashMap::new();
        let mut best: Option<Signed<MutableRecord>> = None;
        let mut held_seq: HashMap<NodeId, Option<u64>> = HashMap::new();
        loop {
            match lookup.poll(self.now()) {
                Step::Query { id, data } => {
                    pending.push(async move {
                        let res = match dial_addr(&data) {
                            Some(addr) => self.query(addr, id, &target, record).await,
                            None => Err(DhtError::NoAddress),
                        };
                        (id, res)
                    });
                }
                Step::Wait { until } => {
                    let sleep = async {
                        match until {
                            Some(t) => {
                                tokio::time::sleep_until(
                                    self.epoch + std::time::Duration::from_millis(t),
                                )
                                .await
                            }
                            None => futures::future::pending().await,
                        }
                    };
                    tokio::select! {
                        next = pending.next() => {
                            let Some((id, res)) = next else { continue };
                            match res {
                                Ok(answer) => {
                                    for p in &answer.closer {
                                        let pid = p.node_id();
                                        match seen.get(&pid) {
                                            Some(old) if old.timestamp_ms >= p.timestamp_ms => {}
                                            _ => { seen.insert(pid, p.clone()); }
                                        }
                                        lock(&self.members).observe(pid, subnet_of(p), p.free_space, p.clone(), self.now());
                                    }
                                    seen.insert(id, answer.responder.clone());
                                    if let Some(r) = answer.record {
                                        held_seq.insert(id, Some(r.seq));
                                        if best.as_ref().is_none_or(|b| r.seq > b.seq) {
                                            best = Some(r);
                                        }
                                    } else {
                                        held_seq.insert(id, None);
                                    }
                                    let closer = answer.closer.into_iter().map(|p| (p.node_id(), p));
                                    lookup.on_success(&id, closer);
                                }
                                Err(_) => {
                                    self.on_request_failed(&id);
                                    lookup.on_failure(&id);
                                }
                            }
                        }
                        _ = sleep => {}
                        _ = self.cancel.cancelled() => return Err(DhtError::Shutdown),
                    }
                }
                Step::Done => break,
            }
        }
        lock(&self.table).mark_refreshed(&target, self.now());
        let results: Vec<Peer> = lookup
            .results()
            .into_iter()
            .map(|p| seen.get(&p.id).cloned().unwrap_or_else(|| p.data.clone()))
            .collect();
        if results.is_empty() {
            self.metrics.lookup_failures.inc();
        } else {
            self.metrics.lookup_hops.observe(f64::from(lookup.hops()));
        }
        // Reached nodes stay reachable for the target check in find_node.
        for p in lookup.peers() {
            if p.state == PeerState::Succeeded {
                seen.entry(p.id).or_insert_with(|| p.data.clone());
            }
        }
        let stale_holders = match &best {
            Some(b) => results
                .iter()
                .filter(|p| {
                    held_seq
                        .get(&p.node_id())
                        .is_some_and(|s| s.is_none_or(|s| s < b.seq))
                })
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        Ok(LookupOutcome {
            results,
            seen,
            record: best,
            stale_holders,
        })
    }

    async fn bootstrap(&self) -> Result<usize, DhtError> {
        let mut answered = 0;
        let mut failures = Vec::new();
        for (id, addr) in self.config.bootstrap.clone() {
            match self.ping(addr, id).await {
                Ok(peer) => {
                    answered += 1;
                    self.on_answered(&peer, addr);
                }
                Err(e) => {
                    tracing::warn!(%addr, node = %id, error = %e, "bootstrap node did not answer");
                    failures.push(e.to_string());
                }
            }
        }
        if answered == 0 && lock(&self.table).is_empty() {
            if failures.is_empty() {
                return Err(DhtError::NoPeers);
            }
            return Err(DhtError::BootstrapFailed {
                reasons: failures.join("; "),
            });
        }
        let own = if self.client {
            rand::rng().random()
        } else {
            self.identity.node_id().0
        };
        self.lookup(own, None).await?;
        self.refresh(0).await;
        Ok(lock(&self.table).len())
    }

    /// Looks up a random key in every bucket not refreshed within `interval` ms.
    pub(crate) async fn refresh(&self, interval: u64) {
        let due = lock(&self.table).refresh_due(self.now(), interval);
        let local = self.identity.node_id();
        for bucket in due {
            let key = crate::core::key::key_in_bucket(&local, bucket, rand::rng().random());
            if let Err(e) = self.lookup(key, None).await {
                tracing::debug!(bucket, error = %e, "bucket refresh failed");
            }
        }
    }

    async fn find_node(&self, id: NodeId) -> Result<Option<Peer>, DhtError> {
        if let Some(local) = lock(&self.local).as_ref().filter(|p| p.node_id() == id) {
            return Ok(Some(local.clone()));
        }
        let outcome = self.lookup(id.0, None).await?;
        if let Some(p) = outcome.results.iter().find(|p| p.node_id() == id) {
            return Ok(Some(p.clone()));
        }
        // Not reached, but someone knows a record of it: it may have moved. Try the
        // newest record's address directly.
        if let Some(p) = outcome.seen.get(&id)
            && let Some(addr) = dial_addr(p)
            && let Ok(found) = self.ping(addr, id).await
        {
            self.on_answered(&found, addr);
            return Ok(Some(found));
        }
        Ok(None)
    }

    pub(crate) async fn put_record(
        &self,
        record: &Signed<MutableRecord>,
        expected_seq: Option<u64>,
    ) -> Result<PutReport, DhtError> {
        let key = record.key();
        let outcome = self.lookup(key.0, None).await?;
        self.put_to(record, expected_seq, &outcome.results).await
    }

    pub(crate) async fn put_to(
        &self,
        record: &Signed<MutableRecord>,
        expected_seq: Option<u64>,
        to: &[Peer],
    ) -> Result<PutReport, DhtError> {
        let key = record.key();
        // Hold a copy ourselves when we are among the closest.
        let mut report = PutReport {
            stored: 0,
            refused: Vec::new(),
            failed: 0,
        };
        if !self.client {
            let me = distance(&key.0, &self.identity.node_id());
            let farthest = to.last().map(|p| distance(&key.0, &p.node_id()));
            if to.len() < self.config.k || farthest.is_none_or(|f| me < f) {
                let now = shoal_proto::time::unix_ms();
                let mut store = lock(&self.store);
                match store.put(record.clone(), expected_seq, now) {
                    Ok(_) => report.stored += 1,
                    Err(e) => report
                        .refused
                        .push((self.identity.node_id(), e.to_string())),
                }
                self.metrics.records_held.set(store.len() as i64);
            }
        }
        let mut calls: FuturesUnordered<_> =
            to.iter()
                .filter_map(|p| Some((p.node_id(), dial_addr(p)?)))
                .map(|(id, addr)| async move {
                    (id, self.put_one(id, addr, record, expected_seq).await)
                })
                .collect();
        let mut cas_refusals = 0;
        while let Some((id, res)) = calls.next().await {
            match res {
                Ok(()) => report.stored += 1,
                Err(DhtError::Rpc { status, .. }) => {
                    if status.code() == tonic::Code::FailedPrecondition
                        && status.message().contains("compare-and-swap")
                    {
                        cas_refusals += 1;
                    }
                    report.refused.push((id, status.message().to_string()));
                }
                Err(_) => {
                    self.on_request_failed(&id);
                    report.failed += 1;
                }
            }
        }
        if report.stored == 0 {
            if expected_seq.is_some() && cas_refusals > 0 {
                return Err(DhtError::CasMismatch);
            }
            return Err(DhtError::PutFailed {
                refused: report.refused.len(),
                failed: report.failed,
            });
        }
        Ok(report)
    }

    async fn get_record(&self, key: RecordKey) -> Result<Option<Signed<MutableRecord>>, DhtError> {
        let now = shoal_proto::time::unix_ms();
        let local = if self.client {
            None
        } else {
            lock(&self.store).get(&key, now).cloned()
        };
        let outcome = self.lookup(key.0, Some(key)).await?;
        let best = match (local, outcome.record) {
            (Some(a), Some(b)) => Some(if a.seq >= b.seq { a } else { b }),
            (a, b) => a.or(b),
        };
        // Read repair: give the newest record to closest nodes that lacked it.
        if let Some(b) = &best
            && !outcome.stale_holders.is_empty()
            && let Some(me) = self.self_arc()
        {
            let (rec, to) = (b.clone(), outcome.stale_holders);
            self.spawn(async move {
                let _ = me.put_to(&rec, None, &to).await;
            });
        }
        Ok(best)
    }

    async fn crawl_step(&self) {
        let now = self.now();
        let next = lock(&self.members).next_to_crawl(now);
        let next = match next {
            Some(n) => Some(n),
            None => lock(&self.table)
                .iter()
                .next()
                .map(|e| (e.id, e.data.clone())),
        };
        let Some((id, peer)) = next else { return };
        let Some(addr) = dial_addr(&peer) else { return };
        let target: [u8; 32] = rand::rng().random();
        match self.query(addr, id, &target, None).await {
            Ok(answer) => {
                for p in &answer.closer {
                    lock(&self.members).observe(
                        p.node_id(),
                        subnet_of(p),
                        p.free_space,
                        p.clone(),
                        self.now(),
                    );
                }
            }
            Err(_) => self.on_request_failed(&id),
        }
        let mut members = lock(&self.members);
        members.expire(self.now());
        self.metrics.members.set(members.len() as i64);
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
}
