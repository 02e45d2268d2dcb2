//! Joining: pings to bootstrap entries (bare addresses), to the fallback entries when
//! too few answered, then the bootstrap (a lookup of our own id and a refresh of every
//! bucket).

use super::{
    Answer, Dial, Failure, JoinPlan, Missed, Node, Op, OpId, OpKind, Outcome, PeerData, Pending,
};

impl<P: PeerData> Node<P> {
    /// Joins the network ([`Outcome::Bootstrapped`]): pings every entry of `plan` at
    /// once, and each node that answers may enter the table (the owner vouches for its
    /// entries). When fewer than `plan.min_answers` answered, pings the fallback entries
    /// the same way. Once every ping settled: if none answered and the table is empty,
    /// the join fails ([`Outcome::JoinFailed`]; [`Outcome::NoPeers`] when there was
    /// nobody to ping); else it is [`Node::bootstrap`].
    pub fn join(&mut self, now: u64, unix: u64, plan: JoinPlan) -> OpId {
        let op = self.new_op(
            OpKind::Join {
                fallback: plan.fallback,
                min_answers: plan.min_answers,
                answered: 0,
                entries: plan.entries.len(),
                fallback_tried: 0,
                missed: Vec::new(),
            },
            true,
            None,
        );
        self.join_pings(op, plan.entries, now, unix);
        op
    }

    /// Pings `dials` for join `op_id`; with none, moves the join on.
    fn join_pings(&mut self, op_id: OpId, dials: Vec<Dial>, now: u64, unix: u64) {
        if let Some(op) = self.ops.get_mut(&op_id) {
            op.open = dials.len();
        }
        if dials.is_empty() {
            return self.join_next(op_id, now, unix);
        }
        for d in dials {
            self.dial(now, d, op_id);
        }
    }

    /// Join ping `p` to `dial` settled with `result`.
    pub(super) fn join_ping_settled(
        &mut self,
        now: u64,
        unix: u64,
        dial: Dial,
        p: Pending<P>,
        result: Result<Answer<P>, Failure>,
    ) {
        let checked = match result {
            Ok(a) => match a.check_from(dial.id.as_ref()) {
                Ok(()) => Ok(a),
                Err(bad) => Err(Some(bad)),
            },
            Err(_) => Err(None),
        };
        let missed = match checked {
            Ok(a) => {
                // Karn: a retransmitted request gives no clean round-trip sample.
                if p.attempts == 1 {
                    self.rtt.observe(now.saturating_sub(p.sent_at));
                }
                self.observe_answer(now, a.responder, a.at_advertised, true);
                None
            }
            Err(bad) => Some(Missed { dial, bad }),
        };
        let Some(op_id) = p.op else { return };
        let Some(Op {
            kind:
                OpKind::Join {
                    answered,
                    missed: all,
                    ..
                },
            open,
            ..
        }) = self.ops.get_mut(&op_id)
        else {
            return;
        };
        match missed {
            Some(m) => all.push(m),
            None => *answered += 1,
        }
        *open = open.saturating_sub(1);
        if *open == 0 {
            self.join_next(op_id, now, unix);
        }
    }

    /// Every ping of join `op_id` settled: the fallback entries, the bootstrap, or the
    /// join failed.
    fn join_next(&mut self, op_id: OpId, now: u64, unix: u64) {
        let Some(Op {
            kind:
                OpKind::Join {
                    fallback,
                    min_answers,
                    answered,
                    entries,
                    fallback_tried,
                    missed,
                },
            ..
        }) = self.ops.get_mut(&op_id)
        else {
            return;
        };
        if *answered < *min_answers && !fallback.is_empty() {
            let dials = std::mem::take(fallback);
            *fallback_tried = dials.len();
            return self.join_pings(op_id, dials, now, unix);
        }
        if *answered == 0 && self.table.is_empty() {
            let outcome = if missed.is_empty() {
                Outcome::NoPeers
            } else {
                Outcome::JoinFailed {
                    entries: *entries,
                    fallback: *fallback_tried,
                    missed: std::mem::take(missed),
                }
            };
            return self.finish(op_id, Some(outcome), now, unix);
        }
        self.start_bootstrap(op_id, now, unix);
    }
}

#[cfg(test)]
#[path = "join_tests.rs"]
mod tests;
