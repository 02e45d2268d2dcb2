//! The simulated network: nodes, their addresses and positions, delivery with latency
//! and loss, the liars' answers, and starting a join (the node's own operation, pinging
//! the addresses of its bootstrap list).

use std::net::{Ipv6Addr, SocketAddr};

use super::*;

impl Sim {
    pub(super) fn new(cfg: SimConfig) -> Self {
        let node_cfg = NodeConfig {
            k: cfg.k,
            alpha: cfg.alpha,
            record_paths: cfg.record_paths,
            node_paths: cfg.node_paths,
            per_source: cfg.per_source,
            retransmits: cfg.retransmits,
            hard_timeout_ms: cfg.hard_timeout_ms,
            refresh_ms: cfg.refresh_ms,
            liveness_ms: cfg.liveness_ms,
            closest_cache: cfg.closest_cache,
            // A simulated node keeps no membership list (the crawler is an uplink's).
            membership: None,
            ..NodeConfig::default()
        };
        Self {
            rng: SmallRng::seed_from_u64(cfg.seed),
            cfg,
            node_cfg,
            now: 0,
            seq: 0,
            events: BinaryHeap::new(),
            payloads: HashMap::new(),
            nodes: Vec::new(),
            live: Vec::new(),
            live_pos: HashMap::new(),
            liars: Vec::new(),
            ops: HashMap::new(),
            records: Vec::new(),
            record_of: HashMap::new(),
            messages: 0,
            by_kind: [0; 4],
            setup_requests: 0,
            hops: Vec::new(),
            found: Vec::new(),
            successes: 0,
            measured: 0,
            reads: 0,
            reads_latest: 0,
            window: (0, 0),
            started: HashMap::new(),
        }
    }

    pub(super) fn at(&mut self, t: u64, ev: Ev) {
        self.seq += 1;
        self.events.push(Reverse((t, self.seq)));
        self.payloads.insert(self.seq, ev);
    }

    pub(super) fn unix(&self) -> u64 {
        BASE_UNIX_MS + self.now
    }

    pub(super) fn new_node(&mut self, may_lie: bool) -> u32 {
        let id = NodeId(self.rng.random());
        let ip: [u8; 4] = self.rng.random();
        let idx = self.nodes.len() as u32;
        let liar =
            may_lie && self.cfg.adversarial > 0.0 && self.rng.random_bool(self.cfg.adversarial);
        let node = Node::new(
            id,
            self.node_cfg.clone(),
            self.now,
            self.rng.random(),
            self.rng.random(),
        );
        self.nodes.push(SimNode {
            id,
            subnet: Subnet::of(&std::net::IpAddr::from(ip)),
            pos: (self.rng.random(), self.rng.random()),
            alive: true,
            joined: false,
            liar,
            node: Box::new(node),
            ticks: Vec::new(),
        });
        if liar {
            let pos = self.liars.partition_point(|(l, _)| *l < id);
            self.liars.insert(pos, (id, idx));
        }
        self.live_pos.insert(idx, self.live.len());
        self.live.push(idx);
        idx
    }

    pub(super) fn contact(&self, idx: u32) -> Contact<u32> {
        let n = &self.nodes[idx as usize];
        Contact {
            id: n.id,
            subnet: n.subnet,
            free_space: 0,
            data: idx,
        }
    }

    pub(super) fn kill(&mut self, idx: u32) {
        // Its operations die with it; a measured lookup or read is started again
        // elsewhere, so the run measures the configured number of them.
        let mut mine: Vec<(u32, OpId)> = self
            .ops
            .keys()
            .filter(|(n, _)| *n == idx)
            .copied()
            .collect();
        mine.sort_unstable();
        for key in mine {
            match self.ops.remove(&key) {
                Some(SimOp::Measured { .. }) => self.at(self.now, Ev::Measure),
                Some(SimOp::Get { .. }) => self.at(self.now, Ev::Read),
                _ => {}
            }
        }
        let n = &mut self.nodes[idx as usize];
        n.alive = false;
        // Free its state: a dead node's memory is not part of the network any more.
        *n.node = Node::new(n.id, self.node_cfg.clone(), 0, 0, [0; 32]);
        if n.liar {
            let id = n.id;
            self.liars.retain(|(l, _)| *l != id);
        }
        if let Some(pos) = self.live_pos.remove(&idx) {
            self.live.swap_remove(pos);
            if let Some(moved) = self.live.get(pos) {
                self.live_pos.insert(*moved, pos);
            }
        }
    }

    pub(super) fn random_live(&mut self, joined: bool, honest: bool) -> Option<u32> {
        for _ in 0..1000 {
            let i = *self
                .live
                .get(self.rng.random_range(0..self.live.len().max(1)))?;
            let n = &self.nodes[i as usize];
            if (!joined || n.joined) && (!honest || !n.liar) {
                return Some(i);
            }
        }
        None
    }

    pub(super) fn latency(&mut self, a: u32, b: u32) -> u64 {
        let (pa, pb) = (self.nodes[a as usize].pos, self.nodes[b as usize].pos);
        let d = f64::from(((pa.0 - pb.0).powi(2) + (pa.1 - pb.1).powi(2)).sqrt());
        let j = 1.0 + self.rng.random::<f64>() * self.cfg.jitter;
        ((self.cfg.latency_base_ms + self.cfg.latency_spread_ms * d) * j).round() as u64
    }

    pub(super) fn lost(&mut self) -> bool {
        self.cfg.loss > 0.0 && self.rng.random_bool(self.cfg.loss)
    }

    /// Carries out what node `idx` queued, and schedules its next tick.
    pub(super) fn drain(&mut self, idx: u32) {
        while let Some(o) = self.nodes[idx as usize].node.poll_output() {
            match o {
                Output::Send {
                    req, data, request, ..
                } => self.transmit(idx, data, req, request),
                Output::Dial { req, dial, request } => {
                    // Nobody is at an address the simulator never gave out: no answer.
                    if let Some(to) = idx_at(dial.addr) {
                        self.transmit(idx, to, req, request);
                    }
                }
                Output::Done { op, outcome } => self.done(idx, op, outcome),
                Output::Note(_) | Output::Store(_) => {}
            }
        }
        let n = &mut self.nodes[idx as usize];
        if !n.alive {
            return;
        }
        // A tick already queued at or before `t` runs first and schedules the next one:
        // only an earlier deadline needs another event.
        if let Some(t) = n.node.next_timer() {
            let t = t.max(self.now);
            if n.ticks.iter().all(|s| *s > t) {
                n.ticks.push(t);
                self.at(t, Ev::Tick(idx, t));
            }
        }
    }

    pub(super) fn transmit(&mut self, from: u32, to: u32, req: ReqId, request: Request) {
        self.messages += 1;
        self.by_kind[match request {
            Request::FindNode { .. } => 0,
            Request::GetRecord { .. } => 1,
            Request::PutRecord { .. } => 2,
            Request::Ping => 3,
        }] += 1;
        if self.window.1 == 0 {
            self.setup_requests += 1;
        }
        if self.lost() {
            return;
        }
        let lat = self.latency(from, to);
        self.at(
            self.now + lat,
            Ev::Deliver {
                from,
                to,
                req,
                request: Box::new(request),
            },
        );
    }

    pub(super) fn on_deliver(&mut self, from: u32, to: u32, req: ReqId, request: Request) {
        if !self.nodes[to as usize].alive {
            return;
        }
        let result = if self.nodes[to as usize].liar {
            self.lie(to, request)
        } else {
            let (now, unix) = (self.now, self.unix());
            let sender = self.contact(from);
            let r = self.nodes[to as usize].node.handle_request(
                now,
                unix,
                Some(sender),
                &from.to_be_bytes(),
                request,
            );
            self.drain(to);
            r.map_err(|e| Failure::Refused {
                compare_and_swap: matches!(e, RecordRefused::CasMismatch { .. }),
                reason: e.to_string(),
            })
        };
        self.messages += 1;
        if self.lost() {
            return;
        }
        let lat = self.latency(to, from);
        self.at(
            self.now + lat,
            Ev::Reply {
                from: to,
                to: from,
                req,
                result: Box::new(result),
            },
        );
    }

    /// A liar's answer (see the module documentation).
    pub(super) fn lie(&mut self, liar: u32, request: Request) -> Result<Response<u32>, Failure> {
        match request {
            Request::Ping => Ok(Response::Pong),
            Request::FindNode { target } => Ok(Response::Nodes {
                closer: self.liars_near(&target, liar),
            }),
            Request::GetRecord { key } => Ok(Response::Record {
                record: self
                    .record_of
                    .get(&key)
                    .map(|r| self.records[*r].versions[0].clone()),
                closer: self.liars_near(&key.0, liar),
                token: Some([0; 32]),
            }),
            Request::PutRecord { .. } => Err(Failure::Refused {
                compare_and_swap: false,
                reason: "refused".into(),
            }),
        }
    }

    /// Up to k live liars near `target` (by XOR distance among those sharing the
    /// longest prefixes with it), other than `me`.
    pub(super) fn liars_near(&self, target: &[u8; 32], me: u32) -> Vec<Contact<u32>> {
        let pos = self.liars.partition_point(|(l, _)| l.0 < *target);
        let lo = pos.saturating_sub(2 * self.cfg.k);
        let hi = (pos + 2 * self.cfg.k).min(self.liars.len());
        let mut near: Vec<(NodeId, u32)> = self.liars[lo..hi]
            .iter()
            .filter(|(_, i)| *i != me)
            .copied()
            .collect();
        near.sort_unstable_by_key(|(id, _)| distance(target, id));
        near.truncate(self.cfg.k);
        near.into_iter().map(|(_, i)| self.contact(i)).collect()
    }

    pub(super) fn on_reply(
        &mut self,
        from: u32,
        to: u32,
        req: ReqId,
        result: Result<Response<u32>, Failure>,
    ) {
        if !self.nodes[to as usize].alive {
            return;
        }
        let (now, unix) = (self.now, self.unix());
        let responder = self.contact(from);
        let answer = result.map(|response| Answer {
            responder,
            at_advertised: true,
            response,
        });
        self.nodes[to as usize]
            .node
            .on_response(now, unix, req, answer);
        self.drain(to);
    }

    /// Node `idx` joins through the addresses of `boots` (the node's own operation).
    pub(super) fn start_join(&mut self, idx: u32, boots: &[u32]) {
        let (now, unix) = (self.now, self.unix());
        let entries = boots
            .iter()
            .map(|b| Dial {
                id: Some(self.nodes[*b as usize].id),
                addr: addr_of(*b),
            })
            .collect();
        let plan = JoinPlan {
            entries,
            ..JoinPlan::default()
        };
        let op = self.nodes[idx as usize].node.join(now, unix, plan);
        self.ops.insert((idx, op), SimOp::Join);
        self.drain(idx);
    }
}

/// The address of node `idx` in the simulated network: its index, as an IPv6 address.
pub(super) fn addr_of(idx: u32) -> SocketAddr {
    SocketAddr::from((Ipv6Addr::from(u128::from(idx)), 1))
}

/// The node at `addr`, if the simulator gave it out.
pub(super) fn idx_at(addr: SocketAddr) -> Option<u32> {
    match addr {
        SocketAddr::V6(a) if a.port() == 1 => u32::try_from(u128::from(*a.ip())).ok(),
        _ => None,
    }
}
