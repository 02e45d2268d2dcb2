//! The catalog's network formats: per-writer logs of encrypted deltas, snapshots, and the
//! two kinds of DHT record that point at them. Plain code: encoding, sealing and the
//! checks a reader makes; [`crate::sync`] moves the bytes.
//!
//! - A **delta** is one publish of one writer: its sequence number, the changes, a
//!   reference to the writer's previous delta (so the log is a chain a reader walks
//!   back) and to the newest snapshot the writer knew of.
//! - A **snapshot** holds every entry and tombstone of a replica that had merged each
//!   writer's log up to the sequence numbers in its `covers` vector. A reader applies the
//!   newest snapshot it can find, then only the deltas after it. The snapshot blob is a
//!   small manifest (covers, entry count, root); the entries are in a tree of
//!   content-addressed chunks ([`super::tree`]), each chunk a blob of its own, so a new
//!   snapshot stores only the chunks that changed and refers to the others.
//! - Deltas and snapshots are **blobs**: postcard bytes stored like any object (sealed
//!   in 64 KiB AES-GCM blocks under a key derived from the catalog key and the blob's
//!   random id, erasure coded, pieces on nodes; inline object bytes travel inside).
//! - The **head record** of a writer (DHT mutable record, `seq` = the log's sequence
//!   number) names its newest delta, or carries it (see *Inline deltas*). It is written
//!   by compare-and-swap on the writer's previous head, so a replica that does not hold
//!   the writer's last head (a copied config dir) cannot overwrite it unseen.
//! - The **writers record** lists the writer ids, each only once its first head is
//!   stored: a listed writer whose head cannot be read is an error that names it, never
//!   a writer skipped as "not published yet". Its record seq is its version; every delta
//!   names the version its writer read, and the seqs of the other writers it had
//!   merged, so a reader served a stale writers record or a replayed older head detects
//!   it even without history of its own.
//!   Record values are sealed with AES-256-GCM under a key derived from the catalog key,
//!   with the record's salt and seq as associated data; the salts are derived from the
//!   catalog key, so a record key (`H(owner key, salt)`) reveals nothing beyond the
//!   owner's public key.
//!
//! **Inline deltas.** A publish whose changes are small travels inside the head record
//! itself: no blob, one DHT write. A head record is replaced by the next one, so an
//! inline delta must not be the only copy of changes a reader may still need. The rule:
//! the head record carries, merged, the changes of *every* delta since the writer's
//! newest blob delta (its *base*, named in the record), so the record alone is always
//! the whole log after the base ([`HeadDelta::Inline`]: a [`Delta`] whose `prev` is
//! the base and `prev_seq` its seq, with the other fields of the newest publish). Inline deltas accumulate there
//! while the sealed record stays within the writer's budget
//! (`UplinkConfig::inline_head`); the publish that would exceed it — or that takes a
//! snapshot — writes one blob delta holding the accumulated changes plus its own, whose
//! `prev` is the base and `prev_seq` the base's seq. The chain of blob deltas therefore
//! skips the sequence numbers that rode inline, and every skipped number's changes are
//! in the blob after the gap: a reader walks `prev` from blob to blob and misses
//! nothing. A reader at `seen`:
//! - at or after the base (`seen >= prev_seq`): applies the record's changes (some may
//!   be merged already; the merge is idempotent) and is done, without a blob;
//! - behind the base: fetches the base and walks back from it as before, then applies
//!   the record's changes on top.
//!
//! Changes merged in a head are one per key, the latest version (what the last-writer-
//! wins merge would keep anyway). Snapshots are named only by blob deltas, which is why
//! a publish that takes a snapshot always writes one; a reader behind the base meets the
//! snapshot in the base. What `catalog rebuild` (pieces only, no records) cannot recover
//! is the inline tail after the newest blob delta: those changes live only in the head
//! record's copies.

use std::collections::{BTreeMap, BTreeSet};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use serde::{Deserialize, Serialize};
use shoal_proto::limits::MAX_RECORD_VALUE;
use zeroize::Zeroizing;

use super::SegmentInfo;
use super::model::{Change, Hlc, WriterId};
use super::tree::{Child, Chunk, TreeError};
use crate::crypto::{ObjectId, ObjectKey};

/// Most writers one owner's catalog may have (the writers record must fit 4 KiB).
pub const MAX_WRITERS: usize = 200;
/// Largest catalog blob a reader fetches: bounds what a damaged reference can make it
/// allocate.
pub const MAX_BLOB: u64 = 2 << 30;
/// Pseudo bucket name of catalog blobs in messages and errors.
pub const CATALOG_BUCKET: &str = ".catalog";

const RECORD_KEY_CONTEXT: &str = "shoal v1 catalog record key";
const SALT_CONTEXT: &str = "shoal v1 catalog record salt";
const BLOB_KEY_CONTEXT: &str = "shoal v1 catalog blob key";
/// First byte of every record plaintext: the format version.
const FORMAT: u8 = 2;
/// First byte of every blob plaintext: the format version. 3: snapshots are manifests of
/// chunk trees and chunks are blobs of their own (versions 1 and 2 held whole-catalog
/// snapshots, which this uplink refuses as [`LogError::Format`]).
const BLOB_FORMAT: u8 = 3;

/// Why catalog data from the network was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    #[error("{what} failed authentication: it was tampered with or not made with this access")]
    Tampered { what: String },
    #[error("{what} is malformed: {reason}")]
    Malformed { what: String, reason: String },
    #[error("{what} is format version {0}, which this uplink cannot read", .found)]
    Format { what: String, found: u8 },
    #[error("{what} is {size} bytes, over the limit of {limit}")]
    TooLarge { what: String, size: u64, limit: u64 },
    #[error(transparent)]
    Tree(#[from] TreeError),
}

/// Where a blob is: the pieces of its segments, and its id (which, with the catalog key,
/// gives its content key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    pub object_id: ObjectId,
    /// Plaintext bytes.
    pub size: u64,
    pub segments: Vec<SegmentInfo>,
}

/// A snapshot and the log positions it covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRef {
    pub taken_by: WriterId,
    pub taken_at: Hlc,
    /// Per writer, the last sequence number merged into the snapshot.
    pub covers: BTreeMap<WriterId, u64>,
    /// Entries and tombstones in it.
    pub entries: u64,
    /// The stability point it was taken at: every writer had merged every version at or
    /// below it, and tombstones up to it were dropped (see [`Delta::frontier`]).
    #[serde(default)]
    pub floor: Hlc,
    pub blob: BlobRef,
}

impl SnapshotRef {
    /// Whether this snapshot holds something a replica at `applied` has not merged.
    pub fn is_ahead_of(&self, applied: &BTreeMap<WriterId, u64>) -> bool {
        self.covers
            .iter()
            .any(|(w, s)| *s > applied.get(w).copied().unwrap_or(0))
    }
}

/// One publish of one writer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    pub writer: WriterId,
    pub seq: u64,
    /// The writer's previous blob delta, delta [`Delta::prev_seq`] (`None`: there is
    /// none, the log starts after `prev_seq`).
    pub prev: Option<BlobRef>,
    /// The newest snapshot the writer knew of when publishing.
    pub snapshot: Option<SnapshotRef>,
    /// The seq of the writers record the writer read when publishing: a reader that
    /// holds an older writers record was served a stale one (it may lack writers).
    pub writers_seq: u64,
    /// Per other writer, the last seq the writer had merged when publishing: a reader
    /// offered an older head of one of them was served a rollback, even if it never
    /// merged that writer itself.
    pub merged: BTreeMap<WriterId, u64>,
    /// The writer's clock when it read the changes it publishes: every change it made
    /// at or below this reading is in this delta or an earlier one.
    pub clock: Hlc,
    /// The writer's merge frontier: it had merged every change of every writer it knew
    /// at or below this reading (the least of its own `clock` and the `clock` of each
    /// other writer's last delta it merged; zero while it knows a writer it merged
    /// nothing of). A tombstone at or below every known writer's frontier is causally
    /// stable: nobody can still hold, or send, what it deleted, so it is dropped.
    pub frontier: Hlc,
    pub changes: Vec<Change>,
    /// The seq of `prev` (`None`: `seq - 1`). Lower than `seq - 1` when the deltas
    /// between rode inline in head records: this delta then carries their changes too.
    pub prev_seq: Option<u64>,
}

impl Delta {
    /// The seq of the delta before this one in the chain of blobs (see `prev_seq`).
    pub fn prev_seq(&self) -> u64 {
        self.prev_seq.unwrap_or(self.seq.saturating_sub(1))
    }
}

/// A whole catalog state at the log positions of `covers`: the manifest of a tree of
/// chunks ([`super::tree`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub covers: BTreeMap<WriterId, u64>,
    /// As in its [`SnapshotRef`].
    pub floor: Hlc,
    /// Entries and tombstones in the tree.
    pub entries: u64,
    /// Level of the root chunk (0: the root is a leaf).
    pub root_level: u8,
    pub root: Child<BlobRef>,
}

/// What a blob holds.
// A blob is built, encoded and dropped (or decoded and taken apart) once: boxing its
// delta buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Blob {
    Delta(Delta),
    Snapshot(Snapshot),
    /// One chunk of a snapshot's tree.
    Chunk(Chunk<BlobRef>),
}

/// The value of a writer's head record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub writer: WriterId,
    pub seq: u64,
    pub delta: HeadDelta,
}

/// Where a head's delta `seq` is (see the module doc, *Inline deltas*).
// A head record holds one of these, moved once into its encoding.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HeadDelta {
    /// In a blob.
    Blob(BlobRef),
    /// In the record: the delta, carrying the changes of every delta after the writer's
    /// newest blob delta (its `prev`, delta `prev_seq`), merged.
    Inline(Delta),
}

impl Head {
    /// The blob of delta `seq`, if it is one.
    pub fn blob(&self) -> Option<&BlobRef> {
        match &self.delta {
            HeadDelta::Blob(b) => Some(b),
            HeadDelta::Inline(_) => None,
        }
    }
}

/// `older` then `newer` changes, one per key: the one of the highest version (a later
/// one on a tie), in key order. What applying both in turn would leave.
pub fn merge_changes(older: Vec<Change>, newer: Vec<Change>) -> Vec<Change> {
    let mut by_key: BTreeMap<super::model::EntryKey, Change> = BTreeMap::new();
    for c in older.into_iter().chain(newer) {
        match by_key.get(&c.key) {
            Some(held) if held.version > c.version => {}
            _ => {
                by_key.insert(c.key.clone(), c);
            }
        }
    }
    by_key.into_values().collect()
}

fn to_bytes<T: Serialize>(what: &str, v: &T) -> Result<Vec<u8>, LogError> {
    to_bytes_as(FORMAT, what, v)
}

fn to_bytes_as<T: Serialize>(format: u8, what: &str, v: &T) -> Result<Vec<u8>, LogError> {
    let mut out = vec![format];
    out.extend(postcard::to_allocvec(v).map_err(|e| LogError::Malformed {
        what: what.to_string(),
        reason: e.to_string(),
    })?);
    Ok(out)
}

fn from_bytes<T: for<'de> Deserialize<'de>>(what: &str, b: &[u8]) -> Result<T, LogError> {
    from_bytes_as(FORMAT, what, b)
}

fn from_bytes_as<T: for<'de> Deserialize<'de>>(
    format: u8,
    what: &str,
    b: &[u8],
) -> Result<T, LogError> {
    match b.split_first() {
        Some((&f, rest)) if f == format => {
            postcard::from_bytes(rest).map_err(|e| LogError::Malformed {
                what: what.to_string(),
                reason: e.to_string(),
            })
        }
        Some((&found, _)) => Err(LogError::Format {
            what: what.to_string(),
            found,
        }),
        None => Err(LogError::Malformed {
            what: what.to_string(),
            reason: "empty".into(),
        }),
    }
}

/// The plaintext bytes of a blob.
pub fn encode_blob(blob: &Blob) -> Result<Vec<u8>, LogError> {
    to_bytes_as(BLOB_FORMAT, "catalog blob", blob)
}

/// Reads a blob's plaintext (already authenticated by its AES-GCM blocks).
pub fn decode_blob(what: &str, bytes: &[u8]) -> Result<Blob, LogError> {
    from_bytes_as(BLOB_FORMAT, what, bytes)
}

/// The content key of blob `id`.
pub fn blob_key(catalog_key: &[u8; 32], id: &ObjectId) -> ObjectKey {
    let mut h = blake3::Hasher::new_derive_key(BLOB_KEY_CONTEXT);
    h.update(catalog_key);
    h.update(&id.0);
    ObjectKey::from_bytes(*h.finalize().as_bytes())
}

fn salt(catalog_key: &[u8; 32], label: &[u8]) -> Vec<u8> {
    let mut h = blake3::Hasher::new_derive_key(SALT_CONTEXT);
    h.update(catalog_key);
    h.update(label);
    h.finalize().as_bytes().to_vec()
}

/// Salt of the owner's writers record.
pub fn writers_salt(catalog_key: &[u8; 32]) -> Vec<u8> {
    salt(catalog_key, b"writers")
}

/// Salt of writer `w`'s head record.
pub fn head_salt(catalog_key: &[u8; 32], w: &WriterId) -> Vec<u8> {
    salt(catalog_key, &[&b"head "[..], &w.0].concat())
}

fn record_cipher(catalog_key: &[u8; 32]) -> Aes256Gcm {
    let key = Zeroizing::new(blake3::derive_key(RECORD_KEY_CONTEXT, catalog_key));
    Aes256Gcm::new(&(*key).into())
}

fn record_aad(salt: &[u8], seq: u64) -> Vec<u8> {
    [salt, &seq.to_be_bytes()].concat()
}

/// Seals a record value: `nonce (12) | ciphertext`, bound to the record's salt and seq.
fn seal_record(catalog_key: &[u8; 32], salt: &[u8], seq: u64, plain: &[u8]) -> Vec<u8> {
    let nonce: [u8; 12] = rand::random();
    let aad = record_aad(salt, seq);
    let sealed = record_cipher(catalog_key).encrypt(
        &Nonce::from(nonce),
        Payload {
            msg: plain,
            aad: &aad,
        },
    );
    // Encryption of an in-memory buffer under a valid key cannot fail; an empty value
    // would be refused by every reader as tampered, never misread.
    let sealed = sealed.unwrap_or_default();
    [&nonce[..], &sealed].concat()
}

fn open_record(
    what: &str,
    catalog_key: &[u8; 32],
    salt: &[u8],
    seq: u64,
    value: &[u8],
) -> Result<Vec<u8>, LogError> {
    let tampered = || LogError::Tampered {
        what: what.to_string(),
    };
    if value.len() < 12 {
        return Err(tampered());
    }
    let (nonce, sealed) = value.split_at(12);
    let nonce: [u8; 12] = nonce.try_into().map_err(|_| tampered())?;
    let aad = record_aad(salt, seq);
    record_cipher(catalog_key)
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: sealed,
                aad: &aad,
            },
        )
        .map_err(|_| tampered())
}

fn check_record_size(what: &str, v: Vec<u8>) -> Result<Vec<u8>, LogError> {
    if v.len() > MAX_RECORD_VALUE {
        return Err(LogError::TooLarge {
            what: what.to_string(),
            size: v.len() as u64,
            limit: MAX_RECORD_VALUE as u64,
        });
    }
    Ok(v)
}

/// The sealed value of a head record at `head.seq`.
pub fn seal_head(catalog_key: &[u8; 32], head: &Head) -> Result<Vec<u8>, LogError> {
    let what = format!("head record of writer {}", head.writer);
    let plain = to_bytes(&what, head)?;
    let salt = head_salt(catalog_key, &head.writer);
    check_record_size(&what, seal_record(catalog_key, &salt, head.seq, &plain))
}

/// Opens writer `w`'s head record value held at record seq `seq`; the head inside must
/// name the same writer and seq.
pub fn open_head(
    catalog_key: &[u8; 32],
    w: &WriterId,
    seq: u64,
    value: &[u8],
) -> Result<Head, LogError> {
    let what = format!("head record of writer {w}");
    let salt = head_salt(catalog_key, w);
    let head: Head = from_bytes(&what, &open_record(&what, catalog_key, &salt, seq, value)?)?;
    if head.writer != *w || head.seq != seq {
        return Err(LogError::Malformed {
            what,
            reason: format!("it names writer {} seq {}", head.writer, head.seq),
        });
    }
    if let HeadDelta::Inline(d) = &head.delta
        && (d.writer != *w
            || d.seq != seq
            || d.prev_seq
                .is_none_or(|p| p >= seq || d.prev.is_none() != (p == 0)))
    {
        return Err(LogError::Malformed {
            what,
            reason: format!(
                "its inline delta {} of writer {} follows delta {:?}",
                d.seq, d.writer, d.prev_seq
            ),
        });
    }
    Ok(head)
}

/// The sealed value of the writers record at `seq`.
pub fn seal_writers(
    catalog_key: &[u8; 32],
    seq: u64,
    writers: &BTreeSet<WriterId>,
) -> Result<Vec<u8>, LogError> {
    let what = "writers record";
    if writers.len() > MAX_WRITERS {
        return Err(LogError::TooLarge {
            what: what.into(),
            size: writers.len() as u64,
            limit: MAX_WRITERS as u64,
        });
    }
    let plain = to_bytes(what, writers)?;
    check_record_size(
        what,
        seal_record(catalog_key, &writers_salt(catalog_key), seq, &plain),
    )
}

/// Opens the writers record value held at record seq `seq`.
pub fn open_writers(
    catalog_key: &[u8; 32],
    seq: u64,
    value: &[u8],
) -> Result<BTreeSet<WriterId>, LogError> {
    let what = "writers record";
    let salt = writers_salt(catalog_key);
    from_bytes(what, &open_record(what, catalog_key, &salt, seq, value)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::model::{EntryKey, Value, Version};
    use crate::codec::{CodecKind, Scheme};
    use crate::store::PiecePlacement;

    const KEY: [u8; 32] = [7; 32];

    fn blob_ref(pieces: usize) -> BlobRef {
        BlobRef {
            object_id: ObjectId([1; 16]),
            size: 1234,
            segments: vec![SegmentInfo {
                index: 0,
                plain_size: 1234,
                sealed_size: 1250,
                codec: CodecKind::default(),
                scheme: Scheme::new(8, 12, 16, 24).unwrap(),
                shard_size: 4096,
                piece_size: 4096,
                pieces: (0..pieces)
                    .map(|i| PiecePlacement {
                        index: i as u16,
                        node_id: [i as u8; 32],
                        address: ([127, 0, i as u8, 1], 7777).into(),
                        piece_id: [2; 32],
                        piece_hash: [3; 32],
                    })
                    .collect(),
            }],
        }
    }

    #[test]
    fn a_head_of_24_pieces_fits_a_record_and_round_trips() {
        let w = WriterId([4; 16]);
        let head = Head {
            writer: w,
            seq: 9,
            delta: HeadDelta::Blob(blob_ref(24)),
        };
        let sealed = seal_head(&KEY, &head).unwrap();
        assert!(sealed.len() <= MAX_RECORD_VALUE, "{} bytes", sealed.len());
        assert_eq!(open_head(&KEY, &w, 9, &sealed).unwrap(), head);
        // The same value read as another seq, another writer or with another key fails.
        assert!(matches!(
            open_head(&KEY, &w, 8, &sealed),
            Err(LogError::Tampered { .. })
        ));
        assert!(open_head(&KEY, &WriterId([5; 16]), 9, &sealed).is_err());
        assert!(open_head(&[8; 32], &w, 9, &sealed).is_err());
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(
            open_head(&KEY, &w, 9, &flipped),
            Err(LogError::Tampered { .. })
        ));
        assert!(open_head(&KEY, &w, 9, &sealed[..5]).is_err());
        // Too many pieces do not fit a record: refused before publishing.
        let huge = Head {
            delta: HeadDelta::Blob(blob_ref(60)),
            ..head
        };
        assert!(matches!(
            seal_head(&KEY, &huge),
            Err(LogError::TooLarge { .. })
        ));
    }

    fn tomb(key: &str, hlc: u64) -> Change {
        Change {
            key: EntryKey::Bucket(key.into()),
            version: Version {
                hlc: crate::catalog::model::Hlc(hlc),
                writer: WriterId([1; 16]),
            },
            value: Value::Tombstone,
        }
    }

    fn inline(seq: u64, prev: Option<BlobRef>, prev_seq: Option<u64>) -> Delta {
        Delta {
            writer: WriterId([4; 16]),
            seq,
            prev,
            snapshot: None,
            writers_seq: 1,
            merged: Default::default(),
            clock: Default::default(),
            frontier: Default::default(),
            changes: vec![tomb("a", 1), tomb("b", 2)],
            prev_seq,
        }
    }

    #[test]
    fn an_inline_head_round_trips_and_names_a_base_before_it() {
        let w = WriterId([4; 16]);
        let head = Head {
            writer: w,
            seq: 7,
            delta: HeadDelta::Inline(inline(7, Some(blob_ref(4)), Some(5))),
        };
        let sealed = seal_head(&KEY, &head).unwrap();
        assert_eq!(open_head(&KEY, &w, 7, &sealed).unwrap(), head);
        assert_eq!(head.blob(), None);
        // A base at or after the head's own seq, a base seq without a blob (or the other
        // way round), no base seq, or a delta of another seq is refused.
        for d in [
            inline(7, Some(blob_ref(1)), Some(7)),
            inline(7, None, Some(3)),
            inline(7, Some(blob_ref(1)), Some(0)),
            inline(7, Some(blob_ref(1)), None),
            inline(6, Some(blob_ref(1)), Some(5)),
        ] {
            let bad = Head {
                delta: HeadDelta::Inline(d.clone()),
                ..head.clone()
            };
            let v = seal_head(&KEY, &bad).unwrap();
            assert!(
                matches!(open_head(&KEY, &w, 7, &v), Err(LogError::Malformed { .. })),
                "{d:?}"
            );
        }
        // A log that started inline has no base.
        let first = Head {
            seq: 2,
            delta: HeadDelta::Inline(inline(2, None, Some(0))),
            ..head
        };
        let v = seal_head(&KEY, &first).unwrap();
        assert_eq!(open_head(&KEY, &w, 2, &v).unwrap(), first);
    }

    #[test]
    fn merged_changes_keep_the_latest_version_per_key() {
        let merged = merge_changes(
            vec![tomb("b", 5), tomb("a", 1)],
            vec![tomb("a", 3), tomb("b", 4), tomb("c", 1)],
        );
        assert_eq!(merged, vec![tomb("a", 3), tomb("b", 5), tomb("c", 1)]);
        // A tie keeps the newer.
        let mut later = tomb("a", 3);
        later.value = Value::Bucket(crate::catalog::BucketInfo {
            name: "a".into(),
            created_ms: 1,
            version: Version::default(),
        });
        assert_eq!(
            merge_changes(vec![tomb("a", 3)], vec![later.clone()]),
            vec![later]
        );
    }

    #[test]
    fn writers_records_round_trip_and_are_bounded() {
        let set: BTreeSet<_> = (0..10u8).map(|i| WriterId([i; 16])).collect();
        let v = seal_writers(&KEY, 3, &set).unwrap();
        assert_eq!(open_writers(&KEY, 3, &v).unwrap(), set);
        assert!(open_writers(&KEY, 4, &v).is_err(), "seq is bound");
        let many: BTreeSet<_> = (0..=MAX_WRITERS as u16)
            .map(|i| {
                let mut id = [0u8; 16];
                id[..2].copy_from_slice(&i.to_be_bytes());
                WriterId(id)
            })
            .collect();
        assert!(seal_writers(&KEY, 1, &many).is_err());
    }

    #[test]
    fn salts_hide_the_writer_and_differ_per_access() {
        let w = WriterId([4; 16]);
        let s = head_salt(&KEY, &w);
        assert!(!s.windows(16).any(|x| x == w.0));
        assert_ne!(s, head_salt(&[8; 32], &w));
        assert_ne!(s, writers_salt(&KEY));
        assert!(s.len() <= shoal_proto::limits::MAX_SALT_LEN);
    }

    #[test]
    fn blobs_round_trip_and_refuse_unknown_formats() {
        let delta = Blob::Delta(Delta {
            writer: WriterId([1; 16]),
            seq: 2,
            prev: Some(blob_ref(3)),
            snapshot: None,
            writers_seq: 1,
            merged: Default::default(),
            clock: Default::default(),
            frontier: Default::default(),
            changes: vec![Change {
                key: EntryKey::Bucket("b".into()),
                version: Version::default(),
                value: Value::Tombstone,
            }],
            prev_seq: Some(1),
        });
        let bytes = encode_blob(&delta).unwrap();
        assert_eq!(decode_blob("x", &bytes).unwrap(), delta);
        // Versions 1 and 2 (whole-catalog snapshots) and unknown versions are refused.
        for old in [1, 2, BLOB_FORMAT + 1] {
            let mut v = bytes.clone();
            v[0] = old;
            assert!(matches!(
                decode_blob("x", &v),
                Err(LogError::Format { found, .. }) if found == old
            ));
        }
        let chunk = Blob::Chunk(Chunk::Node {
            level: 1,
            children: vec![Child {
                id: crate::catalog::tree::ChunkId([5; 32]),
                entries: 3,
                at: blob_ref(2),
            }],
        });
        let snap = Blob::Snapshot(Snapshot {
            covers: [(WriterId([1; 16]), 4)].into(),
            floor: Hlc(7),
            entries: 3,
            root_level: 1,
            root: Child {
                id: crate::catalog::tree::ChunkId([6; 32]),
                entries: 3,
                at: blob_ref(2),
            },
        });
        for b in [chunk, snap] {
            assert_eq!(decode_blob("x", &encode_blob(&b).unwrap()).unwrap(), b);
        }
        assert!(decode_blob("x", &bytes[..bytes.len() / 2]).is_err());
        assert!(decode_blob("x", &[]).is_err());
    }
}
