//! Incremental snapshots over the network: storing a catalog state as a tree of chunks
//! ([`crate::catalog::tree`]), re-using every chunk stored before under the same id, and
//! reading one back.
//!
//! - **Publish** walks the local catalog in key order, [`SNAPSHOT_BATCH`] entries per
//!   read transaction, through the tree builder. Each chunk it closes is looked up in the
//!   replica's chunk table (`snapshot_chunks`: chunk id → blob, for the chunks of the
//!   snapshots this replica wrote or read); only a chunk not found there is uploaded, as
//!   a catalog blob of its own. Then a small manifest blob (covers, entry count, root)
//!   is uploaded: that is the blob a [`SnapshotRef`] names. Memory: one open chunk per
//!   tree level and one batch, whatever the catalog's size.
//! - **Recovery** fetches the manifest, then the tree from the root, [`FETCH_PARALLELISM`]
//!   chunks at a time, checking every chunk against the id, level and entry count its
//!   parent names (a chunk that is not what its reference says is refused with a
//!   [`crate::catalog::tree::TreeError`] naming it), and merges each leaf in one
//!   transaction as it arrives. The log positions the snapshot covers are recorded last,
//!   once every leaf is in: a recovery cut short is done again by the next pull (merging
//!   is idempotent).
//! - **Renewal and repair** see every chunk as a live blob ([`CatalogSync::snapshot_blobs`]).
//!   A snapshot `repair` asks for stores every chunk anew, so that no damaged chunk is
//!   re-used.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use futures::future::BoxFuture;

use super::{CatalogSync, LiveBlob, SyncError};
use crate::catalog::log::{Blob, BlobRef, Snapshot};
use crate::catalog::tree::{self, Builder, Child, Chunk, ChunkId, Params, TreeKey};
use crate::catalog::{EntryKey, Hlc, WriterId};

/// Entries read from the local catalog per read transaction while publishing.
pub const SNAPSHOT_BATCH: usize = 1024;
/// Chunks fetched at once while recovering.
pub const FETCH_PARALLELISM: usize = 16;
/// Chunk places written to the chunk table per transaction.
const REMEMBER_BATCH: usize = 256;

/// What storing a snapshot did.
#[derive(Debug, Clone, Default)]
pub(super) struct StoredSnapshot {
    /// Set once the manifest is stored.
    pub manifest: Option<BlobRef>,
    pub entries: u64,
    pub bytes_sent: u64,
    pub chunks_stored: usize,
    pub chunks_reused: usize,
}

fn chunk_name(id: &ChunkId) -> String {
    format!("snapshot chunk {id}")
}

impl CatalogSync {
    fn tree_key(&self) -> TreeKey {
        TreeKey::new(self.catalog_key())
    }

    fn tree_params(&self) -> Params {
        let target = self.pieces.config().snapshot_chunk_bytes.max(64);
        Params {
            leaf_min: target / 4,
            leaf_target: target,
            leaf_max: target.saturating_mul(4),
            ..Params::default()
        }
    }

    /// Stores the catalog as a snapshot covering `covers` (taken at `taken_at`, with
    /// delta `seq`), re-using the chunks stored before unless `fresh`.
    pub(super) async fn put_snapshot(
        self: &Arc<Self>,
        covers: &BTreeMap<WriterId, u64>,
        floor: Hlc,
        taken_at: Hlc,
        seq: u64,
        fresh: bool,
    ) -> Result<StoredSnapshot, SyncError> {
        if fresh {
            self.catalog.forget_snapshot_chunks(None)?;
        }
        let mut out = StoredSnapshot::default();
        let mut b: Builder<BlobRef> = Builder::new(self.tree_key(), self.tree_params());
        let mut places: Vec<(ChunkId, BlobRef)> = Vec::new();
        let mut after: Option<EntryKey> = None;
        loop {
            let batch = self.catalog.changes_after(after.as_ref(), SNAPSHOT_BATCH)?;
            let last = batch.len() < SNAPSHOT_BATCH;
            after = batch.last().map(|c| c.key.clone());
            for c in batch {
                b.push(c).map_err(crate::catalog::log::LogError::from)?;
                self.store_chunks(&mut b, taken_at, &mut places, &mut out)
                    .await?;
            }
            if last || after.is_none() {
                break;
            }
        }
        b.finish();
        self.store_chunks(&mut b, taken_at, &mut places, &mut out)
            .await?;
        self.catalog.remember_snapshot_chunks(taken_at.0, &places)?;
        let Some((root_level, root)) = b.root() else {
            return Err(crate::catalog::log::LogError::from(tree::TreeError::Misuse(
                "no root after finishing",
            ))
            .into());
        };
        out.entries = root.entries;
        let manifest = Blob::Snapshot(Snapshot {
            covers: covers.clone(),
            floor,
            entries: root.entries,
            root_level,
            root,
        });
        let me = self.catalog.writer();
        let (blob, sent) = self
            .put_blob(
                &format!("snapshot at delta {seq} of writer {me}"),
                &manifest,
            )
            .await?;
        out.bytes_sent += sent;
        out.manifest = Some(blob);
        Ok(out)
    }

    /// Stores (or finds stored) every chunk the builder closed.
    async fn store_chunks(
        self: &Arc<Self>,
        b: &mut Builder<BlobRef>,
        taken_at: Hlc,
        places: &mut Vec<(ChunkId, BlobRef)>,
        out: &mut StoredSnapshot,
    ) -> Result<(), SyncError> {
        while let Some(s) = b.take() {
            let at = match self.catalog.snapshot_chunk(&s.id)? {
                Some(at) => {
                    out.chunks_reused += 1;
                    at
                }
                None => {
                    let (at, sent) = self
                        .put_blob(&chunk_name(&s.id), &Blob::Chunk(s.chunk))
                        .await?;
                    out.chunks_stored += 1;
                    out.bytes_sent += sent;
                    at
                }
            };
            places.push((s.id, at.clone()));
            if places.len() >= REMEMBER_BATCH {
                self.catalog.remember_snapshot_chunks(taken_at.0, places)?;
                places.clear();
            }
            b.attach(at).map_err(crate::catalog::log::LogError::from)?;
        }
        Ok(())
    }

    /// Fetches the chunk `c` at `level` and checks it is what the reference says.
    async fn get_chunk(
        self: &Arc<Self>,
        key: &TreeKey,
        level: u8,
        c: &Child<BlobRef>,
    ) -> Result<Chunk<BlobRef>, SyncError> {
        let what = chunk_name(&c.id);
        let chunk = match self.get_blob(&what, &c.at).await? {
            Blob::Chunk(chunk) => chunk,
            _ => {
                return Err(SyncError::WrongBlob {
                    what,
                    reason: "it is not a snapshot chunk".into(),
                });
            }
        };
        tree::verify(key, &c.id, level, c.entries, &chunk)
            .map_err(crate::catalog::log::LogError::from)?;
        Ok(chunk)
    }

    /// Fetches the snapshot manifest `blob` and checks it against `covers`.
    pub(super) async fn get_manifest(
        self: &Arc<Self>,
        what: &str,
        blob: &BlobRef,
    ) -> Result<Snapshot, SyncError> {
        let snap = match self.get_blob(what, blob).await? {
            Blob::Snapshot(snap) => snap,
            _ => {
                return Err(SyncError::WrongBlob {
                    what: what.to_string(),
                    reason: "it is not a snapshot".into(),
                });
            }
        };
        if snap.entries != snap.root.entries {
            return Err(SyncError::WrongBlob {
                what: what.to_string(),
                reason: format!(
                    "it counts {} entries, its root {}",
                    snap.entries, snap.root.entries
                ),
            });
        }
        if snap.root_level > tree::MAX_DEPTH {
            return Err(
                crate::catalog::log::LogError::from(tree::TreeError::TooDeep {
                    level: snap.root_level,
                    limit: tree::MAX_DEPTH,
                })
                .into(),
            );
        }
        Ok(snap)
    }

    /// Merges every entry of the tree under `snap` (chunks fetched in parallel, each leaf
    /// in one transaction), remembering its chunks' places under `generation`. Returns
    /// how many changes won. With `keys_run`, the keys of every entry are recorded
    /// under that run in the catalog database (for pruning below the snapshot's
    /// stability point, [`crate::catalog::Catalog::snapshot_has_key`]), not in memory.
    /// The caller records the positions it covers afterwards.
    pub(super) async fn apply_tree(
        self: &Arc<Self>,
        snap: &Snapshot,
        generation: u64,
        keys_run: Option<i64>,
    ) -> Result<usize, SyncError> {
        let key = self.tree_key();
        let permits = tokio::sync::Semaphore::new(FETCH_PARALLELISM);
        self.apply_subtree(
            &key,
            &permits,
            keys_run,
            snap.root_level,
            snap.root.clone(),
            generation,
        )
        .await
    }

    fn apply_subtree<'a>(
        self: &'a Arc<Self>,
        key: &'a TreeKey,
        permits: &'a tokio::sync::Semaphore,
        keys_run: Option<i64>,
        level: u8,
        c: Child<BlobRef>,
        generation: u64,
    ) -> BoxFuture<'a, Result<usize, SyncError>> {
        Box::pin(async move {
            let children = {
                // A permit while fetching and merging one chunk, not while its children
                // are: at most FETCH_PARALLELISM chunks in flight, and no deadlock.
                let _permit = permits.acquire().await.map_err(|_| SyncError::WrongBlob {
                    what: chunk_name(&c.id),
                    reason: "the fetch was cancelled".into(),
                })?;
                let chunk = self.get_chunk(key, level, &c).await?;
                self.catalog
                    .remember_snapshot_chunks(generation, &[(c.id, c.at.clone())])?;
                match chunk {
                    Chunk::Leaf(changes) => {
                        return Ok(self.catalog.apply_snapshot_leaf(&changes, keys_run)?);
                    }
                    Chunk::Node { children, .. } => children,
                }
            };
            let below = level.saturating_sub(1);
            let mut merged = 0;
            let mut fetches = futures::stream::iter(children)
                .map(|ch| self.apply_subtree(key, permits, keys_run, below, ch, generation))
                .buffer_unordered(FETCH_PARALLELISM);
            while let Some(n) = fetches.next().await {
                merged += n?;
            }
            Ok(merged)
        })
    }

    /// Every blob of the snapshot whose manifest is `blob`: the manifest and every
    /// chunk. Leaves are not fetched (their parents name them); a manifest or interior
    /// chunk that cannot be read is listed itself, without what is under it (a check
    /// then finds it damaged, and a repair replaces the whole snapshot).
    pub(super) async fn snapshot_blobs(
        self: &Arc<Self>,
        name: &str,
        blob: &BlobRef,
    ) -> Vec<LiveBlob> {
        let mut out = vec![LiveBlob {
            name: name.to_string(),
            blob: blob.clone(),
        }];
        let snap = match self.get_manifest(name, blob).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the chunks of a catalog snapshot");
                return out;
            }
        };
        let key = self.tree_key();
        let mut level_now: Vec<Child<BlobRef>> = vec![snap.root];
        let mut level = snap.root_level;
        loop {
            for c in &level_now {
                out.push(LiveBlob {
                    name: format!("{} ({name})", chunk_name(&c.id)),
                    blob: c.at.clone(),
                });
            }
            if level == 0 {
                break;
            }
            let mut next = Vec::new();
            let at = level;
            let mut fetches = futures::stream::iter(level_now)
                .map(|c| {
                    let key = &key;
                    async move { (c.id, self.get_chunk(key, at, &c).await) }
                })
                .buffered(FETCH_PARALLELISM);
            while let Some((id, r)) = fetches.next().await {
                match r {
                    Ok(Chunk::Node { children, .. }) => next.extend(children),
                    Ok(Chunk::Leaf(_)) => {}
                    Err(e) => {
                        tracing::warn!(chunk = %id, error = %e, "cannot list the chunks under a snapshot chunk")
                    }
                }
            }
            drop(fetches);
            level_now = next;
            level -= 1;
        }
        out
    }
}
