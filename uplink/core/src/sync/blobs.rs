//! The catalog's blobs on the nodes (deltas and snapshots), through the pieces service.

use super::{CatalogSync, SNAPSHOT, SyncError, blob_name, merge_applied};
use crate::catalog::log::{
    self, Blob, BlobRef, CATALOG_BUCKET, Delta, LogError, MAX_BLOB, SnapshotRef,
};
use crate::catalog::tag::{BlobKind, BlobTag};
use crate::catalog::{Hlc, Value, WriterId};
use crate::crypto::{BlockCipher, ObjectId};
use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::Arc;

/// The scheme of a catalog blob of `size` plaintext bytes: the catalog scheme, fitted
/// to a blob too small to fill its `k` pieces (a delta of a few changes: whole copies on
/// as many nodes as the catalog scheme's margins ask, instead of `total` pieces of the
/// minimum size; see [`crate::codec::Scheme::fitted`]). Repair, check and renew read
/// each segment's own scheme, so they treat both alike.
pub(crate) fn blob_scheme(config: &crate::UplinkConfig, size: u64) -> crate::codec::Scheme {
    let scheme = config.catalog_scheme;
    if !config.catalog_fit_scheme {
        return scheme;
    }
    scheme.fitted(
        crate::crypto::sealed_len(size),
        crate::segment::MIN_SHARD as u64,
    )
}

impl CatalogSync {
    pub(super) async fn put_blob(
        self: &Arc<Self>,
        what: &str,
        blob: &Blob,
    ) -> Result<(BlobRef, u64), SyncError> {
        let bytes = log::encode_blob(blob)?;
        let size = bytes.len() as u64;
        let object_id = ObjectId::random();
        let key = log::blob_key(self.catalog_key(), &object_id);
        let cipher = BlockCipher::new(&key, object_id);
        let lease = self.pieces.config().default_lease;
        let writer = self.catalog.writer();
        // Each piece says what it is, for `catalog rebuild` (a snapshot goes by the seq
        // of the delta published with it, which it covers).
        let (kind, seq) = match blob {
            Blob::Delta(d) => (BlobKind::Delta, d.seq),
            Blob::Snapshot(s) => (
                BlobKind::Snapshot,
                s.covers.get(&writer).copied().unwrap_or(0),
            ),
            // A chunk may serve many snapshots: it goes by no seq.
            Blob::Chunk(_) => (BlobKind::Chunk, 0),
        };
        let ctx = crate::pieces::ObjectUpload {
            bucket: CATALOG_BUCKET,
            key: what,
            cipher: &cipher,
            scheme: blob_scheme(self.pieces.config(), size),
            expires_ms: shoal_proto::time::unix_ms().saturating_add(lease.as_millis() as u64),
            size_hint: Some(size),
            progress: None,
            allow_smaller: Some(true),
            tag: Some(BlobTag {
                writer,
                kind,
                seq,
                object_id,
                blob_size: size,
            }),
        };
        let (segments, _) = self
            .pieces
            .upload(ctx, Cursor::new(bytes))
            .await
            .map_err(|e| SyncError::Store {
                what: what.to_string(),
                source: Box::new(e),
            })?;
        let sent = segments
            .iter()
            .map(|s| s.piece_size * s.pieces.len() as u64)
            .sum();
        Ok((
            BlobRef {
                object_id,
                size,
                segments,
            },
            sent,
        ))
    }

    pub(crate) async fn get_blob(
        self: &Arc<Self>,
        what: &str,
        r: &BlobRef,
    ) -> Result<Blob, SyncError> {
        let wrong = |reason: String| SyncError::WrongBlob {
            what: what.to_string(),
            reason,
        };
        if r.size > MAX_BLOB {
            return Err(LogError::TooLarge {
                what: what.to_string(),
                size: r.size,
                limit: MAX_BLOB,
            }
            .into());
        }
        let total: u64 = r.segments.iter().map(|s| s.plain_size).sum();
        if total != r.size {
            return Err(wrong(format!(
                "segments hold {total} bytes, the reference says {}",
                r.size
            )));
        }
        let key = log::blob_key(self.catalog_key(), &r.object_id);
        let cipher = BlockCipher::new(&key, r.object_id);
        let mut out = Vec::with_capacity(r.size as usize);
        let ctx = crate::pieces::ObjectDownload {
            bucket: CATALOG_BUCKET,
            key: what,
            cipher: &cipher,
            progress: None,
        };
        self.pieces
            .download(ctx, &r.segments, 0, r.size, &mut out)
            .await
            .map_err(|e| SyncError::Fetch {
                what: what.to_string(),
                source: Box::new(e),
            })?;
        self.pieces.metrics().catalog_blobs_pulled.inc();
        Ok(log::decode_blob(what, &out)?)
    }

    pub(super) async fn get_delta(
        self: &Arc<Self>,
        writer: WriterId,
        seq: u64,
        r: &BlobRef,
    ) -> Result<Delta, SyncError> {
        let what = blob_name(&writer, "delta", seq);
        match self.get_blob(&what, r).await? {
            Blob::Delta(d) if d.merged.len() > log::MAX_WRITERS => Err(SyncError::WrongBlob {
                what,
                reason: format!(
                    "it names {} merged writers, over the limit of {}",
                    d.merged.len(),
                    log::MAX_WRITERS
                ),
            }),
            Blob::Delta(d) if d.writer == writer && d.seq == seq => Ok(d),
            Blob::Delta(d) => Err(SyncError::WrongBlob {
                what,
                reason: format!("it is delta {} of writer {}", d.seq, d.writer),
            }),
            Blob::Snapshot(_) | Blob::Chunk(_) => Err(SyncError::WrongBlob {
                what,
                reason: "it is a snapshot".into(),
            }),
        }
    }

    pub(super) async fn apply_snapshot(
        self: &Arc<Self>,
        s: &SnapshotRef,
        applied: &mut BTreeMap<WriterId, u64>,
    ) -> Result<usize, SyncError> {
        let what = format!(
            "snapshot taken by writer {} at {}",
            s.taken_by,
            s.taken_at.millis()
        );
        let snap = self.get_manifest(&what, &s.blob).await?;
        if snap.covers != s.covers || snap.floor != s.floor {
            return Err(SyncError::WrongBlob {
                what,
                reason: "it covers other log positions than its reference says".into(),
            });
        }
        // The snapshot's entries, a leaf per transaction as the chunks arrive, then the
        // positions it covers (only once everything is in: a snapshot that fails half
        // way moves no position, and the deltas are walked instead).
        // The keys it holds are needed only to prune below a stability point: kept in
        // the catalog database under a run of this merge, not in memory.
        let run = (s.floor > Hlc::default()).then(rand::random::<i64>);
        let merged = self.apply_tree(&snap, s.taken_at.0, run).await;
        let n = match merged {
            Ok(n) => n,
            Err(e) => {
                if let Some(run) = run {
                    self.catalog.forget_snapshot_keys(run)?;
                }
                return Err(e);
            }
        };
        for (w, seq) in &s.covers {
            let e = applied.entry(*w).or_insert(0);
            *e = (*e).max(*seq);
        }
        self.catalog
            .apply_remote_batch(&[], |tx| merge_applied(tx, applied))?;
        // What this replica holds at or below the snapshot's stability point and the
        // snapshot lacks was deleted, its tombstone since collected: forget it too.
        if let Some(run) = run {
            // Only versions of writers the snapshot covers: a writer its taker did not
            // know yet was not part of the stability rule. A key the database cannot
            // answer for is kept (never forgotten on a doubt).
            let pruned = self.catalog.prune_below(s.floor, |c| {
                s.covers.contains_key(&c.version.writer)
                    && (matches!(c.value, Value::Tombstone)
                        || matches!(self.catalog.snapshot_has_key(run, &c.key), Ok(false)))
            });
            self.catalog.forget_snapshot_keys(run)?;
            let pruned = pruned?;
            if pruned > 0 {
                tracing::info!(
                    pruned,
                    "forgot entries deleted before the snapshot's stability point"
                );
            }
        }
        let newer = self
            .catalog
            .sync_value::<SnapshotRef>(SNAPSHOT)?
            .is_none_or(|old| old.taken_at < s.taken_at);
        if newer {
            self.catalog.set_sync_value(SNAPSHOT, s)?;
        }
        Ok(n)
    }
}
