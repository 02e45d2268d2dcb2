//! Pulling: merging what other writers published, and putting back this writer's
//! records when the DHT lost them.

use super::{
    CatalogSync, OWN, OwnLog, PULL_ROUNDS, PullReport, SNAPSHOT, SyncError, SyncState, UNAVAILABLE,
    Unavailable, WRITERS_SEEN, applied, merge_applied, merged_delta,
};
use crate::catalog::WriterId;
use crate::catalog::log::{self, Delta, Head, HeadDelta, SnapshotRef};
use futures::future::join_all;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Head records (and then their deltas) a pull reads at once: one round for a few
/// writers instead of one each, bounded for many (in chunks).
const CONCURRENT_READS: usize = 16;

impl CatalogSync {
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
        let mut round = 0;
        loop {
            round += 1;
            if let Some(report) = self.pull_round(sync, round < PULL_ROUNDS).await? {
                return Ok(report);
            }
        }
    }

    /// One round of [`Self::pull`]. `None`: a delta names a newer writers record than
    /// the one read, and `again` allows another round (the record may have changed
    /// since it was read); without `again` that is [`SyncError::StaleWriters`].
    async fn pull_round(
        self: &Arc<Self>,
        sync: &SyncState,
        again: bool,
    ) -> Result<Option<PullReport>, SyncError> {
        let mut report = PullReport::default();
        let mut applied = applied(self)?;
        // The heads of the writers merged before are read with the writers record, in
        // the same round; those it newly lists, after it.
        let merged: Vec<WriterId> = applied.keys().copied().collect();
        let (listed, early) =
            futures::join!(self.writers(sync), self.read_heads(sync, &merged, &applied));
        let (writers_seq, listed) = listed?;
        let mut read: BTreeMap<WriterId, Result<Option<Head>, SyncError>> =
            merged.into_iter().zip(early).collect();
        // Writers merged before stay known even if a racing update dropped them from
        // the record (the next publish puts them back).
        let writers: BTreeSet<WriterId> = listed.iter().chain(applied.keys()).copied().collect();
        report.writers = writers.len();
        let mut me = self.catalog.current_writer()?;
        let mut rotated_from = None;
        let mut own_head_lost = false;
        let mut unread: Vec<WriterId> = Vec::new();
        let mut heads: Vec<Head> = Vec::new();
        let new: Vec<WriterId> = writers
            .iter()
            .filter(|w| !read.contains_key(*w))
            .copied()
            .collect();
        let late = self.read_heads(sync, &new, &applied).await;
        read.extend(new.into_iter().zip(late));
        // Read after the heads: a publish of this writer in another process records its
        // head before putting it.
        let own: OwnLog = self.catalog.sync_value(OWN)?.unwrap_or_default();
        for w in &writers {
            let seen = applied.get(w).copied().unwrap_or(0);
            let Some(read) = read.remove(w) else { continue };
            match read {
                Ok(Some(head)) if *w == me && own.disowns(&head) => {
                    // Another replica writes under this id: move to a new one, and read
                    // this id's log as another writer's, from its start.
                    let e = SyncError::Cloned {
                        writer: me,
                        held: head.seq,
                        own: own.seq,
                    };
                    rotated_from = Some(me);
                    me = self.rotate_writer(me, &e)?;
                    report.new_writer = Some(me);
                    applied.remove(w);
                    heads.push(head);
                }
                Ok(Some(head)) if head.seq > seen => heads.push(head),
                Ok(Some(head)) if *w == me && head.seq < own.seq => own_head_lost = true,
                Ok(Some(_)) => {}
                Ok(None) if *w == me => own_head_lost = own.seq > 0,
                // Listed writers have published (see `publish`): only a writer known
                // from elsewhere may have no head yet (a snapshot merged below may show
                // otherwise).
                Ok(None) if seen == 0 && !listed.contains(w) => unread.push(*w),
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
        // Per writer with news, its newest deltas: the head's, and for an inline head
        // that this replica is behind the base of, the base too.
        let mut deltas: Vec<Vec<Delta>> = Vec::with_capacity(heads.len());
        let mut fetched: Vec<Result<Vec<Delta>, SyncError>> = Vec::new();
        for some in heads.chunks(CONCURRENT_READS) {
            let at = |w: &WriterId| applied.get(w).copied().unwrap_or(0);
            fetched.extend(join_all(some.iter().map(|h| self.head_deltas(h, at(&h.writer)))).await);
        }
        for (h, got) in heads.iter().zip(fetched) {
            match got {
                Ok(d) => {
                    report.deltas += d.len();
                    deltas.push(d);
                }
                Err(SyncError::Catalog(e)) => return Err(e.into()),
                Err(e) => {
                    report.unavailable.insert(h.writer, Unavailable::of(&e));
                }
            }
        }
        // A delta that names a newer writers record than the one read: the record read
        // was stale (it may lack writers), or changed since it was read.
        let named = deltas
            .iter()
            .filter_map(|t| t.first())
            .map(|d| d.writers_seq)
            .chain(self.catalog.sync_value::<u64>(WRITERS_SEEN)?)
            .max()
            .unwrap_or(0);
        // (No record at all is a lost one, not a stale one: it is put back below.)
        if named > writers_seq && writers_seq > 0 {
            if again {
                return Ok(None);
            }
            return Err(SyncError::StaleWriters {
                held: writers_seq,
                named,
            });
        }
        // A head older than what another writer had merged of it is a rollback, even
        // for a replica that never merged that writer itself.
        let mut rolled_back = Vec::new();
        for d in deltas.iter().filter_map(|t| t.first()) {
            let known = deltas
                .iter()
                .filter_map(|t| t.first())
                .filter_map(|e| e.merged.get(&d.writer))
                .max()
                .copied()
                .unwrap_or(0);
            if known > d.seq {
                rolled_back.push(d.writer);
                report.unavailable.insert(
                    d.writer,
                    Unavailable::of(&SyncError::Rollback {
                        writer: d.writer,
                        seen: known,
                        offered: d.seq,
                    }),
                );
            }
        }
        deltas.retain(|t| t.first().is_none_or(|d| !rolled_back.contains(&d.writer)));
        heads.retain(|h| !rolled_back.contains(&h.writer));
        // A replica far behind (or new) starts from the newest snapshot named anywhere,
        // if it holds something not merged yet; one a few deltas behind walks them.
        let behind: u64 = heads
            .iter()
            .map(|h| h.seq - applied.get(&h.writer).copied().unwrap_or(0))
            .sum();
        let best = deltas
            .iter()
            .flatten()
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
                    tracing::warn!(error = %e, "cannot read the newest catalog snapshot; walking the deltas instead");
                    report.snapshot_refused = Some(Unavailable::of(&e));
                }
            }
        }
        for top in deltas {
            let Some(newest) = top.first() else {
                continue;
            };
            let w = newest.writer;
            let seen = applied.get(&w).copied().unwrap_or(0);
            if newest.seq <= seen {
                continue;
            }
            let chain = match self.walk_back(w, seen, top, &mut report).await {
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
                report.changes_applied += self.catalog.apply_remote_batch(&d.changes, |tx| {
                    merge_applied(tx, &mut applied)?;
                    merged_delta(tx, d)
                })?;
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
        if let Some(old) = rotated_from {
            // Both copies' changes under the old id, now merged, go out again under the
            // new one (see `Catalog::requeue_writer`).
            self.catalog.requeue_writer(old)?;
            // So that the next flush publishes them.
            sync.changes
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        for (w, why) in &report.unavailable {
            tracing::warn!(writer = %w, reason = %why, "a writer's catalog changes cannot be read; merged everything else");
        }
        let v: Vec<(WriterId, Unavailable)> = report
            .unavailable
            .iter()
            .map(|(w, r)| (*w, r.clone()))
            .collect();
        self.catalog.update_sync(|tx| {
            tx.set_sync_value(UNAVAILABLE, &v)?;
            let seen = tx.sync_value::<u64>(WRITERS_SEEN)?.unwrap_or(0);
            tx.set_sync_value(WRITERS_SEEN, &seen.max(writers_seq).max(named))
        })?;
        self.catalog.flush()?;
        // Put back what the network lost of this writer's own records, from what is
        // held here: the head it last published, and its place in the writers record.
        let own: OwnLog = self.catalog.sync_value(OWN)?.unwrap_or_default();
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
        Ok(Some(report))
    }

    /// Writer `w`'s head record, opened and checked against the `seen` sequence number
    /// already merged (a rollback is refused). `None`: the DHT holds none.
    /// The heads of `writers`, in their order, for a replica at `applied`: all at once,
    /// [`CONCURRENT_READS`] at a time (a round each).
    async fn read_heads(
        &self,
        sync: &SyncState,
        writers: &[WriterId],
        applied: &BTreeMap<WriterId, u64>,
    ) -> Vec<Result<Option<Head>, SyncError>> {
        let mut reads = Vec::with_capacity(writers.len());
        for some in writers.chunks(CONCURRENT_READS) {
            let at = |w: &WriterId| applied.get(w).copied().unwrap_or(0);
            reads.extend(join_all(some.iter().map(|w| self.read_head(sync, w, at(w)))).await);
        }
        reads
    }

    pub(super) async fn read_head(
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

    /// The newest deltas of head `h`, newest first, for a replica at `seen`: the blob
    /// delta it names; or the inline delta it carries (whose `prev` is the base, delta
    /// `prev_seq`) and, when `seen` is behind the base, the base delta (whose snapshot
    /// the inline one stands for).
    pub(super) async fn head_deltas(
        self: &Arc<Self>,
        h: &Head,
        seen: u64,
    ) -> Result<Vec<Delta>, SyncError> {
        let mut top = match &h.delta {
            HeadDelta::Blob(b) => return Ok(vec![self.get_delta(h.writer, h.seq, b).await?]),
            HeadDelta::Inline(d) => d.clone(),
        };
        let base = match &top.prev {
            Some(b) if top.prev_seq() > seen => self.get_delta(h.writer, top.prev_seq(), b).await?,
            _ => return Ok(vec![top]),
        };
        if top.snapshot.is_none() {
            top.snapshot = base.snapshot.clone();
        }
        Ok(vec![top, base])
    }

    /// Writer `w`'s deltas from `top` (its newest, newest first, each the one before the
    /// other) back to the first not merged yet (the one after `seen`), newest first.
    /// Each delta names the blob delta before it and its seq ([`Delta::prev_seq`]).
    pub(super) async fn walk_back(
        self: &Arc<Self>,
        w: WriterId,
        seen: u64,
        mut chain: Vec<Delta>,
        report: &mut PullReport,
    ) -> Result<Vec<Delta>, SyncError> {
        while let Some(oldest) = chain.last() {
            let want = oldest.prev_seq();
            if want <= seen {
                break;
            }
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
    pub(super) async fn republish(
        &self,
        sync: &SyncState,
        own: &OwnLog,
        known: &BTreeSet<WriterId>,
        head: bool,
    ) -> Result<(), SyncError> {
        self.register(sync, known).await?;
        let me = self.catalog.writer();
        if let (true, Some(h)) = (head, own.head_value(me)) {
            let value = log::seal_head(self.catalog_key(), &h)?;
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
}
