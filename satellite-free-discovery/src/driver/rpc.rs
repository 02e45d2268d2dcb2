//! Outgoing requests, and the checks every answer passes before the core sees it.

use std::net::SocketAddr;

use shoal_proto::call::CallFailure;
use shoal_proto::messages::MutableRecord;
use shoal_proto::pb::discovery_client::DiscoveryClient;
use shoal_proto::tls;
use shoal_proto::{NodeId, Signed, pb};
use tonic::transport::Channel;

use super::{Inner, MAX_DISCOVERY_MESSAGE, Peer, contact, dial_addr, lock};
use crate::core::node::{Answer, Contact, Failure, Request, Response, WriteToken};
use crate::error::DhtError;

/// Most cached client channels; the cache is emptied when it grows past this.
const MAX_CHANNELS: usize = 512;

/// Metadata entry that carries a write token: in GetRecord answers, and back in
/// PutRecord requests. Metadata rather than a message field keeps the Discovery
/// messages as they are for existing clients.
// LATER: a `write_token` field in GetRecordResponse and PutRecordRequest at the next
// wire version.
pub(crate) const WRITE_TOKEN_HEADER: &str = "shoal-write-token-bin";

/// The write token in `meta`, if one of the right size is there.
pub(crate) fn token_from(meta: &tonic::metadata::MetadataMap) -> Option<WriteToken> {
    let v = meta.get_bin(WRITE_TOKEN_HEADER)?.to_bytes().ok()?;
    WriteToken::try_from(v.as_ref()).ok()
}

pub(crate) fn token_into(meta: &mut tonic::metadata::MetadataMap, token: &WriteToken) {
    meta.insert_bin(
        WRITE_TOKEN_HEADER,
        tonic::metadata::MetadataValue::from_bytes(token),
    );
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
                .http2_keep_alive_interval(shoal_proto::limits::H2_KEEPALIVE_INTERVAL)
                .keep_alive_timeout(shoal_proto::limits::H2_KEEPALIVE_TIMEOUT)
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

    /// The responder record every answer carries, checked (valid, signed, enough work).
    /// That it is the node asked is the core's rule ([`Answer::check`]).
    fn check_responder(
        &self,
        addr: SocketAddr,
        responder: Option<pb::NodeRecord>,
    ) -> Result<Peer, DhtError> {
        let responder = responder.ok_or_else(|| DhtError::BadResponse {
            addr,
            reason: "no responder record".into(),
        })?;
        self.check_record(addr, responder)
    }

    /// Keeps the valid closer records. Their number and our own id among them are the
    /// core's rules ([`Answer::check`], [`crate::core::node::Node::on_response`]).
    fn check_closer(&self, addr: SocketAddr, closer: Vec<pb::NodeRecord>) -> Vec<Peer> {
        closer
            .into_iter()
            .filter_map(|m| self.check_record(addr, m).ok())
            .collect()
    }

    fn rpc_error(&self, id: NodeId, addr: SocketAddr, status: tonic::Status) -> DhtError {
        if CallFailure::of(&status).is_failure_of_node() {
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

    /// Sends `request` to node `to` (`data`: its record) and checks the answer: well
    /// formed and signed (the core checks it is from that node and bounded). A refusal
    /// of a PutRecord is told apart from a failure by its gRPC code.
    pub(crate) async fn call(
        &self,
        to: NodeId,
        data: &Peer,
        request: Request,
    ) -> Result<Answer<Peer>, Failure> {
        let Some(addr) = dial_addr(data) else {
            return Err(Failure::Unreachable);
        };
        self.call_at(addr, to, request).await.map_err(|(f, _)| f)
    }

    /// Sends `request` to node `to` at `addr` (a join ping: no record of it yet; the TLS
    /// handshake must come from `to`). A failure comes with the error that says why.
    pub(crate) async fn call_at(
        &self,
        addr: SocketAddr,
        to: NodeId,
        request: Request,
    ) -> Result<Answer<Peer>, (Failure, DhtError)> {
        let (responder, response) = match self.exchange(addr, to, request).await {
            Ok(r) => r,
            Err(e) => {
                // How a failed call is read is `shoal_proto::call`'s rule, shared with
                // the uplink.
                let failure = match &e {
                    DhtError::Rpc { status, .. }
                        if CallFailure::of(status) == CallFailure::Refused =>
                    {
                        Failure::Refused {
                            compare_and_swap: status.code() == tonic::Code::Aborted,
                            reason: status.message().to_string(),
                        }
                    }
                    _ => {
                        tracing::debug!(%addr, node = %to, error = %e, "request failed");
                        Failure::Unreachable
                    }
                };
                return Err((failure, e));
            }
        };
        Ok(Answer {
            at_advertised: dial_addr(&responder) == Some(addr),
            responder: contact(&responder),
            response,
        })
    }

    async fn exchange(
        &self,
        addr: SocketAddr,
        id: NodeId,
        request: Request,
    ) -> Result<(Peer, Response<Peer>), DhtError> {
        let mut client = self.client(id, addr)?;
        let sender = self.sender();
        let hard = self.config.hard_timeout;
        let timeout = |_| DhtError::Timeout { addr };
        let closer = |v: Vec<Peer>| -> Vec<Contact<Peer>> { v.iter().map(contact).collect() };
        match request {
            Request::Ping => {
                let res = tokio::time::timeout(hard, client.ping(pb::PingRequest { sender }))
                    .await
                    .map_err(timeout)?
                    .map_err(|s| self.rpc_error(id, addr, s))?
                    .into_inner();
                Ok((self.check_responder(addr, res.responder)?, Response::Pong))
            }
            Request::FindNode { target } => {
                let req = pb::FindNodeRequest {
                    sender,
                    target: target.to_vec(),
                };
                let res = tokio::time::timeout(hard, client.find_node(req))
                    .await
                    .map_err(timeout)?
                    .map_err(|s| self.rpc_error(id, addr, s))?
                    .into_inner();
                let responder = self.check_responder(addr, res.responder)?;
                let found = self.check_closer(addr, res.closer);
                Ok((
                    responder,
                    Response::Nodes {
                        closer: closer(found),
                    },
                ))
            }
            Request::GetRecord { key } => {
                let req = pb::GetRecordRequest {
                    sender,
                    key: key.0.to_vec(),
                };
                let res = tokio::time::timeout(hard, client.get_record(req))
                    .await
                    .map_err(timeout)?
                    .map_err(|s| self.rpc_error(id, addr, s))?;
                let token = token_from(res.metadata());
                let res = res.into_inner();
                // A record that fails its signature is ignored; the rest of the answer
                // still counts (the core checks key and expiry).
                let record = res
                    .record
                    .and_then(|r| Signed::<MutableRecord>::try_from(r).ok());
                let responder = self.check_responder(addr, res.responder)?;
                let found = self.check_closer(addr, res.closer);
                Ok((
                    responder,
                    Response::Record {
                        record,
                        closer: closer(found),
                        token,
                    },
                ))
            }
            Request::PutRecord {
                record,
                expected_seq,
                token,
            } => {
                let mut req = tonic::Request::new(pb::PutRecordRequest {
                    sender,
                    record: Some(pb::MutableRecord::from(&record)),
                    expected_seq,
                });
                if let Some(t) = &token {
                    token_into(req.metadata_mut(), t);
                }
                let res = tokio::time::timeout(hard, client.put_record(req))
                    .await
                    .map_err(timeout)?
                    .map_err(|s| DhtError::Rpc {
                        addr,
                        status: Box::new(s),
                    })?
                    .into_inner();
                Ok((self.check_responder(addr, res.responder)?, Response::Stored))
            }
        }
    }
}
