//! The state the driver shares between its task, the Discovery service and the handle:
//! the clock, the signed local record, the record checks and their cache, the join
//! pings and the known peers.

use super::*;

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

    pub(super) fn unix_of(&self, now: u64) -> u64 {
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
    pub(super) async fn op(
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

    pub(super) fn member_info(&self, m: &crate::core::membership::Member<Peer>) -> MemberInfo {
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
    pub(super) async fn ping_all(
        &self,
        peers: &[(NodeId, SocketAddr)],
        tried: &mut Vec<String>,
    ) -> usize {
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
