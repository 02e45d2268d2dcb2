//! Inbound requests: the answers to Ping, FindNode, GetRecord and PutRecord, the write
//! tokens bound to a requester and key, and the dial-back a new sender must answer
//! before it may enter the table.

use shoal_proto::RecordKey;

use super::{
    Contact, Insert, MAX_CLOSER_NODES, Node, Note, Output, PeerData, Purpose, RecordRefused,
    Request, Response, WriteToken, distance,
};

impl<P: PeerData> Node<P> {
    /// Answers a request from `sender` (none for a client). `requester` names the
    /// writer a write token is bound to (the driver: the peer's IP address). `unix` is
    /// the unix time in ms for record expiry.
    pub fn handle_request(
        &mut self,
        now: u64,
        unix: u64,
        sender: Option<Contact<P>>,
        requester: &[u8],
        request: Request,
    ) -> Result<Response<P>, RecordRefused> {
        if let Some(s) = sender {
            self.on_sender(s, now);
        }
        match request {
            Request::Ping => Ok(Response::Pong),
            Request::FindNode { target } => Ok(Response::Nodes {
                closer: self.closer(&target),
            }),
            Request::GetRecord { key } => Ok(Response::Record {
                record: self.store.get(&key, unix).cloned(),
                closer: self.closer(&key.0),
                token: Some(self.token(requester, &key, now / self.cfg.token_period_ms.max(1))),
            }),
            Request::PutRecord {
                record,
                expected_seq,
                token,
            } => {
                // Refusals a writer can act on come first (replays, CAS, size).
                self.store.check(&record, expected_seq, unix)?;
                let key = record.key();
                if !token.is_some_and(|t| self.token_valid(requester, &key, &t, now)) {
                    return Err(RecordRefused::WriteToken);
                }
                if !self.among_closest(&key) {
                    return Err(RecordRefused::NotAmongClosest { k: self.cfg.k });
                }
                self.store.put_from(record, expected_seq, unix, requester)?;
                Ok(Response::Stored)
            }
        }
    }

    /// Live table entries closest to `target`, as handed to others.
    pub(super) fn closer(&self, target: &[u8; 32]) -> Vec<Contact<P>> {
        self.table
            .closest(target, self.cfg.k.min(MAX_CLOSER_NODES), true)
            .into_iter()
            .map(|e| Contact {
                id: e.id,
                subnet: e.subnet,
                free_space: 0,
                data: e.data.clone(),
            })
            .collect()
    }

    /// Whether fewer than k live entries are closer to `key` than this node.
    pub fn among_closest(&self, key: &RecordKey) -> bool {
        let me = distance(&key.0, &self.local);
        self.table
            .closest(&key.0, self.cfg.k, true)
            .iter()
            .filter(|e| distance(&key.0, &e.id) < me)
            .count()
            < self.cfg.k
    }

    pub(super) fn token(&self, requester: &[u8], key: &RecordKey, epoch: u64) -> WriteToken {
        let mut h = blake3::Hasher::new_keyed(&self.secret);
        h.update(&epoch.to_be_bytes());
        h.update(&(requester.len() as u64).to_be_bytes());
        h.update(requester);
        h.update(&key.0);
        *h.finalize().as_bytes()
    }

    pub(super) fn token_valid(
        &self,
        requester: &[u8],
        key: &RecordKey,
        t: &WriteToken,
        now: u64,
    ) -> bool {
        let epoch = now / self.cfg.token_period_ms.max(1);
        [epoch, epoch.saturating_sub(1)]
            .iter()
            .any(|e| self.token(requester, key, *e) == *t)
    }

    /// A request arrived from `sender`: refresh it if we know this record, else dial
    /// its claimed address back before it may enter the table.
    pub(super) fn on_sender(&mut self, sender: Contact<P>, now: u64) {
        let id = sender.id;
        if id == self.local {
            return;
        }
        if let Some(m) = self.members.as_mut() {
            m.observe(
                id,
                sender.subnet,
                sender.free_space,
                sender.data.clone(),
                now,
            );
        }
        if let Some(e) = self.table.get_any(&id)
            && !sender.data.newer_than(&e.data)
        {
            return;
        }
        match self.table.precheck(&id, sender.subnet, now) {
            None => {}
            Some(Insert::SubnetBucketFull) => {
                return self.note(Note::PeerRefused("subnet_bucket"));
            }
            Some(Insert::SubnetTableFull) => {
                return self.note(Note::PeerRefused("subnet_table"));
            }
            Some(_) => return,
        }
        if self.dialing.contains(&id) {
            return;
        }
        if self.dialing.len() >= self.cfg.max_dialbacks.max(1) {
            return self.note(Note::PeerRefused("dialback_busy"));
        }
        self.dialing.insert(id);
        self.send(
            now,
            id,
            sender.data,
            Request::Ping,
            None,
            Purpose::DialBack,
            None,
        );
    }

    pub(super) fn note(&mut self, n: Note) {
        self.out.push_back(Output::Note(n));
    }
}
