//! The catalog in the network: publishing this writer's changes and pulling the others'.
//!
//! Formats are in [`crate::catalog::log`], the merge rule in [`crate::catalog::model`];
//! this module moves the bytes, through the [`CatalogRecords`] trait for the DHT records
//! (the DHT client in production, [`crate::testing::MemoryRecords`] in tests) and the
//! uplink's own object upload and download for blobs.
//!
//! **Publish** (one per [`Uplink::flush`]; concurrent callers share one, a group commit):
//! take the queued changes, upload them as delta `seq + 1` of this writer's log (with a
//! snapshot of the whole catalog first, every [`UplinkConfig::snapshot_every`] deltas: a
//! tree of chunks that re-uses every chunk stored before, see `snapshot`), then point
//! the writer's head record at it — or, when they are small, carry them in the head
//! record itself (inline deltas, see [`crate::catalog::log`]). The queue is cleared only after the head
//! record is stored, so a crash at any point loses nothing: the next publish sends the
//! changes again (a blob left without a head is reclaimed by its lease).
//!
//! **Pull**: read the writers record, then each writer's head record (one DHT read per
//! writer, no piece traffic when nothing changed). A head older than one already merged
//! is refused (rollback). For writers with news, fetch their head deltas, apply the newest
//! snapshot any of them names if it covers something not yet merged, then walk each
//! writer's chain back to what is merged and apply the deltas oldest first. Everything is
//! checked: record signatures (by the DHT types), AES-GCM on record values and blob
//! blocks, piece hashes, and that each blob is the writer's delta `seq` it should be.
//! Anything missing is an error that names it; nothing is skipped silently.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use shoal_proto::messages::MutableRecord;
use shoal_proto::{RecordKey, Signed};

use crate::access::Access;
use crate::catalog::Catalog;
use crate::catalog::log::{self, BlobRef, Delta, Head, HeadDelta, SnapshotRef};
use crate::catalog::{CatalogError, Hlc, SyncTx, WriterId};
pub use crate::error::{RecordError, RecordErrorKind, SyncError};
use crate::pieces::Pieces;

/// Longest a catalog record lives without being republished; the DHT nodes' limit.
pub const MAX_RECORD_TTL: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);
/// Attempts at adding this writer to the writers record against racing writers.
const REGISTER_ATTEMPTS: usize = 8;

mod blobs;
mod live;
pub use live::RenewedElsewhere;
mod publish;
mod pull;
pub mod rebuild;
mod records;
mod snapshot;

const APPLIED: &str = "applied";
const OWN: &str = "own";
const SNAPSHOT: &str = "snapshot";
const UNAVAILABLE: &str = "unavailable";
/// Per writer, the clock and the frontier of its last delta merged here.
const CLOCKS: &str = "clocks";
const FRONTIERS: &str = "frontiers";
/// The newest writers record seq this replica read or saw named by a delta.
const WRITERS_SEEN: &str = "writers-seen";
/// Rounds of a pull that finds a delta naming a newer writers record than it read.
const PULL_ROUNDS: usize = 2;

/// The DHT records the catalog's pointers live in.
pub trait CatalogRecords: Send + Sync + std::fmt::Debug {
    /// The newest valid record under `key`, if any node holds one.
    fn get(
        &self,
        key: RecordKey,
    ) -> BoxFuture<'_, Result<Option<Signed<MutableRecord>>, RecordError>>;
    /// Stores `record` where it belongs (compare-and-swap when `expected_seq` is set);
    /// returns how many nodes now hold it.
    fn put(
        &self,
        record: Signed<MutableRecord>,
        expected_seq: Option<u64>,
    ) -> BoxFuture<'_, Result<usize, RecordError>>;
}

/// This writer's own log: the last head it offered the network (stored, or perhaps
/// stored: a publish records it before the put, see `publish`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct OwnLog {
    seq: u64,
    /// The newest blob delta, delta [`OwnLog::blob_seq`].
    head: Option<BlobRef>,
    /// The seq of `head` when deltas after it rode inline (`None`: `seq`).
    #[serde(default)]
    blob_seq: Option<u64>,
    /// The head's delta `seq` when it rides inline (see [`crate::catalog::log`],
    /// *Inline deltas*): it carries the changes of every delta after `head`.
    #[serde(default)]
    inline: Option<Delta>,
}

impl OwnLog {
    fn blob_seq(&self) -> u64 {
        self.blob_seq.unwrap_or(self.seq)
    }

    /// The value of the head record at `seq` (`None`: nothing published yet).
    fn head_value(&self, writer: WriterId) -> Option<Head> {
        let delta = match &self.inline {
            Some(d) if self.blob_seq() != self.seq => HeadDelta::Inline(d.clone()),
            _ => HeadDelta::Blob(self.head.clone()?),
        };
        Some(Head {
            writer,
            seq: self.seq,
            delta,
        })
    }

    /// Whether `head`, found in the network under this writer's id, proves that
    /// another replica writes under the same id (a copied or restored config dir): it is
    /// newer than anything this writer offered, or as new but another delta. (An older
    /// head proves nothing: the network may not have taken this writer's last puts.)
    fn disowns(&self, head: &log::Head) -> bool {
        head.seq > self.seq
            || (head.seq == self.seq
                && self.head_value(head.writer).map(|h| h.delta).as_ref() != Some(&head.delta))
    }
}

/// What a publish did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishReport {
    /// The delta's sequence number (`None`: nothing to publish).
    pub seq: Option<u64>,
    pub changes: usize,
    /// Whether a snapshot was taken with it.
    pub snapshot: bool,
    /// Of `bytes_sent`, those of the snapshot (its new chunks and its manifest).
    pub snapshot_bytes_sent: u64,
    /// Chunks of that snapshot uploaded, and chunks re-used from earlier snapshots.
    pub snapshot_chunks_stored: usize,
    pub snapshot_chunks_reused: usize,
    /// The writer id this replica moved to before publishing, having found its log
    /// written by another replica (see [`SyncError::Cloned`]).
    pub new_writer: Option<WriterId>,
    /// Bytes sent: blob pieces plus DHT record copies.
    pub bytes_sent: u64,
}

/// What a pull did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullReport {
    pub writers: usize,
    pub deltas: usize,
    pub snapshots: usize,
    pub changes_applied: usize,
    /// The newest snapshot, when it was wanted and could not be read (the deltas were
    /// walked instead), and why.
    pub snapshot_refused: Option<Unavailable>,
    /// Writers whose news could not be read, and why. Everything else was merged; what
    /// only these writers hold is missing or outdated here until they can be read.
    pub unavailable: BTreeMap<WriterId, Unavailable>,
    /// Whether this writer's own head or writers record was missing from the DHT and
    /// was put back from what this replica holds.
    pub republished: bool,
    /// The writer id this replica moved to, having found its log written by another
    /// replica (see [`SyncError::Cloned`]).
    pub new_writer: Option<WriterId>,
}

impl PullReport {
    /// Whether the network holds no catalog at all for this grant: no writers record
    /// and no head of any writer.
    pub fn found_nothing(&self) -> bool {
        self.writers == 0 && self.unavailable.is_empty()
    }
}

/// A snapshot, for `uplink catalog status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotStatus {
    pub taken_by: WriterId,
    pub taken_at_ms: u64,
    pub entries: u64,
    pub covers: BTreeMap<WriterId, u64>,
}

/// `uplink catalog status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CatalogStatus {
    pub writer: WriterId,
    /// Changes made here and not yet published.
    pub pending: usize,
    /// This writer's last published sequence number.
    pub published_seq: u64,
    pub last_snapshot: Option<SnapshotStatus>,
    /// Every writer known, with the sequence number merged here.
    pub writers: BTreeMap<WriterId, u64>,
    /// Writers whose news the last pull could not read, and why.
    pub unavailable: BTreeMap<WriterId, Unavailable>,
}

/// Why one writer's catalog changes could not be read by a pull.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unavailable {
    pub kind: UnavailableKind,
    /// The error, for people.
    pub reason: String,
}

/// What kind of failure made a writer [`Unavailable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UnavailableKind {
    /// Its head record is missing from the DHT although it was merged before.
    MissingHead,
    /// Its head record is older than one already merged.
    Rollback,
    /// Its head record or a blob failed authentication or is malformed.
    Invalid,
    /// A delta could not be fetched (pieces lost or unreachable).
    Fetch,
    /// A delta its chain needs is not referenced anywhere.
    MissingDelta,
    /// The DHT failed reading its head record.
    Record,
    /// Its log was written by two replicas (a copied config dir).
    Cloned,
}

impl Unavailable {
    fn of(e: &SyncError) -> Self {
        let kind = match e {
            SyncError::MissingHead { .. } => UnavailableKind::MissingHead,
            SyncError::Rollback { .. } => UnavailableKind::Rollback,
            SyncError::Fetch { .. } => UnavailableKind::Fetch,
            SyncError::MissingDelta { .. } => UnavailableKind::MissingDelta,
            SyncError::Record { .. } | SyncError::NotStored { .. } => UnavailableKind::Record,
            SyncError::Cloned { .. } => UnavailableKind::Cloned,
            _ => UnavailableKind::Invalid,
        };
        Self {
            kind,
            reason: e.to_string(),
        }
    }
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// The catalog in the network: publishing this writer's changes and pulling the
/// others', over the pieces service (blobs) and the DHT records (pointers). Owns the
/// sync state; without records (a local-only uplink) it still reads blobs (`check`,
/// `renew` and the inspection tools use that) but publishes and pulls nothing.
pub(crate) struct CatalogSync {
    access: Arc<Access>,
    catalog: Catalog,
    pieces: Arc<Pieces>,
    /// The records and the group-commit state (`None`: local only).
    sync: Option<SyncState>,
}

impl CatalogSync {
    pub(crate) fn new(
        access: Arc<Access>,
        catalog: Catalog,
        pieces: Arc<Pieces>,
        records: Option<Arc<dyn CatalogRecords>>,
    ) -> Self {
        Self {
            access,
            catalog,
            pieces,
            sync: records.map(SyncState::new),
        }
    }

    /// Whether the catalog lives in the network (records were given).
    pub(crate) fn is_network(&self) -> bool {
        self.sync.is_some()
    }

    /// Counts a local change for the publisher.
    pub(crate) fn changed(&self) {
        if let Some(s) = &self.sync {
            s.changes.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The sync half of an [`Uplink`]: the records and the group-commit state.
struct SyncState {
    records: Arc<dyn CatalogRecords>,
    publish: tokio::sync::Mutex<()>,
    pull: tokio::sync::Mutex<()>,
    /// Local changes made so far (bumped by every catalog write).
    changes: std::sync::atomic::AtomicU64,
    /// `changes` as of the start of the last successful publish.
    published: std::sync::atomic::AtomicU64,
    /// The next publish writes a snapshot whatever `snapshot_every` says, even with no
    /// change queued (set by [`CatalogSync::request_snapshot`]).
    snapshot_due: std::sync::atomic::AtomicBool,
    /// That snapshot stores every chunk anew instead of re-using the ones stored before
    /// (`repair`: a stored chunk may be the damaged blob).
    snapshot_fresh: std::sync::atomic::AtomicBool,
    /// The writers record as last read (when, its seq, its set): a publish right after
    /// a pull uses it instead of reading it again (see [`WRITERS_FRESH`]).
    writers_read: std::sync::Mutex<Option<(std::time::Instant, u64, BTreeSet<WriterId>)>>,
}

/// How long a read of the writers record stands in for another in a publish: a command
/// publishes within this of its pull, one round trip fewer. A record read this much
/// earlier is as good as one read at once by a writer that registers just after it:
/// the protocol takes both (an older `writers_seq` in a delta is not a stale record; a
/// writer not listed yet is merged once a pull lists it).
pub(crate) const WRITERS_FRESH: std::time::Duration = std::time::Duration::from_secs(2);

impl SyncState {
    fn new(records: Arc<dyn CatalogRecords>) -> Self {
        Self {
            records,
            publish: tokio::sync::Mutex::new(()),
            pull: tokio::sync::Mutex::new(()),
            changes: Default::default(),
            published: Default::default(),
            snapshot_due: Default::default(),
            snapshot_fresh: Default::default(),
            writers_read: Default::default(),
        }
    }
}

pub(crate) fn applied(inner: &CatalogSync) -> Result<BTreeMap<WriterId, u64>, CatalogError> {
    Ok(inner
        .catalog
        .sync_value::<Vec<(WriterId, u64)>>(APPLIED)?
        .unwrap_or_default()
        .into_iter()
        .collect())
}

/// Stores the positions `a` (merged with the ones stored; see [`merge_applied`]).
pub(crate) fn set_applied(
    inner: &CatalogSync,
    a: &BTreeMap<WriterId, u64>,
) -> Result<(), CatalogError> {
    inner
        .catalog
        .update_sync(|tx| merge_applied(tx, &mut a.clone()))
}

/// Stores the positions `a` merged with the ones stored (another process using this
/// catalog dir may have merged further meanwhile: positions only move forward), and
/// leaves the merged positions in `a`.
fn merge_applied(tx: &SyncTx<'_, '_>, a: &mut BTreeMap<WriterId, u64>) -> Result<(), CatalogError> {
    for (w, s) in tx
        .sync_value::<Vec<(WriterId, u64)>>(APPLIED)?
        .unwrap_or_default()
    {
        let e = a.entry(w).or_insert(0);
        *e = (*e).max(s);
    }
    let v: Vec<(WriterId, u64)> = a.iter().map(|(w, s)| (*w, *s)).collect();
    tx.set_sync_value(APPLIED, &v)
}

/// Per writer, the `clock` of its last delta merged here.
pub(crate) fn clocks(inner: &CatalogSync) -> Result<BTreeMap<WriterId, Hlc>, CatalogError> {
    Ok(inner
        .catalog
        .sync_value::<Vec<(WriterId, Hlc)>>(CLOCKS)?
        .unwrap_or_default()
        .into_iter()
        .collect())
}

/// Per writer, the `frontier` of its last delta merged here.
pub(crate) fn frontiers(inner: &CatalogSync) -> Result<BTreeMap<WriterId, Hlc>, CatalogError> {
    Ok(inner
        .catalog
        .sync_value::<Vec<(WriterId, Hlc)>>(FRONTIERS)?
        .unwrap_or_default()
        .into_iter()
        .collect())
}

/// The causal-stability rule: the least of `own` and each of `writers`' reading in
/// `readings` (zero for a writer without one). With delta `clock`s as readings it is a
/// writer's merge frontier; with the `frontier`s of every writer's last delta it is the
/// point at or below which every writer has merged every change, so a tombstone there
/// can go (see [`crate::catalog::log::Delta::frontier`]).
pub(crate) fn stability(
    writers: &BTreeSet<WriterId>,
    readings: &BTreeMap<WriterId, Hlc>,
    own: Hlc,
) -> Hlc {
    writers
        .iter()
        .map(|w| readings.get(w).copied().unwrap_or_default())
        .fold(own, Hlc::min)
}

/// Records what writer `w`'s delta `d`, just merged, says of its clock and frontier.
fn merged_delta(tx: &SyncTx<'_, '_>, d: &log::Delta) -> Result<(), CatalogError> {
    for (name, v) in [(CLOCKS, d.clock), (FRONTIERS, d.frontier)] {
        let mut all: BTreeMap<WriterId, Hlc> = tx
            .sync_value::<Vec<(WriterId, Hlc)>>(name)?
            .unwrap_or_default()
            .into_iter()
            .collect();
        let e = all.entry(d.writer).or_default();
        *e = (*e).max(v);
        let all: Vec<(WriterId, Hlc)> = all.into_iter().collect();
        tx.set_sync_value(name, &all)?;
    }
    Ok(())
}

/// Makes `s` the newest snapshot known here, if it is newer than the one known.
pub(crate) fn remember_snapshot(inner: &CatalogSync, s: &SnapshotRef) -> Result<(), CatalogError> {
    let newer = inner
        .catalog
        .sync_value::<SnapshotRef>(SNAPSHOT)?
        .is_none_or(|old| old.taken_at < s.taken_at);
    if newer {
        inner.catalog.set_sync_value(SNAPSHOT, s)?;
    }
    Ok(())
}

fn blob_name(writer: &WriterId, kind: &str, seq: u64) -> String {
    format!("{kind} {seq} of writer {writer}")
}

fn record_what(kind: &str) -> String {
    format!("catalog {kind} record")
}

/// One catalog blob a new machine needs (see [`CatalogSync::live_blobs`]).
#[derive(Debug, Clone)]
pub(crate) struct LiveBlob {
    /// What it is, for reports: "snapshot taken by writer W" or "delta N of writer W".
    pub name: String,
    pub blob: BlobRef,
}
