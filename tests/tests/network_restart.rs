//! The whole network stops and starts again, as separate `storage-node` processes
//! (issue [resilience]): the DHT records the nodes held (the catalog's head and writers
//! records) come back from their metadata stores, so every config dir keeps working and
//! a fresh machine with only the grant recovers every object.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use shoal_test_kit::{bounded, build_binary, test_data};
use shoal_tests::process_net::{Binaries, ProcessNetwork, same_file};

const NODES: usize = 12;

/// Sizes that take each path: inline in the catalog, one byte past it, a small segment,
/// and a few stripes.
const SIZES: [usize; 6] = [0, 100, 4096, 4097, 70_000, 600_000];

fn write_files(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for (i, len) in SIZES.iter().enumerate() {
        let name = format!("f{i}-{len}");
        std::fs::write(dir.join(&name), test_data(*len, i as u64 + 1))?;
        names.push(name);
    }
    Ok(names)
}

/// Every object of `names` is listed by `config_dir` and comes down byte-identical.
fn check_all(
    net: &ProcessNetwork,
    config_dir: &Path,
    src: &Path,
    names: &[String],
    what: &str,
) -> anyhow::Result<()> {
    let listed = net
        .uplink_in(config_dir, &["ls", "-r", "shoal://bench/data/"], &[0])
        .with_context(|| format!("{what}: ls"))?
        .stdout;
    for name in names {
        anyhow::ensure!(
            listed.contains(name.as_str()),
            "{what}: {name} is not listed:\n{listed}"
        );
    }
    let back = net.scratch(&format!("back-{what}"))?;
    for name in names {
        let out = back.join(name);
        net.uplink_in(
            config_dir,
            &[
                "cp",
                "--no-progress",
                &format!("shoal://bench/data/{name}"),
                &out.to_string_lossy(),
            ],
            &[0],
        )
        .with_context(|| format!("{what}: cp down {name}"))?;
        anyhow::ensure!(same_file(&src.join(name), &out)?, "{what}: {name} differs");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_restarted_every_config_dir_works_and_a_fresh_import_recovers_every_object() {
    // Built before the clock starts (a cold build takes minutes).
    let bins = Binaries {
        storage_node: build_binary("storage-node", "storage-node").unwrap(),
        uplink: build_binary("uplink-cli", "uplink").unwrap(),
    };
    let run = async {
        let mut net = ProcessNetwork::start(bins, NODES)?;
        net.settle().await?;
        let src = net.scratch("src")?;
        let names = write_files(&src)?;
        net.uplink(&[
            "cp",
            "-r",
            "--no-progress",
            &src.to_string_lossy(),
            "shoal://bench/data/",
        ])?;
        check_all(&net, &net.config_dir(), &src, &names, "before")?;

        // Every node stops (SIGTERM) and starts again on its directory and address.
        net.restart_all()?;
        net.settle().await?;

        // The config dir that wrote the objects works at once.
        check_all(&net, &net.config_dir(), &src, &names, "same-dir")?;
        // A fresh machine with only the grant recovers every object.
        let fresh = net.new_config_dir("fresh")?;
        let imported = net
            .uplink_in(&fresh, &["access", "import", net.grant()], &[0])?
            .stdout;
        check_all(&net, &fresh, &src, &names, "fresh-import")
            .with_context(|| format!("access import printed: {imported}"))?;
        net.shutdown()
    };
    bounded(Duration::from_secs(900), run).await.unwrap();
}
