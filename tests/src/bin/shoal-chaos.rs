//! `shoal-chaos --minutes N --seed S`: 30 storage nodes on the network-namespace harness,
//! `uplink` CLI workers and an S3 worker through `uplink gateway`, writing, reading,
//! listing and deleting while nodes are killed (-9), restarted, cut off, partitioned
//! and healed on a schedule drawn from the seed; then `uplink check` of everything and
//! a byte-for-byte comparison of every acknowledged object. Prints one summary line;
//! exits 1 if an acknowledged object was lost or read back wrong, a deleted one came
//! back, or any client operation failed (the schedule never takes down more than
//! `total - repair` nodes, so every operation should succeed; `--tolerate-failures`
//! reports failed operations without failing the run). Needs root and
//! iproute2. Run it through cargo (it builds `storage-node` and `uplink`):
//!
//! ```sh
//! cargo run --profile test -p shoal-tests --bin shoal-chaos -- --minutes 2 --seed 1
//! ```

use anyhow::bail;
use clap::Parser;
use shoal_tests::chaos::run::{ChaosOptions, run};
use shoal_tests::process_net::Binaries;

#[derive(Parser, Debug)]
#[command(about = "Chaos run on a network of namespaces: nothing acknowledged may be lost")]
struct Args {
    /// How long the faults and the clients run, in minutes.
    #[arg(long, default_value_t = 2.0)]
    minutes: f64,
    /// Seed of the fault schedule and of the clients' operations.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Storage nodes.
    #[arg(long, default_value_t = 30)]
    nodes: usize,
    /// Of them, DHT seeds (named by the grant; killed like the others).
    #[arg(long, default_value_t = 3)]
    seeds: usize,
    /// `uplink` CLI workers (one config dir, one bucket each).
    #[arg(long, default_value_t = 2)]
    cli_workers: usize,
    /// Exit 0 even when client operations failed (they are still listed).
    #[arg(long)]
    tolerate_failures: bool,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    if a.minutes.is_nan() || a.minutes <= 0.0 || a.nodes < 17 {
        bail!("--minutes above 0 and at least 17 nodes (the scheme's 16 pieces and one more)");
    }
    let bins = Binaries {
        storage_node: shoal_test_kit::build_binary("storage-node", "storage-node")?,
        uplink: shoal_test_kit::build_binary("uplink-cli", "uplink")?,
    };
    let options = ChaosOptions {
        minutes: a.minutes,
        seed: a.seed,
        nodes: a.nodes,
        seeds: a.seeds,
        cli_workers: a.cli_workers,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = rt.block_on(run(bins, options.clone()))?;
    for l in &report.ledgers {
        for (reason, n) in &l.failed {
            println!("failed {n}x [{}] {reason}", l.name);
        }
    }
    for k in &report.lost {
        println!("LOST {k}");
    }
    println!("{}", report.summary(&options));
    let corrupt: u64 = report.ledgers.iter().map(|l| l.corrupt).sum();
    if !report.lost.is_empty() || corrupt > 0 || !report.resurrected.is_empty() {
        bail!(
            "{} acknowledged objects lost, {corrupt} reads wrong, {} deleted objects back",
            report.lost.len(),
            report.resurrected.len()
        );
    }
    let failed: u64 = report.ledgers.iter().map(|l| l.failures()).sum();
    if failed > 0 && !a.tolerate_failures {
        bail!(
            "{failed} client operations failed with at most {} nodes down (listed above)",
            shoal_tests::chaos::run::MAX_DOWN
        );
    }
    Ok(())
}
