//! `shoal-bench`: whole-system benchmarks on real storage nodes in this process (see
//! [`shoal_tests::bench`]). Prints one machine-readable line per case on stdout.
//!
//! `cargo run --release -p shoal-tests --bin shoal-bench -- [--nodes 20] [--wide-nodes 110]`

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use shoal_tests::bench;
use uplink::Scheme;

#[derive(Debug, Parser)]
#[command(
    name = "shoal-bench",
    about = "End-to-end benchmarks of a local Shoal network"
)]
struct Cli {
    /// Storage nodes for the 3/7/10, small-object and RSS cases.
    #[arg(long, default_value_t = 20)]
    nodes: usize,
    /// Storage nodes for the wide-scheme case (at least its `total`; 0 skips it).
    #[arg(long, default_value_t = 110)]
    wide_nodes: usize,
    /// Narrow scheme (K/REPAIR/SUCCESS/TOTAL).
    #[arg(long, default_value = "3/5/7/10")]
    narrow: Scheme,
    /// Wide scheme.
    #[arg(long, default_value = "29/35/80/110")]
    wide: Scheme,
    /// Object size of the throughput cases, MiB.
    #[arg(long, default_value_t = 512)]
    size_mib: u64,
    /// Number of small objects (4 KiB, inline; and 4 KiB + 1, the smallest on the nodes).
    #[arg(long, default_value_t = 1000)]
    objects: usize,
    /// 4 KiB operations in flight (the sequential case always runs too).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// File sizes for the peak-RSS case, MiB (comma-separated; empty skips it).
    #[arg(long, value_delimiter = ',', default_value = "1024,4096")]
    rss_mib: Vec<u64>,
    /// Also measure peak RSS at the wide scheme on the wide network.
    #[arg(long)]
    wide_rss: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Internal: the uplink side of the RSS case, run as a child process.
    #[command(hide = true)]
    RssChild {
        #[arg(long)]
        nodes_file: PathBuf,
        #[arg(long)]
        scheme: Scheme,
        #[arg(long)]
        size_mib: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Some(Command::RssChild {
        nodes_file,
        scheme,
        size_mib,
    }) = cli.command
    {
        return bench::rss_child(&nodes_file, scheme, size_mib).await;
    }
    let exe = std::env::current_exe().context("cannot find this executable for the RSS child")?;

    let cluster = bench::start_cluster(cli.nodes).await?;
    bench::updown(&cluster, cli.narrow, cli.size_mib).await?;
    for size in [4096, 4097] {
        bench::small_objects(&cluster, cli.narrow, cli.objects, 1, size).await?;
        bench::small_objects(&cluster, cli.narrow, cli.objects, cli.concurrency, size).await?;
    }
    for &size in &cli.rss_mib {
        bench::measure_rss(&exe, &cluster, cli.narrow, size).await?;
    }
    cluster.shutdown().await?;

    if cli.wide_nodes > 0 {
        if cli.wide_nodes < usize::from(cli.wide.total) {
            println!(
                "case=updown scheme={} skipped=\"only {} nodes\"",
                cli.wide, cli.wide_nodes
            );
            return Ok(());
        }
        let cluster = bench::start_cluster(cli.wide_nodes).await?;
        bench::updown(&cluster, cli.wide, cli.size_mib).await?;
        if cli.wide_rss {
            for &size in &cli.rss_mib {
                bench::measure_rss(&exe, &cluster, cli.wide, size).await?;
            }
        }
        cluster.shutdown().await?;
    }
    Ok(())
}
