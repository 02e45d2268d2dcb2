//! Multipart uploads in progress: their records on this machine, and the rules of
//! CompleteMultipartUpload as plain code.
//!
//! Parts are stored on the nodes as they arrive ([`uplink::Uplink::stage_part`]); only
//! their placements wait here, in tables of the catalog's database (flushed before a
//! part is acknowledged; never published), until the upload completes or is aborted. An upload neither
//! completed nor aborted within the gateway's `multipart_max_age` (default 7 days) is
//! aborted by the gateway's sweeper and its pieces deleted; pieces a crash left behind
//! without a record are reclaimed by their lease.
//!
//! Records, all JSON: `multipart_uploads` id → [`UploadRecord`]; `multipart_parts`
//! (id, part number) → the [`StagedPart`]; `multipart_completed` id → [`Completed`] (kept
//! for a repeated Complete, as S3 answers it again, until the sweeper drops it with the
//! other expired records).

use std::collections::BTreeMap;

use std::sync::Arc;

use rusqlite::{OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};

use uplink::StagedPart;
use uplink::catalog::{CatalogError, Db};

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

/// What [`Uploads::put_part`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartRecorded {
    /// The part is recorded; it replaced this earlier upload of its number, if any
    /// (whose pieces the caller deletes).
    Recorded(Option<StagedPart>),
    /// The upload is no longer open: nothing was recorded, and the caller deletes the
    /// part's pieces.
    NoUpload,
}

/// The records of multipart uploads (tables `multipart_*` of the catalog's database).
#[derive(Debug, Clone)]
pub struct Uploads {
    db: Arc<Db>,
}

fn encode<T: Serialize>(v: &T) -> Result<String, CatalogError> {
    serde_json::to_string(v).map_err(|e| CatalogError::Encode {
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

/// Upload ids are 32 lowercase hex digits; anything else names no upload.
pub fn valid_upload_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn parts_in(tx: &Transaction<'_>, id: &str) -> Result<BTreeMap<u32, StagedPart>, CatalogError> {
    let mut st =
        tx.prepare_cached("SELECT part FROM multipart_parts WHERE id = ?1 ORDER BY number")?;
    let mut rows = st.query([id])?;
    let mut out = BTreeMap::new();
    while let Some(r) = rows.next()? {
        let p: StagedPart = decode(r.get::<_, String>(0)?.as_bytes())?;
        out.insert(p.info.number, p);
    }
    Ok(out)
}

fn remove_in(tx: &Transaction<'_>, id: &str) -> Result<(), CatalogError> {
    tx.execute("DELETE FROM multipart_parts WHERE id = ?1", [id])?;
    tx.execute("DELETE FROM multipart_uploads WHERE id = ?1", [id])?;
    Ok(())
}

impl Uploads {
    pub fn new(db: Arc<Db>) -> Self {
        Self { db }
    }

    pub fn create(&self, record: &UploadRecord) -> Result<String, CatalogError> {
        let id = shoal_proto::ids::to_hex(&rand::random::<[u8; 16]>());
        let v = encode(record)?;
        self.db.write("multipart create", |tx| {
            tx.execute(
                "INSERT INTO multipart_uploads (id, record) VALUES (?1, ?2)",
                params![id, v],
            )?;
            Ok(())
        })?;
        Ok(id)
    }

    pub fn get(&self, id: &str) -> Result<Option<UploadRecord>, CatalogError> {
        if !valid_upload_id(id) {
            return Ok(None);
        }
        self.db.read("multipart get", |tx| {
            tx.query_row(
                "SELECT record FROM multipart_uploads WHERE id = ?1",
                [id],
                |r| r.get::<_, String>(0),
            )
            .optional()?
            .map(|v| decode(v.as_bytes()))
            .transpose()
        })
    }

    /// Records a part of an open upload, in one transaction with the check that the
    /// upload is still open: a part whose upload was completed or aborted while it was
    /// being sent is not recorded (no record would ever name its pieces again).
    pub fn put_part(&self, id: &str, part: &StagedPart) -> Result<PartRecorded, CatalogError> {
        let v = encode(part)?;
        self.db.write("multipart put_part", |tx| {
            let open = tx
                .query_row(
                    "SELECT 1 FROM multipart_uploads WHERE id = ?1",
                    [id],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if !open {
                return Ok(PartRecorded::NoUpload);
            }
            let old: Option<String> = tx
                .query_row(
                    "SELECT part FROM multipart_parts WHERE id = ?1 AND number = ?2",
                    params![id, part.info.number],
                    |r| r.get(0),
                )
                .optional()?;
            tx.execute(
                "INSERT INTO multipart_parts (id, number, part) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (id, number) DO UPDATE SET part = excluded.part",
                params![id, part.info.number, v],
            )?;
            Ok(PartRecorded::Recorded(
                old.map(|o| decode(o.as_bytes())).transpose()?,
            ))
        })
    }

    /// The parts stored so far, by part number.
    pub fn parts(&self, id: &str) -> Result<BTreeMap<u32, StagedPart>, CatalogError> {
        self.db.read("multipart parts", |tx| parts_in(tx, id))
    }

    /// Drops an upload's records (not its pieces).
    pub fn remove(&self, id: &str) -> Result<(), CatalogError> {
        self.db.write("multipart remove", |tx| remove_in(tx, id))
    }

    pub fn mark_completed(&self, id: &str, done: &Completed) -> Result<(), CatalogError> {
        let v = encode(done)?;
        self.db.write("multipart mark_completed", |tx| {
            remove_in(tx, id)?;
            tx.execute(
                "INSERT INTO multipart_completed (id, completed) VALUES (?1, ?2) \
                 ON CONFLICT (id) DO UPDATE SET completed = excluded.completed",
                params![id, v],
            )?;
            Ok(())
        })
    }

    pub fn completed(&self, id: &str) -> Result<Option<Completed>, CatalogError> {
        if !valid_upload_id(id) {
            return Ok(None);
        }
        self.db.read("multipart completed", |tx| {
            tx.query_row(
                "SELECT completed FROM multipart_completed WHERE id = ?1",
                [id],
                |r| r.get::<_, String>(0),
            )
            .optional()?
            .map(|v| decode(v.as_bytes()))
            .transpose()
        })
    }

    /// Every upload in progress, by id (ids are random: S3 lists uploads by key, so the
    /// caller sorts).
    pub fn list(&self) -> Result<Vec<(String, UploadRecord)>, CatalogError> {
        self.db.read("multipart list", |tx| {
            let mut st = tx.prepare("SELECT id, record FROM multipart_uploads ORDER BY id")?;
            let mut rows = st.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push((r.get(0)?, decode(r.get::<_, String>(1)?.as_bytes())?));
            }
            Ok(out)
        })
    }

    /// Uploads started, and completion records written, before `cutoff_ms`.
    pub fn expired(&self, cutoff_ms: u64) -> Result<(Vec<String>, Vec<String>), CatalogError> {
        let uploads = self
            .list()?
            .into_iter()
            .filter(|(_, r)| r.created_ms < cutoff_ms)
            .map(|(id, _)| id)
            .collect();
        let completed = self.db.read("multipart expired", |tx| {
            let mut st = tx.prepare("SELECT id, completed FROM multipart_completed ORDER BY id")?;
            let mut rows = st.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let c: Completed = decode(r.get::<_, String>(1)?.as_bytes())?;
                if c.completed_ms < cutoff_ms {
                    out.push(r.get(0)?);
                }
            }
            Ok(out)
        })?;
        Ok((uploads, completed))
    }

    pub fn forget_completed(&self, id: &str) -> Result<(), CatalogError> {
        self.db.write("multipart forget_completed", |tx| {
            tx.execute("DELETE FROM multipart_completed WHERE id = ?1", [id])?;
            Ok(())
        })
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
///
/// A part number sent more than once is the upload that finished last (the one
/// stored: [`Uploads::put_part`] replaces a part when an upload of its number
/// finishes). A list may name a number more than once, in a row (part numbers never go
/// down): its last entry is the one checked, as Ceph RGW reads the list. A client that
/// re-sent a part and kept every ETag it was given, in the order it got them, thus
/// names the upload that finished last and completes; one naming a replaced upload
/// alone gets InvalidPart.
pub fn plan_complete(
    requested: &[(u32, Option<[u8; 16]>)],
    stored: &BTreeMap<u32, StagedPart>,
) -> Result<Vec<u32>, CompleteError> {
    if requested.is_empty() {
        return Err(CompleteError::NoParts);
    }
    if requested.windows(2).any(|w| w[0].0 > w[1].0) {
        return Err(CompleteError::InvalidPartOrder);
    }
    // The last entry of each number.
    let requested: Vec<(u32, Option<[u8; 16]>)> = requested
        .iter()
        .enumerate()
        .filter(|(i, (n, _))| requested.get(i + 1).is_none_or(|next| next.0 != *n))
        .map(|(_, p)| *p)
        .collect();
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
    use uplink::catalog::PartInfo;
    use uplink::crypto::{ObjectId, WrappedKey};

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
        // Issue 27: a number listed more than once (a part sent again) is its last
        // entry; the earlier ones name uploads since replaced.
        assert_eq!(plan_complete(&[(1, None), (1, None)], &stored), Ok(vec![1]));
        assert_eq!(
            plan_complete(
                &[(1, Some([9; 16])), (1, Some([1; 16])), (3, None)],
                &stored
            ),
            Ok(vec![1, 3])
        );
        assert_eq!(
            plan_complete(
                &[(1, Some([1; 16])), (1, Some([9; 16])), (3, None)],
                &stored
            ),
            Err(CompleteError::InvalidPart(1))
        );
        assert_eq!(
            plan_complete(&[(1, None), (2, None), (1, None)], &stored),
            Err(CompleteError::InvalidPartOrder)
        );
        // The size rule applies to the parts assembled: 3 is small but last.
        assert_eq!(
            plan_complete(&[(1, None), (3, None), (3, Some([3; 16]))], &stored),
            Ok(vec![1, 3])
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
        let u = Uploads::new(Arc::new(Db::temporary().unwrap()));
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
        assert_eq!(
            u.put_part(&id, &part(2, 1, 2)).unwrap(),
            PartRecorded::Recorded(None)
        );
        assert_eq!(
            u.put_part(&id, &part(2, 1, 7)).unwrap(),
            PartRecorded::Recorded(Some(part(2, 1, 2)))
        );
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
        // A part that arrives after its upload completed (or was aborted) is not
        // recorded.
        assert_eq!(
            u.put_part(&id, &part(3, 1, 3)).unwrap(),
            PartRecorded::NoUpload
        );
        assert!(u.parts(&id).unwrap().is_empty());
    }
}
