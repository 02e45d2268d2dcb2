//! What an answer does: admission of the node that answered (table, membership), and
//! the request it settles, successful or failed, moving its operation on.

use shoal_proto::NodeId;

use super::{
    Answer, Contact, Dest, Failure, Insert, Node, Note, Op, OpId, OpKind, Outcome, PeerData,
    Purpose, ReqId, Request, Response,
};

impl<P: PeerData> Node<P> {
    /// A node answered us outside a request of ours (the simulator fills tables this way
    /// when it builds a converged network): as an answer to a join ping, it may enter
    /// the table.
    pub fn on_contact(&mut self, now: u64, contact: Contact<P>, at_advertised: bool) {
        self.observe_answer(now, contact, at_advertised, true);
    }

    /// A node answered at `c`'s address. It refreshes its entry if it has one; only with
    /// `admit` (it contacted us and answered our dial-back, or the driver vouches for
    /// it) may it enter the table as a newcomer.
    // LATER(dht-core): a liar that sends a request to every node that asks it (so is
    // dialled back) still enters tables with room; the simulator's liars do not, so
    // `dht-sim --adversarial` does not measure that. Bounded sources in lookups hold
    // either way; preferring long-lived entries when a bucket fills would bound it.
    pub(super) fn observe_answer(
        &mut self,
        now: u64,
        c: Contact<P>,
        at_advertised: bool,
        admit: bool,
    ) {
        if c.id == self.local {
            return;
        }
        if !at_advertised {
            // It answered, but its record names another address: that one is not
            // verified, so it neither enters the table nor counts as live in the
            // membership on this answer (an uplink would place pieces at an address
            // nobody has seen answer); it is only learned of, for the crawl to check.
            if let Some(m) = self.members.as_mut() {
                m.observe(c.id, c.subnet, c.free_space, c.data, now);
            }
            return;
        }
        if let Some(m) = self.members.as_mut() {
            m.on_answer(c.id, c.subnet, c.free_space, c.data.clone(), now);
        }
        let data = match self.table.get(&c.id) {
            Some(e) if e.data.newer_than(&c.data) => e.data.clone(),
            Some(_) => c.data,
            None if !admit => return,
            None => c.data,
        };
        match self.table.observe(c.id, c.subnet, data, now) {
            Insert::SubnetBucketFull => self.note(Note::PeerRefused("subnet_bucket")),
            Insert::SubnetTableFull => self.note(Note::PeerRefused("subnet_table")),
            Insert::Pending { check: Some(check) } => {
                if self.dialing.len() < self.cfg.max_dialbacks.max(1)
                    && let Some(data) = self.table.get(&check).map(|e| e.data.clone())
                    && self.dialing.insert(check)
                {
                    self.send(
                        now,
                        check,
                        data,
                        Request::Ping,
                        None,
                        Purpose::Liveness,
                        None,
                    );
                }
            }
            Insert::Pending { check: None } | Insert::Added | Insert::Updated | Insert::Local => {}
        }
    }

    pub(super) fn on_failed(&mut self, id: &NodeId) {
        self.note(Note::RequestFailed);
        self.table.on_failure(id);
        if let Some(m) = self.members.as_mut() {
            m.on_failure(id);
        }
    }

    /// The outcome of request `req`: an answer (checked by the caller: well formed,
    /// signed, from the node asked) or a failure. Unknown or already settled requests
    /// are ignored (a retransmitted request may be answered twice).
    pub fn on_response(
        &mut self,
        now: u64,
        unix: u64,
        req: ReqId,
        result: Result<Answer<P>, Failure>,
    ) {
        let Some(p) = self.pending.remove(&req) else {
            return;
        };
        self.timers.remove(&(p.due(self.cfg.retransmits), req));
        let (to, data) = match p.dest {
            Dest::Node { id, data } => (id, data),
            Dest::Addr(dial) => {
                return self.join_ping_settled(now, unix, dial, p, result);
            }
        };
        if matches!(p.purpose, Purpose::DialBack | Purpose::Liveness) {
            self.dialing.remove(&to);
        }
        let answer = match result {
            Ok(a) if a.check(&to).is_ok() => a,
            Ok(_) => {
                return self.request_failed(now, unix, to, p.purpose, p.op, Failure::Unreachable);
            }
            Err(f) => return self.request_failed(now, unix, to, p.purpose, p.op, f),
        };
        // Karn: a retransmitted request gives no clean round-trip sample.
        if p.attempts == 1 {
            self.rtt.observe(now.saturating_sub(p.sent_at));
        }
        let responder = answer.responder.clone();
        // Admission: only a node that contacted us first (dialled back) enters the
        // table; an answer to our own request refreshes a known entry but admits no
        // newcomer, so nodes that name only each other cannot fill tables by being asked.
        // A client is contacted by nobody: it learns its table from answers, as before
        // (else its lookups would have only its bootstrap nodes to start from).
        let admit = self.cfg.client || matches!(p.purpose, Purpose::DialBack | Purpose::Liveness);
        self.observe_answer(now, answer.responder, answer.at_advertised, admit);
        let (closer, record, token) = match answer.response {
            Response::Nodes { closer } => (closer, None, None),
            Response::Record {
                record,
                closer,
                token,
            } => (closer, record, token),
            Response::Pong | Response::Stored => (Vec::new(), None, None),
        };
        let closer: Vec<Contact<P>> = closer.into_iter().filter(|c| c.id != self.local).collect();
        if let Some(m) = self.members.as_mut() {
            for c in &closer {
                m.observe(c.id, c.subnet, c.free_space, c.data.clone(), now);
            }
        }
        match p.purpose {
            Purpose::Path(i) => {
                let Some(op_id) = p.op else { return };
                let Some(op) = self.ops.get_mut(&op_id) else {
                    return;
                };
                let Some(paths) = op.paths.as_mut() else {
                    return;
                };
                // A record counts only for the key asked and while it is live.
                let record = record.filter(|r| {
                    paths.record.is_some_and(|k| r.key() == k) && r.expires_at_ms > unix
                });
                if paths.record.is_some() {
                    paths
                        .held
                        .insert(to, (record.as_ref().map(|r| r.seq), token));
                }
                if let Some(r) = record
                    && paths.best.as_ref().is_none_or(|b| r.seq > b.seq)
                {
                    paths.best = Some(r);
                }
                for c in &closer {
                    match paths.seen.get(&c.id) {
                        Some(old) if !c.data.newer_than(old) => {}
                        _ => {
                            paths.seen.insert(c.id, c.data.clone());
                        }
                    }
                }
                paths.seen.insert(to, responder.data);
                if let Some(l) = paths.lookups.get_mut(i) {
                    l.on_success(&to, closer.into_iter().map(|c| (c.id, c.data)));
                }
                self.advance(op_id, now, unix);
            }
            Purpose::Put => {
                let Some(op_id) = p.op else { return };
                if let Some(Op {
                    kind: OpKind::Put { report, .. },
                    ..
                }) = self.ops.get_mut(&op_id)
                {
                    report.stored += 1;
                }
                self.close_one(op_id, now, unix);
            }
            Purpose::DirectGet => {
                if let Some(op_id) = p.op {
                    self.direct_get_answered(op_id, to, data, (record, token), now, unix);
                }
            }
            Purpose::PutToken => {
                // The replacement's token: now the record.
                let Some(op_id) = p.op else { return };
                let put = match self.ops.get(&op_id) {
                    Some(Op {
                        kind:
                            OpKind::Put {
                                record,
                                expected_seq,
                                ..
                            },
                        ..
                    }) => Request::PutRecord {
                        record: record.clone(),
                        expected_seq: *expected_seq,
                        token,
                    },
                    _ => return,
                };
                self.send(now, to, data, put, Some(op_id), Purpose::Put, None);
            }
            Purpose::FindPing => {
                if let Some(op_id) = p.op {
                    self.finish(op_id, Some(Outcome::Found(Some(responder.data))), now, unix);
                }
            }
            Purpose::Crawl => {
                if let Some(m) = self.members.as_mut() {
                    m.expire(now);
                }
                if let Some(op_id) = p.op {
                    self.finish(op_id, Some(Outcome::Crawled), now, unix);
                }
            }
            Purpose::ReplicateGet => {
                // It holds an older record or none: give it ours, with its token.
                let held = record.filter(|r| r.expires_at_ms > unix).map(|r| r.seq);
                if let Some(offer) = p.offer
                    && offer.expires_at_ms > unix
                    && held.is_none_or(|s| s < offer.seq)
                {
                    self.send(
                        now,
                        to,
                        data,
                        Request::PutRecord {
                            record: offer,
                            expected_seq: None,
                            token,
                        },
                        None,
                        Purpose::Repair,
                        None,
                    );
                }
            }
            Purpose::DialBack | Purpose::Liveness | Purpose::Repair | Purpose::Join => {}
        }
    }

    /// Request `purpose` of operation `op` to node `to` failed with `f`.
    pub(super) fn request_failed(
        &mut self,
        now: u64,
        unix: u64,
        to: NodeId,
        purpose: Purpose,
        op: Option<OpId>,
        f: Failure,
    ) {
        match (&f, purpose) {
            (Failure::Refused { .. }, Purpose::Put | Purpose::PutToken | Purpose::Repair) => {}
            _ => self.on_failed(&to),
        }
        match purpose {
            Purpose::Path(i) => {
                if let Some(op_id) = op {
                    if let Some(l) = self
                        .ops
                        .get_mut(&op_id)
                        .and_then(|o| o.paths.as_mut())
                        .and_then(|ps| ps.lookups.get_mut(i))
                    {
                        l.on_failure(&to);
                    }
                    self.advance(op_id, now, unix);
                }
            }
            Purpose::Put | Purpose::PutToken => {
                if let Some(op_id) = op {
                    let mut replace = None;
                    if let Some(Op {
                        kind:
                            OpKind::Put {
                                report,
                                cas,
                                spares,
                                record,
                                expected_seq,
                                ..
                            },
                        paths,
                        ..
                    }) = self.ops.get_mut(&op_id)
                    {
                        // A node that did not answer, or refused for another reason than
                        // compare-and-swap (full, no token, not among its closest), is
                        // replaced by the next nearest (see `OpKind::Put::spares`).
                        let retry = match f {
                            Failure::Refused {
                                compare_and_swap,
                                reason,
                            } => {
                                if compare_and_swap {
                                    *cas += 1;
                                }
                                report.refused.push((to, reason));
                                !compare_and_swap
                            }
                            Failure::Unreachable => {
                                report.failed += 1;
                                true
                            }
                        };
                        if retry && let Some((id, data)) = spares.pop_front() {
                            let token = paths
                                .as_ref()
                                .and_then(|ps| ps.held.get(&id))
                                .and_then(|h| h.1);
                            replace = Some(match token {
                                Some(token) => (
                                    id,
                                    data,
                                    Request::PutRecord {
                                        record: record.clone(),
                                        expected_seq: *expected_seq,
                                        token: Some(token),
                                    },
                                    Purpose::Put,
                                ),
                                None => (
                                    id,
                                    data,
                                    Request::GetRecord { key: record.key() },
                                    Purpose::PutToken,
                                ),
                            });
                        }
                    }
                    match replace {
                        // The replacement's request takes this one's place in `open`.
                        Some((id, data, request, purpose)) => {
                            self.send(now, id, data, request, Some(op_id), purpose, None);
                        }
                        None => self.close_one(op_id, now, unix),
                    }
                }
            }
            Purpose::DialBack => {
                self.note(Note::DialbackFailed);
                self.note(Note::PeerRefused("unreachable"));
            }
            Purpose::DirectGet => {
                if let Some(op_id) = op {
                    self.close_one(op_id, now, unix);
                }
            }
            Purpose::FindPing => {
                if let Some(op_id) = op {
                    self.finish(op_id, Some(Outcome::Found(None)), now, unix);
                }
            }
            Purpose::Crawl => {
                if let Some(op_id) = op {
                    self.finish(op_id, Some(Outcome::Crawled), now, unix);
                }
            }
            // Join pings go to addresses: `join_ping_settled` takes them.
            Purpose::Liveness | Purpose::ReplicateGet | Purpose::Repair | Purpose::Join => {}
        }
    }
}
