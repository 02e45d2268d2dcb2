//! `uplink access ...`: create, import and inspect the access grant.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use crate::env::{open_with, resolve_peers, warn_unavailable};
use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;
use shoal_proto::tls::PinnedPeer;
use shoal_proto::{Identity, NodeId};
use uplink::access::{Access, RootSecret};
use uplink::config::Paths;
use uplink::discovery::DhtNodes;
use uplink::store::NodeSource;

#[derive(Debug, Subcommand)]
pub(super) enum AccessCommand {
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
    /// Use an access grant made elsewhere. Give it as `-` to read it from stdin, or
    /// with --grant-file: a grant on the command line is visible to every user of this
    /// machine (`/proc/*/cmdline`, `ps`) and stays in the shell's history.
    Import {
        /// The grant, or `-` to read it from stdin.
        #[arg(required_unless_present = "grant_file", conflicts_with = "grant_file")]
        grant: Option<String>,
        /// Read the grant from this file.
        #[arg(long, value_name = "PATH")]
        grant_file: Option<std::path::PathBuf>,
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

pub(super) async fn access(paths: Paths, cmd: AccessCommand) -> Result<()> {
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
            grant_file,
            force,
            bootstrap,
        } => {
            let grant = read_grant(grant, grant_file)?;
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

/// The grant as given: on the command line, `-` for stdin, or a file.
fn read_grant(grant: Option<String>, file: Option<std::path::PathBuf>) -> Result<String> {
    let text = match (grant, file) {
        (_, Some(path)) => std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the grant from {}", path.display()))?,
        (Some(g), None) if g == "-" => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut text)
                .context("cannot read the grant from stdin")?;
            text
        }
        (Some(g), None) => g,
        (None, None) => bail!("give the grant, `-` to read it from stdin, or --grant-file PATH"),
    };
    let grant = text.trim().to_string();
    if grant.is_empty() {
        bail!("the grant is empty");
    }
    Ok(grant)
}

/// Live nodes to add to a new grant: up to [`GRANT_EXTRA_PEERS`] on distinct subnets,
/// found through the DHT joined via `given`, so that the grant does not depend on one
/// node. Empty (with a warning) when the DHT cannot be joined: the grant then carries
/// only `given`.
pub(super) async fn diverse_live_nodes(paths: &Paths, given: &[String]) -> Vec<String> {
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
pub(super) const GRANT_EXTRA_PEERS: usize = 8;
