//! Piece tags: what a catalog piece is, sealed so that only its owner can read it.
//!
//! Every piece of a catalog blob (a delta or a snapshot) carries a tag in its signed
//! upload trailer; the node stores it with the piece and lists it back to the owner, and
//! to nobody else, on a signed request. If every DHT record of an owner is lost, the
//! owner's uplink lists its pieces on the nodes, opens the tags and puts the catalog's
//! blobs back together from them (`uplink catalog rebuild`, [`crate::rebuild`]).
//!
//! A tag says everything a download needs besides where the piece is (the node that
//! listed it, and the piece id): which writer's which blob (kind, seq, object id and
//! size), which segment of it (index, plaintext size, codec, scheme, shard size) and
//! which piece (index and hash). The piece hash makes a listed piece as verifiable as
//! one named by the catalog: a node cannot substitute other bytes.
//!
//! **Layout.** 109 bytes, fixed width, big-endian:
//! `format (1) | writer (16) | kind (1) | seq (8) | object id (16) | blob size (8) |
//! segment (4) | plain size (8) | codec (1) | k, repair, success, total (2 each) |
//! shard size (4) | piece index (2) | piece hash (32)`.
//! Sealed with AES-256-GCM under a key derived from the catalog key **and the piece
//! id**, with a zero nonce: 125 bytes, within the protocol's 128 (`MAX_PIECE_TAG`).
//! A key per piece is what makes the fixed nonce safe: a piece id is random per segment
//! and node (`PieceId::derive` from a random segment root), so no key ever seals two
//! different tags (an upload retried under the same id carries the very same tag, which
//! seals to the very same bytes). It also binds the tag to its piece: a tag moved to
//! another piece id does not open. A random nonce would cost 12 more bytes, over 128.
//! The sealed piece and segment sizes, the sealed size and the piece size are not in
//! the tag: they follow from the fields above ([`crate::crypto::sealed_len`],
//! [`crate::segment::Layout`]), and the piece hash covers the piece's size and block
//! size, so a node that lies about them fails the download's checks.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use shoal_proto::PieceId;
use zeroize::Zeroizing;

use super::model::WriterId;
use crate::codec::{CodecKind, Scheme};
use crate::crypto::ObjectId;

const TAG_KEY_CONTEXT: &str = "shoal v1 catalog piece tag key";
/// First byte of every tag's plaintext.
const FORMAT: u8 = 1;
/// Plaintext bytes of a tag.
pub const TAG_PLAIN_LEN: usize = 109;
/// Sealed bytes of a tag: the plaintext and AES-GCM's 16-byte authentication tag.
pub const TAG_LEN: usize = TAG_PLAIN_LEN + 16;
const _: () = assert!(TAG_LEN <= shoal_proto::limits::MAX_PIECE_TAG);

/// Which kind of catalog blob a piece belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BlobKind {
    Delta,
    /// A snapshot's manifest.
    Snapshot,
    /// A chunk of a snapshot's tree (found through the manifest, not by its tag).
    Chunk,
}

impl BlobKind {
    fn byte(self) -> u8 {
        match self {
            Self::Delta => 1,
            Self::Snapshot => 2,
            Self::Chunk => 3,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Delta),
            2 => Some(Self::Snapshot),
            3 => Some(Self::Chunk),
            _ => None,
        }
    }
}

impl std::fmt::Display for BlobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Delta => "delta",
            Self::Snapshot => "snapshot",
            Self::Chunk => "snapshot chunk",
        })
    }
}

/// Which blob a catalog upload is (the part of a tag common to all its pieces).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlobTag {
    pub writer: WriterId,
    pub kind: BlobKind,
    /// A delta's sequence number; for a snapshot, that of the delta published with it.
    pub seq: u64,
    pub object_id: ObjectId,
    /// Plaintext bytes of the whole blob.
    pub blob_size: u64,
}

/// One segment of a blob, as its tags describe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SegmentTag {
    pub blob: BlobTag,
    pub segment: u32,
    pub plain_size: u64,
    pub codec: CodecKind,
    pub scheme: Scheme,
    pub shard_size: u32,
}

/// What one catalog piece is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PieceTag {
    pub segment: SegmentTag,
    pub piece_index: u16,
    pub piece_hash: [u8; 32],
}

/// Why a tag did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    /// Not sealed with this access for this piece (another owner's scheme, a tag moved
    /// from another piece, or damaged).
    #[error("the tag was not sealed with this access for this piece")]
    Unauthentic,
    #[error("the tag is {0} bytes, not {TAG_LEN}")]
    Length(usize),
    #[error("the tag is format {0}, which this uplink cannot read")]
    Format(u8),
    #[error("the tag is malformed: {0}")]
    Malformed(&'static str),
}

fn codec_byte(c: CodecKind) -> u8 {
    match c {
        CodecKind::ReedSolomonErasure => 1,
        CodecKind::ReedSolomonSimd => 2,
    }
}

fn codec_from(b: u8) -> Option<CodecKind> {
    match b {
        1 => Some(CodecKind::ReedSolomonErasure),
        2 => Some(CodecKind::ReedSolomonSimd),
        _ => None,
    }
}

impl PieceTag {
    fn encode(&self) -> [u8; TAG_PLAIN_LEN] {
        let s = &self.segment;
        let b = &s.blob;
        let mut out = [0u8; TAG_PLAIN_LEN];
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            out[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        put(&[FORMAT]);
        put(&b.writer.0);
        put(&[b.kind.byte()]);
        put(&b.seq.to_be_bytes());
        put(&b.object_id.0);
        put(&b.blob_size.to_be_bytes());
        put(&s.segment.to_be_bytes());
        put(&s.plain_size.to_be_bytes());
        put(&[codec_byte(s.codec)]);
        for v in [
            s.scheme.k,
            s.scheme.repair,
            s.scheme.success,
            s.scheme.total,
        ] {
            put(&v.to_be_bytes());
        }
        put(&s.shard_size.to_be_bytes());
        put(&self.piece_index.to_be_bytes());
        put(&self.piece_hash);
        out
    }

    fn decode(plain: &[u8]) -> Result<Self, TagError> {
        let mut r = plain;
        let mut take = |n: usize| -> Result<&[u8], TagError> {
            if r.len() < n {
                return Err(TagError::Malformed("truncated"));
            }
            let (head, rest) = r.split_at(n);
            r = rest;
            Ok(head)
        };
        fn arr<const N: usize>(b: &[u8]) -> [u8; N] {
            let mut a = [0u8; N];
            a.copy_from_slice(b);
            a
        }
        let format = take(1)?[0];
        if format != FORMAT {
            return Err(TagError::Format(format));
        }
        let writer = WriterId(arr(take(16)?));
        let kind = BlobKind::from_byte(take(1)?[0]).ok_or(TagError::Malformed("blob kind"))?;
        let seq = u64::from_be_bytes(arr(take(8)?));
        let object_id = ObjectId(arr(take(16)?));
        let blob_size = u64::from_be_bytes(arr(take(8)?));
        let segment = u32::from_be_bytes(arr(take(4)?));
        let plain_size = u64::from_be_bytes(arr(take(8)?));
        let codec = codec_from(take(1)?[0]).ok_or(TagError::Malformed("codec"))?;
        let mut s = [0u16; 4];
        for v in &mut s {
            *v = u16::from_be_bytes(arr(take(2)?));
        }
        let scheme =
            Scheme::new(s[0], s[1], s[2], s[3]).map_err(|_| TagError::Malformed("scheme"))?;
        let shard_size = u32::from_be_bytes(arr(take(4)?));
        let piece_index = u16::from_be_bytes(arr(take(2)?));
        let piece_hash = arr(take(32)?);
        if piece_index >= scheme.total {
            return Err(TagError::Malformed("piece index beyond the scheme's total"));
        }
        Ok(Self {
            segment: SegmentTag {
                blob: BlobTag {
                    writer,
                    kind,
                    seq,
                    object_id,
                    blob_size,
                },
                segment,
                plain_size,
                codec,
                scheme,
                shard_size,
            },
            piece_index,
            piece_hash,
        })
    }
}

/// Seals and opens the tags of one access (its key derives from the catalog key).
#[derive(Clone)]
pub struct TagSealer {
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for TagSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TagSealer(..)")
    }
}

impl TagSealer {
    pub fn new(catalog_key: &[u8; 32]) -> Self {
        Self {
            key: Zeroizing::new(blake3::derive_key(TAG_KEY_CONTEXT, catalog_key)),
        }
    }

    fn cipher(&self, piece: &PieceId) -> Aes256Gcm {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(piece.as_bytes());
        let key = Zeroizing::new(*h.finalize().as_bytes());
        Aes256Gcm::new(&(*key).into())
    }

    /// The sealed tag of `piece`.
    pub fn seal(&self, piece: &PieceId, tag: &PieceTag) -> Vec<u8> {
        let plain = tag.encode();
        // Encryption of an in-memory buffer under a valid key cannot fail; an empty tag
        // would only make the piece invisible to a rebuild, never misread.
        self.cipher(piece)
            .encrypt(
                &Nonce::from([0u8; 12]),
                Payload {
                    msg: &plain,
                    aad: &[],
                },
            )
            .unwrap_or_default()
    }

    /// Opens the tag a node listed for `piece`.
    pub fn open(&self, piece: &PieceId, sealed: &[u8]) -> Result<PieceTag, TagError> {
        if sealed.len() != TAG_LEN {
            return Err(TagError::Length(sealed.len()));
        }
        let plain = self
            .cipher(piece)
            .decrypt(
                &Nonce::from([0u8; 12]),
                Payload {
                    msg: sealed,
                    aad: &[],
                },
            )
            .map_err(|_| TagError::Unauthentic)?;
        PieceTag::decode(&plain)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    pub(crate) fn tag(index: u16) -> PieceTag {
        PieceTag {
            segment: SegmentTag {
                blob: BlobTag {
                    writer: WriterId([4; 16]),
                    kind: BlobKind::Snapshot,
                    seq: u64::MAX,
                    object_id: ObjectId([5; 16]),
                    blob_size: u64::MAX - 1,
                },
                segment: u32::MAX,
                plain_size: 1 << 26,
                codec: CodecKind::ReedSolomonErasure,
                scheme: Scheme::new(8, 12, 16, 24).unwrap(),
                shard_size: 65_536,
            },
            piece_index: index,
            piece_hash: [9; 32],
        }
    }

    #[test]
    fn a_tag_round_trips_at_its_fixed_size_and_opens_only_for_its_piece_and_access() {
        let sealer = TagSealer::new(&[1; 32]);
        let (a, b) = (PieceId([1; 32]), PieceId([2; 32]));
        let t = tag(23);
        let sealed = sealer.seal(&a, &t);
        assert_eq!(sealed.len(), TAG_LEN);
        assert!(sealed.len() <= shoal_proto::limits::MAX_PIECE_TAG);
        assert_eq!(sealer.open(&a, &sealed).unwrap(), t);
        // Moved to another piece, opened with another access, or damaged: refused.
        assert_eq!(sealer.open(&b, &sealed), Err(TagError::Unauthentic));
        assert_eq!(
            TagSealer::new(&[2; 32]).open(&a, &sealed),
            Err(TagError::Unauthentic)
        );
        let mut flipped = sealed.clone();
        flipped[40] ^= 1;
        assert_eq!(sealer.open(&a, &flipped), Err(TagError::Unauthentic));
        assert_eq!(
            sealer.open(&a, &sealed[..TAG_LEN - 1]),
            Err(TagError::Length(TAG_LEN - 1))
        );
        assert_eq!(sealer.open(&a, &[]), Err(TagError::Length(0)));
        // The plaintext names nothing in the clear.
        assert!(!sealed.windows(16).any(|w| w == [4; 16] || w == [5; 16]));
        // Deterministic per piece: a retried upload carries the very same tag.
        assert_eq!(sealer.seal(&a, &t), sealed);
        assert_ne!(sealer.seal(&b, &t), sealed);
    }

    #[test]
    fn a_tag_with_unknown_fields_is_refused_even_when_authentic() {
        let t = tag(1);
        assert_eq!(PieceTag::decode(&t.encode()).unwrap(), t);
        let mut bad = t.encode();
        bad[0] = 2;
        assert_eq!(PieceTag::decode(&bad), Err(TagError::Format(2)));
        let mut bad = t.encode();
        bad[17] = 9;
        assert!(matches!(
            PieceTag::decode(&bad),
            Err(TagError::Malformed(_))
        ));
        // A piece index beyond the scheme's total.
        let mut beyond = tag(0);
        beyond.piece_index = 24;
        assert!(matches!(
            PieceTag::decode(&beyond.encode()),
            Err(TagError::Malformed(_))
        ));
        assert!(PieceTag::decode(&t.encode()[..100]).is_err());
    }
}
