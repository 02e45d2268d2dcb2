//! Fake storage nodes over real gRPC: the in-memory store behind tonic `PieceStore` and
//! `Discovery` servers, one per address `127.0.N.1:0`, over node-identity TLS like real
//! nodes. For end-to-end tests of the
//! uplink's gRPC client and CLI, and for loopback benchmarks, without the storage-node
//! crate (which the uplink must not depend on).

use std::net::SocketAddr;

use futures::{StreamExt, TryStreamExt};
use shoal_proto::messages::{
    AuditOrder, DeleteOrder, DownloadOrder, ListPiecesOrder, RenewOrder, UploadOrder, UploadTrailer,
};
use shoal_proto::pb::discovery_server::{Discovery, DiscoveryServer};
use shoal_proto::pb::piece_store_server::{PieceStore as PieceStoreService, PieceStoreServer};
use shoal_proto::{NodeId, Signed, pb};
use tokio::sync::oneshot;
use tonic::{Request, Response, Status, Streaming};

use super::MemoryPieceStore;
use crate::store::{DownloadPart, NodeAddress, PieceStore, UploadPart};

/// One fake node: the shared in-memory store, answering as `id`.
#[derive(Debug, Clone)]
struct FakeNode {
    store: MemoryPieceStore,
    id: NodeId,
    address: SocketAddr,
}

fn bad(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(e.to_string())
}

fn piece_status(e: crate::store::PieceError) -> Status {
    Status::failed_precondition(e.to_string())
}

#[tonic::async_trait]
impl PieceStoreService for FakeNode {
    async fn upload(
        &self,
        request: Request<Streaming<pb::UploadRequest>>,
    ) -> Result<Response<pb::UploadResponse>, Status> {
        use pb::upload_request::Message;
        let mut stream = request.into_inner();
        let Some(Ok(pb::UploadRequest {
            message: Some(Message::Order(order)),
        })) = stream.next().await
        else {
            return Err(bad("first message must be the order"));
        };
        let order = Signed::<UploadOrder>::try_from(order).map_err(bad)?;
        let body = stream
            .filter_map(|m| {
                futures::future::ready(match m.ok().and_then(|m| m.message) {
                    Some(Message::Chunk(c)) => Some(UploadPart::Chunk(c)),
                    Some(Message::Trailer(t)) => Signed::<UploadTrailer>::try_from(t)
                        .ok()
                        .map(|t| UploadPart::Trailer(Box::new(t))),
                    _ => None,
                })
            })
            .boxed();
        let node = NodeAddress {
            id: self.id,
            address: self.address,
        };
        let receipt = self
            .store
            .upload(node, order, body)
            .await
            .map_err(piece_status)?;
        Ok(Response::new(pb::UploadResponse {
            receipt: Some(pb::Receipt::from(&receipt)),
        }))
    }

    type DownloadStream = futures::stream::BoxStream<'static, Result<pb::DownloadResponse, Status>>;

    async fn download(
        &self,
        request: Request<pb::DownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        let order = request.into_inner().order.ok_or_else(|| bad("no order"))?;
        let order = Signed::<DownloadOrder>::try_from(order).map_err(bad)?;
        let node = NodeAddress {
            id: self.id,
            address: self.address,
        };
        let parts = self
            .store
            .download(node, order)
            .await
            .map_err(piece_status)?;
        let out = parts
            .map_err(piece_status)
            .map_ok(|p| match p {
                DownloadPart::Info(info) => pb::DownloadResponse {
                    info: Some((&info).into()),
                    offset: 0,
                    data: bytes::Bytes::new(),
                },
                DownloadPart::Data { offset, data } => pb::DownloadResponse {
                    info: None,
                    offset,
                    data,
                },
            })
            .boxed();
        Ok(Response::new(out))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let order = request.into_inner().order.ok_or_else(|| bad("no order"))?;
        let order = Signed::<DeleteOrder>::try_from(order).map_err(bad)?;
        let node = NodeAddress {
            id: self.id,
            address: self.address,
        };
        self.store.delete(node, order).await.map_err(piece_status)?;
        Ok(Response::new(pb::DeleteResponse {}))
    }

    async fn audit(
        &self,
        request: Request<pb::AuditRequest>,
    ) -> Result<Response<pb::AuditResponse>, Status> {
        let order = request.into_inner().order.ok_or_else(|| bad("no order"))?;
        let order = Signed::<AuditOrder>::try_from(order).map_err(bad)?;
        let node = NodeAddress {
            id: self.id,
            address: self.address,
        };
        let (info, block) = self.store.audit(node, order).await.map_err(piece_status)?;
        Ok(Response::new(pb::AuditResponse {
            info: Some((&info).into()),
            block: block.to_vec(),
        }))
    }

    async fn renew(
        &self,
        request: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::RenewResponse>, Status> {
        let order = request.into_inner().order.ok_or_else(|| bad("no order"))?;
        let order = Signed::<RenewOrder>::try_from(order).map_err(bad)?;
        let node = NodeAddress {
            id: self.id,
            address: self.address,
        };
        let results = self.store.renew(node, order).await.map_err(piece_status)?;
        Ok(Response::new(pb::RenewResponse {
            results: results.iter().map(pb::RenewResult::from).collect(),
        }))
    }

    async fn list_pieces(
        &self,
        request: Request<pb::ListPiecesRequest>,
    ) -> Result<Response<pb::ListPiecesResponse>, Status> {
        let order = request.into_inner().order.ok_or_else(|| bad("no order"))?;
        let order = Signed::<ListPiecesOrder>::try_from(order).map_err(bad)?;
        let node = NodeAddress {
            id: self.id,
            address: self.address,
        };
        let pieces = self
            .store
            .list_pieces(node, order)
            .await
            .map_err(piece_status)?;
        Ok(Response::new(pb::ListPiecesResponse {
            pieces: pieces.iter().map(pb::ListedPiece::from).collect(),
        }))
    }
}

#[tonic::async_trait]
impl Discovery for FakeNode {
    async fn ping(
        &self,
        _: Request<pb::PingRequest>,
    ) -> Result<Response<pb::PingResponse>, Status> {
        let record = self
            .store
            .node_record(&self.id)
            .ok_or_else(|| Status::internal("no record"))?;
        Ok(Response::new(pb::PingResponse {
            responder: Some((&record).into()),
        }))
    }

    async fn find_node(
        &self,
        _: Request<pb::FindNodeRequest>,
    ) -> Result<Response<pb::FindNodeResponse>, Status> {
        Err(Status::unimplemented("find_node"))
    }

    async fn get_record(
        &self,
        _: Request<pb::GetRecordRequest>,
    ) -> Result<Response<pb::GetRecordResponse>, Status> {
        Err(Status::unimplemented("get_record"))
    }

    async fn put_record(
        &self,
        _: Request<pb::PutRecordRequest>,
    ) -> Result<Response<pb::PutRecordResponse>, Status> {
        Err(Status::unimplemented("put_record"))
    }
}

/// A set of fake nodes serving gRPC; stopped when dropped.
#[derive(Debug)]
pub struct FakeNetwork {
    pub store: MemoryPieceStore,
    pub addresses: Vec<SocketAddr>,
    stops: Vec<oneshot::Sender<()>>,
}

impl FakeNetwork {
    /// Starts `n` nodes, node `i` on `127.0.(i+1).1` (a /24 each), port 0. Must be called
    /// within a tokio runtime.
    pub async fn start(n: usize) -> std::io::Result<Self> {
        let store = MemoryPieceStore::default();
        let mut addresses = Vec::new();
        let mut stops = Vec::new();
        for i in 0..n {
            let ip = format!("127.{}.{}.1", (i + 1) / 250, (i + 1) % 250);
            let listener = tokio::net::TcpListener::bind(format!("{ip}:0")).await?;
            let address = listener.local_addr()?;
            let id = store.add_node(address, 1 << 40);
            let node = FakeNode {
                store: store.clone(),
                id,
                address,
            };
            let tls_config = store
                .with_identity(&id, shoal_proto::tls::server_config)
                .ok_or_else(|| std::io::Error::other("node vanished"))?
                .map_err(std::io::Error::other)?;
            let incoming = shoal_proto::tls::accept(
                // As the storage node serves: no Nagle delay on small answers.
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                tls_config,
            );
            let (tx, rx) = oneshot::channel::<()>();
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(
                        PieceStoreServer::new(node.clone())
                            .max_decoding_message_size(shoal_proto::limits::MAX_GRPC_MESSAGE)
                            .max_encoding_message_size(shoal_proto::limits::MAX_GRPC_MESSAGE),
                    )
                    .add_service(DiscoveryServer::new(node))
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = rx.await;
                    }),
            );
            addresses.push(address);
            stops.push(tx);
        }
        Ok(Self {
            store,
            addresses,
            stops,
        })
    }
}

impl Drop for FakeNetwork {
    fn drop(&mut self) {
        for s in self.stops.drain(..) {
            let _ = s.send(());
        }
    }
}
