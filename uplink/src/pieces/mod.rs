//! [`Pieces`]: the piece service, the one door to the storage nodes. It owns the piece
//! store, the node source, signing orders, node selection and the node statistics, and
//! offers upload, download, delete, audit, renew and repair of pieces. Its fields are
//! private: the catalog sync and the `Uplink` API go through its methods.
//!
//! ```text
//!   mod.rs (Pieces, its doors) ──> upload, download, maintain (child modules)
//!   maintain ──> upload (receipt rule), download (piece fetch)
//! ```
//! Every module here imports only from the crate's leaves (`catalog`, `codec`,
//! `crypto`, `orders`, `segment`, `select`, `store`, `settings`, `metrics`, `access`,
//! `error`), never from `client`, `sync` or `repair`.

use std::sync::Arc;
use std::time::Duration;

use crate::access::Access;
use crate::catalog::{Catalog, ObjectEntry, SegmentInfo};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::settings::UplinkConfig;
use shoal_proto::PieceId;

use crate::orders::Orders;
use crate::store::{NodeAddress, NodeSource, PieceError, PiecePlacement, PieceStore};
use shoal_proto::messages::ListedPiece;

mod download;
mod maintain;
mod upload;

pub(crate) use download::ObjectDownload;
pub(crate) use upload::ObjectUpload;
use upload::Reaper;

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
    access: Arc<Access>,
    store: Arc<dyn PieceStore>,
    nodes: Arc<dyn NodeSource>,
    /// The node statistics (and which object ids are in use) live in the catalog's
    /// database; this handle is used for nothing else.
    catalog: Catalog,
    config: UplinkConfig,
    metrics: Metrics,
    /// Bounds the long-tail pieces waited on in the background (see `upload::Reaper`).
    reaper: Reaper,
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

    /// Encrypts, codes and stores everything `reader` yields after `first` as segments
    /// (see `upload`); returns the segments and the scheme used.
    pub(crate) async fn upload<R: tokio::io::AsyncRead + Unpin + Send>(
        self: &Arc<Self>,
        ctx: ObjectUpload<'_>,
        reader: R,
    ) -> Result<(Vec<SegmentInfo>, crate::codec::Scheme), Error> {
        upload::upload_object(self, ctx, reader).await
    }

    /// Writes plaintext bytes `[start, end)` of `segments` to `writer` (see `download`).
    pub(crate) async fn download<W: tokio::io::AsyncWrite + Unpin + Send>(
        self: &Arc<Self>,
        ctx: ObjectDownload<'_>,
        segments: &[SegmentInfo],
        start: u64,
        end: u64,
        writer: &mut W,
    ) -> Result<u64, Error> {
        download::download_range(self, ctx, segments, start, end, writer).await
    }

    /// Deletes the pieces of `entry`, unless another entry shares them.
    pub(crate) async fn delete_entry(self: &Arc<Self>, entry: &ObjectEntry) -> DeleteReport {
        upload::delete_pieces(self, entry).await
    }

    /// Deletes the pieces of `segments`.
    pub(crate) async fn delete_segments(
        self: &Arc<Self>,
        segments: &[SegmentInfo],
    ) -> DeleteReport {
        upload::delete_segment_pieces(self, segments).await
    }

    /// One page (at most `limit`) of the owner's pieces on `node`, after `after`.
    pub(crate) async fn list_page(
        &self,
        node: NodeAddress,
        after: Option<PieceId>,
        limit: u32,
    ) -> Result<Vec<ListedPiece>, PieceError> {
        let order = Orders::new(self.access.owner())
            .list_pieces(node.id, after, limit, shoal_proto::time::unix_ms())
            .map_err(|e| PieceError::Refused {
                node: node.id,
                reason: format!("cannot sign the listing order: {e}"),
            })?;
        let timeout = self.config.piece_timeout;
        match tokio::time::timeout(timeout, self.store.list_pieces(node, order)).await {
            Ok(r) => r,
            Err(_) => Err(PieceError::Timeout {
                node: node.id,
                seconds: timeout.as_secs_f64(),
            }),
        }
    }

    /// Deletes `pieces`.
    pub(crate) async fn delete_placements(
        self: &Arc<Self>,
        pieces: &[PiecePlacement],
    ) -> DeleteReport {
        upload::delete_placements(self, pieces).await
    }
}
