//! End-to-end tests of the uplink library over the in-memory piece store: round trips,
//! ranges, and nodes that die, stall, corrupt data or lie.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use shoal_test_kit::xorshift_bytes;
use uplink::catalog::{Catalog, Content};
use uplink::testing::{Behaviour, MemoryPieceStore};
use uplink::{Access, Error, PutOptions, RootSecret, Scheme, StaticNodes, Uplink, UplinkConfig};

fn data(n: usize, seed: u8) -> Vec<u8> {
    xorshift_bytes(n, u64::from(seed))
}

fn config(scheme: &str) -> UplinkConfig {
    UplinkConfig {
        scheme: scheme.parse().unwrap(),
        // Small segments so that multi-segment objects stay small in tests.
        segment_blocks: 4,
        slow_piece_grace: Duration::from_secs(1),
        piece_timeout: Duration::from_secs(2),
        ..UplinkConfig::default()
    }
}

fn uplink_with(
    store: &MemoryPieceStore,
    root: [u8; 32],
    catalog: Catalog,
    config: UplinkConfig,
) -> Uplink {
    let access = Access::new(RootSecret::from_bytes(root), vec![]);
    let nodes = Arc::new(StaticNodes(store.candidates()));
    Uplink::new(access, Arc::new(store.clone()), nodes, catalog, config).unwrap()
}

fn setup(nodes: usize, scheme: &str) -> (MemoryPieceStore, Uplink) {
    let store = MemoryPieceStore::with_nodes(nodes);
    let up = uplink_with(
        &store,
        [1; 32],
        Catalog::temporary().unwrap(),
        config(scheme),
    );
    up.create_bucket("bucket").unwrap();
    (store, up)
}

async fn put(up: &Uplink, key: &str, bytes: &[u8]) -> uplink::PutReport {
    let opts = PutOptions {
        size_hint: Some(bytes.len() as u64),
        ..PutOptions::default()
    };
    tokio::time::timeout(Duration::from_secs(60), up.put("bucket", key, bytes, opts))
        .await
        .expect("upload timed out")
        .unwrap()
}

async fn get(up: &Uplink, key: &str, range: Option<(u64, u64)>) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(60),
        up.get("bucket", key, range, &mut out, None),
    )
    .await
    .expect("download timed out")?;
    Ok(out)
}

const BLOCK: usize = uplink::crypto::PLAIN_BLOCK;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_at_boundary_sizes() {
    let (store, up) = setup(12, "3/5/7/10");
    let sizes = [
        0,
        1,
        4096,
        4097,
        BLOCK - 1,
        BLOCK,
        BLOCK + 1,
        4 * BLOCK,
        4 * BLOCK + 1,
        9 * BLOCK + 123,
    ];
    for (i, &n) in sizes.iter().enumerate() {
        let bytes = data(n, i as u8);
        let key = format!("obj-{n}");
        let report = put(&up, &key, &bytes).await;
        assert_eq!(report.entry.size, n as u64);
        match &report.entry.content {
            Content::Inline { .. } => assert!(n <= 4096),
            Content::Segments(s) => {
                assert!(n > 4096);
                // 4 blocks per segment in this config.
                assert_eq!(s.len(), n.div_ceil(4 * BLOCK));
                assert!(s.iter().all(|s| s.pieces.len() >= 7));
            }
            Content::Parts { .. } => panic!("a single put never makes a multipart object"),
        }
        assert_eq!(get(&up, &key, None).await.unwrap(), bytes, "size {n}");
    }
    assert!(store.piece_count() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_of_unknown_size_round_trip() {
    let (_, up) = setup(12, "3/5/7/10");
    for n in [5000usize, 4 * BLOCK, 4 * BLOCK + 7] {
        let bytes = data(n, 9);
        let opts = PutOptions::default(); // no size hint: like stdin
        up.put("bucket", "s", &bytes[..], opts).await.unwrap();
        assert_eq!(get(&up, "s", None).await.unwrap(), bytes);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_reads_return_exactly_the_range_and_fetch_little() {
    let (store, up) = setup(12, "3/5/7/10");
    let bytes = data(9 * BLOCK + 500, 3);
    put(&up, "r", &bytes).await;
    let n = bytes.len() as u64;
    for (a, b) in [
        (0, 1),
        (0, n),
        (n - 1, n),
        (5, 5),
        (BLOCK as u64 - 3, BLOCK as u64 + 3),
        (4 * BLOCK as u64 + 1, 8 * BLOCK as u64 + 9),
    ] {
        assert_eq!(
            get(&up, "r", Some((a, b))).await.unwrap(),
            bytes[a as usize..b as usize],
            "{a}-{b}"
        );
    }
    // A one-byte range touches one segment: at most k + margin piece downloads.
    let before = store.calls().1;
    get(&up, "r", Some((10, 11))).await.unwrap();
    assert!(
        store.calls().1 - before <= 5,
        "{} downloads",
        store.calls().1 - before
    );
    assert!(matches!(
        get(&up, "r", Some((0, n + 1))).await,
        Err(Error::InvalidRange { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_survives_losing_total_minus_k_nodes() {
    let (store, up) = setup(12, "3/5/7/10");
    // One segment, so that the nodes killed below hold no other segment's pieces.
    let bytes = data(3 * BLOCK + 5, 4);
    let report = put(&up, "x", &bytes).await;
    assert_eq!(report.entry.segments().len(), 1);
    // Kill every node holding a piece except k of them.
    let seg = &report.entry.segments()[0];
    let k = usize::from(seg.scheme.k);
    for p in &seg.pieces[..seg.pieces.len() - k] {
        store.set_behaviour(&shoal_proto::NodeId(p.node_id), Behaviour::Dead);
    }
    assert_eq!(get(&up, "x", None).await.unwrap(), bytes);
    // One more dead node and the segment cannot be read: an error, never wrong data.
    let last = &seg.pieces[seg.pieces.len() - 1];
    store.set_behaviour(&shoal_proto::NodeId(last.node_id), Behaviour::Dead);
    let err = get(&up, "x", None).await.unwrap_err();
    assert!(matches!(err, Error::Download { .. }), "{err}");
    assert!(err.to_string().contains("bucket/x"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_stalled_nodes_never_produce_wrong_output() {
    // No download margin: the corrupt and the stalled data pieces must be replaced (and
    // the corrupt one is certainly seen, not just outrun).
    let store = MemoryPieceStore::with_nodes(12);
    let cfg = UplinkConfig {
        download_margin: Some(0),
        piece_timeout: Duration::from_millis(500),
        ..config("3/5/7/10")
    };
    let up = uplink_with(&store, [1; 32], Catalog::temporary().unwrap(), cfg);
    up.create_bucket("bucket").unwrap();
    let bytes = data(6 * BLOCK + 11, 5);
    let report = put(&up, "c", &bytes).await;
    // Two of the first segment's data pieces: one node corrupts, one stalls. (Only the
    // first segment: a node holding pieces of both could not be both.)
    let seg = &report.entry.segments()[0];
    let corrupt = shoal_proto::NodeId(seg.pieces[0].node_id);
    store.set_behaviour(&corrupt, Behaviour::Corrupt);
    store.set_behaviour(
        &shoal_proto::NodeId(seg.pieces[1].node_id),
        Behaviour::Stalled,
    );
    assert_eq!(get(&up, "c", None).await.unwrap(), bytes);
    assert!(up.catalog().node_stats().unwrap()[&corrupt].corrupt > 0);
    // When every node corrupts, the result is an error.
    for c in store.candidates() {
        store.set_behaviour(&c.id, Behaviour::Corrupt);
    }
    assert!(get(&up, "c", None).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_succeeds_with_total_minus_success_nodes_dead_or_stalled() {
    // Exactly `total` nodes, so the uplink cannot avoid the bad ones.
    let store = MemoryPieceStore::with_nodes(10);
    let nodes = store.candidates();
    store.set_behaviour(&nodes[0].id, Behaviour::Dead);
    store.set_behaviour(&nodes[1].id, Behaviour::Stalled);
    store.set_behaviour(&nodes[2].id, Behaviour::LyingReceipt);
    let up = uplink_with(
        &store,
        [1; 32],
        Catalog::temporary().unwrap(),
        config("3/5/7/10"),
    );
    up.create_bucket("bucket").unwrap();
    let bytes = data(3 * BLOCK, 6);
    let report = put(&up, "u", &bytes).await;
    let seg = &report.entry.segments()[0];
    assert!(seg.pieces.len() >= 7);
    let bad: Vec<_> = nodes[..3].iter().map(|n| n.id.0).collect();
    assert!(seg.pieces.iter().all(|p| !bad.contains(&p.node_id)));
    assert_eq!(get(&up, "u", None).await.unwrap(), bytes);
    let m = up.metrics().piece_uploads.with_label_values(&["ok"]).get();
    assert!(m >= 7);

    // One more bad node and `success` cannot be reached: a clear error.
    store.set_behaviour(&nodes[3].id, Behaviour::Dead);
    store.set_behaviour(&nodes[4].id, Behaviour::Dead);
    let up = uplink_with(
        &store,
        [1; 32],
        Catalog::temporary().unwrap(),
        config("3/5/9/10"),
    );
    up.create_bucket("bucket").unwrap();
    let err = up
        .put("bucket", "v", &bytes[..], PutOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Upload { .. }), "{err}");
    assert!(err.to_string().contains("bucket/v"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_networks_get_a_smaller_scheme_or_a_clear_error() {
    let store = MemoryPieceStore::with_nodes(12);
    let up = uplink_with(
        &store,
        [1; 32],
        Catalog::temporary().unwrap(),
        config("29/35/80/110"),
    );
    up.create_bucket("bucket").unwrap();
    let bytes = data(2 * BLOCK, 7);
    let report = put(&up, "s", &bytes).await;
    assert_eq!(report.requested, Scheme::default());
    // k gives way only after total and success, keeping the repair margin of 6 pieces.
    assert_eq!(report.used.unwrap().to_string(), "6/12/12/12");
    assert_eq!(get(&up, "s", None).await.unwrap(), bytes);

    let strict = UplinkConfig {
        allow_smaller_scheme: false,
        ..config("29/35/80/110")
    };
    let up = uplink_with(&store, [1; 32], Catalog::temporary().unwrap(), strict);
    up.create_bucket("bucket").unwrap();
    let err = up
        .put("bucket", "s", &bytes[..], PutOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NetworkTooSmall { .. }), "{err}");
    assert!(err.to_string().contains("only 12 suitable nodes"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_downloads_read_data_pieces_and_decode_nothing() {
    // success = total: every piece, data pieces included, is stored.
    let (store, up) = setup(12, "3/5/10/10");
    let bytes = data(5 * BLOCK + 3, 9);
    let report = put(&up, "d", &bytes).await;
    for seg in report.entry.segments() {
        assert!((0..3).all(|i| seg.pieces.iter().any(|p| p.index == i)));
    }
    let decoded = || up.metrics().stripes_decoded.get();
    // Every node answers: the k data pieces are used as they are, whatever the order in
    // which the k + margin raced pieces arrive.
    for _ in 0..5 {
        assert_eq!(get(&up, "d", None).await.unwrap(), bytes);
    }
    assert_eq!(decoded(), 0, "no stripe needed decoding");
    // Without data piece 0 every stripe is decoded from a parity piece.
    let seg = &report.entry.segments()[0];
    let p0 = seg.pieces.iter().find(|p| p.index == 0).unwrap();
    store.set_behaviour(&shoal_proto::NodeId(p0.node_id), Behaviour::Dead);
    assert_eq!(get(&up, "d", None).await.unwrap(), bytes);
    assert!(decoded() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_access_reads_nothing() {
    let store = MemoryPieceStore::with_nodes(12);
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::open(dir.path(), uplink::catalog::WriterId::random()).unwrap();
    let up = uplink_with(&store, [1; 32], catalog.clone(), config("3/5/7/10"));
    up.create_bucket("bucket").unwrap();
    put(&up, "big", &data(2 * BLOCK, 1)).await;
    put(&up, "small", b"hello").await;
    // Same catalog, different root secret (wrong passphrase or grant).
    let other = uplink_with(&store, [2; 32], catalog, config("3/5/7/10"));
    for key in ["big", "small"] {
        let mut out = Vec::new();
        let err = other
            .get("bucket", key, None, &mut out, None)
            .await
            .unwrap_err();
        assert!(out.is_empty());
        assert!(err.to_string().contains("wrong access"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_rename_and_buckets() {
    let (store, up) = setup(12, "3/5/7/10");
    let bytes = data(2 * BLOCK, 8);
    put(&up, "a/b", &bytes).await;
    let pieces = store.piece_count();
    assert!(pieces >= 7);
    up.rename("bucket", "a/b", "bucket", "c/d").unwrap();
    assert!(matches!(
        up.stat("bucket", "a/b"),
        Err(Error::NoSuchObject { .. })
    ));
    assert_eq!(get(&up, "c/d", None).await.unwrap(), bytes);
    assert!(matches!(
        up.remove_bucket("bucket", false).await,
        Err(Error::BucketNotEmpty(_))
    ));
    // Overwriting replaces the object and deletes the old pieces.
    put(&up, "c/d", &bytes).await;
    assert!(store.piece_count() <= 2 * pieces);
    let placed: usize = up
        .stat("bucket", "c/d")
        .unwrap()
        .segments()
        .iter()
        .map(|s| s.pieces.len())
        .sum();
    let before_delete = store.piece_count();
    let report = up.delete("bucket", "c/d").await.unwrap();
    assert_eq!(report.pieces_deleted, placed);
    // Exactly the recorded pieces go (the long tail is recorded, or deleted by the reaper
    // when its receipt comes after the commit).
    assert_eq!(store.piece_count(), before_delete - placed);
    put(&up, "e", &bytes).await;
    let before = store.piece_count();
    let placed: usize = up
        .stat("bucket", "e")
        .unwrap()
        .segments()
        .iter()
        .map(|s| s.pieces.len())
        .sum();
    let report = up.remove_bucket("bucket", true).await.unwrap();
    assert_eq!(report.pieces_deleted, placed);
    assert_eq!(store.piece_count(), before - placed);
    assert!(up.buckets().unwrap().is_empty());
    assert!(matches!(
        up.create_bucket("Bad_Name"),
        Err(Error::InvalidBucket { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_to_a_silent_node_gives_up_at_the_piece_deadline() {
    let (store, up) = setup(12, "3/5/7/10");
    put(&up, "k", &data(2 * BLOCK, 9)).await;
    let entry = up.stat("bucket", "k").unwrap();
    let placed: Vec<_> = entry.segments()[0]
        .pieces
        .iter()
        .map(|p| p.node_id)
        .collect();
    // One node holding a piece accepts the connection and never answers.
    store.set_behaviour(&shoal_proto::NodeId(placed[0]), Behaviour::Stalled);
    let total: usize = entry.segments().iter().map(|s| s.pieces.len()).sum();
    // Bounded: the delete ends at its deadline (2 s here) instead of hanging `rm`.
    let report = tokio::time::timeout(Duration::from_secs(60), up.delete("bucket", "k"))
        .await
        .expect("a silent node hung the delete")
        .unwrap();
    assert_eq!(report.pieces_failed, 1);
    assert_eq!(report.pieces_deleted, total - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_size_segments_round_trip() {
    // 64 MiB + 1 with the default segment size: two segments, the second of one byte.
    let store = MemoryPieceStore::with_nodes(12);
    let cfg = UplinkConfig {
        segment_blocks: uplink::segment::SEGMENT_BLOCKS,
        ..config("3/5/7/10")
    };
    let up = uplink_with(&store, [1; 32], Catalog::temporary().unwrap(), cfg);
    up.create_bucket("bucket").unwrap();
    let n = (uplink::segment::SEGMENT_BLOCKS as usize) * BLOCK + 1;
    let bytes = data(n, 2);
    let report = put(&up, "big", &bytes).await;
    assert_eq!(report.entry.segments().len(), 2);
    assert_eq!(report.entry.segments()[1].plain_size, 1);
    assert_eq!(get(&up, "big", None).await.unwrap(), bytes);
}

fn piece_total(report: &uplink::PutReport) -> usize {
    report.entry.segments().iter().map(|s| s.pieces.len()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_long_tail_is_kept_and_no_piece_is_left_behind() {
    // A generous grace: on healthy nodes every piece of every segment is recorded.
    let store = MemoryPieceStore::with_nodes(12);
    let cfg = UplinkConfig {
        long_tail_grace: Duration::from_secs(30),
        slow_piece_grace: Duration::from_secs(30),
        ..config("3/5/7/10")
    };
    let up = uplink_with(&store, [1; 32], Catalog::temporary().unwrap(), cfg);
    up.create_bucket("bucket").unwrap();
    let bytes = data(9 * BLOCK + 5, 11);
    let report = put(&up, "tail", &bytes).await;
    assert_eq!(report.entry.segments().len(), 3);
    for seg in report.entry.segments() {
        assert_eq!(
            seg.pieces.len(),
            10,
            "segment {}: all `total` pieces",
            seg.index
        );
        let indices: Vec<u16> = seg.pieces.iter().map(|p| p.index).collect();
        assert_eq!(indices, (0..10).collect::<Vec<u16>>());
    }
    assert!(up.settle(Duration::from_secs(10)).await);
    assert_eq!(
        store.piece_count(),
        piece_total(&report),
        "no orphan pieces"
    );
    // Any 3 pieces of a segment rebuild it: kill every node but 3 holders of segment 0.
    let seg = &report.entry.segments()[0];
    let keep: Vec<_> = seg.pieces[7..].iter().map(|p| p.node_id).collect();
    for c in store.candidates() {
        if !keep.contains(&c.id.0) {
            store.set_behaviour(&c.id, Behaviour::Dead);
        }
    }
    assert_eq!(
        get(&up, "tail", Some((0, 3 * BLOCK as u64))).await.unwrap(),
        &bytes[..3 * BLOCK]
    );
    for c in store.candidates() {
        store.set_behaviour(&c.id, Behaviour::Honest);
    }
    let report = up.delete("bucket", "tail").await.unwrap();
    assert_eq!(report.pieces_deleted, 30);
    assert_eq!(store.piece_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_receipts_are_deleted_by_the_reaper_not_left_as_orphans() {
    let store = MemoryPieceStore::with_nodes(10);
    let nodes = store.candidates();
    // Three nodes store their piece at once but answer long after the grace.
    for n in &nodes[..3] {
        store.set_behaviour(&n.id, Behaviour::LateReceipt(Duration::from_millis(800)));
    }
    let cfg = UplinkConfig {
        long_tail_grace: Duration::from_millis(50),
        piece_timeout: Duration::from_secs(10),
        ..config("3/5/7/10")
    };
    let up = uplink_with(&store, [1; 32], Catalog::temporary().unwrap(), cfg);
    up.create_bucket("bucket").unwrap();
    let bytes = data(2 * BLOCK, 12);
    let report = put(&up, "late", &bytes).await;
    let late: Vec<_> = nodes[..3].iter().map(|n| n.id.0).collect();
    let seg = &report.entry.segments()[0];
    assert_eq!(seg.pieces.len(), 7, "only the prompt receipts are recorded");
    assert!(seg.pieces.iter().all(|p| !late.contains(&p.node_id)));
    // The late pieces were stored; the reaper deletes them once their receipts come.
    assert!(up.settle(Duration::from_secs(20)).await, "reaper settled");
    assert_eq!(store.piece_count(), 7, "late pieces deleted");
    let m = up.metrics();
    assert_eq!(m.late_pieces.with_label_values(&["deleted"]).get(), 3);
    assert_eq!(m.late_pieces.with_label_values(&["delete_failed"]).get(), 0);
    assert_eq!(get(&up, "late", None).await.unwrap(), bytes);

    // Grace 0: commit with what is in as soon as `success` are, as before; the tail is
    // still reaped.
    let cfg = UplinkConfig {
        long_tail_grace: Duration::ZERO,
        piece_timeout: Duration::from_secs(10),
        ..config("3/5/7/10")
    };
    let up = uplink_with(&store, [1; 32], Catalog::temporary().unwrap(), cfg);
    up.create_bucket("bucket").unwrap();
    let before = store.piece_count();
    let report = put(&up, "now", &bytes).await;
    let placed = piece_total(&report);
    assert_eq!(placed, 7, "the late pieces are not waited for");
    assert!(up.settle(Duration::from_secs(20)).await);
    assert_eq!(store.piece_count(), before + placed);
}

/// A discovery layer that, like a DHT sampler, answers with a limited random view: the
/// first answer is `first`, every later one the whole list.
struct Narrow {
    first: Vec<uplink::NodeCandidate>,
    all: Vec<uplink::NodeCandidate>,
    calls: std::sync::atomic::AtomicUsize,
}

impl uplink::NodeSource for Narrow {
    fn sample(
        &self,
        _wanted: usize,
    ) -> futures::future::BoxFuture<
        '_,
        Result<Vec<uplink::NodeCandidate>, uplink::store::DiscoveryError>,
    > {
        let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let nodes = if n == 0 {
            self.first.clone()
        } else {
            self.all.clone()
        };
        Box::pin(async move { Ok(nodes) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_nodes_are_replaced_from_a_fresh_sample_and_the_scheme_is_kept() {
    let store = MemoryPieceStore::with_nodes(14);
    let all = store.candidates();
    // The first sample has exactly `total` nodes, two of them dead.
    store.set_behaviour(&all[0].id, Behaviour::Dead);
    store.set_behaviour(&all[1].id, Behaviour::Dead);
    let source = Arc::new(Narrow {
        first: all[..10].to_vec(),
        all: all.clone(),
        calls: Default::default(),
    });
    let access = Access::new(RootSecret::from_bytes([1; 32]), vec![]);
    let cfg = UplinkConfig {
        segment_parallelism: 1,
        ..config("3/5/7/10")
    };
    let up = Uplink::new(
        access,
        Arc::new(store.clone()),
        source.clone(),
        Catalog::temporary().unwrap(),
        cfg,
    )
    .unwrap();
    up.create_bucket("bucket").unwrap();
    let bytes = data(16 * BLOCK, 13);
    let report = put(&up, "swap", &bytes).await;
    let segs = report.entry.segments();
    assert_eq!(segs.len(), 4);
    assert_eq!(report.used.unwrap().to_string(), "3/5/7/10");
    // Even the first segment places the two dead nodes' pieces again, on nodes of a
    // fresh sample (its own pool had none left). From then on the dead nodes are
    // excluded: the scheme stays as asked and every piece of every segment is placed.
    for seg in segs {
        assert_eq!(seg.scheme.to_string(), "3/5/7/10", "segment {}", seg.index);
    }
    for seg in segs {
        assert_eq!(seg.pieces.len(), 10, "segment {}", seg.index);
        assert!(
            seg.pieces
                .iter()
                .all(|p| p.node_id != all[0].id.0 && p.node_id != all[1].id.0)
        );
    }
    assert!(source.calls.load(std::sync::atomic::Ordering::SeqCst) >= 2);
    assert_eq!(get(&up, "swap", None).await.unwrap(), bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_that_misses_success_leaves_no_pieces_behind() {
    // Success 9 of 10, and two nodes store their piece but answer only after the piece
    // timeout: the segment fails with 8 receipts while 10 pieces are stored.
    let store = MemoryPieceStore::with_nodes(10);
    let nodes = store.candidates();
    for n in &nodes[..2] {
        store.set_behaviour(&n.id, Behaviour::LateReceipt(Duration::from_millis(2200)));
    }
    let cfg = UplinkConfig {
        allow_smaller_scheme: false,
        piece_timeout: Duration::from_millis(1500),
        ..config("3/5/9/10")
    };
    let up = uplink_with(&store, [1; 32], Catalog::temporary().unwrap(), cfg);
    up.create_bucket("bucket").unwrap();
    let bytes = data(3 * BLOCK, 14);
    let err = up
        .put("bucket", "lost", &bytes[..], PutOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Upload { .. }), "{err}");
    assert!(err.to_string().contains("8 of 9 receipts"), "{err}");
    // The 8 recorded pieces are deleted at once, the 2 late ones by the reaper.
    assert!(up.settle(Duration::from_secs(10)).await);
    assert_eq!(store.piece_count(), 0, "no piece left behind");
    let late = up
        .metrics()
        .late_pieces
        .with_label_values(&["deleted"])
        .get();
    assert_eq!(late, 2);
    assert!(matches!(
        up.stat("bucket", "lost"),
        Err(Error::NoSuchObject { .. })
    ));
}

/// Node ids of `store`'s nodes `range` (in address order).
fn ids(store: &MemoryPieceStore, range: std::ops::Range<usize>) -> Vec<shoal_proto::NodeId> {
    store.candidates()[range].iter().map(|c| c.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pieces_of_dead_nodes_are_placed_again_on_live_ones() {
    // 16 nodes, 6 of them dead, `success = total = 10`: the upload stands only if every
    // piece whose node is dead is placed again on one of the 10 live nodes.
    let store = MemoryPieceStore::with_nodes(16);
    let dead = ids(&store, 0..6);
    for d in &dead {
        store.set_behaviour(d, Behaviour::Dead);
    }
    let up = uplink_with(
        &store,
        [1; 32],
        Catalog::temporary().unwrap(),
        UplinkConfig {
            allow_smaller_scheme: false,
            ..config("3/5/10/10")
        },
    );
    up.create_bucket("bucket").unwrap();
    // Several objects (one of several segments, one of a few bytes over inline).
    let objects = [
        data(9 * BLOCK + 17, 21),
        data(uplink::segment::INLINE_LIMIT + 1, 22),
        data(BLOCK, 23),
    ];
    for (i, bytes) in objects.iter().enumerate() {
        let report = put(&up, &format!("o{i}"), bytes).await;
        for seg in report.entry.segments() {
            assert_eq!(seg.pieces.len(), 10, "every piece is stored");
            assert!(
                seg.pieces
                    .iter()
                    .all(|p| !dead.iter().any(|d| d.0 == p.node_id))
            );
            let mut idx: Vec<u16> = seg.pieces.iter().map(|p| p.index).collect();
            idx.dedup();
            assert_eq!(idx, (0..10).collect::<Vec<u16>>(), "each index once");
        }
        assert_eq!(get(&up, &format!("o{i}"), None).await.unwrap(), *bytes);
    }
    // The dead nodes that were tried are backing off now; none holds a piece.
    let stats = up.catalog().node_stats().unwrap();
    let now = shoal_proto::time::unix_ms();
    for d in &dead {
        if let Some(s) = stats.get(d) {
            assert!(s.backing_off(now, Duration::from_secs(60)));
        }
    }
    assert!(store.nodes_with_pieces().iter().all(|n| !dead.contains(n)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_pieces_are_given_up_and_placed_again_after_the_piece_timeout() {
    // 10 nodes, 3 never answer; `success = total = 7`: the stalled pieces must be
    // cancelled after `piece_timeout` and stored elsewhere.
    let store = MemoryPieceStore::with_nodes(10);
    let stalled = ids(&store, 0..3);
    for s in &stalled {
        store.set_behaviour(s, Behaviour::Stalled);
    }
    let up = uplink_with(
        &store,
        [1; 32],
        Catalog::temporary().unwrap(),
        UplinkConfig {
            allow_smaller_scheme: false,
            piece_timeout: Duration::from_millis(300),
            ..config("2/3/7/7")
        },
    );
    up.create_bucket("bucket").unwrap();
    let bytes = data(2 * BLOCK + 1, 24);
    let report = put(&up, "s", &bytes).await;
    let seg = &report.entry.segments()[0];
    assert_eq!(seg.pieces.len(), 7);
    assert!(
        seg.pieces
            .iter()
            .all(|p| !stalled.iter().any(|s| s.0 == p.node_id))
    );
    assert!(
        store
            .nodes_with_pieces()
            .iter()
            .all(|n| !stalled.contains(n))
    );
    assert_eq!(get(&up, "s", None).await.unwrap(), bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_that_failed_lately_get_no_pieces_while_others_can_take_them() {
    let store = MemoryPieceStore::with_nodes(16);
    let failing = ids(&store, 0..6);
    let catalog = Catalog::temporary().unwrap();
    let now = shoal_proto::time::unix_ms();
    for f in &failing {
        catalog
            .record_node(f, uplink::select::NodeStats::failure(now))
            .unwrap();
    }
    let up = uplink_with(&store, [1; 32], catalog, config("3/5/10/10"));
    up.create_bucket("bucket").unwrap();
    let bytes = data(3 * BLOCK, 25);
    let report = put(&up, "b", &bytes).await;
    // The 10 nodes not backing off are enough: every piece is on them.
    for seg in report.entry.segments() {
        assert_eq!(seg.pieces.len(), 10);
        assert!(
            seg.pieces
                .iter()
                .all(|p| !failing.iter().any(|f| f.0 == p.node_id))
        );
    }
    // When the others cannot deliver `success` receipts, the scheme shrinks to what they
    // hold rather than rely on nodes that just failed...
    let backing = |n: usize| {
        let catalog = Catalog::temporary().unwrap();
        for f in ids(&store, 0..n) {
            catalog
                .record_node(&f, uplink::select::NodeStats::failure(now))
                .unwrap();
        }
        catalog
    };
    let up = uplink_with(&store, [1; 32], backing(10), config("3/5/10/10"));
    up.create_bucket("bucket").unwrap();
    let report = put(&up, "c", &bytes).await;
    assert_eq!(report.used.unwrap().to_string(), "3/5/6/6");
    // ... they take part of the slack when the others can deliver `success`...
    let up = uplink_with(&store, [1; 32], backing(8), config("3/5/7/10"));
    up.create_bucket("bucket").unwrap();
    let report = put(&up, "d", &bytes).await;
    assert_eq!(report.used.unwrap().to_string(), "3/5/7/10");
    assert_eq!(report.entry.segments()[0].pieces.len(), 10);
    // ... and when the scheme may not shrink, they are used rather than fail.
    let strict = UplinkConfig {
        allow_smaller_scheme: false,
        ..config("3/5/10/10")
    };
    let up = uplink_with(&store, [1; 32], backing(10), strict);
    up.create_bucket("bucket").unwrap();
    let report = put(&up, "e", &bytes).await;
    assert_eq!(report.entry.segments()[0].pieces.len(), 10);
}
