//! The catalog's DHT records: reading and writing them, the writers record and
//! registering this writer in it.

use super::{
    CatalogSync, MAX_RECORD_TTL, REGISTER_ATTEMPTS, SyncError, SyncState, WRITERS_FRESH,
    WRITERS_SEEN, record_what,
};
use crate::catalog::WriterId;
use crate::catalog::log::{self};
use shoal_proto::messages::MutableRecord;
use shoal_proto::{RecordKey, Signed};
use std::collections::BTreeSet;

impl CatalogSync {
    pub(super) fn sync(&self) -> Option<&SyncState> {
        self.sync.as_ref()
    }

    pub(crate) fn catalog_key(&self) -> &[u8; 32] {
        self.access.catalog_key()
    }

    pub(super) fn record_key(&self, salt: &[u8]) -> RecordKey {
        MutableRecord::key_for(self.access.owner().public_key(), salt)
    }

    pub(super) async fn get_record(
        &self,
        sync: &SyncState,
        what: &str,
        salt: &[u8],
    ) -> Result<Option<Signed<MutableRecord>>, SyncError> {
        sync.records
            .get(self.record_key(salt))
            .await
            .map_err(|source| SyncError::Record {
                what: what.to_string(),
                source,
            })
    }

    pub(super) async fn put_record(
        &self,
        sync: &SyncState,
        what: &str,
        salt: Vec<u8>,
        seq: u64,
        value: Vec<u8>,
        expected_seq: Option<u64>,
    ) -> Result<u64, SyncError> {
        let ttl = self.pieces.config().default_lease.min(MAX_RECORD_TTL);
        let expires_at_ms = shoal_proto::time::unix_ms().saturating_add(ttl.as_millis() as u64);
        self.put_record_until(sync, what, salt, seq, value, expected_seq, expires_at_ms)
            .await
    }

    /// [`Self::put_record`], to expire at `expires_at_ms`.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn put_record_until(
        &self,
        sync: &SyncState,
        what: &str,
        salt: Vec<u8>,
        seq: u64,
        value: Vec<u8>,
        expected_seq: Option<u64>,
        expires_at_ms: u64,
    ) -> Result<u64, SyncError> {
        let len = value.len() as u64;
        let record = MutableRecord {
            public_key: *self.access.owner().public_key(),
            salt,
            seq,
            value,
            expires_at_ms,
            work: 0,
        };
        let signed = Signed::sign(record, self.access.owner())
            .map_err(|e| SyncError::Sign(e.to_string()))?;
        let stored = sync
            .records
            .put(signed, expected_seq)
            .await
            .map_err(|source| SyncError::Record {
                what: what.to_string(),
                source,
            })?;
        if stored == 0 {
            return Err(SyncError::NotStored {
                what: what.to_string(),
            });
        }
        Ok(len * stored as u64)
    }

    /// The writers record: its seq (0 when there is none) and set.
    pub(super) async fn writers(
        &self,
        sync: &SyncState,
    ) -> Result<(u64, BTreeSet<WriterId>), SyncError> {
        let what = record_what("writers");
        let read = match self
            .get_record(sync, &what, &log::writers_salt(self.catalog_key()))
            .await?
        {
            None => (0, BTreeSet::new()),
            Some(r) => (
                r.seq,
                log::open_writers(self.catalog_key(), r.seq, &r.value)?,
            ),
        };
        if let Ok(mut last) = sync.writers_read.lock() {
            *last = Some((std::time::Instant::now(), read.0, read.1.clone()));
        }
        Ok(read)
    }

    /// The writers record as read within [`WRITERS_FRESH`], else read now.
    pub(super) async fn writers_fresh(
        &self,
        sync: &SyncState,
    ) -> Result<(u64, BTreeSet<WriterId>), SyncError> {
        let cached = sync.writers_read.lock().ok().and_then(|last| {
            last.as_ref()
                .filter(|(at, _, _)| at.elapsed() < WRITERS_FRESH)
                .map(|(_, seq, set)| (*seq, set.clone()))
        });
        match cached {
            Some(read) => Ok(read),
            None => self.writers(sync).await,
        }
    }

    /// Makes sure the writers record lists this writer and every writer merged here
    /// (healing a record that lost one in a race): compare-and-swap, and on a lost race
    /// merge the sets and try again.
    pub(super) async fn register(
        &self,
        sync: &SyncState,
        known: &BTreeSet<WriterId>,
    ) -> Result<u64, SyncError> {
        self.register_from(sync, known, None).await
    }

    /// [`Self::register`], starting from the writers record as `read` just now (if
    /// given).
    pub(super) async fn register_from(
        &self,
        sync: &SyncState,
        known: &BTreeSet<WriterId>,
        mut read: Option<(u64, BTreeSet<WriterId>)>,
    ) -> Result<u64, SyncError> {
        let me = self.catalog.writer();
        let mut sent = 0;
        for _ in 0..REGISTER_ATTEMPTS {
            let (seq, current) = match read.take() {
                Some(r) => r,
                None => self.writers(sync).await?,
            };
            if current.contains(&me) && known.is_subset(&current) {
                return Ok(sent);
            }
            let mut next = current;
            next.insert(me);
            next.extend(known.iter().copied());
            // Never below a version seen before (a record the DHT lost is put back
            // above it, or every reader that saw it would take the new one as stale).
            let seen = self
                .catalog
                .sync_value::<u64>(WRITERS_SEEN)?
                .unwrap_or(0)
                .max(seq);
            let value = log::seal_writers(self.catalog_key(), seen + 1, &next)?;
            // A refusal (a racing writer got there first) shows on the next read, which
            // is a real one.
            if let Ok(mut last) = sync.writers_read.lock() {
                *last = None;
            }
            sent += self
                .put_record(
                    sync,
                    &record_what("writers"),
                    log::writers_salt(self.catalog_key()),
                    seen + 1,
                    value,
                    Some(seq),
                )
                .await
                .unwrap_or(0);
        }
        Err(SyncError::WritersRace {
            writer: me,
            attempts: REGISTER_ATTEMPTS,
        })
    }
}
