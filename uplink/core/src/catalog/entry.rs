//! The catalog's entries (buckets, objects, their segments and parts, listings), its
//! error type, and their JSON encoding. Plain data: imports nothing else of the catalog
//! but [`super::model`].

use super::version::Version;
use crate::codec::{CodecKind, Scheme};
use crate::crypto::{ObjectId, WrappedKey};
use crate::store::PiecePlacement;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Longest object key, in bytes (as S3).
pub const MAX_KEY_LEN: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog database error: {0}")]
    Db(#[from] rusqlite::Error),
    #[error(
        "the catalog database {} stayed locked by another process for {} s; {}",
        file.display(), waited.as_secs(), describe_holders(holders)
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

/// What a listing shows of an object: the fields of its [`ObjectEntry`] that a listing
/// row needs, decoded from the same stored JSON without the rest. The wrapped key and
/// the content are skipped undecoded: an inline object's sealed bytes are up to 4 KiB
/// each, as hex, and decoding them was most of the time of a page of 1,000 keys.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ObjectSummary {
    pub key: String,
    /// Plaintext size in bytes.
    pub size: u64,
    pub modified_ms: u64,
    pub content_type: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub object_id: ObjectId,
    #[serde(default)]
    pub version: Version,
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

pub(super) fn encode<T: Serialize>(what: &str, v: &T) -> Result<String, CatalogError> {
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

pub(super) fn decode_str<T: for<'de> Deserialize<'de>>(
    what: &str,
    s: &str,
) -> Result<T, CatalogError> {
    decode(what, s.as_bytes())
}

/// The holders for a message: who to look at, or what to check when none is known.
pub fn describe_holders(holders: &[(u32, String)]) -> String {
    if holders.is_empty() {
        return "is an uplink process stuck? (the lock goes when that process exits)".into();
    }
    let list: Vec<String> = holders
        .iter()
        .map(|(pid, cmd)| format!("pid {pid} ({cmd})"))
        .collect();
    format!(
        "processes with it open: {}; the lock goes when the one holding it finishes or exits",
        list.join(", ")
    )
}
