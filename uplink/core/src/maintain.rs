//! Keeping data alive without a satellite: renew, check (audit) and repair, the network
//! edges of [`crate::health`]'s rules, as [`Maintenance`]: a service over the uplink's
//! catalog, its [`Pieces`](crate::pieces::Pieces) and its catalog sync, so that
//! [`Uplink`] itself is only composition and the data path.
//!
//! - **Renew** ([`Maintenance::renew`]): every piece of every object in scope (objects stored
//!   with an explicit expiry are left to expire), and with no bucket given the
//!   catalog's own live blobs, grouped per node into batch renew orders of at most
//!   1,024 pieces ([`health::renew_batches`]): one signed order per node. Renewing is
//!   idempotent and monotonic on the node. A node that refuses the lease as beyond its
//!   `max_lease` is asked again for exactly its limit. [`spawn_renewer`] runs it in the
//!   background.
//! - **Check** ([`Maintenance::check`]): audits every piece of every segment in scope: a few
//!   random blocks ([`health::audit_blocks`]) checked against the recorded piece hash,
//!   at most [`AUDIT_CONCURRENCY`] audits in flight, so audit traffic is bounded by
//!   blocks × block size plus each piece's hash list (see BENCHMARKS.md). Each segment
//!   is classified ([`health::classify`]); the worst state gives the exit status.
//! - **Repair** ([`Maintenance::repair`]): for each segment at or below its repair threshold
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

use futures::stream::StreamExt;
use serde::Serialize;
use shoal_proto::messages::RenewStatus;
use shoal_proto::time::unix_ms;
use shoal_proto::{NodeId, PieceId};
use tokio::sync::oneshot;

use crate::catalog::{ObjectEntry, SegmentInfo, Value};
use crate::client::Uplink;
use crate::error::Error;
use crate::health::{self, SegmentState};
use crate::store::{NodeAddress, PieceError, PiecePlacement};

/// Audits in flight at once during a check.
pub const AUDIT_CONCURRENCY: usize = 16;
/// Renew orders in flight at once.
const RENEW_CONCURRENCY: usize = 16;

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
    /// Whether a snapshot was taken first, covering deltas the newest one left out
    /// (their writers may be gone; this writer now renews what covers them).
    pub catalog_snapshot: bool,
    /// Catalog records renewed (the writers record and every writer's head).
    pub catalog_records: usize,
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
    /// Other writers' catalog deltas a new machine needs that only their writer renews
    /// (the newest snapshot does not cover them); `presumed_gone` ones are renewed by
    /// no live writer. `uplink renew` takes a snapshot that covers them.
    pub catalog_renewed_elsewhere: Vec<crate::sync::RenewedElsewhere>,
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

/// Renew, check and repair over an [`Uplink`]'s catalog, pieces and catalog sync (see
/// the module docs): `Maintenance::new(&uplink).check(&scope, options)`. Cheap to make.
#[derive(Debug, Clone, Copy)]
pub struct Maintenance<'a> {
    uplink: &'a Uplink,
}

impl<'a> Maintenance<'a> {
    /// Maintenance of what `uplink` stores.
    pub fn new(uplink: &'a Uplink) -> Self {
        Self { uplink }
    }

    /// The objects in `scope`, with their bucket.
    fn scoped(&self, scope: &Scope) -> Result<Vec<(String, ObjectEntry)>, Error> {
        let catalog = &self.uplink.catalog;
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
        let lease = lease.unwrap_or(self.uplink.pieces.config().default_lease);
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
        if scope.bucket.is_none() && self.uplink.sync.is_network() {
            report.catalog_snapshot = self.uplink.sync.cover_all().await?;
            report.catalog_records = self.uplink.sync.renew_records(lease).await?;
            let blobs = self.uplink.sync.live_blobs().await?;
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
            let pieces = Arc::clone(&self.uplink.pieces);
            async move {
                let n = ids.len();
                let r = pieces.renew(node, ids, expires_at_ms).await;
                (node, n, r)
            }
        }))
        .buffer_unordered(RENEW_CONCURRENCY);
        while let Some((node, n, r)) = calls.next().await {
            report.pieces += n;
            match r {
                Ok((results, capped)) => {
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
        // What to audit: (bucket, key, segments), the objects first, then for
        // everything the catalog's live blobs.
        let mut targets: Vec<(String, String, &[SegmentInfo])> = objects
            .iter()
            .map(|(b, e)| (b.clone(), e.key.clone(), e.segments()))
            .collect();
        let blobs = if scope.bucket.is_none() && self.uplink.sync.is_network() {
            report.catalog_renewed_elsewhere = self.uplink.sync.renewed_elsewhere()?;
            self.uplink.sync.live_blobs().await?
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
                    let pieces = Arc::clone(&self.uplink.pieces);
                    let seg = seg.clone();
                    let p = p.clone();
                    tasks.push(async move {
                        let r = pieces.audit(&seg, &p, &which).await;
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
                match self
                    .uplink
                    .pieces
                    .repair_segment(seg, &sh.healthy_indices)
                    .await
                {
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
            let current = self.uplink.catalog.object(&bucket, &key)?;
            if current.as_ref().map(|c| c.version) != Some(entry.version) {
                report.failures.push(format!(
                    "{bucket}/{key} changed during the repair; its new pieces were dropped"
                ));
                let _ = self.uplink.pieces.delete_placements(&new_pieces).await;
                continue;
            }
            let version = self.uplink.catalog.next_version()?;
            updated.version = version;
            self.uplink.change(
                Uplink::object_key(&bucket, &key),
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
            report.catalog_snapshot = self.uplink.sync.request_snapshot(true);
        }
        report.check = check;
        Ok(report)
    }
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
            if uplink.sync.is_network()
                && let Err(e) = uplink.pull().await
            {
                tracing::warn!(error = %e, "background renew: cannot pull the catalog; renewing what is known here");
            }
            match Maintenance::new(&uplink)
                .renew(&Scope::everything(), None)
                .await
            {
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
