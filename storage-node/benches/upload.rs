//! Upload throughput to one node over loopback gRPC: 1 MiB and 32 MiB pieces, 1 and 8
//! concurrent streams. Prints one line per case. Baseline in the same run: the same
//! pieces written straight into a `PieceStore` (hash + write + fsync, no gRPC), so the
//! figures can be read as ratios on a noisy machine.
//!
//! `cargo bench -p storage-node --bench upload` (`SHOAL_BENCH_MB` = data per case,
//! default 256; `SHOAL_BENCH_DIR` = where to store, default the system temp dir).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use shoal_proto::time::unix_ms;
use shoal_proto::{Identity, PieceId};
use storage_node::{ByteSize, Config, PieceStore};

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Payload, client, data, upload};

fn tempdir() -> tempfile::TempDir {
    match std::env::var_os("SHOAL_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir().unwrap(),
    }
}

fn direct(payload: &Payload, pieces: usize) -> f64 {
    let dir = tempdir();
    let (store, _) = PieceStore::open(dir.path(), 1 << 40).unwrap();
    let owner = *Identity::random().public_key();
    let start = Instant::now();
    for _ in 0..pieces {
        let mut p = store
            .begin_upload(
                PieceId(rand::random()),
                owner,
                payload.bytes.len() as u64,
                payload.block_size,
                u64::MAX,
            )
            .unwrap();
        for c in payload.bytes.chunks(1 << 20) {
            p.write(c).unwrap();
        }
        p.commit(payload.bytes.len() as u64, &payload.root, unix_ms())
            .unwrap();
    }
    (pieces * payload.bytes.len()) as f64 / start.elapsed().as_secs_f64() / 1e6
}

async fn grpc(payload: &Payload, pieces: usize, streams: usize) -> f64 {
    let dir = tempdir();
    let config = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        http: SocketAddr::from(([127, 0, 0, 1], 0)),
        allocate: ByteSize(1 << 40),
        difficulty: 0,
        ..Config::default()
    };
    let node = storage_node::start(&config, Identity::random(), dir.path())
        .await
        .unwrap();
    let (addr, node_id) = (node.grpc_addr(), node.node_id());
    let owner = Arc::new(Identity::random());
    // Warm up the connection.
    let mut c = client(addr).await;
    upload(
        &mut c,
        &owner,
        node_id,
        PieceId(rand::random()),
        &Payload::new(vec![1; 10]),
    )
    .await
    .unwrap();
    let start = Instant::now();
    let tasks: Vec<_> = (0..streams)
        .map(|s| {
            let (owner, payload) = (Arc::clone(&owner), payload.clone());
            let n = pieces / streams + usize::from(s < pieces % streams);
            tokio::spawn(async move {
                let mut c = client(addr).await;
                for _ in 0..n {
                    upload(&mut c, &owner, node_id, PieceId(rand::random()), &payload)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let rate = (pieces * payload.bytes.len()) as f64 / start.elapsed().as_secs_f64() / 1e6;
    node.shutdown().await.unwrap();
    rate
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let mb: usize = std::env::var("SHOAL_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let rt = tokio::runtime::Runtime::new().unwrap();
    for piece_mib in [1usize, 32] {
        let payload = Payload::with_block_size(data(piece_mib << 20, piece_mib as u64), 64 * 1024);
        let pieces = (mb / piece_mib).max(8);
        let base = direct(&payload, pieces);
        println!(
            "upload piece={piece_mib}MiB mode=direct-store streams=1 pieces={pieces} MB/s={base:.1}"
        );
        for streams in [1usize, 8] {
            let rate = rt.block_on(grpc(&payload, pieces, streams));
            println!(
                "upload piece={piece_mib}MiB mode=grpc-loopback streams={streams} pieces={pieces} MB/s={rate:.1} ratio_to_direct={:.2}",
                rate / base
            );
        }
    }
}
