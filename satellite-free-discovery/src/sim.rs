//! Discrete-event simulator: many [`Node`]s — the very protocol state machine the tokio
//! driver runs — over an in-memory network with virtual time. Used by the `dht-sim`
//! binary. The simulator holds the network, churn, liars and the measurements; every
//! protocol rule (answers, dial-backs, liveness, retransmission, disjoint paths, write
//! tokens, read repair, republish, replication) is the node's.
//!
//! ## Model
//! - **Latency.** Every node gets a random point in a unit square; the one-way delay of a
//!   message is `base + spread × euclidean distance`, times a uniform jitter in
//!   `[1, 1 + jitter]`. Defaults 5 ms + 100 ms × d, jitter 10 %: one-way delays of
//!   5–160 ms, round trips of 10–320 ms. Processing takes no time.
//! - **Loss.** Each copy of a request and each response is dropped independently with
//!   probability `loss`. The node sends an unanswered request again at its soft
//!   deadlines and gives up at its hard timeout ([`NodeConfig`]).
//! - **Churn.** `churn × nodes` nodes leave without notice at uniformly random times of
//!   the measured window, and as many new nodes join. A join is the driver's: ping the
//!   nodes of its bootstrap list — `bootstrap_peers` distinct random joined nodes, any
//!   of which may be a liar — then, once they answered (or 1 s later if some did), the
//!   node's bootstrap: a lookup of its own id and a refresh of every bucket. A node whose
//!   bootstrap nodes all lie knows only liars and is lost (probability
//!   `adversarial^bootstrap_peers`); no protocol rule can find it or let it find others.
//! - **Liars** (`adversarial`): that fraction of the nodes (random ids, as valid proof of
//!   work gives, and random subnets) answer pings, but answer FindNode and GetRecord only
//!   with the liars closest to the target, serve the oldest version of a record they
//!   were asked for, and refuse every PutRecord (they never store). Measured lookups
//!   and reads start at honest nodes, look for honest nodes and read honest records.
//! - **Hop.** A node learned from our own table is at depth 0; one learned from the
//!   answer of a node at depth d is at depth d + 1. A lookup's hops are the largest depth
//!   among the k nodes it returns: the number of round trips on the longest causal chain
//!   needed to learn the result, i.e. its rounds.
//! - **Measured lookups** start at uniformly random times of the window, from a random
//!   live node that has finished joining, for the id of a random other live node.
//!   Success: the target answered and is among the results. Closest found: how many of
//!   the true 20 closest live nodes (other than the initiator) at the end of the lookup
//!   are among the results. Record reads: as many as lookups, for a random record; a read
//!   is "latest" if it returns at least the seq of the newest put that had finished (all
//!   its store requests answered or failed) when the read started.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use shoal_proto::messages::MutableRecord;
use shoal_proto::{Identity, NodeId, RecordKey, Signed};

use crate::core::key::{Subnet, distance};
use crate::core::node::{
    Answer, Contact, Failure, Node, NodeConfig, OpId, Outcome, Output, ReqId, Request, Response,
};
use crate::core::store::RecordRefused;

/// Simulation parameters.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub nodes: usize,
    pub lookups: usize,
    /// Fraction of nodes replaced over the window.
    pub churn: f64,
    pub seed: u64,
    pub k: usize,
    pub alpha: usize,
    pub latency_base_ms: f64,
    pub latency_spread_ms: f64,
    pub jitter: f64,
    pub loss: f64,
    /// Measured window (ms of virtual time).
    pub window_ms: u64,
    /// Bucket refresh interval (ms); 0 disables refresh.
    pub refresh_ms: u64,
    /// Liveness pings of entries silent this long (ms); 0 disables them.
    pub liveness_ms: u64,
    pub records: usize,
    /// Updates of each record during the window.
    pub updates: usize,
    /// Build the initial tables directly from the global view instead of joining every
    /// node through the protocol (for very large networks).
    pub direct_join: bool,
    /// Fraction of nodes that lie (see the module documentation).
    pub adversarial: f64,
    /// Disjoint paths of record reads and writes, and of node lookups.
    pub record_paths: usize,
    pub node_paths: usize,
    /// Nodes first named by one answer that count among a lookup's closest.
    pub per_source: usize,
    /// Times an unanswered request is sent again.
    pub retransmits: u32,
    /// Random joined nodes a joining node pings (its bootstrap list); it joins once they
    /// answered, or 1 s later if some did.
    pub bootstrap_peers: usize,
    /// A request unanswered this long has failed (ms).
    pub hard_timeout_ms: u64,
    /// Record keys whose closest nodes a node remembers from its last read or write
    /// (see `NodeConfig::closest_cache`; 0: none).
    pub closest_cache: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        let node = NodeConfig::default();
        Self {
            nodes: 1000,
            lookups: 500,
            churn: 0.0,
            seed: 1,
            k: 20,
            alpha: 3,
            latency_base_ms: 5.0,
            latency_spread_ms: 100.0,
            jitter: 0.1,
            loss: 0.0,
            window_ms: 3_600_000,
            refresh_ms: 3_600_000,
            liveness_ms: 3_600_000,
            records: 100,
            updates: 3,
            direct_join: false,
            adversarial: 0.0,
            record_paths: node.record_paths,
            node_paths: node.node_paths,
            per_source: node.per_source,
            retransmits: node.retransmits,
            bootstrap_peers: 4,
            hard_timeout_ms: 5_000,
            closest_cache: node.closest_cache,
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct SimReport {
    pub nodes: usize,
    pub churn: f64,
    pub adversarial: f64,
    pub lookups: usize,
    pub success: f64,
    pub hops_median: u32,
    pub hops_p99: u32,
    pub hops_mean: f64,
    pub closest_found_median: usize,
    pub closest_found_mean: f64,
    pub record_reads: usize,
    pub record_reads_latest: f64,
    pub messages: u64,
    /// Requests sent, by kind: find, get, put, ping; and requests sent during set-up.
    pub requests_by_kind: [u64; 4],
    pub setup_requests: u64,
    pub virtual_ms: u64,
    pub final_live: usize,
    /// At the end: operations under way and requests awaiting an answer over all live
    /// nodes, and events queued.
    pub open_operations: usize,
    pub pending_requests: usize,
    pub queued_events: usize,
    /// Routing-table entries of live honest nodes, and how many of them are liars.
    pub honest_table_entries: usize,
    pub liar_table_entries: usize,
}

impl SimReport {
    /// The summary line in the format (with liars, their fraction appended).
    pub fn line(&self) -> String {
        let mut line = format!(
            "nodes={} churn={:.2} lookups={} success={:.4} hops_median={} hops_p99={} closest_found_median={} record_reads_latest={:.4}",
            self.nodes,
            self.churn,
            self.lookups,
            self.success,
            self.hops_median,
            self.hops_p99,
            self.closest_found_median,
            self.record_reads_latest
        );
        if self.adversarial > 0.0 {
            line.push_str(&format!(" adversarial={:.2}", self.adversarial));
        }
        line
    }
}

const BASE_UNIX_MS: u64 = 1_700_000_000_000;
/// A lost bootstrap ping is tried again after this long.
const BOOT_RETRY_MS: u64 = 1_000;

struct SimNode {
    id: NodeId,
    subnet: Subnet,
    pos: (f32, f32),
    alive: bool,
    joined: bool,
    liar: bool,
    /// Its join is under way (its bootstrap pings were answered).
    booted: bool,
    /// Bootstrap pings answered so far.
    boot_answers: usize,
    node: Box<Node<u32>>,
    /// Times of the ticks of this node in the event queue (a handful).
    ticks: Vec<u64>,
}

/// What the simulator waits for from an operation.
enum SimOp {
    Join,
    Measured { target: NodeId, target_idx: u32 },
    Put { rec: usize, seq: u64 },
    Get { latest: u64 },
}

enum Ev {
    /// A copy of request `req` of node `from` reaches node `to` (`boot`: a bootstrap
    /// ping the joining node's driver sends to a bare address).
    Deliver {
        from: u32,
        to: u32,
        req: ReqId,
        request: Box<Request>,
        boot: bool,
    },
    /// The answer to request `req` of node `to`, from node `from`.
    Reply {
        from: u32,
        to: u32,
        req: ReqId,
        result: Box<Result<Response<u32>, Failure>>,
        boot: bool,
    },
    Tick(u32, u64),
    BootPing(u32),
    Join,
    Leave,
    Measure,
    Read,
    Update(usize),
}

struct SimRecord {
    versions: Vec<Signed<MutableRecord>>,
    done_seq: u64,
    publisher: u32,
}

struct Sim {
    cfg: SimConfig,
    node_cfg: NodeConfig,
    rng: SmallRng,
    now: u64,
    seq: u64,
    events: BinaryHeap<Reverse<(u64, u64)>>,
    payloads: HashMap<u64, Ev>,
    nodes: Vec<SimNode>,
    live: Vec<u32>,
    live_pos: HashMap<u32, usize>,
    /// Live liars, by id (for their answers).
    liars: Vec<(NodeId, u32)>,
    ops: HashMap<(u32, OpId), SimOp>,
    records: Vec<SimRecord>,
    record_of: HashMap<RecordKey, usize>,
    messages: u64,
    by_kind: [u64; 4],
    setup_requests: u64,
    // Results.
    hops: Vec<u32>,
    found: Vec<usize>,
    successes: usize,
    measured: usize,
    reads: usize,
    reads_latest: usize,
    window: (u64, u64),
    /// Highest seq whose put has started, per record.
    started: HashMap<usize, u64>,
}

impl Sim {
    fn new(cfg: SimConfig) -> Self {
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

    fn at(&mut self, t: u64, ev: Ev) {
        self.seq += 1;
        self.events.push(Reverse((t, self.seq)));
        self.payloads.insert(self.seq, ev);
    }

    fn unix(&self) -> u64 {
        BASE_UNIX_MS + self.now
    }

    fn new_node(&mut self, may_lie: bool) -> u32 {
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
            booted: false,
            boot_answers: 0,
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

    fn contact(&self, idx: u32) -> Contact<u32> {
        let n = &self.nodes[idx as usize];
        Contact {
            id: n.id,
            subnet: n.subnet,
            free_space: 0,
            data: idx,
        }
    }

    fn kill(&mut self, idx: u32) {
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

    fn random_live(&mut self, joined: bool, honest: bool) -> Option<u32> {
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

    fn latency(&mut self, a: u32, b: u32) -> u64 {
        let (pa, pb) = (self.nodes[a as usize].pos, self.nodes[b as usize].pos);
        let d = f64::from(((pa.0 - pb.0).powi(2) + (pa.1 - pb.1).powi(2)).sqrt());
        let j = 1.0 + self.rng.random::<f64>() * self.cfg.jitter;
        ((self.cfg.latency_base_ms + self.cfg.latency_spread_ms * d) * j).round() as u64
    }

    fn lost(&mut self) -> bool {
        self.cfg.loss > 0.0 && self.rng.random_bool(self.cfg.loss)
    }

    /// Carries out what node `idx` queued, and schedules its next tick.
    fn drain(&mut self, idx: u32) {
        while let Some(o) = self.nodes[idx as usize].node.poll_output() {
            match o {
                Output::Send {
                    req, data, request, ..
                } => self.transmit(idx, data, req, request, false),
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

    fn transmit(&mut self, from: u32, to: u32, req: ReqId, request: Request, boot: bool) {
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
                boot,
            },
        );
    }

    fn on_deliver(&mut self, from: u32, to: u32, req: ReqId, request: Request, boot: bool) {
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
                boot,
            },
        );
    }

    /// A liar's answer (see the module documentation).
    fn lie(&mut self, liar: u32, request: Request) -> Result<Response<u32>, Failure> {
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
    fn liars_near(&self, target: &[u8; 32], me: u32) -> Vec<Contact<u32>> {
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

    fn on_reply(
        &mut self,
        from: u32,
        to: u32,
        req: ReqId,
        result: Result<Response<u32>, Failure>,
        boot: bool,
    ) {
        if !self.nodes[to as usize].alive {
            return;
        }
        let (now, unix) = (self.now, self.unix());
        let responder = self.contact(from);
        if boot {
            if self.nodes[to as usize].booted || result.is_err() {
                return;
            }
            // A bootstrap ping was answered: the driver tells the node, and joins once
            // every bootstrap node answered (or at the next retry, if some did).
            let n = &mut self.nodes[to as usize];
            n.boot_answers += 1;
            n.node.on_contact(now, responder, true);
            if n.boot_answers >= self.cfg.bootstrap_peers {
                self.start_join(to);
            }
            return;
        }
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

    /// The driver's join, once bootstrap nodes answered: the node's bootstrap.
    fn start_join(&mut self, idx: u32) {
        let (now, unix) = (self.now, self.unix());
        let n = &mut self.nodes[idx as usize];
        n.booted = true;
        let op = n.node.bootstrap(now, unix);
        self.ops.insert((idx, op), SimOp::Join);
        self.drain(idx);
    }

    fn done(&mut self, idx: u32, op: OpId, outcome: Outcome<u32>) {
        let Some(what) = self.ops.remove(&(idx, op)) else {
            return;
        };
        match (what, outcome) {
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

    fn run(mut self) -> SimReport {
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

    fn put(&mut self, rec: usize, ver: usize) {
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

    fn drain_until(&mut self, until: u64) {
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

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver {
                from,
                to,
                req,
                request,
                boot,
            } => self.on_deliver(from, to, req, *request, boot),
            Ev::Reply {
                from,
                to,
                req,
                result,
                boot,
            } => self.on_reply(from, to, req, *result, boot),
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
                let n = &self.nodes[i as usize];
                if !n.alive || n.booted {
                    return;
                }
                if n.boot_answers > 0 {
                    // Some bootstrap nodes answered, the others did not in time.
                    return self.start_join(i);
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
                for boot in boots {
                    self.transmit(i, boot, 0, Request::Ping, true);
                }
                self.at(self.now + BOOT_RETRY_MS, Ev::BootPing(i));
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
    fn direct_build(&mut self) {
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

    fn report(&self) -> SimReport {
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

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Runs one simulation.
pub fn run(cfg: SimConfig) -> SimReport {
    Sim::new(cfg).run()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(direct_join: bool, churn: f64) -> SimReport {
        run(SimConfig {
            nodes: 300,
            lookups: 100,
            churn,
            seed: 3,
            window_ms: 5 * 60_000,
            records: 10,
            updates: 2,
            direct_join,
            ..SimConfig::default()
        })
    }

    #[test]
    fn static_network_lookups_succeed() {
        for direct in [false, true] {
            let r = small(direct, 0.0);
            assert_eq!(r.lookups, 100);
            assert!(r.success >= 0.99, "{}", r.line());
            assert!(r.closest_found_median >= 19, "{}", r.line());
            assert!(r.hops_median <= 3, "{}", r.line());
            assert!(r.record_reads_latest >= 0.95, "{}", r.line());
        }
    }

    #[test]
    fn churn_replaces_nodes_and_lookups_still_succeed() {
        let r = small(false, 0.3);
        assert_eq!(r.final_live, 300);
        assert!(r.success >= 0.95, "{}", r.line());
        assert!(
            r.line()
                .starts_with("nodes=300 churn=0.30 lookups=100 success=")
        );
    }

    #[test]
    fn same_seed_same_result() {
        assert_eq!(small(true, 0.1).line(), small(true, 0.1).line());
    }
}
