//! The rules of keeping data alive, as plain functions with no I/O: how healthy a
//! segment is, which pieces a repair regenerates and where they may go, how renewals are
//! batched, which blocks an audit reads, and what `check` exits with.
//! [`crate::maintain`] runs them over the network; these are tested directly.
//!
//! **Health.** A piece is *healthy* when its node answered an audit with a piece info
//! that hashes to the recorded piece hash and blocks that match it. A segment with
//! `h` healthy pieces under scheme `k/repair/success/total` is
//! - [`SegmentState::Lost`] when `h < k` (it cannot be rebuilt now);
//! - [`SegmentState::BelowThreshold`] when `h <= repair` and `h < total` (due for repair:
//!   a segment that holds every piece it was stored with is never due, so a segment
//!   stored under a shrunk scheme whose `repair` equals its `total` is healthy);
//! - [`SegmentState::Healthy`] otherwise.
//!
//! **Exit statuses** of `uplink check` (and `repair`, over the state after repairing):
//! [`EXIT_HEALTHY`] 0, [`EXIT_BELOW_THRESHOLD`] 2, [`EXIT_LOST`] 3 (lost wins over below
//! threshold); 1 stays the generic error of every command.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use serde::Serialize;
use shoal_proto::limits::MAX_RENEW_PIECES;
use shoal_proto::{NodeId, PieceId};

use crate::codec::Scheme;
use crate::select::{NodeStats, SelectionError, select_nodes, subnet};
use crate::store::{NodeAddress, NodeCandidate};

/// `uplink check`: every segment in scope is healthy.
pub const EXIT_HEALTHY: u8 = 0;
/// `uplink check`: some segment is at or below its repair threshold (none is lost).
pub const EXIT_BELOW_THRESHOLD: u8 = 2;
/// `uplink check`: some segment has fewer than `k` healthy pieces.
pub const EXIT_LOST: u8 = 3;

/// Most blocks audited per piece in one check, whatever the audit fraction: bounds the
/// audit traffic per piece to this many blocks (≤ 64 KiB each) plus the piece's hash
/// list.
pub const MAX_AUDIT_BLOCKS: usize = 8;

/// How healthy one segment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentState {
    Healthy,
    BelowThreshold,
    Lost,
}

/// The state of a segment of `scheme` with `healthy` verified pieces.
pub fn classify(scheme: Scheme, healthy: usize) -> SegmentState {
    if healthy < usize::from(scheme.k) {
        SegmentState::Lost
    } else if healthy <= usize::from(scheme.repair) && healthy < usize::from(scheme.total) {
        SegmentState::BelowThreshold
    } else {
        SegmentState::Healthy
    }
}

/// The exit status for a set of segment states (see the module docs).
pub fn exit_status<'a>(states: impl IntoIterator<Item = &'a SegmentState>) -> u8 {
    match states.into_iter().max() {
        None | Some(SegmentState::Healthy) => EXIT_HEALTHY,
        Some(SegmentState::BelowThreshold) => EXIT_BELOW_THRESHOLD,
        Some(SegmentState::Lost) => EXIT_LOST,
    }
}

/// Piece indices a repair regenerates: every index below `total` that no healthy piece
/// holds (a piece index is an erasure shard index, so each is needed once).
pub fn missing_indices(scheme: Scheme, healthy: &[u16]) -> Vec<u16> {
    let have: HashSet<u16> = healthy.iter().copied().collect();
    (0..scheme.total).filter(|i| !have.contains(i)).collect()
}

/// Which `k` healthy pieces a repair downloads, best first: data pieces before parity
/// (cheaper to decode), then by index. Returns them all; the caller takes the first `k`
/// that arrive whole and falls back to the rest.
pub fn fetch_order(k: u16, healthy: &[u16]) -> Vec<u16> {
    let mut v = healthy.to_vec();
    v.sort_by_key(|i| (*i >= k, *i));
    v.dedup();
    v
}

/// New nodes for `count` regenerated pieces of one segment: never a node that holds (or
/// held) a piece of the segment, never a /24 (IPv4; /48 IPv6) of a piece that stays, one
/// per /24 among themselves, never a node caught serving bad data; among the rest,
/// [`select_nodes`]'s weighted choice. Places as many as the candidates allow, up to
/// `count`; an error only when not even one fits.
pub fn place_repair(
    candidates: &[NodeCandidate],
    history: &HashMap<NodeId, NodeStats>,
    holders: &HashSet<NodeId>,
    kept: &[IpAddr],
    count: usize,
    min_free: u64,
    seed: u64,
) -> Result<Vec<NodeCandidate>, SelectionError> {
    let kept_subnets: HashSet<crate::select::Subnet> = kept.iter().map(|ip| subnet(*ip)).collect();
    let allowed: Vec<NodeCandidate> = candidates
        .iter()
        .filter(|c| !holders.contains(&c.id) && !kept_subnets.contains(&subnet(c.address.ip())))
        .cloned()
        .collect();
    let cap = crate::select::capacity(
        &allowed,
        min_free,
        &crate::select::with_excluded(&HashSet::new(), history),
    );
    if cap == 0 {
        return Err(SelectionError {
            needed: count,
            available: 0,
            min_free,
        });
    }
    select_nodes(
        &allowed,
        history,
        count.min(cap),
        min_free,
        &HashSet::new(),
        seed,
    )
}

/// Groups pieces by node into renew orders of at most [`MAX_RENEW_PIECES`] distinct
/// pieces each: one order per node (more only beyond that bound). Deterministic order.
pub fn renew_batches(
    pieces: impl IntoIterator<Item = (NodeAddress, PieceId)>,
) -> Vec<(NodeAddress, Vec<PieceId>)> {
    let mut by_node: BTreeMap<(NodeId, std::net::SocketAddr), Vec<PieceId>> = BTreeMap::new();
    let mut seen: HashSet<(NodeId, PieceId)> = HashSet::new();
    for (node, piece) in pieces {
        if seen.insert((node.id, piece)) {
            by_node
                .entry((node.id, node.address))
                .or_default()
                .push(piece);
        }
    }
    let mut out = Vec::new();
    for ((id, address), pieces) in by_node {
        for chunk in pieces.chunks(MAX_RENEW_PIECES) {
            out.push((NodeAddress { id, address }, chunk.to_vec()));
        }
    }
    out
}

/// The blocks of a piece of `blocks` blocks that an audit reads: `fraction` of them
/// (at least one, at most [`MAX_AUDIT_BLOCKS`]), distinct, chosen by `seed`.
pub fn audit_blocks(blocks: u64, fraction: f64, seed: u64) -> Vec<u32> {
    if blocks == 0 {
        return Vec::new();
    }
    let fraction = if fraction.is_finite() {
        fraction.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let want = ((blocks as f64 * fraction).ceil() as u64).clamp(1, MAX_AUDIT_BLOCKS as u64);
    let want = want.min(blocks) as usize;
    let mut state = seed;
    let mut out = Vec::with_capacity(want);
    let mut picked = HashSet::new();
    while out.len() < want {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let b = (z % blocks) as u32;
        if picked.insert(b) {
            out.push(b);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn scheme(s: &str) -> Scheme {
        s.parse().unwrap()
    }

    #[test]
    fn segments_are_classified_by_their_healthy_pieces() {
        let s = scheme("4/6/8/10");
        assert_eq!(classify(s, 10), SegmentState::Healthy);
        assert_eq!(classify(s, 7), SegmentState::Healthy);
        assert_eq!(classify(s, 6), SegmentState::BelowThreshold);
        assert_eq!(classify(s, 4), SegmentState::BelowThreshold);
        assert_eq!(classify(s, 3), SegmentState::Lost);
        assert_eq!(classify(s, 0), SegmentState::Lost);
        // A shrunk scheme holding all its pieces is not due for repair.
        assert_eq!(classify(scheme("2/4/4/4"), 4), SegmentState::Healthy);
        assert_eq!(classify(scheme("2/4/4/4"), 3), SegmentState::BelowThreshold);
    }

    #[test]
    fn exit_status_reports_the_worst_segment() {
        use SegmentState::*;
        assert_eq!(exit_status(&[]), EXIT_HEALTHY);
        assert_eq!(exit_status(&[Healthy, Healthy]), EXIT_HEALTHY);
        assert_eq!(
            exit_status(&[Healthy, BelowThreshold]),
            EXIT_BELOW_THRESHOLD
        );
        assert_eq!(exit_status(&[BelowThreshold, Lost, Healthy]), EXIT_LOST);
        assert_ne!(EXIT_BELOW_THRESHOLD, 1);
        assert_ne!(EXIT_LOST, 1);
    }

    #[test]
    fn only_missing_indices_are_regenerated_from_data_pieces_first() {
        let s = scheme("4/6/8/10");
        assert_eq!(missing_indices(s, &[0, 2, 3, 5, 9]), vec![1, 4, 6, 7, 8]);
        assert!(missing_indices(s, &(0..10).collect::<Vec<_>>()).is_empty());
        assert_eq!(fetch_order(4, &[9, 5, 3, 2, 0, 7]), vec![0, 2, 3, 5, 7, 9]);
    }

    fn cand(i: u8, net: u8) -> NodeCandidate {
        let id = shoal_proto::Identity::from_seed([i; 32]);
        NodeCandidate {
            id: id.node_id(),
            public_key: Some(*id.public_key()),
            address: SocketAddr::from(([127, 0, net, i], 7000)),
            free_space: 1 << 30,
        }
    }

    #[test]
    fn repair_placement_avoids_holders_their_subnets_and_bad_nodes() {
        // 14 nodes on 12 subnets: nodes 13 and 14 share subnets 1 and 2.
        let mut c: Vec<_> = (1..=12).map(|i| cand(i, i)).collect();
        c.push(cand(13, 1));
        c.push(cand(14, 2));
        // Pieces stay on nodes 1..=4 (subnets 1..=4); node 5 held one that was lost.
        let kept: Vec<IpAddr> = c[..4].iter().map(|n| n.address.ip()).collect();
        let holders: HashSet<NodeId> = c[..5].iter().map(|n| n.id).collect();
        let mut history = HashMap::new();
        history.insert(
            c[5].id,
            NodeStats {
                failed_audits: 1,
                ..NodeStats::default()
            },
        );
        for seed in 0..50 {
            let picked = place_repair(&c, &history, &holders, &kept, 6, 100, seed).unwrap();
            // Allowed: nodes 7..=12 (node 6 failed an audit; 13, 14 share kept subnets).
            assert_eq!(picked.len(), 6);
            for p in &picked {
                assert!(!holders.contains(&p.id));
                assert_ne!(p.id, c[5].id);
                assert!(!kept.iter().any(|ip| subnet(*ip) == subnet(p.address.ip())));
            }
            let nets: HashSet<_> = picked.iter().map(|p| subnet(p.address.ip())).collect();
            assert_eq!(nets.len(), picked.len());
        }
        // More wanted than allowed: as many as fit.
        assert_eq!(
            place_repair(&c, &history, &holders, &kept, 9, 100, 1)
                .unwrap()
                .len(),
            6
        );
        // None fits: an error.
        let everyone: HashSet<NodeId> = c.iter().map(|n| n.id).collect();
        assert!(place_repair(&c, &history, &everyone, &kept, 2, 100, 1).is_err());
    }

    #[test]
    fn renewals_are_one_order_per_node_up_to_the_bound() {
        let a = NodeAddress {
            id: NodeId([1; 32]),
            address: "127.0.1.1:1".parse().unwrap(),
        };
        let b = NodeAddress {
            id: NodeId([2; 32]),
            address: "127.0.2.1:1".parse().unwrap(),
        };
        let mut pieces: Vec<(NodeAddress, PieceId)> = (0..2500u32)
            .map(|i| {
                let mut id = [0u8; 32];
                id[..4].copy_from_slice(&i.to_be_bytes());
                (a, PieceId(id))
            })
            .collect();
        pieces.push((b, PieceId([9; 32])));
        pieces.push((b, PieceId([9; 32])));
        let batches = renew_batches(pieces);
        let sizes: Vec<(NodeId, usize)> = batches.iter().map(|(n, p)| (n.id, p.len())).collect();
        assert_eq!(
            sizes,
            vec![
                (a.id, MAX_RENEW_PIECES),
                (a.id, MAX_RENEW_PIECES),
                (a.id, 2500 - 2 * MAX_RENEW_PIECES),
                (b.id, 1),
            ]
        );
    }

    #[test]
    fn audits_read_a_bounded_fraction_of_distinct_blocks() {
        assert_eq!(audit_blocks(0, 0.5, 1), Vec::<u32>::new());
        assert_eq!(audit_blocks(100, 0.0, 1).len(), 1);
        assert_eq!(audit_blocks(100, 0.05, 1).len(), 5);
        assert_eq!(audit_blocks(100, 1.0, 1).len(), MAX_AUDIT_BLOCKS);
        assert_eq!(audit_blocks(3, 1.0, 1).len(), 3);
        assert_eq!(audit_blocks(10, f64::NAN, 1).len(), 1);
        let b = audit_blocks(1000, 1.0, 7);
        let distinct: HashSet<_> = b.iter().collect();
        assert_eq!(distinct.len(), b.len());
        assert!(b.iter().all(|i| *i < 1000));
        assert_ne!(audit_blocks(1000, 1.0, 7), audit_blocks(1000, 1.0, 8));
    }
}
