//! Multi-node harness for integration tests, benchmarks and the devnet.
//!
//! - [`Cluster`] starts N storage nodes in this process, node `i` on `127.0.{i+1}.1`
//!   (distinct /24s on loopback) with port 0 and its own temp directory, every node but
//!   the first bootstrapping from the first, and restarts (same ports) or stops them on
//!   the same directory.
//! - [`Owner`] is an uplink-side key for tests that do not need the whole uplink: the
//!   uplink's orders and its [`NodeClient`], plus the wire messages tests tamper with.
//! - [`http_get`] fetches a page from a node's HTTP port.
//! - [`cli_net`]: the network for tests of the real `uplink` binary (a cluster, the DHT
//!   probe that waits until a client sees every node, config dirs with a grant, the
//!   gateway process).
//! - [`e2e`]: pattern data streamed and hashed, an uplink over a cluster; [`bench`] and
//!   [`cli_bench`]: the benchmarks behind `shoal-bench`, on [`process_net`] (a network of
//!   node processes and the `uplink` CLI); [`node_soak`]: `node-soak`; [`devnet`]: a
//!   local network (`devnet`).
//! - [`hostile`] attacks live nodes and a live S3 gateway as a hostile client; [`fuzz`]
//!   runs it with every crate's decoder fuzz targets (the `shoal-fuzz` binary).
//! - [`netns`]: a network of real hosts (each node in a network namespace of its own,
//!   clients in others, partitions and kills), for the netns tests and `shoal-chaos`.
//!
//! What needs no running node (data, deadlines, tools, the CLI runner, paths) is in the
//! test kit, `shoal-test-kit`, which this crate builds on.
//!
//! Imports between the modules point one way (each uses this root's `Cluster` / `Owner`;
//! the root uses none of them):
//!
//! ```text
//!   cli_bench ──▶ process_net ──▶ bench ──▶ e2e       fuzz ──▶ hostile ──▶ e2e
//!       └──▶ bench, e2e     ▲                          cli_net    devnet
//!   node_soak ──────────────┘
//!   netns ──▶ process_net (its `Binaries`)
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Empty};
use shoal_proto::limits::MAX_CHUNK;
use shoal_proto::messages::{Receipt, RenewOrder, RenewResult};
use shoal_proto::pb::{self, upload_request};
use shoal_proto::piece_hash::{PieceHasher, PieceInfo};
use shoal_proto::time::unix_ms;
use shoal_proto::{Identity, NodeId, PieceId, Signed};
use storage_node::{ByteSize, Config, RunningNode};
use uplink::grpc::NodeClient;
use uplink::orders::{Orders, UploadTerms};
use uplink::store::{DownloadPart, NodeAddress, UploadPart};

/// How the nodes of a [`Cluster`] are configured.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub allocate: u64,
    pub stall_timeout_ms: u64,
    pub expiry_interval_ms: u64,
    pub max_streams_per_peer: usize,
    /// `max_piece_calls_per_second` of the node's config.
    pub max_piece_calls_per_second: u32,
    pub max_lease_ms: u64,
    /// `min_upload_rate` and `upload_grace_ms` of the node's config.
    pub min_upload_rate: u64,
    pub upload_grace_ms: u64,
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self {
            allocate: 256 << 20,
            stall_timeout_ms: 10_000,
            expiry_interval_ms: 60_000,
            max_streams_per_peer: 64,
            max_piece_calls_per_second: Config::default().max_piece_calls_per_second,
            max_lease_ms: Config::default().max_lease_ms,
            min_upload_rate: Config::default().min_upload_rate,
            upload_grace_ms: Config::default().upload_grace_ms,
        }
    }
}

/// One storage node of a cluster, and the directory it keeps across restarts.
#[derive(Debug)]
pub struct TestNode {
    pub index: usize,
    pub ip: IpAddr,
    node: Option<RunningNode>,
    seed: [u8; 32],
    config: Config,
    dir: tempfile::TempDir,
}

impl TestNode {
    async fn start(
        index: usize,
        options: &NodeOptions,
        bootstrap: Vec<String>,
    ) -> anyhow::Result<Self> {
        let octet = u8::try_from(index + 1).context("at most 255 nodes")?;
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, octet, 1));
        let config = Config {
            listen: SocketAddr::new(ip, 0),
            http: SocketAddr::new(ip, 0),
            allocate: ByteSize(options.allocate),
            difficulty: 0,
            max_streams_per_peer: options.max_streams_per_peer,
            max_piece_calls_per_second: options.max_piece_calls_per_second,
            stall_timeout_ms: options.stall_timeout_ms,
            expiry_interval_ms: options.expiry_interval_ms,
            max_lease_ms: options.max_lease_ms,
            min_upload_rate: options.min_upload_rate,
            upload_grace_ms: options.upload_grace_ms,
            bootstrap,
            // Every test node is on 127.0.N.1.
            local_network: true,
            ..Config::default()
        };
        let mut node = Self {
            index,
            ip,
            node: None,
            seed: rand::random(),
            config,
            dir: tempfile::tempdir()?,
        };
        node.boot().await?;
        Ok(node)
    }

    async fn boot(&mut self) -> anyhow::Result<()> {
        let running = storage_node::start(
            &self.config,
            Identity::from_seed(self.seed),
            &self.storage_dir(),
        )
        .await?;
        // Keep the ports across restarts, as a real node does (peers know it by them).
        self.config.listen = running.grpc_addr();
        self.config.http = running.http_addr();
        self.node = Some(running);
        Ok(())
    }

    /// Where the node keeps its pieces and metadata.
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The running node; panics in tests if it was stopped.
    pub fn running(&self) -> &RunningNode {
        match &self.node {
            Some(n) => n,
            None => panic!("node {} is stopped", self.index),
        }
    }

    pub fn node_id(&self) -> NodeId {
        Identity::from_seed(self.seed).node_id()
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.running().grpc_addr()
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.running().http_addr()
    }

    /// This node as a pinned `NODEID@IP:PORT` entry.
    pub fn pinned(&self) -> String {
        format!("{}@{}", self.node_id(), self.grpc_addr())
    }

    /// A gRPC client with the protocol's message bounds, over TLS pinned to this node.
    pub async fn client(&self) -> anyhow::Result<NodeClient> {
        let node = NodeAddress {
            id: self.node_id(),
            address: self.grpc_addr(),
        };
        Ok(NodeClient::new(node, Duration::from_secs(5))?)
    }

    /// Stops the node cleanly; its directory stays.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(n) = self.node.take() {
            n.shutdown().await?;
        }
        Ok(())
    }

    /// Stops and starts the node on the same directory, identity and ports.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        self.boot().await
    }
}

/// N storage nodes in one process.
#[derive(Debug)]
pub struct Cluster {
    pub nodes: Vec<TestNode>,
}

impl Cluster {
    pub async fn start(n: usize, options: NodeOptions) -> anyhow::Result<Self> {
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            // Every node but the first joins the DHT through the first.
            let bootstrap = nodes
                .first()
                .map(|first: &TestNode| vec![first.pinned()])
                .unwrap_or_default();
            nodes.push(TestNode::start(i, &options, bootstrap).await?);
        }
        Ok(Self { nodes })
    }

    pub fn node(&self, i: usize) -> &TestNode {
        &self.nodes[i]
    }

    pub fn node_mut(&mut self, i: usize) -> &mut TestNode {
        &mut self.nodes[i]
    }

    /// Stops every node cleanly (temp directories go when the cluster is dropped).
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        for n in &mut self.nodes {
            n.stop().await?;
        }
        Ok(())
    }
}

/// `GET path` over HTTP/1.1: status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    http_get_as(addr, path, &addr.to_string()).await
}

/// `GET path` naming `host` in the `Host` header (a browser on a re-pointed name sends
/// its own).
pub async fn http_get_as(
    addr: SocketAddr,
    path: &str,
    host: &str,
) -> anyhow::Result<(u16, String)> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    let conn = tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, host)
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    drop(sender);
    conn.abort();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A piece owner (what the uplink is), for tests that do not need the whole uplink: its
/// orders come from the uplink's [`Orders`] and well-formed calls go through the
/// uplink's [`NodeClient`]; what this adds is the wire messages tests tamper with.
#[derive(Debug)]
pub struct Owner {
    pub identity: Identity,
    /// Lease given to uploads, from now.
    pub lease: Duration,
}

impl Default for Owner {
    fn default() -> Self {
        Self::new()
    }
}

/// Hashes `data` as a piece of `block_size` blocks.
fn piece_info(data: &[u8], block_size: u32) -> PieceInfo {
    let mut h = PieceHasher::new(block_size);
    h.update(data);
    h.finish()
}

fn status(e: impl std::fmt::Display) -> tonic::Status {
    tonic::Status::internal(e.to_string())
}

impl Owner {
    pub fn new() -> Self {
        Self {
            identity: Identity::random(),
            lease: Duration::from_secs(3600),
        }
    }

    fn orders(&self) -> Orders<'_> {
        Orders::new(&self.identity)
    }

    pub fn upload_order(
        &self,
        node: NodeId,
        piece: PieceId,
        max_size: u64,
        block_size: u32,
        expires_at_ms: u64,
        timestamp_ms: u64,
    ) -> anyhow::Result<pb::UploadOrder> {
        let terms = UploadTerms {
            max_size,
            block_size,
            expires_at_ms,
        };
        Ok((&self.orders().upload(node, piece, terms, timestamp_ms)?).into())
    }

    /// The trailer for `data`, hashed with `block_size`.
    pub fn trailer(
        &self,
        piece: PieceId,
        data: &[u8],
        block_size: u32,
    ) -> anyhow::Result<pb::UploadTrailer> {
        let trailer = self
            .orders()
            .trailer(piece, &piece_info(data, block_size))?;
        Ok((&trailer).into())
    }

    /// The messages of a well-formed upload of `data`.
    pub fn upload_messages(
        &self,
        node: NodeId,
        piece: PieceId,
        data: &[u8],
        block_size: u32,
    ) -> anyhow::Result<Vec<pb::UploadRequest>> {
        let now = unix_ms();
        let order = self.upload_order(
            node,
            piece,
            data.len() as u64,
            block_size,
            now + self.lease.as_millis() as u64,
            now,
        )?;
        let mut msgs = vec![pb::UploadRequest {
            message: Some(upload_request::Message::Order(order)),
        }];
        msgs.extend(data.chunks(MAX_CHUNK).map(|c| pb::UploadRequest {
            message: Some(upload_request::Message::Chunk(
                bytes::Bytes::copy_from_slice(c),
            )),
        }));
        msgs.push(pb::UploadRequest {
            message: Some(upload_request::Message::Trailer(
                self.trailer(piece, data, block_size)?,
            )),
        });
        Ok(msgs)
    }

    /// Sends `msgs` as one upload and checks the receipt's signature.
    pub async fn send_upload(
        &self,
        client: &mut NodeClient,
        msgs: Vec<pb::UploadRequest>,
    ) -> Result<Signed<Receipt>, tonic::Status> {
        Ok(client.upload_requests(tokio_stream::iter(msgs)).await?)
    }

    /// Uploads `data` the way the uplink does (order, data chunks, signed trailer).
    pub async fn upload(
        &self,
        client: &mut NodeClient,
        node: NodeId,
        piece: PieceId,
        data: &[u8],
        block_size: u32,
    ) -> Result<Signed<Receipt>, tonic::Status> {
        self.upload_tagged(client, node, piece, data, block_size, Vec::new())
            .await
    }

    /// [`Self::upload`] with `tag` in the trailer.
    pub async fn upload_tagged(
        &self,
        client: &mut NodeClient,
        node: NodeId,
        piece: PieceId,
        data: &[u8],
        block_size: u32,
        tag: Vec<u8>,
    ) -> Result<Signed<Receipt>, tonic::Status> {
        let now = unix_ms();
        let terms = UploadTerms {
            max_size: data.len() as u64,
            block_size,
            expires_at_ms: now + self.lease.as_millis() as u64,
        };
        let order = self
            .orders()
            .upload(node, piece, terms, now)
            .map_err(status)?;
        let trailer = self
            .orders()
            .tagged_trailer(piece, &piece_info(data, block_size), tag)
            .map_err(status)?;
        let body = UploadPart::whole_piece(Bytes::copy_from_slice(data), trailer);
        Ok(client.upload(&order, body).await?)
    }

    /// The order for a page of this owner's pieces on `node`.
    pub fn list_order(
        &self,
        node: NodeId,
        after: Option<PieceId>,
        limit: u32,
        timestamp_ms: u64,
    ) -> anyhow::Result<pb::ListPiecesOrder> {
        Ok((&self
            .orders()
            .list_pieces(node, after, limit, timestamp_ms)?)
            .into())
    }

    /// Sends a listing order as is; the node's answer unchecked.
    pub async fn send_list(
        &self,
        client: &mut NodeClient,
        order: pb::ListPiecesOrder,
    ) -> Result<pb::ListPiecesResponse, tonic::Status> {
        Ok(client
            .wire()
            .list_pieces(pb::ListPiecesRequest { order: Some(order) })
            .await?
            .into_inner())
    }

    pub fn download_order(
        &self,
        node: NodeId,
        piece: PieceId,
        offset: u64,
        length: u64,
    ) -> anyhow::Result<pb::DownloadOrder> {
        Ok((&self
            .orders()
            .download(node, piece, offset, length, unix_ms())?)
            .into())
    }

    /// Downloads a range: the piece info (from the first message) and the contiguous
    /// bytes sent with the piece offset they start at. Verifies every whole block.
    pub async fn download(
        &self,
        client: &mut NodeClient,
        node: NodeId,
        piece: PieceId,
        offset: u64,
        length: u64,
    ) -> Result<(PieceInfo, u64, Vec<u8>), tonic::Status> {
        let order = self
            .orders()
            .download(node, piece, offset, length, unix_ms())
            .map_err(status)?;
        let mut stream = client.download(&order).await?;
        let mut info = None;
        let mut start = None;
        let mut data = Vec::new();
        while let Some(part) = stream.next().await {
            match part? {
                DownloadPart::Info(i) => {
                    if info.replace(i).is_some() {
                        return Err(status("info sent twice"));
                    }
                }
                DownloadPart::Data { offset, data: d } => {
                    let s = *start.get_or_insert(offset);
                    if offset != s + data.len() as u64 {
                        return Err(status("gap in download"));
                    }
                    data.extend_from_slice(&d);
                }
            }
        }
        let info: PieceInfo = info.ok_or_else(|| status("no piece info"))?;
        let start = start.unwrap_or(0);
        let bs = u64::from(info.block_size);
        if start % bs != 0 {
            return Err(status("download does not start on a block"));
        }
        for (i, block) in data.chunks(bs as usize).enumerate() {
            if !info.verify_block(start / bs + i as u64, block) {
                return Err(status("block does not verify"));
            }
        }
        Ok((info, start, data))
    }

    /// A signed delete order (send it twice to replay it).
    pub fn delete_order(&self, node: NodeId, piece: PieceId) -> anyhow::Result<pb::DeleteOrder> {
        Ok((&self.orders().delete(node, piece, unix_ms())?).into())
    }

    pub async fn delete(
        &self,
        client: &mut NodeClient,
        node: NodeId,
        piece: PieceId,
    ) -> Result<(), tonic::Status> {
        let order = self
            .orders()
            .delete(node, piece, unix_ms())
            .map_err(status)?;
        Ok(client.delete(&order).await?)
    }

    pub async fn audit(
        &self,
        client: &mut NodeClient,
        node: NodeId,
        piece: PieceId,
        block_index: u32,
    ) -> Result<(PieceInfo, Vec<u8>), tonic::Status> {
        let order = self
            .orders()
            .audit(node, piece, block_index, unix_ms())
            .map_err(status)?;
        let (info, block) = client.audit(&order).await?;
        Ok((info, block.to_vec()))
    }

    /// A signed renew order for `pieces` (send it twice to replay it).
    pub fn renew_order(
        &self,
        node: NodeId,
        pieces: &[PieceId],
        expires_at_ms: u64,
        timestamp_ms: u64,
    ) -> anyhow::Result<Signed<RenewOrder>> {
        Ok(self
            .orders()
            .renew(node, pieces.to_vec(), expires_at_ms, timestamp_ms)?)
    }

    /// Sends a renew order; the node's result per piece.
    pub async fn send_renew(
        &self,
        client: &mut NodeClient,
        order: Signed<RenewOrder>,
    ) -> Result<Vec<RenewResult>, tonic::Status> {
        Ok(client.renew(&order).await?)
    }

    /// Extends the leases of `pieces` to (at least) `expires_at_ms` in one order.
    pub async fn renew(
        &self,
        client: &mut NodeClient,
        node: NodeId,
        pieces: &[PieceId],
        expires_at_ms: u64,
    ) -> Result<Vec<RenewResult>, tonic::Status> {
        let order = self
            .renew_order(node, pieces, expires_at_ms, unix_ms())
            .map_err(status)?;
        self.send_renew(client, order).await
    }
}

/// A fresh random piece id.
pub fn random_piece() -> PieceId {
    PieceId(rand::random())
}

pub mod bench;
pub mod chaos;
pub mod cli_bench;
pub mod cli_net;
pub mod devnet;
pub mod e2e;
pub mod fuzz;
pub mod hostile;
pub mod netns;
pub mod node_soak;
pub mod process_net;
/// SigV4 signing, in the test kit so that crates below this one (the gateway's
/// benchmarks) sign with the same code.
pub use shoal_test_kit::sigv4;
