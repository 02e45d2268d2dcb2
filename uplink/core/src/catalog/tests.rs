//! Tests of the catalog (moved out of `mod.rs`).

use super::*;
use crate::crypto::WrappedKey;
use std::collections::BTreeMap;

fn entry(key: &str) -> ObjectEntry {
    ObjectEntry {
        key: key.into(),
        size: 3,
        created_ms: 1,
        modified_ms: 2,
        expires_ms: None,
        content_type: Some("text/plain".into()),
        metadata: BTreeMap::from([("a".into(), "b".into())]),
        object_id: ObjectId([1; 16]),
        wrapped_key: WrappedKey {
            nonce: [2; 12],
            sealed: vec![3; 48],
        },
        content: Content::Inline {
            sealed: vec![4; 19],
        },
        version: Version::default(),
    }
}

fn put(c: &Catalog, bucket: &str, e: ObjectEntry) -> Version {
    let version = c.next_version().unwrap();
    let key = EntryKey::Object {
        bucket: bucket.into(),
        key: e.key.clone(),
    };
    assert!(
        c.apply_local(&Change {
            key,
            version,
            value: Value::Object(e)
        })
        .unwrap()
    );
    version
}

fn delete(c: &Catalog, bucket: &str, key: &str) {
    let version = c.next_version().unwrap();
    c.apply_local(&Change {
        key: EntryKey::Object {
            bucket: bucket.into(),
            key: key.into(),
        },
        version,
        value: Value::Tombstone,
    })
    .unwrap();
}

fn bucket(c: &Catalog, name: &str) {
    let version = c.next_version().unwrap();
    c.apply_local(&Change {
        key: EntryKey::Bucket(name.into()),
        version,
        value: Value::Bucket(BucketInfo {
            name: name.into(),
            created_ms: 5,
            version: Version::default(),
        }),
    })
    .unwrap();
}

#[test]
fn buckets_objects_and_tombstones() {
    let c = Catalog::temporary().unwrap();
    bucket(&c, "photos");
    assert_eq!(c.bucket("photos").unwrap().unwrap().name, "photos");
    assert!(c.bucket_is_empty("photos").unwrap());
    let v = put(&c, "photos", entry("x"));
    let held = c.object("photos", "x").unwrap().unwrap();
    assert_eq!(held.version, v, "the stored entry carries its version");
    // A bucket whose name is a prefix of another does not see its objects.
    bucket(&c, "photo");
    assert!(c.bucket_is_empty("photo").unwrap());
    delete(&c, "photos", "x");
    assert!(c.object("photos", "x").unwrap().is_none());
    assert!(c.bucket_is_empty("photos").unwrap());
    let key = EntryKey::Object {
        bucket: "photos".into(),
        key: "x".into(),
    };
    assert!(
        c.version_of(&key).unwrap().unwrap() > v,
        "tombstone is newer"
    );
    // An older put arriving late does not resurrect the deleted object.
    let late = Change {
        key: key.clone(),
        version: v,
        value: Value::Object(entry("x")),
    };
    assert!(!c.apply_remote(&late).unwrap());
    assert!(c.object("photos", "x").unwrap().is_none());
    // Everything is queued for publishing, once per key (the latest change).
    let pending = c.pending().unwrap();
    assert_eq!(pending.len(), 3);
    assert!(
        pending
            .iter()
            .any(|(ch, _)| ch.key == key && ch.value == Value::Tombstone)
    );
    c.clear_published(&pending).unwrap();
    assert_eq!(c.pending_count(), 0);
    // A snapshot of the state holds the live entries and the tombstone.
    let all = c.all_changes().unwrap();
    assert_eq!(all.len(), 3);
    assert!(
        all.iter()
            .any(|ch| ch.key == key && ch.value == Value::Tombstone)
    );
}

#[test]
fn a_change_made_during_a_publish_stays_queued() {
    let c = Catalog::temporary().unwrap();
    put(&c, "b", entry("k"));
    let taken = c.pending().unwrap();
    put(&c, "b", entry("k"));
    c.clear_published(&taken).unwrap();
    assert_eq!(c.pending_count(), 1, "the newer change is still to publish");
}

#[test]
fn remote_changes_merge_by_version_and_move_the_clock() {
    let a = Catalog::temporary().unwrap();
    let b = Catalog::temporary().unwrap();
    put(&a, "b", entry("k"));
    let mut far = entry("k");
    far.size = 99;
    let future = Version {
        hlc: Hlc(u64::MAX >> 1),
        writer: b.writer(),
    };
    let remote = Change {
        key: EntryKey::Object {
            bucket: "b".into(),
            key: "k".into(),
        },
        version: future,
        value: Value::Object(far),
    };
    assert!(a.apply_remote(&remote).unwrap());
    assert_eq!(a.object("b", "k").unwrap().unwrap().size, 99);
    assert!(
        a.next_version().unwrap() > future,
        "later local changes win"
    );
    // A value under the wrong key is refused as damaged.
    let mut bad = remote.clone();
    bad.key = EntryKey::Object {
        bucket: "b".into(),
        key: "other".into(),
    };
    assert!(matches!(
        a.apply_remote(&bad),
        Err(CatalogError::Corrupt { .. })
    ));
}

/// `Catalog::list` as it was before it read through the one listing rule: every key
/// under the prefix scanned, keys with a `/` after the prefix folded into the prefix
/// up to it (the reference the seeking listing is checked against).
fn list_by_scan(c: &Catalog, bucket: &str, prefix: &str, recursive: bool) -> Vec<Listing> {
    let mut out = Vec::new();
    let mut last_prefix: Option<String> = None;
    for e in c.objects(bucket, prefix).unwrap() {
        if !recursive && let Some(pos) = e.key[prefix.len()..].find('/') {
            let p = e.key[..prefix.len() + pos + 1].to_string();
            if last_prefix.as_deref() != Some(p.as_str()) {
                out.push(Listing::Prefix { prefix: p.clone() });
                last_prefix = Some(p);
            }
            continue;
        }
        out.push(Listing::Object {
            key: e.key,
            size: e.size,
            modified_ms: e.modified_ms,
            content_type: e.content_type,
            version: e.version,
        });
    }
    out
}

/// `uplink ls` of a prefix with many sub-prefixes of many keys each (more rows than a
/// listing page, more keys than the cursor reads at once) lists what a scan of every
/// key lists, reading one key per sub-prefix.
#[test]
fn listing_many_folded_prefixes_equals_a_scan() {
    let c = Catalog::temporary().unwrap();
    let mut keys = vec![
        "big".to_string(),
        "big0".into(),
        "a/b".into(),
        "big/é".into(),
    ];
    for d in 0..1200 {
        for f in 0..2 {
            keys.push(format!("big/d{d:04}/f{f}"));
        }
        if d % 100 == 0 {
            keys.push(format!("big/file{d:04}"));
            keys.push(format!("big/d{d:04}/deeper/x"));
        }
    }
    for k in &keys {
        put(&c, "bk", entry(k));
    }
    for (prefix, recursive) in [
        ("big/", false),
        ("big/", true),
        ("", false),
        ("big", false),
        ("big/d0100/", false),
        ("nothing/", false),
    ] {
        let got = c.list("bk", prefix, recursive).unwrap();
        assert_eq!(
            got,
            list_by_scan(&c, "bk", prefix, recursive),
            "prefix {prefix:?} recursive {recursive}"
        );
    }
    let folded = c.list("bk", "big/", false).unwrap();
    let prefixes = folded
        .iter()
        .filter(|l| matches!(l, Listing::Prefix { .. }))
        .count();
    assert_eq!(prefixes, 1200);
    assert_eq!(folded.len(), 1200 + 12 + 1);
}

#[test]
fn listing_is_in_key_order_with_prefixes() {
    let c = Catalog::temporary().unwrap();
    for k in ["b", "a/2", "a/1", "a/sub/3", "ab", "z", "é"] {
        put(&c, "bk", entry(k));
    }
    let keys = |l: Vec<Listing>| -> Vec<String> {
        l.into_iter()
            .map(|x| match x {
                Listing::Object { key, .. } => key,
                Listing::Prefix { prefix } => format!("P:{prefix}"),
            })
            .collect()
    };
    assert_eq!(
        keys(c.list("bk", "", true).unwrap()),
        ["a/1", "a/2", "a/sub/3", "ab", "b", "z", "é"]
    );
    assert_eq!(
        keys(c.list("bk", "", false).unwrap()),
        ["P:a/", "ab", "b", "z", "é"]
    );
    assert_eq!(
        keys(c.list("bk", "a/", false).unwrap()),
        ["a/1", "a/2", "P:a/sub/"]
    );
    assert_eq!(
        keys(c.list("bk", "a", true).unwrap()),
        ["a/1", "a/2", "a/sub/3", "ab"]
    );
}

#[test]
fn node_outcomes_are_read_at_once_here_and_written_in_order_for_others() {
    let dir = tempfile::tempdir().unwrap();
    let writer = WriterId::random();
    let node = NodeId([7; 32]);
    let sample = |latency_ms| NodeStats {
        successes: 1,
        latency_ms,
        ..NodeStats::default()
    };
    let a = Catalog::open(dir.path(), writer).unwrap();
    let b = Catalog::open(dir.path(), writer).unwrap();
    for ms in [100, 20, 60] {
        a.record_node(&node, sample(ms)).unwrap();
    }
    // The same order applied one at a time (the average depends on the order).
    let mut expected = NodeStats::default();
    for ms in [100, 20, 60] {
        expected.merge(&sample(ms));
    }
    assert_eq!(
        a.node_stats().unwrap()[&node],
        expected,
        "queued, read here"
    );
    assert!(
        !b.node_stats().unwrap().contains_key(&node),
        "another handle sees them once written"
    );
    a.flush().unwrap();
    assert_eq!(b.node_stats().unwrap()[&node], expected);
    // Written on top of what another handle wrote, and when the last handle goes.
    b.record_node(&node, sample(8)).unwrap();
    drop(b);
    expected.merge(&sample(8));
    assert_eq!(a.node_stats().unwrap()[&node], expected);
    drop(a);
    let c = Catalog::open(dir.path(), writer).unwrap();
    assert_eq!(c.node_stats().unwrap()[&node], expected);
}

#[test]
fn a_local_put_ticks_the_clock_and_returns_what_it_replaced() {
    let c = Catalog::temporary().unwrap();
    bucket(&c, "b");
    let (first, before) = c
        .put_object_local("b", entry("k"), |e| e.modified_ms = 7)
        .unwrap();
    assert!(before.is_none());
    assert_eq!(
        first.modified_ms, 7,
        "finish sees the entry before it is stored"
    );
    assert_eq!(c.object("b", "k").unwrap(), Some(first.clone()));
    let (second, before) = c.put_object_local("b", entry("k"), |_| {}).unwrap();
    assert_eq!(before, Some(first.clone()));
    assert!(second.version > first.version);
    assert!(c.next_version().unwrap() > second.version);
    assert_eq!(c.pending_count(), 2, "the bucket and the object are queued");
}

#[test]
fn entries_survive_reopen_and_serialise() {
    let dir = tempfile::tempdir().unwrap();
    let writer = WriterId::random();
    let stored = {
        let c = Catalog::open(dir.path(), writer).unwrap();
        put(&c, "b", entry("k"));
        c.record_node(
            &NodeId([9; 32]),
            NodeStats {
                successes: 2,
                failures: 1,
                ..NodeStats::default()
            },
        )
        .unwrap();
        c.record_node(
            &NodeId([9; 32]),
            NodeStats {
                successes: 1,
                corrupt: 1,
                ..NodeStats::default()
            },
        )
        .unwrap();
        c.flush().unwrap();
        c.object("b", "k").unwrap().unwrap()
    };
    let c = Catalog::open(dir.path(), writer).unwrap();
    assert_eq!(c.object("b", "k").unwrap(), Some(stored.clone()));
    assert_eq!(c.pending_count(), 1);
    assert!(c.next_version().unwrap() > stored.version);
    assert_eq!(
        c.node_stats().unwrap()[&NodeId([9; 32])],
        NodeStats {
            successes: 3,
            failures: 1,
            corrupt: 1,
            ..NodeStats::default()
        }
    );
    let json = serde_json::to_string(&stored).unwrap();
    let back: ObjectEntry = serde_json::from_str(&json).unwrap();
    assert_eq!(back, stored);
}

#[test]
fn an_object_cursor_reads_in_key_order_and_seeks_forward_only() {
    let c = Catalog::temporary().unwrap();
    let keys: Vec<String> = (0..600).map(|i| format!("k{i:04}")).collect();
    for k in &keys {
        put(&c, "b", entry(k));
    }
    put(&c, "other", entry("k0001"));
    c.read_objects("b", |cur| {
        let next =
            |cur: &mut ObjectCursor<'_>| cur.next_raw().map(|r| r.unwrap().key().to_string());
        // Reads grow past the first small page without losing or repeating a row.
        let first: Vec<String> = (0..300).filter_map(|_| next(cur)).collect();
        assert_eq!(first, keys[..300]);
        // Within the rows read, and beyond them.
        cur.seek("k0301");
        assert_eq!(next(cur).as_deref(), Some("k0301"));
        cur.seek("k0500");
        assert_eq!(next(cur).as_deref(), Some("k0500"));
        // Never backwards; a key between two rows lands on the next.
        cur.seek("k0001");
        assert_eq!(next(cur).as_deref(), Some("k0501"));
        cur.seek("k0550x");
        assert_eq!(next(cur).as_deref(), Some("k0551"));
        let decoded = cur.next_raw().unwrap().unwrap().decode("b").unwrap();
        assert_eq!(decoded.key, "k0552");
        cur.seek("l");
        assert!(cur.next_raw().is_none());
        cur.seek("z");
        assert!(cur.next_raw().is_none());
        Ok(())
    })
    .unwrap();
}

/// A listing decodes only what it shows of an entry: the same fields as the whole
/// entry has, from the same row.
#[test]
fn a_summary_is_the_entry_without_its_key_and_content() {
    let c = Catalog::temporary().unwrap();
    let mut e = entry("dir/k");
    e.content = Content::Inline {
        sealed: vec![9; 4096],
    };
    put(&c, "bk", e);
    let (whole, summary) = c
        .read_objects("bk", |cursor| {
            let raw = cursor.next_raw().unwrap()?;
            Ok((raw.decode("bk")?, raw.summary("bk")?))
        })
        .unwrap();
    assert_eq!(
        summary,
        ObjectSummary {
            key: whole.key,
            size: whole.size,
            modified_ms: whole.modified_ms,
            content_type: whole.content_type,
            metadata: whole.metadata,
            object_id: whole.object_id,
            version: whole.version,
        }
    );
}

#[test]
fn the_snapshot_cursor_reads_every_entry_once_in_key_order_in_any_batch_size() {
    let c = Catalog::temporary().unwrap();
    let tomb = |key: EntryKey| {
        let version = c.next_version().unwrap();
        c.apply_local(&Change {
            key,
            version,
            value: Value::Tombstone,
        })
        .unwrap();
    };
    for b in ["a", "b", "b2", "c"] {
        let version = c.next_version().unwrap();
        c.apply_local(&Change {
            key: EntryKey::Bucket(b.into()),
            version,
            value: Value::Bucket(BucketInfo {
                name: b.into(),
                created_ms: 1,
                version,
            }),
        })
        .unwrap();
    }
    tomb(EntryKey::Bucket("a0".into()));
    tomb(EntryKey::Bucket("zz".into()));
    for (b, k) in [
        ("a", "x"),
        ("b", "a/1"),
        ("b", "a/2"),
        ("b2", ""),
        ("c", "é"),
    ] {
        put(&c, b, entry(k));
    }
    for (b, k) in [("a", "y"), ("b", "a/15"), ("b", "b"), ("zz", "q")] {
        tomb(EntryKey::Object {
            bucket: b.into(),
            key: k.into(),
        });
    }
    let mut want = c.all_changes().unwrap();
    want.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(want.len(), 15);
    for batch in [1, 2, 3, 7, 100] {
        let mut got = Vec::new();
        let mut after: Option<EntryKey> = None;
        loop {
            let page = c.changes_after(after.as_ref(), batch).unwrap();
            assert!(page.len() <= batch);
            let Some(last) = page.last() else { break };
            after = Some(last.key.clone());
            got.extend(page);
        }
        assert_eq!(got, want, "batch {batch}");
    }
}

#[test]
fn snapshot_chunk_places_are_kept_by_generation() {
    use crate::catalog::log::BlobRef;
    use crate::catalog::tree::ChunkId;
    let c = Catalog::temporary().unwrap();
    let blob = |n: u64| BlobRef {
        object_id: ObjectId([n as u8; 16]),
        size: n,
        segments: vec![],
    };
    c.remember_snapshot_chunks(
        5,
        &[(ChunkId([1; 32]), blob(1)), (ChunkId([2; 32]), blob(2))],
    )
    .unwrap();
    // Used again by a newer snapshot; an older one does not lower its generation.
    c.remember_snapshot_chunks(9, &[(ChunkId([2; 32]), blob(2))])
        .unwrap();
    c.remember_snapshot_chunks(3, &[(ChunkId([2; 32]), blob(2))])
        .unwrap();
    assert_eq!(c.snapshot_chunk(&ChunkId([1; 32])).unwrap(), Some(blob(1)));
    assert_eq!(c.forget_snapshot_chunks(Some(9)).unwrap(), 1);
    assert_eq!(c.snapshot_chunk(&ChunkId([1; 32])).unwrap(), None);
    assert_eq!(c.snapshot_chunks().unwrap().len(), 1);
    c.forget_snapshot_chunks(None).unwrap();
    assert_eq!(c.snapshot_chunk_count().unwrap(), 0);
}

#[test]
fn a_snapshot_leaf_records_its_keys_under_its_run_only() {
    let c = Catalog::temporary().unwrap();
    let key = |k: &str| EntryKey::Object {
        bucket: "b".into(),
        key: k.into(),
    };
    let tomb = |k: &str| Change {
        key: key(k),
        version: Version {
            hlc: Hlc(5),
            writer: WriterId([2; 16]),
        },
        value: Value::Tombstone,
    };
    assert_eq!(
        c.apply_snapshot_leaf(&[tomb("x"), tomb("y")], Some(7))
            .unwrap(),
        2
    );
    c.apply_snapshot_leaf(&[tomb("z")], None).unwrap();
    assert!(c.snapshot_has_key(7, &key("x")).unwrap());
    assert!(
        !c.snapshot_has_key(7, &key("z")).unwrap(),
        "no run, no keys"
    );
    assert!(!c.snapshot_has_key(8, &key("x")).unwrap(), "another run's");
    c.forget_snapshot_keys(7).unwrap();
    assert!(!c.snapshot_has_key(7, &key("x")).unwrap());
    assert_eq!(c.tombstone_count().unwrap(), 3);
}
