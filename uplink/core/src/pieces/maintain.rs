//! The piece side of keeping data alive: renew a batch of leases on one node, audit
//! one piece, and repair one segment (fetch `k` pieces, regenerate the missing ones,
//! place them on new nodes). The rules (which pieces, which nodes, what is healthy) are
//! `crate::health`'s; `crate::maintain` decides what to renew, check and repair.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use shoal_proto::piece_hash::PieceHasher;
use shoal_proto::time::unix_ms;
use shoal_proto::{NodeId, PieceHash, PieceId, SegmentRoot};
use tokio::sync::mpsc;

use super::service::Pieces;
use crate::catalog::SegmentInfo;
use crate::health;
use crate::orders::{Orders, UploadTerms};
use crate::select::{NodeStats, Transfer};
use crate::store::{NodeAddress, NodeCandidate, PieceError, PiecePlacement, UploadPart};

/// Slack taken off a node's `max_lease` when renewing up to it, so that the order is
/// still within the limit when it arrives.
const MAX_LEASE_SLACK_MS: u64 = 60_000;

impl Pieces {
    /// Extends the leases of `pieces` on `node` to `expires_at_ms` (once more at the
    /// node's limit if it refuses that long a lease); the node's statistics count the
    /// call. Returns the results and whether the lease was capped.
    pub(crate) async fn renew(
        self: &Arc<Self>,
        node: NodeAddress,
        pieces: Vec<PieceId>,
        expires_at_ms: u64,
    ) -> Result<(Vec<shoal_proto::messages::RenewResult>, bool), PieceError> {
        let r = renew_on(self, node, pieces, expires_at_ms).await;
        let now = unix_ms();
        let delta = if r.is_ok() {
            NodeStats::success(now)
        } else {
            NodeStats::failure(now)
        };
        record(self, &node.id, delta);
        r
    }

    /// Audits `blocks` of piece `p` of `seg`; the node's statistics count the outcome.
    /// Returns the bytes the audit brought back.
    pub(crate) async fn audit(
        self: &Arc<Self>,
        seg: &SegmentInfo,
        p: &PiecePlacement,
        blocks: &[u32],
    ) -> Result<u64, PieceError> {
        let started = tokio::time::Instant::now();
        let r = audit_piece(self, seg, p, blocks).await;
        record(
            self,
            &NodeId(p.node_id),
            outcome_stats(&r, started.elapsed()),
        );
        r
    }

    /// Repairs one segment from its `healthy` indices. Returns the segment with its new
    /// placements, and those.
    pub(crate) async fn repair_segment(
        self: &Arc<Self>,
        seg: &SegmentInfo,
        healthy: &[u16],
    ) -> Result<(SegmentInfo, Vec<PiecePlacement>), String> {
        repair_segment(self, seg, healthy).await
    }
}

fn record(pieces: &Pieces, node: &NodeId, delta: NodeStats) {
    let _ = pieces.catalog.record_node(node, delta);
}

fn outcome_stats(r: &Result<u64, PieceError>, elapsed: Duration) -> NodeStats {
    NodeStats::from_outcome(
        Transfer::Audit,
        r.as_ref().map(|_| ()),
        Some(elapsed),
        shoal_proto::time::unix_ms(),
    )
}

/// One renew order to `node`; on a `max_lease` refusal, once more at the node's limit.
/// Returns the results and whether the lease was capped.
async fn renew_on(
    this: &Arc<Pieces>,
    node: NodeAddress,
    pieces: Vec<PieceId>,
    expires_at_ms: u64,
) -> Result<(Vec<shoal_proto::messages::RenewResult>, bool), PieceError> {
    let owner = this.access.owner();
    let timeout = this.config.piece_timeout;
    let send = |expires_at_ms: u64, pieces: Vec<PieceId>| {
        let signed = Orders::new(owner).renew(node.id, pieces, expires_at_ms, unix_ms());
        let store = Arc::clone(&this.store);
        async move {
            let signed = signed.map_err(|e| PieceError::Protocol {
                node: node.id,
                reason: e.to_string(),
            })?;
            tokio::time::timeout(timeout, store.renew(node, signed))
                .await
                .map_err(|_| PieceError::Timeout {
                    node: node.id,
                    seconds: timeout.as_secs_f64(),
                })?
        }
    };
    match send(expires_at_ms, pieces.clone()).await {
        Err(PieceError::LeaseTooLong { max_lease_ms, .. }) if max_lease_ms > MAX_LEASE_SLACK_MS => {
            let capped = unix_ms().saturating_add(max_lease_ms - MAX_LEASE_SLACK_MS);
            Ok((send(capped.min(expires_at_ms), pieces).await?, true))
        }
        other => other.map(|r| (r, false)),
    }
}

/// Audits `blocks` of one piece; returns the bytes the audits brought back.
async fn audit_piece(
    pieces: &Arc<Pieces>,
    seg: &SegmentInfo,
    p: &PiecePlacement,
    blocks: &[u32],
) -> Result<u64, PieceError> {
    let node = NodeId(p.node_id);
    let owner = pieces.access.owner();
    let timeout = pieces.config.piece_timeout;
    let corrupt = |reason: String| PieceError::Corrupt { node, reason };
    let mut bytes = 0u64;
    for &block in blocks {
        let order = Orders::new(owner)
            .audit(node, PieceId(p.piece_id), block, unix_ms())
            .map_err(|e| PieceError::Protocol {
                node,
                reason: e.to_string(),
            })?;
        let (info, data) = tokio::time::timeout(timeout, pieces.store.audit(p.node(), order))
            .await
            .map_err(|_| PieceError::Timeout {
                node,
                seconds: timeout.as_secs_f64(),
            })??;
        bytes += data.len() as u64 + 32 * info.block_hashes.len() as u64;
        if info.root() != PieceHash(p.piece_hash) {
            return Err(corrupt(
                "audit: piece info does not hash to the recorded piece hash".into(),
            ));
        }
        if info.size != seg.piece_size || info.block_size != seg.shard_size {
            return Err(corrupt(format!(
                "audit: piece of {} bytes in blocks of {}, recorded {} in {}",
                info.size, info.block_size, seg.piece_size, seg.shard_size
            )));
        }
        if !info.verify_block(u64::from(block), &data) {
            return Err(corrupt(format!(
                "audit: block {block} does not match its hash"
            )));
        }
    }
    Ok(bytes)
}

/// Downloads one whole piece, every block verified; one `Bytes` per stripe.
async fn fetch_piece(
    pieces: &Arc<Pieces>,
    seg: &SegmentInfo,
    p: &PiecePlacement,
) -> Result<Vec<Bytes>, PieceError> {
    let node = NodeId(p.node_id);
    let stripes = seg.piece_size / u64::from(seg.shard_size.max(1));
    let (tx, mut rx) = mpsc::channel(8);
    let task = tokio::spawn(super::download::piece_download(
        Arc::clone(pieces),
        p.clone(),
        seg.shard_size,
        seg.piece_size,
        0,
        stripes,
        tx,
    ));
    let _abort = AbortOnDrop(task);
    let timeout = pieces.config.piece_timeout;
    let mut out = Vec::with_capacity(stripes as usize);
    while (out.len() as u64) < stripes {
        match tokio::time::timeout(timeout, rx.recv()).await {
            Ok(Some(Ok(b))) => out.push(b),
            Ok(Some(Err(e))) => return Err(e),
            Ok(None) => {
                return Err(PieceError::Protocol {
                    node,
                    reason: "piece download ended early".into(),
                });
            }
            Err(_) => {
                return Err(PieceError::Timeout {
                    node,
                    seconds: timeout.as_secs_f64(),
                });
            }
        }
    }
    Ok(out)
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Repairs one segment: fetch `k` healthy pieces, regenerate the missing indices, place
/// them on new nodes. Returns the segment with its new placements, and those.
async fn repair_segment(
    pieces: &Arc<Pieces>,
    seg: &SegmentInfo,
    healthy: &[u16],
) -> Result<(SegmentInfo, Vec<PiecePlacement>), String> {
    let k = usize::from(seg.scheme.k);
    let total = usize::from(seg.scheme.total);
    let by_index: HashMap<u16, &PiecePlacement> = seg.pieces.iter().map(|p| (p.index, p)).collect();
    // 1. k whole, verified pieces (data pieces first, nodes whose last transfer failed
    // lately last; the next healthy one on failure).
    let history = pieces.catalog.node_stats().map_err(|e| e.to_string())?;
    let now = shoal_proto::time::unix_ms();
    let mut order = health::fetch_order(seg.scheme.k, healthy);
    order.sort_by_key(|i| {
        by_index
            .get(i)
            .and_then(|p| history.get(&NodeId(p.node_id)))
            .is_some_and(|s| s.backing_off(now, pieces.config.failed_node_backoff))
    });
    let mut order = order.into_iter();
    let mut running = FuturesUnordered::new();
    let mut fetched: Vec<(u16, Vec<Bytes>)> = Vec::with_capacity(k);
    let mut errors = Vec::new();
    loop {
        while fetched.len() + running.len() < k {
            let Some(i) = order.next() else { break };
            let Some(p) = by_index.get(&i).copied() else {
                continue;
            };
            let pieces = Arc::clone(pieces);
            let seg = seg.clone();
            let p = p.clone();
            running.push(async move {
                let started = tokio::time::Instant::now();
                let r = fetch_piece(&pieces, &seg, &p).await;
                let stats = outcome_stats(
                    &r.as_ref().map(|_| 0).map_err(Clone::clone),
                    started.elapsed(),
                );
                record(&pieces, &NodeId(p.node_id), stats);
                (p.index, r)
            });
        }
        let Some((index, r)) = running.next().await else {
            break;
        };
        match r {
            Ok(blocks) => fetched.push((index, blocks)),
            Err(e) => errors.push(e.to_string()),
        }
        if fetched.len() >= k {
            break;
        }
    }
    drop(running);
    if fetched.len() < k {
        return Err(format!(
            "only {} of the {k} pieces needed could be fetched ({})",
            fetched.len(),
            errors.join("; ")
        ));
    }
    // 2. Where the new pieces go.
    let missing = health::missing_indices(seg.scheme, healthy);
    let pool = pieces
        .nodes
        .sample(2 * total + 8)
        .await
        .map_err(|e| e.to_string())?;
    let holders: HashSet<NodeId> = seg.pieces.iter().map(|p| NodeId(p.node_id)).collect();
    let kept: Vec<std::net::IpAddr> = healthy
        .iter()
        .filter_map(|i| by_index.get(i).map(|p| p.address.ip()))
        .collect();
    let nodes = health::place_repair(
        &pool,
        &history,
        &holders,
        &kept,
        missing.len(),
        seg.piece_size,
        rand::random(),
    )
    .map_err(|e| format!("no node can take a new piece: {e}"))?;
    let targets: Vec<(u16, NodeCandidate)> = missing.into_iter().zip(nodes).collect();
    // 3. Regenerate exactly those indices, stripe by stripe.
    let shard = seg.shard_size as usize;
    let stripes = fetched[0].1.len();
    let mut coder = seg
        .codec
        .coder(k, seg.scheme.parity(), shard)
        .map_err(|e| e.to_string())?;
    let mut out: Vec<Vec<u8>> = targets
        .iter()
        .map(|_| Vec::with_capacity(seg.piece_size as usize))
        .collect();
    for s in 0..stripes {
        let mut slots: Vec<Option<Vec<u8>>> = vec![None; total];
        for (i, blocks) in &fetched {
            if let (Some(slot), Some(b)) = (slots.get_mut(usize::from(*i)), blocks.get(s)) {
                *slot = Some(b.to_vec());
            }
        }
        coder
            .reconstruct_data(&mut slots)
            .map_err(|e| e.to_string())?;
        let data: Vec<&[u8]> = slots[..k]
            .iter()
            .map(|d| d.as_deref().unwrap_or_default())
            .collect();
        let mut parity = vec![Vec::with_capacity(shard); seg.scheme.parity()];
        coder
            .encode(&data, &mut parity)
            .map_err(|e| e.to_string())?;
        for ((index, _), buf) in targets.iter().zip(out.iter_mut()) {
            let i = usize::from(*index);
            let shard_bytes = if i < k { data[i] } else { &parity[i - k] };
            buf.extend_from_slice(shard_bytes);
        }
    }
    // 4. Upload them; keep what lands.
    let uploads = targets.into_iter().zip(out).map(|((index, node), data)| {
        let pieces = Arc::clone(pieces);
        let seg = seg.clone();
        async move { upload_regenerated(&pieces, &seg, node, index, data).await }
    });
    let results: Vec<Result<PiecePlacement, PieceError>> = futures::stream::iter(uploads)
        .buffer_unordered(8)
        .collect()
        .await;
    let mut placed = Vec::new();
    let mut failed = Vec::new();
    for r in results {
        match r {
            Ok(p) => placed.push(p),
            Err(e) => failed.push(e.to_string()),
        }
    }
    if placed.is_empty() {
        return Err(format!(
            "no new piece could be stored: {}",
            failed.join("; ")
        ));
    }
    let mut new_seg = seg.clone();
    new_seg.pieces = healthy
        .iter()
        .filter_map(|i| by_index.get(i).map(|p| (*p).clone()))
        .chain(placed.iter().cloned())
        .collect();
    new_seg.pieces.sort_by_key(|p| p.index);
    Ok((new_seg, placed))
}

/// Stores one regenerated piece on `node`; its receipt is checked like an upload's.
async fn upload_regenerated(
    pieces: &Arc<Pieces>,
    seg: &SegmentInfo,
    node: NodeCandidate,
    index: u16,
    data: Vec<u8>,
) -> Result<PiecePlacement, PieceError> {
    let owner = pieces.access.owner();
    let protocol = |reason: String| PieceError::Protocol {
        node: node.id,
        reason,
    };
    let now = unix_ms();
    let orders = Orders::new(owner);
    let terms = UploadTerms {
        max_size: seg.piece_size,
        block_size: seg.shard_size,
        expires_at_ms: now.saturating_add(pieces.config.default_lease.as_millis() as u64),
    };
    let piece = PieceId::derive(&SegmentRoot::random(), &node.id, index);
    let order = orders
        .upload(node.id, piece, terms, now)
        .map_err(|e| protocol(e.to_string()))?;
    let mut hasher = PieceHasher::new(seg.shard_size);
    hasher.update(&data);
    let info = hasher.finish();
    let trailer = orders
        .trailer(piece, &info)
        .map_err(|e| protocol(e.to_string()))?;
    // A piece of up to 128 MiB: the per-transfer timeout, once per 16 MiB.
    let limit = pieces.config.piece_timeout * (1 + (data.len() as u32 >> 24));
    let body = UploadPart::whole_piece(Bytes::from(data), trailer);
    let started = tokio::time::Instant::now();
    let result = tokio::time::timeout(
        limit,
        pieces.store.upload(node.address(), order.clone(), body),
    )
    .await
    .map_err(|_| PieceError::Timeout {
        node: node.id,
        seconds: limit.as_secs_f64(),
    })
    .and_then(|r| r)
    .and_then(|receipt| {
        super::upload::verify_receipt(&receipt, &order, &node, Some((info.size, info.root())))?;
        Ok(receipt)
    });
    let stats = NodeStats::from_outcome(
        Transfer::Upload,
        result.as_ref().map(|_| ()),
        Some(started.elapsed()),
        shoal_proto::time::unix_ms(),
    );
    record(pieces, &node.id, stats);
    let receipt = result?;
    Ok(PiecePlacement {
        index,
        node_id: node.id.0,
        address: node.address,
        piece_id: order.piece_id.0,
        piece_hash: receipt.piece_hash.0,
    })
}
