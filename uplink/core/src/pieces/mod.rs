//! [`Pieces`]: the piece service, the one door to the storage nodes. It owns the piece
//! store, the node source, signing orders, node selection and the node statistics, and
//! offers upload, download, delete, audit, renew and repair of pieces. Its fields are
//! private: the catalog sync and the `Uplink` API go through its methods.
//!
//! ```text
//!   mod.rs (Pieces, its doors) ──> upload/, download, maintain, delete
//!   maintain ──> upload (the receipt rule), download (piece fetch)
//!   upload/ ──> delete (cancelled and duplicate pieces)
//! ```
//! Every module here imports only from the crate's leaves (`catalog`, `codec`,
//! `crypto`, `orders`, `segment`, `select`, `store`, `settings`, `metrics`, `access`,
//! `error`), never from `client`, `sync` or `repair`.

use std::sync::Arc;

use crate::catalog::{ObjectEntry, SegmentInfo};
use crate::error::Error;
use shoal_proto::PieceId;

use crate::orders::Orders;
use crate::store::{NodeAddress, PieceError, PiecePlacement};
use shoal_proto::messages::ListedPiece;

mod delete;
mod download;
mod maintain;
mod upload;

mod service;

pub(crate) use download::ObjectDownload;
pub use service::{DeleteReport, Pieces, Progress};
pub(crate) use upload::ObjectUpload;

impl Pieces {
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
        delete::delete_pieces(self, entry).await
    }

    /// Deletes the pieces of `segments`.
    pub(crate) async fn delete_segments(
        self: &Arc<Self>,
        segments: &[SegmentInfo],
    ) -> DeleteReport {
        delete::delete_segment_pieces(self, segments).await
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
        delete::delete_placements(self, pieces).await
    }
}
