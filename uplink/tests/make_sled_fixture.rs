//! One-off generator of `tests/fixtures/sled-catalog-v0/`: a catalog written by the sled
//! code (before the SQLite store), for the migration test. Run once with
//! `cargo test -p uplink --test make_sled_fixture -- --ignored`; kept in the history of
//! the commit that added the fixture.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use shoal_proto::NodeId;
use uplink::StagedPart;
use uplink::catalog::{
    BucketInfo, Catalog, Change, Content, EntryKey, ObjectEntry, PartInfo, SegmentInfo, Value,
    Version, WriterId,
};
use uplink::crypto::{ObjectId, WrappedKey};
use uplink::gateway::multipart::{Completed, UploadRecord, Uploads};
use uplink::select::NodeStats;
use uplink::store::PiecePlacement;

fn entry(key: &str, n: u8, content: Content) -> ObjectEntry {
    ObjectEntry {
        key: key.into(),
        size: 100 + u64::from(n),
        created_ms: 1_700_000_000_000 + u64::from(n),
        modified_ms: 1_700_000_000_500 + u64::from(n),
        expires_ms: (n % 2 == 0).then_some(1_900_000_000_000),
        content_type: Some("text/plain".into()),
        metadata: BTreeMap::from([("n".into(), n.to_string())]),
        object_id: ObjectId([n; 16]),
        wrapped_key: WrappedKey {
            nonce: [n; 12],
            sealed: vec![n; 48],
        },
        content,
        version: Version::default(),
    }
}

fn segment(n: u8) -> SegmentInfo {
    SegmentInfo {
        index: 0,
        plain_size: 5000,
        sealed_size: 5016,
        codec: Default::default(),
        scheme: "2/3/4/5".parse().unwrap(),
        shard_size: 4096,
        piece_size: 4200,
        pieces: (0..3)
            .map(|i| PiecePlacement {
                index: i,
                node_id: [n + i as u8; 32],
                address: format!("127.0.{i}.1:700{i}").parse().unwrap(),
                piece_id: [n ^ i as u8; 32],
                piece_hash: [7; 32],
            })
            .collect(),
    }
}

#[test]
#[ignore = "writes the sled fixture; run by hand once"]
fn make_sled_fixture() {
    let out =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sled-catalog-v0");
    let _ = std::fs::remove_dir_all(&out);
    let writer = WriterId::random();
    let c = Catalog::open(&out, writer).unwrap();
    let put = |key: EntryKey, value: Value, local: bool| {
        let version = c.next_version().unwrap();
        let ch = Change {
            key,
            version,
            value,
        };
        if local {
            c.apply_local(&ch).unwrap();
        } else {
            c.apply_remote(&ch).unwrap();
        }
    };
    for b in ["photos", "docs"] {
        put(
            EntryKey::Bucket(b.into()),
            Value::Bucket(BucketInfo {
                name: b.into(),
                created_ms: 1_700_000_000_000,
                version: Version::default(),
            }),
            true,
        );
    }
    let obj = |b: &str, k: &str| EntryKey::Object {
        bucket: b.into(),
        key: k.into(),
    };
    put(
        obj("photos", "a/inline.txt"),
        Value::Object(entry(
            "a/inline.txt",
            1,
            Content::Inline {
                sealed: vec![9; 40],
            },
        )),
        true,
    );
    put(
        obj("photos", "a/big.bin"),
        Value::Object(entry("a/big.bin", 2, Content::Segments(vec![segment(2)]))),
        true,
    );
    put(
        obj("photos", "é/unicode"),
        Value::Object(entry(
            "é/unicode",
            3,
            Content::Inline { sealed: vec![3; 5] },
        )),
        true,
    );
    put(
        obj("docs", "multi"),
        Value::Object(entry(
            "multi",
            4,
            Content::Parts {
                parts: vec![PartInfo {
                    number: 1,
                    size: 5000,
                    segments: 1,
                    md5: [4; 16],
                    object_id: ObjectId([44; 16]),
                    wrapped_key: WrappedKey {
                        nonce: [4; 12],
                        sealed: vec![4; 48],
                    },
                }],
                segments: vec![segment(4)],
            },
        )),
        true,
    );
    put(
        obj("docs", "gone"),
        Value::Object(entry("gone", 5, Content::Inline { sealed: vec![5; 8] })),
        true,
    );
    // Published: the queue is cleared of everything so far.
    let pending = c.pending().unwrap();
    c.clear_published(&pending).unwrap();
    // After the publish: a delete (tombstone) and a new object, still pending.
    put(obj("docs", "gone"), Value::Tombstone, true);
    put(
        obj("docs", "late.txt"),
        Value::Object(entry(
            "late.txt",
            6,
            Content::Inline {
                sealed: vec![6; 12],
            },
        )),
        true,
    );
    // From another writer: merged, not queued; and a deleted bucket of theirs.
    put(
        obj("photos", "remote.jpg"),
        Value::Object(entry(
            "remote.jpg",
            7,
            Content::Inline {
                sealed: vec![7; 30],
            },
        )),
        false,
    );
    put(EntryKey::Bucket("old".into()), Value::Tombstone, false);
    // Sync state as crate::sync writes it.
    let other = WriterId::random();
    c.set_sync_value("applied", &vec![(writer, 3u64), (other, 9u64)])
        .unwrap();
    c.set_sync_value("own", &serde_json::json!({"seq": 3, "head": null}))
        .unwrap();
    c.set_sync_value("custom", &"kept".to_string()).unwrap();
    c.record_node(
        &NodeId([1; 32]),
        NodeStats {
            successes: 5,
            failures: 2,
            latency_ms: 40,
            ..NodeStats::default()
        },
    )
    .unwrap();
    c.record_node(
        &NodeId([2; 32]),
        NodeStats {
            corrupt: 1,
            ..NodeStats::default()
        },
    )
    .unwrap();
    // Multipart records of the gateway.
    let uploads = Uploads::new(c.local_tree("gateway-uploads").unwrap());
    let id = uploads
        .create(&UploadRecord {
            bucket: "photos".into(),
            key: "mp/in-progress".into(),
            created_ms: 1_700_000_001_000,
            content_type: Some("application/octet-stream".into()),
            metadata: BTreeMap::from([("x".into(), "y".into())]),
        })
        .unwrap();
    uploads
        .put_part(
            &id,
            &StagedPart {
                info: PartInfo {
                    number: 2,
                    size: 5_242_880,
                    segments: 1,
                    md5: [8; 16],
                    object_id: ObjectId([88; 16]),
                    wrapped_key: WrappedKey {
                        nonce: [8; 12],
                        sealed: vec![8; 48],
                    },
                },
                segments: vec![segment(8)],
                staged_ms: 1_700_000_002_000,
            },
        )
        .unwrap();
    let done = uploads
        .create(&UploadRecord {
            bucket: "docs".into(),
            key: "mp/done".into(),
            created_ms: 1_700_000_003_000,
            content_type: None,
            metadata: BTreeMap::new(),
        })
        .unwrap();
    uploads
        .mark_completed(
            &done,
            &Completed {
                bucket: "docs".into(),
                key: "mp/done".into(),
                etag: "abc-1".into(),
                completed_ms: 1_700_000_004_000,
            },
        )
        .unwrap();
    c.flush().unwrap();
    // What the test expects, written beside the database.
    let expect = serde_json::json!({
        "writer": writer,
        "other_writer": other,
        "upload_in_progress": id,
        "upload_completed": done,
        "all_changes": c.all_changes().unwrap(),
        "pending": c.pending().unwrap().into_iter().map(|(ch, _)| ch).collect::<Vec<_>>(),
        "next_version_after": c.next_version().unwrap(),
    });
    drop(c);
    std::fs::write(
        out.with_extension("json"),
        serde_json::to_vec_pretty(&expect).unwrap(),
    )
    .unwrap();
}
