//! The state the driver shares between its task, the Discovery service and the handle:
//! the clock, the signed local record, the record checks and their cache, and the known
//! peers.

use super::*;

impl Inner {
    /// Which addresses this network dials and accepts in records.
    pub(crate) fn scope(&self) -> AddressScope {
        self.config.address_scope()
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

    /// Has the task start an operation and waits for its outcome.
    pub(super) async fn op(
        &self,
        start: impl FnOnce(&mut Node<Peer>, u64, u64) -> OpId + Send + 'static,
    ) -> Result<Outcome<Peer>, DhtError> {
        let (reply, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::Op {
                start: Box::new(start),
                reply,
            })
            .map_err(|_| DhtError::Shutdown)?;
        match rx.await.map_err(|_| DhtError::Shutdown)?? {
            Outcome::NoPeers => Err(DhtError::NoPeers),
            o => Ok(o),
        }
    }

    /// Has the task stop republishing the record under `key`.
    pub(super) fn forget(&self, key: RecordKey) {
        // After a shutdown nothing is republished anyway.
        let _ = self.cmds.send(Cmd::Forget(key));
    }

    /// Hands `cmd` to the task; an error after shutdown.
    pub(super) fn send_cmd(&self, cmd: Cmd) -> Result<(), DhtError> {
        self.cmds.send(cmd).map_err(|_| DhtError::Shutdown)
    }

    /// What the getters read, as the task last published it.
    pub(crate) fn view(&self) -> Arc<super::snapshot::Snapshot> {
        self.view.borrow().clone()
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
            let view = self.view();
            // Table entries were admitted only after answering at their address.
            for (e, seen) in view.table.iter().filter(|(e, _)| e.failures == 0) {
                offer(&e.record, self.unix_of(*seen));
            }
            for m in view.members.iter().flatten() {
                if let Some(seen) = m.last_seen {
                    offer(&m.data, self.unix_of(seen));
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
