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

use satellite_free_discovery::KnownClosest;
use serde::{Deserialize, Serialize};
use shoal_proto::{NodeId, RecordKey};

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

/// Record keys whose closest nodes are kept at most, newest found first.
pub const MAX_KNOWN_CLOSEST: usize = 64;
/// Node records kept per key at most (the DHT's k).
const MAX_CLOSEST_NODES: usize = 20;
/// A kept closest set found again is written anew once it is this much older (ms):
/// half the DHT's TTL for reading from it, so a key in use never ages out.
const REFRESH_CLOSEST_MS: u64 = 15 * 60_000;
/// Name of the value in the catalog's sync state.
const CLOSEST_KEY: &str = "record_closest";

/// The closest nodes of one record key as the DHT last found them (see
/// [`DhtConfig::known_closest`](satellite_free_discovery::DhtConfig::known_closest)): a
/// command reads the catalog's records from them in one round, before it joins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct KeptClosest {
    #[serde(with = "crate::hexser")]
    key: [u8; 32],
    found_ms: u64,
    /// Signed node records in their wire encoding, hex; checked again when read back.
    nodes: Vec<String>,
}

/// The closest sets kept in `catalog` (empty if none or unreadable: a fallback, never
/// a reason to fail).
pub fn load_closest(catalog: &Catalog) -> Vec<KnownClosest> {
    let kept = match catalog.sync_value::<Vec<KeptClosest>>(CLOSEST_KEY) {
        Ok(v) => v.unwrap_or_default(),
        Err(e) => {
            tracing::debug!(error = %e, "kept closest nodes unreadable; starting afresh");
            Vec::new()
        }
    };
    kept.into_iter()
        .map(|k| KnownClosest {
            key: RecordKey(k.key),
            found_unix_ms: k.found_ms,
            nodes: k
                .nodes
                .iter()
                .filter_map(|n| crate::hexser::vec::decode(n))
                .collect(),
        })
        .collect()
}

/// Keeps what the DHT `found` in `catalog`, merged with what is there; writes only when
/// a set changed or is due for a refresh (see [`merge_closest`]).
pub fn keep_closest(catalog: &Catalog, found: Vec<KnownClosest>) -> Result<(), CatalogError> {
    match merge_closest(&load_closest(catalog), found) {
        Some(merged) => save_closest(catalog, &merged),
        None => Ok(()),
    }
}

/// Writes `sets` (as [`merge_closest`] made them) to `catalog`, replacing what is kept.
pub fn save_closest(catalog: &Catalog, sets: &[KnownClosest]) -> Result<(), CatalogError> {
    let kept: Vec<KeptClosest> = sets
        .iter()
        .map(|k| KeptClosest {
            key: k.key.0,
            found_ms: k.found_unix_ms,
            nodes: k
                .nodes
                .iter()
                .map(|n| shoal_proto::ids::to_hex(n))
                .collect(),
        })
        .collect();
    catalog.set_sync_value(CLOSEST_KEY, &kept)
}

/// `old` with `found` merged in (one set per key, the later found), newest first, at
/// most [`MAX_KNOWN_CLOSEST`] keys of [`MAX_CLOSEST_NODES`] nodes; `None` when nothing
/// changed enough to write: every found set equal to the kept one, found within
/// [`REFRESH_CLOSEST_MS`] of it.
pub fn merge_closest(old: &[KnownClosest], found: Vec<KnownClosest>) -> Option<Vec<KnownClosest>> {
    let mut by_key: HashMap<[u8; 32], KnownClosest> =
        old.iter().map(|k| (k.key.0, k.clone())).collect();
    let mut changed = false;
    for mut f in found {
        f.nodes.truncate(MAX_CLOSEST_NODES);
        let same = by_key.get(&f.key.0).is_some_and(|k| {
            k.nodes == f.nodes
                && f.found_unix_ms.saturating_sub(k.found_unix_ms) < REFRESH_CLOSEST_MS
        });
        if !same
            && by_key
                .get(&f.key.0)
                .is_none_or(|k| k.found_unix_ms <= f.found_unix_ms)
        {
            changed = true;
            by_key.insert(f.key.0, f);
        }
    }
    if !changed {
        return None;
    }
    let mut all: Vec<KnownClosest> = by_key.into_values().collect();
    all.sort_by(|a, b| {
        b.found_unix_ms
            .cmp(&a.found_unix_ms)
            .then(a.key.0.cmp(&b.key.0))
    });
    all.truncate(MAX_KNOWN_CLOSEST);
    Some(all)
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

    fn closest(key: u8, found: u64, nodes: &[u8]) -> KnownClosest {
        KnownClosest {
            key: RecordKey([key; 32]),
            found_unix_ms: found,
            nodes: nodes.iter().map(|n| vec![*n; 3]).collect(),
        }
    }

    #[test]
    fn closest_sets_merge_by_key_newest_first_bounded_and_unchanged_ones_are_not_written() {
        let old = vec![closest(1, 1_000, &[1, 2]), closest(2, 2_000, &[3])];
        // The same set found again soon after: nothing to write.
        assert_eq!(merge_closest(&old, vec![closest(1, 5_000, &[1, 2])]), None);
        assert_eq!(merge_closest(&old, Vec::new()), None);
        // A set that changed, or one found long after it was kept, is written.
        let merged = merge_closest(&old, vec![closest(1, 5_000, &[1, 4])]).unwrap();
        let keys: Vec<(u8, u64)> = merged
            .iter()
            .map(|k| (k.key.0[0], k.found_unix_ms))
            .collect();
        assert_eq!(keys, vec![(1, 5_000), (2, 2_000)]);
        assert_eq!(merged[0].nodes, vec![vec![1; 3], vec![4; 3]]);
        let later = 1_000 + REFRESH_CLOSEST_MS;
        assert!(merge_closest(&old, vec![closest(1, later, &[1, 2])]).is_some());
        // An older finding never replaces a newer one.
        assert_eq!(merge_closest(&old, vec![closest(2, 10, &[9])]), None);
        // Bounded in keys and in nodes per key.
        let many: Vec<KnownClosest> = (0..=255u8)
            .map(|k| closest(k, u64::from(k), &(0..40).collect::<Vec<u8>>()))
            .collect();
        let merged = merge_closest(&[], many).unwrap();
        assert_eq!(merged.len(), MAX_KNOWN_CLOSEST);
        assert_eq!(merged[0].key.0[0], 255);
        assert!(merged.iter().all(|k| k.nodes.len() == MAX_CLOSEST_NODES));
    }

    #[test]
    fn closest_sets_survive_a_reopen_of_the_catalog() {
        let dir = tempfile::tempdir().unwrap();
        let writer = crate::catalog::WriterId::random();
        {
            let c = Catalog::open(dir.path(), writer).unwrap();
            keep_closest(&c, vec![closest(7, 1_000, &[1, 2])]).unwrap();
            c.flush().unwrap();
        }
        let c = Catalog::open(dir.path(), writer).unwrap();
        assert_eq!(load_closest(&c), vec![closest(7, 1_000, &[1, 2])]);
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
