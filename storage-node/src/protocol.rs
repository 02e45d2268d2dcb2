//! The piece protocol's checks, as plain functions: is an order for this node, is it
//! fresh, does a trailer match its order, which bytes answer a range request. No I/O.

use shoal_proto::limits::{MAX_CHUNK, ORDER_MAX_AHEAD_MS, ORDER_WINDOW_MS};
use shoal_proto::messages::{
    AuditOrder, DeleteOrder, DownloadOrder, ListPiecesOrder, Order, RenewOrder, UploadOrder,
    UploadTrailer,
};
use shoal_proto::piece_hash::PieceInfo;
use shoal_proto::time::check_within;
use shoal_proto::{NodeId, PublicKey};

use crate::error::Error;
use crate::meta::PieceMeta;

/// Minimum average upload rate, in bytes per second, once [`UPLOAD_GRACE`] has passed:
/// an upload slower than this holds its reservation, a stream slot and a temp file for
/// nothing, so it is cut. 4 KiB/s is far below any working link (a 64 MiB segment spread
/// over 80 pieces on a 1 Mbit/s uplink still gives each piece ~1.5 KiB/s only while all
/// 80 run at once, which the grace covers for pieces up to ~45 KiB; bigger uplinks run
/// fewer pieces at a time per node).
pub const MIN_UPLOAD_RATE: u64 = 4 * 1024;
/// How long an upload may run before its average rate is checked.
pub const UPLOAD_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// Checks an upload's average rate: `received` bytes after `elapsed`. Nothing is checked
/// within `grace`; after it the average must be at least `min_rate` bytes per second.
pub fn check_upload_rate(
    received: u64,
    elapsed: std::time::Duration,
    grace: std::time::Duration,
    min_rate: u64,
) -> Result<(), Error> {
    if elapsed <= grace || min_rate == 0 {
        return Ok(());
    }
    let needed = (elapsed.as_secs_f64() * min_rate as f64) as u64;
    if received < needed {
        return Err(Error::TooSlow {
            received,
            elapsed_ms: elapsed.as_millis() as u64,
            min_rate,
        });
    }
    Ok(())
}

/// Checks that an order names this node and was made within the freshness window: at
/// most [`ORDER_WINDOW_MS`] ago and at most [`ORDER_MAX_AHEAD_MS`] ahead.
pub fn check_order(
    this: &NodeId,
    node_id: &NodeId,
    timestamp_ms: u64,
    now_ms: u64,
) -> Result<(), Error> {
    if node_id != this {
        return Err(Error::WrongNode {
            this: *this,
            got: *node_id,
        });
    }
    check_within(timestamp_ms, now_ms, ORDER_WINDOW_MS, ORDER_MAX_AHEAD_MS).map_err(Error::Stale)
}

/// Checks any order's envelope: addressed here and fresh ([`check_order`]), and, for an
/// order that sets a lease (upload, renew), a lease that has not already ended and ends
/// within `max_lease_ms` ([`check_lease`]).
pub fn check_envelope<O: Order>(
    this: &NodeId,
    order: &O,
    now_ms: u64,
    max_lease_ms: u64,
) -> Result<(), Error> {
    let h = order.header();
    check_order(this, &h.node_id, h.timestamp_ms, now_ms)?;
    match order.lease_ms() {
        Some(expires_at_ms) => check_lease(expires_at_ms, now_ms, max_lease_ms),
        None => Ok(()),
    }
}

/// A lease must end in the future, and no later than `max_lease_ms` from now (the
/// node's `max_lease`): a node promises space only as far ahead as its operator allows.
pub fn check_lease(expires_at_ms: u64, now_ms: u64, max_lease_ms: u64) -> Result<(), Error> {
    if expires_at_ms <= now_ms {
        return Err(Error::Expired { expires_at_ms });
    }
    if expires_at_ms > now_ms.saturating_add(max_lease_ms) {
        return Err(Error::LeaseTooLong {
            expires_at_ms,
            max_lease_ms,
        });
    }
    Ok(())
}

/// A trailer must close the upload its order opened, signed by the same owner.
pub fn check_trailer(order: &UploadOrder, trailer: &UploadTrailer) -> Result<(), Error> {
    if trailer.piece_id != order.piece_id {
        return Err(Error::TrailerMismatch("piece id differs from the order's"));
    }
    if trailer.owner_key != order.header.owner_key {
        return Err(Error::TrailerMismatch("owner key differs from the order's"));
    }
    Ok(())
}

/// The pieces an order acts on that must exist and be its signer's before the node
/// records its nonce ([`check_claim`]), so that a stranger's orders for pieces it does
/// not own use no replay entry. An upload names a piece that does not exist yet, a
/// listing none: their orders claim nothing.
pub trait Claims {
    /// Whether an order whose claim does not hold is refused (true), or served without
    /// recording its nonce because serving it changes nothing: a renew answers per
    /// piece, and a piece not found or not the signer's is left as it is.
    const REFUSE_UNCLAIMED: bool = true;

    fn claimed(&self) -> &[shoal_proto::PieceId] {
        &[]
    }
}

impl Claims for UploadOrder {}
impl Claims for ListPiecesOrder {}
impl Claims for DownloadOrder {
    fn claimed(&self) -> &[shoal_proto::PieceId] {
        std::slice::from_ref(&self.piece_id)
    }
}
impl Claims for AuditOrder {
    fn claimed(&self) -> &[shoal_proto::PieceId] {
        std::slice::from_ref(&self.piece_id)
    }
}
impl Claims for DeleteOrder {
    fn claimed(&self) -> &[shoal_proto::PieceId] {
        std::slice::from_ref(&self.piece_id)
    }
}
impl Claims for RenewOrder {
    const REFUSE_UNCLAIMED: bool = false;

    fn claimed(&self) -> &[shoal_proto::PieceId] {
        &self.piece_ids
    }
}

/// An order's claim holds when it claims nothing, or when at least one piece it names
/// is stored here and belongs to `owner` (`owner_of` looks a piece's owner up). A renew
/// of several pieces may name some this node lost; it still renews the rest. Otherwise
/// the refusal names the first piece: not found, or not the signer's.
pub fn check_claim(
    claimed: &[shoal_proto::PieceId],
    owner: &PublicKey,
    mut owner_of: impl FnMut(&shoal_proto::PieceId) -> Result<Option<PublicKey>, Error>,
) -> Result<(), Error> {
    let mut refused = None;
    for piece in claimed {
        match owner_of(piece)? {
            Some(o) if o == *owner => return Ok(()),
            Some(_) => refused.get_or_insert(Error::NotOwner(*piece)),
            None => refused.get_or_insert(Error::NotFound(*piece)),
        };
    }
    refused.map_or(Ok(()), Err)
}

/// Only the key that uploaded a piece may read, audit, renew or delete it.
pub fn check_owner(
    meta: &PieceMeta,
    key: &PublicKey,
    piece: &shoal_proto::PieceId,
) -> Result<(), Error> {
    if meta.owner != *key {
        return Err(Error::NotOwner(*piece));
    }
    Ok(())
}

/// What a download sends: whole blocks covering the requested range, cut into messages
/// of at most [`MAX_CHUNK`] bytes (whole blocks per message when a block fits in one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadPlan {
    /// `(offset in the piece, length)` of each message's data.
    pub chunks: Vec<(u64, usize)>,
}

/// Plans the answer to a request for `[offset, offset + length)` (`length` 0 = to the end).
pub fn plan_download(info: &PieceInfo, offset: u64, length: u64) -> Result<DownloadPlan, Error> {
    let size = info.size;
    let end = if length == 0 {
        size
    } else {
        offset.saturating_add(length)
    };
    if offset > size || end > size || (offset == size && size > 0) {
        return Err(Error::OutOfRange {
            what: "download range",
            detail: format!("{offset}..{end} is not within the piece of {size} bytes"),
        });
    }
    if size == 0 {
        return Ok(DownloadPlan {
            chunks: vec![(0, 0)],
        });
    }
    let bs = u64::from(info.block_size.max(1));
    let start = offset / bs * bs;
    let stop = end.div_ceil(bs).saturating_mul(bs).min(size);
    let step = if bs <= MAX_CHUNK as u64 {
        (MAX_CHUNK as u64 / bs) * bs
    } else {
        MAX_CHUNK as u64
    };
    let mut chunks = Vec::new();
    let mut at = start;
    while at < stop {
        let len = step.min(stop - at);
        chunks.push((at, len as usize));
        at += len;
    }
    Ok(DownloadPlan { chunks })
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_trickling_upload_is_cut_after_the_grace_and_a_working_one_is_not() {
        use std::time::Duration;
        let grace = Duration::from_secs(30);
        let s = Duration::from_secs;
        // Anything goes within the grace, even nothing at all.
        assert!(check_upload_rate(0, s(30), grace, 4096).is_ok());
        // One byte every 29 s (the attack): cut at the first message after the grace.
        assert!(matches!(
            check_upload_rate(2, s(58), grace, 4096),
            Err(Error::TooSlow { received: 2, .. })
        ));
        // A slow but working link passes.
        assert!(check_upload_rate(60 * 5000, s(60), grace, 4096).is_ok());
        assert!(check_upload_rate(60 * 4000, s(60), grace, 4096).is_err());
        // 0 turns the check off.
        assert!(check_upload_rate(0, s(3600), grace, 0).is_ok());
    }
    use super::*;

    fn info(size: u64, block_size: u32) -> PieceInfo {
        PieceInfo {
            size,
            block_size,
            block_hashes: vec![[0; 32]; size.div_ceil(u64::from(block_size)) as usize],
        }
    }

    #[test]
    fn ranges_expand_to_whole_blocks() {
        let i = info(10_000, 4096);
        assert_eq!(plan_download(&i, 0, 0).unwrap().chunks, vec![(0, 10_000)]);
        assert_eq!(
            plan_download(&i, 5000, 10).unwrap().chunks,
            vec![(4096, 4096)]
        );
        assert_eq!(plan_download(&i, 4095, 2).unwrap().chunks, vec![(0, 8192)]);
        assert_eq!(
            plan_download(&i, 9000, 1000).unwrap().chunks,
            vec![(8192, 1808)]
        );
        assert!(plan_download(&i, 9000, 1001).is_err());
        assert!(plan_download(&i, 10_000, 0).is_err());
        assert!(plan_download(&i, u64::MAX, u64::MAX).is_err());
        assert_eq!(
            plan_download(&info(0, 4096), 0, 0).unwrap().chunks,
            vec![(0, 0)]
        );
    }

    #[test]
    fn messages_stay_under_the_chunk_limit() {
        let big = info(3 * MAX_CHUNK as u64 + 5, 65_536);
        let plan = plan_download(&big, 0, 0).unwrap();
        assert!(
            plan.chunks
                .iter()
                .all(|(o, l)| *l <= MAX_CHUNK && o % 65_536 == 0)
        );
        assert_eq!(
            plan.chunks.iter().map(|c| c.1 as u64).sum::<u64>(),
            big.size
        );
        // Blocks larger than a message are split; the stream still covers whole blocks.
        let huge_blocks = info(5 << 20, 4 << 20);
        let plan = plan_download(&huge_blocks, (4 << 20) + 1, 1).unwrap();
        assert_eq!(plan.chunks, vec![(4 << 20, 1 << 20)]);
    }

    #[test]
    fn orders_must_be_addressed_here_and_fresh() {
        let me = NodeId([1; 32]);
        let now = 1_000_000_000;
        assert!(check_order(&me, &me, now, now).is_ok());
        assert!(matches!(
            check_order(&me, &NodeId([2; 32]), now, now),
            Err(Error::WrongNode { .. })
        ));
        assert!(matches!(
            check_order(&me, &me, now - ORDER_WINDOW_MS - 1, now),
            Err(Error::Stale(_))
        ));
        assert!(matches!(
            check_order(&me, &me, now + ORDER_WINDOW_MS + 1, now),
            Err(Error::Stale(_))
        ));
        // Ahead of the clock: a minute of skew, no more (an order dated ten minutes
        // ahead would hold its replay entry for twenty).
        assert!(check_order(&me, &me, now + ORDER_MAX_AHEAD_MS, now).is_ok());
        assert!(matches!(
            check_order(&me, &me, now + ORDER_MAX_AHEAD_MS + 1, now),
            Err(Error::Stale(_))
        ));
        assert!(check_lease(now + 1, now, 10).is_ok());
        assert!(check_lease(now + 10, now, 10).is_ok());
        assert!(matches!(
            check_lease(now, now, 10),
            Err(Error::Expired { .. })
        ));
        assert!(matches!(
            check_lease(now + 11, now, 10),
            Err(Error::LeaseTooLong {
                max_lease_ms: 10,
                ..
            })
        ));
        assert!(check_lease(u64::MAX, now, u64::MAX).is_ok());
    }
}
