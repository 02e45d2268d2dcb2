//! The `storage-node` binary's commands: setup (and refusing to redo it without
//! `--force`), info (from the database, and from the running node), configuration
//! precedence through the environment. Every process is spawned here and bounded in time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_storage-node");

async fn node(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .arg("--dir")
        .arg(dir)
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("command timed out")
        .unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

const SETUP: &[&str] = &[
    "setup",
    "--allocate",
    "10MB",
    "--difficulty",
    "1",
    "--listen",
    "127.0.0.1:0",
    "--http",
    "127.0.0.1:0",
    "--local-network",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_info_and_force() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("node");
    let first = node(SETUP, &d, &[]).await;
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let config = std::fs::read_to_string(d.join("config.toml")).unwrap();
    assert!(config.contains("allocate = \"10MB\""));

    let again = node(SETUP, &d, &[]).await;
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));

    let info = json(&node(&["info", "--json"], &d, &[]).await);
    assert_eq!(info["allocated_bytes"], 10_000_000);
    assert_eq!(info["used_bytes"], 0);
    assert_eq!(info["running"], false);
    let id = info["node_id"].as_str().unwrap().to_owned();

    // The environment overrides the file.
    let info = json(&node(&["info", "--json"], &d, &[("SHOAL_NODE_ALLOCATE", "2TiB")]).await);
    assert_eq!(info["allocated_bytes"], 2u64 << 40);
    // A misspelt variable is an error, not silently ignored.
    let bad = node(&["info"], &d, &[("SHOAL_NODE_ALOCATE", "1GB")]).await;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("SHOAL_NODE_ALOCATE"));
    // Sizes are checked.
    let bad = node(&["info"], &d, &[("SHOAL_NODE_ALLOCATE", "lots")]).await;
    assert!(!bad.status.success());

    let mut forced: Vec<&str> = SETUP.to_vec();
    forced.push("--force");
    assert!(node(&forced, &d, &[]).await.status.success());
    let info = json(&node(&["info", "--json"], &d, &[]).await);
    assert_ne!(info["node_id"].as_str().unwrap(), id);

    let missing = node(&["info"], &dir.path().join("nowhere"), &[]).await;
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("storage-node setup"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_asks_the_running_node() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("node");
    assert!(node(SETUP, &d, &[]).await.status.success());
    let mut child = Command::new(BIN)
        .arg("run")
        .arg("--dir")
        .arg(&d)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(ready.starts_with("ready "), "{ready}");
    let info = json(&node(&["info", "--json"], &d, &[]).await);
    assert_eq!(info["running"], true);
    assert!(ready.contains(&format!("http={}", info["http"].as_str().unwrap())));

    let pid = child.id().unwrap().to_string();
    let sent = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .unwrap();
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    let info = json(&node(&["info", "--json"], &d, &[]).await);
    assert_eq!(info["running"], false);
}
