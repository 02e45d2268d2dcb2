//! The upgrade from the sled catalog (every version before the SQLite store): a catalog
//! dir that still holds sled's files is imported on first open, in one transaction,
//! and sled's files are removed only after that transaction has committed. A crash at
//! any point leaves either the sled catalog untouched (the import runs again) or the
//! import committed (the leftover files are removed on the next open).
//!
//! What is carried over, tree by tree: `buckets`, `objects` (the object-id index is
//! rebuilt from them), `tombstones`, `pending`, `sync` (every value, by name), `nodes`,
//! and the gateway's multipart records (`local/gateway-uploads`: `u{id}`, `p{id}{part}`,
//! `c{id}`). Values were JSON there and are JSON here: they are checked and copied.
//!
//! sled stays a dependency for this path only.

use std::path::Path;

use rusqlite::{Transaction, params};

use super::entry::{CatalogError, ObjectEntry, decode};
use super::store::Db;

/// sled's files in a catalog dir.
const SLED_FILES: &[&str] = &["conf", "db", "blobs"];
/// The `meta` row saying the import committed.
const IMPORTED: &str = "imported-from-sled";

fn has_sled(dir: &Path) -> bool {
    dir.join("conf").is_file() && dir.join("db").is_file()
}

fn old(dir: &Path, reason: impl std::fmt::Display) -> CatalogError {
    CatalogError::OldFormat {
        dir: dir.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Imports the sled catalog in `db`'s dir, if there is one.
pub(crate) fn import_if_present(db: &Db) -> Result<(), CatalogError> {
    let dir = db.dir().to_path_buf();
    if !has_sled(&dir) {
        return Ok(());
    }
    db.write("import sled catalog", |tx| {
        let done: Option<String> = tx
            .query_row("SELECT value FROM meta WHERE name = ?1", [IMPORTED], |r| {
                r.get(0)
            })
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })?;
        if done.is_some() {
            return Ok(());
        }
        let sled = sled::Config::new().path(&dir).open().map_err(|e| match e {
            sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock => old(
                &dir,
                "a process of the previous uplink version has it open; stop it (or let it \
                 finish) and run this command again to upgrade the catalog",
            ),
            e => old(&dir, e),
        })?;
        let counts = copy(&dir, &sled, tx)?;
        tx.execute(
            "INSERT INTO meta (name, value) VALUES (?1, ?2)",
            params![IMPORTED, shoal_proto::time::unix_ms().to_string()],
        )?;
        tracing::info!(dir = %dir.display(), ?counts, "imported the sled catalog");
        Ok(())
    })?;
    // Committed: sled's files go.
    for f in SLED_FILES {
        let p = dir.join(f);
        let r = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        if let Err(e) = r
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(file = %p.display(), error = %e, "cannot remove an imported sled file");
        }
    }
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("snap.") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

/// How many rows of each kind were imported.
#[derive(Debug, Default)]
#[allow(dead_code)] // read through Debug, in the log line
struct Counts {
    buckets: usize,
    objects: usize,
    tombstones: usize,
    pending: usize,
    sync: usize,
    nodes: usize,
    multipart: usize,
}

fn text(dir: &Path, what: &str, v: &[u8]) -> Result<String, CatalogError> {
    let s = std::str::from_utf8(v).map_err(|_| old(dir, format!("{what} is not UTF-8")))?;
    // Every value was JSON: refuse to carry garbage over silently.
    serde_json::from_str::<serde_json::Value>(s)
        .map_err(|e| old(dir, format!("{what} is not JSON: {e}")))?;
    Ok(s.to_string())
}

fn utf8(dir: &Path, what: &str, v: &[u8]) -> Result<String, CatalogError> {
    String::from_utf8(v.to_vec()).map_err(|_| old(dir, format!("{what} is not UTF-8")))
}

/// `kind, bucket, key` of a tagged key (`b name` or `o bucket \0 key`).
fn split_tag(dir: &Path, k: &[u8]) -> Result<(&'static str, String, String), CatalogError> {
    match k.split_first() {
        Some((b'b', name)) => Ok(("b", utf8(dir, "a bucket name", name)?, String::new())),
        Some((b'o', rest)) => {
            let (b, k) = split_object(dir, rest)?;
            Ok(("o", b, k))
        }
        _ => Err(old(dir, "an entry key of unknown kind")),
    }
}

fn split_object(dir: &Path, k: &[u8]) -> Result<(String, String), CatalogError> {
    let Some(at) = k.iter().position(|b| *b == 0) else {
        return Err(old(dir, "an object key without a bucket"));
    };
    Ok((
        utf8(dir, "a bucket name", &k[..at])?,
        utf8(dir, "an object key", &k[at + 1..])?,
    ))
}

/// What is done with each `(key, value)` of a sled tree.
type Row<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), CatalogError> + 'a;

fn copy(dir: &Path, sled: &sled::Db, tx: &Transaction<'_>) -> Result<Counts, CatalogError> {
    let tree = |name: &str| sled.open_tree(name).map_err(|e| old(dir, e));
    let each = |t: &sled::Tree, f: &mut Row<'_>| {
        for r in t.iter() {
            let (k, v) = r.map_err(|e| old(dir, e))?;
            f(&k, &v)?;
        }
        Ok::<(), CatalogError>(())
    };
    let mut n = Counts::default();
    each(&tree("buckets")?, &mut |k, v| {
        tx.execute(
            "INSERT OR REPLACE INTO buckets (name, entry) VALUES (?1, ?2)",
            params![utf8(dir, "a bucket name", k)?, text(dir, "a bucket", v)?],
        )?;
        n.buckets += 1;
        Ok(())
    })?;
    each(&tree("objects")?, &mut |k, v| {
        let (bucket, key) = split_object(dir, k)?;
        let entry = text(dir, "an object entry", v)?;
        let e: ObjectEntry = decode(&format!("{bucket}/{key}"), v)?;
        tx.execute(
            "INSERT OR REPLACE INTO objects (bucket, key, object_id, entry) VALUES (?1, ?2, ?3, ?4)",
            params![bucket, key, &e.object_id.0[..], entry],
        )?;
        n.objects += 1;
        Ok(())
    })?;
    each(&tree("tombstones")?, &mut |k, v| {
        let (kind, bucket, key) = split_tag(dir, k)?;
        tx.execute(
            "INSERT OR REPLACE INTO tombstones (kind, bucket, key, version) VALUES (?1, ?2, ?3, ?4)",
            params![kind, bucket, key, text(dir, "a tombstone", v)?],
        )?;
        n.tombstones += 1;
        Ok(())
    })?;
    each(&tree("pending")?, &mut |k, v| {
        let (kind, bucket, key) = split_tag(dir, k)?;
        tx.execute(
            "INSERT OR REPLACE INTO pending (kind, bucket, key, change) VALUES (?1, ?2, ?3, ?4)",
            params![kind, bucket, key, text(dir, "a queued change", v)?],
        )?;
        n.pending += 1;
        Ok(())
    })?;
    each(&tree("sync")?, &mut |k, v| {
        // The sled catalog's "object index built" flag means nothing here.
        let name = utf8(dir, "a sync value name", k)?;
        if name == "object-index" {
            return Ok(());
        }
        tx.execute(
            "INSERT OR REPLACE INTO sync (name, value) VALUES (?1, ?2)",
            params![name, text(dir, "a sync value", v)?],
        )?;
        n.sync += 1;
        Ok(())
    })?;
    each(&tree("nodes")?, &mut |k, v| {
        if k.len() != 32 {
            return Ok(());
        }
        tx.execute(
            "INSERT OR REPLACE INTO nodes (id, stats) VALUES (?1, ?2)",
            params![k, text(dir, "node stats", v)?],
        )?;
        n.nodes += 1;
        Ok(())
    })?;
    each(&tree("local/gateway-uploads")?, &mut |k, v| {
        let v = text(dir, "a multipart record", v)?;
        match k.split_first() {
            Some((b'u', id)) => {
                tx.execute(
                    "INSERT OR REPLACE INTO multipart_uploads (id, record) VALUES (?1, ?2)",
                    params![utf8(dir, "an upload id", id)?, v],
                )?;
            }
            Some((b'c', id)) => {
                tx.execute(
                    "INSERT OR REPLACE INTO multipart_completed (id, completed) VALUES (?1, ?2)",
                    params![utf8(dir, "an upload id", id)?, v],
                )?;
            }
            Some((b'p', rest)) if rest.len() > 4 => {
                let (id, number) = rest.split_at(rest.len() - 4);
                let number = u32::from_be_bytes([number[0], number[1], number[2], number[3]]);
                tx.execute(
                    "INSERT OR REPLACE INTO multipart_parts (id, number, part) VALUES (?1, ?2, ?3)",
                    params![utf8(dir, "an upload id", id)?, number, v],
                )?;
            }
            _ => return Err(old(dir, "a multipart record of unknown kind")),
        }
        n.multipart += 1;
        Ok(())
    })?;
    Ok(n)
}
