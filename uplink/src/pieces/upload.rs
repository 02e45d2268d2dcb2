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
//! requirement. When the grace ends, a piece still sending data is cancelled: its stream
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

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use shoal_proto::messages::{DeleteOrder, Receipt, UploadOrder};
use shoal_proto::piece_hash::PieceHasher;
use shoal_proto::{NodeId, PieceHash, PieceId, SegmentRoot, Signed};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{DeleteReport, Pieces, Progress};
use crate::catalog::tag::{BlobTag, PieceTag, SegmentTag, TagSealer};
use crate::catalog::{ObjectEntry, SegmentInfo};
use crate::codec::Scheme;
use crate::crypto::{BlockCipher, CIPHER_BLOCK, PLAIN_BLOCK, sealed_len};
use crate::error::Error;
use crate::orders::{Orders, UploadTerms};
use crate::segment::{Layout, SegmentEncoder, Stripe, shard_size_for};
use crate::select::{
    NodeStats, SelectionError, Transfer, backing_off, capacity, select_nodes, select_replacement,
};
use crate::store::{NodeAddress, NodeCandidate, PieceError, PiecePlacement, UploadPart};

pub(crate) struct ObjectUpload<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    pub cipher: &'a BlockCipher,
    pub scheme: Scheme,
    pub expires_ms: u64,
    pub size_hint: Option<u64>,
    pub progress: Option<Progress>,
    /// Overrides [`crate::UplinkConfig::allow_smaller_scheme`] (catalog blobs always
    /// take what the network can hold rather than fail the command).
    pub allow_smaller: Option<bool>,
    /// Set for catalog blobs: every piece's trailer then carries its sealed tag
    /// ([`crate::catalog::tag`]), so that the blob can be found on the nodes alone.
    pub tag: Option<BlobTag>,
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

/// Candidates sampled per object up front: twice `total`, plus a few, so that nodes that
/// fail during the upload can be replaced without shrinking the scheme.
fn pool_size(scheme: Scheme) -> usize {
    usize::from(scheme.total) * 2 + 8
}

/// Adds the candidates of `fresh` not yet in `pool`; returns how many were new.
fn merge_candidates(pool: &mut Vec<NodeCandidate>, fresh: Vec<NodeCandidate>) -> usize {
    let known: HashSet<NodeId> = pool.iter().map(|c| c.id).collect();
    let before = pool.len();
    let mut added = HashSet::new();
    pool.extend(
        fresh
            .into_iter()
            .filter(|c| !known.contains(&c.id) && added.insert(c.id)),
    );
    pool.len() - before
}

/// How one segment is stored: its scheme and the sizes that follow from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SegmentShape {
    scheme: Scheme,
    shard: usize,
    piece: u64,
}

/// The piece size of a segment of at most `sealed_bound` bytes under `scheme`.
fn piece_for(scheme: Scheme, sealed_bound: u64) -> u64 {
    let k = usize::from(scheme.k);
    Layout {
        k,
        shard_size: shard_size_for(sealed_bound, k),
        sealed_size: sealed_bound,
    }
    .piece_size()
}

/// Picks the scheme for a segment of at most `sealed_bound` bytes: `requested` if the
/// candidates not in `exclude` can hold it, else (if `allow_smaller`) the largest scheme
/// they can hold, shrunk as [`Scheme::shrink_to`] says.
fn plan_scheme(
    requested: Scheme,
    allow_smaller: bool,
    candidates: &[NodeCandidate],
    sealed_bound: u64,
    exclude: &HashSet<NodeId>,
) -> Result<SegmentShape, SelectionError> {
    let mut scheme = requested;
    // Shrinking may lower k, which makes pieces larger and may rule out more nodes:
    // iterate (k only ever goes down, so this ends).
    for _ in 0..8 {
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
            return Ok(SegmentShape {
                scheme,
                shard,
                piece,
            });
        }
        let err = SelectionError {
            needed: usize::from(scheme.total),
            available: cap,
            min_free: piece,
        };
        if !allow_smaller {
            return Err(err);
        }
        match scheme.shrink_to(cap) {
            Some(s) if s != scheme => scheme = s,
            _ => return Err(err),
        }
    }
    Err(SelectionError {
        needed: usize::from(scheme.total),
        available: 0,
        min_free: 0,
    })
}

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

async fn upload_segments<R: AsyncRead + Unpin + Send>(
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

async fn upload_segments_into<R: AsyncRead + Unpin + Send>(
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
    /// The object's candidates when the segment was planned, and the uplink's history
    /// with them: where replacements for failed pieces come from.
    pool: Vec<NodeCandidate>,
    history: Arc<HashMap<NodeId, NodeStats>>,
}

#[derive(Debug, Clone)]
enum PieceMsg {
    Shard(Bytes),
    /// The end of the data; with the segment's part of the piece's tag, if it has one.
    Finish(Option<SegmentTag>),
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

/// How far one piece upload's data has gone; shared by its stream and the commit, and
/// changed under one lock so that a piece is either cancelled before its trailer or
/// complete, never both.
#[derive(Debug, Clone, Copy, Default)]
enum Handover {
    /// Data is still being sent; no trailer yet.
    #[default]
    Sending,
    /// Every byte and the signed trailer were handed to the transport: the node may
    /// store the piece (and must answer with a receipt for this size and hash).
    Complete { size: u64, hash: PieceHash },
    /// Given up before the trailer: the stream ends without it and the node discards
    /// the piece.
    Cancelled,
}

/// One started piece upload of a segment, as the commit and the reaper see it.
struct PieceTicket {
    index: u16,
    node: NodeCandidate,
    task: tokio::task::AbortHandle,
    handover: Arc<Mutex<Handover>>,
}

/// The coded shards handed to a segment's piece uploads so far, kept so that a piece
/// whose node fails can be sent again, whole, to another node. Bounded by `budget`
/// bytes: past it the shards are dropped and pieces that fail from then on are not
/// replaced (the segment still commits with the `success` that remain).
struct Replay {
    stripes: Vec<Stripe>,
    bytes: usize,
    budget: usize,
    /// The piece's end, once the segment is complete: with the segment's tag, if any.
    finished: Option<Option<SegmentTag>>,
    spilled: bool,
}

impl Replay {
    fn new(budget: usize) -> Self {
        Self {
            stripes: Vec::new(),
            bytes: 0,
            budget,
            finished: None,
            spilled: false,
        }
    }

    fn push(&mut self, stripe: &Stripe) {
        if self.spilled {
            return;
        }
        self.bytes = self
            .bytes
            .saturating_add(stripe.iter().map(Bytes::len).sum::<usize>());
        if self.bytes > self.budget {
            self.spilled = true;
            self.stripes = Vec::new();
            return;
        }
        self.stripes.push(stripe.clone());
    }

    /// Everything piece `index` was sent so far (with its end, once the segment is
    /// complete); `None` once the budget was exceeded.
    fn piece(&self, index: u16) -> Option<VecDeque<PieceMsg>> {
        if self.spilled {
            return None;
        }
        let i = usize::from(index);
        let mut out = self
            .stripes
            .iter()
            .map(|s| s.get(i).cloned().map(PieceMsg::Shard))
            .collect::<Option<VecDeque<_>>>()?;
        if let Some(tag) = &self.finished {
            out.push_back(PieceMsg::Finish(*tag));
        }
        Some(out)
    }
}

/// One segment's piece uploads: started, placed again on another node when one fails
/// or stalls, and gathered by the commit.
///
/// Replacement: a piece whose upload ends in an error, whose node stops taking data
/// for `piece_timeout` while the segment needs it, or that has not finished within
/// `piece_timeout` in the commit, is started again, with every shard it was sent so far
/// (from the [`Replay`]), on another node chosen by [`select_replacement`]: never a
/// node that failed during this object, never the subnet of another piece of the
/// segment, nodes [backing off](NodeStats::backing_off) only when nothing else is left.
/// At most `total` replacements per segment; the failed node is excluded for the rest
/// of the object. So `success` receipts come in as long as the network has eligible
/// nodes, whichever nodes just went away.
struct SegmentRun {
    pieces: Arc<Pieces>,
    index: u32,
    scheme: Scheme,
    shard: usize,
    piece_bound: u64,
    expires_ms: u64,
    root: SegmentRoot,
    pool: Vec<NodeCandidate>,
    history: Arc<HashMap<NodeId, NodeStats>>,
    exclude: Arc<Mutex<HashSet<NodeId>>>,
    replay: Replay,
    replacements_left: usize,
    /// Whether fresh candidates were sampled for this segment's replacements already.
    resampled: bool,
    seed: u64,
    tasks: JoinSet<PieceOutcome>,
    /// By task id: which piece each task uploads.
    tickets: HashMap<tokio::task::Id, PieceTicket>,
    /// The task currently uploading (or that stored) each piece index.
    active: HashMap<u16, tokio::task::Id>,
    /// Address of the node holding or uploading each piece index (the subnet rule).
    holders: HashMap<u16, std::net::SocketAddr>,
}

impl SegmentRun {
    /// Starts uploading piece `index` to `node`, `prefix` first, then what is sent on
    /// the returned channel.
    fn start(
        &mut self,
        index: u16,
        node: NodeCandidate,
        prefix: VecDeque<PieceMsg>,
    ) -> Result<mpsc::Sender<PieceMsg>, String> {
        let terms = UploadTerms {
            max_size: self.piece_bound,
            block_size: self.shard as u32,
            expires_at_ms: self.expires_ms,
        };
        let order = Orders::new(self.pieces.access.owner())
            .upload(
                node.id,
                PieceId::derive(&self.root, &node.id, index),
                terms,
                shoal_proto::time::unix_ms(),
            )
            .map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::channel(self.pieces.config.piece_buffer.max(1));
        let handover: Arc<Mutex<Handover>> = Arc::default();
        let task = self.tasks.spawn(upload_piece(
            self.pieces.clone(),
            node.clone(),
            index,
            order,
            (prefix, rx, handover.clone()),
        ));
        self.active.insert(index, task.id());
        self.holders.insert(index, node.address);
        self.tickets.insert(
            task.id(),
            PieceTicket {
                index,
                node,
                task,
                handover,
            },
        );
        Ok(tx)
    }

    /// Whether a failed piece could be started again at all (replay kept, budget left).
    fn can_replace(&self) -> bool {
        self.replacements_left > 0 && !self.replay.spilled
    }

    /// Piece `index` lost its node (task `id`): forget that node as its holder. Returns
    /// the index if `id` was the piece's current upload (so it is to be replaced), `None`
    /// for an upload already superseded.
    fn lost(&mut self, id: tokio::task::Id, index: u16) -> Option<u16> {
        if self.active.get(&index) != Some(&id) {
            return None;
        }
        self.active.remove(&index);
        self.holders.remove(&index);
        Some(index)
    }

    /// Starts piece `index` again on another node with everything it was sent so far.
    /// Returns the new node and the sender for what follows; `None` if the piece cannot
    /// be replaced (no replay, no budget, no eligible node).
    async fn replace(&mut self, index: u16) -> Option<(NodeId, mpsc::Sender<PieceMsg>)> {
        if !self.can_replace() {
            return None;
        }
        let prefix = self.replay.piece(index)?;
        let node = self.pick_replacement(index).await?;
        let id = node.id;
        self.replacements_left -= 1;
        tracing::debug!(segment = self.index, piece = index, node = %id, "piece placed again on another node");
        let tx = self.start(index, node, prefix).ok()?;
        self.pieces
            .metrics
            .piece_uploads
            .with_label_values(&["replaced"])
            .inc();
        Some((id, tx))
    }

    async fn pick_replacement(&mut self, index: u16) -> Option<NodeCandidate> {
        loop {
            let taken: Vec<std::net::SocketAddr> = self
                .holders
                .iter()
                .filter(|(i, _)| **i != index)
                .map(|(_, a)| *a)
                .collect();
            let exclude = crate::select::with_excluded(&lock(&self.exclude), &self.history);
            let backing = backing_off(
                &self.history,
                shoal_proto::time::unix_ms(),
                self.pieces.config.failed_node_backoff,
            );
            self.seed = self.seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            if let Some(c) = select_replacement(
                &self.pool,
                &self.history,
                self.piece_bound,
                &exclude,
                &backing,
                &taken,
                self.seed,
            ) {
                return Some(c);
            }
            if self.resampled {
                return None;
            }
            // The object's pool is used up: once per segment, ask discovery for more.
            self.resampled = true;
            let fresh = tokio::time::timeout(
                self.pieces.config.piece_timeout,
                self.pieces.nodes.sample(pool_size(self.scheme)),
            )
            .await
            .ok()?
            .ok()?;
            if merge_candidates(&mut self.pool, fresh) == 0 {
                return None;
            }
        }
    }

    /// After `piece_timeout` without any piece finishing: every current upload still
    /// sending data is given up (cancelled before its trailer, so its node stores
    /// nothing; the node is excluded and its failure recorded) and started again
    /// elsewhere. Returns how many were started again.
    async fn replace_stalled(&mut self) -> usize {
        let stalled: Vec<(tokio::task::Id, u16)> = self
            .tickets
            .iter()
            .filter(|(id, t)| {
                self.active.get(&t.index) == Some(*id)
                    && matches!(*lock(&t.handover), Handover::Sending)
            })
            .map(|(id, t)| (*id, t.index))
            .collect();
        let mut started = 0;
        for (id, index) in stalled {
            if !self.can_replace() {
                break;
            }
            let Some(t) = self.tickets.get(&id) else {
                continue;
            };
            {
                let mut state = lock(&t.handover);
                if !matches!(*state, Handover::Sending) {
                    continue;
                }
                *state = Handover::Cancelled;
                t.task.abort();
            }
            let node = t.node.id;
            lock(&self.exclude).insert(node);
            let _ = self
                .pieces
                .catalog
                .record_node(&node, NodeStats::failure(shoal_proto::time::unix_ms()));
            self.pieces
                .metrics
                .piece_uploads
                .with_label_values(&["cut"])
                .inc();
            self.lost(id, index);
            if self.replace(index).await.is_some() {
                started += 1;
            }
        }
        started
    }
}

/// A segment whose data has been handed to the piece uploads.
pub(crate) struct PendingSegment {
    run: SegmentRun,
    plain_size: u64,
    sealed_size: u64,
}

async fn encode_segment<R: AsyncRead + Unpin + Send>(
    pieces: &Arc<Pieces>,
    ctx: &ObjectUpload<'_>,
    blocks: &mut BlockReader<R>,
    plan: SegmentPlan,
    first: (Vec<u8>, bool),
    exclude: &Arc<Mutex<HashSet<NodeId>>>,
) -> Result<PendingSegment, Error> {
    let mut run = SegmentRun {
        pieces: pieces.clone(),
        index: plan.index,
        scheme: plan.scheme,
        shard: plan.shard,
        piece_bound: plan.piece_bound,
        expires_ms: ctx.expires_ms,
        root: SegmentRoot::random(),
        pool: plan.pool,
        history: plan.history,
        exclude: exclude.clone(),
        replay: Replay::new(pieces.config.replacement_buffer),
        replacements_left: usize::from(plan.scheme.total),
        resampled: false,
        seed: rand::random(),
        tasks: JoinSet::new(),
        tickets: HashMap::with_capacity(plan.nodes.len()),
        active: HashMap::with_capacity(plan.nodes.len()),
        holders: HashMap::with_capacity(plan.nodes.len()),
    };
    let mut slots = Vec::with_capacity(plan.nodes.len());
    for (i, node) in plan.nodes.into_iter().enumerate() {
        let id = node.id;
        let tx = run
            .start(i as u16, node, VecDeque::new())
            .map_err(|e| ctx.err(plan.index, e))?;
        slots.push(Slot {
            node: id,
            tx: Some(tx),
        });
    }
    let success = usize::from(plan.scheme.success);
    let mut feeder = Feeder {
        run: &mut run,
        slots,
        success,
    };
    let mut enc = SegmentEncoder::new(
        ctx.cipher,
        pieces.config.codec,
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
            feeder.run.replay.push(&stripe);
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
        feeder.run.replay.push(&stripe);
        feeder
            .feed(|i| PieceMsg::Shard(stripe[i].clone()))
            .await
            .map_err(|r| ctx.err(plan.index, r))?;
    }
    let tag = ctx.tag.map(|blob| SegmentTag {
        blob,
        segment: plan.index,
        plain_size,
        codec: pieces.config.codec,
        scheme: plan.scheme,
        shard_size: plan.shard as u32,
    });
    feeder.run.replay.finished = Some(tag);
    feeder
        .feed(|_| PieceMsg::Finish(tag))
        .await
        .map_err(|r| ctx.err(plan.index, r))?;
    Ok(PendingSegment {
        run,
        plain_size,
        sealed_size,
    })
}

/// Pushes one message to every live piece upload, cutting off laggards (see module doc)
/// and placing pieces whose node failed again elsewhere ([`SegmentRun`]).
struct Feeder<'a> {
    run: &'a mut SegmentRun,
    slots: Vec<Slot>,
    success: usize,
}

impl Feeder<'_> {
    fn live(&self) -> usize {
        self.slots.iter().filter(|s| s.tx.is_some()).count()
    }

    fn drop_slot(&mut self, i: usize, cut: bool) {
        if self.slots[i].tx.take().is_some() {
            lock(&self.run.exclude).insert(self.slots[i].node);
            if cut {
                self.run
                    .pieces
                    .metrics
                    .piece_uploads
                    .with_label_values(&["cut"])
                    .inc();
            }
        }
    }

    /// Slot `i`'s upload is gone (its node failed, or stopped taking data that the
    /// segment needs): drop it and start the piece again on another node, with every
    /// shard sent so far, the current message included (it is in the replay already).
    async fn fail_over(&mut self, i: usize, cut: bool) {
        self.drop_slot(i, cut);
        if let Some((node, tx)) = self.run.replace(i as u16).await {
            self.slots[i] = Slot { node, tx: Some(tx) };
        }
    }

    async fn feed(&mut self, msg: impl Fn(usize) -> PieceMsg) -> Result<(), String> {
        let mut lagging = Vec::new();
        let mut gone = Vec::new();
        for i in 0..self.slots.len() {
            let Some(tx) = &self.slots[i].tx else {
                continue;
            };
            match tx.try_send(msg(i)) {
                Ok(()) => {}
                Err(TrySendError::Closed(_)) => gone.push(i),
                Err(TrySendError::Full(_)) => lagging.push(i),
            }
        }
        for i in gone {
            self.fail_over(i, false).await;
        }
        if !lagging.is_empty() {
            let grace = self.run.pieces.config.slow_piece_grace;
            let waits = lagging.iter().filter_map(|&i| {
                let tx = self.slots[i].tx.clone()?;
                let m = msg(i);
                Some(async move { (i, tokio::time::timeout(grace, tx.send(m)).await) })
            });
            let mut still = Vec::new();
            let mut gone = Vec::new();
            for (i, r) in futures::future::join_all(waits).await {
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => gone.push(i),
                    Err(_) => still.push(i),
                }
            }
            for i in gone {
                self.fail_over(i, false).await;
            }
            for i in still {
                if self.live() > self.success {
                    self.drop_slot(i, true);
                    continue;
                }
                let Some(tx) = self.slots[i].tx.clone() else {
                    continue;
                };
                let t = self.run.pieces.config.piece_timeout;
                if !matches!(tokio::time::timeout(t, tx.send(msg(i))).await, Ok(Ok(()))) {
                    self.fail_over(i, true).await;
                }
            }
        }
        let live = self.live();
        if live < self.success {
            return Err(format!(
                "only {live} of {} piece uploads are still running and no other node could \
                 take the rest; {} must succeed",
                self.slots.len(),
                self.success
            ));
        }
        Ok(())
    }
}

async fn upload_piece(
    pieces: Arc<Pieces>,
    node: NodeCandidate,
    index: u16,
    order: Signed<UploadOrder>,
    (prefix, rx, handover): (
        VecDeque<PieceMsg>,
        mpsc::Receiver<PieceMsg>,
        Arc<Mutex<Handover>>,
    ),
) -> PieceOutcome {
    let state = (
        (prefix, rx),
        Some(PieceHasher::new(order.block_size)),
        pieces.clone(),
        order.clone(),
        handover.clone(),
    );
    let body = futures::stream::unfold(
        state,
        move |((mut prefix, mut rx), mut hasher, pieces, order, handover)| async move {
            let h = hasher.as_mut()?;
            let msg = match prefix.pop_front() {
                Some(m) => m,
                None => rx.recv().await?,
            };
            let mut state = lock(&handover);
            if matches!(*state, Handover::Cancelled) {
                // Ends the stream without a trailer: the node discards the piece.
                return None;
            }
            match msg {
                PieceMsg::Shard(b) => {
                    h.update(&b);
                    drop(state);
                    Some((
                        UploadPart::Chunk(b),
                        ((prefix, rx), hasher, pieces, order, handover),
                    ))
                }
                PieceMsg::Finish(segment) => {
                    let info = hasher.take()?.finish();
                    let tag = segment.map(|segment| {
                        TagSealer::new(pieces.access.catalog_key()).seal(
                            &order.piece_id,
                            &PieceTag {
                                segment,
                                piece_index: index,
                                piece_hash: info.root().0,
                            },
                        )
                    });
                    let signed = Orders::new(pieces.access.owner())
                        .tagged_trailer(order.piece_id, &info, tag.unwrap_or_default())
                        .ok()?;
                    *state = Handover::Complete {
                        size: info.size,
                        hash: info.root(),
                    };
                    drop(state);
                    Some((
                        UploadPart::Trailer(Box::new(signed)),
                        ((prefix, rx), None, pieces, order, handover),
                    ))
                }
            }
        },
    )
    .boxed();
    let result = pieces
        .store
        .upload(node.address(), order.clone(), body)
        .await
        .and_then(|receipt| {
            let sent = match *lock(&handover) {
                Handover::Complete { size, hash } => Some((size, hash)),
                _ => None,
            };
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
pub(super) fn verify_receipt(
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
    if receipt.piece_id != order.piece_id || receipt.owner_key != order.header.owner_key {
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

/// What the commit has gathered of one segment's piece uploads.
struct Gathered {
    ok: Vec<PiecePlacement>,
    failures: Vec<String>,
}

impl Gathered {
    /// Takes one finished piece task: a verified receipt becomes a placement, anything
    /// else a failure remembered against the node (excluded for the rest of the object).
    /// Returns the piece's index when it failed and is to be placed again.
    fn take(
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

async fn commit(
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
    let total = usize::from(run.scheme.total);
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
    // that fails meanwhile is placed again on another node while the segment has fewer
    // than `total` pieces stored or under way; pieces that make no progress within
    // `piece_timeout` are given up and placed again too.
    while got.ok.len() < success {
        let next =
            tokio::time::timeout(pieces.config.piece_timeout, run.tasks.join_next_with_id()).await;
        let reason = match next {
            Ok(Some(joined)) => {
                if let Some(index) = got.take(&mut run, joined)
                    && got.ok.len() + run.tasks.len() < total
                {
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
    // The shards are not needed any more: free them before the long tail.
    run.replay = Replay::new(0);
    // The long tail: a bounded grace to deliver more receipts, all recorded.
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
        got.take(&mut run, joined);
    }
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
fn release_tail(
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

/// Pieces that may be stored after their segment was committed (or given up): waits for
/// their late receipts in the background and deletes what arrives, so that a short grace
/// leaves no orphans. Bounded: at most [`Reaper::PIECES`] pieces are waited on at once
/// (beyond that a tail is dropped and left to lease expiry), each tail for at most
/// `piece_timeout`, and its deletes for at most as long again.
#[derive(Debug, Clone)]
pub(super) struct Reaper {
    slots: Arc<Semaphore>,
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

    fn take(
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

    /// Waits (at most `limit`) until no long tail is being waited on.
    pub(super) async fn settle(&self, limit: Duration) -> bool {
        let n = Self::PIECES as u32;
        tokio::time::timeout(limit, self.slots.acquire_many(n))
            .await
            .is_ok_and(|p| p.is_ok())
    }
}

fn delete_order(pieces: &Pieces, node: NodeId, piece: PieceId) -> Option<Signed<DeleteOrder>> {
    Orders::new(pieces.access.owner())
        .delete(node, piece, shoal_proto::time::unix_ms())
        .ok()
}

/// One delete, within `piece_timeout`: a node that never answers costs that long and
/// counts as failed (its piece goes when its lease ends), never hangs the command.
fn delete_piece(
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

async fn delete_segments(pieces: &Arc<Pieces>, segments: &[SegmentInfo]) -> DeleteReport {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn node(i: u8, free: u64) -> NodeCandidate {
        let id = shoal_proto::Identity::from_seed([i; 32]);
        NodeCandidate {
            id: id.node_id(),
            public_key: Some(*id.public_key()),
            address: SocketAddr::from(([127, 0, i, 1], 7000)),
            free_space: free,
        }
    }

    fn nodes(n: u8) -> Vec<NodeCandidate> {
        (1..=n).map(|i| node(i, 1 << 30)).collect()
    }

    fn scheme(s: &str) -> Scheme {
        s.parse().unwrap()
    }

    const SEALED: u64 = 4 << 20;

    #[test]
    fn the_requested_scheme_is_kept_while_the_pool_can_hold_it() {
        let pool = nodes(14);
        // Two nodes failed earlier in the object: 12 left for 12 pieces.
        let failed: HashSet<NodeId> = pool[..2].iter().map(|c| c.id).collect();
        let shape = plan_scheme(scheme("4/6/8/12"), false, &pool, SEALED, &failed).unwrap();
        assert_eq!(shape.scheme, scheme("4/6/8/12"));
        assert_eq!(shape.shard, shard_size_for(SEALED, 4));
        assert!(shape.piece >= SEALED / 4);
    }

    #[test]
    fn a_short_pool_drops_total_first_then_success_and_only_then_k() {
        let pool = nodes(12);
        let failed = |n: usize| -> HashSet<NodeId> { pool[..n].iter().map(|c| c.id).collect() };
        let plan = |n| {
            plan_scheme(scheme("4/6/8/12"), true, &pool, SEALED, &failed(n))
                .unwrap()
                .scheme
                .to_string()
        };
        assert_eq!(plan(0), "4/6/8/12");
        assert_eq!(plan(1), "4/6/8/11");
        // 4 of 12 failed: the unused slack goes, not k (the old rule gave 2/4/5/8).
        assert_eq!(plan(4), "4/6/8/8");
        assert_eq!(plan(5), "4/6/7/7");
        assert_eq!(plan(6), "4/6/6/6");
        assert_eq!(plan(7), "3/5/5/5");
        // Refused instead when smaller schemes are not allowed, naming the shortfall.
        let err = plan_scheme(scheme("4/6/8/12"), false, &pool, SEALED, &failed(4)).unwrap_err();
        assert_eq!((err.needed, err.available), (12, 8));
        // One node left: nothing can be stored.
        assert!(plan_scheme(scheme("4/6/8/12"), true, &pool, SEALED, &failed(11)).is_err());
    }

    #[test]
    fn a_smaller_k_means_larger_pieces_and_full_nodes_drop_out() {
        // 8 roomy nodes and 4 with room for a piece at k = 4 but not at k = 3.
        let piece_at = |k: usize| {
            Layout {
                k,
                shard_size: shard_size_for(SEALED, k),
                sealed_size: SEALED,
            }
            .piece_size()
        };
        let mut pool = nodes(8);
        pool.extend((9..=12).map(|i| node(i, piece_at(4))));
        assert!(piece_at(3) > piece_at(4));
        let none = HashSet::new();
        let shape = plan_scheme(scheme("4/6/8/12"), true, &pool, SEALED, &none).unwrap();
        assert_eq!(shape.scheme, scheme("4/6/8/12"));
        // 4 roomy nodes failed: 8 left, k is kept and so are the small nodes.
        let failed: HashSet<NodeId> = pool[..4].iter().map(|c| c.id).collect();
        let shape = plan_scheme(scheme("4/6/8/12"), true, &pool, SEALED, &failed).unwrap();
        assert_eq!(shape.scheme, scheme("4/6/8/8"));
        // 6 roomy and 1 small failed: 5 left, below `repair`, so k drops to 3, whose
        // pieces the small nodes cannot take: the plan is checked again and shrinks on.
        let failed: HashSet<NodeId> = pool[..6].iter().chain(&pool[8..9]).map(|c| c.id).collect();
        let shape = plan_scheme(scheme("4/6/8/12"), true, &pool, SEALED, &failed).unwrap();
        assert_eq!(shape.scheme, scheme("1/2/2/2"));
        assert!(capacity(&pool, shape.piece, &failed) >= 2);
    }

    #[test]
    fn fresh_candidates_are_merged_without_duplicates() {
        let all = nodes(16);
        let mut pool = all[..10].to_vec();
        let fresh = vec![
            all[3].clone(),
            all[12].clone(),
            all[12].clone(),
            all[15].clone(),
        ];
        assert_eq!(merge_candidates(&mut pool, fresh), 2);
        assert_eq!(pool.len(), 12);
        let ids: HashSet<NodeId> = pool.iter().map(|c| c.id).collect();
        assert_eq!(ids.len(), 12);
        assert_eq!(merge_candidates(&mut pool, all[..12].to_vec()), 2);
        assert_eq!(merge_candidates(&mut pool, Vec::new()), 0);
        assert!(pool_size(scheme("4/6/8/12")) > 2 * 12);
    }
}
