//! Nodes this uplink has verified, kept in its catalog store: ways into the DHT when
//! the grant's bootstrap entries do not answer (no node is special).
//!
//! Every time the uplink joins the DHT or samples its membership, the members that
//! answered it (their signed records checked by the DHT) are remembered with the time
//! they were last seen: at most [`MAX_KNOWN_PEERS`], newest first, at most
//! [`PER_SUBNET`] per /24 (/48) so that one operator cannot fill the list. A join tries
//! the grant's entries first, then these, newest first ([`bootstrap_list`]); the DHT
//! joins through any that answers.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use shoal_proto::NodeId;

use crate::catalog::{Catalog, CatalogError};
use crate::select::subnet;

/// Most nodes remembered.
pub const MAX_KNOWN_PEERS: usize = 64;
/// Most nodes remembered per subnet.
pub const PER_SUBNET: usize = 2;
/// Name of the value in the catalog's sync state.
const KEY: &str = "known_peers";

/// One node this uplink has verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownPeer {
    #[serde(with = "crate::hexser")]
    pub id: [u8; 32],
    pub address: SocketAddr,
    /// When it last answered (unix ms).
    pub last_seen_ms: u64,
}

impl KnownPeer {
    pub fn node_id(&self) -> NodeId {
        NodeId(self.id)
    }
}

/// The nodes remembered in `catalog`, newest first (empty if none or unreadable: they
/// are a fallback, never a reason to fail).
pub fn load(catalog: &Catalog) -> Vec<KnownPeer> {
    match catalog.sync_value::<Vec<KnownPeer>>(KEY) {
        Ok(Some(v)) => v,
        Ok(None) => Vec::new(),
        Err(e) => {
            tracing::debug!(error = %e, "known peers unreadable; starting afresh");
            Vec::new()
        }
    }
}

/// Remembers `seen` (node, address, last seen) in `catalog`, merged with what is there.
pub fn remember(
    catalog: &Catalog,
    seen: impl IntoIterator<Item = KnownPeer>,
) -> Result<(), CatalogError> {
    let merged = merge(load(catalog), seen);
    catalog.set_sync_value(KEY, &merged)
}

/// `old` and `seen` merged: one entry per node (its latest sighting and address),
/// newest first, at most [`PER_SUBNET`] per subnet and [`MAX_KNOWN_PEERS`] in all.
pub fn merge(old: Vec<KnownPeer>, seen: impl IntoIterator<Item = KnownPeer>) -> Vec<KnownPeer> {
    let mut by_id: HashMap<[u8; 32], KnownPeer> = HashMap::new();
    for p in old.into_iter().chain(seen) {
        match by_id.get(&p.id) {
            Some(q) if q.last_seen_ms >= p.last_seen_ms => {}
            _ => {
                by_id.insert(p.id, p);
            }
        }
    }
    let mut all: Vec<KnownPeer> = by_id.into_values().collect();
    all.sort_by(|a, b| b.last_seen_ms.cmp(&a.last_seen_ms).then(a.id.cmp(&b.id)));
    let mut per_subnet: HashMap<crate::select::Subnet, usize> = HashMap::new();
    all.retain(|p| {
        let n = per_subnet.entry(subnet(p.address.ip())).or_default();
        *n += 1;
        *n <= PER_SUBNET
    });
    all.truncate(MAX_KNOWN_PEERS);
    all
}

/// Where to join: the `configured` entries (the grant's, those given on the command
/// line) in their order, then the `known` nodes newest first; each node once.
pub fn bootstrap_list(
    configured: &[(NodeId, SocketAddr)],
    known: &[KnownPeer],
) -> Vec<(NodeId, SocketAddr)> {
    let mut seen = HashSet::new();
    configured
        .iter()
        .copied()
        .chain(known.iter().map(|p| (p.node_id(), p.address)))
        .filter(|(id, _)| seen.insert(*id))
        .collect()
}

/// Up to `n` entries of `candidates` on distinct subnets (the first of each subnet, in
/// order), skipping the nodes in `skip`: diverse bootstrap entries for a new grant.
pub fn diverse(
    candidates: &[(NodeId, SocketAddr)],
    skip: &[NodeId],
    n: usize,
) -> Vec<(NodeId, SocketAddr)> {
    let mut subnets = HashSet::new();
    candidates
        .iter()
        .filter(|(id, _)| !skip.contains(id))
        .filter(|(_, a)| subnets.insert(subnet(a.ip())))
        .take(n)
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(i: u8, net: u8, seen: u64) -> KnownPeer {
        KnownPeer {
            id: [i; 32],
            address: SocketAddr::from(([127, 0, net, i], 7000)),
            last_seen_ms: seen,
        }
    }

    #[test]
    fn merge_keeps_the_latest_sighting_newest_first_and_bounded() {
        let old = vec![peer(1, 1, 10), peer(2, 2, 20)];
        let merged = merge(old, [peer(1, 1, 30), peer(2, 2, 5), peer(3, 3, 25)]);
        let order: Vec<(u8, u64)> = merged.iter().map(|p| (p.id[0], p.last_seen_ms)).collect();
        assert_eq!(order, vec![(1, 30), (3, 25), (2, 20)]);
        // At most two per subnet: the newest two stay.
        let merged = merge(Vec::new(), (1..=5).map(|i| peer(i, 9, u64::from(i))));
        let ids: Vec<u8> = merged.iter().map(|p| p.id[0]).collect();
        assert_eq!(ids, vec![5, 4]);
        // Never more than the bound.
        let many = (0..200u64).map(|i| KnownPeer {
            id: [(i % 256) as u8; 32],
            address: SocketAddr::from(([10, (i / 256) as u8, (i % 256) as u8, 1], 1)),
            last_seen_ms: i,
        });
        let merged = merge(Vec::new(), many);
        assert_eq!(merged.len(), MAX_KNOWN_PEERS);
        assert_eq!(merged[0].last_seen_ms, 199);
    }

    #[test]
    fn the_grant_comes_first_then_known_nodes_newest_first_each_once() {
        let grant = [(NodeId([1; 32]), SocketAddr::from(([127, 0, 1, 1], 1)))];
        let known = merge(Vec::new(), [peer(1, 1, 50), peer(2, 2, 10), peer(3, 3, 40)]);
        let list = bootstrap_list(&grant, &known);
        let ids: Vec<u8> = list.iter().map(|(id, _)| id.0[0]).collect();
        assert_eq!(ids, vec![1, 3, 2]);
        // The grant's address wins for a node in both.
        assert_eq!(list[0].1, grant[0].1);
        assert!(bootstrap_list(&[], &[]).is_empty());
    }

    #[test]
    fn diverse_entries_are_on_distinct_subnets_and_skip_the_given_ones() {
        let c: Vec<(NodeId, SocketAddr)> = (1..=12u8)
            .map(|i| {
                (
                    NodeId([i; 32]),
                    SocketAddr::from(([127, 0, i.div_ceil(2), i], 1)),
                )
            })
            .collect();
        let picked = diverse(&c, &[NodeId([1; 32])], 8);
        let ids: Vec<u8> = picked.iter().map(|(id, _)| id.0[0]).collect();
        assert_eq!(ids, vec![2, 3, 5, 7, 9, 11]);
        assert_eq!(diverse(&c, &[], 3).len(), 3);
    }

    #[test]
    fn known_peers_survive_a_reopen_of_the_catalog() {
        let dir = tempfile::tempdir().unwrap();
        let writer = crate::catalog::WriterId::random();
        {
            let c = Catalog::open(dir.path(), writer).unwrap();
            remember(&c, [peer(1, 1, 10), peer(2, 2, 20)]).unwrap();
            c.flush().unwrap();
        }
        let c = Catalog::open(dir.path(), writer).unwrap();
        let ids: Vec<u8> = load(&c).iter().map(|p| p.id[0]).collect();
        assert_eq!(ids, vec![2, 1]);
    }
}
