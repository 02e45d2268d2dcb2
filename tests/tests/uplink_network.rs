//! The uplink end to end on real storage nodes (issue 6, "Done when"): every test runs a
//! [`Cluster`] of 12 storage nodes on `127.0.{1..12}.1` and talks to them over real gRPC.
//!
//! Scheme: `4/6/8/12` (k = 4, repair 6, success 8, total 12) — the issue's 29/35/80/110
//! scaled to 12 nodes, one piece per node and /24, keeping `total − success = 4` nodes of
//! slack on upload and `total − k = 8` losses on download. The long-tail tests use
//! `3/5/7/10`, which leaves nodes without a piece: a segment keeps all `total` pieces
//! (not just the first `success`), survives `total − k` stopped holders, and keeps its
//! scheme when nodes fail mid-object while spare nodes exist.
//!
//! Big objects are streamed from a deterministic generator and checked by a streaming
//! hash, so a 200 MiB round trip keeps test memory small.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use shoal_proto::{Identity, NodeId, PieceId};
use shoal_test_kit::{Cli, bounded, build_binary, require_tool, wait_until};
use shoal_tests::cli_net::wait_all_seen;
use shoal_tests::e2e::{HashWriter, Pattern, candidates, cluster_uplink};
use shoal_tests::{Cluster, NodeOptions, Owner};
use uplink::access::GrantError;
use uplink::catalog::Catalog;
use uplink::crypto::PLAIN_BLOCK;
use uplink::grpc::GrpcPieceStore;
use uplink::{Access, Error, NodeCandidate, NodeSource, PutOptions, RootSecret, Scheme, Uplink};
use uplink::{UplinkConfig, segment::SEGMENT_BLOCKS};

const NODES: usize = 12;
const MIB: u64 = 1 << 20;

fn scheme() -> Scheme {
    Scheme::new(4, 6, 8, 12).unwrap()
}

fn config() -> UplinkConfig {
    UplinkConfig {
        scheme: scheme(),
        allow_smaller_scheme: false,
        ..UplinkConfig::default()
    }
}

fn options() -> NodeOptions {
    NodeOptions {
        allocate: 1 << 30,
        ..NodeOptions::default()
    }
}

async fn cluster() -> Cluster {
    Cluster::start(NODES, options()).await.unwrap()
}

fn uplink_on(cluster: &Cluster, access: Access, cfg: UplinkConfig) -> Uplink {
    let up = cluster_uplink(
        access,
        candidates(cluster),
        Catalog::temporary().unwrap(),
        cfg,
    )
    .unwrap();
    up.create_bucket("e2e").unwrap();
    up
}

fn random_access() -> Access {
    Access::new(RootSecret::random(), Vec::new())
}

/// Uploads `len` bytes of pattern `seed` as `key`, streamed.
async fn put_pattern(up: &Uplink, key: &str, len: u64, seed: u64) -> uplink::PutReport {
    let opts = PutOptions {
        size_hint: Some(len),
        ..PutOptions::default()
    };
    up.put("e2e", key, Pattern::new(seed).reader(len), opts)
        .await
        .unwrap_or_else(|e| panic!("put {key} ({len} B): {e}"))
}

/// Downloads `key` (or a range) and checks it against the pattern by hash.
async fn check_pattern(up: &Uplink, key: &str, len: u64, seed: u64, range: Option<(u64, u64)>) {
    let mut out = HashWriter::new();
    let written = up
        .get("e2e", key, range, &mut out, None)
        .await
        .unwrap_or_else(|e| panic!("get {key} {range:?}: {e}"));
    let (a, b) = range.unwrap_or((0, len));
    assert_eq!(written, b - a, "{key} {range:?}: bytes written");
    assert_eq!(out.len, b - a, "{key} {range:?}: bytes received");
    assert_eq!(
        out.finalize(),
        Pattern::new(seed).hash(a, b),
        "{key} {range:?}: content differs"
    );
}

fn index_of(cluster: &Cluster) -> HashMap<NodeId, usize> {
    cluster
        .nodes
        .iter()
        .map(|n| (n.node_id(), n.index))
        .collect()
}

fn piece_file(storage: &Path, piece: &PieceId) -> PathBuf {
    // The node's layout: `pieces/ab/cd/<piece id hex>` (storage-node/src/store.rs).
    let hex = piece.to_hex();
    storage
        .join("pieces")
        .join(&hex[0..2])
        .join(&hex[2..4])
        .join(&hex)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_of_every_edge_size_round_trip_byte_identical() {
    bounded(Duration::from_secs(900), async {
        let cluster = cluster().await;
        let up = uplink_on(&cluster, random_access(), config());
        let sizes: [(&str, u64); 7] = [
            ("empty", 0),
            ("one", 1),
            ("inline-max", 4096),
            ("inline-max+1", 4097),
            ("64MiB-1", 64 * MIB - 1),
            ("64MiB+1", 64 * MIB + 1),
            ("200MiB", 200 * MIB),
        ];
        for (i, (key, len)) in sizes.iter().enumerate() {
            let report = put_pattern(&up, key, *len, i as u64).await;
            assert_eq!(report.entry.size, *len);
            if *len > 4096 {
                assert_eq!(
                    report.used,
                    Some(scheme()),
                    "{key}: stored at the scheme asked"
                );
                for seg in report.entry.segments() {
                    assert!(seg.pieces.len() >= 8, "{key}: at least `success` pieces");
                }
            } else {
                assert!(report.used.is_none(), "{key}: stored inline");
            }
        }
        for (i, (key, len)) in sizes.iter().enumerate() {
            check_pattern(&up, key, *len, i as u64, None).await;
        }
        // Ranges: across the first segment boundary of the 200 MiB object, inside one
        // stripe, the last byte, and an empty range.
        let seg = SEGMENT_BLOCKS * PLAIN_BLOCK as u64;
        for range in [
            (seg - 1000, seg + 70_000),
            (3 * MIB + 17, 3 * MIB + 4113),
            (200 * MIB - 1, 200 * MIB),
            (5, 5),
        ] {
            check_pattern(&up, "200MiB", 200 * MIB, 6, Some(range)).await;
        }
        check_pattern(&up, "inline-max+1", 4097, 3, Some((4000, 4097))).await;
        cluster.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_at_the_real_segment_boundary_round_trip() {
    // A segment is SEGMENT_BLOCKS blocks of PLAIN_BLOCK bytes (not exactly 64 MiB); with
    // small segments the exact boundary is cheap to test: one under, at, one over, two.
    bounded(Duration::from_secs(300), async {
        let cluster = cluster().await;
        let cfg = UplinkConfig {
            segment_blocks: 4,
            ..config()
        };
        let up = uplink_on(&cluster, random_access(), cfg);
        let seg = 4 * PLAIN_BLOCK as u64;
        for (i, len) in [seg - 1, seg, seg + 1, 2 * seg].into_iter().enumerate() {
            let key = format!("seg-{len}");
            let report = put_pattern(&up, &key, len, 100 + i as u64).await;
            assert_eq!(
                report.entry.segments().len() as u64,
                len.div_ceil(seg),
                "{key}: segments"
            );
            check_pattern(&up, &key, len, 100 + i as u64, None).await;
            check_pattern(&up, &key, len, 100 + i as u64, Some((seg - 2, len))).await;
        }
        cluster.shutdown().await.unwrap();
    })
    .await;
}

/// The long-tail scheme of the issue's tests: `3/5/7/10` on 12 nodes leaves two nodes
/// without a piece, so that "the nodes holding pieces" and "the nodes" differ.
fn tail_scheme() -> Scheme {
    Scheme::new(3, 5, 7, 10).unwrap()
}

/// Generous graces: on a loaded machine no piece is cut for lagging or left out of the
/// commit for answering late, so every segment records all `total` pieces.
fn patient(scheme: Scheme) -> UplinkConfig {
    UplinkConfig {
        scheme,
        allow_smaller_scheme: false,
        slow_piece_grace: Duration::from_secs(60),
        long_tail_grace: Duration::from_secs(60),
        ..UplinkConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_succeeds_with_total_minus_k_piece_holders_stopped() {
    bounded(Duration::from_secs(300), async {
        let mut cluster = cluster().await;
        let up = uplink_on(&cluster, random_access(), patient(tail_scheme()));
        let len = 5 * MIB + 3;
        let report = put_pattern(&up, "survivor", len, 21).await;
        assert_eq!(report.used, Some(tail_scheme()));
        let seg = &report.entry.segments()[0];
        let k = usize::from(tail_scheme().k);
        let total = usize::from(tail_scheme().total);
        // The long tail is kept: the catalog records a piece on every one of `total`
        // nodes, not just the first `success` to answer.
        assert_eq!(seg.pieces.len(), total, "all `total` pieces recorded");
        let stored = up
            .catalog()
            .object("e2e", "survivor")
            .unwrap()
            .unwrap()
            .segments()[0]
            .pieces
            .len();
        assert_eq!(stored, total, "and so says the catalog");
        let holders: Vec<usize> = {
            let by_id = index_of(&cluster);
            let mut pieces: Vec<_> = seg.pieces.iter().collect();
            pieces.sort_by_key(|p| p.index);
            pieces.iter().map(|p| by_id[&NodeId(p.node_id)]).collect()
        };
        let distinct: std::collections::HashSet<_> = holders.iter().collect();
        assert_eq!(distinct.len(), total, "one piece per node");
        // Stop total − k = 7 of the nodes holding pieces, data pieces first, so that
        // the download must decode from the 3 parity pieces left.
        let stopped = &holders[..total - k];
        for &i in stopped {
            cluster.node_mut(i).stop().await.unwrap();
        }
        println!(
            "{total} pieces stored; stopped {} holders, {k} holders left",
            stopped.len()
        );
        check_pattern(&up, "survivor", len, 21, None).await;
        check_pattern(&up, "survivor", len, 21, Some((MIB, 2 * MIB + 5))).await;
        // One more holder gone: now it must fail, and say why, not write wrong bytes.
        cluster.node_mut(holders[total - k]).stop().await.unwrap();
        let mut out = HashWriter::new();
        let err = up
            .get("e2e", "survivor", None, &mut out, None)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Download { .. }), "{err}");
        assert!(err.to_string().contains("survivor"), "{err}");
        assert_eq!(out.len, 0, "nothing written when a segment cannot be read");
        cluster.shutdown().await.unwrap();
    })
    .await;
}

/// A discovery layer answering, like a DHT sampler, with a limited view: `first` on the
/// first call, then every node.
struct Narrow {
    first: Vec<NodeCandidate>,
    all: Vec<NodeCandidate>,
    calls: AtomicUsize,
}

impl NodeSource for Narrow {
    fn sample(
        &self,
        _wanted: usize,
    ) -> futures::future::BoxFuture<'_, Result<Vec<NodeCandidate>, uplink::store::DiscoveryError>>
    {
        let first = self.calls.fetch_add(1, Ordering::SeqCst) == 0;
        let nodes = if first {
            self.first.clone()
        } else {
            self.all.clone()
        };
        Box::pin(async move { Ok(nodes) })
    }
}

/// Streams a [`Pattern`] but stops at byte `gate`, says so on `reached`, and goes on
/// only once `release` fires: lets a test act at a known point of an upload.
struct GatedReader {
    pattern: Pattern,
    pos: u64,
    end: u64,
    gate: u64,
    reached: Option<tokio::sync::oneshot::Sender<()>>,
    release: tokio::sync::oneshot::Receiver<()>,
    open: bool,
}

impl tokio::io::AsyncRead for GatedReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::future::Future;
        if !self.open && self.pos >= self.gate {
            if let Some(tx) = self.reached.take() {
                let _ = tx.send(());
            }
            match std::pin::Pin::new(&mut self.release).poll(cx) {
                std::task::Poll::Ready(_) => self.open = true,
                std::task::Poll::Pending => return std::task::Poll::Pending,
            }
        }
        let limit = if self.open { self.end } else { self.gate };
        let n = ((limit - self.pos) as usize).min(buf.remaining());
        if n > 0 {
            let pos = self.pos;
            let dst = buf.initialize_unfilled_to(n);
            self.pattern.fill(pos, dst);
            buf.advance(n);
            self.pos += n as u64;
        }
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_segments_keep_the_scheme_after_nodes_fail_mid_object() {
    bounded(Duration::from_secs(300), async {
        let mut cluster = cluster().await;
        let all = candidates(&cluster);
        // The first sample holds exactly `total` = 10 nodes; two of them fail during the
        // upload. Two spare nodes exist, but only a fresh sample finds them.
        let source = Arc::new(Narrow {
            first: all[..10].to_vec(),
            all: all.clone(),
            calls: AtomicUsize::new(0),
        });
        let cfg = UplinkConfig {
            segment_blocks: 16,
            segment_parallelism: 1,
            ..patient(tail_scheme())
        };
        let up = Uplink::new(
            random_access(),
            Arc::new(GrpcPieceStore::default()),
            source.clone(),
            Catalog::temporary().unwrap(),
            cfg,
        )
        .unwrap();
        up.create_bucket("e2e").unwrap();
        let seg_len = 16 * PLAIN_BLOCK as u64;
        let len = 6 * seg_len + 777;
        let (reached_tx, reached) = tokio::sync::oneshot::channel();
        let (release, release_rx) = tokio::sync::oneshot::channel();
        let reader = GatedReader {
            pattern: Pattern::new(61),
            pos: 0,
            end: len,
            gate: 2 * seg_len,
            reached: Some(reached_tx),
            release: release_rx,
            open: false,
        };
        let opts = PutOptions {
            size_hint: Some(len),
            ..PutOptions::default()
        };
        let failed: Vec<NodeId> = all[..2].iter().map(|c| c.id).collect();
        let (report, ()) = tokio::join!(up.put("e2e", "failover", reader, opts), async {
            // Two segments read and the first committed: stop two nodes of the pool,
            // both holding pieces of it.
            reached.await.unwrap();
            let up = &up;
            wait_until(
                Duration::from_secs(60),
                "the first segment committed",
                || async { up.metrics().segments_uploaded.get() >= 1 },
            )
            .await
            .unwrap();
            for i in 0..2 {
                cluster.node_mut(i).stop().await.unwrap();
            }
            release.send(()).unwrap();
        });
        let report = report.unwrap();
        let segs = report.entry.segments();
        assert_eq!(segs.len(), 7);
        let schemes: Vec<String> = segs
            .iter()
            .map(|s| format!("{}:{}", s.scheme, s.pieces.len()))
            .collect();
        println!("segments (scheme:pieces) with 2 nodes failed mid-object: {schemes:?}");
        assert_eq!(report.used, Some(tail_scheme()));
        for seg in segs {
            assert_eq!(
                seg.scheme,
                tail_scheme(),
                "segment {} keeps the scheme",
                seg.index
            );
            assert!(seg.pieces.len() >= usize::from(tail_scheme().success));
        }
        assert_eq!(
            segs[0].pieces.len(),
            10,
            "the first segment, before the failure"
        );
        assert!(
            failed
                .iter()
                .all(|f| segs[0].pieces.iter().any(|p| NodeId(p.node_id) == *f)),
            "the failed nodes held pieces of the first segment"
        );
        // Segments planned once the failures are known avoid the failed nodes and place
        // all `total` pieces on fresh ones.
        for seg in &segs[3..] {
            assert_eq!(seg.pieces.len(), 10, "segment {}", seg.index);
            assert!(
                seg.pieces
                    .iter()
                    .all(|p| !failed.contains(&NodeId(p.node_id))),
                "segment {}: no piece on a failed node",
                seg.index
            );
        }
        assert!(
            source.calls.load(Ordering::SeqCst) >= 2,
            "fresh nodes sampled"
        );
        check_pattern(&up, "failover", len, 61, None).await;
        cluster.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_piece_on_disk_becomes_an_erasure_and_the_node_is_noted() {
    bounded(Duration::from_secs(300), async {
        let cluster = cluster().await;
        // No download margin: exactly k pieces are read, so the tampered one is always
        // among them (with a margin it could lose the race for the first stripe).
        let cfg = UplinkConfig {
            download_margin: Some(0),
            ..config()
        };
        let up = uplink_on(&cluster, random_access(), cfg);
        let len = 9 * MIB + 11;
        let report = put_pattern(&up, "tampered", len, 31).await;
        let seg = &report.entry.segments()[0];
        // The download asks for pieces in index order (data pieces first), so the
        // lowest-index stored piece is always read (piece 0 may be in the cancelled tail).
        let victim = seg.pieces.iter().min_by_key(|p| p.index).unwrap();
        let bad = NodeId(victim.node_id);
        let node = &cluster.nodes[index_of(&cluster)[&bad]];
        let path = piece_file(&node.storage_dir(), &PieceId(victim.piece_id));
        let mut bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, seg.piece_size);
        // Flip bytes in a block in the middle of the piece: the first stripes verify,
        // then the node starts serving bad data mid-download.
        let mid = bytes.len() / 2;
        for b in &mut bytes[mid..mid + 64] {
            *b ^= 0xa5;
        }
        std::fs::write(&path, &bytes).unwrap();
        drop(bytes);

        check_pattern(&up, "tampered", len, 31, None).await;
        let stats = up.catalog().node_stats().unwrap();
        assert!(
            stats.get(&bad).is_some_and(|s| s.corrupt >= 1),
            "the node serving corrupt data is remembered: {:?}",
            stats.get(&bad)
        );
        let corrupt = up
            .metrics()
            .piece_downloads
            .with_label_values(&["corrupt"])
            .get();
        assert!(corrupt >= 1, "corrupt piece downloads counted");
        for (id, s) in &stats {
            if *id != bad {
                assert_eq!(s.corrupt, 0, "only the tampered node is blamed");
            }
        }
        // A range inside the corrupt region is right too (the node is now asked last).
        let shard = u64::from(seg.shard_size);
        let k = u64::from(scheme().k);
        let at = (mid as u64 / shard) * k * shard * PLAIN_BLOCK as u64 / 65_536;
        check_pattern(
            &up,
            "tampered",
            len,
            31,
            Some((at, (at + 100_000).min(len))),
        )
        .await;
        cluster.shutdown().await.unwrap();
    })
    .await;
}

/// Accepts TCP connections and never answers (holds them open).
async fn stalled_listener(ip: [u8; 4]) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind((std::net::Ipv4Addr::from(ip), 0))
        .await
        .unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_succeeds_with_total_minus_success_nodes_dead_or_stalled() {
    bounded(Duration::from_secs(300), async {
        let mut cluster = cluster().await;
        // 12 candidates for 12 pieces: 8 live nodes, 2 stopped nodes, 2 stalled listeners
        // (total − success = 4 bad). Each in its own /24.
        let mut nodes: Vec<NodeCandidate> = candidates(&cluster).into_iter().take(10).collect();
        for i in [8, 9] {
            cluster.node_mut(i).stop().await.unwrap();
        }
        let mut stalls = Vec::new();
        for ip in [[127, 0, 210, 1], [127, 0, 211, 1]] {
            let (address, task) = stalled_listener(ip).await;
            nodes.push(NodeCandidate {
                id: Identity::random().node_id(),
                public_key: None,
                address,
                free_space: 1 << 30,
            });
            stalls.push(task);
        }
        let dead: Vec<NodeId> = nodes[8..].iter().map(|c| c.id).collect();
        let up = cluster_uplink(
            random_access(),
            nodes.clone(),
            Catalog::temporary().unwrap(),
            config(),
        )
        .unwrap();
        up.create_bucket("e2e").unwrap();
        let len = 3 * MIB + 5;
        let report = put_pattern(&up, "resilient", len, 41).await;
        assert_eq!(report.used, Some(scheme()), "no smaller scheme needed");
        for seg in report.entry.segments() {
            assert_eq!(seg.pieces.len(), 8, "exactly the 8 live nodes hold pieces");
            for p in &seg.pieces {
                assert!(!dead.contains(&NodeId(p.node_id)), "no piece on a bad node");
            }
        }
        // Dead nodes fail, stalled ones are cut after the grace period (or cancelled when
        // the long tail's grace ends): never a receipt from them.
        let lost: u64 = ["failed", "cut", "cancelled"]
            .iter()
            .map(|l| up.metrics().piece_uploads.with_label_values(&[l]).get())
            .sum();
        assert!(lost >= 4, "the bad nodes' pieces did not complete: {lost}");
        check_pattern(&up, "resilient", len, 41, None).await;

        // Several segments (~1 MiB each): nodes that failed are excluded for the rest of
        // the object, which leaves 8 candidates for 12 pieces and no spare to sample;
        // with smaller schemes allowed the uplink goes on at a smaller scheme and says
        // which. It gives up only the upload slack: k, repair and success are kept
        // (4/6/8/8; the old proportional rule went as low as 2/4/5/8).
        let cfg = UplinkConfig {
            segment_blocks: 16,
            allow_smaller_scheme: true,
            ..config()
        };
        let up3 =
            cluster_uplink(random_access(), nodes, Catalog::temporary().unwrap(), cfg).unwrap();
        up3.create_bucket("e2e").unwrap();
        let report = put_pattern(&up3, "multi", len, 42).await;
        let schemes: Vec<String> = report
            .entry
            .segments()
            .iter()
            .map(|s| format!("{}:{}", s.scheme, s.pieces.len()))
            .collect();
        println!("multi-segment upload with 4 bad candidates: {schemes:?}");
        let shrunk = Scheme::new(4, 6, 8, 8).unwrap();
        for seg in report.entry.segments() {
            // Segments planned before every bad node is known may drop only the known
            // ones (e.g. 4/6/8/10); none gives up more than slack.
            let s = seg.scheme;
            assert!(
                (s.k, s.repair, s.success) == (4, 6, 8) && (8..=12).contains(&s.total),
                "segment {}: {s} keeps k, repair and success",
                seg.index,
            );
            assert_eq!(
                seg.pieces.len(),
                8,
                "segment {}: the 8 live nodes",
                seg.index
            );
            for p in &seg.pieces {
                assert!(!dead.contains(&NodeId(p.node_id)), "no piece on a bad node");
            }
        }
        let last = report.entry.segments().last().unwrap();
        assert_eq!(last.scheme, shrunk, "once the bad nodes are known");
        assert_eq!(
            report.used,
            Some(shrunk),
            "and the smaller scheme is reported"
        );
        check_pattern(&up3, "multi", len, 42, None).await;

        // One more bad node than the slack: the upload fails with a clear error.
        let mut fewer = candidates(&cluster);
        fewer.truncate(7);
        let up2 = cluster_uplink(
            random_access(),
            fewer,
            Catalog::temporary().unwrap(),
            config(),
        )
        .unwrap();
        up2.create_bucket("e2e").unwrap();
        let err = up2
            .put(
                "e2e",
                "too-few",
                Pattern::new(1).reader(MIB),
                PutOptions::default(),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NetworkTooSmall { .. }), "{err}");
        for t in stalls {
            t.abort();
        }
        cluster.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passphrase_or_grant_reads_nothing_and_says_so() {
    bounded(Duration::from_secs(300), async {
        let cluster = cluster().await;
        let right = RootSecret::from_passphrase(b"correct horse battery staple", "alice").unwrap();
        let up = uplink_on(&cluster, Access::new(right, Vec::new()), config());
        put_pattern(&up, "secret-big", 300_000, 51).await;
        put_pattern(&up, "secret-small", 100, 52).await;
        check_pattern(&up, "secret-big", 300_000, 51, None).await;

        // The same catalog opened with another passphrase: no key unwraps, nothing is
        // written, and the error names the object.
        let wrong = RootSecret::from_passphrase(b"correct horse battery stapler", "alice").unwrap();
        let other = cluster_uplink(
            Access::new(wrong, Vec::new()),
            candidates(&cluster),
            up.catalog().clone(),
            config(),
        )
        .unwrap();
        for key in ["secret-big", "secret-small"] {
            let mut out = HashWriter::new();
            let err = other
                .get("e2e", key, None, &mut out, None)
                .await
                .unwrap_err();
            assert!(matches!(err, Error::Crypto { .. }), "{key}: {err}");
            assert!(err.to_string().contains(key), "{err}");
            assert_eq!(out.len, 0, "{key}: nothing read");
        }

        // The nodes themselves give the pieces only to their owner's key.
        let entry = up.stat("e2e", "secret-big").unwrap();
        let p = &entry.segments()[0].pieces[0];
        let holder = &cluster.nodes[index_of(&cluster)[&NodeId(p.node_id)]];
        let stranger = Owner::new();
        let mut client = holder.client().await.unwrap();
        let denied = stranger
            .download(&mut client, NodeId(p.node_id), PieceId(p.piece_id), 0, 1024)
            .await
            .unwrap_err();
        assert_ne!(denied.code(), tonic::Code::Ok);
        println!("a stranger's download order: {denied}");

        // Damaged grants are refused with a typed error before anything is read.
        let grant = Access::new(RootSecret::random(), vec!["127.0.1.1:7000".into()])
            .to_grant()
            .unwrap();
        let mut flipped = grant.clone().into_bytes();
        let last = flipped.len() - 3;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert!(matches!(
            Access::from_grant(&flipped),
            Err(GrantError::Checksum | GrantError::Encoding(_))
        ));
        assert!(matches!(
            Access::from_grant(&grant[..grant.len() / 2]),
            Err(GrantError::Truncated(_) | GrantError::Checksum | GrantError::Encoding(_))
        ));
        assert!(matches!(
            Access::from_grant("not-a-grant"),
            Err(GrantError::NotAGrant)
        ));
        assert!(Access::from_grant(&grant).is_ok());
        cluster.shutdown().await.unwrap();
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// The real `uplink` binary: `cp -r` of a 1,000-file tree up and back

/// Runs the uplink CLI; returns (success, stdout, stderr).
async fn run_uplink(cli: &Cli, config: &Path, args: &[&str]) -> (bool, String, String) {
    let run = cli.run(config, args).await.unwrap();
    (run.success(), run.stdout, run.stderr)
}

/// 1,000 files in nested directories: mostly small (inline), every 25th larger than the
/// inline limit (erasure-coded), a few empty.
fn write_tree(root: &Path) -> u64 {
    let mut total = 0;
    for i in 0..1000u64 {
        let dir = root
            .join(format!("d{}", i % 10))
            .join(format!("sub{}", i % 3));
        std::fs::create_dir_all(&dir).unwrap();
        let len = match i {
            _ if i % 100 == 7 => 0,
            _ if i % 25 == 0 => 5_000 + i * 97,
            _ => (i * 37) % 4000 + 1,
        };
        std::fs::write(
            dir.join(format!("file-{i:04}.bin")),
            Pattern::new(i).bytes(0, len),
        )
        .unwrap();
        total += len;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_recursive_copy_of_a_thousand_files_is_identical_under_diff() {
    // A missing tool fails the test instead of skipping it.
    require_tool(
        "diff",
        &["--version"],
        "this test compares trees with `diff -r`: install diffutils",
    );
    let cli = Cli::new(build_binary("uplink-cli", "uplink").unwrap());
    bounded(Duration::from_secs(600), async {
        let cluster = cluster().await;
        // The CLI finds the nodes through the DHT like a real uplink: wait until a DHT
        // client joined through the seed sees all of them.
        wait_all_seen(&cluster).await.unwrap();

        let work = tempfile::tempdir().unwrap();
        let cfg = work.path().join("config");
        std::fs::create_dir_all(&cfg).unwrap();
        std::fs::write(
            cfg.join("config.toml"),
            "difficulty = 0\nlocal_network = true\nscheme = \"4/6/8/12\"\nallow_smaller_scheme = false\n",
        )
        .unwrap();
        let grant = Access::new(RootSecret::random(), vec![cluster.node(0).pinned()])
            .to_grant()
            .unwrap();
        let (ok, _, err) = run_uplink(&cli, &cfg, &["access", "import", &grant]).await;
        assert!(ok, "access import: {err}");
        let (ok, _, err) = run_uplink(&cli, &cfg, &["mb", "shoal://backups"]).await;
        assert!(ok, "mb: {err}");

        let src = work.path().join("tree");
        let bytes = write_tree(&src);
        let src_arg = src.to_str().unwrap();
        let (ok, _, err) = run_uplink(
            &cli,
            &cfg,
            &["cp", "-r", "--no-progress", src_arg, "shoal://backups/tree"],
        )
        .await;
        assert!(ok, "cp -r up: {err}");
        let (ok, listing, err) =
            run_uplink(&cli, &cfg, &["ls", "-r", "shoal://backups/tree"]).await;
        assert!(ok, "ls: {err}");
        assert_eq!(
            listing.lines().filter(|l| l.contains("file-")).count(),
            1000,
            "every file listed"
        );

        let back = work.path().join("back");
        let back_arg = back.to_str().unwrap();
        let (ok, _, err) = run_uplink(
            &cli,
            &cfg,
            &[
                "cp",
                "-r",
                "--no-progress",
                "shoal://backups/tree",
                back_arg,
            ],
        )
        .await;
        assert!(ok, "cp -r down: {err}");
        let diff = tokio::process::Command::new("diff")
            .arg("-r")
            .arg(&src)
            .arg(&back)
            .output()
            .await
            .unwrap();
        assert!(
            diff.status.success(),
            "diff -r found differences:\n{}",
            String::from_utf8_lossy(&diff.stdout)
        );
        println!("1,000 files, {bytes} bytes: identical under diff -r");

        // A damaged grant is refused by the CLI with a message, and reads nothing.
        let other = work.path().join("other");
        let bad = format!("{}x", &grant[..grant.len() - 1]);
        let (ok, _, err) = run_uplink(&cli, &other, &["access", "import", &bad]).await;
        assert!(!ok, "a damaged grant is refused");
        assert!(err.contains("grant"), "{err}");
        let (ok, _, err) = run_uplink(
            &cli,
            &other,
            &[
                "cp",
                "-r",
                "shoal://backups/tree",
                other.join("x").to_str().unwrap(),
            ],
        )
        .await;
        assert!(!ok, "no access, no read");
        assert!(err.contains("access"), "{err}");
        cluster.shutdown().await.unwrap();
    })
    .await;
}
