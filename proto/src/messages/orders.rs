//! The six orders an owner sends a node, each an [`OrderHeader`] plus its own fields:
//! [`UploadOrder`], [`DownloadOrder`], [`DeleteOrder`], [`AuditOrder`], [`RenewOrder`]
//! and [`ListPiecesOrder`]. Each implements [`Order`] (so its signed bytes follow the one
//! envelope layout) and converts from and to its protobuf message.

use std::collections::HashSet;

use super::order::{Order, OrderHeader};
use super::{at_most, nonzero, signature};
use crate::error::WireError;
use crate::ids::PieceId;
use crate::limits::{MAX_BLOCKS, MAX_LIST_PIECES, MAX_PIECE_SIZE, MAX_RENEW_PIECES};
use crate::pb;
use crate::piece_hash::check_block_size;
use crate::signing::{Canonical, Domain, Signed};

/// Opens an upload: signed by the owner, addressed to one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadOrder {
    pub header: OrderHeader,
    pub piece_id: PieceId,
    pub max_size: u64,
    pub block_size: u32,
    pub expires_at_ms: u64,
}

impl Order for UploadOrder {
    const DOMAIN: Domain = Domain::UploadOrder;
    type Wire = pb::UploadOrder;

    fn header(&self) -> &OrderHeader {
        &self.header
    }

    fn lease_ms(&self) -> Option<u64> {
        Some(self.expires_at_ms)
    }

    fn encode_target(&self, c: &mut Canonical) {
        c.fixed(self.piece_id.as_bytes());
    }

    fn encode_terms(&self, c: &mut Canonical) {
        c.u64(self.max_size)
            .u32(self.block_size)
            .u64(self.expires_at_ms);
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
        let piece_id = PieceId::from_wire("piece_id", &m.piece_id)?;
        let body = UploadOrder {
            header: OrderHeader::from_wire(&m.node_id, &m.owner_key, timestamp_ms, &m.nonce)?,
            piece_id,
            max_size: at_most("max_size", m.max_size, MAX_PIECE_SIZE)?,
            block_size: m.block_size,
            expires_at_ms,
        };
        Signed::verify(body, signature(&m.signature)?)
    }
}

impl From<&Signed<UploadOrder>> for pb::UploadOrder {
    fn from(s: &Signed<UploadOrder>) -> Self {
        let h = &s.header;
        Self {
            piece_id: s.piece_id.0.to_vec(),
            node_id: h.node_id.0.to_vec(),
            owner_key: h.owner_key.as_bytes().to_vec(),
            max_size: s.max_size,
            block_size: s.block_size,
            expires_at_ms: s.expires_at_ms,
            timestamp_ms: h.timestamp_ms,
            nonce: h.nonce.0.to_vec(),
            signature: s.signature().0.to_vec(),
        }
    }
}

/// Asks a node for the pieces its signer owns there: up to `limit` of them, in piece-id
/// order, after `after`. A node lists nobody's pieces but the signer's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPiecesOrder {
    pub header: OrderHeader,
    /// `None`: from the first piece.
    pub after: Option<PieceId>,
    /// 1 ..= [`MAX_LIST_PIECES`].
    pub limit: u32,
}

impl Order for ListPiecesOrder {
    const DOMAIN: Domain = Domain::ListPiecesOrder;
    type Wire = pb::ListPiecesOrder;

    fn header(&self) -> &OrderHeader {
        &self.header
    }

    fn encode_terms(&self, c: &mut Canonical) {
        c.bytes(self.after.as_ref().map_or(&[][..], |p| p.as_bytes()))
            .u32(self.limit);
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
            header: OrderHeader::from_wire(&m.node_id, &m.owner_key, m.timestamp_ms, &m.nonce)?,
            after,
            limit: u32::try_from(limit).unwrap_or(MAX_LIST_PIECES),
        };
        Signed::verify(body, signature(&m.signature)?)
    }
}

impl From<&Signed<ListPiecesOrder>> for pb::ListPiecesOrder {
    fn from(s: &Signed<ListPiecesOrder>) -> Self {
        let h = &s.header;
        Self {
            node_id: h.node_id.0.to_vec(),
            owner_key: h.owner_key.as_bytes().to_vec(),
            after: s.after.map(|p| p.0.to_vec()).unwrap_or_default(),
            limit: s.limit,
            timestamp_ms: h.timestamp_ms,
            signature: s.signature().0.to_vec(),
            nonce: h.nonce.0.to_vec(),
        }
    }
}

/// Asks for bytes `[offset, offset + length)` of a piece (`length` 0 = to the end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadOrder {
    pub header: OrderHeader,
    pub piece_id: PieceId,
    pub offset: u64,
    pub length: u64,
}

impl Order for DownloadOrder {
    const DOMAIN: Domain = Domain::DownloadOrder;
    type Wire = pb::DownloadOrder;

    fn header(&self) -> &OrderHeader {
        &self.header
    }

    fn encode_target(&self, c: &mut Canonical) {
        c.fixed(self.piece_id.as_bytes());
    }

    fn encode_terms(&self, c: &mut Canonical) {
        c.u64(self.offset).u64(self.length);
    }
}

impl TryFrom<pb::DownloadOrder> for Signed<DownloadOrder> {
    type Error = WireError;

    fn try_from(m: pb::DownloadOrder) -> Result<Self, WireError> {
        let piece_id = PieceId::from_wire("piece_id", &m.piece_id)?;
        let body = DownloadOrder {
            header: OrderHeader::from_wire(&m.node_id, &m.owner_key, m.timestamp_ms, &m.nonce)?,
            piece_id,
            offset: at_most("offset", m.offset, MAX_PIECE_SIZE)?,
            length: at_most("length", m.length, MAX_PIECE_SIZE)?,
        };
        Signed::verify(body, signature(&m.signature)?)
    }
}

impl From<&Signed<DownloadOrder>> for pb::DownloadOrder {
    fn from(s: &Signed<DownloadOrder>) -> Self {
        let h = &s.header;
        Self {
            piece_id: s.piece_id.0.to_vec(),
            node_id: h.node_id.0.to_vec(),
            owner_key: h.owner_key.as_bytes().to_vec(),
            offset: s.offset,
            length: s.length,
            timestamp_ms: h.timestamp_ms,
            nonce: h.nonce.0.to_vec(),
            signature: s.signature().0.to_vec(),
        }
    }
}

/// Removes a piece; valid only when signed by the key that uploaded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteOrder {
    pub header: OrderHeader,
    pub piece_id: PieceId,
}

impl Order for DeleteOrder {
    const DOMAIN: Domain = Domain::DeleteOrder;
    type Wire = pb::DeleteOrder;

    fn header(&self) -> &OrderHeader {
        &self.header
    }

    fn encode_target(&self, c: &mut Canonical) {
        c.fixed(self.piece_id.as_bytes());
    }

    fn encode_terms(&self, _c: &mut Canonical) {}
}

impl TryFrom<pb::DeleteOrder> for Signed<DeleteOrder> {
    type Error = WireError;

    fn try_from(m: pb::DeleteOrder) -> Result<Self, WireError> {
        let piece_id = PieceId::from_wire("piece_id", &m.piece_id)?;
        let body = DeleteOrder {
            header: OrderHeader::from_wire(&m.node_id, &m.owner_key, m.timestamp_ms, &m.nonce)?,
            piece_id,
        };
        Signed::verify(body, signature(&m.signature)?)
    }
}

impl From<&Signed<DeleteOrder>> for pb::DeleteOrder {
    fn from(s: &Signed<DeleteOrder>) -> Self {
        let h = &s.header;
        Self {
            piece_id: s.piece_id.0.to_vec(),
            node_id: h.node_id.0.to_vec(),
            owner_key: h.owner_key.as_bytes().to_vec(),
            timestamp_ms: h.timestamp_ms,
            nonce: h.nonce.0.to_vec(),
            signature: s.signature().0.to_vec(),
        }
    }
}

/// Asks for one block of a piece, to check the node still holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditOrder {
    pub header: OrderHeader,
    pub piece_id: PieceId,
    pub block_index: u32,
}

impl Order for AuditOrder {
    const DOMAIN: Domain = Domain::AuditOrder;
    type Wire = pb::AuditOrder;

    fn header(&self) -> &OrderHeader {
        &self.header
    }

    fn encode_target(&self, c: &mut Canonical) {
        c.fixed(self.piece_id.as_bytes());
    }

    fn encode_terms(&self, c: &mut Canonical) {
        c.u32(self.block_index);
    }
}

impl TryFrom<pb::AuditOrder> for Signed<AuditOrder> {
    type Error = WireError;

    fn try_from(m: pb::AuditOrder) -> Result<Self, WireError> {
        let piece_id = PieceId::from_wire("piece_id", &m.piece_id)?;
        let header = OrderHeader::from_wire(&m.node_id, &m.owner_key, m.timestamp_ms, &m.nonce)?;
        let block_index = u32::try_from(at_most(
            "block_index",
            u64::from(m.block_index),
            MAX_BLOCKS as u64 - 1,
        )?)
        .unwrap_or(u32::MAX);
        let body = AuditOrder {
            header,
            piece_id,
            block_index,
        };
        Signed::verify(body, signature(&m.signature)?)
    }
}

impl From<&Signed<AuditOrder>> for pb::AuditOrder {
    fn from(s: &Signed<AuditOrder>) -> Self {
        let h = &s.header;
        Self {
            piece_id: s.piece_id.0.to_vec(),
            node_id: h.node_id.0.to_vec(),
            owner_key: h.owner_key.as_bytes().to_vec(),
            block_index: s.block_index,
            timestamp_ms: h.timestamp_ms,
            nonce: h.nonce.0.to_vec(),
            signature: s.signature().0.to_vec(),
        }
    }
}

/// Extends the leases of up to [`MAX_RENEW_PIECES`] pieces on one node to (at least)
/// `expires_at_ms`. Renewing is monotonic: no lease is ever shortened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewOrder {
    pub header: OrderHeader,
    /// Distinct, non-empty, at most [`MAX_RENEW_PIECES`].
    pub piece_ids: Vec<PieceId>,
    pub expires_at_ms: u64,
}

impl Order for RenewOrder {
    const DOMAIN: Domain = Domain::RenewOrder;
    type Wire = pb::RenewOrder;

    fn header(&self) -> &OrderHeader {
        &self.header
    }

    fn lease_ms(&self) -> Option<u64> {
        Some(self.expires_at_ms)
    }

    fn encode_target(&self, c: &mut Canonical) {
        c.list(self.piece_ids.iter().map(|p| p.as_bytes()));
    }

    fn encode_terms(&self, c: &mut Canonical) {
        c.u64(self.expires_at_ms);
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
        let distinct: HashSet<&PieceId> = piece_ids.iter().collect();
        if distinct.len() != piece_ids.len() {
            return Err(WireError::Malformed {
                field: "piece_ids",
                reason: "a piece id is listed twice".into(),
            });
        }
        let body = RenewOrder {
            header: OrderHeader::from_wire(&m.node_id, &m.owner_key, m.timestamp_ms, &m.nonce)?,
            piece_ids,
            expires_at_ms: nonzero("expires_at_ms", m.expires_at_ms)?,
        };
        Signed::verify(body, signature(&m.signature)?)
    }
}

impl From<&Signed<RenewOrder>> for pb::RenewOrder {
    fn from(s: &Signed<RenewOrder>) -> Self {
        let h = &s.header;
        Self {
            piece_ids: s.piece_ids.iter().map(|p| p.0.to_vec()).collect(),
            node_id: h.node_id.0.to_vec(),
            owner_key: h.owner_key.as_bytes().to_vec(),
            expires_at_ms: s.expires_at_ms,
            timestamp_ms: h.timestamp_ms,
            signature: s.signature().0.to_vec(),
            nonce: h.nonce.0.to_vec(),
        }
    }
}
