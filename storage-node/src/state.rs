//! What the HTTP pages and the DHT need to know about a running node ([`NodeState`]),
//! apart from the code that starts it ([`crate::node`]), so that the pages read it
//! without importing the node.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus::Registry;
use shoal_proto::messages::NodeRecord;
use shoal_proto::time::unix_ms;
use shoal_proto::{Identity, Signed};

use crate::error::Error;
use crate::metrics::NodeMetrics;
use crate::store::PieceStore;

/// What the HTTP pages and the DHT need to know about the node.
#[derive(Debug)]
pub struct NodeState {
    pub identity: Arc<Identity>,
    pub store: Arc<PieceStore>,
    pub metrics: NodeMetrics,
    /// The node's registry: `/metrics` serves everything registered in it, so other
    /// components (the DHT) register their metrics here.
    pub registry: Registry,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub external_address: Option<String>,
    /// Where peers dial this node: `external_address` resolved, else the bound gRPC
    /// address when it is a concrete IP. Goes into the node record.
    pub advertised: Vec<SocketAddr>,
    pub started_at_ms: u64,
    /// When set, `/metrics` is served only to requests that carry it as a bearer token
    /// (config `metrics_token`).
    pub metrics_token: Option<String>,
}

impl NodeState {
    /// The node's signed record for the DHT: advertised addresses, free space, version,
    /// start time. Fails when the node has no dialable address (listening on 0.0.0.0
    /// without `external_address`).
    pub fn node_record(&self) -> Result<Signed<NodeRecord>, Error> {
        if self.advertised.is_empty() {
            return Err(Error::Protocol(
                "no address to advertise: set external_address when listening on 0.0.0.0",
            ));
        }
        let record = NodeRecord {
            public_key: *self.identity.public_key(),
            addresses: self
                .advertised
                .iter()
                .take(shoal_proto::limits::MAX_ADDRESSES)
                .copied()
                .collect(),
            free_space: self.store.free_space(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at_ms: self.started_at_ms,
            timestamp_ms: unix_ms(),
        };
        Ok(Signed::sign(record, &self.identity)?)
    }
}
