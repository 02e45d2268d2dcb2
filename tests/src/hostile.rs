//! A hostile client against live nodes: malformed, oversize, truncated and out-of-order
//! piece uploads and other piece orders over real gRPC, raw gRPC frames that lie about
//! their lengths or carry huge varints, mutated Discovery requests, and garbage at the
//! TLS port. After each round the node must still store and serve a piece, answer a
//! DHT ping, and hold no reservation.
//!
//! Cases draw their bytes from the same generator as the decoder targets
//! ([`shoal_proto::fuzz`]), seeded by the run seed, the target and the case index.
//!
//! The node's HTTP port (metrics, dashboard, status) gets mutated request heads,
//! oversized headers and bodies that never come. Floods: one signed order many times
//! at once, throwaway keys' orders for another owner's piece, throwaway publisher keys'
//! records.
//!
//! A live S3 gateway over the two nodes ([`gateway`], `live.gateway_http`) gets
//! anonymous 1 GiB bodies (PUT and PostObject), SigV2 in the header and the query,
//! oversized request heads, 1 GiB XML bodies (DeleteObjects, CompleteMultipartUpload),
//! stalled bodies and mutated requests; each case asserts its refusal and that the
//! refused body was not read, and after each round a signed PUT and GET must work.
//!
//! LATER(hardening): every connection comes from 127.0.0.1, so per-peer connection
//! caps and the DHT's per-peer rate limit (off on a local network) are not exercised
//! here.

mod gateway;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioExecutor;
use prost::Message;
use rand::RngExt;
use rand::rngs::SmallRng;
use shoal_proto::fuzz::{Target, generate};
use shoal_proto::limits::MAX_CHUNK;
use shoal_proto::pb::discovery_client::DiscoveryClient;
use shoal_proto::pb::{self, upload_request};
use shoal_proto::{NodeId, PieceId, tls};
use shoal_test_kit::{test_data, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use tonic::codegen::Service;

use crate::{Cluster, NodeOptions, Owner};

/// How long the node may take to drop a stalled upload: the harness's nodes use this
/// stall timeout, so a stalled stream never outlives a round.
const STALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest a hostile client waits for one answer before giving up on it itself (the
/// node must cope with clients that go away).
const CLIENT_PATIENCE: Duration = Duration::from_millis(1500);

/// The kinds of hostile traffic, each a target of `shoal-fuzz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Live {
    /// Piece uploads out of order, cut short, stalled, lying about sizes, badly signed,
    /// with mutated orders; and mutated download, delete, audit and renew orders.
    PieceStreams,
    /// Raw gRPC frames on every method of both services: lying frame lengths, huge
    /// varints, compressed flags, truncation.
    RawGrpc,
    /// Mutated Discovery requests over gRPC.
    Discovery,
    /// Bytes at the TLS port: plain garbage, plaintext HTTP/2, and garbage after a
    /// completed handshake.
    Garbage,
    /// Mutated HTTP requests at the node's HTTP port: request lines and headers, a
    /// `Host` of another site, oversized headers, declared bodies that never come.
    NodeHttp,
    /// Floods: one signed order sent many times at once (served at most once), orders
    /// of throwaway keys for another owner's piece (never served, never remembered),
    /// and records from throwaway publisher keys (one address group holds at most its
    /// share of the store).
    Floods,
    /// Hostile requests at a live S3 gateway ([`gateway`]): anonymous huge bodies,
    /// SigV2, oversized heads and XML, stalled bodies, mutated requests.
    GatewayHttp,
}

impl Live {
    pub const ALL: [Live; 7] = [
        Live::PieceStreams,
        Live::RawGrpc,
        Live::Discovery,
        Live::Garbage,
        Live::NodeHttp,
        Live::Floods,
        Live::GatewayHttp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Live::PieceStreams => "live.piece_streams",
            Live::RawGrpc => "live.raw_grpc",
            Live::Discovery => "live.discovery",
            Live::Garbage => "live.tls_garbage",
            Live::NodeHttp => "live.node_http",
            Live::Floods => "live.floods",
            Live::GatewayHttp => "live.gateway_http",
        }
    }
}

/// Live nodes and the seeds hostile messages are made from.
#[derive(Debug)]
pub struct Harness {
    cluster: Cluster,
    owner: Owner,
    /// Encoded valid messages by gRPC path.
    piece_seeds: Vec<(String, Vec<Vec<u8>>)>,
    dht_seeds: Vec<(String, Vec<Vec<u8>>)>,
    /// An S3 gateway whose uplink stores on the two nodes.
    gateway: gateway::LiveGateway,
}

fn seeds_of(targets: &[Target], name: &str) -> Vec<Vec<u8>> {
    targets
        .iter()
        .find(|t| t.name == name)
        .map(|t| (t.seeds)())
        .unwrap_or_default()
}

impl Harness {
    /// Two nodes on 127.0.1.1 and 127.0.2.1 (the second joins the DHT through the
    /// first, which every case targets), and a gateway on 127.0.0.1 over both.
    pub async fn start() -> anyhow::Result<Self> {
        let options = NodeOptions {
            stall_timeout_ms: STALL_TIMEOUT.as_millis() as u64,
            ..NodeOptions::default()
        };
        let cluster = Cluster::start(2, options).await?;
        let proto = shoal_proto::fuzz::targets();
        let dht = satellite_free_discovery::fuzz::targets();
        let piece = "/shoal.v1.PieceStore/";
        let piece_seeds = vec![
            ("Upload", seeds_of(&proto, "proto.upload_request")),
            ("Download", seeds_of(&proto, "proto.download")),
            ("Delete", seeds_of(&proto, "proto.delete_audit")),
            ("Audit", seeds_of(&proto, "proto.delete_audit")),
            ("Renew", seeds_of(&proto, "proto.renew")),
        ]
        .into_iter()
        .map(|(m, s)| (format!("{piece}{m}"), s))
        .collect();
        // The DHT target's seeds start with a byte naming the message kind.
        let by_kind = |k: u8| -> Vec<Vec<u8>> {
            seeds_of(&dht, "dht.messages")
                .into_iter()
                .filter(|s| s.first() == Some(&k))
                .map(|s| s[1..].to_vec())
                .collect()
        };
        let dht_seeds = ["Ping", "FindNode", "GetRecord", "PutRecord"]
            .into_iter()
            .zip(0u8..)
            .map(|(m, kind)| (format!("/shoal.v1.Discovery/{m}"), by_kind(kind)))
            .collect();
        let gateway = gateway::LiveGateway::start(&cluster).await?;
        Ok(Self {
            cluster,
            owner: Owner::new(),
            piece_seeds,
            dht_seeds,
            gateway,
        })
    }

    fn target(&self) -> (NodeId, SocketAddr) {
        let n = self.cluster.node(0);
        (n.node_id(), n.grpc_addr())
    }

    /// Runs one hostile case; `input` receives the bytes it was made from (for the
    /// report). Refusals are the expected outcome; only harness failures are errors.
    pub async fn case(
        &self,
        live: Live,
        rng: &mut SmallRng,
        input: &mut Vec<u8>,
    ) -> anyhow::Result<()> {
        input.clear();
        match live {
            Live::PieceStreams => self.piece_stream(rng, input).await,
            Live::RawGrpc => self.raw_grpc(rng, input).await,
            Live::Discovery => self.discovery(rng, input).await,
            Live::Garbage => self.garbage(rng, input).await,
            Live::NodeHttp => self.node_http(rng, input).await,
            Live::Floods => {
                if rng.random_bool(0.5) {
                    self.replay_flood(rng, input).await
                } else {
                    self.record_flood(rng, input).await
                }
            }
            Live::GatewayHttp => self.gateway.case(rng, input).await,
        }
    }

    /// One valid download order sent up to 32 times at once: served at most once, every
    /// other copy refused as a replay (or by the rate limit). Then throwaway keys'
    /// orders for the same piece: never served.
    async fn replay_flood(&self, rng: &mut SmallRng, input: &mut Vec<u8>) -> anyhow::Result<()> {
        let (node, _) = self.target();
        let mut client = self.cluster.node(0).client().await?;
        let piece = PieceId(rng.random());
        let data = test_data(4096, rng.random());
        if self
            .owner
            .upload(&mut client, node, piece, &data, 4096)
            .await
            .is_err()
        {
            // Refused by the rate limit (the other targets share it): nothing to flood.
            return Ok(());
        }
        let order = self.owner.download_order(node, piece, 0, 0)?;
        input.extend(order.encode_to_vec());
        let copies = rng.random_range(2..=32);
        let calls = (0..copies).map(|_| {
            let mut wire = client.wire().clone();
            let order = order.clone();
            async move {
                let call = async {
                    let mut s = wire
                        .download(pb::DownloadRequest { order: Some(order) })
                        .await?
                        .into_inner();
                    while s.message().await?.is_some() {}
                    Ok::<_, tonic::Status>(())
                };
                tokio::time::timeout(CLIENT_PATIENCE * 4, call).await
            }
        });
        let mut served = 0;
        for r in futures::future::join_all(calls).await {
            match r {
                Ok(Ok(())) => served += 1,
                Ok(Err(s)) if matches!(s.code(), Code::Aborted | Code::ResourceExhausted) => {}
                Ok(Err(s)) => bail!("a copy of a replayed order: unexpected answer {s}"),
                Err(_) => bail!("a copy of a replayed order got no answer in time"),
            }
        }
        if served > 1 {
            bail!("one signed download order was served {served} times");
        }
        for _ in 0..rng.random_range(1..=16) {
            let stranger = Owner::new();
            let order = stranger.download_order(node, piece, 0, 0)?;
            let call = client
                .wire()
                .download(pb::DownloadRequest { order: Some(order) });
            match tokio::time::timeout(CLIENT_PATIENCE, call).await {
                Ok(Err(s))
                    if matches!(s.code(), Code::PermissionDenied | Code::ResourceExhausted) => {}
                Ok(Err(s)) => {
                    bail!("a stranger's order for another owner's piece: unexpected answer {s}")
                }
                Ok(Ok(_)) => bail!("a stranger's order for another owner's piece was served"),
                Err(_) => bail!("a stranger's order got no answer in time"),
            }
        }
        Ok(())
    }

    /// Up to 256 records from throwaway publisher keys at the target, all from this
    /// client's address; the target never holds more than one address group's share.
    async fn record_flood(&self, rng: &mut SmallRng, input: &mut Vec<u8>) -> anyhow::Result<()> {
        let (node, addr) = self.target();
        let channel = tls::Connector::channel(node, addr, |e| {
            e.connect_timeout(CLIENT_PATIENCE).timeout(CLIENT_PATIENCE)
        })?;
        let mut client = DiscoveryClient::new(channel);
        let Ok(Ok(read)) = tokio::time::timeout(
            CLIENT_PATIENCE,
            client.get_record(pb::GetRecordRequest {
                sender: None,
                key: vec![7; 32],
            }),
        )
        .await
        else {
            return Ok(());
        };
        let Some(token) = read
            .metadata()
            .get_bin("shoal-write-token-bin")
            .and_then(|t| t.to_bytes().ok())
        else {
            bail!("a GetRecord answer carries no write token");
        };
        let now = shoal_proto::time::unix_ms();
        for _ in 0..rng.random_range(1..=256) {
            let key = shoal_proto::Identity::random();
            let mut salt = vec![0u8; rng.random_range(0..=64)];
            rng.fill(&mut salt[..]);
            let record = shoal_proto::messages::MutableRecord {
                public_key: *key.public_key(),
                salt,
                seq: 1,
                value: vec![0; rng.random_range(0..=4096)],
                expires_at_ms: now + rng.random_range(10_000..3_600_000),
                // The harness's network has difficulty 0: every key is paid for, so
                // only the store's own caps stand in the way.
                work: 0,
            };
            let signed = shoal_proto::Signed::sign(record, &key)?;
            input.extend_from_slice(key.public_key().as_bytes());
            let mut req = tonic::Request::new(pb::PutRecordRequest {
                sender: None,
                record: Some(pb::MutableRecord::from(&signed)),
                expected_seq: None,
            });
            req.metadata_mut().insert_bin(
                "shoal-write-token-bin",
                tonic::metadata::MetadataValue::from_bytes(&token),
            );
            // Refusals (full shares) are expected; only the answer matters.
            let _ = tokio::time::timeout(CLIENT_PATIENCE, client.put_record(req)).await;
        }
        // Every connection of this harness comes from 127.0.0.1 (the other node's too),
        // so all of it is one source address group: the target holds at most that
        // group's share, never the whole store (before the per-source cap, floods filled
        // all 10,000 records and every publisher was refused).
        let cap = satellite_free_discovery::core::store::StoreConfig::default().max_per_source;
        let held = self
            .cluster
            .node(0)
            .running()
            .dht()
            .metrics()
            .records_held
            .get();
        if held > cap as i64 {
            bail!(
                "after floods from one address group the node holds {held} records, more than the group's cap of {cap}"
            );
        }
        Ok(())
    }

    async fn piece_stream(&self, rng: &mut SmallRng, input: &mut Vec<u8>) -> anyhow::Result<()> {
        let (node, _) = self.target();
        let mut client = self.cluster.node(0).client().await?;
        let piece = PieceId(rng.random());
        let len = rng.random_range(0..3 * 4096);
        let data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        let mut msgs = self.owner.upload_messages(node, piece, &data, 4096)?;
        let order = |m: &pb::UploadRequest| match &m.message {
            Some(upload_request::Message::Order(o)) => Some(o.clone()),
            _ => None,
        };
        let Some(first) = msgs.first().and_then(order) else {
            bail!("upload_messages starts without an order");
        };
        match rng.random_range(0..10) {
            // Data before the order.
            0 => {
                let second = 1.min(msgs.len() - 1);
                msgs.swap(0, second);
            }
            // The stream stops after the order, or before the trailer.
            1 => msgs.truncate(1),
            2 => {
                msgs.pop();
            }
            // The order reserves less than is sent.
            3 => {
                let now = shoal_proto::time::unix_ms();
                let small = self.owner.upload_order(
                    node,
                    piece,
                    (len as u64 / 2).max(1),
                    4096,
                    now + 3_600_000,
                    now,
                )?;
                msgs[0].message = Some(upload_request::Message::Order(small));
                msgs.insert(1, chunk(vec![0; len / 2 + 1]));
            }
            // The trailer lies about the size.
            4 => {
                let t = self.owner.trailer(piece, &data[..len / 2], 4096)?;
                if let Some(last) = msgs.last_mut() {
                    last.message = Some(upload_request::Message::Trailer(t));
                }
            }
            // A bad signature on the order.
            5 => {
                let mut o = first.clone();
                if let Some(b) = o.signature.first_mut() {
                    *b ^= 1;
                }
                msgs[0].message = Some(upload_request::Message::Order(o));
            }
            // Two orders.
            6 => msgs.insert(1, msgs[0].clone()),
            // A mutated order.
            7 => {
                let seed = first.encode_to_vec();
                generate(rng, &[seed], input);
                let Ok(o) = pb::UploadOrder::decode(&input[..]) else {
                    return Ok(());
                };
                msgs[0].message = Some(upload_request::Message::Order(o));
            }
            // A stalled upload: the client holds the stream open, then goes away.
            8 => {
                let (tx, rx) = futures::channel::mpsc::unbounded();
                for m in msgs.into_iter().take(2) {
                    tx.unbounded_send(m)?;
                }
                let call = client.wire().upload(rx);
                let _ = tokio::time::timeout(CLIENT_PATIENCE, call).await;
                drop(tx);
                return Ok(());
            }
            // Mutated download, delete, audit and renew requests.
            _ => return self.other_orders(rng, input).await,
        }
        let _ = tokio::time::timeout(
            CLIENT_PATIENCE * 4,
            client.wire().upload(tokio_stream::iter(msgs)),
        )
        .await;
        Ok(())
    }

    async fn other_orders(&self, rng: &mut SmallRng, input: &mut Vec<u8>) -> anyhow::Result<()> {
        let mut client = self.cluster.node(0).client().await?;
        let (path, seeds) = &self.piece_seeds[rng.random_range(1..self.piece_seeds.len())];
        generate_decodable(rng, path, seeds, input);
        let patience = CLIENT_PATIENCE;
        match path.as_str() {
            p if p.ends_with("Download") => {
                if let Ok(r) = pb::DownloadRequest::decode(&input[..]) {
                    let call = async {
                        let mut s = client.wire().download(r).await?.into_inner();
                        while s.message().await?.is_some() {}
                        Ok::<_, tonic::Status>(())
                    };
                    let _ = tokio::time::timeout(patience, call).await;
                }
            }
            p if p.ends_with("Delete") => {
                if let Ok(r) = pb::DeleteRequest::decode(&input[..]) {
                    let _ = tokio::time::timeout(patience, client.wire().delete(r)).await;
                }
            }
            p if p.ends_with("Audit") => {
                if let Ok(r) = pb::AuditRequest::decode(&input[..]) {
                    let _ = tokio::time::timeout(patience, client.wire().audit(r)).await;
                }
            }
            _ => {
                if let Ok(r) = pb::RenewRequest::decode(&input[..]) {
                    let _ = tokio::time::timeout(patience, client.wire().renew(r)).await;
                }
            }
        }
        Ok(())
    }

    async fn raw_grpc(&self, rng: &mut SmallRng, input: &mut Vec<u8>) -> anyhow::Result<()> {
        let (node, addr) = self.target();
        let all: Vec<&(String, Vec<Vec<u8>>)> =
            self.piece_seeds.iter().chain(&self.dht_seeds).collect();
        let (path, seeds) = all[rng.random_range(0..all.len())];
        // One to three frames, each a mutated message under a header that may lie.
        let mut body = Vec::new();
        for _ in 0..rng.random_range(1..=3) {
            generate(rng, seeds, input);
            let compressed = u8::from(rng.random_range(0..8) == 0);
            let len = match rng.random_range(0..6) {
                0 => u32::MAX,
                1 => input.len() as u32 + rng.random_range(1..100),
                2 => (input.len() as u32).saturating_sub(rng.random_range(1..100)),
                _ => input.len() as u32,
            };
            body.push(compressed);
            body.extend_from_slice(&len.to_be_bytes());
            body.extend_from_slice(input);
        }
        if rng.random_range(0..4) == 0 {
            let cut = rng.random_range(0..=body.len());
            body.truncate(cut);
        }
        input.clone_from(&body);
        let io = tls::Connector::new(node, addr)?
            .call(Default::default())
            .await
            .context("TLS connect")?;
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .context("HTTP/2 handshake")?;
        let conn = tokio::spawn(conn);
        let req = hyper::Request::post(format!("http://{addr}{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(Bytes::from(body)))?;
        let exchange = async {
            let res = send.send_request(req).await?;
            // Read at most a little of the answer: a hostile client need not read all.
            let mut body = res.into_body();
            let mut read = 0usize;
            while let Some(frame) = body.frame().await {
                if let Ok(d) = frame?.into_data() {
                    read += d.len();
                }
                if read > MAX_CHUNK {
                    break;
                }
            }
            Ok::<_, hyper::Error>(())
        };
        let _ = tokio::time::timeout(CLIENT_PATIENCE, exchange).await;
        conn.abort();
        Ok(())
    }

    async fn discovery(&self, rng: &mut SmallRng, input: &mut Vec<u8>) -> anyhow::Result<()> {
        let (node, addr) = self.target();
        let channel = tls::Connector::channel(node, addr, |e| {
            e.connect_timeout(CLIENT_PATIENCE).timeout(CLIENT_PATIENCE)
        })?;
        let mut client = DiscoveryClient::new(channel);
        let (path, seeds) = &self.dht_seeds[rng.random_range(0..self.dht_seeds.len())];
        generate_decodable(rng, path, seeds, input);
        let d = &input[..];
        match path.as_str() {
            p if p.ends_with("Ping") => {
                if let Ok(r) = pb::PingRequest::decode(d) {
                    let _ = client.ping(r).await;
                }
            }
            p if p.ends_with("FindNode") => {
                if let Ok(r) = pb::FindNodeRequest::decode(d) {
                    let _ = client.find_node(r).await;
                }
            }
            p if p.ends_with("GetRecord") => {
                if let Ok(r) = pb::GetRecordRequest::decode(d) {
                    let _ = client.get_record(r).await;
                }
            }
            _ => {
                if let Ok(r) = pb::PutRecordRequest::decode(d) {
                    let mut req = tonic::Request::new(r);
                    // A write token of any length in the metadata.
                    let token = Bytes::copy_from_slice(&d[..d.len().min(40)]);
                    req.metadata_mut().insert_bin(
                        "shoal-write-token-bin",
                        tonic::metadata::MetadataValue::from_bytes(&token),
                    );
                    let _ = client.put_record(req).await;
                }
            }
        }
        Ok(())
    }

    async fn garbage(&self, rng: &mut SmallRng, input: &mut Vec<u8>) -> anyhow::Result<()> {
        let (node, addr) = self.target();
        let len = rng.random_range(0..4096);
        input.extend((0..len).map(|_| rng.random::<u8>()));
        let preface: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        match rng.random_range(0..3) {
            // Garbage, or plaintext HTTP/2, where a TLS ClientHello belongs.
            0 | 1 => {
                if rng.random_bool(0.5) {
                    input.splice(0..0, preface.iter().copied());
                }
                let mut tcp = tokio::net::TcpStream::connect(addr).await?;
                let exchange = async {
                    tcp.write_all(input).await?;
                    let mut buf = [0u8; 1024];
                    while tcp.read(&mut buf).await? > 0 {}
                    Ok::<_, std::io::Error>(())
                };
                let _ = tokio::time::timeout(CLIENT_PATIENCE, exchange).await;
            }
            // A completed handshake, then garbage (after the HTTP/2 preface, or not).
            _ => {
                if rng.random_bool(0.5) {
                    input.splice(0..0, preface.iter().copied());
                }
                let mut tls = tls::Connector::new(node, addr)?
                    .call(Default::default())
                    .await
                    .context("TLS connect")?
                    .into_inner();
                let exchange = async {
                    tls.write_all(input).await?;
                    tls.flush().await?;
                    let mut buf = [0u8; 1024];
                    while tls.read(&mut buf).await? > 0 {}
                    Ok::<_, std::io::Error>(())
                };
                let _ = tokio::time::timeout(CLIENT_PATIENCE, exchange).await;
            }
        }
        Ok(())
    }

    async fn node_http(&self, rng: &mut SmallRng, input: &mut Vec<u8>) -> anyhow::Result<()> {
        let addr = self.cluster.node(0).http_addr();
        let seeds: Vec<Vec<u8>> = [
            &b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"[..],
            b"GET /api/status HTTP/1.1\r\nHost: rebound.example\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: [::1]:7778\r\nConnection: keep-alive\r\n\r\n",
            b"POST /metrics HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1073741824\r\n\r\n",
            b"GET /../../etc/passwd HTTP/1.0\r\n\r\n",
        ]
        .iter()
        .map(|s| s.to_vec())
        .collect();
        generate(rng, &seeds, input);
        if rng.random_bool(0.1) {
            // A header far over any sane size.
            let at = input.len().min(16);
            let big = format!(
                "X-Big: {}\r\n",
                "a".repeat(rng.random_range(8_000..200_000))
            );
            input.splice(at..at, big.into_bytes());
        }
        let mut tcp = tokio::net::TcpStream::connect(addr).await?;
        let exchange = async {
            tcp.write_all(input).await?;
            let mut buf = [0u8; 4096];
            while tcp.read(&mut buf).await? > 0 {}
            Ok::<_, std::io::Error>(())
        };
        let _ = tokio::time::timeout(CLIENT_PATIENCE, exchange).await;
        Ok(())
    }

    /// After a round: the gateway still takes a signed PUT and serves it back, every
    /// node still stores and serves a piece, answers a DHT ping and its status page,
    /// and no reservation is left.
    pub async fn check(&self) -> anyhow::Result<()> {
        self.gateway
            .check()
            .await
            .context("the gateway no longer serves a signed PUT and GET")?;
        for n in &self.cluster.nodes {
            let mut client = n.client().await?;
            let piece = crate::random_piece();
            let data = test_data(10_000, 1);
            self.owner
                .upload(&mut client, n.node_id(), piece, &data, 4096)
                .await
                .with_context(|| format!("node {} refuses a normal upload", n.index))?;
            let (_, _, got) = self
                .owner
                .download(&mut client, n.node_id(), piece, 0, 0)
                .await
                .with_context(|| format!("node {} refuses a normal download", n.index))?;
            if got != data {
                bail!("node {} serves other bytes than it stored", n.index);
            }
            let (id, addr) = (n.node_id(), n.grpc_addr());
            wait_until(
                Duration::from_secs(30),
                "the node answers a DHT ping",
                || async move {
                    let Ok(channel) = tls::Connector::channel(id, addr, |e| {
                        e.connect_timeout(CLIENT_PATIENCE).timeout(CLIENT_PATIENCE)
                    }) else {
                        return false;
                    };
                    DiscoveryClient::new(channel)
                        .ping(pb::PingRequest { sender: None })
                        .await
                        .is_ok()
                },
            )
            .await?;
            let http = n.http_addr();
            wait_until(Duration::from_secs(30), "the node's status page answers", || async move {
                matches!(crate::http_get(http, "/api/status").await, Ok((200, _)))
            })
            .await
            .with_context(|| format!("node {} no longer serves its HTTP port", n.index))?;
            let store = n.running().store().clone();
            wait_until(STALL_TIMEOUT * 5, "reservations return to zero", || {
                let store = store.clone();
                async move { store.space().reserved == 0 }
            })
            .await
            .with_context(|| {
                format!(
                    "node {} still reserves {} bytes after the round",
                    n.index,
                    n.running().store().space().reserved
                )
            })?;
        }
        Ok(())
    }

    /// Stops the gateway, then the nodes, and removes their directories.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.gateway.shutdown().await?;
        self.cluster.shutdown().await
    }
}

/// Whether `d` decodes as the request message of gRPC method `path`.
fn decodes(path: &str, d: &[u8]) -> bool {
    let method = path.rsplit('/').next().unwrap_or_default();
    match method {
        "Download" => pb::DownloadRequest::decode(d).is_ok(),
        "Delete" => pb::DeleteRequest::decode(d).is_ok(),
        "Audit" => pb::AuditRequest::decode(d).is_ok(),
        "Renew" => pb::RenewRequest::decode(d).is_ok(),
        "Ping" => pb::PingRequest::decode(d).is_ok(),
        "FindNode" => pb::FindNodeRequest::decode(d).is_ok(),
        "GetRecord" => pb::GetRecordRequest::decode(d).is_ok(),
        "PutRecord" => pb::PutRecordRequest::decode(d).is_ok(),
        _ => true,
    }
}

/// A mutated message that still decodes as the request of `path` (undecodable bytes
/// are what [`Live::RawGrpc`] sends), within a few tries.
fn generate_decodable(rng: &mut SmallRng, path: &str, seeds: &[Vec<u8>], out: &mut Vec<u8>) {
    for _ in 0..32 {
        generate(rng, seeds, out);
        if decodes(path, out) {
            return;
        }
    }
}

fn chunk(data: Vec<u8>) -> pb::UploadRequest {
    pb::UploadRequest {
        message: Some(upload_request::Message::Chunk(data.into())),
    }
}
