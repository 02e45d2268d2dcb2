//! Metadata cost at scale: inserts N piece records into the node's SQLite database (one
//! transaction per piece, as uploads do, committed but not flushed), then looks up
//! random stored pieces. Prints insert and lookup latency percentiles, insert latency
//! with a flush per insert (the real commit path, sampled), the database file's size
//! (with its WAL) and the process RSS.
//!
//! `cargo bench -p storage-node --bench metadata` (`SHOAL_BENCH_PIECES`, default
//! 1000000; `SHOAL_BENCH_BLOCKS` = block hashes per piece, default 37: a 2.3 MiB piece
//! of a 64 MiB segment at k = 29, in 64 KiB blocks).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use shoal_proto::piece_hash::PieceInfo;
use shoal_proto::{Identity, PieceId};
use storage_node::meta::{MetaDb, PieceMeta};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn du(path: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![path.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.len();
            }
        }
    }
    total
}

fn id(i: u64) -> PieceId {
    PieceId(*blake3::hash(&i.to_le_bytes()).as_bytes())
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn summary(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let mean = v.iter().sum::<Duration>().as_secs_f64() * 1e6 / v.len() as f64;
    println!(
        "metadata {name} n={} mean_us={mean:.1} p50_us={:.1} p99_us={:.1} max_us={:.1}",
        v.len(),
        pct(&v, 0.5),
        pct(&v, 0.99),
        pct(&v, 1.0)
    );
}

fn main() {
    let n = env("SHOAL_BENCH_PIECES", 1_000_000) as u64;
    let blocks = env("SHOAL_BENCH_BLOCKS", 37);
    let dir = match std::env::var_os("SHOAL_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let db = MetaDb::open(&dir.path().join(storage_node::meta::DB_FILE)).unwrap();
    let owner = *Identity::random().public_key();
    let block_size = 64 * 1024;
    let meta = |i: u64| {
        let info = PieceInfo {
            size: block_size as u64 * blocks as u64 - (i % 1000),
            block_size,
            block_hashes: (0..blocks)
                .map(|b| {
                    *blake3::hash(&[i.to_le_bytes(), (b as u64).to_le_bytes()].concat()).as_bytes()
                })
                .collect(),
        };
        PieceMeta {
            owner,
            piece_hash: info.root(),
            info,
            created_at_ms: 1,
            expires_at_ms: 2_000_000_000_000 + i,
            tag: Vec::new(),
        }
    };
    let started = Instant::now();
    let mut inserts = Vec::with_capacity(n as usize);
    for i in 0..n {
        let m = meta(i);
        let t = Instant::now();
        db.insert(&id(i), &m, None).unwrap();
        inserts.push(t.elapsed());
    }
    db.flush().unwrap();
    let load_secs = started.elapsed().as_secs_f64();
    summary("insert", inserts);
    println!(
        "metadata load pieces={n} secs={load_secs:.1} inserts_per_s={:.0}",
        n as f64 / load_secs
    );

    let mut flushed = Vec::new();
    for i in n..n + 2000 {
        let m = meta(i);
        let t = Instant::now();
        db.insert(&id(i), &m, None).unwrap();
        db.flush().unwrap();
        flushed.push(t.elapsed());
    }
    summary("insert+flush", flushed);

    let mut lookups = Vec::with_capacity(200_000);
    for _ in 0..200_000 {
        let i = rand::random::<u64>() % n;
        let t = Instant::now();
        let m = db.get(&id(i)).unwrap();
        lookups.push(t.elapsed());
        assert!(m.is_some());
    }
    summary("lookup", lookups);
    let c = db.counters().unwrap();
    assert_eq!(c.pieces, n + 2000);
    let (rss, hwm) = rss_kib();
    println!(
        "metadata disk pieces={} db_file_MB={:.1} dir_MB={:.1} bytes_per_piece={:.0} rss_MB={:.1} peak_rss_MB={:.1}",
        c.pieces,
        db.size_on_disk().unwrap() as f64 / 1e6,
        du(dir.path()) as f64 / 1e6,
        du(dir.path()) as f64 / c.pieces as f64,
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
}
