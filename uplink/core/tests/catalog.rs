//! The catalog in the network, over the in-memory piece store and record store: a fresh
//! replica recovers everything, two writers merge, and tampered, missing or replayed
//! catalog data is refused with an error that names it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use shoal_proto::messages::MutableRecord;
use shoal_proto::{PieceId, Signed, pb};
use shoal_test_kit::xorshift_bytes;
use uplink::catalog::log::{self, BlobRef, HeadDelta};
use uplink::catalog::{Catalog, Listing};
use uplink::sync::UnavailableKind;
use uplink::testing::{MemoryPieceStore, MemoryRecords};
use uplink::{Access, PutOptions, RootSecret, StaticNodes, Uplink, UplinkConfig};

const ROOT: [u8; 32] = [42; 32];

fn data(n: usize, seed: u64) -> Vec<u8> {
    xorshift_bytes(n, seed)
}

fn config() -> UplinkConfig {
    UplinkConfig {
        scheme: "2/3/4/5".parse().unwrap(),
        catalog_scheme: "2/3/4/4".parse().unwrap(),
        segment_blocks: 4,
        snapshot_every: 3,
        piece_timeout: Duration::from_secs(2),
        long_tail_grace: Duration::from_millis(100),
        // Every delta a blob: these tests tamper with and lose delta blobs (inline
        // deltas have tests of their own, below).
        inline_head: 0,
        ..UplinkConfig::default()
    }
}

/// Small deltas ride in the head record; no snapshot unless asked.
fn inline_config() -> UplinkConfig {
    UplinkConfig {
        inline_head: 2048,
        snapshot_every: 1000,
        ..config()
    }
}

struct World {
    store: MemoryPieceStore,
    records: Arc<MemoryRecords>,
}

impl World {
    fn new() -> Self {
        Self {
            store: MemoryPieceStore::with_nodes(12),
            records: Arc::new(MemoryRecords::new()),
        }
    }

    /// A writer: a new config dir (empty catalog, random writer id) with the grant.
    fn writer(&self) -> Uplink {
        self.writer_with(config())
    }

    fn writer_with(&self, config: UplinkConfig) -> Uplink {
        self.uplink_with(Catalog::temporary().unwrap(), config)
    }

    /// An uplink on the catalog in `dir` (first opened as writer `writer`).
    fn on_dir(&self, dir: &std::path::Path, writer: uplink::catalog::WriterId) -> Uplink {
        self.uplink(Catalog::open(dir, writer).unwrap())
    }

    fn uplink(&self, catalog: Catalog) -> Uplink {
        self.uplink_with(catalog, config())
    }

    fn uplink_with(&self, catalog: Catalog, config: UplinkConfig) -> Uplink {
        Uplink::with_network_catalog(
            self.access(),
            Arc::new(self.store.clone()),
            Arc::new(StaticNodes(self.store.candidates())),
            catalog,
            config,
            self.records.clone(),
        )
        .unwrap()
    }

    fn writers_key(&self) -> shoal_proto::RecordKey {
        let a = self.access();
        MutableRecord::key_for(a.owner().public_key(), &log::writers_salt(a.catalog_key()))
    }

    fn listed(&self) -> std::collections::BTreeSet<uplink::catalog::WriterId> {
        let a = self.access();
        self.records
            .held(&self.writers_key())
            .map(|r| log::open_writers(a.catalog_key(), r.seq, &r.value).unwrap())
            .unwrap_or_default()
    }

    fn access(&self) -> Access {
        Access::new(RootSecret::from_bytes(ROOT), vec![])
    }

    fn head_key(&self, up: &Uplink) -> shoal_proto::RecordKey {
        let a = self.access();
        MutableRecord::key_for(
            a.owner().public_key(),
            &log::head_salt(a.catalog_key(), &up.catalog().writer()),
        )
    }

    /// The head record of `up`'s log, read from the record store.
    fn head(&self, up: &Uplink) -> log::Head {
        let r = self.records.held(&self.head_key(up)).unwrap();
        let a = self.access();
        log::open_head(a.catalog_key(), &up.catalog().writer(), r.seq, &r.value).unwrap()
    }

    /// The head delta's blob reference of `up`'s log, read from the record store.
    fn head_blob(&self, up: &Uplink) -> BlobRef {
        match self.head(up).delta {
            HeadDelta::Blob(b) => b,
            HeadDelta::Inline(_) => panic!("the head delta is inline"),
        }
    }

    fn tamper_blob(&self, blob: &BlobRef) {
        for seg in &blob.segments {
            for p in &seg.pieces {
                assert!(
                    self.store
                        .tamper_piece(&shoal_proto::NodeId(p.node_id), &PieceId(p.piece_id))
                );
            }
        }
    }
}

async fn put(up: &Uplink, bucket: &str, key: &str, bytes: &[u8]) -> uplink::PutReport {
    let opts = PutOptions {
        size_hint: Some(bytes.len() as u64),
        ..PutOptions::default()
    };
    up.put(bucket, key, bytes, opts).await.unwrap()
}

async fn get(up: &Uplink, bucket: &str, key: &str) -> Vec<u8> {
    let mut out = Vec::new();
    up.get(bucket, key, None, &mut out, None).await.unwrap();
    out
}

/// Every bucket's full listing, and every object's bytes.
async fn everything(up: &Uplink) -> BTreeMap<String, (Vec<Listing>, BTreeMap<String, Vec<u8>>)> {
    let mut out = BTreeMap::new();
    for b in up.buckets().unwrap() {
        let listing = up.list(&b.name, "", true).unwrap();
        let mut bytes = BTreeMap::new();
        for row in &listing {
            if let Listing::Object { key, .. } = row {
                bytes.insert(key.clone(), get(up, &b.name, key).await);
            }
        }
        out.insert(b.name, (listing, bytes));
    }
    out
}

/// Writer A's history: three buckets, 30 objects (a third inline), deletes and renames,
/// published over several commands (so that snapshots are taken too).
async fn history(a: &Uplink) {
    for b in ["bkt0", "bkt1", "bkt2"] {
        a.create_bucket(b).unwrap();
    }
    a.flush().await.unwrap();
    for i in 0..30u64 {
        let size = if i % 3 == 0 {
            100 + i as usize
        } else {
            5000 + 13 * i as usize
        };
        put(
            a,
            &format!("bkt{}", i % 3),
            &format!("dir/obj{i:02}"),
            &data(size, i),
        )
        .await;
        if i % 5 == 4 {
            a.flush().await.unwrap();
        }
    }
    a.delete("bkt0", "dir/obj03").await.unwrap();
    a.delete("bkt1", "dir/obj04").await.unwrap();
    a.rename("bkt2", "dir/obj05", "bkt2", "renamed/obj05")
        .unwrap();
    a.flush().await.unwrap();
}

#[tokio::test]
async fn a_fresh_replica_recovers_every_listing_and_object() {
    let w = World::new();
    let a = w.writer();
    history(&a).await;
    assert_eq!(a.catalog().pending_count(), 0, "everything is published");
    let status = a.catalog_status().unwrap();
    assert!(status.last_snapshot.is_some(), "snapshots were taken");

    let b = w.writer();
    let report = b.pull().await.unwrap();
    assert_eq!(report.snapshots, 1, "{report:?}");
    assert_eq!(everything(&b).await, everything(&a).await);
    assert!(
        b.stat("bkt0", "dir/obj03").is_err(),
        "deleted stays deleted"
    );
    assert!(b.stat("bkt2", "dir/obj05").is_err(), "renamed away");
    assert_eq!(
        get(&b, "bkt2", "renamed/obj05").await,
        data(5000 + 13 * 5, 5),
        "renamed object readable under its new key"
    );
    assert_eq!(b.list("bkt0", "", true).unwrap().len(), 9);

    // Pulling again with nothing new costs one record read per writer plus the writers
    // record, and no piece traffic.
    let (gets, _) = w.records.calls();
    let (_, downloads) = w.store.calls();
    let again = b.pull().await.unwrap();
    assert_eq!((again.deltas, again.snapshots), (0, 0));
    assert_eq!(w.records.calls().0 - gets, 1 + again.writers as u64);
    assert_eq!(w.store.calls().1, downloads, "no piece downloads");

    // A later change by A reaches B as one delta on top of what it has.
    put(&a, "bkt1", "late", b"late").await;
    a.flush().await.unwrap();
    let late = b.pull().await.unwrap();
    assert_eq!((late.deltas, late.snapshots), (1, 0), "{late:?}");
    assert_eq!(get(&b, "bkt1", "late").await, b"late");
}

#[tokio::test]
async fn two_writers_merge_and_the_later_version_of_a_common_key_wins() {
    let w = World::new();
    let (a, b) = (w.writer(), w.writer());
    a.create_bucket("shared").unwrap();
    a.flush().await.unwrap();
    b.pull().await.unwrap();
    let write = |up: Uplink, tag: &'static str| async move {
        for i in 0..10 {
            put(
                &up,
                "shared",
                &format!("{tag}{i}"),
                &data(3000 + i, i as u64),
            )
            .await;
        }
        let common = put(&up, "shared", "common", tag.as_bytes()).await;
        up.flush().await.unwrap();
        common.entry.version
    };
    let (va, vb) = tokio::join!(write(a.clone(), "from-a"), write(b.clone(), "from-b"));
    a.pull().await.unwrap();
    b.pull().await.unwrap();
    let (ea, eb) = (everything(&a).await, everything(&b).await);
    assert_eq!(ea, eb, "both replicas are equal");
    assert_eq!(ea["shared"].0.len(), 21, "every object of both writers");
    let winner = if va > vb { "from-a" } else { "from-b" };
    assert_eq!(ea["shared"].1["common"], winner.as_bytes());
    assert_eq!(a.stat("shared", "common").unwrap().version, va.max(vb));
    // Each knows both writers at their published sequence numbers.
    let (sa, sb) = (a.catalog_status().unwrap(), b.catalog_status().unwrap());
    assert_eq!(sa.writers, sb.writers);
    assert_eq!(sa.writers.len(), 2);
}

#[tokio::test]
async fn a_tampered_head_record_is_refused_and_named() {
    let w = World::new();
    let a = w.writer();
    history(&a).await;
    let key = w.head_key(&a);
    let held = w.records.held(&key).unwrap();
    // Tampered in transit: the owner's signature no longer verifies, so the DHT types
    // refuse it before the catalog sees it.
    let mut wire = pb::MutableRecord::from(&held);
    let last = wire.value.len() - 1;
    wire.value[last] ^= 1;
    assert!(Signed::<MutableRecord>::try_from(wire).is_err());
    // Tampered and re-signed (a writer bug, or a stolen signing key without the
    // catalog key): the value fails authentication.
    let mut body = (*held).clone();
    body.value[last] ^= 1;
    w.records
        .force(Signed::sign(body, w.access().owner()).unwrap());
    // The writer is refused and named; the pull goes on without it.
    let report = w.writer().pull().await.unwrap();
    let why = &report.unavailable[&a.catalog().writer()];
    assert_eq!(why.kind, UnavailableKind::Invalid, "{why}");
    assert!(why.reason.contains(&a.catalog().writer().to_hex()), "{why}");
    assert!(!report.found_nothing());
}

#[tokio::test]
async fn a_tampered_delta_is_detected_and_named() {
    let w = World::new();
    let a = w.writer();
    history(&a).await;
    let head = w.head_blob(&a);
    w.tamper_blob(&head);
    let report = w.writer().pull().await.unwrap();
    let seq = a.catalog_status().unwrap().published_seq;
    let why = &report.unavailable[&a.catalog().writer()];
    assert_eq!(why.kind, UnavailableKind::Fetch, "{why}");
    assert!(
        why.reason
            .contains(&format!("delta {seq} of writer {}", a.catalog().writer())),
        "{why}"
    );
}

#[tokio::test]
async fn a_tampered_snapshot_is_detected_and_named() {
    let w = World::new();
    let a = w.writer();
    history(&a).await;
    let snapshot_of = |a: &Uplink| {
        // The newest snapshot is named by the head delta; read it like a replica would.
        let status = a.catalog_status().unwrap();
        status.last_snapshot.unwrap()
    };
    let snap = snapshot_of(&a);
    // Find the snapshot's blob through the head delta on a healthy replica.
    let probe = w.writer();
    probe.pull().await.unwrap();
    let blob = probe.snapshot_blob().unwrap().unwrap();
    w.tamper_blob(&blob);
    // The damaged snapshot is refused (AES-GCM and piece hashes) and the replica walks
    // the writer's deltas instead: it still recovers everything.
    let fresh = w.writer();
    let report = fresh.pull().await.unwrap();
    assert_eq!(report.snapshots, 0, "{report:?}");
    assert!(report.unavailable.is_empty(), "{report:?}");
    assert_eq!(everything(&fresh).await, everything(&a).await);
    assert!(snap.entries > 0);
}

#[tokio::test]
async fn a_replayed_older_head_is_refused() {
    let w = World::new();
    let a = w.writer();
    history(&a).await;
    let key = w.head_key(&a);
    let old = w.records.held(&key).unwrap();
    put(&a, "bkt0", "newer", b"x").await;
    a.flush().await.unwrap();
    let b = w.writer();
    b.pull().await.unwrap();
    // The network (or an attacker who kept the old record) serves the older head.
    w.records.force(old.clone());
    let report = b.pull().await.unwrap();
    let why = &report.unavailable[&a.catalog().writer()];
    assert_eq!(why.kind, UnavailableKind::Rollback, "{why}");
    assert!(
        why.reason.contains(&format!(
            "offers seq {}, older than seq {}",
            old.seq,
            old.seq + 1
        )),
        "{why}"
    );
    // The DHT itself never takes the older record back either.
    w.records.unforce(&key);
    let refused = uplink::sync::CatalogRecords::put(&*w.records, old, None)
        .await
        .unwrap();
    assert_eq!(refused, 0);
}

#[tokio::test]
async fn a_head_stored_although_its_put_failed_does_not_block_later_publishes() {
    let w = World::new();
    let a = w.writer();
    history(&a).await;
    // The head record lands, but its answer is lost: the publish fails.
    put(&a, "bkt0", "landed", b"first").await;
    w.records.lose_answers_to_puts(1);
    assert!(a.flush().await.is_err());
    assert_eq!(a.catalog().pending_count(), 1, "the change stays queued");
    // A reader may have merged the head that landed.
    let b = w.writer();
    b.pull().await.unwrap();
    assert_eq!(get(&b, "bkt0", "landed").await, b"first");
    // The next publish must not offer that seq again with other contents (every holder
    // would refuse it as not newer, and the writer could never publish again).
    put(&a, "bkt0", "after", b"second").await;
    a.flush().await.unwrap();
    assert_eq!(a.catalog().pending_count(), 0);
    b.pull().await.unwrap();
    assert_eq!(get(&b, "bkt0", "after").await, b"second");
    let c = w.writer();
    c.pull().await.unwrap();
    assert_eq!(everything(&c).await, everything(&a).await);
    assert_eq!(everything(&b).await, everything(&a).await);
}

#[tokio::test]
async fn a_missing_delta_is_named() {
    let w = World::new();
    let a = w.writer();
    a.create_bucket("bkt").unwrap();
    a.flush().await.unwrap();
    put(&a, "bkt", "k", b"v").await;
    a.flush().await.unwrap();
    // Lose every piece of delta 1 (its nodes are gone); no snapshot covers it yet.
    let head = w.head_blob(&a);
    let b = w.writer();
    // Delta 2 is readable, but its chain leads to delta 1, which is damaged.
    let first = b.previous_blob(&head).await.unwrap().unwrap();
    w.tamper_blob(&first);
    let report = b.pull().await.unwrap();
    let why = &report.unavailable[&a.catalog().writer()];
    assert_eq!(why.kind, UnavailableKind::Fetch, "{why}");
    assert!(
        why.reason
            .contains(&format!("delta 1 of writer {}", a.catalog().writer())),
        "{why}"
    );
    // Nothing of the chain was merged (its changes stay all-or-nothing).
    assert!(b.stat("bkt", "k").is_err());
}

#[tokio::test]
async fn a_lost_head_record_of_one_writer_stalls_no_other_and_is_named() {
    let w = World::new();
    let (a, b, c) = (w.writer(), w.writer(), w.writer());
    a.create_bucket("shared").unwrap();
    put(&a, "shared", "from-a", b"written by a only").await;
    a.flush().await.unwrap();
    b.pull().await.unwrap();
    put(&b, "shared", "from-b", &data(6000, 1)).await;
    b.flush().await.unwrap();
    c.pull().await.unwrap();
    // The network loses A's head record (its holders restarted without keeping it).
    let a_id = a.catalog().writer();
    w.records.lose(&w.head_key(&a));
    // B writes on: its publish never reads A's head.
    put(&b, "shared", "later-b", b"after the loss").await;
    b.flush().await.unwrap();
    // C's pull merges B's news and names A, with why.
    let report = c.pull().await.unwrap();
    let why = &report.unavailable[&a_id];
    assert_eq!(why.kind, UnavailableKind::MissingHead, "{why}");
    assert!(why.reason.contains(&a_id.to_hex()), "{why}");
    assert!(!report.unavailable.contains_key(&b.catalog().writer()));
    assert_eq!(get(&c, "shared", "later-b").await, b"after the loss");
    // What C merged of A before stays readable (its pieces are on the nodes).
    assert_eq!(get(&c, "shared", "from-a").await, b"written by a only");
    // C's own writes go on, and `catalog status` names A until it is read again.
    put(&c, "shared", "from-c", b"c").await;
    c.flush().await.unwrap();
    let status = c.catalog_status().unwrap();
    assert_eq!(status.unavailable[&a_id].kind, UnavailableKind::MissingHead);
    // A fresh replica gets everything B and C hold, and names A as well (a snapshot or
    // B's merged position shows A had published).
    let d = w.writer();
    let report = d.pull().await.unwrap();
    assert_eq!(get(&d, "shared", "from-c").await, b"c");
    assert_eq!(get(&d, "shared", "later-b").await, b"after the loss");
    assert_eq!(
        report.unavailable[&a_id].kind,
        UnavailableKind::MissingHead,
        "a listed writer whose head is missing is named, never skipped"
    );

    // A runs again (any command pulls first): it puts its head record back from what
    // it holds, and the others read it again at once.
    let report = a.pull().await.unwrap();
    assert!(report.republished, "{report:?}");
    assert!(w.records.held(&w.head_key(&a)).is_some());
    let report = c.pull().await.unwrap();
    assert!(report.unavailable.is_empty(), "{report:?}");
    assert!(c.catalog_status().unwrap().unavailable.is_empty());
}

#[tokio::test]
async fn writers_put_back_every_record_a_network_lost() {
    let w = World::new();
    let (a, b) = (w.writer(), w.writer());
    history(&a).await;
    b.pull().await.unwrap();
    b.create_bucket("b-only").unwrap();
    put(&b, "b-only", "x", &data(7000, 9)).await;
    b.flush().await.unwrap();
    let want = {
        a.pull().await.unwrap();
        everything(&a).await
    };
    // Every record is gone: a fresh replica finds no catalog at all, and says so.
    w.records.lose_all();
    let report = w.writer().pull().await.unwrap();
    assert!(report.found_nothing(), "{report:?}");
    // Each writer puts its own records back when it next runs.
    assert!(a.pull().await.unwrap().republished);
    assert!(b.pull().await.unwrap().republished);
    let fresh = w.writer();
    let report = fresh.pull().await.unwrap();
    assert!(report.unavailable.is_empty(), "{report:?}");
    assert_eq!(everything(&fresh).await, want);
}

#[tokio::test]
async fn concurrent_flushes_share_publishes_and_lose_nothing() {
    let w = World::new();
    let a = w.writer();
    a.create_bucket("bkt").unwrap();
    a.flush().await.unwrap();
    let before = a.metrics().catalog_publishes.get();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let a = a.clone();
            tokio::spawn(async move {
                put(&a, "bkt", &format!("k{i}"), &data(100, i)).await;
                a.flush().await.unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let publishes = a.metrics().catalog_publishes.get() - before;
    assert!(
        (1..8).contains(&publishes),
        "{publishes} publishes for 8 callers"
    );
    assert_eq!(a.catalog().pending_count(), 0);
    let b = w.writer();
    b.pull().await.unwrap();
    assert_eq!(b.list("bkt", "", true).unwrap().len(), 8);
}

/// The catalog's own blobs are checked with everything: a live snapshot whose pieces are
/// damaged (a fresh machine could not restore from it) is reported, and `repair` replaces
/// it with a fresh snapshot of the whole catalog, from which a fresh machine restores
/// everything again.
#[tokio::test]
async fn a_damaged_catalog_snapshot_is_found_and_replaced_by_repair() {
    use uplink::health::{EXIT_HEALTHY, EXIT_LOST, SegmentState};
    use uplink::maintain::{CheckOptions, Maintenance, Scope};
    let w = World::new();
    let a = w.writer();
    history(&a).await;
    let every_block = CheckOptions {
        audit_fraction: 1.0,
    };
    let check = Maintenance::new(&a)
        .check(&Scope::everything(), every_block)
        .await
        .unwrap();
    assert!(!check.catalog.is_empty(), "the catalog's blobs are checked");
    assert!(
        check
            .catalog
            .iter()
            .chain(&check.segments)
            .all(|s| s.state == SegmentState::Healthy),
        "{check:?}"
    );
    assert_eq!(check.exit_status(), EXIT_HEALTHY);

    // Every piece of the live snapshot goes bad.
    let damaged = a.snapshot_blob().unwrap().unwrap();
    w.tamper_blob(&damaged);
    // A fresh machine cannot restore from the damaged snapshot: it refuses it and walks
    // the deltas instead (slower; here they all still exist).
    let fresh = w.writer().pull().await.unwrap();
    assert_eq!(fresh.snapshots, 0, "{fresh:?}");
    assert!(fresh.unavailable.is_empty(), "{fresh:?}");
    let check = Maintenance::new(&a)
        .check(&Scope::everything(), every_block)
        .await
        .unwrap();
    let bad: Vec<_> = check
        .catalog
        .iter()
        .filter(|s| s.state != SegmentState::Healthy)
        .collect();
    assert!(!bad.is_empty(), "{check:?}");
    assert!(
        bad.iter()
            .all(|s| s.key.starts_with("snapshot") && s.state == SegmentState::Lost),
        "{bad:?}"
    );
    assert!(
        check
            .segments
            .iter()
            .all(|s| s.state == SegmentState::Healthy)
    );
    assert_eq!(check.exit_status(), EXIT_LOST);
    // A bucket-scoped check leaves the catalog alone.
    let scoped = Scope {
        bucket: Some("bkt0".into()),
        recursive: true,
        ..Scope::default()
    };
    assert!(
        Maintenance::new(&a)
            .check(&scoped, every_block)
            .await
            .unwrap()
            .catalog
            .is_empty()
    );

    let repaired = Maintenance::new(&a)
        .repair(&Scope::everything(), every_block)
        .await
        .unwrap();
    assert!(repaired.catalog_snapshot);
    assert_eq!(repaired.exit_status(), EXIT_HEALTHY);
    a.flush().await.unwrap();
    let fresh = a.snapshot_blob().unwrap().unwrap();
    assert_ne!(fresh, damaged);
    // The damaged snapshot is no longer a live blob: everything checked is healthy.
    let check = Maintenance::new(&a)
        .check(&Scope::everything(), every_block)
        .await
        .unwrap();
    assert_eq!(check.exit_status(), EXIT_HEALTHY, "{check:?}");
    assert!(
        check
            .catalog
            .iter()
            .all(|s| s.key.starts_with("snapshot") || s.key.starts_with("delta")),
        "{check:?}"
    );

    let b = w.writer();
    let report = b.pull().await.unwrap();
    assert_eq!(report.snapshots, 1, "{report:?}");
    assert_eq!(everything(&b).await, everything(&a).await);
}

/// `catalog rebuild` over the in-memory doubles: two writers' catalogs come back from
/// the pieces' tags alone when the record store is empty (a new one: every record
/// lost), and the republished records serve a plain pull again. Another owner's pieces
/// on the same nodes are not touched, a lost delta is named.
#[tokio::test]
async fn rebuild_recovers_two_writers_from_the_piece_tags_alone() {
    let w = World::new();
    let (a, b) = (w.writer(), w.writer());
    history(&a).await;
    b.create_bucket("b-only").unwrap();
    put(&b, "b-only", "x", &data(7000, 99)).await;
    b.flush().await.unwrap();
    a.pull().await.unwrap();
    // Someone else's catalog on the same nodes.
    let stranger = Uplink::with_network_catalog(
        Access::new(RootSecret::from_bytes([7; 32]), vec![]),
        Arc::new(w.store.clone()),
        Arc::new(StaticNodes(w.store.candidates())),
        Catalog::temporary().unwrap(),
        config(),
        Arc::new(MemoryRecords::new()),
    )
    .unwrap();
    stranger.create_bucket("not-yours").unwrap();
    stranger.flush().await.unwrap();
    let want = everything(&a).await;

    // Every record is gone: a new config dir sees nothing until it rebuilds.
    let lost = World {
        store: w.store.clone(),
        records: Arc::new(MemoryRecords::new()),
    };
    let c = lost.writer();
    c.pull().await.unwrap();
    assert!(c.buckets().unwrap().is_empty());
    let report = c.rebuild_catalog().await.unwrap();
    assert!(report.unrecovered.is_empty(), "{report:#?}");
    assert_eq!(report.writers.len(), 2, "{report:#?}");
    assert!(report.writers.values().all(|f| f.head_republished));
    assert!(report.writers_republished);
    assert!(
        report.writers.values().any(|f| f.snapshot.is_some()),
        "a snapshot was merged: {report:#?}"
    );
    assert_eq!((report.buckets, report.objects), (4, 29), "{report:#?}");
    assert_eq!(everything(&c).await, want);

    // The records are back: a fresh replica pulls everything the ordinary way.
    let d = lost.writer();
    d.pull().await.unwrap();
    assert_eq!(everything(&d).await, want);
    // And the old writer's next change reaches it.
    put(&a, "bkt1", "after", b"after").await;
    a.flush().await.unwrap();
}

#[tokio::test]
async fn rebuild_names_a_delta_no_node_has_enough_pieces_of() {
    let w = World::new();
    // No snapshot to cover delta 2: its small blob shares no node with it.
    let a = w.writer_with(UplinkConfig {
        snapshot_every: 1000,
        ..config()
    });
    a.create_bucket("bkt").unwrap();
    a.flush().await.unwrap();
    put(&a, "bkt", "one", &data(6000, 1)).await;
    a.flush().await.unwrap();
    put(&a, "bkt", "two", &data(6000, 2)).await;
    a.flush().await.unwrap();
    // Delta 2 loses every piece but k - 1 (a small blob: k = 1 of whole copies).
    let head = w.head_blob(&a);
    let delta2 = a.previous_blob(&head).await.unwrap().unwrap();
    let k = usize::from(delta2.segments[0].scheme.k);
    for p in delta2.segments[0].pieces.iter().skip(k - 1) {
        w.store.set_behaviour(
            &shoal_proto::NodeId(p.node_id),
            uplink::testing::Behaviour::Dead,
        );
    }
    let lost = World {
        store: w.store.clone(),
        records: Arc::new(MemoryRecords::new()),
    };
    let c = lost.writer();
    let report = c.rebuild_catalog().await.unwrap();
    let named: Vec<&str> = report.unrecovered.iter().map(|u| u.what.as_str()).collect();
    assert!(
        named.iter().any(|w| w.starts_with("delta 2 of writer")),
        "{report:#?}"
    );
}

/// Two uplinks on one catalog dir (a gateway and a CLI command of one config dir, as two
/// processes: they share nothing but the files): both write and publish at once, every
/// sequence number is published once, each sees the other's changes, and a fresh replica
/// recovers all of them. A publish waits while another holds the publish lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_uplinks_on_one_catalog_dir_publish_in_turn() {
    let w = World::new();
    let dir = tempfile::tempdir().unwrap();
    let writer = uplink::catalog::WriterId::random();
    let on_dir = || w.on_dir(dir.path(), writer);
    let (a, b) = (on_dir(), on_dir());
    a.create_bucket("shared").unwrap();
    assert!(
        b.catalog().bucket("shared").unwrap().is_some(),
        "seen at once"
    );
    a.flush().await.unwrap();
    let write = |up: Uplink, tag: &'static str| async move {
        let mut seqs = Vec::new();
        for i in 0..6 {
            put(
                &up,
                "shared",
                &format!("{tag}{i}"),
                &data(100 + i, i as u64),
            )
            .await;
            if let Some(s) = up.flush().await.unwrap().seq {
                seqs.push(s);
            }
        }
        seqs
    };
    let (sa, sb) = tokio::join!(write(a.clone(), "a"), write(b.clone(), "b"));
    let mut all: Vec<u64> = sa.iter().chain(&sb).copied().collect();
    all.sort_unstable();
    let n = all.len();
    all.dedup();
    assert_eq!(
        all.len(),
        n,
        "a sequence number published twice: {sa:?} {sb:?}"
    );
    assert_eq!(a.catalog().pending_count(), 0);
    assert_eq!(b.list("shared", "", true).unwrap().len(), 12);
    let fresh = w.writer();
    fresh.pull().await.unwrap();
    assert_eq!(fresh.list("shared", "", true).unwrap().len(), 12);

    // Another holder of the publish lock makes a publish wait until it lets go.
    let held = a.catalog().try_publish_lock().unwrap().unwrap();
    put(&b, "shared", "late", b"late").await;
    let waiting = tokio::spawn({
        let b = b.clone();
        async move { b.flush().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "published while the lock was held");
    assert_eq!(b.catalog().pending_count(), 1);
    drop(held);
    let report = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(report.seq.is_some());
    assert_eq!(a.catalog().pending_count(), 0);
}

/// Whether `up`'s head record carries its delta inline, and after which blob delta.
fn inline_base(w: &World, up: &Uplink) -> Option<u64> {
    match w.head(up).delta {
        HeadDelta::Inline(d) => Some(d.prev_seq()),
        HeadDelta::Blob(_) => None,
    }
}

#[tokio::test]
async fn small_deltas_ride_in_the_head_and_a_reader_several_behind_misses_none() {
    let w = World::new();
    let a = w.writer_with(inline_config());
    a.create_bucket("bkt").unwrap();
    let first = a.flush().await.unwrap();
    assert_eq!(inline_base(&w, &a), Some(0), "a log may start inline");
    assert!(first.bytes_sent > 0);
    let uploads = w.store.calls().0;
    // A reader that keeps up, and one that reads only at the end.
    let near = w.writer_with(inline_config());
    near.pull().await.unwrap();
    for i in 0..4 {
        put(&a, "bkt", &format!("small{i}"), b"tiny").await;
        let r = a.flush().await.unwrap();
        assert_eq!(r.seq, Some(2 + i as u64));
    }
    assert_eq!(w.store.calls().0, uploads, "no piece was uploaded");
    assert_eq!(inline_base(&w, &a), Some(0));
    // Four deltas behind: every one of them is in the head record.
    let r = near.pull().await.unwrap();
    assert_eq!(r.deltas, 1, "{r:?}");
    for i in 0..4 {
        assert_eq!(get(&near, "bkt", &format!("small{i}")).await, b"tiny");
    }

    // A publish too large for the record flushes everything since the last blob delta
    // into one blob, whose chain skips the seqs that rode inline.
    for i in 0..12 {
        put(&a, "bkt", &format!("big{i:02}"), &data(5000, i)).await;
    }
    a.flush().await.unwrap();
    let flushed = a.catalog_status().unwrap().published_seq;
    assert_eq!(flushed, 6);
    assert_eq!(inline_base(&w, &a), None, "a blob head");
    // More small ones on top: inline again, after the flushed blob.
    for i in 0..3 {
        put(&a, "bkt", &format!("after{i}"), b"more").await;
        a.flush().await.unwrap();
    }
    assert_eq!(inline_base(&w, &a), Some(flushed));
    a.delete("bkt", "small0").await.unwrap();
    a.flush().await.unwrap();

    // The reader that was behind the flushed blob, and a new one, both get everything:
    // the blob carries the deltas that were inline before it, the head those after.
    near.pull().await.unwrap();
    let fresh = w.writer_with(inline_config());
    let r = fresh.pull().await.unwrap();
    assert!(r.unavailable.is_empty(), "{r:?}");
    assert_eq!(
        r.deltas, 2,
        "the head's inline deltas and the flushed blob: {r:?}"
    );
    let want = everything(&a).await;
    assert_eq!(everything(&near).await, want);
    assert_eq!(everything(&fresh).await, want);
    assert!(
        fresh.stat("bkt", "small0").is_err(),
        "deleted inline stays deleted"
    );
    assert_eq!(
        fresh.catalog_status().unwrap().writers[&a.catalog().writer()],
        a.catalog_status().unwrap().published_seq
    );
}

#[tokio::test]
async fn inline_deltas_snapshots_and_flushes_mixed_recover_on_any_replica() {
    // Snapshots every three publishes (always with a blob delta), inline deltas in
    // between, replicas that follow every publish, every other one, or none.
    let w = World::new();
    let cfg = UplinkConfig {
        snapshot_every: 3,
        ..inline_config()
    };
    let a = w.writer_with(cfg.clone());
    let follower = w.writer_with(cfg.clone());
    let lagging = w.writer_with(cfg.clone());
    a.create_bucket("bkt").unwrap();
    a.flush().await.unwrap();
    let mut inline = 0;
    for i in 0..20u64 {
        let size = if i % 7 == 6 { 5000 } else { 10 + i as usize };
        put(&a, "bkt", &format!("k{}", i % 9), &data(size, i)).await;
        if i % 5 == 4 {
            a.delete("bkt", &format!("k{}", i % 9)).await.unwrap();
        }
        a.flush().await.unwrap();
        inline += usize::from(inline_base(&w, &a).is_some());
        follower.pull().await.unwrap();
        if i % 2 == 0 {
            lagging.pull().await.unwrap();
        }
        assert_eq!(
            everything(&follower).await,
            everything(&a).await,
            "after {i}"
        );
    }
    assert!(inline >= 5, "{inline} inline heads");
    let fresh = w.writer_with(cfg);
    let r = fresh.pull().await.unwrap();
    assert!(r.unavailable.is_empty(), "{r:?}");
    lagging.pull().await.unwrap();
    let want = everything(&a).await;
    assert_eq!(everything(&fresh).await, want);
    assert_eq!(everything(&lagging).await, want);
}

#[tokio::test]
async fn a_lost_inline_head_is_put_back_with_its_inline_deltas() {
    let w = World::new();
    let a = w.writer_with(inline_config());
    a.create_bucket("bkt").unwrap();
    a.flush().await.unwrap();
    put(&a, "bkt", "x", b"x").await;
    a.flush().await.unwrap();
    assert_eq!(inline_base(&w, &a), Some(0));
    w.records.lose(&w.head_key(&a));
    let r = a.pull().await.unwrap();
    assert!(r.republished, "{r:?}");
    let b = w.writer_with(inline_config());
    b.pull().await.unwrap();
    assert_eq!(get(&b, "bkt", "x").await, b"x");
}

#[tokio::test]
async fn a_small_delta_blob_is_whole_copies_with_the_catalog_schemes_margins() {
    let w = World::new();
    let a = w.writer();
    a.create_bucket("bkt").unwrap();
    a.flush().await.unwrap();
    let blob = w.head_blob(&a);
    let scheme = blob.segments[0].scheme;
    // 2/3/4/4 fitted to a blob under one minimum piece: 1/2/3/3.
    assert_eq!(scheme.to_string(), "1/2/3/3");
    assert_eq!(blob.segments[0].pieces.len(), 3);
    // Two of its three nodes lost: still readable.
    let pieces = &blob.segments[0].pieces;
    for p in &pieces[..2] {
        assert!(
            w.store
                .tamper_piece(&shoal_proto::NodeId(p.node_id), &PieceId(p.piece_id))
        );
    }
    let b = w.writer();
    let r = b.pull().await.unwrap();
    assert!(r.unavailable.is_empty(), "{r:?}");
    assert!(b.catalog().bucket("bkt").unwrap().is_some());
}

/// Two replicas on copies of one config dir (so one writer id), each publishing. The one
/// that finds a head it did not write moves to a new writer id and publishes again; a
/// fresh replica then holds every change of both, and each keeps publishing.
async fn a_copied_config_dir(pull_first: bool) {
    let w = World::new();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let writer = uplink::catalog::WriterId::random();
    let on_dir = |dir: &std::path::Path| w.on_dir(dir, writer);
    {
        let a = on_dir(dir_a.path());
        history(&a).await;
        a.flush().await.unwrap();
    }
    shoal_test_kit::copy_dir(dir_a.path(), dir_b.path()).unwrap();
    let (a, b) = (on_dir(dir_a.path()), on_dir(dir_b.path()));
    assert_eq!(a.catalog().writer(), b.catalog().writer());
    // Both publish the same next seq with other contents; `a` gets there first.
    put(&a, "bkt0", "from-a", b"a").await;
    assert_eq!(a.flush().await.unwrap().new_writer, None);
    put(&b, "bkt0", "from-b", b"b").await;
    let moved = if pull_first {
        let report = b.pull().await.unwrap();
        assert!(report.unavailable.is_empty(), "{:?}", report.unavailable);
        assert_eq!(
            get(&b, "bkt0", "from-a").await,
            b"a",
            "the other copy's change is merged"
        );
        report.new_writer
    } else {
        b.flush().await.unwrap().new_writer
    };
    let moved = moved.expect("the copy that found the other's head moves to a new id");
    assert_ne!(moved, writer);
    assert_eq!(b.catalog().writer(), moved);
    assert_eq!(b.catalog_status().unwrap().writer, moved);
    b.flush().await.unwrap();
    assert_eq!(b.catalog().pending_count(), 0);
    // Both go on publishing, each under its own id now.
    put(&a, "bkt0", "a-later", b"a2").await;
    a.flush().await.unwrap();
    put(&b, "bkt0", "b-later", b"b2").await;
    assert_eq!(b.flush().await.unwrap().new_writer, None);
    a.pull().await.unwrap();
    b.pull().await.unwrap();
    let fresh = w.writer();
    let report = fresh.pull().await.unwrap();
    assert!(report.unavailable.is_empty(), "{:?}", report.unavailable);
    for (key, bytes) in [
        ("from-a", &b"a"[..]),
        ("from-b", b"b"),
        ("a-later", b"a2"),
        ("b-later", b"b2"),
    ] {
        assert_eq!(get(&fresh, "bkt0", key).await, bytes, "{key}");
    }
    assert_eq!(everything(&fresh).await, everything(&a).await);
    assert_eq!(everything(&fresh).await, everything(&b).await);
    // Reopened, the moved copy stays on its new id.
    drop(b);
    assert_eq!(on_dir(dir_b.path()).catalog().writer(), moved);
}

#[tokio::test]
async fn a_copied_config_dir_that_publishes_moves_to_a_new_writer_and_loses_nothing() {
    a_copied_config_dir(false).await;
}

#[tokio::test]
async fn a_copied_config_dir_that_pulls_moves_to_a_new_writer_and_loses_nothing() {
    a_copied_config_dir(true).await;
}

#[tokio::test]
async fn writers_are_listed_once_they_published_and_a_listed_writer_without_a_head_is_named() {
    let w = World::new();
    let (a, idle) = (w.writer(), w.writer());
    // A flush with nothing to publish lists nobody.
    idle.flush().await.unwrap();
    idle.pull().await.unwrap();
    assert!(w.listed().is_empty(), "{:?}", w.listed());
    history(&a).await;
    assert_eq!(
        w.listed(),
        [a.catalog().writer()].into_iter().collect(),
        "listed with its first head"
    );
    // The network loses A's head: a fresh replica (which never merged A) names A
    // instead of taking it for a writer that has not published yet.
    w.records.lose(&w.head_key(&a));
    let fresh = w.writer();
    let report = fresh.pull().await.unwrap();
    let why = &report.unavailable[&a.catalog().writer()];
    assert_eq!(why.kind, UnavailableKind::MissingHead, "{why}");
    assert!(why.reason.contains(&a.catalog().writer().to_hex()), "{why}");
    assert!(!report.found_nothing());
}

#[tokio::test]
async fn a_replayed_writers_record_is_detected_by_a_fresh_replica() {
    let w = World::new();
    let (a, b) = (w.writer(), w.writer());
    history(&a).await;
    let only_a = w.records.held(&w.writers_key()).unwrap();
    b.pull().await.unwrap();
    put(&b, "bkt0", "from-b", b"b").await;
    b.flush().await.unwrap();
    assert_eq!(w.listed().len(), 2);
    // A publishes again, having read the record that lists B.
    a.pull().await.unwrap();
    put(&a, "bkt0", "later-a", b"a").await;
    a.flush().await.unwrap();
    // The network serves the old record (validly signed), which leaves B out.
    w.records.force(only_a.clone());
    let fresh = w.writer();
    let err = fresh.pull().await.unwrap_err().to_string();
    assert!(
        err.contains(&format!("writers record version {}", only_a.seq)),
        "{err}"
    );
    assert!(
        fresh.stat("bkt0", "later-a").is_err(),
        "nothing is merged from a stale view"
    );
    // A replica that read the newer record before refuses the old one too.
    let report = a.pull();
    assert!(report.await.is_err());
    w.records.unforce(&w.writers_key());
    fresh.pull().await.unwrap();
    assert_eq!(get(&fresh, "bkt0", "from-b").await, b"b");
    assert_eq!(get(&fresh, "bkt0", "later-a").await, b"a");
}

#[tokio::test]
async fn a_replayed_older_head_is_detected_by_a_replica_that_never_merged_its_writer() {
    let w = World::new();
    let (a, b) = (w.writer(), w.writer());
    history(&a).await;
    let old = w.records.held(&w.head_key(&a)).unwrap();
    put(&a, "bkt0", "newer", b"x").await;
    a.flush().await.unwrap();
    // B merges A's newest, then publishes: its delta names how far it merged A.
    b.pull().await.unwrap();
    put(&b, "bkt0", "from-b", b"b").await;
    b.flush().await.unwrap();
    w.records.force(old.clone());
    let fresh = w.writer();
    let report = fresh.pull().await.unwrap();
    let why = &report.unavailable[&a.catalog().writer()];
    assert_eq!(why.kind, UnavailableKind::Rollback, "{why}");
    assert!(
        why.reason.contains(&format!(
            "offers seq {}, older than seq {}",
            old.seq,
            old.seq + 1
        )),
        "{why}"
    );
    assert_eq!(get(&fresh, "bkt0", "from-b").await, b"b", "B is merged");
}

#[tokio::test]
async fn a_tombstone_is_collected_once_every_writer_merged_it_and_snapshots_never_carry_it() {
    let w = World::new();
    let (a, b, reader) = (w.writer(), w.writer(), w.writer());
    a.create_bucket("bkt").unwrap();
    put(&a, "bkt", "gone", b"old").await;
    put(&a, "bkt", "kept", b"k").await;
    a.flush().await.unwrap();
    b.pull().await.unwrap();
    // A replica that only reads, and falls far behind, holding "gone".
    reader.pull().await.unwrap();
    put(&b, "bkt", "b0", b"b").await;
    b.flush().await.unwrap();
    a.pull().await.unwrap();
    a.delete("bkt", "gone").await.unwrap();
    a.flush().await.unwrap();
    assert_eq!(a.catalog().tombstone_count().unwrap(), 1);
    // B has not merged the delete: however many snapshots A takes, the tombstone stays.
    for i in 0..4 {
        put(&a, "bkt", &format!("a{i}"), b"x").await;
        a.flush().await.unwrap();
    }
    assert_eq!(
        a.catalog().tombstone_count().unwrap(),
        1,
        "B has not merged it yet"
    );
    // B merges it and publishes; A learns so, and its next snapshot goes without it.
    b.pull().await.unwrap();
    assert_eq!(b.catalog().tombstone_count().unwrap(), 1);
    put(&b, "bkt", "b1", b"b").await;
    b.flush().await.unwrap();
    a.pull().await.unwrap();
    let mut snapshots = 0;
    for i in 0..4 {
        put(&a, "bkt", &format!("later{i}"), b"x").await;
        snapshots += usize::from(a.flush().await.unwrap().snapshot);
    }
    assert!(snapshots > 0);
    assert_eq!(a.catalog().tombstone_count().unwrap(), 0, "collected");
    assert!(a.stat("bkt", "gone").is_err());
    // A fresh replica starts from that snapshot: neither the object nor its tombstone.
    let fresh = w.writer();
    fresh.pull().await.unwrap();
    assert!(fresh.stat("bkt", "gone").is_err());
    assert_eq!(fresh.catalog().tombstone_count().unwrap(), 0);
    assert_eq!(everything(&fresh).await, everything(&a).await);
    // The reader, far behind, applies the snapshot too: its floor makes it forget
    // "gone", which the snapshot lacks, instead of keeping (and spreading) it.
    assert!(reader.stat("bkt", "gone").is_ok());
    let report = reader.pull().await.unwrap();
    assert_eq!(report.snapshots, 1, "{report:?}");
    assert!(reader.stat("bkt", "gone").is_err());
    assert_eq!(everything(&reader).await, everything(&a).await);
    // B, whose next snapshot is taken with the same rule, drops it as well.
    b.pull().await.unwrap();
    for i in 0..4 {
        put(&b, "bkt", &format!("b-later{i}"), b"x").await;
        b.flush().await.unwrap();
    }
    assert_eq!(b.catalog().tombstone_count().unwrap(), 0);
}

/// The race compare-and-swap cannot see: both copies' heads of one seq land (here: the
/// network lost the first before the second came, so the second found nothing to
/// compare with). A reader that merged the first misses the second's changes, and the
/// first copy writes on from its own. When the second copy next runs it finds a newer
/// head it did not write, moves to a new id, merges the old id's log and publishes
/// every change under the old id again, both copies': the reader gets what it missed.
#[tokio::test]
async fn copies_whose_heads_of_one_seq_both_landed_lose_nothing_once_one_runs_again() {
    let w = World::new();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let writer = uplink::catalog::WriterId::random();
    let on_dir = |dir: &std::path::Path| w.on_dir(dir, writer);
    {
        let a = on_dir(dir_a.path());
        history(&a).await;
    }
    shoal_test_kit::copy_dir(dir_a.path(), dir_b.path()).unwrap();
    let (a, b, reader) = (on_dir(dir_a.path()), on_dir(dir_b.path()), w.writer());
    put(&a, "bkt0", "a1", b"a1").await;
    a.flush().await.unwrap();
    reader.pull().await.unwrap();
    w.records.lose(&w.head_key(&a));
    put(&b, "bkt0", "b1", b"b1").await;
    assert_eq!(
        b.flush().await.unwrap().new_writer,
        None,
        "nothing to compare"
    );
    put(&a, "bkt0", "a2", b"a2").await;
    a.flush().await.unwrap();
    reader.pull().await.unwrap();
    assert!(
        reader.stat("bkt0", "b1").is_err(),
        "the gap this test closes"
    );
    // B runs again.
    let moved = b.pull().await.unwrap().new_writer;
    assert!(moved.is_some());
    b.flush().await.unwrap();
    reader.pull().await.unwrap();
    assert_eq!(get(&reader, "bkt0", "b1").await, b"b1");
    assert_eq!(get(&reader, "bkt0", "a2").await, b"a2");
    let fresh = w.writer();
    fresh.pull().await.unwrap();
    assert_eq!(everything(&fresh).await, everything(&reader).await);
    assert_eq!(everything(&fresh).await, everything(&b).await);
}

/// Small snapshot chunks and a snapshot with every publish: a few hundred objects make a
/// tree of several levels.
fn chunky() -> UplinkConfig {
    UplinkConfig {
        snapshot_every: 1,
        snapshot_chunk_bytes: 1024,
        ..config()
    }
}

impl World {
    fn chunky_writer(&self) -> Uplink {
        Uplink::with_network_catalog(
            self.access(),
            Arc::new(self.store.clone()),
            Arc::new(StaticNodes(self.store.candidates())),
            Catalog::temporary().unwrap(),
            chunky(),
            self.records.clone(),
        )
        .unwrap()
    }
}

/// 400 small (inline) objects in two buckets, in one publish.
async fn many_small(a: &Uplink) -> uplink::sync::PublishReport {
    a.create_bucket("many").unwrap();
    a.create_bucket("more").unwrap();
    for i in 0..400u64 {
        let bucket = if i % 4 == 0 { "more" } else { "many" };
        put(a, bucket, &format!("f/{i:05}"), &data(100, i)).await;
    }
    a.flush().await.unwrap()
}

#[tokio::test]
async fn a_snapshot_after_one_change_reuses_all_but_a_few_chunks() {
    let w = World::new();
    let a = w.chunky_writer();
    let first = many_small(&a).await;
    assert!(first.snapshot, "{first:?}");
    let total = first.snapshot_chunks_stored + first.snapshot_chunks_reused;
    assert!(total > 40, "a tree of many chunks: {first:?}");
    // One object changed: the leaf holding it and one chunk per level above it are new
    // (a content boundary moving may touch a neighbour); everything else is re-used.
    put(&a, "many", "f/00201", &data(100, 999)).await;
    let second = a.flush().await.unwrap();
    assert!(second.snapshot, "{second:?}");
    assert!(
        second.snapshot_chunks_stored <= 8,
        "one change stored {} chunks: {second:?}",
        second.snapshot_chunks_stored
    );
    assert!(second.snapshot_chunks_stored >= 2, "{second:?}");
    assert!(
        second.snapshot_chunks_reused + second.snapshot_chunks_stored >= total - 2,
        "{second:?} after {first:?}"
    );
    // So the second publish sends a fraction of the first one's bytes.
    assert!(
        second.bytes_sent * 4 < first.bytes_sent,
        "{second:?} after {first:?}"
    );
    // A bucket made and removed: one tombstone more, a few chunks again.
    a.create_bucket("empty").unwrap();
    a.remove_bucket("empty", false).await.unwrap();
    let third = a.flush().await.unwrap();
    assert!(third.snapshot_chunks_stored <= 8, "{third:?}");
}

#[tokio::test]
async fn a_fresh_replica_recovers_from_a_multi_chunk_snapshot() {
    let w = World::new();
    let a = w.chunky_writer();
    many_small(&a).await;
    a.delete("many", "f/00001").await.unwrap();
    a.rename("more", "f/00004", "more", "g/renamed").unwrap();
    a.flush().await.unwrap();
    let fresh = w.chunky_writer();
    let report = fresh.pull().await.unwrap();
    assert_eq!(report.snapshots, 1, "{report:?}");
    assert!(report.snapshot_refused.is_none(), "{report:?}");
    assert!(report.unavailable.is_empty(), "{report:?}");
    assert_eq!(everything(&fresh).await, everything(&a).await);
    assert!(fresh.catalog().snapshot_chunk_count().unwrap() > 40);
    // The replica read the tree: its own next snapshot re-uses the chunks it read.
    fresh.create_bucket("fresh").unwrap();
    let published = fresh.flush().await.unwrap();
    assert!(published.snapshot, "{published:?}");
    assert!(published.snapshot_chunks_stored <= 8, "{published:?}");
    assert!(published.snapshot_chunks_reused > 30, "{published:?}");
    // And a third replica reads that one.
    let third = w.chunky_writer();
    let report = third.pull().await.unwrap();
    assert_eq!(report.snapshots, 1, "{report:?}");
    assert_eq!(everything(&third).await, everything(&fresh).await);
}

#[tokio::test]
async fn a_tampered_chunk_is_refused_and_named() {
    let w = World::new();
    let a = w.chunky_writer();
    many_small(&a).await;
    let chunks = a.catalog().snapshot_chunks().unwrap();
    assert!(chunks.len() > 40);
    // Damaged pieces of every chunk: AES-GCM refuses whichever is fetched first.
    for (_, blob) in &chunks {
        w.tamper_blob(blob);
    }
    let fresh = w.chunky_writer();
    let report = fresh.pull().await.unwrap();
    assert_eq!(report.snapshots, 0, "{report:?}");
    let refused = report.snapshot_refused.clone().unwrap();
    assert_eq!(refused.kind, UnavailableKind::Fetch, "{refused:?}");
    assert!(
        chunks
            .iter()
            .any(|(id, _)| refused.reason.contains(&format!("snapshot chunk {id}"))),
        "{refused:?}"
    );
    // The deltas are walked instead: nothing is lost.
    assert!(report.unavailable.is_empty(), "{report:?}");
    assert_eq!(everything(&fresh).await, everything(&a).await);
}

#[tokio::test]
async fn a_chunk_that_is_not_the_one_named_is_refused() {
    let w = World::new();
    let a = w.chunky_writer();
    many_small(&a).await;
    // The writer's chunk table goes wrong: every chunk id points at another chunk's
    // blob (authentic, but not the chunk named). The next snapshot re-uses them.
    let chunks = a.catalog().snapshot_chunks().unwrap();
    let rotated: Vec<_> = chunks
        .iter()
        .zip(chunks.iter().cycle().skip(1))
        .map(|((id, _), (_, other))| (*id, other.clone()))
        .collect();
    a.catalog()
        .remember_snapshot_chunks(u64::MAX >> 2, &rotated)
        .unwrap();
    put(&a, "many", "f/00201", &data(100, 999)).await;
    let published = a.flush().await.unwrap();
    assert!(published.snapshot_chunks_reused > 30, "{published:?}");
    let fresh = w.chunky_writer();
    let report = fresh.pull().await.unwrap();
    assert_eq!(report.snapshots, 0, "{report:?}");
    let refused = report.snapshot_refused.clone().unwrap();
    assert_eq!(refused.kind, UnavailableKind::Invalid, "{refused:?}");
    assert!(refused.reason.contains("snapshot chunk"), "{refused:?}");
    assert_eq!(everything(&fresh).await, everything(&a).await);
}
