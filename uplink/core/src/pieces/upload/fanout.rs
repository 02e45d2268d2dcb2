//! The fan-out of one segment: encoding it into per-piece queues, cutting off laggards,
//! replacing failed pieces on fresh nodes, and one piece upload.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use shoal_proto::messages::UploadOrder;
use shoal_proto::piece_hash::PieceHasher;
use shoal_proto::{NodeId, PieceId, SegmentRoot, Signed};
use tokio::io::AsyncRead;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinSet;

use super::plan::{merge_candidates, pool_size};
use super::reader::BlockReader;
use super::receipt::verify_receipt;
use super::types::{
    Handover, ObjectUpload, PieceMsg, PieceOutcome, PieceTicket, SegmentPlan, Slot, lock,
};
use crate::catalog::tag::{PieceTag, SegmentTag, TagSealer};
use crate::codec::Scheme;
use crate::error::Error;
use crate::orders::{Orders, UploadTerms};
use crate::pieces::service::Pieces;
use crate::segment::{SegmentEncoder, Stripe};
use crate::select::{NodeStats, backing_off, select_replacement};
use crate::store::{NodeCandidate, UploadPart};

/// The coded shards handed to a segment's piece uploads so far, kept so that a piece
/// whose node fails can be sent again, whole, to another node. Bounded by `budget`
/// bytes: past it the shards are dropped and pieces that fail from then on are not
/// replaced (the segment still commits with the `success` that remain).
pub(super) struct Replay {
    pub(super) stripes: Vec<Stripe>,
    pub(super) bytes: usize,
    pub(super) budget: usize,
    /// The piece's end, once the segment is complete: with the segment's tag, if any.
    pub(super) finished: Option<Option<SegmentTag>>,
    pub(super) spilled: bool,
}

impl Replay {
    pub(super) fn new(budget: usize) -> Self {
        Self {
            stripes: Vec::new(),
            bytes: 0,
            budget,
            finished: None,
            spilled: false,
        }
    }

    pub(super) fn push(&mut self, stripe: &Stripe) {
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
    pub(super) fn piece(&self, index: u16) -> Option<VecDeque<PieceMsg>> {
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
pub(super) struct SegmentRun {
    pub(super) pieces: Arc<Pieces>,
    pub(super) index: u32,
    pub(super) scheme: Scheme,
    pub(super) shard: usize,
    pub(super) piece_bound: u64,
    pub(super) expires_ms: u64,
    pub(super) root: SegmentRoot,
    pub(super) pool: Vec<NodeCandidate>,
    pub(super) history: Arc<HashMap<NodeId, NodeStats>>,
    pub(super) exclude: Arc<Mutex<HashSet<NodeId>>>,
    pub(super) replay: Replay,
    pub(super) replacements_left: usize,
    /// Whether fresh candidates were sampled for this segment's replacements already.
    pub(super) resampled: bool,
    pub(super) seed: u64,
    pub(super) tasks: JoinSet<PieceOutcome>,
    /// By task id: which piece each task uploads.
    pub(super) tickets: HashMap<tokio::task::Id, PieceTicket>,
    /// The task currently uploading (or that stored) each piece index.
    pub(super) active: HashMap<u16, tokio::task::Id>,
    /// Address of the node holding or uploading each piece index (the subnet rule).
    pub(super) holders: HashMap<u16, std::net::SocketAddr>,
}

impl SegmentRun {
    /// Starts uploading piece `index` to `node`, `prefix` first, then what is sent on
    /// the returned channel.
    pub(super) fn start(
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
    pub(super) fn can_replace(&self) -> bool {
        self.replacements_left > 0 && !self.replay.spilled
    }

    /// Piece `index` lost its node (task `id`): forget that node as its holder. Returns
    /// the index if `id` was the piece's current upload (so it is to be replaced), `None`
    /// for an upload already superseded.
    pub(super) fn lost(&mut self, id: tokio::task::Id, index: u16) -> Option<u16> {
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
    pub(super) async fn replace(&mut self, index: u16) -> Option<(NodeId, mpsc::Sender<PieceMsg>)> {
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

    pub(super) async fn pick_replacement(&mut self, index: u16) -> Option<NodeCandidate> {
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
    pub(super) async fn replace_stalled(&mut self) -> usize {
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
    pub(super) run: SegmentRun,
    pub(super) plain_size: u64,
    pub(super) sealed_size: u64,
}

pub(super) async fn encode_segment<R: AsyncRead + Unpin + Send>(
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
pub(super) struct Feeder<'a> {
    pub(super) run: &'a mut SegmentRun,
    pub(super) slots: Vec<Slot>,
    pub(super) success: usize,
}

impl Feeder<'_> {
    pub(super) fn live(&self) -> usize {
        self.slots.iter().filter(|s| s.tx.is_some()).count()
    }

    pub(super) fn drop_slot(&mut self, i: usize, cut: bool) {
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
    pub(super) async fn fail_over(&mut self, i: usize, cut: bool) {
        self.drop_slot(i, cut);
        if let Some((node, tx)) = self.run.replace(i as u16).await {
            self.slots[i] = Slot { node, tx: Some(tx) };
        }
    }

    pub(super) async fn feed(&mut self, msg: impl Fn(usize) -> PieceMsg) -> Result<(), String> {
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

pub(super) async fn upload_piece(
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
