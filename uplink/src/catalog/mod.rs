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

pub mod log;
pub mod model;
mod sled_import;
pub mod store;
pub mod tag;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};
use shoal_proto::NodeId;

use serde::de::DeserializeOwned;

use crate::codec::{CodecKind, Scheme};
use crate::crypto::{ObjectId, WrappedKey};
use crate::select::NodeStats;
use crate::store::PiecePlacement;
pub use model::{Change, EntryKey, Hlc, Value, Version, WriterId};
pub use store::{Db, LockHolder, PublishLock, Watchdog};

/// Longest object key, in bytes (as S3).
pub const MAX_KEY_LEN: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog database error: {0}")]
    Db(#[from] rusqlite::Error),
    #[error(
        "the catalog database {} stayed locked by another process for {} s; {}",
        file.display(), waited.as_secs(), store::describe_holders(holders)
    )]
    Busy {
        file: PathBuf,
        waited: std::time::Duration,
        /// Other processes that had the file open when the wait ended (pid, command).
        holders: Vec<(u32, String)>,
    },
    #[error(
        "the catalog database {} has schema version {found}, newer than this uplink knows ({known}): upgrade uplink",
        file.display()
    )]
    NewerSchema {
        file: PathBuf,
        found: u32,
        known: u32,
    },
    #[error("cannot upgrade the old (sled) catalog in {}: {reason}", dir.display())]
    OldFormat { dir: PathBuf, reason: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("a catalog database call panicked or was cancelled")]
    Poisoned,
    #[error("catalog entry {what} is corrupt: {reason}")]
    Corrupt { what: String, reason: String },
    #[error("catalog entry {what} cannot be encoded: {reason}")]
    Encode { what: String, reason: String },
}

/// A bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketInfo {
    pub name: String,
    pub created_ms: u64,
    /// Set by the catalog when the bucket is stored.
    #[serde(default)]
    pub version: Version,
}

/// One stored object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectEntry {
    pub key: String,
    /// Plaintext size in bytes.
    pub size: u64,
    pub created_ms: u64,
    pub modified_ms: u64,
    /// When the pieces' leases end (unix ms), if the object was stored with an expiry.
    pub expires_ms: Option<u64>,
    pub content_type: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub object_id: ObjectId,
    /// The object key, sealed under a key derived from the access and bucket/key.
    pub wrapped_key: WrappedKey,
    pub content: Content,
    /// Set by the catalog when the entry is stored.
    #[serde(default)]
    pub version: Version,
}

impl ObjectEntry {
    /// Every segment of the object, in order (the segments of all parts of a multipart
    /// object, part after part).
    pub fn segments(&self) -> &[SegmentInfo] {
        match &self.content {
            Content::Inline { .. } => &[],
            Content::Segments(s) | Content::Parts { segments: s, .. } => s,
        }
    }

    /// The segments, to record new placements (repair).
    pub fn segments_mut(&mut self) -> &mut [SegmentInfo] {
        match &mut self.content {
            Content::Inline { .. } => &mut [],
            Content::Segments(s) | Content::Parts { segments: s, .. } => s,
        }
    }
}

/// Where an object's (encrypted) bytes are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Content {
    /// Objects up to 4 KiB: the sealed bytes live in the catalog.
    Inline {
        #[serde(with = "crate::hexser::vec")]
        sealed: Vec<u8>,
    },
    Segments(Vec<SegmentInfo>),
    /// An object assembled from the parts of a multipart upload (S3 gateway). Each part
    /// was sealed as a unit of its own, under its own key and object id, as it arrived:
    /// `parts[i]` owns the next `parts[i].segments` entries of `segments`. (This variant
    /// comes last so that catalogs written before it still decode unchanged.)
    Parts {
        parts: Vec<PartInfo>,
        segments: Vec<SegmentInfo>,
    },
}

/// One part of a [`Content::Parts`] object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartInfo {
    /// The part number the client gave (1 to 10,000).
    pub number: u32,
    /// Plaintext size in bytes.
    pub size: u64,
    /// How many of the object's segments belong to this part.
    pub segments: u32,
    /// MD5 of the part's plaintext (its S3 ETag).
    #[serde(with = "crate::hexser")]
    pub md5: [u8; 16],
    pub object_id: ObjectId,
    /// The part's key, wrapped like an object key (for the object's bucket and key and
    /// the part's object id).
    pub wrapped_key: WrappedKey,
}

impl Content {
    /// The parts and their segment ranges, for [`Content::Parts`]; one whole unit
    /// otherwise.
    pub fn part_ranges(&self) -> Vec<(Option<&PartInfo>, std::ops::Range<usize>)> {
        match self {
            Content::Inline { .. } => vec![(None, 0..0)],
            Content::Segments(s) => vec![(None, 0..s.len())],
            Content::Parts { parts, segments } => {
                let mut at = 0usize;
                parts
                    .iter()
                    .map(|p| {
                        let end = (at + p.segments as usize).min(segments.len());
                        let r = at..end;
                        at = end;
                        (Some(p), r)
                    })
                    .collect()
            }
        }
    }
}

/// One erasure-coded segment and where its pieces went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentInfo {
    pub index: u32,
    pub plain_size: u64,
    pub sealed_size: u64,
    pub codec: CodecKind,
    pub scheme: Scheme,
    /// Bytes per shard of a stripe; also the pieces' hash block size.
    pub shard_size: u32,
    pub piece_size: u64,
    pub pieces: Vec<PiecePlacement>,
}

/// One row of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Listing {
    Object {
        key: String,
        size: u64,
        modified_ms: u64,
        content_type: Option<String>,
        /// The version that wrote this entry (later clock wins; writer id breaks ties).
        version: Version,
    },
    /// A common prefix ending in `/` (non-recursive listings).
    Prefix { prefix: String },
}

/// The catalog: a handle on the uplink's database (cheap to clone).
#[derive(Debug, Clone)]
pub struct Catalog {
    db: Arc<Db>,
    writer: WriterId,
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

/// A node's stats as stored, inside `tx`.
fn stats_in(tx: &Transaction<'_>, node: &NodeId) -> Result<Option<NodeStats>, CatalogError> {
    let old: Option<String> = tx
        .prepare_cached("SELECT stats FROM nodes WHERE id = ?1")?
        .query_row([&node.as_bytes()[..]], |r| r.get(0))
        .optional()?;
    // A row this version cannot read is history lost, not an error: start again.
    Ok(old.map(|o| serde_json::from_str(&o).unwrap_or_default()))
}

/// `(kind, bucket, key)` of an entry in the tables that hold both kinds (tombstones,
/// pending): `('b', name, '')` or `('o', bucket, key)`.
fn cols(k: &EntryKey) -> (&'static str, &str, &str) {
    match k {
        EntryKey::Bucket(b) => ("b", b.as_str(), ""),
        EntryKey::Object { bucket, key } => ("o", bucket.as_str(), key.as_str()),
    }
}

fn encode<T: Serialize>(what: &str, v: &T) -> Result<String, CatalogError> {
    serde_json::to_string(v).map_err(|e| CatalogError::Encode {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(
    what: &str,
    b: &[u8],
) -> Result<T, CatalogError> {
    serde_json::from_slice(b).map_err(|e| CatalogError::Corrupt {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

fn decode_str<T: for<'de> Deserialize<'de>>(what: &str, s: &str) -> Result<T, CatalogError> {
    decode(what, s.as_bytes())
}

/// Runs `sql` through the connection's statement cache (parsed once per connection,
/// not once per call: the per-object path runs a dozen statements).
fn exec(tx: &Transaction<'_>, sql: &str, p: impl rusqlite::Params) -> rusqlite::Result<usize> {
    tx.prepare_cached(sql)?.execute(p)
}

/// One row of `sql`, through the statement cache (see [`exec`]).
fn query_row<T>(
    tx: &Transaction<'_>,
    sql: &str,
    p: impl rusqlite::Params,
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    tx.prepare_cached(sql)?.query_row(p, f)
}

/// Name of the sync-state value holding the clock.
const HLC: &str = "hlc";

/// The sync state inside a transaction of [`Catalog::apply_remote_batch`] or
/// [`Catalog::update_sync`].
#[derive(Debug)]
pub struct SyncTx<'a, 'c> {
    tx: &'a Transaction<'c>,
}

impl SyncTx<'_, '_> {
    /// A value of the sync state, as this transaction sees it.
    pub fn sync_value<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, CatalogError> {
        sync_get(self.tx, name)
    }

    /// Stores a value of the sync state, committed with the transaction.
    pub fn set_sync_value<T: Serialize>(&self, name: &str, v: &T) -> Result<(), CatalogError> {
        sync_set(self.tx, name, v)
    }
}

fn sync_get<T: DeserializeOwned>(
    tx: &Transaction<'_>,
    name: &str,
) -> Result<Option<T>, CatalogError> {
    query_row(tx, "SELECT value FROM sync WHERE name = ?1", [name], |r| {
        r.get::<_, String>(0)
    })
    .optional()?
    .map(|v| decode_str(name, &v))
    .transpose()
}

fn sync_set<T: Serialize>(tx: &Transaction<'_>, name: &str, v: &T) -> Result<(), CatalogError> {
    exec(
        tx,
        "INSERT INTO sync (name, value) VALUES (?1, ?2) \
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        params![name, encode(name, v)?],
    )?;
    Ok(())
}

/// Moves the clock past `seen`.
fn observe_in(tx: &Transaction<'_>, seen: Hlc) -> Result<(), CatalogError> {
    let last: Hlc = sync_get(tx, HLC)?.unwrap_or_default();
    if seen > last {
        sync_set(tx, HLC, &seen)?;
    }
    Ok(())
}

/// The version held for `key`, live or deleted.
fn version_in(tx: &Transaction<'_>, key: &EntryKey) -> Result<Option<Version>, CatalogError> {
    let what = key.to_string();
    let live = match key {
        EntryKey::Bucket(b) => {
            query_row(tx, "SELECT entry FROM buckets WHERE name = ?1", [b], |r| {
                r.get::<_, String>(0)
            })
            .optional()?
            .map(|v| decode_str::<BucketInfo>(&what, &v).map(|e| e.version))
            .transpose()?
        }
        EntryKey::Object { bucket, key } => query_row(
            tx,
            "SELECT entry FROM objects WHERE bucket = ?1 AND key = ?2",
            [bucket, key],
            |r| r.get::<_, String>(0),
        )
        .optional()?
        .map(|v| decode_str::<ObjectEntry>(&what, &v).map(|e| e.version))
        .transpose()?,
    };
    if live.is_some() {
        return Ok(live);
    }
    let (kind, b, k) = cols(key);
    query_row(
        tx,
        "SELECT version FROM tombstones WHERE kind = ?1 AND bucket = ?2 AND key = ?3",
        [kind, b, k],
        |r| r.get::<_, String>(0),
    )
    .optional()?
    .map(|v| decode_str(&what, &v))
    .transpose()
}

/// The live object at `bucket/key`, inside `tx`.
fn object_in(
    tx: &Transaction<'_>,
    bucket: &str,
    key: &str,
) -> Result<Option<ObjectEntry>, CatalogError> {
    query_row(
        tx,
        "SELECT entry FROM objects WHERE bucket = ?1 AND key = ?2",
        [bucket, key],
        |r| r.get::<_, String>(0),
    )
    .optional()?
    .map(|v| decode_str(&format!("{bucket}/{key}"), &v))
    .transpose()
}

/// The merge rule against the tables, inside `tx`.
fn apply_in(tx: &Transaction<'_>, change: &Change, queue: bool) -> Result<bool, CatalogError> {
    let what = change.key.to_string();
    if !model::wins(change.version, version_in(tx, &change.key)?) {
        return Ok(false);
    }
    let (kind, b, k) = cols(&change.key);
    let tombstone = |tx: &Transaction<'_>| -> Result<(), CatalogError> {
        exec(
            tx,
            "INSERT INTO tombstones (kind, bucket, key, version) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (kind, bucket, key) DO UPDATE SET version = excluded.version",
            params![kind, b, k, encode(&what, &change.version)?],
        )?;
        Ok(())
    };
    let untombstone = |tx: &Transaction<'_>| -> Result<(), CatalogError> {
        exec(
            tx,
            "DELETE FROM tombstones WHERE kind = ?1 AND bucket = ?2 AND key = ?3",
            [kind, b, k],
        )?;
        Ok(())
    };
    match (&change.key, &change.value) {
        (EntryKey::Bucket(name), Value::Bucket(info)) => {
            let mut info = info.clone();
            info.version = change.version;
            exec(
                tx,
                "INSERT INTO buckets (name, entry) VALUES (?1, ?2) \
                 ON CONFLICT (name) DO UPDATE SET entry = excluded.entry",
                params![name, encode(&what, &info)?],
            )?;
            untombstone(tx)?;
        }
        (EntryKey::Object { bucket, key }, Value::Object(e)) => {
            let mut e = e.clone();
            e.version = change.version;
            exec(
                tx,
                "INSERT INTO objects (bucket, key, object_id, entry) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (bucket, key) DO UPDATE \
                 SET object_id = excluded.object_id, entry = excluded.entry",
                params![bucket, key, &e.object_id.0[..], encode(&what, &e)?],
            )?;
            untombstone(tx)?;
        }
        (EntryKey::Bucket(name), Value::Tombstone) => {
            exec(tx, "DELETE FROM buckets WHERE name = ?1", [name])?;
            tombstone(tx)?;
        }
        (EntryKey::Object { bucket, key }, Value::Tombstone) => {
            exec(
                tx,
                "DELETE FROM objects WHERE bucket = ?1 AND key = ?2",
                [bucket, key],
            )?;
            tombstone(tx)?;
        }
        _ => {
            return Err(CatalogError::Encode {
                what,
                reason: "the value does not belong under its key".into(),
            });
        }
    }
    if queue {
        exec(
            tx,
            "INSERT INTO pending (kind, bucket, key, change) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (kind, bucket, key) DO UPDATE SET change = excluded.change",
            params![kind, b, k, encode(&what, change)?],
        )?;
    }
    Ok(true)
}

fn check_remote(change: &Change) -> Result<(), CatalogError> {
    if change.is_consistent() {
        Ok(())
    } else {
        Err(CatalogError::Corrupt {
            what: change.key.to_string(),
            reason: "the value does not belong under its key".into(),
        })
    }
}

/// Rows of objects read per page by [`Catalog::objects_from`].
const PAGE: usize = 256;

impl Catalog {
    /// Opens the catalog in the dir `path` for writer `writer` (the id kept in the config
    /// dir), creating it, upgrading its schema, or importing a sled catalog found there.
    pub fn open(path: &Path, writer: WriterId) -> Result<Self, CatalogError> {
        Ok(Self::with_db(Arc::new(Db::open(path)?), writer))
    }

    fn with_db(db: Arc<Db>, writer: WriterId) -> Self {
        Self {
            stats: Arc::new(StatsBuffer::new(db.clone())),
            db,
            writer,
        }
    }

    /// A catalog in a temporary dir, removed when the last handle goes (tests,
    /// benchmarks), with a random writer id.
    pub fn temporary() -> Result<Self, CatalogError> {
        Ok(Self::with_db(
            Arc::new(Db::temporary()?),
            WriterId::random(),
        ))
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

    /// This replica's writer id.
    pub fn writer(&self) -> WriterId {
        self.writer
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
            Ok(out)
        })?;
        Ok(Version {
            hlc,
            writer: self.writer,
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
        let writer = self.writer;
        self.db.write("put_object_local", |tx| {
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
            let mut st = tx.prepare(
                "SELECT kind, bucket, key, version FROM tombstones ORDER BY kind, bucket, key",
            )?;
            let mut rows = st.query([])?;
            while let Some(r) = rows.next()? {
                let kind: String = r.get(0)?;
                let bucket: String = r.get(1)?;
                let key: String = r.get(2)?;
                let key = match kind.as_str() {
                    "b" => EntryKey::Bucket(bucket),
                    _ => EntryKey::Object { bucket, key },
                };
                let version = decode_str(&key.to_string(), &r.get::<_, String>(3)?)?;
                out.push(Change {
                    key,
                    version,
                    value: Value::Tombstone,
                });
            }
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

    /// The entries of `bucket` from key `from` (inclusive) on, in key order, read lazily
    /// a page at a time (listing pages read only what they return).
    pub fn objects_from<'a>(
        &'a self,
        bucket: &str,
        from: &str,
    ) -> impl Iterator<Item = Result<ObjectEntry, CatalogError>> + 'a {
        ObjectsFrom {
            catalog: self,
            bucket: bucket.to_string(),
            next: Some((from.to_string(), true)),
            page: std::collections::VecDeque::new(),
        }
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
    /// `/` after the prefix into one [`Listing::Prefix`] each.
    pub fn list(
        &self,
        bucket: &str,
        prefix: &str,
        recursive: bool,
    ) -> Result<Vec<Listing>, CatalogError> {
        let mut out = Vec::new();
        let mut last_prefix: Option<String> = None;
        self.scan_prefix("list", bucket, prefix, |key, v| {
            if !recursive && let Some(pos) = key[prefix.len()..].find('/') {
                let p = key[..prefix.len() + pos + 1].to_string();
                if last_prefix.as_deref() != Some(p.as_str()) {
                    out.push(Listing::Prefix { prefix: p.clone() });
                    last_prefix = Some(p);
                }
                return Ok(true);
            }
            let e: ObjectEntry = decode_str(&key, &v)?;
            out.push(Listing::Object {
                key: e.key,
                size: e.size,
                modified_ms: e.modified_ms,
                content_type: e.content_type,
                version: e.version,
            });
            Ok(true)
        })?;
        Ok(out)
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

/// The lazy iterator of [`Catalog::objects_from`].
struct ObjectsFrom<'a> {
    catalog: &'a Catalog,
    bucket: String,
    /// Where the next page starts, and whether that key itself is included.
    next: Option<(String, bool)>,
    page: std::collections::VecDeque<Result<ObjectEntry, CatalogError>>,
}

impl Iterator for ObjectsFrom<'_> {
    type Item = Result<ObjectEntry, CatalogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.page.is_empty() {
            let (from, inclusive) = self.next.take()?;
            let bucket = self.bucket.clone();
            let read = self.catalog.db.read("objects_from", |tx| {
                let sql = if inclusive {
                    "SELECT key, entry FROM objects WHERE bucket = ?1 AND key >= ?2 \
                     ORDER BY key LIMIT ?3"
                } else {
                    "SELECT key, entry FROM objects WHERE bucket = ?1 AND key > ?2 \
                     ORDER BY key LIMIT ?3"
                };
                let mut st = tx.prepare_cached(sql)?;
                let mut rows = st.query(params![bucket, from, PAGE as i64])?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    out.push((r.get::<_, String>(0)?, r.get::<_, String>(1)?));
                }
                Ok(out)
            });
            match read {
                Err(e) => return Some(Err(e)),
                Ok(rows) => {
                    if rows.len() == PAGE
                        && let Some((last, _)) = rows.last()
                    {
                        self.next = Some((last.clone(), false));
                    }
                    for (key, v) in rows {
                        self.page
                            .push_back(decode_str(&format!("{}/{key}", self.bucket), &v));
                    }
                }
            }
        }
        self.page.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
