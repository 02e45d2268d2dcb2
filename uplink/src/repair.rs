//! Keeping data alive without a satellite: renew, check (audit) and repair, the network
//! edges of [`crate::health`]'s rules.
//!
//! - **Renew** ([`Uplink::renew`]): every piece of every object in scope (objects stored
//!   with an explicit expiry are left to expire), and with no bucket given the
//!   catalog's own live blobs, grouped per node into batch renew orders of at most
//!   1,024 pieces ([`health::renew_batches`]): one signed order per node. Renewing is
//!   idempotent and monotonic on the node. A node that refuses the lease as beyond its
//!   `max_lease` is asked again for exactly its limit. [`spawn_renewer`] runs it in the
//!   background.
//! - **Check** ([`Uplink::check`]): audits every piece of every segment in scope: a few
//!   random blocks ([`health::audit_blocks`]) checked against the recorded piece hash,
//!   at most [`AUDIT_CONCURRENCY`] audits in flight, so audit traffic is bounded by
//!   blocks × block size plus each piece's hash list (see BENCHMARKS.md). Each segment
//!   is classified ([`health::classify`]); the worst state gives the exit status.
//! - **Repair** ([`Uplink::repair`]): for each segment at or below its repair threshold
//!   (and still rebuildable), download `k` healthy pieces whole (every block verified),
//!   regenerate exactly the missing piece indices, upload them to new nodes
//!   ([`health::place_repair`]) and record the new placements as a catalog change, one
//!   per object, through the catalog's single merge rule. Healthy segments are not
//!   touched. Crash safety: new pieces are uploaded before the change is made; a crash
//!   before it leaves unreferenced pieces that their lease reclaims, and a rerun finds
//!   the segment still below threshold and repairs it again. An object changed since
//!   the check is left alone (its new pieces are deleted).
//!
//! Every node's answer feeds its reputation ([`crate::select::NodeStats`]): a node whose
//! audit fails verification is left out of new placements.
//!
//! The catalog's own live blobs (the newest snapshot and this writer's deltas after it)
//! are renewed, checked and repaired with everything ([`Scope::everything`]). A blob at
//! or below its repair threshold, or lost, is not patched piece by piece: the replica
//! holds the whole catalog, so repair asks the next publish for a fresh snapshot
//! ([`RepairReport::catalog_snapshot`]), written to new nodes like any upload; the
//! damaged blobs are then no longer needed, renewed or checked, and expire.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use serde::Serialize;
use shoal_proto::messages::RenewStatus;
use shoal_proto::piece_hash::PieceHasher;
use shoal_proto::time::unix_ms;
use shoal_proto::{NodeId, PieceHash, PieceId, SegmentRoot};
use tokio::sync::{mpsc, oneshot};

use crate::catalog::{ObjectEntry, SegmentInfo, Value};
use crate::client::{Inner, Uplink};
use crate::error::Error;
use crate::health::{self, SegmentState};
use crate::orders::{Orders, UploadTerms};
use crate::select::{NodeStats, Transfer};
use crate::store::{NodeAddress, NodeCandidate, PieceError, PiecePlacement, UploadPart};

/// Audits in flight at once during a check.
pub const AUDIT_CONCURRENCY: usize = 16;
/// Renew orders in flight at once.
const RENEW_CONCURRENCY: usize = 16;
/// Slack taken off a node's `max_lease` when renewing up to it, so that the order is
/// still within the limit when it arrives.
const MAX_LEASE_SLACK_MS: u64 = 60_000;

/// Which objects a command covers: every object (no bucket), the objects of a bucket
/// under a prefix (`recursive`), or without `recursive` the object named by the prefix
/// (or, for an empty prefix, the bucket's top level).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    pub bucket: Option<String>,
    pub prefix: String,
    pub recursive: bool,
}

impl Scope {
    /// Everything this uplink stores, catalog included.
    pub fn everything() -> Self {
        Self::default()
    }
}

/// What a renew did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RenewReport {
    /// Signed renew orders sent (one per node, more only beyond 1,024 pieces).
    pub orders: usize,
    pub nodes: usize,
    pub pieces: usize,
    pub renewed: usize,
    /// Pieces the node does not hold (lost, deleted or expired): for repair.
    pub missing: usize,
    /// Pieces the node refused as another owner's, or was busy with.
    pub refused: usize,
    /// Pieces on nodes that could not be reached or failed.
    pub unreachable: usize,
    /// Pieces renewed only up to their node's `max_lease`.
    pub capped: usize,
    /// Catalog blobs among the renewed (snapshot and deltas).
    pub catalog_blobs: usize,
    /// The expiry asked for (unix ms).
    pub expires_at_ms: u64,
}

/// Options of a check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CheckOptions {
    /// Fraction of each piece's blocks to audit (at least one, at most
    /// [`health::MAX_AUDIT_BLOCKS`]). Default 0: one block per piece.
    pub audit_fraction: f64,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            audit_fraction: 0.0,
        }
    }
}

/// One piece that did not pass its audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PieceProblem {
    pub index: u16,
    pub node: String,
    pub reason: String,
}

/// How one segment fared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SegmentHealth {
    pub bucket: String,
    pub key: String,
    /// Position in the object's segments (for a multipart object, counted across its
    /// parts).
    pub segment: u32,
    pub scheme: String,
    /// Pieces recorded in the catalog.
    pub pieces: usize,
    /// Pieces reachable and verified.
    pub healthy: usize,
    pub state: SegmentState,
    pub problems: Vec<PieceProblem>,
    #[serde(skip)]
    pub healthy_indices: Vec<u16>,
}

/// What a check found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    pub objects: usize,
    /// The objects' segments.
    pub segments: Vec<SegmentHealth>,
    /// For [`Scope::everything`] with a network catalog: the segments of the catalog's
    /// own live blobs (the newest snapshot and this writer's deltas after it), `bucket`
    /// empty and `key` naming the blob.
    pub catalog: Vec<SegmentHealth>,
    /// Counts of the objects' and the catalog's segments by state.
    pub healthy: usize,
    pub below_threshold: usize,
    pub lost: usize,
    /// Bytes the audits brought back (blocks and hash lists).
    pub audit_bytes: u64,
    /// Bytes of pieces covered by the check (sum of the audited pieces' sizes).
    pub checked_bytes: u64,
}

impl CheckReport {
    /// `uplink check`'s exit status (see [`crate::health`]).
    pub fn exit_status(&self) -> u8 {
        health::exit_status(self.segments.iter().chain(&self.catalog).map(|s| &s.state))
    }
}

/// What a repair did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RepairReport {
    /// The check it started from.
    pub check: CheckReport,
    pub segments_repaired: usize,
    pub pieces_uploaded: usize,
    /// Sealed bytes of the segments repaired.
    pub segment_bytes_repaired: u64,
    /// Segments that could not be repaired, and why.
    pub failures: Vec<String>,
    /// Each object segment's state after the repair.
    pub after: Vec<SegmentState>,
    /// Some live catalog blob was at or below its repair threshold, or lost: the next
    /// publish ([`Uplink::flush`]) writes a fresh snapshot of the whole catalog from
    /// this replica, which replaces the damaged blobs (see the module docs).
    pub catalog_snapshot: bool,
}

impl RepairReport {
    /// The exit status over the state after repairing (the catalog's blobs count as
    /// healthy once a fresh snapshot is due: the flush that follows writes it or fails).
    pub fn exit_status(&self) -> u8 {
        let catalog = self
            .check
            .catalog
            .iter()
            .map(|s| &s.state)
            .filter(|_| !self.catalog_snapshot);
        health::exit_status(self.after.iter().chain(catalog))
    }
}

/// A piece and how its audit went (audit bytes, or why it failed).
type Audited = (PiecePlacement, Result<u64, PieceError>);

fn record(inner: &Inner, node: &NodeId, delta: NodeStats) {
    let _ = inner.catalog.record_node(node, delta);
}

fn outcome_stats(r: &Result<u64, PieceError>, elapsed: Duration) -> NodeStats {
    NodeStats::from_outcome(
        Transfer::Audit,
        r.as_ref().map(|_| ()),
        Some(elapsed),
        shoal_proto::time::unix_ms(),
    )
}

impl Uplink {
    /// The objects in `scope`, with their bucket.
    fn scoped(&self, scope: &Scope) -> Result<Vec<(String, ObjectEntry)>, Error> {
        let catalog = &self.inner.catalog;
        let buckets: Vec<String> = match &scope.bucket {
            Some(b) => {
                if catalog.bucket(b)?.is_none() {
                    return Err(Error::NoSuchBucket(b.clone()));
                }
                vec![b.clone()]
            }
            None => catalog.buckets()?.into_iter().map(|b| b.name).collect(),
        };
        let mut out = Vec::new();
        for b in buckets {
            let recursive = scope.recursive || scope.bucket.is_none();
            for e in catalog.objects(&b, &scope.prefix)? {
                let keep = recursive
                    || if scope.prefix.is_empty() {
                        !e.key.contains('/')
                    } else {
                        e.key == scope.prefix
                    };
                if keep {
                    out.push((b.clone(), e));
                }
            }
        }
        Ok(out)
    }

    /// Extends the lease of every piece in `scope` (and, for [`Scope::everything`], of
    /// the catalog's live blobs) to `lease` from now (default: the configured
    /// `default_lease`). See the module docs.
    pub async fn renew(
        &self,
        scope: &Scope,
        lease: Option<Duration>,
    ) -> Result<RenewReport, Error> {
        let inner = &self.inner;
        let lease = lease.unwrap_or(inner.config.default_lease);
        let expires_at_ms = unix_ms().saturating_add(lease.as_millis() as u64);
        let mut pieces: Vec<(NodeAddress, PieceId)> = Vec::new();
        for (_, e) in self.scoped(scope)? {
            if e.expires_ms.is_some() {
                continue; // stored to expire: never renewed
            }
            for seg in e.segments() {
                pieces.extend(seg.pieces.iter().map(|p| (p.node(), PieceId(p.piece_id))));
            }
        }
        let mut report = RenewReport {
            expires_at_ms,
            ..RenewReport::default()
        };
        if scope.bucket.is_none() && inner.sync.is_some() {
            let blobs = inner.live_blobs().await?;
            report.catalog_blobs = blobs.len();
            for b in &blobs {
                for seg in &b.blob.segments {
                    pieces.extend(seg.pieces.iter().map(|p| (p.node(), PieceId(p.piece_id))));
                }
            }
        }
        let batches = health::renew_batches(pieces);
        report.orders = batches.len();
        report.nodes = batches
            .iter()
            .map(|(n, _)| n.id)
            .collect::<HashSet<_>>()
            .len();
        let mut calls = futures::stream::iter(batches.into_iter().map(|(node, ids)| {
            let inner = Arc::clone(inner);
            async move {
                let n = ids.len();
                let r = renew_on(&inner, node, ids, expires_at_ms).await;
                (node, n, r)
            }
        }))
        .buffer_unordered(RENEW_CONCURRENCY);
        while let Some((node, n, r)) = calls.next().await {
            report.pieces += n;
            match r {
                Ok((results, capped)) => {
                    record(
                        inner,
                        &node.id,
                        NodeStats::success(shoal_proto::time::unix_ms()),
                    );
                    for res in results {
                        match res.status {
                            RenewStatus::Renewed { .. } => {
                                report.renewed += 1;
                                report.capped += usize::from(capped);
                            }
                            RenewStatus::NotFound => report.missing += 1,
                            RenewStatus::NotOwner | RenewStatus::Busy => report.refused += 1,
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(node = %node.id, error = %e, "renew failed");
                    record(
                        inner,
                        &node.id,
                        NodeStats::failure(shoal_proto::time::unix_ms()),
                    );
                    report.unreachable += n;
                }
            }
        }
        Ok(report)
    }

    /// Audits every piece in `scope` and classifies every segment.
    pub async fn check(&self, scope: &Scope, options: CheckOptions) -> Result<CheckReport, Error> {
        let objects = self.scoped(scope)?;
        let mut report = CheckReport {
            objects: objects.len(),
            ..CheckReport::default()
        };
        let inner = &self.inner;
        // What to audit: (bucket, key, segments), the objects first, then for
        // everything the catalog's live blobs.
        let mut targets: Vec<(String, String, &[SegmentInfo])> = objects
            .iter()
            .map(|(b, e)| (b.clone(), e.key.clone(), e.segments()))
            .collect();
        let blobs = if scope.bucket.is_none() && inner.sync.is_some() {
            inner.live_blobs().await?
        } else {
            Vec::new()
        };
        targets.extend(
            blobs
                .iter()
                .map(|b| (String::new(), b.name.clone(), b.blob.segments.as_slice())),
        );
        let seed: u64 = rand::random();
        // One audit task per piece, at most AUDIT_CONCURRENCY at once.
        let mut tasks = Vec::new();
        for (oi, (_, _, segments)) in targets.iter().enumerate() {
            for (si, seg) in segments.iter().enumerate() {
                for p in &seg.pieces {
                    let blocks = seg.piece_size.div_ceil(u64::from(seg.shard_size.max(1)));
                    let which = health::audit_blocks(
                        blocks,
                        options.audit_fraction,
                        seed ^ u64::from(p.piece_id[0]) << 8 ^ u64::from(p.piece_id[1]),
                    );
                    let inner = Arc::clone(inner);
                    let seg = seg.clone();
                    let p = p.clone();
                    tasks.push(async move {
                        let started = tokio::time::Instant::now();
                        let r = audit_piece(&inner, &seg, &p, &which).await;
                        record(
                            &inner,
                            &NodeId(p.node_id),
                            outcome_stats(&r, started.elapsed()),
                        );
                        (oi, si, p, r)
                    });
                }
            }
        }
        let mut results: HashMap<(usize, usize), Vec<Audited>> = HashMap::new();
        let mut stream = futures::stream::iter(tasks).buffer_unordered(AUDIT_CONCURRENCY);
        while let Some((oi, si, p, r)) = stream.next().await {
            results.entry((oi, si)).or_default().push((p, r));
        }
        for (oi, (bucket, key, segments)) in targets.iter().enumerate() {
            for (si, seg) in segments.iter().enumerate() {
                let mut healthy_indices = Vec::new();
                let mut problems = Vec::new();
                for (p, r) in results.remove(&(oi, si)).unwrap_or_default() {
                    match r {
                        Ok(bytes) => {
                            report.audit_bytes += bytes;
                            report.checked_bytes += seg.piece_size;
                            healthy_indices.push(p.index);
                        }
                        Err(err) => problems.push(PieceProblem {
                            index: p.index,
                            node: NodeId(p.node_id).to_hex(),
                            reason: err.to_string(),
                        }),
                    }
                }
                healthy_indices.sort_unstable();
                healthy_indices.dedup();
                problems.sort_by_key(|p| p.index);
                let state = health::classify(seg.scheme, healthy_indices.len());
                match state {
                    SegmentState::Healthy => report.healthy += 1,
                    SegmentState::BelowThreshold => report.below_threshold += 1,
                    SegmentState::Lost => report.lost += 1,
                }
                let list = if oi < objects.len() {
                    &mut report.segments
                } else {
                    &mut report.catalog
                };
                list.push(SegmentHealth {
                    bucket: bucket.clone(),
                    key: key.clone(),
                    // The position in the object's segment list: a multipart object's
                    // parts each number their segments from 0.
                    segment: si as u32,
                    scheme: seg.scheme.to_string(),
                    pieces: seg.pieces.len(),
                    healthy: healthy_indices.len(),
                    state,
                    problems,
                    healthy_indices,
                });
            }
        }
        Ok(report)
    }

    /// Checks `scope`, then repairs every segment at or below its repair threshold (see
    /// the module docs). The changed placements are catalog changes like any other:
    /// publish them with [`Uplink::flush`].
    pub async fn repair(
        &self,
        scope: &Scope,
        options: CheckOptions,
    ) -> Result<RepairReport, Error> {
        let check = self.check(scope, options).await?;
        let mut report = RepairReport {
            after: check.segments.iter().map(|s| s.state).collect(),
            ..RepairReport::default()
        };
        // Segments to repair, grouped per object.
        let mut due: BTreeMap<(String, String), Vec<(usize, &SegmentHealth)>> = BTreeMap::new();
        for (i, s) in check.segments.iter().enumerate() {
            if s.state == SegmentState::BelowThreshold {
                due.entry((s.bucket.clone(), s.key.clone()))
                    .or_default()
                    .push((i, s));
            }
        }
        let objects: HashMap<(String, String), ObjectEntry> = self
            .scoped(scope)?
            .into_iter()
            .map(|(b, e)| ((b, e.key.clone()), e))
            .collect();
        for ((bucket, key), segs) in due {
            let Some(entry) = objects.get(&(bucket.clone(), key.clone())) else {
                continue;
            };
            let mut updated = entry.clone();
            let mut new_pieces: Vec<PiecePlacement> = Vec::new();
            let mut changed = Vec::new();
            for (i, sh) in segs {
                let pos = sh.segment as usize;
                let Some(seg) = entry.segments().get(pos) else {
                    continue;
                };
                match repair_segment(&self.inner, seg, &sh.healthy_indices).await {
                    Ok((new_seg, placed)) => {
                        let healthy = sh.healthy + placed.len();
                        new_pieces.extend(placed.iter().cloned());
                        report.pieces_uploaded += placed.len();
                        report.segment_bytes_repaired += seg.sealed_size;
                        report.segments_repaired += 1;
                        changed.push((i, health::classify(seg.scheme, healthy)));
                        if let Some(slot) = updated.segments_mut().get_mut(pos) {
                            *slot = new_seg;
                        }
                    }
                    Err(reason) => report
                        .failures
                        .push(format!("{bucket}/{key} segment {}: {reason}", sh.segment)),
                }
            }
            if changed.is_empty() {
                continue;
            }
            // Only if nobody changed the object since the check: otherwise the new
            // pieces belong to nothing.
            let current = self.inner.catalog.object(&bucket, &key)?;
            if current.as_ref().map(|c| c.version) != Some(entry.version) {
                report.failures.push(format!(
                    "{bucket}/{key} changed during the repair; its new pieces were dropped"
                ));
                let _ = crate::upload::delete_placements(&self.inner, &new_pieces).await;
                continue;
            }
            let version = self.inner.catalog.next_version()?;
            updated.version = version;
            self.change(
                Self::object_key(&bucket, &key),
                version,
                Value::Object(updated),
            )?;
            for (i, state) in changed {
                report.after[i] = state;
            }
        }
        // The catalog's blobs are not patched piece by piece: this replica holds the
        // whole catalog, so a fresh snapshot replaces whatever lost pieces (even a blob
        // with fewer than k left).
        if check
            .catalog
            .iter()
            .any(|s| s.state != SegmentState::Healthy)
        {
            report.catalog_snapshot = self.inner.request_snapshot();
        }
        report.check = check;
        Ok(report)
    }
}

/// One renew order to `node`; on a `max_lease` refusal, once more at the node's limit.
/// Returns the results and whether the lease was capped.
async fn renew_on(
    inner: &Arc<Inner>,
    node: NodeAddress,
    pieces: Vec<PieceId>,
    expires_at_ms: u64,
) -> Result<(Vec<shoal_proto::messages::RenewResult>, bool), PieceError> {
    let owner = inner.access.owner();
    let timeout = inner.config.piece_timeout;
    let send = |expires_at_ms: u64, pieces: Vec<PieceId>| {
        let signed = Orders::new(owner).renew(node.id, pieces, expires_at_ms, unix_ms());
        let store = Arc::clone(&inner.store);
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
    inner: &Arc<Inner>,
    seg: &SegmentInfo,
    p: &PiecePlacement,
    blocks: &[u32],
) -> Result<u64, PieceError> {
    let node = NodeId(p.node_id);
    let owner = inner.access.owner();
    let timeout = inner.config.piece_timeout;
    let corrupt = |reason: String| PieceError::Corrupt { node, reason };
    let mut bytes = 0u64;
    for &block in blocks {
        let order = Orders::new(owner)
            .audit(node, PieceId(p.piece_id), block, unix_ms())
            .map_err(|e| PieceError::Protocol {
                node,
                reason: e.to_string(),
            })?;
        let (info, data) = tokio::time::timeout(timeout, inner.store.audit(p.node(), order))
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
    inner: &Arc<Inner>,
    seg: &SegmentInfo,
    p: &PiecePlacement,
) -> Result<Vec<Bytes>, PieceError> {
    let node = NodeId(p.node_id);
    let stripes = seg.piece_size / u64::from(seg.shard_size.max(1));
    let (tx, mut rx) = mpsc::channel(8);
    let task = tokio::spawn(crate::download::piece_download(
        Arc::clone(inner),
        p.clone(),
        seg.shard_size,
        seg.piece_size,
        0,
        stripes,
        tx,
    ));
    let _abort = AbortOnDrop(task);
    let timeout = inner.config.piece_timeout;
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
    inner: &Arc<Inner>,
    seg: &SegmentInfo,
    healthy: &[u16],
) -> Result<(SegmentInfo, Vec<PiecePlacement>), String> {
    let k = usize::from(seg.scheme.k);
    let total = usize::from(seg.scheme.total);
    let by_index: HashMap<u16, &PiecePlacement> = seg.pieces.iter().map(|p| (p.index, p)).collect();
    // 1. k whole, verified pieces (data pieces first, nodes whose last transfer failed
    // lately last; the next healthy one on failure).
    let history = inner.catalog.node_stats().map_err(|e| e.to_string())?;
    let now = shoal_proto::time::unix_ms();
    let mut order = health::fetch_order(seg.scheme.k, healthy);
    order.sort_by_key(|i| {
        by_index
            .get(i)
            .and_then(|p| history.get(&NodeId(p.node_id)))
            .is_some_and(|s| s.backing_off(now, inner.config.failed_node_backoff))
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
            let inner = Arc::clone(inner);
            let seg = seg.clone();
            let p = p.clone();
            running.push(async move {
                let started = tokio::time::Instant::now();
                let r = fetch_piece(&inner, &seg, &p).await;
                let stats = outcome_stats(
                    &r.as_ref().map(|_| 0).map_err(Clone::clone),
                    started.elapsed(),
                );
                record(&inner, &NodeId(p.node_id), stats);
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
    let pool = inner
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
        let inner = Arc::clone(inner);
        let seg = seg.clone();
        async move { upload_regenerated(&inner, &seg, node, index, data).await }
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
    inner: &Arc<Inner>,
    seg: &SegmentInfo,
    node: NodeCandidate,
    index: u16,
    data: Vec<u8>,
) -> Result<PiecePlacement, PieceError> {
    let owner = inner.access.owner();
    let protocol = |reason: String| PieceError::Protocol {
        node: node.id,
        reason,
    };
    let now = unix_ms();
    let orders = Orders::new(owner);
    let terms = UploadTerms {
        max_size: seg.piece_size,
        block_size: seg.shard_size,
        expires_at_ms: now.saturating_add(inner.config.default_lease.as_millis() as u64),
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
    let limit = inner.config.piece_timeout * (1 + (data.len() as u32 >> 24));
    let body = UploadPart::whole_piece(Bytes::from(data), trailer);
    let started = tokio::time::Instant::now();
    let result = tokio::time::timeout(
        limit,
        inner.store.upload(node.address(), order.clone(), body),
    )
    .await
    .map_err(|_| PieceError::Timeout {
        node: node.id,
        seconds: limit.as_secs_f64(),
    })
    .and_then(|r| r)
    .and_then(|receipt| {
        crate::upload::verify_receipt(&receipt, &order, &node, Some((info.size, info.root())))?;
        Ok(receipt)
    });
    let stats = NodeStats::from_outcome(
        Transfer::Upload,
        result.as_ref().map(|_| ()),
        Some(started.elapsed()),
        shoal_proto::time::unix_ms(),
    );
    record(inner, &node.id, stats);
    let receipt = result?;
    Ok(PiecePlacement {
        index,
        node_id: node.id.0,
        address: node.address,
        piece_id: order.piece_id.0,
        piece_hash: receipt.piece_hash.0,
    })
}

/// A background renewer; stops when [`Renewer::stop`] is called or it is dropped.
#[derive(Debug)]
pub struct Renewer {
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Renewer {
    /// Stops the renewer and waits for a renewal in progress to end.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Renewer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Renews everything `uplink` stores (objects and catalog, [`Scope::everything`]) now
/// and then every `interval`, in the background, until the returned handle is stopped
/// or dropped. With a network catalog, each round first pulls what other writers
/// published, so their objects are renewed too. For long-running processes (the S3
/// gateway, `devnet up`).
pub fn spawn_renewer(uplink: Uplink, interval: Duration) -> Renewer {
    let (tx, mut rx) = oneshot::channel();
    let task = tokio::spawn(async move {
        loop {
            if uplink.inner.sync.is_some()
                && let Err(e) = uplink.pull().await
            {
                tracing::warn!(error = %e, "background renew: cannot pull the catalog; renewing what is known here");
            }
            match uplink.renew(&Scope::everything(), None).await {
                Ok(r) => tracing::info!(
                    pieces = r.pieces,
                    renewed = r.renewed,
                    missing = r.missing,
                    unreachable = r.unreachable,
                    orders = r.orders,
                    "renewed leases"
                ),
                Err(e) => tracing::warn!(error = %e, "background renew failed"),
            }
            tokio::select! {
                _ = &mut rx => break,
                () = tokio::time::sleep(interval) => {}
            }
        }
    });
    Renewer {
        stop: Some(tx),
        task: Some(task),
    }
}
