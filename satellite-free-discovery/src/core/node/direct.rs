//! Direct record reads: a client that knows the closest nodes of a key (found by a read
//! or write of it within `known_closest_ms`, in this run or an earlier one whose
//! findings its owner kept, see [`Node::seed_closest`]) asks them all at once, one
//! round, instead of walking the table. The read stands when three quarters of them
//! answered ([`super::direct_quorum`]); a write reaches at least as many of the same
//! closest, so the two overlap while the closest of the key stay the closest. Short of
//! that it becomes the usual lookup (from the table, which a client fills from the
//! answers it gets), or [`Outcome::NoPeers`] when the table is empty (a client that has
//! not joined and that nobody answered), whose owner then joins and reads again.

use shoal_proto::{NodeId, RecordKey};

use super::{
    Closest, Node, Note, Op, OpId, OpKind, Outcome, PeerData, Purpose, Record, Request, WriteToken,
    direct_quorum, distance,
};

/// A record key, how long ago its closest were found (ms), and they, nearest first.
pub type KnownSet<P> = (RecordKey, u64, Vec<(NodeId, P)>);

/// A direct read under way (see the module doc).
#[derive(Debug)]
pub(crate) struct DirectRead<P> {
    key: RecordKey,
    sent: usize,
    best: Option<Record>,
    /// Who answered: what it holds (seq) and the write token it gave.
    answered: Vec<(NodeId, P, Option<u64>, Option<WriteToken>)>,
}

impl<P: PeerData> Node<P> {
    /// Takes the closest of `key` found by an earlier run (checked by the owner), as
    /// found `now`, without write tokens: reads of the key may go straight to them
    /// ([`NodeConfig::direct_reads`](super::NodeConfig::direct_reads)); writes still
    /// need a read first. A key already known in this run keeps what this run found.
    pub fn seed_closest(&mut self, key: RecordKey, peers: Vec<(NodeId, P)>, now: u64) {
        if self.recent.contains_key(&key) || peers.is_empty() {
            return;
        }
        let mut closest: Vec<Closest<P>> = peers
            .into_iter()
            .filter(|(id, _)| *id != self.local)
            .map(|(id, data)| (id, data, None))
            .collect();
        closest.sort_unstable_by_key(|(id, _, _)| distance(&key.0, id));
        closest.dedup_by_key(|c| c.0);
        closest.truncate(self.cfg.k);
        self.remember_closest(key, closest, now);
    }

    /// Every key whose closest were found within `max_age_ms`, with how long ago (ms)
    /// and them, nearest first: for an owner to keep across runs.
    pub fn known_closest(&self, now: u64, max_age_ms: u64) -> Vec<KnownSet<P>> {
        self.recent
            .iter()
            .filter(|(_, (at, _))| now.saturating_sub(*at) < max_age_ms)
            .map(|(key, (at, peers))| {
                let peers = peers.iter().map(|(id, d, _)| (*id, d.clone())).collect();
                (*key, now.saturating_sub(*at), peers)
            })
            .collect()
    }

    /// The closest a direct read of `key` asks: none unless this is a client with
    /// direct reads on and knows them from within `known_closest_ms`.
    fn direct_read_set(&self, key: &RecordKey, now: u64) -> Vec<(NodeId, P)> {
        if !self.cfg.client || !self.cfg.direct_reads {
            return Vec::new();
        }
        match self.recent.get(key) {
            Some((at, peers)) if now.saturating_sub(*at) < self.cfg.known_closest_ms => {
                peers.iter().map(|(id, d, _)| (*id, d.clone())).collect()
            }
            _ => Vec::new(),
        }
    }

    /// Starts get `op_id` of `key` as a direct read when the closest are known; `false`
    /// when they are not (the caller starts the lookup).
    pub(super) fn start_direct_get(&mut self, op_id: OpId, key: RecordKey, now: u64) -> bool {
        let peers = self.direct_read_set(&key, now);
        if peers.is_empty() {
            return false;
        }
        let Some(op) = self.ops.get_mut(&op_id) else {
            return false;
        };
        if let OpKind::Get { direct, .. } = &mut op.kind {
            *direct = Some(Box::new(DirectRead {
                key,
                sent: peers.len(),
                best: None,
                answered: Vec::new(),
            }));
        }
        op.open = peers.len();
        self.note(Note::DirectGet);
        for (id, data) in peers {
            self.send(
                now,
                id,
                data,
                Request::GetRecord { key },
                Some(op_id),
                Purpose::DirectGet,
                None,
            );
        }
        true
    }

    /// Node `to` answered direct read `op_id`, holding `record` (if any) and giving
    /// `token`.
    pub(super) fn direct_get_answered(
        &mut self,
        op_id: OpId,
        to: NodeId,
        data: P,
        answer: (Option<Record>, Option<WriteToken>),
        now: u64,
        unix: u64,
    ) {
        if let Some(Op {
            kind: OpKind::Get {
                direct: Some(d), ..
            },
            ..
        }) = self.ops.get_mut(&op_id)
        {
            let (record, token) = answer;
            // A record counts only for the key asked and while it is live.
            let record = record.filter(|r| r.key() == d.key && r.expires_at_ms > unix);
            let seq = record.as_ref().map(|r| r.seq);
            if let Some(r) = record
                && d.best.as_ref().is_none_or(|b| r.seq > b.seq)
            {
                d.best = Some(r);
            }
            d.answered.push((to, data, seq, token));
        }
        self.close_one(op_id, now, unix);
    }

    /// Every request of direct read `op_id` settled: the newest record when enough
    /// answered (given to those that lacked it), else the lookup.
    pub(super) fn direct_get_settled(&mut self, op_id: OpId, now: u64, unix: u64) {
        let Some(Op {
            kind: OpKind::Get { local, direct },
            ..
        }) = self.ops.get_mut(&op_id)
        else {
            return;
        };
        let Some(d) = direct.take() else { return };
        if d.answered.len() < direct_quorum(d.sent) {
            self.note(Note::DirectGetFallback);
            if self.table.is_empty() {
                return self.finish(op_id, Some(Outcome::NoPeers), now, unix);
            }
            let cfg = self.cfg.record_paths;
            return self.start_paths(op_id, d.key.0, Some(d.key), cfg, now, unix);
        }
        let best = newest(local.take(), d.best);
        let mut closest: Vec<Closest<P>> = d
            .answered
            .iter()
            .map(|(id, data, _, token)| (*id, data.clone(), *token))
            .collect();
        closest.sort_unstable_by_key(|(id, _, _)| distance(&d.key.0, id));
        self.remember_closest(d.key, closest, now);
        if let Some(b) = &best {
            self.read_repair(b, d.answered, now);
        }
        self.finish(op_id, Some(Outcome::Record(best)), now, unix);
    }

    /// Read repair: `best` to every node of `held` (with what it holds and its token)
    /// that lacked it.
    pub(super) fn read_repair(
        &mut self,
        best: &Record,
        held: impl IntoIterator<Item = (NodeId, P, Option<u64>, Option<WriteToken>)>,
        now: u64,
    ) {
        for (id, data, seq, token) in held {
            if seq.is_none_or(|s| s < best.seq) {
                self.send(
                    now,
                    id,
                    data,
                    Request::PutRecord {
                        record: best.clone(),
                        expected_seq: None,
                        token,
                    },
                    None,
                    Purpose::Repair,
                    None,
                );
            }
        }
    }
}

/// The newer of two records a read found (the one held here and the best answer).
pub(super) fn newest(a: Option<Record>, b: Option<Record>) -> Option<Record> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if a.seq >= b.seq { a } else { b }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
#[path = "direct_tests.rs"]
mod tests;
