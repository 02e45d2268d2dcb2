//! Keeping data alive without a satellite (issue 12, "Done when"): the real `uplink` CLI
//! (`renew`, `check`, `repair`) against a [`Cluster`] of storage nodes on
//! `127.0.{1..14}.1`. The uplink uses a fixed, pinned node list and keeps its catalog on
//! this machine (`network_catalog = false`), so every piece on the nodes belongs to the
//! objects under test and the nodes' own counters show exactly where they are.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use shoal_proto::NodeId;
use shoal_test_kit::{Cli, Run, bounded, build_binary, wait_until};
use shoal_tests::e2e::Pattern;
use shoal_tests::{Cluster, NodeOptions};
use uplink::health::{EXIT_BELOW_THRESHOLD, EXIT_HEALTHY};

const LIMIT: Duration = Duration::from_secs(300);

struct Net {
    cluster: Cluster,
    cli: Cli,
    work: tempfile::TempDir,
}

impl Net {
    async fn start(nodes: usize, options: NodeOptions, extra_config: &str) -> Net {
        let cli = Cli::new(build_binary("uplink-cli", "uplink").unwrap());
        let cluster = Cluster::start(nodes, options).await.unwrap();
        let work = tempfile::tempdir().unwrap();
        let list: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("{:?}", n.pinned()))
            .collect();
        // These tests count pieces per node, so every piece that gets stored must be in
        // the catalog: a long-tail grace beyond `piece_timeout_secs` records every receipt
        // (the default 2 s can be missed on a loaded 2-core CI machine, and the late piece
        // is then on a node but not in the catalog until the reaper deletes it).
        std::fs::write(
            work.path().join("config.toml"),
            format!(
                "difficulty = 0\nlocal_network = true\nnetwork_catalog = false\nallow_smaller_scheme = false\npiece_timeout_secs = 5\nlong_tail_grace_ms = 30000\nnodes = [{}]\n{extra_config}",
                list.join(", ")
            ),
        )
        .unwrap();
        let net = Net { cluster, cli, work };
        let r = net.uplink(&["access", "create"]).await;
        assert_eq!(r.code, Some(0), "access create: {}", r.stderr);
        let r = net.uplink(&["mb", "shoal://keep"]).await;
        assert_eq!(r.code, Some(0), "mb: {}", r.stderr);
        net
    }

    async fn uplink(&self, args: &[&str]) -> Run {
        self.cli.run(self.work.path(), args).await.unwrap()
    }

    fn file(&self, name: &str, len: u64, seed: u64) -> PathBuf {
        let p = self.work.path().join(name);
        std::fs::write(&p, Pattern::new(seed).bytes(0, len)).unwrap();
        p
    }

    async fn put(&self, path: &Path, dst: &str, extra: &[&str]) {
        let mut args = vec!["cp", "--no-progress", path.to_str().unwrap(), dst];
        args.extend_from_slice(extra);
        let r = self.uplink(&args).await;
        assert_eq!(r.code, Some(0), "cp {dst}: {}", r.stderr);
    }

    /// Downloads `src` and compares it byte for byte with `original`.
    async fn assert_identical(&self, src: &str, original: &Path) {
        let out = self.work.path().join("download.bin");
        let r = self
            .uplink(&["cp", "--no-progress", src, out.to_str().unwrap()])
            .await;
        assert_eq!(r.code, Some(0), "cp {src} down: {}", r.stderr);
        assert!(
            std::fs::read(&out).unwrap() == std::fs::read(original).unwrap(),
            "{src} differs from what was uploaded"
        );
    }

    /// Indices of the running nodes holding at least one piece.
    fn holders(&self) -> Vec<usize> {
        self.cluster
            .nodes
            .iter()
            .filter(|n| n.is_running() && n.running().store().space().pieces > 0)
            .map(|n| n.index)
            .collect()
    }

    fn pieces_on(&self, i: usize) -> u64 {
        self.cluster.node(i).running().store().space().pieces
    }

    /// Used bytes over every running node.
    fn used(&self) -> u64 {
        self.cluster
            .nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.running().store().space().used)
            .sum()
    }
}

/// 4/6/8/10 on 14 nodes: stop 5 holders, `check` says below threshold (exit 2),
/// `repair`, stop 2 more of the original holders, the download is byte-identical and
/// `check` says healthy (exit 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_regenerates_lost_pieces_on_new_nodes() {
    bounded(LIMIT, async {
        let options = NodeOptions {
            allocate: 1 << 30,
            ..NodeOptions::default()
        };
        let mut net = Net::start(14, options, "scheme = \"4/6/8/10\"\n").await;
        let data = net.file("data.bin", 3 << 20, 7);
        net.put(&data, "shoal://keep/data.bin", &[]).await;
        let original: Vec<usize> = net.holders();
        assert_eq!(original.len(), 10, "every piece of the segment is stored");

        let r = net.uplink(&["check", "shoal://keep/data.bin"]).await;
        assert_eq!(
            r.code,
            Some(i32::from(EXIT_HEALTHY)),
            "{}{}",
            r.stdout,
            r.stderr
        );

        for &i in &original[..5] {
            net.cluster.node_mut(i).stop().await.unwrap();
        }
        let r = net.uplink(&["check", "-r", "shoal://keep"]).await;
        assert_eq!(
            r.code,
            Some(i32::from(EXIT_BELOW_THRESHOLD)),
            "{}{}",
            r.stdout,
            r.stderr
        );
        assert!(
            r.stdout.contains("1 below the repair threshold"),
            "{}",
            r.stdout
        );
        let r = net
            .uplink(&["check", "--json", "shoal://keep/data.bin"])
            .await;
        let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(report["segments"][0]["healthy"], 5);
        assert_eq!(report["segments"][0]["state"], "below_threshold");

        let before: Vec<(usize, u64)> = (0..14)
            .filter(|i| net.cluster.node(*i).is_running())
            .map(|i| (i, net.pieces_on(i)))
            .collect();
        let r = net.uplink(&["repair", "-r", "shoal://keep"]).await;
        assert_eq!(
            r.code,
            Some(i32::from(EXIT_HEALTHY)),
            "{}{}",
            r.stdout,
            r.stderr
        );
        assert!(r.stdout.contains("repaired 1 segments"), "{}", r.stdout);
        // Only nodes that held no piece of the segment got one, one each; the pieces
        // that stayed were not touched.
        for (i, n) in before {
            let now = net.pieces_on(i);
            if original.contains(&i) {
                assert_eq!(now, n, "node {i} kept its piece as it was");
            } else {
                assert_eq!((n, now), (0, 1), "new node {i} got one piece");
            }
        }

        // A second repair finds nothing to do.
        let r = net.uplink(&["repair", "-r", "shoal://keep"]).await;
        assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
        assert!(r.stdout.contains("repaired 0 segments"), "{}", r.stdout);

        for &i in &original[5..7] {
            net.cluster.node_mut(i).stop().await.unwrap();
        }
        net.assert_identical("shoal://keep/data.bin", &data).await;
        let r = net.uplink(&["check", "-r", "shoal://keep"]).await;
        assert_eq!(
            r.code,
            Some(i32::from(EXIT_HEALTHY)),
            "{}{}",
            r.stdout,
            r.stderr
        );
        net.cluster.shutdown().await.unwrap();
    })
    .await;
}

/// A node that answers audits with bad data is reported by `check` and gets no piece
/// of the next upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_serving_bad_audit_data_is_reported_and_left_out() {
    bounded(LIMIT, async {
        let options = NodeOptions {
            allocate: 1 << 30,
            ..NodeOptions::default()
        };
        let net = Net::start(12, options, "scheme = \"4/6/8/10\"\n").await;
        let data = net.file("data.bin", 2 << 20, 3);
        net.put(&data, "shoal://keep/a.bin", &[]).await;
        let holders = net.holders();
        assert_eq!(holders.len(), 10);
        // The bad node: flip a byte in every 4 KiB of its piece file (its own metadata
        // still vouches for the old hashes, so it serves the blocks as if nothing
        // happened). Every hash block, because an audit reads at most MAX_AUDIT_BLOCKS
        // of them: this piece has 9, and a single bad block is missed one time in nine.
        let bad = holders[0];
        let storage = net.cluster.node(bad).storage_dir().join("pieces");
        let file = walk(&storage).pop().expect("the node holds a piece file");
        let mut bytes = std::fs::read(&file).unwrap();
        for b in bytes.iter_mut().step_by(4096) {
            *b ^= 0xff;
        }
        std::fs::write(&file, bytes).unwrap();

        let r = net
            .uplink(&[
                "check",
                "--json",
                "--audit-fraction",
                "1",
                "shoal://keep/a.bin",
            ])
            .await;
        let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        let problems = report["segments"][0]["problems"]
            .as_array()
            .unwrap()
            .clone();
        let bad_id = net.cluster.node(bad).node_id().to_hex();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0]["node"], bad_id.as_str());
        assert!(
            problems[0]["reason"]
                .as_str()
                .unwrap()
                .contains("does not match"),
            "{problems:?}"
        );
        // 9 of 10 verified: still healthy.
        assert_eq!(report["segments"][0]["healthy"], 9);
        assert_eq!(r.code, Some(0));

        // New objects avoid it, though it is up and has room.
        for i in 0..4u64 {
            let f = net.file(&format!("n{i}.bin"), 300_000, 10 + i);
            net.put(&f, &format!("shoal://keep/n{i}.bin"), &[]).await;
        }
        assert_eq!(net.pieces_on(bad), 1, "the bad node got no new piece");
        let others: u64 = (0..12)
            .filter(|i| *i != bad)
            .map(|i| net.pieces_on(i))
            .sum();
        assert_eq!(others, 9 + 4 * 10);
        let bad_node: NodeId = net.cluster.node(bad).node_id();
        assert!(net.cluster.node(bad).is_running(), "{bad_node} stays up");
        net.cluster.shutdown().await.unwrap();
    })
    .await;
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Leases: with a short configured lease, an object that is not renewed disappears from
/// the nodes once it expires and their used space drops by exactly its pieces; a renewed
/// one stays; a renewal beyond the nodes' `max_lease` is capped at it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrenewed_pieces_expire_exactly_and_renewed_ones_stay() {
    bounded(LIMIT, async {
        let options = NodeOptions {
            allocate: 1 << 30,
            expiry_interval_ms: 100,
            max_lease_ms: 3_600_000,
            ..NodeOptions::default()
        };
        let net = Net::start(
            12,
            options,
            "scheme = \"4/6/8/10\"\ndefault_lease_secs = 8\n",
        )
        .await;
        let kept = net.file("kept.bin", 400_000, 1);
        net.put(&kept, "shoal://keep/kept.bin", &[]).await;
        // Renew it far beyond the nodes' max_lease: capped at their limit, not refused.
        let r = net
            .uplink(&[
                "renew",
                "--json",
                "--lease",
                "400d",
                "shoal://keep/kept.bin",
            ])
            .await;
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(report["pieces"], 10, "{report}");
        assert_eq!(report["renewed"], 10, "{report}");
        assert_eq!(report["capped"], 10, "{report}");
        assert_eq!(report["orders"], 10, "one order per node: {report}");
        let used_kept = net.used();
        assert!(used_kept > 0);

        let gone = net.file("gone.bin", 600_000, 2);
        net.put(&gone, "shoal://keep/gone.bin", &[]).await;
        let used_both = net.used();
        assert!(used_both > used_kept);
        // Not renewed: once its 8 s lease ends, the nodes drop it, to the byte.
        wait_until(
            Duration::from_secs(60),
            "the unrenewed object's pieces to expire",
            || async { net.used() == used_kept },
        )
        .await
        .unwrap();
        for n in &net.cluster.nodes {
            let c = n.running().store().check().unwrap();
            assert!(c.is_consistent(), "node {}: {c:?}", n.index);
        }
        net.assert_identical("shoal://keep/kept.bin", &kept).await;
        let r = net.uplink(&["check", "shoal://keep/gone.bin"]).await;
        assert_eq!(r.code, Some(3), "lost: {}{}", r.stdout, r.stderr);
        net.cluster.shutdown().await.unwrap();
    })
    .await;
}
