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
//! A segment is committed once `success` receipts have been verified (signed by the
//! node we chose, for our piece id, owner, size and piece hash); the long tail is then
//! cancelled. A node whose piece failed is excluded for the rest of the object (failed
//! pieces are never retried on the same node) and remembered in the catalog's history.
//!
//! TODO(retry): a segment that misses `success` fails the upload; retrying it on fresh
//! nodes would need its plaintext again (buffer or re-read), which the stream does not
//! keep.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use shoal_proto::messages::{DeleteOrder, Receipt, UploadOrder, UploadTrailer};
use shoal_proto::piece_hash::PieceHasher;
use shoal_proto::{NodeId, PieceHash, PieceId, SegmentRoot, Signed};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinSet;

use crate::catalog::{ObjectEntry, SegmentInfo};
use crate::client::{DeleteReport, Inner, Progress};
use crate::codec::Scheme;
use crate::crypto::{BlockCipher, CIPHER_BLOCK, PLAIN_BLOCK, sealed_len};
use crate::error::Error;
use crate::segment::{Layout, SegmentEncoder, shard_size_for};
use crate::select::{NodeStats, capacity, select_nodes};
use crate::store::{NodeCandidate, PieceError, PiecePlacement, UploadPart};

pub(crate) struct ObjectUpload<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    pub cipher: &'a BlockCipher,
    pub scheme: Scheme,
    pub expires_ms: u64,
    pub size_hint: Option<u64>,
    pub progress: Option<Progress>,
}

impl ObjectUpload<'_> {
    fn err(&self, segment: u32, reason: impl Into<String>) -> Error {
        Error::Upload {
            bucket: self.bucket.to_string(),
            key: self.key.to_string(),
            segment,
            reason: reason.into(),
        }
    }
}

/// Reads plaintext in [`PLAIN_BLOCK`]s with one block of look-ahead, so that the last
/// block of the object is known as such when it is sealed.
pub(crate) struct BlockReader<R> {
    reader: R,
    pending: Option<Vec<u8>>,
    eof: bool,
}

impl<R: AsyncRead + Unpin> BlockReader<R> {
    pub fn new(reader: R) -> Self {
        Self {
            reader,
            pending: None,
            eof: false,
        }
    }

    async fn read_full(&mut self) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; PLAIN_BLOCK];
        let mut filled = 0;
        while filled < PLAIN_BLOCK {
            let n = self.reader.read(&mut buf[filled..]).await?;
            if n == 0 {
                self.eof = true;
                break;
            }
            filled += n;
        }
        buf.truncate(filled);
        Ok(buf)
    }

    /// The next block and whether it is the object's last; `None` after the last.
    pub async fn next(&mut self) -> std::io::Result<Option<(Vec<u8>, bool)>> {
        let current = match self.pending.take() {
            Some(b) => b,
            None if self.eof => return Ok(None),
            None => {
                let b = self.read_full().await?;
                if self.eof {
                    return Ok(if b.is_empty() { None } else { Some((b, true)) });
                }
                b
            }
        };
        if self.eof {
            return Ok(Some((current, true)));
        }
        let next = self.read_full().await?;
        if next.is_empty() {
            return Ok(Some((current, true)));
        }
        self.pending = Some(next);
        Ok(Some((current, false)))
    }
}

/// Picks the scheme for a segment of at most `sealed_bound` bytes: `requested` if the
/// network can hold it, else (if allowed) the largest proportionally smaller one.
fn plan_scheme(
    inner: &Inner,
    requested: Scheme,
    candidates: &[NodeCandidate],
    sealed_bound: u64,
    exclude: &HashSet<NodeId>,
) -> Result<(Scheme, usize, u64), crate::select::SelectionError> {
    let mut scheme = requested;
    // Shrinking lowers k, which makes pieces larger and may rule out more nodes: iterate.
    for _ in 0..4 {
        let k = usize::from(scheme.k);
        let shard = shard_size_for(sealed_bound, k);
        let piece = Layout {
            k,
            shard_size: shard,
            sealed_size: sealed_bound,
        }
        .piece_size();
        let cap = capacity(candidates, piece, exclude);
        if cap >= usize::from(scheme.total) {
            return Ok((scheme, shard, piece));
        }
        let err = crate::select::SelectionError {
            needed: usize::from(scheme.total),
            available: cap,
            min_free: piece,
        };
        if !inner.config.allow_smaller_scheme {
            return Err(err);
        }
        match scheme.shrink_to(cap) {
            Some(s) if s != scheme => scheme = s,
            _ => return Err(err),
        }
    }
    Err(crate::select::SelectionError {
        needed: usize::from(scheme.total),
        available: 0,
        min_free: 0,
    })
}

/// Uploads every segment of `reader`; returns them in order and the scheme used. On
/// failure, the pieces of segments already committed are deleted (best effort).
pub(crate) async fn upload_object<R: AsyncRead + Unpin + Send>(
    inner: &Arc<Inner>,
    ctx: ObjectUpload<'_>,
    reader: R,
) -> Result<(Vec<SegmentInfo>, Scheme), Error> {
    let mut done = Vec::new();
    match upload_segments(inner, ctx, reader, &mut done).await {
        Ok(used) => {
            done.sort_by_key(|s| s.index);
            Ok((done, used))
        }
        Err(e) => {
            delete_segments(inner, &done).await;
            Err(e)
        }
    }
}

async fn upload_segments<R: AsyncRead + Unpin + Send>(
    inner: &Arc<Inner>,
    ctx: ObjectUpload<'_>,
    reader: R,
    done: &mut Vec<SegmentInfo>,
) -> Result<Scheme, Error> {
    let mut blocks = BlockReader::new(reader);
    let candidates = inner
        .nodes
        .sample(usize::from(ctx.scheme.total) * 2)
        .await?;
    let history = inner.catalog.node_stats()?;
    let exclude: Arc<Mutex<HashSet<NodeId>>> = Arc::default();
    let mut in_flight: JoinSet<Result<SegmentInfo, Error>> = JoinSet::new();
    let mut remaining_hint = ctx.size_hint;
    let mut used = ctx.scheme;
    let seed: u64 = rand::random();
    let max_blocks = inner.config.segment_blocks.max(1);
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
        let excluded = lock(&exclude).clone();
        let (scheme, shard, piece_bound) =
            plan_scheme(inner, ctx.scheme, &candidates, sealed_bound, &excluded).map_err(
                |source| Error::NetworkTooSmall {
                    scheme: ctx.scheme,
                    source,
                },
            )?;
        used = scheme;
        let nodes = select_nodes(
            &candidates,
            &history,
            usize::from(scheme.total),
            piece_bound,
            &excluded,
            seed ^ u64::from(index),
        )
        .map_err(|source| Error::NetworkTooSmall { scheme, source })?;
        let pending = encode_segment(
            inner,
            &ctx,
            &mut blocks,
            SegmentPlan {
                index,
                scheme,
                shard,
                piece_bound,
                expected_blocks,
                nodes,
            },
            first,
            &exclude,
        )
        .await?;
        remaining_hint = remaining_hint.map(|r| r.saturating_sub(pending.plain_size));
        while in_flight.len() >= inner.config.segment_parallelism.max(1) {
            if let Some(r) = in_flight.join_next().await {
                done.push(joined(r, &ctx, index)?);
            }
        }
        in_flight.spawn(commit(
            inner.clone(),
            pending,
            exclude.clone(),
            (ctx.bucket.to_string(), ctx.key.to_string()),
        ));
    }
    while let Some(r) = in_flight.join_next().await {
        done.push(joined(r, &ctx, u32::MAX)?);
    }
    Ok(used)
}

fn joined(
    r: Result<Result<SegmentInfo, Error>, tokio::task::JoinError>,
    ctx: &ObjectUpload<'_>,
    index: u32,
) -> Result<SegmentInfo, Error> {
    r.map_err(|e| ctx.err(index, format!("segment task failed: {e}")))?
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct SegmentPlan {
    index: u32,
    scheme: Scheme,
    shard: usize,
    piece_bound: u64,
    expected_blocks: u64,
    nodes: Vec<NodeCandidate>,
}

enum PieceMsg {
    Shard(Bytes),
    Finish,
}

struct Slot {
    node: NodeId,
    tx: Option<mpsc::Sender<PieceMsg>>,
}

struct PieceOutcome {
    index: u16,
    node: NodeCandidate,
    piece_id: PieceId,
    result: Result<Signed<Receipt>, PieceError>,
}

/// A segment whose data has been handed to the piece uploads.
pub(crate) struct PendingSegment {
    index: u32,
    scheme: Scheme,
    shard: usize,
    plain_size: u64,
    sealed_size: u64,
    tasks: JoinSet<PieceOutcome>,
}

async fn encode_segment<R: AsyncRead + Unpin + Send>(
    inner: &Arc<Inner>,
    ctx: &ObjectUpload<'_>,
    blocks: &mut BlockReader<R>,
    plan: SegmentPlan,
    first: (Vec<u8>, bool),
    exclude: &Mutex<HashSet<NodeId>>,
) -> Result<PendingSegment, Error> {
    let owner = inner.access.owner();
    let root = SegmentRoot::random();
    let now = shoal_proto::time::unix_ms();
    let mut tasks = JoinSet::new();
    let mut slots = Vec::with_capacity(plan.nodes.len());
    for (i, node) in plan.nodes.iter().enumerate() {
        let index = i as u16;
        let order = UploadOrder {
            piece_id: PieceId::derive(&root, &node.id, index),
            node_id: node.id,
            owner_key: *owner.public_key(),
            max_size: plan.piece_bound,
            block_size: plan.shard as u32,
            expires_at_ms: ctx.expires_ms,
            timestamp_ms: now,
        };
        let order = Signed::sign(order, owner).map_err(|e| ctx.err(plan.index, e.to_string()))?;
        let (tx, rx) = mpsc::channel(inner.config.piece_buffer.max(1));
        tasks.spawn(upload_piece(inner.clone(), node.clone(), index, order, rx));
        slots.push(Slot {
            node: node.id,
            tx: Some(tx),
        });
    }
    let success = usize::from(plan.scheme.success);
    let mut feeder = Feeder {
        inner,
        slots,
        success,
        exclude,
    };
    let mut enc = SegmentEncoder::new(
        ctx.cipher,
        inner.config.codec,
        plan.scheme,
        plan.shard,
        plan.index,
    )?;
    let mut stripes = Vec::new();
    let mut block = first;
    let mut count = 0u64;
    loop {
        enc.push_block(&block.0, block.1, &mut stripes)?;
        count += 1;
        for stripe in stripes.drain(..) {
            feeder
                .feed(|i| PieceMsg::Shard(stripe[i].clone()))
                .await
                .map_err(|r| ctx.err(plan.index, r))?;
        }
        if let Some(p) = &ctx.progress {
            p(block.0.len() as u64);
        }
        if block.1 || count >= plan.expected_blocks {
            break;
        }
        let read_err = |source| Error::Read {
            bucket: ctx.bucket.to_string(),
            key: ctx.key.to_string(),
            source,
        };
        match blocks.next().await.map_err(read_err)? {
            Some(b) => block = b,
            None => break,
        }
    }
    let (plain_size, sealed_size) = enc.finish(&mut stripes)?;
    for stripe in stripes.drain(..) {
        feeder
            .feed(|i| PieceMsg::Shard(stripe[i].clone()))
            .await
            .map_err(|r| ctx.err(plan.index, r))?;
    }
    feeder
        .feed(|_| PieceMsg::Finish)
        .await
        .map_err(|r| ctx.err(plan.index, r))?;
    Ok(PendingSegment {
        index: plan.index,
        scheme: plan.scheme,
        shard: plan.shard,
        plain_size,
        sealed_size,
        tasks,
    })
}

/// Pushes one message to every live piece upload, cutting off laggards (see module doc).
struct Feeder<'a> {
    inner: &'a Inner,
    slots: Vec<Slot>,
    success: usize,
    exclude: &'a Mutex<HashSet<NodeId>>,
}

impl Feeder<'_> {
    fn live(&self) -> usize {
        self.slots.iter().filter(|s| s.tx.is_some()).count()
    }

    fn drop_slot(&mut self, i: usize, cut: bool) {
        if self.slots[i].tx.take().is_some() {
            lock(self.exclude).insert(self.slots[i].node);
            if cut {
                self.inner
                    .metrics
                    .piece_uploads
                    .with_label_values(&["cut"])
                    .inc();
            }
        }
    }

    async fn feed(&mut self, msg: impl Fn(usize) -> PieceMsg) -> Result<(), String> {
        let mut lagging = Vec::new();
        for i in 0..self.slots.len() {
            let Some(tx) = &self.slots[i].tx else {
                continue;
            };
            match tx.try_send(msg(i)) {
                Ok(()) => {}
                Err(TrySendError::Closed(_)) => self.drop_slot(i, false),
                Err(TrySendError::Full(_)) => lagging.push(i),
            }
        }
        if !lagging.is_empty() {
            let grace = self.inner.config.slow_piece_grace;
            let waits = lagging.iter().filter_map(|&i| {
                let tx = self.slots[i].tx.clone()?;
                let m = msg(i);
                Some(async move { (i, tokio::time::timeout(grace, tx.send(m)).await) })
            });
            let mut still = Vec::new();
            for (i, r) in futures::future::join_all(waits).await {
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => self.drop_slot(i, false),
                    Err(_) => still.push(i),
                }
            }
            for i in still {
                if self.live() > self.success {
                    self.drop_slot(i, true);
                    continue;
                }
                let Some(tx) = self.slots[i].tx.clone() else {
                    continue;
                };
                let t = self.inner.config.piece_timeout;
                if !matches!(tokio::time::timeout(t, tx.send(msg(i))).await, Ok(Ok(()))) {
                    self.drop_slot(i, true);
                }
            }
        }
        let live = self.live();
        if live < self.success {
            return Err(format!(
                "only {live} of {} piece uploads are still running; {} must succeed",
                self.slots.len(),
                self.success
            ));
        }
        Ok(())
    }
}

async fn upload_piece(
    inner: Arc<Inner>,
    node: NodeCandidate,
    index: u16,
    order: Signed<UploadOrder>,
    rx: mpsc::Receiver<PieceMsg>,
) -> PieceOutcome {
    let sent: Arc<Mutex<Option<(u64, PieceHash)>>> = Arc::default();
    let state = (
        rx,
        Some(PieceHasher::new(order.block_size)),
        inner.clone(),
        order.clone(),
        sent.clone(),
    );
    let body = futures::stream::unfold(
        state,
        |(mut rx, mut hasher, inner, order, sent)| async move {
            let h = hasher.as_mut()?;
            match rx.recv().await? {
                PieceMsg::Shard(b) => {
                    h.update(&b);
                    Some((UploadPart::Chunk(b), (rx, hasher, inner, order, sent)))
                }
                PieceMsg::Finish => {
                    let info = hasher.take()?.finish();
                    let root = info.root();
                    *lock(&sent) = Some((info.size, root));
                    let trailer = UploadTrailer {
                        piece_id: order.piece_id,
                        owner_key: order.owner_key,
                        size: info.size,
                        piece_hash: root,
                    };
                    let signed = Signed::sign(trailer, inner.access.owner()).ok()?;
                    Some((
                        UploadPart::Trailer(Box::new(signed)),
                        (rx, None, inner, order, sent),
                    ))
                }
            }
        },
    )
    .boxed();
    let result = inner
        .store
        .upload(node.address(), order.clone(), body)
        .await
        .and_then(|receipt| {
            let sent = *lock(&sent);
            verify_receipt(&receipt, &order, &node, sent)?;
            Ok(receipt)
        });
    PieceOutcome {
        index,
        node,
        piece_id: order.piece_id,
        result,
    }
}

/// A receipt counts only if the node we chose signed it for exactly what we sent.
fn verify_receipt(
    receipt: &Signed<Receipt>,
    order: &UploadOrder,
    node: &NodeCandidate,
    sent: Option<(u64, PieceHash)>,
) -> Result<(), PieceError> {
    let bad = |reason: &str| PieceError::Protocol {
        node: node.id,
        reason: format!("receipt rejected: {reason}"),
    };
    let Some((size, hash)) = sent else {
        return Err(bad("the node answered before the upload was complete"));
    };
    if receipt.node_id() != node.id || node.public_key.is_some_and(|k| k != receipt.node_key) {
        return Err(bad("signed by another node"));
    }
    if receipt.piece_id != order.piece_id || receipt.owner_key != order.owner_key {
        return Err(bad("for another piece or owner"));
    }
    if receipt.size != size || receipt.piece_hash != hash {
        return Err(PieceError::Corrupt {
            node: node.id,
            reason: "receipt is for other data than was sent".into(),
        });
    }
    if receipt.expires_at_ms < order.expires_at_ms {
        return Err(bad("lease shorter than ordered"));
    }
    Ok(())
}

async fn commit(
    inner: Arc<Inner>,
    mut seg: PendingSegment,
    exclude: Arc<Mutex<HashSet<NodeId>>>,
    (bucket, key): (String, String),
) -> Result<SegmentInfo, Error> {
    let success = usize::from(seg.scheme.success);
    let mut ok: Vec<PiecePlacement> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let err = |reason: String| Error::Upload {
        bucket: bucket.clone(),
        key: key.clone(),
        segment: seg.index,
        reason,
    };
    // Wait for `success` verified receipts; then take the ones already in, but no more.
    loop {
        let next = if ok.len() < success {
            tokio::time::timeout(inner.config.piece_timeout, seg.tasks.join_next()).await
        } else {
            match seg.tasks.try_join_next() {
                Some(r) => Ok(Some(r)),
                None => break,
            }
        };
        let outcome = match next {
            Err(_) => {
                return Err(err(format!(
                    "no piece finished within {:?}: {} of {success} receipts verified",
                    inner.config.piece_timeout,
                    ok.len()
                )));
            }
            Ok(None) => {
                let sample: Vec<&str> = failures.iter().take(3).map(String::as_str).collect();
                return Err(err(format!(
                    "only {} of {success} needed receipts verified ({} pieces failed, e.g. {})",
                    ok.len(),
                    failures.len(),
                    sample.join("; ")
                )));
            }
            Ok(Some(Err(join))) => {
                failures.push(join.to_string());
                continue;
            }
            Ok(Some(Ok(o))) => o,
        };
        match outcome.result {
            Ok(receipt) => {
                inner.metrics.piece_uploads.with_label_values(&["ok"]).inc();
                let _ = inner.catalog.record_node(
                    &outcome.node.id,
                    NodeStats {
                        successes: 1,
                        ..NodeStats::default()
                    },
                );
                ok.push(PiecePlacement {
                    index: outcome.index,
                    node_id: outcome.node.id.0,
                    address: outcome.node.address,
                    piece_id: outcome.piece_id.0,
                    piece_hash: receipt.piece_hash.0,
                });
            }
            Err(e) => {
                tracing::debug!(segment = seg.index, piece = outcome.index, error = %e, "piece upload failed");
                inner
                    .metrics
                    .piece_uploads
                    .with_label_values(&["failed"])
                    .inc();
                let corrupt = matches!(e, PieceError::Corrupt { .. });
                let _ = inner.catalog.record_node(
                    &outcome.node.id,
                    NodeStats {
                        failures: 1,
                        corrupt: u64::from(corrupt),
                        ..NodeStats::default()
                    },
                );
                lock(&exclude).insert(outcome.node.id);
                failures.push(e.to_string());
            }
        }
    }
    // Cancel the long tail. TODO(long-tail): pieces that completed after the commit are
    // not recorded; delete them (their receipts are lost with the aborted tasks) instead
    // of leaving them to lease expiry.
    let tail = seg.tasks.len() as u64;
    seg.tasks.abort_all();
    inner
        .metrics
        .piece_uploads
        .with_label_values(&["cancelled"])
        .inc_by(tail);
    inner.metrics.segments_uploaded.inc();
    ok.sort_by_key(|p| p.index);
    let layout = Layout {
        k: usize::from(seg.scheme.k),
        shard_size: seg.shard,
        sealed_size: seg.sealed_size,
    };
    Ok(SegmentInfo {
        index: seg.index,
        plain_size: seg.plain_size,
        sealed_size: seg.sealed_size,
        codec: inner.config.codec,
        scheme: seg.scheme,
        shard_size: seg.shard as u32,
        piece_size: layout.piece_size(),
        pieces: ok,
    })
}

/// Asks every node holding a piece of `entry` to delete it. Best effort: pieces that
/// cannot be deleted now are collected by their nodes when the lease ends.
pub(crate) async fn delete_pieces(inner: &Arc<Inner>, entry: &ObjectEntry) -> DeleteReport {
    delete_segments(inner, entry.segments()).await
}

async fn delete_segments(inner: &Arc<Inner>, segments: &[SegmentInfo]) -> DeleteReport {
    let owner = inner.access.owner();
    let now = shoal_proto::time::unix_ms();
    let mut calls = Vec::new();
    for seg in segments {
        for p in &seg.pieces {
            let order = DeleteOrder {
                piece_id: PieceId(p.piece_id),
                node_id: NodeId(p.node_id),
                owner_key: *owner.public_key(),
                timestamp_ms: now,
            };
            if let Ok(order) = Signed::sign(order, owner) {
                calls.push(inner.store.delete(p.node(), order));
            }
        }
    }
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
