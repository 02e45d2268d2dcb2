//! Command-line flags and what each command does, on top of the `uplink` library.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use shoal_proto::tls::PinnedPeer;
use shoal_proto::{Identity, NodeId};
use uplink::access::{Access, RootSecret};
use uplink::catalog::{Catalog, Listing};
use uplink::config::{CachedNodes, ConfiguredNodes, Paths, parse_node};
use uplink::discovery::DhtNodes;
use uplink::grpc::GrpcPieceStore;
use uplink::store::NodeSource;
use uplink::{PutOptions, Scheme, Uplink};

#[derive(Debug, Parser)]
#[command(
    name = "uplink",
    version,
    about = "Store and fetch data on a Shoal network",
    after_help = crate::maintain::EXIT_STATUSES
)]
pub struct Args {
    /// Directory holding the config, the access grant and the catalog
    /// (default: the user's config and data dirs).
    #[arg(long, env = "SHOAL_CONFIG_DIR", global = true)]
    config_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, import or inspect the access grant.
    #[command(subcommand)]
    Access(AccessCommand),
    /// Make a bucket: `uplink mb shoal://BUCKET`.
    Mb { bucket: String },
    /// Remove a bucket.
    Rb {
        bucket: String,
        /// Delete the bucket's objects too.
        #[arg(long)]
        force: bool,
    },
    /// List buckets, or the objects of `shoal://BUCKET[/PREFIX]`.
    Ls {
        location: Option<String>,
        /// List every key under the prefix instead of folding at `/`.
        #[arg(short, long)]
        recursive: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Copy files up or objects down; `-` is stdin or stdout.
    Cp(CpArgs),
    /// Remove an object, or with -r every object under a prefix.
    Rm {
        location: String,
        #[arg(short, long)]
        recursive: bool,
    },
    /// Move (rename) an object; its pieces stay where they are.
    Mv { from: String, to: String },
    /// The catalog in the network.
    #[command(subcommand)]
    Catalog(CatalogCommand),
    #[command(flatten)]
    Maintain(crate::maintain::MaintainCommand),
    /// Serve the S3 API for this access (aws CLI, rclone, restic, boto3 ...) until
    /// SIGINT or SIGTERM. Without --access-key/--secret-key, credentials derived from the
    /// access grant are printed at start.
    Gateway(GatewayArgs),
}

#[derive(Debug, clap::Args)]
struct GatewayArgs {
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:7780")]
    listen: std::net::SocketAddr,
    /// Access key id clients must sign with (default: derived from the grant).
    #[arg(long, env = "SHOAL_GATEWAY_ACCESS_KEY", requires = "secret_key")]
    access_key: Option<String>,
    /// Secret key clients must sign with (default: derived from the grant).
    #[arg(
        long,
        env = "SHOAL_GATEWAY_SECRET_KEY",
        requires = "access_key",
        hide_env_values = true
    )]
    secret_key: Option<String>,
    /// Region clients sign for.
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// Domain for virtual-host-style requests (BUCKET.DOMAIN); repeatable.
    #[arg(long = "domain", default_value = "localhost")]
    domains: Vec<String>,
    /// Multipart uploads neither completed nor aborted after this long are aborted
    /// and their pieces deleted (e.g. 7d, 12h).
    #[arg(long, default_value = "7d")]
    multipart_max_age: String,
}

#[derive(Debug, Subcommand)]
enum CatalogCommand {
    /// This writer's id, changes not yet published, the last snapshot, and every writer
    /// known with the sequence number merged here.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Pull what other writers published and publish what is queued here.
    Sync,
    /// The last resort when the DHT has lost this access's catalog records (every
    /// command then finds no catalog, or fails on a missing head record): list this
    /// owner's pieces on every node, find the catalog's own among them (their tags are
    /// sealed with the grant), merge every snapshot and delta found into this config
    /// dir's catalog, and publish each writer's head record and the writers record again.
    Rebuild {
        /// The report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum AccessCommand {
    /// Make a new root secret (random, or from a passphrase) and print its grant.
    Create {
        /// Read a passphrase from the first line of stdin instead of a random secret
        /// (a random one is the default and the strongest). Needs --name.
        #[arg(long, requires = "name")]
        passphrase_stdin: bool,
        /// Your name for the passphrase (e.g. your e-mail address), the same every time:
        /// it salts the passphrase, so one guess cannot test every user at once.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Bootstrap peer to put into the grant, pinned by its node id (repeatable).
        #[arg(long = "bootstrap", value_name = "NODEID@HOST:PORT")]
        bootstrap: Vec<String>,
        /// Replace an existing access.
        #[arg(long)]
        force: bool,
    },
    /// Use an access grant made elsewhere.
    Import {
        grant: String,
        #[arg(long)]
        force: bool,
        /// A live node to join the network through when none of the grant's bootstrap
        /// entries answers any more (repeatable). Remembered with the nodes this config
        /// dir has verified.
        #[arg(long = "bootstrap", value_name = "NODEID@HOST:PORT")]
        bootstrap: Vec<String>,
    },
    /// Show what the current access is (never its secret).
    Inspect,
}

#[derive(Debug, clap::Args)]
struct CpArgs {
    src: String,
    dst: String,
    /// Copy a directory tree (or every object under a prefix).
    #[arg(short, long)]
    recursive: bool,
    /// Show progress bars even when stderr is not a terminal.
    #[arg(long, overrides_with = "no_progress")]
    progress: bool,
    /// Never show progress bars.
    #[arg(long)]
    no_progress: bool,
    /// Redundancy scheme K/REPAIR/SUCCESS/TOTAL for uploads.
    #[arg(long = "rs", value_name = "K/R/S/T")]
    scheme: Option<Scheme>,
    /// Files transferred at once with -r (default from config, else 4).
    #[arg(long, value_name = "N")]
    parallelism: Option<usize>,
    /// Download only bytes START through END (inclusive; END may be empty for "to the end").
    #[arg(long, value_name = "START-END")]
    range: Option<String>,
    /// Let uploaded objects expire after this long (e.g. 30s, 90m, 12h, 7d).
    #[arg(long, value_name = "DURATION")]
    expires: Option<String>,
}

/// `shoal://bucket/key` split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Location {
    pub(crate) bucket: String,
    pub(crate) key: String,
}

fn parse_location(s: &str) -> Option<Location> {
    let rest = s.strip_prefix("shoal://")?;
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    Some(Location {
        bucket: bucket.to_string(),
        key: key.to_string(),
    })
}

pub(crate) fn require_location(s: &str) -> Result<Location> {
    parse_location(s).ok_or_else(|| anyhow!("`{s}` is not a shoal://BUCKET[/KEY] location"))
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .with_context(|| format!("`{s}` is not a duration like 7d or 12h"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        "w" => n * 7 * 86_400,
        other => bail!("unknown duration unit `{other}` in `{s}` (use s, m, h, d or w)"),
    };
    Ok(Duration::from_secs(secs))
}

/// `START-END` (inclusive) → `[start, end)`; `END` empty = to `size`.
fn parse_range(s: &str, size: u64) -> Result<(u64, u64)> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| anyhow!("range `{s}` is not START-END"))?;
    let start: u64 = a
        .trim()
        .parse()
        .with_context(|| format!("bad range start in `{s}`"))?;
    let end = if b.trim().is_empty() {
        size
    } else {
        let e: u64 = b
            .trim()
            .parse()
            .with_context(|| format!("bad range end in `{s}`"))?;
        e.saturating_add(1).min(size)
    };
    if start > end {
        bail!("range `{s}` is empty or outside the object of {size} bytes");
    }
    Ok((start, end))
}

/// Resolves pinned `NODEID@HOST:PORT` bootstrap peers; an unpinned or malformed one is
/// an error, an unresolvable one is reported and skipped.
async fn resolve_peers(peers: &[String]) -> Result<Vec<(NodeId, std::net::SocketAddr)>> {
    let mut out = Vec::new();
    for p in peers {
        let pinned: PinnedPeer = p
            .parse()
            .with_context(|| "the access grant has a bootstrap peer without a node id; make a new grant with `uplink access create --bootstrap NODEID@HOST:PORT`")?;
        match pinned.resolve().await {
            Ok(addrs) => out.extend(addrs),
            Err(e) => tracing::warn!(peer = %p, error = %e, "cannot resolve bootstrap peer"),
        }
    }
    Ok(out)
}

pub(crate) struct Env {
    pub(crate) uplink: Uplink,
    parallelism: usize,
}

/// Tells the user which writers' changes a pull could not read, and what that means.
fn warn_unavailable(pulled: &uplink::sync::PullReport) {
    for (w, why) in &pulled.unavailable {
        eprintln!(
            "warning: the catalog changes of writer {w} cannot be read now ({why}); everything else is merged. Objects only that writer stored or changed may be missing or outdated here until its records come back (`uplink catalog status` lists it)."
        );
    }
}

impl Env {
    /// Merges what other writers published; every command does this first. Writers
    /// whose changes cannot be read are named, and the command goes on.
    async fn pull(&self) -> Result<()> {
        let pulled = self.uplink.pull().await.context(
            "cannot pull the catalog from the network (nothing was changed here; retry when the network is reachable)",
        )?;
        warn_unavailable(&pulled);
        Ok(())
    }

    /// For a "not found": which writers' changes could not be read (so the object may
    /// be among them). Empty when every writer was read.
    pub(crate) fn unavailable_note(&self) -> String {
        match self.uplink.catalog_status() {
            Ok(s) if !s.unavailable.is_empty() => format!(
                " (it may be among the changes of writer {} that cannot be read now: {})",
                s.unavailable
                    .keys()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                s.unavailable
                    .values()
                    .next()
                    .map_or("", |u| u.reason.as_str())
            ),
            _ => String::new(),
        }
    }

    /// The durability point: publishes this command's changes (one publish, however
    /// many objects it touched) before the command may exit 0.
    pub(crate) async fn publish(&self) -> Result<()> {
        if self.uplink.catalog().pending_count() == 0 {
            self.uplink.catalog().flush()?;
            return Ok(());
        }
        self.uplink.flush().await.context(
            "the changes are saved on this machine but not yet in the network; run `uplink catalog sync` to publish them",
        )?;
        Ok(())
    }
}

async fn open(paths: Paths) -> Result<Env> {
    open_with(paths, Vec::new()).await
}

/// [`open`], joining the DHT through `extra` peers too (after the grant's).
async fn open_with(paths: Paths, extra: Vec<(NodeId, std::net::SocketAddr)>) -> Result<Env> {
    let grant = paths.load_grant()?;
    let access = Access::from_grant(&grant).context("the saved access grant is unreadable")?;
    let file = paths.load_config()?;
    let config = file.uplink_config(&paths.config_file())?;
    let owner = access.owner().node_id().to_hex();
    let catalog_dir = paths.catalog_dir(&owner);
    let writer = paths.writer_id()?;
    let catalog = Catalog::open(&catalog_dir, writer)
        .with_context(|| format!("cannot open the catalog at {}", catalog_dir.display()))?;
    let mut configured = Vec::new();
    for n in &file.nodes {
        configured.push(
            parse_node(n, file.address_scope())
                .map_err(|e| anyhow!("{}: {e}", paths.config_file().display()))?,
        );
    }
    configured.sort();
    configured.dedup();
    // The DHT is joined through the grant's bootstrap peers (or, in a closed setup whose
    // grant names none, through the configured nodes). It finds nodes for new pieces
    // unless config.toml fixes a `nodes` list, and it holds the catalog's records.
    // Then through the nodes given on the command line and those this config dir has
    // verified before, newest first: any node that answers is a way in.
    let mut bootstrap = resolve_peers(access.bootstrap()).await?;
    if bootstrap.is_empty() {
        bootstrap = configured.clone();
    }
    bootstrap.extend(extra);
    let bootstrap = uplink::peers::bootstrap_list(&bootstrap, &uplink::peers::load(&catalog));
    let identity = Arc::new(Identity::from_seed(*access.owner().seed()));
    let difficulty = file
        .difficulty
        .or(access.difficulty())
        .unwrap_or(shoal_proto::DEFAULT_DIFFICULTY);
    let dht = Arc::new(
        DhtNodes::new(identity, bootstrap, difficulty, file.address_scope())
            .remember_peers_in(catalog.clone()),
    );
    let network = format!("{:?} difficulty {difficulty}", access.bootstrap());
    let nodes: Arc<dyn NodeSource> = if configured.is_empty() {
        Arc::new(
            CachedNodes::new(dht.clone(), Duration::from_secs(60))
                .persisted_in(paths.node_cache_file(), network),
        )
    } else {
        Arc::new(CachedNodes::new(
            ConfiguredNodes::new(&configured),
            Duration::from_secs(60),
        ))
    };
    let store = Arc::new(GrpcPieceStore::default());
    let uplink = if file.network_catalog.unwrap_or(true) {
        Uplink::with_network_catalog(access, store, nodes, catalog, config, dht)?
    } else {
        Uplink::new(access, store, nodes, catalog, config)?
    };
    Ok(Env {
        uplink,
        parallelism: file.parallelism.unwrap_or(4).max(1),
    })
}

/// Opens the access and pulls the network's changes: the start of every command.
pub(crate) async fn open_pulled(paths: Paths) -> Result<Env> {
    let env = open(paths).await?;
    env.pull().await?;
    Ok(env)
}

/// A bucket or object that does not exist here may exist in the changes of a writer
/// that cannot be read now: says so (with why) when that is the case.
fn explain_missing(env: &Env, r: Result<()>) -> Result<()> {
    let Err(e) = r else {
        return Ok(());
    };
    let missing = e.chain().any(|c| {
        matches!(
            c.downcast_ref::<uplink::Error>(),
            Some(uplink::Error::NoSuchObject { .. } | uplink::Error::NoSuchBucket(_))
        )
    });
    let note = env.unavailable_note();
    if missing && !note.is_empty() {
        return Err(e.context(format!("not found in the catalog merged here{note}")));
    }
    Err(e)
}

pub async fn run(args: Args) -> Result<()> {
    let paths = Paths::resolve(args.config_dir)?;
    match args.command {
        Command::Access(cmd) => access(paths, cmd).await,
        Command::Catalog(cmd) => catalog(paths, cmd).await,
        Command::Maintain(cmd) => crate::maintain::run(paths, cmd).await,
        Command::Gateway(args) => gateway(paths, args).await,
        Command::Mb { bucket } => {
            let env = open_pulled(paths).await?;
            let loc = require_location(&bucket)?;
            env.uplink
                .create_bucket(&loc.bucket)
                .with_context(|| format!("cannot make bucket {bucket}"))?;
            env.publish().await?;
            println!("Bucket {} created", loc.bucket);
            Ok(())
        }
        Command::Rb { bucket, force } => {
            let env = open_pulled(paths).await?;
            let loc = require_location(&bucket)?;
            let report = env
                .uplink
                .remove_bucket(&loc.bucket, force)
                .await
                .with_context(|| format!("cannot remove bucket {bucket}"))?;
            env.publish().await?;
            if report.pieces_failed > 0 {
                eprintln!(
                    "warning: {} pieces could not be deleted now; their nodes drop them when the lease ends",
                    report.pieces_failed
                );
            }
            println!("Bucket {} removed", loc.bucket);
            Ok(())
        }
        Command::Ls {
            location,
            recursive,
            json,
        } => {
            let env = open_pulled(paths).await?;
            explain_missing(&env, ls(&env, location, recursive, json))
        }
        Command::Cp(cp_args) => {
            let env = open_pulled(paths).await?;
            explain_missing(&env, cp(&env, cp_args).await)
        }
        Command::Rm {
            location,
            recursive,
        } => {
            let env = open_pulled(paths).await?;
            explain_missing(&env, rm(&env, &location, recursive).await)
        }
        Command::Mv { from, to } => {
            let env = open_pulled(paths).await?;
            let (a, b) = (require_location(&from)?, require_location(&to)?);
            let to_key = if b.key.is_empty() || b.key.ends_with('/') {
                format!("{}{}", b.key, a.key.rsplit('/').next().unwrap_or(&a.key))
            } else {
                b.key.clone()
            };
            env.uplink
                .rename(&a.bucket, &a.key, &b.bucket, &to_key)
                .with_context(|| format!("cannot move {from} to {to}"))?;
            env.publish().await?;
            Ok(())
        }
    }
}

async fn gateway(paths: Paths, args: GatewayArgs) -> Result<()> {
    let env = open_pulled(paths).await?;
    let (access_key, secret_key) = match (args.access_key, args.secret_key) {
        (Some(a), Some(s)) => (a, s),
        _ => uplink::gateway::derived_credentials(env.uplink.access().root().as_bytes()),
    };
    if access_key.trim().is_empty() || secret_key.trim().is_empty() {
        bail!("--access-key and --secret-key must not be empty");
    }
    let mut config = uplink::gateway::GatewayConfig::new(access_key.clone(), secret_key.clone());
    config.region = args.region.clone();
    config.domains = args.domains;
    config.multipart_max_age = parse_duration(&args.multipart_max_age)?;
    // Requests in flight get 10 s after a shutdown signal, the last publish the rest of
    // EXIT_DEADLINE.
    config.shutdown_grace = Duration::from_secs(10);
    let gateway = uplink::gateway::Gateway::bind(env.uplink.clone(), args.listen, config)
        .await
        .context("cannot start the S3 gateway")?;
    let addr = gateway.local_addr()?;
    println!("S3 gateway for this access on http://{addr}");
    println!("  access key: {access_key}");
    println!("  secret key: {secret_key}");
    println!("  region:     {}", args.region);
    println!(
        "  try:        AWS_ACCESS_KEY_ID={access_key} AWS_SECRET_ACCESS_KEY=... aws --endpoint-url http://{addr} s3 ls"
    );
    println!(
        "  metrics:    http://{addr}{}",
        uplink::gateway::METRICS_PATH
    );
    use std::io::Write;
    std::io::stdout().flush()?;
    gateway
        .run(shutdown_signal())
        .await
        .context("the gateway stopped, but the catalog's last changes are not in the network yet; run `uplink catalog sync`")?;
    eprintln!("gateway stopped; every change is in the network");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
    exit_after(EXIT_DEADLINE);
}

/// How long the gateway may take, from the shutdown signal, to finish its requests and
/// publish: then the process exits whatever it is doing (a hung call never keeps it).
pub(crate) const EXIT_DEADLINE: Duration = Duration::from_secs(25);

/// Exits the process `after` from now, from a plain thread (so that neither a busy
/// runtime nor a stuck blocking call can keep it alive). The catalog loses nothing: a
/// change not yet published stays queued in the database for the next command.
pub(crate) fn exit_after(after: Duration) {
    let spawned = std::thread::Builder::new()
        .name("exit-deadline".into())
        .spawn(move || {
            std::thread::sleep(after);
            eprintln!(
                "error: the shutdown did not finish within {} s of the signal; exiting now. \
                 Changes not yet in the network stay queued on this machine: run `uplink catalog sync`.",
                after.as_secs()
            );
            std::process::exit(1);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the exit deadline thread");
    }
}

async fn catalog(paths: Paths, cmd: CatalogCommand) -> Result<()> {
    match cmd {
        CatalogCommand::Status { json } => {
            let env = open(paths).await?;
            let status = env.uplink.catalog_status()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
                return Ok(());
            }
            println!("writer:        {} (this config dir)", status.writer);
            println!("unpublished:   {} changes", status.pending);
            println!("published seq: {}", status.published_seq);
            match &status.last_snapshot {
                Some(s) => println!(
                    "last snapshot: by writer {} at {}, {} entries",
                    s.taken_by,
                    format_time(s.taken_at_ms),
                    s.entries
                ),
                None => println!("last snapshot: none yet"),
            }
            println!("writers (sequence number merged here):");
            for (w, seq) in &status.writers {
                let me = if *w == status.writer {
                    "  (this one)"
                } else {
                    ""
                };
                let missing = if status.unavailable.contains_key(w) {
                    "  (UNAVAILABLE, see below)"
                } else {
                    ""
                };
                println!("  {w}  {seq}{me}{missing}");
            }
            if !status.unavailable.is_empty() {
                println!("writers whose changes the last pull could not read:");
                for (w, why) in &status.unavailable {
                    println!("  {w}: {why}");
                }
            }
            Ok(())
        }
        CatalogCommand::Rebuild { json } => {
            let env = open(paths).await?;
            let r = env
                .uplink
                .rebuild_catalog()
                .await
                .context("cannot rebuild the catalog from the nodes")?;
            let published = env.uplink.flush().await;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print_rebuild(&r);
            }
            published.context("the catalog was rebuilt here, but publishing it failed")?;
            if r.writers.is_empty() {
                bail!(
                    "no catalog piece of this access was found on the {} nodes that answered ({} asked): either nothing was ever stored with this grant, or its catalog's pieces are gone (their leases ended)",
                    r.nodes_answered,
                    r.nodes_asked
                );
            }
            Ok(())
        }
        CatalogCommand::Sync => {
            let env = open(paths).await?;
            let pulled = env.uplink.pull().await.context("cannot pull the catalog")?;
            warn_unavailable(&pulled);
            let published = env
                .uplink
                .flush()
                .await
                .context("cannot publish the catalog's changes")?;
            println!(
                "pulled {} deltas and {} snapshots from {} writers ({} changes merged); published {}",
                pulled.deltas,
                pulled.snapshots,
                pulled.writers,
                pulled.changes_applied,
                match published.seq {
                    Some(seq) => format!("{} changes as delta {seq}", published.changes),
                    None => "nothing (no changes queued)".to_string(),
                }
            );
            Ok(())
        }
    }
}

fn print_rebuild(r: &uplink::rebuild::RebuildReport) {
    println!(
        "nodes: {} answered of {} asked; {} pieces of this access listed, {} of them the catalog's ({} skipped)",
        r.nodes_answered, r.nodes_asked, r.pieces_listed, r.catalog_pieces, r.pieces_skipped
    );
    println!(
        "blobs: {} found, {} merged ({} changes applied)",
        r.blobs_found, r.blobs_merged, r.changes_applied
    );
    println!("writers:");
    for (w, f) in &r.writers {
        let snapshot = f.snapshot.map_or("no snapshot".to_string(), |s| {
            format!("snapshot at delta {s}")
        });
        let head = match f.head {
            Some(h) if f.head_republished => format!("head delta {h} republished"),
            Some(h) => format!("head delta {h} NOT republished"),
            None => "no delta found".to_string(),
        };
        println!(
            "  {w}  {snapshot}, {} deltas merged, {head}",
            f.deltas.len()
        );
    }
    println!(
        "writers record: {}",
        if r.writers_republished {
            "republished"
        } else {
            "NOT republished"
        }
    );
    println!("catalog: {} buckets, {} objects", r.buckets, r.objects);
    if r.unrecovered.is_empty() {
        println!("nothing found was left unrecovered");
    } else {
        println!("not recovered:");
        for u in &r.unrecovered {
            println!("  {}: {}", u.what, u.reason);
        }
    }
}

async fn access(paths: Paths, cmd: AccessCommand) -> Result<()> {
    match cmd {
        AccessCommand::Create {
            passphrase_stdin,
            name,
            bootstrap,
            force,
        } => {
            if !force && paths.load_grant().is_ok() {
                bail!(
                    "an access already exists in {}; use --force to replace it (its data becomes unreadable unless you kept the grant)",
                    paths.config_dir.display()
                );
            }
            let root = if passphrase_stdin {
                let mut line = String::new();
                std::io::stdin()
                    .read_to_string(&mut line)
                    .context("cannot read the passphrase from stdin")?;
                let passphrase = line.lines().next().unwrap_or("").to_string();
                let name = name.unwrap_or_default();
                uplink::access::check_passphrase_strength(&passphrase, &name)?;
                RootSecret::from_passphrase(passphrase.as_bytes(), &name)?
            } else {
                RootSecret::random()
            };
            for b in &bootstrap {
                b.parse::<PinnedPeer>()
                    .with_context(|| format!("bootstrap peer `{b}`"))?;
            }
            let mut bootstrap = bootstrap;
            let found = diverse_live_nodes(&paths, &bootstrap).await;
            if !found.is_empty() {
                eprintln!(
                    "Added {} live nodes of other subnets to the grant's bootstrap entries: any of them is a way in.",
                    found.len()
                );
            }
            bootstrap.extend(found);
            let access = Access::new(root, bootstrap);
            let grant = access.to_grant()?;
            paths.save_grant(&grant)?;
            eprintln!(
                "Access saved in {}. Keep this grant safe: it is the only key to your data.",
                paths.access_file().display()
            );
            println!("{grant}");
            Ok(())
        }
        AccessCommand::Import {
            grant,
            force,
            bootstrap,
        } => {
            let access = Access::from_grant(&grant).context("cannot import the access grant")?;
            let mut extra = Vec::new();
            for b in &bootstrap {
                let pinned: PinnedPeer = b.parse().with_context(|| {
                    format!("bootstrap peer `{b}` (give it as NODEID@HOST:PORT)")
                })?;
                extra.extend(
                    pinned
                        .resolve()
                        .await
                        .with_context(|| format!("cannot resolve bootstrap peer `{b}`"))?,
                );
            }
            if !force && paths.load_grant().is_ok_and(|g| g != grant.trim()) {
                bail!(
                    "another access already exists in {}; use --force to replace it",
                    paths.config_dir.display()
                );
            }
            paths.save_grant(&access.to_grant()?)?;
            println!("Access imported (owner {})", access.owner().node_id());
            // Recovery: rebuild the local catalog from what the network holds.
            let env = open_with(paths, extra.clone()).await?;
            if !extra.is_empty() {
                let now = shoal_proto::time::unix_ms();
                uplink::peers::remember(
                    env.uplink.catalog(),
                    extra.iter().map(|(id, address)| uplink::peers::KnownPeer {
                        id: id.0,
                        address: *address,
                        last_seen_ms: now,
                    }),
                )?;
            }
            let pulled = env.uplink.pull().await.context(
                "the grant is saved, but the catalog could not be recovered from the network; if none of the grant's bootstrap nodes is up any more, run the import again with `--bootstrap NODEID@HOST:PORT` naming any live node",
            )?;
            warn_unavailable(&pulled);
            if pulled.found_nothing() {
                // Not an empty backup: nothing at all answered for this grant.
                println!("No catalog was found in the network for this grant.");
                eprintln!(
                    "warning: no catalog was found in the network for this grant. If the grant is new and nothing was stored with it yet, this is expected: go on using it. If it was used before, the network has lost the catalog's records (for example every node restarted before they were kept on disk, or their leases ended): your objects' pieces may still be on the nodes. Run `uplink catalog rebuild` to recover the catalog from the nodes; until then this config dir shows no objects."
                );
                return Ok(());
            }
            let buckets = env.uplink.buckets()?;
            let mut objects = 0;
            for b in &buckets {
                objects += env.uplink.catalog().objects(&b.name, "")?.len();
            }
            println!(
                "Catalog: {} buckets, {objects} objects (from {} writers: {} deltas, {} snapshots)",
                buckets.len(),
                pulled.writers,
                pulled.deltas,
                pulled.snapshots
            );
            Ok(())
        }
        AccessCommand::Inspect => {
            let grant = paths.load_grant()?;
            let access =
                Access::from_grant(&grant).context("the saved access grant is unreadable")?;
            let file = paths.load_config()?;
            let owner = access.owner().node_id().to_hex();
            println!("owner public key: {}", access.owner().public_key().to_hex());
            println!("owner id:         {owner}");
            println!("bootstrap peers:  {}", access.bootstrap().join(", "));
            println!("configured nodes: {}", file.nodes.join(", "));
            println!("access file:      {}", paths.access_file().display());
            println!("catalog:          {}", paths.catalog_dir(&owner).display());
            Ok(())
        }
    }
}

/// Live nodes to add to a new grant: up to [`GRANT_EXTRA_PEERS`] on distinct subnets,
/// found through the DHT joined via `given`, so that the grant does not depend on one
/// node. Empty (with a warning) when the DHT cannot be joined: the grant then carries
/// only `given`.
async fn diverse_live_nodes(paths: &Paths, given: &[String]) -> Vec<String> {
    if given.is_empty() {
        return Vec::new();
    }
    let found = async {
        let file = paths.load_config()?;
        let peers = resolve_peers(given).await?;
        let skip: Vec<NodeId> = peers.iter().map(|(id, _)| *id).collect();
        let dht = DhtNodes::new(
            Arc::new(Identity::random()),
            peers,
            file.difficulty.unwrap_or(shoal_proto::DEFAULT_DIFFICULTY),
            file.address_scope(),
        );
        let sampled = tokio::time::timeout(
            Duration::from_secs(30),
            dht.sample(uplink::peers::MAX_KNOWN_PEERS),
        )
        .await;
        dht.shutdown().await;
        let candidates: Vec<(NodeId, std::net::SocketAddr)> = sampled
            .map_err(|_| anyhow!("no answer within 30 s"))?
            .map_err(|e| anyhow!("{e}"))?
            .iter()
            .map(|c| (c.id, c.address))
            .collect();
        Ok::<_, anyhow::Error>(
            uplink::peers::diverse(&candidates, &skip, GRANT_EXTRA_PEERS)
                .into_iter()
                .map(|(id, addr)| format!("{}@{addr}", id.to_hex()))
                .collect(),
        )
    };
    match found.await {
        Ok(v) => v,
        Err(e) => {
            eprintln!(
                "warning: could not reach the network to add more bootstrap entries ({e:#}); the grant names only the nodes given"
            );
            Vec::new()
        }
    }
}

/// Live nodes `access create` adds to a grant beside those given.
const GRANT_EXTRA_PEERS: usize = 8;

pub(crate) fn format_time(ms: u64) -> String {
    // Seconds since the epoch as UTC date and time, without a date library.
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02}:{s:02}")
}

fn ls(env: &Env, location: Option<String>, recursive: bool, json: bool) -> Result<()> {
    let Some(location) = location else {
        for b in env.uplink.buckets()? {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"kind": "bucket", "name": b.name, "created_ms": b.created_ms})
                );
            } else {
                println!("{}  {}", format_time(b.created_ms), b.name);
            }
        }
        return Ok(());
    };
    let loc = require_location(&location)?;
    let rows = env
        .uplink
        .list(&loc.bucket, &loc.key, recursive)
        .with_context(|| format!("cannot list {location}"))?;
    for row in rows {
        if json {
            println!("{}", serde_json::to_string(&row)?);
            continue;
        }
        match row {
            Listing::Object {
                key,
                size,
                modified_ms,
                ..
            } => {
                println!("{}  {size:>14}  {key}", format_time(modified_ms));
            }
            Listing::Prefix { prefix } => println!("{:>19}  {:>14}  {prefix}", "", "PRE"),
        }
    }
    Ok(())
}

fn progress_bar(args: &CpArgs, total: u64) -> ProgressBar {
    let show = !args.no_progress && (args.progress || std::io::stderr().is_terminal());
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{bar:40.cyan/blue} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
    ) {
        bar.set_style(style);
    }
    bar
}

/// One transfer of a `cp`.
#[derive(Debug)]
enum Transfer {
    Up { from: Option<PathBuf>, to: Location },
    Down { from: Location, to: Option<PathBuf> },
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read directory {}", dir.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot read directory {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let kind = e
            .file_type()
            .with_context(|| format!("cannot stat {}", path.display()))?;
        if kind.is_dir() {
            walk(&path, out)?;
        } else if kind.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

fn join_key(prefix: &str, rest: &str) -> String {
    if prefix.is_empty() || prefix.ends_with('/') {
        format!("{prefix}{rest}")
    } else {
        format!("{prefix}/{rest}")
    }
}

fn plan_cp(env: &Env, args: &CpArgs) -> Result<Vec<Transfer>> {
    let (src, dst) = (parse_location(&args.src), parse_location(&args.dst));
    match (src, dst) {
        (None, Some(to)) => {
            if args.src == "-" {
                if to.key.is_empty() || to.key.ends_with('/') {
                    bail!(
                        "uploading stdin needs a full object key, not `{}`",
                        args.dst
                    );
                }
                return Ok(vec![Transfer::Up { from: None, to }]);
            }
            let src = PathBuf::from(&args.src);
            if src.is_dir() {
                if !args.recursive {
                    bail!("{} is a directory; use -r to copy it", src.display());
                }
                let mut files = Vec::new();
                walk(&src, &mut files)?;
                return files
                    .into_iter()
                    .map(|f| {
                        let rel = f.strip_prefix(&src).unwrap_or(&f);
                        let rel = rel
                            .to_str()
                            .ok_or_else(|| anyhow!("{} is not valid UTF-8", f.display()))?
                            .to_string();
                        Ok(Transfer::Up {
                            from: Some(f),
                            to: Location {
                                bucket: to.bucket.clone(),
                                key: join_key(&to.key, &rel),
                            },
                        })
                    })
                    .collect();
            }
            let name = src
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| anyhow!("{} has no usable file name", src.display()))?;
            let key = if to.key.is_empty() || to.key.ends_with('/') {
                format!("{}{name}", to.key)
            } else {
                to.key.clone()
            };
            Ok(vec![Transfer::Up {
                from: Some(src),
                to: Location {
                    bucket: to.bucket,
                    key,
                },
            }])
        }
        (Some(from), None) => {
            if args.recursive {
                let rows = env.uplink.list(&from.bucket, &from.key, true)?;
                let base = PathBuf::from(&args.dst);
                let strip = if from.key.is_empty() || from.key.ends_with('/') {
                    from.key.clone()
                } else {
                    format!("{}/", from.key)
                };
                return rows
                    .into_iter()
                    .filter_map(|r| match r {
                        Listing::Object { key, .. } => Some(key),
                        Listing::Prefix { .. } => None,
                    })
                    .map(|key| {
                        let rel = key.strip_prefix(&strip).unwrap_or(&key).to_string();
                        if rel.split('/').any(|c| c == ".." || c == ".")
                            || rel.starts_with('/')
                            || rel.is_empty()
                        {
                            bail!("object key `{key}` cannot be a safe local path");
                        }
                        Ok(Transfer::Down {
                            from: Location {
                                bucket: from.bucket.clone(),
                                key: key.clone(),
                            },
                            to: Some(base.join(rel)),
                        })
                    })
                    .collect();
            }
            if from.key.is_empty() {
                bail!(
                    "`{}` names a bucket, not an object; use -r to copy everything in it",
                    args.src
                );
            }
            if args.dst == "-" {
                return Ok(vec![Transfer::Down { from, to: None }]);
            }
            let mut to = PathBuf::from(&args.dst);
            if to.is_dir() {
                to = to.join(from.key.rsplit('/').next().unwrap_or(&from.key));
            }
            Ok(vec![Transfer::Down { from, to: Some(to) }])
        }
        (Some(_), Some(_)) => bail!(
            "copying between two shoal:// locations is not supported yet; download and upload instead"
        ),
        (None, None) => bail!("one of SRC and DST must be a shoal:// location"),
    }
}

/// Longest `cp` waits after its transfers for the deletion of late long-tail pieces.
const LATE_PIECE_WAIT: Duration = Duration::from_secs(5);

/// The read buffer for a file of `size` bytes: 1 MiB, or the file and a byte (to see
/// its end) when smaller. The buffer is zeroed when made: a 1 MiB buffer for each file
/// of a `cp -r` of small files was a fifth of its CPU time (perf, 3,000 × 100 B).
fn read_buffer(size: Option<u64>) -> usize {
    const MAX: usize = 1 << 20;
    size.map_or(MAX, |s| {
        usize::try_from(s)
            .unwrap_or(MAX)
            .saturating_add(1)
            .clamp(8 << 10, MAX)
    })
}

async fn cp(env: &Env, args: CpArgs) -> Result<()> {
    let transfers = plan_cp(env, &args)?;
    let expires = args.expires.as_deref().map(parse_duration).transpose()?;
    let mut total = 0u64;
    for t in &transfers {
        total += match t {
            Transfer::Up { from: Some(p), .. } => {
                std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
            }
            Transfer::Up { from: None, .. } => 0,
            Transfer::Down { from, .. } => env
                .uplink
                .stat(&from.bucket, &from.key)
                .map(|e| e.size)
                .unwrap_or(0),
        };
    }
    let bar = progress_bar(&args, total);
    let progress: uplink::Progress = {
        let bar = bar.clone();
        Arc::new(move |n| bar.inc(n))
    };
    let parallelism = args.parallelism.unwrap_or(env.parallelism).max(1);
    let count = transfers.len();
    let results: Vec<Result<()>> = futures::stream::iter(transfers.into_iter().map(|t| {
        let progress = progress.clone();
        let args = &args;
        async move { transfer(env, args, t, expires, progress).await }
    }))
    .buffer_unordered(parallelism)
    .collect()
    .await;
    bar.finish_and_clear();
    // One publish for the whole copy, also when some transfers failed: what was stored
    // must be found again.
    let published = env.publish().await;
    // Let the reaper delete long-tail pieces whose receipts come late rather than leave
    // them to their lease; bounded, so a stalled node cannot hold the command up.
    env.uplink.settle(LATE_PIECE_WAIT).await;
    let failures: Vec<_> = results.into_iter().filter_map(|r| r.err()).collect();
    for f in &failures {
        eprintln!("error: {f:#}");
    }
    if !failures.is_empty() {
        bail!("{} of {count} transfers failed", failures.len());
    }
    published
}

async fn transfer(
    env: &Env,
    args: &CpArgs,
    t: Transfer,
    expires: Option<Duration>,
    progress: uplink::Progress,
) -> Result<()> {
    match t {
        Transfer::Up { from, to } => {
            let opts = PutOptions {
                size_hint: None,
                content_type: None,
                metadata: BTreeMap::new(),
                expires,
                scheme: args.scheme,
                progress: Some(progress),
            };
            let name = from
                .as_ref()
                .map_or("stdin".to_string(), |p| p.display().to_string());
            let target = format!("shoal://{}/{}", to.bucket, to.key);
            let report = match &from {
                Some(path) => {
                    let file = tokio::fs::File::open(path)
                        .await
                        .with_context(|| format!("cannot open {}", path.display()))?;
                    let size = file.metadata().await.ok().map(|m| m.len());
                    let opts = PutOptions {
                        size_hint: size,
                        ..opts
                    };
                    env.uplink
                        .put(
                            &to.bucket,
                            &to.key,
                            tokio::io::BufReader::with_capacity(read_buffer(size), file),
                            opts,
                        )
                        .await
                }
                None => {
                    env.uplink
                        .put(&to.bucket, &to.key, tokio::io::stdin(), opts)
                        .await
                }
            }
            .with_context(|| format!("cannot copy {name} to {target}"))?;
            if let Some(used) = report.used
                && used != report.requested
            {
                // Said once per scheme pair, not once per file of a recursive copy.
                static SAID: std::sync::Mutex<BTreeSet<(String, String)>> =
                    std::sync::Mutex::new(BTreeSet::new());
                let first = SAID
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert((report.requested.to_string(), used.to_string()));
                if first {
                    eprintln!(
                        "note: the network is too small for scheme {}; {target} was stored with {used}",
                        report.requested
                    );
                }
            }
            Ok(())
        }
        Transfer::Down { from, to } => {
            let source = format!("shoal://{}/{}", from.bucket, from.key);
            let range = match &args.range {
                Some(r) => {
                    let size = env
                        .uplink
                        .stat(&from.bucket, &from.key)
                        .with_context(|| format!("cannot read {source}"))?
                        .size;
                    Some(parse_range(r, size)?)
                }
                None => None,
            };
            match to {
                None => {
                    let mut out = tokio::io::stdout();
                    env.uplink
                        .get(&from.bucket, &from.key, range, &mut out, Some(progress))
                        .await
                        .with_context(|| format!("cannot copy {source} to stdout"))?;
                }
                Some(path) => {
                    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                        tokio::fs::create_dir_all(parent)
                            .await
                            .with_context(|| format!("cannot create {}", parent.display()))?;
                    }
                    // Write next to the target and rename, so a failed download never
                    // leaves a truncated file under the real name.
                    let tmp = path.with_file_name(format!(
                        ".{}.shoal-partial",
                        path.file_name()
                            .and_then(|n| n.to_str())
                            .unwrap_or("download")
                    ));
                    let file = tokio::fs::File::create(&tmp)
                        .await
                        .with_context(|| format!("cannot create {}", tmp.display()))?;
                    let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
                    let result = env
                        .uplink
                        .get(&from.bucket, &from.key, range, &mut out, Some(progress))
                        .await;
                    if let Err(e) = result {
                        let _ = tokio::fs::remove_file(&tmp).await;
                        return Err(e).with_context(|| {
                            format!("cannot copy {source} to {}", path.display())
                        });
                    }
                    tokio::fs::rename(&tmp, &path).await.with_context(|| {
                        format!("cannot move the download into {}", path.display())
                    })?;
                }
            }
            Ok(())
        }
    }
}

async fn rm(env: &Env, location: &str, recursive: bool) -> Result<()> {
    let loc = require_location(location)?;
    let keys: Vec<String> = if recursive {
        env.uplink
            .list(&loc.bucket, &loc.key, true)?
            .into_iter()
            .filter_map(|r| match r {
                Listing::Object { key, .. } => Some(key),
                Listing::Prefix { .. } => None,
            })
            .collect()
    } else {
        if loc.key.is_empty() {
            bail!("`{location}` names a bucket; use `uplink rb` or rm -r");
        }
        vec![loc.key.clone()]
    };
    let mut failed = 0;
    let mut result = Ok(());
    for key in keys {
        match env
            .uplink
            .delete(&loc.bucket, &key)
            .await
            .with_context(|| format!("cannot remove shoal://{}/{key}", loc.bucket))
        {
            Ok(r) => {
                failed += r.pieces_failed;
                println!("removed shoal://{}/{key}", loc.bucket);
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    // What was removed is published even when a later removal failed.
    env.publish().await?;
    result?;
    if failed > 0 {
        eprintln!(
            "warning: {failed} pieces could not be deleted now; their nodes drop them when the lease ends"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_file_gets_a_small_read_buffer() {
        assert_eq!(read_buffer(Some(100)), 8 << 10);
        assert_eq!(read_buffer(Some(64 << 10)), (64 << 10) + 1);
        assert_eq!(read_buffer(Some(5 << 30)), 1 << 20);
        assert_eq!(read_buffer(None), 1 << 20, "unknown size: the largest");
    }

    #[test]
    fn locations_ranges_and_durations_parse() {
        assert_eq!(
            parse_location("shoal://b/a/c"),
            Some(Location {
                bucket: "b".into(),
                key: "a/c".into()
            })
        );
        assert_eq!(
            parse_location("shoal://b"),
            Some(Location {
                bucket: "b".into(),
                key: "".into()
            })
        );
        assert_eq!(parse_location("/tmp/x"), None);
        assert_eq!(parse_range("0-9", 100).unwrap(), (0, 10));
        assert_eq!(parse_range("10-", 100).unwrap(), (10, 100));
        assert_eq!(parse_range("90-200", 100).unwrap(), (90, 100));
        assert!(parse_range("5-2", 100).is_err());
        assert!(parse_range("x", 100).is_err());
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("3y").is_err());
        assert_eq!(format_time(0), "1970-01-01 00:00:00");
        assert_eq!(format_time(1_700_000_000_000), "2023-11-14 22:13:20");
    }
}
