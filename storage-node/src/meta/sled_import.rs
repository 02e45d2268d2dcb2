//! Reads the sled database of the versions before SQLite (trees `pieces`, `expiry`,
//! `trash`, `counters`, `owners`, `inline`; see git history of `meta.rs`) into the
//! SQLite schema, within the caller's transaction. The only user of sled left.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{Transaction, params};

use super::{DbError, charged, to_sql};
use crate::error::Error;

const META_VERSION: u8 = 1;
/// The sled counters' accounting version that had charged bytes and owner totals; an
/// older database had its counters rebuilt at open, so they are recomputed here too.
const ACCOUNTING_VERSION: u64 = 2;

/// One record of sled's `pieces` tree, in the sled-era binary layout: version byte,
/// owner (32), size (u64 BE), block size (u32 BE), piece hash (32), created (u64 BE),
/// expires (u64 BE), block count (u32 BE), block hashes (32 each).
struct Record<'a> {
    owner: &'a [u8],
    size: u64,
    block_size: u32,
    piece_hash: &'a [u8],
    created_at_ms: u64,
    expires_at_ms: u64,
    block_hashes: &'a [u8],
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if bytes.len() < n {
        return None;
    }
    let (head, rest) = bytes.split_at(n);
    *bytes = rest;
    Some(head)
}

fn be64(bytes: &mut &[u8]) -> Option<u64> {
    take(bytes, 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
}

fn be32(bytes: &mut &[u8]) -> Option<u32> {
    take(bytes, 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
}

impl<'a> Record<'a> {
    fn decode(mut b: &'a [u8]) -> Option<Self> {
        if *take(&mut b, 1)?.first()? != META_VERSION {
            return None;
        }
        let owner = take(&mut b, 32)?;
        let size = be64(&mut b)?;
        let block_size = be32(&mut b)?;
        let piece_hash = take(&mut b, 32)?;
        let created_at_ms = be64(&mut b)?;
        let expires_at_ms = be64(&mut b)?;
        let n = be32(&mut b)? as usize;
        if b.len() != n.checked_mul(32)? {
            return None;
        }
        Some(Self {
            owner,
            size,
            block_size,
            piece_hash,
            created_at_ms,
            expires_at_ms,
            block_hashes: b,
        })
    }
}

fn read_u64(v: Option<sled::IVec>) -> Option<u64> {
    v.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map(u64::from_be_bytes)
}

/// What the import found (logged, and checked by the migration test).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Imported {
    pub pieces: u64,
    pub inline: u64,
    pub trash: u64,
    pub owners: u64,
}

/// Copies every record of the sled database in `dir` into `tx` (whose tables are those
/// of a fresh schema). The counters and owner totals are copied as sled had them when
/// they follow the current accounting, otherwise recomputed from the pieces (what the
/// sled code did at open).
pub(super) fn import(dir: &Path, tx: &Transaction<'_>) -> Result<Imported, Error> {
    let sled_err = |source| {
        Error::Db(DbError::Sled {
            path: dir.to_owned(),
            source,
        })
    };
    let bad = |detail: String| {
        Error::Db(DbError::SledData {
            path: dir.to_owned(),
            detail,
        })
    };
    let db = sled::Config::new().path(dir).open().map_err(sled_err)?;
    let tree = |name: &str| db.open_tree(name).map_err(sled_err);
    let (pieces, trash, counters, owners, inline) = (
        tree("pieces")?,
        tree("trash")?,
        tree("counters")?,
        tree("owners")?,
        tree("inline")?,
    );
    let mut done = Imported::default();
    let mut total = (0u64, 0u64);
    let mut per_owner: HashMap<Vec<u8>, (u64, u64)> = HashMap::new();
    {
        let mut put = tx.prepare(
            "INSERT INTO pieces (id, owner, size, block_size, piece_hash, block_hashes,
                 created_at_ms, expires_at_ms, tag)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, x'')",
        )?;
        for kv in pieces.iter() {
            let (k, v) = kv.map_err(sled_err)?;
            if k.len() != 32 {
                return Err(bad(format!("a piece key of {} bytes", k.len())));
            }
            let r = Record::decode(&v)
                .ok_or_else(|| bad(format!("the record of piece {} is corrupt", hex(&k))))?;
            put.execute(params![
                k.as_ref(),
                r.owner,
                to_sql(r.size),
                i64::from(r.block_size),
                r.piece_hash,
                r.block_hashes,
                to_sql(r.created_at_ms),
                to_sql(r.expires_at_ms),
            ])?;
            let c = charged(r.size);
            total.0 += c;
            total.1 += 1;
            let o = per_owner.entry(r.owner.to_vec()).or_default();
            o.0 += c;
            o.1 += 1;
            done.pieces += 1;
        }
    }
    {
        let mut put = tx.prepare("INSERT INTO inline_pieces (id, bytes) VALUES (?1, ?2)")?;
        for kv in inline.iter() {
            let (k, v) = kv.map_err(sled_err)?;
            put.execute(params![k.as_ref(), v.as_ref()])?;
            done.inline += 1;
        }
        let mut put = tx.prepare("INSERT INTO trash (id) VALUES (?1)")?;
        for kv in trash.iter() {
            let (k, _) = kv.map_err(sled_err)?;
            put.execute([k.as_ref()])?;
            done.trash += 1;
        }
    }
    let current =
        read_u64(counters.get(b"accounting").map_err(sled_err)?) == Some(ACCOUNTING_VERSION);
    if current {
        total = (
            read_u64(counters.get(b"used").map_err(sled_err)?).unwrap_or(0),
            read_u64(counters.get(b"pieces").map_err(sled_err)?).unwrap_or(0),
        );
        per_owner.clear();
        for kv in owners.iter() {
            let (k, v) = kv.map_err(sled_err)?;
            let v = <[u8; 16]>::try_from(v.as_ref())
                .map_err(|_| bad(format!("the total of owner {} is corrupt", hex(&k))))?;
            let (bytes, count) = v.split_at(8);
            let be = |b: &[u8]| b.try_into().map(u64::from_be_bytes).unwrap_or(0);
            per_owner.insert(k.to_vec(), (be(bytes), be(count)));
        }
    }
    {
        let mut put =
            tx.prepare("INSERT INTO owners (owner, bytes, pieces) VALUES (?1, ?2, ?3)")?;
        for (owner, (bytes, count)) in &per_owner {
            put.execute(params![owner, to_sql(*bytes), to_sql(*count)])?;
            done.owners += 1;
        }
    }
    tx.execute(
        "UPDATE counters SET used = ?1, pieces = ?2 WHERE id = 0",
        params![to_sql(total.0), to_sql(total.1)],
    )?;
    tracing::info!(
        pieces = done.pieces,
        inline = done.inline,
        trash = done.trash,
        owners = done.owners,
        "imported the sled metadata"
    );
    Ok(done)
}

fn hex(bytes: &[u8]) -> String {
    shoal_proto::ids::to_hex(bytes)
}
