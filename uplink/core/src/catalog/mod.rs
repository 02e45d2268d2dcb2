//! The local catalog: the working copy of buckets and objects, the changes not yet
//! published to the network, and what this uplink knows about nodes, in the uplink's
//! SQLite database ([`store`]; schema in [`store::SCHEMA`]).
//!
//! Entries are plain serde structs stored as JSON, objects under `(bucket, key)`; text
//! compares bytewise, which for UTF-8 is code-point order, so listings come out in true
//! key order.
//!
//! The network holds the truth ([`log`], [`crate::sync`]); this copy is a replica of the
//! CRDT of [`model`]: every entry carries its [`Version`], deletes leave tombstones, and
//! every change, made here or pulled from another writer, goes through the merge rule,
//! which keeps the greater version, in one transaction. Changes made here are also
//! queued in the `pending` table until a publish takes them. A pulled delta is applied
//! in one transaction together with the log position it brings the replica to
//! ([`Catalog::apply_remote_batch`]): a reader sees all of it or none.
//!
//! Nothing is cached in memory: several processes may share one catalog dir, and every
//! call reads what the database holds now.

mod chunks;
mod collect;
mod entry;
pub mod log;
pub mod model;
mod sled_import;
pub mod store;
pub mod tag;
pub mod tree;
mod tx;
mod version;
mod writer;
use collect::tombstones_in;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use shoal_proto::NodeId;

use serde::de::DeserializeOwned;

use crate::crypto::ObjectId;
use crate::listing;
use crate::select::NodeStats;
#[cfg(any(test, feature = "fuzz"))]
pub(crate) use entry::decode;
pub use entry::{
    BucketInfo, CatalogError, Content, Listing, MAX_KEY_LEN, ObjectEntry, ObjectSummary, PartInfo,
    SegmentInfo,
};
use entry::{decode_str, encode};
use log::BlobRef;
pub use model::{Change, EntryKey, Hlc, Value, Version, WriterId};
pub use store::{Db, LockHolder, PublishLock, Watchdog};
use tree::ChunkId;
pub use tx::SyncTx;
use tx::{
    HLC, WRITER, apply_in, check_remote, cols, exec, object_in, observe_in, query_row, requeue_in,
    stats_in, sync_get, sync_set, version_in, writer_in,
};

/// The catalog: a handle on the uplink's database (cheap to clone).
#[derive(Debug, Clone)]
pub struct Catalog {
    db: Arc<Db>,
    /// This replica's writer id as last read from the database (the database's
    /// [`WRITER`] value is the authority: a clone detected by the catalog sync moves
    /// the replica to a new id, see [`Catalog::rotate_writer`]).
    writer: Arc<std::sync::RwLock<WriterId>>,
    stats: Arc<StatsBuffer>,
}

/// How long an outcome recorded with [`Catalog::record_node`] may wait in memory before
/// it is written (with every other one waiting) in one transaction.
const STATS_FLUSH_AFTER: std::time::Duration = std::time::Duration::from_secs(1);
/// How many outcomes may wait in memory at most.
const STATS_FLUSH_COUNT: usize = 4096;

/// Node outcomes not yet written to the `nodes` table. A `cp -r` of small files records
/// one outcome per piece; one write transaction each made it 10–20 % slower than on
/// sled. They are kept here, in order (the latency average depends on it), and written
/// together at most [`STATS_FLUSH_AFTER`] later, on [`Catalog::flush`] and when the
/// last handle goes. This process reads them at once ([`Catalog::node_stats`] adds
/// them); another process sees them up to a second later, and a `kill -9` loses at
/// most that second of history (selection hints, never data).
#[derive(Debug)]
struct StatsBuffer {
    db: Arc<Db>,
    pending: std::sync::Mutex<PendingStats>,
}

#[derive(Debug, Default)]
struct PendingStats {
    since: Option<std::time::Instant>,
    deltas: Vec<(NodeId, NodeStats)>,
}

impl StatsBuffer {
    fn new(db: Arc<Db>) -> Self {
        Self {
            db,
            pending: std::sync::Mutex::new(PendingStats::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PendingStats> {
        // A panic while holding the lock leaves a plain list: still usable.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues one outcome; writes the queue if it is old or long enough.
    fn record(&self, node: &NodeId, delta: NodeStats) -> Result<(), CatalogError> {
        let due = {
            let mut p = self.lock();
            p.since.get_or_insert_with(std::time::Instant::now);
            p.deltas.push((*node, delta));
            p.deltas.len() >= STATS_FLUSH_COUNT
                || p.since.is_some_and(|t| t.elapsed() >= STATS_FLUSH_AFTER)
        };
        if due { self.write() } else { Ok(()) }
    }

    /// Writes every queued outcome in one transaction. On failure they are queued again
    /// (in front of newer ones).
    fn write(&self) -> Result<(), CatalogError> {
        let taken = std::mem::take(&mut *self.lock());
        if taken.deltas.is_empty() {
            return Ok(());
        }
        let r = self.db.write("record_node", |tx| {
            let mut merged: HashMap<NodeId, NodeStats> = HashMap::new();
            for (node, delta) in &taken.deltas {
                if !merged.contains_key(node) {
                    merged.insert(*node, stats_in(tx, node)?.unwrap_or_default());
                }
                if let Some(s) = merged.get_mut(node) {
                    s.merge(delta);
                }
            }
            let mut st = tx.prepare_cached(
                "INSERT INTO nodes (id, stats) VALUES (?1, ?2) \
                 ON CONFLICT (id) DO UPDATE SET stats = excluded.stats",
            )?;
            for (node, s) in &merged {
                st.execute(params![&node.as_bytes()[..], encode("node stats", s)?])?;
            }
            Ok(())
        });
        if r.is_err() {
            let mut p = self.lock();
            let mut back = taken.deltas;
            back.append(&mut p.deltas);
            p.deltas = back;
            p.since = taken.since;
        }
        r
    }

    /// The queued outcomes, oldest first.
    fn queued(&self) -> Vec<(NodeId, NodeStats)> {
        self.lock().deltas.clone()
    }
}

impl Drop for StatsBuffer {
    fn drop(&mut self) {
        if let Err(e) = self.write() {
            tracing::warn!(error = %e, "cannot write the last node outcomes; they are lost");
        }
    }
}

/// Most rows of objects an [`ObjectCursor`] reads at once.
const PAGE: usize = 256;
/// Rows an [`ObjectCursor`] reads first, and first after a seek: a listing that folds
/// keys seeks after each common prefix and uses one row of what it read (reads then
/// double up to [`PAGE`] while rows are used one after the other).
const FIRST_PAGE: usize = 1;

impl Catalog {
    /// Opens the catalog in the dir `path` for writer `writer` (the id kept in the config
    /// dir), creating it, upgrading its schema, or importing a sled catalog found there.
    /// If the catalog moved to another writer id since (see
    /// [`Catalog::rotate_writer`]), that id is used instead of `writer`.
    pub fn open(path: &Path, writer: WriterId) -> Result<Self, CatalogError> {
        let db = Db::open(path)?;
        sled_import::import_if_present(&db)?;
        Self::with_db(Arc::new(db), writer)
    }

    fn with_db(db: Arc<Db>, writer: WriterId) -> Result<Self, CatalogError> {
        let writer = db.write("writer", |tx| match sync_get::<WriterId>(tx, WRITER)? {
            Some(w) => Ok(w),
            None => {
                sync_set(tx, WRITER, &writer)?;
                Ok(writer)
            }
        })?;
        Ok(Self {
            stats: Arc::new(StatsBuffer::new(db.clone())),
            db,
            writer: Arc::new(std::sync::RwLock::new(writer)),
        })
    }

    /// A catalog in a temporary dir, removed when the last handle goes (tests,
    /// benchmarks), with a random writer id.
    pub fn temporary() -> Result<Self, CatalogError> {
        Self::with_db(Arc::new(Db::temporary()?), WriterId::random())
    }

    /// The database (the gateway keeps its multipart records there).
    pub fn db(&self) -> &Arc<Db> {
        &self.db
    }

    /// What times this catalog's DB calls (the gateway exports it).
    pub fn watchdog(&self) -> &Arc<Watchdog> {
        self.db.watchdog()
    }

    /// Takes the right to publish this catalog's log if no process holds it.
    pub fn try_publish_lock(&self) -> Result<Option<PublishLock>, CatalogError> {
        store::off_runtime(|| PublishLock::try_take(self.db.dir()))
    }

    /// Who holds the publish lock (as it wrote it), for a caller that waits.
    pub fn publish_lock_holder(&self) -> Option<LockHolder> {
        store::off_runtime(|| PublishLock::holder(self.db.dir()))
    }

    /// Whether a live object uses `id` (its pieces must stay).
    pub fn object_id_in_use(&self, id: &ObjectId) -> Result<bool, CatalogError> {
        self.db.read("object_id_in_use", |tx| {
            Ok(query_row(
                tx,
                "SELECT 1 FROM objects WHERE object_id = ?1 LIMIT 1",
                [&id.0[..]],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
        })
    }

    /// This replica's writer id (as last read from the database; see
    /// [`Catalog::current_writer`]).
    pub fn writer(&self) -> WriterId {
        match self.writer.read() {
            Ok(w) => *w,
            Err(poisoned) => **poisoned.get_ref(),
        }
    }

    /// Makes every change so far survive a machine crash (a process crash loses nothing
    /// committed anyway).
    pub fn flush(&self) -> Result<(), CatalogError> {
        self.stats.write()?;
        self.db.flush()
    }

    /// [`Catalog::flush`] on the blocking pool.
    pub async fn flush_async(&self) -> Result<(), CatalogError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.flush())
            .await
            .map_err(|_| CatalogError::Poisoned)?
    }

    /// A fresh version for a change made here: later than every version made or seen
    /// (by any process using this catalog).
    pub fn next_version(&self) -> Result<Version, CatalogError> {
        let now = shoal_proto::time::unix_ms();
        let hlc = self.db.write("next_version", |tx| {
            let last: Hlc = sync_get(tx, HLC)?.unwrap_or_default();
            let out = Hlc::tick(last, now);
            sync_set(tx, HLC, &out)?;
            Ok((out, writer_in(tx, self.writer())?))
        })?;
        Ok(Version {
            hlc: hlc.0,
            writer: hlc.1,
        })
    }

    /// Records a new object made here in one transaction: ticks the clock, sets the
    /// entry's version, applies it (a fresh version always wins) and queues it for
    /// publishing. Returns the entry as stored and the object it replaced, if any.
    /// (Two transactions, [`Catalog::next_version`] then [`Catalog::apply_local`], were
    /// the cost of a small file in `cp -r`.)
    /// `finish` sees the entry with its version set, before it is stored.
    pub fn put_object_local(
        &self,
        bucket: &str,
        mut entry: ObjectEntry,
        finish: impl FnOnce(&mut ObjectEntry),
    ) -> Result<(ObjectEntry, Option<ObjectEntry>), CatalogError> {
        let now = shoal_proto::time::unix_ms();
        let writer = self.writer();
        self.db.write("put_object_local", |tx| {
            let writer = writer_in(tx, writer)?;
            let last: Hlc = sync_get(tx, HLC)?.unwrap_or_default();
            let hlc = Hlc::tick(last, now);
            sync_set(tx, HLC, &hlc)?;
            let key = EntryKey::Object {
                bucket: bucket.to_string(),
                key: entry.key.clone(),
            };
            let previous = object_in(tx, bucket, &entry.key)?;
            entry.version = Version { hlc, writer };
            finish(&mut entry);
            let change = Change {
                key,
                version: entry.version,
                value: Value::Object(entry.clone()),
            };
            apply_in(tx, &change, true)?;
            Ok((entry, previous))
        })
    }

    /// Records a change made here: applied by the merge rule and queued for publishing.
    pub fn apply_local(&self, change: &Change) -> Result<bool, CatalogError> {
        self.db
            .write("apply_local", |tx| apply_in(tx, change, true))
    }

    /// Merges a change pulled from the network (not queued again).
    pub fn apply_remote(&self, change: &Change) -> Result<bool, CatalogError> {
        check_remote(change)?;
        self.db.write("apply_remote", |tx| {
            observe_in(tx, change.version.hlc)?;
            apply_in(tx, change, false)
        })
    }

    /// Merges pulled changes and runs `then` (which records the log position they bring
    /// the replica to) in one transaction: a reader, in this process or another, sees
    /// all of it or none. Returns how many changes won.
    pub fn apply_remote_batch(
        &self,
        changes: &[Change],
        then: impl FnOnce(&SyncTx<'_, '_>) -> Result<(), CatalogError>,
    ) -> Result<usize, CatalogError> {
        for c in changes {
            check_remote(c)?;
        }
        self.db.write("apply_remote_batch", |tx| {
            if let Some(max) = changes.iter().map(|c| c.version.hlc).max() {
                observe_in(tx, max)?;
            }
            let mut n = 0;
            for c in changes {
                n += usize::from(apply_in(tx, c, false)?);
            }
            then(&SyncTx { tx })?;
            Ok(n)
        })
    }

    /// The version held for `key`, live or deleted.
    pub fn version_of(&self, key: &EntryKey) -> Result<Option<Version>, CatalogError> {
        self.db.read("version_of", |tx| version_in(tx, key))
    }

    /// Changes made here and not yet published, with the bytes each was queued as (for
    /// [`Catalog::clear_published`]).
    pub fn pending(&self) -> Result<Vec<(Change, Vec<u8>)>, CatalogError> {
        self.db.read("pending", |tx| {
            let mut st = tx.prepare("SELECT change FROM pending ORDER BY kind, bucket, key")?;
            let rows = st.query_map([], |r| r.get::<_, String>(0))?;
            let mut out = Vec::new();
            for raw in rows {
                let raw = raw?;
                out.push((decode_str("a queued change", &raw)?, raw.into_bytes()));
            }
            Ok(out)
        })
    }

    /// Number of changes not yet published. (If the database cannot be read, says 1:
    /// the caller then publishes, and the publish reports the error.)
    pub fn pending_count(&self) -> usize {
        self.db
            .read("pending_count", |tx| {
                Ok(query_row(tx, "SELECT count(*) FROM pending", [], |r| {
                    r.get::<_, i64>(0)
                })?)
            })
            .map(|n| n as usize)
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot count the queued catalog changes");
                1
            })
    }

    /// Drops published changes from the queue, unless the key changed again meanwhile.
    pub fn clear_published(&self, published: &[(Change, Vec<u8>)]) -> Result<(), CatalogError> {
        self.db.write("clear_published", |tx| {
            for (c, raw) in published {
                let (kind, b, k) = cols(&c.key);
                exec(
                    tx,
                    "DELETE FROM pending WHERE kind = ?1 AND bucket = ?2 AND key = ?3 \
                     AND change = ?4",
                    params![kind, b, k, String::from_utf8_lossy(raw)],
                )?;
            }
            Ok(())
        })
    }

    /// Every entry and tombstone as a change: the content of a snapshot.
    pub fn all_changes(&self) -> Result<Vec<Change>, CatalogError> {
        self.db.read("all_changes", |tx| {
            let mut out = Vec::new();
            let mut st = tx.prepare("SELECT name, entry FROM buckets ORDER BY name")?;
            let mut rows = st.query([])?;
            while let Some(r) = rows.next()? {
                let name: String = r.get(0)?;
                let info: BucketInfo = decode_str(&name, &r.get::<_, String>(1)?)?;
                out.push(Change {
                    key: EntryKey::Bucket(info.name.clone()),
                    version: info.version,
                    value: Value::Bucket(info),
                });
            }
            let mut st =
                tx.prepare("SELECT bucket, key, entry FROM objects ORDER BY bucket, key")?;
            let mut rows = st.query([])?;
            while let Some(r) = rows.next()? {
                let bucket: String = r.get(0)?;
                let key: String = r.get(1)?;
                let entry: ObjectEntry =
                    decode_str(&format!("{bucket}/{key}"), &r.get::<_, String>(2)?)?;
                out.push(Change {
                    key: EntryKey::Object { bucket, key },
                    version: entry.version,
                    value: Value::Object(entry),
                });
            }
            out.extend(tombstones_in(tx)?);
            Ok(out)
        })
    }

    /// A value of the sync state.
    pub fn sync_value<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, CatalogError> {
        self.db.read("sync_value", |tx| sync_get(tx, name))
    }

    /// Stores a value of the sync state.
    pub fn set_sync_value<T: Serialize>(&self, name: &str, v: &T) -> Result<(), CatalogError> {
        self.db.write("set_sync_value", |tx| sync_set(tx, name, v))
    }

    /// Updates several values of the sync state in one transaction: `f` reads and
    /// writes them through [`SyncTx`].
    pub fn update_sync<R>(
        &self,
        f: impl FnOnce(&SyncTx<'_, '_>) -> Result<R, CatalogError>,
    ) -> Result<R, CatalogError> {
        self.db.write("update_sync", |tx| f(&SyncTx { tx }))
    }

    /// Whether the catalog holds nothing at all (no bucket, object or tombstone). (If
    /// the database cannot be read, says false.)
    pub fn is_empty(&self) -> bool {
        self.db
            .read("is_empty", |tx| {
                Ok(query_row(
                    tx,
                    "SELECT NOT EXISTS (SELECT 1 FROM buckets) \
                     AND NOT EXISTS (SELECT 1 FROM objects) \
                     AND NOT EXISTS (SELECT 1 FROM tombstones)",
                    [],
                    |r| r.get::<_, bool>(0),
                )?)
            })
            .unwrap_or(false)
    }

    pub fn bucket(&self, name: &str) -> Result<Option<BucketInfo>, CatalogError> {
        self.db.read("bucket", |tx| {
            query_row(
                tx,
                "SELECT entry FROM buckets WHERE name = ?1",
                [name],
                |r| r.get::<_, String>(0),
            )
            .optional()?
            .map(|v| decode_str(name, &v))
            .transpose()
        })
    }

    pub fn buckets(&self) -> Result<Vec<BucketInfo>, CatalogError> {
        self.db.read("buckets", |tx| {
            let mut st = tx.prepare("SELECT name, entry FROM buckets ORDER BY name")?;
            let mut rows = st.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let name: String = r.get(0)?;
                out.push(decode_str(&name, &r.get::<_, String>(1)?)?);
            }
            Ok(out)
        })
    }

    pub fn object(&self, bucket: &str, key: &str) -> Result<Option<ObjectEntry>, CatalogError> {
        self.db.read("object", |tx| object_in(tx, bucket, key))
    }

    /// Runs `f` on each `(key, entry JSON)` of `bucket` under `prefix`, in key order,
    /// until it returns false.
    fn scan_prefix(
        &self,
        what: &'static str,
        bucket: &str,
        prefix: &str,
        mut f: impl FnMut(String, String) -> Result<bool, CatalogError>,
    ) -> Result<(), CatalogError> {
        self.db.read(what, |tx| {
            let mut st = tx.prepare_cached(
                "SELECT key, entry FROM objects WHERE bucket = ?1 AND key >= ?2 ORDER BY key",
            )?;
            let mut rows = st.query([bucket, prefix])?;
            while let Some(r) = rows.next()? {
                let key: String = r.get(0)?;
                if !key.starts_with(prefix) || !f(key, r.get(1)?)? {
                    break;
                }
            }
            Ok(())
        })
    }

    /// Full entries under `prefix`, in key order.
    pub fn objects(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectEntry>, CatalogError> {
        let mut out = Vec::new();
        self.scan_prefix("objects", bucket, prefix, |key, v| {
            out.push(decode_str(&format!("{bucket}/{key}"), &v)?);
            Ok(true)
        })?;
        Ok(out)
    }

    /// Reads `bucket`'s objects in key order through a cursor that can skip ahead
    /// ([`ObjectCursor`]), all in one read transaction: one snapshot, and no
    /// transaction per seek. Rows are decoded only when asked ([`RawObject::decode`]).
    pub fn read_objects<R>(
        &self,
        bucket: &str,
        f: impl FnOnce(&mut ObjectCursor<'_>) -> Result<R, CatalogError>,
    ) -> Result<R, CatalogError> {
        self.db.read("read_objects", |tx| {
            let mut cursor = ObjectCursor {
                tx,
                bucket,
                next: Some((String::new(), true)),
                page: std::collections::VecDeque::new(),
                rows: FIRST_PAGE,
            };
            f(&mut cursor)
        })
    }

    /// Whether the bucket holds any object.
    pub fn bucket_is_empty(&self, bucket: &str) -> Result<bool, CatalogError> {
        self.db.read("bucket_is_empty", |tx| {
            Ok(tx
                .query_row(
                    "SELECT 1 FROM objects WHERE bucket = ?1 LIMIT 1",
                    [bucket],
                    |_| Ok(()),
                )
                .optional()?
                .is_none())
        })
    }

    /// Lists `bucket` under `prefix` in key order. Non-recursive listings fold keys with a
    /// `/` after the prefix into one [`Listing::Prefix`] each, by the rule every listing
    /// folds by ([`listing::walk`]), and read one key per folded prefix (the cursor
    /// seeks past the rest). One read transaction: one snapshot of the bucket.
    pub fn list(
        &self,
        bucket: &str,
        prefix: &str,
        recursive: bool,
    ) -> Result<Vec<Listing>, CatalogError> {
        let delimiter = (!recursive).then_some("/");
        self.read_objects(bucket, |cursor| {
            let mut out = Vec::new();
            listing::walk(
                cursor,
                prefix,
                delimiter,
                &listing::Resume::Start,
                |_, row| {
                    out.push(match row {
                        listing::Row::CommonPrefix(prefix) => Listing::Prefix { prefix },
                        listing::Row::Object(raw) => {
                            let e = decode_str::<ObjectSummary>(&raw.key, &raw.entry)?;
                            Listing::Object {
                                key: e.key,
                                size: e.size,
                                modified_ms: e.modified_ms,
                                content_type: e.content_type,
                                version: e.version,
                            }
                        }
                    });
                    Ok(std::ops::ControlFlow::Continue(()))
                },
            )?;
            Ok(out)
        })
    }

    /// Everything this uplink remembers about nodes (with the outcomes still queued in
    /// this process).
    pub fn node_stats(&self) -> Result<HashMap<NodeId, NodeStats>, CatalogError> {
        let queued = self.stats.queued();
        let mut out = self.db.read("node_stats", |tx| {
            let mut st = tx.prepare_cached("SELECT id, stats FROM nodes")?;
            let mut rows = st.query([])?;
            let mut out: HashMap<NodeId, NodeStats> = HashMap::new();
            while let Some(r) = rows.next()? {
                let id: Vec<u8> = r.get(0)?;
                let Ok(id) = <[u8; 32]>::try_from(&id[..]) else {
                    continue;
                };
                out.insert(
                    NodeId(id),
                    decode_str("node stats", &r.get::<_, String>(1)?)?,
                );
            }
            Ok(out)
        })?;
        for (node, delta) in &queued {
            out.entry(*node).or_default().merge(delta);
        }
        Ok(out)
    }

    /// Adds `delta` to a node's history (queued in memory, written within a second:
    /// see [`StatsBuffer`]).
    pub fn record_node(&self, node: &NodeId, delta: NodeStats) -> Result<(), CatalogError> {
        self.stats.record(node, delta)
    }
}

/// An object's catalog row, decoded only when asked.
#[derive(Debug, Clone)]
pub struct RawObject {
    key: String,
    entry: String,
}

impl RawObject {
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The entry, decoded (`bucket` names it in an error).
    pub fn decode(&self, bucket: &str) -> Result<ObjectEntry, CatalogError> {
        decode_str(&format!("{bucket}/{}", self.key), &self.entry)
    }

    /// What a listing shows of the entry, decoded without its key and content
    /// ([`ObjectSummary`]; `bucket` names it in an error).
    pub fn summary(&self, bucket: &str) -> Result<ObjectSummary, CatalogError> {
        decode_str(&format!("{bucket}/{}", self.key), &self.entry)
    }
}

/// A bucket's objects in key order inside one read transaction
/// ([`Catalog::read_objects`]), able to skip ahead ([`ObjectCursor::seek`]).
#[derive(Debug)]
pub struct ObjectCursor<'t> {
    tx: &'t rusqlite::Transaction<'t>,
    bucket: &'t str,
    /// Where the next read starts, and whether that key itself is included (`None`:
    /// nothing after the rows in `page`).
    next: Option<(String, bool)>,
    page: std::collections::VecDeque<(String, String)>,
    /// Rows the next read asks for.
    rows: usize,
}

impl ObjectCursor<'_> {
    /// The next object at or after the position, in key order.
    pub fn next_raw(&mut self) -> Option<Result<RawObject, CatalogError>> {
        if self.page.is_empty() {
            let (from, inclusive) = self.next.take()?;
            let want = self.rows;
            self.rows = (self.rows * 2).min(PAGE);
            let sql = if inclusive {
                "SELECT key, entry FROM objects WHERE bucket = ?1 AND key >= ?2 \
                 ORDER BY key LIMIT ?3"
            } else {
                "SELECT key, entry FROM objects WHERE bucket = ?1 AND key > ?2 \
                 ORDER BY key LIMIT ?3"
            };
            let read = (|| {
                let mut st = self.tx.prepare_cached(sql)?;
                let mut rows = st.query(params![self.bucket, from, want as i64])?;
                let mut out = std::collections::VecDeque::with_capacity(want);
                while let Some(r) = rows.next()? {
                    out.push_back((r.get::<_, String>(0)?, r.get::<_, String>(1)?));
                }
                Ok::<_, CatalogError>(out)
            })();
            match read {
                Err(e) => return Some(Err(e)),
                Ok(rows) => {
                    if rows.len() == want
                        && let Some((last, _)) = rows.back()
                    {
                        self.next = Some((last.clone(), false));
                    }
                    self.page = rows;
                }
            }
        }
        let (key, entry) = self.page.pop_front()?;
        Some(Ok(RawObject { key, entry }))
    }

    /// Moves to the first object whose key is at or after `key` (never backwards).
    /// Skips within the rows read when the key is there; else the next read starts at
    /// the key and is small.
    pub fn seek(&mut self, key: &str) {
        while let Some((k, _)) = self.page.front() {
            if k.as_str() >= key {
                return;
            }
            self.page.pop_front();
        }
        if let Some((from, _)) = &self.next
            && key > from.as_str()
        {
            self.next = Some((key.to_string(), true));
            self.rows = FIRST_PAGE;
        }
    }
}

/// The catalog's objects of one bucket, as a listing reads them.
impl listing::Cursor for ObjectCursor<'_> {
    type Item = RawObject;
    type Error = CatalogError;

    fn next_entry(&mut self) -> Option<listing::Entry<RawObject, CatalogError>> {
        self.next_raw().map(|r| r.map(|o| (o.key.clone(), o)))
    }

    fn seek(&mut self, key: &str) {
        ObjectCursor::seek(self, key);
    }
}

#[cfg(test)]
mod tests;
