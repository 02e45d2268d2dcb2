//! The crash test's and the upload benchmark's owner: the uplink's orders and its client
//! ([`uplink::grpc::NodeClient`]), with deterministic test data.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use shoal_proto::messages::Receipt;
use shoal_proto::piece_hash::{PieceHasher, PieceInfo};
use shoal_proto::time::unix_ms;
use shoal_proto::{Identity, NodeId, PieceId, Signed};
use uplink::grpc::{CallError, NodeClient};
use uplink::orders::{Orders, UploadTerms};
use uplink::store::{DownloadPart, NodeAddress, UploadPart};

pub const BS: u32 = 4096;

/// Deterministic test data (the test kit's).
pub use shoal_test_kit::test_data as data;

/// Piece bytes with their hashes computed once (block size [`BS`] unless set).
#[derive(Debug, Clone)]
pub struct Payload {
    pub bytes: std::sync::Arc<Vec<u8>>,
    pub block_size: u32,
    pub info: PieceInfo,
}

impl Payload {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self::with_block_size(bytes, BS)
    }

    pub fn with_block_size(bytes: Vec<u8>, block_size: u32) -> Self {
        let mut h = PieceHasher::new(block_size);
        h.update(&bytes);
        Self {
            info: h.finish(),
            bytes: std::sync::Arc::new(bytes),
            block_size,
        }
    }
}

/// The uplink's client of node `node` at `addr`, over node-identity TLS pinned to `node`.
pub async fn client(node: NodeId, addr: SocketAddr) -> NodeClient {
    let node = NodeAddress {
        id: node,
        address: addr,
    };
    NodeClient::new(node, Duration::from_secs(5)).unwrap()
}

/// Uploads `payload` as the uplink does: its orders, its client.
pub async fn upload(
    c: &mut NodeClient,
    owner: &Identity,
    node: NodeId,
    piece: PieceId,
    payload: &Payload,
) -> Result<Signed<Receipt>, CallError> {
    let now = unix_ms();
    let size = payload.bytes.len() as u64;
    let orders = Orders::new(owner);
    let terms = UploadTerms {
        max_size: size,
        block_size: payload.block_size,
        expires_at_ms: now + 3_600_000,
    };
    let order = orders.upload(node, piece, terms, now).unwrap();
    let trailer = orders.trailer(piece, &payload.info).unwrap();
    let body = UploadPart::whole_piece(Bytes::from(payload.bytes.as_ref().clone()), trailer);
    c.upload(&order, body).await
}

/// Downloads a whole piece through the uplink's client.
pub async fn download(
    c: &mut NodeClient,
    owner: &Identity,
    node: NodeId,
    piece: PieceId,
) -> Result<Vec<u8>, CallError> {
    let order = Orders::new(owner)
        .download(node, piece, 0, 0, unix_ms())
        .unwrap();
    let mut s = c.download(&order).await?;
    let mut out = Vec::new();
    while let Some(part) = s.next().await {
        if let DownloadPart::Data { data, .. } = part? {
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}
