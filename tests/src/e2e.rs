//! End-to-end helpers shared by the uplink network tests and `shoal-bench`.
//!
//! - [`Pattern`]: deterministic bytes addressable by position, streamed through
//!   [`PatternReader`] (an `AsyncRead`) so that objects of hundreds of MiB are uploaded
//!   and checked without ever being held in memory.
//! - [`HashWriter`]: an `AsyncWrite` that keeps only a BLAKE3 hash and a byte count, to
//!   compare a download with [`Pattern::hash`].
//! - [`candidates`] / [`cluster_uplink`]: an [`Uplink`] over a [`Cluster`] with a pinned
//!   candidate set ([`StaticNodes`]) and real gRPC piece transfers.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use uplink::catalog::Catalog;
use uplink::grpc::GrpcPieceStore;
use uplink::{Access, NodeCandidate, StaticNodes, Uplink, UplinkConfig};

use crate::Cluster;

/// Deterministic content: byte `p` is byte `p % 8` of `splitmix(seed ^ (p / 8))`.
#[derive(Debug, Clone, Copy)]
pub struct Pattern {
    pub seed: u64,
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Pattern {
    pub fn new(seed: u64) -> Self {
        Self { seed }
    }

    /// Fills `out` with the bytes starting at position `pos`.
    pub fn fill(&self, pos: u64, out: &mut [u8]) {
        let mut p = pos;
        let mut i = 0;
        while i < out.len() {
            let word = splitmix(self.seed ^ (p / 8)).to_le_bytes();
            let from = (p % 8) as usize;
            let n = (8 - from).min(out.len() - i);
            out[i..i + n].copy_from_slice(&word[from..from + n]);
            i += n;
            p += n as u64;
        }
    }

    /// Bytes `[start, end)` in memory (small ranges only).
    pub fn bytes(&self, start: u64, end: u64) -> Vec<u8> {
        let mut v = vec![0u8; (end - start) as usize];
        self.fill(start, &mut v);
        v
    }

    /// BLAKE3 of bytes `[start, end)`, computed in 1 MiB steps.
    pub fn hash(&self, start: u64, end: u64) -> blake3::Hash {
        let mut h = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut p = start;
        while p < end {
            let n = ((end - p) as usize).min(buf.len());
            self.fill(p, &mut buf[..n]);
            h.update(&buf[..n]);
            p += n as u64;
        }
        h.finalize()
    }

    /// A reader of bytes `[0, len)`.
    pub fn reader(&self, len: u64) -> PatternReader {
        PatternReader {
            pattern: *self,
            pos: 0,
            end: len,
        }
    }
}

/// Streams a [`Pattern`]; never holds more than the caller's buffer.
#[derive(Debug)]
pub struct PatternReader {
    pattern: Pattern,
    pos: u64,
    end: u64,
}

impl AsyncRead for PatternReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = ((self.end - self.pos) as usize).min(buf.remaining());
        if n > 0 {
            let pos = self.pos;
            let dst = buf.initialize_unfilled_to(n);
            self.pattern.fill(pos, dst);
            buf.advance(n);
            self.pos += n as u64;
        }
        Poll::Ready(Ok(()))
    }
}

/// Hashes what is written; keeps nothing else.
#[derive(Debug, Default)]
pub struct HashWriter {
    hasher: blake3::Hasher,
    pub len: u64,
}

impl HashWriter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn finalize(&self) -> blake3::Hash {
        self.hasher.finalize()
    }
}

impl AsyncWrite for HashWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.hasher.update(buf);
        self.len += buf.len() as u64;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The running nodes of `cluster` as upload candidates, with their real free space.
pub fn candidates(cluster: &Cluster) -> Vec<NodeCandidate> {
    cluster
        .nodes
        .iter()
        .filter(|n| n.is_running())
        .map(|n| NodeCandidate {
            id: n.node_id(),
            public_key: None,
            address: n.grpc_addr(),
            free_space: n.running().store().free_space(),
        })
        .collect()
}

/// An uplink with real gRPC transfers, a pinned candidate list and its own catalog.
pub fn cluster_uplink(
    access: Access,
    nodes: Vec<NodeCandidate>,
    catalog: Catalog,
    config: UplinkConfig,
) -> anyhow::Result<Uplink> {
    Ok(Uplink::new(
        access,
        Arc::new(GrpcPieceStore::default()),
        Arc::new(StaticNodes(nodes)),
        catalog,
        config,
    )?)
}

impl crate::TestNode {
    /// Whether the node is running (not stopped).
    pub fn is_running(&self) -> bool {
        self.node.is_some()
    }
}
