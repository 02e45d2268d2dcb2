//! A storage directory written by the sled-era node (`tests/fixtures/sled-store`, made
//! by the code of that time, see its README) opens in this version with every piece,
//! inline piece, expiry, trash entry, counter and owner total; the migration is atomic
//! and runs once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use shoal_proto::{PieceId, PublicKey};
use storage_node::PieceStore;
use storage_node::meta::{DB_FILE, MetaDb, SLED_DIR, SLED_MIGRATED_DIR};
use storage_node::store::{PieceData, Usage};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sled-store")
}

/// The fixture's storage directory, copied into a temp dir.
fn storage() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    shoal_test_kit::copy_dir(&fixture().join("storage"), &dir).unwrap();
    assert!(dir.join(SLED_DIR).is_dir());
    (tmp, dir)
}

/// The bytes the fixture's generator stored for piece `id` (its first byte).
fn data(id: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(id))
        .collect()
}

#[derive(Debug)]
struct Piece {
    id: PieceId,
    owner: String,
    len: usize,
    expires: u64,
    inline: bool,
    hash: String,
}

#[derive(Debug, Default)]
struct Manifest {
    pieces: Vec<Piece>,
    trash: Vec<PieceId>,
    counters: (u64, u64),
    owners: Vec<(String, Usage)>,
}

fn manifest() -> Manifest {
    let text = std::fs::read_to_string(fixture().join("manifest.txt")).unwrap();
    let mut m = Manifest::default();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        match f[0] {
            "piece" => m.pieces.push(Piece {
                id: PieceId::from_hex(f[1]).unwrap(),
                owner: f[2].to_owned(),
                len: f[3].parse().unwrap(),
                expires: f[4].parse().unwrap(),
                inline: f[5] == "1",
                hash: f[6].to_owned(),
            }),
            "trash" => m.trash.push(PieceId::from_hex(f[1]).unwrap()),
            "counters" => m.counters = (f[1].parse().unwrap(), f[2].parse().unwrap()),
            "owner" => m.owners.push((
                f[1].to_owned(),
                Usage {
                    bytes: f[2].parse().unwrap(),
                    pieces: f[3].parse().unwrap(),
                },
            )),
            other => panic!("unknown manifest line {other}"),
        }
    }
    assert!(m.pieces.len() >= 9 && m.trash.len() == 1 && m.owners.len() == 2);
    m
}

fn owner_key(hex: &str) -> PublicKey {
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    PublicKey::from_bytes("owner", &bytes).unwrap()
}

fn piece_path(dir: &Path, id: &PieceId) -> PathBuf {
    let hex = id.to_hex();
    dir.join("pieces")
        .join(&hex[0..2])
        .join(&hex[2..4])
        .join(hex)
}

/// Everything the manifest lists is in the store, readable through it.
fn check_everything(store: &PieceStore, dir: &Path, m: &Manifest) {
    for p in &m.pieces {
        // Before every expiry in the fixture, so that even expired pieces are readable.
        let (meta, mut f) = store.open_piece(&p.id, 500).unwrap();
        assert_eq!(meta.owner.to_hex(), p.owner);
        assert_eq!(meta.info.size, p.len as u64);
        assert_eq!(meta.expires_at_ms, p.expires);
        assert_eq!(meta.piece_hash.to_hex(), p.hash);
        assert!(meta.tag.is_empty());
        assert_eq!(matches!(f, PieceData::Inline(_)), p.inline, "{p:?}");
        assert_eq!(
            f.read_at(0, p.len).unwrap(),
            data(p.id.0[0], p.len),
            "{p:?}"
        );
        assert!(meta.info.verify_block(0, &data(p.id.0[0], p.len.min(4096))));
    }
    let space = store.space();
    assert_eq!((space.used, space.pieces), m.counters);
    let c = store.meta().counters().unwrap();
    assert_eq!((c.used, c.pieces), m.counters);
    for (owner, usage) in &m.owners {
        assert_eq!(store.owner_usage(&owner_key(owner)).unwrap(), *usage);
    }
    assert_eq!(store.top_owners(10).unwrap().1, m.owners.len());
    // The expiry index came along: the two expired pieces, in expiry order.
    let mut expired: Vec<&Piece> = m.pieces.iter().filter(|p| p.expires < 1_500).collect();
    expired.sort_by_key(|p| p.expires);
    let ids: Vec<PieceId> = expired.iter().map(|p| p.id).collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(store.meta().expired(1_500, 10).unwrap(), ids);
    // The interrupted removal was finished: metadata and file gone, trash empty.
    for t in &m.trash {
        assert!(store.meta().get(t).unwrap().is_none());
        assert!(!piece_path(dir, t).exists());
    }
    assert!(store.meta().trash().unwrap().is_empty());
    let check = store.check().unwrap();
    assert!(check.is_consistent(), "{check:?}");
}

#[test]
fn a_sled_store_opens_with_every_piece_counter_and_owner_total() {
    let m = manifest();
    let (_tmp, dir) = storage();
    // The fixture holds the interrupted removal's file, which startup removes.
    assert!(piece_path(&dir, &m.trash[0]).exists());
    let (store, recovery) = PieceStore::open(&dir, 1 << 30).unwrap();
    assert_eq!(recovery.removals_completed, 1);
    assert!(
        !dir.join(SLED_DIR).exists(),
        "the sled directory is set aside"
    );
    assert!(dir.join(SLED_MIGRATED_DIR).is_dir());
    assert!(dir.join(DB_FILE).is_file());
    check_everything(&store, &dir, &m);
    // Reopened: the same, nothing imported twice.
    drop(store);
    let (store, recovery) = PieceStore::open(&dir, 1 << 30).unwrap();
    assert_eq!(recovery, Default::default());
    check_everything(&store, &dir, &m);
    // Still a working store: a piece can be deleted and the counters follow.
    store.delete(&m.pieces[0].id, None).unwrap();
    assert_eq!(store.space().pieces, m.counters.1 - 1);
}

#[test]
fn a_migration_that_never_committed_runs_again() {
    let m = manifest();
    let (_tmp, dir) = storage();
    // A crash mid-migration leaves the SQLite file with its schema and nothing else
    // (the import is one transaction), and the sled directory as it was.
    drop(MetaDb::open(&dir.join(DB_FILE)).unwrap());
    let (store, _) = PieceStore::open(&dir, 1 << 30).unwrap();
    check_everything(&store, &dir, &m);
}

#[test]
fn a_crash_between_the_commit_and_the_rename_does_not_import_twice() {
    let m = manifest();
    let (_tmp, dir) = storage();
    drop(PieceStore::open(&dir, 1 << 30).unwrap());
    // The rename never reached the disk: sled's directory is back under its old name.
    std::fs::rename(dir.join(SLED_MIGRATED_DIR), dir.join(SLED_DIR)).unwrap();
    let (store, _) = PieceStore::open(&dir, 1 << 30).unwrap();
    assert!(!dir.join(SLED_DIR).exists());
    check_everything(&store, &dir, &m);
}
