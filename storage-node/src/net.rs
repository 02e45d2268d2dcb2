//! Connections the node can cut. tonic's graceful shutdown waits for every stream to
//! finish; a client that stops reading a download would hold it forever. Each accepted
//! connection is wrapped so that, once the drain period is over, its reads and writes
//! fail and hyper closes it.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::{Connected, TcpConnectInfo};

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

/// Connection caps, global and per peer group: a connection past either is closed as
/// soon as it is accepted, before its TLS handshake costs anything.
#[derive(Debug)]
pub struct ConnectionLimits {
    max_total: usize,
    max_per_peer: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One admitted connection; released when dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    group: IpAddr,
}

impl ConnectionLimits {
    /// The node's caps: [`MAX_CONNECTIONS`] in all and [`MAX_CONNECTIONS_PER_PEER`] per
    /// peer group, except on a local network (`local_network = true`), where every node
    /// dials from the same loopback or private address, so one "peer" is the whole
    /// network (a devnet of 110 nodes would refuse its own uplink): there only the
    /// global cap applies.
    pub fn for_node(local_network: bool) -> Arc<Self> {
        let per_peer = if local_network {
            MAX_CONNECTIONS
        } else {
            MAX_CONNECTIONS_PER_PEER
        };
        Self::new(MAX_CONNECTIONS, per_peer)
    }

    pub fn new(max_total: usize, max_per_peer: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_peer,
            open: Mutex::new((0, HashMap::new())),
        })
    }

    /// A slot for a connection from `peer`, or `None` past a cap.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<ConnectionSlot> {
        let group = shoal_proto::address::peer_group(peer);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per_peer) = &mut *open;
        let mine = per_peer.entry(group).or_insert(0);
        if *total >= self.max_total || *mine >= self.max_per_peer {
            if *mine == 0 {
                per_peer.remove(&group);
            }
            return None;
        }
        *mine += 1;
        *total += 1;
        Some(ConnectionSlot {
            limits: Arc::clone(self),
            group,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).0
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per_peer) = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(n) = per_peer.get_mut(&self.group) {
            *n -= 1;
            if *n == 0 {
                per_peer.remove(&self.group);
            }
        }
    }
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
    fn connections_are_capped_globally_and_per_peer_and_given_back() {
        let limits = ConnectionLimits::new(3, 2);
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let a1 = limits.admit(ip("203.0.114.1")).unwrap();
        let _a2 = limits.admit(ip("203.0.114.1")).unwrap();
        assert!(limits.admit(ip("203.0.114.1")).is_none(), "per peer");
        // An IPv6 /64 is one peer.
        let _b1 = limits.admit(ip("2001:db8::1")).unwrap();
        assert!(limits.admit(ip("2001:db8::2")).is_none(), "global");
        assert_eq!(limits.open(), 3);
        drop(a1);
        assert_eq!(limits.open(), 2);
        let _b2 = limits.admit(ip("2001:db8::2")).unwrap();
        assert!(
            limits.admit(ip("2001:db8::3")).is_none(),
            "the /64 is at its cap"
        );
    }

    #[test]
    fn a_public_node_caps_each_peer_and_a_local_network_only_the_total() {
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        let public = ConnectionLimits::for_node(false);
        let held: Vec<_> = (0..MAX_CONNECTIONS_PER_PEER)
            .map(|_| public.admit(loopback).unwrap())
            .collect();
        assert!(public.admit(loopback).is_none());
        // On a local network every node dials from the same address: 110 nodes and an
        // uplink must all get in.
        let local = ConnectionLimits::for_node(true);
        let many: Vec<_> = (0..MAX_CONNECTIONS_PER_PEER * 4)
            .map(|_| local.admit(loopback).unwrap())
            .collect();
        assert_eq!(local.open(), many.len());
        drop(held);
    }
}
