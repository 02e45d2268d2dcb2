//! The lookup phase of an operation: its disjoint paths, the cache of the k closest
//! per record key, and what each kind of operation does once every path is done.

use std::collections::{HashMap, HashSet, VecDeque};

use shoal_proto::{NodeId, RecordKey};

use super::{
    Closest, Lookup, LookupConfig, Node, Note, Op, OpId, OpKind, Outcome, Paths, PeerData,
    PeerState, Purpose, Record, Request, Step, WriteToken, distance,
};

impl<P: PeerData> Node<P> {
    /// Remembers the k closest found for `key` (see [`NodeConfig::closest_cache`]),
    /// dropping expired entries, then the oldest, when the cache is full.
    pub(super) fn remember_closest(&mut self, key: RecordKey, closest: Vec<Closest<P>>, now: u64) {
        let (cap, ttl) = (self.cfg.closest_cache, self.cfg.closest_cache_ms);
        if cap == 0 || closest.is_empty() {
            return;
        }
        if self.recent.len() >= cap && !self.recent.contains_key(&key) {
            self.recent
                .retain(|_, (at, _)| now.saturating_sub(*at) < ttl);
            if self.recent.len() >= cap
                && let Some(oldest) = self
                    .recent
                    .iter()
                    .min_by_key(|(k, (at, _))| (*at, k.0))
                    .map(|(k, _)| *k)
            {
                self.recent.remove(&oldest);
            }
        }
        self.recent.insert(key, (now, closest));
    }

    /// The k closest a read or write of `key` found within `closest_cache_ms`, if any,
    /// with their write tokens.
    pub(super) fn recent_closest(&self, key: &RecordKey, now: u64) -> Vec<Closest<P>> {
        match self.recent.get(key) {
            Some((at, peers)) if now.saturating_sub(*at) < self.cfg.closest_cache_ms => {
                peers.clone()
            }
            _ => Vec::new(),
        }
    }

    /// Starts the lookup phase of `op` towards `target` over `paths` disjoint paths.
    pub(super) fn start_paths(
        &mut self,
        op_id: OpId,
        target: [u8; 32],
        record: Option<RecordKey>,
        paths: usize,
        now: u64,
        unix: u64,
    ) {
        let mut seeds: Vec<(NodeId, P)> = self
            .table
            .closest(&target, self.cfg.k, false)
            .into_iter()
            .map(|e| (e.id, e.data.clone()))
            .collect();
        // The closest a recent read or write of this key found are asked first (they
        // are nearer than the table's entries); the table's stay as fallbacks.
        if let Some(key) = record {
            let recent: Vec<(NodeId, P)> = self
                .recent_closest(&key, now)
                .into_iter()
                .map(|(id, data, _)| (id, data))
                .collect();
            if !recent.is_empty() {
                let mut ids: HashSet<NodeId> = recent.iter().map(|r| r.0).collect();
                seeds.retain(|s| ids.insert(s.0));
                seeds.extend(recent);
                seeds.sort_unstable_by_key(|(id, _)| distance(&target, id));
            }
        }
        if seeds.is_empty() {
            return self.finish(op_id, Some(Outcome::NoPeers), now, unix);
        }
        self.note(Note::LookupStarted {
            record: record.is_some(),
        });
        let d = paths.clamp(1, seeds.len());
        let mut split: Vec<Vec<(NodeId, P)>> = (0..d).map(|_| Vec::new()).collect();
        for (i, s) in seeds.into_iter().enumerate() {
            split[i % d].push(s);
        }
        let cfg = LookupConfig {
            k: self.cfg.k,
            alpha: self.cfg.alpha,
            max_candidates: self.cfg.k * 10,
            per_source: self.cfg.per_source,
        };
        let timeout = self.rtt.timeout();
        let lookups = split
            .into_iter()
            .map(|s| Lookup::new(target, Some(self.local), s, cfg, timeout))
            .collect();
        if let Some(op) = self.ops.get_mut(&op_id) {
            op.paths = Some(Paths {
                target,
                record,
                lookups,
                claimed: HashMap::new(),
                seen: HashMap::new(),
                best: None,
                held: HashMap::new(),
                finished: false,
            });
        }
        self.advance(op_id, now, unix);
    }

    /// Moves the lookup phase of `op` on: sends what its paths want sent, and when every
    /// path is done, runs the operation's next phase.
    pub(super) fn advance(&mut self, op_id: OpId, now: u64, unix: u64) {
        let mut sends: Vec<(NodeId, P, usize)> = Vec::new();
        let mut wake: Option<u64> = None;
        let mut all_done = true;
        let record;
        {
            let Some(op) = self.ops.get_mut(&op_id) else {
                return;
            };
            let Some(paths) = op.paths.as_mut() else {
                return;
            };
            if paths.finished {
                return;
            }
            record = paths.record;
            for (i, l) in paths.lookups.iter_mut().enumerate() {
                loop {
                    match l.poll(now) {
                        Step::Query { id, data } => {
                            match paths.claimed.get(&id) {
                                Some(other) if *other != i => {
                                    // Another path asked it: this path may not use it.
                                    l.on_failure(&id);
                                }
                                _ => {
                                    paths.claimed.insert(id, i);
                                    sends.push((id, data, i));
                                }
                            }
                        }
                        Step::Wait { until } => {
                            all_done = false;
                            if let Some(t) = until {
                                wake = Some(wake.map_or(t, |w: u64| w.min(t)));
                            }
                            break;
                        }
                        Step::Done => break,
                    }
                }
            }
            if all_done {
                paths.finished = true;
            }
        }
        self.set_wake(op_id, wake);
        for (id, data, i) in sends {
            let request = match record {
                Some(key) => Request::GetRecord { key },
                None => Request::FindNode {
                    target: self
                        .ops
                        .get(&op_id)
                        .and_then(|o| o.paths.as_ref())
                        .map_or([0; 32], |p| p.target),
                },
            };
            self.send(now, id, data, request, Some(op_id), Purpose::Path(i), None);
        }
        if all_done {
            self.lookup_done(op_id, now, unix);
        }
    }

    /// What every path of `op` found: the k closest that answered over every path
    /// (nearest first, with their depth), and for a write the spares.
    fn gather(&self, op: &Op<P>, paths: &Paths<P>) -> Gathered<P> {
        let target = paths.target;
        let mut merged: Vec<(NodeId, P, u32)> = Vec::new();
        let mut ids = HashSet::new();
        for l in &paths.lookups {
            for p in l.peers() {
                if p.state == PeerState::Succeeded && ids.insert(p.id) {
                    let data = paths
                        .seen
                        .get(&p.id)
                        .cloned()
                        .unwrap_or_else(|| p.data.clone());
                    merged.push((p.id, data, p.depth));
                }
            }
        }
        merged.sort_unstable_by_key(|(id, _, _)| distance(&target, id));
        // A write keeps, for puts that fail, the next nearest nodes the lookup knows of
        // that did not fail, at most k: beyond the k closest that answered (their token
        // is known), asked but answering after the lookup ended, or never asked (asked
        // for a token first).
        let spares: VecDeque<(NodeId, P)> = if matches!(op.kind, OpKind::Put { .. }) {
            let mut known: HashSet<NodeId> = merged.iter().take(self.cfg.k).map(|m| m.0).collect();
            let mut spares: Vec<(NodeId, P)> = Vec::new();
            for l in &paths.lookups {
                for p in l.peers() {
                    if p.state != PeerState::Failed && p.id != self.local && known.insert(p.id) {
                        let data = paths.seen.get(&p.id).unwrap_or(&p.data).clone();
                        spares.push((p.id, data));
                    }
                }
            }
            spares.sort_unstable_by_key(|(id, _)| distance(&target, id));
            spares.truncate(self.cfg.k);
            spares.into()
        } else {
            VecDeque::new()
        };
        merged.truncate(self.cfg.k);
        let seen_target = match &op.kind {
            OpKind::Find { id } => paths.seen.get(id).cloned().map(|d| (*id, d)),
            _ => None,
        };
        Gathered {
            target,
            hops: merged.iter().map(|m| m.2).max().unwrap_or(0),
            merged,
            spares,
            best: paths.best.clone(),
            record: paths.record,
            held: paths.held.clone(),
            seen_target,
        }
    }

    /// Every path of `op` is done: the next phase.
    pub(super) fn lookup_done(&mut self, op_id: OpId, now: u64, unix: u64) {
        let Some(op) = self.ops.get(&op_id) else {
            return;
        };
        let Some(paths) = op.paths.as_ref() else {
            return;
        };
        let g = self.gather(op, paths);
        self.table.mark_refreshed(&g.target, now);
        self.note(Note::LookupFinished {
            hops: (!g.merged.is_empty()).then_some(g.hops),
        });
        if let Some(key) = g.record {
            let closest = g
                .merged
                .iter()
                .map(|m| (m.0, m.1.clone(), g.held.get(&m.0).and_then(|h| h.1)))
                .collect();
            self.remember_closest(key, closest, now);
        }
        let Some(op) = self.ops.get_mut(&op_id) else {
            return;
        };
        let Gathered {
            target,
            merged,
            hops,
            spares,
            best,
            held,
            seen_target,
            ..
        } = g;
        match &mut op.kind {
            OpKind::Closest => {
                let results = merged.into_iter().map(|m| m.1).collect();
                self.finish(op_id, Some(Outcome::Closest { results, hops }), now, unix);
            }
            OpKind::Find { id } => {
                let id = *id;
                if let Some((_, data, _)) = merged.iter().find(|m| m.0 == id) {
                    let data = data.clone();
                    return self.finish(op_id, Some(Outcome::Found(Some(data))), now, unix);
                }
                // Not reached, but someone knows a record of it: it may have moved. Try
                // the newest record directly.
                match seen_target {
                    Some((id, data)) => {
                        self.send(
                            now,
                            id,
                            data,
                            Request::Ping,
                            Some(op_id),
                            Purpose::FindPing,
                            None,
                        );
                    }
                    None => self.finish(op_id, Some(Outcome::Found(None)), now, unix),
                }
            }
            OpKind::Bootstrap => {
                // Every refresh counts as open, and one more while they start, so that
                // one finishing at once cannot finish the bootstrap before the others
                // started.
                let due = self.table.refresh_due(now, 0);
                op.open = 1 + due.len();
                self.start_refreshes(now, unix, due, Some(op_id));
                self.close_one(op_id, now, unix);
            }
            OpKind::Refresh | OpKind::Crawl => {
                self.finish(op_id, None, now, unix);
            }
            // A join has no lookup phase until its pings settled and it became a
            // bootstrap.
            OpKind::Join { .. } => {}
            OpKind::Get { local, .. } => {
                let best = super::direct::newest(local.take(), best);
                // Read repair: the newest record to the closest that lacked it.
                if let Some(b) = &best {
                    let asked: Vec<_> = merged
                        .iter()
                        .filter_map(|(id, data, _)| {
                            let (seq, token) = held.get(id)?;
                            Some((*id, data.clone(), *seq, *token))
                        })
                        .collect();
                    self.read_repair(b, asked, now);
                }
                self.finish(op_id, Some(Outcome::Record(best)), now, unix);
            }
            OpKind::Put {
                record,
                expected_seq,
                report,
                spares: kept,
                ..
            } => {
                *kept = spares;
                // Hold a copy ourselves when we are among the closest.
                if !self.cfg.client {
                    let me = distance(&target, &self.local);
                    let farthest = merged.last().map(|m| distance(&target, &m.0));
                    if merged.len() < self.cfg.k || farthest.is_none_or(|f| me < f) {
                        match self.store.put(record.clone(), *expected_seq, unix) {
                            Ok(_) => report.stored += 1,
                            Err(e) => report.refused.push((self.local, e.to_string())),
                        }
                    }
                }
                let (record, expected_seq) = (record.clone(), *expected_seq);
                let n = merged.len();
                op.open = n;
                for (id, data, _) in merged {
                    let token = held.get(&id).and_then(|h| h.1);
                    self.send(
                        now,
                        id,
                        data,
                        Request::PutRecord {
                            record: record.clone(),
                            expected_seq,
                            token,
                        },
                        Some(op_id),
                        Purpose::Put,
                        None,
                    );
                }
                if n == 0 {
                    self.put_finished(op_id, now, unix);
                }
            }
        }
    }
}

/// What the paths of one operation found (see [`Node::lookup_done`]).
struct Gathered<P> {
    target: [u8; 32],
    /// The k closest that answered, nearest first, with their depth.
    merged: Vec<(NodeId, P, u32)>,
    hops: u32,
    /// A write's next nearest nodes (see `OpKind::Put::spares`).
    spares: VecDeque<(NodeId, P)>,
    best: Option<Record>,
    record: Option<RecordKey>,
    held: HashMap<NodeId, (Option<u64>, Option<WriteToken>)>,
    /// A `Find`'s newest record of its target met in any answer.
    seen_target: Option<(NodeId, P)>,
}
