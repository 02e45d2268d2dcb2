//! Loopback throughput of the whole uplink over real gRPC: fake storage nodes (the
//! in-memory store behind tonic servers on 127.0.N.1, in this process) and the library
//! uploading and downloading one object. Prints one machine-readable line.
//!
//! ```text
//! cargo run --release -p uplink --example loopback -- NODES SCHEME MIB [discard]
//! cargo run --release -p uplink --example loopback -- 20 3/5/7/10 256
//! cargo run --release -p uplink --example loopback -- 110 29/35/80/110 256
//! cargo run --release -p uplink --example loopback -- 20 3/5/7/10 4096 discard   # peak RSS
//! cargo run --release -p uplink --example loopback -- 20 3/5/7/10 0 small    # 1,000 × 4 KiB
//! ```
//! The fake nodes share the process (and its CPU) with the uplink and keep pieces in
//! memory, so this measures the uplink plus gRPC, not a real storage node; `discard`
//! makes the nodes drop piece bytes, to see the uplink's own memory on huge uploads
//! (download is skipped then).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use tokio::io::AsyncRead;
use uplink::catalog::Catalog;
use uplink::grpc::GrpcPieceStore;
use uplink::testing::fake_net::FakeNetwork;
use uplink::{Access, PutOptions, RootSecret, StaticNodes, Uplink, UplinkConfig};

/// Pseudo-random bytes generated on the fly, so the input costs no memory.
struct Source {
    left: u64,
    x: u64,
}

impl AsyncRead for Source {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let n = (buf.remaining() as u64).min(self.left) as usize;
        let mut out = vec![0u8; n];
        for chunk in out.chunks_mut(8) {
            self.x ^= self.x << 13;
            self.x ^= self.x >> 7;
            self.x ^= self.x << 17;
            let b = self.x.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        buf.put_slice(&out);
        self.left -= n as u64;
        std::task::Poll::Ready(Ok(()))
    }
}

fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
            })
        })
        .map_or(0, |kib| kib / 1024)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let nodes: usize = args.get(1).map_or(20, |a| a.parse().unwrap());
    let scheme = args.get(2).map_or("3/5/7/10", |s| s.as_str());
    let mib: u64 = args.get(3).map_or(256, |a| a.parse().unwrap());
    let discard = args.get(4).is_some_and(|a| a == "discard");
    let small = args.get(4).is_some_and(|a| a == "small");
    let size = mib << 20;

    let net = FakeNetwork::start(nodes).await.unwrap();
    net.store.discard_data(discard);
    let config = UplinkConfig {
        scheme: scheme.parse().unwrap(),
        ..UplinkConfig::default()
    };
    let up = Uplink::new(
        Access::new(RootSecret::random(), vec![]),
        Arc::new(GrpcPieceStore::default()),
        Arc::new(StaticNodes(net.store.candidates())),
        Catalog::temporary().unwrap(),
        config,
    )
    .unwrap();
    up.create_bucket("bench").unwrap();

    if small {
        // 1,000 objects of 4 KiB: stored inline in the catalog (SQLite, on disk).
        let dir = tempfile::tempdir().unwrap();
        let up = Uplink::new(
            Access::new(RootSecret::random(), vec![]),
            Arc::new(GrpcPieceStore::default()),
            Arc::new(StaticNodes(net.store.candidates())),
            Catalog::open(dir.path(), uplink::catalog::WriterId::random()).unwrap(),
            UplinkConfig::default(),
        )
        .unwrap();
        up.create_bucket("small").unwrap();
        let body = vec![7u8; 4096];
        let t = Instant::now();
        for i in 0..1000 {
            up.put("small", &format!("o{i}"), &body[..], PutOptions::default())
                .await
                .unwrap();
        }
        up.catalog().flush().unwrap();
        let put_s = 1000.0 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        for i in 0..1000 {
            let mut out = Vec::new();
            up.get("small", &format!("o{i}"), None, &mut out, None)
                .await
                .unwrap();
            assert_eq!(out.len(), 4096);
        }
        let get_s = 1000.0 / t.elapsed().as_secs_f64();
        println!("small objects=1000 size=4096 put_per_s={put_s:.0} get_per_s={get_s:.0}");
        return;
    }

    let source = Source {
        left: size,
        x: 0x9e37_79b9,
    };
    let opts = PutOptions {
        size_hint: Some(size),
        ..PutOptions::default()
    };
    let t = Instant::now();
    let report = up.put("bench", "object", source, opts).await.unwrap();
    let up_secs = t.elapsed().as_secs_f64();
    let rss_after_upload = peak_rss_mib();
    let down = if discard {
        "skipped".to_string()
    } else {
        let t = Instant::now();
        let n = up
            .get("bench", "object", None, tokio::io::sink(), None)
            .await
            .unwrap();
        assert_eq!(n, size);
        format!("{:.0}", size as f64 / 1e6 / t.elapsed().as_secs_f64())
    };
    println!(
        "loopback nodes={nodes} scheme={} size_mib={mib} up_mb_s={:.0} down_mb_s={down} peak_rss_mib_after_upload={rss_after_upload}",
        report.used.map_or("inline".into(), |s| s.to_string()),
        size as f64 / 1e6 / up_secs,
    );
}
