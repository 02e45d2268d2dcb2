use super::*;
use crate::piece_file::Refuse;
use shoal_proto::piece_hash::PieceHasher;
use shoal_proto::{Identity, PieceHash};

fn owner() -> PublicKey {
    *Identity::from_seed([9; 32]).public_key()
}

fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn root(bytes: &[u8]) -> PieceHash {
    let mut h = PieceHasher::new(4096);
    h.update(bytes);
    h.finish().root()
}

fn put(store: &Arc<PieceStore>, id: u8, bytes: &[u8], expires: u64) -> Result<PieceMeta, Error> {
    let mut p = store.begin_upload(
        PieceId([id; 32]),
        owner(),
        bytes.len() as u64,
        4096,
        expires,
    )?;
    p.write(bytes)?;
    p.commit(bytes.len() as u64, &root(bytes), 1)
}

#[test]
fn commit_read_delete_keep_counters_exact() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = PieceStore::open(dir.path(), 1 << 20).unwrap();
    let bytes = data(10_000, 1);
    put(&store, 1, &bytes, u64::MAX).unwrap();
    let (meta, mut f) = store.open_piece(&PieceId([1; 32]), 5).unwrap();
    assert_eq!(meta.info.size, 10_000);
    assert_eq!(f.read_at(4096, 10).unwrap(), bytes[4096..4106]);
    let space = store.space();
    assert_eq!(
        (space.used, space.pieces, space.reserved),
        (10_000 + PIECE_OVERHEAD, 1, 0)
    );
    assert!(store.check().unwrap().is_consistent());

    assert!(matches!(
        put(&store, 1, &bytes, u64::MAX),
        Err(Error::AlreadyExists(_))
    ));
    let stranger = *Identity::from_seed([8; 32]).public_key();
    assert!(matches!(
        store.delete(&PieceId([1; 32]), Some(&stranger)),
        Err(Error::NotOwner(_))
    ));
    store.delete(&PieceId([1; 32]), Some(&owner())).unwrap();
    assert_eq!(store.space().used, 0);
    let c = store.check().unwrap();
    assert!(c.is_consistent(), "{c:?}");
    assert_eq!(c.file_count, 0);
}

#[test]
fn bad_hash_or_size_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = PieceStore::open(dir.path(), 1 << 20).unwrap();
    let bytes = data(5000, 2);
    let mut p = store
        .begin_upload(PieceId([2; 32]), owner(), 8000, 4096, 10)
        .unwrap();
    p.write(&bytes).unwrap();
    assert!(matches!(
        p.commit(5000, &PieceHash([0; 32]), 1),
        Err(Error::HashMismatch)
    ));
    let mut p = store
        .begin_upload(PieceId([2; 32]), owner(), 8000, 4096, 10)
        .unwrap();
    p.write(&bytes).unwrap();
    assert!(matches!(
        p.commit(4999, &root(&bytes), 1),
        Err(Error::SizeMismatch { .. })
    ));
    let mut p = store
        .begin_upload(PieceId([2; 32]), owner(), 100, 4096, 10)
        .unwrap();
    assert!(matches!(p.write(&bytes), Err(Error::OverMaxSize { .. })));
    drop(p);
    assert_eq!(
        store.space(),
        Space {
            allocated: 1 << 20,
            used: 0,
            reserved: 0,
            free: 1 << 20,
            pieces: 0
        }
    );
    assert_eq!(store.temp_file_count(), 0);
}

#[test]
fn reservations_never_exceed_the_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let alloc = 10_000 + 2 * PIECE_OVERHEAD;
    let (store, _) = PieceStore::open(dir.path(), alloc).unwrap();
    let a = store
        .begin_upload(PieceId([1; 32]), owner(), 6000, 4096, 10)
        .unwrap();
    let b = store.begin_upload(PieceId([2; 32]), owner(), 6000, 4096, 10);
    assert!(
        matches!(b, Err(Error::NoSpace { requested, free })
            if requested == 6000 + PIECE_OVERHEAD && free == 4000 + PIECE_OVERHEAD),
        "{b:?}"
    );
    // The same piece id cannot be uploaded twice at once.
    assert!(matches!(
        store.begin_upload(PieceId([1; 32]), owner(), 1, 4096, 10),
        Err(Error::Busy(_))
    ));
    assert_eq!(store.space().reserved, 6000 + PIECE_OVERHEAD);
    drop(a);
    assert_eq!(store.space().reserved, 0);
    store
        .begin_upload(PieceId([2; 32]), owner(), 10_000 + PIECE_OVERHEAD, 4096, 10)
        .unwrap();
}

#[test]
fn uploads_reserve_step_by_step_and_a_stalled_one_holds_only_what_it_sent() {
    let dir = tempfile::tempdir().unwrap();
    let step = RESERVE_STEP;
    let alloc = 6 * step;
    let (store, _) = PieceStore::open(dir.path(), alloc).unwrap();
    // Admitted with a 5-step max_size, it holds one step until data arrives.
    let mut a = store
        .begin_upload(PieceId([1; 32]), owner(), 5 * step, 4096, u64::MAX)
        .unwrap();
    assert_eq!(store.space().reserved, charged(step));
    a.write(&vec![7; (step + 1) as usize]).unwrap();
    assert_eq!(store.space().reserved, charged(2 * step));
    // A second upload is admitted against what is free now (not against `a`'s
    // max_size), so a trickling `a` does not keep it out...
    let mut b = store
        .begin_upload(PieceId([2; 32]), owner(), 3 * step, 4096, u64::MAX)
        .unwrap();
    b.write(&vec![8; (3 * step) as usize]).unwrap();
    assert_eq!(
        store.space().reserved,
        charged(2 * step) + charged(3 * step)
    );
    // ...and when the space is taken, the one that grows last is refused mid-stream.
    let refused = a.write(&vec![7; (2 * step) as usize]);
    assert!(
        matches!(refused, Err(Error::NoSpace { requested, .. }) if requested == 2 * step),
        "{refused:?}"
    );
    // A refused write leaves the reservation as it was; dropping gives it all back.
    assert_eq!(
        store.space().reserved,
        charged(2 * step) + charged(3 * step)
    );
    drop(a);
    let bytes = vec![8; (3 * step) as usize];
    let mut h = PieceHasher::new(4096);
    h.update(&bytes);
    b.commit(3 * step, &h.finish().root(), 1).unwrap();
    assert_eq!(store.space().reserved, 0);
    assert_eq!(store.space().used, charged(3 * step));
    assert!(store.check().unwrap().is_consistent());
}

#[test]
fn an_upload_growing_past_its_owner_limit_is_refused_mid_stream() {
    let dir = tempfile::tempdir().unwrap();
    let step = RESERVE_STEP;
    let (store, _) = PieceStore::open_with(
        dir.path(),
        1 << 30,
        StoreOptions {
            max_bytes_per_owner: Some(charged(5 * step)),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let mut a = store
        .begin_upload(PieceId([1; 32]), owner(), 3 * step, 4096, u64::MAX)
        .unwrap();
    let mut b = store
        .begin_upload(PieceId([2; 32]), owner(), 3 * step, 4096, u64::MAX)
        .unwrap();
    a.write(&vec![1; (3 * step) as usize]).unwrap();
    let refused = b.write(&vec![2; (2 * step) as usize]);
    assert!(
        matches!(refused, Err(Error::OwnerQuota { requested, .. }) if requested == step),
        "{refused:?}"
    );
    drop((a, b));
    assert_eq!(store.space().reserved, 0);
}

#[test]
fn tiny_pieces_are_charged_their_overhead_and_max_size_zero_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Room for three empty-ish pieces, not four.
    let (store, _) = PieceStore::open(dir.path(), 3 * charged(1)).unwrap();
    assert!(matches!(
        store.begin_upload(PieceId([9; 32]), owner(), 0, 4096, u64::MAX),
        Err(Error::ZeroMaxSize)
    ));
    for id in 1..=3 {
        put(&store, id, &[id], u64::MAX).unwrap();
    }
    assert_eq!(store.space().used, 3 * charged(1));
    assert!(matches!(
        put(&store, 4, &[4], u64::MAX),
        Err(Error::NoSpace { .. })
    ));
    // A piece declared with room but sent empty still costs its overhead.
    store.delete(&PieceId([3; 32]), None).unwrap();
    let p = store
        .begin_upload(PieceId([5; 32]), owner(), 1, 4096, u64::MAX)
        .unwrap();
    p.commit(0, &root(&[]), 1).unwrap();
    assert_eq!(store.space().used, 2 * charged(1) + charged(0));
    assert!(store.check().unwrap().is_consistent());
}

#[test]
fn one_owner_cannot_store_past_its_limit_and_others_are_unaffected() {
    let dir = tempfile::tempdir().unwrap();
    let limit = 2 * charged(10_000);
    let (store, _) = PieceStore::open_with(
        dir.path(),
        1 << 30,
        StoreOptions {
            max_bytes_per_owner: Some(limit),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    put(&store, 1, &data(10_000, 1), u64::MAX).unwrap();
    // An upload in flight counts too.
    let in_flight = store
        .begin_upload(PieceId([2; 32]), owner(), 10_000, 4096, u64::MAX)
        .unwrap();
    let refused = store.begin_upload(PieceId([3; 32]), owner(), 1, 4096, u64::MAX);
    assert!(
        matches!(refused, Err(Error::OwnerQuota { limit: l, used, .. })
            if l == limit && used == 2 * charged(10_000)),
        "{refused:?}"
    );
    assert_eq!(
        tonic::Status::from(Error::OwnerQuota {
            limit: 1,
            used: 1,
            requested: 1
        })
        .code(),
        tonic::Code::ResourceExhausted
    );
    // Another owner is not held back by this one.
    let other = Identity::from_seed([7; 32]);
    store
        .begin_upload(
            PieceId([4; 32]),
            *other.public_key(),
            10_000,
            4096,
            u64::MAX,
        )
        .unwrap();
    // Aborting the upload in flight frees the owner's room again.
    drop(in_flight);
    put(&store, 3, &data(10_000, 3), u64::MAX).unwrap();
    assert_eq!(
        store.owner_usage(&owner()).unwrap(),
        Usage {
            bytes: limit,
            pieces: 2
        }
    );
    // Deleting a piece gives the room back.
    store.delete(&PieceId([1; 32]), None).unwrap();
    put(&store, 5, &data(100, 5), u64::MAX).unwrap();
}

#[test]
fn expired_pieces_are_collected() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = PieceStore::open(dir.path(), 1 << 20).unwrap();
    put(&store, 1, &data(100, 1), 50).unwrap();
    put(&store, 2, &data(200, 2), 500).unwrap();
    assert!(matches!(
        store.get(&PieceId([1; 32]), 50),
        Err(Error::NotFound(_))
    ));
    assert_eq!(store.collect_expired(49, 100).unwrap(), 0);
    assert_eq!(store.collect_expired(50, 100).unwrap(), 1);
    assert_eq!(store.space().used, charged(200));
    store
        .renew(&[PieceId([2; 32])], &owner(), 5000, 60)
        .unwrap();
    assert_eq!(store.collect_expired(1000, 100).unwrap(), 0);
    assert!(store.check().unwrap().is_consistent());
}

#[test]
fn batch_renewal_is_per_piece_monotonic_and_idempotent() {
    use shoal_proto::messages::RenewStatus;
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = PieceStore::open(dir.path(), 1 << 20).unwrap();
    put(&store, 1, &data(100, 1), 500).unwrap();
    put(&store, 2, &data(200, 2), 9000).unwrap();
    put(&store, 3, &data(300, 3), 50).unwrap();
    let ids = [
        PieceId([1; 32]),
        PieceId([2; 32]),
        PieceId([3; 32]),
        PieceId([4; 32]),
    ];
    let statuses = |r: Vec<shoal_proto::messages::RenewResult>| {
        r.into_iter().map(|r| r.status).collect::<Vec<_>>()
    };
    let r = store.renew(&ids, &owner(), 5000, 60).unwrap();
    assert_eq!(
        statuses(r.clone()),
        vec![
            RenewStatus::Renewed {
                expires_at_ms: 5000
            },
            // Never shortened: the piece keeps its later lease.
            RenewStatus::Renewed {
                expires_at_ms: 9000
            },
            // Expired before the order arrived: gone, not revived.
            RenewStatus::NotFound,
            RenewStatus::NotFound,
        ]
    );
    assert_eq!(r.iter().map(|r| r.piece_id).collect::<Vec<_>>(), ids);
    // The same order again changes nothing; an older one (earlier expiry) rolls nothing back.
    assert_eq!(
        statuses(store.renew(&ids, &owner(), 5000, 61).unwrap()),
        statuses(r)
    );
    store.renew(&ids[..1], &owner(), 700, 62).unwrap();
    assert_eq!(store.get(&ids[0], 63).unwrap().expires_at_ms, 5000);
    // Another key cannot renew (or learn anything beyond "not yours").
    let other = *Identity::from_seed([1; 32]).public_key();
    assert_eq!(
        statuses(store.renew(&ids[..1], &other, 8000, 64).unwrap()),
        vec![RenewStatus::NotOwner]
    );
    assert_eq!(store.get(&ids[0], 65).unwrap().expires_at_ms, 5000);
    // Expiry follows the renewed lease, with exact accounting.
    assert_eq!(store.collect_expired(4999, 100).unwrap(), 1); // piece 3 (lease 50)
    assert_eq!(store.space().used, charged(100) + charged(200));
    assert_eq!(store.collect_expired(5000, 100).unwrap(), 1);
    assert_eq!(store.space().used, charged(200));
    assert_eq!(store.space().pieces, 1);
    assert!(store.check().unwrap().is_consistent());
}

#[test]
fn recovery_removes_partial_uploads_and_finishes_commits() {
    let dir = tempfile::tempdir().unwrap();
    // Bigger than INLINE_MAX: pieces with files (inline ones have none to recover).
    let len = INLINE_MAX as usize + 1000;
    let bytes = data(len, 3);
    {
        let (store, _) = PieceStore::open(dir.path(), 1 << 20).unwrap();
        put(&store, 1, &bytes, u64::MAX).unwrap();
        put(&store, 4, &bytes, u64::MAX).unwrap();
        // A crash mid-upload: a temp file with no metadata.
        fs::write(store.tmp_path(&PieceId([2; 32])), &bytes[..100]).unwrap();
        // A crash between the metadata commit and the rename.
        let mut h = PieceHasher::new(4096);
        h.update(&bytes);
        let info = h.finish();
        let meta = PieceMeta {
            owner: owner(),
            piece_hash: info.root(),
            info,
            created_at_ms: 1,
            expires_at_ms: u64::MAX,
            tag: Vec::new(),
        };
        store.meta().insert(&PieceId([3; 32]), &meta, None).unwrap();
        fs::write(store.tmp_path(&PieceId([3; 32])), &bytes).unwrap();
        // A crash between the metadata removal and the file removal.
        store.meta().remove(&PieceId([4; 32])).unwrap();
        store.flush().unwrap();
    }
    let (store, recovery) = PieceStore::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(
        recovery,
        Recovery {
            temp_files_removed: 1,
            renames_completed: 1,
            removals_completed: 1
        }
    );
    let c = store.check().unwrap();
    assert!(c.is_consistent(), "{c:?}");
    assert_eq!(
        (c.counters.used, c.counters.pieces),
        (charged(len as u64) * 2, 2)
    );
    let (_, mut f) = store.open_piece(&PieceId([3; 32]), 1).unwrap();
    assert_eq!(f.read_at(0, len).unwrap(), bytes);
}

fn put_in_chunks(store: &Arc<PieceStore>, id: u8, bytes: &[u8]) -> (bool, PieceMeta) {
    let mut p = store
        .begin_upload(
            PieceId([id; 32]),
            owner(),
            (bytes.len() as u64).max(1),
            4096,
            u64::MAX,
        )
        .unwrap();
    for c in bytes.chunks(100_000) {
        p.write(c).unwrap();
    }
    let direct = p.is_direct();
    (
        direct,
        p.commit(bytes.len() as u64, &root(bytes), 1).unwrap(),
    )
}

fn read_back(store: &Arc<PieceStore>, id: u8) -> Vec<u8> {
    let (meta, mut f) = store.open_piece(&PieceId([id; 32]), 1).unwrap();
    assert_eq!(f.size().unwrap(), meta.info.size, "exact size, no padding");
    f.read_at(0, meta.info.size as usize).unwrap()
}

#[test]
fn direct_and_buffered_stores_hold_the_same_pieces() {
    for direct_io in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = PieceStore::open_with(
            dir.path(),
            1 << 30,
            StoreOptions {
                direct_io,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        for (id, len) in [
            (1u8, 0usize),
            (2, 1),
            (3, 4097),
            (4, (1 << 20) + 4096),
            (5, 3_000_001),
        ] {
            let bytes = data(len, id);
            let (was_direct, meta) = put_in_chunks(&store, id, &bytes);
            let big = len as u64 >= crate::piece_file::DIRECT_MIN_SIZE;
            assert_eq!(was_direct, direct_io && big, "piece {id}");
            assert_eq!(meta.info.size, len as u64);
            assert!(
                read_back(&store, id) == bytes,
                "piece {id}, direct {direct_io}"
            );
        }
        assert_eq!(store.direct_io(), direct_io);
        let c = store.check().unwrap();
        assert!(c.is_consistent(), "{c:?}");
    }
}

#[test]
fn a_file_system_refusing_o_direct_gets_buffered_writes_and_the_store_remembers() {
    let cases = [
        Refuse {
            open: true,
            writes_from: None,
        },
        Refuse {
            open: false,
            writes_from: Some(0),
        },
        Refuse {
            open: false,
            writes_from: Some(1 << 20),
        },
    ];
    for inject in cases {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = PieceStore::open_refusing(dir.path(), 1 << 30, inject).unwrap();
        assert!(store.direct_io());
        let bytes = data(3_000_001, 1);
        let (was_direct, _) = put_in_chunks(&store, 1, &bytes);
        assert!(!was_direct, "{inject:?}: fell back");
        assert!(!store.direct_io(), "{inject:?}: remembered for the store");
        assert!(read_back(&store, 1) == bytes, "{inject:?}");
        // The next piece does not even try.
        let (was_direct, _) = put_in_chunks(&store, 2, &bytes[..200_000]);
        assert!(!was_direct);
        assert!(read_back(&store, 2) == bytes[..200_000]);
        let c = store.check().unwrap();
        assert!(c.is_consistent(), "{c:?}");
    }
}

#[test]
fn direct_uploads_keep_the_size_bound_and_drop_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = PieceStore::open(dir.path(), 1 << 30).unwrap();
    let mut p = store
        .begin_upload(PieceId([1; 32]), owner(), 100_000, 4096, 10)
        .unwrap();
    assert!(p.is_direct());
    p.write(&data(99_000, 1)).unwrap();
    assert!(matches!(
        p.write(&data(1_001, 1)),
        Err(Error::OverMaxSize { max_size: 100_000 })
    ));
    assert_eq!(store.temp_file_count(), 1);
    drop(p);
    assert_eq!(store.temp_file_count(), 0);
    assert_eq!(store.space().reserved, 0);
}

#[test]
fn small_pieces_live_in_the_metadata_with_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = data(INLINE_MAX as usize, 6);
    {
        let (store, _) = PieceStore::open(dir.path(), 1 << 20).unwrap();
        // Received in memory: no temp file, not even while the upload is open.
        let mut p = store
            .begin_upload(PieceId([6; 32]), owner(), INLINE_MAX, 4096, 5000)
            .unwrap();
        assert!(p.is_inline());
        p.write(&bytes[..100]).unwrap();
        assert_eq!(store.temp_file_count(), 0);
        p.write(&bytes[100..]).unwrap();
        // The order's max_size still bounds it.
        assert!(matches!(p.write(b"x"), Err(Error::OverMaxSize { .. })));
        p.commit(bytes.len() as u64, &root(&bytes), 1).unwrap();
        // One byte over the bound: a piece file, as before.
        let big = data(INLINE_MAX as usize + 1, 7);
        put(&store, 7, &big, u64::MAX).unwrap();
        let c = store.check().unwrap();
        assert!(c.is_consistent(), "{c:?}");
        assert_eq!((c.inline_count, c.inline_bytes), (1, INLINE_MAX));
        assert_eq!((c.file_count, c.file_bytes), (1, INLINE_MAX + 1));
        assert_eq!(
            store.space().used,
            charged(INLINE_MAX) + charged(INLINE_MAX + 1)
        );
    }
    // Durable once committed: it is there after a restart.
    let (store, recovery) = PieceStore::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(recovery, Recovery::default());
    let (meta, mut f) = store.open_piece(&PieceId([6; 32]), 1).unwrap();
    assert!(matches!(f, PieceData::Inline(_)));
    assert_eq!(f.size().unwrap(), meta.info.size);
    assert_eq!(f.read_at(1000, 10).unwrap(), bytes[1000..1010]);
    assert_eq!(f.read_at(0, bytes.len()).unwrap(), bytes);
    // A read past the end is an error, as for a file.
    let past = f.read_at(INLINE_MAX - 1, 2).unwrap_err();
    assert_eq!(past.kind(), std::io::ErrorKind::UnexpectedEof);
    assert!(f.read_at(u64::MAX, 1).is_err());
    // Expiry and deletion take its bytes with the metadata, and leave no trash.
    assert_eq!(store.collect_expired(5000, 10).unwrap(), 1);
    assert!(store.meta().inline(&PieceId([6; 32])).unwrap().is_none());
    assert!(store.meta().trash().unwrap().is_empty());
    store.delete(&PieceId([7; 32]), Some(&owner())).unwrap();
    let c = store.check().unwrap();
    assert!(c.is_consistent(), "{c:?}");
    assert_eq!((c.counters.used, c.counters.pieces), (0, 0));
}

#[test]
fn an_abandoned_small_upload_releases_its_reservation_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = PieceStore::open(dir.path(), 1 << 20).unwrap();
    let bytes = data(3000, 8);
    let mut p = store
        .begin_upload(PieceId([8; 32]), owner(), 4000, 4096, u64::MAX)
        .unwrap();
    p.write(&bytes).unwrap();
    assert_eq!(store.space().reserved, charged(4000));
    // A wrong hash fails the commit; nothing is stored.
    assert!(matches!(
        p.commit(3000, &root(b"other"), 1),
        Err(Error::HashMismatch)
    ));
    let mut p = store
        .begin_upload(PieceId([8; 32]), owner(), 4000, 4096, u64::MAX)
        .unwrap();
    p.write(&bytes).unwrap();
    drop(p);
    assert_eq!(store.space().reserved, 0);
    assert!(store.meta().inline(&PieceId([8; 32])).unwrap().is_none());
    let c = store.check().unwrap();
    assert!(c.is_consistent(), "{c:?}");
    assert_eq!(c.meta_pieces, 0);
}

#[test]
fn a_tag_is_stored_with_its_piece_and_listed_for_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = PieceStore::open(dir.path(), 1 << 20).unwrap();
    let bytes = data(10, 3);
    let mut p = store
        .begin_upload(PieceId([9; 32]), owner(), 10, 4096, u64::MAX)
        .unwrap();
    assert!(matches!(
        p.set_tag(vec![0; crate::meta::MAX_TAG + 1]),
        Err(Error::Db(crate::meta::DbError::TagTooLong { .. }))
    ));
    p.set_tag(b"catalog".to_vec()).unwrap();
    p.write(&bytes).unwrap();
    p.commit(10, &root(&bytes), 1).unwrap();
    put(&store, 10, &data(5000, 4), u64::MAX).unwrap();
    let listed = store.meta().owner_pieces(&owner(), None, 10).unwrap();
    let tags: Vec<(PieceId, Vec<u8>)> = listed.into_iter().map(|p| (p.id, p.tag)).collect();
    assert_eq!(
        tags,
        vec![
            (PieceId([9; 32]), b"catalog".to_vec()),
            (PieceId([10; 32]), Vec::new())
        ]
    );
    // Kept across a restart.
    drop(store);
    let (store, _) = PieceStore::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(
        store.get(&PieceId([9; 32]), 1).unwrap().tag,
        b"catalog".to_vec()
    );
}
