//! The node's metadata store, in SQLite: piece records, the space counters, per-owner
//! totals, inline pieces, the trash, and what the DHT keeps across restarts.
//!
//! One file, `<storage dir>/metadata.sqlite`, in WAL mode, readable with the `sqlite3`
//! shell while the node runs (see the README). The schema is [`SCHEMA`]: one entry per
//! version, applied in order (forward only) in one transaction that also sets
//! `PRAGMA user_version`; a database newer than this code is refused.
//!
//! - `pieces`: one row per stored piece (owner, size, block hashes, created, expiry,
//!   tag), indexed by expiry (the expiry worker reads expired pieces in order without
//!   scanning everything) and by (owner, id) (an owner lists its pieces);
//! - `inline_pieces`: the bytes of small pieces kept here instead of in a file of their
//!   own (see [`crate::store::INLINE_MAX`]), written and removed in the same transaction
//!   as their `pieces` row;
//! - `trash`: piece ids whose row is gone but whose file may not be (a crash between the
//!   two); startup finishes those removals;
//! - `counters` (one row) and `owners`: used (charged) bytes and pieces, in total and per
//!   owner, updated in the same transaction as `pieces`, so they are exact at every
//!   moment and are never recomputed from the files;
//! - `dht_records`, `known_peers`: opaque bytes the DHT keeps across restarts;
//! - `node_info`: small named values (the sled migration, the sync marker).
//!
//! **Durability.** Commits run with `synchronous = NORMAL`: a committed transaction is
//! visible at once and survives the process being killed (it is in the WAL, in the
//! page cache), but not yet a power loss. [`MetaDb::flush`] makes every commit so far
//! durable: one tiny write committed with `synchronous = FULL`, whose WAL fsync covers
//! every frame before it. The store shares that flush among concurrent commits (group
//! commit, see [`crate::store`]) and acknowledges a piece only after it, as it did with
//! sled's flush.
//!
//! **Threads.** Every call blocks (callers run it on a blocking thread, never on a tokio
//! worker). Writes go through one connection behind a mutex (SQLite has one writer at a
//! time anyway); reads use a small pool of their own connections, which WAL never
//! blocks behind a write. Every call is registered while it runs, so that
//! [`MetaDb::stall`] can tell how long the oldest one has been running (the node exports
//! it as `storage_node_db_stall_seconds`).
//!
//! "Used" bytes are **charged** bytes: a piece's size plus [`PIECE_OVERHEAD`], so that a
//! million empty pieces (each a file, an inode and a metadata record) cost what they
//! cost the disk instead of nothing.
//!
//! Values are stored as SQLite's signed 64-bit integers; a `u64` past `i64::MAX` (an
//! expiry in the year 292 million, `u64::MAX` meaning "never") is stored as `i64::MAX`
//! and read back as `u64::MAX`.
//!
//! This module holds [`MetaDb`] and its piece, counter, owner and trash calls; its
//! children hold the rest, each importing only from this module (and `dht` from `row`):
//!
//! ```text
//!   meta (MetaDb: pieces, counters, owners, trash, flush)
//!    ^-- schema       SCHEMA, connect, migrate
//!    ^-- row          u64 <-> i64, a pieces row checked into a PieceMeta
//!    ^-- stall        DB calls in flight (MetaDb::stall)
//!    ^-- dht  --> row DHT records and known peers
//!    ^-- sled_import  the one-time migration from sled
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use shoal_proto::piece_hash::PieceInfo;
use shoal_proto::{PieceHash, PieceId, PublicKey};

pub use crate::error::DbError;
use crate::error::Error;

mod dht;
mod row;
mod schema;
mod sled_import;
mod stall;

use row::{META_COLUMNS, RawMeta, from_sql, id32, to_sql};
pub use schema::SCHEMA;
use schema::{connect, migrate};
use stall::StallWatch;

/// The metadata file's name in the storage directory.
pub const DB_FILE: &str = "metadata.sqlite";
/// Where sled kept the metadata before (migrated on first open, then renamed to
/// [`SLED_MIGRATED_DIR`]).
pub const SLED_DIR: &str = "meta";
/// The sled directory once its contents are committed to SQLite (kept for the operator
/// to remove; nothing reads it again).
pub const SLED_MIGRATED_DIR: &str = "meta.sled-migrated";

/// Bytes every stored piece is charged on top of its size, in the allocation and in its
/// owner's total: one file-system block (4 KiB on ext4 and xfs) for the file's inode,
/// directory entry and tail, and the piece's metadata record (about 100 bytes plus 32
/// per block hash). Without it a zero- or one-byte piece would take a file, an inode and
/// a database record while counting as (almost) nothing.
pub const PIECE_OVERHEAD: u64 = 4096;

/// Longest tag a piece may carry (bytes): the protocol's limit.
pub const MAX_TAG: usize = shoal_proto::limits::MAX_PIECE_TAG;

/// Most peers [`MetaDb::put_known_peers`] keeps (the newest by last seen).
pub const MAX_KNOWN_PEERS: usize = 256;

/// Read connections kept open between calls.
const MAX_IDLE_READERS: usize = 8;

/// What a piece of `size` bytes is charged.
pub fn charged(size: u64) -> u64 {
    size.saturating_add(PIECE_OVERHEAD)
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Db(DbError::Sqlite(e))
    }
}

/// Bytes (charged) and pieces one owner has stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    pub bytes: u64,
    pub pieces: u64,
}

/// What the node knows about one stored piece.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PieceMeta {
    pub owner: PublicKey,
    pub info: PieceInfo,
    pub piece_hash: PieceHash,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    /// Opaque bytes from the upload order (at most [`MAX_TAG`]; empty: none), so that
    /// an owner can find its pieces of one kind again ([`MetaDb::owner_pieces`]).
    pub tag: Vec<u8>,
}

/// One piece of an owner, as [`MetaDb::owner_pieces`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedPiece {
    pub id: PieceId,
    pub size: u64,
    pub expires_at_ms: u64,
    pub tag: Vec<u8>,
}

/// Used (charged) bytes and piece count as committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    pub used: u64,
    pub pieces: u64,
}

/// The write connection, and whether it committed anything since the last flush.
struct Writer {
    conn: Connection,
    dirty: bool,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Writer>,
    readers: Mutex<Vec<Connection>>,
    watch: StallWatch,
}

/// The metadata database (cheap to clone: one shared set of connections).
#[derive(Clone)]
pub struct MetaDb {
    inner: Arc<Inner>,
}

impl fmt::Debug for MetaDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetaDb")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl MetaDb {
    /// Opens (or creates) the database file at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let mut conn = connect(path)?;
        migrate(&mut conn, path)?;
        let db = Self {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                writer: Mutex::new(Writer { conn, dirty: true }),
                readers: Mutex::new(Vec::new()),
                watch: StallWatch::default(),
            }),
        };
        db.flush()?;
        Ok(db)
    }

    /// Opens the metadata of the storage directory `dir` ([`DB_FILE`]); first migrates
    /// a sled database left there by an older version ([`SLED_DIR`]): every record in
    /// one transaction, after which the sled directory is renamed to
    /// [`SLED_MIGRATED_DIR`]. A crash before the commit leaves the sled directory as it
    /// was and the migration runs again; a crash between the commit and the rename
    /// finds the migration recorded and only renames.
    pub fn open_in(dir: &Path) -> Result<Self, Error> {
        shoal_proto::private::create_dir(dir)
            .map_err(|e| Error::io("cannot create directory", dir, e))?;
        let db = Self::open(&dir.join(DB_FILE))?;
        let sled_dir = dir.join(SLED_DIR);
        if sled_dir.is_dir() {
            db.import_sled(&sled_dir)?;
            let aside = dir.join(SLED_MIGRATED_DIR);
            if aside.exists() {
                std::fs::remove_dir_all(&aside)
                    .map_err(|e| Error::io("cannot remove", &aside, e))?;
            }
            std::fs::rename(&sled_dir, &aside).map_err(|e| {
                Error::io("cannot rename the migrated sled directory", &sled_dir, e)
            })?;
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| Error::io("cannot sync directory", dir, e))?;
            tracing::info!(
                from = %sled_dir.display(),
                to = %db.path().display(),
                kept = %aside.display(),
                "migrated the sled metadata to SQLite; the old directory can be removed"
            );
        }
        Ok(db)
    }

    fn import_sled(&self, sled_dir: &Path) -> Result<(), Error> {
        let done = self.read("sled_migrated", |c| {
            Ok(c.query_row(
                "SELECT value FROM node_info WHERE key = 'sled_migrated_at_ms'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .optional()?)
        })?;
        if done.is_none() {
            let now = to_sql(shoal_proto::time::unix_ms());
            self.write("sled_migration", |tx| {
                sled_import::import(sled_dir, tx)?;
                tx.execute(
                    "INSERT INTO node_info (key, value) VALUES ('sled_migrated_at_ms', ?1)",
                    [now],
                )?;
                Ok(())
            })?;
        }
        self.flush()
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The longest-running DB call in flight, and what it is (`None`: no call running).
    pub fn stall(&self) -> Option<(Duration, &'static str)> {
        self.inner.watch.longest()
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        // A panic mid-transaction drops the transaction (rolled back): the connection is
        // still usable.
        self.inner.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` in one write transaction and commits it (visible, durable at the next
    /// [`MetaDb::flush`]); an error from `f` rolls everything back.
    fn write<T>(
        &self,
        what: &'static str,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let _watch = self.inner.watch.enter(what);
        let mut w = self.writer();
        let tx = w
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        w.dirty = true;
        Ok(out)
    }

    /// Runs `f` on a read connection (WAL: never waits for a write).
    fn read<T>(
        &self,
        what: &'static str,
        f: impl FnOnce(&Connection) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let _watch = self.inner.watch.enter(what);
        let pooled = self
            .inner
            .readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        let conn = match pooled {
            Some(c) => c,
            None => connect(&self.inner.path)?,
        };
        let out = f(&conn);
        let mut pool = self.inner.readers.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < MAX_IDLE_READERS {
            pool.push(conn);
        }
        out
    }

    /// What `owner` has stored (charged bytes, pieces).
    pub fn owner_usage(&self, owner: &PublicKey) -> Result<Usage, Error> {
        self.read("owner_usage", |c| {
            let row = c
                .prepare_cached("SELECT bytes, pieces FROM owners WHERE owner = ?1")?
                .query_row([owner.as_bytes().as_slice()], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                })
                .optional()?;
            Ok(row.map_or_else(Usage::default, |(bytes, pieces)| Usage {
                bytes: from_sql(bytes),
                pieces: from_sql(pieces),
            }))
        })
    }

    /// Owners that store something, and how many.
    pub fn owner_count(&self) -> Result<usize, Error> {
        self.read("owner_count", |c| {
            let n: i64 = c.query_row("SELECT count(*) FROM owners", [], |r| r.get(0))?;
            Ok(usize::try_from(n).unwrap_or(0))
        })
    }

    /// The `n` owners storing the most bytes, most first (ties: by key).
    pub fn top_owners(&self, n: usize) -> Result<Vec<(PublicKey, Usage)>, Error> {
        self.read("top_owners", |c| {
            let mut stmt = c.prepare_cached(
                "SELECT owner, bytes, pieces FROM owners ORDER BY bytes DESC, owner LIMIT ?1",
            )?;
            let rows = stmt.query_map([to_sql(n as u64)], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (key, bytes, pieces) = row?;
                if let Ok(owner) = PublicKey::from_bytes("owner", &key) {
                    out.push((
                        owner,
                        Usage {
                            bytes: from_sql(bytes),
                            pieces: from_sql(pieces),
                        },
                    ));
                }
            }
            Ok(out)
        })
    }

    pub fn counters(&self) -> Result<Counters, Error> {
        self.read("counters", |c| {
            let (used, pieces) =
                c.query_row("SELECT used, pieces FROM counters WHERE id = 0", [], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                })?;
            Ok(Counters {
                used: from_sql(used),
                pieces: from_sql(pieces),
            })
        })
    }

    pub fn get(&self, piece: &PieceId) -> Result<Option<PieceMeta>, Error> {
        let raw = self.read("get", |c| {
            Ok(
                c.prepare_cached(&format!("SELECT {META_COLUMNS} FROM pieces WHERE id = ?1"))?
                    .query_row([piece.as_bytes().as_slice()], |r| RawMeta::read(r, 0))
                    .optional()?,
            )
        })?;
        raw.map(|r| r.decode(piece)).transpose()
    }

    pub fn contains(&self, piece: &PieceId) -> Result<bool, Error> {
        self.read("contains", |c| {
            Ok(c.prepare_cached("SELECT 1 FROM pieces WHERE id = ?1")?
                .exists([piece.as_bytes().as_slice()])?)
        })
    }

    /// Records a new piece and adds it to the counters and its owner's total, in one
    /// transaction; with `inline`, the piece's bytes too (a small piece without a
    /// file). Refuses an existing piece id and a tag over [`MAX_TAG`]. Not durable until
    /// [`MetaDb::flush`].
    pub fn insert(
        &self,
        piece: &PieceId,
        meta: &PieceMeta,
        inline: Option<&[u8]>,
    ) -> Result<Counters, Error> {
        if meta.tag.len() > MAX_TAG {
            return Err(Error::Db(DbError::TagTooLong {
                len: meta.tag.len(),
            }));
        }
        let size = to_sql(charged(meta.info.size));
        let hashes = meta.info.block_hashes.concat();
        let id = piece.as_bytes().as_slice();
        let owner = meta.owner.as_bytes().as_slice();
        self.write("insert", |tx| {
            let added = tx
                .prepare_cached(
                    "INSERT INTO pieces (id, owner, size, block_size, piece_hash, block_hashes,
                         created_at_ms, expires_at_ms, tag)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (id) DO NOTHING",
                )?
                .execute(params![
                    id,
                    owner,
                    to_sql(meta.info.size),
                    i64::from(meta.info.block_size),
                    meta.piece_hash.as_bytes().as_slice(),
                    hashes,
                    to_sql(meta.created_at_ms),
                    to_sql(meta.expires_at_ms),
                    meta.tag,
                ])?;
            if added == 0 {
                return Err(Error::AlreadyExists(*piece));
            }
            if let Some(bytes) = inline {
                tx.prepare_cached("INSERT INTO inline_pieces (id, bytes) VALUES (?1, ?2)")?
                    .execute(params![id, bytes])?;
            }
            tx.prepare_cached(
                "INSERT INTO owners (owner, bytes, pieces) VALUES (?1, ?2, 1)
                 ON CONFLICT (owner) DO UPDATE SET bytes = bytes + excluded.bytes, pieces = pieces + 1",
            )?
            .execute(params![owner, size])?;
            let (used, pieces) = tx
                .prepare_cached(
                    "UPDATE counters SET used = used + ?1, pieces = pieces + 1 WHERE id = 0
                     RETURNING used, pieces",
                )?
                .query_row([size], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
            Ok(Counters {
                used: from_sql(used),
                pieces: from_sql(pieces),
            })
        })
    }

    /// Removes a piece's row, subtracts it from the counters and its owner's total and,
    /// for a piece with a file, puts it in the trash (whose file the caller then
    /// removes), in one transaction; an inline piece's bytes go with its row. The `bool`
    /// says whether the piece was inline (no file to remove).
    pub fn remove(&self, piece: &PieceId) -> Result<(PieceMeta, Counters, bool), Error> {
        let id = piece.as_bytes().as_slice();
        self.write("remove", |tx| {
            let raw = tx
                .prepare_cached(&format!(
                    "DELETE FROM pieces WHERE id = ?1 RETURNING {META_COLUMNS}"
                ))?
                .query_row([id], |r| RawMeta::read(r, 0))
                .optional()?
                .ok_or(Error::NotFound(*piece))?;
            let meta = raw.decode(piece)?;
            let size = to_sql(charged(meta.info.size));
            let was_inline = tx
                .prepare_cached("DELETE FROM inline_pieces WHERE id = ?1")?
                .execute([id])?
                > 0;
            if !was_inline {
                tx.prepare_cached("INSERT OR IGNORE INTO trash (id) VALUES (?1)")?
                    .execute([id])?;
            }
            let owner = meta.owner.as_bytes().as_slice();
            tx.prepare_cached(
                "UPDATE owners SET bytes = max(bytes - ?2, 0), pieces = max(pieces - 1, 0)
                 WHERE owner = ?1",
            )?
            .execute(params![owner, size])?;
            tx.prepare_cached("DELETE FROM owners WHERE owner = ?1 AND pieces = 0")?
                .execute([owner])?;
            let (used, pieces) = tx
                .prepare_cached(
                    "UPDATE counters SET used = max(used - ?1, 0), pieces = max(pieces - 1, 0)
                     WHERE id = 0 RETURNING used, pieces",
                )?
                .query_row([size], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
            Ok((
                meta,
                Counters {
                    used: from_sql(used),
                    pieces: from_sql(pieces),
                },
                was_inline,
            ))
        })
    }

    /// Moves a piece's lease expiry.
    pub fn set_expiry(&self, piece: &PieceId, expires_at_ms: u64) -> Result<PieceMeta, Error> {
        let raw = self.write("set_expiry", |tx| {
            tx.prepare_cached(&format!(
                "UPDATE pieces SET expires_at_ms = ?2 WHERE id = ?1 RETURNING {META_COLUMNS}"
            ))?
            .query_row(
                params![piece.as_bytes().as_slice(), to_sql(expires_at_ms)],
                |r| RawMeta::read(r, 0),
            )
            .optional()?
            .ok_or(Error::NotFound(*piece))
        })?;
        raw.decode(piece)
    }

    /// Up to `limit` pieces whose lease ended at or before `now_ms`, oldest first.
    pub fn expired(&self, now_ms: u64, limit: usize) -> Result<Vec<PieceId>, Error> {
        self.read("expired", |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id FROM pieces WHERE expires_at_ms <= ?1
                 ORDER BY expires_at_ms, id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![to_sql(now_ms), to_sql(limit as u64)], |r| {
                r.get::<_, Vec<u8>>(0)
            })?;
            let mut out = Vec::new();
            for row in rows {
                if let Some(id) = id32(&row?) {
                    out.push(PieceId(id));
                }
            }
            Ok(out)
        })
    }

    /// `owner`'s pieces in piece-id order, strictly after `after`, at most `limit`.
    pub fn owner_pieces(
        &self,
        owner: &PublicKey,
        after: Option<&PieceId>,
        limit: usize,
    ) -> Result<Vec<OwnedPiece>, Error> {
        let after: &[u8] = after.map_or(&[], |p| p.as_bytes().as_slice());
        self.read("owner_pieces", |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, size, expires_at_ms, tag FROM pieces
                 WHERE owner = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
            )?;
            let rows = stmt.query_map(
                params![owner.as_bytes().as_slice(), after, to_sql(limit as u64)],
                |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                    ))
                },
            )?;
            let mut out = Vec::new();
            for row in rows {
                let (id, size, expires, tag) = row?;
                if let Some(id) = id32(&id) {
                    out.push(OwnedPiece {
                        id: PieceId(id),
                        size: from_sql(size),
                        expires_at_ms: from_sql(expires),
                        tag,
                    });
                }
            }
            Ok(out)
        })
    }

    /// The bytes of an inline piece (`None`: the piece has a file, or is not stored).
    pub fn inline(&self, piece: &PieceId) -> Result<Option<Vec<u8>>, Error> {
        self.read("inline", |c| {
            Ok(
                c.prepare_cached("SELECT bytes FROM inline_pieces WHERE id = ?1")?
                    .query_row([piece.as_bytes().as_slice()], |r| r.get(0))
                    .optional()?,
            )
        })
    }

    /// Pieces whose metadata is removed but whose file may remain.
    pub fn trash(&self) -> Result<Vec<PieceId>, Error> {
        self.read("trash", |c| {
            let mut stmt = c.prepare_cached("SELECT id FROM trash ORDER BY id")?;
            let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
            let mut out = Vec::new();
            for row in rows {
                if let Some(id) = id32(&row?) {
                    out.push(PieceId(id));
                }
            }
            Ok(out)
        })
    }

    pub fn clear_trash(&self, piece: &PieceId) -> Result<(), Error> {
        self.write("clear_trash", |tx| {
            tx.prepare_cached("DELETE FROM trash WHERE id = ?1")?
                .execute([piece.as_bytes().as_slice()])?;
            Ok(())
        })
    }

    /// Makes everything committed so far durable (see the module docs): a no-op when
    /// nothing was committed since the last flush.
    pub fn flush(&self) -> Result<(), Error> {
        let _watch = self.inner.watch.enter("flush");
        let mut w = self.writer();
        if !w.dirty {
            return Ok(());
        }
        w.conn.pragma_update(None, "synchronous", "FULL")?;
        let synced = w.conn.execute(
            "UPDATE node_info SET value = value + 1 WHERE key = 'syncs'",
            [],
        );
        let restored = w.conn.pragma_update(None, "synchronous", "NORMAL");
        synced?;
        restored?;
        w.dirty = false;
        Ok(())
    }

    /// Calls `f` with every piece, its metadata and, for an inline piece, its stored
    /// length, in id order. Walks the whole table: for checks and tests, never on the
    /// request path or at startup.
    pub fn for_each_piece(
        &self,
        mut f: impl FnMut(PieceId, PieceMeta, Option<u64>),
    ) -> Result<(), Error> {
        self.read("for_each_piece", |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT p.id, length(i.bytes), {} FROM pieces p
                 LEFT JOIN inline_pieces i ON i.id = p.id ORDER BY p.id",
                META_COLUMNS
                    .split(", ")
                    .map(|col| format!("p.{col}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let raw_id: Vec<u8> = row.get(0)?;
                let inline_len: Option<i64> = row.get(1)?;
                let id = PieceId(id32(&raw_id).ok_or(Error::Corrupt {
                    piece: "?".into(),
                    detail: "key is not a piece id",
                })?);
                let meta = RawMeta::read(row, 2)?.decode(&id)?;
                f(id, meta, inline_len.map(from_sql));
            }
            Ok(())
        })
    }

    /// Every piece and its metadata (see [`MetaDb::for_each_piece`]: tests and tools).
    pub fn all(&self) -> Result<Vec<(PieceId, PieceMeta)>, Error> {
        let mut out = Vec::new();
        self.for_each_piece(|id, meta, _| out.push((id, meta)))?;
        Ok(out)
    }

    /// Bytes the database takes on disk: the file, its WAL and shared-memory index.
    pub fn size_on_disk(&self) -> Result<u64, Error> {
        let mut total = 0;
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.inner.path.clone().into_os_string();
            p.push(suffix);
            if let Ok(m) = std::fs::metadata(&p) {
                total += m.len();
            }
        }
        Ok(total)
    }
}

#[cfg(test)]
#[path = "meta_tests.rs"]
mod tests;
