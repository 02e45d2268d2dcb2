//! The local catalog (sled): buckets, objects and what this uplink knows about nodes.
//!
//! Entries are plain serde structs stored as JSON, so a later issue can serialise the
//! whole catalog, encrypt it with the catalog key and store it in the network unchanged.
//! Object keys are stored under `bucket \0 key`; sled orders keys bytewise, which for
//! UTF-8 is code-point order, so listings come out in true key order.
//!
//! TODO(catalog-in-network): store the catalog encrypted with the catalog key, erasure
//! coded, behind a mutable DHT record signed by the owner (a later issue).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};
use shoal_proto::NodeId;

use crate::codec::{CodecKind, Scheme};
use crate::crypto::{ObjectId, WrappedKey};
use crate::select::NodeStats;
use crate::store::PiecePlacement;

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

/// A bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketInfo {
    pub name: String,
    pub created_ms: u64,
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
}

impl ObjectEntry {
    pub fn segments(&self) -> &[SegmentInfo] {
        match &self.content {
            Content::Inline { .. } => &[],
            Content::Segments(s) => s,
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
    nodes: sled::Tree,
}

fn object_key(bucket: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(bucket.len() + 1 + key.len());
    k.extend_from_slice(bucket.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

fn encode<T: Serialize>(what: &str, v: &T) -> Result<Vec<u8>, CatalogError> {
    serde_json::to_vec(v).map_err(|e| CatalogError::Encode {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

fn decode<T: for<'de> Deserialize<'de>>(what: &str, b: &[u8]) -> Result<T, CatalogError> {
    serde_json::from_slice(b).map_err(|e| CatalogError::Corrupt {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

impl Catalog {
    pub fn open(path: &Path) -> Result<Self, CatalogError> {
        let db = sled::open(path)?;
        Ok(Self {
            buckets: db.open_tree("buckets")?,
            objects: db.open_tree("objects")?,
            nodes: db.open_tree("nodes")?,
            db,
        })
    }

    /// A catalog that lives only in memory (tests, benchmarks).
    pub fn temporary() -> Result<Self, CatalogError> {
        let db = sled::Config::new().temporary(true).open()?;
        Ok(Self {
            buckets: db.open_tree("buckets")?,
            objects: db.open_tree("objects")?,
            nodes: db.open_tree("nodes")?,
            db,
        })
    }

    pub fn flush(&self) -> Result<(), CatalogError> {
        self.db.flush()?;
        Ok(())
    }

    /// Creates a bucket; `false` if it already existed.
    pub fn create_bucket(&self, info: &BucketInfo) -> Result<bool, CatalogError> {
        let v = encode(&info.name, info)?;
        let prev =
            self.buckets
                .compare_and_swap(info.name.as_bytes(), None as Option<&[u8]>, Some(v))?;
        Ok(prev.is_ok())
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

    pub fn remove_bucket(&self, name: &str) -> Result<bool, CatalogError> {
        Ok(self.buckets.remove(name.as_bytes())?.is_some())
    }

    /// Stores an object entry, returning the one it replaced.
    pub fn put_object(
        &self,
        bucket: &str,
        entry: &ObjectEntry,
    ) -> Result<Option<ObjectEntry>, CatalogError> {
        let what = format!("{bucket}/{}", entry.key);
        let prev = self
            .objects
            .insert(object_key(bucket, &entry.key), encode(&what, entry)?)?;
        prev.map(|p| decode(&what, &p)).transpose()
    }

    pub fn object(&self, bucket: &str, key: &str) -> Result<Option<ObjectEntry>, CatalogError> {
        self.objects
            .get(object_key(bucket, key))?
            .map(|v| decode(&format!("{bucket}/{key}"), &v))
            .transpose()
    }

    pub fn remove_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<ObjectEntry>, CatalogError> {
        self.objects
            .remove(object_key(bucket, key))?
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
            s.successes += delta.successes;
            s.failures += delta.failures;
            s.corrupt += delta.corrupt;
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
        }
    }

    #[test]
    fn buckets_and_objects() {
        let c = Catalog::temporary().unwrap();
        let b = BucketInfo {
            name: "photos".into(),
            created_ms: 5,
        };
        assert!(c.create_bucket(&b).unwrap());
        assert!(!c.create_bucket(&b).unwrap());
        assert_eq!(c.bucket("photos").unwrap(), Some(b.clone()));
        assert!(c.bucket_is_empty("photos").unwrap());
        assert!(c.put_object("photos", &entry("x")).unwrap().is_none());
        assert!(c.put_object("photos", &entry("x")).unwrap().is_some());
        // A bucket whose name is a prefix of another does not see its objects.
        c.create_bucket(&BucketInfo {
            name: "photo".into(),
            created_ms: 1,
        })
        .unwrap();
        assert!(c.bucket_is_empty("photo").unwrap());
        assert_eq!(c.object("photos", "x").unwrap(), Some(entry("x")));
        assert_eq!(c.remove_object("photos", "x").unwrap(), Some(entry("x")));
        assert!(c.bucket_is_empty("photos").unwrap());
    }

    #[test]
    fn listing_is_in_key_order_with_prefixes() {
        let c = Catalog::temporary().unwrap();
        for k in ["b", "a/2", "a/1", "a/sub/3", "ab", "z", "é"] {
            c.put_object("bk", &entry(k)).unwrap();
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
        {
            let c = Catalog::open(dir.path()).unwrap();
            c.put_object("b", &entry("k")).unwrap();
            c.record_node(
                &NodeId([9; 32]),
                NodeStats {
                    successes: 2,
                    failures: 1,
                    corrupt: 0,
                },
            )
            .unwrap();
            c.record_node(
                &NodeId([9; 32]),
                NodeStats {
                    successes: 1,
                    failures: 0,
                    corrupt: 1,
                },
            )
            .unwrap();
            c.flush().unwrap();
        }
        let c = Catalog::open(dir.path()).unwrap();
        assert_eq!(c.object("b", "k").unwrap(), Some(entry("k")));
        assert_eq!(
            c.node_stats().unwrap()[&NodeId([9; 32])],
            NodeStats {
                successes: 3,
                failures: 1,
                corrupt: 1
            }
        );
        let json = serde_json::to_string(&entry("k")).unwrap();
        let back: ObjectEntry = serde_json::from_str(&json).unwrap();
        assert_eq!(back, entry("k"));
    }
}
