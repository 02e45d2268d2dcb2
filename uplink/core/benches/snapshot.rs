//! Catalog snapshots at 100,000 objects (`SNAP_OBJECTS` to change), built with the
//! library over the in-memory piece and record stores: bytes sent and heap used by a
//! snapshot publish (the whole tree the first time, then after one changed object), and
//! by a fresh replica's recovery, next to the old whole-catalog snapshot (one blob of
//! every entry, built in memory) measured in the same run.
//!
//! Bytes: what the publish report counts (pieces sent; the new snapshot's chunks and
//! manifest). The old format's bytes are its plaintext times the catalog scheme's
//! `total / k` (its minimum piece sizes ignored, which favours it).
//! Memory: peak anonymous resident memory (`RssAnon`, sampled every 2 ms: the heap, not
//! the pages of the catalog file SQLite maps) above that at the start of the step, each
//! step in a process of its own on the same catalog database (built first, in a
//! temporary dir). The old format's recovery counts the blob held in memory. The in-memory nodes of a publish
//! step keep only hashes; those of the recovery step hold the whole tree before the
//! step starts.
//!
//! `cargo bench -p uplink --bench snapshot` (a plain program, not criterion: the figures
//! are bytes, not times; `--profile dev` gives the same bytes faster to build).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use uplink::catalog::{Catalog, WriterId};
use uplink::testing::{MemoryPieceStore, MemoryRecords};
use uplink::{Access, PutOptions, RootSecret, StaticNodes, Uplink, UplinkConfig};

const WRITER: WriterId = WriterId([3; 16]);

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Measures a step: samples the anonymous resident memory (`RssAnon`: the heap, not
/// the catalog file SQLite maps) every 2 ms from a thread of its own.
struct Peak {
    base: u64,
    max: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    sampler: Option<std::thread::JoinHandle<()>>,
}

/// Starts measuring a step.
fn start() -> Peak {
    let base = status_kib("RssAnon:") << 10;
    let max = Arc::new(AtomicU64::new(base));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (max, stop) = (max.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                max.fetch_max(status_kib("RssAnon:") << 10, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    Peak {
        base,
        max,
        stop,
        sampler: Some(sampler),
    }
}

/// Peak anonymous resident memory above the start of the step (bytes).
fn peak_above(mut p: Peak) -> u64 {
    p.max
        .fetch_max(status_kib("RssAnon:") << 10, Ordering::Relaxed);
    p.stop.store(true, Ordering::Relaxed);
    if let Some(t) = p.sampler.take() {
        t.join().unwrap();
    }
    p.max.load(Ordering::Relaxed).saturating_sub(p.base)
}

fn config(snapshot_every: u64) -> UplinkConfig {
    UplinkConfig {
        scheme: "2/3/4/5".parse().unwrap(),
        snapshot_every,
        piece_timeout: Duration::from_secs(60),
        ..UplinkConfig::default()
    }
}

/// A writer on the catalog in `dir`, over in-memory nodes of this process (which keep
/// only the hashes of what they are sent unless `keep`).
fn writer(dir: &Path, store: &MemoryPieceStore, snapshot_every: u64) -> Uplink {
    Uplink::with_network_catalog(
        Access::new(RootSecret::from_bytes([42; 32]), vec![]),
        Arc::new(store.clone()),
        Arc::new(StaticNodes(store.candidates())),
        Catalog::open(dir, WRITER).unwrap(),
        config(snapshot_every),
        Arc::new(MemoryRecords::new()),
    )
    .unwrap()
}

fn nodes(keep: bool) -> MemoryPieceStore {
    let store = MemoryPieceStore::with_nodes(30);
    store.discard_data(!keep);
    store
}

async fn put(up: &Uplink, key: &str, bytes: &[u8]) {
    let opts = PutOptions {
        size_hint: Some(bytes.len() as u64),
        ..PutOptions::default()
    };
    up.put("bench", key, bytes, opts).await.unwrap();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    match args.iter().position(|a| a == "--step") {
        Some(i) => {
            let step = args[i + 1].clone();
            let dir = PathBuf::from(&args[i + 2]);
            rt.block_on(child(&step, &dir));
        }
        None => rt.block_on(parent()),
    }
}

/// Runs one measured step in a process of its own (so that no earlier step's memory is
/// counted or re-used) and returns its `key=value` line.
fn step(name: &str, dir: &Path) -> BTreeMap<String, f64> {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--step")
        .arg(name)
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "step {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    println!("{name}: {}", text.trim());
    text.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

async fn parent() {
    let n: u64 = std::env::var("SNAP_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The catalog: n small objects (inline: 64 bytes each), published as one delta.
    let t = Instant::now();
    {
        let a = writer(d, &nodes(false), 1_000_000);
        a.create_bucket("bench").unwrap();
        for i in 0..n {
            let body = format!("{i:064}");
            put(
                &a,
                &format!("photos/{:04}/{i:08}.jpg", i % 1000),
                body.as_bytes(),
            )
            .await;
        }
        let first = a.flush().await.unwrap();
        assert!(!first.snapshot);
        println!(
            "built {n} objects in {:.1} s (one delta of {} changes)",
            t.elapsed().as_secs_f64(),
            first.changes,
        );
    }
    let old = step("old", d);
    let full = step("tree-first", d);
    let inc = step("tree-one-change", d);
    let rec = step("tree-recovery", d);
    let r = |a: &BTreeMap<String, f64>, ka: &str, b: &BTreeMap<String, f64>, kb: &str| {
        a[ka] / b[kb].max(1.0)
    };
    println!(
        "ratios to the old whole-catalog snapshot: bytes sent: first tree {:.3}, after one change {:.5}; \
         publish peak RSS: first tree {:.3}, after one change {:.3}; recovery peak RSS {:.3}",
        r(&full, "snapshot_bytes", &old, "bytes"),
        r(&inc, "snapshot_bytes", &old, "bytes"),
        r(&full, "rss", &old, "rss"),
        r(&inc, "rss", &old, "rss"),
        r(&rec, "rss", &old, "read_rss"),
    );
}

async fn child(step: &str, d: &Path) {
    match step {
        "old" => {
            // The old format: every entry in one blob, built in memory; its bytes sent
            // are its plaintext times the catalog scheme's expansion.
            let c = Catalog::open(d, WRITER).unwrap();
            let scheme = UplinkConfig::default().catalog_scheme;
            let base = start();
            let changes = c.all_changes().unwrap();
            let covers: BTreeMap<WriterId, u64> = [(WRITER, 2)].into();
            let plain = postcard::to_allocvec(&(covers, changes)).unwrap();
            let rss = peak_above(base);
            let bytes = plain.len() as f64 * f64::from(scheme.total) / f64::from(scheme.k);
            // Its recovery: the blob in memory, decoded into every change at once.
            let base = start();
            let decoded: (BTreeMap<WriterId, u64>, Vec<uplink::catalog::Change>) =
                postcard::from_bytes(&plain).unwrap();
            let read_rss = peak_above(base) + plain.len() as u64;
            assert!(!decoded.1.is_empty());
            println!(
                "plain={} bytes={bytes:.0} rss={rss} read_rss={read_rss} scheme={scheme}",
                plain.len()
            );
        }
        "tree-first" | "tree-one-change" => {
            let a = writer(d, &nodes(false), 1);
            if step == "tree-first" {
                a.catalog().forget_snapshot_chunks(None).unwrap();
            }
            put(&a, &format!("photos/0000/{step}"), b"changed").await;
            let base = start();
            let t = Instant::now();
            let p = a.flush().await.unwrap();
            let rss = peak_above(base);
            assert!(p.snapshot, "{p:?}");
            println!(
                "snapshot_bytes={} stored={} reused={} rss={rss} secs={:.1}",
                p.snapshot_bytes_sent,
                p.snapshot_chunks_stored,
                p.snapshot_chunks_reused,
                t.elapsed().as_secs_f64()
            );
        }
        "tree-recovery" => {
            // A whole tree on in-memory nodes that keep it, then a fresh replica reads it.
            let store = nodes(true);
            let records = Arc::new(MemoryRecords::new());
            let a = Uplink::with_network_catalog(
                Access::new(RootSecret::from_bytes([42; 32]), vec![]),
                Arc::new(store.clone()),
                Arc::new(StaticNodes(store.candidates())),
                Catalog::open(d, WRITER).unwrap(),
                config(1),
                records.clone(),
            )
            .unwrap();
            a.catalog().forget_snapshot_chunks(None).unwrap();
            put(&a, "photos/0000/recovery", b"changed").await;
            a.flush().await.unwrap();
            let fresh = Uplink::with_network_catalog(
                Access::new(RootSecret::from_bytes([42; 32]), vec![]),
                Arc::new(store.clone()),
                Arc::new(StaticNodes(store.candidates())),
                Catalog::temporary().unwrap(),
                config(1),
                records,
            )
            .unwrap();
            let base = start();
            let t = Instant::now();
            let pulled = fresh.pull().await.unwrap();
            let rss = peak_above(base);
            assert_eq!(pulled.snapshots, 1, "{pulled:?}");
            println!(
                "changes={} rss={rss} secs={:.1}",
                pulled.changes_applied,
                t.elapsed().as_secs_f64()
            );
        }
        other => panic!("unknown step {other}"),
    }
}
