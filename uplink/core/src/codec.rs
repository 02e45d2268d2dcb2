//! Erasure coding: the redundancy [`Scheme`] and one small [`Codec`] interface with two
//! implementations, recorded per segment as a [`CodecKind`].
//!
//! Both codecs are systematic Reed-Solomon over GF(2^8)/GF(2^16): the first `k` shards of a
//! stripe are the data itself, the other `total - k` are parity. Coding works one stripe
//! at a time (k shards of `shard_size` bytes), so memory depends only on the stripe.
//!
//! Default: [`CodecKind::ReedSolomonSimd`]. It picks SIMD code at run time (SSSE3/AVX2 on
//! x86, NEON on ARM) and falls back to portable code, so one binary runs everywhere; it
//! was measured several times faster than `reed-solomon-erasure` in its default (portable)
//! build (see `BENCHMARKS.md`). `reed-solomon-erasure`'s `simd-accel` feature is not used:
//! it compiles C for AVX2 with no run-time check, so the binary would die on older CPUs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Most pieces per segment: both codecs and the u16 piece index allow more, but GF(2^8)
/// (`reed-solomon-erasure`) stops at 256 shards.
pub const MAX_TOTAL: u16 = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemeError {
    #[error("redundancy scheme `{0}` is not of the form K/REPAIR/SUCCESS/TOTAL")]
    Syntax(String),
    #[error("redundancy scheme {0} is invalid: {1}")]
    Invalid(Scheme, &'static str),
}

/// Redundancy `k/repair/success/total`: any `k` pieces rebuild a segment; repair is due
/// below `repair` healthy pieces; an upload commits at `success` pieces; `total` are
/// started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Scheme {
    pub k: u16,
    pub repair: u16,
    pub success: u16,
    pub total: u16,
}

impl Default for Scheme {
    fn default() -> Self {
        Self {
            k: 29,
            repair: 35,
            success: 80,
            total: 110,
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}",
            self.k, self.repair, self.success, self.total
        )
    }
}

impl Scheme {
    pub fn new(k: u16, repair: u16, success: u16, total: u16) -> Result<Self, SchemeError> {
        let s = Self {
            k,
            repair,
            success,
            total,
        };
        s.validate()?;
        Ok(s)
    }

    /// Checks `1 <= k <= repair <= success <= total <= 255` and `k < total`.
    pub fn validate(&self) -> Result<(), SchemeError> {
        let bad = |why| Err(SchemeError::Invalid(*self, why));
        if self.k == 0 {
            return bad("k must be at least 1");
        }
        if !(self.k <= self.repair && self.repair <= self.success && self.success <= self.total) {
            return bad("it must hold that k <= repair <= success <= total");
        }
        if self.k >= self.total {
            return bad("total must be larger than k, or no piece may ever be lost");
        }
        if self.total > MAX_TOTAL {
            return bad("total must be at most 255");
        }
        Ok(())
    }

    /// Parity shards per stripe.
    pub fn parity(&self) -> usize {
        usize::from(self.total - self.k)
    }

    /// The scheme for a small segment of `sealed` bytes: pieces have a minimum size
    /// (`min_piece`), so a segment smaller than `k` such pieces gains nothing from `k`
    /// data shards and pays for `total` mostly-padding pieces. Here `k` shrinks to the
    /// pieces the data fills (1: whole copies, replication), and the margins stay those
    /// of `self`: `repair − k` and `success − k` (the losses survived before repair,
    /// and at all, by a fresh segment) are unchanged, and the upload slack
    /// `total − success` shrinks in proportion to `k`, rounded up. `self` when the
    /// segment fills `k` pieces.
    pub fn fitted(&self, sealed: u64, min_piece: u64) -> Scheme {
        let fills = sealed.div_ceil(min_piece.max(1)).max(1);
        let k = u16::try_from(fills).unwrap_or(u16::MAX);
        if k >= self.k {
            return *self;
        }
        let slack = u32::from(self.total - self.success) * u32::from(k);
        let slack = u16::try_from(slack.div_ceil(u32::from(self.k))).unwrap_or(u16::MAX);
        let success = k + (self.success - self.k);
        Scheme {
            k,
            repair: k + (self.repair - self.k),
            success,
            // At least one piece beyond `k`, as every scheme keeps.
            total: (success + slack).max(k + 1),
        }
    }

    /// The scheme to use when only `nodes` suitable nodes can take a piece (a network too
    /// small for `self`, or one whose nodes failed during an upload). `None` below 2 nodes.
    ///
    /// What is given up, in order (each step only as far as needed):
    /// 1. `total` down to `success`: only the upload's slack goes (with the long tail kept,
    ///    pieces beyond `success` are a bonus, not a promise); `k`, `repair` and `success`
    ///    stay, so the segment is stored exactly as strong as asked.
    /// 2. `success` down to `repair` (`total = success`): fewer pieces are promised, but a
    ///    new segment is still at or above its repair threshold and `k` (piece size, decode
    ///    threshold) is unchanged.
    /// 3. Below `repair`, keeping `k` would store segments already due for repair with
    ///    fewer spare pieces than the scheme's repair margin `repair − k`, down to a single
    ///    one (29/30/30/30). Instead `k` gives way one for one, keeping that margin (the
    ///    losses a segment survives before it needs repair): `k' = n − (repair − k)`, at
    ///    least 1, and always below `n` so that at least one loss is survivable.
    ///
    /// In steps 1–3 every started piece must succeed once `total` is down to `success`:
    /// the caller has no more nodes, and a segment below `success` would break the
    /// scheme's promise. The result is monotone in `nodes` (fewer nodes never give a
    /// larger `k`, `repair`, `success` or `total`).
    pub fn shrink_to(&self, nodes: usize) -> Option<Scheme> {
        let n = u16::try_from(nodes).unwrap_or(u16::MAX);
        if n >= self.total {
            return Some(*self);
        }
        if n < 2 {
            return None;
        }
        let s = if n >= self.success && n > self.k {
            Scheme { total: n, ..*self }
        } else if n >= self.repair && n > self.k {
            Scheme {
                success: n,
                total: n,
                ..*self
            }
        } else {
            let margin = self.repair - self.k;
            Scheme {
                k: n.saturating_sub(margin).clamp(1, n - 1),
                repair: n,
                success: n,
                total: n,
            }
        };
        s.validate().ok().map(|_| s)
    }
}

impl FromStr for Scheme {
    type Err = SchemeError;

    fn from_str(s: &str) -> Result<Self, SchemeError> {
        let parts: Vec<u16> = s
            .split('/')
            .map(|p| p.trim().parse::<u16>())
            .collect::<Result<_, _>>()
            .map_err(|_| SchemeError::Syntax(s.to_string()))?;
        let [k, repair, success, total] = parts[..] else {
            return Err(SchemeError::Syntax(s.to_string()));
        };
        Scheme::new(k, repair, success, total)
    }
}

/// Which implementation coded a segment; stored with the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CodecKind {
    /// `reed-solomon-erasure` 6, default (portable) build, GF(2^8).
    ReedSolomonErasure,
    /// `reed-solomon-simd` 3, run-time SIMD dispatch, GF(2^16) FFT-based.
    #[default]
    ReedSolomonSimd,
}

impl fmt::Display for CodecKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ReedSolomonErasure => "reed-solomon-erasure",
            Self::ReedSolomonSimd => "reed-solomon-simd",
        })
    }
}

impl FromStr for CodecKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "reed-solomon-erasure" => Ok(Self::ReedSolomonErasure),
            "reed-solomon-simd" => Ok(Self::ReedSolomonSimd),
            other => Err(format!(
                "unknown codec `{other}` (use reed-solomon-simd or reed-solomon-erasure)"
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("{codec}: {reason}")]
    Failed { codec: CodecKind, reason: String },
    #[error("{have} shards present, {need} needed to decode")]
    NotEnoughShards { have: usize, need: usize },
    #[error("shard {index} is {len} bytes, expected {expected}")]
    ShardSize {
        index: usize,
        len: usize,
        expected: usize,
    },
}

/// One stripe coder for a fixed `k`, `total` and shard size. Stateful so that
/// implementations can reuse their work buffers from stripe to stripe.
pub trait Codec: Send {
    fn kind(&self) -> CodecKind;

    /// Computes the `total - k` parity shards of the `k` data shards.
    fn encode(&mut self, data: &[&[u8]], parity: &mut [Vec<u8>]) -> Result<(), CodecError>;

    /// `shards` has `total` entries; fills every missing data shard (indices `< k`)
    /// from any `k` present ones. Parity entries may be left missing.
    fn reconstruct_data(&mut self, shards: &mut [Option<Vec<u8>>]) -> Result<(), CodecError>;
}

impl CodecKind {
    /// A coder for `k` data and `parity` parity shards of `shard_size` bytes
    /// (`shard_size` must be even and non-zero).
    pub fn coder(
        self,
        k: usize,
        parity: usize,
        shard_size: usize,
    ) -> Result<Box<dyn Codec>, CodecError> {
        let failed = |reason: String| CodecError::Failed {
            codec: self,
            reason,
        };
        if shard_size == 0 || !shard_size.is_multiple_of(2) {
            return Err(failed(format!(
                "shard size {shard_size} must be even and non-zero"
            )));
        }
        Ok(match self {
            Self::ReedSolomonErasure => Box::new(ErasureCodec {
                rs: reed_solomon_erasure::galois_8::ReedSolomon::new(k, parity)
                    .map_err(|e| failed(format!("{e:?}")))?,
                k,
                parity,
                shard_size,
            }),
            Self::ReedSolomonSimd => {
                if !reed_solomon_simd::ReedSolomonEncoder::supports(k, parity) {
                    return Err(failed(format!("{k} data and {parity} parity shards")));
                }
                Box::new(SimdCodec {
                    k,
                    parity,
                    shard_size,
                    encoder: None,
                    decoder: None,
                })
            }
        })
    }
}

fn check_sizes<'a>(
    shards: impl Iterator<Item = &'a [u8]>,
    expected: usize,
) -> Result<(), CodecError> {
    for (index, s) in shards.enumerate() {
        if s.len() != expected {
            return Err(CodecError::ShardSize {
                index,
                len: s.len(),
                expected,
            });
        }
    }
    Ok(())
}

fn count_present(shards: &[Option<Vec<u8>>], k: usize) -> Result<(), CodecError> {
    let have = shards.iter().filter(|s| s.is_some()).count();
    if have < k {
        return Err(CodecError::NotEnoughShards { have, need: k });
    }
    Ok(())
}

/// What every codec's `encode` checks first: `k` data shards of `shard_size` bytes and
/// room for `parity` parity shards.
fn check_encode(
    data: &[&[u8]],
    parity: &[Vec<u8>],
    (k, parity_count, shard_size): (usize, usize, usize),
) -> Result<(), CodecError> {
    check_sizes(data.iter().copied(), shard_size)?;
    if data.len() != k || parity.len() != parity_count {
        return Err(CodecError::NotEnoughShards {
            have: data.len(),
            need: k,
        });
    }
    Ok(())
}

struct ErasureCodec {
    rs: reed_solomon_erasure::galois_8::ReedSolomon,
    k: usize,
    parity: usize,
    shard_size: usize,
}

impl Codec for ErasureCodec {
    fn kind(&self) -> CodecKind {
        CodecKind::ReedSolomonErasure
    }

    fn encode(&mut self, data: &[&[u8]], parity: &mut [Vec<u8>]) -> Result<(), CodecError> {
        check_encode(data, parity, (self.k, self.parity, self.shard_size))?;
        for p in parity.iter_mut() {
            p.resize(self.shard_size, 0);
        }
        self.rs
            .encode_sep(data, parity)
            .map_err(|e| CodecError::Failed {
                codec: self.kind(),
                reason: format!("{e:?}"),
            })
    }

    fn reconstruct_data(&mut self, shards: &mut [Option<Vec<u8>>]) -> Result<(), CodecError> {
        count_present(shards, self.k)?;
        check_sizes(
            shards.iter().flatten().map(|v| v.as_slice()),
            self.shard_size,
        )?;
        self.rs
            .reconstruct_data(shards)
            .map_err(|e| CodecError::Failed {
                codec: self.kind(),
                reason: format!("{e:?}"),
            })
    }
}

struct SimdCodec {
    k: usize,
    parity: usize,
    shard_size: usize,
    encoder: Option<reed_solomon_simd::ReedSolomonEncoder>,
    decoder: Option<reed_solomon_simd::ReedSolomonDecoder>,
}

impl SimdCodec {
    fn fail(e: reed_solomon_simd::Error) -> CodecError {
        CodecError::Failed {
            codec: CodecKind::ReedSolomonSimd,
            reason: e.to_string(),
        }
    }
}

impl Codec for SimdCodec {
    fn kind(&self) -> CodecKind {
        CodecKind::ReedSolomonSimd
    }

    fn encode(&mut self, data: &[&[u8]], parity: &mut [Vec<u8>]) -> Result<(), CodecError> {
        check_encode(data, parity, (self.k, self.parity, self.shard_size))?;
        let enc = match &mut self.encoder {
            Some(e) => {
                e.reset(self.k, self.parity, self.shard_size)
                    .map_err(Self::fail)?;
                e
            }
            None => self.encoder.insert(
                reed_solomon_simd::ReedSolomonEncoder::new(self.k, self.parity, self.shard_size)
                    .map_err(Self::fail)?,
            ),
        };
        for d in data {
            enc.add_original_shard(d).map_err(Self::fail)?;
        }
        let result = enc.encode().map_err(Self::fail)?;
        for (out, rec) in parity.iter_mut().zip(result.recovery_iter()) {
            out.clear();
            out.extend_from_slice(rec);
        }
        Ok(())
    }

    fn reconstruct_data(&mut self, shards: &mut [Option<Vec<u8>>]) -> Result<(), CodecError> {
        count_present(shards, self.k)?;
        check_sizes(
            shards.iter().flatten().map(|v| v.as_slice()),
            self.shard_size,
        )?;
        if shards[..self.k].iter().all(|s| s.is_some()) {
            return Ok(());
        }
        let dec = match &mut self.decoder {
            Some(d) => {
                d.reset(self.k, self.parity, self.shard_size)
                    .map_err(Self::fail)?;
                d
            }
            None => self.decoder.insert(
                reed_solomon_simd::ReedSolomonDecoder::new(self.k, self.parity, self.shard_size)
                    .map_err(Self::fail)?,
            ),
        };
        for (i, s) in shards.iter().enumerate() {
            if let Some(s) = s {
                if i < self.k {
                    dec.add_original_shard(i, s).map_err(Self::fail)?;
                } else if i - self.k < self.parity {
                    dec.add_recovery_shard(i - self.k, s).map_err(Self::fail)?;
                }
            }
        }
        let result = dec.decode().map_err(Self::fail)?;
        let restored: Vec<(usize, Vec<u8>)> = result
            .restored_original_iter()
            .map(|(i, d)| (i, d.to_vec()))
            .collect();
        drop(result);
        for (i, d) in restored {
            if let Some(slot) = shards.get_mut(i) {
                *slot = Some(d);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_small_segment_gets_a_fitted_scheme_with_the_same_margins() {
        let catalog: Scheme = "8/12/16/24".parse().unwrap();
        let fit = |sealed| catalog.fitted(sealed, 4096).to_string();
        assert_eq!(fit(0), "1/5/9/10");
        assert_eq!(fit(300), "1/5/9/10");
        assert_eq!(fit(4096), "1/5/9/10");
        assert_eq!(fit(4097), "2/6/10/12");
        assert_eq!(fit(7 * 4096), "7/11/15/22");
        assert_eq!(fit(8 * 4096), "8/12/16/24");
        assert_eq!(fit(1 << 30), "8/12/16/24");
        for sealed in [1, 5000, 20_000, 1 << 20] {
            let s = catalog.fitted(sealed, 4096);
            s.validate().unwrap();
            assert_eq!(s.success - s.k, catalog.success - catalog.k);
            assert_eq!(s.repair - s.k, catalog.repair - catalog.k);
        }
        // A scheme without upload slack keeps none, and still one piece beyond k.
        let tight: Scheme = "2/3/4/4".parse().unwrap();
        assert_eq!(tight.fitted(10, 4096).to_string(), "1/2/3/3");
        let bare: Scheme = "2/2/2/3".parse().unwrap();
        assert_eq!(bare.fitted(10, 4096).to_string(), "1/1/1/2");
    }
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn scheme_parses_and_validates() {
        assert_eq!("29/35/80/110".parse::<Scheme>().unwrap(), Scheme::default());
        assert!(matches!(
            "29/35/80".parse::<Scheme>(),
            Err(SchemeError::Syntax(_))
        ));
        assert!(matches!(
            "a/b/c/d".parse::<Scheme>(),
            Err(SchemeError::Syntax(_))
        ));
        for bad in ["0/1/2/3", "5/4/6/7", "3/4/8/7", "3/3/3/3", "29/35/80/300"] {
            assert!(
                matches!(bad.parse::<Scheme>(), Err(SchemeError::Invalid(..))),
                "{bad}"
            );
        }
        assert!("3/5/7/10".parse::<Scheme>().is_ok());
    }

    #[test]
    fn shrinking_keeps_invariants_and_is_monotone() {
        for s in [
            Scheme::default(),
            "3/5/7/10".parse().unwrap(),
            "4/6/8/12".parse().unwrap(),
            "3/3/8/12".parse().unwrap(),
            "1/1/1/2".parse().unwrap(),
            "10/10/10/11".parse().unwrap(),
        ] {
            assert_eq!(s.shrink_to(usize::from(s.total)), Some(s));
            assert_eq!(s.shrink_to(100_000), Some(s));
            assert_eq!(s.shrink_to(1), None);
            assert_eq!(s.shrink_to(0), None);
            let mut prev = s;
            for n in (2..usize::from(s.total)).rev() {
                let t = s.shrink_to(n).unwrap();
                t.validate().unwrap();
                assert_eq!(usize::from(t.total), n, "{s} on {n}");
                assert!(
                    t.k <= prev.k
                        && t.repair <= prev.repair
                        && t.success <= prev.success
                        && t.total < prev.total,
                    "{s}: {prev} then {t}"
                );
                prev = t;
            }
        }
    }

    #[test]
    fn shrinking_gives_up_total_then_success_and_only_then_k() {
        let s: Scheme = "4/6/8/12".parse().unwrap();
        let on = |n: usize| s.shrink_to(n).unwrap().to_string();
        // Total first, down to success: k, repair and success are kept.
        assert_eq!(on(11), "4/6/8/11");
        assert_eq!(on(8), "4/6/8/8");
        // Then success, down to repair.
        assert_eq!(on(7), "4/6/7/7");
        assert_eq!(on(6), "4/6/6/6");
        // Only then k, keeping the repair margin (2 spare pieces) while it can.
        assert_eq!(on(5), "3/5/5/5");
        assert_eq!(on(3), "1/3/3/3");
        assert_eq!(on(2), "1/2/2/2");

        let d = Scheme::default();
        let on = |n: usize| d.shrink_to(n).unwrap().to_string();
        assert_eq!(on(100), "29/35/80/100");
        assert_eq!(on(80), "29/35/80/80");
        assert_eq!(on(50), "29/35/50/50");
        assert_eq!(on(35), "29/35/35/35");
        assert_eq!(on(34), "28/34/34/34");
        // A small network keeps the 6 spare pieces of the requested repair margin.
        assert_eq!(on(12), "6/12/12/12");
        assert_eq!(on(7), "1/7/7/7");

        // A scheme without a repair margin still survives one loss.
        let tight: Scheme = "3/3/8/12".parse().unwrap();
        assert_eq!(tight.shrink_to(10).unwrap().to_string(), "3/3/8/10");
        assert_eq!(tight.shrink_to(3).unwrap().to_string(), "2/3/3/3");
    }

    fn stripe(k: usize, size: usize, seed: u8) -> Vec<Vec<u8>> {
        (0..k)
            .map(|i| {
                (0..size)
                    .map(|j| (j as u8).wrapping_mul(seed).wrapping_add(i as u8))
                    .collect()
            })
            .collect()
    }

    /// Encodes `data` with `kind`, drops the shards at `lost`, and returns the data shards
    /// `kind` rebuilds from the rest.
    fn reconstruct(
        kind: CodecKind,
        data: &[Vec<u8>],
        parity: usize,
        lost: &[usize],
    ) -> Vec<Vec<u8>> {
        let (k, size) = (data.len(), data[0].len());
        let mut c = kind.coder(k, parity, size).unwrap();
        let refs: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
        let mut par = vec![Vec::new(); parity];
        c.encode(&refs, &mut par).unwrap();
        let mut shards: Vec<Option<Vec<u8>>> =
            data.iter().chain(par.iter()).cloned().map(Some).collect();
        for &i in lost {
            shards[i] = None;
        }
        c.reconstruct_data(&mut shards).unwrap();
        shards
            .into_iter()
            .take(k)
            .map(|s| s.unwrap_or_default())
            .collect()
    }

    fn round_trip(kind: CodecKind, k: usize, parity: usize, size: usize, lost: &[usize]) {
        let mut c = kind.coder(k, parity, size).unwrap();
        let data = stripe(k, size, 7);
        let refs: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
        let mut par = vec![Vec::new(); parity];
        c.encode(&refs, &mut par).unwrap();
        let mut shards: Vec<Option<Vec<u8>>> = data
            .iter()
            .cloned()
            .chain(par.iter().cloned())
            .map(Some)
            .collect();
        for &i in lost {
            shards[i] = None;
        }
        c.reconstruct_data(&mut shards).unwrap();
        for i in 0..k {
            assert_eq!(
                shards[i].as_deref(),
                Some(data[i].as_slice()),
                "{kind} shard {i}"
            );
        }
    }

    #[test]
    fn both_codecs_rebuild_from_any_k() {
        for kind in [CodecKind::ReedSolomonErasure, CodecKind::ReedSolomonSimd] {
            round_trip(kind, 3, 7, 64, &[0, 2, 4, 5, 6, 7, 8]);
            round_trip(kind, 3, 7, 64, &[]);
            round_trip(
                kind,
                29,
                81,
                128,
                &(0..29).chain(60..110).collect::<Vec<_>>(),
            );
            // Reused coder across stripes.
            let mut c = kind.coder(4, 2, 32).unwrap();
            for seed in 1..4 {
                let data = stripe(4, 32, seed);
                let refs: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
                let mut par = vec![Vec::new(); 2];
                c.encode(&refs, &mut par).unwrap();
                let mut shards: Vec<Option<Vec<u8>>> =
                    data.iter().cloned().chain(par).map(Some).collect();
                shards[1] = None;
                shards[3] = None;
                c.reconstruct_data(&mut shards).unwrap();
                assert_eq!(shards[1].as_deref(), Some(data[1].as_slice()));
            }
        }
    }

    #[test]
    fn too_few_shards_is_an_error_not_garbage() {
        for kind in [CodecKind::ReedSolomonErasure, CodecKind::ReedSolomonSimd] {
            let mut c = kind.coder(3, 2, 16).unwrap();
            let mut shards = vec![Some(vec![0u8; 16]), None, None, Some(vec![1; 16]), None];
            assert_eq!(
                c.reconstruct_data(&mut shards).unwrap_err(),
                CodecError::NotEnoughShards { have: 2, need: 3 }
            );
            let mut wrong = vec![
                Some(vec![0u8; 16]),
                Some(vec![0u8; 15]),
                None,
                Some(vec![1; 16]),
                None,
            ];
            assert!(matches!(
                c.reconstruct_data(&mut wrong),
                Err(CodecError::ShardSize { .. })
            ));
            assert!(kind.coder(3, 2, 15).is_err());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn codecs_agree_on_reconstruction(k in 1usize..12, parity in 1usize..12, seed: u8, lost_seed: u64) {
            let mut lost: Vec<usize> = (0..k + parity).collect();
            // Deterministic shuffle, then lose `parity` shards.
            let mut rng = shoal_test_kit::Xorshift::new(lost_seed);
            for i in (1..lost.len()).rev() {
                lost.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
            }
            lost.truncate(parity);
            // Each codec rebuilds the stripe from the same survivors; the two must give
            // the same data shards, and those must be the stripe's.
            let data = stripe(k, 64, seed);
            let erasure = reconstruct(CodecKind::ReedSolomonErasure, &data, parity, &lost);
            let simd = reconstruct(CodecKind::ReedSolomonSimd, &data, parity, &lost);
            prop_assert_eq!(&erasure, &simd, "the codecs disagree (lost {:?})", lost);
            prop_assert_eq!(&erasure, &data);
        }
    }
}
