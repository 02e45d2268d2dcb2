//! What a DHT participant keeps across restarts, through a store the host supplies
//! ([`DhtPersistence`]): the records it holds for others (so that a network that stops
//! and starts again still has every record), and the nodes it has verified (so that it
//! can join through any of them when its configured bootstrap entries do not answer).
//!
//! The driver calls the store only off the tokio workers (`spawn_blocking`), from one
//! writer task: the driver task hands it the record store's changes and never waits for
//! a disk. Changes of one key are coalesced while a write is under way, so a slow disk
//! costs memory bounded by the record store, never a stalled node.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use shoal_proto::messages::MutableRecord;
use shoal_proto::{Signed, pb};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Inner, lock};
use crate::core::store::StoreChange;

/// Known peers written at most (newest first) and read back at start.
pub const MAX_KNOWN_PEERS: usize = 64;

/// Remembered peers a bootstrap pings when fewer than [`MIN_JOIN_ANSWERS`] configured
/// entries answered.
pub const MAX_REMEMBERED_TRIES: usize = 16;

/// Nodes that must answer a bootstrap before remembered peers are no longer tried.
pub const MIN_JOIN_ANSWERS: usize = 3;

/// A loading call that takes longer than this is given up (the node starts without
/// what it would have read, and says so).
pub(crate) const LOAD_DEADLINE: Duration = Duration::from_secs(30);

/// A store's error, carried whole (the store's own type, e.g. a database error).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct PersistError(pub Box<dyn std::error::Error + Send + Sync>);

impl PersistError {
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Box::new(e))
    }
}

/// Where a DHT participant keeps what must survive a restart. Implemented by the host
/// over its own store (the storage node's metadata database, the uplink's catalog
/// store); [`MemoryPersistence`] for tests. Every call is made from a blocking thread,
/// never from the async runtime, and may block on the disk.
///
/// Records are the wire encoding of a signed mutable record (`pb::MutableRecord` of a
/// `Signed<MutableRecord>`); node records the wire encoding of a signed `NodeRecord`.
/// The store need not understand them: everything read back is checked again (its
/// signature, proof of work and addresses) before it is used, so a store that was
/// altered cannot make the node hold or trust a bad record.
pub trait DhtPersistence: Send + Sync + Debug + 'static {
    /// Up to `limit` records that expire after `now_ms`.
    fn load_records(&self, now_ms: u64, limit: usize) -> Result<Vec<Vec<u8>>, PersistError>;

    /// Adds the record under `key`, or replaces the one held there.
    fn save_record(
        &self,
        key: &[u8; 32],
        record: &[u8],
        expires_at_ms: u64,
    ) -> Result<(), PersistError>;

    /// Drops the record under `key` (it expired); no record there is not an error.
    fn remove_record(&self, key: &[u8; 32]) -> Result<(), PersistError>;

    /// Drops every record that expires at or before `now_ms`.
    fn remove_expired_records(&self, now_ms: u64) -> Result<(), PersistError>;

    /// Up to `limit` known peers, newest `last_seen_unix_ms` first: (node record,
    /// last seen).
    fn load_peers(&self, limit: usize) -> Result<Vec<(Vec<u8>, u64)>, PersistError>;

    /// Adds or updates these peers (node id, node record, last seen in unix ms). The
    /// store may keep only the newest (at least [`MAX_KNOWN_PEERS`]).
    fn save_peers(&self, peers: &[([u8; 32], Vec<u8>, u64)]) -> Result<(), PersistError>;
}

/// Bytes under a 32-byte key, with a time (expiry or last seen, unix ms).
type Held = HashMap<[u8; 32], (Vec<u8>, u64)>;

/// A [`DhtPersistence`] in memory: shared by the instances a test stops and starts
/// again, it plays a disk that outlives them.
#[derive(Debug, Default)]
pub struct MemoryPersistence {
    records: Mutex<Held>,
    peers: Mutex<Held>,
}

impl MemoryPersistence {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Records held (live or not).
    pub fn record_count(&self) -> usize {
        lock(&self.records).len()
    }

    /// The stored bytes of every record, by key.
    pub fn records(&self) -> Held {
        lock(&self.records).clone()
    }

    /// Peers held.
    pub fn peer_count(&self) -> usize {
        lock(&self.peers).len()
    }

    /// Forgets every peer (a store that never knew any).
    pub fn clear_peers(&self) {
        lock(&self.peers).clear();
    }
}

impl DhtPersistence for MemoryPersistence {
    fn load_records(&self, now_ms: u64, limit: usize) -> Result<Vec<Vec<u8>>, PersistError> {
        let records = lock(&self.records);
        let mut live: Vec<([u8; 32], &Vec<u8>)> = records
            .iter()
            .filter(|(_, (_, exp))| *exp > now_ms)
            .map(|(k, (b, _))| (*k, b))
            .collect();
        live.sort_unstable_by_key(|(k, _)| *k);
        Ok(live
            .into_iter()
            .take(limit)
            .map(|(_, b)| b.clone())
            .collect())
    }

    fn save_record(
        &self,
        key: &[u8; 32],
        record: &[u8],
        expires_at_ms: u64,
    ) -> Result<(), PersistError> {
        lock(&self.records).insert(*key, (record.to_vec(), expires_at_ms));
        Ok(())
    }

    fn remove_record(&self, key: &[u8; 32]) -> Result<(), PersistError> {
        lock(&self.records).remove(key);
        Ok(())
    }

    fn remove_expired_records(&self, now_ms: u64) -> Result<(), PersistError> {
        lock(&self.records).retain(|_, (_, exp)| *exp > now_ms);
        Ok(())
    }

    fn load_peers(&self, limit: usize) -> Result<Vec<(Vec<u8>, u64)>, PersistError> {
        let mut peers: Vec<(Vec<u8>, u64)> = lock(&self.peers).values().cloned().collect();
        peers.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        peers.truncate(limit);
        Ok(peers)
    }

    fn save_peers(&self, peers: &[([u8; 32], Vec<u8>, u64)]) -> Result<(), PersistError> {
        let mut held = lock(&self.peers);
        for (id, record, seen) in peers {
            let keep = held.get(id).is_some_and(|(_, s)| s > seen);
            if !keep {
                held.insert(*id, (record.clone(), *seen));
            }
        }
        // The newest 4 × MAX_KNOWN_PEERS.
        if held.len() > 4 * MAX_KNOWN_PEERS {
            let mut seen: Vec<u64> = held.values().map(|(_, s)| *s).collect();
            seen.sort_unstable_by(|a, b| b.cmp(a));
            let cut = seen[4 * MAX_KNOWN_PEERS - 1];
            held.retain(|_, (_, s)| *s >= cut);
        }
        Ok(())
    }
}

/// A write the writer task owes the store; the newest per key wins.
#[derive(Debug)]
enum Write {
    Save { bytes: Vec<u8>, expires_at_ms: u64 },
    Remove,
}

/// Runs `f` on a blocking thread; a panic or a store error is logged and counted.
async fn blocking<R: Send + 'static>(
    inner: &Inner,
    what: &'static str,
    f: impl FnOnce() -> Result<R, PersistError> + Send + 'static,
) -> Option<R> {
    let result = tokio::task::spawn_blocking(f).await;
    match result {
        Ok(Ok(r)) => Some(r),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "DHT store: cannot {what}");
            inner.metrics.persist_errors.inc();
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "DHT store: {what} panicked");
            inner.metrics.persist_errors.inc();
            None
        }
    }
}

/// Writes the pending record changes, one batch at a time.
async fn flush(inner: &Inner, store: &Arc<dyn DhtPersistence>, batch: HashMap<[u8; 32], Write>) {
    if batch.is_empty() {
        return;
    }
    let store = Arc::clone(store);
    blocking(inner, "write held records", move || {
        for (key, w) in batch {
            match w {
                Write::Save {
                    bytes,
                    expires_at_ms,
                } => store.save_record(&key, &bytes, expires_at_ms)?,
                Write::Remove => store.remove_record(&key)?,
            }
        }
        Ok(())
    })
    .await;
}

fn add(batch: &mut HashMap<[u8; 32], Write>, change: StoreChange) {
    match change {
        StoreChange::Put(r) => {
            let bytes = pb::MutableRecord::from(&r).encode_to_vec();
            batch.insert(
                r.key().0,
                Write::Save {
                    bytes,
                    expires_at_ms: r.expires_at_ms,
                },
            );
        }
        StoreChange::Removed(key) => {
            batch.insert(key.0, Write::Remove);
        }
    }
}

/// Writes the verified peers this node knows, newest first, bounded.
pub(crate) async fn save_peers(inner: &Arc<Inner>, store: &Arc<dyn DhtPersistence>) {
    let peers: Vec<([u8; 32], Vec<u8>, u64)> = inner
        .known_peers(MAX_KNOWN_PEERS)
        .into_iter()
        .map(|p| {
            (
                p.record.node_id().0,
                pb::NodeRecord::from(&*p.record).encode_to_vec(),
                p.last_seen_unix_ms,
            )
        })
        .collect();
    if peers.is_empty() {
        return;
    }
    let store = Arc::clone(store);
    blocking(inner, "write known peers", move || store.save_peers(&peers)).await;
}

/// The writer task: writes the record store's changes as they come (coalesced per key
/// while a write runs) and the known peers every `interval`; on `stop`, writes what is
/// left and the known peers once more, then ends.
pub(crate) async fn run_writer(
    inner: Arc<Inner>,
    store: Arc<dyn DhtPersistence>,
    mut changes: mpsc::UnboundedReceiver<StoreChange>,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            change = changes.recv() => {
                let Some(change) = change else { break };
                let mut batch = HashMap::new();
                add(&mut batch, change);
                while let Ok(c) = changes.try_recv() {
                    add(&mut batch, c);
                }
                flush(&inner, &store, batch).await;
            }
            _ = ticker.tick() => save_peers(&inner, &store).await,
            () = stop.cancelled() => break,
        }
    }
    let mut batch = HashMap::new();
    while let Ok(c) = changes.try_recv() {
        add(&mut batch, c);
    }
    flush(&inner, &store, batch).await;
    save_peers(&inner, &store).await;
}

/// What the store kept, read back and checked.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    /// Records whose encoding and signature check out.
    pub records: Vec<Signed<MutableRecord>>,
    /// Records that did not, or whose publisher work falls short (a damaged or altered
    /// store, or one written under a lower difficulty).
    pub invalid: usize,
    /// Node records and when they were last seen, newest first (not checked yet).
    pub peers: Vec<(Vec<u8>, u64)>,
}

/// Reads what the store kept, with a deadline, and checks the records' signatures (off
/// the runtime as well). A store that fails or is too slow gives nothing (logged); the
/// node then starts as a new one would.
pub(crate) async fn load(
    inner: &Inner,
    store: &Arc<dyn DhtPersistence>,
    now_ms: u64,
    max_records: usize,
) -> Loaded {
    let s = Arc::clone(store);
    let difficulty = inner.config.difficulty;
    let read = blocking(inner, "read held records and known peers", move || {
        let raw = if max_records > 0 {
            let raw = s.load_records(now_ms, max_records)?;
            s.remove_expired_records(now_ms)?;
            raw
        } else {
            Vec::new()
        };
        let mut loaded = Loaded {
            peers: s.load_peers(MAX_KNOWN_PEERS)?,
            ..Loaded::default()
        };
        for bytes in raw.into_iter().take(max_records) {
            // The wire conversion checks the signature over (salt, seq, value, expiry).
            // The work was checked when the record arrived; checked again in case the
            // store was written under a lower difficulty (or altered).
            match pb::MutableRecord::decode(bytes.as_slice())
                .ok()
                .and_then(|m| Signed::<MutableRecord>::try_from(m).ok())
                .filter(|r| {
                    shoal_proto::work::check_publisher_work(&r.public_key, r.work, difficulty)
                        .is_ok()
                }) {
                Some(r) => loaded.records.push(r),
                None => loaded.invalid += 1,
            }
        }
        loaded.peers.truncate(MAX_KNOWN_PEERS);
        Ok(loaded)
    });
    match tokio::time::timeout(LOAD_DEADLINE, read).await {
        Ok(Some(r)) => r,
        Ok(None) => Loaded::default(),
        Err(_) => {
            tracing::warn!(
                deadline = ?LOAD_DEADLINE,
                "DHT store: reading held records and known peers took too long; starting without them"
            );
            inner.metrics.persist_errors.inc();
            Loaded::default()
        }
    }
}
