//! The real piece store: [`PieceStore`] over the generated gRPC `PieceStoreClient`, every
//! connection over node-identity TLS pinned to the node id of the placement (a node
//! that cannot prove that id's key is never sent an order or a byte).
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
use shoal_proto::limits::{MAX_CHUNK, MAX_GRPC_MESSAGE};
use shoal_proto::messages::{
    AuditOrder, DeleteOrder, DownloadOrder, MAX_LEASE_METADATA, Receipt, RenewOrder, RenewResult,
    UploadOrder,
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

fn status_error(node: NodeAddress, status: tonic::Status) -> PieceError {
    if let Some(wrong) = tls::wrong_node(&status) {
        return PieceError::Unreachable {
            node: node.id,
            address: node.address,
            reason: wrong.to_string(),
        };
    }
    // A failed connection shows in the status's source chain (tonic puts the transport
    // error there); the node's own refusals have none.
    if status.code() == tonic::Code::Unavailable || tls::connection_failed(&status) {
        return PieceError::Unreachable {
            node: node.id,
            address: node.address,
            reason: tls::error_chain(&status),
        };
    }
    match status.code() {
        tonic::Code::DeadlineExceeded => PieceError::Timeout {
            node: node.id,
            seconds: 0.0,
        },
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

    fn client(&self, node: NodeAddress) -> Result<PieceStoreClient<Channel>, PieceError> {
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
        Ok(PieceStoreClient::new(channel)
            .max_decoding_message_size(MAX_GRPC_MESSAGE)
            .max_encoding_message_size(MAX_GRPC_MESSAGE))
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

async fn upload(
    client: Result<PieceStoreClient<Channel>, PieceError>,
    node: NodeAddress,
    order: Signed<UploadOrder>,
    body: BoxStream<'static, UploadPart>,
) -> Result<Signed<Receipt>, PieceError> {
    let mut client = client?;
    let first = upload_request_order(&order);
    let requests = Requests {
        first: Some(first),
        body,
        held: None,
        ended: false,
    };
    let response = client
        .upload(requests)
        .await
        .map_err(|s| status_error(node, s))?
        .into_inner();
    let receipt = response.receipt.ok_or_else(|| PieceError::Protocol {
        node: node.id,
        reason: "upload response without a receipt".into(),
    })?;
    Signed::<Receipt>::try_from(receipt).map_err(|e| PieceError::Protocol {
        node: node.id,
        reason: format!("bad receipt: {e}"),
    })
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
        Box::pin(upload(self.client(node), node, order, body))
    }

    fn download(
        &self,
        node: NodeAddress,
        order: Signed<DownloadOrder>,
    ) -> BoxFuture<'static, Result<DownloadStream, PieceError>> {
        let client = self.client(node);
        Box::pin(async move {
            let mut client = client?;
            let request = pb::DownloadRequest {
                order: Some(pb::DownloadOrder::from(&order)),
            };
            let stream = client
                .download(request)
                .await
                .map_err(|s| status_error(node, s))?
                .into_inner();
            let parts = stream
                .map_err(move |s| status_error(node, s))
                .map_ok(move |m: pb::DownloadResponse| {
                    let mut parts = Vec::with_capacity(2);
                    if let Some(info) = m.info {
                        parts.push(PieceInfo::try_from(info).map(DownloadPart::Info).map_err(
                            |e| PieceError::Protocol {
                                node: node.id,
                                reason: format!("bad piece info: {e}"),
                            },
                        ));
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
        })
    }

    fn delete(
        &self,
        node: NodeAddress,
        order: Signed<DeleteOrder>,
    ) -> BoxFuture<'static, Result<(), PieceError>> {
        let client = self.client(node);
        Box::pin(async move {
            let mut client = client?;
            client
                .delete(pb::DeleteRequest {
                    order: Some(pb::DeleteOrder::from(&order)),
                })
                .await
                .map_err(|s| status_error(node, s))?;
            Ok(())
        })
    }

    fn renew(
        &self,
        node: NodeAddress,
        order: Signed<RenewOrder>,
    ) -> BoxFuture<'static, Result<Vec<RenewResult>, PieceError>> {
        let client = self.client(node);
        Box::pin(async move {
            let mut client = client?;
            let wanted = order.piece_ids.len();
            let response = client
                .renew(pb::RenewRequest {
                    order: Some(pb::RenewOrder::from(&order)),
                })
                .await
                .map_err(|s| status_error(node, s))?
                .into_inner();
            let protocol = |reason: String| PieceError::Protocol {
                node: node.id,
                reason,
            };
            if response.results.len() != wanted {
                return Err(protocol(format!(
                    "{} renew results for {wanted} pieces",
                    response.results.len()
                )));
            }
            let results = response
                .results
                .into_iter()
                .map(RenewResult::try_from)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| protocol(format!("bad renew result: {e}")))?;
            if results
                .iter()
                .zip(order.piece_ids.iter())
                .any(|(r, p)| r.piece_id != *p)
            {
                return Err(protocol("renew results for other pieces".into()));
            }
            Ok(results)
        })
    }

    fn audit(
        &self,
        node: NodeAddress,
        order: Signed<AuditOrder>,
    ) -> BoxFuture<'static, Result<(PieceInfo, Bytes), PieceError>> {
        let client = self.client(node);
        Box::pin(async move {
            let mut client = client?;
            let response = client
                .audit(pb::AuditRequest {
                    order: Some(pb::AuditOrder::from(&order)),
                })
                .await
                .map_err(|s| status_error(node, s))?
                .into_inner();
            let info = response.info.ok_or_else(|| PieceError::Protocol {
                node: node.id,
                reason: "audit response without piece info".into(),
            })?;
            let info = PieceInfo::try_from(info).map_err(|e| PieceError::Protocol {
                node: node.id,
                reason: format!("bad piece info: {e}"),
            })?;
            Ok((info, Bytes::from(response.block)))
        })
    }
}
