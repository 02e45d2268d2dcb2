//! Connections the node can cut. tonic's graceful shutdown waits for every stream to
//! finish; a client that stops reading a download would hold it forever. Each accepted
//! connection is wrapped so that, once the drain period is over, its reads and writes
//! fail and hyper closes it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::{Connected, TcpConnectInfo};

pub use shoal_proto::limits::{ConnectionLimits, ConnectionSlot};

/// A TCP connection that errors out once `kill` is cancelled.
#[derive(Debug)]
pub struct Killable {
    inner: TcpStream,
    kill: Pin<Box<WaitForCancellationFutureOwned>>,
    /// The connection's place in [`ConnectionLimits`], given back when it closes.
    _slot: Option<ConnectionSlot>,
}

impl Killable {
    pub fn new(inner: TcpStream, kill: &CancellationToken) -> Self {
        Self {
            inner,
            kill: Box::pin(kill.clone().cancelled_owned()),
            _slot: None,
        }
    }

    /// A connection holding `slot` until it closes.
    pub fn with_slot(inner: TcpStream, kill: &CancellationToken, slot: ConnectionSlot) -> Self {
        Self {
            _slot: Some(slot),
            ..Self::new(inner, kill)
        }
    }

    fn killed(&mut self, cx: &mut Context<'_>) -> bool {
        self.kill.as_mut().poll(cx).is_ready()
    }
}

/// Most gRPC connections a node keeps open at once, from everyone.
pub const MAX_CONNECTIONS: usize = 4096;
/// Most gRPC connections from one peer (an IPv4 address or an IPv6 /64). An uplink or a
/// node needs one (HTTP/2 multiplexes every stream over it); a few more cover restarts.
pub const MAX_CONNECTIONS_PER_PEER: usize = 32;

/// The node's caps: [`MAX_CONNECTIONS`] in all and [`MAX_CONNECTIONS_PER_PEER`] per peer
/// group, except on a local network (`local_network = true`), where every node dials
/// from the same loopback or private address, so one "peer" is the whole network (a
/// devnet of 110 nodes would refuse its own uplink): there only the global cap applies.
pub fn node_connection_limits(local_network: bool) -> Arc<ConnectionLimits> {
    let per_peer = if local_network {
        MAX_CONNECTIONS
    } else {
        MAX_CONNECTIONS_PER_PEER
    };
    ConnectionLimits::new(MAX_CONNECTIONS, per_peer)
}

fn aborted() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "node shutting down")
}

impl AsyncRead for Killable {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.killed(cx) {
            return Poll::Ready(Err(aborted()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Killable {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.killed(cx) {
            return Poll::Ready(Err(aborted()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.killed(cx) {
            return Poll::Ready(Err(aborted()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.killed(cx) {
            return Poll::Ready(Err(aborted()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl Connected for Killable {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_node_caps_each_peer_and_a_local_network_only_the_total() {
        let loopback: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let public = node_connection_limits(false);
        let held: Vec<_> = (0..MAX_CONNECTIONS_PER_PEER)
            .map(|_| public.admit(loopback).unwrap())
            .collect();
        assert!(public.admit(loopback).is_none());
        // On a local network every node dials from the same address: 110 nodes and an
        // uplink must all get in.
        let local = node_connection_limits(true);
        let many: Vec<_> = (0..MAX_CONNECTIONS_PER_PEER * 4)
            .map(|_| local.admit(loopback).unwrap())
            .collect();
        assert_eq!(local.open(), many.len());
        drop(held);
    }
}
