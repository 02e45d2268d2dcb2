//! The tables behind snapshots as trees of chunks ([`super::tree`]): the catalog read
//! in key order a batch at a time, the chunks stored before, and the keys of a snapshot
//! being merged.

use super::*;

impl Catalog {
    /// Merges a leaf of a snapshot (as [`Catalog::apply_remote_batch`]) and, with a
    /// `run`, records its keys under it in the same transaction (see
    /// [`Catalog::snapshot_has_key`]).
    pub fn apply_snapshot_leaf(
        &self,
        changes: &[Change],
        run: Option<i64>,
    ) -> Result<usize, CatalogError> {
        self.apply_remote_batch(changes, |stx| {
            if let Some(run) = run {
                for c in changes {
                    let (kind, b, k) = cols(&c.key);
                    exec(
                        stx.tx,
                        "INSERT OR IGNORE INTO snapshot_keys (run, kind, bucket, key) \
                         VALUES (?1, ?2, ?3, ?4)",
                        params![run, kind, b, k],
                    )?;
                }
            }
            Ok(())
        })
    }

    /// Whether the snapshot merged under `run` holds `key`.
    pub fn snapshot_has_key(&self, run: i64, key: &EntryKey) -> Result<bool, CatalogError> {
        let (kind, b, k) = cols(key);
        self.db.read("snapshot_has_key", |tx| {
            Ok(query_row(
                tx,
                "SELECT 1 FROM snapshot_keys WHERE run = ?1 AND kind = ?2 AND bucket = ?3 \
                 AND key = ?4",
                params![run, kind, b, k],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
        })
    }

    /// Forgets the keys recorded under `run`.
    pub fn forget_snapshot_keys(&self, run: i64) -> Result<(), CatalogError> {
        self.db.write("forget_snapshot_keys", |tx| {
            exec(tx, "DELETE FROM snapshot_keys WHERE run = ?1", params![run])?;
            Ok(())
        })
    }

    /// Up to `limit` entries and tombstones after `after` (from the first if `None`), in
    /// key order ([`EntryKey`]'s: buckets, then objects by bucket and key): a cursor over
    /// the whole catalog in batches, for snapshots. Each batch is one read transaction.
    pub fn changes_after(
        &self,
        after: Option<&EntryKey>,
        limit: usize,
    ) -> Result<Vec<Change>, CatalogError> {
        let limit = limit.max(1);
        let n = limit as i64;
        self.db.read("changes_after", |tx| {
            let mut out: Vec<Change> = Vec::new();
            // Buckets (live and deleted) after `after`, unless it is already an object.
            let bucket_after: Option<&str> = match after {
                None => Some(""),
                Some(EntryKey::Bucket(b)) => Some(b.as_str()),
                Some(EntryKey::Object { .. }) => None,
            };
            let first = after.is_none();
            if let Some(b) = bucket_after {
                // (Separate statements for the first batch and the next ones: an OR
                // in the condition would keep SQLite from seeking the index.)
                let mut st = tx.prepare_cached(if first {
                    "SELECT name, entry FROM buckets WHERE ?1 = ?1 ORDER BY name LIMIT ?2"
                } else {
                    "SELECT name, entry FROM buckets WHERE name > ?1 ORDER BY name LIMIT ?2"
                })?;
                let mut rows = st.query(params![b, n])?;
                while let Some(r) = rows.next()? {
                    let name: String = r.get(0)?;
                    let info: BucketInfo = decode_str(&name, &r.get::<_, String>(1)?)?;
                    out.push(Change {
                        key: EntryKey::Bucket(info.name.clone()),
                        version: info.version,
                        value: Value::Bucket(info),
                    });
                }
                let mut st = tx.prepare_cached(if first {
                    "SELECT bucket, version FROM tombstones WHERE kind = 'b' AND ?1 = ?1 \
                     ORDER BY bucket LIMIT ?2"
                } else {
                    "SELECT bucket, version FROM tombstones WHERE kind = 'b' AND bucket > ?1 \
                     ORDER BY bucket LIMIT ?2"
                })?;
                let mut rows = st.query(params![b, n])?;
                while let Some(r) = rows.next()? {
                    let key = EntryKey::Bucket(r.get(0)?);
                    let version = decode_str(&key.to_string(), &r.get::<_, String>(1)?)?;
                    out.push(Change {
                        key,
                        version,
                        value: Value::Tombstone,
                    });
                }
            }
            // Objects (live and deleted) after `after`: all of them after a bucket key.
            let (ob, ok, all) = match after {
                Some(EntryKey::Object { bucket, key }) => (bucket.as_str(), key.as_str(), false),
                _ => ("", "", true),
            };
            let mut st = tx.prepare_cached(if all {
                "SELECT bucket, key, entry FROM objects WHERE ?1 = ?1 AND ?2 = ?2 \
                 ORDER BY bucket, key LIMIT ?3"
            } else {
                "SELECT bucket, key, entry FROM objects WHERE (bucket, key) > (?1, ?2) \
                 ORDER BY bucket, key LIMIT ?3"
            })?;
            let mut rows = st.query(params![ob, ok, n])?;
            while let Some(r) = rows.next()? {
                let bucket: String = r.get(0)?;
                let key: String = r.get(1)?;
                let entry: ObjectEntry =
                    decode_str(&format!("{bucket}/{key}"), &r.get::<_, String>(2)?)?;
                out.push(Change {
                    key: EntryKey::Object { bucket, key },
                    version: entry.version,
                    value: Value::Object(entry),
                });
            }
            let mut st = tx.prepare_cached(if all {
                "SELECT bucket, key, version FROM tombstones WHERE kind = 'o' \
                 AND ?1 = ?1 AND ?2 = ?2 ORDER BY bucket, key LIMIT ?3"
            } else {
                "SELECT bucket, key, version FROM tombstones WHERE kind = 'o' \
                 AND (bucket, key) > (?1, ?2) ORDER BY bucket, key LIMIT ?3"
            })?;
            let mut rows = st.query(params![ob, ok, n])?;
            while let Some(r) = rows.next()? {
                let key = EntryKey::Object {
                    bucket: r.get(0)?,
                    key: r.get(1)?,
                };
                let version = decode_str(&key.to_string(), &r.get::<_, String>(2)?)?;
                out.push(Change {
                    key,
                    version,
                    value: Value::Tombstone,
                });
            }
            out.sort_by(|a, b| a.key.cmp(&b.key));
            out.truncate(limit);
            Ok(out)
        })
    }

    /// Where snapshot chunk `id` is stored, if this replica stored or read it.
    pub fn snapshot_chunk(&self, id: &ChunkId) -> Result<Option<BlobRef>, CatalogError> {
        self.db.read("snapshot_chunk", |tx| {
            let raw: Option<String> = query_row(
                tx,
                "SELECT blob FROM snapshot_chunks WHERE id = ?1",
                params![&id.0[..]],
                |r| r.get(0),
            )
            .optional()?;
            raw.map(|r| decode_str(&format!("snapshot chunk {id}"), &r))
                .transpose()
        })
    }

    /// Records where snapshot chunks are, as used by the snapshot of clock `generation`
    /// (a row keeps the newest generation that used it).
    pub fn remember_snapshot_chunks(
        &self,
        generation: u64,
        chunks: &[(ChunkId, BlobRef)],
    ) -> Result<(), CatalogError> {
        if chunks.is_empty() {
            return Ok(());
        }
        let generation = i64::try_from(generation).unwrap_or(i64::MAX);
        self.db.write("remember_snapshot_chunks", |tx| {
            for (id, blob) in chunks {
                let raw = encode("a snapshot chunk's place", blob)?;
                exec(
                    tx,
                    "INSERT INTO snapshot_chunks (id, blob, gen) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (id) DO UPDATE SET blob = excluded.blob, \
                     gen = max(gen, excluded.gen)",
                    params![&id.0[..], raw, generation],
                )?;
            }
            Ok(())
        })
    }

    /// Forgets the chunks no snapshot from clock `generation` on uses (see
    /// [`Catalog::remember_snapshot_chunks`]); with `None`, every chunk (the next
    /// snapshot then stores all of them anew: what `repair` wants of a damaged one).
    pub fn forget_snapshot_chunks(&self, before: Option<u64>) -> Result<usize, CatalogError> {
        let before = before.map_or(i64::MAX, |g| i64::try_from(g).unwrap_or(i64::MAX));
        self.db.write("forget_snapshot_chunks", |tx| {
            Ok(exec(
                tx,
                "DELETE FROM snapshot_chunks WHERE gen < ?1",
                params![before],
            )?)
        })
    }

    /// Every snapshot chunk this replica knows the place of (for inspection and tests).
    pub fn snapshot_chunks(&self) -> Result<Vec<(ChunkId, BlobRef)>, CatalogError> {
        self.db.read("snapshot_chunks", |tx| {
            let mut st = tx.prepare("SELECT id, blob FROM snapshot_chunks ORDER BY id")?;
            let mut rows = st.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let raw: Vec<u8> = r.get(0)?;
                let id: [u8; 32] = raw.try_into().map_err(|_| CatalogError::Corrupt {
                    what: "a snapshot chunk id".into(),
                    reason: "not 32 bytes".into(),
                })?;
                let id = ChunkId(id);
                out.push((
                    id,
                    decode_str(&format!("snapshot chunk {id}"), &r.get::<_, String>(1)?)?,
                ));
            }
            Ok(out)
        })
    }

    /// Snapshot chunks this replica knows the place of.
    pub fn snapshot_chunk_count(&self) -> Result<u64, CatalogError> {
        self.db.read("snapshot_chunk_count", |tx| {
            Ok(
                query_row(tx, "SELECT count(*) FROM snapshot_chunks", [], |r| {
                    r.get::<_, i64>(0)
                })? as u64,
            )
        })
    }
}
