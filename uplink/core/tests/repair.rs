//! Renew, check and repair over the in-memory piece store: the library edges of
//! `uplink::maintain`, driven by the same code the CLI runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use shoal_proto::{NodeId, PieceId};
use shoal_test_kit::wait_until;
use uplink::catalog::Catalog;
use uplink::health::{EXIT_BELOW_THRESHOLD, EXIT_HEALTHY, EXIT_LOST, SegmentState};
use uplink::maintain::{CheckOptions, Maintenance, Scope, spawn_renewer};
use uplink::testing::{Behaviour, MemoryPieceStore, MemoryRecords};
use uplink::{Access, PutOptions, RootSecret, StaticNodes, Uplink, UplinkConfig};

fn config() -> UplinkConfig {
    UplinkConfig {
        scheme: "4/6/8/10".parse().unwrap(),
        allow_smaller_scheme: false,
        long_tail_grace: Duration::from_secs(5),
        piece_timeout: Duration::from_secs(5),
        catalog_scheme: "2/3/4/5".parse().unwrap(),
        ..UplinkConfig::default()
    }
}

fn uplink(store: &MemoryPieceStore, network_catalog: bool) -> Uplink {
    let access = Access::new(RootSecret::from_bytes([4; 32]), vec![]);
    let nodes = Arc::new(StaticNodes(store.candidates()));
    let up = if network_catalog {
        Uplink::with_network_catalog(
            access,
            Arc::new(store.clone()),
            nodes,
            Catalog::temporary().unwrap(),
            config(),
            Arc::new(MemoryRecords::new()),
        )
        .unwrap()
    } else {
        Uplink::new(
            access,
            Arc::new(store.clone()),
            nodes,
            Catalog::temporary().unwrap(),
            config(),
        )
        .unwrap()
    };
    up.create_bucket("keep").unwrap();
    up
}

fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
        .collect()
}

async fn put(up: &Uplink, key: &str, bytes: &[u8], expires: Option<Duration>) {
    let opts = PutOptions {
        size_hint: Some(bytes.len() as u64),
        expires,
        ..PutOptions::default()
    };
    up.put("keep", key, bytes, opts).await.unwrap();
}

async fn get(up: &Uplink, key: &str) -> Vec<u8> {
    let mut out = Vec::new();
    up.get("keep", key, None, &mut out, None).await.unwrap();
    out
}

fn pieces(up: &Uplink, key: &str) -> Vec<(NodeId, PieceId)> {
    up.stat("keep", key).unwrap().segments()[0]
        .pieces
        .iter()
        .map(|p| (NodeId(p.node_id), PieceId(p.piece_id)))
        .collect()
}

fn all() -> Scope {
    Scope {
        bucket: Some("keep".into()),
        prefix: String::new(),
        recursive: true,
    }
}

#[tokio::test]
async fn renew_extends_every_piece_once_per_node_and_skips_expiring_objects() {
    let store = MemoryPieceStore::with_nodes(12);
    let up = uplink(&store, true);
    put(&up, "a", &data(200_000, 1), None).await;
    put(&up, "b", &data(300_000, 2), None).await;
    put(
        &up,
        "temp",
        &data(100_000, 3),
        Some(Duration::from_secs(3600)),
    )
    .await;
    up.flush().await.unwrap();
    let lease = |key: &str| {
        pieces(&up, key)
            .iter()
            .map(|(n, p)| store.lease(n, p).unwrap())
            .min()
            .unwrap()
    };
    let (a0, temp0) = (lease("a"), lease("temp"));
    let year = Duration::from_secs(365 * 24 * 3600);
    let r = Maintenance::new(&up)
        .renew(&Scope::everything(), Some(year))
        .await
        .unwrap();
    // 2 objects × 10 pieces, plus the catalog's delta: at most one order per node.
    assert!(r.catalog_blobs >= 1, "{r:?}");
    assert_eq!(r.renewed, r.pieces, "{r:?}");
    // The delta is small: whole copies, 2/3/4/5 fitted to 1/2/3/4 (at least 3 kept).
    assert!(r.pieces >= 20 + 3, "{r:?}");
    assert_eq!(r.orders, r.nodes, "{r:?}");
    assert!(r.nodes <= 12);
    assert!(lease("a") > a0 + 200 * 24 * 3600 * 1000);
    assert!(lease("b") > a0 + 200 * 24 * 3600 * 1000);
    assert_eq!(
        lease("temp"),
        temp0,
        "an object stored to expire is not renewed"
    );
    // Idempotent and never shorter: a shorter renewal leaves the leases alone.
    let before = lease("a");
    let r = Maintenance::new(&up)
        .renew(&all(), Some(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(r.renewed, 20);
    assert_eq!(
        r.catalog_blobs, 0,
        "a bucket scope leaves the catalog alone"
    );
    assert_eq!(lease("a"), before);
}

#[tokio::test]
async fn check_and_repair_bring_a_segment_back_from_below_its_threshold() {
    let store = MemoryPieceStore::with_nodes(16);
    let up = uplink(&store, false);
    let bytes = data(1_500_000, 9);
    put(&up, "obj", &bytes, None).await;
    // Sturdier (k = 2, repair at 3): healthy whichever 6 nodes fail below.
    let opts = PutOptions {
        scheme: Some("2/3/4/10".parse().unwrap()),
        ..PutOptions::default()
    };
    up.put("keep", "fine", &data(200_000, 5)[..], opts)
        .await
        .unwrap();
    let holders = pieces(&up, "obj");
    assert_eq!(holders.len(), 10);
    let fine_before = up.stat("keep", "fine").unwrap();

    let r = Maintenance::new(&up)
        .check(&all(), CheckOptions::default())
        .await
        .unwrap();
    assert_eq!(r.exit_status(), EXIT_HEALTHY);
    // 5 holders die, one more serves corrupt data: 4 healthy pieces = k.
    for (n, _) in &holders[..5] {
        store.set_behaviour(n, Behaviour::Dead);
    }
    store.set_behaviour(&holders[5].0, Behaviour::Corrupt);
    let r = Maintenance::new(&up)
        .check(
            &Scope {
                bucket: Some("keep".into()),
                prefix: "obj".into(),
                recursive: false,
            },
            CheckOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(r.objects, 1);
    assert_eq!(r.segments[0].healthy, 4);
    assert_eq!(r.segments[0].state, SegmentState::BelowThreshold);
    assert_eq!(r.exit_status(), EXIT_BELOW_THRESHOLD);
    assert_eq!(r.segments[0].problems.len(), 6);
    // The corrupt node's failed audit keeps it out of placements from now on.
    let stats = up.catalog().node_stats().unwrap();
    assert!(stats[&holders[5].0].is_excluded());
    assert!(!stats[&holders[0].0].is_excluded(), "dead is not dishonest");

    let report = Maintenance::new(&up)
        .repair(&all(), CheckOptions::default())
        .await
        .unwrap();
    let fine_state = report
        .check
        .segments
        .iter()
        .find(|s| s.key == "fine")
        .unwrap()
        .state;
    assert_eq!(fine_state, SegmentState::Healthy, "{report:?}");
    assert_eq!(report.segments_repaired, 1, "{report:?}");
    assert_eq!(report.pieces_uploaded, 6, "{report:?}");
    assert_eq!(report.exit_status(), EXIT_HEALTHY, "{report:?}");
    let after = pieces(&up, "obj");
    assert_eq!(after.len(), 10);
    let old: HashSet<NodeId> = holders.iter().map(|h| h.0).collect();
    let new: Vec<NodeId> = after
        .iter()
        .map(|p| p.0)
        .filter(|n| !old.contains(n))
        .collect();
    assert_eq!(
        new.len(),
        6,
        "regenerated pieces went to nodes new to the segment"
    );
    let indices: HashSet<u16> = up.stat("keep", "obj").unwrap().segments()[0]
        .pieces
        .iter()
        .map(|p| p.index)
        .collect();
    assert_eq!(indices.len(), 10, "every piece index once");
    // The healthy object was not touched.
    assert_eq!(up.stat("keep", "fine").unwrap(), fine_before);
    // Lose 6 of the 10 now: only the regenerated pieces and none of the old remain ≥ k.
    for (n, _) in &after {
        if old.contains(n) {
            store.set_behaviour(n, Behaviour::Dead);
        }
    }
    assert_eq!(get(&up, "obj").await, bytes);
    let r = Maintenance::new(&up)
        .check(&all(), CheckOptions::default())
        .await
        .unwrap();
    assert_eq!(
        r.segments.iter().find(|s| s.key == "obj").unwrap().healthy,
        6
    );
    // Below k: lost, and repair says so instead of making things up.
    for n in new.iter().take(3) {
        store.set_behaviour(n, Behaviour::Dead);
    }
    let obj = Scope {
        bucket: Some("keep".into()),
        prefix: "obj".into(),
        recursive: false,
    };
    let report = Maintenance::new(&up)
        .repair(&obj, CheckOptions::default())
        .await
        .unwrap();
    assert_eq!(report.exit_status(), EXIT_LOST);
    assert_eq!(report.segments_repaired, 0);
}

#[tokio::test]
async fn the_background_renewer_renews_until_stopped() {
    let store = MemoryPieceStore::with_nodes(12);
    let up = uplink(&store, false);
    put(&up, "a", &data(200_000, 1), None).await;
    let (node, piece) = pieces(&up, "a")[0];
    let first = store.lease(&node, &piece).unwrap();
    let renewer = spawn_renewer(up.clone(), Duration::from_millis(20));
    wait_until(Duration::from_secs(20), "a renewal", || async {
        store.lease(&node, &piece).unwrap() > first + 5
    })
    .await
    .unwrap();
    // Returns once the renewal in progress (if any) has ended.
    renewer.stop().await;
}
