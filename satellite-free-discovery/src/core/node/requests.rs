//! Requests in flight: sending (each with its soft and hard deadline), retransmission
//! at the soft deadline, failure at the hard one, and the node's periodic timers
//! (refresh, liveness, republish, crawl, replication).

use shoal_proto::NodeId;

use super::{
    Dest, Dial, Failure, Node, OpId, PeerData, Pending, Purpose, Record, ReqId, Request, due_ids,
};

impl<P: PeerData> Node<P> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn send(
        &mut self,
        now: u64,
        to: NodeId,
        data: P,
        request: Request,
        op: Option<OpId>,
        purpose: Purpose,
        offer: Option<Record>,
    ) -> ReqId {
        let hard = now.saturating_add(self.cfg.hard_timeout_ms);
        self.send_to(
            now,
            Dest::Node { id: to, data },
            request,
            op,
            purpose,
            offer,
            hard,
        )
    }

    /// Pings whoever is at `dial.addr`, for join `op`. It is given up at
    /// `max_timeout_ms` (the longest a round trip may take), not `hard_timeout_ms`: a
    /// bootstrap entry slower than that is no way in.
    pub(super) fn dial(&mut self, now: u64, dial: Dial, op: OpId) -> ReqId {
        let hard = now.saturating_add(self.cfg.max_timeout_ms.min(self.cfg.hard_timeout_ms));
        self.send_to(
            now,
            Dest::Addr(dial),
            Request::Ping,
            Some(op),
            Purpose::Join,
            None,
            hard,
        )
    }

    /// Queues `request` to `dest`, with its soft deadline from the round-trip estimate
    /// and its hard one at `hard`.
    #[allow(clippy::too_many_arguments)]
    fn send_to(
        &mut self,
        now: u64,
        dest: Dest<P>,
        request: Request,
        op: Option<OpId>,
        purpose: Purpose,
        offer: Option<Record>,
        hard: u64,
    ) -> ReqId {
        self.next_req += 1;
        let req = self.next_req;
        self.out.push_back(dest.output(req, request.clone()));
        let p = Pending {
            dest,
            request,
            op,
            purpose,
            sent_at: now,
            soft: now.saturating_add(self.rtt.timeout()),
            hard,
            attempts: 1,
            offer,
        };
        self.timers.insert((p.due(self.cfg.retransmits), req));
        self.pending.insert(req, p);
        req
    }

    /// Runs what is due at `now`: retransmissions, request failures, lookups waiting on
    /// a deadline, refresh, liveness pings, republish and replication.
    pub fn tick(&mut self, now: u64, unix: u64) {
        let mut failed = Vec::new();
        let rto = self.rtt.timeout();
        let retransmits = self.cfg.retransmits;
        // The requests due (see `Pending::due`), taken in the order they were sent.
        for id in due_ids(&self.timers, now) {
            let Some(p) = self.pending.get_mut(&id) else {
                continue;
            };
            if p.hard <= now {
                failed.push(id);
            } else if p.soft <= now && p.attempts <= retransmits {
                self.timers.remove(&(p.due(retransmits), id));
                p.attempts += 1;
                p.soft = now.saturating_add(rto.saturating_mul(u64::from(p.attempts)));
                self.timers.insert((p.due(retransmits), id));
                self.out.push_back(p.dest.output(id, p.request.clone()));
            }
        }
        for id in failed {
            self.on_response(now, unix, id, Err(Failure::Unreachable));
        }
        for id in due_ids(&self.wakes, now) {
            self.set_wake(id, None);
            self.advance(id, now, unix);
        }
        // Give back the room a burst of requests (a join) took.
        if self.pending.capacity() > 2 * self.pending.len() + 8 {
            self.pending.shrink_to(self.pending.len());
        }
        if self.ops.capacity() > 2 * self.ops.len() + 8 {
            self.ops.shrink_to(self.ops.len());
        }
        if self.out.capacity() > 2 * self.out.len() + 8 {
            self.out.shrink_to(self.out.len());
        }
        if now >= self.next_refresh {
            self.next_refresh = now + self.cfg.refresh_ms;
            self.refresh(now, unix, self.cfg.refresh_ms, None);
        }
        if now >= self.next_liveness {
            self.next_liveness = now + self.cfg.liveness_ms;
            let stale = self.table.stale(now, self.cfg.liveness_ms);
            for id in stale.into_iter().take(2 * self.cfg.k) {
                if self.dialing.len() >= self.cfg.max_dialbacks.max(1) {
                    break;
                }
                if let Some(data) = self.table.get(&id).map(|e| e.data.clone())
                    && self.dialing.insert(id)
                {
                    self.send(now, id, data, Request::Ping, None, Purpose::Liveness, None);
                }
            }
            self.store.expire(unix);
        }
        if now >= self.next_republish {
            self.next_republish = now + self.cfg.republish_ms;
            self.owned.retain(|_, r| r.expires_at_ms > unix);
            let mut owned: Vec<Record> = self.owned.values().cloned().collect();
            owned.sort_unstable_by_key(|r| r.key().0);
            for r in owned {
                self.start_put(now, unix, r, None, false);
            }
        }
        if now >= self.next_crawl {
            self.next_crawl = now + self.cfg.crawl_ms;
            let op = self.crawl(now, unix);
            if let Some(o) = self.ops.get_mut(&op) {
                o.report = false;
            }
        }
        if now >= self.next_replicate {
            self.next_replicate = now + self.cfg.replicate_ms;
            if !self.cfg.client {
                self.replicate(now, unix);
            }
        }
    }

    /// Offers each held record (bounded) to the k closest this node knows: they answer
    /// GetRecord with their seq and a token, and the stale ones get the record.
    pub(super) fn replicate(&mut self, now: u64, unix: u64) {
        let mut held: Vec<Record> = self
            .store
            .iter()
            .filter(|r| r.expires_at_ms > unix)
            .take(self.cfg.max_replicate)
            .cloned()
            .collect();
        held.sort_unstable_by_key(|r| r.key().0);
        for r in held {
            let key = r.key();
            let to: Vec<(NodeId, P)> = self
                .table
                .closest(&key.0, self.cfg.k, true)
                .into_iter()
                .map(|e| (e.id, e.data.clone()))
                .collect();
            for (id, data) in to {
                self.send(
                    now,
                    id,
                    data,
                    Request::GetRecord { key },
                    None,
                    Purpose::ReplicateGet,
                    Some(r.clone()),
                );
            }
        }
    }
}
