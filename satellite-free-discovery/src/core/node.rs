//! The DHT's protocol as one sans-IO state machine: every rule above the routing table,
//! lookups and record store lives here, once.
//!
//! A [`Node`] takes inputs — a request received ([`Node::handle_request`]), the outcome
//! of a request it asked to send ([`Node::on_response`]), a timer firing
//! ([`Node::tick`]), or a call from its owner (lookups, record reads and writes,
//! bootstrap, crawl) — each with the caller's `now` in milliseconds. It answers
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
//!   dial-back at its advertised address (a bounded number at once), or when the driver
//!   reports it (bootstrap). Answering our own lookups refreshes an entry but admits no
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
//!   puts to the `k` closest found. A node stores a record only with a valid write token
//!   for the writer and key, and only if it is among the `k` closest it knows to the key;
//!   compare-and-swap and the store's bounds are checked by [`RecordStore`].
//! - **Upkeep.** Records put through this node are republished every `republish_ms`;
//!   held records are offered to the current closest every `replicate_ms` (they read the
//!   key first, for tokens, and only stale holders get the record).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use shoal_proto::messages::MutableRecord;
use shoal_proto::{NodeId, RecordKey, Signed};

use super::key::{Subnet, distance, key_in_bucket};
use super::lookup::{Lookup, LookupConfig, PeerData, PeerState, RttEstimator, Step};
use super::membership::{Membership, MembershipConfig};
use super::store::{RecordRefused, RecordStore, Restored, StoreChange, StoreConfig};
use super::table::{Insert, RoutingTable, TableConfig};

/// A signed mutable record.
pub type Record = Signed<MutableRecord>;

/// Proof, handed out with a GetRecord answer, that the reader asked this node recently;
/// required on PutRecord.
pub type WriteToken = [u8; 32];

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
    Failed { refused: usize, failed: usize },
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
}

#[derive(Debug)]
struct Pending<P> {
    to: NodeId,
    data: P,
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
    },
    Put {
        record: Record,
        expected_seq: Option<u64>,
        report: PutReport,
        cas: usize,
        /// Nodes that answered the lookup beyond the k closest, nearest first: a put
        /// that fails on one of the k goes to the next of these instead.
        spares: VecDeque<(NodeId, P)>,
    },
    Crawl,
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
    /// Per record key: when its k closest were found, and they (nearest first).
    recent: HashMap<RecordKey, (u64, Vec<(NodeId, P)>)>,
    out: VecDeque<Output<P>>,
    next_refresh: u64,
    next_liveness: u64,
    next_republish: u64,
    next_replicate: u64,
    next_crawl: u64,
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

    // ---- Serving ------------------------------------------------------------------

    /// Answers a request from `sender` (none for a client). `requester` names the
    /// writer a write token is bound to (the driver: the peer's IP address). `unix` is
    /// the unix time in ms for record expiry.
    pub fn handle_request(
        &mut self,
        now: u64,
        unix: u64,
        sender: Option<Contact<P>>,
        requester: &[u8],
        request: Request,
    ) -> Result<Response<P>, RecordRefused> {
        if let Some(s) = sender {
            self.on_sender(s, now);
        }
        match request {
            Request::Ping => Ok(Response::Pong),
            Request::FindNode { target } => Ok(Response::Nodes {
                closer: self.closer(&target),
            }),
            Request::GetRecord { key } => Ok(Response::Record {
                record: self.store.get(&key, unix).cloned(),
                closer: self.closer(&key.0),
                token: Some(self.token(requester, &key, now / self.cfg.token_period_ms.max(1))),
            }),
            Request::PutRecord {
                record,
                expected_seq,
                token,
            } => {
                // Refusals a writer can act on come first (replays, CAS, size).
                self.store.check(&record, expected_seq, unix)?;
                let key = record.key();
                if !token.is_some_and(|t| self.token_valid(requester, &key, &t, now)) {
                    return Err(RecordRefused::WriteToken);
                }
                if !self.among_closest(&key) {
                    return Err(RecordRefused::NotAmongClosest { k: self.cfg.k });
                }
                self.store.put(record, expected_seq, unix)?;
                Ok(Response::Stored)
            }
        }
    }

    /// Live table entries closest to `target`, as handed to others.
    fn closer(&self, target: &[u8; 32]) -> Vec<Contact<P>> {
        self.table
            .closest(
                target,
                self.cfg.k.min(shoal_proto::limits::MAX_CLOSER_NODES),
                true,
            )
            .into_iter()
            .map(|e| Contact {
                id: e.id,
                subnet: e.subnet,
                free_space: 0,
                data: e.data.clone(),
            })
            .collect()
    }

    /// Whether fewer than k live entries are closer to `key` than this node.
    pub fn among_closest(&self, key: &RecordKey) -> bool {
        let me = distance(&key.0, &self.local);
        self.table
            .closest(&key.0, self.cfg.k, true)
            .iter()
            .filter(|e| distance(&key.0, &e.id) < me)
            .count()
            < self.cfg.k
    }

    fn token(&self, requester: &[u8], key: &RecordKey, epoch: u64) -> WriteToken {
        let mut h = blake3::Hasher::new_keyed(&self.secret);
        h.update(&epoch.to_be_bytes());
        h.update(&(requester.len() as u64).to_be_bytes());
        h.update(requester);
        h.update(&key.0);
        *h.finalize().as_bytes()
    }

    fn token_valid(&self, requester: &[u8], key: &RecordKey, t: &WriteToken, now: u64) -> bool {
        let epoch = now / self.cfg.token_period_ms.max(1);
        [epoch, epoch.saturating_sub(1)]
            .iter()
            .any(|e| self.token(requester, key, *e) == *t)
    }

    /// A request arrived from `sender`: refresh it if we know this record, else dial
    /// its claimed address back before it may enter the table.
    fn on_sender(&mut self, sender: Contact<P>, now: u64) {
        let id = sender.id;
        if id == self.local {
            return;
        }
        if let Some(m) = self.members.as_mut() {
            m.observe(
                id,
                sender.subnet,
                sender.free_space,
                sender.data.clone(),
                now,
            );
        }
        if let Some(e) = self.table.get_any(&id)
            && !sender.data.newer_than(&e.data)
        {
            return;
        }
        match self.table.precheck(&id, sender.subnet, now) {
            None => {}
            Some(Insert::SubnetBucketFull) => {
                return self.note(Note::PeerRefused("subnet_bucket"));
            }
            Some(Insert::SubnetTableFull) => {
                return self.note(Note::PeerRefused("subnet_table"));
            }
            Some(_) => return,
        }
        if self.dialing.contains(&id) {
            return;
        }
        if self.dialing.len() >= self.cfg.max_dialbacks.max(1) {
            return self.note(Note::PeerRefused("dialback_busy"));
        }
        self.dialing.insert(id);
        self.send(
            now,
            id,
            sender.data,
            Request::Ping,
            None,
            Purpose::DialBack,
            None,
        );
    }

    fn note(&mut self, n: Note) {
        self.out.push_back(Output::Note(n));
    }

    // ---- Answers ------------------------------------------------------------------

    /// A node answered us (outside a request of ours, e.g. a bootstrap ping the driver
    /// sent to a bare address).
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
    fn observe_answer(&mut self, now: u64, c: Contact<P>, at_advertised: bool, admit: bool) {
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

    fn on_failed(&mut self, id: &NodeId) {
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
        if matches!(p.purpose, Purpose::DialBack | Purpose::Liveness) {
            self.dialing.remove(&p.to);
        }
        let answer = match result {
            Ok(a) if a.responder.id == p.to => a,
            Ok(_) => return self.request_failed(now, unix, p, Failure::Unreachable),
            Err(f) => return self.request_failed(now, unix, p, f),
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
        let closer: Vec<Contact<P>> = closer
            .into_iter()
            .filter(|c| c.id != self.local)
            .take(shoal_proto::limits::MAX_CLOSER_NODES)
            .collect();
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
                        .insert(p.to, (record.as_ref().map(|r| r.seq), token));
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
                paths.seen.insert(p.to, responder.data);
                if let Some(l) = paths.lookups.get_mut(i) {
                    l.on_success(&p.to, closer.into_iter().map(|c| (c.id, c.data)));
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
                self.send(now, p.to, p.data, put, Some(op_id), Purpose::Put, None);
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
                        p.to,
                        p.data,
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
            Purpose::DialBack | Purpose::Liveness | Purpose::Repair => {}
        }
    }

    fn request_failed(&mut self, now: u64, unix: u64, p: Pending<P>, f: Failure) {
        match (&f, p.purpose) {
            (Failure::Refused { .. }, Purpose::Put | Purpose::PutToken | Purpose::Repair) => {}
            _ => self.on_failed(&p.to),
        }
        match p.purpose {
            Purpose::Path(i) => {
                if let Some(op_id) = p.op {
                    if let Some(l) = self
                        .ops
                        .get_mut(&op_id)
                        .and_then(|o| o.paths.as_mut())
                        .and_then(|ps| ps.lookups.get_mut(i))
                    {
                        l.on_failure(&p.to);
                    }
                    self.advance(op_id, now, unix);
                }
            }
            Purpose::Put | Purpose::PutToken => {
                if let Some(op_id) = p.op {
                    let mut replace = None;
                    if let Some(Op {
                        kind:
                            OpKind::Put {
                                report,
                                cas,
                                spares,
                                record,
                                expected_seq,
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
                                report.refused.push((p.to, reason));
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
            Purpose::FindPing => {
                if let Some(op_id) = p.op {
                    self.finish(op_id, Some(Outcome::Found(None)), now, unix);
                }
            }
            Purpose::Crawl => {
                if let Some(op_id) = p.op {
                    self.finish(op_id, Some(Outcome::Crawled), now, unix);
                }
            }
            Purpose::Liveness | Purpose::ReplicateGet | Purpose::Repair => {}
        }
    }

    // ---- Requests and timers --------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    fn send(
        &mut self,
        now: u64,
        to: NodeId,
        data: P,
        request: Request,
        op: Option<OpId>,
        purpose: Purpose,
        offer: Option<Record>,
    ) -> ReqId {
        self.next_req += 1;
        let req = self.next_req;
        self.out.push_back(Output::Send {
            req,
            to,
            data: data.clone(),
            request: request.clone(),
        });
        let p = Pending {
            to,
            data,
            request,
            op,
            purpose,
            sent_at: now,
            soft: now.saturating_add(self.rtt.timeout()),
            hard: now.saturating_add(self.cfg.hard_timeout_ms),
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
                self.out.push_back(Output::Send {
                    req: id,
                    to: p.to,
                    data: p.data.clone(),
                    request: p.request.clone(),
                });
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
    fn replicate(&mut self, now: u64, unix: u64) {
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

    // ---- Operations -----------------------------------------------------------------

    /// Sets when operation `op_id` wants [`Node::tick`] to advance it, keeping `wakes`.
    fn set_wake(&mut self, op_id: OpId, wake: Option<u64>) {
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

    fn new_op(&mut self, kind: OpKind<P>, report: bool, parent: Option<OpId>) -> OpId {
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

    /// Remembers the k closest found for `key` (see [`NodeConfig::closest_cache`]),
    /// dropping expired entries, then the oldest, when the cache is full.
    fn remember_closest(&mut self, key: RecordKey, closest: Vec<(NodeId, P)>, now: u64) {
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

    /// The k closest a read or write of `key` found within `closest_cache_ms`, if any.
    fn recent_closest(&self, key: &RecordKey, now: u64) -> Vec<(NodeId, P)> {
        match self.recent.get(key) {
            Some((at, peers)) if now.saturating_sub(*at) < self.cfg.closest_cache_ms => {
                peers.clone()
            }
            _ => Vec::new(),
        }
    }

    /// Starts the lookup phase of `op` towards `target` over `paths` disjoint paths.
    fn start_paths(
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
            let recent = self.recent_closest(&key, now);
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
    fn advance(&mut self, op_id: OpId, now: u64, unix: u64) {
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

    /// Every path of `op` is done: the next phase.
    fn lookup_done(&mut self, op_id: OpId, now: u64, unix: u64) {
        let Some(op) = self.ops.get_mut(&op_id) else {
            return;
        };
        let Some(paths) = op.paths.as_ref() else {
            return;
        };
        let target = paths.target;
        // The k closest that answered, over every path, nearest first.
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
        let hops = merged.iter().map(|m| m.2).max().unwrap_or(0);
        let best = paths.best.clone();
        let record_key = paths.record;
        let held = paths.held.clone();
        let seen_target = match &op.kind {
            OpKind::Find { id } => paths.seen.get(id).cloned().map(|d| (*id, d)),
            _ => None,
        };
        self.table.mark_refreshed(&target, now);
        self.note(Note::LookupFinished {
            hops: (!merged.is_empty()).then_some(hops),
        });
        if let Some(key) = record_key {
            let closest = merged.iter().map(|m| (m.0, m.1.clone())).collect();
            self.remember_closest(key, closest, now);
        }
        let Some(op) = self.ops.get_mut(&op_id) else {
            return;
        };
        // Taken out for the match; put back where the operation goes on.
        let kind = std::mem::replace(&mut op.kind, OpKind::Refresh);
        match kind {
            OpKind::Closest => {
                let results = merged.into_iter().map(|m| m.1).collect();
                self.finish(op_id, Some(Outcome::Closest { results, hops }), now, unix);
            }
            OpKind::Find { id } => {
                if let Some(op) = self.ops.get_mut(&op_id) {
                    op.kind = OpKind::Find { id };
                }
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
                if let Some(op) = self.ops.get_mut(&op_id) {
                    op.kind = OpKind::Bootstrap;
                }
                // One count held while the refreshes start, so that one finishing at once
                // cannot finish the bootstrap before the others started.
                if let Some(op) = self.ops.get_mut(&op_id) {
                    op.open = 1;
                }
                let children = self.refresh(now, unix, 0, Some(op_id));
                if let Some(op) = self.ops.get_mut(&op_id) {
                    op.open += children;
                }
                self.close_one(op_id, now, unix);
            }
            OpKind::Refresh | OpKind::Crawl => {
                self.finish(op_id, None, now, unix);
            }
            OpKind::Get { local } => {
                let best = match (local, best) {
                    (Some(a), Some(b)) => Some(if a.seq >= b.seq { a } else { b }),
                    (a, b) => a.or(b),
                };
                // Read repair: the newest record to the closest that lacked it.
                if let Some(b) = &best {
                    for (id, data, _) in &merged {
                        if let Some((seq, token)) = held.get(id)
                            && seq.is_none_or(|s| s < b.seq)
                        {
                            self.send(
                                now,
                                *id,
                                data.clone(),
                                Request::PutRecord {
                                    record: b.clone(),
                                    expected_seq: None,
                                    token: *token,
                                },
                                None,
                                Purpose::Repair,
                                None,
                            );
                        }
                    }
                }
                self.finish(op_id, Some(Outcome::Record(best)), now, unix);
            }
            OpKind::Put {
                record,
                expected_seq,
                mut report,
                cas,
                spares: _,
            } => {
                // Hold a copy ourselves when we are among the closest.
                if !self.cfg.client {
                    let me = distance(&target, &self.local);
                    let farthest = merged.last().map(|m| distance(&target, &m.0));
                    if merged.len() < self.cfg.k || farthest.is_none_or(|f| me < f) {
                        match self.store.put(record.clone(), expected_seq, unix) {
                            Ok(_) => report.stored += 1,
                            Err(e) => report.refused.push((self.local, e.to_string())),
                        }
                    }
                }
                let n = merged.len();
                if let Some(op) = self.ops.get_mut(&op_id) {
                    op.open = n;
                    op.kind = OpKind::Put {
                        record: record.clone(),
                        expected_seq,
                        report,
                        cas,
                        spares,
                    };
                }
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

    /// One request (or child) of `op` settled.
    fn close_one(&mut self, op_id: OpId, now: u64, unix: u64) {
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
        if put {
            self.put_finished(op_id, now, unix);
        } else if bootstrap {
            let table = self.table.len();
            self.finish(op_id, Some(Outcome::Bootstrapped { table }), now, unix);
        } else {
            self.finish(op_id, None, now, unix);
        }
    }

    fn put_finished(&mut self, op_id: OpId, now: u64, unix: u64) {
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
        let result = if report.stored > 0 {
            Ok(report.clone())
        } else if expected_seq.is_some() && *cas > 0 {
            Err(PutError::CompareAndSwap)
        } else {
            Err(PutError::Failed {
                refused: report.refused.len(),
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

    fn finish(&mut self, op_id: OpId, outcome: Option<Outcome<P>>, now: u64, unix: u64) {
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
    fn refresh(&mut self, now: u64, unix: u64, interval: u64, parent: Option<OpId>) -> usize {
        let due = self.table.refresh_due(now, interval);
        let n = due.len();
        for b in due {
            let key = key_in_bucket(&self.local, b, self.rng.random());
            let op = self.new_op(OpKind::Refresh, false, parent);
            self.start_paths(op, key, None, self.cfg.node_paths, now, unix);
        }
        n
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

    /// Joins: looks up our own id (a client: `random`), then refreshes every bucket
    /// ([`Outcome::Bootstrapped`]). Answers to bootstrap pings come first, through
    /// [`Node::on_contact`].
    pub fn bootstrap(&mut self, now: u64, unix: u64) -> OpId {
        let target = if self.cfg.client {
            self.rng.random()
        } else {
            self.local.0
        };
        let op = self.new_op(OpKind::Bootstrap, true, None);
        self.start_paths(op, target, None, self.cfg.node_paths, now, unix);
        op
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
        let op = self.new_op(OpKind::Get { local }, true, None);
        self.start_paths(op, key.0, Some(key), self.cfg.record_paths, now, unix);
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

    fn start_put(
        &mut self,
        now: u64,
        unix: u64,
        record: Record,
        expected_seq: Option<u64>,
        report: bool,
    ) -> OpId {
        let key = record.key();
        let op = self.new_op(
            OpKind::Put {
                record,
                expected_seq,
                report: PutReport::default(),
                cas: 0,
                spares: VecDeque::new(),
            },
            report,
            None,
        );
        self.start_paths(op, key.0, Some(key), self.cfg.record_paths, now, unix);
        op
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

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
