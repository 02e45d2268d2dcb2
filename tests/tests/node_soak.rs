//! The node soak at CI size: 20 `storage-node` processes, a few thousand small pieces
//! from 8 owners, nodes killed with SIGKILL and restarted about every 300 ms; every
//! acknowledged piece must read back and every node's counters must add up (see
//! `shoal_tests::node_soak`; `node-soak --pieces 1000000` runs it by hand).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use shoal_test_kit::build_binary;
use shoal_tests::node_soak::{SoakOptions, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_nodes_keep_every_acknowledged_piece_and_exact_counters() {
    let storage_node = build_binary("storage-node", "storage-node").unwrap();
    let opts = SoakOptions {
        storage_node,
        nodes: 20,
        pieces: 3000,
        seconds: 150,
        clients: 8,
        kill_every: Duration::from_millis(300),
    };
    let r = tokio::time::timeout(Duration::from_secs(300), run(&opts))
        .await
        .expect("the soak took more than 5 minutes")
        .unwrap();
    eprintln!("{r:?}");
    assert!(r.acked >= 3000 && r.verified == r.acked);
    assert!(r.inline > 0 && r.file > 0);
    assert!(r.kills >= 3, "too few kills to mean anything: {r:?}");
    assert!(r.stored >= r.acked as u64);
}
