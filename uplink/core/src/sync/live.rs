//! The catalog blobs a new machine needs (`renew` and `check` keep them alive), and
//! the snapshot request `repair` makes.

use super::{
    CatalogSync, LiveBlob, MAX_RECORD_TTL, OWN, OwnLog, SNAPSHOT, SyncError, applied, blob_name,
    clocks, record_what,
};
use crate::catalog::WriterId;
use crate::catalog::log::{self, Head, HeadDelta, SnapshotRef};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Deltas walked back from this writer's head when renewing the catalog: more than a
/// snapshot interval's worth is never needed (older deltas are covered by the snapshot).
const MAX_RENEW_WALK: usize = 1024;

impl CatalogSync {
    /// Makes the next publish write a fresh snapshot of the whole catalog (on new
    /// nodes, like any upload), even if no change is queued: `repair` uses it when a
    /// live catalog blob has lost pieces. Once that publish is in, the damaged blobs
    /// are no longer needed (the new snapshot covers them) nor renewed. Returns false
    /// without a network catalog.
    ///
    /// With `fresh`, that snapshot stores every chunk of its tree anew (what `repair`
    /// wants: a chunk stored before may be the damaged blob); otherwise it re-uses the
    /// chunks stored before, as every snapshot does.
    pub(crate) fn request_snapshot(&self, fresh: bool) -> bool {
        let Some(sync) = self.sync() else {
            return false;
        };
        if fresh {
            sync.snapshot_fresh.store(true, Ordering::SeqCst);
        }
        sync.snapshot_due.store(true, Ordering::SeqCst);
        // So that a flush does not take it as already published.
        sync.changes.fetch_add(1, Ordering::SeqCst);
        true
    }

    /// The catalog blobs a new machine needs, whose pieces `renew` keeps alive: the
    /// newest snapshot known here (its manifest and every chunk of its tree) and this
    /// writer's deltas after it (walking back from
    /// its head; each delta names the one before it).
    ///
    /// Every other listed writer's head delta is among them too: a new machine reads it
    /// first, whether or not a snapshot covers it, and its writer may be gone (see
    /// [`Self::cover_all`]).
    pub(crate) async fn live_blobs(self: &Arc<Self>) -> Result<Vec<LiveBlob>, SyncError> {
        let me = self.catalog.writer();
        let snapshot = self.catalog.sync_value::<SnapshotRef>(SNAPSHOT)?;
        let covered = snapshot
            .as_ref()
            .and_then(|s| s.covers.get(&me).copied())
            .unwrap_or(0);
        // The snapshot's manifest and every chunk of its tree.
        let mut out: Vec<LiveBlob> = match snapshot {
            Some(s) => {
                self.snapshot_blobs(&format!("snapshot taken by writer {}", s.taken_by), &s.blob)
                    .await
            }
            None => Vec::new(),
        };
        for (w, head) in self.others_heads().await? {
            // An inline head's blob is its base, the writer's newest blob delta.
            let (seq, blob) = match head.delta {
                HeadDelta::Blob(b) => (head.seq, b),
                HeadDelta::Inline(d) => {
                    let prev_seq = d.prev_seq();
                    match d.prev {
                        Some(b) => (prev_seq, b),
                        None => continue,
                    }
                }
            };
            out.push(LiveBlob {
                name: blob_name(&w, "delta", seq),
                blob,
            });
        }
        let own: OwnLog = self.catalog.sync_value(OWN)?.unwrap_or_default();
        // The blob deltas only: the inline ones after the newest live in the head record
        // (which `renew_records` keeps alive).
        let (mut seq, mut next) = (own.blob_seq(), own.head);
        let mut head = true;
        let mut walked = 0;
        while let Some(blob) = next.take() {
            // The head delta always: a new machine reads it first, even when the
            // snapshot published with it covers it.
            if (seq <= covered && !head) || walked > MAX_RENEW_WALK {
                break;
            }
            head = false;
            let mut prev_seq = seq.saturating_sub(1);
            walked += 1;
            if seq > covered + 1 {
                let d = self.get_delta(me, seq, &blob).await?;
                prev_seq = d.prev_seq();
                next = d.prev;
            }
            out.push(LiveBlob {
                name: blob_name(&me, "delta", seq),
                blob,
            });
            seq = prev_seq;
        }
        Ok(out)
    }
}

/// A writer other than this one gone quiet this long is presumed gone: nobody renews its
/// deltas but a snapshot that covers them (half the default lease: it has had time to
/// renew once).
const PRESUMED_GONE: std::time::Duration =
    std::time::Duration::from_secs(crate::settings::DEFAULT_LEASE.as_secs() / 2);

/// Deltas a new machine needs that only their writer renews (`uplink check`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RenewedElsewhere {
    pub writer: WriterId,
    /// Its deltas after the newest snapshot (that snapshot does not cover them).
    pub deltas: u64,
    /// When it last published (unix ms; its last delta merged here).
    pub last_published_ms: u64,
    /// Whether it has been quiet long enough to be presumed gone: then no live writer
    /// renews these deltas, and they expire with their lease unless `uplink renew`
    /// (which takes a snapshot covering them) runs.
    pub presumed_gone: bool,
}

impl CatalogSync {
    /// Every listed writer's head but this one's, as the DHT holds them now (none
    /// without records).
    async fn others_heads(&self) -> Result<Vec<(WriterId, Head)>, SyncError> {
        let Some(sync) = self.sync() else {
            return Ok(Vec::new());
        };
        let me = self.catalog.writer();
        let (_, listed) = self.writers(sync).await?;
        let mut out = Vec::new();
        for w in listed.into_iter().filter(|w| *w != me) {
            match self.read_head(sync, &w, 0).await {
                Ok(Some(head)) => out.push((w, head)),
                Ok(None) => {}
                Err(SyncError::Catalog(e)) => return Err(e.into()),
                // A pull names it; renewing and checking the rest goes on.
                Err(e) => {
                    tracing::warn!(writer = %w, error = %e, "cannot read a writer's head record")
                }
            }
        }
        Ok(out)
    }

    /// Takes a snapshot (a publish) if the newest one known here leaves out deltas
    /// merged here: from then on this writer renews a snapshot that covers them, so
    /// nothing a new machine needs depends on a writer that may be gone. `renew` does
    /// it. Returns whether it took one.
    pub(crate) async fn cover_all(self: &Arc<Self>) -> Result<bool, SyncError> {
        let covers = self
            .catalog
            .sync_value::<SnapshotRef>(SNAPSHOT)?
            .map(|s| s.covers)
            .unwrap_or_default();
        let uncovered = applied(self)?
            .iter()
            .any(|(w, s)| *s > covers.get(w).copied().unwrap_or(0));
        if !uncovered || !self.request_snapshot(false) {
            return Ok(false);
        }
        Ok(self.flush().await?.snapshot)
    }

    /// Other writers' deltas a new machine needs that the newest snapshot known here
    /// does not cover: only their writer renews them.
    pub(crate) fn renewed_elsewhere(&self) -> Result<Vec<RenewedElsewhere>, SyncError> {
        let me = self.catalog.writer();
        let covers = self
            .catalog
            .sync_value::<SnapshotRef>(SNAPSHOT)?
            .map(|s| s.covers)
            .unwrap_or_default();
        let clocks = clocks(self)?;
        let now = shoal_proto::time::unix_ms();
        Ok(applied(self)?
            .into_iter()
            .filter(|(w, _)| *w != me)
            .filter_map(|(w, s)| {
                let deltas = s.saturating_sub(covers.get(&w).copied().unwrap_or(0));
                let last_published_ms = clocks.get(&w).map(|c| c.millis()).unwrap_or(0);
                (deltas > 0).then(|| RenewedElsewhere {
                    writer: w,
                    deltas,
                    last_published_ms,
                    presumed_gone: now.saturating_sub(last_published_ms)
                        > PRESUMED_GONE.as_millis() as u64,
                })
            })
            .collect())
    }

    /// Keeps the catalog's records alive `lease` from now (at most a year): the writers
    /// record and every listed writer's head, each the same seq and value signed again
    /// (a renewal, see the DHT's record rules), so a writer that is gone does not take
    /// its head with it. Returns how many were renewed.
    pub(crate) async fn renew_records(
        &self,
        lease: std::time::Duration,
    ) -> Result<usize, SyncError> {
        let Some(sync) = self.sync() else {
            return Ok(0);
        };
        let (_, listed) = self.writers(sync).await?;
        let mut salts = vec![(
            record_what("writers"),
            log::writers_salt(self.catalog_key()),
        )];
        salts.extend(listed.iter().map(|w| {
            (
                format!("head record of writer {w}"),
                log::head_salt(self.catalog_key(), w),
            )
        }));
        let expires_at_ms = shoal_proto::time::unix_ms()
            .saturating_add(lease.min(MAX_RECORD_TTL).as_millis() as u64);
        let mut renewed = 0;
        for (what, salt) in salts {
            let Some(held) = self.get_record(sync, &what, &salt).await? else {
                continue;
            };
            if held.expires_at_ms >= expires_at_ms {
                continue;
            }
            self.put_record_until(
                sync,
                &what,
                salt,
                held.seq,
                held.value.clone(),
                None,
                expires_at_ms,
            )
            .await?;
            renewed += 1;
        }
        Ok(renewed)
    }
}
