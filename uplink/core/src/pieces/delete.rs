//! Deleting pieces: signed delete orders to their nodes, best effort (a piece that
//! cannot be deleted now expires with its lease).

use std::sync::Arc;

use futures::StreamExt;
use shoal_proto::messages::DeleteOrder;
use shoal_proto::{NodeId, PieceId, Signed};

use super::service::{DeleteReport, Pieces};
use crate::catalog::{ObjectEntry, SegmentInfo};
use crate::orders::Orders;
use crate::store::{NodeAddress, PieceError, PiecePlacement};

pub(super) fn delete_order(
    pieces: &Pieces,
    node: NodeId,
    piece: PieceId,
) -> Option<Signed<DeleteOrder>> {
    Orders::new(pieces.access.owner())
        .delete(node, piece, shoal_proto::time::unix_ms())
        .ok()
}

/// One delete, within `piece_timeout`: a node that never answers costs that long and
/// counts as failed (its piece goes when its lease ends), never hangs the command.
pub(super) fn delete_piece(
    pieces: &Pieces,
    node: NodeAddress,
    order: Signed<DeleteOrder>,
) -> impl std::future::Future<Output = Result<(), PieceError>> + Send + 'static {
    let call = pieces.store.delete(node, order);
    let limit = pieces.config.piece_timeout;
    async move {
        tokio::time::timeout(limit, call)
            .await
            .unwrap_or(Err(PieceError::Timeout {
                node: node.id,
                seconds: limit.as_secs_f64(),
            }))
    }
}

/// Asks every node holding a piece of `entry` to delete it. Best effort: pieces that
/// cannot be deleted now are collected by their nodes when the lease ends.
/// Deletes the pieces of an entry that was just replaced or removed in the catalog,
/// unless another live entry still uses them (a copy sharing its source's pieces).
pub(super) async fn delete_pieces(pieces: &Arc<Pieces>, entry: &ObjectEntry) -> DeleteReport {
    match pieces.catalog.object_id_in_use(&entry.object_id) {
        Ok(false) => delete_segments(pieces, entry.segments()).await,
        // Shared, or unknown: keep the pieces (their leases reclaim them if nobody renews).
        Ok(true) | Err(_) => DeleteReport::default(),
    }
}

/// Deletes every piece of `segments` (content that never reached the catalog).
pub(super) async fn delete_segment_pieces(
    pieces: &Arc<Pieces>,
    segments: &[SegmentInfo],
) -> DeleteReport {
    delete_segments(pieces, segments).await
}

pub(super) async fn delete_segments(
    pieces: &Arc<Pieces>,
    segments: &[SegmentInfo],
) -> DeleteReport {
    let placements: Vec<PiecePlacement> = segments
        .iter()
        .flat_map(|s| s.pieces.iter().cloned())
        .collect();
    delete_placements(pieces, &placements).await
}

pub(super) async fn delete_placements(
    pieces: &Arc<Pieces>,
    placements: &[PiecePlacement],
) -> DeleteReport {
    let calls: Vec<_> = placements
        .iter()
        .filter_map(|p| {
            let order = delete_order(pieces, NodeId(p.node_id), PieceId(p.piece_id))?;
            Some(delete_piece(pieces, p.node(), order))
        })
        .collect();
    let results: Vec<_> = futures::stream::iter(calls)
        .buffer_unordered(32)
        .collect()
        .await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    DeleteReport {
        pieces_deleted: results.len() - failed,
        pieces_failed: failed,
    }
}
