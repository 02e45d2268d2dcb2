//! The catalog in the network, end to end (issue 10, "Done when"): the real `uplink` CLI
//! against a [`Cluster`] of 12 storage nodes on `127.0.{1..12}.1`, finding them and the
//! catalog's records through the DHT.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use shoal_test_kit::{bounded, files_under};
use shoal_tests::cli_net::CliNet;
use shoal_tests::e2e::Pattern;

const NODES: usize = 12;
const CONFIG: &str = "difficulty = 0\nlocal_network = true\nscheme = \"4/6/8/12\"\ncatalog_scheme = \"4/6/8/12\"\nsnapshot_every = 4\n";

/// The shared harness, with this file's unwrapping helpers.
struct Net(CliNet);

impl std::ops::Deref for Net {
    type Target = CliNet;
    fn deref(&self) -> &CliNet {
        &self.0
    }
}

impl Net {
    async fn start() -> Net {
        Net(CliNet::start(NODES, CONFIG).await.unwrap())
    }

    async fn config_dir(&self, name: &str) -> (PathBuf, String) {
        self.0.config_dir(name).await.unwrap()
    }

    async fn ok(&self, dir: &Path, args: &[&str]) -> String {
        self.0.ok(dir, args).await.unwrap()
    }
}

/// `n` files in nested directories; every third one at most 4 KiB (inline in the
/// catalog), the others erasure coded onto the nodes.
fn write_tree(root: &Path, n: u64, seed: u64) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for i in 0..n {
        let rel = format!("d{}/file-{i:03}.bin", i % 4);
        let len = if i % 3 == 0 {
            (i * 37) % 4096 + 1
        } else {
            5_000 + i * 11
        };
        let bytes = Pattern::new(seed * 1000 + i).bytes(0, len);
        let path = root.join(&rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &bytes).unwrap();
        files.insert(rel, bytes);
    }
    files
}

/// Every file under `root`, by path relative to it.
fn read_tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    files_under(root)
        .unwrap()
        .into_iter()
        .map(|rel| {
            let bytes = std::fs::read(root.join(&rel)).unwrap();
            (rel.to_str().unwrap().to_string(), bytes)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_survives_the_loss_of_its_machine() {
    bounded(Duration::from_secs(600), async {
        let net = Net::start().await;
        let (a, _) = net.config_dir("laptop").await;
        // 300 objects in 3 buckets, one `cp -r` each.
        let mut expected: BTreeMap<String, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
        for (i, bucket) in ["photos", "documents", "music"].iter().enumerate() {
            net.ok(&a, &["mb", &format!("shoal://{bucket}")]).await;
            let src = net.work.path().join(format!("src-{bucket}"));
            let files = write_tree(&src, 100, i as u64);
            net.ok(
                &a,
                &[
                    "cp",
                    "-r",
                    "--no-progress",
                    src.to_str().unwrap(),
                    &format!("shoal://{bucket}"),
                ],
            )
            .await;
            expected.insert(bucket.to_string(), files);
        }
        // Deleted and renamed before the loss.
        for i in [0u64, 1, 2] {
            let key = format!("d{}/file-{i:03}.bin", i % 4);
            net.ok(&a, &["rm", &format!("shoal://photos/{key}")]).await;
            expected.get_mut("photos").unwrap().remove(&key);
        }
        for i in [3u64, 4] {
            let key = format!("d{}/file-{i:03}.bin", i % 4);
            let to = format!("renamed/file-{i:03}.bin");
            net.ok(
                &a,
                &[
                    "mv",
                    &format!("shoal://music/{key}"),
                    &format!("shoal://music/{to}"),
                ],
            )
            .await;
            let bytes = expected.get_mut("music").unwrap().remove(&key).unwrap();
            expected.get_mut("music").unwrap().insert(to, bytes);
        }
        let mut listings = BTreeMap::new();
        for bucket in expected.keys() {
            listings.insert(
                bucket.clone(),
                net.ok(&a, &["ls", "-r", &format!("shoal://{bucket}")])
                    .await,
            );
        }
        let status = net.ok(&a, &["catalog", "status", "--json"]).await;
        let status: serde_json::Value = serde_json::from_str(&status).unwrap();
        assert_eq!(status["pending"], 0, "every command published: {status}");

        // The laptop is lost.
        std::fs::remove_dir_all(&a).unwrap();

        let (b, imported) = net.config_dir("new-laptop").await;
        let objects: usize = expected.values().map(BTreeMap::len).sum();
        assert_eq!(objects, 297, "300 stored, 3 deleted, 2 renamed");
        assert!(
            imported.contains(&format!("3 buckets, {objects} objects")),
            "{imported}"
        );
        for (bucket, files) in &expected {
            let listing = net
                .ok(&b, &["ls", "-r", &format!("shoal://{bucket}")])
                .await;
            assert_eq!(&listing, &listings[bucket], "listing of {bucket}");
            let back = net.work.path().join(format!("back-{bucket}"));
            net.ok(
                &b,
                &[
                    "cp",
                    "-r",
                    "--no-progress",
                    &format!("shoal://{bucket}"),
                    back.to_str().unwrap(),
                ],
            )
            .await;
            assert!(
                read_tree(&back) == *files,
                "{bucket}: every object byte-identical"
            );
        }
        // The recovered config dir is a writer like any other.
        net.ok(&b, &["rm", "shoal://documents/d1/file-001.bin"])
            .await;
        let (ok, _, err) = net
            .run(&b, &["cp", "shoal://photos/d0/file-000.bin", "/dev/null"])
            .await
            .unwrap();
        assert!(
            !ok && err.contains("does not exist"),
            "deleted stays deleted: {err}"
        );
        // `check` without a location covers every object and the catalog's own blobs
        // (the snapshot the new laptop restored from and its own delta).
        let report = net.ok(&b, &["check", "--json"]).await;
        let report: serde_json::Value = serde_json::from_str(&report).unwrap();
        assert_eq!(report["objects"], objects - 1, "{report}");
        let catalog = report["catalog"].as_array().unwrap();
        assert!(!catalog.is_empty(), "{report}");
        assert!(catalog.iter().all(|s| s["state"] == "healthy"), "{report}");
        net.0.cluster.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_uplinks_with_one_grant_write_at_once_and_agree() {
    bounded(Duration::from_secs(600), async {
        let net = Net::start().await;
        let (a, _) = net.config_dir("server").await;
        let (b, _) = net.config_dir("laptop").await;
        net.ok(&a, &["mb", "shoal://shared"]).await;
        let tree_a = net.work.path().join("tree-a");
        let tree_b = net.work.path().join("tree-b");
        write_tree(&tree_a, 20, 1);
        write_tree(&tree_b, 20, 2);
        let common_a = net.work.path().join("common-a");
        let common_b = net.work.path().join("common-b");
        std::fs::write(&common_a, Pattern::new(77).bytes(0, 6000)).unwrap();
        std::fs::write(&common_b, Pattern::new(78).bytes(0, 7000)).unwrap();
        let write = |dir: PathBuf, tree: PathBuf, prefix: &'static str, common: PathBuf| {
            let net = &net;
            async move {
                net.ok(
                    &dir,
                    &[
                        "cp",
                        "-r",
                        "--no-progress",
                        tree.to_str().unwrap(),
                        &format!("shoal://shared/{prefix}"),
                    ],
                )
                .await;
                net.ok(
                    &dir,
                    &["cp", common.to_str().unwrap(), "shoal://shared/common"],
                )
                .await;
            }
        };
        tokio::join!(
            write(a.clone(), tree_a, "from-a", common_a.clone()),
            write(b.clone(), tree_b, "from-b", common_b.clone())
        );
        let la = net.ok(&a, &["ls", "-r", "--json", "shoal://shared"]).await;
        let lb = net.ok(&b, &["ls", "-r", "--json", "shoal://shared"]).await;
        assert_eq!(la, lb, "both list the same");
        assert_eq!(la.lines().count(), 41, "20 + 20 objects and the common key");
        // The common key's winner is the version with the later clock (writer id breaking
        // a tie), and its bytes are that writer's.
        let common: serde_json::Value = la
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|v| v["key"] == "common")
            .unwrap();
        let winner = common["version"]["writer"].as_str().unwrap().to_string();
        let writer_of = |dir: &Path| {
            std::fs::read_to_string(dir.join("writer-id"))
                .unwrap()
                .trim()
                .to_string()
        };
        let expected = if winner == writer_of(&a) {
            std::fs::read(&common_a).unwrap()
        } else {
            assert_eq!(winner, writer_of(&b));
            std::fs::read(&common_b).unwrap()
        };
        for dir in [&a, &b] {
            let out = net.work.path().join("common-out");
            net.ok(dir, &["cp", "shoal://shared/common", out.to_str().unwrap()])
                .await;
            assert_eq!(std::fs::read(&out).unwrap(), expected);
        }
        let status = net.ok(&a, &["catalog", "status", "--json"]).await;
        let status: serde_json::Value = serde_json::from_str(&status).unwrap();
        assert_eq!(status["writers"].as_object().unwrap().len(), 2, "{status}");
        net.0.cluster.shutdown().await.unwrap();
    })
    .await;
}

/// Every file of the dir `from`, copied into `to` (a cloned VM, a restored backup).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// Issue 25: a config dir copied while in use, then used from both copies (separate
/// `uplink` processes). The copy that finds the other's head under its writer id moves
/// to a new id and says so; nothing either wrote is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copied_config_dir_used_from_two_processes_loses_nothing() {
    bounded(Duration::from_secs(600), async {
        let net = Net::start().await;
        let (a, _) = net.config_dir("laptop").await;
        net.ok(&a, &["mb", "shoal://bkt"]).await;
        let file = |name: &str, seed: u64| {
            let path = net.work.path().join(name);
            std::fs::write(&path, Pattern::new(seed).bytes(0, 3000 + seed)).unwrap();
            path
        };
        let cp = |dir: &Path, src: &Path, key: &str| {
            let (dir, src, key) = (dir.to_path_buf(), src.to_path_buf(), key.to_string());
            let net = &net;
            async move {
                net.run(
                    &dir,
                    &["cp", src.to_str().unwrap(), &format!("shoal://bkt/{key}")],
                )
                .await
                .unwrap()
            }
        };
        let (ok, _, err) = cp(&a, &file("before", 1), "before").await;
        assert!(ok, "{err}");
        let b = net.work.path().join("clone");
        copy_dir(&a, &b);
        let id = |dir: &Path| std::fs::read_to_string(dir.join("writer-id")).unwrap();
        assert_eq!(id(&a), id(&b));
        // The original writes on; then the copy, which has not seen that publish.
        let (ok, _, err) = cp(&a, &file("a1", 2), "from-a").await;
        assert!(ok, "{err}");
        let (ok, _, err) = cp(&b, &file("b1", 3), "from-b").await;
        assert!(ok, "{err}");
        assert!(err.contains("another copy of this config dir"), "{err}");
        assert_ne!(id(&a), id(&b), "the copy moved to a new writer id");
        // Both go on, now at once.
        let (ra, rb) = tokio::join!(
            cp(&a, &file("a2", 4), "from-a-2"),
            cp(&b, &file("b2", 5), "from-b-2")
        );
        assert!(ra.0, "{}", ra.2);
        assert!(rb.0, "{}", rb.2);
        let (fresh, _) = net.config_dir("fresh").await;
        let listing = net.ok(&fresh, &["ls", "-r", "shoal://bkt"]).await;
        for key in ["before", "from-a", "from-b", "from-a-2", "from-b-2"] {
            assert!(listing.contains(key), "{key} missing: {listing}");
        }
        let out = net.work.path().join("out");
        for (key, seed) in [("from-a", 2), ("from-b", 3), ("from-b-2", 5)] {
            net.ok(
                &fresh,
                &["cp", &format!("shoal://bkt/{key}"), out.to_str().unwrap()],
            )
            .await;
            assert_eq!(
                std::fs::read(&out).unwrap(),
                Pattern::new(seed).bytes(0, 3000 + seed),
                "{key}"
            );
        }
        net.0.cluster.shutdown().await.unwrap();
    })
    .await;
}

/// Issue 21, "Done when": every node of the 12 is stopped and started again: the
/// existing config dirs work at once and a fresh import recovers every object (the nodes
/// keep the DHT records they hold in their metadata store). Then the nodes' record stores
/// are wiped as well: a fresh import says no catalog was found (never "an empty
/// backup"), and `uplink catalog rebuild` with only the grant recovers every object from
/// the catalog pieces' tags; its republished records then serve a fresh import and the
/// old config dirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_survives_restarts_and_rebuild_recovers_every_object_after_every_record_is_lost() {
    bounded(Duration::from_secs(600), async {
        let mut net = Net::start().await;
        // Two writers; with snapshot_every = 4, both snapshots and deltas are in play.
        let (a, _) = net.config_dir("a").await;
        let (b, _) = net.config_dir("b").await;
        let mut expected: BTreeMap<String, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
        for (i, (dir, bucket)) in [(&a, "photos"), (&b, "documents")].iter().enumerate() {
            net.ok(dir, &["mb", &format!("shoal://{bucket}")]).await;
            let src = net.work.path().join(format!("src-{bucket}"));
            let files = write_tree(&src, 20, i as u64 + 7);
            for (rel, _) in files.iter().take(6) {
                // One `cp` per file: one delta each, so several snapshots are taken.
                net.ok(
                    dir,
                    &[
                        "cp",
                        src.join(rel).to_str().unwrap(),
                        &format!("shoal://{bucket}/{rel}"),
                    ],
                )
                .await;
            }
            net.ok(
                dir,
                &[
                    "cp",
                    "-r",
                    "--no-progress",
                    src.to_str().unwrap(),
                    &format!("shoal://{bucket}"),
                ],
            )
            .await;
            expected.insert(bucket.to_string(), files);
        }
        let gone = "d1/file-001.bin";
        net.ok(&a, &["rm", &format!("shoal://photos/{gone}")]).await;
        expected.get_mut("photos").unwrap().remove(gone);
        let objects: usize = expected.values().map(BTreeMap::len).sum();

        // Every node stopped and started again: nothing is forgotten.
        net.0.restart_all().await.unwrap();
        for dir in [&a, &b] {
            let listing = net.ok(dir, &["ls", "-r", "shoal://photos"]).await;
            assert_eq!(
                listing.lines().count(),
                expected["photos"].len(),
                "{listing}"
            );
        }
        let (fresh, imported) = net.config_dir("fresh").await;
        assert!(
            imported.contains(&format!("2 buckets, {objects} objects")),
            "a fresh import after the restart: {imported}"
        );
        let back = net.work.path().join("back-after-restart");
        net.ok(
            &fresh,
            &[
                "cp",
                "-r",
                "--no-progress",
                "shoal://documents",
                back.to_str().unwrap(),
            ],
        )
        .await;
        assert!(
            read_tree(&back) == expected["documents"],
            "byte-identical after the restart"
        );

        // Every DHT record is lost: the nodes' record stores are wiped while they are down.
        for n in &mut net.0.cluster.nodes {
            n.stop().await.unwrap();
        }
        for n in &net.0.cluster.nodes {
            let db = storage_node::meta::MetaDb::open(
                &n.storage_dir().join(storage_node::meta::DB_FILE),
            )
            .unwrap();
            db.remove_expired_dht_records(i64::MAX as u64).unwrap();
            assert!(db.dht_records(0, 10).unwrap().is_empty());
        }
        for n in &mut net.0.cluster.nodes {
            n.restart().await.unwrap();
        }
        shoal_tests::cli_net::wait_all_seen(&net.0.cluster)
            .await
            .unwrap();
        let (c, imported) = net.config_dir("c").await;
        assert!(
            imported.contains("No catalog was found"),
            "nothing in the DHT: {imported}"
        );

        let out = net.ok(&c, &["catalog", "rebuild"]).await;
        assert!(
            out.contains(&format!("2 buckets, {objects} objects")),
            "{out}"
        );
        assert!(out.contains("nothing found was left unrecovered"), "{out}");
        let json = net.ok(&c, &["catalog", "rebuild", "--json"]).await;
        let report: serde_json::Value = serde_json::from_str(&json).unwrap();
        let writers = report["writers"].as_object().unwrap();
        assert_eq!(writers.len(), 2, "{report}");
        for (w, f) in writers {
            assert_eq!(f["head_republished"], true, "writer {w}: {report}");
        }
        assert!(
            writers.values().any(|f| !f["snapshot"].is_null()),
            "a snapshot was used: {report}"
        );
        for (bucket, files) in &expected {
            let back = net.work.path().join(format!("back-{bucket}"));
            net.ok(
                &c,
                &[
                    "cp",
                    "-r",
                    "--no-progress",
                    &format!("shoal://{bucket}"),
                    back.to_str().unwrap(),
                ],
            )
            .await;
            assert!(
                read_tree(&back) == *files,
                "{bucket}: every object byte-identical"
            );
        }
        // The records are back: a fresh import sees everything, and the old config
        // dirs work again (each pulls the other's republished head).
        let (d, imported) = net.config_dir("d").await;
        assert!(
            imported.contains(&format!("2 buckets, {objects} objects")),
            "{imported}"
        );
        for dir in [&a, &b, &d] {
            let listing = net.ok(dir, &["ls", "-r", "shoal://documents"]).await;
            assert_eq!(listing.lines().count(), expected["documents"].len());
        }
        net.ok(&a, &["rm", "shoal://documents/d2/file-002.bin"])
            .await;
        let listing = net.ok(&b, &["ls", "-r", "shoal://documents"]).await;
        assert!(!listing.contains("file-002.bin"), "{listing}");
        net.0.cluster.shutdown().await.unwrap();
    })
    .await;
}
