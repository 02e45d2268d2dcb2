//! Nothing expires with its writer: a writer's machine is lost, and a year of leases and
//! record lifetimes passes (this process's clock moved forward, see
//! `shoal_proto::time::test_clock`). Another writer that runs `renew` now and then keeps
//! everything a new machine needs: it takes a snapshot covering the lost writer's
//! deltas, and renews its head record and head delta.
//!
//! Alone in its test binary: the clock offset is process-wide.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use shoal_proto::time::test_clock;
use uplink::catalog::Catalog;
use uplink::maintain::{CheckOptions, Maintenance, Scope};
use uplink::testing::{MemoryPieceStore, MemoryRecords};
use uplink::{Access, PutOptions, RootSecret, StaticNodes, Uplink, UplinkConfig};

const DAY: Duration = Duration::from_secs(24 * 3600);

fn writer(store: &MemoryPieceStore, records: &Arc<MemoryRecords>) -> Uplink {
    Uplink::with_network_catalog(
        Access::new(RootSecret::from_bytes([9; 32]), vec![]),
        Arc::new(store.clone()),
        Arc::new(StaticNodes(store.candidates())),
        Catalog::temporary().unwrap(),
        UplinkConfig {
            scheme: "2/3/4/5".parse().unwrap(),
            catalog_scheme: "2/3/4/4".parse().unwrap(),
            segment_blocks: 4,
            snapshot_every: 4,
            piece_timeout: Duration::from_secs(2),
            long_tail_grace: Duration::from_millis(100),
            ..UplinkConfig::default()
        },
        records.clone(),
    )
    .unwrap()
}

async fn put(up: &Uplink, key: &str, bytes: &[u8]) {
    let opts = PutOptions {
        size_hint: Some(bytes.len() as u64),
        ..PutOptions::default()
    };
    up.put("bkt", key, bytes, opts).await.unwrap();
    up.flush().await.unwrap();
}

async fn get(up: &Uplink, key: &str) -> Vec<u8> {
    let mut out = Vec::new();
    up.get("bkt", key, None, &mut out, None).await.unwrap();
    out
}

#[tokio::test]
async fn a_writer_lost_for_a_year_takes_none_of_its_changes_with_it() {
    let store = MemoryPieceStore::with_nodes(12);
    let records = Arc::new(MemoryRecords::new());
    let (lost, live) = (writer(&store, &records), writer(&store, &records));
    lost.create_bucket("bkt").unwrap();
    lost.flush().await.unwrap();
    for i in 0..6 {
        put(&lost, &format!("early{i}"), format!("e{i}").as_bytes()).await;
    }
    live.pull().await.unwrap();
    put(&live, "from-live", b"live").await;
    // The lost writer's last changes, in deltas no snapshot covers yet.
    lost.pull().await.unwrap();
    put(
        &lost,
        "last-words",
        b"written just before the machine was lost",
    )
    .await;
    put(&lost, "really-last", b"and this").await;
    let lost_id = lost.catalog().writer();
    drop(lost);
    live.pull().await.unwrap();
    assert_eq!(get(&live, "really-last").await, b"and this");

    // Two months on: `check` says the lost writer's uncovered deltas are renewed by no
    // live writer.
    test_clock::advance(60 * DAY);
    let check = Maintenance::new(&live)
        .check(&Scope::everything(), CheckOptions::default())
        .await
        .unwrap();
    let elsewhere = &check.catalog_renewed_elsewhere;
    assert_eq!(elsewhere.len(), 1, "{elsewhere:?}");
    assert_eq!(elsewhere[0].writer, lost_id);
    assert!(elsewhere[0].presumed_gone, "{elsewhere:?}");

    // The live writer renews every two months for a year; nodes collect what expires.
    let mut snapshots = 0;
    for _ in 0..6 {
        let r = Maintenance::new(&live)
            .renew(&Scope::everything(), None)
            .await
            .unwrap();
        snapshots += usize::from(r.catalog_snapshot);
        assert!(
            r.catalog_records >= 1,
            "the lost writer's head at least (a record put just now is not renewed): {r:?}"
        );
        assert_eq!(r.missing, 0, "{r:?}");
        test_clock::advance(60 * DAY);
        store.collect_expired();
    }
    assert_eq!(snapshots, 1, "one snapshot covers the lost writer's deltas");
    let check = Maintenance::new(&live)
        .check(&Scope::everything(), CheckOptions::default())
        .await
        .unwrap();
    assert!(check.catalog_renewed_elsewhere.is_empty());
    assert_eq!(check.exit_status(), 0, "{check:?}");

    // A year and two months on, a new machine recovers everything, the lost writer's
    // last changes included, with nothing unavailable.
    let fresh = writer(&store, &records);
    let report = fresh.pull().await.unwrap();
    assert!(report.unavailable.is_empty(), "{report:?}");
    assert_eq!(
        get(&fresh, "last-words").await,
        b"written just before the machine was lost"
    );
    assert_eq!(get(&fresh, "really-last").await, b"and this");
    assert_eq!(get(&fresh, "early0").await, b"e0");
    assert_eq!(get(&fresh, "from-live").await, b"live");

    // Without anyone renewing, the same year takes it all: the test is not vacuous.
    test_clock::advance(365 * DAY);
    store.collect_expired();
    let late = writer(&store, &records);
    assert!(
        late.pull().await.unwrap().found_nothing(),
        "records expired"
    );
}
