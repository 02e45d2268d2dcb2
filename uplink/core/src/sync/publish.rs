//! Publishing: this writer's delta (and a snapshot every so often), under the catalog's
//! publish lock, with group commit.

use super::{
    APPLIED, CLOCKS, CatalogStatus, CatalogSync, FRONTIERS, OWN, OwnLog, PublishReport,
    RecordErrorKind, SNAPSHOT, SnapshotStatus, SyncError, SyncState, UNAVAILABLE, Unavailable,
    applied, blob_name, clocks, frontiers, merge_applied, stability,
};
use crate::catalog::log::{self, Blob, BlobRef, Delta, Head, HeadDelta, LogError, SnapshotRef};
use crate::catalog::{CatalogError, Hlc, PublishLock, WriterId};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

impl CatalogSync {
    /// One publish of everything queued. Caller holds the publish lock.
    pub(super) async fn publish(
        self: &Arc<Self>,
        sync: &SyncState,
    ) -> Result<PublishReport, SyncError> {
        // Read before the changes: every change made at or below it is among them (a
        // change ticks the clock and queues itself in one transaction).
        let clock = self.catalog.clock()?;
        let pending = self.catalog.pending()?;
        let me = self.catalog.current_writer()?;
        let mut applied = applied(self)?;
        let mut report = PublishReport::default();
        let own: OwnLog = self.catalog.sync_value(OWN)?.unwrap_or_default();
        let mut known: BTreeSet<WriterId> = applied.keys().copied().collect();
        known.remove(&me);
        // As the pull just before read it, if it did (one round trip fewer).
        let writers = self.writers_fresh(sync).await?;
        let forced = sync.snapshot_due.load(Ordering::SeqCst);
        if pending.is_empty() && !forced {
            // A writer is listed only once its first head is stored; one that published
            // heals its place in the writers record.
            if own.seq > 0 {
                report.bytes_sent += self.register_from(sync, &known, Some(writers)).await?;
            }
            return Ok(report);
        }
        let merged: BTreeMap<WriterId, u64> = applied
            .iter()
            .filter(|(w, _)| **w != me)
            .map(|(w, s)| (*w, *s))
            .collect();
        // Every writer known: listed, or merged here.
        let others: BTreeSet<WriterId> = writers
            .1
            .iter()
            .chain(&known)
            .copied()
            .filter(|w| *w != me)
            .collect();
        let frontier = stability(&others, &clocks(self)?, clock);
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
            // Tombstones every writer has merged go first: a snapshot never carries
            // a collected one.
            let floor = stability(&others, &frontiers(self)?, frontier);
            let collected = self.catalog.collect_tombstones(floor)?;
            if collected > 0 {
                tracing::info!(collected, "dropped tombstones every writer has merged");
            }
            // A tree of chunks, streamed from the catalog; only chunks not stored before
            // are uploaded (all of them when `repair` asked for this snapshot).
            let taken_at = self.catalog.next_version()?.hlc;
            let stored = self
                .put_snapshot(
                    &applied,
                    floor,
                    taken_at,
                    seq,
                    forced && sync.snapshot_fresh.load(Ordering::SeqCst),
                )
                .await?;
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
                floor,
                blob: manifest,
            });
        }
        let changes = log::merge_changes(
            own.inline
                .as_ref()
                .map(|d| d.changes.clone())
                .unwrap_or_default(),
            pending.iter().map(|(c, _)| c.clone()).collect(),
        );
        let delta = Delta {
            writer: me,
            seq,
            prev: own.head.clone(),
            snapshot: snapshot.clone(),
            writers_seq: writers.0,
            merged: merged.clone(),
            clock,
            frontier,
            changes,
            prev_seq: Some(own.blob_seq()),
        };
        // Small enough, and no snapshot to name: the delta, with the changes of every
        // delta since the last blob delta, rides in the head record (see `log`, *Inline
        // deltas*).
        let limit = self.pieces.config().inline_head;
        let inline = if report.snapshot || limit == 0 {
            None
        } else {
            let next = OwnLog {
                seq,
                head: own.head.clone(),
                blob_seq: Some(own.blob_seq()),
                inline: Some(Delta {
                    snapshot: None,
                    ..delta.clone()
                }),
            };
            next.head_value(me)
                .map(|h| log::seal_head(self.catalog_key(), &h))
                .and_then(Result::ok)
                .filter(|v| v.len() <= limit)
                .map(|v| (v, next))
        };
        let (value, next) = match inline {
            Some((value, next)) => (value, next),
            None => {
                let (value, next, sent) = self.publish_blob(&mut seq, delta).await?;
                report.bytes_sent += sent;
                (value, next)
            }
        };
        applied.insert(me, seq);
        // The head may land even if this put fails, or the process dies during it: from
        // here on this seq and delta count as this writer's own (the next delta follows
        // this one), so a sequence number is never offered twice with different contents
        // (nodes holding the first would refuse every later head as not newer). The
        // changes stay queued until a head is stored; a reader that merged this delta
        // meets them again in the next one, which merges to the same state.
        self.catalog
            .update_sync(|tx| tx.set_sync_value(OWN, &next))?;
        report.bytes_sent += self.put_head(sync, &own, seq, value).await?;
        // Published: remember it (one transaction), then drop the queued changes it
        // carried.
        self.catalog.update_sync(|tx| {
            tx.set_sync_value(OWN, &next)?;
            merge_applied(tx, &mut applied)?;
            if let Some(s) = &snapshot {
                tx.set_sync_value(SNAPSHOT, s)?;
            }
            Ok(())
        })?;
        if forced {
            sync.snapshot_due.store(false, Ordering::SeqCst);
            sync.snapshot_fresh.store(false, Ordering::SeqCst);
        }
        if report.snapshot
            && let Some(s) = &snapshot
        {
            // Chunks only older snapshots used are not re-used any more.
            self.catalog.forget_snapshot_chunks(Some(s.taken_at.0))?;
        }
        // Listed only now that its head is stored (the changes stay queued until then).
        report.bytes_sent += self.register_from(sync, &known, Some(writers)).await?;
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

impl CatalogSync {
    /// Uploads `delta` (which carries the changes of the inline deltas before it) as
    /// blob delta `*seq`; returns the sealed head naming it, this writer's log after it,
    /// and the bytes sent. A delta of more than one segment does not fit a record: the
    /// head then names an empty delta after it (`*seq` moves on).
    async fn publish_blob(
        self: &Arc<Self>,
        seq: &mut u64,
        delta: Delta,
    ) -> Result<(Vec<u8>, OwnLog, u64), SyncError> {
        let me = delta.writer;
        let (mut blob, mut sent) = self
            .put_blob(&blob_name(&me, "delta", *seq), &Blob::Delta(delta.clone()))
            .await?;
        let head = |seq: u64, blob: &BlobRef| Head {
            writer: me,
            seq,
            delta: HeadDelta::Blob(blob.clone()),
        };
        let mut value = log::seal_head(self.catalog_key(), &head(*seq, &blob));
        if matches!(value, Err(LogError::TooLarge { .. })) {
            *seq += 1;
            let bridge = Delta {
                seq: *seq,
                prev: Some(blob),
                changes: Vec::new(),
                prev_seq: None,
                ..delta
            };
            let (b, more) = self
                .put_blob(&blob_name(&me, "delta", *seq), &Blob::Delta(bridge))
                .await?;
            sent += more;
            blob = b;
            value = log::seal_head(self.catalog_key(), &head(*seq, &blob));
        }
        let next = OwnLog {
            seq: *seq,
            head: Some(blob),
            blob_seq: None,
            inline: None,
        };
        Ok((value?, next, sent))
    }
}

/// Compare-and-swap attempts at storing a head record: the second follows a read that
/// showed this writer's previous put did not land.
const HEAD_ATTEMPTS: usize = 3;

impl CatalogSync {
    /// Stores this writer's head record at `seq` by compare-and-swap on the head it
    /// last offered (`prev`), so that a replica that does not hold this writer's last
    /// head never overwrites it. On a refusal, reads what the network holds: a head this
    /// writer never offered is another replica writing under its id
    /// ([`SyncError::Cloned`]); an older one means its last puts did not land, and the
    /// put is tried again against that one.
    pub(super) async fn put_head(
        &self,
        sync: &SyncState,
        prev: &OwnLog,
        seq: u64,
        value: Vec<u8>,
    ) -> Result<u64, SyncError> {
        let me = self.catalog.writer();
        let what = format!("head record of writer {me}");
        let salt = log::head_salt(self.catalog_key(), &me);
        let mut expected = Some(prev.seq);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let put = self
                .put_record(sync, &what, salt.clone(), seq, value.clone(), expected)
                .await;
            match put {
                Err(SyncError::Record { ref source, .. })
                    if source.kind == RecordErrorKind::CompareAndSwap
                        && attempt < HEAD_ATTEMPTS =>
                {
                    let held = self.read_head(sync, &me, 0).await?;
                    if let Some(h) = held.as_ref().filter(|h| prev.disowns(h)) {
                        return Err(SyncError::Cloned {
                            writer: me,
                            held: h.seq,
                            own: prev.seq,
                        });
                    }
                    let held = held.map(|h| h.seq);
                    if held == expected {
                        // The nodes that refused hold nothing this writer can name.
                        return put;
                    }
                    expected = held;
                }
                other => return other,
            }
        }
    }

    /// Moves this replica off writer id `old`, which another replica also writes under
    /// (a copied or restored config dir; see [`Catalog::rotate_writer`]): from now on it
    /// publishes under a new id, everything it wrote as `old` queued again, and it reads
    /// `old`'s log as another writer's, from the start. Says so to the user.
    pub(super) fn rotate_writer(
        &self,
        old: WriterId,
        why: &SyncError,
    ) -> Result<WriterId, SyncError> {
        let new = self.catalog.rotate_writer(old, |tx, _| {
            tx.set_sync_value(OWN, &OwnLog::default())?;
            let applied: Vec<(WriterId, u64)> = tx
                .sync_value::<Vec<(WriterId, u64)>>(APPLIED)?
                .unwrap_or_default()
                .into_iter()
                .filter(|(w, _)| *w != old)
                .collect();
            tx.set_sync_value(APPLIED, &applied)?;
            // What was merged of `old` here was partly this replica's own log, not the
            // network's: nothing of it may count towards tombstone stability.
            for name in [CLOCKS, FRONTIERS] {
                let kept: Vec<(WriterId, Hlc)> = tx
                    .sync_value::<Vec<(WriterId, Hlc)>>(name)?
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|(w, _)| *w != old)
                    .collect();
                tx.set_sync_value(name, &kept)?;
            }
            Ok(())
        })?;
        tracing::warn!(
            old = %old,
            new = %new,
            "{why}. This replica now publishes as writer {new} and merges what writer {old} \
             published; nothing is lost. If the other copy is not wanted, stop it."
        );
        Ok(new)
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
        let report = match self.publish(sync).await {
            Err(e @ SyncError::Cloned { writer, .. }) => {
                // Not under this id any more: merge what the other replica published
                // as it, then publish everything again under the new one.
                let new = self.rotate_writer(writer, &e)?;
                self.pull().await?;
                self.catalog.requeue_writer(writer)?;
                let mut report = self.publish(sync).await?;
                report.new_writer = Some(new);
                report
            }
            other => other?,
        };
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
