//! What the DHT keeps across restarts, in the metadata database: its stored records
//! (`dht_records`) and the peers it verified (`known_peers`).

use rusqlite::params;

use super::row::{from_sql, to_sql};
use super::{MAX_KNOWN_PEERS, MetaDb};
use crate::error::Error;

impl MetaDb {
    /// Stores (or replaces) the DHT record under `key`, kept until `expires_at_ms`.
    pub fn put_dht_record(
        &self,
        key: &[u8; 32],
        record: &[u8],
        expires_at_ms: u64,
    ) -> Result<(), Error> {
        self.write("put_dht_record", |tx| {
            tx.prepare_cached(
                "INSERT INTO dht_records (key, record, expires_at_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET record = excluded.record,
                     expires_at_ms = excluded.expires_at_ms",
            )?
            .execute(params![key.as_slice(), record, to_sql(expires_at_ms)])?;
            Ok(())
        })
    }

    pub fn remove_dht_record(&self, key: &[u8; 32]) -> Result<(), Error> {
        self.write("remove_dht_record", |tx| {
            tx.prepare_cached("DELETE FROM dht_records WHERE key = ?1")?
                .execute([key.as_slice()])?;
            Ok(())
        })
    }

    /// Up to `limit` DHT records not expired at `now_ms` (record bytes, expiry), in key
    /// order.
    pub fn dht_records(&self, now_ms: u64, limit: usize) -> Result<Vec<(Vec<u8>, u64)>, Error> {
        self.read("dht_records", |c| {
            let mut stmt = c.prepare_cached(
                "SELECT record, expires_at_ms FROM dht_records WHERE expires_at_ms > ?1
                 ORDER BY key LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![to_sql(now_ms), to_sql(limit as u64)], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, from_sql(r.get(1)?)))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Removes the DHT records expired at `now_ms`; returns how many.
    pub fn remove_expired_dht_records(&self, now_ms: u64) -> Result<usize, Error> {
        self.write("remove_expired_dht_records", |tx| {
            Ok(tx
                .prepare_cached("DELETE FROM dht_records WHERE expires_at_ms <= ?1")?
                .execute([to_sql(now_ms)])?)
        })
    }

    /// Records verified peers (node id, opaque record, last seen ms), replacing what was
    /// known of them, and keeps only the newest [`MAX_KNOWN_PEERS`] by last seen.
    pub fn put_known_peers(&self, peers: &[([u8; 32], Vec<u8>, u64)]) -> Result<(), Error> {
        self.write("put_known_peers", |tx| {
            let mut put = tx.prepare_cached(
                "INSERT INTO known_peers (node_id, record, last_seen_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (node_id) DO UPDATE SET record = excluded.record,
                     last_seen_ms = excluded.last_seen_ms",
            )?;
            for (id, record, seen) in peers {
                put.execute(params![id.as_slice(), record, to_sql(*seen)])?;
            }
            tx.prepare_cached(
                "DELETE FROM known_peers WHERE node_id NOT IN (
                     SELECT node_id FROM known_peers
                     ORDER BY last_seen_ms DESC, node_id LIMIT ?1)",
            )?
            .execute([MAX_KNOWN_PEERS as i64])?;
            Ok(())
        })
    }

    /// Up to `limit` known peers (record, last seen ms), newest first.
    pub fn known_peers(&self, limit: usize) -> Result<Vec<(Vec<u8>, u64)>, Error> {
        self.read("known_peers", |c| {
            let mut stmt = c.prepare_cached(
                "SELECT record, last_seen_ms FROM known_peers
                 ORDER BY last_seen_ms DESC, node_id LIMIT ?1",
            )?;
            let rows = stmt.query_map([to_sql(limit as u64)], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, from_sql(r.get(1)?)))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }
}
