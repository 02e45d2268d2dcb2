//! Publishing: this writer's delta (and a snapshot every so often), under the catalog's
//! publish lock, with group commit.

use super::{
    CatalogStatus, CatalogSync, OWN, OwnLog, PublishReport, SNAPSHOT, SnapshotStatus, SyncError,
    SyncState, UNAVAILABLE, Unavailable, applied, blob_name, merge_applied,
};
use crate::catalog::log::{self, Blob, BlobRef, Delta, Head, LogError, SnapshotRef};
use crate::catalog::{CatalogError, PublishLock, WriterId};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

impl CatalogSync {
    /// One publish of everything queued. Caller holds the publish lock.
    pub(super) async fn publish(
        self: &Arc<Self>,
        sync: &SyncState,
    ) -> Result<PublishReport, SyncError> {
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
            // A tree of chunks, streamed from the catalog; only chunks not stored before
            // are uploaded (all of them when `repair` asked for this snapshot).
            let taken_at = self.catalog.next_version()?.hlc;
            let stored = self.put_snapshot(&applied, taken_at, seq, forced).await?;
            let Some(manifest) = stored.manifest else {
                return Err(SyncError::WrongBlob {
                    what: format!("snapshot at delta {seq} of writer {me}"),
                    reason: "no manifest was stored".into(),
                });
            };
            report.bytes_sent += stored.bytes_sent;
            report.snapshot = true;
            report.snapshot_bytes_sent = stored.bytes_sent;
            report.snapshot_chunks_stored = stored.chunks_stored;
            report.snapshot_chunks_reused = stored.chunks_reused;
            snapshot = Some(SnapshotRef {
                taken_by: me,
                taken_at,
                covers: applied.clone(),
                entries: stored.entries,
                blob: manifest,
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
        // The head may land even if this put fails, or the process dies during it: from
        // here on this seq and delta count as this writer's own (the next delta follows
        // this one), so a sequence number is never offered twice with different contents
        // (nodes holding the first would refuse every later head as not newer). The
        // changes stay queued until a head is stored; a reader that merged this delta
        // meets them again in the next one, which merges to the same state.
        self.catalog.update_sync(|tx| {
            tx.set_sync_value(
                OWN,
                &OwnLog {
                    seq,
                    head: Some(head_blob.clone()),
                },
            )
        })?;
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
        if report.snapshot
            && let Some(s) = &snapshot
        {
            // Chunks only older snapshots used are not re-used any more.
            self.catalog.forget_snapshot_chunks(Some(s.taken_at.0))?;
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
            Blob::Snapshot(_) | Blob::Chunk(_) => Ok(None),
        }
    }
}
