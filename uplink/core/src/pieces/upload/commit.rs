//! Committing a segment: gathering `success` verified receipts, the long-tail grace,
//! and handing the rest to the reaper.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use shoal_proto::NodeId;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::fanout::{PendingSegment, Replay, SegmentRun};
use super::types::{Handover, PieceOutcome, PieceTicket, lock};
use crate::catalog::SegmentInfo;
use crate::error::Error;
use crate::pieces::delete::{delete_order, delete_piece, delete_placements};
use crate::pieces::service::Pieces;
use crate::segment::Layout;
use crate::select::{NodeStats, Transfer};
use crate::store::PiecePlacement;

/// What the commit has gathered of one segment's piece uploads.
pub(super) struct Gathered {
    pub(super) ok: Vec<PiecePlacement>,
    pub(super) failures: Vec<String>,
}

impl Gathered {
    /// Takes one finished piece task: a verified receipt becomes a placement, anything
    /// else a failure remembered against the node (excluded for the rest of the object).
    /// Returns the piece's index when it failed and is to be placed again.
    pub(super) fn take(
        &mut self,
        run: &mut SegmentRun,
        joined: Result<(tokio::task::Id, PieceOutcome), tokio::task::JoinError>,
    ) -> Option<u16> {
        let pieces = run.pieces.clone();
        let (id, outcome) = match joined {
            Ok((id, o)) => {
                run.tickets.remove(&id);
                (id, o)
            }
            Err(join) => {
                let ticket = run.tickets.remove(&join.id());
                self.failures.push(join.to_string());
                let t = ticket?;
                lock(&run.exclude).insert(t.node.id);
                return run.lost(join.id(), t.index);
            }
        };
        match outcome.result {
            Ok(receipt) => {
                pieces
                    .metrics
                    .piece_uploads
                    .with_label_values(&["ok"])
                    .inc();
                let _ = pieces.catalog.record_node(
                    &outcome.node.id,
                    NodeStats::from_outcome(
                        Transfer::Upload,
                        Ok(()),
                        None,
                        shoal_proto::time::unix_ms(),
                    ),
                );
                if run.active.get(&outcome.index) != Some(&id) {
                    // Cannot happen (a piece is replaced only once its upload can no
                    // longer store it), but two placements of one index must never be
                    // recorded: the extra copy is deleted.
                    if let Some(order) = delete_order(&pieces, outcome.node.id, outcome.piece_id) {
                        tokio::spawn(delete_piece(&pieces, outcome.node.address(), order));
                    }
                    return None;
                }
                self.ok.push(PiecePlacement {
                    index: outcome.index,
                    node_id: outcome.node.id.0,
                    address: outcome.node.address,
                    piece_id: outcome.piece_id.0,
                    piece_hash: receipt.piece_hash.0,
                });
                None
            }
            Err(e) => {
                tracing::debug!(segment = run.index, piece = outcome.index, error = %e, "piece upload failed");
                pieces
                    .metrics
                    .piece_uploads
                    .with_label_values(&["failed"])
                    .inc();
                let _ = pieces.catalog.record_node(
                    &outcome.node.id,
                    NodeStats::from_outcome(
                        Transfer::Upload,
                        Err(&e),
                        None,
                        shoal_proto::time::unix_ms(),
                    ),
                );
                lock(&run.exclude).insert(outcome.node.id);
                self.failures.push(e.to_string());
                run.lost(id, outcome.index)
            }
        }
    }
}

pub(super) async fn commit(
    pieces: Arc<Pieces>,
    seg: PendingSegment,
    exclude: Arc<Mutex<HashSet<NodeId>>>,
    (bucket, key): (String, String),
) -> Result<SegmentInfo, Error> {
    let PendingSegment {
        mut run,
        plain_size,
        sealed_size,
    } = seg;
    let success = usize::from(run.scheme.success);
    let mut got = Gathered {
        ok: Vec::new(),
        failures: Vec::new(),
    };
    let segment = run.index;
    let err = |reason: String| Error::Upload {
        bucket: bucket.clone(),
        key: key.clone(),
        segment,
        reason,
    };
    // Wait for `success` verified receipts: the segment cannot do without them. A piece
    // whose current upload fails meanwhile is placed again on another node (`take` says
    // which: never a piece whose upload was superseded already, so the segment never has
    // more than `total` pieces stored or under way); pieces that make no progress within
    // `piece_timeout` are given up and placed again too.
    while got.ok.len() < success {
        let next =
            tokio::time::timeout(pieces.config.piece_timeout, run.tasks.join_next_with_id()).await;
        let reason = match next {
            Ok(Some(joined)) => {
                if let Some(index) = got.take(&mut run, joined) {
                    // The sender is dropped at once: the replay holds the whole piece.
                    let _ = run.replace(index).await;
                }
                continue;
            }
            Err(_) if run.replace_stalled().await > 0 => continue,
            Err(_) => format!(
                "no piece finished within {:?}: {} of {success} receipts verified",
                pieces.config.piece_timeout,
                got.ok.len()
            ),
            Ok(None) => {
                let sample: Vec<&str> = got.failures.iter().take(3).map(String::as_str).collect();
                format!(
                    "only {} of {success} needed receipts verified ({} pieces failed, e.g. {}; \
                     no other eligible node was left to take them)",
                    got.ok.len(),
                    got.failures.len(),
                    sample.join("; ")
                )
            }
        };
        // The segment is lost: its stored pieces are orphans now, delete them.
        let placed = got.ok;
        release_tail(&pieces, run.tasks, run.tickets, &exclude);
        let _ = tokio::time::timeout(
            pieces.config.piece_timeout,
            delete_placements(&pieces, &placed),
        )
        .await;
        return Err(err(reason));
    }
    // The long tail: a bounded grace to deliver more receipts, all recorded. A piece that
    // fails outright meanwhile (a dead node's failure may well be seen only after
    // `success` receipts, tasks finish in no fixed order) is placed again like before,
    // within the same grace: the replay is kept until the tail ends.
    let grace = pieces.config.long_tail_grace;
    let deadline = Instant::now() + grace;
    while !run.tasks.is_empty() {
        let next = if grace.is_zero() {
            run.tasks.try_join_next_with_id()
        } else {
            tokio::time::timeout_at(deadline, run.tasks.join_next_with_id())
                .await
                .ok()
                .flatten()
        };
        let Some(joined) = next else {
            break;
        };
        if let Some(index) = got.take(&mut run, joined)
            && !grace.is_zero()
        {
            // Bounded by the deadline: nothing is started once it has passed.
            let _ = tokio::time::timeout_at(deadline, run.replace(index)).await;
        }
    }
    // The shards are not needed any more.
    run.replay = Replay::new(0);
    // Receipts that came in with the deadline still count.
    while let Some(joined) = run.tasks.try_join_next_with_id() {
        got.take(&mut run, joined);
    }
    let scheme = run.scheme;
    let (index, shard) = (run.index, run.shard);
    release_tail(&pieces, run.tasks, run.tickets, &exclude);
    pieces.metrics.segments_uploaded.inc();
    let mut ok = got.ok;
    ok.sort_by_key(|p| p.index);
    let layout = Layout {
        k: usize::from(scheme.k),
        shard_size: shard,
        sealed_size,
    };
    Ok(SegmentInfo {
        index,
        plain_size,
        sealed_size,
        codec: pieces.config.codec,
        scheme,
        shard_size: shard as u32,
        piece_size: layout.piece_size(),
        pieces: ok,
    })
}

/// Gives up the piece uploads of a segment that are still running, and excludes their
/// nodes for the rest of the object (like nodes cut off for lagging: they did not answer
/// in time). Those still sending data are cancelled: no trailer, so nothing is stored,
/// and their tasks are aborted at once (freeing their queued shards). Those complete on
/// the wire go to the [`Reaper`], which deletes them if they are stored after all.
pub(super) fn release_tail(
    pieces: &Arc<Pieces>,
    tasks: JoinSet<PieceOutcome>,
    tickets: HashMap<tokio::task::Id, PieceTicket>,
    exclude: &Mutex<HashSet<NodeId>>,
) {
    let mut late = HashMap::new();
    let mut cancelled = 0u64;
    for (id, ticket) in tickets {
        lock(exclude).insert(ticket.node.id);
        let mut state = lock(&ticket.handover);
        match *state {
            Handover::Complete { .. } => {
                drop(state);
                late.insert(id, ticket);
            }
            Handover::Sending | Handover::Cancelled => {
                // Under the lock the stream checks before its trailer: from here on it can
                // never send one, so aborting cannot leave a stored piece behind.
                *state = Handover::Cancelled;
                ticket.task.abort();
                cancelled += 1;
            }
        }
    }
    pieces
        .metrics
        .piece_uploads
        .with_label_values(&["cancelled"])
        .inc_by(cancelled);
    pieces.reaper.take(pieces, tasks, late);
}
