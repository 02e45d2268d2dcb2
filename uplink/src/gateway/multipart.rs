//! Multipart uploads in progress: their records on this machine, and the rules of
//! CompleteMultipartUpload as plain code.
//!
//! Parts are stored on the nodes as they arrive ([`crate::Uplink::stage_part`]); only
//! their placements wait here, in a local tree of the catalog's database (flushed before
//! a part is acknowledged), until the upload completes or is aborted. An upload neither
//! completed nor aborted within the gateway's `multipart_max_age` (default 7 days) is
//! aborted by the gateway's sweeper and its pieces deleted; pieces a crash left behind
//! without a record are reclaimed by their lease.
//!
//! Records, all JSON: `u{id}` → [`UploadRecord`]; `p{id}{part, 4 bytes BE}` → the
//! [`StagedPart`]; `c{id}` → [`Completed`] (kept for a repeated Complete, as S3 answers
//! it again, until the sweeper drops it with the other expired records).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::StagedPart;
use crate::catalog::CatalogError;

/// Smallest part S3 accepts, except for the last part of an upload.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// Largest part (and largest single PUT).
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// Part numbers run from 1 to this.
pub const MAX_PART_NUMBER: u32 = 10_000;

/// An upload in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    pub bucket: String,
    pub key: String,
    pub created_ms: u64,
    pub content_type: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

/// What a completed upload made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completed {
    pub bucket: String,
    pub key: String,
    pub etag: String,
    pub completed_ms: u64,
}

/// The records of multipart uploads.
#[derive(Debug, Clone)]
pub struct Uploads {
    tree: sled::Tree,
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, CatalogError> {
    serde_json::to_vec(v).map_err(|e| CatalogError::Encode {
        what: "multipart upload record".into(),
        reason: e.to_string(),
    })
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Result<T, CatalogError> {
    serde_json::from_slice(b).map_err(|e| CatalogError::Corrupt {
        what: "multipart upload record".into(),
        reason: e.to_string(),
    })
}

fn part_key(id: &str, number: u32) -> Vec<u8> {
    [b"p", id.as_bytes(), &number.to_be_bytes()[..]].concat()
}

/// Upload ids are 32 lowercase hex digits; anything else names no upload.
pub fn valid_upload_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Uploads {
    pub fn new(tree: sled::Tree) -> Self {
        Self { tree }
    }

    pub fn create(&self, record: &UploadRecord) -> Result<String, CatalogError> {
        let id = shoal_proto::ids::to_hex(&rand::random::<[u8; 16]>());
        self.tree
            .insert([b"u", id.as_bytes()].concat(), encode(record)?)?;
        Ok(id)
    }

    pub fn get(&self, id: &str) -> Result<Option<UploadRecord>, CatalogError> {
        if !valid_upload_id(id) {
            return Ok(None);
        }
        self.tree
            .get([b"u", id.as_bytes()].concat())?
            .map(|v| decode(&v))
            .transpose()
    }

    /// Records a part; returns the part it replaced (whose pieces the caller deletes).
    pub fn put_part(
        &self,
        id: &str,
        part: &StagedPart,
    ) -> Result<Option<StagedPart>, CatalogError> {
        self.tree
            .insert(part_key(id, part.info.number), encode(part)?)?
            .map(|v| decode(&v))
            .transpose()
    }

    /// The parts stored so far, by part number.
    pub fn parts(&self, id: &str) -> Result<BTreeMap<u32, StagedPart>, CatalogError> {
        let mut out = BTreeMap::new();
        for r in self.tree.scan_prefix([b"p", id.as_bytes()].concat()) {
            let (_, v) = r?;
            let p: StagedPart = decode(&v)?;
            out.insert(p.info.number, p);
        }
        Ok(out)
    }

    /// Drops an upload's records (not its pieces).
    pub fn remove(&self, id: &str) -> Result<(), CatalogError> {
        let mut batch = sled::Batch::default();
        for r in self.tree.scan_prefix([b"p", id.as_bytes()].concat()) {
            batch.remove(r?.0);
        }
        batch.remove([b"u", id.as_bytes()].concat());
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    pub fn mark_completed(&self, id: &str, done: &Completed) -> Result<(), CatalogError> {
        let mut batch = sled::Batch::default();
        for r in self.tree.scan_prefix([b"p", id.as_bytes()].concat()) {
            batch.remove(r?.0);
        }
        batch.remove([b"u", id.as_bytes()].concat());
        batch.insert([b"c", id.as_bytes()].concat(), encode(done)?);
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    pub fn completed(&self, id: &str) -> Result<Option<Completed>, CatalogError> {
        if !valid_upload_id(id) {
            return Ok(None);
        }
        self.tree
            .get([b"c", id.as_bytes()].concat())?
            .map(|v| decode(&v))
            .transpose()
    }

    /// Every upload in progress, by id (ids are random: S3 lists uploads by key, so the
    /// caller sorts).
    pub fn list(&self) -> Result<Vec<(String, UploadRecord)>, CatalogError> {
        let mut out = Vec::new();
        for r in self.tree.scan_prefix(b"u") {
            let (k, v) = r?;
            let id = String::from_utf8_lossy(&k[1..]).into_owned();
            out.push((id, decode(&v)?));
        }
        Ok(out)
    }

    /// Uploads started, and completion records written, before `cutoff_ms`.
    pub fn expired(&self, cutoff_ms: u64) -> Result<(Vec<String>, Vec<String>), CatalogError> {
        let uploads = self
            .list()?
            .into_iter()
            .filter(|(_, r)| r.created_ms < cutoff_ms)
            .map(|(id, _)| id)
            .collect();
        let mut completed = Vec::new();
        for r in self.tree.scan_prefix(b"c") {
            let (k, v) = r?;
            let c: Completed = decode(&v)?;
            if c.completed_ms < cutoff_ms {
                completed.push(String::from_utf8_lossy(&k[1..]).into_owned());
            }
        }
        Ok((uploads, completed))
    }

    pub fn forget_completed(&self, id: &str) -> Result<(), CatalogError> {
        self.tree.remove([b"c", id.as_bytes()].concat())?;
        Ok(())
    }
}

/// Why a CompleteMultipartUpload is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompleteError {
    #[error("the list of parts is empty")]
    NoParts,
    #[error("the list of parts was not in ascending order")]
    InvalidPartOrder,
    #[error("part {0} was not uploaded, or its ETag does not match")]
    InvalidPart(u32),
    #[error("part {0} is smaller than the minimum allowed size of 5 MiB")]
    EntityTooSmall(u32),
}

/// Checks the client's list (part number and ETag, in the order sent) against the parts
/// stored, and returns the part numbers to assemble, in order.
pub fn plan_complete(
    requested: &[(u32, Option<[u8; 16]>)],
    stored: &BTreeMap<u32, StagedPart>,
) -> Result<Vec<u32>, CompleteError> {
    if requested.is_empty() {
        return Err(CompleteError::NoParts);
    }
    if requested.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(CompleteError::InvalidPartOrder);
    }
    for (i, (number, etag)) in requested.iter().enumerate() {
        let Some(part) = stored.get(number) else {
            return Err(CompleteError::InvalidPart(*number));
        };
        if etag.is_some_and(|e| e != part.info.md5) {
            return Err(CompleteError::InvalidPart(*number));
        }
        if i + 1 < requested.len() && part.info.size < MIN_PART_SIZE {
            return Err(CompleteError::EntityTooSmall(*number));
        }
    }
    Ok(requested.iter().map(|(n, _)| *n).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::PartInfo;
    use crate::crypto::{ObjectId, WrappedKey};

    fn part(number: u32, size: u64, md5: u8) -> StagedPart {
        StagedPart {
            info: PartInfo {
                number,
                size,
                segments: 0,
                md5: [md5; 16],
                object_id: ObjectId([0; 16]),
                wrapped_key: WrappedKey {
                    nonce: [0; 12],
                    sealed: vec![],
                },
            },
            segments: vec![],
            staged_ms: 0,
        }
    }

    #[test]
    fn completion_rules() {
        let big = MIN_PART_SIZE;
        let stored: BTreeMap<u32, StagedPart> = [part(1, big, 1), part(2, big, 2), part(3, 10, 3)]
            .into_iter()
            .map(|p| (p.info.number, p))
            .collect();
        assert_eq!(
            plan_complete(&[(1, Some([1; 16])), (3, None)], &stored),
            Ok(vec![1, 3])
        );
        assert_eq!(plan_complete(&[], &stored), Err(CompleteError::NoParts));
        assert_eq!(
            plan_complete(&[(2, None), (1, None)], &stored),
            Err(CompleteError::InvalidPartOrder)
        );
        assert_eq!(
            plan_complete(&[(1, None), (1, None)], &stored),
            Err(CompleteError::InvalidPartOrder)
        );
        assert_eq!(
            plan_complete(&[(1, Some([9; 16]))], &stored),
            Err(CompleteError::InvalidPart(1))
        );
        assert_eq!(
            plan_complete(&[(4, None)], &stored),
            Err(CompleteError::InvalidPart(4))
        );
        assert_eq!(
            plan_complete(&[(3, None), (4, None)], &stored),
            Err(CompleteError::EntityTooSmall(3))
        );
    }

    #[test]
    fn records_round_trip() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let u = Uploads::new(db.open_tree("t").unwrap());
        let rec = UploadRecord {
            bucket: "b".into(),
            key: "k".into(),
            created_ms: 5,
            content_type: None,
            metadata: BTreeMap::new(),
        };
        let id = u.create(&rec).unwrap();
        assert!(valid_upload_id(&id));
        assert_eq!(u.get(&id).unwrap(), Some(rec));
        assert_eq!(u.get("../etc").unwrap(), None);
        assert_eq!(u.put_part(&id, &part(2, 1, 2)).unwrap(), None);
        assert!(u.put_part(&id, &part(2, 1, 7)).unwrap().is_some());
        assert_eq!(u.parts(&id).unwrap()[&2].info.md5, [7; 16]);
        assert_eq!(u.expired(6).unwrap().0, vec![id.clone()]);
        let done = Completed {
            bucket: "b".into(),
            key: "k".into(),
            etag: "e-1".into(),
            completed_ms: 9,
        };
        u.mark_completed(&id, &done).unwrap();
        assert_eq!(u.get(&id).unwrap(), None);
        assert!(u.parts(&id).unwrap().is_empty());
        assert_eq!(u.completed(&id).unwrap(), Some(done));
    }
}
