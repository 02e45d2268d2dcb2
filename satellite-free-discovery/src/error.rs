//! Errors of the DHT driver, and their gRPC status in one place.

use std::net::SocketAddr;

use shoal_proto::{IdentityError, WireError};

use crate::core::store::RecordRefused;

/// What can go wrong in a DHT operation.
#[derive(Debug, thiserror::Error)]
pub enum DhtError {
    #[error("the routing table is empty; bootstrap first (no bootstrap node answered)")]
    NoPeers,
    #[error(
        "no node answered the join (tried {configured} configured bootstrap entries and \
         {remembered} nodes remembered from before): {reasons}; start one of them, or \
         join through another node that is running"
    )]
    BootstrapFailed {
        configured: usize,
        remembered: usize,
        reasons: String,
    },
    #[error("node mode needs at least one address in the node record")]
    NoAddress,
    #[error("{what} {addr}: {source}")]
    Address {
        what: &'static str,
        addr: SocketAddr,
        source: shoal_proto::address::AddressRefused,
    },
    #[error("cannot sign the local node record: {0}")]
    Identity(#[from] IdentityError),
    #[error("local node record is invalid: {0}")]
    LocalRecord(WireError),
    #[error("request to {addr} failed: {status}")]
    Rpc {
        addr: SocketAddr,
        status: Box<tonic::Status>,
    },
    #[error("refused the connection to {addr}: {source}")]
    WrongNode {
        addr: SocketAddr,
        source: shoal_proto::tls::WrongNode,
    },
    #[error("request to {addr} timed out")]
    Timeout { addr: SocketAddr },
    #[error("bad response from {addr}: {reason}")]
    BadResponse { addr: SocketAddr, reason: String },
    #[error("no node accepted the record ({refused} refused it, {failed} did not answer){reasons}")]
    PutFailed {
        refused: usize,
        failed: usize,
        /// The refusals' reasons for a reader, each once with its count (see
        /// [`refusal_reasons`]); empty when none refused.
        reasons: String,
    },
    #[error("compare-and-swap failed: the network holds another seq")]
    CasMismatch,
    #[error("the DHT has shut down")]
    Shutdown,
    #[error("cannot create the DHT metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Most distinct refusal reasons named in a [`DhtError::PutFailed`].
const SHOWN_REASONS: usize = 3;

/// The reasons nodes gave for refusing a record, for a reader: `": reason (×n); …"`,
/// the most frequent first, at most [`SHOWN_REASONS`] of them; empty when none.
pub(crate) fn refusal_reasons(refused: &[(shoal_proto::NodeId, String)]) -> String {
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for (_, r) in refused {
        *counts.entry(r.as_str()).or_default() += 1;
    }
    let mut by_count: Vec<(&str, usize)> = counts.into_iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let more = by_count.len().saturating_sub(SHOWN_REASONS);
    let mut s: Vec<String> = by_count
        .into_iter()
        .take(SHOWN_REASONS)
        .map(|(r, n)| format!("{r} (×{n})"))
        .collect();
    if more > 0 {
        s.push(format!("{more} more"));
    }
    if s.is_empty() {
        String::new()
    } else {
        format!(": {}", s.join("; "))
    }
}

/// Why the server refused a request.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServeError {
    #[error("invalid {what}: {source}")]
    Wire {
        what: &'static str,
        #[source]
        source: WireError,
    },
    #[error("sender's proof of work is too low: {0}")]
    Work(IdentityError),
    #[error("record refused: {0}")]
    PublisherWork(IdentityError),
    #[error("invalid {what}: {source}")]
    Address {
        what: &'static str,
        #[source]
        source: shoal_proto::address::AddressRefused,
    },
    #[error("record refused: {0}")]
    Refused(#[from] RecordRefused),
    #[error("this node has no signed record yet")]
    NotReady,
    #[error("too many requests from this address; slow down")]
    RateLimited,
    #[error("this node has too many requests waiting; try again later")]
    Busy,
    #[error("this node's DHT has shut down")]
    ShutDown,
}

impl From<ServeError> for tonic::Status {
    fn from(e: ServeError) -> Self {
        let msg = e.to_string();
        match e {
            ServeError::Wire { .. } => tonic::Status::invalid_argument(msg),
            ServeError::Work(_) | ServeError::PublisherWork(_) => {
                tonic::Status::permission_denied(msg)
            }
            ServeError::Address { .. } => tonic::Status::invalid_argument(msg),
            ServeError::Refused(r) => match r {
                RecordRefused::NotNewer { .. } | RecordRefused::NotAmongClosest { .. } => {
                    tonic::Status::failed_precondition(msg)
                }
                // The code the writer decides on (gRPC's code for a failed
                // read-modify-write): never the message text.
                RecordRefused::CasMismatch { .. } => tonic::Status::aborted(msg),
                RecordRefused::WriteToken => tonic::Status::permission_denied(msg),
                RecordRefused::TooLarge { .. }
                | RecordRefused::Expired { .. }
                | RecordRefused::ExpiryTooFar { .. } => tonic::Status::invalid_argument(msg),
                RecordRefused::StoreFull { .. }
                | RecordRefused::OwnerFull { .. }
                | RecordRefused::SourceFull { .. } => tonic::Status::resource_exhausted(msg),
            },
            ServeError::NotReady => tonic::Status::unavailable(msg),
            // Overload, whether of this peer's budget or of the node as a whole.
            ServeError::RateLimited | ServeError::Busy => tonic::Status::resource_exhausted(msg),
            ServeError::ShutDown => tonic::Status::unavailable(msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::NodeId;

    #[test]
    fn refusal_reasons_name_each_reason_once_most_frequent_first() {
        assert_eq!(refusal_reasons(&[]), "");
        let r = |n: u8, s: &str| (NodeId([n; 32]), s.to_string());
        let all = [
            r(1, "no valid write token"),
            r(2, "not newer"),
            r(3, "no valid write token"),
            r(4, "full"),
            r(5, "busy"),
        ];
        assert_eq!(
            refusal_reasons(&all),
            ": no valid write token (×2); busy (×1); full (×1); 1 more"
        );
        let e = DhtError::PutFailed {
            refused: 2,
            failed: 1,
            reasons: refusal_reasons(&all[..2]),
        };
        assert_eq!(
            e.to_string(),
            "no node accepted the record (2 refused it, 1 did not answer): \
             no valid write token (×1); not newer (×1)"
        );
    }
}
