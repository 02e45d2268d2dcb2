//! The background reaper: waits for the late receipts of cancelled long-tail pieces
//! and deletes what arrives (bounded).

use std::collections::HashMap;
use std::sync::Arc;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::types::{PieceOutcome, PieceTicket};
use crate::pieces::delete::{delete_order, delete_piece};
use crate::pieces::service::{Pieces, Reaper};

impl Reaper {
    pub(super) fn take(
        &self,
        pieces: &Arc<Pieces>,
        mut tasks: JoinSet<PieceOutcome>,
        mut late: HashMap<tokio::task::Id, PieceTicket>,
    ) {
        if late.is_empty() {
            return; // dropping `tasks` aborts what is left
        }
        let n = u32::try_from(late.len()).unwrap_or(u32::MAX);
        let Ok(permit) = self.slots.clone().try_acquire_many_owned(n) else {
            pieces
                .metrics
                .piece_uploads
                .with_label_values(&["cancelled"])
                .inc_by(late.len() as u64);
            tracing::debug!(
                pieces = late.len(),
                "reaper full: long tail left to lease expiry"
            );
            return;
        };
        let pieces = pieces.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let wait = pieces.config.piece_timeout;
            let until = Instant::now() + wait;
            let mut deletes = JoinSet::new();
            while !late.is_empty() {
                let Ok(Some(joined)) =
                    tokio::time::timeout_at(until, tasks.join_next_with_id()).await
                else {
                    break;
                };
                let id = match &joined {
                    Ok((id, _)) => *id,
                    Err(e) => e.id(),
                };
                late.remove(&id);
                // An upload that failed stored nothing; a receipt means the node holds
                // the piece.
                if let Ok((
                    _,
                    PieceOutcome {
                        result: Ok(_),
                        node,
                        piece_id,
                        ..
                    },
                )) = joined
                    && let Some(order) = delete_order(&pieces, node.id, piece_id)
                {
                    deletes.spawn(delete_piece(&pieces, node.address(), order));
                }
            }
            drop(tasks);
            let mut deleted = 0u64;
            let mut failed = 0u64;
            let _ = tokio::time::timeout(wait, async {
                while let Some(r) = deletes.join_next().await {
                    if matches!(r, Ok(Ok(()))) {
                        deleted += 1;
                    } else {
                        failed += 1;
                    }
                }
            })
            .await;
            failed += deletes.len() as u64;
            let m = &pieces.metrics;
            m.late_pieces
                .with_label_values(&["deleted"])
                .inc_by(deleted);
            m.late_pieces
                .with_label_values(&["delete_failed"])
                .inc_by(failed);
            m.piece_uploads
                .with_label_values(&["cancelled"])
                .inc_by(late.len() as u64);
        });
    }
}
