//! The Discovery gRPC service: every request is checked at the edge (budget per peer,
//! wire form, signatures, proof of work), then answered by the core, through the driver
//! task that owns it.

use std::sync::Arc;

use shoal_proto::messages::MutableRecord;
use shoal_proto::pb::discovery_server::Discovery;
use shoal_proto::{RecordKey, Signed, pb};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

use super::rpc::{token_from, token_into};
use super::{Inbound, Inner, Peer, contact};
use crate::core::node::{self, Contact};
use crate::error::ServeError;

/// The Discovery service of one DHT participant (see [`super::DhtHandle::service`]).
#[derive(Debug, Clone)]
pub struct DiscoveryService {
    inner: Arc<Inner>,
}

/// Who a write token is bound to: the peer's IP address (BEP 44), as seen by the server.
fn requester<T>(req: &Request<T>) -> Vec<u8> {
    match req.remote_addr().map(|a| a.ip()) {
        Some(std::net::IpAddr::V4(v4)) => v4.octets().to_vec(),
        Some(std::net::IpAddr::V6(v6)) => v6.octets().to_vec(),
        None => Vec::new(),
    }
}

impl DiscoveryService {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        Self { inner }
    }

    /// Takes one request from the peer's budget (per IPv4 address or IPv6 /64), before
    /// anything else is looked at.
    fn admit<T>(&self, req: &Request<T>) -> Result<(), ServeError> {
        let Some(ip) = req.remote_addr().map(|a| a.ip()) else {
            return Ok(());
        };
        let now = self.inner.now();
        if super::lock(&self.inner.rate).admit(ip, now) {
            Ok(())
        } else {
            Err(ServeError::RateLimited)
        }
    }

    /// Checks the sender record (when present: uplinks send none and never enter the
    /// table).
    fn sender(&self, sender: Option<pb::NodeRecord>) -> Result<Option<Contact<Peer>>, ServeError> {
        let Some(m) = sender else {
            return Ok(None);
        };
        let rec = self.inner.check_node_record("sender record", m)?;
        Ok(Some(contact(&rec)))
    }

    fn responder(&self) -> Result<pb::NodeRecord, ServeError> {
        self.inner
            .local_record()
            .map(|p| pb::NodeRecord::from(&*p))
            .ok_or(ServeError::NotReady)
    }

    /// Hands a checked request to the driver task, which has the node answer it. When
    /// the task has too many waiting, the request is refused at once.
    async fn serve(
        &self,
        sender: Option<Contact<Peer>>,
        requester: Vec<u8>,
        request: node::Request,
    ) -> Result<node::Response<Peer>, ServeError> {
        let (reply, rx) = oneshot::channel();
        let inbound = Inbound {
            sender,
            requester,
            request,
            reply,
        };
        self.inner.inbound.try_send(inbound).map_err(|e| match e {
            TrySendError::Full(_) => ServeError::Busy,
            TrySendError::Closed(_) => ServeError::ShutDown,
        })?;
        Ok(rx.await.map_err(|_| ServeError::ShutDown)??)
    }
}

fn key32(field: &'static str, bytes: &[u8]) -> Result<[u8; 32], ServeError> {
    shoal_proto::NodeId::from_wire(field, bytes)
        .map(|n| n.0)
        .map_err(|source| ServeError::Wire {
            what: field,
            source,
        })
}

fn records(closer: Vec<Contact<Peer>>) -> Vec<pb::NodeRecord> {
    closer
        .iter()
        .map(|c| pb::NodeRecord::from(&*c.data))
        .collect()
}

#[tonic::async_trait]
impl Discovery for DiscoveryService {
    async fn ping(
        &self,
        req: Request<pb::PingRequest>,
    ) -> Result<Response<pb::PingResponse>, Status> {
        self.admit(&req)?;
        let who = requester(&req);
        let req = req.into_inner();
        let sender = self.sender(req.sender)?;
        let responder = self.responder()?;
        self.serve(sender, who, node::Request::Ping).await?;
        Ok(Response::new(pb::PingResponse {
            responder: Some(responder),
        }))
    }

    async fn find_node(
        &self,
        req: Request<pb::FindNodeRequest>,
    ) -> Result<Response<pb::FindNodeResponse>, Status> {
        self.admit(&req)?;
        let who = requester(&req);
        let req = req.into_inner();
        let target = key32("target", &req.target)?;
        let sender = self.sender(req.sender)?;
        let responder = self.responder()?;
        let closer = match self
            .serve(sender, who, node::Request::FindNode { target })
            .await?
        {
            node::Response::Nodes { closer } => records(closer),
            _ => Vec::new(),
        };
        Ok(Response::new(pb::FindNodeResponse {
            responder: Some(responder),
            closer,
        }))
    }

    async fn get_record(
        &self,
        req: Request<pb::GetRecordRequest>,
    ) -> Result<Response<pb::GetRecordResponse>, Status> {
        self.admit(&req)?;
        let who = requester(&req);
        let req = req.into_inner();
        let key = RecordKey(key32("key", &req.key)?);
        let sender = self.sender(req.sender)?;
        let responder = self.responder()?;
        let (record, closer, token) = match self
            .serve(sender, who, node::Request::GetRecord { key })
            .await?
        {
            node::Response::Record {
                record,
                closer,
                token,
            } => (
                record.map(|r| pb::MutableRecord::from(&r)),
                records(closer),
                token,
            ),
            _ => (None, Vec::new(), None),
        };
        let mut res = Response::new(pb::GetRecordResponse {
            responder: Some(responder),
            record,
            closer,
        });
        if let Some(t) = &token {
            token_into(res.metadata_mut(), t);
        }
        Ok(res)
    }

    async fn put_record(
        &self,
        req: Request<pb::PutRecordRequest>,
    ) -> Result<Response<pb::PutRecordResponse>, Status> {
        self.admit(&req)?;
        let who = requester(&req);
        let token = token_from(req.metadata());
        let req = req.into_inner();
        let record = req.record.ok_or(ServeError::Wire {
            what: "record",
            source: shoal_proto::WireError::Missing { field: "record" },
        })?;
        let record =
            Signed::<MutableRecord>::try_from(record).map_err(|source| ServeError::Wire {
                what: "record",
                source,
            })?;
        // A new key costs work before it may hold records here (see shoal_proto::work).
        shoal_proto::work::check_publisher_work(
            &record.public_key,
            record.work,
            self.inner.config.difficulty,
        )
        .map_err(ServeError::PublisherWork)?;
        let sender = self.sender(req.sender)?;
        let responder = self.responder()?;
        self.serve(
            sender,
            who,
            node::Request::PutRecord {
                record,
                expected_seq: req.expected_seq,
                token,
            },
        )
        .await?;
        Ok(Response::new(pb::PutRecordResponse {
            responder: Some(responder),
        }))
    }
}
