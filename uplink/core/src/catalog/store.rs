//! The uplink's one SQLite database: the catalog replica, its publish queue and sync
//! state, what this uplink knows about nodes, and the S3 gateway's multipart records.
//!
//! One file, `<catalog dir>/catalog.sqlite`, in WAL mode, so several processes may use
//! one config dir at once (`uplink` commands, a running `uplink gateway`, `devnet`'s
//! renewer): readers never wait for a writer, and writers are serialised by SQLite's own
//! lock for the few milliseconds a write transaction takes. Publishing, which holds a
//! writer's sequence number across network round trips, is serialised across processes
//! by [`PublishLock`] (an advisory lock on `<catalog dir>/publish.lock`, whose holder
//! writes its pid, command and start time into it for whoever has to wait).
//!
//! Every call runs off the async runtime's workers: on a multi-threaded tokio runtime
//! through [`tokio::task::block_in_place`] (the worker hands its other tasks to a fresh
//! thread first), elsewhere (plain threads, `spawn_blocking`, single-threaded test
//! runtimes) directly. Every call is also timed by a [`Watchdog`]: the gateway exports
//! the age of the oldest call in flight as `shoal_uplink_db_stall_seconds`, so a call
//! that hangs shows while it hangs.
//!
//! The schema is [`SCHEMA`], versioned with `PRAGMA user_version`; [`MIGRATIONS`] holds
//! the forward steps, applied in order on open. A catalog dir written by the sled
//! versions is imported by [`super::Catalog::open`], above this module.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode, OpenFlags, Transaction, TransactionBehavior};

use super::entry::CatalogError;

/// The database file inside a catalog dir.
pub const DB_FILE: &str = "catalog.sqlite";
/// The publish lock inside a catalog dir.
pub const PUBLISH_LOCK_FILE: &str = "publish.lock";
/// How long a write waits for another process's write transaction before it gives up
/// with [`CatalogError::Busy`]. Write transactions take milliseconds; this only runs out
/// when another process is stuck.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(20);
/// A DB call taking longer than this is a stall (warned about, and counted by the
/// watchdog metric).
pub const STALL: Duration = Duration::from_secs(1);

/// Version 1: the first SQLite schema. Text columns compare bytewise (SQLite's BINARY
/// collation), which for UTF-8 is code-point order: listings come out in key order.
pub const SCHEMA: &str = "
-- Live buckets; `entry` is the JSON BucketInfo, with its version.
CREATE TABLE buckets (
    name  TEXT PRIMARY KEY NOT NULL,
    entry TEXT NOT NULL
) WITHOUT ROWID;

-- Live objects; `entry` is the JSON ObjectEntry, with its version. `object_id` says
-- which pieces the entry uses (a copy made by the gateway shares its source's).
CREATE TABLE objects (
    bucket    TEXT NOT NULL,
    key       TEXT NOT NULL,
    object_id BLOB NOT NULL,
    entry     TEXT NOT NULL,
    PRIMARY KEY (bucket, key)
) WITHOUT ROWID;
CREATE INDEX objects_by_object_id ON objects (object_id);

-- Versions of deleted entries: kind 'b' (bucket; key is '') or 'o' (object).
CREATE TABLE tombstones (
    kind    TEXT NOT NULL CHECK (kind IN ('b', 'o')),
    bucket  TEXT NOT NULL,
    key     TEXT NOT NULL,
    version TEXT NOT NULL,
    PRIMARY KEY (kind, bucket, key)
) WITHOUT ROWID;

-- Changes made here and not yet published (the latest per entry), as JSON Change.
CREATE TABLE pending (
    kind   TEXT NOT NULL CHECK (kind IN ('b', 'o')),
    bucket TEXT NOT NULL,
    key    TEXT NOT NULL,
    change TEXT NOT NULL,
    PRIMARY KEY (kind, bucket, key)
) WITHOUT ROWID;

-- The sync state (clock, log positions merged, own log, newest snapshot...): JSON
-- values under fixed names.
CREATE TABLE sync (
    name  TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- What this uplink knows about nodes (JSON NodeStats), by node id; never published.
CREATE TABLE nodes (
    id    BLOB PRIMARY KEY NOT NULL,
    stats TEXT NOT NULL
) WITHOUT ROWID;

-- The S3 gateway's multipart uploads in progress (JSON UploadRecord), their staged
-- parts (JSON StagedPart), and completed uploads kept for a repeated Complete (JSON
-- Completed). Never published.
CREATE TABLE multipart_uploads (
    id     TEXT PRIMARY KEY NOT NULL,
    record TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE multipart_parts (
    id     TEXT NOT NULL,
    number INTEGER NOT NULL,
    part   TEXT NOT NULL,
    PRIMARY KEY (id, number)
) WITHOUT ROWID;
CREATE TABLE multipart_completed (
    id        TEXT PRIMARY KEY NOT NULL,
    completed TEXT NOT NULL
) WITHOUT ROWID;

-- Facts about this database itself (where it was imported from, when).
CREATE TABLE meta (
    name  TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) WITHOUT ROWID;
";

/// Version 2: the snapshot chunks this replica stored or read, so that a new snapshot
/// re-uses every chunk that did not change ([`super::tree`]).
pub const SNAPSHOT_CHUNKS: &str = "
-- Chunk id (keyed BLAKE3, 32 bytes) -> where the chunk is (JSON BlobRef). `gen`:
-- the clock of the newest snapshot that used the chunk; rows of older snapshots are
-- dropped once a newer snapshot is published.
CREATE TABLE snapshot_chunks (
    id   BLOB PRIMARY KEY NOT NULL,
    blob TEXT NOT NULL,
    gen  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX snapshot_chunks_by_gen ON snapshot_chunks (gen);

-- The keys of the snapshot being merged (by a random run id per merge), so that what
-- the replica holds and the snapshot lacks can be found without holding the snapshot's
-- keys in memory; emptied when the merge ends.
CREATE TABLE snapshot_keys (
    run    INTEGER NOT NULL,
    kind   TEXT NOT NULL,
    bucket TEXT NOT NULL,
    key    TEXT NOT NULL,
    PRIMARY KEY (run, kind, bucket, key)
) WITHOUT ROWID;
";

/// Forward migrations: `MIGRATIONS[i]` takes `user_version` i to i + 1.
pub const MIGRATIONS: &[&str] = &[SCHEMA, SNAPSHOT_CHUNKS];

/// The schema version this code writes.
pub fn schema_version() -> u32 {
    MIGRATIONS.len() as u32
}

/// Times every DB call; the gateway's metrics read the oldest call in flight.
#[derive(Debug, Default)]
pub struct Watchdog {
    inflight: Mutex<BTreeMap<u64, (Instant, &'static str)>>,
    next: AtomicU64,
    /// Longest call seen, milliseconds.
    worst_ms: AtomicU64,
}

/// A call in flight (removed from the watchdog on drop).
struct InFlight<'a> {
    watch: &'a Watchdog,
    id: u64,
    started: Instant,
    what: &'static str,
}

impl Watchdog {
    fn enter(&self, what: &'static str) -> InFlight<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        if let Ok(mut m) = self.inflight.lock() {
            m.insert(id, (started, what));
        }
        InFlight {
            watch: self,
            id,
            started,
            what,
        }
    }

    /// How long the oldest DB call in flight has been running, if it is past
    /// [`STALL`] (zero otherwise), and what it is.
    pub fn stall(&self) -> (Duration, Option<&'static str>) {
        let Ok(m) = self.inflight.lock() else {
            return (Duration::ZERO, None);
        };
        match m.values().min_by_key(|(t, _)| *t) {
            Some((t, what)) if t.elapsed() >= STALL => (t.elapsed(), Some(*what)),
            _ => (Duration::ZERO, None),
        }
    }

    /// The longest DB call completed so far.
    pub fn worst(&self) -> Duration {
        Duration::from_millis(self.worst_ms.load(Ordering::Relaxed))
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.watch.inflight.lock() {
            m.remove(&self.id);
        }
        let took = self.started.elapsed();
        self.watch
            .worst_ms
            .fetch_max(took.as_millis() as u64, Ordering::Relaxed);
        if took >= STALL {
            tracing::warn!(
                call = self.what,
                took_ms = took.as_millis() as u64,
                "a catalog database call stalled"
            );
        }
    }
}

/// Runs `f` where blocking is allowed: through `block_in_place` on a multi-threaded
/// tokio runtime's worker, directly anywhere else.
pub fn off_runtime<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// The database of one catalog dir.
#[derive(Debug)]
pub struct Db {
    dir: PathBuf,
    file: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    watch: Arc<Watchdog>,
    /// Set for [`Db::temporary`]: the dir is removed on drop.
    temporary: bool,
}

impl Drop for Db {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

fn connect(file: &Path) -> Result<Connection, rusqlite::Error> {
    let c = Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    c.busy_timeout(BUSY_TIMEOUT)?;
    // Room for every statement of the catalog, the sync state and the gateway's
    // multipart records (the default, 16, made the per-object path re-parse).
    c.set_prepared_statement_cache_capacity(64);
    // WAL: readers never wait for the writer, and several processes share the file.
    // NORMAL: a commit survives the process crashing; `Db::flush` makes it survive the
    // machine crashing too (the durability points: before a publish, before a part is
    // acknowledged).
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "NORMAL")?;
    c.pragma_update(None, "foreign_keys", "ON")?;
    // Pages are read through a memory map of the file (up to 1 GiB of address space, not
    // memory): a listing that seeks once per common prefix otherwise pays a read(2) per
    // B-tree page it touches outside SQLite's small per-connection cache (a 500-prefix
    // listing of 100,000 objects: 4.5 ms with read(2), 3.3 ms mapped; BENCHMARKS.md).
    c.pragma_update(None, "mmap_size", 1i64 << 30)?;
    // The query planner stability guarantee: a statement's plan never depends on the
    // values bound to it. Without it SQLite (3.50, with the STAT4 the bundled build
    // enables) plans `LIMIT ?` for the value bound, so binding a new value expires the
    // statement and the next step compiles it again: every read of an `ObjectCursor`
    // (one per folded common prefix) re-parsed and re-planned its SELECT, 3/4 of the
    // time of a 500-prefix listing (perf; BENCHMARKS.md, issue 26 listings). The
    // catalog never runs ANALYZE, so there are no statistics a plan could lose.
    c.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(c)
}

impl Db {
    /// Opens (creating if needed) the database of the catalog dir `dir` and brings its
    /// schema up to date. (`Catalog::open` then imports a sled catalog found there.)
    pub fn open(dir: &Path) -> Result<Self, CatalogError> {
        Self::open_in(dir, false)
    }

    /// A database in a fresh temporary dir, removed when dropped (tests, benchmarks).
    pub fn temporary() -> Result<Self, CatalogError> {
        let dir = std::env::temp_dir().join(format!(
            "shoal-catalog-{}-{}",
            std::process::id(),
            shoal_proto::ids::to_hex(&rand::random::<[u8; 8]>())
        ));
        Self::open_in(&dir, true)
    }

    fn open_in(dir: &Path, temporary: bool) -> Result<Self, CatalogError> {
        shoal_proto::private::create_dir(dir).map_err(|e| CatalogError::Io {
            what: format!("creating the catalog dir {}", dir.display()),
            source: e,
        })?;
        let file = dir.join(DB_FILE);
        let writer = off_runtime(|| connect(&file)).map_err(|e| busy_or(&file, e))?;
        let db = Self {
            dir: dir.to_path_buf(),
            file,
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
            watch: Arc::new(Watchdog::default()),
            temporary,
        };
        db.migrate()?;
        Ok(db)
    }

    /// Applies the forward migrations this file has not seen, in one transaction.
    fn migrate(&self) -> Result<(), CatalogError> {
        self.write("migrate", |tx| {
            let at: u32 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
            if at > schema_version() {
                return Err(CatalogError::NewerSchema {
                    file: self.file.clone(),
                    found: at,
                    known: schema_version(),
                });
            }
            for step in &MIGRATIONS[at as usize..] {
                tx.execute_batch(step)?;
            }
            tx.pragma_update(None, "user_version", schema_version())?;
            Ok(())
        })
    }

    /// The catalog dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The database file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    pub fn watchdog(&self) -> &Arc<Watchdog> {
        &self.watch
    }

    /// Runs `f` in a read transaction (a consistent snapshot; never waits for a writer).
    pub fn read<R>(
        &self,
        what: &'static str,
        f: impl FnOnce(&Transaction<'_>) -> Result<R, CatalogError>,
    ) -> Result<R, CatalogError> {
        off_runtime(|| {
            let _timed = self.watch.enter(what);
            let pooled = self.readers.lock().ok().and_then(|mut p| p.pop());
            let mut conn = match pooled {
                Some(c) => c,
                None => connect(&self.file).map_err(|e| busy_or(&self.file, e))?,
            };
            let out = (|| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
                let r = f(&tx)?;
                tx.finish()?;
                Ok(r)
            })();
            let out = out.map_err(|e| match e {
                CatalogError::Db(e) => busy_or(&self.file, e),
                e => e,
            });
            if let Ok(mut p) = self.readers.lock()
                && p.len() < 8
            {
                p.push(conn);
            }
            out
        })
    }

    /// Runs `f` in a write transaction (`BEGIN IMMEDIATE`: it holds the database's write
    /// lock from the start, so what it reads stays true until it commits), committed if
    /// `f` succeeds.
    pub fn write<R>(
        &self,
        what: &'static str,
        f: impl FnOnce(&Transaction<'_>) -> Result<R, CatalogError>,
    ) -> Result<R, CatalogError> {
        off_runtime(|| {
            let _timed = self.watch.enter(what);
            let mut conn = self.writer.lock().map_err(|_| CatalogError::Poisoned)?;
            let out = (|| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let r = f(&tx)?;
                tx.commit()?;
                Ok(r)
            })();
            out.map_err(|e| match e {
                CatalogError::Db(e) => busy_or(&self.file, e),
                e => e,
            })
        })
    }

    /// Makes every commit so far survive a machine crash (fsyncs the write-ahead log).
    pub fn flush(&self) -> Result<(), CatalogError> {
        off_runtime(|| {
            let _timed = self.watch.enter("flush");
            let conn = self.writer.lock().map_err(|_| CatalogError::Poisoned)?;
            // A commit under synchronous=FULL syncs the log up to and including it.
            conn.pragma_update(None, "synchronous", "FULL")?;
            let r = conn.execute_batch(
                "BEGIN IMMEDIATE; \
                 INSERT INTO meta (name, value) VALUES ('flushed', '1') \
                   ON CONFLICT (name) DO UPDATE SET value = value + 1; \
                 COMMIT;",
            );
            if r.is_err() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            r.map_err(|e| busy_or(&self.file, e))
        })
    }
}

fn busy_or(file: &Path, e: rusqlite::Error) -> CatalogError {
    if is_busy(&e) {
        CatalogError::Busy {
            file: file.to_path_buf(),
            waited: BUSY_TIMEOUT,
            holders: holders_of(file),
        }
    } else {
        CatalogError::Db(e)
    }
}

/// Other processes that have `file` open (pid, command line), read from `/proc`: SQLite
/// cannot say who holds its lock, but one of these does. Empty where `/proc` is not.
pub fn holders_of(file: &Path) -> Vec<(u32, String)> {
    let Ok(target) = file.canonicalize() else {
        return Vec::new();
    };
    let me = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let has = fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l == target));
        if has {
            let cmd = std::fs::read(p.path().join("cmdline"))
                .map(|raw| {
                    raw.split(|b| *b == 0)
                        .filter(|a| !a.is_empty())
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            out.push((pid, cmd));
        }
        if out.len() >= 8 {
            break;
        }
    }
    out
}

/// Who holds the publish lock, as its holder wrote it into the lock file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolder {
    pub pid: u32,
    pub command: String,
    /// When the holder took the lock (unix ms).
    pub since_ms: u64,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = shoal_proto::time::unix_ms().saturating_sub(self.since_ms);
        write!(
            f,
            "pid {} (`{}`), holding it for {:.1} s",
            self.pid,
            self.command,
            held as f64 / 1000.0
        )
    }
}

/// The right to publish this catalog's log: one holder at a time across every process
/// using the catalog dir (an advisory `flock`, released on drop or when the holder
/// dies).
#[derive(Debug)]
pub struct PublishLock {
    _file: std::fs::File,
}

impl PublishLock {
    /// Takes the lock if it is free; `Ok(None)` if another holder has it.
    pub fn try_take(dir: &Path) -> Result<Option<Self>, CatalogError> {
        use std::io::{Seek, Write};
        let path = dir.join(PUBLISH_LOCK_FILE);
        let io = |e: std::io::Error| CatalogError::Io {
            what: format!("the publish lock {}", path.display()),
            source: e,
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => return Ok(None),
            Err(e) => return Err(io(e.into())),
        }
        // Ours: say who holds it, for whoever waits.
        let command: Vec<String> = std::env::args().take(4).collect();
        let note = format!(
            "{}\n{}\n{}\n",
            std::process::id(),
            shoal_proto::time::unix_ms(),
            command.join(" ").replace('\n', " ")
        );
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        file.write_all(note.as_bytes()).map_err(io)?;
        Ok(Some(Self { _file: file }))
    }

    /// Who holds the lock now, as the holder wrote it (`None` if unreadable).
    pub fn holder(dir: &Path) -> Option<LockHolder> {
        let text = std::fs::read_to_string(dir.join(PUBLISH_LOCK_FILE)).ok()?;
        let mut lines = text.lines();
        Some(LockHolder {
            pid: lines.next()?.trim().parse().ok()?,
            since_ms: lines.next()?.trim().parse().ok()?,
            command: lines.next().unwrap_or_default().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_is_applied_once_and_versioned() {
        let db = Db::temporary().unwrap();
        let v: u32 = db
            .read("t", |tx| {
                Ok(tx.pragma_query_value(None, "user_version", |r| r.get(0))?)
            })
            .unwrap();
        assert_eq!(v, schema_version());
        // Reopening applies nothing again.
        let again = Db::open(db.dir()).unwrap();
        drop(again);
        let mode: String = db
            .read("t", |tx| {
                Ok(tx.pragma_query_value(None, "journal_mode", |r| r.get(0))?)
            })
            .unwrap();
        assert_eq!(mode, "wal");
        db.flush().unwrap();
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let db = Db::temporary().unwrap();
        db.write("t", |tx| {
            tx.pragma_update(None, "user_version", schema_version() + 1)?;
            Ok(())
        })
        .unwrap();
        assert!(matches!(
            Db::open(db.dir()),
            Err(CatalogError::NewerSchema { .. })
        ));
    }

    #[test]
    fn publish_lock_is_exclusive_and_names_its_holder() {
        let db = Db::temporary().unwrap();
        let held = PublishLock::try_take(db.dir()).unwrap().unwrap();
        assert!(PublishLock::try_take(db.dir()).unwrap().is_none());
        let who = PublishLock::holder(db.dir()).unwrap();
        assert_eq!(who.pid, std::process::id());
        drop(held);
        assert!(PublishLock::try_take(db.dir()).unwrap().is_some());
    }

    #[test]
    fn a_busy_database_names_the_processes_that_have_it_open() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .stdin(std::fs::File::open(db.file()).unwrap())
            .spawn()
            .unwrap();
        // Until the child has exec'd, its command line is still this test binary's: wait
        // (with a deadline) for `sleep 30` to show.
        let deadline = Instant::now() + Duration::from_secs(10);
        let holders = loop {
            let h = holders_of(db.file());
            if Instant::now() > deadline
                || h.iter()
                    .any(|(pid, cmd)| *pid == child.id() && cmd == "sleep 30")
            {
                break h;
            }
            std::thread::yield_now();
        };
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            holders
                .iter()
                .any(|(pid, cmd)| *pid == child.id() && cmd == "sleep 30"),
            "{holders:?}"
        );
        let e = CatalogError::Busy {
            file: db.file().to_path_buf(),
            waited: BUSY_TIMEOUT,
            holders,
        };
        assert!(
            e.to_string()
                .contains(&format!("pid {} (sleep 30)", child.id())),
            "{e}"
        );
    }

    #[test]
    fn watchdog_sees_a_call_in_flight() {
        let w = Watchdog::default();
        assert_eq!(w.stall().0, Duration::ZERO);
        let call = w.enter("slow");
        // A call younger than STALL is not a stall.
        assert_eq!(w.stall().0, Duration::ZERO);
        // One that started two seconds ago is, while it runs.
        let long_ago = Instant::now().checked_sub(2 * STALL).unwrap();
        w.inflight
            .lock()
            .unwrap()
            .insert(call.id, (long_ago, "slow"));
        let (age, what) = w.stall();
        assert!(age >= 2 * STALL);
        assert_eq!(what, Some("slow"));
        drop(call);
        assert_eq!(w.stall().0, Duration::ZERO);
    }
}
