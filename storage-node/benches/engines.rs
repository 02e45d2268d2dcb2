//! Metadata engines compared (issue 22): the node's write of one piece and its lookup by
//! id, on SQLite (the engine `meta.rs` uses), redb and LMDB (through heed).
//!
//! The write, the same on every engine: a piece record of [`RECORD`] bytes keyed by its
//! 32-byte id (refused if the id exists), its owner's total (bytes, pieces) and the global
//! counters (used, pieces) updated, in one write transaction committed without an fsync
//! (SQLite: WAL with `synchronous = NORMAL`, as `meta.rs`; redb: `Durability::None`; LMDB:
//! `MDB_NOSYNC`). The lookup: one read transaction that fetches a random stored piece's
//! record by id. Then, per engine, the same write with a durable commit (fsync) each time,
//! as the node's flush does (SQLite: `synchronous = FULL`; redb: `Durability::Immediate`;
//! LMDB: commit then `mdb_env_sync`).
//!
//! redb refuses a commit without fsync once the database is shared between processes
//! (`ConcurrencyMode::MultiWriter`), so redb is measured a second time (`redb-mp`): the
//! loaded file reopened in that mode, every commit durable, and lookups through it.
//!
//! `cargo bench -p storage-node --bench engines` (`SHOAL_BENCH_PIECES`, default 100000;
//! `SHOAL_BENCH_ENGINES`, default `sqlite,redb,lmdb`; `SHOAL_BENCH_DIR`: where the
//! databases go). Prints one line per figure and a summary line per engine.
// LMDB maps its file into memory: heed marks opening it (and `MDB_NOSYNC`) `unsafe`.
#![allow(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::MetadataExt;

use redb::{ReadableDatabase, ReadableTable};
use std::path::Path;
use std::time::{Duration, Instant};

/// Bytes of one piece's record: owner, size, block size, piece hash, created and expiry
/// times, and two block hashes (a small piece's metadata row in `meta.rs`).
const RECORD: usize = 32 + 8 + 4 + 32 + 8 + 8 + 64;
/// Owners the pieces are spread over.
const OWNERS: u64 = 64;
/// Durable writes and lookups measured after the load.
const DURABLE: u64 = 2000;
const LOOKUPS: usize = 200_000;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn id(i: u64) -> [u8; 32] {
    *blake3::hash(&i.to_le_bytes()).as_bytes()
}

fn owner(i: u64) -> [u8; 32] {
    *blake3::hash(format!("owner {}", i % OWNERS).as_bytes()).as_bytes()
}

fn record(i: u64) -> Vec<u8> {
    let mut r = Vec::with_capacity(RECORD);
    r.extend_from_slice(&owner(i));
    r.extend_from_slice(&(2_400_000 - i % 1000).to_le_bytes());
    r.extend_from_slice(&65536u32.to_le_bytes());
    r.extend_from_slice(blake3::hash(&[&i.to_le_bytes()[..], b"root"].concat()).as_bytes());
    r.extend_from_slice(&1_765_000_000_000u64.to_le_bytes());
    r.extend_from_slice(&(2_000_000_000_000 + i).to_le_bytes());
    r.extend_from_slice(blake3::hash(&[&i.to_le_bytes()[..], b"0"].concat()).as_bytes());
    r.extend_from_slice(blake3::hash(&[&i.to_le_bytes()[..], b"1"].concat()).as_bytes());
    assert_eq!(r.len(), RECORD);
    r
}

/// Bytes charged for piece `i` (its size plus the node's 4 KiB overhead).
fn charged(i: u64) -> u64 {
    2_400_000 - i % 1000 + 4096
}

fn pair(a: u64, b: u64) -> [u8; 16] {
    let mut v = [0; 16];
    v[..8].copy_from_slice(&a.to_le_bytes());
    v[8..].copy_from_slice(&b.to_le_bytes());
    v
}

fn unpair(v: &[u8]) -> (u64, u64) {
    (
        u64::from_le_bytes(v[..8].try_into().unwrap()),
        u64::from_le_bytes(v[8..16].try_into().unwrap()),
    )
}

/// Bytes the files under `path` take on disk (allocated blocks: LMDB's file is sparse).
fn du(path: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![path.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.blocks() * 512;
            }
        }
    }
    total
}

trait Engine {
    /// Writes piece `i` in one transaction; `durable`: fsync before returning.
    fn insert(&mut self, i: u64, durable: bool);
    /// Piece `i`'s record.
    fn get(&mut self, i: u64) -> Option<Vec<u8>>;
    /// Makes every commit so far durable.
    fn flush(&mut self);
    /// (used, pieces).
    fn counters(&mut self) -> (u64, u64);
}

// ---- SQLite, configured as meta.rs configures it ----

struct Sqlite {
    conn: rusqlite::Connection,
}

impl Sqlite {
    fn open(dir: &Path) -> Self {
        let conn = rusqlite::Connection::open(dir.join("metadata.sqlite")).unwrap();
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
        conn.pragma_update(None, "cache_size", -16 * 1024).unwrap();
        conn.execute_batch(
            "CREATE TABLE pieces (id BLOB NOT NULL PRIMARY KEY, record BLOB NOT NULL);
             CREATE TABLE owners (owner BLOB NOT NULL PRIMARY KEY, bytes INTEGER NOT NULL,
                                  pieces INTEGER NOT NULL) WITHOUT ROWID;
             CREATE TABLE counters (id INTEGER PRIMARY KEY CHECK (id = 0),
                                    used INTEGER NOT NULL, pieces INTEGER NOT NULL);
             INSERT INTO counters (id, used, pieces) VALUES (0, 0, 0);",
        )
        .unwrap();
        Sqlite { conn }
    }
}

impl Engine for Sqlite {
    fn insert(&mut self, i: u64, durable: bool) {
        if durable {
            self.conn
                .pragma_update(None, "synchronous", "FULL")
                .unwrap();
        }
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .unwrap();
        let added = tx
            .prepare_cached(
                "INSERT INTO pieces (id, record) VALUES (?1, ?2) ON CONFLICT (id) DO NOTHING",
            )
            .unwrap()
            .execute(rusqlite::params![id(i).as_slice(), record(i)])
            .unwrap();
        assert_eq!(added, 1);
        tx.prepare_cached(
            "INSERT INTO owners (owner, bytes, pieces) VALUES (?1, ?2, 1)
             ON CONFLICT (owner) DO UPDATE SET bytes = bytes + excluded.bytes, pieces = pieces + 1",
        )
        .unwrap()
        .execute(rusqlite::params![owner(i).as_slice(), charged(i) as i64])
        .unwrap();
        tx.prepare_cached("UPDATE counters SET used = used + ?1, pieces = pieces + 1 WHERE id = 0")
            .unwrap()
            .execute([charged(i) as i64])
            .unwrap();
        tx.commit().unwrap();
        if durable {
            self.conn
                .pragma_update(None, "synchronous", "NORMAL")
                .unwrap();
        }
    }

    fn get(&mut self, i: u64) -> Option<Vec<u8>> {
        use rusqlite::OptionalExtension;
        self.conn
            .prepare_cached("SELECT record FROM pieces WHERE id = ?1")
            .unwrap()
            .query_row([id(i).as_slice()], |r| r.get(0))
            .optional()
            .unwrap()
    }

    fn flush(&mut self) {
        // What meta.rs's flush does: one tiny commit at synchronous = FULL syncs the WAL.
        self.conn
            .pragma_update(None, "synchronous", "FULL")
            .unwrap();
        self.conn
            .execute("UPDATE counters SET used = used WHERE id = 0", [])
            .unwrap();
        self.conn
            .pragma_update(None, "synchronous", "NORMAL")
            .unwrap();
    }

    fn counters(&mut self) -> (u64, u64) {
        self.conn
            .query_row("SELECT used, pieces FROM counters", [], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
            })
            .unwrap()
    }
}

// ---- redb ----

const R_PIECES: redb::TableDefinition<'_, &[u8; 32], &[u8]> = redb::TableDefinition::new("pieces");
const R_OWNERS: redb::TableDefinition<'_, &[u8; 32], (u64, u64)> =
    redb::TableDefinition::new("owners");
const R_COUNTERS: redb::TableDefinition<'_, u8, (u64, u64)> =
    redb::TableDefinition::new("counters");

struct Redb {
    db: redb::Database,
    /// Opened in `ConcurrencyMode::MultiWriter`: every commit must be durable.
    multi_process: bool,
}

impl Redb {
    fn open(path: &Path, multi_process: bool) -> Self {
        let mut b = redb::Builder::new();
        if multi_process {
            b.set_concurrency_mode(redb::ConcurrencyMode::MultiWriter);
        }
        Redb {
            db: b.create(path).unwrap(),
            multi_process,
        }
    }
}

impl Engine for Redb {
    fn insert(&mut self, i: u64, durable: bool) {
        let mut tx = self.db.begin_write().unwrap();
        if !durable && !self.multi_process {
            tx.set_durability(redb::Durability::None).unwrap();
        }
        {
            let mut pieces = tx.open_table(R_PIECES).unwrap();
            let key = id(i);
            assert!(pieces.get(&key).unwrap().is_none());
            pieces.insert(&key, record(i).as_slice()).unwrap();
            let mut owners = tx.open_table(R_OWNERS).unwrap();
            let o = owner(i);
            let (bytes, n) = owners.get(&o).unwrap().map(|g| g.value()).unwrap_or((0, 0));
            owners.insert(&o, (bytes + charged(i), n + 1)).unwrap();
            let mut counters = tx.open_table(R_COUNTERS).unwrap();
            let (used, n) = counters
                .get(0)
                .unwrap()
                .map(|g| g.value())
                .unwrap_or((0, 0));
            counters.insert(0, (used + charged(i), n + 1)).unwrap();
        }
        tx.commit().unwrap();
    }

    fn get(&mut self, i: u64) -> Option<Vec<u8>> {
        let tx = self.db.begin_read().unwrap();
        let pieces = tx.open_table(R_PIECES).unwrap();
        pieces.get(&id(i)).unwrap().map(|g| g.value().to_vec())
    }

    fn flush(&mut self) {
        // An empty durable commit makes the non-durable ones before it durable.
        let tx = self.db.begin_write().unwrap();
        tx.commit().unwrap();
    }

    fn counters(&mut self) -> (u64, u64) {
        let tx = self.db.begin_read().unwrap();
        let counters = tx.open_table(R_COUNTERS).unwrap();
        counters.get(0).unwrap().map(|g| g.value()).unwrap()
    }
}

// ---- LMDB through heed ----

type Bytes<'e> = heed::Database<'e, heed::types::Bytes, heed::types::Bytes>;

fn lmdb_env(dir: &Path) -> heed::Env {
    let mut options = heed::EnvOpenOptions::new();
    options.map_size(64 << 30).max_dbs(3);
    // SAFETY: the directory is this benchmark's own; nothing else maps it. NO_SYNC: a
    // commit reaches the OS at once (other processes see it) and the disk at the next
    // mdb_env_sync (flush), as SQLite's WAL at synchronous = NORMAL.
    unsafe {
        options.flags(heed::EnvFlags::NO_SYNC);
        options.open(dir).unwrap()
    }
}

struct Lmdb<'e> {
    env: &'e heed::Env,
    pieces: Bytes<'e>,
    owners: Bytes<'e>,
    counters: Bytes<'e>,
}

impl<'e> Lmdb<'e> {
    fn open(env: &'e heed::Env) -> Self {
        let tx = env.write_txn().unwrap();
        let (pieces, owners, counters) = env
            .create_databases_and_commit(tx, |o, tx| -> heed::Result<_> {
                Ok(heed::CommitOrAbort::<_, ()>::Commit((
                    o.create_database(tx, Some("pieces"))?,
                    o.create_database(tx, Some("owners"))?,
                    o.create_database(tx, Some("counters"))?,
                )))
            })
            .unwrap()
            .unwrap_commit();
        Lmdb {
            env,
            pieces,
            owners,
            counters,
        }
    }
}

impl Engine for Lmdb<'_> {
    fn insert(&mut self, i: u64, durable: bool) {
        let mut tx = self.env.write_txn().unwrap();
        let key = id(i);
        let rec = record(i);
        self.pieces
            .put_with_flags(&mut tx, heed::PutFlags::NO_OVERWRITE, &key, &rec)
            .unwrap();
        let o = owner(i);
        let (bytes, n) = self
            .owners
            .get(&tx, &o)
            .unwrap()
            .map(unpair)
            .unwrap_or((0, 0));
        self.owners
            .put(&mut tx, &o, &pair(bytes + charged(i), n + 1))
            .unwrap();
        let (used, n) = self
            .counters
            .get(&tx, b"c")
            .unwrap()
            .map(unpair)
            .unwrap_or((0, 0));
        self.counters
            .put(&mut tx, b"c", &pair(used + charged(i), n + 1))
            .unwrap();
        tx.commit().unwrap();
        if durable {
            self.env.force_sync().unwrap();
        }
    }

    fn get(&mut self, i: u64) -> Option<Vec<u8>> {
        let tx = self.env.read_txn().unwrap();
        self.pieces.get(&tx, &id(i)).unwrap().map(<[u8]>::to_vec)
    }

    fn flush(&mut self) {
        self.env.force_sync().unwrap();
    }

    fn counters(&mut self) -> (u64, u64) {
        let tx = self.env.read_txn().unwrap();
        self.counters.get(&tx, b"c").unwrap().map(unpair).unwrap()
    }
}

// ---- the run ----

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

/// (p50, p99, max) in µs, and the line printed.
fn summary(engine: &str, what: &str, mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let mean = v.iter().sum::<Duration>().as_secs_f64() * 1e6 / v.len() as f64;
    let (p50, p99, max) = (pct(&v, 0.5), pct(&v, 0.99), pct(&v, 1.0));
    println!(
        "engines {engine} {what} n={} mean_us={mean:.1} p50_us={p50:.1} p99_us={p99:.1} max_us={max:.1}",
        v.len()
    );
    (p50, p99, max)
}

fn lookups(engine: &str, db: &mut dyn Engine, n: u64) -> (f64, f64, f64) {
    let mut v = Vec::with_capacity(LOOKUPS);
    for _ in 0..LOOKUPS {
        let i = rand::random::<u64>() % n;
        let t = Instant::now();
        let r = db.get(i);
        v.push(t.elapsed());
        assert_eq!(r.as_deref(), Some(record(i).as_slice()));
    }
    summary(engine, "lookup", v)
}

fn run(engine: &str, n: u64, base: &Path) {
    let dir = tempfile::tempdir_in(base).unwrap();
    let redb_file = dir.path().join("metadata.redb");
    let lmdb;
    let mut db: Box<dyn Engine + '_> = match engine {
        "sqlite" => Box::new(Sqlite::open(dir.path())),
        "redb" => Box::new(Redb::open(&redb_file, false)),
        "lmdb" => {
            lmdb = lmdb_env(dir.path());
            Box::new(Lmdb::open(&lmdb))
        }
        other => panic!("unknown engine {other} (sqlite, redb, lmdb)"),
    };
    let started = Instant::now();
    let mut inserts = Vec::with_capacity(n as usize);
    for i in 0..n {
        let t = Instant::now();
        db.insert(i, false);
        inserts.push(t.elapsed());
    }
    db.flush();
    let secs = started.elapsed().as_secs_f64();
    let (ip50, ip99, imax) = summary(engine, "insert", inserts);
    println!(
        "engines {engine} load pieces={n} secs={secs:.1} inserts_per_s={:.0}",
        n as f64 / secs
    );
    let bytes = du(dir.path());
    println!(
        "engines {engine} disk pieces={n} dir_MB={:.1} bytes_per_piece={:.0}",
        bytes as f64 / 1e6,
        bytes as f64 / n as f64
    );
    let (lp50, lp99, _) = lookups(engine, db.as_mut(), n);
    let mut durable = Vec::with_capacity(DURABLE as usize);
    for i in n..n + DURABLE {
        let t = Instant::now();
        db.insert(i, true);
        durable.push(t.elapsed());
    }
    let (dp50, dp99, _) = summary(engine, "insert+fsync", durable);
    let total = n + DURABLE;
    let expected: u64 = (0..total).map(charged).sum();
    assert_eq!(db.counters(), (expected, total));
    println!(
        "engines {engine} summary pieces={n} insert_p50_us={ip50:.1} insert_p99_us={ip99:.1} \
         insert_max_us={imax:.1} lookup_p50_us={lp50:.1} lookup_p99_us={lp99:.1} \
         bytes_per_piece={:.0} durable_insert_p50_us={dp50:.1} durable_insert_p99_us={dp99:.1}",
        bytes as f64 / n as f64
    );
    drop(db);

    if engine == "redb" {
        // The same file shared between processes: commits without fsync are refused.
        let name = "redb-mp";
        let mut db = Redb::open(&redb_file, true);
        let mut durable = Vec::with_capacity(DURABLE as usize);
        for i in total..total + DURABLE {
            let t = Instant::now();
            db.insert(i, false);
            durable.push(t.elapsed());
        }
        let (dp50, dp99, dmax) = summary(name, "insert(fsync)", durable);
        let (lp50, lp99, _) = lookups(name, &mut db, n);
        println!(
            "engines {name} summary pieces={n} insert_p50_us={dp50:.1} insert_p99_us={dp99:.1} \
             insert_max_us={dmax:.1} lookup_p50_us={lp50:.1} lookup_p99_us={lp99:.1}"
        );
    }
}

fn main() {
    let n = env("SHOAL_BENCH_PIECES", 100_000) as u64;
    let engines =
        std::env::var("SHOAL_BENCH_ENGINES").unwrap_or_else(|_| "sqlite,redb,lmdb".to_owned());
    let base = std::env::var_os("SHOAL_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    for engine in engines.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        run(engine, n, &base);
    }
}
