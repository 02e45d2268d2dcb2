//! Outgoing requests, and the checks every answer passes before the core sees it.

use std::net::SocketAddr;

use shoal_proto::limits::MAX_CLOSER_NODES;
use shoal_proto::messages::MutableRecord;
use shoal_proto::pb::discovery_client::DiscoveryClient;
use shoal_proto::tls;
use shoal_proto::{NodeId, RecordKey, Signed, pb};
use tokio::time::Instant;
use tonic::transport::Channel;

use super::{Inner, Peer, lock, service::MAX_DISCOVERY_MESSAGE};
use crate::error::DhtError;

/// Most cached client channels; the cache is emptied when it grows past this.
const MAX_CHANNELS: usize = 512;
/// HTTP/2 pings on idle DHT connections, and how long one may go unanswered before
/// the connection counts as dead.
const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A checked answer to FindNode or GetRecord.
#[derive(Debug)]
pub(crate) struct Answer {
    pub responder: Peer,
    pub closer: Vec<Peer>,
    pub record: Option<Signed<MutableRecord>>,
}

impl Inner {
    /// A client for node `id` at `addr`: TLS that only `id`'s identity key completes.
    fn client(&self, id: NodeId, addr: SocketAddr) -> Result<DiscoveryClient<Channel>, DhtError> {
        let mut channels = lock(&self.channels);
        if let Some(c) = channels.get(&(id, addr)) {
            return Ok(c.clone());
        }
        if channels.len() >= MAX_CHANNELS {
            channels.clear();
        }
        let (connect, hard) = (self.config.max_timeout, self.config.hard_timeout);
        let channel = tls::Connector::channel(id, addr, |e| {
            e.connect_timeout(connect)
                .timeout(hard)
                .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
                .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        })
        .map_err(|e| DhtError::BadResponse {
            addr,
            reason: e.to_string(),
        })?;
        let client = DiscoveryClient::new(channel)
            .max_decoding_message_size(MAX_DISCOVERY_MESSAGE)
            .max_encoding_message_size(MAX_DISCOVERY_MESSAGE);
        channels.insert((id, addr), client.clone());
        Ok(client)
    }

    fn forget_channel(&self, id: NodeId, addr: SocketAddr) {
        lock(&self.channels).remove(&(id, addr));
    }

    /// Checks a node record from the network: valid, signed, enough work.
    fn check_record(&self, addr: SocketAddr, m: pb::NodeRecord) -> Result<Peer, DhtError> {
        self.check_node_record("node record", m)
            .map_err(|e| DhtError::BadResponse {
                addr,
                reason: e.to_string(),
            })
    }

    fn check_responder(
        &self,
        addr: SocketAddr,
        responder: Option<pb::NodeRecord>,
        expect: Option<NodeId>,
    ) -> Result<Peer, DhtError> {
        let responder = responder.ok_or_else(|| DhtError::BadResponse {
            addr,
            reason: "no responder record".into(),
        })?;
        let peer = self.check_record(addr, responder)?;
        if let Some(id) = expect
            && peer.node_id() != id
        {
            return Err(DhtError::BadResponse {
                addr,
                reason: format!("answered as {} instead of {id}", peer.node_id()),
            });
        }
        Ok(peer)
    }

    /// Keeps the valid closer records, at most k; an answer with more is refused.
    fn check_closer(
        &self,
        addr: SocketAddr,
        closer: Vec<pb::NodeRecord>,
    ) -> Result<Vec<Peer>, DhtError> {
        if closer.len() > MAX_CLOSER_NODES {
            return Err(DhtError::BadResponse {
                addr,
                reason: format!(
                    "{} closer nodes, over the limit of {MAX_CLOSER_NODES}",
                    closer.len()
                ),
            });
        }
        let local = self.identity.node_id();
        Ok(closer
            .into_iter()
            .filter_map(|m| self.check_record(addr, m).ok())
            .filter(|p| p.node_id() != local)
            .collect())
    }

    fn rpc_error(&self, id: NodeId, addr: SocketAddr, status: tonic::Status) -> DhtError {
        if matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown
        ) {
            self.forget_channel(id, addr);
        }
        if let Some(wrong) = tls::wrong_node(&status) {
            return DhtError::WrongNode {
                addr,
                source: wrong.clone(),
            };
        }
        DhtError::Rpc {
            addr,
            status: Box::new(status),
        }
    }

    fn observe_rtt(&self, started: Instant) {
        lock(&self.rtt).observe(super::ms(started.elapsed()));
    }

    /// Pings node `id` at `addr`: the TLS handshake and the signed answer must both come
    /// from that node.
    pub(crate) async fn ping(&self, addr: SocketAddr, id: NodeId) -> Result<Peer, DhtError> {
        let mut client = self.client(id, addr)?;
        let started = Instant::now();
        let req = pb::PingRequest {
            sender: self.sender(),
        };
        let res = tokio::time::timeout(self.config.max_timeout, client.ping(req))
            .await
            .map_err(|_| DhtError::Timeout { addr })?
            .map_err(|s| self.rpc_error(id, addr, s))?
            .into_inner();
        self.observe_rtt(started);
        self.check_responder(addr, res.responder, Some(id))
    }

    /// FindNode (or GetRecord when `record` is set) to `id` at `addr`.
    pub(crate) async fn query(
        &self,
        addr: SocketAddr,
        id: NodeId,
        target: &[u8; 32],
        record: Option<RecordKey>,
    ) -> Result<Answer, DhtError> {
        let mut client = self.client(id, addr)?;
        let started = Instant::now();
        let sender = self.sender();
        let answer = match record {
            None => {
                let req = pb::FindNodeRequest {
                    sender,
                    target: target.to_vec(),
                };
                let res = tokio::time::timeout(self.config.hard_timeout, client.find_node(req))
                    .await
                    .map_err(|_| DhtError::Timeout { addr })?
                    .map_err(|s| self.rpc_error(id, addr, s))?
                    .into_inner();
                Answer {
                    responder: self.check_responder(addr, res.responder, Some(id))?,
                    closer: self.check_closer(addr, res.closer)?,
                    record: None,
                }
            }
            Some(key) => {
                let req = pb::GetRecordRequest {
                    sender,
                    key: key.0.to_vec(),
                };
                let res = tokio::time::timeout(self.config.hard_timeout, client.get_record(req))
                    .await
                    .map_err(|_| DhtError::Timeout { addr })?
                    .map_err(|s| self.rpc_error(id, addr, s))?
                    .into_inner();
                let now = shoal_proto::time::unix_ms();
                // A record that fails its signature, belongs to another key or has
                // expired is ignored; the rest of the answer still counts.
                let record = res
                    .record
                    .and_then(|r| Signed::<MutableRecord>::try_from(r).ok())
                    .filter(|r| r.key() == key && r.expires_at_ms > now);
                Answer {
                    responder: self.check_responder(addr, res.responder, Some(id))?,
                    closer: self.check_closer(addr, res.closer)?,
                    record,
                }
            }
        };
        self.observe_rtt(started);
        self.on_answered(&answer.responder, addr);
        Ok(answer)
    }

    /// PutRecord to node `id` at `addr`.
    pub(crate) async fn put_one(
        &self,
        id: NodeId,
        addr: SocketAddr,
        record: &Signed<MutableRecord>,
        expected_seq: Option<u64>,
    ) -> Result<(), DhtError> {
        let mut client = self.client(id, addr)?;
        let req = pb::PutRecordRequest {
            sender: self.sender(),
            record: Some(pb::MutableRecord::from(record)),
            expected_seq,
        };
        tokio::time::timeout(self.config.hard_timeout, client.put_record(req))
            .await
            .map_err(|_| DhtError::Timeout { addr })?
            .map_err(|s| DhtError::Rpc {
                addr,
                status: Box::new(s),
            })?;
        Ok(())
    }
}
