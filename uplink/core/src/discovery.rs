//! The production [`NodeSource`]: the DHT's membership sampler.
//!
//! The uplink joins the DHT as a client (it sends no node record and never enters
//! anyone's routing table), crawls the membership at the DHT's bounded rate and samples
//! uniformly over /24 subnets, which is what node selection needs. "Closest to a random
//! id" would favour nodes next to large gaps in the key space, so it is not used.
//!
//! It also holds the catalog's records. A record read or write does not wait for a
//! join when the closest nodes of its key are known: found within the last
//! 30 minutes, in this process or an earlier one (kept in the catalog's store,
//! [`crate::peers::keep_closest`]). The DHT then reads from them in one round (see
//! `satellite_free_discovery::core::node`, *Records*), and the uplink joins only when that
//! finds nobody to ask.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use satellite_free_discovery::error::DhtError;
use satellite_free_discovery::{Dht, DhtConfig, DhtHandle, Mode};
use shoal_proto::address::AddressScope;
use shoal_proto::{Identity, NodeId};
use tokio::sync::OnceCell;

use crate::catalog::Catalog;
use crate::peers::{KnownPeer, MAX_KNOWN_PEERS};
use crate::store::{DiscoveryError, NodeCandidate, NodeSource};
use crate::sync::{CatalogRecords, RecordError, RecordErrorKind};
use crate::work::PublisherWork;
use shoal_proto::messages::MutableRecord;
use shoal_proto::{RecordKey, Signed};

/// Longest one catalog record read or write may take (lookups inside have their own
/// per-request deadlines; this bounds the whole).
const RECORD_DEADLINE: Duration = Duration::from_secs(30);

/// Members not heard from for this long are not offered for new pieces.
const MAX_MEMBER_AGE: Duration = Duration::from_secs(10 * 60);
/// Crawl steps between two looks at the sample.
const CRAWL_BATCH: usize = 8;
/// Batches without a new member after which the membership is taken as complete.
const STALE_BATCHES: usize = 3;
/// Most crawl steps one sample may run.
const MAX_CRAWL_STEPS: usize = 1024;

/// Node candidates from the DHT. Joins lazily, on the first sample (or record read or
/// write whose key's closest nodes are not known), so commands that need no new
/// placements (listing, downloads, deletes) usually never join.
#[derive(Debug)]
pub struct DhtNodes {
    identity: Arc<Identity>,
    bootstrap: Vec<(NodeId, SocketAddr)>,
    difficulty: u32,
    scope: AddressScope,
    /// The DHT client, started (and given the closest sets kept before).
    dht: OnceCell<DhtHandle>,
    /// Set once it joined through the bootstrap entries.
    joined: OnceCell<()>,
    /// Where the nodes that answered are remembered ([`crate::peers`]).
    known: Option<Catalog>,
    /// The closest sets as kept in `known` (read once at start, then as last written),
    /// so that a record operation compares in memory and writes only on a change.
    kept: std::sync::Mutex<Vec<satellite_free_discovery::KnownClosest>>,
    /// The proof of work the records this uplink publishes carry.
    work: PublisherWork,
}

impl DhtNodes {
    /// A source that joins the DHT through `bootstrap` (pinned node ids) when first asked
    /// for nodes. `difficulty` is the network's proof-of-work requirement: nodes below it
    /// are ignored. `scope` says which addresses may be dialled (bootstrap peers and the
    /// addresses of node records): the public network's, or a local network's.
    pub fn new(
        identity: Arc<Identity>,
        bootstrap: Vec<(NodeId, SocketAddr)>,
        difficulty: u32,
        scope: AddressScope,
    ) -> Self {
        Self {
            identity,
            bootstrap,
            difficulty,
            scope,
            dht: OnceCell::new(),
            joined: OnceCell::new(),
            known: None,
            kept: Default::default(),
            work: PublisherWork::new(difficulty),
        }
    }

    /// Remembers the members that answered (on joining and on every sample) in
    /// `catalog`'s store, as later ways in ([`crate::peers`]).
    /// The publisher work found for record keys is kept there too ([`crate::work`]).
    pub fn remember_peers_in(mut self, catalog: Catalog) -> Self {
        self.work = PublisherWork::new(self.difficulty).kept_in(catalog.clone());
        self.known = Some(catalog);
        self
    }

    /// Remembers the verified members `dht` heard from lately.
    fn remember(&self, dht: &DhtHandle) {
        let Some(catalog) = &self.known else {
            return;
        };
        let seen: Vec<KnownPeer> = dht
            .sample(MAX_KNOWN_PEERS * 2, 0, MAX_MEMBER_AGE)
            .iter()
            .filter_map(|m| {
                let c = NodeCandidate::from_record(&m.record)?;
                Some(KnownPeer {
                    id: c.id.0,
                    address: c.address,
                    last_seen_ms: m.last_seen_unix_ms?,
                })
            })
            .collect();
        if seen.is_empty() {
            return;
        }
        if let Err(e) = crate::peers::remember(catalog, seen) {
            tracing::debug!(error = %e, "cannot remember the nodes seen");
        }
    }

    /// The joined DHT client, joining now if needed.
    pub async fn handle(&self) -> Result<&DhtHandle, DiscoveryError> {
        let dht = self.started().await?;
        self.joined.get_or_try_init(|| self.join(dht)).await?;
        Ok(dht)
    }

    /// The DHT client, started (not necessarily joined).
    async fn started(&self) -> Result<&DhtHandle, DiscoveryError> {
        self.dht
            .get_or_try_init(|| async {
                if self.bootstrap.is_empty() {
                    return Err(DiscoveryError(
                        "no bootstrap peers: the access grant must name at least one node".into(),
                    ));
                }
                let kept = self
                    .known
                    .as_ref()
                    .map(crate::peers::load_closest)
                    .unwrap_or_default();
                if let Ok(mut k) = self.kept.lock() {
                    k.clone_from(&kept);
                }
                let config = DhtConfig {
                    difficulty: self.difficulty,
                    bootstrap: self.bootstrap.clone(),
                    local_network: self.scope.is_local(),
                    test_address_ranges: self.scope.test_ranges(),
                    crawl: true,
                    known_closest: kept,
                    ..DhtConfig::default()
                };
                Dht::start(Arc::clone(&self.identity), config, Mode::Client)
                    .map_err(|e| DiscoveryError(format!("cannot start the DHT client: {e}")))
            })
            .await
    }

    async fn join(&self, dht: &DhtHandle) -> Result<(), DiscoveryError> {
        let bootstrap = &self.bootstrap;
        match dht.bootstrap().await {
            Ok(n) if n > 0 => {
                tracing::debug!(table = n, "joined the DHT");
                self.remember(dht);
                Ok(())
            }
            Ok(_) => Err(DiscoveryError(format!(
                "no bootstrap peer answered ({}); is the network running?",
                list(bootstrap)
            ))),
            Err(e) => Err(DiscoveryError(format!(
                "joining the DHT through {} failed: {e}",
                list(bootstrap)
            ))),
        }
    }

    /// Keeps the closest sets the DHT found (when they changed) for the next process.
    async fn keep_closest(&self, dht: &DhtHandle) {
        let Some(catalog) = &self.known else {
            return;
        };
        let found = dht.known_closest().await;
        let Ok(mut kept) = self.kept.lock() else {
            return;
        };
        if let Some(merged) = crate::peers::merge_closest(&kept, found) {
            match crate::peers::save_closest(catalog, &merged) {
                Ok(()) => *kept = merged,
                Err(e) => tracing::debug!(error = %e, "cannot keep the closest nodes found"),
            }
        }
    }

    /// Runs record operation `op` on the DHT: before joining when the closest of its
    /// key are known (it fails with `NoPeers`, having sent nothing, when they are not,
    /// and then runs again once joined).
    async fn record_op<'a, T, F, Fut>(&'a self, what: &str, op: F) -> Result<T, RecordError>
    where
        F: Fn(&'a DhtHandle) -> Fut,
        Fut: std::future::Future<Output = Result<T, DhtError>>,
    {
        let failed = |e: DiscoveryError| RecordError::failed(e.0);
        let dht = self.started().await.map_err(failed)?;
        if self.joined.get().is_none() {
            match Self::with_deadline(what, op(dht)).await {
                Err(RecordError {
                    kind: RecordErrorKind::NoPeers,
                    ..
                }) => {}
                r => {
                    tracing::debug!(
                        ok = r.is_ok(),
                        "{what}: before joining, at the closest nodes kept for the key"
                    );
                    self.keep_closest(dht).await;
                    return r;
                }
            }
        }
        let dht = self.handle().await.map_err(failed)?;
        let r = Self::with_deadline(what, op(dht)).await;
        self.keep_closest(dht).await;
        r
    }

    /// Stops the DHT client's background work, if it was started.
    pub async fn shutdown(&self) {
        if let Some(dht) = self.dht.get() {
            dht.shutdown().await;
        }
    }
}

/// The entries tried, for a message: the first few and how many more.
fn list(peers: &[(NodeId, SocketAddr)]) -> String {
    const SHOWN: usize = 4;
    let mut s = peers
        .iter()
        .take(SHOWN)
        .map(|(id, addr)| format!("{id}@{addr}"))
        .collect::<Vec<_>>()
        .join(", ");
    if peers.len() > SHOWN {
        s.push_str(&format!(" and {} more", peers.len() - SHOWN));
    }
    s
}

impl NodeSource for DhtNodes {
    fn sample(&self, wanted: usize) -> BoxFuture<'_, Result<Vec<NodeCandidate>, DiscoveryError>> {
        Box::pin(async move {
            let dht = self.handle().await?;
            let wanted = wanted.max(1);
            let mut best = 0;
            let mut stale = 0;
            let mut steps = 0;
            // Crawl until the sample is large enough or the membership stops growing.
            loop {
                let members = dht.sample(usize::MAX, 0, MAX_MEMBER_AGE);
                if members.len() >= wanted || steps >= MAX_CRAWL_STEPS {
                    break;
                }
                if members.len() > best {
                    best = members.len();
                    stale = 0;
                } else {
                    stale += 1;
                    if stale >= STALE_BATCHES {
                        break;
                    }
                }
                dht.crawl(CRAWL_BATCH).await;
                steps += CRAWL_BATCH;
            }
            let nodes: Vec<NodeCandidate> = dht
                .sample(wanted, 0, MAX_MEMBER_AGE)
                .iter()
                .filter_map(|m| NodeCandidate::from_record(&m.record))
                .collect();
            if nodes.is_empty() {
                return Err(DiscoveryError(
                    "the DHT knows no live storage node yet; is the network running?".into(),
                ));
            }
            self.remember(dht);
            Ok(nodes)
        })
    }
}

impl DhtNodes {
    async fn with_deadline<T>(
        what: &str,
        f: impl std::future::Future<Output = Result<T, DhtError>>,
    ) -> Result<T, RecordError> {
        match tokio::time::timeout(RECORD_DEADLINE, f).await {
            Ok(r) => r.map_err(|e| match e {
                DhtError::CasMismatch => RecordError::compare_and_swap(format!("{what}: {e}")),
                DhtError::NoPeers => RecordError {
                    kind: RecordErrorKind::NoPeers,
                    message: format!("{what}: {e}"),
                },
                e => RecordError::failed(format!("{what}: {e}")),
            }),
            Err(_) => Err(RecordError::failed(format!(
                "{what}: no answer within {} s",
                RECORD_DEADLINE.as_secs()
            ))),
        }
    }
}

/// The catalog's records live in the same DHT the nodes are found in.
impl CatalogRecords for DhtNodes {
    fn get(
        &self,
        key: RecordKey,
    ) -> BoxFuture<'_, Result<Option<Signed<MutableRecord>>, RecordError>> {
        Box::pin(self.record_op("reading a DHT record", move |dht| dht.get_record(key)))
    }

    fn put(
        &self,
        record: Signed<MutableRecord>,
        expected_seq: Option<u64>,
    ) -> BoxFuture<'_, Result<usize, RecordError>> {
        Box::pin(async move {
            let nonce = self.work.nonce_for(&record.public_key).await;
            let record = record.with_work(nonce);
            let report = self
                .record_op("storing a DHT record", move |dht| {
                    dht.put_record(record.clone(), expected_seq)
                })
                .await?;
            Ok(report.stored)
        })
    }
}
