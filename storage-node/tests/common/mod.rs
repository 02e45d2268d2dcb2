//! A minimal owner-side client of the piece protocol, shared by the crash test and the
//! upload benchmark (the real client is the uplink's).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use shoal_proto::limits::{MAX_CHUNK, MAX_GRPC_MESSAGE};
use shoal_proto::messages::{DownloadOrder, Receipt, UploadOrder, UploadTrailer};
use shoal_proto::pb::piece_store_client::PieceStoreClient;
use shoal_proto::pb::{self, upload_request};
use shoal_proto::piece_hash::PieceHasher;
use shoal_proto::time::unix_ms;
use shoal_proto::{Identity, NodeId, PieceHash, PieceId, Signed};
use tonic::transport::Channel;

pub const BS: u32 = 4096;

/// Deterministic test data.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Piece bytes with their hash computed once (block size [`BS`] unless set).
#[derive(Debug, Clone)]
pub struct Payload {
    pub bytes: std::sync::Arc<Vec<u8>>,
    pub block_size: u32,
    pub root: PieceHash,
}

impl Payload {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self::with_block_size(bytes, BS)
    }

    pub fn with_block_size(bytes: Vec<u8>, block_size: u32) -> Self {
        let mut h = PieceHasher::new(block_size);
        h.update(&bytes);
        Self {
            root: h.finish().root(),
            bytes: std::sync::Arc::new(bytes),
            block_size,
        }
    }
}

/// A client of node `node` at `addr`, over node-identity TLS pinned to `node`.
pub async fn client(node: NodeId, addr: SocketAddr) -> PieceStoreClient<Channel> {
    let ch = shoal_proto::tls::Connector::channel(node, addr, |e| {
        e.connect_timeout(Duration::from_secs(5))
    })
    .unwrap();
    PieceStoreClient::new(ch)
        .max_decoding_message_size(MAX_GRPC_MESSAGE)
        .max_encoding_message_size(MAX_GRPC_MESSAGE)
}

pub async fn upload(
    c: &mut PieceStoreClient<Channel>,
    owner: &Identity,
    node: NodeId,
    piece: PieceId,
    payload: &Payload,
) -> Result<Signed<Receipt>, tonic::Status> {
    let now = unix_ms();
    let size = payload.bytes.len() as u64;
    let order = Signed::sign(
        UploadOrder {
            piece_id: piece,
            node_id: node,
            owner_key: *owner.public_key(),
            max_size: size,
            block_size: payload.block_size,
            expires_at_ms: now + 3_600_000,
            timestamp_ms: now,
            nonce: shoal_proto::Nonce::random(),
        },
        owner,
    )
    .unwrap();
    let trailer = Signed::sign(
        UploadTrailer {
            piece_id: piece,
            owner_key: *owner.public_key(),
            size,
            piece_hash: payload.root,
        },
        owner,
    )
    .unwrap();
    let order = pb::UploadRequest {
        message: Some(upload_request::Message::Order((&order).into())),
    };
    let trailer = pb::UploadRequest {
        message: Some(upload_request::Message::Trailer((&trailer).into())),
    };
    let bytes = std::sync::Arc::clone(&payload.bytes);
    let chunks = (0..bytes.len().div_ceil(MAX_CHUNK)).map(move |i| pb::UploadRequest {
        message: Some(upload_request::Message::Chunk(
            bytes[i * MAX_CHUNK..((i + 1) * MAX_CHUNK).min(bytes.len())]
                .to_vec()
                .into(),
        )),
    });
    let msgs = std::iter::once(order)
        .chain(chunks)
        .chain(std::iter::once(trailer));
    let r = c.upload(tokio_stream::iter(msgs)).await?.into_inner();
    let receipt = r
        .receipt
        .ok_or_else(|| tonic::Status::internal("no receipt"))?;
    Signed::<Receipt>::try_from(receipt).map_err(|e| tonic::Status::internal(e.to_string()))
}

pub async fn download(
    c: &mut PieceStoreClient<Channel>,
    owner: &Identity,
    node: NodeId,
    piece: PieceId,
) -> Result<Vec<u8>, tonic::Status> {
    let order = Signed::sign(
        DownloadOrder {
            piece_id: piece,
            node_id: node,
            owner_key: *owner.public_key(),
            offset: 0,
            length: 0,
            timestamp_ms: unix_ms(),
            nonce: shoal_proto::Nonce::random(),
        },
        owner,
    )
    .unwrap();
    let mut s = c
        .download(pb::DownloadRequest {
            order: Some((&order).into()),
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = s.message().await? {
        out.extend_from_slice(&m.data);
    }
    Ok(out)
}
