//! The Discovery gRPC service: every request is checked at the edge, then answered from
//! the core.

use std::sync::Arc;

use shoal_proto::messages::MutableRecord;
use shoal_proto::pb::discovery_server::Discovery;
use shoal_proto::{RecordKey, Signed, pb};
use tonic::{Request, Response, Status};

use super::{Inner, lock};
use crate::error::ServeError;

/// Largest encoded Discovery message: 21 node records of at most ~700 bytes plus a 4 KiB
/// record fit well within it.
pub(crate) const MAX_DISCOVERY_MESSAGE: usize = 64 * 1024;

/// The Discovery service of one DHT participant (see [`super::DhtHandle::service`]).
#[derive(Debug, Clone)]
pub struct DiscoveryService {
    inner: Arc<Inner>,
}

impl DiscoveryService {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        Self { inner }
    }

    /// Checks the sender record (when present) and hands it to the dial-back logic.
    fn sender(&self, sender: Option<pb::NodeRecord>) -> Result<(), ServeError> {
        let Some(m) = sender else {
            // Uplinks send none: they are served but never enter the table.
            return Ok(());
        };
        let rec = self.inner.check_node_record("sender record", m)?;
        self.inner.on_sender(rec);
        Ok(())
    }

    fn responder(&self) -> Result<pb::NodeRecord, ServeError> {
        lock(&self.inner.local)
            .as_ref()
            .map(|p| pb::NodeRecord::from(&**p))
            .ok_or(ServeError::NotReady)
    }

    fn closer(&self, target: &[u8; 32]) -> Vec<pb::NodeRecord> {
        let table = lock(&self.inner.table);
        table
            .closest(
                target,
                self.inner
                    .config
                    .k
                    .min(shoal_proto::limits::MAX_CLOSER_NODES),
                true,
            )
            .into_iter()
            .map(|e| pb::NodeRecord::from(&*e.data))
            .collect()
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

#[tonic::async_trait]
impl Discovery for DiscoveryService {
    async fn ping(
        &self,
        req: Request<pb::PingRequest>,
    ) -> Result<Response<pb::PingResponse>, Status> {
        let req = req.into_inner();
        self.sender(req.sender)?;
        Ok(Response::new(pb::PingResponse {
            responder: Some(self.responder()?),
        }))
    }

    async fn find_node(
        &self,
        req: Request<pb::FindNodeRequest>,
    ) -> Result<Response<pb::FindNodeResponse>, Status> {
        let req = req.into_inner();
        let target = key32("target", &req.target)?;
        self.sender(req.sender)?;
        Ok(Response::new(pb::FindNodeResponse {
            responder: Some(self.responder()?),
            closer: self.closer(&target),
        }))
    }

    async fn get_record(
        &self,
        req: Request<pb::GetRecordRequest>,
    ) -> Result<Response<pb::GetRecordResponse>, Status> {
        let req = req.into_inner();
        let key = RecordKey(key32("key", &req.key)?);
        self.sender(req.sender)?;
        let now = shoal_proto::time::unix_ms();
        let record = lock(&self.inner.store)
            .get(&key, now)
            .map(pb::MutableRecord::from);
        Ok(Response::new(pb::GetRecordResponse {
            responder: Some(self.responder()?),
            record,
            closer: self.closer(&key.0),
        }))
    }

    async fn put_record(
        &self,
        req: Request<pb::PutRecordRequest>,
    ) -> Result<Response<pb::PutRecordResponse>, Status> {
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
        self.sender(req.sender)?;
        // LATER: BEP 44 write tokens (issued by GetRecord, required here) and a check that
        // this node is among the k closest to the key; until then only the store's total
        // and per-publisher bounds limit what a writer can make us hold.
        let now = shoal_proto::time::unix_ms();
        let mut store = lock(&self.inner.store);
        let outcome = store.put(record, req.expected_seq, now);
        self.inner.metrics.records_held.set(store.len() as i64);
        drop(store);
        outcome.map_err(ServeError::from)?;
        Ok(Response::new(pb::PutRecordResponse {
            responder: Some(self.responder()?),
        }))
    }
}
