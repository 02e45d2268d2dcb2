//! The catalog in the network: publishing this writer's changes and pulling the others'.
//!
//! Formats are in [`crate::catalog::log`], the merge rule in [`crate::catalog::model`];
//! this module moves the bytes, through the [`CatalogRecords`] trait for the DHT records
//! (the DHT client in production, [`crate::testing::MemoryRecords`] in tests) and the
//! uplink's own object upload and download for blobs.
//!
//! **Publish** (one per [`Uplink::flush`]; concurrent callers share one, a group commit):
//! take the queued changes, upload them as delta `seq + 1` of this writer's log (with a
//! snapshot of the whole catalog first, every [`UplinkConfig::snapshot_every`] deltas),
//! then point the writer's head record at it. The queue is cleared only after the head
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
use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use shoal_proto::messages::MutableRecord;
use shoal_proto::{RecordKey, Signed};

use crate::access::Access;
use crate::catalog::Catalog;
use crate::catalog::log::{
    self, Blob, BlobRef, CATALOG_BUCKET, Delta, Head, LogError, MAX_BLOB, Snapshot, SnapshotRef,
};
use crate::catalog::tag::{BlobKind, BlobTag};
use crate::catalog::{CatalogError, PublishLock, SyncTx, WriterId};
use crate::crypto::{BlockCipher, ObjectId};
pub use crate::error::{RecordError, SyncError};
use crate::pieces::Pieces;

/// Longest a catalog record lives without being republished; the DHT nodes' limit.
pub const MAX_RECORD_TTL: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);
/// Attempts at adding this writer to the writers record against racing writers.
const REGISTER_ATTEMPTS: usize = 8;

pub mod rebuild;

const APPLIED: &str = "applied";
const OWN: &str = "own";
const SNAPSHOT: &str = "snapshot";
const UNAVAILABLE: &str = "unavailable";

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

/// This writer's own log, as last published.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct OwnLog {
    seq: u64,
    head: Option<BlobRef>,
}

/// What a publish did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishReport {
    /// The delta's sequence number (`None`: nothing to publish).
    pub seq: Option<u64>,
    pub changes: usize,
    /// Whether a snapshot was taken with it.
    pub snapshot: bool,
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
    /// Writers whose news could not be read, and why. Everything else was merged; what
    /// only these writers hold is missing or outdated here until they can be read.
    pub unavailable: BTreeMap<WriterId, Unavailable>,
    /// Whether this writer's own head or writers record was missing from the DHT and
    /// was put back from what this replica holds.
    pub republished: bool,
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
}

impl Unavailable {
    fn of(e: &SyncError) -> Self {
        let kind = match e {
            SyncError::MissingHead { .. } => UnavailableKind::MissingHead,
            SyncError::Rollback { .. } => UnavailableKind::Rollback,
            SyncError::Fetch { .. } => UnavailableKind::Fetch,
            SyncError::MissingDelta { .. } => UnavailableKind::MissingDelta,
            SyncError::Record { .. } | SyncError::NotStored { .. } => UnavailableKind::Record,
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
}

impl SyncState {
    fn new(records: Arc<dyn CatalogRecords>) -> Self {
        Self {
            records,
            publish: tokio::sync::Mutex::new(()),
            pull: tokio::sync::Mutex::new(()),
            changes: Default::default(),
            published: Default::default(),
            snapshot_due: Default::default(),
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

impl CatalogSync {
    fn sync(&self) -> Option<&SyncState> {
        self.sync.as_ref()
    }

    pub(crate) fn catalog_key(&self) -> &[u8; 32] {
        self.access.catalog_key()
    }

    fn record_key(&self, salt: &[u8]) -> RecordKey {
        MutableRecord::key_for(self.access.owner().public_key(), salt)
    }

    async fn get_record(
        &self,
        sync: &SyncState,
        what: &str,
        salt: &[u8],
    ) -> Result<Option<Signed<MutableRecord>>, SyncError> {
        sync.records
            .get(self.record_key(salt))
            .await
            .map_err(|source| SyncError::Record {
                what: what.to_string(),
                source,
            })
    }

    async fn put_record(
        &self,
        sync: &SyncState,
        what: &str,
        salt: Vec<u8>,
        seq: u64,
        value: Vec<u8>,
        expected_seq: Option<u64>,
    ) -> Result<u64, SyncError> {
        let ttl = self.pieces.config().default_lease.min(MAX_RECORD_TTL);
        let len = value.len() as u64;
        let record = MutableRecord {
            public_key: *self.access.owner().public_key(),
            salt,
            seq,
            value,
            expires_at_ms: shoal_proto::time::unix_ms().saturating_add(ttl.as_millis() as u64),
        };
        let signed = Signed::sign(record, self.access.owner())
            .map_err(|e| SyncError::Sign(e.to_string()))?;
        let stored = sync
            .records
            .put(signed, expected_seq)
            .await
            .map_err(|source| SyncError::Record {
                what: what.to_string(),
                source,
            })?;
        if stored == 0 {
            return Err(SyncError::NotStored {
                what: what.to_string(),
            });
        }
        Ok(len * stored as u64)
    }

    /// The writers record: its seq (0 when there is none) and set.
    async fn writers(&self, sync: &SyncState) -> Result<(u64, BTreeSet<WriterId>), SyncError> {
        let what = record_what("writers");
        match self
            .get_record(sync, &what, &log::writers_salt(self.catalog_key()))
            .await?
        {
            None => Ok((0, BTreeSet::new())),
            Some(r) => Ok((
                r.seq,
                log::open_writers(self.catalog_key(), r.seq, &r.value)?,
            )),
        }
    }

    /// Makes sure the writers record lists this writer and every writer merged here
    /// (healing a record that lost one in a race): compare-and-swap, and on a lost race
    /// merge the sets and try again.
    async fn register(
        &self,
        sync: &SyncState,
        known: &BTreeSet<WriterId>,
    ) -> Result<u64, SyncError> {
        let me = self.catalog.writer();
        let mut sent = 0;
        for _ in 0..REGISTER_ATTEMPTS {
            let (seq, current) = self.writers(sync).await?;
            if current.contains(&me) && known.is_subset(&current) {
                return Ok(sent);
            }
            let mut next = current;
            next.insert(me);
            next.extend(known.iter().copied());
            let value = log::seal_writers(self.catalog_key(), seq + 1, &next)?;
            // A refusal (a racing writer got there first) shows on the next read.
            sent += self
                .put_record(
                    sync,
                    &record_what("writers"),
                    log::writers_salt(self.catalog_key()),
                    seq + 1,
                    value,
                    Some(seq),
                )
                .await
                .unwrap_or(0);
        }
        Err(SyncError::WritersRace {
            writer: me,
            attempts: REGISTER_ATTEMPTS,
        })
    }

    async fn put_blob(
        self: &Arc<Self>,
        what: &str,
        blob: &Blob,
    ) -> Result<(BlobRef, u64), SyncError> {
        let bytes = log::encode_blob(blob)?;
        let size = bytes.len() as u64;
        let object_id = ObjectId::random();
        let key = log::blob_key(self.catalog_key(), &object_id);
        let cipher = BlockCipher::new(&key, object_id);
        let lease = self.pieces.config().default_lease;
        let writer = self.catalog.writer();
        // Each piece says what it is, for `catalog rebuild` (a snapshot goes by the seq
        // of the delta published with it, which it covers).
        let (kind, seq) = match blob {
            Blob::Delta(d) => (BlobKind::Delta, d.seq),
            Blob::Snapshot(s) => (
                BlobKind::Snapshot,
                s.covers.get(&writer).copied().unwrap_or(0),
            ),
        };
        let ctx = crate::pieces::ObjectUpload {
            bucket: CATALOG_BUCKET,
            key: what,
            cipher: &cipher,
            scheme: self.pieces.config().catalog_scheme,
            expires_ms: shoal_proto::time::unix_ms().saturating_add(lease.as_millis() as u64),
            size_hint: Some(size),
            progress: None,
            allow_smaller: Some(true),
            tag: Some(BlobTag {
                writer,
                kind,
                seq,
                object_id,
                blob_size: size,
            }),
        };
        let (segments, _) = self
            .pieces
            .upload(ctx, Cursor::new(bytes))
            .await
            .map_err(|e| SyncError::Store {
                what: what.to_string(),
                source: Box::new(e),
            })?;
        let sent = segments
            .iter()
            .map(|s| s.piece_size * s.pieces.len() as u64)
            .sum();
        Ok((
            BlobRef {
                object_id,
                size,
                segments,
            },
            sent,
        ))
    }

    pub(crate) async fn get_blob(
        self: &Arc<Self>,
        what: &str,
        r: &BlobRef,
    ) -> Result<Blob, SyncError> {
        let wrong = |reason: String| SyncError::WrongBlob {
            what: what.to_string(),
            reason,
        };
        if r.size > MAX_BLOB {
            return Err(LogError::TooLarge {
                what: what.to_string(),
                size: r.size,
                limit: MAX_BLOB,
            }
            .into());
        }
        let total: u64 = r.segments.iter().map(|s| s.plain_size).sum();
        if total != r.size {
            return Err(wrong(format!(
                "segments hold {total} bytes, the reference says {}",
                r.size
            )));
        }
        let key = log::blob_key(self.catalog_key(), &r.object_id);
        let cipher = BlockCipher::new(&key, r.object_id);
        let mut out = Vec::with_capacity(r.size as usize);
        let ctx = crate::pieces::ObjectDownload {
            bucket: CATALOG_BUCKET,
            key: what,
            cipher: &cipher,
            progress: None,
        };
        self.pieces
            .download(ctx, &r.segments, 0, r.size, &mut out)
            .await
            .map_err(|e| SyncError::Fetch {
                what: what.to_string(),
                source: Box::new(e),
            })?;
        self.pieces.metrics().catalog_blobs_pulled.inc();
        Ok(log::decode_blob(what, &out)?)
    }

    async fn get_delta(
        self: &Arc<Self>,
        writer: WriterId,
        seq: u64,
        r: &BlobRef,
    ) -> Result<Delta, SyncError> {
        let what = blob_name(&writer, "delta", seq);
        match self.get_blob(&what, r).await? {
            Blob::Delta(d) if d.writer == writer && d.seq == seq => Ok(d),
            Blob::Delta(d) => Err(SyncError::WrongBlob {
                what,
                reason: format!("it is delta {} of writer {}", d.seq, d.writer),
            }),
            Blob::Snapshot(_) => Err(SyncError::WrongBlob {
                what,
                reason: "it is a snapshot".into(),
            }),
        }
    }

    async fn apply_snapshot(
        self: &Arc<Self>,
        s: &SnapshotRef,
        applied: &mut BTreeMap<WriterId, u64>,
    ) -> Result<usize, SyncError> {
        let what = format!(
            "snapshot taken by writer {} at {}",
            s.taken_by,
            s.taken_at.millis()
        );
        let snap = match self.get_blob(&what, &s.blob).await? {
            Blob::Snapshot(snap) => snap,
            Blob::Delta(_) => {
                return Err(SyncError::WrongBlob {
                    what,
                    reason: "it is a delta".into(),
                });
            }
        };
        if snap.covers != s.covers {
            return Err(SyncError::WrongBlob {
                what,
                reason: "it covers other log positions than its reference says".into(),
            });
        }
        for (w, seq) in &s.covers {
            let e = applied.entry(*w).or_insert(0);
            *e = (*e).max(*seq);
        }
        // The snapshot's entries and the positions it covers, in one transaction.
        let n = self
            .catalog
            .apply_remote_batch(&snap.changes, |tx| merge_applied(tx, applied))?;
        let newer = self
            .catalog
            .sync_value::<SnapshotRef>(SNAPSHOT)?
            .is_none_or(|old| old.taken_at < s.taken_at);
        if newer {
            self.catalog.set_sync_value(SNAPSHOT, s)?;
        }
        Ok(n)
    }

    /// Merges every writer's news that can be read. A writer whose head record is
    /// missing or refused, or whose deltas cannot be fetched, is skipped and named in
    /// [`PullReport::unavailable`] (and in [`CatalogStatus::unavailable`] until a pull
    /// reads it again): one missing writer never stalls the others. Only a failure of
    /// the writers record itself, or of the local catalog, fails the pull. Then this
    /// writer's own head and writers records are put back if the DHT lost them.
    pub(crate) async fn pull(self: &Arc<Self>) -> Result<PullReport, SyncError> {
        let Some(sync) = self.sync() else {
            return Ok(PullReport::default());
        };
        let _guard = sync.pull.lock().await;
        let mut report = PullReport::default();
        let (_, listed) = self.writers(sync).await?;
        let mut applied = applied(self)?;
        // Writers merged before stay known even if a racing update dropped them from
        // the record (the next publish puts them back).
        let writers: BTreeSet<WriterId> = listed.iter().chain(applied.keys()).copied().collect();
        report.writers = writers.len();
        let me = self.catalog.writer();
        let own: OwnLog = self.catalog.sync_value(OWN)?.unwrap_or_default();
        let mut own_head_lost = false;
        let mut unread: Vec<WriterId> = Vec::new();
        let mut heads: Vec<Head> = Vec::new();
        for w in &writers {
            let seen = applied.get(w).copied().unwrap_or(0);
            match self.read_head(sync, w, seen).await {
                Ok(Some(head)) if head.seq > seen => heads.push(head),
                Ok(Some(head)) if *w == me && head.seq < own.seq => own_head_lost = true,
                Ok(Some(_)) => {}
                Ok(None) if *w == me => own_head_lost = own.seq > 0,
                // Registered but never published, as far as this replica knows (a
                // snapshot merged below may show otherwise).
                Ok(None) if seen == 0 => unread.push(*w),
                Ok(None) => {
                    report.unavailable.insert(
                        *w,
                        Unavailable::of(&SyncError::MissingHead { writer: *w, seen }),
                    );
                }
                Err(SyncError::Rollback { .. }) if *w == me => own_head_lost = true,
                Err(SyncError::Catalog(e)) => return Err(e.into()),
                Err(e) => {
                    report.unavailable.insert(*w, Unavailable::of(&e));
                }
            }
        }
        let mut deltas: Vec<Delta> = Vec::with_capacity(heads.len());
        for h in &heads {
            match self.get_delta(h.writer, h.seq, &h.delta).await {
                Ok(d) => {
                    deltas.push(d);
                    report.deltas += 1;
                }
                Err(SyncError::Catalog(e)) => return Err(e.into()),
                Err(e) => {
                    report.unavailable.insert(h.writer, Unavailable::of(&e));
                }
            }
        }
        // A replica far behind (or new) starts from the newest snapshot named anywhere,
        // if it holds something not merged yet; one a few deltas behind walks them.
        let behind: u64 = heads
            .iter()
            .map(|h| h.seq - applied.get(&h.writer).copied().unwrap_or(0))
            .sum();
        let best = deltas
            .iter()
            .filter_map(|d| d.snapshot.as_ref())
            .max_by_key(|s| s.taken_at)
            .filter(|s| s.is_ahead_of(&applied))
            .filter(|_| applied.is_empty() || behind > self.pieces.config().snapshot_every)
            .cloned();
        if let Some(s) = best {
            // Without the snapshot the deltas are walked instead (slower, and only as
            // far back as they reach).
            match self.apply_snapshot(&s, &mut applied).await {
                Ok(n) => {
                    report.changes_applied += n;
                    report.snapshots += 1;
                }
                Err(SyncError::Catalog(e)) => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the newest catalog snapshot; walking the deltas instead")
                }
            }
        }
        for head_delta in deltas {
            let w = head_delta.writer;
            let seen = applied.get(&w).copied().unwrap_or(0);
            if head_delta.seq <= seen {
                continue;
            }
            let chain = match self.walk_back(w, seen, head_delta, &mut report).await {
                Ok(chain) => chain,
                Err(SyncError::Catalog(e)) => return Err(e.into()),
                Err(e) => {
                    report.unavailable.insert(w, Unavailable::of(&e));
                    continue;
                }
            };
            for d in chain.iter().rev() {
                // A delta and the position it brings the replica to, in one transaction:
                // a reader (here or in another process) sees all of it or none.
                applied.insert(w, d.seq);
                report.changes_applied += self
                    .catalog
                    .apply_remote_batch(&d.changes, |tx| merge_applied(tx, &mut applied))?;
            }
            // A snapshot named by a delta we merged is the newest known if it is newer.
            if let Some(s) = chain.first().and_then(|d| d.snapshot.as_ref()) {
                let newer = self
                    .catalog
                    .sync_value::<SnapshotRef>(SNAPSHOT)?
                    .is_none_or(|old| old.taken_at < s.taken_at);
                if newer && !s.is_ahead_of(&applied) {
                    self.catalog.set_sync_value(SNAPSHOT, s)?;
                }
            }
        }
        for w in unread {
            if let Some(&seen) = applied.get(&w).filter(|s| **s > 0) {
                report.unavailable.insert(
                    w,
                    Unavailable::of(&SyncError::MissingHead { writer: w, seen }),
                );
            }
        }
        for (w, why) in &report.unavailable {
            tracing::warn!(writer = %w, reason = %why, "a writer's catalog changes cannot be read; merged everything else");
        }
        let v: Vec<(WriterId, Unavailable)> = report
            .unavailable
            .iter()
            .map(|(w, r)| (*w, r.clone()))
            .collect();
        self.catalog.set_sync_value(UNAVAILABLE, &v)?;
        self.catalog.flush()?;
        // Put back what the network lost of this writer's own records, from what is
        // held here: the head it last published, and its place in the writers record.
        let mut known: BTreeSet<WriterId> = applied.keys().copied().collect();
        known.remove(&me);
        let unlisted = own.seq > 0 && !(listed.contains(&me) && known.is_subset(&listed));
        if own_head_lost || unlisted {
            match self.republish(sync, &own, &known, own_head_lost).await {
                Ok(()) => report.republished = true,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot put this writer's catalog records back into the DHT")
                }
            }
        }
        Ok(report)
    }

    /// Writer `w`'s head record, opened and checked against the `seen` sequence number
    /// already merged (a rollback is refused). `None`: the DHT holds none.
    async fn read_head(
        &self,
        sync: &SyncState,
        w: &WriterId,
        seen: u64,
    ) -> Result<Option<Head>, SyncError> {
        let what = format!("head record of writer {w}");
        let Some(r) = self
            .get_record(sync, &what, &log::head_salt(self.catalog_key(), w))
            .await?
        else {
            return Ok(None);
        };
        let head = log::open_head(self.catalog_key(), w, r.seq, &r.value)?;
        if head.seq < seen {
            return Err(SyncError::Rollback {
                writer: *w,
                seen,
                offered: head.seq,
            });
        }
        Ok(Some(head))
    }

    /// Writer `w`'s deltas from `head` back to the first not merged yet (`seen + 1`),
    /// newest first.
    async fn walk_back(
        self: &Arc<Self>,
        w: WriterId,
        seen: u64,
        head: Delta,
        report: &mut PullReport,
    ) -> Result<Vec<Delta>, SyncError> {
        let mut chain = vec![head];
        while let Some(oldest) = chain.last() {
            if oldest.seq <= seen + 1 {
                break;
            }
            let want = oldest.seq - 1;
            let Some(prev) = oldest.prev.clone() else {
                return Err(SyncError::MissingDelta {
                    writer: w,
                    seq: want,
                    seq_after: oldest.seq,
                });
            };
            chain.push(self.get_delta(w, want, &prev).await?);
            report.deltas += 1;
        }
        Ok(chain)
    }

    /// Puts this writer's head record (as last published, `own`) back into the DHT if
    /// `head` is set, and makes sure the writers record lists it and `known`.
    async fn republish(
        &self,
        sync: &SyncState,
        own: &OwnLog,
        known: &BTreeSet<WriterId>,
        head: bool,
    ) -> Result<(), SyncError> {
        self.register(sync, known).await?;
        let me = self.catalog.writer();
        if let (true, Some(delta)) = (head, &own.head) {
            let value = log::seal_head(
                self.catalog_key(),
                &Head {
                    writer: me,
                    seq: own.seq,
                    delta: delta.clone(),
                },
            )?;
            self.put_record(
                sync,
                &format!("head record of writer {me}"),
                log::head_salt(self.catalog_key(), &me),
                own.seq,
                value,
                None,
            )
            .await?;
            tracing::info!(
                seq = own.seq,
                "put this writer's lost head record back into the DHT"
            );
        }
        Ok(())
    }

    /// One publish of everything queued. Caller holds the publish lock.
    async fn publish(self: &Arc<Self>, sync: &SyncState) -> Result<PublishReport, SyncError> {
        let pending = self.catalog.pending()?;
        let me = self.catalog.writer();
        let mut applied = applied(self)?;
        let mut report = PublishReport::default();
        let own: OwnLog = self.catalog.sync_value(OWN)?.unwrap_or_default();
        let mut known: BTreeSet<WriterId> = applied.keys().copied().collect();
        known.remove(&me);
        report.bytes_sent += self.register(sync, &known).await?;
        let forced = sync.snapshot_due.load(Ordering::SeqCst);
        if pending.is_empty() && !forced {
            return Ok(report);
        }
        let mut seq = own.seq + 1;
        applied.insert(me, seq);
        // A snapshot every `snapshot_every` deltas (of all writers) since the last one.
        let last = self.catalog.sync_value::<SnapshotRef>(SNAPSHOT)?;
        let since: u64 = applied
            .iter()
            .map(|(w, s)| {
                s.saturating_sub(
                    last.as_ref()
                        .and_then(|l| l.covers.get(w))
                        .copied()
                        .unwrap_or(0),
                )
            })
            .sum();
        let mut snapshot = last;
        if forced || since >= self.pieces.config().snapshot_every.max(1) {
            let changes = self.catalog.all_changes()?;
            let entries = changes.len() as u64;
            let blob = Blob::Snapshot(Snapshot {
                covers: applied.clone(),
                changes,
            });
            let (blob, sent) = self
                .put_blob(&format!("snapshot at delta {seq} of writer {me}"), &blob)
                .await?;
            report.bytes_sent += sent;
            report.snapshot = true;
            snapshot = Some(SnapshotRef {
                taken_by: me,
                taken_at: self.catalog.next_version()?.hlc,
                covers: applied.clone(),
                entries,
                blob,
            });
        }
        let delta = Delta {
            writer: me,
            seq,
            prev: own.head.clone(),
            snapshot: snapshot.clone(),
            changes: pending.iter().map(|(c, _)| c.clone()).collect(),
        };
        let (mut head_blob, sent) = self
            .put_blob(&blob_name(&me, "delta", seq), &Blob::Delta(delta))
            .await?;
        report.bytes_sent += sent;
        let mut head = Head {
            writer: me,
            seq,
            delta: head_blob.clone(),
        };
        let mut value = log::seal_head(self.catalog_key(), &head);
        if matches!(value, Err(LogError::TooLarge { .. })) {
            // A delta of more than one segment does not fit a record: point the head at
            // an empty delta after it instead.
            seq += 1;
            applied.insert(me, seq);
            let bridge = Delta {
                writer: me,
                seq,
                prev: Some(head_blob),
                snapshot: snapshot.clone(),
                changes: Vec::new(),
            };
            let (b, sent) = self
                .put_blob(&blob_name(&me, "delta", seq), &Blob::Delta(bridge))
                .await?;
            report.bytes_sent += sent;
            head_blob = b;
            head = Head {
                writer: me,
                seq,
                delta: head_blob.clone(),
            };
            value = log::seal_head(self.catalog_key(), &head);
        }
        report.bytes_sent += self
            .put_record(
                sync,
                &format!("head record of writer {me}"),
                log::head_salt(self.catalog_key(), &me),
                seq,
                value?,
                None,
            )
            .await?;
        // Published: remember it (one transaction), then drop the queued changes it
        // carried.
        self.catalog.update_sync(|tx| {
            tx.set_sync_value(
                OWN,
                &OwnLog {
                    seq,
                    head: Some(head_blob),
                },
            )?;
            merge_applied(tx, &mut applied)?;
            if let Some(s) = &snapshot {
                tx.set_sync_value(SNAPSHOT, s)?;
            }
            Ok(())
        })?;
        if forced {
            sync.snapshot_due.store(false, Ordering::SeqCst);
        }
        self.catalog.clear_published(&pending)?;
        self.catalog.flush()?;
        report.seq = Some(seq);
        report.changes = pending.len();
        self.pieces.metrics().catalog_publishes.inc();
        self.pieces
            .metrics()
            .catalog_publish_bytes
            .inc_by(report.bytes_sent);
        tracing::info!(
            seq,
            changes = report.changes,
            snapshot = report.snapshot,
            bytes_sent = report.bytes_sent,
            "catalog published"
        );
        Ok(report)
    }
}

/// How often a publish waiting for another process's publish lock says so.
const LOCK_NOTICE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
/// How often the publish lock is tried while another process holds it.
const LOCK_POLL: std::time::Duration = std::time::Duration::from_millis(50);

impl CatalogSync {
    /// Waits for the catalog's publish lock (held by another process's publish, if
    /// taken), telling the user which process holds it and for how long this one has
    /// waited, every [`LOCK_NOTICE_EVERY`].
    pub(crate) async fn publish_lock(&self) -> Result<PublishLock, CatalogError> {
        let started = std::time::Instant::now();
        let mut told = std::time::Duration::ZERO;
        loop {
            if let Some(lock) = self.catalog.try_publish_lock()? {
                return Ok(lock);
            }
            let waited = started.elapsed();
            if waited >= told + LOCK_NOTICE_EVERY {
                told = waited;
                let holder = self
                    .catalog
                    .publish_lock_holder()
                    .map(|h| h.to_string())
                    .unwrap_or_else(|| "another process".into());
                tracing::warn!(
                    "waiting {:.0} s for the catalog's publish lock, held by {holder}",
                    waited.as_secs_f64()
                );
            }
            tokio::time::sleep(LOCK_POLL).await;
        }
    }
}

/// One catalog blob a new machine needs (see [`CatalogSync::live_blobs`]).
#[derive(Debug, Clone)]
pub(crate) struct LiveBlob {
    /// What it is, for reports: "snapshot taken by writer W" or "delta N of writer W".
    pub name: String,
    pub blob: BlobRef,
}

/// Deltas walked back from this writer's head when renewing the catalog: more than a
/// snapshot interval's worth is never needed (older deltas are covered by the snapshot).
const MAX_RENEW_WALK: usize = 1024;

impl CatalogSync {
    /// Makes the next publish write a fresh snapshot of the whole catalog (on new
    /// nodes, like any upload), even if no change is queued: `repair` uses it when a
    /// live catalog blob has lost pieces. Once that publish is in, the damaged blobs
    /// are no longer needed (the new snapshot covers them) nor renewed. Returns false
    /// without a network catalog.
    pub(crate) fn request_snapshot(&self) -> bool {
        let Some(sync) = self.sync() else {
            return false;
        };
        sync.snapshot_due.store(true, Ordering::SeqCst);
        // So that a flush does not take it as already published.
        sync.changes.fetch_add(1, Ordering::SeqCst);
        true
    }

    /// The catalog blobs a new machine needs, whose pieces `renew` keeps alive: the
    /// newest snapshot known here and this writer's deltas after it (walking back from
    /// its head; each delta names the one before it).
    ///
    /// LATER(repair): each writer renews, checks and repairs its own deltas; the deltas
    /// of a writer that stopped running live until the next snapshot covers them or
    /// their lease ends.
    pub(crate) async fn live_blobs(self: &Arc<Self>) -> Result<Vec<LiveBlob>, SyncError> {
        let me = self.catalog.writer();
        let snapshot = self.catalog.sync_value::<SnapshotRef>(SNAPSHOT)?;
        let covered = snapshot
            .as_ref()
            .and_then(|s| s.covers.get(&me).copied())
            .unwrap_or(0);
        let mut out: Vec<LiveBlob> = snapshot
            .map(|s| LiveBlob {
                name: format!("snapshot taken by writer {}", s.taken_by),
                blob: s.blob,
            })
            .into_iter()
            .collect();
        let own: OwnLog = self.catalog.sync_value(OWN)?.unwrap_or_default();
        let (mut seq, mut next) = (own.seq, own.head);
        while let Some(blob) = next.take() {
            if seq <= covered || out.len() > MAX_RENEW_WALK {
                break;
            }
            if seq > covered + 1 {
                next = self.get_delta(me, seq, &blob).await?.prev;
            }
            out.push(LiveBlob {
                name: blob_name(&me, "delta", seq),
                blob,
            });
            seq -= 1;
        }
        Ok(out)
    }
}

impl CatalogSync {
    /// Publishes every change made so far (group commit; see `Uplink::flush`).
    pub(crate) async fn flush(self: &Arc<Self>) -> Result<PublishReport, SyncError> {
        let Some(sync) = self.sync() else {
            self.catalog.flush()?;
            return Ok(PublishReport::default());
        };
        let wanted = sync.changes.load(Ordering::SeqCst);
        let _guard = sync.publish.lock().await;
        if sync.published.load(Ordering::SeqCst) >= wanted && wanted > 0 {
            return Ok(PublishReport::default());
        }
        let taken = sync.changes.load(Ordering::SeqCst);
        // One publisher at a time across every process using this catalog dir: the
        // sequence number is read, used and stored under the lock.
        let _lock = self.publish_lock().await?;
        let report = self.publish(sync).await?;
        sync.published.fetch_max(taken, Ordering::SeqCst);
        Ok(report)
    }

    /// This writer's sync state.
    pub(crate) fn status(&self) -> Result<CatalogStatus, SyncError> {
        let c = &self.catalog;
        let own: OwnLog = c.sync_value(OWN)?.unwrap_or_default();
        let mut writers = applied(self)?;
        writers.entry(c.writer()).or_insert(own.seq);
        Ok(CatalogStatus {
            writer: c.writer(),
            pending: c.pending_count(),
            published_seq: own.seq,
            last_snapshot: c
                .sync_value::<SnapshotRef>(SNAPSHOT)?
                .map(|s| SnapshotStatus {
                    taken_by: s.taken_by,
                    taken_at_ms: s.taken_at.millis(),
                    entries: s.entries,
                    covers: s.covers,
                }),
            writers,
            unavailable: c
                .sync_value::<Vec<(WriterId, Unavailable)>>(UNAVAILABLE)?
                .unwrap_or_default()
                .into_iter()
                .collect(),
        })
    }

    /// The blob of the newest snapshot this replica knows of.
    pub(crate) fn snapshot_blob(&self) -> Result<Option<BlobRef>, SyncError> {
        Ok(self
            .catalog
            .sync_value::<SnapshotRef>(SNAPSHOT)?
            .map(|s| s.blob))
    }

    /// Fetches the delta at `blob` and returns the reference to the delta before it.
    pub(crate) async fn previous_blob(
        self: &Arc<Self>,
        blob: &BlobRef,
    ) -> Result<Option<BlobRef>, SyncError> {
        match self.get_blob("inspected delta", blob).await? {
            Blob::Delta(d) => Ok(d.prev),
            Blob::Snapshot(_) => Ok(None),
        }
    }
}
