//! Pulling: merging what other writers published, and putting back this writer's
//! records when the DHT lost them.

use super::{
    CatalogSync, OWN, OwnLog, PullReport, SNAPSHOT, SyncError, SyncState, UNAVAILABLE, Unavailable,
    applied, merge_applied,
};
use crate::catalog::WriterId;
use crate::catalog::log::{self, Delta, Head, SnapshotRef};
use std::collections::BTreeSet;
use std::sync::Arc;

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
                    tracing::warn!(error = %e, "cannot read the newest catalog snapshot; walking the deltas instead");
                    report.snapshot_refused = Some(Unavailable::of(&e));
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

    /// Writer `w`'s deltas from `head` back to the first not merged yet (`seen + 1`),
    /// newest first.
    pub(super) async fn walk_back(
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
    pub(super) async fn republish(
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
}
