//! Domain types of every signed message, converted from and to [`crate::pb`].
//!
//! `TryFrom<pb::X> for Signed<X>` checks every field (lengths, bounds, required fields)
//! and then the signature, so a `Signed<X>` in hand is well-formed and authentic. What
//! the conversion cannot know (is this order addressed to me, is it fresh, is this key
//! the piece's owner) is for the receiver to check.

use std::net::SocketAddr;

use crate::error::WireError;
use crate::ids::{NodeId, Nonce, PieceHash, PieceId, PublicKey, RecordKey, Signature};
use crate::limits::{
    MAX_ADDRESSES, MAX_LIST_PIECES, MAX_PIECE_SIZE, MAX_PIECE_TAG, MAX_RECORD_VALUE,
    MAX_RENEW_PIECES, MAX_SALT_LEN, MAX_VERSION_LEN,
};
use crate::pb;
use crate::piece_hash::check_block_size;
use crate::signing::{Canonical, Domain, Signable, Signed};

/// gRPC response metadata of a node's FAILED_PRECONDITION refusal of a lease beyond its
/// `max_lease`: that limit, in milliseconds, so the uplink can renew up to it.
pub const MAX_LEASE_METADATA: &str = "x-shoal-max-lease-ms";

/// Unwraps an optional sub-message, naming it when missing.
pub fn required<T>(field: &'static str, value: Option<T>) -> Result<T, WireError> {
    value.ok_or(WireError::Missing { field })
}

fn signature(bytes: &[u8]) -> Result<Signature, WireError> {
    Signature::from_wire("signature", bytes)
}

fn nonzero(field: &'static str, v: u64) -> Result<u64, WireError> {
    if v == 0 {
        return Err(WireError::Missing { field });
    }
    Ok(v)
}

fn at_most(field: &'static str, v: u64, limit: u64) -> Result<u64, WireError> {
    if v > limit {
        return Err(WireError::OutOfRange {
            field,
            reason: format!("{v} is over the limit of {limit}"),
        });
    }
    Ok(v)
}

/// Opens an upload: signed by the owner, addressed to one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadOrder {
    pub piece_id: PieceId,
    pub node_id: NodeId,
    pub owner_key: PublicKey,
    pub max_size: u64,
    pub block_size: u32,
    pub expires_at_ms: u64,
    pub timestamp_ms: u64,
    /// Makes the order unique: a node accepts it once.
    pub nonce: Nonce,
}

impl Signable for UploadOrder {
    const DOMAIN: Domain = Domain::UploadOrder;

    fn signer(&self) -> &PublicKey {
        &self.owner_key
    }

    fn encode(&self, c: &mut Canonical) {
        c.fixed(self.piece_id.as_bytes())
            .fixed(self.node_id.as_bytes())
            .fixed(self.owner_key.as_bytes())
            .u64(self.max_size)
            .u32(self.block_size)
            .u64(self.expires_at_ms)
            .u64(self.timestamp_ms)
            .fixed(self.nonce.as_bytes());
    }
}

impl TryFrom<pb::UploadOrder> for Signed<UploadOrder> {
    type Error = WireError;

    fn try_from(m: pb::UploadOrder) -> Result<Self, WireError> {
        check_block_size("block_size", m.block_size)?;
        let timestamp_ms = nonzero("timestamp_ms", m.timestamp_ms)?;
        let expires_at_ms = nonzero("expires_at_ms", m.expires_at_ms)?;
        if expires_at_ms <= timestamp_ms {
            return Err(WireError::OutOfRange {
                field: "expires_at_ms",
                reason: "the lease expires before the order was made".into(),
            });
        }
        let body = UploadOrder {
            piece_id: PieceId::from_wire("piece_id", &m.piece_id)?,
            node_id: NodeId::from_wire("node_id", &m.node_id)?,
            owner_key: PublicKey::from_bytes("owner_key", &m.owner_key)?,
            max_size: at_most("max_size", m.max_size, MAX_PIECE_SIZE)?,
            block_size: m.block_size,
            expires_at_ms,
            timestamp_ms,
            nonce: Nonce::from_wire("nonce", &m.nonce)?,
        };
        Signed::verify(body, signature(&m.signature)?)
    }
}

impl From<&Signed<UploadOrder>> for pb::UploadOrder {
    fn from(s: &Signed<UploadOrder>) -> Self {
        Self {
            piece_id: s.piece_id.0.to_vec(),
            node_id: s.node_id.0.to_vec(),
            owner_key: s.owner_key.as_bytes().to_vec(),
            max_size: s.max_size,
            block_size: s.block_size,
            expires_at_ms: s.expires_at_ms,
            timestamp_ms: s.timestamp_ms,
            nonce: s.nonce.0.to_vec(),
            signature: s.signature().0.to_vec(),
        }
    }
}

/// Closes an upload: the owner's signed statement of what the piece hashes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadTrailer {
    pub piece_id: PieceId,
    pub owner_key: PublicKey,
    pub size: u64,
    pub piece_hash: PieceHash,
    /// Opaque to the node (at most [`MAX_PIECE_TAG`] bytes; usually empty): stored with
    /// the piece and listed back to its owner ([`ListPiecesOrder`]). It rides in the
    /// trailer, not the order, because what the uplink seals into it (the piece hash)
    /// is known only once the data has been sent.
    pub tag: Vec<u8>,
}

fn tag(field: &'static str, t: Vec<u8>) -> Result<Vec<u8>, WireError> {
    if t.len() > MAX_PIECE_TAG {
        return Err(WireError::TooLong {
            field,
            limit: MAX_PIECE_TAG,
            actual: t.len(),
        });
    }
    Ok(t)
}

impl Signable for UploadTrailer {
    const DOMAIN: Domain = Domain::UploadTrailer;

    fn signer(&self) -> &PublicKey {
        &self.owner_key
    }

    fn encode(&self, c: &mut Canonical) {
        c.fixed(self.piece_id.as_bytes())
            .fixed(self.owner_key.as_bytes())
            .u64(self.size)
            .fixed(self.piece_hash.as_bytes());
        // Every field before it has a fixed length, so the tag's presence is told by the
        // length of the signed bytes: a trailer without a tag signs exactly the bytes it
        // signed before tags existed (old uplinks' trailers stay valid, no new domain),
        // and no tagged trailer shares its signed bytes with an untagged one.
        if !self.tag.is_empty() {
            c.bytes(&self.tag);
        }
    }
}

impl TryFrom<pb::UploadTrailer> for Signed<UploadTrailer> {
    type Error = WireError;

    fn try_from(m: pb::UploadTrailer) -> Result<Self, WireError> {
        let body = UploadTrailer {
            piece_id: PieceId::from_wire("piece_id", &m.piece_id)?,
            owner_key: PublicKey::from_bytes("owner_key", &m.owner_key)?,
            size: at_most("size", m.size, MAX_PIECE_SIZE)?,
            piece_hash: PieceHash::from_wire("piece_hash", &m.piece_hash)?,
            tag: tag("tag", m.tag)?,
        };
        Signed::verify(body, signature(&m.signature)?)
    }
}

impl From<&Signed<UploadTrailer>> for pb::UploadTrailer {
    fn from(s: &Signed<UploadTrailer>) -> Self {
        Self {
            piece_id: s.piece_id.0.to_vec(),
            owner_key: s.owner_key.as_bytes().to_vec(),
            size: s.size,
            piece_hash: s.piece_hash.0.to_vec(),
            signature: s.signature().0.to_vec(),
            tag: s.tag.clone(),
        }
    }
}

/// Asks a node for the pieces its signer owns there: up to `limit` of them, in piece-id
/// order, after `after`. A node lists nobody's pieces but the signer's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPiecesOrder {
    pub node_id: NodeId,
    pub owner_key: PublicKey,
    /// `None`: from the first piece.
    pub after: Option<PieceId>,
    /// 1 ..= [`MAX_LIST_PIECES`].
    pub limit: u32,
    pub timestamp_ms: u64,
    /// Makes the order unique: a node accepts it once.
    pub nonce: Nonce,
}

impl Signable for ListPiecesOrder {
    const DOMAIN: Domain = Domain::ListPiecesOrder;

    fn signer(&self) -> &PublicKey {
        &self.owner_key
    }

    fn encode(&self, c: &mut Canonical) {
        c.fixed(self.node_id.as_bytes())
            .fixed(self.owner_key.as_bytes())
            .bytes(self.after.as_ref().map_or(&[][..], |p| p.as_bytes()))
            .u32(self.limit)
            .u64(self.timestamp_ms)
            .fixed(self.nonce.as_bytes());
    }
}

impl TryFrom<pb::ListPiecesOrder> for Signed<ListPiecesOrder> {
    type Error = WireError;

    fn try_from(m: pb::ListPiecesOrder) -> Result<Self, WireError> {
        if m.limit == 0 {
            return Err(WireError::Missing { field: "limit" });
        }
        let limit = at_most("limit", u64::from(m.limit), u64::from(MAX_LIST_PIECES))?;
        let after = if m.after.is_empty() {
            None
        } else {
            Some(PieceId::from_wire("after", &m.after)?)
        };
        let body = ListPiecesOrder {
            node_id: NodeId::from_wire("node_id", &m.node_id)?,
            owner_key: PublicKey::from_bytes("owner_key", &m.owner_key)?,
            after,
            limit: u32::try_from(limit).unwrap_or(MAX_LIST_PIECES),
            timestamp_ms: nonzero("timestamp_ms", m.timestamp_ms)?,
            nonce: Nonce::from_wire("nonce", &m.nonce)?,
        };
        Signed::verify(body, signature(&m.signature)?)
    }
}

impl From<&Signed<ListPiecesOrder>> for pb::ListPiecesOrder {
    fn from(s: &Signed<ListPiecesOrder>) -> Self {
        Self {
            node_id: s.node_id.0.to_vec(),
            owner_key: s.owner_key.as_bytes().to_vec(),
            after: s.after.map(|p| p.0.to_vec()).unwrap_or_default(),
            limit: s.limit,
            timestamp_ms: s.timestamp_ms,
            signature: s.signature().0.to_vec(),
            nonce: s.nonce.0.to_vec(),
        }
    }
}

/// One piece of a [`ListPiecesOrder`]'s answer. Not signed: the TLS channel is pinned
/// to the node, and the owner trusts only what the tag it sealed itself says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedPiece {
    pub piece_id: PieceId,
    pub size: u64,
    pub expires_at_ms: u64,
    pub tag: Vec<u8>,
}

impl TryFrom<pb::ListedPiece> for ListedPiece {
    type Error = WireError;

    fn try_from(m: pb::ListedPiece) -> Result<Self, WireError> {
        Ok(Self {
            piece_id: PieceId::from_wire("piece_id", &m.piece_id)?,
            size: at_most("size", m.size, MAX_PIECE_SIZE)?,
            expires_at_ms: m.expires_at_ms,
            tag: tag("tag", m.tag)?,
        })
    }
}

impl From<&ListedPiece> for pb::ListedPiece {
    fn from(p: &ListedPiece) -> Self {
        Self {
            piece_id: p.piece_id.0.to_vec(),
            size: p.size,
            expires_at_ms: p.expires_at_ms,
            tag: p.tag.clone(),
        }
    }
}

/// Checks a node's answer to `order`: at most `limit` pieces, ids strictly ascending and
/// after `after`, each well-formed. Returns the pieces.
pub fn check_listing(
    order: &ListPiecesOrder,
    m: pb::ListPiecesResponse,
) -> Result<Vec<ListedPiece>, WireError> {
    if m.pieces.len() > order.limit as usize {
        return Err(WireError::TooMany {
            field: "pieces",
            limit: order.limit as usize,
            actual: m.pieces.len(),
        });
    }
    let pieces = m
        .pieces
        .into_iter()
        .map(ListedPiece::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    let mut last = order.after;
    for p in &pieces {
        if last.is_some_and(|l| p.piece_id <= l) {
            return Err(WireError::Malformed {
                field: "pieces",
                reason: "piece ids are not ascending after the order's `after`".into(),
            });
        }
        last = Some(p.piece_id);
    }
    Ok(pieces)
}

/// The node's signed statement that it holds a piece until `expires_at_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub piece_id: PieceId,
    pub node_key: PublicKey,
    pub owner_key: PublicKey,
    pub size: u64,
    pub piece_hash: PieceHash,
    pub expires_at_ms: u64,
    pub timestamp_ms: u64,
}

impl Receipt {
    /// The node that signed this receipt.
    pub fn node_id(&self) -> NodeId {
        self.node_key.node_id()
    }
}

impl Signable for Receipt {
    const DOMAIN: Domain = Domain::Receipt;

    fn signer(&self) -> &PublicKey {
        &self.node_key
    }

    fn encode(&self, c: &mut Canonical) {
        c.fixed(self.piece_id.as_bytes())
            .fixed(self.node_key.as_bytes())
            .fixed(self.owner_key.as_bytes())
            .u64(self.size)
            .fixed(self.piece_hash.as_bytes())
            .u64(self.expires_at_ms)
            .u64(self.timestamp_ms);
    }
}

impl TryFrom<pb::Receipt> for Signed<Receipt> {
    type Error = WireError;

    fn try_from(m: pb::Receipt) -> Result<Self, WireError> {
        let body = Receipt {
            piece_id: PieceId::from_wire("piece_id", &m.piece_id)?,
            node_key: PublicKey::from_bytes("node_key", &m.node_key)?,
            owner_key: PublicKey::from_bytes("owner_key", &m.owner_key)?,
            size: at_most("size", m.size, MAX_PIECE_SIZE)?,
            piece_hash: PieceHash::from_wire("piece_hash", &m.piece_hash)?,
            expires_at_ms: nonzero("expires_at_ms", m.expires_at_ms)?,
            timestamp_ms: nonzero("timestamp_ms", m.timestamp_ms)?,
        };
        Signed::verify(body, signature(&m.signature)?)
    }
}

impl From<&Signed<Receipt>> for pb::Receipt {
    fn from(s: &Signed<Receipt>) -> Self {
        Self {
            piece_id: s.piece_id.0.to_vec(),
            node_key: s.node_key.as_bytes().to_vec(),
            owner_key: s.owner_key.as_bytes().to_vec(),
            size: s.size,
            piece_hash: s.piece_hash.0.to_vec(),
            expires_at_ms: s.expires_at_ms,
            timestamp_ms: s.timestamp_ms,
            signature: s.signature().0.to_vec(),
        }
    }
}

/// Asks for bytes `[offset, offset + length)` of a piece (`length` 0 = to the end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadOrder {
    pub piece_id: PieceId,
    pub node_id: NodeId,
    pub owner_key: PublicKey,
    pub offset: u64,
    pub length: u64,
    pub timestamp_ms: u64,
    /// Makes the order unique: a node accepts it once.
    pub nonce: Nonce,
}

impl Signable for DownloadOrder {
    const DOMAIN: Domain = Domain::DownloadOrder;

    fn signer(&self) -> &PublicKey {
        &self.owner_key
    }

    fn encode(&self, c: &mut Canonical) {
        c.fixed(self.piece_id.as_bytes())
            .fixed(self.node_id.as_bytes())
            .fixed(self.owner_key.as_bytes())
            .u64(self.offset)
            .u64(self.length)
            .u64(self.timestamp_ms)
            .fixed(self.nonce.as_bytes());
    }
}

impl TryFrom<pb::DownloadOrder> for Signed<DownloadOrder> {
    type Error = WireError;

    fn try_from(m: pb::DownloadOrder) -> Result<Self, WireError> {
        let body = DownloadOrder {
            piece_id: PieceId::from_wire("piece_id", &m.piece_id)?,
            node_id: NodeId::from_wire("node_id", &m.node_id)?,
            owner_key: PublicKey::from_bytes("owner_key", &m.owner_key)?,
            offset: at_most("offset", m.offset, MAX_PIECE_SIZE)?,
            length: at_most("length", m.length, MAX_PIECE_SIZE)?,
            timestamp_ms: nonzero("timestamp_ms", m.timestamp_ms)?,
            nonce: Nonce::from_wire("nonce", &m.nonce)?,
        };
        Signed::verify(body, signature(&m.signature)?)
    }
}

impl From<&Signed<DownloadOrder>> for pb::DownloadOrder {
    fn from(s: &Signed<DownloadOrder>) -> Self {
        Self {
            piece_id: s.piece_id.0.to_vec(),
            node_id: s.node_id.0.to_vec(),
            owner_key: s.owner_key.as_bytes().to_vec(),
            offset: s.offset,
            length: s.length,
            timestamp_ms: s.timestamp_ms,
            nonce: s.nonce.0.to_vec(),
            signature: s.signature().0.to_vec(),
        }
    }
}

/// Removes a piece; valid only when signed by the key that uploaded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteOrder {
    pub piece_id: PieceId,
    pub node_id: NodeId,
    pub owner_key: PublicKey,
    pub timestamp_ms: u64,
    /// Makes the order unique: a node accepts it once.
    pub nonce: Nonce,
}

impl Signable for DeleteOrder {
    const DOMAIN: Domain = Domain::DeleteOrder;

    fn signer(&self) -> &PublicKey {
        &self.owner_key
    }

    fn encode(&self, c: &mut Canonical) {
        c.fixed(self.piece_id.as_bytes())
            .fixed(self.node_id.as_bytes())
            .fixed(self.owner_key.as_bytes())
            .u64(self.timestamp_ms)
            .fixed(self.nonce.as_bytes());
    }
}

impl TryFrom<pb::DeleteOrder> for Signed<DeleteOrder> {
    type Error = WireError;

    fn try_from(m: pb::DeleteOrder) -> Result<Self, WireError> {
        let body = DeleteOrder {
            piece_id: PieceId::from_wire("piece_id", &m.piece_id)?,
            node_id: NodeId::from_wire("node_id", &m.node_id)?,
            owner_key: PublicKey::from_bytes("owner_key", &m.owner_key)?,
            timestamp_ms: nonzero("timestamp_ms", m.timestamp_ms)?,
            nonce: Nonce::from_wire("nonce", &m.nonce)?,
        };
        Signed::verify(body, signature(&m.signature)?)
    }
}

impl From<&Signed<DeleteOrder>> for pb::DeleteOrder {
    fn from(s: &Signed<DeleteOrder>) -> Self {
        Self {
            piece_id: s.piece_id.0.to_vec(),
            node_id: s.node_id.0.to_vec(),
            owner_key: s.owner_key.as_bytes().to_vec(),
            timestamp_ms: s.timestamp_ms,
            nonce: s.nonce.0.to_vec(),
            signature: s.signature().0.to_vec(),
        }
    }
}

/// Asks for one block of a piece, to check the node still holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditOrder {
    pub piece_id: PieceId,
    pub node_id: NodeId,
    pub owner_key: PublicKey,
    pub block_index: u32,
    pub timestamp_ms: u64,
    /// Makes the order unique: a node accepts it once.
    pub nonce: Nonce,
}

impl Signable for AuditOrder {
    const DOMAIN: Domain = Domain::AuditOrder;

    fn signer(&self) -> &PublicKey {
        &self.owner_key
    }

    fn encode(&self, c: &mut Canonical) {
        c.fixed(self.piece_id.as_bytes())
            .fixed(self.node_id.as_bytes())
            .fixed(self.owner_key.as_bytes())
            .u32(self.block_index)
            .u64(self.timestamp_ms)
            .fixed(self.nonce.as_bytes());
    }
}

impl TryFrom<pb::AuditOrder> for Signed<AuditOrder> {
    type Error = WireError;

    fn try_from(m: pb::AuditOrder) -> Result<Self, WireError> {
        let body = AuditOrder {
            piece_id: PieceId::from_wire("piece_id", &m.piece_id)?,
            node_id: NodeId::from_wire("node_id", &m.node_id)?,
            owner_key: PublicKey::from_bytes("owner_key", &m.owner_key)?,
            block_index: u32::try_from(at_most(
                "block_index",
                u64::from(m.block_index),
                crate::limits::MAX_BLOCKS as u64 - 1,
            )?)
            .unwrap_or(u32::MAX),
            timestamp_ms: nonzero("timestamp_ms", m.timestamp_ms)?,
            nonce: Nonce::from_wire("nonce", &m.nonce)?,
        };
        Signed::verify(body, signature(&m.signature)?)
    }
}

impl From<&Signed<AuditOrder>> for pb::AuditOrder {
    fn from(s: &Signed<AuditOrder>) -> Self {
        Self {
            piece_id: s.piece_id.0.to_vec(),
            node_id: s.node_id.0.to_vec(),
            owner_key: s.owner_key.as_bytes().to_vec(),
            block_index: s.block_index,
            timestamp_ms: s.timestamp_ms,
            nonce: s.nonce.0.to_vec(),
            signature: s.signature().0.to_vec(),
        }
    }
}

/// Extends the leases of up to [`MAX_RENEW_PIECES`] pieces on one node to (at least)
/// `expires_at_ms`. Renewing is monotonic: no lease is ever shortened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewOrder {
    /// Distinct, non-empty, at most [`MAX_RENEW_PIECES`].
    pub piece_ids: Vec<PieceId>,
    pub node_id: NodeId,
    pub owner_key: PublicKey,
    pub expires_at_ms: u64,
    pub timestamp_ms: u64,
    pub nonce: Nonce,
}

impl Signable for RenewOrder {
    const DOMAIN: Domain = Domain::RenewOrder;

    fn signer(&self) -> &PublicKey {
        &self.owner_key
    }

    fn encode(&self, c: &mut Canonical) {
        c.list(self.piece_ids.iter().map(|p| p.as_bytes()))
            .fixed(self.node_id.as_bytes())
            .fixed(self.owner_key.as_bytes())
            .u64(self.expires_at_ms)
            .u64(self.timestamp_ms)
            .fixed(self.nonce.as_bytes());
    }
}

impl TryFrom<pb::RenewOrder> for Signed<RenewOrder> {
    type Error = WireError;

    fn try_from(m: pb::RenewOrder) -> Result<Self, WireError> {
        if m.piece_ids.is_empty() {
            return Err(WireError::Missing { field: "piece_ids" });
        }
        if m.piece_ids.len() > MAX_RENEW_PIECES {
            return Err(WireError::TooMany {
                field: "piece_ids",
                limit: MAX_RENEW_PIECES,
                actual: m.piece_ids.len(),
            });
        }
        let piece_ids = m
            .piece_ids
            .iter()
            .map(|p| PieceId::from_wire("piece_ids", p))
            .collect::<Result<Vec<_>, _>>()?;
        let distinct: std::collections::HashSet<&PieceId> = piece_ids.iter().collect();
        if distinct.len() != piece_ids.len() {
            return Err(WireError::Malformed {
                field: "piece_ids",
                reason: "a piece id is listed twice".into(),
            });
        }
        let body = RenewOrder {
            piece_ids,
            node_id: NodeId::from_wire("node_id", &m.node_id)?,
            owner_key: PublicKey::from_bytes("owner_key", &m.owner_key)?,
            expires_at_ms: nonzero("expires_at_ms", m.expires_at_ms)?,
            timestamp_ms: nonzero("timestamp_ms", m.timestamp_ms)?,
            nonce: Nonce::from_wire("nonce", &m.nonce)?,
        };
        Signed::verify(body, signature(&m.signature)?)
    }
}

impl From<&Signed<RenewOrder>> for pb::RenewOrder {
    fn from(s: &Signed<RenewOrder>) -> Self {
        Self {
            piece_ids: s.piece_ids.iter().map(|p| p.0.to_vec()).collect(),
            node_id: s.node_id.0.to_vec(),
            owner_key: s.owner_key.as_bytes().to_vec(),
            expires_at_ms: s.expires_at_ms,
            timestamp_ms: s.timestamp_ms,
            signature: s.signature().0.to_vec(),
            nonce: s.nonce.0.to_vec(),
        }
    }
}

/// What a renew order did to one piece (not signed: the TLS channel is pinned to the
/// node, and audits, not promises, tell whether a node keeps a piece).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewStatus {
    /// The lease now ends at `expires_at_ms` (the later of the old lease and the order's).
    Renewed {
        expires_at_ms: u64,
    },
    NotFound,
    NotOwner,
    Busy,
}

/// The outcome for one piece of a renew order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenewResult {
    pub piece_id: PieceId,
    pub status: RenewStatus,
}

impl TryFrom<pb::RenewResult> for RenewResult {
    type Error = WireError;

    fn try_from(m: pb::RenewResult) -> Result<Self, WireError> {
        let status = match pb::RenewStatus::try_from(m.status) {
            Ok(pb::RenewStatus::Renewed) => RenewStatus::Renewed {
                expires_at_ms: nonzero("expires_at_ms", m.expires_at_ms)?,
            },
            Ok(pb::RenewStatus::NotFound) => RenewStatus::NotFound,
            Ok(pb::RenewStatus::NotOwner) => RenewStatus::NotOwner,
            Ok(pb::RenewStatus::Busy) => RenewStatus::Busy,
            Err(_) => {
                return Err(WireError::Malformed {
                    field: "status",
                    reason: format!("unknown renew status {}", m.status),
                });
            }
        };
        Ok(Self {
            piece_id: PieceId::from_wire("piece_id", &m.piece_id)?,
            status,
        })
    }
}

impl From<&RenewResult> for pb::RenewResult {
    fn from(r: &RenewResult) -> Self {
        let (status, expires_at_ms) = match r.status {
            RenewStatus::Renewed { expires_at_ms } => (pb::RenewStatus::Renewed, expires_at_ms),
            RenewStatus::NotFound => (pb::RenewStatus::NotFound, 0),
            RenewStatus::NotOwner => (pb::RenewStatus::NotOwner, 0),
            RenewStatus::Busy => (pb::RenewStatus::Busy, 0),
        };
        Self {
            piece_id: r.piece_id.0.to_vec(),
            status: status as i32,
            expires_at_ms,
        }
    }
}

/// A node's self-signed advertisement of where and how it can be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub public_key: PublicKey,
    pub addresses: Vec<SocketAddr>,
    pub free_space: u64,
    pub version: String,
    pub started_at_ms: u64,
    pub timestamp_ms: u64,
}

impl NodeRecord {
    pub fn node_id(&self) -> NodeId {
        self.public_key.node_id()
    }
}

impl Signable for NodeRecord {
    const DOMAIN: Domain = Domain::NodeRecord;

    fn signer(&self) -> &PublicKey {
        &self.public_key
    }

    fn encode(&self, c: &mut Canonical) {
        c.fixed(self.public_key.as_bytes())
            .list(self.addresses.iter().map(|a| a.to_string()))
            .u64(self.free_space)
            .bytes(self.version.as_bytes())
            .u64(self.started_at_ms)
            .u64(self.timestamp_ms);
    }
}

/// Parses a record address: an `ip:port` with a real port and a unicast IP.
pub fn parse_address(field: &'static str, s: &str) -> Result<SocketAddr, WireError> {
    if s.len() > 64 {
        return Err(WireError::TooLong {
            field,
            limit: 64,
            actual: s.len(),
        });
    }
    let addr: SocketAddr = s.parse().map_err(|_| WireError::Malformed {
        field,
        reason: format!("{s:?} is not an ip:port address"),
    })?;
    // Undialable anywhere; whether it is routable is the reader's network's question
    // (`AddressScope`).
    crate::address::AddressScope::Local
        .check(&addr)
        .map_err(|e| WireError::Malformed {
            field,
            reason: e.to_string(),
        })?;
    Ok(addr)
}

impl TryFrom<pb::NodeRecord> for Signed<NodeRecord> {
    type Error = WireError;

    fn try_from(m: pb::NodeRecord) -> Result<Self, WireError> {
        if m.addresses.is_empty() {
            return Err(WireError::Missing { field: "addresses" });
        }
        if m.addresses.len() > MAX_ADDRESSES {
            return Err(WireError::TooMany {
                field: "addresses",
                limit: MAX_ADDRESSES,
                actual: m.addresses.len(),
            });
        }
        if m.version.len() > MAX_VERSION_LEN {
            return Err(WireError::TooLong {
                field: "version",
                limit: MAX_VERSION_LEN,
                actual: m.version.len(),
            });
        }
        if m.version.chars().any(|c| c.is_control()) {
            return Err(WireError::Malformed {
                field: "version",
                reason: "control characters".into(),
            });
        }
        let addresses = m
            .addresses
            .iter()
            .map(|a| parse_address("addresses", a))
            .collect::<Result<Vec<_>, _>>()?;
        let body = NodeRecord {
            public_key: PublicKey::from_bytes("public_key", &m.public_key)?,
            addresses,
            free_space: m.free_space,
            version: m.version,
            started_at_ms: m.started_at_ms,
            timestamp_ms: nonzero("timestamp_ms", m.timestamp_ms)?,
        };
        Signed::verify(body, signature(&m.signature)?)
    }
}

impl From<&Signed<NodeRecord>> for pb::NodeRecord {
    fn from(s: &Signed<NodeRecord>) -> Self {
        Self {
            public_key: s.public_key.as_bytes().to_vec(),
            addresses: s.addresses.iter().map(|a| a.to_string()).collect(),
            free_space: s.free_space,
            version: s.version.clone(),
            started_at_ms: s.started_at_ms,
            timestamp_ms: s.timestamp_ms,
            signature: s.signature().0.to_vec(),
        }
    }
}

/// A BEP 44-style mutable record, stored under `H(public key, salt)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MutableRecord {
    pub public_key: PublicKey,
    pub salt: Vec<u8>,
    pub seq: u64,
    pub value: Vec<u8>,
    pub expires_at_ms: u64,
}

const RECORD_KEY_CONTEXT: &str = "shoal v1 mutable record key";

impl MutableRecord {
    /// Where a record of `public_key` and `salt` is stored.
    pub fn key_for(public_key: &PublicKey, salt: &[u8]) -> RecordKey {
        let mut h = blake3::Hasher::new_derive_key(RECORD_KEY_CONTEXT);
        h.update(public_key.as_bytes());
        h.update(&(salt.len() as u32).to_be_bytes());
        h.update(salt);
        RecordKey(*h.finalize().as_bytes())
    }

    pub fn key(&self) -> RecordKey {
        Self::key_for(&self.public_key, &self.salt)
    }
}

impl Signable for MutableRecord {
    const DOMAIN: Domain = Domain::MutableRecord;

    fn signer(&self) -> &PublicKey {
        &self.public_key
    }

    fn encode(&self, c: &mut Canonical) {
        // The key is not signed: it is implied by the signer and the salt.
        c.bytes(&self.salt)
            .u64(self.seq)
            .bytes(&self.value)
            .u64(self.expires_at_ms);
    }
}

impl TryFrom<pb::MutableRecord> for Signed<MutableRecord> {
    type Error = WireError;

    fn try_from(m: pb::MutableRecord) -> Result<Self, WireError> {
        if m.salt.len() > MAX_SALT_LEN {
            return Err(WireError::TooLong {
                field: "salt",
                limit: MAX_SALT_LEN,
                actual: m.salt.len(),
            });
        }
        if m.value.len() > MAX_RECORD_VALUE {
            return Err(WireError::TooLong {
                field: "value",
                limit: MAX_RECORD_VALUE,
                actual: m.value.len(),
            });
        }
        let body = MutableRecord {
            public_key: PublicKey::from_bytes("public_key", &m.public_key)?,
            salt: m.salt,
            seq: m.seq,
            value: m.value,
            expires_at_ms: nonzero("expires_at_ms", m.expires_at_ms)?,
        };
        Signed::verify(body, signature(&m.signature)?)
    }
}

impl From<&Signed<MutableRecord>> for pb::MutableRecord {
    fn from(s: &Signed<MutableRecord>) -> Self {
        Self {
            public_key: s.public_key.as_bytes().to_vec(),
            salt: s.salt.clone(),
            seq: s.seq,
            value: s.value.clone(),
            expires_at_ms: s.expires_at_ms,
            signature: s.signature().0.to_vec(),
        }
    }
}

#[cfg(test)]
#[path = "messages_tests.rs"]
mod tests;
