//! `storage-node info`: what a node directory holds, read from the metadata database, or
//! from the running node's `/api/status` when the node is running (it holds the
//! database lock).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use serde::Serialize;
use shoal_proto::Identity;

use crate::config::{Config, NodeDir};
use crate::error::Error;
use crate::http::{NodeStatus, OwnerStatus};
use crate::metrics::TOP_OWNERS;
use crate::store::PieceStore;

/// What `info` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InfoReport {
    pub node_id: String,
    pub running: bool,
    pub listen: String,
    pub external_address: Option<String>,
    pub http: String,
    pub allocated_bytes: u64,
    pub used_bytes: u64,
    pub free_bytes: u64,
    pub pieces: u64,
    /// Owner keys storing at least one piece.
    pub owners: u64,
    /// The per-owner limit in bytes, if any.
    pub max_bytes_per_owner: Option<u64>,
    /// The largest owners, most first.
    pub top_owners: Vec<OwnerStatus>,
}

/// Where to reach a server that listens on `addr` from this machine.
fn local(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

/// Longest `info` waits for a running node's status page.
const STATUS_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// Fetches `/api/status` from a node's HTTP address.
pub async fn fetch_status(addr: SocketAddr) -> Result<NodeStatus, String> {
    let stream = tokio::net::TcpStream::connect(local(addr))
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let req = hyper::Request::get("/api/status")
        .header(hyper::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    conn.abort();
    serde_json::from_slice(&body).map_err(|e| e.to_string())
}

/// The file a running node writes into its directory with the addresses it bound (which
/// differ from the configured ones when a port is 0), and removes at a clean stop.
pub const RUN_FILE: &str = "running.json";

/// What [`RUN_FILE`] holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RunFile {
    pub pid: u32,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
}

impl RunFile {
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(dir.join(RUN_FILE), json)
    }

    pub fn read(dir: &Path) -> Option<Self> {
        serde_json::from_slice(&std::fs::read(dir.join(RUN_FILE)).ok()?).ok()
    }

    pub fn remove(dir: &Path) {
        let _ = std::fs::remove_file(dir.join(RUN_FILE));
    }
}

/// Gathers the report for the node in `dir`.
pub async fn gather(dir: &Path, config: &Config) -> Result<InfoReport, Error> {
    gather_at(dir, &NodeDir(dir.to_owned()).identity(), config).await
}

/// [`gather`] for a node whose identity file is at `identity` instead of in `dir`.
pub async fn gather_at(dir: &Path, identity: &Path, config: &Config) -> Result<InfoReport, Error> {
    let d = NodeDir(dir.to_owned());
    let identity = Identity::load(identity)?;
    let mut report = InfoReport {
        node_id: identity.node_id().to_hex(),
        running: false,
        listen: config.listen.to_string(),
        external_address: config.external_address.clone(),
        http: config.http.to_string(),
        allocated_bytes: config.allocate.0,
        used_bytes: 0,
        free_bytes: config.allocate.0,
        pieces: 0,
        owners: 0,
        max_bytes_per_owner: config.max_bytes_per_owner.map(|b| b.0),
        top_owners: Vec::new(),
    };
    // A running node (its run file names its HTTP port) answers for itself: its figures
    // include uploads in flight. Otherwise (or if it does not answer: a run file left by
    // a crash) the database is read directly; SQLite allows that beside a running node.
    if let Some(run) = RunFile::read(dir)
        && let Ok(Ok(status)) = tokio::time::timeout(STATUS_DEADLINE, fetch_status(run.http)).await
    {
        report.http = run.http.to_string();
        report.running = true;
        report.listen = status.grpc_address;
        report.allocated_bytes = status.allocated_bytes;
        report.used_bytes = status.used_bytes;
        report.free_bytes = status.free_bytes;
        report.pieces = status.pieces;
        report.owners = status.owners;
        report.max_bytes_per_owner = status.max_bytes_per_owner;
        report.top_owners = status.top_owners;
        return Ok(report);
    }
    let storage = d.storage();
    let (c, top, owners) =
        tokio::task::spawn_blocking(move || PieceStore::inspect(&storage, TOP_OWNERS))
            .await
            .map_err(|e| Error::Task(e.to_string()))??;
    report.used_bytes = c.used;
    report.free_bytes = config.allocate.0.saturating_sub(c.used);
    report.pieces = c.pieces;
    report.owners = owners as u64;
    report.top_owners = OwnerStatus::list(&top);
    Ok(report)
}
