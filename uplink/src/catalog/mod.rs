//! The local catalog (sled): the working copy of buckets and objects, the changes not yet
//! published to the network, and what this uplink knows about nodes.
//!
//! Entries are plain serde structs stored as JSON. Object keys are stored under
//! `bucket \0 key`; sled orders keys bytewise, which for UTF-8 is code-point order, so
//! listings come out in true key order.
//!
//! The network holds the truth ([`log`], [`crate::sync`]); this copy is a replica of the
//! CRDT of [`model`]: every entry carries its [`Version`], deletes leave tombstones, and
//! every change, made here or pulled from another writer, goes through
//! [`Catalog::apply`], which keeps the greater version in one sled transaction. Changes
//! made here are also queued in the `pending` tree until a publish takes them.

pub mod log;
pub mod model;
pub mod tag;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};
use shoal_proto::NodeId;

use serde::de::DeserializeOwned;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use crate::codec::{CodecKind, Scheme};
use crate::crypto::{ObjectId, WrappedKey};
use crate::select::NodeStats;
use crate::store::PiecePlacement;
pub use model::{Change, EntryKey, Hlc, Value, Version, WriterId};

/// Longest object key, in bytes (as S3).
pub const MAX_KEY_LEN: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog database error: {0}")]
    Db(#[from] sled::Error),
    #[error("catalog entry {what} is corrupt: {reason}")]
    Corrupt { what: String, reason: String },
    #[error("catalog entry {what} cannot be encoded: {reason}")]
    Encode { what: String, reason: String },
}

impl From<TransactionError<CatalogError>> for CatalogError {
    fn from(e: TransactionError<CatalogError>) -> Self {
        match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => CatalogError::Db(e),
        }
    }
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

/// The sled-backed catalog.
#[derive(Debug, Clone)]
pub struct Catalog {
    db: sled::Db,
    buckets: sled::Tree,
    objects: sled::Tree,
    /// Versions of deleted keys ([`tag_key`] → JSON [`Version`]).
    tombstones: sled::Tree,
    /// Changes made here and not yet published ([`tag_key`] → JSON [`Change`]).
    pending: sled::Tree,
    /// The sync state of [`crate::sync`] (JSON values under fixed names).
    sync: sled::Tree,
    nodes: sled::Tree,
    /// Which live objects use which object id (`object id || object key` → empty): a
    /// copy made by the S3 gateway shares its source's pieces, so pieces are deleted only
    /// once no live entry names their object id. Kept in the same transaction as the
    /// entries; rebuilt from them when missing (catalogs made before it existed).
    by_object: sled::Tree,
    writer: WriterId,
}

fn object_key(bucket: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(bucket.len() + 1 + key.len());
    k.extend_from_slice(bucket.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

/// The key of `k` in the trees that hold both kinds: `b name` or `o bucket \0 key`.
fn tag_key(k: &EntryKey) -> Vec<u8> {
    match k {
        EntryKey::Bucket(b) => [b"b", b.as_bytes()].concat(),
        EntryKey::Object { bucket, key } => [&b"o"[..], &object_key(bucket, key)].concat(),
    }
}

fn encode<T: Serialize>(what: &str, v: &T) -> Result<Vec<u8>, CatalogError> {
    serde_json::to_vec(v).map_err(|e| CatalogError::Encode {
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

/// The version inside a live entry's stored bytes.
fn held_version(key: &EntryKey, what: &str, v: &[u8]) -> Result<Version, CatalogError> {
    Ok(match key {
        EntryKey::Bucket(_) => decode::<BucketInfo>(what, v)?.version,
        EntryKey::Object { .. } => decode::<ObjectEntry>(what, v)?.version,
    })
}

/// Name of the sync-state value holding the clock.
const HLC: &str = "hlc";
/// Name of the sync-state value saying the object-id index is built (format 1).
const OBJECT_INDEX: &str = "object-index";

impl Catalog {
    /// Opens the catalog at `path` for writer `writer` (the id kept in the config dir).
    pub fn open(path: &Path, writer: WriterId) -> Result<Self, CatalogError> {
        Self::from_db(sled::open(path)?, writer)
    }

    /// A catalog that lives only in memory (tests, benchmarks), with a random writer id.
    pub fn temporary() -> Result<Self, CatalogError> {
        Self::from_db(
            sled::Config::new().temporary(true).open()?,
            WriterId::random(),
        )
    }

    fn from_db(db: sled::Db, writer: WriterId) -> Result<Self, CatalogError> {
        Ok(Self {
            buckets: db.open_tree("buckets")?,
            objects: db.open_tree("objects")?,
            tombstones: db.open_tree("tombstones")?,
            pending: db.open_tree("pending")?,
            sync: db.open_tree("sync")?,
            nodes: db.open_tree("nodes")?,
            by_object: db.open_tree("by_object")?,
            writer,
            db,
        })
        .and_then(|c| c.build_object_index().map(|()| c))
    }

    /// Builds the object-id index once for a catalog made before it existed.
    fn build_object_index(&self) -> Result<(), CatalogError> {
        if self.sync_value::<u32>(OBJECT_INDEX)? == Some(1) {
            return Ok(());
        }
        self.by_object.clear()?;
        for r in self.objects.iter() {
            let (k, v) = r?;
            let e: ObjectEntry = decode(&String::from_utf8_lossy(&k), &v)?;
            self.by_object
                .insert([&e.object_id.0[..], &k[..]].concat(), &[] as &[u8])?;
        }
        self.set_sync_value(OBJECT_INDEX, &1u32)
    }

    /// Whether a live object uses `id` (its pieces must stay).
    pub fn object_id_in_use(&self, id: &ObjectId) -> Result<bool, CatalogError> {
        Ok(self
            .by_object
            .scan_prefix(id.0)
            .next()
            .transpose()?
            .is_some())
    }

    /// This replica's writer id.
    pub fn writer(&self) -> WriterId {
        self.writer
    }

    pub fn flush(&self) -> Result<(), CatalogError> {
        self.db.flush()?;
        Ok(())
    }

    /// [`Catalog::flush`] without blocking a runtime thread.
    pub async fn flush_async(&self) -> Result<(), CatalogError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// A tree of the catalog's database kept on this machine only, never published
    /// (the S3 gateway's multipart uploads in progress).
    pub fn local_tree(&self, name: &str) -> Result<sled::Tree, CatalogError> {
        Ok(self.db.open_tree(format!("local/{name}"))?)
    }

    /// A fresh version for a change made here: later than every version made or seen.
    pub fn next_version(&self) -> Result<Version, CatalogError> {
        let now = shoal_proto::time::unix_ms();
        let mut out = Hlc::default();
        self.sync.fetch_and_update(HLC, |old| {
            let last = old
                .and_then(|o| serde_json::from_slice::<Hlc>(o).ok())
                .unwrap_or_default();
            out = Hlc::tick(last, now);
            serde_json::to_vec(&out).ok()
        })?;
        Ok(Version {
            hlc: out,
            writer: self.writer,
        })
    }

    /// Moves the clock past `seen` (a version pulled from another writer).
    fn observe(&self, seen: Hlc) -> Result<(), CatalogError> {
        self.sync.fetch_and_update(HLC, |old| {
            let last = old
                .and_then(|o| serde_json::from_slice::<Hlc>(o).ok())
                .unwrap_or_default();
            serde_json::to_vec(&last.max(seen)).ok()
        })?;
        Ok(())
    }

    /// Records a change made here: applied by the merge rule and queued for publishing.
    pub fn apply_local(&self, change: &Change) -> Result<bool, CatalogError> {
        self.apply(change, true)
    }

    /// Merges a change pulled from the network (not queued again).
    pub fn apply_remote(&self, change: &Change) -> Result<bool, CatalogError> {
        if !change.is_consistent() {
            return Err(CatalogError::Corrupt {
                what: change.key.to_string(),
                reason: "the value does not belong under its key".into(),
            });
        }
        self.observe(change.version.hlc)?;
        self.apply(change, false)
    }

    /// The version held for `key`, live or deleted.
    pub fn version_of(&self, key: &EntryKey) -> Result<Option<Version>, CatalogError> {
        let what = key.to_string();
        let live = match key {
            EntryKey::Bucket(b) => self.buckets.get(b.as_bytes())?,
            EntryKey::Object { bucket, key } => self.objects.get(object_key(bucket, key))?,
        };
        if let Some(v) = live {
            return held_version(key, &what, &v).map(Some);
        }
        self.tombstones
            .get(tag_key(key))?
            .map(|v| decode(&what, &v))
            .transpose()
    }

    /// The merge rule against the local trees, in one transaction.
    fn apply(&self, change: &Change, queue: bool) -> Result<bool, CatalogError> {
        let what = change.key.to_string();
        let tkey = tag_key(&change.key);
        let (live_tree, live_key, live_value) = match (&change.key, &change.value) {
            (EntryKey::Bucket(b), Value::Bucket(info)) => {
                let mut info = info.clone();
                info.version = change.version;
                (
                    &self.buckets,
                    b.as_bytes().to_vec(),
                    Some(encode(&what, &info)?),
                )
            }
            (EntryKey::Object { bucket, key }, Value::Object(e)) => {
                let mut e = e.clone();
                e.version = change.version;
                (
                    &self.objects,
                    object_key(bucket, key),
                    Some(encode(&what, &e)?),
                )
            }
            (EntryKey::Bucket(b), Value::Tombstone) => (&self.buckets, b.as_bytes().to_vec(), None),
            (EntryKey::Object { bucket, key }, Value::Tombstone) => {
                (&self.objects, object_key(bucket, key), None)
            }
            _ => {
                return Err(CatalogError::Encode {
                    what,
                    reason: "the value does not belong under its key".into(),
                });
            }
        };
        let version = encode(&what, &change.version)?;
        let queued = if queue {
            Some(encode(&what, change)?)
        } else {
            None
        };
        let is_object = matches!(change.key, EntryKey::Object { .. });
        let new_id = match &change.value {
            Value::Object(e) => Some(e.object_id),
            _ => None,
        };
        let applied = (live_tree, &self.tombstones, &self.pending, &self.by_object).transaction(
            |(live, tombs, pending, by_object)| {
                let old = live.get(&live_key)?;
                let held = match &old {
                    Some(v) => Some(
                        held_version(&change.key, &what, v)
                            .map_err(ConflictableTransactionError::Abort)?,
                    ),
                    None => match tombs.get(&tkey)? {
                        Some(v) => Some(
                            decode::<Version>(&what, &v)
                                .map_err(ConflictableTransactionError::Abort)?,
                        ),
                        None => None,
                    },
                };
                if !model::wins(change.version, held) {
                    return Ok(false);
                }
                if is_object {
                    if let Some(v) = &old {
                        let e: ObjectEntry =
                            decode(&what, v).map_err(ConflictableTransactionError::Abort)?;
                        by_object.remove([&e.object_id.0[..], &live_key[..]].concat())?;
                    }
                    if let Some(id) = &new_id {
                        by_object.insert([&id.0[..], &live_key[..]].concat(), &[] as &[u8])?;
                    }
                }
                match &live_value {
                    Some(v) => {
                        live.insert(live_key.as_slice(), v.as_slice())?;
                        tombs.remove(tkey.as_slice())?;
                    }
                    None => {
                        live.remove(live_key.as_slice())?;
                        tombs.insert(tkey.as_slice(), version.as_slice())?;
                    }
                }
                if let Some(q) = &queued {
                    pending.insert(tkey.as_slice(), q.as_slice())?;
                }
                Ok(true)
            },
        )?;
        Ok(applied)
    }

    /// Changes made here and not yet published, with the raw bytes each was queued as
    /// (for [`Catalog::clear_published`]).
    pub fn pending(&self) -> Result<Vec<(Change, sled::IVec)>, CatalogError> {
        self.pending
            .iter()
            .map(|r| {
                let (k, v) = r?;
                Ok((decode(&String::from_utf8_lossy(&k), &v)?, v))
            })
            .collect()
    }

    /// Number of changes not yet published.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// Drops published changes from the queue, unless the key changed again meanwhile.
    pub fn clear_published(&self, published: &[(Change, sled::IVec)]) -> Result<(), CatalogError> {
        for (c, raw) in published {
            let _ =
                self.pending
                    .compare_and_swap(tag_key(&c.key), Some(raw), None as Option<&[u8]>)?;
        }
        Ok(())
    }

    /// Every entry and tombstone as a change: the content of a snapshot.
    pub fn all_changes(&self) -> Result<Vec<Change>, CatalogError> {
        let mut out = Vec::new();
        for r in self.buckets.iter() {
            let (k, v) = r?;
            let info: BucketInfo = decode(&String::from_utf8_lossy(&k), &v)?;
            out.push(Change {
                key: EntryKey::Bucket(info.name.clone()),
                version: info.version,
                value: Value::Bucket(info),
            });
        }
        for r in self.objects.iter() {
            let (k, v) = r?;
            let what = String::from_utf8_lossy(&k).into_owned();
            let Some(split) = k.iter().position(|b| *b == 0) else {
                return Err(CatalogError::Corrupt {
                    what,
                    reason: "object key without a bucket".into(),
                });
            };
            let entry: ObjectEntry = decode(&what, &v)?;
            out.push(Change {
                key: EntryKey::Object {
                    bucket: String::from_utf8_lossy(&k[..split]).into_owned(),
                    key: entry.key.clone(),
                },
                version: entry.version,
                value: Value::Object(entry),
            });
        }
        for r in self.tombstones.iter() {
            let (k, v) = r?;
            let what = String::from_utf8_lossy(&k).into_owned();
            let key = match k.split_first() {
                Some((b'b', name)) => EntryKey::Bucket(String::from_utf8_lossy(name).into_owned()),
                Some((b'o', rest)) => {
                    let split = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
                    EntryKey::Object {
                        bucket: String::from_utf8_lossy(&rest[..split]).into_owned(),
                        key: String::from_utf8_lossy(rest.get(split + 1..).unwrap_or_default())
                            .into_owned(),
                    }
                }
                _ => {
                    return Err(CatalogError::Corrupt {
                        what,
                        reason: "unknown tombstone kind".into(),
                    });
                }
            };
            out.push(Change {
                key,
                version: decode(&what, &v)?,
                value: Value::Tombstone,
            });
        }
        Ok(out)
    }

    /// A value of the sync state.
    pub fn sync_value<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, CatalogError> {
        self.sync.get(name)?.map(|v| decode(name, &v)).transpose()
    }

    /// Stores a value of the sync state.
    pub fn set_sync_value<T: Serialize>(&self, name: &str, v: &T) -> Result<(), CatalogError> {
        self.sync.insert(name, encode(name, v)?)?;
        Ok(())
    }

    /// Whether the catalog holds nothing at all (no bucket, object or tombstone).
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty() && self.objects.is_empty() && self.tombstones.is_empty()
    }

    pub fn bucket(&self, name: &str) -> Result<Option<BucketInfo>, CatalogError> {
        self.buckets
            .get(name.as_bytes())?
            .map(|v| decode(name, &v))
            .transpose()
    }

    pub fn buckets(&self) -> Result<Vec<BucketInfo>, CatalogError> {
        self.buckets
            .iter()
            .map(|r| {
                let (k, v) = r?;
                decode(&String::from_utf8_lossy(&k), &v)
            })
            .collect()
    }

    pub fn object(&self, bucket: &str, key: &str) -> Result<Option<ObjectEntry>, CatalogError> {
        self.objects
            .get(object_key(bucket, key))?
            .map(|v| decode(&format!("{bucket}/{key}"), &v))
            .transpose()
    }

    /// Full entries under `prefix`, in key order.
    pub fn objects(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectEntry>, CatalogError> {
        self.objects
            .scan_prefix(object_key(bucket, prefix))
            .map(|r| {
                let (k, v) = r?;
                decode(&String::from_utf8_lossy(&k), &v)
            })
            .collect()
    }

    /// The entries of `bucket` from key `from` (inclusive) on, in key order, read lazily
    /// (listing pages read only what they return).
    pub fn objects_from<'a>(
        &'a self,
        bucket: &str,
        from: &str,
    ) -> impl Iterator<Item = Result<ObjectEntry, CatalogError>> + 'a {
        let start = object_key(bucket, from);
        // Bucket names hold no control characters: `bucket \x01` follows every key of
        // `bucket`.
        let end = [bucket.as_bytes(), &[1u8][..]].concat();
        self.objects.range(start..end).map(|r| {
            let (k, v) = r?;
            decode(&String::from_utf8_lossy(&k), &v)
        })
    }

    /// Whether the bucket holds any object.
    pub fn bucket_is_empty(&self, bucket: &str) -> Result<bool, CatalogError> {
        Ok(self
            .objects
            .scan_prefix(object_key(bucket, ""))
            .next()
            .transpose()?
            .is_none())
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
        for r in self.objects.scan_prefix(object_key(bucket, prefix)) {
            let (k, v) = r?;
            let key = String::from_utf8_lossy(&k[bucket.len() + 1..]).into_owned();
            if !recursive && let Some(pos) = key[prefix.len()..].find('/') {
                let p = key[..prefix.len() + pos + 1].to_string();
                if last_prefix.as_deref() != Some(p.as_str()) {
                    out.push(Listing::Prefix { prefix: p.clone() });
                    last_prefix = Some(p);
                }
                continue;
            }
            let e: ObjectEntry = decode(&key, &v)?;
            out.push(Listing::Object {
                key: e.key,
                size: e.size,
                modified_ms: e.modified_ms,
                content_type: e.content_type,
                version: e.version,
            });
        }
        Ok(out)
    }

    /// Everything this uplink remembers about nodes.
    pub fn node_stats(&self) -> Result<HashMap<NodeId, NodeStats>, CatalogError> {
        let mut out = HashMap::new();
        for r in self.nodes.iter() {
            let (k, v) = r?;
            let Ok(id) = <[u8; 32]>::try_from(&k[..]) else {
                continue;
            };
            out.insert(NodeId(id), decode("node stats", &v)?);
        }
        Ok(out)
    }

    /// Adds `delta` to a node's history.
    pub fn record_node(&self, node: &NodeId, delta: NodeStats) -> Result<(), CatalogError> {
        self.nodes.fetch_and_update(node.as_bytes(), |old| {
            let mut s: NodeStats = old
                .and_then(|o| serde_json::from_slice(o).ok())
                .unwrap_or_default();
            s.merge(&delta);
            serde_json::to_vec(&s).ok()
        })?;
        Ok(())
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
