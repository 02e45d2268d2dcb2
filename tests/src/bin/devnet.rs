//! `devnet`: one command to a running local Shoal network. Thin: parses flags and calls
//! [`shoal_tests::devnet`].

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use shoal_tests::devnet::{self, Devnet, DevnetParams};
use storage_node::ByteSize;

#[derive(Debug, Parser)]
#[command(
    name = "devnet",
    version,
    about = "Run a local Shoal network on this machine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start (or resume) a network of storage nodes on 127.0.N.1 and run until Ctrl-C.
    Up {
        /// Number of storage nodes (an existing devnet keeps the nodes it has).
        #[arg(long, default_value_t = 12)]
        nodes: usize,
        /// Where the nodes, the access grant and the uplink config live.
        #[arg(long, default_value = "./devnet")]
        dir: PathBuf,
        /// gRPC port of every node (each node has its own 127.0.N.1); HTTP is port + 1.
        /// Fixed when the devnet is first created.
        #[arg(long, default_value_t = 7777)]
        base_port: u16,
        /// Proof-of-work bits of node ids. Fixed when the devnet is first created.
        #[arg(long, default_value_t = 8)]
        difficulty: u32,
        /// Space each node offers, e.g. `2GiB`. Fixed when the devnet is first created.
        #[arg(long, default_value = "2GiB")]
        allocate: ByteSize,
    },
    /// Report which nodes of a running devnet are up.
    Status {
        #[arg(long, default_value = "./devnet")]
        dir: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Up {
            nodes,
            dir,
            base_port,
            difficulty,
            allocate,
        } => {
            up(
                dir,
                nodes,
                DevnetParams {
                    base_port,
                    difficulty,
                    allocate,
                },
            )
            .await
        }
        Command::Status { dir } => status(dir).await,
    }
}

async fn up(dir: PathBuf, nodes: usize, params: DevnetParams) -> anyhow::Result<()> {
    eprintln!(
        "starting a devnet of {nodes} storage nodes in {}",
        dir.display()
    );
    let net = Devnet::up(&dir, nodes, &params).await?;
    if !net.wait_joined(Duration::from_secs(20)).await {
        eprintln!("warning: not every node has joined the DHT yet; uplinks may see fewer nodes");
    }
    let seed = net.seed_pinned().context("the devnet has no nodes")?;
    let access = devnet::ensure_uplink_access(&dir, &seed)?;
    println!(
        "devnet up: {} storage nodes (seed {seed})",
        net.nodes().len(),
    );
    for entry in net.entries() {
        println!(
            "  node {:>2}  {}  grpc {}  dashboard http://{}/  metrics http://{}/metrics",
            entry.index + 1,
            &entry.node_id[..16],
            entry.grpc,
            entry.http,
            entry.http
        );
    }
    println!();
    println!("access grant (also in {}):", access.grant_file.display());
    println!("  {}", access.grant);
    println!();
    println!(
        "use it with the uplink config written to {}:",
        access.config_dir.display()
    );
    println!("  export SHOAL_CONFIG_DIR={}", access.config_dir.display());
    println!("  cargo run --release --bin uplink -- mb shoal://demo");
    println!("  cargo run --release --bin uplink -- cp README.md shoal://demo/README.md");
    println!("  cargo run --release --bin uplink -- ls shoal://demo");
    println!();
    println!(
        "running; press Ctrl-C to stop (`devnet status --dir {}` from another terminal)",
        dir.display()
    );
    // Leases end (90 days by default) unless renewed: renew the uplink's data now and
    // every hour while the devnet runs.
    let renewer = devnet::spawn_renewer(&dir, &access, devnet::RENEW_INTERVAL).await?;
    wait_for_signal().await?;
    eprintln!("stopping");
    renewer.stop().await;
    net.shutdown().await.context("stopping the devnet")?;
    eprintln!("stopped; `devnet up --dir {}` resumes it", dir.display());
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot listen for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}

async fn status(dir: PathBuf) -> anyhow::Result<()> {
    let nodes = devnet::status(&dir).await?;
    let up = nodes.iter().filter(|n| n.status.is_ok()).count();
    println!("{up} of {} nodes up", nodes.len());
    for n in &nodes {
        match &n.status {
            Ok(s) => println!(
                "  node {:>2}  up    {}  used {} of {} bytes, {} pieces",
                n.entry.index + 1,
                n.entry.grpc,
                s["used_bytes"],
                s["allocated_bytes"],
                s["pieces"]
            ),
            Err(e) => println!(
                "  node {:>2}  DOWN  {}  ({e})",
                n.entry.index + 1,
                n.entry.grpc
            ),
        }
    }
    if up < nodes.len() {
        anyhow::bail!("{} of {} nodes are down", nodes.len() - up, nodes.len());
    }
    Ok(())
}
