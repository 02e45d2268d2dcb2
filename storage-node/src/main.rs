//! `storage-node`: setup, run and inspect a Shoal storage node. Thin: parses flags,
//! resolves the configuration and calls the library.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use shoal_proto::Identity;
use storage_node::ByteSize;
use storage_node::config::{self, NodeDir, Overrides};
use storage_node::info::{RUN_FILE, RunFile};

#[derive(Debug, Parser)]
#[command(
    name = "storage-node",
    version,
    about = "Offer disk space to the Shoal network"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a node directory: an identity (proof of work) and a documented config.toml.
    Setup {
        #[command(flatten)]
        dir: DirArg,
        #[command(flatten)]
        settings: Settings,
        /// Redo an existing setup: new identity and config; deletes every stored piece.
        #[arg(long)]
        force: bool,
    },
    /// Serve until SIGINT or SIGTERM.
    Run {
        #[command(flatten)]
        dir: DirArg,
        #[command(flatten)]
        settings: Settings,
    },
    /// Show node id, addresses and space.
    Info {
        #[command(flatten)]
        dir: DirArg,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
struct DirArg {
    /// Node directory (identity, config.toml, storage).
    #[arg(long, env = "SHOAL_NODE_DIR")]
    dir: PathBuf,
    /// Identity key file, when kept outside the node directory (default DIR/identity.key).
    #[arg(long, env = "SHOAL_NODE_IDENTITY", value_name = "FILE")]
    identity: Option<PathBuf>,
}

impl DirArg {
    fn identity(&self) -> PathBuf {
        self.identity
            .clone()
            .unwrap_or_else(|| NodeDir(self.dir.clone()).identity())
    }
}

/// Flags that override config.toml and SHOAL_NODE_* variables.
#[derive(Debug, Args)]
struct Settings {
    /// Disk space to offer, e.g. 500GB, 2TiB, 10MB.
    #[arg(long, value_name = "SIZE")]
    allocate: Option<ByteSize>,
    /// gRPC listen address.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Address others dial when it differs from --listen.
    #[arg(long, value_name = "HOST:PORT")]
    external_address: Option<String>,
    /// HTTP address for /metrics, /api/status and the dashboard.
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// DHT node to join through, pinned by its node id (repeatable).
    #[arg(long, value_name = "NODEID@HOST:PORT")]
    bootstrap: Vec<String>,
    /// Proof-of-work bits required of node ids.
    #[arg(long, value_name = "N")]
    difficulty: Option<u32>,
    /// Most concurrent requests per peer IP.
    #[arg(long, value_name = "N")]
    max_streams_per_peer: Option<usize>,
    /// Abort uploads silent for this long (ms).
    #[arg(long, value_name = "MS")]
    stall_timeout_ms: Option<u64>,
    /// Cut uploads slower than this on average once the grace is over (bytes/s; 0: off).
    #[arg(long, value_name = "BYTES")]
    min_upload_rate: Option<u64>,
    /// How long an upload may go at any rate before --min-upload-rate applies (ms).
    #[arg(long, value_name = "MS")]
    upload_grace_ms: Option<u64>,
    /// How often to remove expired pieces (ms).
    #[arg(long, value_name = "MS")]
    expiry_interval_ms: Option<u64>,
    /// Refuse leases ending later than this from now (ms).
    #[arg(long, value_name = "MS")]
    max_lease_ms: Option<u64>,
    /// Write pieces with O_DIRECT (true/false).
    #[arg(long, value_name = "BOOL")]
    direct_io: Option<bool>,
    /// Most bytes one owner key may store on this node, e.g. 50GB (default: no limit
    /// beyond the allocation).
    #[arg(long, value_name = "SIZE")]
    max_bytes_per_owner: Option<ByteSize>,
    /// The network lives on one machine or LAN: allow loopback and private addresses
    /// (devnet, tests). Without it every address must be globally routable.
    #[arg(long)]
    local_network: bool,
}

impl From<Settings> for Overrides {
    fn from(s: Settings) -> Self {
        Overrides {
            listen: s.listen,
            external_address: s.external_address,
            http: s.http,
            allocate: s.allocate,
            bootstrap: (!s.bootstrap.is_empty()).then_some(s.bootstrap),
            difficulty: s.difficulty,
            max_streams_per_peer: s.max_streams_per_peer,
            stall_timeout_ms: s.stall_timeout_ms,
            min_upload_rate: s.min_upload_rate,
            upload_grace_ms: s.upload_grace_ms,
            expiry_interval_ms: s.expiry_interval_ms,
            max_lease_ms: s.max_lease_ms,
            direct_io: s.direct_io,
            local_network: s.local_network.then_some(true),
            max_bytes_per_owner: s.max_bytes_per_owner,
        }
    }
}

fn env_overrides() -> anyhow::Result<Overrides> {
    Ok(Overrides::from_env(std::env::vars())?)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Setup {
            dir,
            settings,
            force,
        } => setup(&dir.dir, &dir.identity(), settings.into(), force),
        Command::Run { dir, settings } => run(&dir.dir, &dir.identity(), settings.into()),
        Command::Info { dir, json } => info(&dir.dir, &dir.identity(), json),
    }
}

fn setup(dir: &Path, key: &Path, flags: Overrides, force: bool) -> anyhow::Result<()> {
    let config = config::resolve(None, env_overrides()?, flags)?;
    storage_node::setup::check_can_setup_at(dir, key, force)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!(
        "generating an identity with {} bits of proof of work on {threads} threads...",
        config.difficulty
    );
    let mut last = Instant::now();
    let identity = storage_node::setup::setup_at(dir, key, &config, force, threads, |p| {
        if last.elapsed() >= Duration::from_secs(2) {
            last = Instant::now();
            eprintln!(
                "  {} attempts in {:.0?} (expected about {})",
                p.attempts, p.elapsed, p.expected
            );
        }
        ControlFlow::Continue(())
    })
    .with_context(|| format!("setup of {} failed", dir.display()))?;
    let d = NodeDir(dir.to_owned());
    println!("node id     {}", identity.node_id());
    println!("identity    {}", key.display());
    println!("config      {}", d.config().display());
    println!(
        "allocated   {} ({})",
        config.allocate,
        config.allocate.human()
    );
    println!("next: storage-node run --dir {}", dir.display());
    Ok(())
}

fn run(dir: &Path, key: &Path, flags: Overrides) -> anyhow::Result<()> {
    let config = config::load(dir, env_overrides()?, flags)?;
    let d = NodeDir(dir.to_owned());
    let identity = Identity::load(key)
        .with_context(|| format!("cannot load the identity of {}", dir.display()))?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let served = runtime.block_on(async {
        let node = storage_node::start(&config, identity, &d.storage())
            .await
            .context("cannot start the node")?;
        // One machine-readable line for scripts and tests.
        println!(
            "ready node_id={} grpc={} http={}",
            node.node_id(),
            node.grpc_addr(),
            node.http_addr()
        );
        let run_file = RunFile {
            pid: std::process::id(),
            grpc: node.grpc_addr(),
            http: node.http_addr(),
        };
        if let Err(e) = run_file.write(dir) {
            tracing::warn!(error = %e, "cannot write {}", RUN_FILE);
        }
        let stop = node.stop_token();
        tokio::spawn(async move {
            wait_for_signal().await;
            stop.cancel();
            // Whatever the shutdown waits for (a stuck disk, a DB call that never
            // returns), the process ends within SHUTDOWN_DEADLINE of the signal.
            std::thread::spawn(|| {
                std::thread::sleep(SHUTDOWN_DEADLINE);
                eprintln!(
                    "the shutdown did not finish within {} s: exiting without it (committed pieces are durable; startup repairs the rest)",
                    SHUTDOWN_DEADLINE.as_secs()
                );
                std::process::exit(1);
            });
            // A second signal while shutting down: stop at once.
            wait_for_signal().await;
            eprintln!("second signal: exiting without a clean shutdown");
            std::process::exit(130);
        });
        let stopped = node.wait().await;
        RunFile::remove(dir);
        stopped.context("shutdown was not clean")?;
        Ok::<_, anyhow::Error>(())
    });
    // Blocking tasks still running (a DB call that never returns) do not hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(2));
    served
}

/// How long `run` waits for a clean shutdown after SIGTERM or SIGINT before it exits
/// anyway (a supervisor's usual grace period is 30 s).
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(25);

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn info(dir: &Path, key: &Path, json: bool) -> anyhow::Result<()> {
    let config = config::load(dir, env_overrides()?, Overrides::default())?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let report = runtime.block_on(storage_node::info::gather_at(dir, key, &config))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    if report.allocated_bytes == 0 {
        bail!("the node has no allocation");
    }
    let pct = report.used_bytes as f64 * 100.0 / report.allocated_bytes as f64;
    println!("node id     {}", report.node_id);
    println!("running     {}", if report.running { "yes" } else { "no" });
    println!("listen      {}", report.listen);
    if let Some(a) = &report.external_address {
        println!("external    {a}");
    }
    println!(
        "http        {} (dashboard /, metrics /metrics)",
        report.http
    );
    println!("allocated   {}", ByteSize(report.allocated_bytes).human());
    println!(
        "used        {} ({pct:.1}%)",
        ByteSize(report.used_bytes).human()
    );
    println!("free        {}", ByteSize(report.free_bytes).human());
    println!("pieces      {}", report.pieces);
    println!(
        "owners      {} (limit per owner: {})",
        report.owners,
        report
            .max_bytes_per_owner
            .map_or("none".into(), |b| ByteSize(b).human())
    );
    for o in &report.top_owners {
        println!(
            "  {} (metrics label {})  {} in {} pieces",
            o.owner,
            o.label,
            ByteSize(o.bytes).human(),
            o.pieces
        );
    }
    Ok(())
}
