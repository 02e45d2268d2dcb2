//! The DHT's protocol as one sans-IO state machine: every rule above the routing table,
//! lookups and record store lives here, once.
//!
//! A [`Node`] takes inputs — a request received ([`Node::handle_request`]), the outcome
//! of a request it asked to send ([`Node::on_response`]), a timer firing
//! ([`Node::tick`]), or a call from its owner (join, lookups, record reads and writes,
//! crawl) — each with the caller's `now` in milliseconds. It answers
//! requests directly and queues [`Output`]s: requests to send, finished operations and
//! notes for metrics, which the caller drains with [`Node::poll_output`].
//! [`Node::next_timer`] says when it wants [`Node::tick`] next. The tokio driver and the
//! `dht-sim` simulator both drive this very type, in the manner of rust-libp2p's
//! Kademlia behaviour; neither holds a protocol rule of its own.
//!
//! The rules held here:
//! - **Answering.** FindNode and GetRecord answer with the live table entries closest to
//!   the target; GetRecord adds the held record and a write token.
//! - **Admission.** A node enters the table only after it contacted us and answered our
//!   dial-back at its advertised address (a bounded number at once), or when it answers
//!   a join's ping (the owner vouches for its bootstrap entries). Answering our own lookups refreshes an entry but admits no
//!   newcomer: nodes that name only each other (liars) would otherwise enter every table
//!   that asks them (a client, which nobody contacts, still learns from answers). A full
//!   bucket pings its least recently seen entry (see [`RoutingTable`]).
//! - **Liveness.** Entries silent for `liveness_ms` are pinged; buckets not looked up
//!   for `refresh_ms` are refreshed with a lookup of a random key in them.
//! - **Requests.** Each request gets a soft deadline from the round-trip estimator; an
//!   unanswered request is sent again at it (up to `retransmits` times) and fails at
//!   `hard_timeout_ms`. Only a failure counts against a table entry.
//! - **Disjoint paths (S/Kademlia).** Record reads and writes run `record_paths`
//!   lookups (node lookups `node_paths`) that never query the same node, so a path led
//!   astray by nodes that lie does not take the others with it.
//! - **Bounded sources.** In a lookup, at most `per_source` of the nodes first named by
//!   one answer count among the closest it must ask ([`Lookup`]), so the branches other
//!   answers opened are followed to the end whatever one answer (or a group of nodes
//!   that name only each other) claims.
//! - **Records (BEP 44 style).** A read returns the highest valid `seq` among every
//!   answer of every path and gives it to the closest holders that lacked it (read
//!   repair). A write first reads the key (which yields each node's write token), then
//!   puts to the `k` closest found. A client's write of a key read or written within
//!   `closest_cache_ms` skips the read: it puts straight to the closest found then, with
//!   their tokens, and falls back to the read-then-put when fewer than three quarters of
//!   them stored it ([`direct_quorum`]). A node stores a record only with a valid write token
//!   for the writer and key, and only if it is among the `k` closest it knows to the key;
//!   compare-and-swap and the store's bounds are checked by [`RecordStore`]. A client's
//!   read of a key whose closest it knows (found within `known_closest_ms`, in this run
//!   or, through [`Node::seed_closest`], an earlier one) asks them all at once, one
//!   round and no lookup, and stands when three quarters of them answered; else it is
//!   the lookup, or [`Outcome::NoPeers`] for a client that has not joined.
//! - **Joining.** A join pings its bootstrap entries (bare addresses, see [`Dial`]) all
//!   at once; each answer admits the node that gave it (the owner vouches for the
//!   entries). When fewer than `min_answers` answered, it pings the fallback entries
//!   (nodes remembered from before). Once every ping settled, it is the bootstrap:
//!   a lookup of our own id, then a refresh of every bucket ([`Node::join`]).
//! - **Upkeep.** Records put through this node are republished every `republish_ms`;
//!   held records are offered to the current closest every `replicate_ms` (they read the
//!   key first, for tokens, and only stale holders get the record).
//!
//! The state machine's parts, one job each (`impl Node` blocks over the types declared
//! here; imports point from each part to this module only, never between parts):
//!
//! ```text
//!                 node (types, Node, new, getters, next_timer)
//!   ┌───────────┬────────────┬───────┴─────┬──────────────┬───────────┐
//!   serve     answers      requests       paths          ops         join
//!   inbound   admission,   send, retrans- lookup phase,  lifecycle,  pings to
//!   requests, settling a   mit, timers    per-kind next  public      bootstrap
//!   tokens    request                     phase          operations  addresses
//! ```
//!
//! (The parts call each other's methods on `Node`; only the declarations are shared.)

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use shoal_proto::limits::MAX_CLOSER_NODES;
use shoal_proto::messages::MutableRecord;
use shoal_proto::{NodeId, RecordKey, Signed};

use super::key::{Subnet, distance, key_in_bucket};
use super::lookup::{Lookup, LookupConfig, PeerData, PeerState, RttEstimator, Step};
use super::membership::{Membership, MembershipConfig};
use super::store::{RecordRefused, RecordStore, Restored, StoreChange, StoreConfig};
use super::table::{Insert, RoutingTable, TableConfig};

mod answers;
mod direct;
mod join;
mod ops;
mod paths;
mod requests;
mod serve;

/// A signed mutable record.
pub type Record = Signed<MutableRecord>;

/// Proof, handed out with a GetRecord answer, that the reader asked this node recently;
/// required on PutRecord.
pub type WriteToken = [u8; 32];

/// One of the closest nodes to a record key, as a lookup found it: id, data, write token.
type Closest<P> = (NodeId, P, Option<WriteToken>);

/// Id of a request this node sent.
pub type ReqId = u64;

/// Id of an operation (lookup, read, write, bootstrap, crawl).
pub type OpId = u64;

/// A node as the core knows it: id, subnet and free space from its (checked) record,
/// and whatever the caller keeps with it (the driver: the signed record; the
/// simulator: an index).
#[derive(Debug, Clone)]
pub struct Contact<P> {
    pub id: NodeId,
    pub subnet: Subnet,
    pub free_space: u64,
    pub data: P,
}

/// A node to reach at an address before any record of it is known (a bootstrap entry):
/// `id`, when known, is the node that must answer there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dial {
    pub id: Option<NodeId>,
    pub addr: SocketAddr,
}

/// What a join pings (see [`Node::join`]).
#[derive(Debug, Clone, Default)]
pub struct JoinPlan {
    /// Pinged first, all at once (the configured bootstrap entries).
    pub entries: Vec<Dial>,
    /// Pinged next, all at once, only when fewer than `min_answers` of `entries`
    /// answered (nodes remembered from before).
    pub fallback: Vec<Dial>,
    pub min_answers: usize,
}

/// A join ping that brought no answer that counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missed {
    pub dial: Dial,
    /// The answer broke a rule every answer passes; `None`: no answer (the driver knows
    /// why).
    pub bad: Option<BadAnswer>,
}

/// Protocol parameters. The defaults are the production values.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Kademlia's k: bucket size, results per lookup, replicas per record. Default 20.
    pub k: usize,
    /// Requests in flight per lookup path. Default 3.
    pub alpha: usize,
    /// A client (uplink) answers no requests, stores nothing and never enters tables.
    pub client: bool,
    /// Disjoint paths of record reads and writes. Default 3.
    pub record_paths: usize,
    /// Disjoint paths of node lookups. Default 1.
    pub node_paths: usize,
    /// Most nodes first named by one answer that count among a lookup's closest (0: no
    /// bound). Default 10.
    pub per_source: usize,
    /// Request timeout before any round trip was measured, and the bounds of the
    /// adaptive one (ms). Defaults 2 s, 250 ms, 5 s.
    pub initial_timeout_ms: u64,
    pub min_timeout_ms: u64,
    pub max_timeout_ms: u64,
    /// A request unanswered this long has failed (ms). Default 10 s.
    pub hard_timeout_ms: u64,
    /// Times an unanswered request is sent again, at its soft deadlines. Default 2.
    pub retransmits: u32,
    /// Bucket refresh interval (ms; 0: never). Default 15 min.
    pub refresh_ms: u64,
    /// Entries silent this long are pinged (ms; 0: never). Default 5 min.
    pub liveness_ms: u64,
    /// Records put through this node are put again this often (ms; 0: never). Default
    /// 30 min.
    pub republish_ms: u64,
    /// Held records are offered to the current closest this often (ms; 0: never).
    /// Default 20 min.
    pub replicate_ms: u64,
    /// Records offered per replication round at most. Default 1000.
    pub max_replicate: usize,
    /// One crawl step of the membership list this often (ms; 0: never). Default never
    /// (uplinks crawl).
    pub crawl_ms: u64,
    /// Dial-backs and liveness pings in flight at most; more are dropped. Default 16.
    pub max_dialbacks: usize,
    /// A write token is valid for one to two of these periods (ms). Default 10 min.
    pub token_period_ms: u64,
    pub table: TableConfig,
    pub store: StoreConfig,
    /// The membership list (none: not kept, as in the simulator).
    pub membership: Option<MembershipConfig>,
    /// Report every change of the record store as an [`Output::Store`], for a host that
    /// keeps the records it holds on disk. Default false.
    pub persist: bool,
    /// Record keys whose k closest nodes (found by a recent record read or write) are
    /// remembered, and for how long (ms): the next read or write of that key asks them
    /// first, so it reaches the holders in one round instead of walking the table
    /// again. Defaults 256 keys, 2 min; 0 keys: no cache.
    pub closest_cache: usize,
    pub closest_cache_ms: u64,
    /// A client's record write goes straight to the closest cached for the key (with
    /// the write tokens they gave), skipping the lookup, while the cache holds them; it
    /// falls back to the lookup when fewer than three quarters of them store it.
    /// Default true.
    pub direct_puts: bool,
    /// A client's record read asks the closest known for the key (found within
    /// `known_closest_ms`, tokens or not) in one round before any lookup. Defaults true,
    /// 30 min.
    pub direct_reads: bool,
    pub known_closest_ms: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            k: 20,
            alpha: 3,
            client: false,
            record_paths: 3,
            node_paths: 1,
            per_source: 10,
            initial_timeout_ms: 2_000,
            min_timeout_ms: 250,
            max_timeout_ms: 5_000,
            hard_timeout_ms: 10_000,
            retransmits: 2,
            refresh_ms: 15 * 60_000,
            liveness_ms: 5 * 60_000,
            republish_ms: 30 * 60_000,
            replicate_ms: 20 * 60_000,
            max_replicate: 1000,
            crawl_ms: 0,
            max_dialbacks: 16,
            token_period_ms: 10 * 60_000,
            table: TableConfig::default(),
            store: StoreConfig::default(),
            membership: Some(MembershipConfig::default()),
            persist: false,
            closest_cache: 256,
            closest_cache_ms: 2 * 60_000,
            direct_puts: true,
            direct_reads: true,
            known_closest_ms: 30 * 60_000,
        }
    }
}

/// A request on the wire.
// A message is moved once, from the queue to the wire: boxing its record buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Request {
    Ping,
    FindNode {
        target: [u8; 32],
    },
    GetRecord {
        key: RecordKey,
    },
    PutRecord {
        record: Record,
        expected_seq: Option<u64>,
        token: Option<WriteToken>,
    },
}

/// An answer on the wire (a refused PutRecord is a [`Failure::Refused`]).
// A message is moved once, from the queue to the wire: boxing its record buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Response<P> {
    Pong,
    Nodes {
        closer: Vec<Contact<P>>,
    },
    Record {
        record: Option<Record>,
        closer: Vec<Contact<P>>,
        token: Option<WriteToken>,
    },
    Stored,
}

/// A checked answer: who answered, whether at the address its record advertises (only
/// then may it enter the table), and what.
#[derive(Debug, Clone)]
pub struct Answer<P> {
    pub responder: Contact<P>,
    pub at_advertised: bool,
    pub response: Response<P>,
}

/// Why an answer does not count: the request then failed ([`Failure::Unreachable`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadAnswer {
    #[error("answered as {answered} instead of {asked}")]
    WrongResponder { asked: NodeId, answered: NodeId },
    #[error("{count} closer nodes, over the limit of {MAX_CLOSER_NODES}")]
    TooManyCloser { count: usize },
}

impl<P> Answer<P> {
    /// The rules every answer passes before anything in it counts, for requests to a
    /// node and join pings alike: it comes from the node asked, and it names at most
    /// [`MAX_CLOSER_NODES`] closer nodes. An answer over that bound is refused whole
    /// rather than cut down: a node that breaks the protocol's bound is not trusted to
    /// have put its honest nodes first, and keeping part of its answer would let it pick
    /// which of its nodes get in.
    pub fn check(&self, asked: &NodeId) -> Result<(), BadAnswer> {
        self.check_from(Some(asked))
    }

    /// [`Answer::check`] for a request whose node may be unknown (a join ping to a bare
    /// address): then any responder may answer.
    pub fn check_from(&self, asked: Option<&NodeId>) -> Result<(), BadAnswer> {
        if let Some(asked) = asked
            && self.responder.id != *asked
        {
            return Err(BadAnswer::WrongResponder {
                asked: *asked,
                answered: self.responder.id,
            });
        }
        let count = match &self.response {
            Response::Nodes { closer } | Response::Record { closer, .. } => closer.len(),
            Response::Pong | Response::Stored => 0,
        };
        if count > MAX_CLOSER_NODES {
            return Err(BadAnswer::TooManyCloser { count });
        }
        Ok(())
    }
}

/// Why a request brought no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No (valid) answer in time: counts against the node.
    Unreachable,
    /// The node answered with a refusal (a PutRecord the store rules refused).
    Refused {
        compare_and_swap: bool,
        reason: String,
    },
}

/// What a write achieved.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PutReport {
    /// Nodes that now hold the record.
    pub stored: usize,
    /// Nodes that refused it, with their reason.
    pub refused: Vec<(NodeId, String)>,
    /// Nodes that did not answer.
    pub failed: usize,
}

/// Why a write failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutError {
    /// Nobody to write to: bootstrap first.
    NoPeers,
    /// Nobody stored it and at least one node held another seq than expected.
    CompareAndSwap,
    /// Nobody stored it.
    /// Nobody stored it: who refused it and why, and how many did not answer.
    Failed {
        refused: Vec<(NodeId, String)>,
        failed: usize,
    },
}

/// The result of an operation.
// A message is moved once, from the queue to the wire: boxing its record buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Outcome<P> {
    /// The table was empty: nobody to ask.
    NoPeers,
    /// The k closest reachable nodes, nearest first, and the lookup's rounds.
    Closest {
        results: Vec<P>,
        hops: u32,
    },
    /// The node looked for, as it answered, if it was reached.
    Found(Option<P>),
    /// The newest valid record found.
    Record(Option<Record>),
    Put(Result<PutReport, PutError>),
    /// Joined: the table's size.
    Bootstrapped {
        table: usize,
    },
    /// No join ping was answered and the table is empty: `entries` and `fallback`
    /// entries were pinged, and these brought nothing.
    JoinFailed {
        entries: usize,
        fallback: usize,
        missed: Vec<Missed>,
    },
    /// One crawl step finished.
    Crawled,
}

/// Events for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// A node was not admitted: `subnet_bucket`, `subnet_table`, `dialback_busy` or
    /// `unreachable`.
    PeerRefused(&'static str),
    DialbackFailed,
    RequestFailed,
    LookupStarted {
        record: bool,
    },
    /// A lookup ended; `hops` is `None` if it reached nobody.
    LookupFinished {
        hops: Option<u32>,
    },
    /// A record write went straight to the closest cached for its key.
    DirectPut,
    /// ... and too few of them stored it: it fell back to a lookup.
    DirectPutFallback,
    /// A record read asked the closest known for its key, one round.
    DirectGet,
    /// ... and too few of them answered: a lookup (or no peers, not joined).
    DirectGetFallback,
}

/// What the node asks its driver to do.
#[derive(Debug, Clone)]
pub enum Output<P> {
    /// Send `request` to node `to` (again, if `req` was sent before: any answer counts).
    Send {
        req: ReqId,
        to: NodeId,
        data: P,
        request: Request,
    },
    /// Send `request` to whoever answers at `dial.addr` (a join ping: no record of
    /// that node is known), again if `req` was sent before.
    Dial {
        req: ReqId,
        dial: Dial,
        request: Request,
    },
    /// Operation `op` finished.
    Done {
        op: OpId,
        outcome: Outcome<P>,
    },
    Note(Note),
    /// The record store changed (only with [`NodeConfig::persist`]): write it to disk.
    Store(StoreChange),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// A lookup request of path `n` of the operation.
    Path(usize),
    Put,
    /// A write's replacement node that did not answer its lookup: asked for its token.
    PutToken,
    DialBack,
    Liveness,
    /// The last try of `find_node`: the newest record's address, directly.
    FindPing,
    Crawl,
    /// A holder asks one of the closest what it holds (for its token and seq).
    ReplicateGet,
    /// A record given to a holder that lacked it.
    Repair,
    /// A join's ping to a bootstrap entry.
    Join,
    /// A read sent straight to one of the closest known for the key.
    DirectGet,
}

/// Where a request goes.
#[derive(Debug, Clone)]
enum Dest<P> {
    /// A node this one holds a record of.
    Node { id: NodeId, data: P },
    /// A bare address (only a join's pings).
    Addr(Dial),
}

impl<P: Clone> Dest<P> {
    /// The output that sends `request` as request `req` here.
    fn output(&self, req: ReqId, request: Request) -> Output<P> {
        match self {
            Dest::Node { id, data } => Output::Send {
                req,
                to: *id,
                data: data.clone(),
                request,
            },
            Dest::Addr(dial) => Output::Dial {
                req,
                dial: *dial,
                request,
            },
        }
    }
}

#[derive(Debug)]
struct Pending<P> {
    dest: Dest<P>,
    request: Request,
    op: Option<OpId>,
    purpose: Purpose,
    sent_at: u64,
    soft: u64,
    hard: u64,
    attempts: u32,
    /// For replication: the record offered.
    offer: Option<Record>,
}

impl<P> Pending<P> {
    /// When [`Node::tick`] must next look at this request: its soft deadline while it
    /// may still be sent again, its hard deadline in any case.
    fn due(&self, retransmits: u32) -> u64 {
        if self.attempts <= retransmits {
            self.soft.min(self.hard)
        } else {
            self.hard
        }
    }
}

/// Disjoint lookup paths of one operation.
#[derive(Debug)]
struct Paths<P> {
    target: [u8; 32],
    record: Option<RecordKey>,
    lookups: Vec<Lookup<P>>,
    /// Which path asked each node: a node serves one path only.
    claimed: HashMap<NodeId, usize>,
    /// Newest data per node id met in any answer.
    seen: HashMap<NodeId, P>,
    best: Option<Record>,
    /// Per node that answered a record lookup: the seq it holds and its write token.
    held: HashMap<NodeId, (Option<u64>, Option<WriteToken>)>,
    finished: bool,
}

#[derive(Debug)]
enum OpKind<P> {
    Closest,
    Find {
        id: NodeId,
    },
    Bootstrap,
    Refresh,
    Get {
        local: Option<Record>,
        /// Reads sent straight to the closest known for the key (see
        /// [`Node::get_record`]); `None` once the lookup phase has begun.
        direct: Option<Box<direct::DirectRead<P>>>,
    },
    Put {
        record: Record,
        expected_seq: Option<u64>,
        report: PutReport,
        cas: usize,
        /// Nodes that answered the lookup beyond the k closest, nearest first: a put
        /// that fails on one of the k goes to the next of these instead.
        spares: VecDeque<(NodeId, P)>,
        /// Puts sent straight to the closest cached for the key, before any lookup
        /// (0: none, or the lookup phase has begun); see [`Node::put_record`].
        direct: usize,
    },
    Crawl,
    /// Pinging bootstrap entries (then it becomes a `Bootstrap`).
    Join {
        /// Pinged when too few entries answered; emptied once pinged.
        fallback: Vec<Dial>,
        min_answers: usize,
        answered: usize,
        entries: usize,
        /// Fallback entries pinged.
        fallback_tried: usize,
        missed: Vec<Missed>,
    },
}

#[derive(Debug)]
struct Op<P> {
    kind: OpKind<P>,
    paths: Option<Paths<P>>,
    /// Reported with [`Output::Done`] (operations started by the owner).
    report: bool,
    parent: Option<OpId>,
    /// Requests or child operations still open after the lookup phase.
    open: usize,
    wake: Option<u64>,
}

/// One DHT participant's protocol state. See the module documentation.
#[derive(Debug)]
pub struct Node<P> {
    local: NodeId,
    cfg: NodeConfig,
    table: RoutingTable<P>,
    store: RecordStore,
    members: Option<Membership<P>>,
    rtt: RttEstimator,
    rng: SmallRng,
    secret: [u8; 32],
    pending: HashMap<ReqId, Pending<P>>,
    /// `(due, req)` of every pending request (see [`Pending::due`]): the next deadline
    /// without a walk over all requests.
    timers: BTreeSet<(u64, ReqId)>,
    next_req: ReqId,
    ops: HashMap<OpId, Op<P>>,
    /// `(wake, op)` of every operation with a wake time set.
    wakes: BTreeSet<(u64, OpId)>,
    next_op: OpId,
    dialing: HashSet<NodeId>,
    owned: HashMap<RecordKey, Record>,
    /// Per record key: when its k closest were found, and they (nearest first), each
    /// with the write token it gave then.
    recent: HashMap<RecordKey, (u64, Vec<Closest<P>>)>,
    out: VecDeque<Output<P>>,
    next_refresh: u64,
    next_liveness: u64,
    next_republish: u64,
    next_replicate: u64,
    next_crawl: u64,
}

/// How many of `sent` direct puts (to the closest cached for a key) must store the
/// record for the write to stand without a lookup: three quarters, at least one.
pub fn direct_quorum(sent: usize) -> usize {
    (sent - sent / 4).max(1)
}

fn staggered(rng: &mut SmallRng, now: u64, period: u64) -> u64 {
    if period == 0 {
        u64::MAX
    } else {
        now + period / 2 + rng.random_range(0..period.div_ceil(2).max(1))
    }
}

/// The ids of a `(due time, id)` schedule that are due at `now`, in id order (the
/// order they were issued), so that a tick acts the same whatever their due times.
fn due_ids(schedule: &BTreeSet<(u64, u64)>, now: u64) -> Vec<u64> {
    let mut due: Vec<u64> = schedule
        .range(..=(now, u64::MAX))
        .map(|(_, id)| *id)
        .collect();
    due.sort_unstable();
    due
}

impl<P: PeerData> Node<P> {
    /// A node with id `local`. `seed` and `secret` are the caller's randomness: the
    /// node's random lookup keys come from `seed`, its write tokens from `secret`.
    pub fn new(local: NodeId, cfg: NodeConfig, now: u64, seed: u64, secret: [u8; 32]) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let table_cfg = TableConfig {
            k: cfg.k,
            ..cfg.table.clone()
        };
        let mut store = RecordStore::new(cfg.store.clone());
        store.set_journal(cfg.persist);
        Self {
            local,
            table: RoutingTable::new(local, table_cfg),
            store,
            members: cfg.membership.clone().map(Membership::new),
            rtt: RttEstimator::new(
                cfg.initial_timeout_ms,
                cfg.min_timeout_ms,
                cfg.max_timeout_ms,
            ),
            next_refresh: staggered(&mut rng, now, cfg.refresh_ms),
            next_liveness: staggered(&mut rng, now, cfg.liveness_ms),
            next_republish: staggered(&mut rng, now, cfg.republish_ms),
            next_replicate: staggered(&mut rng, now, cfg.replicate_ms),
            next_crawl: if cfg.crawl_ms == 0 {
                u64::MAX
            } else {
                now + cfg.crawl_ms
            },
            rng,
            secret,
            pending: HashMap::new(),
            timers: BTreeSet::new(),
            next_req: 0,
            ops: HashMap::new(),
            wakes: BTreeSet::new(),
            next_op: 0,
            dialing: HashSet::new(),
            owned: HashMap::new(),
            recent: HashMap::new(),
            out: VecDeque::new(),
            cfg,
        }
    }

    pub fn local(&self) -> &NodeId {
        &self.local
    }

    pub fn config(&self) -> &NodeConfig {
        &self.cfg
    }

    pub fn table(&self) -> &RoutingTable<P> {
        &self.table
    }

    pub fn store(&self) -> &RecordStore {
        &self.store
    }

    pub fn members(&self) -> Option<&Membership<P>> {
        self.members.as_ref()
    }

    /// Dial-backs and liveness pings in flight.
    pub fn dialing(&self) -> usize {
        self.dialing.len()
    }

    /// Requests awaiting an answer.
    pub fn pending_requests(&self) -> usize {
        self.pending.len()
    }

    /// Operations under way.
    pub fn open_operations(&self) -> usize {
        self.ops.len()
    }

    /// The next queued output.
    pub fn poll_output(&mut self) -> Option<Output<P>> {
        // Changes of the record store (only kept with `persist`), whatever changed it.
        for c in self.store.take_changes() {
            self.out.push_back(Output::Store(c));
        }
        self.out.pop_front()
    }

    /// Takes back the records this node held before it stopped (read from its disk by
    /// the host, their signatures checked by the wire conversion) under the record
    /// store's rules at unix time `unix`: expired ones are dropped, the store's bounds
    /// hold. They are then offered to the closest nodes by the usual replication.
    /// Nothing is reported as an [`Output::Store`] for them: they are on disk already.
    pub fn restore_records(
        &mut self,
        unix: u64,
        records: impl IntoIterator<Item = Record>,
    ) -> Restored {
        if self.cfg.client {
            return Restored::default();
        }
        self.store.restore(records, unix)
    }

    /// When [`Node::tick`] should run next (caller ms), if ever.
    pub fn next_timer(&self) -> Option<u64> {
        let mut t = self
            .next_refresh
            .min(self.next_liveness)
            .min(self.next_republish)
            .min(self.next_replicate)
            .min(self.next_crawl);
        if let Some((due, _)) = self.timers.first() {
            t = t.min(*due);
        }
        if let Some((wake, _)) = self.wakes.first() {
            t = t.min(*wake);
        }
        (t != u64::MAX).then_some(t)
    }
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
