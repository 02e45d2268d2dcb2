//! The `uplink` binary end to end over real gRPC: fake storage nodes (the in-memory
//! store behind tonic servers on 127.0.N.1) and the CLI run as a process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use shoal_test_kit::{Cli, Run, xorshift_bytes};
use uplink::testing::fake_net::FakeNetwork as Network;

async fn start_network(n: usize) -> Network {
    Network::start(n).await.unwrap()
}

/// The `uplink` binary of this build with its default logging, 120 s a run at most.
async fn uplink(dir: &Path, args: &[&str], stdin: Option<Vec<u8>>) -> Run {
    Cli::new(env!("CARGO_BIN_EXE_uplink"))
        .log(None)
        .limit(Duration::from_secs(120))
        .run_with_input(dir, args, stdin)
        .await
        .unwrap()
}

async fn ok(dir: &Path, args: &[&str], stdin: Option<Vec<u8>>) -> Vec<u8> {
    let out = uplink(dir, args, stdin).await;
    assert!(out.success(), "uplink {args:?} failed: {}", out.stderr);
    out.stdout_bytes
}

async fn text(dir: &Path, args: &[&str], stdin: Option<Vec<u8>>) -> String {
    String::from_utf8(ok(dir, args, stdin).await).unwrap()
}

async fn fails(dir: &Path, args: &[&str], stdin: Option<Vec<u8>>) -> String {
    let out = uplink(dir, args, stdin).await;
    assert!(!out.success(), "uplink {args:?} should have failed");
    out.stderr
}

fn data(n: usize, seed: u64) -> Vec<u8> {
    xorshift_bytes(n, seed)
}

fn configure(dir: &Path, net: &Network, scheme: Option<&str>) {
    // Every node pinned, NODEID@ADDRESS.
    let nodes: Vec<String> = net
        .store
        .candidates()
        .iter()
        .map(|c| format!("\"{}@{}\"", c.id, c.address))
        .collect();
    // These fake nodes serve no DHT, so the catalog stays local here; the catalog in the
    // network is tested against real nodes in `tests/tests/catalog.rs`.
    let mut text = format!(
        "nodes = [{}]\nnetwork_catalog = false\nlocal_network = true\n",
        nodes.join(", ")
    );
    if let Some(s) = scheme {
        text.push_str(&format!("scheme = \"{s}\"\n"));
    }
    std::fs::write(dir.join("config.toml"), text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_grants_and_wrong_passphrases() {
    let net = start_network(12).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    configure(d, &net, None);
    // Bootstrap peers must be pinned to a node id.
    let unpinned = fails(d, &["access", "create", "--bootstrap", "127.0.1.1:1"], None).await;
    assert!(unpinned.contains("NODEID@HOST:PORT"), "{unpinned}");
    let pinned = format!("{}@127.0.1.1:1", "ab".repeat(32));
    let grant = text(
        d,
        &[
            "access",
            "create",
            "--passphrase-stdin",
            "--name",
            "alice@example.org",
            "--bootstrap",
            &pinned,
        ],
        Some(b"right horse battery staple\n".to_vec()),
    )
    .await;
    assert!(grant.trim().starts_with("shoal1"));
    let inspect = text(d, &["access", "inspect"], None).await;
    assert!(inspect.contains(&pinned));
    assert!(!inspect.contains(grant.trim()));
    // Refuses to overwrite silently.
    assert!(
        fails(d, &["access", "create"], None)
            .await
            .contains("--force")
    );

    ok(d, &["mb", "shoal://docs"], None).await;
    let body = data(20_000, 1);
    ok(
        d,
        &["cp", "-", "shoal://docs/secret.bin"],
        Some(body.clone()),
    )
    .await;
    // The default scheme does not fit 12 nodes: the CLI says which one it used.
    let out = uplink(
        d,
        &["cp", "-", "shoal://docs/again.bin"],
        Some(body.clone()),
    )
    .await;
    assert!(out.stderr.contains("was stored with 6/12/12/12"));
    assert_eq!(
        ok(d, &["cp", "shoal://docs/secret.bin", "-"], None).await,
        body
    );

    // A weak passphrase is refused, saying why and what is stronger.
    let weak = fails(
        d,
        &[
            "access",
            "create",
            "--force",
            "--passphrase-stdin",
            "--name",
            "alice@example.org",
        ],
        Some(b"horse123\n".to_vec()),
    )
    .await;
    assert!(
        weak.contains("too weak") && weak.contains("random access"),
        "{weak}"
    );
    // So is a passphrase without a name to salt it.
    let nameless = fails(
        d,
        &["access", "create", "--force", "--passphrase-stdin"],
        None,
    )
    .await;
    assert!(nameless.contains("--name"), "{nameless}");
    // A wrong passphrase is another access: it reads nothing and says so. So is the
    // right passphrase under another name.
    for (passphrase, name) in [
        (&b"wrong horse battery staple\n"[..], "alice@example.org"),
        (&b"right horse battery staple\n"[..], "bob@example.org"),
    ] {
        ok(
            d,
            &[
                "access",
                "create",
                "--force",
                "--passphrase-stdin",
                "--name",
                name,
            ],
            Some(passphrase.to_vec()),
        )
        .await;
        let err = fails(d, &["cp", "shoal://docs/secret.bin", "-"], None).await;
        assert!(err.contains("bucket `docs` does not exist"), "{err}");
    }
    // The right passphrase and name, even re-typed later (the name in other case),
    // read it again.
    ok(
        d,
        &[
            "access",
            "create",
            "--force",
            "--passphrase-stdin",
            "--name",
            "Alice@Example.org",
        ],
        Some(b"right horse battery staple\n".to_vec()),
    )
    .await;
    assert_eq!(
        ok(d, &["cp", "shoal://docs/secret.bin", "-"], None).await,
        body
    );

    // Grants: import round trip; garbage and damaged grants are refused clearly.
    let other = tempfile::tempdir().unwrap();
    configure(other.path(), &net, None);
    ok(other.path(), &["access", "import", grant.trim()], None).await;
    // Issue 27: the grant from stdin (`-`) or a file, never on a command line others
    // can read; an empty one is refused.
    let from_stdin = tempfile::tempdir().unwrap();
    configure(from_stdin.path(), &net, None);
    ok(
        from_stdin.path(),
        &["access", "import", "-"],
        Some(grant.clone().into_bytes()),
    )
    .await;
    assert_eq!(
        std::fs::read_to_string(from_stdin.path().join("access")).unwrap(),
        std::fs::read_to_string(other.path().join("access")).unwrap()
    );
    let from_file = tempfile::tempdir().unwrap();
    configure(from_file.path(), &net, None);
    let grant_file = from_file.path().join("grant.txt");
    std::fs::write(&grant_file, &grant).unwrap();
    let grant_path = grant_file.to_str().unwrap();
    ok(
        from_file.path(),
        &["access", "import", "--grant-file", grant_path],
        None,
    )
    .await;
    assert!(from_file.path().join("access").exists());
    let err = fails(
        from_file.path(),
        &["access", "import", "--force", "-"],
        Some(Vec::new()),
    )
    .await;
    assert!(err.contains("the grant is empty"), "{err}");
    // With the catalog in the network (the default), import recovers the catalog; when
    // the grant's network cannot be reached it says so and fails, keeping the grant.
    let offline = tempfile::tempdir().unwrap();
    let err = fails(offline.path(), &["access", "import", grant.trim()], None).await;
    assert!(err.contains("could not be recovered"), "{err}");
    assert!(offline.path().join("access").exists());
    let err = fails(
        other.path(),
        &["access", "import", "--force", "hello"],
        None,
    )
    .await;
    assert!(err.contains("not an access grant"), "{err}");
    // Cut by whole base64 quanta (4 characters), so the rest still decodes: the
    // checksum catches it whatever the grant's length.
    let truncated = &grant.trim()[..grant.trim().len() - 4];
    let err = fails(
        other.path(),
        &["access", "import", "--force", truncated],
        None,
    )
    .await;
    assert!(
        err.contains("checksum") || err.contains("truncated"),
        "{err}"
    );
}

fn files_under(root: &Path) -> Vec<PathBuf> {
    shoal_test_kit::files_under(root).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_up_down_list_move_remove_and_trees() {
    let net = start_network(12).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    configure(d, &net, Some("3/5/7/10"));
    ok(d, &["access", "create"], None).await;
    ok(d, &["mb", "shoal://bkt"], None).await;
    let work = tempfile::tempdir().unwrap();
    let w = work.path();

    // Files of several sizes, up and back.
    for (i, n) in [0usize, 1, 4096, 4097, 300_000].into_iter().enumerate() {
        let src = w.join(format!("f{i}"));
        std::fs::write(&src, data(n, i as u64)).unwrap();
        ok(
            d,
            &[
                "cp",
                "--no-progress",
                src.to_str().unwrap(),
                "shoal://bkt/files/",
            ],
            None,
        )
        .await;
        let back = w.join(format!("back{i}"));
        ok(
            d,
            &[
                "cp",
                &format!("shoal://bkt/files/f{i}"),
                back.to_str().unwrap(),
            ],
            None,
        )
        .await;
        assert_eq!(std::fs::read(&back).unwrap(), data(n, i as u64), "size {n}");
    }
    // Range: bytes 1000..=1999.
    let part = ok(
        d,
        &["cp", "--range", "1000-1999", "shoal://bkt/files/f4", "-"],
        None,
    )
    .await;
    assert_eq!(part, data(300_000, 4)[1000..2000]);

    let ls = text(d, &["ls", "shoal://bkt"], None).await;
    assert!(ls.contains("files/"), "{ls}");
    let ls = text(d, &["ls", "-r", "--json", "shoal://bkt/files/"], None).await;
    assert_eq!(ls.lines().count(), 5);
    assert!(
        ls.lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
    );
    assert!(text(d, &["ls"], None).await.contains("bkt"));

    ok(
        d,
        &["mv", "shoal://bkt/files/f4", "shoal://bkt/moved/f4"],
        None,
    )
    .await;
    assert_eq!(
        ok(d, &["cp", "shoal://bkt/moved/f4", "-"], None).await,
        data(300_000, 4)
    );
    let err = fails(d, &["cp", "shoal://bkt/files/f4", "-"], None).await;
    assert!(
        err.contains("bkt/files/f4") && err.contains("does not exist"),
        "{err}"
    );
    ok(d, &["rm", "shoal://bkt/moved/f4"], None).await;
    ok(d, &["rm", "-r", "shoal://bkt/files/"], None).await;
    assert!(
        fails(d, &["rm", "shoal://bkt/nothing"], None)
            .await
            .contains("does not exist")
    );

    // A tree of 1,000 files (a few larger than the inline limit) up and back.
    let tree = w.join("tree");
    for i in 0..1000u64 {
        let p = tree.join(format!("d{}/s{}/file-{i}.dat", i % 7, i % 3));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let n = if i % 100 == 0 {
            70_000
        } else {
            (i as usize * 37) % 3000
        };
        std::fs::write(p, data(n, i)).unwrap();
    }
    ok(
        d,
        &[
            "cp",
            "-r",
            "--parallelism",
            "8",
            tree.to_str().unwrap(),
            "shoal://bkt/backup",
        ],
        None,
    )
    .await;
    let restored = w.join("restored");
    ok(
        d,
        &["cp", "-r", "shoal://bkt/backup", restored.to_str().unwrap()],
        None,
    )
    .await;
    let (a, b) = (files_under(&tree), files_under(&restored));
    assert_eq!(a.len(), 1000);
    assert_eq!(a, b);
    for f in &a {
        assert_eq!(
            std::fs::read(tree.join(f)).unwrap(),
            std::fs::read(restored.join(f)).unwrap(),
            "{}",
            f.display()
        );
    }

    assert!(
        fails(d, &["rb", "shoal://bkt"], None)
            .await
            .contains("not empty")
    );
    ok(d, &["rb", "--force", "shoal://bkt"], None).await;
    assert!(!text(d, &["ls"], None).await.contains("bkt"));
    // Every recorded piece is deleted; the long tail is recorded too, or deleted by the
    // reaper when its receipt comes late. What could remain are pieces whose receipt came
    // after the reaper gave up (at most total - success per segment of the 12 objects
    // stored remotely); they go when their leases end.
    assert!(
        net.store.piece_count() <= 3 * 12,
        "{} pieces left",
        net.store.piece_count()
    );
}
