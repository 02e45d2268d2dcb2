//! Writes the sled-era fixture `tests/fixtures/sled-store.tar.gz` with the code of the
//! time (the store before SQLite). Kept only until the SQLite store replaces it; the
//! migration test (`tests/migrate_sled.rs`) reads the fixture. Run:
//! `SHOAL_FIXTURE_OUT=/tmp/fx cargo test -p storage-node --test make_sled_fixture -- --ignored`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use shoal_proto::piece_hash::PieceHasher;
use shoal_proto::{Identity, PieceId, PublicKey};
use storage_node::PieceStore;

/// The bytes of piece `id` of `len` bytes (the migration test recomputes them).
fn data(id: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(id))
        .collect()
}

fn owner(seed: u8) -> PublicKey {
    *Identity::from_seed([seed; 32]).public_key()
}

fn put(store: &Arc<PieceStore>, id: u8, owner_seed: u8, len: usize, max: u64, expires: u64) {
    let bytes = data(id, len);
    let mut p = store
        .begin_upload(PieceId([id; 32]), owner(owner_seed), max, 4096, expires)
        .unwrap();
    p.write(&bytes).unwrap();
    let mut h = PieceHasher::new(4096);
    h.update(&bytes);
    p.commit(len as u64, &h.finish().root(), 1_700_000_000_000)
        .unwrap();
}

#[test]
#[ignore = "writes the sled fixture; run by hand with SHOAL_FIXTURE_OUT"]
fn make_sled_fixture() {
    let out = std::path::PathBuf::from(std::env::var_os("SHOAL_FIXTURE_OUT").unwrap());
    let dir = out.join("storage");
    let (store, _) = PieceStore::open(&dir, 1 << 30).unwrap();
    let far = 4_000_000_000_000u64;
    // (id, owner, len, max_size, expires): file pieces (max_size > 4 KiB) and inline
    // pieces (max_size <= 4 KiB), two owners, various expiries, two already expired.
    let pieces: &[(u8, u8, usize, u64, u64)] = &[
        (0x10, 1, 5000, 5000, far + 1),
        (0x11, 1, 70_000, 100_000, far + 2),
        (0x12, 2, 10_000, 10_000, 2_000_000_000_000),
        (0x13, 2, 4097, 4097, 1_000),
        (0x20, 1, 1, 1, far + 3),
        (0x21, 1, 100, 4096, far + 4),
        (0x22, 2, 1400, 1400, 2_000_000_000_001),
        (0x23, 2, 4096, 4096, far + 5),
        (0x24, 1, 700, 700, 1_001),
        (0x30, 1, 9000, 9000, far + 6),
    ];
    for &(id, o, len, max, exp) in pieces {
        put(&store, id, o, len, max, exp);
    }
    // A removal a crash interrupted: metadata gone and in the trash, file still there.
    store.meta().remove(&PieceId([0x30; 32])).unwrap();
    store.flush().unwrap();
    let mut manifest = String::new();
    for &(id, o, len, _, exp) in pieces {
        if id == 0x30 {
            continue;
        }
        let m = store.meta().get(&PieceId([id; 32])).unwrap().unwrap();
        assert_eq!(m.owner, owner(o));
        let inline = store.meta().inline(&PieceId([id; 32])).unwrap().is_some();
        manifest += &format!(
            "piece {} {} {len} {exp} {} {}\n",
            PieceId([id; 32]).to_hex(),
            owner(o).to_hex(),
            u8::from(inline),
            m.piece_hash.to_hex()
        );
    }
    manifest += &format!("trash {}\n", PieceId([0x30; 32]).to_hex());
    let c = store.meta().counters().unwrap();
    manifest += &format!("counters {} {}\n", c.used, c.pieces);
    for o in [1, 2] {
        let u = store.owner_usage(&owner(o)).unwrap();
        manifest += &format!("owner {} {} {}\n", owner(o).to_hex(), u.bytes, u.pieces);
    }
    drop(store);
    std::fs::write(out.join("manifest.txt"), manifest).unwrap();
}
