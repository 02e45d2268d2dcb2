//! The catalog's rules inside one SQLite transaction: the merge rule applying a
//! change (the greater version wins; tombstones; the pending queue), the clock, the
//! sync-state values ([`SyncTx`]) and the node statistics rows.

use super::entry::{BucketInfo, CatalogError, ObjectEntry, decode_str, encode};
use super::model;
use super::model::{Change, EntryKey, Hlc, Value, Version, WriterId};
use crate::select::NodeStats;
use rusqlite::{OptionalExtension, Transaction, params};
use serde::Serialize;
use serde::de::DeserializeOwned;
use shoal_proto::NodeId;

/// A node's stats as stored, inside `tx`.
pub(super) fn stats_in(
    tx: &Transaction<'_>,
    node: &NodeId,
) -> Result<Option<NodeStats>, CatalogError> {
    let old: Option<String> = tx
        .prepare_cached("SELECT stats FROM nodes WHERE id = ?1")?
        .query_row([&node.as_bytes()[..]], |r| r.get(0))
        .optional()?;
    // A row this version cannot read is history lost, not an error: start again.
    Ok(old.map(|o| serde_json::from_str(&o).unwrap_or_default()))
}

/// `(kind, bucket, key)` of an entry in the tables that hold both kinds (tombstones,
/// pending): `('b', name, '')` or `('o', bucket, key)`.
pub(super) fn cols(k: &EntryKey) -> (&'static str, &str, &str) {
    match k {
        EntryKey::Bucket(b) => ("b", b.as_str(), ""),
        EntryKey::Object { bucket, key } => ("o", bucket.as_str(), key.as_str()),
    }
}

/// Runs `sql` through the connection's statement cache (parsed once per connection,
/// not once per call: the per-object path runs a dozen statements).
pub(super) fn exec(
    tx: &Transaction<'_>,
    sql: &str,
    p: impl rusqlite::Params,
) -> rusqlite::Result<usize> {
    tx.prepare_cached(sql)?.execute(p)
}

/// One row of `sql`, through the statement cache (see [`exec`]).
pub(super) fn query_row<T>(
    tx: &Transaction<'_>,
    sql: &str,
    p: impl rusqlite::Params,
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    tx.prepare_cached(sql)?.query_row(p, f)
}

/// Name of the sync-state value holding the clock.
pub(super) const HLC: &str = "hlc";
/// Name of the sync-state value holding this replica's writer id.
pub(super) const WRITER: &str = "writer";

/// This replica's writer id inside `tx` (`remembered` if the database holds none).
pub(super) fn writer_in(
    tx: &Transaction<'_>,
    remembered: WriterId,
) -> Result<WriterId, CatalogError> {
    Ok(sync_get(tx, WRITER)?.unwrap_or(remembered))
}

/// The sync state inside a transaction of [`Catalog::apply_remote_batch`] or
/// [`Catalog::update_sync`].
#[derive(Debug)]
pub struct SyncTx<'a, 'c> {
    pub(super) tx: &'a Transaction<'c>,
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

pub(super) fn sync_get<T: DeserializeOwned>(
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

pub(super) fn sync_set<T: Serialize>(
    tx: &Transaction<'_>,
    name: &str,
    v: &T,
) -> Result<(), CatalogError> {
    exec(
        tx,
        "INSERT INTO sync (name, value) VALUES (?1, ?2) \
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        params![name, encode(name, v)?],
    )?;
    Ok(())
}

/// Moves the clock past `seen`.
pub(super) fn observe_in(tx: &Transaction<'_>, seen: Hlc) -> Result<(), CatalogError> {
    let last: Hlc = sync_get(tx, HLC)?.unwrap_or_default();
    if seen > last {
        sync_set(tx, HLC, &seen)?;
    }
    Ok(())
}

/// The version held for `key`, live or deleted.
pub(super) fn version_in(
    tx: &Transaction<'_>,
    key: &EntryKey,
) -> Result<Option<Version>, CatalogError> {
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
pub(super) fn object_in(
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
pub(super) fn apply_in(
    tx: &Transaction<'_>,
    change: &Change,
    queue: bool,
) -> Result<bool, CatalogError> {
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
        queue_in(tx, change)?;
    }
    Ok(true)
}

/// Queues `change` for the next publish (replacing a queued change of its key).
pub(super) fn queue_in(tx: &Transaction<'_>, change: &Change) -> Result<(), CatalogError> {
    let (kind, b, k) = cols(&change.key);
    exec(
        tx,
        "INSERT INTO pending (kind, bucket, key, change) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (kind, bucket, key) DO UPDATE SET change = excluded.change",
        params![kind, b, k, encode(&change.key.to_string(), change)?],
    )?;
    Ok(())
}

pub(super) fn check_remote(change: &Change) -> Result<(), CatalogError> {
    if change.is_consistent() {
        Ok(())
    } else {
        Err(CatalogError::Corrupt {
            what: change.key.to_string(),
            reason: "the value does not belong under its key".into(),
        })
    }
}
