//! The catalog's data model as a CRDT: versions, entry keys and changes, and the one rule
//! that merges them.
//!
//! Every entry (a bucket, or an object under `bucket/key`) carries a [`Version`]: a hybrid
//! logical clock reading plus the id of the writer that made it. Deleting leaves a
//! tombstone with its own version; a rename is a delete of the old key and a put of the
//! new one under one version. Merging is a last-writer-wins map: for each key the change
//! with the greatest version is kept, so merges are deterministic, commutative,
//! associative and idempotent and two replicas that saw the same changes are equal,
//! whatever the order they saw them in. Versions compare by clock first, then by writer
//! id, so of two writes of one key the later one wins (as in S3) and a tie has one
//! winner everywhere.
//!
//! Nothing here does I/O; the SQLite catalog ([`super::Catalog`]) and the network log
//! ([`super::log`]) apply [`Change`]s through [`wins`].

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::entry::{BucketInfo, ObjectEntry};
pub use super::version::{Hlc, Version, WriterId};

/// Whether a change at `incoming` replaces what is held at `held`.
pub fn wins(incoming: Version, held: Option<Version>) -> bool {
    held.is_none_or(|h| incoming > h)
}

/// What a catalog key names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EntryKey {
    Bucket(String),
    Object { bucket: String, key: String },
}

impl fmt::Display for EntryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntryKey::Bucket(b) => write!(f, "bucket {b}"),
            EntryKey::Object { bucket, key } => write!(f, "{bucket}/{key}"),
        }
    }
}

/// The value of a catalog key after a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    Bucket(BucketInfo),
    Object(ObjectEntry),
    /// Deleted (or renamed away) at the change's version.
    Tombstone,
}

/// One versioned change of one key: what deltas carry and snapshots hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub key: EntryKey,
    pub version: Version,
    pub value: Value,
}

impl Change {
    /// Whether the value belongs under the key (a bucket value under a bucket key, an
    /// object under its own bucket and key). A change that fails this is damaged.
    pub fn is_consistent(&self) -> bool {
        match (&self.key, &self.value) {
            (_, Value::Tombstone) => true,
            (EntryKey::Bucket(b), Value::Bucket(info)) => *b == info.name,
            (EntryKey::Object { key, .. }, Value::Object(e)) => *key == e.key,
            _ => false,
        }
    }
}

/// A whole catalog state in memory: the reference the merge rule is checked against, and
/// what a snapshot is built from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State(pub BTreeMap<EntryKey, (Version, Value)>);

impl State {
    /// Applies one change by the merge rule; returns whether it took effect.
    pub fn apply(&mut self, c: &Change) -> bool {
        let held = self.0.get(&c.key).map(|(v, _)| *v);
        if !wins(c.version, held) {
            return false;
        }
        self.0.insert(c.key.clone(), (c.version, c.value.clone()));
        true
    }

    /// Merges another state into this one.
    pub fn merge(&mut self, other: &State) {
        for (k, (v, val)) in &other.0 {
            self.apply(&Change {
                key: k.clone(),
                version: *v,
                value: val.clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn writer(i: u8) -> WriterId {
        WriterId([i; 16])
    }

    fn change(key: u8, hlc: u64, w: u8, live: bool) -> Change {
        let name = format!("k{key}");
        Change {
            key: EntryKey::Bucket(name.clone()),
            version: Version {
                hlc: Hlc(hlc),
                writer: writer(w),
            },
            value: if live {
                Value::Bucket(BucketInfo {
                    name,
                    created_ms: hlc,
                    version: Version::default(),
                })
            } else {
                Value::Tombstone
            },
        }
    }

    fn state(changes: &[Change]) -> State {
        let mut s = State::default();
        for c in changes {
            s.apply(c);
        }
        s
    }

    fn changes() -> impl Strategy<Value = Vec<Change>> {
        prop::collection::vec(
            // One writer makes one change per version: the value follows from it.
            (0u8..6, 0u64..8, 0u8..3)
                .prop_map(|(k, h, w)| change(k, h, w, (u64::from(k) + h + u64::from(w)) % 3 != 0)),
            0..24,
        )
    }

    proptest! {
        #[test]
        fn merge_is_commutative_associative_and_idempotent(
            a in changes(), b in changes(), c in changes()
        ) {
            let (sa, sb, sc) = (state(&a), state(&b), state(&c));
            let mut ab = sa.clone();
            ab.merge(&sb);
            let mut ba = sb.clone();
            ba.merge(&sa);
            prop_assert_eq!(&ab, &ba);
            let mut ab_c = ab.clone();
            ab_c.merge(&sc);
            let mut bc = sb.clone();
            bc.merge(&sc);
            let mut a_bc = sa.clone();
            a_bc.merge(&bc);
            prop_assert_eq!(&ab_c, &a_bc);
            let mut aa = sa.clone();
            aa.merge(&sa);
            prop_assert_eq!(&aa, &sa);
        }

        #[test]
        fn any_order_of_the_same_changes_gives_the_same_state(mut a in changes()) {
            let forward = state(&a);
            a.reverse();
            prop_assert_eq!(state(&a), forward);
        }
    }

    #[test]
    fn the_later_version_wins_and_writer_ids_break_ties() {
        let mut s = State::default();
        assert!(s.apply(&change(1, 5, 1, true)));
        assert!(!s.apply(&change(1, 4, 9, false)), "older loses");
        assert!(
            s.apply(&change(1, 5, 2, false)),
            "same clock: larger writer id wins"
        );
        assert!(
            !s.apply(&change(1, 5, 2, false)),
            "the same change twice is a no-op"
        );
        assert_eq!(s.0[&EntryKey::Bucket("k1".into())].1, Value::Tombstone);
    }

    #[test]
    fn the_clock_never_goes_back() {
        let a = Hlc::tick(Hlc::default(), 1000);
        assert_eq!(a.millis(), 1000);
        let b = Hlc::tick(a, 999);
        assert!(
            b > a,
            "a wall clock that steps back still gives a later reading"
        );
        let c = Hlc::tick(Hlc(u64::MAX), 5);
        assert_eq!(c, Hlc(u64::MAX), "saturates instead of wrapping");
        assert!(Hlc::tick(b, 2000) > b);
    }

    #[test]
    fn a_change_must_fit_its_key() {
        let mut c = change(1, 1, 1, true);
        assert!(c.is_consistent());
        c.key = EntryKey::Bucket("other".into());
        assert!(!c.is_consistent());
    }
}
