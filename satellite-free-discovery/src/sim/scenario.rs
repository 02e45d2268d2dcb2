//! The scenario and its measurements: set-up, records and their updates, churn, the
//! measured lookups and reads, the event loop, and the report.

use super::*;

impl Sim {
    pub(super) fn done(&mut self, idx: u32, op: OpId, outcome: Outcome<u32>) {
        let Some(what) = self.ops.remove(&(idx, op)) else {
            return;
        };
        match (what, outcome) {
            // Nobody of its bootstrap list answered: another list, a little later.
            (SimOp::Join, Outcome::JoinFailed { .. }) => {
                self.at(self.now + BOOT_RETRY_MS, Ev::BootPing(idx));
            }
            (SimOp::Join, _) => self.nodes[idx as usize].joined = true,
            (SimOp::Measured { target, target_idx }, outcome) => {
                let (results, hops) = match outcome {
                    Outcome::Closest { results, hops } => (results, hops),
                    _ => (Vec::new(), 0),
                };
                let me = self.nodes[idx as usize].id;
                let mut truth: Vec<(crate::core::key::Distance, NodeId)> = self
                    .live
                    .iter()
                    .map(|i| self.nodes[*i as usize].id)
                    .filter(|id| *id != me)
                    .map(|id| (distance(&target.0, &id), id))
                    .collect();
                let k = self.cfg.k.min(truth.len());
                if k > 0 {
                    truth.select_nth_unstable(k - 1);
                    truth.truncate(k);
                }
                let found = results
                    .iter()
                    .filter(|r| {
                        let id = self.nodes[**r as usize].id;
                        truth.iter().any(|(_, t)| *t == id)
                    })
                    .count();
                self.measured += 1;
                if results.contains(&target_idx) {
                    self.successes += 1;
                }
                self.found.push(found);
                self.hops.push(hops);
            }
            (SimOp::Put { rec, seq }, Outcome::Put(Ok(_))) => {
                let r = &mut self.records[rec];
                r.done_seq = r.done_seq.max(seq);
            }
            (SimOp::Put { .. }, _) => {}
            (SimOp::Get { latest }, outcome) => {
                self.reads += 1;
                if let Outcome::Record(Some(r)) = outcome
                    && r.seq >= latest
                {
                    self.reads_latest += 1;
                }
            }
        }
    }

    pub(super) fn run(mut self) -> SimReport {
        let n = self.cfg.nodes;
        // Build the network. The first node is honest: someone honest starts it.
        let first = self.new_node(false);
        self.nodes[first as usize].joined = true;
        if self.cfg.direct_join {
            for _ in 1..n {
                self.new_node(true);
            }
            self.direct_build();
        } else {
            for i in 1..n {
                // Joins 10 ms apart; a join takes a few hundred ms.
                self.at(i as u64 * 10, Ev::Join);
            }
        }
        let setup_end = if self.cfg.direct_join {
            0
        } else {
            n as u64 * 10 + 60_000
        };
        self.drain_until(setup_end);
        let start = self.now;
        let end = start + self.cfg.window_ms;
        self.window = (start, end);
        for i in self.live.clone() {
            self.drain(i);
        }
        // Records: first put at the start, updates during the window.
        for r in 0..self.cfg.records {
            let owner = Identity::from_seed(self.rng.random());
            let publisher = self.random_live(true, true).unwrap_or(0);
            let expires = BASE_UNIX_MS + end + 2 * 24 * 3_600_000;
            let versions: Vec<_> = (1..=self.cfg.updates as u64 + 1)
                .filter_map(|seq| {
                    Signed::sign(
                        MutableRecord {
                            public_key: *owner.public_key(),
                            salt: (r as u64).to_be_bytes().to_vec(),
                            seq,
                            value: format!("record {r} version {seq}").into_bytes(),
                            expires_at_ms: expires,
                            work: 0,
                        },
                        &owner,
                    )
                    .ok()
                })
                .collect();
            let key = versions[0].key();
            self.records.push(SimRecord {
                versions,
                done_seq: 0,
                publisher,
            });
            self.record_of.insert(key, r);
            self.put(r, 0);
            for _ in 0..self.cfg.updates {
                let t = start
                    + 60_000
                    + self
                        .rng
                        .random_range(0..self.cfg.window_ms.saturating_sub(60_000).max(1));
                self.at(t, Ev::Update(r));
            }
        }
        let churn_events = (self.cfg.churn * n as f64).round() as usize;
        for _ in 0..churn_events {
            let t = start + self.rng.random_range(0..self.cfg.window_ms.max(1));
            self.at(t, Ev::Leave);
            let t = start + self.rng.random_range(0..self.cfg.window_ms.max(1));
            self.at(t, Ev::Join);
        }
        for _ in 0..self.cfg.lookups {
            let t = start + self.rng.random_range(0..self.cfg.window_ms.max(1));
            self.at(t, Ev::Measure);
            let t = start
                + 60_000
                + self
                    .rng
                    .random_range(0..self.cfg.window_ms.saturating_sub(60_000).max(1));
            self.at(t, Ev::Read);
        }
        self.drain_until(end + 60_000);
        self.report()
    }

    pub(super) fn put(&mut self, rec: usize, ver: usize) {
        let publisher = self.records[rec].publisher;
        let record = self.records[rec].versions[ver].clone();
        let seq = record.seq;
        self.started.insert(rec, seq);
        let (now, unix) = (self.now, self.unix());
        let op = self.nodes[publisher as usize]
            .node
            .put_record(now, unix, record, None);
        self.ops.insert((publisher, op), SimOp::Put { rec, seq });
        self.drain(publisher);
    }

    pub(super) fn drain_until(&mut self, until: u64) {
        while let Some(Reverse((t, s))) = self.events.peek().copied() {
            if t > until {
                break;
            }
            self.events.pop();
            self.now = t;
            let Some(ev) = self.payloads.remove(&s) else {
                continue;
            };
            self.handle(ev);
        }
        self.now = self.now.max(until);
    }

    pub(super) fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver {
                from,
                to,
                req,
                request,
            } => self.on_deliver(from, to, req, *request),
            Ev::Reply {
                from,
                to,
                req,
                result,
            } => self.on_reply(from, to, req, *result),
            Ev::Tick(i, t) => {
                let n = &mut self.nodes[i as usize];
                n.ticks.retain(|s| *s != t);
                if !n.alive {
                    return;
                }
                let unix = BASE_UNIX_MS + self.now;
                n.node.tick(self.now, unix);
                self.drain(i);
            }
            Ev::BootPing(i) => {
                if !self.nodes[i as usize].alive {
                    return;
                }
                let mut boots: Vec<u32> = Vec::new();
                for _ in 0..4 * self.cfg.bootstrap_peers.max(1) {
                    if boots.len() >= self.cfg.bootstrap_peers.max(1) {
                        break;
                    }
                    if let Some(b) = self.random_live(true, false)
                        && !boots.contains(&b)
                    {
                        boots.push(b);
                    }
                }
                self.start_join(i, &boots);
            }
            Ev::Join => {
                if self.random_live(true, false).is_none() {
                    // No joined node to bootstrap from (early in the set-up): try again.
                    self.at(self.now + 100, Ev::Join);
                    return;
                }
                let idx = self.new_node(true);
                self.handle(Ev::BootPing(idx));
            }
            Ev::Leave => {
                if let Some(i) = self.random_live(false, false) {
                    self.kill(i);
                }
            }
            Ev::Measure => {
                let (Some(from), Some(to)) =
                    (self.random_live(true, true), self.random_live(false, true))
                else {
                    return;
                };
                if from == to {
                    return self.handle(Ev::Measure);
                }
                let target = self.nodes[to as usize].id;
                let (now, unix) = (self.now, self.unix());
                let op = self.nodes[from as usize].node.closest(now, unix, target.0);
                self.ops.insert(
                    (from, op),
                    SimOp::Measured {
                        target,
                        target_idx: to,
                    },
                );
                self.drain(from);
            }
            Ev::Read => {
                let Some(from) = self.random_live(true, true) else {
                    return;
                };
                if self.records.is_empty() {
                    return;
                }
                let rec = self.rng.random_range(0..self.records.len());
                let latest = self.records[rec].done_seq;
                let key = self.records[rec].versions[0].key();
                let (now, unix) = (self.now, self.unix());
                let op = self.nodes[from as usize].node.get_record(now, unix, key);
                self.ops.insert((from, op), SimOp::Get { latest });
                self.drain(from);
            }
            Ev::Update(rec) => {
                let r = &self.records[rec];
                let started = self.started.get(&rec).copied().unwrap_or(0);
                let next = r
                    .versions
                    .iter()
                    .position(|v| v.seq > r.done_seq.max(started));
                let current = r.publisher;
                if let Some(ver) = next {
                    let publisher = if self.nodes[current as usize].alive {
                        current
                    } else {
                        match self.random_live(true, true) {
                            Some(p) => p,
                            None => return,
                        }
                    };
                    self.records[rec].publisher = publisher;
                    self.put(rec, ver);
                }
            }
        }
    }

    /// Fills every table from the global view, as a converged network would have them.
    pub(super) fn direct_build(&mut self) {
        let mut sorted: Vec<(NodeId, u32)> = self
            .live
            .iter()
            .map(|i| (self.nodes[*i as usize].id, *i))
            .collect();
        sorted.sort_unstable();
        let k = self.cfg.k;
        for pos in 0..sorted.len() {
            let (me, idx) = sorted[pos];
            for b in (0..256usize).rev() {
                let lo = crate::core::key::key_in_bucket(&me, b, [0; 32]);
                let hi = crate::core::key::key_in_bucket(&me, b, [0xff; 32]);
                let start = sorted.partition_point(|(id, _)| id.0 < lo);
                let end = sorted.partition_point(|(id, _)| id.0 <= hi);
                if start >= end {
                    if end - start == 0 && 255 - b > 64 {
                        break;
                    }
                    continue;
                }
                let mut pick: Vec<usize> = (start..end).collect();
                if pick.len() > k {
                    pick.shuffle(&mut self.rng);
                    pick.truncate(k);
                }
                for p in pick {
                    let (_, other) = sorted[p];
                    let c = self.contact(other);
                    self.nodes[idx as usize].node.on_contact(0, c, true);
                }
            }
            // Nothing is sent at time 0 for these (full buckets ping nobody that fresh).
            while self.nodes[idx as usize].node.poll_output().is_some() {}
            self.nodes[idx as usize].joined = true;
        }
    }

    pub(super) fn report(&self) -> SimReport {
        let mut hops = self.hops.clone();
        hops.sort_unstable();
        let mut found = self.found.clone();
        found.sort_unstable();
        let pct = |v: &[u32], p: f64| -> u32 {
            if v.is_empty() {
                0
            } else {
                v[((v.len() - 1) as f64 * p).round() as usize]
            }
        };
        let (mut entries, mut liar_entries) = (0, 0);
        for i in &self.live {
            let n = &self.nodes[*i as usize];
            if n.liar {
                continue;
            }
            for e in n.node.table().iter() {
                entries += 1;
                if self.nodes[e.data as usize].liar {
                    liar_entries += 1;
                }
            }
        }
        SimReport {
            nodes: self.cfg.nodes,
            churn: self.cfg.churn,
            adversarial: self.cfg.adversarial,
            lookups: self.measured,
            success: ratio(self.successes, self.measured),
            hops_median: pct(&hops, 0.5),
            hops_p99: pct(&hops, 0.99),
            hops_mean: hops.iter().map(|h| f64::from(*h)).sum::<f64>() / hops.len().max(1) as f64,
            closest_found_median: found.get(found.len() / 2).copied().unwrap_or(0),
            closest_found_mean: found.iter().sum::<usize>() as f64 / found.len().max(1) as f64,
            record_reads: self.reads,
            record_reads_latest: ratio(self.reads_latest, self.reads),
            messages: self.messages,
            requests_by_kind: self.by_kind,
            setup_requests: self.setup_requests,
            virtual_ms: self.now,
            final_live: self.live.len(),
            open_operations: self
                .live
                .iter()
                .map(|i| self.nodes[*i as usize].node.open_operations())
                .sum(),
            pending_requests: self
                .live
                .iter()
                .map(|i| self.nodes[*i as usize].node.pending_requests())
                .sum(),
            queued_events: self.payloads.len(),
            honest_table_entries: entries,
            liar_table_entries: liar_entries,
        }
    }
}
