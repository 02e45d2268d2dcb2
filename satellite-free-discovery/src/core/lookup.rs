//! Iterative Kademlia lookup as a state machine.
//!
//! The caller seeds it with nodes from its routing table, then loops: [`Lookup::poll`]
//! says whom to query next (at most `alpha` requests in flight), and the caller reports
//! each answer with [`Lookup::on_success`] (carrying the closer nodes the peer returned) or
//! [`Lookup::on_failure`]. A request that outlives its deadline stops counting against
//! `alpha` but may still answer late. The lookup is done when the `k` closest nodes it
//! has seen have all answered, or when nobody is left to ask.
//!
//! Sources: every answer is a source, and a node belongs to the answer that first named
//! it (the seeds, our own table, to none). The lookup is done only when two views of its
//! candidates have settled: the `k` closest of all, and the `k` closest counting at most
//! `per_source` nodes of any one source. Nodes that name only each other — say liars
//! who know the liars closest to any key — enter through the first of them asked and so
//! count as one source: they cannot crowd out the branches honest answers opened, which
//! are followed until they too reach the nodes closest to the target.
//!
//! Every node carries a depth: 0 for the seeds, `d + 1` for a node first learned from
//! the answer of a node at depth `d`. The depth of a result is the number of sequential
//! round trips it took to learn of it; [`Lookup::hops`] is the largest depth among the
//! results.

use std::collections::BTreeMap;

use shoal_proto::NodeId;

use super::key::{Distance, distance};

/// Data a lookup carries per node (the driver: a signed node record; the simulator: an
/// index). When the same node is reported twice, a newer value replaces an older one.
pub trait PeerData: Clone {
    fn newer_than(&self, _other: &Self) -> bool {
        false
    }
}

impl PeerData for () {}
impl PeerData for u32 {}

/// Lookup parameters.
#[derive(Debug, Clone, Copy)]
pub struct LookupConfig {
    /// Results wanted (Kademlia's k). Default 20.
    pub k: usize,
    /// Requests in flight at most. Default 3.
    pub alpha: usize,
    /// Most candidates remembered; the farthest never-contacted ones are dropped beyond
    /// it, which bounds memory whatever peers send. Default 200.
    pub max_candidates: usize,
    /// Most nodes first learned from one answer that count among the closest (see
    /// [`Lookup`]: sources); 0: no bound. Default 10.
    pub per_source: usize,
}

impl Default for LookupConfig {
    fn default() -> Self {
        Self {
            k: 20,
            alpha: 3,
            max_candidates: 200,
            per_source: 10,
        }
    }
}

/// Where one node stands in a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    NotContacted,
    /// Request sent; `deadline` in caller milliseconds.
    Waiting {
        deadline: u64,
    },
    /// Timed out; no longer counted in flight, still accepted if it answers.
    Unresponsive,
    Failed,
    Succeeded,
}

/// A node known to a lookup.
#[derive(Debug, Clone)]
pub struct LookupPeer<T> {
    pub id: NodeId,
    pub data: T,
    pub state: PeerState,
    pub depth: u32,
    /// Index of the answer that first named it (`SEED`: our own table).
    source: u32,
}

/// What one walk over the candidates found.
enum Scan {
    /// Ask this candidate next.
    Query(Distance),
    /// Waiting for answers.
    Open,
    /// The closest have all answered, or nobody is left.
    Done,
}

/// Source of the seeds: not bounded.
const SEED: u32 = u32::MAX;

/// What the caller should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<T> {
    /// Send a request to this node.
    Query { id: NodeId, data: T },
    /// Nothing to send now; poll again on an answer or at `until` (a request deadline).
    Wait { until: Option<u64> },
    /// Finished: read [`Lookup::results`].
    Done,
}

/// One iterative lookup towards `target`.
#[derive(Debug)]
pub struct Lookup<T> {
    target: [u8; 32],
    local: Option<NodeId>,
    cfg: LookupConfig,
    timeout: u64,
    peers: BTreeMap<Distance, LookupPeer<T>>,
    /// Requests counted in flight: the peers in state `Waiting`, with their deadlines.
    waiting: Vec<(u64, Distance)>,
    /// What the last `poll` returned if it was a `Wait`, until the candidates change:
    /// with no answer, failure, new candidate or expired deadline since, `poll` would
    /// walk the same candidates to the same result.
    idle: Option<Option<u64>>,
    finished: bool,
    queried: usize,
    /// Answers received so far (numbers the sources).
    answers: u32,
    /// Scratch: nodes counted per source during one pass of `poll`.
    counted: Vec<u16>,
}

impl<T: PeerData> Lookup<T> {
    /// A lookup for `target` starting from `seeds`. `local` (our own id, if any) is never
    /// queried; `timeout` is the per-request deadline in milliseconds.
    pub fn new(
        target: [u8; 32],
        local: Option<NodeId>,
        seeds: impl IntoIterator<Item = (NodeId, T)>,
        cfg: LookupConfig,
        timeout: u64,
    ) -> Self {
        let mut l = Self {
            target,
            local,
            cfg,
            timeout,
            peers: BTreeMap::new(),
            waiting: Vec::new(),
            idle: None,
            finished: false,
            queried: 0,
            answers: 0,
            counted: Vec::new(),
        };
        for (id, data) in seeds {
            l.add(id, data, 0, SEED);
        }
        l
    }

    pub fn target(&self) -> &[u8; 32] {
        &self.target
    }

    fn add(&mut self, id: NodeId, data: T, depth: u32, source: u32) {
        if Some(id) == self.local {
            return;
        }
        let d = distance(&self.target, &id);
        self.idle = None;
        match self.peers.get_mut(&d) {
            Some(p) => {
                if p.state == PeerState::NotContacted && data.newer_than(&p.data) {
                    p.data = data;
                }
                p.depth = p.depth.min(depth);
            }
            None => {
                self.peers.insert(
                    d,
                    LookupPeer {
                        id,
                        data,
                        state: PeerState::NotContacted,
                        depth,
                        source,
                    },
                );
                if self.peers.len() > self.cfg.max_candidates {
                    let drop = self
                        .peers
                        .iter()
                        .rev()
                        .find(|(_, p)| p.state == PeerState::NotContacted)
                        .map(|(d, _)| *d);
                    if let Some(d) = drop {
                        self.peers.remove(&d);
                    }
                }
            }
        }
    }

    /// Decides the next step at time `now`.
    pub fn poll(&mut self, now: u64) -> Step<T> {
        if self.finished {
            return Step::Done;
        }
        // Expire every overdue request first, so that the deadline reported in `Wait` is
        // always in the future.
        let mut i = 0;
        while i < self.waiting.len() {
            let (deadline, d) = self.waiting[i];
            if deadline <= now {
                self.waiting.swap_remove(i);
                if let Some(p) = self.peers.get_mut(&d) {
                    p.state = PeerState::Unresponsive;
                }
                self.idle = None;
            } else {
                i += 1;
            }
        }
        if let Some(until) = self.idle {
            return Step::Wait { until };
        }
        // Two views of the candidates must both be settled: the closest with at most
        // `per_source` first named by any one answer (so branches that other answers
        // opened keep being followed, whatever one answer claims), and the closest of
        // all (so that no closer node is left out of the results).
        let bounded = if self.cfg.per_source > 0 {
            self.scan(self.cfg.per_source)
        } else {
            Scan::Done
        };
        let all = self.scan(0);
        let next = match (bounded, all) {
            (Scan::Done, Scan::Done) => {
                self.finished = true;
                return Step::Done;
            }
            (Scan::Query(d), _) | (_, Scan::Query(d)) => d,
            _ => return self.wait(),
        };
        if self.waiting.len() >= self.cfg.alpha {
            return self.wait();
        }
        let deadline = now.saturating_add(self.timeout);
        let Some(p) = self.peers.get_mut(&next) else {
            return self.wait();
        };
        p.state = PeerState::Waiting { deadline };
        self.waiting.push((deadline, next));
        self.queried += 1;
        Step::Query {
            id: p.id,
            data: p.data.clone(),
        }
    }

    /// Nothing to send until an answer, a failure or the next deadline: remembered for
    /// the polls before then.
    fn wait(&mut self) -> Step<T> {
        let until = self.next_deadline();
        self.idle = Some(until);
        Step::Wait { until }
    }

    /// Walks the candidates nearest first, counting at most `cap` per source (0: all):
    /// the first one to ask, or whether the `k` closest counted have all answered.
    fn scan(&mut self, cap: usize) -> Scan {
        let mut succeeded = Some(0usize);
        let mut blocked = false;
        self.counted.clear();
        if cap > 0 {
            self.counted.resize(self.answers as usize, 0);
        }
        for (d, p) in &self.peers {
            if let Some(c) = self.counted.get_mut(p.source as usize) {
                if usize::from(*c) >= cap {
                    continue;
                }
                *c += 1;
            }
            match p.state {
                PeerState::Waiting { .. } => {
                    // A closer request is still open: not done, whatever follows.
                    succeeded = None;
                }
                PeerState::Unresponsive => {
                    // Past its soft deadline, but the request may still be answered (it
                    // is retransmitted): a closer node that may answer keeps the lookup
                    // open until it answers or fails, so one lost message does not cost
                    // the result. It no longer counts against `alpha`.
                    if succeeded.is_some() {
                        blocked = true;
                    }
                    succeeded = None;
                }
                PeerState::Succeeded => {
                    if let Some(n) = succeeded.as_mut() {
                        *n += 1;
                        if *n >= self.cfg.k {
                            return Scan::Done;
                        }
                    }
                }
                PeerState::NotContacted => return Scan::Query(*d),
                PeerState::Failed => {}
            }
        }
        if !self.waiting.is_empty() || blocked {
            Scan::Open
        } else {
            Scan::Done
        }
    }

    /// Earliest deadline of an open request.
    pub fn next_deadline(&self) -> Option<u64> {
        self.waiting.iter().map(|(deadline, _)| *deadline).min()
    }

    /// `id` answered with `closer`. Returns false if no request to `id` was open.
    pub fn on_success(
        &mut self,
        id: &NodeId,
        closer: impl IntoIterator<Item = (NodeId, T)>,
    ) -> bool {
        if self.finished {
            return false;
        }
        let d = distance(&self.target, id);
        let depth = match self.peers.get_mut(&d) {
            Some(p) => match p.state {
                PeerState::Waiting { .. } => {
                    self.waiting.retain(|(_, w)| *w != d);
                    p.state = PeerState::Succeeded;
                    p.depth
                }
                PeerState::Unresponsive => {
                    p.state = PeerState::Succeeded;
                    p.depth
                }
                _ => return false,
            },
            None => return false,
        };
        self.idle = None;
        let source = self.answers;
        self.answers = self.answers.saturating_add(1).min(SEED - 1);
        for (cid, data) in closer {
            self.add(cid, data, depth + 1, source);
        }
        true
    }

    /// A request to `id` failed. Returns false if no request to `id` was open.
    pub fn on_failure(&mut self, id: &NodeId) -> bool {
        if self.finished {
            return false;
        }
        let d = distance(&self.target, id);
        match self.peers.get_mut(&d) {
            Some(p) => match p.state {
                PeerState::Waiting { .. } => {
                    self.waiting.retain(|(_, w)| *w != d);
                    p.state = PeerState::Failed;
                    self.idle = None;
                    true
                }
                PeerState::Unresponsive => {
                    p.state = PeerState::Failed;
                    self.idle = None;
                    true
                }
                _ => false,
            },
            None => false,
        }
    }

    /// Requests currently counted in flight.
    pub fn in_flight(&self) -> usize {
        self.waiting.len()
    }

    /// Requests sent so far.
    pub fn queried(&self) -> usize {
        self.queried
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Every node the lookup knows, nearest first.
    pub fn peers(&self) -> impl Iterator<Item = &LookupPeer<T>> {
        self.peers.values()
    }

    /// The `k` closest nodes that answered, nearest first.
    pub fn results(&self) -> Vec<&LookupPeer<T>> {
        self.peers
            .values()
            .filter(|p| p.state == PeerState::Succeeded)
            .take(self.cfg.k)
            .collect()
    }

    /// Round trips on the longest path to a result (see the module docs).
    pub fn hops(&self) -> u32 {
        self.results().iter().map(|p| p.depth).max().unwrap_or(0)
    }
}

/// Round-trip estimator for adaptive request timeouts (RFC 6298 smoothing), clamped to
/// `[min, max]` so that a burst of fast or slow answers cannot push it out of bounds.
#[derive(Debug, Clone)]
pub struct RttEstimator {
    srtt: Option<f64>,
    rttvar: f64,
    min: u64,
    max: u64,
    initial: u64,
}

impl RttEstimator {
    pub fn new(initial: u64, min: u64, max: u64) -> Self {
        Self {
            srtt: None,
            rttvar: 0.0,
            min,
            max: max.max(min),
            initial,
        }
    }

    /// Adds one measured round trip (ms).
    pub fn observe(&mut self, rtt: u64) {
        let r = rtt as f64;
        match self.srtt {
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2.0;
            }
            Some(s) => {
                self.rttvar = 0.75 * self.rttvar + 0.25 * (s - r).abs();
                self.srtt = Some(0.875 * s + 0.125 * r);
            }
        }
    }

    /// The request timeout to use now (ms).
    pub fn timeout(&self) -> u64 {
        let t = match self.srtt {
            None => self.initial,
            Some(s) => (s + 4.0 * self.rttvar).ceil() as u64,
        };
        t.clamp(self.min, self.max)
    }
}

#[cfg(test)]
#[path = "lookup_tests.rs"]
mod tests;
