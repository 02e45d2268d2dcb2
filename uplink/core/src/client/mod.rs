//! [`Uplink`]: buckets and objects over a [`PieceStore`] and a [`NodeSource`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::access::Access;
use crate::catalog::log::BlobRef;
use crate::catalog::{
    BucketInfo, Catalog, Change, Content, EntryKey, Listing, ObjectEntry, PartInfo, Value, Version,
};
use crate::codec::Scheme;
use crate::crypto::{self, BlockCipher, ObjectId, ObjectKey};
use crate::error::{Error, check_bucket, check_key};
use crate::metrics::Metrics;
use crate::pieces::Pieces;
pub use crate::pieces::{DeleteReport, Progress};
use crate::segment::INLINE_LIMIT;
pub use crate::settings::{DEFAULT_LEASE, MAX_CATALOG_PIECES, UplinkConfig};
use crate::store::{NodeSource, PieceStore};

mod types;

use crate::sync::rebuild::RebuildReport;
use crate::sync::{CatalogStatus, CatalogSync, PublishReport, PullReport};
pub use types::{PutOptions, PutReport, Staged, StagedPart};

/// The uplink client library's entry point: the catalog API over two services, the
/// [`Pieces`] (the nodes) and the `CatalogSync` (the catalog in the network). Cheap
/// to clone.
#[derive(Clone)]
pub struct Uplink {
    access: Arc<Access>,
    pub(crate) catalog: Catalog,
    /// The door to the nodes: uploads, downloads, deletes, audits (`maintain` drives it).
    pub(crate) pieces: Arc<Pieces>,
    /// The catalog in the network (publishes nothing for a local-only uplink).
    pub(crate) sync: Arc<CatalogSync>,
}

impl std::fmt::Debug for Uplink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uplink")
            .field("owner", &self.access.owner().public_key())
            .field("config", &self.pieces.config())
            .finish_non_exhaustive()
    }
}

impl Uplink {
    /// An uplink whose catalog stays on this machine (tests, benchmarks, embedders that
    /// keep their own metadata). Use [`Uplink::with_network_catalog`] for the real thing.
    pub fn new(
        access: Access,
        store: Arc<dyn PieceStore>,
        nodes: Arc<dyn NodeSource>,
        catalog: Catalog,
        config: UplinkConfig,
    ) -> Result<Self, Error> {
        Self::build(access, store, nodes, catalog, config, None)
    }

    /// An uplink whose catalog lives in the network: changes are published through
    /// `records` (the DHT) and blobs on the nodes by [`Uplink::flush`], and other
    /// writers' changes merged by [`Uplink::pull`].
    pub fn with_network_catalog(
        access: Access,
        store: Arc<dyn PieceStore>,
        nodes: Arc<dyn NodeSource>,
        catalog: Catalog,
        config: UplinkConfig,
        records: Arc<dyn crate::sync::CatalogRecords>,
    ) -> Result<Self, Error> {
        Self::build(access, store, nodes, catalog, config, Some(records))
    }

    fn build(
        access: Access,
        store: Arc<dyn PieceStore>,
        nodes: Arc<dyn NodeSource>,
        catalog: Catalog,
        config: UplinkConfig,
        records: Option<Arc<dyn crate::sync::CatalogRecords>>,
    ) -> Result<Self, Error> {
        config.catalog_scheme.validate()?;
        if config.catalog_scheme.total > MAX_CATALOG_PIECES {
            return Err(Error::CatalogScheme {
                scheme: config.catalog_scheme,
                limit: MAX_CATALOG_PIECES,
            });
        }
        let access = Arc::new(access);
        let metrics = Metrics::new().map_err(|e| Error::Metrics(e.to_string()))?;
        let pieces = Arc::new(Pieces::new(
            Arc::clone(&access),
            store,
            nodes,
            catalog.clone(),
            config,
            metrics,
        ));
        let sync = Arc::new(CatalogSync::new(
            Arc::clone(&access),
            catalog.clone(),
            Arc::clone(&pieces),
            records,
        ));
        Ok(Self {
            access,
            catalog,
            pieces,
            sync,
        })
    }

    /// Records a change made here: merged into the local catalog and queued for the
    /// next publish.
    pub(crate) fn change(
        &self,
        key: EntryKey,
        version: Version,
        value: Value,
    ) -> Result<(), Error> {
        self.catalog.apply_local(&Change {
            key,
            version,
            value,
        })?;
        self.changed();
        Ok(())
    }

    /// Counts a change for the publisher (which publishes once enough are queued).
    fn changed(&self) {
        self.sync.changed();
    }

    pub(crate) fn object_key(bucket: &str, key: &str) -> EntryKey {
        EntryKey::Object {
            bucket: bucket.to_string(),
            key: key.to_string(),
        }
    }

    pub fn access(&self) -> &Access {
        &self.access
    }

    /// The local catalog this uplink reads and writes (buckets, objects, node history;
    /// the S3 gateway keeps its multipart records in its database, [`Catalog::db`]).
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn config(&self) -> &UplinkConfig {
        self.pieces.config()
    }

    pub fn metrics(&self) -> &Metrics {
        self.pieces.metrics()
    }

    /// Waits (at most `limit`) until the background reaper has dealt with every long-tail
    /// piece of past uploads: deleted it if its receipt came late, or given it up. Call
    /// before a short-lived process exits, so that late pieces are not left to their
    /// lease. Returns whether everything was settled in time.
    pub async fn settle(&self, limit: Duration) -> bool {
        self.pieces.settle(limit).await
    }

    pub fn create_bucket(&self, name: &str) -> Result<(), Error> {
        check_bucket(name)?;
        if self.catalog.bucket(name)?.is_some() {
            return Err(Error::BucketExists(name.to_string()));
        }
        let version = self.catalog.next_version()?;
        let info = BucketInfo {
            name: name.to_string(),
            created_ms: version.hlc.millis(),
            version,
        };
        self.change(
            EntryKey::Bucket(name.to_string()),
            version,
            Value::Bucket(info),
        )
    }

    fn require_bucket(&self, name: &str) -> Result<(), Error> {
        if self.catalog.bucket(name)?.is_none() {
            return Err(Error::NoSuchBucket(name.to_string()));
        }
        Ok(())
    }

    /// Removes a bucket; with `force`, deletes its objects first.
    pub async fn remove_bucket(&self, name: &str, force: bool) -> Result<DeleteReport, Error> {
        self.require_bucket(name)?;
        let mut report = DeleteReport::default();
        if !self.catalog.bucket_is_empty(name)? {
            if !force {
                return Err(Error::BucketNotEmpty(name.to_string()));
            }
            for e in self.catalog.objects(name, "")? {
                let r = self.delete(name, &e.key).await?;
                report.pieces_deleted += r.pieces_deleted;
                report.pieces_failed += r.pieces_failed;
            }
        }
        let version = self.catalog.next_version()?;
        self.change(
            EntryKey::Bucket(name.to_string()),
            version,
            Value::Tombstone,
        )?;
        Ok(report)
    }

    pub fn buckets(&self) -> Result<Vec<BucketInfo>, Error> {
        Ok(self.catalog.buckets()?)
    }

    pub fn list(&self, bucket: &str, prefix: &str, recursive: bool) -> Result<Vec<Listing>, Error> {
        self.require_bucket(bucket)?;
        Ok(self.catalog.list(bucket, prefix, recursive)?)
    }

    pub fn stat(&self, bucket: &str, key: &str) -> Result<ObjectEntry, Error> {
        self.require_bucket(bucket)?;
        self.catalog
            .object(bucket, key)?
            .ok_or_else(|| Error::NoSuchObject {
                bucket: bucket.to_string(),
                key: key.to_string(),
            })
    }

    /// Stores everything `reader` yields as `bucket/key`, replacing any object there.
    pub async fn put<R>(
        &self,
        bucket: &str,
        key: &str,
        reader: R,
        opts: PutOptions,
    ) -> Result<PutReport, Error>
    where
        R: AsyncRead + Unpin + Send,
    {
        let staged = self.stage(bucket, key, reader, &opts).await?;
        self.commit(staged, opts.content_type, opts.metadata).await
    }

    /// The first half of [`Uplink::put`]: stores the content (on the nodes, or sealed
    /// for the catalog when small) without touching the catalog. Pass the result to
    /// [`Uplink::commit`] to make it the object, or to [`Uplink::discard`] to drop it
    /// (the S3 gateway checks a request's digests in between).
    pub async fn stage<R>(
        &self,
        bucket: &str,
        key: &str,
        mut reader: R,
        opts: &PutOptions,
    ) -> Result<Staged, Error>
    where
        R: AsyncRead + Unpin + Send,
    {
        check_key(key)?;
        self.require_bucket(bucket)?;
        let read_err = |source| Error::Read {
            bucket: bucket.to_string(),
            key: key.to_string(),
            source,
        };
        let requested = opts.scheme.unwrap_or(self.pieces.config().scheme);
        requested.validate()?;
        let object_id = ObjectId::random();
        let object_key = ObjectKey::random();
        let cipher = BlockCipher::new(&object_key, object_id);

        // Read just past the inline limit to decide where the object goes.
        let mut head = Vec::with_capacity(INLINE_LIMIT + 1);
        (&mut reader)
            .take(INLINE_LIMIT as u64 + 1)
            .read_to_end(&mut head)
            .await
            .map_err(read_err)?;
        let now = shoal_proto::time::unix_ms();
        let lease = opts.expires.unwrap_or(self.pieces.config().default_lease);
        let expires_ms = now.saturating_add(lease.as_millis() as u64);
        // A short head means the reader reached its end (a source that fails at its end,
        // such as a body whose hash does not match, fails this read).
        let (content, size, used) = if head.len() <= INLINE_LIMIT {
            if let Some(p) = &opts.progress {
                p(head.len() as u64);
            }
            let sealed = crypto::seal_all(&cipher, 0, &head, true);
            (Content::Inline { sealed }, head.len() as u64, None)
        } else {
            let (segments, used) = self
                .upload_content(
                    bucket, key, &cipher, requested, expires_ms, opts, head, reader,
                )
                .await?;
            let size = segments.iter().map(|s| s.plain_size).sum();
            (Content::Segments(segments), size, Some(used))
        };
        Ok(Staged {
            bucket: bucket.to_string(),
            key: key.to_string(),
            object_id,
            object_key,
            content,
            size,
            created_ms: now,
            expires_ms: opts.expires.map(|_| expires_ms),
            requested,
            used,
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn upload_content<R: AsyncRead + Unpin + Send>(
        &self,
        bucket: &str,
        key: &str,
        cipher: &BlockCipher,
        scheme: Scheme,
        expires_ms: u64,
        opts: &PutOptions,
        head: Vec<u8>,
        reader: R,
    ) -> Result<(Vec<crate::catalog::SegmentInfo>, Scheme), Error> {
        let chained = std::io::Cursor::new(head).chain(reader);
        let ctx = crate::pieces::ObjectUpload {
            bucket,
            key,
            cipher,
            scheme,
            expires_ms,
            size_hint: opts.size_hint,
            progress: opts.progress.clone(),
            allow_smaller: None,
            tag: None,
        };
        self.pieces.upload(ctx, chained).await
    }

    /// Makes staged content the object at its bucket and key (the second half of
    /// [`Uplink::put`]); the pieces of the object it replaces are deleted.
    pub async fn commit(
        &self,
        staged: Staged,
        content_type: Option<String>,
        metadata: BTreeMap<String, String>,
    ) -> Result<PutReport, Error> {
        let Staged {
            bucket,
            key,
            object_id,
            object_key,
            content,
            size,
            created_ms,
            expires_ms,
            requested,
            used,
        } = staged;
        self.require_bucket(&bucket)?;
        let entry = ObjectEntry {
            key: key.clone(),
            size,
            created_ms,
            modified_ms: shoal_proto::time::unix_ms(),
            expires_ms,
            content_type,
            metadata,
            object_id,
            wrapped_key: crypto::wrap_key(
                self.access.content_root(),
                &bucket,
                &key,
                &object_id,
                &object_key,
            ),
            content,
            // Set when it is recorded.
            version: Version::default(),
        };
        let entry = self.replace(&bucket, entry, |_| {}).await?;
        self.pieces.metrics().bytes_uploaded.inc_by(size);
        Ok(PutReport {
            entry,
            requested,
            used,
        })
    }

    /// Records `entry` at `bucket/{entry.key}` under a fresh version (`finish` sees it
    /// with the version set), and deletes the pieces of the entry it replaced (unless
    /// another entry shares them). Returns the entry as recorded.
    async fn replace(
        &self,
        bucket: &str,
        entry: ObjectEntry,
        finish: impl FnOnce(&mut ObjectEntry),
    ) -> Result<ObjectEntry, Error> {
        let (entry, previous) = self.catalog.put_object_local(bucket, entry, finish)?;
        self.changed();
        if let Some(old) = previous {
            // Best effort: pieces we cannot delete now expire with their lease.
            let _ = self.pieces.delete_entry(&old).await;
        }
        Ok(entry)
    }

    /// Drops staged content that will not be committed: deletes its pieces.
    pub async fn discard(&self, staged: Staged) -> DeleteReport {
        self.pieces.delete_segments(staged.segments()).await
    }

    /// Stores one part of a multipart upload to `bucket/key`: always on the nodes,
    /// sealed under a key of its own (so a part sent again never reuses a nonce). The
    /// caller fills in [`StagedPart::info`]'s `md5` and `number`, keeps the part until
    /// [`Uplink::commit_parts`], and [`Uplink::discard_part`]s it if the upload is
    /// aborted.
    pub async fn stage_part<R>(
        &self,
        bucket: &str,
        key: &str,
        number: u32,
        reader: R,
        opts: &PutOptions,
    ) -> Result<StagedPart, Error>
    where
        R: AsyncRead + Unpin + Send,
    {
        check_key(key)?;
        self.require_bucket(bucket)?;
        let scheme = opts.scheme.unwrap_or(self.pieces.config().scheme);
        scheme.validate()?;
        let object_id = ObjectId::random();
        let object_key = ObjectKey::random();
        let cipher = BlockCipher::new(&object_key, object_id);
        let now = shoal_proto::time::unix_ms();
        let lease = opts.expires.unwrap_or(self.pieces.config().default_lease);
        let expires_ms = now.saturating_add(lease.as_millis() as u64);
        let (segments, _) = self
            .upload_content(
                bucket,
                key,
                &cipher,
                scheme,
                expires_ms,
                opts,
                Vec::new(),
                reader,
            )
            .await?;
        let size = segments.iter().map(|s| s.plain_size).sum();
        Ok(StagedPart {
            info: PartInfo {
                number,
                size,
                segments: segments.len() as u32,
                md5: [0; 16],
                object_id,
                wrapped_key: crypto::wrap_key(
                    self.access.content_root(),
                    bucket,
                    key,
                    &object_id,
                    &object_key,
                ),
            },
            segments,
            staged_ms: now,
        })
    }

    /// Deletes the pieces of a part that will not be used.
    pub async fn discard_part(&self, part: &StagedPart) -> DeleteReport {
        self.pieces.delete_segments(&part.segments).await
    }

    /// Makes `parts` (in order) the object at `bucket/key`.
    pub async fn commit_parts(
        &self,
        bucket: &str,
        key: &str,
        parts: Vec<StagedPart>,
        content_type: Option<String>,
        metadata: BTreeMap<String, String>,
    ) -> Result<PutReport, Error> {
        check_key(key)?;
        self.require_bucket(bucket)?;
        let size = parts.iter().map(|p| p.info.size).sum();
        let mut infos = Vec::with_capacity(parts.len());
        let mut segments = Vec::new();
        for p in parts {
            infos.push(p.info);
            segments.extend(p.segments);
        }
        let object_id = ObjectId::random();
        let now = shoal_proto::time::unix_ms();
        let entry = ObjectEntry {
            key: key.to_string(),
            size,
            created_ms: now,
            modified_ms: now,
            expires_ms: None,
            content_type,
            metadata,
            object_id,
            // Unused: each part carries its own key. Wrapped all the same, so every entry
            // has the same shape.
            wrapped_key: crypto::wrap_key(
                self.access.content_root(),
                bucket,
                key,
                &object_id,
                &ObjectKey::random(),
            ),
            content: Content::Parts {
                parts: infos,
                segments,
            },
            // Set when it is recorded.
            version: Version::default(),
        };
        let entry = self.replace(bucket, entry, |_| {}).await?;
        self.pieces.metrics().bytes_uploaded.inc_by(size);
        Ok(PutReport {
            requested: self.pieces.config().scheme,
            used: entry.segments().first().map(|s| s.scheme),
            entry,
        })
    }

    /// Copies `bucket/key` to `to_bucket/to_key` without moving data: the new entry
    /// shares the source's pieces (their keys re-wrapped for the new path), so the
    /// pieces stay until neither entry uses them. `content_type` and `metadata` replace
    /// the source's when given.
    pub async fn copy(
        &self,
        bucket: &str,
        key: &str,
        to_bucket: &str,
        to_key: &str,
        content_type: Option<Option<String>>,
        metadata: Option<BTreeMap<String, String>>,
    ) -> Result<ObjectEntry, Error> {
        check_key(to_key)?;
        self.require_bucket(to_bucket)?;
        let mut entry = self.rewrapped(bucket, key, to_bucket, to_key)?;
        if let Some(ct) = content_type {
            entry.content_type = ct;
        }
        if let Some(m) = metadata {
            entry.metadata = m;
        }
        self.replace(to_bucket, entry, |e| e.modified_ms = e.version.hlc.millis())
            .await
    }

    /// The entry of `bucket/key` with its keys (and its parts' keys) wrapped for
    /// `to_bucket/to_key`.
    fn rewrapped(
        &self,
        bucket: &str,
        key: &str,
        to_bucket: &str,
        to_key: &str,
    ) -> Result<ObjectEntry, Error> {
        let mut entry = self.stat(bucket, key)?;
        let root = self.access.content_root();
        let crypto_err = |source| Error::Crypto {
            bucket: bucket.to_string(),
            key: key.to_string(),
            source,
        };
        let object_key =
            crypto::unwrap_key(root, bucket, key, &entry.object_id, &entry.wrapped_key)
                .map_err(crypto_err)?;
        entry.wrapped_key =
            crypto::wrap_key(root, to_bucket, to_key, &entry.object_id, &object_key);
        if let Content::Parts { parts, .. } = &mut entry.content {
            for p in parts {
                let k = crypto::unwrap_key(root, bucket, key, &p.object_id, &p.wrapped_key)
                    .map_err(crypto_err)?;
                p.wrapped_key = crypto::wrap_key(root, to_bucket, to_key, &p.object_id, &k);
            }
        }
        entry.key = to_key.to_string();
        Ok(entry)
    }

    /// Writes bytes `[start, end)` of `bucket/key` (all of it when `range` is `None`)
    /// to `writer`. Returns the number of bytes written.
    pub async fn get<W>(
        &self,
        bucket: &str,
        key: &str,
        range: Option<(u64, u64)>,
        writer: W,
        progress: Option<Progress>,
    ) -> Result<u64, Error>
    where
        W: AsyncWrite + Unpin + Send,
    {
        let entry = self.stat(bucket, key)?;
        self.get_entry(bucket, key, &entry, range, writer, progress)
            .await
    }

    /// [`Uplink::get`] of an entry already read from the catalog (the S3 gateway answers
    /// a request's headers and its body from the same entry).
    pub async fn get_entry<W>(
        &self,
        bucket: &str,
        key: &str,
        entry: &ObjectEntry,
        range: Option<(u64, u64)>,
        mut writer: W,
        progress: Option<Progress>,
    ) -> Result<u64, Error>
    where
        W: AsyncWrite + Unpin + Send,
    {
        let (start, end) = range.unwrap_or((0, entry.size));
        if start > end || end > entry.size {
            return Err(Error::InvalidRange {
                bucket: bucket.to_string(),
                key: key.to_string(),
                start,
                end,
                size: entry.size,
            });
        }
        let crypto_err = |source| Error::Crypto {
            bucket: bucket.to_string(),
            key: key.to_string(),
            source,
        };
        let object_key = crypto::unwrap_key(
            self.access.content_root(),
            bucket,
            key,
            &entry.object_id,
            &entry.wrapped_key,
        )
        .map_err(crypto_err)?;
        let cipher = BlockCipher::new(&object_key, entry.object_id);
        let write_err = |source| Error::Write {
            bucket: bucket.to_string(),
            key: key.to_string(),
            source,
        };
        let written = match &entry.content {
            Content::Inline { sealed } => {
                let plain = crypto::open_all(&cipher, 0, sealed, true).map_err(crypto_err)?;
                let slice = plain.get(start as usize..end as usize).unwrap_or_default();
                writer.write_all(slice).await.map_err(write_err)?;
                if let Some(p) = &progress {
                    p(slice.len() as u64);
                }
                slice.len() as u64
            }
            Content::Segments(segments) => {
                let ctx = crate::pieces::ObjectDownload {
                    bucket,
                    key,
                    cipher: &cipher,
                    progress,
                };
                self.pieces
                    .download(ctx, segments, start, end, &mut writer)
                    .await?
            }
            Content::Parts { segments, .. } => {
                // Part after part, each a unit sealed under its own key.
                let root = self.access.content_root();
                let mut written = 0u64;
                let mut offset = 0u64;
                for (part, range) in entry.content.part_ranges() {
                    let Some(part) = part else { continue };
                    let (ps, pe) = (offset, offset + part.size);
                    offset = pe;
                    if pe <= start || ps >= end {
                        continue;
                    }
                    let part_key =
                        crypto::unwrap_key(root, bucket, key, &part.object_id, &part.wrapped_key)
                            .map_err(crypto_err)?;
                    let part_cipher = BlockCipher::new(&part_key, part.object_id);
                    let ctx = crate::pieces::ObjectDownload {
                        bucket,
                        key,
                        cipher: &part_cipher,
                        progress: progress.clone(),
                    };
                    let seg = segments.get(range).unwrap_or_default();
                    written += self
                        .pieces
                        .download(ctx, seg, start.max(ps) - ps, end.min(pe) - ps, &mut writer)
                        .await?;
                }
                written
            }
        };
        writer.flush().await.map_err(write_err)?;
        self.pieces.metrics().bytes_downloaded.inc_by(written);
        Ok(written)
    }

    /// Removes `bucket/key` and asks its nodes to delete the pieces.
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<DeleteReport, Error> {
        let entry = self.stat(bucket, key)?;
        let version = self.catalog.next_version()?;
        self.change(Self::object_key(bucket, key), version, Value::Tombstone)?;
        Ok(self.pieces.delete_entry(&entry).await)
    }

    /// Moves an object to a new bucket/key without touching its pieces: only its key is
    /// re-wrapped for the new path.
    pub fn rename(
        &self,
        bucket: &str,
        key: &str,
        to_bucket: &str,
        to_key: &str,
    ) -> Result<(), Error> {
        check_key(to_key)?;
        self.require_bucket(to_bucket)?;
        if self.catalog.object(to_bucket, to_key)?.is_some() {
            return Err(Error::ObjectExists {
                bucket: to_bucket.to_string(),
                key: to_key.to_string(),
            });
        }
        let mut entry = self.rewrapped(bucket, key, to_bucket, to_key)?;
        let version = self.catalog.next_version()?;
        entry.modified_ms = version.hlc.millis();
        entry.version = version;
        // One version for both halves: the new key appears as the old one goes.
        self.change(
            Self::object_key(to_bucket, to_key),
            version,
            Value::Object(entry),
        )?;
        self.change(Self::object_key(bucket, key), version, Value::Tombstone)
    }
}

/// The catalog in the network.
impl Uplink {
    /// Merges what other writers published since the last pull. Cheap when nothing
    /// changed: one DHT read for the writers record and one per writer.
    pub async fn pull(&self) -> Result<PullReport, Error> {
        Ok(self.sync.pull().await?)
    }

    /// Publishes every change made so far and returns once it is in the network (the
    /// durability point). Concurrent callers share one publish: a caller whose changes
    /// an earlier publish already carried returns at once (group commit). Without a
    /// network catalog this only flushes the local one.
    pub async fn flush(&self) -> Result<PublishReport, Error> {
        Ok(self.sync.flush().await?)
    }

    /// This writer's sync state.
    pub fn catalog_status(&self) -> Result<CatalogStatus, Error> {
        Ok(self.sync.status()?)
    }

    /// Rebuilds the catalog from the nodes alone and republishes its records (see
    /// [`crate::rebuild`]): for when the DHT has lost every record of this owner.
    pub async fn rebuild_catalog(&self) -> Result<RebuildReport, Error> {
        self.sync.rebuild().await
    }

    /// The blob of the newest snapshot this replica knows of (inspection tools, tests).
    pub fn snapshot_blob(&self) -> Result<Option<BlobRef>, Error> {
        Ok(self.sync.snapshot_blob()?)
    }

    /// Fetches the delta at `blob` and returns the reference to the delta before it
    /// (inspection tools, tests).
    pub async fn previous_blob(&self, blob: &BlobRef) -> Result<Option<BlobRef>, Error> {
        Ok(self.sync.previous_blob(blob).await?)
    }
}
