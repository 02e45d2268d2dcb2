//! Upload throughput to one node over loopback gRPC: 1 MiB and 32 MiB pieces, 1 and 8
//! concurrent streams, each with piece data written buffered (through the page cache)
//! and with `O_DIRECT`. Prints one line per case. Baseline in the same run: the same
//! pieces written straight into a `PieceStore` (hash + write + fsync, no gRPC) with
//! buffered writes, so the figures can be read as ratios on a noisy machine.
//!
//! Then cold reads of stored pieces (page cache dropped for those files with
//! `POSIX_FADV_DONTNEED` before each pass), as a download reads them (1 MiB `read_at`
//! calls): plain buffered, buffered with `advise_read` before each read (what the node does), and
//! `O_DIRECT`; plus a warm pass for reference.
//!
//! `cargo bench -p storage-node --bench upload` (`SHOAL_BENCH_MB` = data per case,
//! default 256; `SHOAL_BENCH_DIR` = where to store, default the system temp dir;
//! `SHOAL_BENCH_CASES` = any of `upload`, `read`, `small`; default `upload,read`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use shoal_proto::time::unix_ms;
use shoal_proto::{Identity, PieceId};
use storage_node::piece_file::{ALIGN, advise_read};
use storage_node::store::PieceData;
use storage_node::{ByteSize, Config, PieceStore, StoreOptions};

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Payload, client, data, upload};

fn tempdir() -> tempfile::TempDir {
    match std::env::var_os("SHOAL_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir().unwrap(),
    }
}

fn io_name(direct_io: bool) -> &'static str {
    if direct_io { "direct" } else { "buffered" }
}

/// A store of 1 TiB in `dir`, writing pieces with `O_DIRECT` or not.
fn open_store(dir: &std::path::Path, direct_io: bool) -> Arc<PieceStore> {
    let (store, _) = PieceStore::open_with(
        dir,
        1 << 40,
        StoreOptions {
            direct_io,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    store
}

/// Stores `payload` as a new piece of `owner` straight into `store` (no network), in
/// writes of at most 1 MiB as the service does; returns its id.
fn commit_payload(
    store: &Arc<PieceStore>,
    owner: shoal_proto::PublicKey,
    payload: &Payload,
) -> PieceId {
    let id = PieceId(rand::random());
    let size = payload.bytes.len() as u64;
    let mut p = store
        .begin_upload(id, owner, size, payload.block_size, u64::MAX)
        .unwrap();
    for c in payload.bytes.chunks(1 << 20) {
        p.write(c).unwrap();
    }
    p.commit(size, &payload.info.root(), unix_ms()).unwrap();
    id
}

fn store_only(payload: &Payload, pieces: usize, direct_io: bool) -> f64 {
    let dir = tempdir();
    let store = open_store(dir.path(), direct_io);
    assert_eq!(store.direct_io(), direct_io);
    let owner = *Identity::random().public_key();
    let start = Instant::now();
    for _ in 0..pieces {
        commit_payload(&store, owner, payload);
    }
    (pieces * payload.bytes.len()) as f64 / start.elapsed().as_secs_f64() / 1e6
}

async fn grpc(payload: &Payload, pieces: usize, streams: usize, direct_io: bool) -> f64 {
    let dir = tempdir();
    let config = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        http: SocketAddr::from(([127, 0, 0, 1], 0)),
        allocate: ByteSize(1 << 40),
        difficulty: 0,
        direct_io,
        local_network: true,
        ..Config::default()
    };
    let node = storage_node::start(&config, Identity::random(), dir.path())
        .await
        .unwrap();
    let (addr, node_id) = (node.grpc_addr(), node.node_id());
    let owner = Arc::new(Identity::random());
    // Warm up the connection.
    let mut c = client(node_id, addr).await;
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
                let mut c = client(node_id, addr).await;
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

/// How a cold read pass reads a piece.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Read {
    Buffered,
    Advised,
    Direct,
    Warm,
}

fn drop_cache(f: &std::fs::File) {
    rustix::fs::fadvise(f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
}

/// CPU seconds (user + system) this process has used, from `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of the line (utime, stime) are 11 and 12 after the name.
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// The file of a piece this bench wrote (all are bigger than `INLINE_MAX`).
fn file_of(data: PieceData) -> std::fs::File {
    match data {
        PieceData::File(f) => f,
        PieceData::Inline(_) => panic!("bench pieces are bigger than INLINE_MAX"),
    }
}

/// Reads every piece whole in 1 MiB calls; returns MB/s and MB per CPU second.
fn read_pass(store: &PieceStore, ids: &[PieceId], size: usize, how: Read) -> (f64, f64) {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    use std::os::unix::io::AsRawFd;
    for id in ids {
        let f = file_of(store.open_piece(id, 0).unwrap().1);
        if !matches!(how, Read::Warm) {
            drop_cache(&f);
        }
    }
    let chunk = 1usize << 20;
    let mut sum = 0u64;
    let start = Instant::now();
    let cpu = cpu_seconds();
    for id in ids {
        let mut f = file_of(store.open_piece(id, 0).unwrap().1);
        match how {
            Read::Buffered | Read::Warm | Read::Advised => {}
            Read::Direct => {
                f = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
                    .open(format!("/proc/self/fd/{}", f.as_raw_fd()))
                    .unwrap();
            }
        }
        let mut at = 0;
        while at < size {
            let len = chunk.min(size - at);
            let data = if let Read::Direct = how {
                // What the node would have to do: a fresh aligned buffer per message
                // (the data is moved into it), then the exact bytes copied out, as
                // the message field is a plain Vec.
                let mut raw = vec![0u8; len.next_multiple_of(ALIGN) + ALIGN];
                let s = raw.as_ptr().align_offset(ALIGN);
                let n = f
                    .read_at(&mut raw[s..s + len.next_multiple_of(ALIGN)], at as u64)
                    .unwrap();
                assert!(n >= len);
                raw[s..s + len].to_vec()
            } else {
                if let Read::Advised = how {
                    advise_read(&f, 0, size as u64, at as u64, len as u64);
                }
                let mut buf = vec![0u8; len];
                f.read_exact_at(&mut buf, at as u64).unwrap();
                buf
            };
            sum += u64::from(data[len - 1]);
            at += len;
        }
    }
    std::hint::black_box(sum);
    let mb = (ids.len() * size) as f64 / 1e6;
    let cpu = (cpu_seconds() - cpu).max(0.01);
    (mb / start.elapsed().as_secs_f64(), mb / cpu)
}

fn cold_reads(mb: usize) {
    for piece_mib in [2usize, 32] {
        let dir = tempdir();
        let (store, _) = PieceStore::open(dir.path(), 1 << 40).unwrap();
        let payload = Payload::with_block_size(data(piece_mib << 20, 7), 64 * 1024);
        let owner = *Identity::random().public_key();
        let ids: Vec<PieceId> = (0..(mb / piece_mib).max(8))
            .map(|_| commit_payload(&store, owner, &payload))
            .collect();
        let size = payload.bytes.len();
        // Rounds interleaved, so a burst of load on the machine hits all cases.
        let mut results: Vec<(Read, Vec<(f64, f64)>)> =
            [Read::Buffered, Read::Advised, Read::Direct, Read::Warm]
                .into_iter()
                .map(|how| (how, Vec::new()))
                .collect();
        for _ in 0..3 {
            for (how, rates) in &mut results {
                rates.push(read_pass(&store, &ids, size, *how));
            }
        }
        let mean = |v: &[(f64, f64)], cpu: bool| {
            v.iter().map(|r| if cpu { r.1 } else { r.0 }).sum::<f64>() / v.len() as f64
        };
        let base = mean(&results[0].1, false);
        for (how, rates) in &results {
            let rate = mean(rates, false);
            let runs: Vec<String> = rates.iter().map(|r| format!("{:.0}", r.0)).collect();
            println!(
                "read piece={piece_mib}MiB mode={how:?} pieces={} MB/s={rate:.1} runs={} MB_per_cpu_s={:.0} ratio_to_buffered={:.2}",
                ids.len(),
                runs.join("/"),
                mean(rates, true),
                rate / base
            );
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let mb: usize = std::env::var("SHOAL_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let cases = std::env::var("SHOAL_BENCH_CASES").unwrap_or_else(|_| "upload,read".into());
    if cases.contains("upload") {
        uploads(mb);
    }
    if cases.contains("read") {
        cold_reads(mb);
    }
    if cases.contains("small") {
        small_commits();
    }
}

/// Commits per second of 4 KiB + 1 byte pieces straight into the store from 1 and 16
/// threads: what a small piece costs (since `INLINE_MAX`, one transaction and a shared
/// metadata flush; before, a file with its syncs) and whether concurrency hides it.
fn small_commits() {
    let payload = Payload::new(data(4097, 3));
    for threads in [1usize, 16] {
        for direct_io in [false, true] {
            let dir = tempdir();
            let store = open_store(dir.path(), direct_io);
            let owner = *Identity::random().public_key();
            let per_thread = 400 / threads;
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..threads {
                    s.spawn(|| {
                        for _ in 0..per_thread {
                            commit_payload(&store, owner, &payload);
                        }
                    });
                }
            });
            let rate = (threads * per_thread) as f64 / start.elapsed().as_secs_f64();
            println!(
                "commit piece=4097B io={} threads={threads} pieces={} commits/s={rate:.0}",
                io_name(direct_io),
                threads * per_thread
            );
        }
    }
}

fn uploads(mb: usize) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    for piece_mib in [1usize, 32] {
        let payload = Payload::with_block_size(data(piece_mib << 20, piece_mib as u64), 64 * 1024);
        let pieces = (mb / piece_mib).max(8);
        let mut base = None;
        // Buffered and direct back to back for each case, so drifting load on the
        // machine hits both alike. CPU is the whole process's (node and client alike).
        for streams in [0usize, 1, 8] {
            for direct_io in [false, true] {
                let cpu = cpu_seconds();
                let rate = if streams == 0 {
                    store_only(&payload, pieces, direct_io)
                } else {
                    rt.block_on(grpc(&payload, pieces, streams, direct_io))
                };
                let per_cpu =
                    (pieces * payload.bytes.len()) as f64 / 1e6 / (cpu_seconds() - cpu).max(0.01);
                let base = *base.get_or_insert(rate);
                let (mode, streams) = match streams {
                    0 => ("store", 1),
                    s => ("grpc-loopback", s),
                };
                println!(
                    "upload piece={piece_mib}MiB mode={mode} io={} streams={streams} pieces={pieces} MB/s={rate:.1} MB_per_cpu_s={per_cpu:.0} ratio_to_buffered_store={:.2}",
                    io_name(direct_io),
                    rate / base
                );
            }
        }
    }
}
