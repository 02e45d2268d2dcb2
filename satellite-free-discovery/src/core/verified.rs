//! A bounded memo of node records whose signature and proof of work have already been
//! checked, keyed by a hash of the record's exact wire bytes.
//!
//! Every FindNode answer carries up to k = 20 node records, and in a settled network
//! almost all of them are records this node has seen many times. An ed25519 verification
//! costs ~45 µs, so checking each copy again made signature checks the largest single CPU
//! cost of a storage node under DHT traffic (20% of all CPU in the end-to-end bench).
//! A hit here returns the record checked earlier; it is never a way to skip the check
//! for bytes that differ in any way, since the key covers every byte (body and
//! signature).
//!
//! Two generations keep it bounded without bookkeeping per entry: new entries go into
//! `current`; when it is full it becomes `previous` (the old `previous` is dropped), and a
//! hit in `previous` moves the entry back into `current`. At most `2 × capacity` entries
//! are held, and an entry used at least once per `capacity` insertions is never evicted.

use std::collections::HashMap;

/// Key of a cached record: a hash of its exact wire encoding.
pub type RecordDigest = [u8; 32];

/// See the module documentation.
#[derive(Debug)]
pub struct VerifiedCache<V> {
    capacity: usize,
    current: HashMap<RecordDigest, V>,
    previous: HashMap<RecordDigest, V>,
}

impl<V: Clone> VerifiedCache<V> {
    /// A cache of at most `2 × capacity` entries (`capacity` of at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            current: HashMap::new(),
            previous: HashMap::new(),
        }
    }

    /// The entry checked earlier under `digest`, if it is still held.
    pub fn get(&mut self, digest: &RecordDigest) -> Option<V> {
        if let Some(v) = self.current.get(digest) {
            return Some(v.clone());
        }
        let v = self.previous.remove(digest)?;
        self.insert(*digest, v.clone());
        Some(v)
    }

    /// Remembers a checked entry.
    pub fn insert(&mut self, digest: RecordDigest, value: V) {
        if self.current.len() >= self.capacity && !self.current.contains_key(&digest) {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(digest, value);
    }

    /// Entries held (both generations).
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u32) -> RecordDigest {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&n.to_le_bytes());
        k
    }

    #[test]
    fn hit_and_miss() {
        let mut c = VerifiedCache::new(4);
        assert!(c.is_empty());
        c.insert(d(1), "one");
        assert_eq!(c.get(&d(1)), Some("one"));
        assert_eq!(c.get(&d(2)), None);
    }

    #[test]
    fn never_holds_more_than_twice_the_capacity() {
        let mut c = VerifiedCache::new(8);
        for n in 0..1000 {
            c.insert(d(n), n);
            assert!(c.len() <= 16, "{} entries after {n}", c.len());
        }
        // The newest survive, the oldest are gone.
        assert_eq!(c.get(&d(999)), Some(999));
        assert_eq!(c.get(&d(0)), None);
    }

    #[test]
    fn entries_in_use_survive_rotation() {
        let mut c = VerifiedCache::new(4);
        c.insert(d(100), 100);
        for n in 0..40 {
            c.insert(d(n), n);
            // Used once per insertion: promoted back whenever it falls to `previous`.
            assert_eq!(c.get(&d(100)), Some(100), "lost after {n}");
        }
    }

    #[test]
    fn reinserting_a_held_key_does_not_rotate() {
        let mut c = VerifiedCache::new(2);
        c.insert(d(1), 1);
        c.insert(d(2), 2);
        c.insert(d(2), 2);
        c.insert(d(1), 1);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(&d(1)), Some(1));
        assert_eq!(c.get(&d(2)), Some(2));
    }
}
