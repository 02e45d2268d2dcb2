//! Start-up of a CLI command against separate `storage-node` processes (issue 26,
//! "start-up"): a command reads the catalog's records from the closest nodes an earlier
//! command kept for each record key, in one round and without joining the DHT; it still
//! sees what another machine published just before; and when those nodes do not answer
//! (stopped, or the kept list is garbage) it joins and looks the records up as before.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use shoal_test_kit::{bounded, build_binary, test_data};
use shoal_tests::process_net::{Binaries, ProcessNetwork};

/// Longest the whole test may take.
const LIMIT: Duration = Duration::from_secs(300);
/// What the commands log: the DHT client's joins and reads before joining.
const LOG: &str = "warn,uplink::discovery=debug";
const JOINED: &str = "joined the DHT";
const BEFORE_JOINING: &str = "before joining";

fn binaries() -> Binaries {
    Binaries {
        storage_node: build_binary("storage-node", "storage-node").unwrap(),
        uplink: build_binary("uplink-cli", "uplink").unwrap(),
    }
}

/// Runs `uplink` in `dir` with [`LOG`]; fails the test when the command fails.
fn run(net: &ProcessNetwork, dir: &Path, args: &[&str]) -> (String, String) {
    let t = std::time::Instant::now();
    let (ok, out, err) = net.uplink_logged(dir, args, LOG).unwrap();
    eprintln!("uplink {args:?}: {:.2} s", t.elapsed().as_secs_f64());
    assert!(ok, "uplink {args:?} failed: {err}");
    (out, err)
}

fn catalog_dir(config: &Path) -> PathBuf {
    std::fs::read_dir(config)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("catalog-"))
        })
        .expect("a catalog dir")
}

/// `config`'s catalog, opened with the library (while no command runs).
fn catalog(config: &Path) -> uplink::catalog::Catalog {
    let writer = std::fs::read_to_string(config.join("writer-id")).unwrap();
    let writer = uplink::catalog::WriterId::from_hex(writer.trim()).unwrap();
    uplink::catalog::Catalog::open(&catalog_dir(config), writer).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_read_the_catalog_from_the_closest_kept_and_join_when_those_do_not_answer() {
    let bins = tokio::task::spawn_blocking(binaries).await.unwrap();
    bounded(LIMIT, scenario(bins)).await;
}

async fn scenario(bins: Binaries) {
    let mut net = tokio::task::spawn_blocking(move || ProcessNetwork::start(bins, 8))
        .await
        .unwrap()
        .unwrap();
    net.settle().await.unwrap();
    let work = net.scratch("startup").unwrap();
    // Catalog blobs and objects that survive 3 of 8 nodes stopped (below).
    let slack = "scheme = \"2/3/4/5\"\ncatalog_scheme = \"2/4/6/8\"\n";
    let a = net.config_dir();
    let mut text = std::fs::read_to_string(a.join("config.toml")).unwrap();
    text.push_str(slack);
    std::fs::write(a.join("config.toml"), &text).unwrap();
    // A second machine of the same owner.
    let b = net.new_config_dir("other").unwrap();
    std::fs::write(b.join("config.toml"), &text).unwrap();
    // B's first command has nothing kept: it joins, and keeps what it found.
    let (_, err) = run(&net, &b, &["access", "import", net.grant()]);
    assert!(err.contains(JOINED), "{err}");

    let file = |name: &str, len: usize, seed: u64| {
        let p = work.join(name);
        std::fs::write(&p, test_data(len, seed)).unwrap();
        p
    };
    let one = file("one", 5_000, 1);
    run(&net, &a, &["mb", "shoal://start"]);
    run(
        &net,
        &a,
        &["cp", one.to_str().unwrap(), "shoal://start/one"],
    );
    let (out, _) = run(&net, &b, &["ls", "shoal://start"]);
    assert!(out.contains("one"), "{out}");
    let sets = uplink::peers::load_closest(&catalog(&b));
    assert!(
        !sets.is_empty() && sets.iter().all(|k| !k.nodes.is_empty()),
        "nothing kept: {sets:?}"
    );

    // A publishes again; B's next command sees it, reading before (and without) joining.
    let two = file("two", 7_000, 2);
    run(
        &net,
        &a,
        &["cp", two.to_str().unwrap(), "shoal://start/two"],
    );
    let (out, err) = run(&net, &b, &["ls", "shoal://start"]);
    assert!(out.contains("one") && out.contains("two"), "{out}");
    assert!(err.contains(BEFORE_JOINING), "{err}");
    assert!(
        !err.contains(JOINED),
        "joined although the closest were kept: {err}"
    );
    // A download needs no join either.
    let back = work.join("two.back");
    let (_, err) = run(
        &net,
        &b,
        &["cp", "shoal://start/two", back.to_str().unwrap()],
    );
    assert!(!err.contains(JOINED), "{err}");
    assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&two).unwrap());

    // The kept list is garbage (an altered store): ignored, so the command joins and
    // reads as before.
    {
        let catalog = catalog(&b);
        let garbage: Vec<_> = uplink::peers::load_closest(&catalog)
            .into_iter()
            .map(|mut k| {
                k.nodes = vec![b"not a node record".to_vec(); 3];
                k.found_unix_ms += 1;
                k
            })
            .collect();
        uplink::peers::keep_closest(&catalog, garbage).unwrap();
        catalog.flush().unwrap();
    }
    let (out, err) = run(&net, &b, &["ls", "shoal://start"]);
    assert!(out.contains("one") && out.contains("two"), "{out}");
    assert!(err.contains(JOINED), "{err}");

    // Three of the eight nodes stop (not the grant's seed): fewer than three quarters
    // of the kept closest answer, so the read is a lookup, and A's next publish is
    // still seen.
    for i in [3, 5, 7] {
        net.kill_node(i).unwrap();
    }
    let three = file("three", 9_000, 3);
    run(
        &net,
        &a,
        &["cp", three.to_str().unwrap(), "shoal://start/three"],
    );
    let (out, err) = run(&net, &b, &["ls", "shoal://start"]);
    assert!(
        out.contains("one") && out.contains("two") && out.contains("three"),
        "{out}\n{err}"
    );
    let back = work.join("three.back");
    run(
        &net,
        &b,
        &["cp", "shoal://start/three", back.to_str().unwrap()],
    );
    assert_eq!(
        std::fs::read(&back).unwrap(),
        std::fs::read(&three).unwrap()
    );
    tokio::task::spawn_blocking(move || net.shutdown())
        .await
        .unwrap()
        .unwrap();
}
