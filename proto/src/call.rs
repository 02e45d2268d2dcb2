//! What a failed gRPC call says about the peer: one rule for the uplink's piece calls and
//! the DHT's requests.
//!
//! A call that never reached the node asked (no connection, a broken connection, another
//! node behind the address, a stream cut off) says the node is unreachable; a call that
//! ran out of time says it is slow or gone; any other status is the node's own answer, a
//! refusal. The transport's failures are told by the status's source chain (tonic puts
//! the transport error there, whatever the code: a connection reset arrives as
//! `Unknown`), never by the message's text; the node's refusals have no such source.

use crate::tls;

/// How a failed call is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallFailure {
    /// The call did not reach the node asked, or the connection broke under it.
    Unreachable,
    /// No answer within the deadline.
    TimedOut,
    /// The node answered with a refusal: the status's code and message are its reason.
    Refused,
}

impl CallFailure {
    /// Reads `status`, the error of one call.
    pub fn of(status: &tonic::Status) -> Self {
        if tls::wrong_node(status).is_some() || tls::connection_failed(status) {
            return Self::Unreachable;
        }
        match status.code() {
            // `Cancelled`: the stream was cut off (the node stopped, the connection went).
            tonic::Code::Unavailable | tonic::Code::Cancelled => Self::Unreachable,
            tonic::Code::DeadlineExceeded => Self::TimedOut,
            _ => Self::Refused,
        }
    }

    /// True unless the node answered: the call counts against it.
    pub fn is_failure_of_node(self) -> bool {
        !matches!(self, Self::Refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_without_a_transport_source_are_read_by_code() {
        use tonic::{Code, Status};
        let read = |code| CallFailure::of(&Status::new(code, "x"));
        assert_eq!(read(Code::Unavailable), CallFailure::Unreachable);
        assert_eq!(read(Code::Cancelled), CallFailure::Unreachable);
        assert_eq!(read(Code::DeadlineExceeded), CallFailure::TimedOut);
        // A node's own `Unknown` (a handler's error) is its answer, not a lost connection.
        for code in [
            Code::Unknown,
            Code::InvalidArgument,
            Code::FailedPrecondition,
            Code::Aborted,
            Code::ResourceExhausted,
            Code::PermissionDenied,
            Code::Internal,
        ] {
            assert_eq!(read(code), CallFailure::Refused, "{code:?}");
        }
    }

    #[test]
    fn a_transport_error_in_the_source_chain_is_unreachable_whatever_the_code() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let status = tonic::Status::from_error(Box::new(io));
        assert_eq!(CallFailure::of(&status), CallFailure::Unreachable);
    }
}
