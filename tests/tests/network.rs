//! Storage nodes joined by the DHT on their one gRPC port: they find each other, publish
//! signed node records, and serve the DHT's metrics on `/metrics`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use shoal_test_kit::{bounded, wait_until};
use shoal_tests::{Cluster, NodeOptions, http_get};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_find_each_other_through_the_dht() {
    bounded(Duration::from_secs(120), async {
        let n = 8;
        let cluster = Cluster::start(n, NodeOptions::default()).await.unwrap();
        // Every node ends up able to locate every other through lookups on the DHT
        // served on the same port as the piece store.
        wait_until(
            Duration::from_secs(60),
            "every node finds every other",
            || {
                let cluster = &cluster;
                async move {
                    for i in 0..n {
                        for j in 0..n {
                            if i == j {
                                continue;
                            }
                            let target = cluster.node(j).node_id();
                            let found = cluster.node(i).running().dht().find_node(target).await;
                            match found {
                                Ok(Some(peer)) => {
                                    // The record carries the address the node really serves on.
                                    assert!(peer.addresses.contains(&cluster.node(j).grpc_addr()));
                                }
                                _ => return false,
                            }
                        }
                    }
                    true
                }
            },
        )
        .await
        .unwrap();

        // The node record advertises free space from the store.
        let peer = cluster
            .node(0)
            .running()
            .dht()
            .find_node(cluster.node(1).node_id())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            peer.free_space,
            cluster.node(1).running().store().free_space()
        );

        let (status, body) = http_get(cluster.node(2).http_addr(), "/metrics")
            .await
            .unwrap();
        assert_eq!(status, 200);
        let table_line = body
            .lines()
            .find(|l| l.starts_with("shoal_dht_table_size "))
            .expect("DHT metrics are served with the node's");
        let size: f64 = table_line
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        assert!(size >= 1.0, "{table_line}");
        cluster.shutdown().await.unwrap();
    })
    .await;
}
