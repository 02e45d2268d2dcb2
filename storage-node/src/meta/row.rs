//! How values are stored in SQLite and read back: `u64` as `i64` (with `u64::MAX` as
//! `i64::MAX`), and a `pieces` row ([`RawMeta`]) checked into a [`PieceMeta`].

use shoal_proto::piece_hash::PieceInfo;
use shoal_proto::{PieceHash, PieceId, PublicKey};

use super::PieceMeta;
use crate::error::Error;

pub(super) fn to_sql(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(super) fn from_sql(v: i64) -> u64 {
    if v == i64::MAX {
        u64::MAX
    } else {
        u64::try_from(v).unwrap_or(0)
    }
}

pub(super) fn id32(bytes: &[u8]) -> Option<[u8; 32]> {
    <[u8; 32]>::try_from(bytes).ok()
}

/// A `pieces` row as read, before its fields are checked.
pub(super) struct RawMeta {
    owner: Vec<u8>,
    size: i64,
    block_size: i64,
    piece_hash: Vec<u8>,
    block_hashes: Vec<u8>,
    created_at_ms: i64,
    expires_at_ms: i64,
    tag: Vec<u8>,
}

/// The columns [`RawMeta::read`] reads, in order.
pub(super) const META_COLUMNS: &str =
    "owner, size, block_size, piece_hash, block_hashes, created_at_ms, expires_at_ms, tag";

impl RawMeta {
    pub(super) fn read(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Self> {
        Ok(Self {
            owner: row.get(first)?,
            size: row.get(first + 1)?,
            block_size: row.get(first + 2)?,
            piece_hash: row.get(first + 3)?,
            block_hashes: row.get(first + 4)?,
            created_at_ms: row.get(first + 5)?,
            expires_at_ms: row.get(first + 6)?,
            tag: row.get(first + 7)?,
        })
    }

    pub(super) fn decode(self, piece: &PieceId) -> Result<PieceMeta, Error> {
        let corrupt = |detail| Error::Corrupt {
            piece: piece.to_hex(),
            detail,
        };
        let owner =
            PublicKey::from_bytes("owner", &self.owner).map_err(|_| corrupt("bad owner key"))?;
        let piece_hash =
            PieceHash(id32(&self.piece_hash).ok_or_else(|| corrupt("bad piece hash"))?);
        if !self.block_hashes.len().is_multiple_of(32) {
            return Err(corrupt("block hash list has the wrong length"));
        }
        let block_hashes = self
            .block_hashes
            .chunks_exact(32)
            .filter_map(id32)
            .collect();
        Ok(PieceMeta {
            owner,
            info: PieceInfo {
                size: u64::try_from(self.size).map_err(|_| corrupt("negative size"))?,
                block_size: u32::try_from(self.block_size)
                    .map_err(|_| corrupt("block size out of range"))?,
                block_hashes,
            },
            piece_hash,
            created_at_ms: from_sql(self.created_at_ms),
            expires_at_ms: from_sql(self.expires_at_ms),
            tag: self.tag,
        })
    }
}
