//! What is said about a piece once it is sent: the owner's [`UploadTrailer`] that closes
//! an upload, the node's signed [`Receipt`], and the unsigned answers to a listing
//! ([`ListedPiece`], checked by [`check_listing`]) and to a renewal ([`RenewResult`]).

use super::orders::ListPiecesOrder;
use super::{at_most, nonzero, signature, tag};
use crate::error::WireError;
use crate::ids::{NodeId, PieceHash, PieceId, PublicKey};
use crate::limits::MAX_PIECE_SIZE;
use crate::pb;
use crate::signing::{Canonical, Domain, Signable, Signed};

/// Closes an upload: the owner's signed statement of what the piece hashes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadTrailer {
    pub piece_id: PieceId,
    pub owner_key: PublicKey,
    pub size: u64,
    pub piece_hash: PieceHash,
    /// Opaque to the node (at most [`MAX_PIECE_TAG`](crate::limits::MAX_PIECE_TAG) bytes; usually empty): stored with
    /// the piece and listed back to its owner ([`ListPiecesOrder`]). It rides in the
    /// trailer, not the order, because what the uplink seals into it (the piece hash)
    /// is known only once the data has been sent.
    pub tag: Vec<u8>,
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
