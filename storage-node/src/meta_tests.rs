use super::*;
use shoal_proto::Identity;
use std::time::Instant;

pub(crate) fn meta(size: u64, expires_at_ms: u64) -> PieceMeta {
    let owner = *Identity::from_seed([3; 32]).public_key();
    let block_hashes = vec![[7u8; 32]; size.div_ceil(4096) as usize];
    let info = PieceInfo {
        size,
        block_size: 4096,
        block_hashes,
    };
    PieceMeta {
        owner,
        piece_hash: info.root(),
        info,
        created_at_ms: 1,
        expires_at_ms,
        tag: Vec::new(),
    }
}

fn open() -> (tempfile::TempDir, MetaDb) {
    let dir = tempfile::tempdir().unwrap();
    let db = MetaDb::open(&dir.path().join(DB_FILE)).unwrap();
    (dir, db)
}

#[test]
fn records_round_trip_with_tag_and_extreme_values() {
    let (_dir, db) = open();
    let mut m = meta(10_000, u64::MAX);
    m.tag = b"catalog".to_vec();
    db.insert(&PieceId([1; 32]), &m, None).unwrap();
    assert_eq!(db.get(&PieceId([1; 32])).unwrap().unwrap(), m);
    assert!(db.contains(&PieceId([1; 32])).unwrap());
    assert!(!db.contains(&PieceId([2; 32])).unwrap());
    assert_eq!(db.get(&PieceId([2; 32])).unwrap(), None);
    // A tag over the limit is refused and changes nothing.
    let mut long = meta(1, 5);
    long.tag = vec![0; MAX_TAG + 1];
    assert!(matches!(
        db.insert(&PieceId([3; 32]), &long, None),
        Err(Error::Db(DbError::TagTooLong { len: 129 }))
    ));
    assert_eq!(db.counters().unwrap().pieces, 1);
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    drop(MetaDb::open(&path).unwrap());
    let c = Connection::open(&path).unwrap();
    c.pragma_update(None, "user_version", SCHEMA.len() as i64 + 1)
        .unwrap();
    drop(c);
    assert!(matches!(
        MetaDb::open(&path),
        Err(Error::Db(DbError::TooNew { .. }))
    ));
}

#[test]
fn reopening_keeps_everything_and_the_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    {
        let db = MetaDb::open(&path).unwrap();
        db.insert(&PieceId([1; 32]), &meta(100, 50), Some(&[5; 100]))
            .unwrap();
        db.flush().unwrap();
    }
    let db = MetaDb::open(&path).unwrap();
    assert_eq!(db.inline(&PieceId([1; 32])).unwrap().unwrap(), vec![5; 100]);
    let c = Connection::open(&path).unwrap();
    let v: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA.len() as i64);
}

#[test]
fn counters_follow_inserts_and_removes() {
    let (_dir, db) = open();
    let (a, b) = (PieceId([1; 32]), PieceId([2; 32]));
    db.insert(&a, &meta(100, 50), None).unwrap();
    db.insert(&b, &meta(200, 10), None).unwrap();
    assert!(matches!(
        db.insert(&a, &meta(1, 1), None),
        Err(Error::AlreadyExists(_))
    ));
    assert_eq!(
        db.counters().unwrap(),
        Counters {
            used: 300 + 2 * PIECE_OVERHEAD,
            pieces: 2
        }
    );
    assert_eq!(db.expired(10, 10).unwrap(), vec![b]);
    assert_eq!(db.expired(9, 10).unwrap(), vec![]);
    assert_eq!(db.expired(1000, 10).unwrap(), vec![b, a]);
    assert_eq!(db.expired(1000, 1).unwrap(), vec![b]);
    let (removed, c, inline) = db.remove(&b).unwrap();
    assert!(!inline);
    assert_eq!(removed.info.size, 200);
    assert_eq!(
        c,
        Counters {
            used: 100 + PIECE_OVERHEAD,
            pieces: 1
        }
    );
    assert_eq!(db.trash().unwrap(), vec![b]);
    db.clear_trash(&b).unwrap();
    assert!(db.trash().unwrap().is_empty());
    assert!(matches!(db.remove(&b), Err(Error::NotFound(_))));
    assert!(matches!(db.set_expiry(&b, 5), Err(Error::NotFound(_))));
    db.set_expiry(&a, 5).unwrap();
    assert_eq!(db.expired(5, 10).unwrap(), vec![a]);
    assert_eq!(db.get(&a).unwrap().unwrap().expires_at_ms, 5);
}

#[test]
fn inline_pieces_live_and_die_with_their_record() {
    let (_dir, db) = open();
    let id = PieceId([4; 32]);
    db.insert(&id, &meta(3, 99), Some(b"abc")).unwrap();
    assert_eq!(db.inline(&id).unwrap().unwrap(), b"abc");
    let mut seen = Vec::new();
    db.for_each_piece(|id, m, inline| seen.push((id, m.info.size, inline)))
        .unwrap();
    assert_eq!(seen, vec![(id, 3, Some(3))]);
    let (_, c, inline) = db.remove(&id).unwrap();
    assert!(inline);
    assert_eq!(c, Counters::default());
    assert!(db.inline(&id).unwrap().is_none());
    assert!(
        db.trash().unwrap().is_empty(),
        "an inline piece has no file"
    );
}

fn meta_of(owner: u8, size: u64) -> PieceMeta {
    PieceMeta {
        owner: *Identity::from_seed([owner; 32]).public_key(),
        ..meta(size, 99)
    }
}

#[test]
fn owner_totals_add_up_to_the_counters_and_follow_every_change() {
    let (_dir, db) = open();
    let (a, b) = (meta_of(1, 0).owner, meta_of(2, 0).owner);
    db.insert(&PieceId([1; 32]), &meta_of(1, 1000), None)
        .unwrap();
    db.insert(&PieceId([2; 32]), &meta_of(1, 0), None).unwrap();
    db.insert(&PieceId([3; 32]), &meta_of(2, 5000), None)
        .unwrap();
    // An existing id changes nothing, for anyone.
    assert!(db.insert(&PieceId([3; 32]), &meta_of(1, 7), None).is_err());
    let ua = db.owner_usage(&a).unwrap();
    let ub = db.owner_usage(&b).unwrap();
    assert_eq!(
        ua,
        Usage {
            bytes: 1000 + 2 * PIECE_OVERHEAD,
            pieces: 2
        }
    );
    assert_eq!(
        ub,
        Usage {
            bytes: 5000 + PIECE_OVERHEAD,
            pieces: 1
        }
    );
    let c = db.counters().unwrap();
    assert_eq!(
        (c.used, c.pieces),
        (ua.bytes + ub.bytes, ua.pieces + ub.pieces)
    );
    // a's two pieces (one empty) outweigh b's one larger piece, thanks to the overhead.
    assert!(ua.bytes > ub.bytes);
    assert_eq!(db.top_owners(1).unwrap(), vec![(a, ua)]);
    assert_eq!(db.top_owners(5).unwrap(), vec![(a, ua), (b, ub)]);
    assert_eq!(db.owner_count().unwrap(), 2);
    // A zero-byte piece costs its overhead.
    db.remove(&PieceId([2; 32])).unwrap();
    assert_eq!(
        db.owner_usage(&a).unwrap(),
        Usage {
            bytes: 1000 + PIECE_OVERHEAD,
            pieces: 1
        }
    );
    db.remove(&PieceId([3; 32])).unwrap();
    assert_eq!(db.owner_usage(&b).unwrap(), Usage::default());
    assert_eq!(
        db.owner_count().unwrap(),
        1,
        "an owner with nothing left is forgotten"
    );
}

#[test]
fn owner_pieces_are_paged_in_id_order_per_owner() {
    let (_dir, db) = open();
    let a = meta_of(1, 0).owner;
    for i in [9u8, 3, 7, 1, 5] {
        let mut m = meta_of(1, u64::from(i) * 10);
        m.tag = vec![i];
        m.expires_at_ms = 1000 + u64::from(i);
        db.insert(&PieceId([i; 32]), &m, None).unwrap();
    }
    db.insert(&PieceId([4; 32]), &meta_of(2, 1), None).unwrap();
    let page = db.owner_pieces(&a, None, 2).unwrap();
    assert_eq!(
        page,
        vec![
            OwnedPiece {
                id: PieceId([1; 32]),
                size: 10,
                expires_at_ms: 1001,
                tag: vec![1]
            },
            OwnedPiece {
                id: PieceId([3; 32]),
                size: 30,
                expires_at_ms: 1003,
                tag: vec![3]
            },
        ]
    );
    let rest = db.owner_pieces(&a, Some(&PieceId([3; 32])), 10).unwrap();
    let ids: Vec<u8> = rest.iter().map(|p| p.id.0[0]).collect();
    assert_eq!(
        ids,
        vec![5, 7, 9],
        "strictly after, another owner's 4 left out"
    );
    assert!(
        db.owner_pieces(&a, Some(&PieceId([9; 32])), 10)
            .unwrap()
            .is_empty()
    );
    assert!(db.owner_pieces(&a, None, 0).unwrap().is_empty());
    let b = meta_of(2, 0).owner;
    assert_eq!(db.owner_pieces(&b, None, 10).unwrap().len(), 1);
}

#[test]
fn dht_records_expire_and_are_replaced() {
    let (_dir, db) = open();
    db.put_dht_record(&[1; 32], b"one", 100).unwrap();
    db.put_dht_record(&[2; 32], b"two", 200).unwrap();
    db.put_dht_record(&[3; 32], b"three", 300).unwrap();
    assert_eq!(
        db.dht_records(150, 10).unwrap(),
        vec![(b"two".to_vec(), 200), (b"three".to_vec(), 300)]
    );
    assert_eq!(db.dht_records(0, 1).unwrap(), vec![(b"one".to_vec(), 100)]);
    // Replaced in place: the newer record and expiry win.
    db.put_dht_record(&[1; 32], b"one'", 400).unwrap();
    assert_eq!(
        db.dht_records(350, 10).unwrap(),
        vec![(b"one'".to_vec(), 400)]
    );
    assert_eq!(db.remove_expired_dht_records(200).unwrap(), 1);
    assert_eq!(db.dht_records(0, 10).unwrap().len(), 2);
    db.remove_dht_record(&[3; 32]).unwrap();
    db.remove_dht_record(&[3; 32]).unwrap();
    assert_eq!(
        db.dht_records(0, 10).unwrap(),
        vec![(b"one'".to_vec(), 400)]
    );
}

#[test]
fn known_peers_keep_the_newest_bounded_number() {
    let (_dir, db) = open();
    let peer = |i: u16, seen: u64| {
        let mut id = [0u8; 32];
        id[..2].copy_from_slice(&i.to_be_bytes());
        (id, i.to_be_bytes().to_vec(), seen)
    };
    let first: Vec<_> = (0..200).map(|i| peer(i, 1000 + u64::from(i))).collect();
    db.put_known_peers(&first).unwrap();
    let second: Vec<_> = (200..300).map(|i| peer(i, 1000 + u64::from(i))).collect();
    db.put_known_peers(&second).unwrap();
    let all = db.known_peers(1000).unwrap();
    assert_eq!(all.len(), MAX_KNOWN_PEERS);
    assert_eq!(
        all[0],
        (299u16.to_be_bytes().to_vec(), 1299),
        "newest first"
    );
    assert_eq!(
        all[MAX_KNOWN_PEERS - 1].1,
        1000 + 300 - MAX_KNOWN_PEERS as u64
    );
    // Seeing an old peer again refreshes it.
    db.put_known_peers(&[peer(0, 5000)]).unwrap();
    assert_eq!(
        db.known_peers(1).unwrap(),
        vec![(0u16.to_be_bytes().to_vec(), 5000)]
    );
    assert_eq!(db.known_peers(1000).unwrap().len(), MAX_KNOWN_PEERS);
}

#[test]
fn the_stall_watch_sees_a_call_in_flight() {
    let (_dir, db) = open();
    assert!(db.stall().is_none());
    let held = db.writer();
    let db2 = db.clone();
    let t = std::thread::spawn(move || db2.insert(&PieceId([1; 32]), &meta(1, 1), None));
    let started = Instant::now();
    while db.stall().is_none() && started.elapsed() < Duration::from_secs(10) {
        std::thread::yield_now();
    }
    let (_, what) = db.stall().unwrap();
    assert_eq!(what, "insert");
    drop(held);
    t.join().unwrap().unwrap();
    assert!(db.stall().is_none());
}

#[test]
fn writes_are_visible_to_other_processes_readers_at_once() {
    let (dir, db) = open();
    db.insert(&PieceId([1; 32]), &meta(10, 99), None).unwrap();
    // What an operator's `sqlite3` shell sees while the node runs.
    let c = Connection::open(dir.path().join(DB_FILE)).unwrap();
    let n: i64 = c
        .query_row("SELECT pieces FROM counters", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
}
