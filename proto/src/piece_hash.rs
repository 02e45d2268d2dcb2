//! Per-block BLAKE3 hashes of a piece, and the root they hash to.
//!
//! A piece is hashed in fixed-size blocks. The receipt and the uplink's catalog keep only
//! the 32-byte root; a node sends the whole block-hash list with every download or audit,
//! the client checks the list against the root and then each block against its hash. So
//! any block of any range can be verified, and a lying node shows up as a bad block.

use crate::error::WireError;
use crate::ids::PieceHash;
use crate::limits::{MAX_BLOCK_SIZE, MAX_BLOCKS, MAX_PIECE_SIZE, MIN_BLOCK_SIZE};
use crate::pb;

const BLOCK_CONTEXT: &str = "shoal v1 piece block";
const ROOT_CONTEXT: &str = "shoal v1 piece root";

/// Hash of one block.
pub fn block_hash(data: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(BLOCK_CONTEXT);
    h.update(data);
    *h.finalize().as_bytes()
}

/// Number of blocks of a piece of `size` bytes.
pub fn block_count(size: u64, block_size: u32) -> u64 {
    size.div_ceil(u64::from(block_size.max(1)))
}

/// The root over a piece's block hashes, bound to its size and block size.
pub fn piece_root(size: u64, block_size: u32, block_hashes: &[[u8; 32]]) -> PieceHash {
    let mut h = blake3::Hasher::new_derive_key(ROOT_CONTEXT);
    h.update(&size.to_be_bytes());
    h.update(&block_size.to_be_bytes());
    for b in block_hashes {
        h.update(b);
    }
    PieceHash(*h.finalize().as_bytes())
}

/// Checks that a block size is within the protocol's bounds.
pub fn check_block_size(field: &'static str, block_size: u32) -> Result<(), WireError> {
    if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) {
        return Err(WireError::OutOfRange {
            field,
            reason: format!(
                "block size {block_size} is not within {MIN_BLOCK_SIZE}..={MAX_BLOCK_SIZE}"
            ),
        });
    }
    Ok(())
}

/// Streaming hasher: feed the piece in any chunking, get the block hashes and the root.
#[derive(Debug, Clone)]
pub struct PieceHasher {
    block_size: u32,
    current: blake3::Hasher,
    in_block: u32,
    size: u64,
    blocks: Vec<[u8; 32]>,
}

impl PieceHasher {
    pub fn new(block_size: u32) -> Self {
        Self {
            block_size: block_size.max(1),
            current: blake3::Hasher::new_derive_key(BLOCK_CONTEXT),
            in_block: 0,
            size: 0,
            blocks: Vec::new(),
        }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.size += data.len() as u64;
        while !data.is_empty() {
            let room = (self.block_size - self.in_block) as usize;
            let take = room.min(data.len());
            self.current.update(&data[..take]);
            self.in_block += take as u32;
            data = &data[take..];
            if self.in_block == self.block_size {
                self.blocks.push(*self.current.finalize().as_bytes());
                self.current.reset();
                self.in_block = 0;
            }
        }
    }

    /// Bytes fed so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn finish(mut self) -> PieceInfo {
        if self.in_block > 0 {
            self.blocks.push(*self.current.finalize().as_bytes());
        }
        PieceInfo {
            size: self.size,
            block_size: self.block_size,
            block_hashes: self.blocks,
        }
    }
}

/// A piece's size, block size and block hashes: enough to verify any of its blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PieceInfo {
    pub size: u64,
    pub block_size: u32,
    pub block_hashes: Vec<[u8; 32]>,
}

impl PieceInfo {
    pub fn root(&self) -> PieceHash {
        piece_root(self.size, self.block_size, &self.block_hashes)
    }

    /// Byte range `[start, end)` of block `index` within the piece.
    pub fn block_range(&self, index: u64) -> Option<(u64, u64)> {
        let bs = u64::from(self.block_size);
        let start = index.checked_mul(bs)?;
        if start >= self.size {
            return None;
        }
        Some((start, (start + bs).min(self.size)))
    }

    /// Verifies one block's bytes against its hash.
    pub fn verify_block(&self, index: u64, data: &[u8]) -> bool {
        let Some((start, end)) = self.block_range(index) else {
            return false;
        };
        let Some(expected) = usize::try_from(index)
            .ok()
            .and_then(|i| self.block_hashes.get(i))
        else {
            return false;
        };
        data.len() as u64 == end - start && block_hash(data) == *expected
    }
}

impl TryFrom<pb::PieceInfo> for PieceInfo {
    type Error = WireError;

    fn try_from(p: pb::PieceInfo) -> Result<Self, WireError> {
        check_block_size("info.block_size", p.block_size)?;
        if p.size > MAX_PIECE_SIZE {
            return Err(WireError::OutOfRange {
                field: "info.size",
                reason: format!("{} is over the piece limit of {MAX_PIECE_SIZE}", p.size),
            });
        }
        if p.block_hashes.len() > MAX_BLOCKS {
            return Err(WireError::TooMany {
                field: "info.block_hashes",
                limit: MAX_BLOCKS,
                actual: p.block_hashes.len(),
            });
        }
        let expected = block_count(p.size, p.block_size);
        if p.block_hashes.len() as u64 != expected {
            return Err(WireError::Malformed {
                field: "info.block_hashes",
                reason: format!(
                    "{} hashes for a piece of {} blocks",
                    p.block_hashes.len(),
                    expected
                ),
            });
        }
        let block_hashes = p
            .block_hashes
            .iter()
            .map(|h| crate::ids::fixed::<32>("info.block_hashes", h))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            size: p.size,
            block_size: p.block_size,
            block_hashes,
        })
    }
}

impl From<&PieceInfo> for pb::PieceInfo {
    fn from(p: &PieceInfo) -> Self {
        Self {
            size: p.size,
            block_size: p.block_size,
            block_hashes: p.block_hashes.iter().map(|h| h.to_vec()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        // Chunking does not change the result.
        #[test]
        fn hashing_is_independent_of_chunking(data in proptest::collection::vec(any::<u8>(), 0..20_000), cut in 1usize..5000) {
            let mut whole = PieceHasher::new(4096);
            whole.update(&data);
            let mut parts = PieceHasher::new(4096);
            for c in data.chunks(cut) {
                parts.update(c);
            }
            let (a, b) = (whole.finish(), parts.finish());
            prop_assert_eq!(a.root(), b.root());
            prop_assert_eq!(a.block_hashes.len() as u64, block_count(data.len() as u64, 4096));
        }
    }

    #[test]
    fn blocks_verify_and_tampering_is_caught() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i / 7 + i * 13) as u8).collect();
        let mut h = PieceHasher::new(4096);
        h.update(&data);
        let info = h.finish();
        assert_eq!(info.block_hashes.len(), 3);
        assert!(info.verify_block(0, &data[..4096]));
        assert!(info.verify_block(2, &data[8192..]));
        assert!(!info.verify_block(1, &data[..4096]));
        assert!(!info.verify_block(3, &[]));
        let mut bad = data[4096..8192].to_vec();
        bad[7] ^= 1;
        assert!(!info.verify_block(1, &bad));
        // The root binds the size: same hashes with a different size give another root.
        assert_ne!(piece_root(9_999, 4096, &info.block_hashes), info.root());
    }

    #[test]
    fn piece_info_from_wire_is_bounded() {
        let ok = pb::PieceInfo {
            size: 5000,
            block_size: 4096,
            block_hashes: vec![vec![0; 32], vec![1; 32]],
        };
        assert!(PieceInfo::try_from(ok.clone()).is_ok());
        let mut wrong_count = ok.clone();
        wrong_count.block_hashes.pop();
        assert!(matches!(
            PieceInfo::try_from(wrong_count),
            Err(WireError::Malformed { .. })
        ));
        let mut short_hash = ok.clone();
        short_hash.block_hashes[0] = vec![0; 31];
        assert!(matches!(
            PieceInfo::try_from(short_hash),
            Err(WireError::WrongLength { .. })
        ));
        let mut tiny_block = ok.clone();
        tiny_block.block_size = 16;
        assert!(matches!(
            PieceInfo::try_from(tiny_block),
            Err(WireError::OutOfRange { .. })
        ));
        let mut huge = ok;
        huge.size = MAX_PIECE_SIZE + 1;
        assert!(matches!(
            PieceInfo::try_from(huge),
            Err(WireError::OutOfRange { .. })
        ));
    }
}
