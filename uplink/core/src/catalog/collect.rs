//! Tombstone collection and the pruning a snapshot's stability point allows (the rule
//! is the catalog sync's: [`crate::sync`]); these are the table operations.

use super::*;

impl Catalog {
    /// Every tombstone, as a change.
    pub fn tombstones(&self) -> Result<Vec<Change>, CatalogError> {
        self.db.read("tombstones", tombstones_in)
    }

    /// This replica's clock: the latest version reading made or seen here.
    pub fn clock(&self) -> Result<Hlc, CatalogError> {
        Ok(self.sync_value::<Hlc>(HLC)?.unwrap_or_default())
    }

    /// Tombstones held (deleted keys remembered so that older writes stay deleted).
    pub fn tombstone_count(&self) -> Result<u64, CatalogError> {
        self.db.read("tombstone_count", |tx| {
            Ok(query_row(tx, "SELECT count(*) FROM tombstones", [], |r| {
                r.get::<_, i64>(0)
            })? as u64)
        })
    }

    /// Drops the tombstones at or below `stable`: versions every writer has merged
    /// (the catalog sync's causal-stability rule), so that no write they deleted can
    /// come back. A tombstone still queued for publishing stays. Returns how many went.
    pub fn collect_tombstones(&self, stable: Hlc) -> Result<usize, CatalogError> {
        let gone: Vec<Change> = self
            .tombstones()?
            .into_iter()
            .filter(|c| c.version.hlc <= stable)
            .collect();
        self.forget(&gone)
    }

    /// Forgets (see [`Catalog::forget`]) every entry and tombstone `gone` says, reading
    /// the catalog a batch at a time (memory does not grow with the catalog).
    fn forget_where(&self, gone: impl Fn(&Change) -> bool) -> Result<usize, CatalogError> {
        const BATCH: usize = 1024;
        let mut n = 0;
        let mut after: Option<EntryKey> = None;
        loop {
            let batch = self.changes_after(after.as_ref(), BATCH)?;
            let last = batch.len() < BATCH;
            after = batch.last().map(|c| c.key.clone());
            let these: Vec<Change> = batch.into_iter().filter(|c| gone(c)).collect();
            n += self.forget(&these)?;
            if last || after.is_none() {
                return Ok(n);
            }
        }
    }

    /// After merging a snapshot taken at stability point `floor` (every writer it
    /// knew had merged every version at or below it; tombstones up to it were dropped):
    /// forgets every entry and tombstone at or below `floor` that `lacks` says the
    /// snapshot lacks, which it lacks because a later delete, since collected, removed
    /// it. A replica that was behind would otherwise keep, and spread again, what was
    /// deleted. Returns how many went.
    pub fn prune_below(
        &self,
        floor: Hlc,
        lacks: impl Fn(&Change) -> bool,
    ) -> Result<usize, CatalogError> {
        self.forget_where(|c| c.version.hlc <= floor && lacks(c))
    }

    /// Removes `changes`' keys from the tables (no tombstone left), unless a change of
    /// the key is queued or the key holds another version now.
    fn forget(&self, changes: &[Change]) -> Result<usize, CatalogError> {
        if changes.is_empty() {
            return Ok(0);
        }
        self.db.write("forget", |tx| {
            let mut n = 0;
            for c in changes {
                let (kind, b, k) = cols(&c.key);
                let queued = query_row(
                    tx,
                    "SELECT 1 FROM pending WHERE kind = ?1 AND bucket = ?2 AND key = ?3",
                    [kind, b, k],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
                if queued || version_in(tx, &c.key)? != Some(c.version) {
                    continue;
                }
                match (&c.key, &c.value) {
                    (_, Value::Tombstone) => exec(
                        tx,
                        "DELETE FROM tombstones WHERE kind = ?1 AND bucket = ?2 AND key = ?3",
                        [kind, b, k],
                    )?,
                    (EntryKey::Bucket(name), _) => {
                        exec(tx, "DELETE FROM buckets WHERE name = ?1", [name])?
                    }
                    (EntryKey::Object { bucket, key }, _) => exec(
                        tx,
                        "DELETE FROM objects WHERE bucket = ?1 AND key = ?2",
                        [bucket, key],
                    )?,
                };
                n += 1;
            }
            Ok(n)
        })
    }
}

/// Every tombstone as a change, in key order, inside `tx`.
pub(super) fn tombstones_in(tx: &rusqlite::Transaction<'_>) -> Result<Vec<Change>, CatalogError> {
    let mut out = Vec::new();
    let mut st =
        tx.prepare("SELECT kind, bucket, key, version FROM tombstones ORDER BY kind, bucket, key")?;
    let mut rows = st.query([])?;
    while let Some(r) = rows.next()? {
        let kind: String = r.get(0)?;
        let bucket: String = r.get(1)?;
        let key: String = r.get(2)?;
        let key = match kind.as_str() {
            "b" => EntryKey::Bucket(bucket),
            _ => EntryKey::Object { bucket, key },
        };
        let version = decode_str(&key.to_string(), &r.get::<_, String>(3)?)?;
        out.push(Change {
            key,
            version,
            value: Value::Tombstone,
        });
    }
    Ok(out)
}
