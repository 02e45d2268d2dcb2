//! Upload orchestration: one object → segments → `total` parallel piece uploads each.
//!
//! Per segment: select `total` nodes, sign one order per piece, and start every piece
//! upload at once, each fed by a small bounded queue of shards. The encoder pushes each
//! stripe's shards into the queues. A piece whose queue is full is lagging: the encoder
//! waits for the laggards together for at most `slow_piece_grace` and then cuts off those
//! still behind, as long as more than `success` pieces remain; it waits longer only for
//! pieces it cannot do without. So a dead or stalled node costs at most one grace period,
//! the pipeline runs at the pace of the `success`-th fastest node, and memory is bounded
//! by `segments in flight × total × piece_buffer × shard size` whatever the object size.
//!
//! Commit and the long tail: a segment is committable once `success` receipts have been
//! verified (signed by the node we chose, for our piece id, owner, size and piece hash).
//! The other pieces then get `long_tail_grace` to deliver theirs, and every receipt
//! verified by then is recorded too: on a healthy network all `total` pieces finish within
//! milliseconds of each other, so a segment keeps all of them and survives `total − k`
//! lost nodes rather than `success − k`. The extra pieces are a bonus, never a
//! requirement; still, a piece that fails outright during the grace (tasks finish in no
//! fixed order: a dead node's failure may be seen only after `success` receipts) is
//! placed again on another node within the same grace, as it would have been before
//! `success`. When the grace ends, a piece still sending data is cancelled: its stream
//! ends without the signed trailer, so the node discards it and no orphan can exist. A
//! piece whose data and trailer are already on the wire may still be stored; rather than
//! leave it until its lease ends, its task goes to a bounded background [`Reaper`], which
//! deletes it (signed `DeleteOrder`) if its receipt arrives within `piece_timeout`. Pieces
//! of a segment that fails are deleted the same way.
//!
//! Nodes: the object's candidate pool is sampled once with room to spare (twice `total`
//! and more). A node whose piece failed, was cut off or missed the grace is excluded for
//! the rest of the object (failed pieces are never retried on the same node); failures
//! are remembered in the catalog's history. When exclusions leave the pool too small for the
//! requested scheme, fresh candidates are sampled and merged in; only when the network
//! really has too few does the scheme shrink, giving up upload slack first, then promised
//! pieces, and only then `k` ([`Scheme::shrink_to`]).
//!
//! TODO(retry): a segment that misses `success` fails the upload; retrying it on fresh
//! nodes would need its plaintext again (buffer or re-read), which the stream does not
//! keep.
//!
//! Files (imports point down this list only): `types` (what the stages pass each other),
//! `reader` (blocks), `plan` (scheme and pool), `receipt` (the receipt rule), `reaper`
//! (late receipts), `fanout` (one segment's piece uploads), `commit` (success and the
//! long tail); this file drives them per object.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use shoal_proto::NodeId;
use tokio::io::AsyncRead;
use tokio::task::JoinSet;

use crate::catalog::SegmentInfo;
use crate::codec::Scheme;
use crate::crypto::{CIPHER_BLOCK, PLAIN_BLOCK, sealed_len};
use crate::error::Error;
use crate::pieces::delete::delete_segments;
use crate::pieces::service::Pieces;
use crate::select::{backing_off, capacity, select_nodes};

mod commit;
mod fanout;
mod plan;
mod reader;
mod reaper;
mod receipt;
mod types;

use plan::{merge_candidates, piece_for, plan_scheme, pool_size};
use reader::BlockReader;
use types::{SegmentPlan, lock};

use commit::commit;
use fanout::encode_segment;
pub(in crate::pieces) use receipt::verify_receipt;
pub(crate) use types::ObjectUpload;

/// Uploads every segment of `reader`; returns them in order and the scheme used. On
/// failure, the pieces of segments already committed are deleted (best effort).
pub(super) async fn upload_object<R: AsyncRead + Unpin + Send>(
    pieces: &Arc<Pieces>,
    ctx: ObjectUpload<'_>,
    reader: R,
) -> Result<(Vec<SegmentInfo>, Scheme), Error> {
    let mut done = Vec::new();
    match upload_segments(pieces, ctx, reader, &mut done).await {
        Ok(used) => {
            done.sort_by_key(|s| s.index);
            Ok((done, used))
        }
        Err(e) => {
            delete_segments(pieces, &done).await;
            Err(e)
        }
    }
}

pub(super) async fn upload_segments<R: AsyncRead + Unpin + Send>(
    pieces: &Arc<Pieces>,
    ctx: ObjectUpload<'_>,
    reader: R,
    done: &mut Vec<SegmentInfo>,
) -> Result<Scheme, Error> {
    let mut in_flight: JoinSet<Result<SegmentInfo, Error>> = JoinSet::new();
    let result = upload_segments_into(pieces, &ctx, reader, done, &mut in_flight).await;
    if result.is_err() {
        // Let the segments still committing finish, so that the caller can delete their
        // pieces too instead of leaving them to lease expiry (each commit is bounded).
        while let Some(r) = in_flight.join_next().await {
            if let Ok(Ok(seg)) = r {
                done.push(seg);
            }
        }
    }
    result
}

pub(super) async fn upload_segments_into<R: AsyncRead + Unpin + Send>(
    pieces: &Arc<Pieces>,
    ctx: &ObjectUpload<'_>,
    reader: R,
    done: &mut Vec<SegmentInfo>,
    in_flight: &mut JoinSet<Result<SegmentInfo, Error>>,
) -> Result<Scheme, Error> {
    let mut blocks = BlockReader::new(reader);
    let mut pool = pieces.nodes.sample(pool_size(ctx.scheme)).await?;
    // Set once a fresh sample brought no new node: the network has no more to offer.
    let mut pool_exhausted = false;
    let exclude: Arc<Mutex<HashSet<NodeId>>> = Arc::default();
    let mut remaining_hint = ctx.size_hint;
    let mut used = ctx.scheme;
    let seed: u64 = rand::random();
    let max_blocks = pieces.config.segment_blocks.max(1);
    let allow_smaller = ctx
        .allow_smaller
        .unwrap_or(pieces.config.allow_smaller_scheme);
    for index in 0u32.. {
        let read_err = |source| Error::Read {
            bucket: ctx.bucket.to_string(),
            key: ctx.key.to_string(),
            source,
        };
        let Some(first) = blocks.next().await.map_err(read_err)? else {
            break;
        };
        let expected_blocks = if first.1 {
            1
        } else {
            remaining_hint.filter(|r| *r > 0).map_or(max_blocks, |r| {
                r.div_ceil(PLAIN_BLOCK as u64).clamp(1, max_blocks)
            })
        };
        let sealed_bound = if first.1 {
            sealed_len(first.0.len() as u64)
        } else {
            expected_blocks * CIPHER_BLOCK as u64
        };
        // Read per segment: failures of the uploads running beside this one count at once.
        let history = Arc::new(pieces.catalog.node_stats()?);
        let failed = crate::select::with_excluded(&lock(&exclude), &history);
        // Nodes that failed lately are avoided while the others can hold the requested
        // scheme. When they cannot, the nodes backing off take part of the slack only if
        // the others can still deliver `success` receipts; otherwise (if allowed) the
        // scheme shrinks to what the others hold rather than rely on nodes that just
        // failed (likely gone: their pieces could not be replaced).
        let avoid: HashSet<NodeId> = failed
            .union(&backing_off(
                &history,
                shoal_proto::time::unix_ms(),
                pieces.config.failed_node_backoff,
            ))
            .copied()
            .collect();
        let excluded = match plan_scheme(ctx.scheme, allow_smaller, &pool, sealed_bound, &avoid) {
            Ok(p) if p.scheme == ctx.scheme => avoid,
            _ if capacity(&pool, piece_for(ctx.scheme, sealed_bound), &avoid)
                >= usize::from(ctx.scheme.success) =>
            {
                failed
            }
            Ok(_) => avoid,
            Err(_) => failed,
        };
        let mut planned = plan_scheme(ctx.scheme, allow_smaller, &pool, sealed_bound, &excluded);
        if !pool_exhausted && planned.as_ref().map_or(true, |p| p.scheme != ctx.scheme) {
            // Failed nodes (or a short first sample) left too few: replace them with fresh
            // candidates before settling for a smaller scheme.
            let fresh = pieces
                .nodes
                .sample(pool_size(ctx.scheme) + excluded.len())
                .await?;
            let added = merge_candidates(&mut pool, fresh);
            tracing::debug!(segment = index, added, "sampled fresh candidates");
            pool_exhausted = added == 0;
            planned = plan_scheme(ctx.scheme, allow_smaller, &pool, sealed_bound, &excluded);
        }
        let shape = planned.map_err(|source| Error::NetworkTooSmall {
            scheme: ctx.scheme,
            source,
        })?;
        let scheme = shape.scheme;
        used = scheme;
        let nodes = select_nodes(
            &pool,
            &history,
            usize::from(scheme.total),
            shape.piece,
            &excluded,
            seed ^ u64::from(index),
        )
        .map_err(|source| Error::NetworkTooSmall { scheme, source })?;
        let pending = encode_segment(
            pieces,
            ctx,
            &mut blocks,
            SegmentPlan {
                index,
                scheme,
                shard: shape.shard,
                piece_bound: shape.piece,
                expected_blocks,
                nodes,
                pool: pool.clone(),
                history: history.clone(),
            },
            first,
            &exclude,
        )
        .await?;
        remaining_hint = remaining_hint.map(|r| r.saturating_sub(pending.plain_size));
        while in_flight.len() >= pieces.config.segment_parallelism.max(1) {
            if let Some(r) = in_flight.join_next().await {
                done.push(joined(r, ctx, index)?);
            }
        }
        in_flight.spawn(commit(
            pieces.clone(),
            pending,
            exclude.clone(),
            (ctx.bucket.to_string(), ctx.key.to_string()),
        ));
    }
    while let Some(r) = in_flight.join_next().await {
        done.push(joined(r, ctx, u32::MAX)?);
    }
    Ok(used)
}

pub(super) fn joined(
    r: Result<Result<SegmentInfo, Error>, tokio::task::JoinError>,
    ctx: &ObjectUpload<'_>,
    index: u32,
) -> Result<SegmentInfo, Error> {
    r.map_err(|e| ctx.err(index, format!("segment task failed: {e}")))?
}
