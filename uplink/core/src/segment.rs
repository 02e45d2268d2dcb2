//! The synchronous heart of the data path: plaintext blocks → sealed bytes → stripes of
//! `total` shards, and back. No I/O here; [`crate::upload`] and [`crate::download`] move
//! the shards to and from nodes.
//!
//! Layout of one segment with `k` data shards of `shard_size` bytes:
//! ```text
//! sealed bytes  | block 0 (64 KiB) | block 1 | ... | last block (shorter) | zero pad |
//! stripes       |<- k * shard_size ->|<- k * shard_size ->| ...
//! piece i       = shard i of stripe 0 ‖ shard i of stripe 1 ‖ ...
//! ```
//! Each piece is hashed in blocks of `shard_size`, so one hash block of a piece is one
//! shard of one stripe: a range read asks nodes for whole stripes and verifies every
//! shard before it reaches the decoder.

use bytes::Bytes;

use crate::catalog::SegmentInfo;
use crate::codec::{Codec, CodecError, CodecKind, Scheme};
use crate::crypto::{BlockCipher, BlockPos, CIPHER_BLOCK, CryptoError, PLAIN_BLOCK, TAG_LEN};

/// Largest shard (and piece hash block): one sealed block.
pub const MAX_SHARD: usize = CIPHER_BLOCK;
/// Smallest shard: the protocol's smallest hash block.
pub const MIN_SHARD: usize = shoal_proto::limits::MIN_BLOCK_SIZE as usize;
/// Blocks per full segment: 1024 × 65,520 B = 63.98 MiB of plaintext, 64 MiB sealed.
pub const SEGMENT_BLOCKS: u64 = 1024;
/// Objects up to this size are stored inline in the catalog.
pub const INLINE_LIMIT: usize = 4096;

/// Shard size for a segment of (at most) `sealed` bytes: 64 KiB, or less for small
/// segments so that a small object does not cost `total` × 64 KiB.
pub fn shard_size_for(sealed: u64, k: usize) -> usize {
    let per = sealed.div_ceil(k.max(1) as u64);
    let rounded = per.div_ceil(MIN_SHARD as u64) * MIN_SHARD as u64;
    (rounded as usize).clamp(MIN_SHARD, MAX_SHARD)
}

/// Sizes that follow from `k`, the shard size and the sealed size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub k: usize,
    pub shard_size: usize,
    pub sealed_size: u64,
}

impl Layout {
    pub fn stripe_bytes(&self) -> u64 {
        (self.k * self.shard_size) as u64
    }

    pub fn stripes(&self) -> u64 {
        self.sealed_size.div_ceil(self.stripe_bytes()).max(1)
    }

    pub fn piece_size(&self) -> u64 {
        self.stripes() * self.shard_size as u64
    }
}

/// `total` shards: data `0..k`, then parity.
pub type Stripe = Vec<Bytes>;

/// Seals plaintext blocks of one segment and cuts the sealed bytes into coded stripes.
pub struct SegmentEncoder<'c> {
    cipher: &'c BlockCipher,
    codec: Box<dyn Codec>,
    k: usize,
    parity: usize,
    shard_size: usize,
    segment: u32,
    next_block: u64,
    buf: Vec<u8>,
    plain: u64,
    sealed: u64,
}

impl std::fmt::Debug for SegmentEncoder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentEncoder")
            .field("segment", &self.segment)
            .field("next_block", &self.next_block)
            .finish_non_exhaustive()
    }
}

impl<'c> SegmentEncoder<'c> {
    pub fn new(
        cipher: &'c BlockCipher,
        codec: CodecKind,
        scheme: Scheme,
        shard_size: usize,
        segment: u32,
    ) -> Result<Self, CodecError> {
        let k = usize::from(scheme.k);
        let parity = scheme.parity();
        Ok(Self {
            cipher,
            codec: codec.coder(k, parity, shard_size)?,
            k,
            parity,
            shard_size,
            segment,
            next_block: 0,
            buf: Vec::with_capacity(k * shard_size + CIPHER_BLOCK),
            plain: 0,
            sealed: 0,
        })
    }

    /// Blocks sealed so far.
    pub fn blocks(&self) -> u64 {
        self.next_block
    }

    /// Seals one plaintext block (at most [`PLAIN_BLOCK`] bytes; only the object's last
    /// block may be shorter) and appends every stripe that became complete to `out`.
    pub fn push_block(
        &mut self,
        plain: &[u8],
        last: bool,
        out: &mut Vec<Stripe>,
    ) -> Result<(), CodecError> {
        debug_assert!(plain.len() <= PLAIN_BLOCK);
        let pos = BlockPos {
            segment: self.segment,
            block: self.next_block,
            last,
        };
        self.cipher.seal(pos, plain, &mut self.buf);
        self.next_block += 1;
        self.plain += plain.len() as u64;
        self.sealed += (plain.len() + TAG_LEN) as u64;
        let stripe = self.k * self.shard_size;
        while self.buf.len() >= stripe {
            let mut rest = Vec::with_capacity(stripe + CIPHER_BLOCK);
            rest.extend_from_slice(&self.buf[stripe..]);
            self.buf.truncate(stripe);
            let full = std::mem::replace(&mut self.buf, rest);
            out.push(self.code(full)?);
        }
        Ok(())
    }

    /// Codes the last, zero-padded stripe. Returns (plaintext, sealed) sizes.
    pub fn finish(mut self, out: &mut Vec<Stripe>) -> Result<(u64, u64), CodecError> {
        if !self.buf.is_empty() || self.sealed == 0 {
            let mut full = std::mem::take(&mut self.buf);
            full.resize(self.k * self.shard_size, 0);
            out.push(self.code(full)?);
        }
        Ok((self.plain, self.sealed))
    }

    fn code(&mut self, data: Vec<u8>) -> Result<Stripe, CodecError> {
        let data = Bytes::from(data);
        let s = self.shard_size;
        let shards: Vec<Bytes> = (0..self.k)
            .map(|i| data.slice(i * s..(i + 1) * s))
            .collect();
        let refs: Vec<&[u8]> = shards.iter().map(|b| b.as_ref()).collect();
        let mut parity = vec![Vec::with_capacity(s); self.parity];
        self.codec.encode(&refs, &mut parity)?;
        let mut stripe = shards;
        stripe.extend(parity.into_iter().map(Bytes::from));
        Ok(stripe)
    }
}

/// Rebuilds the data of stripes from any `k` verified shards.
pub struct StripeDecoder {
    codec: Box<dyn Codec>,
    k: usize,
    total: usize,
    shard_size: usize,
}

impl std::fmt::Debug for StripeDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeDecoder")
            .field("k", &self.k)
            .finish_non_exhaustive()
    }
}

impl StripeDecoder {
    pub fn new(codec: CodecKind, scheme: Scheme, shard_size: usize) -> Result<Self, CodecError> {
        Ok(Self {
            codec: codec.coder(usize::from(scheme.k), scheme.parity(), shard_size)?,
            k: usize::from(scheme.k),
            total: usize::from(scheme.total),
            shard_size,
        })
    }

    /// `shards` are (piece index, shard) pairs; appends the stripe's `k * shard_size` data
    /// bytes to `out`. Returns whether an erasure decode was needed (false: all k data
    /// shards were there and were copied).
    /// The `k` data shards in order, if all of them are in `shards`: the stripe is then
    /// their concatenation and needs no decoding.
    pub fn data_in_order<'a>(&self, shards: &'a [(u16, Bytes)]) -> Option<Vec<&'a Bytes>> {
        (0..self.k)
            .map(|i| {
                shards
                    .iter()
                    .find(|(j, _)| usize::from(*j) == i)
                    .map(|(_, s)| s)
            })
            .collect()
    }

    pub fn decode(
        &mut self,
        shards: &[(u16, Bytes)],
        out: &mut Vec<u8>,
    ) -> Result<bool, CodecError> {
        if let Some(data) = self.data_in_order(shards) {
            for s in data {
                out.extend_from_slice(s);
            }
            return Ok(false);
        }
        let mut slots: Vec<Option<Vec<u8>>> = vec![None; self.total];
        for (i, s) in shards {
            if let Some(slot) = slots.get_mut(usize::from(*i)) {
                *slot = Some(s.to_vec());
            }
        }
        self.codec.reconstruct_data(&mut slots)?;
        for slot in slots.iter().take(self.k) {
            match slot {
                Some(s) => out.extend_from_slice(s),
                None => {
                    return Err(CodecError::NotEnoughShards {
                        have: shards.len(),
                        need: self.k,
                    });
                }
            }
        }
        debug_assert_eq!(out.len() % self.shard_size, 0);
        Ok(true)
    }
}

/// What to fetch and decrypt for plaintext bytes `[start, end)` of one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangePlan {
    pub first_stripe: u64,
    pub stripes: u64,
    /// Sealed bytes to drop from the first fetched stripe to reach `first_block`.
    pub sealed_skip: u64,
    pub first_block: u64,
    /// Blocks to open, starting at `first_block`.
    pub blocks: u64,
    /// Plaintext bytes to drop from the first opened block.
    pub plain_skip: u64,
    pub plain_len: u64,
}

impl RangePlan {
    /// Piece byte range to ask every node for.
    pub fn piece_range(&self, shard_size: u64) -> (u64, u64) {
        (self.first_stripe * shard_size, self.stripes * shard_size)
    }
}

/// Plans a read of `[start, end)` (segment plaintext offsets, `start < end <= plain_size`).
pub fn plan_range(seg: &SegmentInfo, start: u64, end: u64) -> RangePlan {
    let pb = PLAIN_BLOCK as u64;
    let cb = CIPHER_BLOCK as u64;
    let first_block = start / pb;
    let last_block = end.saturating_sub(1) / pb;
    let sealed_start = first_block * cb;
    let sealed_end = ((last_block + 1) * cb).min(seg.sealed_size);
    let stripe = u64::from(seg.scheme.k) * u64::from(seg.shard_size);
    let first_stripe = sealed_start / stripe;
    let end_stripe = sealed_end.div_ceil(stripe).max(first_stripe + 1);
    RangePlan {
        first_stripe,
        stripes: end_stripe - first_stripe,
        sealed_skip: sealed_start - first_stripe * stripe,
        first_block,
        blocks: last_block + 1 - first_block,
        plain_skip: start - first_block * pb,
        plain_len: end - start,
    }
}

/// Opens the sealed blocks of a range as decoded stripes arrive.
pub struct BlockOpener<'c> {
    cipher: &'c BlockCipher,
    segment: u32,
    sealed_size: u64,
    total_blocks: u64,
    last_segment: bool,
    next_block: u64,
    end_block: u64,
    skip_sealed: u64,
    skip_plain: u64,
    remaining: u64,
    buf: Vec<u8>,
}

impl std::fmt::Debug for BlockOpener<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockOpener")
            .field("segment", &self.segment)
            .field("next_block", &self.next_block)
            .finish_non_exhaustive()
    }
}

impl<'c> BlockOpener<'c> {
    pub fn new(
        cipher: &'c BlockCipher,
        seg: &SegmentInfo,
        last_segment: bool,
        plan: &RangePlan,
    ) -> Self {
        Self {
            cipher,
            segment: seg.index,
            sealed_size: seg.sealed_size,
            total_blocks: seg.sealed_size.div_ceil(CIPHER_BLOCK as u64).max(1),
            last_segment,
            next_block: plan.first_block,
            end_block: plan.first_block + plan.blocks,
            skip_sealed: plan.sealed_skip,
            skip_plain: plan.plain_skip,
            remaining: plan.plain_len,
            buf: Vec::with_capacity(CIPHER_BLOCK),
        }
    }

    /// Whether every wanted byte has been produced.
    pub fn done(&self) -> bool {
        self.remaining == 0 || self.next_block >= self.end_block
    }

    fn block_len(&self, block: u64) -> usize {
        let start = block * CIPHER_BLOCK as u64;
        (self.sealed_size.saturating_sub(start)).min(CIPHER_BLOCK as u64) as usize
    }

    /// Feeds decoded stripe data; appends wanted plaintext to `out`.
    pub fn push(&mut self, mut sealed: &[u8], out: &mut Vec<u8>) -> Result<(), CryptoError> {
        if self.skip_sealed > 0 {
            let n = (self.skip_sealed as usize).min(sealed.len());
            sealed = &sealed[n..];
            self.skip_sealed -= n as u64;
        }
        while !sealed.is_empty() && !self.done() {
            let want = self.block_len(self.next_block);
            // A whole block in `sealed` is opened where it is; one split between pushes
            // is gathered in `buf` first.
            let block: &[u8] = if self.buf.is_empty() && sealed.len() >= want {
                let (block, rest) = sealed.split_at(want);
                sealed = rest;
                block
            } else {
                let take = (want - self.buf.len()).min(sealed.len());
                self.buf.extend_from_slice(&sealed[..take]);
                sealed = &sealed[take..];
                if self.buf.len() < want {
                    continue;
                }
                &self.buf
            };
            let pos = BlockPos {
                segment: self.segment,
                block: self.next_block,
                last: self.last_segment && self.next_block + 1 == self.total_blocks,
            };
            let start = out.len();
            self.cipher.open(pos, block, out)?;
            self.buf.clear();
            self.next_block += 1;
            // Trim to the wanted plaintext.
            let skip = (self.skip_plain as usize).min(out.len() - start);
            out.drain(start..start + skip);
            self.skip_plain -= skip as u64;
            let produced = (out.len() - start) as u64;
            if produced > self.remaining {
                out.truncate(start + self.remaining as usize);
                self.remaining = 0;
            } else {
                self.remaining -= produced;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{ObjectId, ObjectKey, sealed_len};
    use shoal_proto::piece_hash::PieceHasher;

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 1000) as u8).collect()
    }

    /// Encodes `plain` as one segment; returns the segment info (without placements) and
    /// every piece's bytes.
    fn encode(
        cipher: &BlockCipher,
        codec: CodecKind,
        scheme: Scheme,
        plain: &[u8],
    ) -> (SegmentInfo, Vec<Vec<u8>>) {
        let s = shard_size_for(sealed_len(plain.len() as u64), usize::from(scheme.k));
        let mut enc = SegmentEncoder::new(cipher, codec, scheme, s, 0).unwrap();
        let mut stripes = Vec::new();
        let blocks: Vec<&[u8]> = if plain.is_empty() {
            vec![&[][..]]
        } else {
            plain.chunks(PLAIN_BLOCK).collect()
        };
        for (i, b) in blocks.iter().enumerate() {
            enc.push_block(b, i + 1 == blocks.len(), &mut stripes)
                .unwrap();
        }
        let (p, sealed) = enc.finish(&mut stripes).unwrap();
        assert_eq!(p, plain.len() as u64);
        assert_eq!(sealed, sealed_len(p));
        let mut pieces = vec![Vec::new(); usize::from(scheme.total)];
        for st in &stripes {
            for (i, sh) in st.iter().enumerate() {
                pieces[i].extend_from_slice(sh);
            }
        }
        let layout = Layout {
            k: usize::from(scheme.k),
            shard_size: s,
            sealed_size: sealed,
        };
        assert_eq!(pieces[0].len() as u64, layout.piece_size());
        let info = SegmentInfo {
            index: 0,
            plain_size: p,
            sealed_size: sealed,
            codec,
            scheme,
            shard_size: s as u32,
            piece_size: layout.piece_size(),
            pieces: Vec::new(),
        };
        (info, pieces)
    }

    fn read(
        cipher: &BlockCipher,
        info: &SegmentInfo,
        pieces: &[Option<Vec<u8>>],
        start: u64,
        end: u64,
    ) -> Vec<u8> {
        let plan = plan_range(info, start, end);
        let s = info.shard_size as usize;
        let mut dec = StripeDecoder::new(info.codec, info.scheme, s).unwrap();
        let mut opener = BlockOpener::new(cipher, info, true, &plan);
        let mut out = Vec::new();
        for st in plan.first_stripe..plan.first_stripe + plan.stripes {
            let shards: Vec<(u16, Bytes)> = pieces
                .iter()
                .enumerate()
                .filter_map(|(i, p)| {
                    p.as_ref().map(|p| {
                        (
                            i as u16,
                            Bytes::copy_from_slice(&p[st as usize * s..(st as usize + 1) * s]),
                        )
                    })
                })
                .collect();
            let mut stripe = Vec::new();
            dec.decode(&shards, &mut stripe).unwrap();
            opener.push(&stripe, &mut out).unwrap();
        }
        assert!(opener.done());
        out
    }

    #[test]
    fn segments_round_trip_with_losses_and_ranges() {
        let key = ObjectKey::random();
        let cipher = BlockCipher::new(&key, ObjectId::random());
        let scheme: Scheme = "3/5/7/10".parse().unwrap();
        for codec in [CodecKind::ReedSolomonErasure, CodecKind::ReedSolomonSimd] {
            for n in [
                1usize,
                5000,
                PLAIN_BLOCK,
                PLAIN_BLOCK + 1,
                5 * PLAIN_BLOCK + 77,
            ] {
                let plain = data(n);
                let (info, pieces) = encode(&cipher, codec, scheme, &plain);
                // Lose 7 of 10 pieces, including data pieces.
                let mut some: Vec<Option<Vec<u8>>> = pieces.into_iter().map(Some).collect();
                for i in [0, 2, 3, 4, 6, 7, 9] {
                    some[i] = None;
                }
                assert_eq!(
                    read(&cipher, &info, &some, 0, n as u64),
                    plain,
                    "{codec} {n}"
                );
                for (a, b) in [
                    (0, 1),
                    (n as u64 - 1, n as u64),
                    (n as u64 / 3, n as u64 / 2 + 1),
                ] {
                    if a < b {
                        assert_eq!(
                            read(&cipher, &info, &some, a, b),
                            plain[a as usize..b as usize],
                            "{codec} {n} {a}..{b}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn ranges_touch_only_needed_stripes() {
        let key = ObjectKey::random();
        let cipher = BlockCipher::new(&key, ObjectId::random());
        let scheme: Scheme = "2/2/3/4".parse().unwrap();
        let plain = data(20 * PLAIN_BLOCK);
        let (info, _) = encode(&cipher, CodecKind::ReedSolomonSimd, scheme, &plain);
        assert_eq!(info.shard_size as usize, MAX_SHARD);
        // Stripe = 2 blocks. Byte 5 blocks in lies in stripe 2 only.
        let start = 5 * PLAIN_BLOCK as u64 + 10;
        let plan = plan_range(&info, start, start + 100);
        assert_eq!((plan.first_stripe, plan.stripes), (2, 1));
        assert_eq!(
            plan.piece_range(info.shard_size as u64),
            (2 * MAX_SHARD as u64, MAX_SHARD as u64)
        );
        let whole = plan_range(&info, 0, plain.len() as u64);
        assert_eq!(whole.stripes, 10);
    }

    #[test]
    fn small_objects_get_small_shards() {
        assert_eq!(shard_size_for(5000, 29), MIN_SHARD);
        assert_eq!(shard_size_for(64 << 20, 29), MAX_SHARD);
        assert_eq!(shard_size_for(300_000, 3), 102_400.min(MAX_SHARD));
        let key = ObjectKey::random();
        let cipher = BlockCipher::new(&key, ObjectId::random());
        let (info, pieces) = encode(
            &cipher,
            CodecKind::ReedSolomonSimd,
            Scheme::default(),
            &data(5000),
        );
        assert_eq!(info.piece_size, MIN_SHARD as u64);
        // Pieces hash in shard-sized blocks: one block per stripe.
        let mut h = PieceHasher::new(info.shard_size);
        h.update(&pieces[40]);
        assert_eq!(h.finish().block_hashes.len(), 1);
    }
}
