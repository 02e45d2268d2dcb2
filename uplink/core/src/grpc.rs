//! The real piece store: [`PieceStore`] over the generated gRPC `PieceStoreClient`, every
//! connection over node-identity TLS pinned to the node id of the placement (a node
//! that cannot prove that id's key is never sent an order or a byte).
//!
//! [`NodeClient`] is the one owner-side client of the piece protocol: the uplink's
//! transfers go through it (wrapped by [`GrpcPieceStore`], which maps its errors to
//! [`PieceError`]), and so do the tests and benchmarks of the node, which add only
//! malformed traffic on top (through [`NodeClient::wire`]). Orders come from
//! [`crate::orders`].
//!
//! Wire types stay here: orders and trailers go out through `From<&Signed<X>> for pb::X`,
//! receipts, piece infos and node records come back through `TryFrom`, which checks their
//! signatures and bounds. Everything else is verified by the orchestration.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use shoal_proto::Signed;
use shoal_proto::call::CallFailure;
use shoal_proto::limits::{MAX_CHUNK, MAX_GRPC_MESSAGE};
use shoal_proto::messages::{
    AuditOrder, DeleteOrder, DownloadOrder, ListPiecesOrder, ListedPiece, MAX_LEASE_METADATA,
    Receipt, RenewOrder, RenewResult, UploadOrder, check_listing,
};
use shoal_proto::pb::piece_store_client::PieceStoreClient;
use shoal_proto::piece_hash::PieceInfo;
use shoal_proto::{NodeId, pb, tls};
use tonic::transport::Channel;

use crate::store::{DownloadPart, DownloadStream, NodeAddress, PieceError, PieceStore, UploadPart};

/// Piece transfers over gRPC, one lazily connected HTTP/2 channel per node (id and
/// address).
#[derive(Debug)]
pub struct GrpcPieceStore {
    channels: Mutex<HashMap<(NodeId, SocketAddr), Channel>>,
    connect_timeout: Duration,
}

impl Default for GrpcPieceStore {
    fn default() -> Self {
        Self::new(Duration::from_secs(5))
    }
}

/// A channel to `node`, TLS pinned to its id.
fn channel(node: NodeAddress, connect_timeout: Duration) -> Result<Channel, PieceError> {
    tls::Connector::channel(node.id, node.address, |e| {
        e.connect_timeout(connect_timeout)
            .http2_keep_alive_interval(shoal_proto::limits::H2_KEEPALIVE_INTERVAL)
            .keep_alive_timeout(shoal_proto::limits::H2_KEEPALIVE_TIMEOUT)
            .max_frame_size(shoal_proto::limits::H2_MAX_FRAME)
            .initial_stream_window_size(shoal_proto::limits::H2_STREAM_WINDOW)
            .initial_connection_window_size(shoal_proto::limits::H2_CONNECTION_WINDOW)
    })
    .map_err(|e| PieceError::Unreachable {
        node: node.id,
        address: node.address,
        reason: e.to_string(),
    })
}

/// What went wrong in one call of [`NodeClient`].
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The node refused, or the connection failed (the code says which).
    #[error(transparent)]
    Status(#[from] tonic::Status),
    /// The node answered, but not as the protocol says.
    #[error("{0}")]
    Protocol(String),
}

impl From<CallError> for tonic::Status {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Status(s) => s,
            CallError::Protocol(reason) => tonic::Status::internal(reason),
        }
    }
}

fn call_error(node: NodeAddress, e: CallError) -> PieceError {
    match e {
        CallError::Status(s) => status_error(node, s),
        CallError::Protocol(reason) => PieceError::Protocol {
            node: node.id,
            reason,
        },
    }
}

fn status_error(node: NodeAddress, status: tonic::Status) -> PieceError {
    // The reading of a failed call is `shoal_proto::call`'s, shared with the DHT.
    match CallFailure::of(&status) {
        CallFailure::Unreachable => {
            let reason = match tls::wrong_node(&status) {
                Some(wrong) => wrong.to_string(),
                None => tls::error_chain(&status),
            };
            return PieceError::Unreachable {
                node: node.id,
                address: node.address,
                reason,
            };
        }
        CallFailure::TimedOut => {
            return PieceError::Timeout {
                node: node.id,
                seconds: 0.0,
            };
        }
        CallFailure::Refused => {}
    }
    match status.code() {
        tonic::Code::FailedPrecondition if status.metadata().get(MAX_LEASE_METADATA).is_some() => {
            match status
                .metadata()
                .get(MAX_LEASE_METADATA)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
            {
                Some(max_lease_ms) => PieceError::LeaseTooLong {
                    node: node.id,
                    max_lease_ms,
                },
                None => PieceError::Protocol {
                    node: node.id,
                    reason: format!("unreadable {MAX_LEASE_METADATA} metadata"),
                },
            }
        }
        code => PieceError::Refused {
            node: node.id,
            reason: format!("{code:?}: {}", status.message()),
        },
    }
}

impl GrpcPieceStore {
    pub fn new(connect_timeout: Duration) -> Self {
        Self {
            channels: Mutex::default(),
            connect_timeout,
        }
    }

    fn client(&self, node: NodeAddress) -> Result<NodeClient, PieceError> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        let key = (node.id, node.address);
        let channel = match channels.get(&key) {
            Some(c) => c.clone(),
            None => {
                let c = channel(node, self.connect_timeout)?;
                channels.insert(key, c.clone());
                c
            }
        };
        Ok(NodeClient::from_channel(channel))
    }
}

/// One node's piece-store client over node-identity TLS pinned to the node's id. Cheap to
/// clone (the HTTP/2 connection is shared).
#[derive(Debug, Clone)]
pub struct NodeClient {
    client: PieceStoreClient<Channel>,
}

impl NodeClient {
    /// A client of `node`; it connects on first use, and a peer that cannot prove
    /// `node.id`'s key is refused at the handshake.
    pub fn new(node: NodeAddress, connect_timeout: Duration) -> Result<Self, PieceError> {
        Ok(Self::from_channel(channel(node, connect_timeout)?))
    }

    fn from_channel(channel: Channel) -> Self {
        Self {
            client: PieceStoreClient::new(channel)
                .max_decoding_message_size(MAX_GRPC_MESSAGE)
                .max_encoding_message_size(MAX_GRPC_MESSAGE),
        }
    }

    /// The generated stub on the same connection, for tests that send what no owner
    /// would (tampered, replayed, truncated or out-of-order messages).
    pub fn wire(&mut self) -> &mut PieceStoreClient<Channel> {
        &mut self.client
    }

    /// Sends one upload as its request messages (the order first, the trailer last) and
    /// returns the node's receipt, its signature checked. The checks of the receipt
    /// against the order and the data are the caller's ([`crate::upload`]).
    pub async fn upload_requests(
        &mut self,
        requests: impl futures::Stream<Item = pb::UploadRequest> + Send + 'static,
    ) -> Result<Signed<Receipt>, CallError> {
        let response = self.client.upload(requests).await?.into_inner();
        let receipt = response
            .receipt
            .ok_or_else(|| CallError::Protocol("upload response without a receipt".into()))?;
        Signed::<Receipt>::try_from(receipt)
            .map_err(|e| CallError::Protocol(format!("bad receipt: {e}")))
    }

    /// Sends `order`, then every part of `body`; a body that ends without a trailer
    /// cancels the upload (the node discards the piece).
    pub async fn upload(
        &mut self,
        order: &Signed<UploadOrder>,
        body: BoxStream<'static, UploadPart>,
    ) -> Result<Signed<Receipt>, CallError> {
        self.upload_requests(Requests {
            first: Some(upload_request_order(order)),
            body,
            held: None,
            ended: false,
        })
        .await
    }

    /// Sends `order` and returns the node's stream: [`DownloadPart::Info`] first (its
    /// bounds and hashes checked), then data.
    pub async fn download(
        &mut self,
        order: &Signed<DownloadOrder>,
    ) -> Result<BoxStream<'static, Result<DownloadPart, CallError>>, CallError> {
        let request = pb::DownloadRequest {
            order: Some(pb::DownloadOrder::from(order)),
        };
        let stream = self.client.download(request).await?.into_inner();
        let parts = stream
            .map_err(CallError::Status)
            .map_ok(|m: pb::DownloadResponse| {
                let mut parts = Vec::with_capacity(2);
                if let Some(info) = m.info {
                    parts.push(
                        PieceInfo::try_from(info)
                            .map(DownloadPart::Info)
                            .map_err(|e| CallError::Protocol(format!("bad piece info: {e}"))),
                    );
                }
                if !m.data.is_empty() {
                    parts.push(Ok(DownloadPart::Data {
                        offset: m.offset,
                        data: m.data,
                    }));
                }
                futures::stream::iter(parts)
            })
            .try_flatten();
        Ok(parts.boxed())
    }

    pub async fn delete(&mut self, order: &Signed<DeleteOrder>) -> Result<(), CallError> {
        self.client
            .delete(pb::DeleteRequest {
                order: Some(pb::DeleteOrder::from(order)),
            })
            .await?;
        Ok(())
    }

    /// The node's result for each piece of `order`, in its order.
    pub async fn renew(
        &mut self,
        order: &Signed<RenewOrder>,
    ) -> Result<Vec<RenewResult>, CallError> {
        let wanted = order.piece_ids.len();
        let response = self
            .client
            .renew(pb::RenewRequest {
                order: Some(pb::RenewOrder::from(order)),
            })
            .await?
            .into_inner();
        if response.results.len() != wanted {
            return Err(CallError::Protocol(format!(
                "{} renew results for {wanted} pieces",
                response.results.len()
            )));
        }
        let results = response
            .results
            .into_iter()
            .map(RenewResult::try_from)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CallError::Protocol(format!("bad renew result: {e}")))?;
        if results
            .iter()
            .zip(order.piece_ids.iter())
            .any(|(r, p)| r.piece_id != *p)
        {
            return Err(CallError::Protocol("renew results for other pieces".into()));
        }
        Ok(results)
    }

    /// One page of the owner's pieces on this node, checked against the order (at most
    /// its limit, ids ascending after its cursor, tags within bounds).
    pub async fn list_pieces(
        &mut self,
        order: &Signed<ListPiecesOrder>,
    ) -> Result<Vec<ListedPiece>, CallError> {
        let response = self
            .client
            .list_pieces(pb::ListPiecesRequest {
                order: Some(pb::ListPiecesOrder::from(order)),
            })
            .await?
            .into_inner();
        check_listing(order, response)
            .map_err(|e| CallError::Protocol(format!("bad piece listing: {e}")))
    }

    /// The piece's info and the audited block (verifying it is the caller's).
    pub async fn audit(
        &mut self,
        order: &Signed<AuditOrder>,
    ) -> Result<(PieceInfo, Bytes), CallError> {
        let response = self
            .client
            .audit(pb::AuditRequest {
                order: Some(pb::AuditOrder::from(order)),
            })
            .await?
            .into_inner();
        let info = response
            .info
            .ok_or_else(|| CallError::Protocol("audit response without piece info".into()))?;
        let info = PieceInfo::try_from(info)
            .map_err(|e| CallError::Protocol(format!("bad piece info: {e}")))?;
        Ok((info, Bytes::from(response.block)))
    }
}

fn upload_request(part: UploadPart) -> pb::UploadRequest {
    use pb::upload_request::Message;
    pb::UploadRequest {
        message: Some(match part {
            UploadPart::Chunk(b) => Message::Chunk(b),
            UploadPart::Trailer(t) => Message::Trailer(pb::UploadTrailer::from(&*t)),
        }),
    }
}

/// The upload's request stream: the order, then the body, with consecutive data chunks
/// that are already available merged into messages of up to [`MAX_CHUNK`] bytes (one
/// copy, which the `Vec` field of the message needs anyway; far fewer messages). A
/// named type, not a stream combinator with a closure, so that the future is `Send`.
struct Requests {
    first: Option<pb::UploadRequest>,
    body: BoxStream<'static, UploadPart>,
    held: Option<UploadPart>,
    ended: bool,
}

impl futures::Stream for Requests {
    type Item = pb::UploadRequest;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<pb::UploadRequest>> {
        use std::task::Poll;
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(first));
        }
        // The chunks already available, sent as one message: a lone chunk as it is (no
        // copy), several copied into one buffer.
        let mut parts: Vec<Bytes> = Vec::new();
        let mut size = 0;
        if let Some(part) = self.held.take() {
            match part {
                UploadPart::Chunk(b) => {
                    size = b.len();
                    parts.push(b);
                }
                trailer => return Poll::Ready(Some(upload_request(trailer))),
            }
        }
        while !self.ended && size < MAX_CHUNK / 2 {
            match self.body.poll_next_unpin(cx) {
                Poll::Ready(Some(UploadPart::Chunk(b))) => {
                    if size > 0 && size + b.len() > MAX_CHUNK {
                        self.held = Some(UploadPart::Chunk(b));
                        break;
                    }
                    size += b.len();
                    parts.push(b);
                }
                Poll::Ready(Some(trailer)) => {
                    if size == 0 {
                        return Poll::Ready(Some(upload_request(trailer)));
                    }
                    self.held = Some(trailer);
                    break;
                }
                Poll::Ready(None) => self.ended = true,
                Poll::Pending if size == 0 => return Poll::Pending,
                Poll::Pending => break,
            }
        }
        let chunk = match parts.len() {
            0 => return Poll::Ready(None),
            1 => parts.swap_remove(0),
            _ => {
                let mut merged = BytesMut::with_capacity(size);
                for p in &parts {
                    merged.extend_from_slice(p);
                }
                merged.freeze()
            }
        };
        Poll::Ready(Some(pb::UploadRequest {
            message: Some(pb::upload_request::Message::Chunk(chunk)),
        }))
    }
}

fn upload_request_order(order: &Signed<UploadOrder>) -> pb::UploadRequest {
    pb::UploadRequest {
        message: Some(pb::upload_request::Message::Order(pb::UploadOrder::from(
            order,
        ))),
    }
}

impl PieceStore for GrpcPieceStore {
    fn upload(
        &self,
        node: NodeAddress,
        order: Signed<UploadOrder>,
        body: BoxStream<'static, UploadPart>,
    ) -> BoxFuture<'static, Result<Signed<Receipt>, PieceError>> {
        let client = self.client(node);
        Box::pin(async move {
            client?
                .upload(&order, body)
                .await
                .map_err(|e| call_error(node, e))
        })
    }

    fn download(
        &self,
        node: NodeAddress,
        order: Signed<DownloadOrder>,
    ) -> BoxFuture<'static, Result<DownloadStream, PieceError>> {
        let client = self.client(node);
        Box::pin(async move {
            let parts = client?
                .download(&order)
                .await
                .map_err(|e| call_error(node, e))?;
            Ok(parts.map_err(move |e| call_error(node, e)).boxed())
        })
    }

    fn delete(
        &self,
        node: NodeAddress,
        order: Signed<DeleteOrder>,
    ) -> BoxFuture<'static, Result<(), PieceError>> {
        let client = self.client(node);
        Box::pin(async move {
            client?
                .delete(&order)
                .await
                .map_err(|e| call_error(node, e))
        })
    }

    fn renew(
        &self,
        node: NodeAddress,
        order: Signed<RenewOrder>,
    ) -> BoxFuture<'static, Result<Vec<RenewResult>, PieceError>> {
        let client = self.client(node);
        Box::pin(async move { client?.renew(&order).await.map_err(|e| call_error(node, e)) })
    }

    fn audit(
        &self,
        node: NodeAddress,
        order: Signed<AuditOrder>,
    ) -> BoxFuture<'static, Result<(PieceInfo, Bytes), PieceError>> {
        let client = self.client(node);
        Box::pin(async move { client?.audit(&order).await.map_err(|e| call_error(node, e)) })
    }

    fn list_pieces(
        &self,
        node: NodeAddress,
        order: Signed<ListPiecesOrder>,
    ) -> BoxFuture<'static, Result<Vec<ListedPiece>, PieceError>> {
        let client = self.client(node);
        Box::pin(async move {
            client?
                .list_pieces(&order)
                .await
                .map_err(|e| call_error(node, e))
        })
    }
}
