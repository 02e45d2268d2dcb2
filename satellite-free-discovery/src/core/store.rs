//! Rules of the mutable-record store (BEP 44 style).
//!
//! A record arrives as a [`Signed<MutableRecord>`], so its signature over
//! (salt, seq, value, expiry) has already been checked by the wire conversion. The store
//! then accepts it only if its `seq` is strictly greater than the one held (an identical
//! copy is acknowledged without change, so republishing is harmless; the same seq and
//! value signed again to expire later is a renewal, and replaces it), the optional
//! compare-and-swap `expected_seq` matches, its value is within 4 KiB, it has not
//! expired and does not expire too far ahead, and neither the store nor the publisher's
//! share of it is full. Time is the caller's unix milliseconds.

use std::collections::HashMap;

use shoal_proto::limits::MAX_RECORD_VALUE;
use shoal_proto::messages::MutableRecord;
use shoal_proto::{PublicKey, RecordKey, Signed};

/// Store bounds.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Records held at most. Default 10,000 (at most ~45 MiB).
    pub max_records: usize,
    /// Records of one publisher key held at most. Default 64.
    pub max_per_owner: usize,
    /// New records put from one source address group (an IPv4 /24 or an IPv6 /48:
    /// publisher keys are free, addresses are not) held at most. Default 1,000.
    pub max_per_source: usize,
    /// Furthest expiry accepted, from now. Default 366 days: the uplink's catalog
    /// pointers live as long as the data leases they lead to (a year at most), so that an
    /// owner who lost their machine has that whole time to recover.
    pub max_ttl_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            max_records: 10_000,
            max_per_owner: 64,
            max_per_source: 1_000,
            max_ttl_ms: 366 * 24 * 3600 * 1000,
        }
    }
}

/// Why a record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordRefused {
    #[error("record seq {offered} is not newer than the held seq {held}")]
    NotNewer { held: u64, offered: u64 },
    #[error("compare-and-swap expected seq {expected}, but the held seq is {held:?}")]
    CasMismatch { expected: u64, held: Option<u64> },
    #[error("record value is {actual} bytes, over the limit of {limit}")]
    TooLarge { actual: usize, limit: usize },
    #[error("record expired at {expires_at_ms}")]
    Expired { expires_at_ms: u64 },
    #[error("record expiry is {ahead_ms} ms ahead, beyond the {limit_ms} ms allowed")]
    ExpiryTooFar { ahead_ms: u64, limit_ms: u64 },
    #[error("record store is full ({limit} records)")]
    StoreFull { limit: usize },
    #[error("publisher already has {limit} records here")]
    OwnerFull { limit: usize },
    #[error("your network already put {limit} records here")]
    SourceFull { limit: usize },
    #[error("no valid write token: read the key from this node first (GetRecord)")]
    WriteToken,
    #[error("this node is not among the {k} closest it knows to the key")]
    NotAmongClosest { k: usize },
}

/// What an accepted put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    New,
    Replaced {
        previous_seq: u64,
    },
    /// The very same record was held already.
    Unchanged,
}

/// A change of the store's contents, for a host that keeps the store on disk (see
/// [`RecordStore::set_journal`]).
// Moved once, from the store to the disk writer: boxing the record buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChange {
    /// A record was added or replaced the one held under its key.
    Put(Signed<MutableRecord>),
    /// The record under this key was dropped (expired).
    Removed(RecordKey),
}

/// What [`RecordStore::restore`] did with the records it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Restored {
    /// Records now held.
    pub restored: usize,
    /// Records that had expired (or whose expiry lies beyond `max_ttl_ms`).
    pub expired: usize,
    /// Records refused by the store's other rules: an older or equal seq than one held,
    /// too large, or no room (the store's or the publisher's bound).
    pub refused: usize,
}

/// The records one node holds for others.
#[derive(Debug, Default)]
pub struct RecordStore {
    cfg: StoreConfig,
    records: HashMap<RecordKey, Signed<MutableRecord>>,
    per_owner: HashMap<PublicKey, usize>,
    /// The source group each record was put from (records restored from disk have none)
    /// and the records held per group.
    source_of: HashMap<RecordKey, Vec<u8>>,
    per_source: HashMap<Vec<u8>, usize>,
    /// Changes not yet taken by [`RecordStore::take_changes`] (kept only when enabled).
    journal: Option<Vec<StoreChange>>,
}

impl RecordStore {
    pub fn new(cfg: StoreConfig) -> Self {
        Self {
            cfg,
            records: HashMap::new(),
            per_owner: HashMap::new(),
            source_of: HashMap::new(),
            per_source: HashMap::new(),
            journal: None,
        }
    }

    /// Keeps a journal of every change (added, replaced, dropped records) for
    /// [`RecordStore::take_changes`]: a host that persists the store writes these.
    pub fn set_journal(&mut self, on: bool) {
        self.journal = on.then(Vec::new);
    }

    /// The changes since the last call (empty without a journal).
    pub fn take_changes(&mut self) -> Vec<StoreChange> {
        self.journal
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    fn log(&mut self, change: impl FnOnce() -> StoreChange) {
        if let Some(j) = self.journal.as_mut() {
            j.push(change());
        }
    }

    /// Takes back records this node held before a restart (read from its disk), under
    /// the same rules as a put at unix time `now`: expired ones and ones expiring beyond
    /// `max_ttl_ms` are dropped, the store's and each publisher's bounds hold, and of two
    /// records under one key the higher seq wins. The records' signatures must have been
    /// checked by the caller (the wire conversion into [`Signed`] does). Restoring
    /// writes nothing to the journal: the records came from the disk.
    pub fn restore(
        &mut self,
        records: impl IntoIterator<Item = Signed<MutableRecord>>,
        now: u64,
    ) -> Restored {
        let journal = self.journal.take();
        let mut r = Restored::default();
        for record in records {
            match self.put(record, None, now) {
                Ok(Stored::New | Stored::Replaced { .. }) => r.restored += 1,
                // The same record twice: held once.
                Ok(Stored::Unchanged) => {}
                Err(RecordRefused::Expired { .. } | RecordRefused::ExpiryTooFar { .. }) => {
                    r.expired += 1;
                }
                Err(_) => r.refused += 1,
            }
        }
        self.journal = journal;
        r
    }

    /// A store with the default bounds.
    pub fn default_config() -> Self {
        Self::new(StoreConfig::default())
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Applies the store rules to `record` at unix time `now`, from no known source.
    pub fn put(
        &mut self,
        record: Signed<MutableRecord>,
        expected_seq: Option<u64>,
        now: u64,
    ) -> Result<Stored, RecordRefused> {
        self.put_from(record, expected_seq, now, &[])
    }

    /// Applies the store rules to `record` at unix time `now`, put by the peer at
    /// address `source` (its IP address's bytes, as write tokens are bound to): a new
    /// record counts against the source's group ([`StoreConfig::max_per_source`]).
    pub fn put_from(
        &mut self,
        record: Signed<MutableRecord>,
        expected_seq: Option<u64>,
        now: u64,
        source: &[u8],
    ) -> Result<Stored, RecordRefused> {
        if self.check(&record, expected_seq, now)? {
            return Ok(Stored::Unchanged);
        }
        let key = record.key();
        let owner = record.public_key;
        let group = source_group(source);
        match self.records.get(&key) {
            Some(old) => {
                let previous_seq = old.seq;
                self.log(|| StoreChange::Put(record.clone()));
                self.records.insert(key, record);
                Ok(Stored::Replaced { previous_seq })
            }
            None => {
                if self.per_owner.get(&owner).copied().unwrap_or(0) >= self.cfg.max_per_owner {
                    return Err(RecordRefused::OwnerFull {
                        limit: self.cfg.max_per_owner,
                    });
                }
                if !group.is_empty()
                    && self.per_source.get(&group).copied().unwrap_or(0) >= self.cfg.max_per_source
                {
                    return Err(RecordRefused::SourceFull {
                        limit: self.cfg.max_per_source,
                    });
                }
                if self.records.len() >= self.cfg.max_records {
                    self.expire(now);
                    if self.records.len() >= self.cfg.max_records && !self.evict_one(&owner) {
                        return Err(RecordRefused::StoreFull {
                            limit: self.cfg.max_records,
                        });
                    }
                }
                *self.per_owner.entry(owner).or_insert(0) += 1;
                if !group.is_empty() {
                    *self.per_source.entry(group.clone()).or_insert(0) += 1;
                    self.source_of.insert(key, group);
                }
                self.log(|| StoreChange::Put(record.clone()));
                self.records.insert(key, record);
                Ok(Stored::New)
            }
        }
    }

    /// The record rules that do not depend on room in the store, without changing it:
    /// `Ok(true)` if this very record is held already (a retried put is acknowledged
    /// whatever its compare-and-swap expected), `Ok(false)` if it would replace or add.
    pub fn check(
        &self,
        record: &Signed<MutableRecord>,
        expected_seq: Option<u64>,
        now: u64,
    ) -> Result<bool, RecordRefused> {
        if record.value.len() > MAX_RECORD_VALUE {
            return Err(RecordRefused::TooLarge {
                actual: record.value.len(),
                limit: MAX_RECORD_VALUE,
            });
        }
        if record.expires_at_ms <= now {
            return Err(RecordRefused::Expired {
                expires_at_ms: record.expires_at_ms,
            });
        }
        if record.expires_at_ms - now > self.cfg.max_ttl_ms {
            return Err(RecordRefused::ExpiryTooFar {
                ahead_ms: record.expires_at_ms - now,
                limit_ms: self.cfg.max_ttl_ms,
            });
        }
        let key = record.key();
        let held_record = self.records.get(&key).filter(|r| r.expires_at_ms > now);
        let held = held_record.map(|r| (r.seq, r == record));
        if let Some((_, true)) = held {
            return Ok(true);
        }
        // Whoever holds the owner's key may keep a record alive (another writer of a
        // catalog renewing a head its writer no longer does) without changing it.
        let renewal = held_record.is_some_and(|r| {
            r.seq == record.seq && r.value == record.value && record.expires_at_ms > r.expires_at_ms
        });
        if let Some(expected) = expected_seq
            && let Some((held_seq, _)) = held
            && held_seq != expected
        {
            return Err(RecordRefused::CasMismatch {
                expected,
                held: Some(held_seq),
            });
        }
        match held {
            Some((held_seq, _)) if record.seq <= held_seq && !renewal => {
                Err(RecordRefused::NotNewer {
                    held: held_seq,
                    offered: record.seq,
                })
            }
            _ => Ok(false),
        }
    }

    /// The live record under `key`.
    pub fn get(&self, key: &RecordKey, now: u64) -> Option<&Signed<MutableRecord>> {
        self.records.get(key).filter(|r| r.expires_at_ms > now)
    }

    /// Makes room in a full store for a record of `newcomer`: drops the record of the
    /// publisher holding the most records here, of its records the one that expires
    /// soonest (issue 27: a full store evicts rather than refuses, so records cannot
    /// be locked out by whoever filled it first, and the publishers holding most pay
    /// first). A newcomer holding as many as the most never evicts another publisher's
    /// record for its own: then the store refuses. Returns whether a record was dropped.
    fn evict_one(&mut self, newcomer: &PublicKey) -> bool {
        let Some(most) = self.per_owner.values().copied().max() else {
            return false;
        };
        if self.per_owner.get(newcomer).copied().unwrap_or(0) + 1 > most {
            return false;
        }
        let victim = self
            .records
            .iter()
            .filter(|(_, r)| self.per_owner.get(&r.public_key).copied() == Some(most))
            .min_by_key(|(k, r)| (r.expires_at_ms, **k))
            .map(|(k, r)| (*k, r.public_key));
        let Some((key, publisher)) = victim else {
            return false;
        };
        self.records.remove(&key);
        if let Some(n) = self.per_owner.get_mut(&publisher) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_owner.remove(&publisher);
            }
        }
        release_source(&mut self.source_of, &mut self.per_source, &key);
        self.log(|| StoreChange::Removed(key));
        true
    }

    /// Drops expired records; returns how many.
    pub fn expire(&mut self, now: u64) -> usize {
        let before = self.records.len();
        let per_owner = &mut self.per_owner;
        let (source_of, per_source) = (&mut self.source_of, &mut self.per_source);
        let journal = &mut self.journal;
        self.records.retain(|key, r| {
            let keep = r.expires_at_ms > now;
            if !keep {
                if let Some(n) = per_owner.get_mut(&r.public_key) {
                    *n = n.saturating_sub(1);
                }
                release_source(source_of, per_source, key);
                if let Some(j) = journal.as_mut() {
                    j.push(StoreChange::Removed(*key));
                }
            }
            keep
        });
        per_owner.retain(|_, n| *n > 0);
        before - self.records.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Signed<MutableRecord>> {
        self.records.values()
    }
}

/// The group a record's source counts in: the /24 of an IPv4 address, the /48 of an
/// IPv6 one (4 or 16 bytes, as write tokens are bound to); none for anything else.
fn source_group(source: &[u8]) -> Vec<u8> {
    match source.len() {
        4 => source[..3].to_vec(),
        16 => source[..6].to_vec(),
        _ => Vec::new(),
    }
}

fn release_source(
    source_of: &mut HashMap<RecordKey, Vec<u8>>,
    per_source: &mut HashMap<Vec<u8>, usize>,
    key: &RecordKey,
) {
    if let Some(group) = source_of.remove(key)
        && let Some(n) = per_source.get_mut(&group)
    {
        *n = n.saturating_sub(1);
        if *n == 0 {
            per_source.remove(&group);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::Identity;

    const NOW: u64 = 1_700_000_000_000;

    fn rec(id: &Identity, salt: &[u8], seq: u64, value: &[u8]) -> Signed<MutableRecord> {
        Signed::sign(
            MutableRecord {
                public_key: *id.public_key(),
                salt: salt.to_vec(),
                seq,
                value: value.to_vec(),
                expires_at_ms: NOW + 3_600_000,
                work: 0,
            },
            id,
        )
        .unwrap()
    }

    #[test]
    fn the_same_seq_and_value_signed_to_expire_later_is_a_renewal() {
        let id = Identity::random();
        let mut s = RecordStore::default_config();
        let first = rec(&id, b"a", 5, b"x");
        assert_eq!(s.put(first.clone(), None, NOW), Ok(Stored::New));
        let again = |value: &[u8], seq: u64, expires_at_ms: u64| {
            let mut r = first.body().clone();
            r.value = value.to_vec();
            r.seq = seq;
            r.expires_at_ms = expires_at_ms;
            Signed::sign(r, &id).unwrap()
        };
        let later = first.expires_at_ms + 1_000;
        assert_eq!(
            s.put(again(b"x", 5, later), None, NOW),
            Ok(Stored::Replaced { previous_seq: 5 })
        );
        let key = first.key();
        assert_eq!(s.get(&key, NOW).unwrap().expires_at_ms, later);
        // Not another value, nor an earlier expiry, under the same seq.
        assert!(matches!(
            s.put(again(b"y", 5, later + 1), None, NOW),
            Err(RecordRefused::NotNewer { .. })
        ));
        assert!(matches!(
            s.put(again(b"x", 5, later - 1), None, NOW),
            Err(RecordRefused::NotNewer { .. })
        ));
        // Nor past a compare-and-swap that does not match.
        assert!(matches!(
            s.put(again(b"x", 5, later + 1), Some(4), NOW),
            Err(RecordRefused::CasMismatch { .. })
        ));
    }

    #[test]
    fn newer_seq_only() {
        let id = Identity::random();
        let mut s = RecordStore::default_config();
        assert_eq!(s.put(rec(&id, b"a", 5, b"x"), None, NOW), Ok(Stored::New));
        assert_eq!(
            s.put(rec(&id, b"a", 4, b"old"), None, NOW),
            Err(RecordRefused::NotNewer {
                held: 5,
                offered: 4
            })
        );
        assert_eq!(
            s.put(rec(&id, b"a", 5, b"other"), None, NOW),
            Err(RecordRefused::NotNewer {
                held: 5,
                offered: 5
            })
        );
        assert_eq!(
            s.put(rec(&id, b"a", 5, b"x"), None, NOW),
            Ok(Stored::Unchanged)
        );
        assert_eq!(
            s.put(rec(&id, b"a", 6, b"y"), None, NOW),
            Ok(Stored::Replaced { previous_seq: 5 })
        );
        let key = MutableRecord::key_for(id.public_key(), b"a");
        assert_eq!(s.get(&key, NOW).unwrap().value, b"y");
        // Another salt is another record.
        assert_eq!(s.put(rec(&id, b"b", 1, b"z"), None, NOW), Ok(Stored::New));
    }

    #[test]
    fn compare_and_swap() {
        let id = Identity::random();
        let mut s = RecordStore::default_config();
        s.put(rec(&id, b"a", 1, b"x"), None, NOW).unwrap();
        assert_eq!(
            s.put(rec(&id, b"a", 3, b"y"), Some(2), NOW),
            Err(RecordRefused::CasMismatch {
                expected: 2,
                held: Some(1)
            })
        );
        assert_eq!(
            s.put(rec(&id, b"a", 3, b"y"), Some(1), NOW),
            Ok(Stored::Replaced { previous_seq: 1 })
        );
    }

    #[test]
    fn oversize_expired_and_far_expiry_refused() {
        let id = Identity::random();
        let mut s = RecordStore::default_config();
        let big = rec(&id, b"a", 1, &vec![0u8; MAX_RECORD_VALUE + 1]);
        assert!(matches!(
            s.put(big, None, NOW),
            Err(RecordRefused::TooLarge { .. })
        ));
        let r = rec(&id, b"a", 1, b"x");
        assert!(matches!(
            s.put(r.clone(), None, NOW + 3_600_000),
            Err(RecordRefused::Expired { .. })
        ));
        assert!(matches!(
            s.put(r, None, NOW - 367 * 24 * 3_600_000),
            Err(RecordRefused::ExpiryTooFar { .. })
        ));
        assert!(s.is_empty());
    }

    /// Issue 27: a full store evicts the records of the publishers holding most, the
    /// soonest to expire first, instead of refusing every newcomer.
    #[test]
    fn a_full_store_evicts_from_the_publisher_holding_most_soonest_expiry_first() {
        let mut s = RecordStore::new(StoreConfig {
            max_records: 4,
            max_per_owner: 3,
            max_per_source: usize::MAX,
            max_ttl_ms: u64::MAX,
        });
        let flooder = Identity::random();
        let honest = Identity::random();
        let at = |id: &Identity, salt: &[u8], ttl: u64| {
            Signed::sign(
                MutableRecord {
                    public_key: *id.public_key(),
                    salt: salt.to_vec(),
                    seq: 1,
                    value: Vec::new(),
                    expires_at_ms: NOW + ttl,
                    work: 0,
                },
                id,
            )
            .unwrap()
        };
        s.set_journal(true);
        s.put(at(&flooder, b"a", 30_000), None, NOW).unwrap();
        s.put(at(&flooder, b"b", 10_000), None, NOW).unwrap();
        s.put(at(&flooder, b"c", 20_000), None, NOW).unwrap();
        s.put(at(&honest, b"head", 5_000), None, NOW).unwrap();
        s.take_changes();
        let newcomer = Identity::random();
        assert_eq!(
            s.put(at(&newcomer, b"x", 1_000), None, NOW),
            Ok(Stored::New)
        );
        // The flooder's soonest-expiring record made room; the honest one is kept.
        let b = MutableRecord::key_for(flooder.public_key(), b"b");
        assert!(s.get(&b, NOW).is_none());
        assert!(
            s.get(&MutableRecord::key_for(honest.public_key(), b"head"), NOW)
                .is_some()
        );
        assert_eq!(s.len(), 4);
        // The host that keeps the store on disk hears of the eviction.
        assert!(s.take_changes().contains(&StoreChange::Removed(b)));
    }

    /// Issue 27: publisher keys are free, addresses are not: one /24 puts at most
    /// `max_per_source` new records, whatever keys it signs them with; another network
    /// is not held back, and the count frees up as records leave.
    #[test]
    fn one_network_puts_at_most_its_share_of_new_records() {
        let mut s = RecordStore::new(StoreConfig {
            max_records: 100,
            max_per_owner: 10,
            max_per_source: 3,
            max_ttl_ms: u64::MAX,
        });
        let flood = [10, 0, 0, 7];
        for i in 0..3u8 {
            s.put_from(rec(&Identity::random(), &[i], 1, b""), None, NOW, &flood)
                .unwrap();
        }
        // Another address of the same /24, another fresh key: refused.
        assert_eq!(
            s.put_from(
                rec(&Identity::random(), b"x", 1, b""),
                None,
                NOW,
                &[10, 0, 0, 99]
            ),
            Err(RecordRefused::SourceFull { limit: 3 })
        );
        // Another network is served, and so is an update of a record already held.
        let honest = Identity::random();
        s.put_from(rec(&honest, b"head", 1, b""), None, NOW, &[10, 0, 1, 7])
            .unwrap();
        s.put_from(rec(&honest, b"head", 2, b""), None, NOW, &flood)
            .unwrap();
        // The records leave; the share is free again.
        assert_eq!(s.expire(NOW + 3_600_000), 4);
        s.put_from(rec(&Identity::random(), b"y", 1, b""), None, NOW, &flood)
            .unwrap();
    }

    #[test]
    fn bounded_per_owner_and_in_total_and_expiry_frees_space() {
        let id = Identity::random();
        let mut s = RecordStore::new(StoreConfig {
            max_records: 3,
            max_per_owner: 2,
            max_per_source: usize::MAX,
            max_ttl_ms: u64::MAX,
        });
        s.put(rec(&id, b"1", 1, b""), None, NOW).unwrap();
        s.put(rec(&id, b"2", 1, b""), None, NOW).unwrap();
        assert_eq!(
            s.put(rec(&id, b"3", 1, b""), None, NOW),
            Err(RecordRefused::OwnerFull { limit: 2 })
        );
        let other = Identity::random();
        s.put(rec(&other, b"1", 1, b""), None, NOW).unwrap();
        // Full: a third publisher's record evicts one of the publisher holding most.
        let third = Identity::random();
        assert_eq!(s.put(rec(&third, b"1", 1, b""), None, NOW), Ok(Stored::New));
        assert_eq!(s.len(), 3);
        let held = |s: &RecordStore, who: &Identity| {
            s.iter()
                .filter(|r| r.public_key == *who.public_key())
                .count()
        };
        assert_eq!(
            (held(&s, &id), held(&s, &other), held(&s, &third)),
            (1, 1, 1)
        );
        // Everyone holds as many as the most: a newcomer holding one already is refused
        // rather than take another's place.
        assert_eq!(
            s.put(rec(&third, b"2", 1, b""), None, NOW),
            Err(RecordRefused::StoreFull { limit: 3 })
        );
        assert_eq!(s.expire(NOW + 3_600_000), 3);
        assert!(
            s.get(
                &MutableRecord::key_for(id.public_key(), b"1"),
                NOW + 3_600_000
            )
            .is_none()
        );
        s.put(rec(&id, b"3", 1, b""), None, NOW).unwrap();
    }
}

#[cfg(test)]
mod properties {
    //! Properties of the store under any sequence of puts and expiries.
    use super::*;
    use proptest::prelude::*;
    use shoal_proto::Identity;
    use std::collections::HashMap;

    const NOW: u64 = 1_700_000_000_000;

    #[derive(Debug, Clone)]
    struct Put {
        owner: usize,
        salt: u8,
        seq: u64,
        value_len: usize,
        ttl: u64,
        expected: Option<u64>,
        dt: u64,
    }

    fn put() -> impl Strategy<Value = Put> {
        (
            0usize..3,
            0u8..4,
            0u64..8,
            prop_oneof![4 => 0usize..64, 1 => Just(MAX_RECORD_VALUE + 1)],
            prop_oneof![4 => 1u64..10_000, 1 => Just(0u64), 1 => Just(200_000u64)],
            proptest::option::weighted(0.3, 0u64..8),
            0u64..3_000,
        )
            .prop_map(|(owner, salt, seq, value_len, ttl, expected, dt)| Put {
                owner,
                salt,
                seq,
                value_len,
                ttl,
                expected,
                dt,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn seq_is_monotonic_cas_is_honoured_and_bounds_hold(
            puts in proptest::collection::vec(put(), 1..120),
        ) {
            let owners: Vec<Identity> = (0..3).map(|i| Identity::from_seed([i as u8 + 1; 32])).collect();
            let cfg = StoreConfig { max_records: 6, max_per_owner: 3, max_per_source: usize::MAX, max_ttl_ms: 100_000 };
            let mut s = RecordStore::new(cfg.clone());
            let mut now = NOW;
            for p in puts {
                now += p.dt;
                let owner = &owners[p.owner];
                let salt = [p.salt];
                let key = MutableRecord::key_for(owner.public_key(), &salt);
                let held_record = s.get(&key, now).cloned();
                let held = held_record.as_ref().map(|r| r.seq);
                let record = Signed::sign(
                    MutableRecord {
                        public_key: *owner.public_key(),
                        salt: salt.to_vec(),
                        seq: p.seq,
                        value: vec![7; p.value_len],
                        expires_at_ms: now + p.ttl,
                        work: 0,
                    },
                    owner,
                )
                .unwrap();
                let same = s.get(&key, now).is_some_and(|r| *r == record);
                let outcome = s.put(record, p.expected, now);
                let after = s.get(&key, now).map(|r| r.seq);
                match &outcome {
                    Ok(Stored::Unchanged) => {
                        prop_assert!(same);
                        prop_assert_eq!(after, held);
                    }
                    Ok(_) => {
                        let renewal = held_record.as_ref().is_some_and(|r| {
                            r.seq == p.seq && r.value.len() == p.value_len && now + p.ttl > r.expires_at_ms
                        });
                        prop_assert!(held.is_none_or(|h| p.seq > h) || renewal, "seq went from {held:?} to {}", p.seq);
                        if let (Some(e), Some(h)) = (p.expected, held) {
                            prop_assert_eq!(e, h, "CAS ignored");
                        }
                        prop_assert!(p.value_len <= MAX_RECORD_VALUE);
                        prop_assert!(p.ttl > 0 && p.ttl <= cfg.max_ttl_ms);
                        prop_assert_eq!(after, Some(p.seq));
                    }
                    Err(_) => prop_assert_eq!(after, held, "a refused put changed the store"),
                }
                if let (Some(e), Some(h)) = (p.expected, held)
                    && e != h
                    && !same
                {
                    prop_assert!(outcome.is_err(), "CAS mismatch accepted");
                }
                // Bounds hold at every step.
                prop_assert!(s.len() <= cfg.max_records);
                let mut per_owner: HashMap<PublicKey, usize> = HashMap::new();
                for r in s.iter() {
                    *per_owner.entry(r.public_key).or_default() += 1;
                }
                prop_assert!(per_owner.values().all(|n| *n <= cfg.max_per_owner), "{per_owner:?}");
                if p.dt > 2_000 {
                    s.expire(now);
                    prop_assert!(s.iter().all(|r| r.expires_at_ms > now));
                }
            }
        }
    }
}
