//! `shoal-fuzz`: runs every decoder fuzz target and the hostile-client harness against
//! live nodes for `--seconds N`, prints the cases run per target, and exits non-zero on
//! any panic, hang or leaked reservation (printing the target, case and input as hex).
//!
//! `cargo run --release -p shoal-tests --bin shoal-fuzz -- --seconds 60 [--seed S]
//! [--only NAME]`: the same seed runs the same cases.

use std::time::Duration;

use clap::Parser;
use shoal_tests::fuzz::{Options, decoder_targets, run};

#[derive(Debug, Parser)]
#[command(about = "Fuzz Shoal's decoders and attack live nodes with a hostile client")]
struct Args {
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Run seed (random when absent; printed, so any failure can be run again).
    #[arg(long)]
    seed: Option<u64>,
    /// Only the targets whose name contains this (for example `gateway.` or `live.`).
    #[arg(long)]
    only: Option<String>,
}

/// Most heap the whole process (decoders and both nodes) may hold: an allocation sized
/// by an oversized length or count aborts the run (a non-zero exit) instead of taking
/// the machine's memory. Nodes and decoders together use well under 1 GiB.
const MAX_HEAP: u64 = 8 << 30;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let hard = rustix::process::getrlimit(rustix::process::Resource::Data).maximum;
    let cap = rustix::process::Rlimit {
        current: Some(hard.map_or(MAX_HEAP, |h| h.min(MAX_HEAP))),
        maximum: hard,
    };
    rustix::process::setrlimit(rustix::process::Resource::Data, cap)
        .map_err(|e| anyhow::anyhow!("cannot cap the heap at {MAX_HEAP} bytes: {e}"))?;
    let seed = args.seed.unwrap_or_else(rand::random);
    let mut opts = Options::new(Duration::from_secs(args.seconds), seed);
    opts.only = args.only.clone();
    let only = args
        .only
        .map(|o| format!(" --only {o}"))
        .unwrap_or_default();
    println!(
        "shoal-fuzz: {} s, seed {seed} (run again with --seed {seed}{only})",
        args.seconds
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(run(opts, decoder_targets()))?;
    println!("{:<28} {:>12} {:>8}", "target", "cases", "rounds");
    for (name, n) in &report.iterations {
        let rounds = report
            .rounds
            .get(name)
            .map_or_else(|| "-".to_string(), u64::to_string);
        println!("{name:<28} {n:>12} {rounds:>8}");
    }
    let failed = report.failures.len();
    let passed = report.iterations.len().saturating_sub(failed);
    if failed == 0 {
        println!("no panic, hang or leaked reservation");
        println!("targets: {passed} passed, 0 failed");
        return Ok(());
    }
    for f in &report.failures {
        eprintln!("FAILED {f}");
    }
    println!("targets: {passed} passed, {failed} failed");
    eprintln!("reproduce with --seed {seed}{only}");
    // A hung decoder thread cannot be joined: leave at once.
    std::process::exit(1);
}
