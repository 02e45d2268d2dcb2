//! The catalog's SQLite store: a catalog dir written by the sled versions opens with
//! everything in it, and several handles (as several processes) share one catalog dir.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use shoal_proto::NodeId;
use uplink::catalog::{BucketInfo, Catalog, Change, EntryKey, Value, Version, WriterId};
use uplink_gateway::multipart::Uploads;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sled-catalog-v0")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[derive(serde::Deserialize)]
struct Expected {
    writer: WriterId,
    other_writer: WriterId,
    upload_in_progress: String,
    upload_completed: String,
    all_changes: Vec<Change>,
    pending: Vec<Change>,
    next_version_after: Version,
}

/// The fixture was written by the sled catalog (commit "[metadata-store] fixture"): it
/// opens in the SQLite catalog with every bucket, entry, tombstone, queued change, sync
/// value, node record and multipart record, and sled's files are gone afterwards.
#[test]
fn a_sled_catalog_is_imported_whole() {
    let expected: Expected =
        serde_json::from_slice(&std::fs::read(fixture().with_extension("json")).unwrap()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("catalog-0123456789abcdef");
    copy_dir(&fixture(), &dir);
    assert!(dir.join("db").exists(), "the fixture is a sled dir");

    let check = |c: &Catalog| {
        assert_eq!(c.all_changes().unwrap(), expected.all_changes);
        let pending: Vec<Change> = c.pending().unwrap().into_iter().map(|(ch, _)| ch).collect();
        assert_eq!(pending, expected.pending);
        assert_eq!(c.pending_count(), 2);
        // Inline objects, multipart objects, unicode keys: listed in key order.
        let keys: Vec<String> = c
            .objects("photos", "")
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(
            keys,
            ["a/big.bin", "a/inline.txt", "remote.jpg", "é/unicode"]
        );
        assert!(c.object("docs", "gone").unwrap().is_none());
        assert!(
            c.version_of(&EntryKey::Object {
                bucket: "docs".into(),
                key: "gone".into()
            })
            .unwrap()
            .is_some(),
            "the tombstone is kept"
        );
        assert!(c.bucket("old").unwrap().is_none());
        assert!(
            c.version_of(&EntryKey::Bucket("old".into()))
                .unwrap()
                .is_some()
        );
        // The object-id index is rebuilt from the entries.
        let big = c.object("photos", "a/big.bin").unwrap().unwrap();
        assert!(c.object_id_in_use(&big.object_id).unwrap());
        // Sync state, by name.
        let applied: Vec<(WriterId, u64)> = c.sync_value("applied").unwrap().unwrap();
        assert_eq!(
            applied.into_iter().collect::<BTreeMap<_, _>>(),
            BTreeMap::from([(expected.writer, 3), (expected.other_writer, 9)])
        );
        assert_eq!(
            c.sync_value::<serde_json::Value>("own").unwrap().unwrap()["seq"],
            3
        );
        assert_eq!(c.sync_value::<String>("custom").unwrap().unwrap(), "kept");
        // Node history.
        let stats = c.node_stats().unwrap();
        assert_eq!(stats[&NodeId([1; 32])].successes, 5);
        assert_eq!(stats[&NodeId([1; 32])].failures, 2);
        assert!(stats[&NodeId([2; 32])].is_excluded());
        // Multipart records.
        let uploads = Uploads::new(c.db().clone());
        let rec = uploads.get(&expected.upload_in_progress).unwrap().unwrap();
        assert_eq!(rec.key, "mp/in-progress");
        let parts = uploads.parts(&expected.upload_in_progress).unwrap();
        assert_eq!(parts[&2].info.md5, [8; 16]);
        assert_eq!(
            uploads
                .completed(&expected.upload_completed)
                .unwrap()
                .unwrap()
                .etag,
            "abc-1"
        );
        // The clock goes on from where it was.
        assert!(c.next_version().unwrap() > expected.next_version_after);
    };
    {
        let c = Catalog::open(&dir, expected.writer).unwrap();
        check(&c);
    }
    for f in ["db", "conf", "blobs"] {
        assert!(
            !dir.join(f).exists(),
            "sled's {f} is removed after the import"
        );
    }
    // Reopened: the same, imported once.
    let c = Catalog::open(&dir, expected.writer).unwrap();
    check(&c);
}

fn bucket_change(c: &Catalog, name: &str) -> Change {
    Change {
        key: EntryKey::Bucket(name.into()),
        version: c.next_version().unwrap(),
        value: Value::Bucket(BucketInfo {
            name: name.into(),
            created_ms: 1,
            version: Version::default(),
        }),
    }
}

/// Two handles on one catalog dir (as two processes: nothing is shared but the files)
/// see each other's changes at once, never make the same version twice, and share
/// one publish queue.
#[test]
fn two_handles_share_one_catalog_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let writer = WriterId::random();
    let a = Catalog::open(tmp.path(), writer).unwrap();
    let b = Catalog::open(tmp.path(), writer).unwrap();
    let ch = bucket_change(&a, "x");
    assert!(a.apply_local(&ch).unwrap());
    assert!(b.bucket("x").unwrap().is_some());
    assert_eq!(b.pending_count(), 1);
    // Versions interleaved between the two handles are all distinct and increasing.
    let mut seen = Vec::new();
    for i in 0..50 {
        let c = if i % 2 == 0 { &a } else { &b };
        seen.push(c.next_version().unwrap());
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    // Concurrent writers on threads: every change lands.
    std::thread::scope(|s| {
        for (i, c) in [&a, &b, &a, &b].into_iter().enumerate() {
            s.spawn(move || {
                for j in 0..50 {
                    let ch = bucket_change(c, &format!("t{i}-{j}"));
                    c.apply_local(&ch).unwrap();
                }
            });
        }
    });
    assert_eq!(a.buckets().unwrap().len(), 201);
    assert_eq!(b.pending_count(), 201);
    // One handle publishes what both queued.
    let queued = b.pending().unwrap();
    a.clear_published(&queued).unwrap();
    assert_eq!(b.pending_count(), 0);
    // The publish lock is exclusive across handles.
    let held = a.try_publish_lock().unwrap().unwrap();
    assert!(b.try_publish_lock().unwrap().is_none());
    assert_eq!(b.publish_lock_holder().unwrap().pid, std::process::id());
    drop(held);
    assert!(b.try_publish_lock().unwrap().is_some());
}

/// A merge is all or nothing: a batch whose position update fails leaves no entry.
#[test]
fn a_failed_merge_leaves_nothing() {
    let c = Catalog::temporary().unwrap();
    let other = Catalog::temporary().unwrap();
    let changes: Vec<Change> = (0..10)
        .map(|i| bucket_change(&other, &format!("b{i}")))
        .collect();
    let r = c.apply_remote_batch(&changes, |_| {
        Err(uplink::catalog::CatalogError::Corrupt {
            what: "test".into(),
            reason: "refused".into(),
        })
    });
    assert!(r.is_err());
    assert!(c.buckets().unwrap().is_empty());
    let n = c
        .apply_remote_batch(&changes, |tx| {
            tx.set_sync_value("applied", &vec![(other.writer(), 1u64)])
        })
        .unwrap();
    assert_eq!(n, 10);
    assert_eq!(c.buckets().unwrap().len(), 10);
    assert_eq!(
        c.sync_value::<Vec<(WriterId, u64)>>("applied")
            .unwrap()
            .unwrap(),
        vec![(other.writer(), 1)]
    );
}
