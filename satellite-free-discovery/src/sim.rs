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
//!   the measured window, and as many new nodes join. A join is the node's own
//!   ([`Node::join`], as in the driver): it pings the addresses of its bootstrap list —
//!   `bootstrap_peers` distinct random joined nodes, any of which may be a liar — and,
//!   once every ping was answered or given up, bootstraps: a lookup of its own id and a
//!   refresh of every bucket. If none answered, it tries a new list 1 s later. A node
//!   whose bootstrap nodes all lie knows only liars and is lost (probability
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
//!
//! ## Modules
//! This module declares the configuration, the report and the simulator's state; two
//! parts implement it, each importing only from here and from [`crate::core`]:
//!
//! ```text
//!   sim (SimConfig, SimReport, Sim and its events)
//!    ├── network   addresses, delivery, latency, loss, liars, starting a join
//!    └── scenario  set-up, churn, measured lookups and reads, event loop, report
//! ```

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use shoal_proto::messages::MutableRecord;
use shoal_proto::{Identity, NodeId, RecordKey, Signed};

use crate::core::key::{Subnet, distance};
use crate::core::node::{
    Answer, Contact, Dial, Failure, JoinPlan, Node, NodeConfig, OpId, Outcome, Output, ReqId,
    Request, Response,
};
use crate::core::store::RecordRefused;

mod network;
mod scenario;

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
    /// Random joined nodes a joining node pings (its bootstrap list); it bootstraps once
    /// every ping was answered or given up, and tries a new list 1 s later if none
    /// answered.
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
    /// The summary line in the issue's format (with liars, their fraction appended).
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
/// A join none of whose bootstrap nodes answered is tried again after this long.
const BOOT_RETRY_MS: u64 = 1_000;

struct SimNode {
    id: NodeId,
    subnet: Subnet,
    pos: (f32, f32),
    alive: bool,
    joined: bool,
    liar: bool,
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
    /// A copy of request `req` of node `from` reaches node `to`.
    Deliver {
        from: u32,
        to: u32,
        req: ReqId,
        request: Box<Request>,
    },
    /// The answer to request `req` of node `to`, from node `from`.
    Reply {
        from: u32,
        to: u32,
        req: ReqId,
        result: Box<Result<Response<u32>, Failure>>,
    },
    Tick(u32, u64),
    /// Node `i` joins through a new random bootstrap list.
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
