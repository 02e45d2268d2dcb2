//! Scheme planning: the candidate pool, and the largest scheme it can hold (shrinking
//! slack first, then promised pieces, then `k`).

use std::collections::HashSet;

use shoal_proto::NodeId;

use crate::codec::Scheme;
use crate::segment::{Layout, shard_size_for};
use crate::select::{SelectionError, capacity};
use crate::store::NodeCandidate;

/// Candidates sampled per object up front: twice `total`, plus a few, so that nodes that
/// fail during the upload can be replaced without shrinking the scheme.
pub(super) fn pool_size(scheme: Scheme) -> usize {
    usize::from(scheme.total) * 2 + 8
}

/// Adds the candidates of `fresh` not yet in `pool`; returns how many were new.
pub(super) fn merge_candidates(pool: &mut Vec<NodeCandidate>, fresh: Vec<NodeCandidate>) -> usize {
    let known: HashSet<NodeId> = pool.iter().map(|c| c.id).collect();
    let before = pool.len();
    let mut added = HashSet::new();
    pool.extend(
        fresh
            .into_iter()
            .filter(|c| !known.contains(&c.id) && added.insert(c.id)),
    );
    pool.len() - before
}

/// How one segment is stored: its scheme and the sizes that follow from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SegmentShape {
    pub(super) scheme: Scheme,
    pub(super) shard: usize,
    pub(super) piece: u64,
}

/// The piece size of a segment of at most `sealed_bound` bytes under `scheme`.
pub(super) fn piece_for(scheme: Scheme, sealed_bound: u64) -> u64 {
    let k = usize::from(scheme.k);
    Layout {
        k,
        shard_size: shard_size_for(sealed_bound, k),
        sealed_size: sealed_bound,
    }
    .piece_size()
}

/// Picks the scheme for a segment of at most `sealed_bound` bytes: `requested` if the
/// candidates not in `exclude` can hold it, else (if `allow_smaller`) the largest scheme
/// they can hold, shrunk as [`Scheme::shrink_to`] says.
pub(super) fn plan_scheme(
    requested: Scheme,
    allow_smaller: bool,
    candidates: &[NodeCandidate],
    sealed_bound: u64,
    exclude: &HashSet<NodeId>,
) -> Result<SegmentShape, SelectionError> {
    let mut scheme = requested;
    // Shrinking may lower k, which makes pieces larger and may rule out more nodes:
    // iterate (k only ever goes down, so this ends).
    for _ in 0..8 {
        let k = usize::from(scheme.k);
        let shard = shard_size_for(sealed_bound, k);
        let piece = Layout {
            k,
            shard_size: shard,
            sealed_size: sealed_bound,
        }
        .piece_size();
        let cap = capacity(candidates, piece, exclude);
        if cap >= usize::from(scheme.total) {
            return Ok(SegmentShape {
                scheme,
                shard,
                piece,
            });
        }
        let err = SelectionError {
            needed: usize::from(scheme.total),
            available: cap,
            min_free: piece,
        };
        if !allow_smaller {
            return Err(err);
        }
        match scheme.shrink_to(cap) {
            Some(s) if s != scheme => scheme = s,
            _ => return Err(err),
        }
    }
    Err(SelectionError {
        needed: usize::from(scheme.total),
        available: 0,
        min_free: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn node(i: u8, free: u64) -> NodeCandidate {
        let id = shoal_proto::Identity::from_seed([i; 32]);
        NodeCandidate {
            id: id.node_id(),
            public_key: Some(*id.public_key()),
            address: SocketAddr::from(([127, 0, i, 1], 7000)),
            free_space: free,
        }
    }

    fn nodes(n: u8) -> Vec<NodeCandidate> {
        (1..=n).map(|i| node(i, 1 << 30)).collect()
    }

    fn scheme(s: &str) -> Scheme {
        s.parse().unwrap()
    }

    const SEALED: u64 = 4 << 20;

    #[test]
    fn the_requested_scheme_is_kept_while_the_pool_can_hold_it() {
        let pool = nodes(14);
        // Two nodes failed earlier in the object: 12 left for 12 pieces.
        let failed: HashSet<NodeId> = pool[..2].iter().map(|c| c.id).collect();
        let shape = plan_scheme(scheme("4/6/8/12"), false, &pool, SEALED, &failed).unwrap();
        assert_eq!(shape.scheme, scheme("4/6/8/12"));
        assert_eq!(shape.shard, shard_size_for(SEALED, 4));
        assert!(shape.piece >= SEALED / 4);
    }

    #[test]
    fn a_short_pool_drops_total_first_then_success_and_only_then_k() {
        let pool = nodes(12);
        let failed = |n: usize| -> HashSet<NodeId> { pool[..n].iter().map(|c| c.id).collect() };
        let plan = |n| {
            plan_scheme(scheme("4/6/8/12"), true, &pool, SEALED, &failed(n))
                .unwrap()
                .scheme
                .to_string()
        };
        assert_eq!(plan(0), "4/6/8/12");
        assert_eq!(plan(1), "4/6/8/11");
        // 4 of 12 failed: the unused slack goes, not k (the old rule gave 2/4/5/8).
        assert_eq!(plan(4), "4/6/8/8");
        assert_eq!(plan(5), "4/6/7/7");
        assert_eq!(plan(6), "4/6/6/6");
        assert_eq!(plan(7), "3/5/5/5");
        // Refused instead when smaller schemes are not allowed, naming the shortfall.
        let err = plan_scheme(scheme("4/6/8/12"), false, &pool, SEALED, &failed(4)).unwrap_err();
        assert_eq!((err.needed, err.available), (12, 8));
        // One node left: nothing can be stored.
        assert!(plan_scheme(scheme("4/6/8/12"), true, &pool, SEALED, &failed(11)).is_err());
    }

    #[test]
    fn a_smaller_k_means_larger_pieces_and_full_nodes_drop_out() {
        // 8 roomy nodes and 4 with room for a piece at k = 4 but not at k = 3.
        let piece_at = |k: usize| {
            Layout {
                k,
                shard_size: shard_size_for(SEALED, k),
                sealed_size: SEALED,
            }
            .piece_size()
        };
        let mut pool = nodes(8);
        pool.extend((9..=12).map(|i| node(i, piece_at(4))));
        assert!(piece_at(3) > piece_at(4));
        let none = HashSet::new();
        let shape = plan_scheme(scheme("4/6/8/12"), true, &pool, SEALED, &none).unwrap();
        assert_eq!(shape.scheme, scheme("4/6/8/12"));
        // 4 roomy nodes failed: 8 left, k is kept and so are the small nodes.
        let failed: HashSet<NodeId> = pool[..4].iter().map(|c| c.id).collect();
        let shape = plan_scheme(scheme("4/6/8/12"), true, &pool, SEALED, &failed).unwrap();
        assert_eq!(shape.scheme, scheme("4/6/8/8"));
        // 6 roomy and 1 small failed: 5 left, below `repair`, so k drops to 3, whose
        // pieces the small nodes cannot take: the plan is checked again and shrinks on.
        let failed: HashSet<NodeId> = pool[..6].iter().chain(&pool[8..9]).map(|c| c.id).collect();
        let shape = plan_scheme(scheme("4/6/8/12"), true, &pool, SEALED, &failed).unwrap();
        assert_eq!(shape.scheme, scheme("1/2/2/2"));
        assert!(capacity(&pool, shape.piece, &failed) >= 2);
    }

    #[test]
    fn fresh_candidates_are_merged_without_duplicates() {
        let all = nodes(16);
        let mut pool = all[..10].to_vec();
        let fresh = vec![
            all[3].clone(),
            all[12].clone(),
            all[12].clone(),
            all[15].clone(),
        ];
        assert_eq!(merge_candidates(&mut pool, fresh), 2);
        assert_eq!(pool.len(), 12);
        let ids: HashSet<NodeId> = pool.iter().map(|c| c.id).collect();
        assert_eq!(ids.len(), 12);
        assert_eq!(merge_candidates(&mut pool, all[..12].to_vec()), 2);
        assert_eq!(merge_candidates(&mut pool, Vec::new()), 0);
        assert!(pool_size(scheme("4/6/8/12")) > 2 * 12);
    }
}
