//! Object encryption.
//!
//! Every object gets a fresh random 256-bit key and a random 128-bit [`ObjectId`]. The
//! object key is stored in the catalog wrapped (AES-256-GCM) under a key derived from the
//! owner's content-key root and the object's bucket and key, so the catalog alone reveals
//! nothing, and a different access cannot unwrap it.
//!
//! Content is cut into blocks of [`PLAIN_BLOCK`] bytes, each sealed with AES-256-GCM into
//! [`CIPHER_BLOCK`] bytes (65,520 + 16-byte tag = 64 KiB). Because the object key is used
//! for one object only, the nonce is simply the block's position (segment index, block
//! index in the segment), which never repeats under one key. The associated data binds
//! the object id, the position and a last-block flag, so blocks cannot be reordered,
//! moved to another object or dropped from the end without the tag failing. Every object
//! has at least one block (an empty object is one empty, flagged block).

use aes_gcm::aead::Tag;
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Plaintext bytes per encrypted block.
pub const PLAIN_BLOCK: usize = 64 * 1024 - TAG_LEN;
/// Ciphertext bytes per full encrypted block.
pub const CIPHER_BLOCK: usize = 64 * 1024;
/// AES-GCM tag length.
pub const TAG_LEN: usize = 16;

const WRAP_CONTEXT: &str = "shoal v1 uplink object wrapping key";
const WRAP_AAD: &[u8] = b"shoal v1 wrapped object key";
const BLOCK_AAD: &[u8] = b"shoal v1 object block";

/// Why decryption failed. Deliberately vague about which check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("the object key cannot be unwrapped: wrong access, or the catalog entry is damaged")]
    WrongKey,
    #[error(
        "block {block} of segment {segment} failed authentication (tampered, reordered, or truncated)"
    )]
    BadBlock { segment: u32, block: u64 },
    #[error("block {block} of segment {segment} is {len} bytes, shorter than its tag")]
    ShortBlock {
        segment: u32,
        block: u64,
        len: usize,
    },
}

/// Random identity of one stored object; bound into every block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ObjectId(#[serde(with = "crate::hexser")] pub [u8; 16]);

impl ObjectId {
    pub fn random() -> Self {
        Self(rand::random())
    }
}

/// A per-object content key. Zeroed on drop.
pub struct ObjectKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ObjectKey(..)")
    }
}

impl ObjectKey {
    pub fn random() -> Self {
        Self(Zeroizing::new(rand::random()))
    }

    /// A key derived elsewhere (catalog blobs derive theirs from the catalog key).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }
}

/// An object key sealed under the object's wrapping key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedKey {
    #[serde(with = "crate::hexser")]
    pub nonce: [u8; 12],
    #[serde(with = "crate::hexser::vec")]
    pub sealed: Vec<u8>,
}

fn wrapping_key(content_root: &[u8; 32], bucket: &str, key: &str) -> Zeroizing<[u8; 32]> {
    let mut h = blake3::Hasher::new_derive_key(WRAP_CONTEXT);
    h.update(content_root);
    h.update(&(bucket.len() as u64).to_be_bytes());
    h.update(bucket.as_bytes());
    h.update(&(key.len() as u64).to_be_bytes());
    h.update(key.as_bytes());
    Zeroizing::new(*h.finalize().as_bytes())
}

fn cipher(key: &[u8; 32]) -> Aes256Gcm {
    Aes256Gcm::new(&(*key).into())
}

fn wrap_aad(object: &ObjectId) -> Vec<u8> {
    let mut aad = WRAP_AAD.to_vec();
    aad.extend_from_slice(&object.0);
    aad
}

/// Seals `object_key` for the object `bucket`/`key` with id `object`.
pub fn wrap_key(
    content_root: &[u8; 32],
    bucket: &str,
    key: &str,
    object: &ObjectId,
    object_key: &ObjectKey,
) -> WrappedKey {
    let wk = wrapping_key(content_root, bucket, key);
    // A random nonce: a wrapping key may seal many object keys over time (overwrites).
    let nonce: [u8; 12] = rand::random();
    let mut buf = object_key.0.to_vec();
    let result = cipher(&wk).encrypt_inout_detached(
        &Nonce::from(nonce),
        &wrap_aad(object),
        buf.as_mut_slice().into(),
    );
    // Encryption of 32 bytes cannot hit AES-GCM's length limits.
    if let Ok(tag) = result {
        buf.extend_from_slice(&tag);
    }
    WrappedKey { nonce, sealed: buf }
}

/// Opens a wrapped object key; fails with [`CryptoError::WrongKey`] under any other
/// access, bucket, key or object id.
pub fn unwrap_key(
    content_root: &[u8; 32],
    bucket: &str,
    key: &str,
    object: &ObjectId,
    wrapped: &WrappedKey,
) -> Result<ObjectKey, CryptoError> {
    if wrapped.sealed.len() != 32 + TAG_LEN {
        return Err(CryptoError::WrongKey);
    }
    let wk = wrapping_key(content_root, bucket, key);
    let mut buf = Zeroizing::new([0u8; 32]);
    buf.copy_from_slice(&wrapped.sealed[..32]);
    let tag =
        Tag::<Aes256Gcm>::try_from(&wrapped.sealed[32..]).map_err(|_| CryptoError::WrongKey)?;
    cipher(&wk)
        .decrypt_inout_detached(
            &Nonce::from(wrapped.nonce),
            &wrap_aad(object),
            buf.as_mut_slice().into(),
            &tag,
        )
        .map_err(|_| CryptoError::WrongKey)?;
    Ok(ObjectKey(buf))
}

/// Where a block sits in its object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockPos {
    pub segment: u32,
    /// Index of the block within its segment.
    pub block: u64,
    /// Whether this is the last block of the whole object.
    pub last: bool,
}

/// Seals and opens the blocks of one object.
pub struct BlockCipher {
    aes: Aes256Gcm,
    object: ObjectId,
}

impl std::fmt::Debug for BlockCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCipher")
            .field("object", &self.object)
            .finish_non_exhaustive()
    }
}

impl BlockCipher {
    pub fn new(key: &ObjectKey, object: ObjectId) -> Self {
        Self {
            aes: cipher(&key.0),
            object,
        }
    }

    fn nonce(pos: BlockPos) -> Nonce<aes_gcm::aead::consts::U12> {
        let mut n = [0u8; 12];
        n[..4].copy_from_slice(&pos.segment.to_be_bytes());
        n[4..].copy_from_slice(&pos.block.to_be_bytes());
        Nonce::from(n)
    }

    fn aad(&self, pos: BlockPos) -> [u8; 21 + 16 + 13] {
        let mut aad = [0u8; 21 + 16 + 13];
        aad[..21].copy_from_slice(BLOCK_AAD);
        aad[21..37].copy_from_slice(&self.object.0);
        aad[37..41].copy_from_slice(&pos.segment.to_be_bytes());
        aad[41..49].copy_from_slice(&pos.block.to_be_bytes());
        aad[49] = u8::from(pos.last);
        aad
    }

    /// Appends the sealed form of `plain` (at most [`PLAIN_BLOCK`] bytes) to `out`.
    pub fn seal(&self, pos: BlockPos, plain: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(plain);
        let result = self.aes.encrypt_inout_detached(
            &Self::nonce(pos),
            &self.aad(pos),
            (&mut out[start..]).into(),
        );
        // Blocks are far below AES-GCM's 64 GiB message limit, so this cannot fail.
        if let Ok(tag) = result {
            out.extend_from_slice(&tag);
        }
    }

    /// Opens one sealed block and appends its plaintext to `out`.
    pub fn open(&self, pos: BlockPos, sealed: &[u8], out: &mut Vec<u8>) -> Result<(), CryptoError> {
        if sealed.len() < TAG_LEN {
            return Err(CryptoError::ShortBlock {
                segment: pos.segment,
                block: pos.block,
                len: sealed.len(),
            });
        }
        let (body, tag) = sealed.split_at(sealed.len() - TAG_LEN);
        let tag = Tag::<Aes256Gcm>::try_from(tag).map_err(|_| CryptoError::BadBlock {
            segment: pos.segment,
            block: pos.block,
        })?;
        let start = out.len();
        out.extend_from_slice(body);
        let ok = self
            .aes
            .decrypt_inout_detached(
                &Self::nonce(pos),
                &self.aad(pos),
                (&mut out[start..]).into(),
                &tag,
            )
            .is_ok();
        if !ok {
            out.truncate(start);
            return Err(CryptoError::BadBlock {
                segment: pos.segment,
                block: pos.block,
            });
        }
        Ok(())
    }
}

/// Ciphertext length of a segment holding `plain` bytes (blocks of [`PLAIN_BLOCK`]).
/// A segment always has at least one block.
pub fn sealed_len(plain: u64) -> u64 {
    let blocks = plain.div_ceil(PLAIN_BLOCK as u64).max(1);
    plain + blocks * TAG_LEN as u64
}

/// Seals a whole (small) buffer as segment `segment` whose last block ends the object.
pub fn seal_all(cipher: &BlockCipher, segment: u32, plain: &[u8], last_segment: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(sealed_len(plain.len() as u64) as usize);
    let blocks = plain.len().div_ceil(PLAIN_BLOCK).max(1);
    for b in 0..blocks {
        let chunk =
            &plain[(b * PLAIN_BLOCK).min(plain.len())..((b + 1) * PLAIN_BLOCK).min(plain.len())];
        let pos = BlockPos {
            segment,
            block: b as u64,
            last: last_segment && b + 1 == blocks,
        };
        cipher.seal(pos, chunk, &mut out);
    }
    out
}

/// Opens every block of a sealed segment.
pub fn open_all(
    cipher: &BlockCipher,
    segment: u32,
    sealed: &[u8],
    last_segment: bool,
) -> Result<Vec<u8>, CryptoError> {
    let blocks = sealed.len().div_ceil(CIPHER_BLOCK).max(1);
    let mut out = Vec::with_capacity(sealed.len());
    for b in 0..blocks {
        let chunk = &sealed
            [(b * CIPHER_BLOCK).min(sealed.len())..((b + 1) * CIPHER_BLOCK).min(sealed.len())];
        let pos = BlockPos {
            segment,
            block: b as u64,
            last: last_segment && b + 1 == blocks,
        };
        cipher.open(pos, chunk, &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: [u8; 32] = [3; 32];

    fn setup() -> (ObjectKey, ObjectId, BlockCipher) {
        let key = ObjectKey::random();
        let id = ObjectId::random();
        let c = BlockCipher::new(&key, id);
        (key, id, c)
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 + i / 251) as u8).collect()
    }

    #[test]
    fn wrap_round_trips_and_binds_everything() {
        let (key, id, _) = setup();
        let w = wrap_key(&ROOT, "b", "k", &id, &key);
        let back = unwrap_key(&ROOT, "b", "k", &id, &w).unwrap();
        assert_eq!(*back.0, *key.0);
        // Another access, bucket, key or object id cannot unwrap it.
        assert_eq!(
            unwrap_key(&[4; 32], "b", "k", &id, &w).unwrap_err(),
            CryptoError::WrongKey
        );
        assert_eq!(
            unwrap_key(&ROOT, "c", "k", &id, &w).unwrap_err(),
            CryptoError::WrongKey
        );
        assert_eq!(
            unwrap_key(&ROOT, "b", "k2", &id, &w).unwrap_err(),
            CryptoError::WrongKey
        );
        // Length-prefixed: ("ab","c") is not ("a","bc").
        let w2 = wrap_key(&ROOT, "ab", "c", &id, &key);
        assert_eq!(
            unwrap_key(&ROOT, "a", "bc", &id, &w2).unwrap_err(),
            CryptoError::WrongKey
        );
        assert_eq!(
            unwrap_key(&ROOT, "b", "k", &ObjectId::random(), &w).unwrap_err(),
            CryptoError::WrongKey
        );
        let mut bad = w.clone();
        bad.sealed[0] ^= 1;
        assert_eq!(
            unwrap_key(&ROOT, "b", "k", &id, &bad).unwrap_err(),
            CryptoError::WrongKey
        );
        bad.sealed.pop();
        assert_eq!(
            unwrap_key(&ROOT, "b", "k", &id, &bad).unwrap_err(),
            CryptoError::WrongKey
        );
    }

    #[test]
    fn blocks_round_trip_at_every_size() {
        let (_, _, c) = setup();
        for n in [
            0,
            1,
            PLAIN_BLOCK - 1,
            PLAIN_BLOCK,
            PLAIN_BLOCK + 1,
            3 * PLAIN_BLOCK + 17,
        ] {
            let plain = data(n);
            let sealed = seal_all(&c, 2, &plain, true);
            assert_eq!(sealed.len() as u64, sealed_len(n as u64));
            assert_eq!(open_all(&c, 2, &sealed, true).unwrap(), plain, "size {n}");
        }
    }

    #[test]
    fn same_plaintext_in_two_objects_differs() {
        let (_, _, a) = setup();
        let (_, _, b) = setup();
        let plain = data(1000);
        assert_ne!(seal_all(&a, 0, &plain, true), seal_all(&b, 0, &plain, true));
        // And two positions in one object never share a nonce: different ciphertext.
        let mut x = Vec::new();
        let mut y = Vec::new();
        let pos = BlockPos {
            segment: 0,
            block: 0,
            last: false,
        };
        a.seal(pos, &plain, &mut x);
        a.seal(BlockPos { block: 1, ..pos }, &plain, &mut y);
        assert_ne!(x, y);
    }

    #[test]
    fn reordered_blocks_are_rejected() {
        let (_, _, c) = setup();
        let sealed = seal_all(&c, 0, &data(3 * PLAIN_BLOCK), true);
        let mut swapped = sealed[CIPHER_BLOCK..2 * CIPHER_BLOCK].to_vec();
        swapped.extend_from_slice(&sealed[..CIPHER_BLOCK]);
        swapped.extend_from_slice(&sealed[2 * CIPHER_BLOCK..]);
        assert_eq!(
            open_all(&c, 0, &swapped, true).unwrap_err(),
            CryptoError::BadBlock {
                segment: 0,
                block: 0
            }
        );
        // The same block under another segment index fails too.
        assert!(open_all(&c, 1, &sealed, true).is_err());
    }

    #[test]
    fn blocks_from_another_object_are_rejected() {
        let key = ObjectKey::random();
        let a = BlockCipher::new(&key, ObjectId::random());
        // Even with the same key, another object id does not open the block.
        let b = BlockCipher::new(&key, ObjectId::random());
        let sealed = seal_all(&a, 0, &data(100), true);
        assert!(open_all(&b, 0, &sealed, true).is_err());
    }

    #[test]
    fn truncation_is_detected() {
        let (_, _, c) = setup();
        let sealed = seal_all(&c, 0, &data(3 * PLAIN_BLOCK), true);
        // Dropping the last whole block: the new last block lacks the last flag.
        assert!(open_all(&c, 0, &sealed[..2 * CIPHER_BLOCK], true).is_err());
        // Cutting inside a block breaks its tag.
        assert!(open_all(&c, 0, &sealed[..sealed.len() - 1], true).is_err());
        // An empty object is one flagged block; nothing at all is not a valid object.
        let empty = seal_all(&c, 0, &[], true);
        assert_eq!(empty.len(), TAG_LEN);
        assert!(open_all(&c, 0, &empty, true).unwrap().is_empty());
        assert!(matches!(
            open_all(&c, 0, &[], true).unwrap_err(),
            CryptoError::ShortBlock { .. }
        ));
        // A segment claimed as last that was sealed as a middle one fails, and vice versa.
        let middle = seal_all(&c, 0, &data(10), false);
        assert!(open_all(&c, 0, &middle, true).is_err());
    }

    #[test]
    fn flipped_bits_are_detected() {
        let (_, _, c) = setup();
        let mut sealed = seal_all(&c, 0, &data(500), true);
        sealed[100] ^= 0x40;
        assert!(open_all(&c, 0, &sealed, true).is_err());
    }
}
