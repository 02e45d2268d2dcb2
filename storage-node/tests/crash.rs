//! The real `storage-node` binary, killed with SIGKILL in the middle of a stream of
//! uploads, restarted on the same directory: every acknowledged piece must be intact
//! and the used space must equal the sum of the stored pieces. Also: SIGTERM during
//! uploads stops cleanly and leaves no temp files. Every process is spawned here,
//! killed by its own handle or PID, and bounded in time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Payload, client, data, download, upload};
use shoal_proto::time::unix_ms;
use shoal_proto::{Identity, NodeId, PieceId};
use storage_node::PieceStore;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_storage-node");
const ALLOCATE: u64 = 1 << 30;

async fn setup(dir: &Path) {
    let status = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new(BIN)
            .args(["setup", "--allocate", "1GiB", "--difficulty", "0"])
            .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .arg("--local-network")
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .status(),
    )
    .await
    .expect("setup timed out")
    .unwrap();
    assert!(status.success());
}

/// Starts `storage-node run` and waits for its `ready` line.
async fn run(dir: &Path) -> (Child, NodeId, SocketAddr) {
    let mut child = Command::new(BIN)
        .arg("run")
        .arg("--dir")
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let l = lines
                .next_line()
                .await
                .unwrap()
                .expect("node exited before ready");
            if l.starts_with("ready ") {
                return l;
            }
        }
    })
    .await
    .expect("node did not become ready");
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(k))
            .unwrap()
            .to_owned()
    };
    let node_id = NodeId::from_hex(&field("node_id=")).unwrap();
    let grpc = field("grpc=").parse().unwrap();
    (child, node_id, grpc)
}

/// An acknowledged piece: id, data seed and length.
type Acked = Arc<Mutex<Vec<(PieceId, u64, usize)>>>;

/// Starts `streams` uploaders that upload until the node goes away.
fn start_uploads(
    addr: SocketAddr,
    node: NodeId,
    owner: Arc<Identity>,
    acked: Acked,
    streams: u64,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..streams)
        .map(|s| {
            let (owner, acked) = (Arc::clone(&owner), Arc::clone(&acked));
            tokio::spawn(async move {
                let mut c = client(node, addr).await;
                for i in 0u64.. {
                    let seed = s * 1_000_000 + i;
                    let len = 10_000 + (seed as usize * 7919) % 400_000;
                    let piece = PieceId(rand::random());
                    match upload(&mut c, &owner, node, piece, &Payload::new(data(len, seed))).await
                    {
                        Ok(r) => {
                            assert_eq!(r.size, len as u64);
                            assert_eq!(r.node_id(), node);
                            acked.lock().unwrap().push((piece, seed, len));
                        }
                        Err(_) => return,
                    }
                }
            })
        })
        .collect()
}

async fn wait_acked(acked: &Acked, n: usize) {
    tokio::time::timeout(Duration::from_secs(120), async {
        while acked.lock().unwrap().len() < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("uploads did not progress");
}

/// Sends SIGTERM to this child's PID (and nothing else) and waits for it to exit.
async fn sigterm(child: &mut Child) -> std::process::ExitStatus {
    let pid = child.id().expect("child still running");
    let sent = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .unwrap();
    assert!(sent.success());
    tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("node did not stop after SIGTERM")
        .unwrap()
}

fn check_store(dir: &Path, acked: &[(PieceId, u64, usize)]) {
    let (store, recovery) = PieceStore::open(&dir.join("storage"), ALLOCATE).unwrap();
    assert_eq!(
        recovery,
        Default::default(),
        "a clean stop leaves nothing to repair"
    );
    let check = store.check().unwrap();
    // Counters == sum over metadata == sum over files; no temp files, no orphans.
    assert!(check.is_consistent(), "{check:?}");
    let acked_bytes: u64 = acked.iter().map(|a| a.2 as u64).sum();
    // Uploads committed just before the kill but never acknowledged may also be there.
    assert!(check.counters.used >= acked_bytes);
    for (piece, _, len) in acked {
        assert_eq!(store.get(piece, unix_ms()).unwrap().info.size, *len as u64);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_uploads_loses_no_acknowledged_piece() {
    tokio::time::timeout(Duration::from_secs(300), async {
        let dir = tempfile::tempdir().unwrap();
        setup(dir.path()).await;
        let (mut child, node, addr) = run(dir.path()).await;
        let owner = Arc::new(Identity::random());
        let acked: Acked = Arc::default();
        let uploads = start_uploads(addr, node, Arc::clone(&owner), Arc::clone(&acked), 4);
        wait_acked(&acked, 30).await;
        // SIGKILL, to this child only.
        child.start_kill().unwrap();
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(!status.success());
        for u in uploads {
            tokio::time::timeout(Duration::from_secs(30), u)
                .await
                .unwrap()
                .unwrap();
        }
        let acked = acked.lock().unwrap().clone();
        let temp_files = std::fs::read_dir(dir.path().join("storage/tmp"))
            .unwrap()
            .count();
        eprintln!(
            "{} pieces acknowledged before SIGKILL; {temp_files} uploads left half-written",
            acked.len()
        );

        let (mut child, node2, addr) = run(dir.path()).await;
        assert_eq!(node2, node);
        let mut c = client(node, addr).await;
        for (piece, seed, len) in &acked {
            let got = download(&mut c, &owner, node, *piece).await.unwrap();
            assert!(
                got == data(*len, *seed),
                "piece {piece} differs after the crash"
            );
        }
        drop(c);
        let status = sigterm(&mut child).await;
        assert!(status.success(), "{status:?}");
        check_store(dir.path(), &acked);
    })
    .await
    .expect("crash test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_uploads_stops_cleanly() {
    tokio::time::timeout(Duration::from_secs(300), async {
        let dir = tempfile::tempdir().unwrap();
        setup(dir.path()).await;
        let (mut child, node, addr) = run(dir.path()).await;
        let owner = Arc::new(Identity::random());
        let acked: Acked = Arc::default();
        let uploads = start_uploads(addr, node, Arc::clone(&owner), Arc::clone(&acked), 4);
        wait_acked(&acked, 10).await;
        let status = sigterm(&mut child).await;
        assert!(status.success(), "{status:?}");
        for u in uploads {
            tokio::time::timeout(Duration::from_secs(30), u)
                .await
                .unwrap()
                .unwrap();
        }
        assert_eq!(
            std::fs::read_dir(dir.path().join("storage/tmp"))
                .unwrap()
                .count(),
            0
        );
        assert!(!dir.path().join(storage_node::info::RUN_FILE).exists());
        check_store(dir.path(), &acked.lock().unwrap());
    })
    .await
    .expect("shutdown test timed out");
}
