//! A running storage node: the store, the gRPC server, the HTTP server and the
//! background workers, started together and stopped through one shutdown path.
//!
//! Shutdown order: the HTTP server (public API) first, then the gRPC server (in-flight
//! uploads are aborted and their temp files removed), then the workers, then a final
//! flush of the metadata.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus::Registry;
use satellite_free_discovery::core::rate::RateConfig;
use satellite_free_discovery::{Dht, DhtConfig, DhtHandle, Mode, RecordFields};
use shoal_proto::time::unix_ms;
use shoal_proto::tls::{self, PinnedPeer};
use shoal_proto::{Identity, NodeId};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic::transport::server::{Router, TcpIncoming};
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::error::Error;
use crate::metrics::NodeMetrics;
use crate::net::{Killable, node_connection_limits};
use crate::service::{PieceStoreService, ServiceLimits};
pub use crate::state::NodeState;
use crate::store::{PieceStore, Recovery, StoreOptions};

/// How long shutdown lets gRPC streams finish before cutting their connections.
const RPC_DRAIN: Duration = Duration::from_secs(5);

/// Pieces the expiry worker removes per round; the rest waits for the next round.
const EXPIRY_BATCH: usize = 10_000;
/// A metadata call running this long is logged as stalled (every second until it ends).
const DB_STALL_WARN: Duration = Duration::from_secs(5);

/// Builds the node's one gRPC server. Every service the node offers is added here, so
/// they share one port.
pub fn grpc_router(piece_store: PieceStoreService, dht: &DhtHandle, config: &Config) -> Router {
    let per_connection = u32::try_from(config.max_streams_per_peer).unwrap_or(u32::MAX);
    Server::builder()
        .max_concurrent_streams(per_connection)
        .http2_keepalive_interval(Some(shoal_proto::limits::H2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(shoal_proto::limits::H2_KEEPALIVE_TIMEOUT))
        .max_frame_size(shoal_proto::limits::H2_MAX_FRAME)
        .initial_stream_window_size(shoal_proto::limits::H2_STREAM_WINDOW)
        .initial_connection_window_size(shoal_proto::limits::H2_CONNECTION_WINDOW)
        .add_service(piece_store.into_server())
        .add_service(dht.service())
}

/// How often the node's free space is compared with what its DHT record says.
const RECORD_UPDATE_INTERVAL: Duration = Duration::from_secs(30);
/// A change of free space smaller than this does not re-sign the node record.
const RECORD_UPDATE_MIN_CHANGE: u64 = 64 << 20;

/// Joins the DHT through the bootstrap nodes and, when they do not answer, through the
/// nodes it verified before its restart (kept in its metadata store), retrying with
/// backoff until one answers or the node stops. A seed node (no bootstrap) that knows
/// nobody yet has nothing to do: the others join through it.
async fn join_dht(dht: DhtHandle, bootstrap: Vec<(NodeId, SocketAddr)>, stop: CancellationToken) {
    let mut delay = Duration::from_millis(200);
    loop {
        match dht.bootstrap().await {
            Ok(n) if n > 0 => {
                info!(known = n, "joined the DHT");
                return;
            }
            Err(satellite_free_discovery::DhtError::NoPeers) if bootstrap.is_empty() => {
                return;
            }
            Ok(_) => warn!(?bootstrap, "no node answered the join; retrying"),
            Err(e) => warn!(error = %e, "DHT bootstrap failed; retrying"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// Spawns a periodic background job. Every worker has this shape and stops when `stop`
/// is cancelled; an error in one round is logged and the next round runs as usual.
pub fn spawn_worker<F, Fut>(
    name: &'static str,
    interval: Duration,
    stop: CancellationToken,
    mut round: F,
) -> JoinHandle<Result<(), Error>>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), Error>> + Send,
{
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                _ = ticker.tick() => {}
            }
            if let Err(e) = round().await {
                warn!(worker = name, error = %e, "worker round failed");
            }
        }
    })
}

/// A started node. Dropping it does not stop it: call [`RunningNode::shutdown`], or
/// cancel [`RunningNode::stop_token`] and await [`RunningNode::wait`].
#[derive(Debug)]
pub struct RunningNode {
    state: Arc<NodeState>,
    recovery: Recovery,
    /// Bootstrap nodes (pinned ids), resolved at start and handed to the DHT driver.
    bootstrap: Vec<(NodeId, SocketAddr)>,
    stop: CancellationToken,
    http_stop: CancellationToken,
    rpc_stop: CancellationToken,
    rpc_kill: CancellationToken,
    worker_stop: CancellationToken,
    http_task: JoinHandle<Result<(), Error>>,
    grpc_task: JoinHandle<Result<(), Error>>,
    workers: Vec<(&'static str, JoinHandle<Result<(), Error>>)>,
    dht: DhtHandle,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| Error::io("cannot listen on", addr.to_string(), e))
}

/// Resolves `HOST:PORT` strings; unresolvable ones are logged and skipped.
pub async fn resolve_addresses(hosts: &[String]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for h in hosts {
        match tokio::net::lookup_host(h.as_str()).await {
            Ok(addrs) => out.extend(addrs),
            Err(e) => warn!(address = %h, error = %e, "cannot resolve address"),
        }
    }
    out
}

/// Resolves pinned `NODEID@HOST:PORT` entries; malformed or unresolvable ones are
/// logged and skipped (the config check refuses malformed ones before this).
pub async fn resolve_pinned(entries: &[String]) -> Vec<(NodeId, SocketAddr)> {
    let mut out = Vec::new();
    for e in entries {
        let resolved = match e.parse::<PinnedPeer>() {
            Ok(p) => p.resolve().await,
            Err(err) => {
                warn!(entry = %e, error = %err, "bad bootstrap entry");
                continue;
            }
        };
        match resolved {
            Ok(addrs) => out.extend(addrs),
            Err(err) => warn!(entry = %e, error = %err, "cannot resolve address"),
        }
    }
    out
}

/// Opens the store under `storage_dir` (repairing what a crash left), binds the gRPC and
/// HTTP listeners and starts serving.
pub async fn start(
    config: &Config,
    identity: Identity,
    storage_dir: &std::path::Path,
) -> Result<RunningNode, Error> {
    shoal_proto::identity::verify_work(&identity.node_id(), config.difficulty)?;
    let tls_config = tls::server_config(&identity)?;
    let identity = Arc::new(identity);
    let dir = storage_dir.to_owned();
    let allocated = config.allocate.0;
    let options = StoreOptions {
        direct_io: config.direct_io,
        max_bytes_per_owner: config.max_bytes_per_owner.map(|b| b.0),
    };
    let (store, recovery) =
        tokio::task::spawn_blocking(move || PieceStore::open_with(&dir, allocated, options))
            .await
            .map_err(|e| Error::Task(e.to_string()))??;
    if recovery != Recovery::default() {
        info!(?recovery, "repaired what an unclean stop left behind");
    }
    let registry = Registry::new();
    let metrics = NodeMetrics::register(&registry)?;
    metrics
        .allocated_bytes
        .set(i64::try_from(allocated).unwrap_or(i64::MAX));

    let grpc_listener = bind(config.listen).await?;
    let http_listener = bind(config.http).await?;
    let grpc_addr = grpc_listener
        .local_addr()
        .map_err(|e| Error::io("cannot read address of", config.listen.to_string(), e))?;
    let http_addr = http_listener
        .local_addr()
        .map_err(|e| Error::io("cannot read address of", config.http.to_string(), e))?;
    let started_at_ms = unix_ms();
    let advertised = match &config.external_address {
        Some(a) => resolve_addresses(std::slice::from_ref(a)).await,
        None if !grpc_addr.ip().is_unspecified() => vec![grpc_addr],
        None => Vec::new(),
    };
    if advertised.is_empty() {
        warn!(%grpc_addr, "no address to advertise: set external_address");
    }
    // The config check covered IPs; a name is checked once resolved.
    for addr in &advertised {
        config.address_scope().check(addr).map_err(|source| {
            satellite_free_discovery::DhtError::Address {
                what: "advertised address",
                addr: *addr,
                source,
            }
        })?;
    }
    metrics.start_time.set(started_at_ms as f64 / 1000.0);

    let state = Arc::new(NodeState {
        identity: Arc::clone(&identity),
        store: Arc::clone(&store),
        metrics: metrics.clone(),
        registry,
        grpc_addr,
        http_addr,
        external_address: config.external_address.clone(),
        advertised,
        started_at_ms,
        metrics_token: config.metrics_token.clone(),
    });

    let stop = CancellationToken::new();
    let http_stop = CancellationToken::new();
    let rpc_stop = CancellationToken::new();
    let worker_stop = CancellationToken::new();

    let bootstrap = resolve_pinned(&config.bootstrap).await;
    // The DHT shares the gRPC port. A node with no address to advertise cannot be found,
    // so it takes part as a client only (it can still look others up) until it is
    // configured with an `external_address`.
    let dht_config = DhtConfig {
        difficulty: config.difficulty,
        bootstrap: bootstrap.clone(),
        local_network: config.local_network,
        test_address_ranges: config.test_ranges(),
        // On one machine or LAN every peer dials from one address (127.0.0.1, a NAT), so a
        // per-address budget would throttle the whole network as one peer.
        rate: if config.local_network {
            RateConfig {
                per_second: 0.0,
                ..RateConfig::default()
            }
        } else {
            RateConfig::default()
        },
        // The records this node holds and the nodes it verified survive its restarts.
        persistence: Some(Arc::new(crate::dht_persist::NodeDhtStore::new(Arc::clone(
            &store,
        )))),
        ..DhtConfig::default()
    };
    let (record_tx, mode) = if state.advertised.is_empty() {
        warn!("no advertised address: this node joins the DHT as a client and will get no pieces");
        (None, Mode::Client)
    } else {
        let (tx, rx) = watch::channel(RecordFields {
            addresses: state.advertised.clone(),
            free_space: store.free_space(),
        });
        (Some(tx), Mode::Node(rx))
    };
    let dht = Dht::start(Arc::clone(&identity), dht_config, mode)?;
    dht.register_metrics(&state.registry)?;
    tokio::spawn(join_dht(
        dht.clone(),
        bootstrap.clone(),
        worker_stop.clone(),
    ));

    let service = PieceStoreService::new(
        identity,
        Arc::clone(&store),
        metrics.clone(),
        ServiceLimits {
            stall_timeout: config.stall_timeout(),
            max_streams_per_peer: config.max_streams_per_peer,
            piece_calls_per_second: config.max_piece_calls_per_second,
            max_lease_ms: config.max_lease_ms,
            min_upload_rate: config.min_upload_rate,
            upload_grace: Duration::from_millis(config.upload_grace_ms),
        },
        rpc_stop.clone(),
    );
    let router = grpc_router(service, &dht, config);
    let rpc_kill = CancellationToken::new();
    let kill = rpc_kill.clone();
    // Every connection is TLS 1.3 over the node's identity key; plaintext is refused.
    let limits = node_connection_limits(config.local_network);
    // A few pending handshakes per peer group on the public network; on a local one
    // every peer dials from the same address, so the group is the whole network.
    let per_group = if config.local_network {
        tls::MAX_PENDING_HANDSHAKES
    } else {
        tls::MAX_PENDING_PER_GROUP
    };
    let incoming = tls::accept_with(
        TcpIncoming::from(grpc_listener)
            .with_nodelay(Some(true))
            .filter_map(move |conn| match conn {
                Ok(c) => {
                    let peer = c.peer_addr().ok()?.ip();
                    // Past a cap the connection is dropped (closed) right here.
                    let Some(slot) = limits.admit(peer) else {
                        debug!(%peer, "connection refused: connection cap reached");
                        return None;
                    };
                    Some(Ok(Killable::with_slot(c, &kill, slot)))
                }
                Err(e) => Some(Err(e)),
            }),
        tls_config,
        per_group,
    );
    let grpc_stop = rpc_stop.clone();
    let grpc_task = tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(incoming, grpc_stop.cancelled_owned())
            .await
            .map_err(|e| Error::Task(format!("gRPC server: {e}")))
    });

    let http_task = tokio::spawn(crate::http::serve(
        http_listener,
        Arc::clone(&state),
        http_stop.clone(),
    ));

    let expiry_store = Arc::clone(&store);
    let expiry_metrics = metrics.clone();
    let expiry = spawn_worker(
        "expiry",
        config.expiry_interval(),
        worker_stop.clone(),
        move || {
            let store = Arc::clone(&expiry_store);
            let metrics = expiry_metrics.clone();
            async move {
                let removed = tokio::task::spawn_blocking(move || {
                    store.collect_expired(unix_ms(), EXPIRY_BATCH)
                })
                .await
                .map_err(|e| Error::Task(e.to_string()))??;
                if removed > 0 {
                    info!(removed, "collected expired pieces");
                    metrics.expired.inc_by(removed);
                }
                Ok(())
            }
        },
    );

    // Copies the longest DB call in flight into `shoal_node_db_stall_seconds` every
    // second (scrapes refresh it too) and says so in the log once it passes 5 s.
    let watch_state = Arc::clone(&state);
    let db_watch = spawn_worker(
        "db-watch",
        Duration::from_secs(1),
        worker_stop.clone(),
        move || {
            let longest = watch_state.store.meta().stall();
            watch_state.metrics.set_db_stall(longest);
            if let Some((running, call)) = longest
                && running >= DB_STALL_WARN
            {
                warn!(
                    call,
                    seconds = running.as_secs(),
                    "a metadata-database call is stalled"
                );
            }
            async { Ok(()) }
        },
    );

    let mut workers = vec![("expiry", expiry), ("db-watch", db_watch)];
    if let Some(record_tx) = record_tx {
        let record_store = Arc::clone(&store);
        let record = spawn_worker(
            "dht-record",
            RECORD_UPDATE_INTERVAL,
            worker_stop.clone(),
            move || {
                let free = record_store.free_space();
                record_tx.send_if_modified(|f| {
                    if f.free_space.abs_diff(free) < RECORD_UPDATE_MIN_CHANGE {
                        return false;
                    }
                    f.free_space = free;
                    true
                });
                async { Ok(()) }
            },
        );
        workers.push(("dht-record", record));
    }

    info!(node_id = %state.identity.node_id(), %grpc_addr, %http_addr, "storage node started");
    Ok(RunningNode {
        state,
        recovery,
        bootstrap,
        stop,
        http_stop,
        rpc_stop,
        rpc_kill,
        worker_stop,
        http_task,
        grpc_task,
        workers,
        dht,
    })
}

impl RunningNode {
    pub fn node_id(&self) -> NodeId {
        self.state.identity.node_id()
    }

    pub fn identity(&self) -> &Arc<Identity> {
        &self.state.identity
    }

    /// The bound gRPC address (the real port when configured with port 0).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.state.grpc_addr
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.state.http_addr
    }

    pub fn store(&self) -> &Arc<PieceStore> {
        &self.state.store
    }

    pub fn metrics(&self) -> &NodeMetrics {
        &self.state.metrics
    }

    /// The node's Prometheus registry; everything registered here is served at `/metrics`.
    pub fn registry(&self) -> &Registry {
        &self.state.registry
    }

    pub fn state(&self) -> &Arc<NodeState> {
        &self.state
    }

    /// What startup repaired.
    pub fn recovery(&self) -> Recovery {
        self.recovery
    }

    /// Resolved bootstrap nodes the node joins the DHT through.
    pub fn bootstrap(&self) -> &[(NodeId, SocketAddr)] {
        &self.bootstrap
    }

    /// The node's DHT participant (served on the gRPC port).
    pub fn dht(&self) -> &DhtHandle {
        &self.dht
    }

    /// Cancelling this token makes [`RunningNode::wait`] shut the node down.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Stops the node and waits until everything has stopped.
    pub async fn shutdown(self) -> Result<(), Error> {
        self.stop.cancel();
        self.wait().await
    }

    /// Waits for the stop token, then shuts down in order: HTTP, gRPC, workers, flush.
    pub async fn wait(self) -> Result<(), Error> {
        self.stop.cancelled().await;
        info!("shutting down");
        let join = |r: Result<Result<(), Error>, tokio::task::JoinError>| {
            r.map_err(|e| Error::Task(e.to_string())).and_then(|r| r)
        };
        self.http_stop.cancel();
        let http = join(self.http_task.await);
        self.rpc_stop.cancel();
        let mut grpc_task = self.grpc_task;
        let grpc = match tokio::time::timeout(RPC_DRAIN, &mut grpc_task).await {
            Ok(r) => join(r),
            Err(_) => {
                warn!(drain = ?RPC_DRAIN, "gRPC streams did not finish; closing their connections");
                self.rpc_kill.cancel();
                join(grpc_task.await)
            }
        };
        self.dht.shutdown().await;
        self.worker_stop.cancel();
        let mut workers = Ok(());
        for (name, task) in self.workers {
            if let Err(e) = join(task.await) {
                warn!(worker = name, error = %e, "worker failed");
                workers = Err(e);
            }
        }
        let store = Arc::clone(&self.state.store);
        let flushed = tokio::task::spawn_blocking(move || store.flush())
            .await
            .map_err(|e| Error::Task(e.to_string()))
            .and_then(|r| r);
        info!("stopped");
        http.and(grpc).and(workers).and(flushed)
    }
}
