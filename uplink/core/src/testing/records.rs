//! [`MemoryRecords`]: the catalog's DHT records in memory, kept by the DHT's own record
//! rules ([`RecordStore`]: newer seq only, compare-and-swap, bounds), with hooks to make
//! the "network" serve a tampered or replayed record.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::BoxFuture;
use satellite_free_discovery::core::store::{RecordRefused, RecordStore};
use shoal_proto::messages::MutableRecord;
use shoal_proto::{RecordKey, Signed};

use super::lock;
use crate::sync::{CatalogRecords, RecordError};

/// One in-memory record holder.
#[derive(Debug, Default)]
pub struct MemoryRecords {
    store: Mutex<RecordStore>,
    /// Served instead of what the store holds (a lying or replaying network).
    forced: Mutex<HashMap<RecordKey, Signed<MutableRecord>>>,
    gets: AtomicU64,
    puts: AtomicU64,
    /// Puts still to be stored but answered as failed (the answers lost on the way).
    lost_answers: AtomicU64,
}

impl MemoryRecords {
    pub fn new() -> Self {
        Self {
            store: Mutex::new(RecordStore::default_config()),
            ..Self::default()
        }
    }

    /// Reads and writes served so far.
    pub fn calls(&self) -> (u64, u64) {
        (
            self.gets.load(Ordering::Relaxed),
            self.puts.load(Ordering::Relaxed),
        )
    }

    /// The record the store holds under `key`.
    pub fn held(&self, key: &RecordKey) -> Option<Signed<MutableRecord>> {
        lock(&self.store)
            .get(key, shoal_proto::time::unix_ms())
            .cloned()
    }

    /// Every record held.
    pub fn all(&self) -> Vec<Signed<MutableRecord>> {
        lock(&self.store).iter().cloned().collect()
    }

    /// From now on, reads of `record.key()` get `record`, whatever is stored.
    pub fn force(&self, record: Signed<MutableRecord>) {
        lock(&self.forced).insert(record.key(), record);
    }

    /// Serve what the store holds again.
    pub fn unforce(&self, key: &RecordKey) {
        lock(&self.forced).remove(key);
    }

    /// Forgets the record under `key`, as a network whose holders all restarted
    /// without keeping it would: reads find nothing, and any newer or equal put is
    /// taken again.
    pub fn lose(&self, key: &RecordKey) {
        let now = shoal_proto::time::unix_ms();
        let mut store = lock(&self.store);
        let keep: Vec<Signed<MutableRecord>> =
            store.iter().filter(|r| r.key() != *key).cloned().collect();
        *store = RecordStore::default_config();
        for r in keep {
            let _ = store.put(r, None, now);
        }
    }

    /// The next `n` puts are stored where they belong but answered with an error, as
    /// when the answers are lost or the writer's deadline passes after the nodes took
    /// the record.
    pub fn lose_answers_to_puts(&self, n: u64) {
        self.lost_answers.store(n, Ordering::Relaxed);
    }

    /// Forgets every record (the whole network restarted without keeping them).
    pub fn lose_all(&self) {
        *lock(&self.store) = RecordStore::default_config();
    }
}

impl CatalogRecords for MemoryRecords {
    fn get(
        &self,
        key: RecordKey,
    ) -> BoxFuture<'_, Result<Option<Signed<MutableRecord>>, RecordError>> {
        self.gets.fetch_add(1, Ordering::Relaxed);
        let forced = lock(&self.forced).get(&key).cloned();
        let out = forced.or_else(|| self.held(&key));
        Box::pin(async move { Ok(out) })
    }

    fn put(
        &self,
        record: Signed<MutableRecord>,
        expected_seq: Option<u64>,
    ) -> BoxFuture<'_, Result<usize, RecordError>> {
        self.puts.fetch_add(1, Ordering::Relaxed);
        let outcome = lock(&self.store).put(record, expected_seq, shoal_proto::time::unix_ms());
        // As the DHT answers: a compare-and-swap refusal is an error of its kind, any
        // other refusal stores the record nowhere.
        let cas = matches!(outcome, Err(RecordRefused::CasMismatch { .. }));
        let stored = outcome.is_ok();
        let lost = self
            .lost_answers
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        Box::pin(async move {
            if lost {
                Err(RecordError::failed("no answer within the deadline (test)"))
            } else if cas {
                Err(RecordError::compare_and_swap(
                    "compare-and-swap failed: another seq is held (test)",
                ))
            } else {
                Ok(usize::from(stored))
            }
        })
    }
}
