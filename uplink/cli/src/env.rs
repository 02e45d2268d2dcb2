//! The environment of a command: the access, the catalog, the network, an `Uplink`
//! over them (opened, and pulled, once per command).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use shoal_proto::tls::PinnedPeer;
use shoal_proto::{Identity, NodeId};
use uplink::Uplink;
use uplink::access::Access;
use uplink::catalog::Catalog;
use uplink::config::{CachedNodes, ConfiguredNodes, Paths, parse_node};
use uplink::discovery::DhtNodes;
use uplink::grpc::GrpcPieceStore;
use uplink::store::NodeSource;

/// Resolves pinned `NODEID@HOST:PORT` bootstrap peers; an unpinned or malformed one is
/// an error, an unresolvable one is reported and skipped.
pub(super) async fn resolve_peers(peers: &[String]) -> Result<Vec<(NodeId, std::net::SocketAddr)>> {
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
    pub(super) parallelism: usize,
    paths: Paths,
}

/// Tells the user which writers' changes a pull could not read, and what that means.
pub(super) fn warn_unavailable(pulled: &uplink::sync::PullReport) {
    for (w, why) in &pulled.unavailable {
        eprintln!(
            "warning: the catalog changes of writer {w} cannot be read now ({why}); everything else is merged. Objects only that writer stored or changed may be missing or outdated here until its records come back (`uplink catalog status` lists it)."
        );
    }
}

impl Env {
    /// Merges what other writers published; every command does this first. Writers
    /// whose changes cannot be read are named, and the command goes on.
    pub(super) async fn pull(&self) -> Result<()> {
        let pulled = self.uplink.pull().await.context(
            "cannot pull the catalog from the network (nothing was changed here; retry when the network is reachable)",
        )?;
        warn_unavailable(&pulled);
        self.moved_to(pulled.new_writer)
    }

    /// Keeps the config dir's `writer-id` file on the id the catalog uses, and tells the
    /// user when a pull or publish has just moved it (`new`): the network held this
    /// writer's log written by another copy of the config dir.
    fn moved_to(&self, new: Option<uplink::catalog::WriterId>) -> Result<()> {
        let current = self.uplink.catalog().writer();
        if let Some(new) = new {
            eprintln!(
                "warning: another copy of this config dir (a cloned machine or a restored backup) publishes the catalog under the same writer id; this one now writes as writer {new}, with every change it made published again. Nothing is lost; if the other copy is not wanted, stop it."
            );
        }
        if self.paths.writer_id()? != current {
            self.paths.set_writer_id(current)?;
        }
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
        let report = self.uplink.flush().await.context(
            "the changes are saved on this machine but not yet in the network; run `uplink catalog sync` to publish them",
        )?;
        self.moved_to(report.new_writer)
    }
}

pub(super) async fn open(paths: Paths) -> Result<Env> {
    open_with(paths, Vec::new()).await
}

/// [`open`], joining the DHT through `extra` peers too (after the grant's).
pub(super) async fn open_with(
    paths: Paths,
    extra: Vec<(NodeId, std::net::SocketAddr)>,
) -> Result<Env> {
    let grant = paths.load_grant()?;
    let access = Access::from_grant(&grant).context("the saved access grant is unreadable")?;
    let file = paths.load_config()?;
    let config = file.uplink_config(&paths.config_file())?;
    let owner = access.owner().node_id().to_hex();
    let catalog_dir = paths.catalog_dir(&owner);
    // The catalog keeps the id it uses (it may have moved since, see `Env::moved_to`).
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
    let env = Env {
        uplink,
        parallelism: file.parallelism.unwrap_or(4).max(1),
        paths,
    };
    // Another command may have moved this config dir to a new writer id.
    env.moved_to(None)?;
    Ok(env)
}

/// Opens the access and pulls the network's changes: the start of every command.
pub(crate) async fn open_pulled(paths: Paths) -> Result<Env> {
    let env = open(paths).await?;
    env.pull().await?;
    Ok(env)
}

/// A bucket or object that does not exist here may exist in the changes of a writer
/// that cannot be read now: says so (with why) when that is the case.
pub(super) fn explain_missing(env: &Env, r: Result<()>) -> Result<()> {
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
