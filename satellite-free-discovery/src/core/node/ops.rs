//! Operations: their lifecycle (wake times, open requests and children, the outcome
//! reported to the owner) and the ones the owner starts: lookups, bootstrap, record
//! reads and writes, crawl (a join is `join`'s).

use std::collections::VecDeque;

use rand::RngExt;
use shoal_proto::{NodeId, RecordKey};

use super::{
    Node, Note, Op, OpId, OpKind, Outcome, Output, PeerData, Purpose, PutError, PutReport, Record,
    Request, WriteToken, key_in_bucket,
};

impl<P: PeerData> Node<P> {
    /// Sets when operation `op_id` wants [`Node::tick`] to advance it, keeping `wakes`.
    pub(super) fn set_wake(&mut self, op_id: OpId, wake: Option<u64>) {
        let Some(op) = self.ops.get_mut(&op_id) else {
            return;
        };
        if op.wake == wake {
            return;
        }
        if let Some(w) = op.wake {
            self.wakes.remove(&(w, op_id));
        }
        if let Some(w) = wake {
            self.wakes.insert((w, op_id));
        }
        op.wake = wake;
    }

    pub(super) fn new_op(&mut self, kind: OpKind<P>, report: bool, parent: Option<OpId>) -> OpId {
        self.next_op += 1;
        let id = self.next_op;
        self.ops.insert(
            id,
            Op {
                kind,
                paths: None,
                report,
                parent,
                open: 0,
                wake: None,
            },
        );
        id
    }

    /// One request (or child) of `op` settled.
    pub(super) fn close_one(&mut self, op_id: OpId, now: u64, unix: u64) {
        let Some(op) = self.ops.get_mut(&op_id) else {
            return;
        };
        op.open = op.open.saturating_sub(1);
        if op.open > 0 {
            return;
        }
        let (put, bootstrap) = (
            matches!(op.kind, OpKind::Put { .. }),
            matches!(op.kind, OpKind::Bootstrap),
        );
        if let OpKind::Get {
            direct: Some(_), ..
        } = op.kind
        {
            self.direct_get_settled(op_id, now, unix);
        } else if put {
            self.put_finished(op_id, now, unix);
        } else if bootstrap {
            let table = self.table.len();
            self.finish(op_id, Some(Outcome::Bootstrapped { table }), now, unix);
        } else {
            self.finish(op_id, None, now, unix);
        }
    }

    pub(super) fn put_finished(&mut self, op_id: OpId, now: u64, unix: u64) {
        let Some(op) = self.ops.get(&op_id) else {
            return;
        };
        let OpKind::Put {
            record,
            report,
            cas,
            expected_seq,
            ..
        } = &op.kind
        else {
            return;
        };
        if let OpKind::Put {
            direct: sent @ 1.., ..
        } = &op.kind
        {
            let sent = *sent;
            return self.direct_put_settled(op_id, sent, now, unix);
        }
        let result = if report.stored > 0 {
            Ok(report.clone())
        } else if expected_seq.is_some() && *cas > 0 {
            Err(PutError::CompareAndSwap)
        } else {
            Err(PutError::Failed {
                refused: report.refused.clone(),
                failed: report.failed,
            })
        };
        // Written through the owner: republished until forgotten.
        let own = (op.report && result.is_ok()).then(|| record.clone());
        if let Some(r) = own {
            self.owned.insert(r.key(), r);
        }
        self.finish(op_id, Some(Outcome::Put(result)), now, unix);
    }

    pub(super) fn finish(&mut self, op_id: OpId, outcome: Option<Outcome<P>>, now: u64, unix: u64) {
        let Some(op) = self.ops.remove(&op_id) else {
            return;
        };
        if let Some(w) = op.wake {
            self.wakes.remove(&(w, op_id));
        }
        if op.report
            && let Some(o) = outcome
        {
            self.out.push_back(Output::Done {
                op: op_id,
                outcome: o,
            });
        }
        if let Some(parent) = op.parent {
            self.close_one(parent, now, unix);
        }
    }

    /// Looks up a random key in every bucket not refreshed within `interval`; returns
    /// how many lookups started.
    pub(super) fn refresh(
        &mut self,
        now: u64,
        unix: u64,
        interval: u64,
        parent: Option<OpId>,
    ) -> usize {
        let due = self.table.refresh_due(now, interval);
        let n = due.len();
        self.start_refreshes(now, unix, due, parent);
        n
    }

    /// Looks up a random key in each of the buckets `due`.
    pub(super) fn start_refreshes(
        &mut self,
        now: u64,
        unix: u64,
        due: Vec<usize>,
        parent: Option<OpId>,
    ) {
        for b in due {
            let key = key_in_bucket(&self.local, b, self.rng.random());
            let op = self.new_op(OpKind::Refresh, false, parent);
            self.start_paths(op, key, None, self.cfg.node_paths, now, unix);
        }
    }

    /// The k closest reachable nodes to `target` ([`Outcome::Closest`]).
    pub fn closest(&mut self, now: u64, unix: u64, target: [u8; 32]) -> OpId {
        let op = self.new_op(OpKind::Closest, true, None);
        self.start_paths(op, target, None, self.cfg.node_paths, now, unix);
        op
    }

    /// Finds node `id` as it answers ([`Outcome::Found`]).
    pub fn find_node(&mut self, now: u64, unix: u64, id: NodeId) -> OpId {
        let op = self.new_op(OpKind::Find { id }, true, None);
        self.start_paths(op, id.0, None, self.cfg.node_paths, now, unix);
        op
    }

    /// Looks up our own id (a client: a random one), then refreshes every bucket
    /// ([`Outcome::Bootstrapped`]): the end of a join ([`Node::join`]), which first
    /// pings the bootstrap entries.
    pub fn bootstrap(&mut self, now: u64, unix: u64) -> OpId {
        let op = self.new_op(OpKind::Bootstrap, true, None);
        self.start_bootstrap(op, now, unix);
        op
    }

    /// Operation `op_id` (a bootstrap, or a join whose pings settled) becomes the
    /// bootstrap: its lookup phase starts.
    pub(super) fn start_bootstrap(&mut self, op_id: OpId, now: u64, unix: u64) {
        let target = if self.cfg.client {
            self.rng.random()
        } else {
            self.local.0
        };
        if let Some(op) = self.ops.get_mut(&op_id) {
            op.kind = OpKind::Bootstrap;
        }
        self.start_paths(op_id, target, None, self.cfg.node_paths, now, unix);
    }

    /// Tells the nodes near us about a new local record: a lookup of our own id (they
    /// see the new sender record and dial it back). Not reported.
    pub fn announce(&mut self, now: u64, unix: u64) {
        if self.table.is_empty() {
            return;
        }
        let op = self.new_op(OpKind::Refresh, false, None);
        let target = self.local.0;
        self.start_paths(op, target, None, self.cfg.node_paths, now, unix);
    }

    /// Reads the newest record under `key` along disjoint paths ([`Outcome::Record`]).
    pub fn get_record(&mut self, now: u64, unix: u64, key: RecordKey) -> OpId {
        let local = if self.cfg.client {
            None
        } else {
            self.store.get(&key, unix).cloned()
        };
        let op = self.new_op(
            OpKind::Get {
                local,
                direct: None,
            },
            true,
            None,
        );
        if !self.start_direct_get(op, key, now) {
            self.start_paths(op, key.0, Some(key), self.cfg.record_paths, now, unix);
        }
        op
    }

    /// Writes `record` to the k closest of its key, found along disjoint paths, and
    /// republishes it until [`Node::forget_record`] ([`Outcome::Put`]).
    pub fn put_record(
        &mut self,
        now: u64,
        unix: u64,
        record: Record,
        expected_seq: Option<u64>,
    ) -> OpId {
        self.start_put(now, unix, record, expected_seq, true)
    }

    pub(super) fn start_put(
        &mut self,
        now: u64,
        unix: u64,
        record: Record,
        expected_seq: Option<u64>,
        report: bool,
    ) -> OpId {
        let key = record.key();
        // A client that found the closest of this key lately (and their tokens) puts to
        // them straight away; a node's own puts are republishes, rarely that fresh, and
        // it may hold a copy itself (which the lookup decides).
        let direct: Vec<(NodeId, P, WriteToken)> = if self.cfg.client && self.cfg.direct_puts {
            self.recent_closest(&key, now)
                .into_iter()
                .filter_map(|(id, data, token)| Some((id, data, token?)))
                .collect()
        } else {
            Vec::new()
        };
        let op = self.new_op(
            OpKind::Put {
                record: record.clone(),
                expected_seq,
                report: PutReport::default(),
                cas: 0,
                spares: VecDeque::new(),
                direct: direct.len(),
            },
            report,
            None,
        );
        if direct.is_empty() {
            self.start_paths(op, key.0, Some(key), self.cfg.record_paths, now, unix);
            return op;
        }
        self.note(Note::DirectPut);
        if let Some(o) = self.ops.get_mut(&op) {
            o.open = direct.len();
        }
        for (id, data, token) in direct {
            self.send(
                now,
                id,
                data,
                Request::PutRecord {
                    record: record.clone(),
                    expected_seq,
                    token: Some(token),
                },
                Some(op),
                Purpose::Put,
                None,
            );
        }
        op
    }

    /// Every direct put of `op_id` (`sent` of them) settled: the write stands if enough
    /// stored it ([`super::direct_quorum`]) or compare-and-swap refused it (a lookup
    /// would meet the same newer record); otherwise it starts over with the lookup,
    /// which puts to the k closest found (again, idempotently, to those that stored).
    fn direct_put_settled(&mut self, op_id: OpId, sent: usize, now: u64, unix: u64) {
        let Some(Op {
            kind:
                OpKind::Put {
                    record,
                    expected_seq,
                    report,
                    cas,
                    direct,
                    ..
                },
            ..
        }) = self.ops.get_mut(&op_id)
        else {
            return;
        };
        *direct = 0;
        let cas_refused = expected_seq.is_some() && *cas > 0;
        if report.stored >= super::direct_quorum(sent) || cas_refused {
            return self.put_finished(op_id, now, unix);
        }
        *report = PutReport::default();
        *cas = 0;
        let key = record.key();
        self.note(Note::DirectPutFallback);
        self.start_paths(op_id, key.0, Some(key), self.cfg.record_paths, now, unix);
    }

    /// Stops republishing the record under `key`.
    pub fn forget_record(&mut self, key: &RecordKey) {
        self.owned.remove(key);
    }

    /// One crawl step: asks the member contacted least recently (or a table entry) for
    /// the nodes near a random key, learning members from the answer
    /// ([`Outcome::Crawled`]).
    pub fn crawl(&mut self, now: u64, unix: u64) -> OpId {
        let op = self.new_op(OpKind::Crawl, true, None);
        let next = self.members.as_mut().and_then(|m| m.next_to_crawl(now));
        let next = next.or_else(|| self.table.iter().next().map(|e| (e.id, e.data.clone())));
        match next {
            Some((id, data)) => {
                let target = self.rng.random();
                self.send(
                    now,
                    id,
                    data,
                    Request::FindNode { target },
                    Some(op),
                    Purpose::Crawl,
                    None,
                );
            }
            None => self.finish(op, Some(Outcome::Crawled), now, unix),
        }
        op
    }
}
