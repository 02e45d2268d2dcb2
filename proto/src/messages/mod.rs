//! Domain types of every signed message, converted from and to [`crate::pb`].
//!
//! ```text
//!   mod (shared field checks, re-exports)
//!    ^      ^            ^           ^
//!    |      |            |           |
//!  order <- orders <- pieces      records
//! ```
//!
//! - [`order`]: the order envelope, [`OrderHeader`] and the [`Order`] trait.
//! - [`orders`]: the six orders an owner sends a node.
//! - [`pieces`]: the upload trailer, the node's receipt, listing and renewal answers.
//! - [`records`]: the DHT's node records and mutable records.
//!
//! Arrows point from a module to what it imports: every child uses the field checks of
//! `mod`; `orders` builds on `order`; `pieces` reads only [`ListPiecesOrder`] of
//! `orders`; no sibling imports `records`.
//!
//! `TryFrom<pb::X> for Signed<X>` checks every field (lengths, bounds, required fields)
//! and then the signature, so a `Signed<X>` in hand is well-formed and authentic. What
//! the conversion cannot know (is this order addressed to me, is it fresh, is this key
//! the piece's owner) is for the receiver to check.

pub mod order;
pub mod orders;
pub mod pieces;
pub mod records;

pub use order::{Order, OrderHeader};
pub use orders::{
    AuditOrder, DeleteOrder, DownloadOrder, ListPiecesOrder, RenewOrder, UploadOrder,
};
pub use pieces::{ListedPiece, Receipt, RenewResult, RenewStatus, UploadTrailer, check_listing};
pub use records::{MutableRecord, NodeRecord, parse_address};

use crate::error::WireError;
use crate::ids::Signature;
use crate::limits::MAX_PIECE_TAG;

/// gRPC response metadata of a node's FAILED_PRECONDITION refusal of a lease beyond its
/// `max_lease`: that limit, in milliseconds, so the uplink can renew up to it.
pub const MAX_LEASE_METADATA: &str = "x-shoal-max-lease-ms";

/// Unwraps an optional sub-message, naming it when missing.
pub fn required<T>(field: &'static str, value: Option<T>) -> Result<T, WireError> {
    value.ok_or(WireError::Missing { field })
}

pub(crate) fn signature(bytes: &[u8]) -> Result<Signature, WireError> {
    Signature::from_wire("signature", bytes)
}

pub(crate) fn nonzero(field: &'static str, v: u64) -> Result<u64, WireError> {
    if v == 0 {
        return Err(WireError::Missing { field });
    }
    Ok(v)
}

pub(crate) fn at_most(field: &'static str, v: u64, limit: u64) -> Result<u64, WireError> {
    if v > limit {
        return Err(WireError::OutOfRange {
            field,
            reason: format!("{v} is over the limit of {limit}"),
        });
    }
    Ok(v)
}

/// A piece tag: at most [`MAX_PIECE_TAG`] bytes.
pub(crate) fn tag(field: &'static str, t: Vec<u8>) -> Result<Vec<u8>, WireError> {
    if t.len() > MAX_PIECE_TAG {
        return Err(WireError::TooLong {
            field,
            limit: MAX_PIECE_TAG,
            actual: t.len(),
        });
    }
    Ok(t)
}

#[cfg(test)]
mod tests;
