//! The catalog blobs a new machine needs (`renew` and `check` keep them alive), and
//! the snapshot request `repair` makes.

use super::{CatalogSync, LiveBlob, OWN, OwnLog, SNAPSHOT, SyncError, blob_name};
use crate::catalog::log::SnapshotRef;
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
    /// newest snapshot known here (its manifest and every chunk of its tree) and this
    /// writer's deltas after it (walking back from
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
        // The snapshot's manifest and every chunk of its tree.
        let mut out: Vec<LiveBlob> = match snapshot {
            Some(s) => {
                self.snapshot_blobs(&format!("snapshot taken by writer {}", s.taken_by), &s.blob)
                    .await
            }
            None => Vec::new(),
        };
        let own: OwnLog = self.catalog.sync_value(OWN)?.unwrap_or_default();
        let (mut seq, mut next) = (own.seq, own.head);
        let mut walked = 0;
        while let Some(blob) = next.take() {
            if seq <= covered || walked > MAX_RENEW_WALK {
                break;
            }
            walked += 1;
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
