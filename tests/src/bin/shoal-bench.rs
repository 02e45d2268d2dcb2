//! `shoal-bench`: whole-system benchmarks on real storage nodes in this process (see
//! [`shoal_tests::bench`]). Prints one machine-readable line per case on stdout.
//!
//! `cargo run --release -p shoal-tests --bin shoal-bench -- [--nodes 20] [--wide-nodes 110]`
//!
//! With `--processes N` it instead runs the release `uplink` CLI against N separate
//! `storage-node` processes (see [`shoal_tests::cli_bench`]):
//! `cargo build --release -p storage-node -p uplink-cli -p shoal-tests && ./target/release/shoal-bench --processes 20`

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
    /// Run the `uplink` CLI against this many `storage-node` processes instead of the
    /// in-process cases (0: in-process cases). Uses the scheme of `--narrow`.
    #[arg(long, default_value_t = 0)]
    processes: usize,
    /// Object sizes of the CLI up/down cases, MiB (comma-separated; 0 skips them).
    #[arg(long, value_delimiter = ',', default_value = "256,1024")]
    sizes_mib: Vec<u64>,
    /// Files per `cp -r` case of the CLI (0 skips them).
    #[arg(long, default_value_t = 1000)]
    files: usize,
    /// File sizes of the CLI `cp -r` cases, bytes (comma-separated; 0 skips them).
    #[arg(long, value_delimiter = ',', default_value = "4097,65536")]
    file_sizes: Vec<u64>,
    /// Directory of the `storage-node` and `uplink` binaries the CLI cases run (default:
    /// this executable's directory), e.g. a copy of another commit's build for an A/B.
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// `--parallelism` of the `cp -r` cases (default: the CLI's own default).
    #[arg(long)]
    cp_parallelism: Option<usize>,
    /// Repetitions of the CLI start-up case (0 skips it).
    #[arg(long, default_value_t = 5)]
    startup_repeat: usize,
    /// Objects of the renew/check/repair case (`--processes` only; 0 skips it).
    #[arg(long, default_value_t = 0)]
    maint_objects: usize,
    /// Size of each object of the renew/check/repair case, MiB.
    #[arg(long, default_value_t = 16)]
    maint_size_mib: u64,
    /// Node processes killed before the repair of that case.
    #[arg(long, default_value_t = 4)]
    maint_kill: usize,
    /// Scheme of that case (repair threshold high, so that a few lost nodes trigger it).
    #[arg(long, default_value = "4/8/9/10")]
    maint_scheme: Scheme,
    /// `--audit-fraction` of that case's check.
    #[arg(long, default_value_t = 0.0)]
    maint_audit_fraction: f64,
    /// Extra 8 KiB objects (one `cp -r`) renewed with the others, for renew throughput.
    #[arg(long, default_value_t = 0)]
    maint_renew_files: usize,
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
    if cli.processes > 0 {
        return cli_cases(&cli, &exe).await;
    }

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

async fn cli_cases(cli: &Cli, exe: &std::path::Path) -> anyhow::Result<()> {
    use shoal_tests::{cli_bench, process_net};
    let bins = match &cli.bin_dir {
        Some(dir) => process_net::Binaries::in_dir(dir)?,
        None => process_net::Binaries::in_dir(exe.parent().context("no executable dir")?)?,
    };
    let mut net = process_net::ProcessNetwork::start(bins, cli.processes)?;
    net.settle().await?;
    if cli.startup_repeat > 0 {
        cli_bench::startup(&net, cli.narrow, cli.startup_repeat)?;
    }
    for &size in cli.sizes_mib.iter().filter(|s| **s > 0) {
        cli_bench::updown(&net, cli.narrow, size)?;
    }
    for &size in cli.file_sizes.iter().filter(|s| **s > 0 && cli.files > 0) {
        cli_bench::tree(&net, cli.narrow, cli.files, size, cli.cp_parallelism)?;
    }
    if cli.maint_objects > 0 {
        cli_bench::maintenance(
            &mut net,
            cli.maint_scheme,
            cli.maint_objects,
            cli.maint_size_mib,
            cli.maint_kill,
            cli.maint_audit_fraction,
            cli.maint_renew_files,
        )?;
    }
    println!(
        "case=cli-nodes processes={} node_peak_rss_mib={:.1}",
        net.len(),
        net.nodes_peak_rss_kib() as f64 / 1024.0
    );
    net.shutdown()
}
