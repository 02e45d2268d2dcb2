//! How the uplink reaches storage nodes and finds them: two small traits.
//!
//! - [`PieceStore`]: upload, download and delete one piece on one node. The uplink speaks
//!   only through the signed domain types of `shoal_proto::messages`; an implementation
//!   carries them over the wire ([`crate::grpc::GrpcPieceStore`] over the generated
//!   `PieceStoreClient`) or keeps them in memory ([`crate::testing::MemoryPieceStore`]).
//!   Implementations are transport only: every receipt, piece info and block they hand
//!   back is verified by the uplink, so a lying node (or a buggy store) cannot make it
//!   accept bad data.
//! - [`NodeSource`]: candidate nodes for new pieces. The DHT's membership sampler backs it
//!   in production; [`StaticNodes`] serves a fixed list.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use shoal_proto::messages::{
    AuditOrder, DeleteOrder, DownloadOrder, ListPiecesOrder, ListedPiece, NodeRecord, Receipt,
    RenewOrder, RenewResult, UploadOrder, UploadTrailer,
};
use shoal_proto::piece_hash::PieceInfo;
use shoal_proto::{NodeId, PublicKey, Signed};

/// Where to reach one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeAddress {
    pub id: NodeId,
    pub address: SocketAddr,
}

/// A node that may receive new pieces: what the discovery layer knows about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCandidate {
    pub id: NodeId,
    /// The node's key when known (from its signed record). Optional: the node id is the
    /// hash of the key, so receipts are checked against the id either way.
    pub public_key: Option<PublicKey>,
    pub address: SocketAddr,
    /// Bytes the node says it will still accept.
    pub free_space: u64,
}

impl NodeCandidate {
    /// A candidate from a verified node record (its first address). `None` when the
    /// record has no address.
    pub fn from_record(record: &NodeRecord) -> Option<Self> {
        Some(Self {
            id: record.node_id(),
            public_key: Some(record.public_key),
            address: *record.addresses.first()?,
            free_space: record.free_space,
        })
    }

    pub fn address(&self) -> NodeAddress {
        NodeAddress {
            id: self.id,
            address: self.address,
        }
    }
}

/// One message of an upload after the order: data, then the owner-signed trailer.
#[derive(Debug, Clone)]
pub enum UploadPart {
    Chunk(Bytes),
    Trailer(Box<Signed<UploadTrailer>>),
}

impl UploadPart {
    /// The body of an upload of a whole piece held in memory: `data` in chunks of at most
    /// `MAX_CHUNK` bytes (slices of it, no copy), then `trailer`.
    pub fn whole_piece(
        data: Bytes,
        trailer: Signed<UploadTrailer>,
    ) -> BoxStream<'static, UploadPart> {
        use futures::StreamExt;
        let chunk = shoal_proto::limits::MAX_CHUNK;
        let chunks = (0..data.len().div_ceil(chunk))
            .map(move |i| Self::Chunk(data.slice(i * chunk..((i + 1) * chunk).min(data.len()))));
        futures::stream::iter(chunks.chain(std::iter::once(Self::Trailer(Box::new(trailer)))))
            .boxed()
    }
}

/// One message of a download: the piece info first, then data at `offset`.
#[derive(Debug, Clone)]
pub enum DownloadPart {
    Info(PieceInfo),
    Data { offset: u64, data: Bytes },
}

/// Why one piece transfer failed. The uplink treats every kind as "this piece is
/// missing"; the kind decides what it remembers about the node.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PieceError {
    #[error("node {node} at {address} cannot be reached: {reason}")]
    Unreachable {
        node: NodeId,
        address: SocketAddr,
        reason: String,
    },
    #[error("node {node} refused: {reason}")]
    Refused { node: NodeId, reason: String },
    #[error("node {node} broke the protocol: {reason}")]
    Protocol { node: NodeId, reason: String },
    #[error("node {node} served data that does not match its hash: {reason}")]
    Corrupt { node: NodeId, reason: String },
    #[error("node {node} did not answer within {seconds:.1} s")]
    Timeout { node: NodeId, seconds: f64 },
    #[error("node {node} was cut off: {reason}")]
    Cancelled { node: NodeId, reason: String },
    /// The node refused a lease ending later than `max_lease_ms` from now (its
    /// `max_lease`); an order up to that limit is accepted.
    #[error("node {node} accepts leases of at most {max_lease_ms} ms")]
    LeaseTooLong { node: NodeId, max_lease_ms: u64 },
}

impl PieceError {
    pub fn node(&self) -> NodeId {
        match self {
            Self::Unreachable { node, .. }
            | Self::Refused { node, .. }
            | Self::Protocol { node, .. }
            | Self::Corrupt { node, .. }
            | Self::Timeout { node, .. }
            | Self::Cancelled { node, .. }
            | Self::LeaseTooLong { node, .. } => *node,
        }
    }
}

/// Streams of download messages.
pub type DownloadStream = BoxStream<'static, Result<DownloadPart, PieceError>>;

/// Piece transfers with one node each. The futures are `'static` so that the uplink can
/// run them as tasks and cancel them by dropping.
pub trait PieceStore: Send + Sync + 'static {
    /// Sends `order`, then every part of `body` (data chunks, then the trailer), and
    /// returns the node's receipt, signature already checked (`Signed<Receipt>`). If
    /// `body` ends without a trailer the upload was cancelled: the implementation ends
    /// the stream and the node discards the piece.
    fn upload(
        &self,
        node: NodeAddress,
        order: Signed<UploadOrder>,
        body: BoxStream<'static, UploadPart>,
    ) -> BoxFuture<'static, Result<Signed<Receipt>, PieceError>>;

    /// Sends `order` and returns the node's stream: [`DownloadPart::Info`] first, then
    /// whole blocks covering the requested range.
    fn download(
        &self,
        node: NodeAddress,
        order: Signed<DownloadOrder>,
    ) -> BoxFuture<'static, Result<DownloadStream, PieceError>>;

    fn delete(
        &self,
        node: NodeAddress,
        order: Signed<DeleteOrder>,
    ) -> BoxFuture<'static, Result<(), PieceError>>;

    /// Sends one batch renew order; the node's outcome per piece, in the order's order.
    fn renew(
        &self,
        node: NodeAddress,
        order: Signed<RenewOrder>,
    ) -> BoxFuture<'static, Result<Vec<RenewResult>, PieceError>>;

    /// Asks for one block of a piece: the piece info and the block, both unverified
    /// (the caller checks them against the recorded piece hash).
    fn audit(
        &self,
        node: NodeAddress,
        order: Signed<AuditOrder>,
    ) -> BoxFuture<'static, Result<(PieceInfo, Bytes), PieceError>>;

    /// One page of the owner's pieces on the node (at most the order's limit, ids
    /// ascending after its cursor; a shorter page is the last). The tags are as the
    /// node stored them: the caller opens them and trusts nothing else.
    fn list_pieces(
        &self,
        node: NodeAddress,
        order: Signed<ListPiecesOrder>,
    ) -> BoxFuture<'static, Result<Vec<ListedPiece>, PieceError>>;
}

/// Why no candidates could be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node discovery failed: {0}")]
pub struct DiscoveryError(pub String);

/// Candidate nodes for new pieces. Production: the DHT membership sampler (uniform over
/// the membership, not "closest to a random id"); the uplink then applies its own
/// selection rules ([`crate::select`]).
pub trait NodeSource: Send + Sync + 'static {
    /// Up to about `wanted` candidates (more is fine: the uplink filters and picks).
    fn sample(&self, wanted: usize) -> BoxFuture<'_, Result<Vec<NodeCandidate>, DiscoveryError>>;
}

/// A fixed list of candidates.
#[derive(Debug, Clone, Default)]
pub struct StaticNodes(pub Vec<NodeCandidate>);

impl NodeSource for StaticNodes {
    fn sample(&self, _wanted: usize) -> BoxFuture<'_, Result<Vec<NodeCandidate>, DiscoveryError>> {
        let nodes = self.0.clone();
        Box::pin(async move { Ok(nodes) })
    }
}

impl<T: NodeSource + ?Sized> NodeSource for Arc<T> {
    fn sample(&self, wanted: usize) -> BoxFuture<'_, Result<Vec<NodeCandidate>, DiscoveryError>> {
        (**self).sample(wanted)
    }
}

/// Where one piece of a segment lives; recorded in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PiecePlacement {
    /// Piece index in the segment (= erasure shard index).
    pub index: u16,
    #[serde(with = "crate::hexser")]
    pub node_id: [u8; 32],
    pub address: SocketAddr,
    #[serde(with = "crate::hexser")]
    pub piece_id: [u8; 32],
    /// Root over the piece's block hashes, as in the node's receipt.
    #[serde(with = "crate::hexser")]
    pub piece_hash: [u8; 32],
}

impl PiecePlacement {
    pub fn node(&self) -> NodeAddress {
        NodeAddress {
            id: NodeId(self.node_id),
            address: self.address,
        }
    }
}
