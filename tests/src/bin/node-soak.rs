//! `node-soak`: storage-node processes taking small pieces from concurrent owners while
//! nodes are killed with SIGKILL and restarted at random; then every acknowledged piece
//! must be readable and every node's counters must equal the sums over its pieces (see
//! [`shoal_tests::node_soak`]). Prints one summary line; exits non-zero on any failure.
//!
//! `cargo build --release -p storage-node -p shoal-tests && ./target/release/node-soak --pieces 1000000`

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use shoal_tests::node_soak::{SoakOptions, run};

#[derive(Debug, Parser)]
#[command(
    name = "node-soak",
    about = "Kill -9 storage nodes under concurrent small uploads; check every acknowledged piece and every counter"
)]
struct Cli {
    /// Acknowledged pieces to reach.
    #[arg(long, default_value_t = 10_000)]
    pieces: usize,
    /// Storage-node processes.
    #[arg(long, default_value_t = 20)]
    nodes: usize,
    /// Longest the upload phase may take (fails if `--pieces` is not reached).
    #[arg(long, default_value_t = 600)]
    seconds: u64,
    /// Concurrent uploading owners.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Mean milliseconds between two kills (each followed by a restart).
    #[arg(long, default_value_t = 1000)]
    kill_every_ms: u64,
    /// The storage-node binary (default: next to this one).
    #[arg(long)]
    storage_node: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let storage_node = match cli.storage_node {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .context("no directory for this executable")?
            .join("storage-node"),
    };
    if !storage_node.exists() {
        anyhow::bail!(
            "{} is missing; build it first (cargo build --release -p storage-node) or pass --storage-node",
            storage_node.display()
        );
    }
    let opts = SoakOptions {
        storage_node,
        nodes: cli.nodes,
        pieces: cli.pieces,
        seconds: cli.seconds,
        clients: cli.clients,
        kill_every: Duration::from_millis(cli.kill_every_ms),
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let r = runtime.block_on(run(&opts))?;
    println!(
        "node-soak nodes={} acked={} inline={} file={} stored={} verified={} failed_uploads={} kills={} upload_secs={:.1} pieces_per_s={:.0} slowest_sigterm_stop_secs={:.2}",
        opts.nodes,
        r.acked,
        r.inline,
        r.file,
        r.stored,
        r.verified,
        r.failed,
        r.kills,
        r.upload_secs,
        r.acked as f64 / r.upload_secs.max(1e-9),
        r.slowest_stop_secs
    );
    Ok(())
}
