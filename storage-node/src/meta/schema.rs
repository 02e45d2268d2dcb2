//! The metadata database's schema and connections: [`SCHEMA`] (forward migrations, one
//! per version), how every connection is opened ([`connect`]: WAL, `synchronous =
//! NORMAL`, the page cache) and how a database is brought up to date ([`migrate`]).

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::DbError;
use crate::error::Error;

/// The schema, one entry per version: entry `i` takes a database from `user_version`
/// `i` to `i + 1`. Only ever append.
pub const SCHEMA: &[&str] = &[
    // Version 1.
    r#"
CREATE TABLE pieces (
    id            BLOB    NOT NULL PRIMARY KEY, -- piece id, 32 bytes
    owner         BLOB    NOT NULL,             -- uploader's ed25519 public key, 32 bytes
    size          INTEGER NOT NULL,             -- bytes
    block_size    INTEGER NOT NULL,             -- bytes per hashed block
    piece_hash    BLOB    NOT NULL,             -- 32 bytes: root over the block hashes
    block_hashes  BLOB    NOT NULL,             -- 32 bytes per block, in order
    created_at_ms INTEGER NOT NULL,             -- Unix ms
    expires_at_ms INTEGER NOT NULL,             -- Unix ms: the lease's end
    tag           BLOB    NOT NULL DEFAULT x''  -- opaque, at most 128 bytes, from the order
);
CREATE INDEX pieces_by_expiry ON pieces (expires_at_ms, id);
CREATE INDEX pieces_by_owner ON pieces (owner, id);

-- The bytes of small pieces that have no file (the store's INLINE_MAX).
CREATE TABLE inline_pieces (
    id    BLOB NOT NULL PRIMARY KEY,
    bytes BLOB NOT NULL
);

-- Pieces whose row is gone but whose file may remain (a removal a crash interrupted).
CREATE TABLE trash (id BLOB NOT NULL PRIMARY KEY) WITHOUT ROWID;

-- Charged bytes (size + 4096 each) and pieces: exactly the sums over `pieces`.
CREATE TABLE counters (
    id     INTEGER PRIMARY KEY CHECK (id = 0),
    used   INTEGER NOT NULL,
    pieces INTEGER NOT NULL
);
INSERT INTO counters (id, used, pieces) VALUES (0, 0, 0);

-- The same per owner; an owner with no piece left has no row.
CREATE TABLE owners (
    owner  BLOB    NOT NULL PRIMARY KEY,
    bytes  INTEGER NOT NULL,
    pieces INTEGER NOT NULL
) WITHOUT ROWID;

-- DHT records this node holds (opaque to the store), kept across restarts.
CREATE TABLE dht_records (
    key           BLOB    NOT NULL PRIMARY KEY, -- 32 bytes
    record        BLOB    NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
CREATE INDEX dht_records_by_expiry ON dht_records (expires_at_ms);

-- Peers this node has verified (opaque records), the newest MAX_KNOWN_PEERS.
CREATE TABLE known_peers (
    node_id      BLOB    NOT NULL PRIMARY KEY, -- 32 bytes
    record       BLOB    NOT NULL,
    last_seen_ms INTEGER NOT NULL
);
CREATE INDEX known_peers_by_last_seen ON known_peers (last_seen_ms);

-- Small named values: 'syncs' (bumped by every durable flush), 'sled_migrated_at_ms'.
CREATE TABLE node_info (
    key   TEXT    NOT NULL PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO node_info (key, value) VALUES ('syncs', 0);
"#,
];

/// How long a call waits for a lock another process holds (the `sqlite3` shell, `storage-node
/// info`) before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// SQLite's page cache per connection, in KiB (negative `cache_size` means KiB).
const CACHE_KIB: i64 = 16 * 1024;

pub(super) fn connect(path: &Path) -> Result<Connection, Error> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Db(DbError::Sqlite(rusqlite::Error::InvalidQuery)));
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
    Ok(conn)
}

/// Applies the forward migrations `conn` lacks, in one transaction.
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let current = usize::try_from(found).unwrap_or(usize::MAX);
    if current > SCHEMA.len() {
        return Err(Error::Db(DbError::TooNew {
            path: path.to_owned(),
            found,
            known: SCHEMA.len(),
        }));
    }
    if current == SCHEMA.len() {
        return Ok(());
    }
    for step in &SCHEMA[current..] {
        tx.execute_batch(step)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA.len() as i64)?;
    tx.commit()?;
    Ok(())
}
