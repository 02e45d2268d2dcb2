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

use crate::store::NodeCandidate;

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

    /// Adds `delta` (counts, and one latency sample if non-zero) to this record.
    pub fn merge(&mut self, delta: &NodeStats) {
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

/// The subnet a node counts against: /24 for IPv4, /48 for IPv6.
pub fn subnet(ip: IpAddr) -> [u8; 6] {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            [4, o[0], o[1], o[2], 0, 0]
        }
        IpAddr::V6(v6) => {
            let o = v6.octets();
            [o[0], o[1], o[2], o[3], o[4], o[5]]
        }
    }
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
    let mut best: HashMap<[u8; 6], (f64, &NodeCandidate)> = HashMap::new();
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
}
