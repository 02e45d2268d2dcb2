//! The public face of a running DHT: [`DhtHandle`]'s operations, getters and shutdown.

use super::*;
use crate::core::membership;
use crate::core::node::{Dial, JoinPlan};

impl DhtHandle {
    /// The Discovery gRPC service to mount on the host's tonic server.
    pub fn service(&self) -> DiscoveryServer<DiscoveryService> {
        DiscoveryServer::new(DiscoveryService::new(self.inner.clone()))
            .max_decoding_message_size(MAX_DISCOVERY_MESSAGE)
            .max_encoding_message_size(MAX_DISCOVERY_MESSAGE)
    }

    /// Joins the network (the core's join, [`crate::core::node::Node::join`]): pings the
    /// configured bootstrap entries and, when fewer than [`MIN_JOIN_ANSWERS`] of them
    /// answer, up to [`MAX_REMEMBERED_TRIES`] of the nodes verified before (persisted,
    /// newest first); then looks up our own id and refreshes every bucket. Returns the
    /// routing-table size. Fails, naming every node tried and why, only when nobody
    /// answered and the table is empty.
    pub async fn bootstrap(&self) -> Result<usize, DhtError> {
        let inner = &self.inner;
        // What the store kept must be read before the remembered peers are known.
        let mut loaded = inner.loaded.subscribe();
        if loaded.wait_for(|l| *l).await.is_err() {
            return Err(DhtError::Shutdown);
        }
        let configured = inner.config.bootstrap.clone();
        let local = inner.identity.node_id();
        let fallback: Vec<Dial> = lock(&inner.remembered)
            .iter()
            .filter_map(|p| Some((p.record.node_id(), dial_addr(&p.record)?)))
            .filter(|(id, addr)| *id != local && !configured.contains(&(*id, *addr)))
            .take(MAX_REMEMBERED_TRIES)
            .map(|(id, addr)| Dial { id: Some(id), addr })
            .collect();
        let plan = JoinPlan {
            entries: configured
                .iter()
                .map(|(id, addr)| Dial {
                    id: Some(*id),
                    addr: *addr,
                })
                .collect(),
            fallback,
            min_answers: MIN_JOIN_ANSWERS,
        };
        match inner
            .op(move |n, now, unix| n.join(now, unix, plan))
            .await?
        {
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
            Outcome::Put(Err(PutError::Failed { refused, failed })) => Err(DhtError::PutFailed {
                refused: refused.len(),
                failed,
                reasons: crate::error::refusal_reasons(&refused),
            }),
            _ => Err(DhtError::NoPeers),
        }
    }

    /// The closest nodes found per record key within
    /// [`DhtConfig::known_closest_ttl`](super::DhtConfig::known_closest_ttl), for the
    /// owner to keep and give back through
    /// [`DhtConfig::known_closest`](super::DhtConfig::known_closest) at its next start.
    pub async fn known_closest(&self) -> Vec<super::KnownClosest> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.inner.send_cmd(super::Cmd::KnownClosest(tx)).is_err() {
            return Vec::new();
        }
        let unix = shoal_proto::time::unix_ms();
        rx.await
            .unwrap_or_default()
            .into_iter()
            .map(|(key, age, peers)| super::KnownClosest {
                key,
                found_unix_ms: unix.saturating_sub(age),
                nodes: peers
                    .iter()
                    .map(|p| {
                        prost::Message::encode_to_vec(&shoal_proto::pb::NodeRecord::from(&**p))
                    })
                    .collect(),
            })
            .collect()
    }

    /// Stops republishing the record under `key`.
    pub fn forget_record(&self, key: &RecordKey) {
        self.inner.forget(*key);
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
        let view = self.inner.view();
        let Some(members) = &view.members else {
            return Vec::new();
        };
        membership::sample(
            members,
            n,
            min_free_space,
            ms(max_age),
            now,
            &mut rand::rng(),
        )
        .into_iter()
        .map(|m| self.inner.member_info(m))
        .collect()
    }

    /// Every known member with when it last answered.
    pub fn members(&self) -> Vec<MemberInfo> {
        self.inner
            .view()
            .members
            .iter()
            .flatten()
            .map(|m| self.inner.member_info(m))
            .collect()
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
        self.inner
            .view()
            .table
            .iter()
            .map(|(e, _)| e.clone())
            .collect()
    }

    /// Dial-backs and liveness checks still running.
    pub fn pending_dialbacks(&self) -> usize {
        self.inner.view().dialing
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
        // The task handed the record store's last changes to the writer, which writes
        // them and the known peers, then ends.
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
