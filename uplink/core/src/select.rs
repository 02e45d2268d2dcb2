//! Node selection for a new segment: a pure function of the candidates, the uplink's own
//! history with each node, and a seed.
//!
//! Rules: never a node in `exclude` (it already failed during this upload), only nodes
//! with room for a piece, at most one node per /24 (IPv4) or /48 (IPv6) so that one
//! operator's rack cannot hold many pieces of a segment, and among the rest a weighted
//! random choice (Efraimidis-Spirakis sampling without replacement) where the weight is
//! the node's local success rate. A node that ever served corrupt data or failed an
//! audit is left out altogether. Randomness spreads load; the weights prefer nodes that
//! have worked for us.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use shoal_proto::NodeId;
pub use shoal_proto::subnet::Subnet;

use crate::store::{NodeCandidate, PieceError};

/// What a piece outcome came from (see [`NodeStats::from_outcome`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transfer {
    /// A piece (or a renew batch) sent to the node.
    Upload,
    /// A piece read from the node.
    Download,
    /// Blocks of a piece checked against the recorded hashes.
    Audit,
}

/// What this uplink has seen of one node: its local reputation, kept in the catalog's
/// SQLite database in the data dir (crash-safe; never published).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStats {
    pub successes: u64,
    pub failures: u64,
    /// Times the node served data that failed verification (or lied in a receipt).
    pub corrupt: u64,
    /// Audits the node failed: a block or piece info that did not match the recorded
    /// hashes (a missing piece or an unreachable node counts as a plain failure).
    #[serde(default)]
    pub failed_audits: u64,
    /// Moving average of the node's response time, milliseconds (0: not measured yet).
    /// In a delta passed to `record_node`, one new sample.
    #[serde(default)]
    pub latency_ms: u64,
    /// When a transfer with the node last failed (unix ms; 0: never). In a delta passed
    /// to `record_node`, the time of this failure; merging keeps the later time.
    #[serde(default)]
    pub last_failure_ms: u64,
    /// When a transfer with the node last succeeded (unix ms; 0: never).
    #[serde(default)]
    pub last_success_ms: u64,
}

impl NodeStats {
    /// Whether the node was caught serving bad data (corrupt downloads, lying receipts,
    /// failed audits): it gets no new pieces at all.
    pub fn is_excluded(&self) -> bool {
        self.corrupt > 0 || self.failed_audits > 0
    }

    /// Weight in selection: Laplace-smoothed success rate; 0 for an excluded node.
    pub fn weight(&self) -> f64 {
        if self.is_excluded() {
            return 0.0;
        }
        (self.successes as f64 + 1.0) / ((self.successes + self.failures) as f64 + 2.0)
    }

    /// Whether the node failed more recently than it succeeded, less than `backoff`
    /// before `now_ms`: new pieces go elsewhere while there is somewhere else to go.
    pub fn backing_off(&self, now_ms: u64, backoff: std::time::Duration) -> bool {
        let backoff_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX);
        self.last_failure_ms > self.last_success_ms
            && now_ms.saturating_sub(self.last_failure_ms) < backoff_ms
    }

    /// A delta for one failed transfer at `now_ms`.
    pub fn failure(now_ms: u64) -> Self {
        Self {
            failures: 1,
            last_failure_ms: now_ms,
            ..Self::default()
        }
    }

    /// A delta for one successful transfer at `now_ms`.
    pub fn success(now_ms: u64) -> Self {
        Self {
            successes: 1,
            last_success_ms: now_ms,
            ..Self::default()
        }
    }

    /// The delta for one piece transfer of kind `transfer` at `now_ms`: the one rule of
    /// node statistics from a piece outcome. Success counts a success (with one latency
    /// sample when `latency` is given, at least 1 ms); any error counts a failure; bad
    /// data ([`PieceError::Corrupt`]) also counts as `corrupt` when the node served or
    /// receipted it in a transfer, and as `failed_audits` when it failed an audit.
    pub fn from_outcome(
        transfer: Transfer,
        outcome: Result<(), &PieceError>,
        latency: Option<std::time::Duration>,
        now_ms: u64,
    ) -> Self {
        match outcome {
            Ok(()) => Self {
                latency_ms: latency.map_or(0, |l| (l.as_millis() as u64).max(1)),
                ..Self::success(now_ms)
            },
            Err(e) => {
                let bad = u64::from(matches!(e, PieceError::Corrupt { .. }));
                let (corrupt, failed_audits) = match transfer {
                    Transfer::Audit => (0, bad),
                    Transfer::Upload | Transfer::Download => (bad, 0),
                };
                Self {
                    corrupt,
                    failed_audits,
                    ..Self::failure(now_ms)
                }
            }
        }
    }

    /// Adds `delta` (counts, and one latency sample if non-zero) to this record.
    pub fn merge(&mut self, delta: &NodeStats) {
        self.last_failure_ms = self.last_failure_ms.max(delta.last_failure_ms);
        self.last_success_ms = self.last_success_ms.max(delta.last_success_ms);
        self.successes += delta.successes;
        self.failures += delta.failures;
        self.corrupt += delta.corrupt;
        self.failed_audits += delta.failed_audits;
        if delta.latency_ms > 0 {
            self.latency_ms = if self.latency_ms == 0 {
                delta.latency_ms
            } else {
                (self.latency_ms * 7 + delta.latency_ms).div_ceil(8)
            };
        }
    }
}

/// The network cannot hold a segment under the requested scheme.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "only {available} suitable nodes (distinct /24 subnets with {min_free} bytes free) for {needed} pieces"
)]
pub struct SelectionError {
    pub needed: usize,
    pub available: usize,
    pub min_free: u64,
}

/// The subnet a node counts against: /24 for IPv4, /48 for IPv6, an IPv4-mapped IPv6
/// address as its IPv4 address (the rule is [`Subnet`]'s, shared with the DHT).
pub fn subnet(ip: IpAddr) -> Subnet {
    Subnet::of(&ip)
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn eligible<'a>(
    candidates: &'a [NodeCandidate],
    min_free: u64,
    exclude: &'a HashSet<NodeId>,
) -> impl Iterator<Item = &'a NodeCandidate> + 'a {
    let mut seen = HashSet::new();
    candidates
        .iter()
        .filter(move |c| c.free_space >= min_free && !exclude.contains(&c.id) && seen.insert(c.id))
}

/// `exclude` plus every node the history says is caught serving bad data.
pub fn with_excluded(
    exclude: &HashSet<NodeId>,
    history: &HashMap<NodeId, NodeStats>,
) -> HashSet<NodeId> {
    let mut out = exclude.clone();
    out.extend(
        history
            .iter()
            .filter(|(_, s)| s.is_excluded())
            .map(|(id, _)| *id),
    );
    out
}

/// The nodes of `history` [backing off](NodeStats::backing_off) at `now_ms`.
pub fn backing_off(
    history: &HashMap<NodeId, NodeStats>,
    now_ms: u64,
    backoff: std::time::Duration,
) -> HashSet<NodeId> {
    history
        .iter()
        .filter(|(_, s)| s.backing_off(now_ms, backoff))
        .map(|(id, _)| *id)
        .collect()
}

/// Picks one node to take over a piece of a segment whose node failed: the rules of
/// [`select_nodes`], and not on the subnet of any node in `taken` (those holding or
/// still uploading the segment's other pieces). Nodes in `backing` (see [`backing_off`])
/// are taken only when no other is left. `None`: no eligible candidate.
pub fn select_replacement(
    candidates: &[NodeCandidate],
    history: &HashMap<NodeId, NodeStats>,
    min_free: u64,
    exclude: &HashSet<NodeId>,
    backing: &HashSet<NodeId>,
    taken: &[std::net::SocketAddr],
    seed: u64,
) -> Option<NodeCandidate> {
    let subnets: HashSet<Subnet> = taken.iter().map(|a| subnet(a.ip())).collect();
    let mut exclude = exclude.clone();
    exclude.extend(
        candidates
            .iter()
            .filter(|c| subnets.contains(&subnet(c.address.ip())))
            .map(|c| c.id),
    );
    let fresh: HashSet<NodeId> = exclude.union(backing).copied().collect();
    [fresh, exclude].iter().find_map(|ex| {
        select_nodes(candidates, history, 1, min_free, ex, seed)
            .ok()
            .and_then(|mut v| v.pop())
    })
}

/// Number of distinct subnets among eligible candidates: how many pieces could be placed.
pub fn capacity(candidates: &[NodeCandidate], min_free: u64, exclude: &HashSet<NodeId>) -> usize {
    eligible(candidates, min_free, exclude)
        .map(|c| subnet(c.address.ip()))
        .collect::<HashSet<_>>()
        .len()
}

/// Picks `count` nodes following the rules above.
pub fn select_nodes(
    candidates: &[NodeCandidate],
    history: &HashMap<NodeId, NodeStats>,
    count: usize,
    min_free: u64,
    exclude: &HashSet<NodeId>,
    seed: u64,
) -> Result<Vec<NodeCandidate>, SelectionError> {
    let mut rng = seed;
    let exclude = with_excluded(exclude, history);
    // Best key per subnet; key = ln(u) / w, larger is better.
    let mut best: HashMap<Subnet, (f64, &NodeCandidate)> = HashMap::new();
    for c in eligible(candidates, min_free, &exclude) {
        let w = history.get(&c.id).copied().unwrap_or_default().weight();
        // u in (0, 1]
        let u = ((splitmix(&mut rng) >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let key = u.ln() / w;
        let slot = best.entry(subnet(c.address.ip())).or_insert((key, c));
        if key > slot.0 {
            *slot = (key, c);
        }
    }
    if best.len() < count {
        return Err(SelectionError {
            needed: count,
            available: best.len(),
            min_free,
        });
    }
    let mut ranked: Vec<(f64, &NodeCandidate)> = best.into_values().collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.id.cmp(&b.1.id)));
    Ok(ranked
        .into_iter()
        .take(count)
        .map(|(_, c)| c.clone())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    #[test]
    fn a_corrupt_piece_is_corrupt_in_a_transfer_and_a_failed_audit_in_an_audit() {
        let bad = PieceError::Corrupt {
            node: NodeId([1; 32]),
            reason: "bad block".into(),
        };
        let up = NodeStats::from_outcome(Transfer::Upload, Err(&bad), None, 7);
        let down = NodeStats::from_outcome(Transfer::Download, Err(&bad), None, 7);
        let audit = NodeStats::from_outcome(Transfer::Audit, Err(&bad), None, 7);
        for s in [up, down] {
            assert_eq!((s.failures, s.corrupt, s.failed_audits), (1, 1, 0));
        }
        assert_eq!(
            (audit.failures, audit.corrupt, audit.failed_audits),
            (1, 0, 1)
        );
        assert!(up.is_excluded() && audit.is_excluded());
        let ok = NodeStats::from_outcome(
            Transfer::Audit,
            Ok(()),
            Some(std::time::Duration::from_micros(10)),
            9,
        );
        assert_eq!((ok.successes, ok.latency_ms, ok.last_success_ms), (1, 1, 9));
    }

    fn node(i: u8, subnet: u8, free: u64) -> NodeCandidate {
        let id = shoal_proto::Identity::from_seed([i; 32]);
        NodeCandidate {
            id: id.node_id(),
            public_key: Some(*id.public_key()),
            address: SocketAddr::from(([127, 0, subnet, i], 7000)),
            free_space: free,
        }
    }

    #[test]
    fn an_ipv4_mapped_address_counts_against_its_ipv4_subnet() {
        let v4: IpAddr = "10.1.2.3".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.1.2.77".parse().unwrap();
        assert_eq!(subnet(v4), subnet(mapped));
        assert_ne!(subnet(v4), subnet("10.1.3.3".parse().unwrap()));
    }

    #[test]
    fn one_node_per_subnet_and_enough_space() {
        // 10 subnets with 3 nodes each; one subnet has no room at all.
        let mut c = Vec::new();
        for s in 0..10u8 {
            for j in 0..3u8 {
                c.push(node(s * 3 + j + 1, s, if s == 9 { 10 } else { 1000 }));
            }
        }
        let none = HashSet::new();
        assert_eq!(capacity(&c, 100, &none), 9);
        for seed in 0..50 {
            let picked = select_nodes(&c, &HashMap::new(), 9, 100, &none, seed).unwrap();
            let subnets: HashSet<_> = picked.iter().map(|n| subnet(n.address.ip())).collect();
            assert_eq!(subnets.len(), 9);
            assert!(picked.iter().all(|n| n.free_space >= 100));
        }
        let err = select_nodes(&c, &HashMap::new(), 10, 100, &none, 1).unwrap_err();
        assert_eq!((err.needed, err.available), (10, 9));
    }

    #[test]
    fn excluded_nodes_are_never_picked() {
        let c: Vec<_> = (1..=12).map(|i| node(i, i, 1000)).collect();
        let exclude: HashSet<_> = c[..4].iter().map(|n| n.id).collect();
        for seed in 0..20 {
            let picked = select_nodes(&c, &HashMap::new(), 8, 1, &exclude, seed).unwrap();
            assert!(picked.iter().all(|n| !exclude.contains(&n.id)));
        }
        assert!(select_nodes(&c, &HashMap::new(), 9, 1, &exclude, 0).is_err());
    }

    #[test]
    fn good_history_is_preferred_and_corrupt_nodes_avoided() {
        let c: Vec<_> = (1..=20).map(|i| node(i, i, 1000)).collect();
        let mut history = HashMap::new();
        history.insert(
            c[0].id,
            NodeStats {
                successes: 100,
                ..NodeStats::default()
            },
        );
        history.insert(
            c[1].id,
            NodeStats {
                corrupt: 1,
                ..NodeStats::default()
            },
        );
        let (mut good, mut bad) = (0, 0);
        for seed in 0..400 {
            let picked = select_nodes(&c, &history, 5, 1, &HashSet::new(), seed).unwrap();
            good += usize::from(picked.iter().any(|n| n.id == c[0].id));
            bad += usize::from(picked.iter().any(|n| n.id == c[1].id));
        }
        // An unknown node is picked 5/20 = 25% of the time; the good one far more, the
        // corrupt one far less.
        assert!(good > 150, "good node picked {good}/400");
        assert_eq!(bad, 0, "corrupt node picked {bad}/400");
        // A failed audit excludes a node just the same.
        history.insert(
            c[2].id,
            NodeStats {
                successes: 50,
                failed_audits: 1,
                ..NodeStats::default()
            },
        );
        for seed in 0..100 {
            let picked = select_nodes(&c, &history, 17, 1, &HashSet::new(), seed).unwrap();
            assert!(!picked.iter().any(|n| n.id == c[2].id || n.id == c[1].id));
        }
        assert!(select_nodes(&c, &history, 19, 1, &HashSet::new(), 0).is_err());
    }

    #[test]
    fn deterministic_for_a_seed() {
        let c: Vec<_> = (1..=30).map(|i| node(i, i, 1000)).collect();
        let a = select_nodes(&c, &HashMap::new(), 10, 1, &HashSet::new(), 9).unwrap();
        let b = select_nodes(&c, &HashMap::new(), 10, 1, &HashSet::new(), 9).unwrap();
        assert_eq!(a, b);
    }
}

#[cfg(test)]
mod reputation_tests {
    use super::*;

    #[test]
    fn latency_is_a_moving_average_and_counts_add_up() {
        let mut s = NodeStats::default();
        s.merge(&NodeStats {
            successes: 1,
            latency_ms: 80,
            ..NodeStats::default()
        });
        assert_eq!(s.latency_ms, 80);
        s.merge(&NodeStats {
            failures: 1,
            latency_ms: 0,
            ..NodeStats::default()
        });
        assert_eq!(s.latency_ms, 80, "no sample leaves the average alone");
        s.merge(&NodeStats {
            successes: 1,
            latency_ms: 160,
            ..NodeStats::default()
        });
        assert_eq!(s.latency_ms, 90);
        assert_eq!((s.successes, s.failures), (2, 1));
        assert!(!s.is_excluded());
        s.merge(&NodeStats {
            failed_audits: 1,
            ..NodeStats::default()
        });
        assert!(s.is_excluded());
        assert_eq!(s.weight(), 0.0);
    }

    #[test]
    fn a_node_that_failed_lately_backs_off_until_it_succeeds_or_time_passes() {
        let backoff = std::time::Duration::from_secs(60);
        let mut s = NodeStats::default();
        assert!(!s.backing_off(1_000_000, backoff));
        s.merge(&NodeStats::failure(1_000_000));
        assert!(s.backing_off(1_000_000 + 59_999, backoff));
        assert!(!s.backing_off(1_000_000 + 60_000, backoff));
        // Merges keep the latest time whatever order the deltas come in.
        s.merge(&NodeStats::failure(900_000));
        assert_eq!(s.last_failure_ms, 1_000_000);
        s.merge(&NodeStats::success(1_000_001));
        assert!(!s.backing_off(1_000_002, backoff));
        assert_eq!((s.successes, s.failures), (1, 2));
        // Old records without the times decode as never failed.
        let old: NodeStats =
            serde_json::from_str(r#"{"successes":3,"failures":1,"corrupt":0}"#).unwrap();
        assert!(!old.backing_off(1, backoff));
    }

    #[test]
    fn a_replacement_avoids_taken_subnets_failed_nodes_and_prefers_nodes_not_backing_off() {
        // Subnets 0..4, two nodes each.
        let node = |i: u8, subnet: u8, free: u64| {
            let id = shoal_proto::Identity::from_seed([i; 32]);
            NodeCandidate {
                id: id.node_id(),
                public_key: Some(*id.public_key()),
                address: std::net::SocketAddr::from(([127, 0, subnet, i], 7000)),
                free_space: free,
            }
        };
        let c: Vec<NodeCandidate> = (0..8u8).map(|i| node(i + 1, i / 2, 1000)).collect();
        let history = HashMap::new();
        let none = HashSet::new();
        // Subnets 0, 1 and 2 hold pieces; node 7 (subnet 3) failed: node 8 is the only one.
        let taken = [c[0].address, c[2].address, c[5].address];
        let failed: HashSet<NodeId> = [c[6].id].into();
        for seed in 0..20 {
            let r = select_replacement(&c, &history, 100, &failed, &none, &taken, seed).unwrap();
            assert_eq!(r.id, c[7].id);
        }
        // Node 8 is backing off: still taken, as nothing else is left.
        let backing: HashSet<NodeId> = [c[7].id].into();
        let r = select_replacement(&c, &history, 100, &failed, &backing, &taken, 1).unwrap();
        assert_eq!(r.id, c[7].id);
        // With subnet 3 free of failures, the node not backing off is chosen.
        for seed in 0..20 {
            let r = select_replacement(&c, &history, 100, &none, &backing, &taken, seed).unwrap();
            assert_eq!(r.id, c[6].id);
        }
        // Too little room, or every subnet taken: none.
        assert!(select_replacement(&c, &history, 1001, &none, &none, &taken, 1).is_none());
        let all: Vec<_> = c.iter().map(|n| n.address).collect();
        assert!(select_replacement(&c, &history, 100, &none, &none, &all, 1).is_none());
    }
}
