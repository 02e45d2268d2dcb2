//! The uplink CLI against separate `storage-node` processes while nodes go away: uploads
//! place the pieces of just-stopped nodes on live ones, and no node is special to an
//! uplink (the grant's bootstrap node can die and every command still works).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use shoal_test_kit::{bounded, build_binary, test_data};
use shoal_tests::process_net::{Binaries, ProcessNetwork};

/// Longest the whole test may take.
const LIMIT: Duration = Duration::from_secs(600);

fn binaries() -> Binaries {
    let node = build_binary("storage-node", "storage-node").unwrap();
    let uplink = build_binary("uplink-cli", "uplink").unwrap();
    Binaries {
        storage_node: node,
        uplink,
    }
}

/// `n` files of distinct sizes above the inline limit (so that every one has pieces).
fn write_files(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        let len = 4097 + i * 3001;
        let bytes = test_data(len, i as u64 + 1);
        std::fs::write(dir.join(format!("f{i:02}")), bytes).unwrap();
    }
}

fn same_tree(a: &Path, b: &Path, n: usize) {
    for i in 0..n {
        let name = format!("f{i:02}");
        let x = std::fs::read(a.join(&name)).unwrap();
        let y = std::fs::read(b.join(&name))
            .unwrap_or_else(|e| panic!("{name} was not downloaded: {e}"));
        assert!(x == y, "{name} differs after the round trip");
    }
}

/// Runs a blocking closure over the network on the blocking pool.
async fn blocking<T: Send + 'static>(
    net: &Arc<ProcessNetwork>,
    f: impl FnOnce(&ProcessNetwork) -> T + Send + 'static,
) -> T {
    let net = net.clone();
    tokio::task::spawn_blocking(move || f(&net)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_route_around_stopped_nodes_and_the_bootstrap_node_is_not_special() {
    // Built before the clock starts: a cold build of the two binaries takes minutes.
    let bins = tokio::task::spawn_blocking(binaries).await.unwrap();
    bounded(LIMIT, scenario(bins)).await;
}

async fn scenario(bins: Binaries) {
    let mut net = tokio::task::spawn_blocking(move || ProcessNetwork::start(bins, 12))
        .await
        .unwrap()
        .unwrap();
    net.settle().await.unwrap();
    let work = net.scratch("resilience").unwrap();
    let tree = work.join("tree");
    write_files(&tree, 40);
    let seed = net.pinned(0).unwrap().to_owned();
    let live = net.pinned(11).unwrap().to_owned();

    // The grant `access create --bootstrap SEED` made names more than the seed.
    let inspect = net.uplink(&["access", "inspect"]).unwrap().stdout;
    let peers = inspect
        .lines()
        .find_map(|l| l.strip_prefix("bootstrap peers:"))
        .unwrap()
        .split(", ")
        .count();
    assert!(peers > 1, "the grant names only the seed: {inspect}");

    // A second owner whose grant names only the seed; it runs once while all is well.
    // Its catalog blobs survive 8 lost nodes of 12 (the default catalog scheme shrunk to
    // 12 nodes, 8/12/12/12, survives 4, and 5 go down below).
    let slack = "scheme = \"2/3/4/5\"\ncatalog_scheme = \"2/4/6/10\"\n";
    let other = work.join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(
        other.join("config.toml"),
        format!("difficulty = 2\nlocal_network = true\n{slack}"),
    )
    .unwrap();
    let grant = uplink::Access::new(uplink::RootSecret::random(), vec![seed.clone()])
        .to_grant()
        .unwrap();
    let net = Arc::new({
        let (ok, _, err) = net
            .uplink_output(&other, &["access", "import", &grant])
            .unwrap();
        assert!(ok, "{err}");
        let (ok, _, err) = net.uplink_output(&other, &["mb", "shoal://mine"]).unwrap();
        assert!(ok, "{err}");
        let one = tree.join("f00");
        let (ok, _, err) = net
            .uplink_output(
                &other,
                &["cp", one.to_str().unwrap(), "shoal://mine/before"],
            )
            .unwrap();
        assert!(ok, "{err}");
        // Warm the first config dir's node cache with all 12 nodes alive.
        net.uplink(&["cp", one.to_str().unwrap(), "shoal://bench/warm"])
            .unwrap();
        // Stop 4 nodes (not the seed) at once, as machines that just went away.
        for i in 1..=4 {
            net.kill_node(i).unwrap();
        }
        net
    });

    // At once: `cp -r --rs 2/3/4/5` of 40 files succeeds, every file intact.
    let up = blocking(&net, move |n| {
        n.uplink(&[
            "cp",
            "-r",
            "--rs",
            "2/3/4/5",
            tree.to_str().unwrap(),
            "shoal://bench/tree/",
        ])
    })
    .await;
    up.unwrap();
    let down = work.join("down");
    let d = down.clone();
    blocking(&net, move |n| {
        n.uplink(&["cp", "-r", "shoal://bench/tree/", d.to_str().unwrap()])
    })
    .await
    .unwrap();
    same_tree(&work.join("tree"), &down, 40);

    // Now the grant's bootstrap node dies too (5 of 12 down). From here on 7 of the 12 nodes the
    // uplinks know are up: schemes with slack, so that the piece of a node not known to
    // be dead yet can be placed again (a scheme shrunk to the known nodes has none: see
    // Scheme::shrink_to).
    let file = net.config_dir().join("config.toml");
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str(slack);
    std::fs::write(&file, text).unwrap();
    let mut net = Arc::try_unwrap(net).expect("no other user of the network");
    net.kill_node(0).unwrap();
    let net = Arc::new(net);
    let tree = work.join("tree");
    let one = tree.join("f01");
    // Every command of the first config dir works (its grant names live nodes too).
    let o = one.clone();
    let w = work.clone();
    blocking(&net, move |n| {
        n.uplink(&["ls", "shoal://bench/tree/"]).unwrap();
        n.uplink(&["cp", o.to_str().unwrap(), "shoal://bench/after"])
            .unwrap();
        let back = w.join("after");
        n.uplink(&["cp", "shoal://bench/after", back.to_str().unwrap()])
            .unwrap();
        assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&o).unwrap());
    })
    .await;
    // The second owner's grant names only the dead seed: it joins through the nodes it
    // verified before, and every command works.
    let (o, w, oth) = (one.clone(), work.clone(), other.clone());
    blocking(&net, move |n| {
        let run = |args: &[&str]| {
            let (ok, out, err) = n.uplink_output(&oth, args).unwrap();
            assert!(ok, "uplink {args:?} failed: {err}");
            out
        };
        assert!(run(&["ls", "shoal://mine/"]).contains("before"));
        run(&["cp", o.to_str().unwrap(), "shoal://mine/after"]);
        let back = w.join("mine-after");
        run(&["cp", "shoal://mine/after", back.to_str().unwrap()]);
        assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&o).unwrap());
    })
    .await;
    // A fresh machine with that grant: refused while no entry answers, with a message
    // that says what to do; with one live `--bootstrap` it recovers everything.
    let fresh = work.join("fresh");
    std::fs::create_dir_all(&fresh).unwrap();
    std::fs::write(
        fresh.join("config.toml"),
        format!("difficulty = 2\nlocal_network = true\n{slack}"),
    )
    .unwrap();
    let g = grant.clone();
    blocking(&net, move |n| {
        let (ok, _, err) = n.uplink_output(&fresh, &["access", "import", &g]).unwrap();
        assert!(!ok, "import through a dead bootstrap node succeeded");
        assert!(err.contains("bootstrap"), "{err}");
        let (ok, out, err) = n
            .uplink_output(
                &fresh,
                &["access", "import", "--force", "--bootstrap", &live, &g],
            )
            .unwrap();
        assert!(ok, "{err}");
        let (_, status, _) = n.uplink_output(&fresh, &["catalog", "status"]).unwrap();
        assert!(out.contains("1 buckets, 2 objects"), "{out}{err}{status}");
        let (ok, out, err) = n.uplink_output(&fresh, &["ls", "shoal://mine/"]).unwrap();
        assert!(ok, "{err}");
        assert!(out.contains("after") && out.contains("before"), "{out}");
    })
    .await;
    Arc::try_unwrap(net)
        .expect("no other user of the network")
        .shutdown()
        .unwrap();
}
