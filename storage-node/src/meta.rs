//! Piece metadata and the space counters, in sled.
//!
//! Trees:
//! - `pieces`: piece id → [`PieceMeta`] (owner, size, block hashes, created, expiry);
//! - `expiry`: `expires_at_ms (BE) || piece id` → empty, so the expiry worker reads
//!   expired pieces in order without scanning everything;
//! - `trash`: piece id → empty, for pieces whose metadata is gone but whose file may not
//!   be (a crash between the two); startup finishes those removals;
//! - `counters`: `used` and `pieces`, updated in the same transaction as `pieces`, so the
//!   used space is exact at every moment and is never recomputed from the files;
//! - `owners`: owner public key → that owner's used bytes and pieces, updated in the
//!   same transaction as `counters`, so the per-owner totals add up to the global ones
//!   at every moment;
//! - `inline`: piece id → the piece's bytes, for small pieces kept here instead of in a
//!   file of their own (see [`crate::store::INLINE_MAX`]), written and removed in the
//!   same transaction as their `pieces` record.
//!
//! "Used" bytes are **charged** bytes: a piece's size plus [`PIECE_OVERHEAD`], so that a
//! million empty pieces (each a file, an inode and a metadata record) cost what they
//! cost the disk instead of nothing.

use std::path::Path;

use shoal_proto::piece_hash::PieceInfo;
use shoal_proto::{PieceHash, PieceId, PublicKey};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use crate::error::Error;

const USED: &[u8] = b"used";
const PIECES: &[u8] = b"pieces";
/// Which accounting the counters follow; a database without it (or with an older one)
/// has its counters and owner totals rebuilt from the metadata once, at open.
const ACCOUNTING: &[u8] = b"accounting";
/// 2: charged bytes (size + [`PIECE_OVERHEAD`]) and per-owner totals.
const ACCOUNTING_VERSION: u64 = 2;
const META_VERSION: u8 = 1;

/// Bytes every stored piece is charged on top of its size, in the allocation and in its
/// owner's total: one file-system block (4 KiB on ext4 and xfs) for the file's inode,
/// directory entry and tail, and the piece's metadata record (about 100 bytes plus 32
/// per block hash). Without it a zero- or one-byte piece would take a file, an inode and
/// a database record while counting as (almost) nothing.
pub const PIECE_OVERHEAD: u64 = 4096;

/// What a piece of `size` bytes is charged.
pub fn charged(size: u64) -> u64 {
    size.saturating_add(PIECE_OVERHEAD)
}

/// Bytes (charged) and pieces one owner has stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    pub bytes: u64,
    pub pieces: u64,
}

impl Usage {
    fn decode(v: Option<sled::IVec>) -> Self {
        match v.as_deref().and_then(|b| <[u8; 16]>::try_from(b).ok()) {
            Some(b) => {
                let (bytes, pieces) = b.split_at(8);
                Self {
                    bytes: u64::from_be_bytes(bytes.try_into().unwrap_or_default()),
                    pieces: u64::from_be_bytes(pieces.try_into().unwrap_or_default()),
                }
            }
            None => Self::default(),
        }
    }

    fn encode(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.bytes.to_be_bytes());
        out[8..].copy_from_slice(&self.pieces.to_be_bytes());
        out
    }
}
/// sled's page cache. Its default (1 GiB) is more memory than a storage node should take
/// for metadata; lookups of cold pieces read from disk instead (see BENCHMARKS.md).
const CACHE_BYTES: u64 = 64 << 20;

/// What the node knows about one stored piece.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PieceMeta {
    pub owner: PublicKey,
    pub info: PieceInfo,
    pub piece_hash: PieceHash,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
}

impl PieceMeta {
    fn encode(&self) -> Vec<u8> {
        let n = self.info.block_hashes.len();
        let mut out = Vec::with_capacity(1 + 32 + 8 + 4 + 32 + 8 + 8 + 4 + 32 * n);
        out.push(META_VERSION);
        out.extend_from_slice(self.owner.as_bytes());
        out.extend_from_slice(&self.info.size.to_be_bytes());
        out.extend_from_slice(&self.info.block_size.to_be_bytes());
        out.extend_from_slice(self.piece_hash.as_bytes());
        out.extend_from_slice(&self.created_at_ms.to_be_bytes());
        out.extend_from_slice(&self.expires_at_ms.to_be_bytes());
        out.extend_from_slice(&(n as u32).to_be_bytes());
        for h in &self.info.block_hashes {
            out.extend_from_slice(h);
        }
        out
    }

    fn decode(piece: &PieceId, bytes: &[u8]) -> Result<Self, Error> {
        let corrupt = |detail| Error::Corrupt {
            piece: piece.to_hex(),
            detail,
        };
        let mut r = Reader(bytes);
        if r.take::<1>().ok_or_else(|| corrupt("empty"))?[0] != META_VERSION {
            return Err(corrupt("unknown version"));
        }
        let short = || corrupt("truncated");
        let owner = PublicKey::from_bytes("owner", &r.take::<32>().ok_or_else(short)?)
            .map_err(|_| corrupt("bad owner key"))?;
        let size = u64::from_be_bytes(r.take().ok_or_else(short)?);
        let block_size = u32::from_be_bytes(r.take().ok_or_else(short)?);
        let piece_hash = PieceHash(r.take().ok_or_else(short)?);
        let created_at_ms = u64::from_be_bytes(r.take().ok_or_else(short)?);
        let expires_at_ms = u64::from_be_bytes(r.take().ok_or_else(short)?);
        let n = u32::from_be_bytes(r.take().ok_or_else(short)?) as usize;
        if r.0.len() != n * 32 {
            return Err(corrupt("block hash list has the wrong length"));
        }
        let block_hashes =
            r.0.chunks_exact(32)
                .map(|c| {
                    let mut h = [0u8; 32];
                    h.copy_from_slice(c);
                    h
                })
                .collect();
        Ok(Self {
            owner,
            info: PieceInfo {
                size,
                block_size,
                block_hashes,
            },
            piece_hash,
            created_at_ms,
            expires_at_ms,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
}

fn expiry_key(expires_at_ms: u64, piece: &PieceId) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..8].copy_from_slice(&expires_at_ms.to_be_bytes());
    k[8..].copy_from_slice(piece.as_bytes());
    k
}

fn read_u64(v: Option<sled::IVec>) -> u64 {
    v.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

/// Used (charged) bytes and piece count as committed in sled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    pub used: u64,
    pub pieces: u64,
}

/// The metadata database.
#[derive(Debug, Clone)]
pub struct MetaDb {
    db: sled::Db,
    pieces: sled::Tree,
    expiry: sled::Tree,
    trash: sled::Tree,
    counters: sled::Tree,
    owners: sled::Tree,
    inline: sled::Tree,
}

enum Abort {
    Exists,
    Missing,
    Corrupt,
}

impl MetaDb {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_BYTES)
            // Durability comes from explicit flushes at commit; the background flush
            // only bounds how much unacknowledged metadata a crash may lose.
            .flush_every_ms(Some(1000))
            .open()?;
        let this = Self {
            pieces: db.open_tree("pieces")?,
            expiry: db.open_tree("expiry")?,
            trash: db.open_tree("trash")?,
            counters: db.open_tree("counters")?,
            owners: db.open_tree("owners")?,
            inline: db.open_tree("inline")?,
            db,
        };
        if read_u64(this.counters.get(ACCOUNTING)?) != ACCOUNTING_VERSION {
            this.rebuild_accounting()?;
        }
        Ok(this)
    }

    /// Recomputes the counters and owner totals from the piece metadata: once, for a
    /// database written before the current accounting (a walk of the metadata, never of
    /// the files).
    fn rebuild_accounting(&self) -> Result<(), Error> {
        let mut total = Counters::default();
        let mut owners: std::collections::HashMap<PublicKey, Usage> =
            std::collections::HashMap::new();
        for kv in self.all() {
            let (_, meta) = kv?;
            let c = charged(meta.info.size);
            total.used += c;
            total.pieces += 1;
            let u = owners.entry(meta.owner).or_default();
            u.bytes += c;
            u.pieces += 1;
        }
        self.owners.clear()?;
        for (owner, usage) in &owners {
            self.owners.insert(owner.as_bytes(), &usage.encode())?;
        }
        self.counters.insert(USED, &total.used.to_be_bytes())?;
        self.counters.insert(PIECES, &total.pieces.to_be_bytes())?;
        self.counters
            .insert(ACCOUNTING, &ACCOUNTING_VERSION.to_be_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    /// What `owner` has stored (charged bytes, pieces).
    pub fn owner_usage(&self, owner: &PublicKey) -> Result<Usage, Error> {
        Ok(Usage::decode(self.owners.get(owner.as_bytes())?))
    }

    /// Owners that store something, and how many.
    pub fn owner_count(&self) -> usize {
        self.owners.len()
    }

    /// The `n` owners storing the most bytes, most first (a walk of the owner totals:
    /// one small record per owner).
    pub fn top_owners(&self, n: usize) -> Result<Vec<(PublicKey, Usage)>, Error> {
        let mut heap = std::collections::BinaryHeap::new();
        for kv in self.owners.iter() {
            let (k, v) = kv?;
            let Ok(owner) = PublicKey::from_bytes("owner", &k) else {
                continue;
            };
            let usage = Usage::decode(Some(v));
            // A min-heap of the n largest so far.
            heap.push(std::cmp::Reverse((
                usage.bytes,
                usage.pieces,
                *owner.as_bytes(),
            )));
            if heap.len() > n {
                heap.pop();
            }
        }
        let mut out: Vec<(PublicKey, Usage)> = heap
            .into_iter()
            .filter_map(|std::cmp::Reverse((bytes, pieces, key))| {
                PublicKey::from_bytes("owner", &key)
                    .ok()
                    .map(|k| (k, Usage { bytes, pieces }))
            })
            .collect();
        out.sort_by(|a, b| {
            b.1.bytes
                .cmp(&a.1.bytes)
                .then(a.0.as_bytes().cmp(b.0.as_bytes()))
        });
        Ok(out)
    }

    pub fn counters(&self) -> Result<Counters, Error> {
        Ok(Counters {
            used: read_u64(self.counters.get(USED)?),
            pieces: read_u64(self.counters.get(PIECES)?),
        })
    }

    pub fn get(&self, piece: &PieceId) -> Result<Option<PieceMeta>, Error> {
        self.pieces
            .get(piece.as_bytes())?
            .map(|v| PieceMeta::decode(piece, &v))
            .transpose()
    }

    pub fn contains(&self, piece: &PieceId) -> Result<bool, Error> {
        Ok(self.pieces.contains_key(piece.as_bytes())?)
    }

    /// Records a new piece and adds it to the counters, in one transaction; with
    /// `inline`, the piece's bytes too (a small piece without a file). Refuses an
    /// existing piece id. Not durable until [`MetaDb::flush`].
    pub fn insert(
        &self,
        piece: &PieceId,
        meta: &PieceMeta,
        inline: Option<&[u8]>,
    ) -> Result<Counters, Error> {
        let value = meta.encode();
        let ekey = expiry_key(meta.expires_at_ms, piece);
        let size = charged(meta.info.size);
        let owner = meta.owner.as_bytes();
        let trees = (
            &self.pieces,
            &self.expiry,
            &self.counters,
            &self.owners,
            &self.inline,
        );
        let result = trees.transaction(|(pieces, expiry, counters, owners, inline_tree)| {
            if pieces.get(piece.as_bytes())?.is_some() {
                return Err(ConflictableTransactionError::Abort(Abort::Exists));
            }
            pieces.insert(piece.as_bytes().as_slice(), value.as_slice())?;
            if let Some(bytes) = inline {
                inline_tree.insert(piece.as_bytes().as_slice(), bytes)?;
            }
            expiry.insert(ekey.as_slice(), &[] as &[u8])?;
            let used = read_u64(counters.get(USED)?) + size;
            let count = read_u64(counters.get(PIECES)?) + 1;
            counters.insert(USED, &used.to_be_bytes())?;
            counters.insert(PIECES, &count.to_be_bytes())?;
            let mut usage = Usage::decode(owners.get(owner)?);
            usage.bytes += size;
            usage.pieces += 1;
            owners.insert(owner.as_slice(), &usage.encode())?;
            Ok(Counters {
                used,
                pieces: count,
            })
        });
        self.finish(piece, result)
    }

    /// Removes a piece's metadata, subtracts it from the counters and, for a piece with
    /// a file, puts it in the trash (whose file the caller then removes), in one
    /// transaction; an inline piece's bytes go with its metadata. The `bool` says
    /// whether the piece was inline (no file to remove).
    pub fn remove(&self, piece: &PieceId) -> Result<(PieceMeta, Counters, bool), Error> {
        let trees = (
            &self.pieces,
            &self.expiry,
            &self.counters,
            &self.trash,
            &self.owners,
            &self.inline,
        );
        let result = trees.transaction(|(pieces, expiry, counters, trash, owners, inline)| {
            let Some(raw) = pieces.remove(piece.as_bytes().as_slice())? else {
                return Err(ConflictableTransactionError::Abort(Abort::Missing));
            };
            let meta = PieceMeta::decode(piece, &raw)
                .map_err(|_| ConflictableTransactionError::Abort(Abort::Corrupt))?;
            let size = charged(meta.info.size);
            expiry.remove(expiry_key(meta.expires_at_ms, piece).as_slice())?;
            let was_inline = inline.remove(piece.as_bytes().as_slice())?.is_some();
            if !was_inline {
                trash.insert(piece.as_bytes().as_slice(), &[] as &[u8])?;
            }
            let used = read_u64(counters.get(USED)?).saturating_sub(size);
            let count = read_u64(counters.get(PIECES)?).saturating_sub(1);
            counters.insert(USED, &used.to_be_bytes())?;
            counters.insert(PIECES, &count.to_be_bytes())?;
            let owner = meta.owner.as_bytes();
            let mut usage = Usage::decode(owners.get(owner)?);
            usage.bytes = usage.bytes.saturating_sub(size);
            usage.pieces = usage.pieces.saturating_sub(1);
            if usage.pieces == 0 {
                owners.remove(owner.as_slice())?;
            } else {
                owners.insert(owner.as_slice(), &usage.encode())?;
            }
            Ok((
                meta,
                Counters {
                    used,
                    pieces: count,
                },
                was_inline,
            ))
        });
        self.finish(piece, result)
    }

    /// Moves a piece's lease expiry.
    pub fn set_expiry(&self, piece: &PieceId, expires_at_ms: u64) -> Result<PieceMeta, Error> {
        let result = (&self.pieces, &self.expiry).transaction(|(pieces, expiry)| {
            let Some(raw) = pieces.get(piece.as_bytes())? else {
                return Err(ConflictableTransactionError::Abort(Abort::Missing));
            };
            let mut meta = PieceMeta::decode(piece, &raw)
                .map_err(|_| ConflictableTransactionError::Abort(Abort::Corrupt))?;
            expiry.remove(expiry_key(meta.expires_at_ms, piece).as_slice())?;
            meta.expires_at_ms = expires_at_ms;
            expiry.insert(expiry_key(expires_at_ms, piece).as_slice(), &[] as &[u8])?;
            pieces.insert(piece.as_bytes().as_slice(), meta.encode())?;
            Ok(meta)
        });
        self.finish(piece, result)
    }

    fn finish<T>(
        &self,
        piece: &PieceId,
        r: Result<T, TransactionError<Abort>>,
    ) -> Result<T, Error> {
        match r {
            Ok(v) => Ok(v),
            Err(TransactionError::Abort(Abort::Exists)) => Err(Error::AlreadyExists(*piece)),
            Err(TransactionError::Abort(Abort::Missing)) => Err(Error::NotFound(*piece)),
            Err(TransactionError::Abort(Abort::Corrupt)) => Err(Error::Corrupt {
                piece: piece.to_hex(),
                detail: "undecodable metadata",
            }),
            Err(TransactionError::Storage(e)) => Err(Error::Db(e)),
        }
    }

    /// Up to `limit` pieces whose lease ended at or before `now_ms`, oldest first.
    pub fn expired(&self, now_ms: u64, limit: usize) -> Result<Vec<PieceId>, Error> {
        let end = (now_ms.saturating_add(1)).to_be_bytes();
        let mut out = Vec::new();
        for kv in self.expiry.range(..end.as_slice()).take(limit) {
            let (k, _) = kv?;
            if let Ok(id) = <[u8; 32]>::try_from(&k[8..]) {
                out.push(PieceId(id));
            }
        }
        Ok(out)
    }

    /// The bytes of an inline piece (`None`: the piece has a file, or is not stored).
    pub fn inline(&self, piece: &PieceId) -> Result<Option<sled::IVec>, Error> {
        Ok(self.inline.get(piece.as_bytes())?)
    }

    /// Pieces whose metadata is removed but whose file may remain.
    pub fn trash(&self) -> Result<Vec<PieceId>, Error> {
        let mut out = Vec::new();
        for kv in self.trash.iter() {
            let (k, _) = kv?;
            if let Ok(id) = <[u8; 32]>::try_from(k.as_ref()) {
                out.push(PieceId(id));
            }
        }
        Ok(out)
    }

    pub fn clear_trash(&self, piece: &PieceId) -> Result<(), Error> {
        self.trash.remove(piece.as_bytes())?;
        Ok(())
    }

    /// Makes everything committed so far durable.
    pub fn flush(&self) -> Result<(), Error> {
        self.db.flush()?;
        Ok(())
    }

    /// Every piece and its metadata. Walks the whole tree: for checks and tests, never
    /// on the request path or at startup.
    pub fn all(&self) -> impl Iterator<Item = Result<(PieceId, PieceMeta), Error>> + '_ {
        self.pieces.iter().map(|kv| {
            let (k, v) = kv?;
            let id = PieceId(
                <[u8; 32]>::try_from(k.as_ref()).map_err(|_| Error::Corrupt {
                    piece: "?".into(),
                    detail: "key is not a piece id",
                })?,
            );
            Ok((id, PieceMeta::decode(&id, &v)?))
        })
    }

    /// Bytes the database takes on disk.
    pub fn size_on_disk(&self) -> Result<u64, Error> {
        Ok(self.db.size_on_disk()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::Identity;

    pub(crate) fn meta(size: u64, expires_at_ms: u64) -> PieceMeta {
        let owner = *Identity::from_seed([3; 32]).public_key();
        let block_hashes = vec![[7u8; 32]; size.div_ceil(4096) as usize];
        let info = PieceInfo {
            size,
            block_size: 4096,
            block_hashes,
        };
        PieceMeta {
            owner,
            piece_hash: info.root(),
            info,
            created_at_ms: 1,
            expires_at_ms,
        }
    }

    #[test]
    fn encode_round_trips_and_rejects_truncation() {
        let m = meta(10_000, 99);
        let id = PieceId([1; 32]);
        let bytes = m.encode();
        assert_eq!(PieceMeta::decode(&id, &bytes).unwrap(), m);
        assert!(PieceMeta::decode(&id, &bytes[..bytes.len() - 1]).is_err());
        assert!(PieceMeta::decode(&id, &[]).is_err());
        let mut wrong_version = bytes.clone();
        wrong_version[0] = 9;
        assert!(PieceMeta::decode(&id, &wrong_version).is_err());
    }

    #[test]
    fn counters_follow_inserts_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let db = MetaDb::open(&dir.path().join("meta")).unwrap();
        let (a, b) = (PieceId([1; 32]), PieceId([2; 32]));
        db.insert(&a, &meta(100, 50), None).unwrap();
        db.insert(&b, &meta(200, 10), None).unwrap();
        assert!(matches!(
            db.insert(&a, &meta(1, 1), None),
            Err(Error::AlreadyExists(_))
        ));
        assert_eq!(
            db.counters().unwrap(),
            Counters {
                used: 300 + 2 * PIECE_OVERHEAD,
                pieces: 2
            }
        );
        assert_eq!(db.expired(10, 10).unwrap(), vec![b]);
        assert_eq!(db.expired(9, 10).unwrap(), vec![]);
        assert_eq!(db.expired(1000, 10).unwrap(), vec![b, a]);
        let (removed, c, inline) = db.remove(&b).unwrap();
        assert!(!inline);
        assert_eq!(removed.info.size, 200);
        assert_eq!(
            c,
            Counters {
                used: 100 + PIECE_OVERHEAD,
                pieces: 1
            }
        );
        assert_eq!(db.trash().unwrap(), vec![b]);
        assert!(matches!(db.remove(&b), Err(Error::NotFound(_))));
        db.set_expiry(&a, 5).unwrap();
        assert_eq!(db.expired(5, 10).unwrap(), vec![a]);
        assert_eq!(db.get(&a).unwrap().unwrap().expires_at_ms, 5);
    }

    fn meta_of(owner: u8, size: u64) -> PieceMeta {
        PieceMeta {
            owner: *Identity::from_seed([owner; 32]).public_key(),
            ..meta(size, 99)
        }
    }

    #[test]
    fn owner_totals_add_up_to_the_counters_and_follow_every_change() {
        let dir = tempfile::tempdir().unwrap();
        let db = MetaDb::open(&dir.path().join("meta")).unwrap();
        let (a, b) = (meta_of(1, 0).owner, meta_of(2, 0).owner);
        db.insert(&PieceId([1; 32]), &meta_of(1, 1000), None)
            .unwrap();
        db.insert(&PieceId([2; 32]), &meta_of(1, 0), None).unwrap();
        db.insert(&PieceId([3; 32]), &meta_of(2, 5000), None)
            .unwrap();
        // An existing id changes nothing, for anyone.
        assert!(db.insert(&PieceId([3; 32]), &meta_of(1, 7), None).is_err());
        let ua = db.owner_usage(&a).unwrap();
        let ub = db.owner_usage(&b).unwrap();
        assert_eq!(
            ua,
            Usage {
                bytes: 1000 + 2 * PIECE_OVERHEAD,
                pieces: 2
            }
        );
        assert_eq!(
            ub,
            Usage {
                bytes: 5000 + PIECE_OVERHEAD,
                pieces: 1
            }
        );
        let c = db.counters().unwrap();
        assert_eq!(
            (c.used, c.pieces),
            (ua.bytes + ub.bytes, ua.pieces + ub.pieces)
        );
        // a's two pieces (one empty) outweigh b's one larger piece, thanks to the overhead.
        assert!(ua.bytes > ub.bytes);
        assert_eq!(db.top_owners(1).unwrap(), vec![(a, ua)]);
        assert_eq!(db.top_owners(5).unwrap(), vec![(a, ua), (b, ub)]);
        assert_eq!(db.owner_count(), 2);
        // A zero-byte piece costs its overhead.
        db.remove(&PieceId([2; 32])).unwrap();
        assert_eq!(
            db.owner_usage(&a).unwrap(),
            Usage {
                bytes: 1000 + PIECE_OVERHEAD,
                pieces: 1
            }
        );
        db.remove(&PieceId([3; 32])).unwrap();
        assert_eq!(db.owner_usage(&b).unwrap(), Usage::default());
        assert_eq!(
            db.owner_count(),
            1,
            "an owner with nothing left is forgotten"
        );
    }

    #[test]
    fn a_database_from_before_owner_accounting_is_rebuilt_once_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta");
        {
            let db = MetaDb::open(&path).unwrap();
            db.insert(&PieceId([1; 32]), &meta_of(1, 1000), None)
                .unwrap();
            db.insert(&PieceId([2; 32]), &meta_of(2, 10), None).unwrap();
            // As an older version left it: sizes only, no owners, no version.
            db.owners.clear().unwrap();
            db.counters.insert(USED, &1010u64.to_be_bytes()).unwrap();
            db.counters.remove(ACCOUNTING).unwrap();
            db.flush().unwrap();
        }
        let db = MetaDb::open(&path).unwrap();
        assert_eq!(
            db.counters().unwrap(),
            Counters {
                used: 1010 + 2 * PIECE_OVERHEAD,
                pieces: 2
            }
        );
        assert_eq!(db.owner_usage(&meta_of(1, 0).owner).unwrap().pieces, 1);
        assert_eq!(db.owner_count(), 2);
    }
}
