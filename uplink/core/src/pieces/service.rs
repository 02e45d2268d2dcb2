//! The state of the piece service: [`Pieces`] and the long-tail [`Reaper`]'s slots, a
//! leaf of `pieces` (it imports none of its siblings; they all import it). Fields are
//! visible to `pieces` and its children only.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::access::Access;
use crate::catalog::Catalog;
use crate::metrics::Metrics;
use crate::settings::UplinkConfig;
use crate::store::{NodeSource, PieceStore};

/// Called with the number of plaintext bytes just processed.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// What a delete did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeleteReport {
    pub pieces_deleted: usize,
    /// Pieces whose node could not be reached; their leases will expire.
    pub pieces_failed: usize,
}

/// The piece service (see the module doc). Cheap to share behind an `Arc`.
pub struct Pieces {
    pub(super) access: Arc<Access>,
    pub(super) store: Arc<dyn PieceStore>,
    pub(super) nodes: Arc<dyn NodeSource>,
    /// The node statistics (and which object ids are in use) live in the catalog's
    /// database; this handle is used for nothing else.
    pub(super) catalog: Catalog,
    pub(super) config: UplinkConfig,
    pub(super) metrics: Metrics,
    /// Bounds the long-tail pieces waited on in the background (see [`Reaper`]).
    pub(super) reaper: Reaper,
}

impl std::fmt::Debug for Pieces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pieces")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Pieces {
    pub(crate) fn new(
        access: Arc<Access>,
        store: Arc<dyn PieceStore>,
        nodes: Arc<dyn NodeSource>,
        catalog: Catalog,
        config: UplinkConfig,
        metrics: Metrics,
    ) -> Self {
        Self {
            access,
            store,
            nodes,
            catalog,
            config,
            metrics,
            reaper: Reaper::default(),
        }
    }

    pub fn config(&self) -> &UplinkConfig {
        &self.config
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The node source (candidates for new pieces, and every node for a rebuild).
    pub(crate) fn nodes(&self) -> &Arc<dyn NodeSource> {
        &self.nodes
    }

    /// Waits (at most `limit`) until the background reaper has dealt with every long-tail
    /// piece of past uploads. Returns whether everything was settled in time.
    pub async fn settle(&self, limit: Duration) -> bool {
        self.reaper.settle(limit).await
    }
}

/// Pieces that may be stored after their segment was committed (or given up): waits for
/// their late receipts in the background and deletes what arrives, so that a short grace
/// leaves no orphans. Bounded: at most [`Reaper::PIECES`] pieces are waited on at once
/// (beyond that a tail is dropped and left to lease expiry), each tail for at most
/// `piece_timeout`, and its deletes for at most as long again.
#[derive(Debug, Clone)]
pub(super) struct Reaper {
    pub(super) slots: Arc<Semaphore>,
}

impl Default for Reaper {
    fn default() -> Self {
        Self {
            slots: Arc::new(Semaphore::new(Self::PIECES)),
        }
    }
}

impl Reaper {
    /// Most long-tail pieces waited on at once, over every upload of one uplink.
    pub const PIECES: usize = 1024;

    /// Waits (at most `limit`) until no long tail is being waited on.
    pub(super) async fn settle(&self, limit: Duration) -> bool {
        let n = Self::PIECES as u32;
        tokio::time::timeout(limit, self.slots.acquire_many(n))
            .await
            .is_ok_and(|p| p.is_ok())
    }
}
