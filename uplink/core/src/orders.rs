//! The owner's signed orders. Every order and trailer an owner sends a node is made here,
//! so the rule (the owner key signs, the order names the node and the piece, a fresh
//! nonce, the time it was made) exists once: the uplink's uploads, downloads, deletes,
//! renewals, audits and repairs use it, and so do the tests' clients, which only add
//! the malformed traffic on top.

use shoal_proto::messages::{
    AuditOrder, DeleteOrder, DownloadOrder, ListPiecesOrder, OrderHeader, RenewOrder, UploadOrder,
    UploadTrailer,
};
use shoal_proto::piece_hash::PieceInfo;
use shoal_proto::{Identity, IdentityError, NodeId, Nonce, PieceId, Signed};

/// Orders signed by one owner key.
#[derive(Debug, Clone, Copy)]
pub struct Orders<'a> {
    owner: &'a Identity,
}

/// What an upload order asks of the node.
#[derive(Debug, Clone, Copy)]
pub struct UploadTerms {
    /// Most bytes the piece may have.
    pub max_size: u64,
    /// Hash block size of the piece.
    pub block_size: u32,
    /// When the lease ends (Unix ms).
    pub expires_at_ms: u64,
}

impl<'a> Orders<'a> {
    pub fn new(owner: &'a Identity) -> Self {
        Self { owner }
    }

    /// The envelope of an order to `node` made at `now_ms`: signed by the owner, with a
    /// fresh nonce.
    fn header(&self, node: NodeId, now_ms: u64) -> OrderHeader {
        OrderHeader {
            node_id: node,
            owner_key: *self.owner.public_key(),
            timestamp_ms: now_ms,
            nonce: Nonce::random(),
        }
    }

    /// The order for uploading `piece` to `node`, made at `now_ms`.
    pub fn upload(
        &self,
        node: NodeId,
        piece: PieceId,
        terms: UploadTerms,
        now_ms: u64,
    ) -> Result<Signed<UploadOrder>, IdentityError> {
        Signed::sign(
            UploadOrder {
                header: self.header(node, now_ms),
                piece_id: piece,
                max_size: terms.max_size,
                block_size: terms.block_size,
                expires_at_ms: terms.expires_at_ms,
            },
            self.owner,
        )
    }

    /// The trailer that ends an upload of `piece` whose data hashed to `info`.
    pub fn trailer(
        &self,
        piece: PieceId,
        info: &PieceInfo,
    ) -> Result<Signed<UploadTrailer>, IdentityError> {
        self.tagged_trailer(piece, info, Vec::new())
    }

    /// [`Self::trailer`] with a tag the node stores with the piece and lists back to
    /// this owner only (the uplink's sealed description of a catalog piece).
    pub fn tagged_trailer(
        &self,
        piece: PieceId,
        info: &PieceInfo,
        tag: Vec<u8>,
    ) -> Result<Signed<UploadTrailer>, IdentityError> {
        Signed::sign(
            UploadTrailer {
                piece_id: piece,
                owner_key: *self.owner.public_key(),
                size: info.size,
                piece_hash: info.root(),
                tag,
            },
            self.owner,
        )
    }

    /// The order for a page of at most `limit` of this owner's pieces on `node`, in
    /// piece-id order after `after`.
    pub fn list_pieces(
        &self,
        node: NodeId,
        after: Option<PieceId>,
        limit: u32,
        now_ms: u64,
    ) -> Result<Signed<ListPiecesOrder>, IdentityError> {
        Signed::sign(
            ListPiecesOrder {
                header: self.header(node, now_ms),
                after,
                limit,
            },
            self.owner,
        )
    }

    /// The order for `length` bytes of `piece` from `offset` (0, 0: all of it).
    pub fn download(
        &self,
        node: NodeId,
        piece: PieceId,
        offset: u64,
        length: u64,
        now_ms: u64,
    ) -> Result<Signed<DownloadOrder>, IdentityError> {
        Signed::sign(
            DownloadOrder {
                header: self.header(node, now_ms),
                piece_id: piece,
                offset,
                length,
            },
            self.owner,
        )
    }

    pub fn delete(
        &self,
        node: NodeId,
        piece: PieceId,
        now_ms: u64,
    ) -> Result<Signed<DeleteOrder>, IdentityError> {
        Signed::sign(
            DeleteOrder {
                header: self.header(node, now_ms),
                piece_id: piece,
            },
            self.owner,
        )
    }

    /// The order extending the leases of `pieces` on `node` to `expires_at_ms`.
    pub fn renew(
        &self,
        node: NodeId,
        pieces: Vec<PieceId>,
        expires_at_ms: u64,
        now_ms: u64,
    ) -> Result<Signed<RenewOrder>, IdentityError> {
        Signed::sign(
            RenewOrder {
                header: self.header(node, now_ms),
                piece_ids: pieces,
                expires_at_ms,
            },
            self.owner,
        )
    }

    /// The order for block `block_index` of `piece` and the piece's block hashes.
    pub fn audit(
        &self,
        node: NodeId,
        piece: PieceId,
        block_index: u32,
        now_ms: u64,
    ) -> Result<Signed<AuditOrder>, IdentityError> {
        Signed::sign(
            AuditOrder {
                header: self.header(node, now_ms),
                piece_id: piece,
                block_index,
            },
            self.owner,
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use shoal_proto::pb;
    use shoal_proto::piece_hash::PieceHasher;

    #[test]
    fn orders_are_signed_by_the_owner_verify_on_the_wire_and_never_share_a_nonce() {
        let owner = Identity::from_seed([3; 32]);
        let orders = Orders::new(&owner);
        let (node, piece) = (NodeId([1; 32]), PieceId([2; 32]));
        let terms = UploadTerms {
            max_size: 10,
            block_size: 4096,
            expires_at_ms: 99,
        };
        let a = orders.upload(node, piece, terms, 5).unwrap();
        let b = orders.upload(node, piece, terms, 5).unwrap();
        assert_ne!(a.header.nonce, b.header.nonce);
        assert_eq!(
            (a.header.owner_key, a.header.timestamp_ms),
            (*owner.public_key(), 5)
        );
        let back = Signed::<UploadOrder>::try_from(pb::UploadOrder::from(&a)).unwrap();
        assert_eq!(back.body(), a.body());
        let mut h = PieceHasher::new(4096);
        h.update(b"0123456789");
        let t = orders.trailer(piece, &h.finish()).unwrap();
        assert_eq!(t.size, 10);
        let back = Signed::<RenewOrder>::try_from(pb::RenewOrder::from(
            &orders.renew(node, vec![piece], 7, 5).unwrap(),
        ))
        .unwrap();
        assert_eq!(back.piece_ids, vec![piece]);
        Signed::<DeleteOrder>::try_from(pb::DeleteOrder::from(
            &orders.delete(node, piece, 5).unwrap(),
        ))
        .unwrap();
        Signed::<AuditOrder>::try_from(pb::AuditOrder::from(
            &orders.audit(node, piece, 0, 5).unwrap(),
        ))
        .unwrap();
        Signed::<DownloadOrder>::try_from(pb::DownloadOrder::from(
            &orders.download(node, piece, 0, 0, 5).unwrap(),
        ))
        .unwrap();
    }
}
