//! Fuzzing on stable Rust: the input generator shared by every crate's fuzz targets, and
//! the targets of this crate's decoders.
//!
//! ```text
//!   mod (Target, generate/mutate, round_trip)  <-  targets  ->  seeds
//! ```
//!
//! `mod` holds the generator and the helpers every crate's targets use; `targets`
//! (this crate's decoders) imports them and [`seeds`] (valid inputs, also used by other
//! crates' targets); `seeds` imports neither.
//!
//! A [`Target`] is one decoder fed untrusted bytes: valid `seeds` to start from and a
//! `run` function that must give an error or a value for any input, never a panic, a
//! hang or an unbounded allocation. Each crate lists its targets (`fuzz::targets()`);
//! a proptest unit test beside them runs a few hundred cases in `cargo test`, and
//! `shoal-fuzz` (in the tests crate) runs all of them for as long as it is told.
//!
//! Inputs come from [`generate`]: random bytes, or a seed changed by one to four
//! structured mutations (truncate, flip bits, insert, extend, delete, repeat a range to
//! inflate counts, write huge varints and lengths, insert tokens that text parsers care
//! about). Case `i` of a target under a run seed is a pure function of the three
//! ([`case_rng`]), so any failure reproduces from its seed and index.

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

/// Largest input a mutation may grow to (every network message decoded in one piece is
/// bounded by far less than a gRPC message; text inputs are smaller still).
pub const MAX_INPUT: usize = 64 * 1024;

/// One decoder under fuzzing.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// `crate.decoder`, unique across the workspace.
    pub name: &'static str,
    /// Valid inputs that mutations start from.
    pub seeds: fn() -> Vec<Vec<u8>>,
    /// Decodes one input; returns whatever the decoder says, panics only on a bug.
    pub run: fn(&[u8]),
}

/// The generator for case `index` of `target` under the run seed `seed`.
pub fn case_rng(seed: u64, target: &str, index: u64) -> SmallRng {
    let mut h = blake3::Hasher::new_derive_key("shoal fuzz case v1");
    h.update(&seed.to_le_bytes());
    h.update(target.as_bytes());
    h.update(&index.to_le_bytes());
    let mut s = [0u8; 8];
    s.copy_from_slice(&h.finalize().as_bytes()[..8]);
    SmallRng::seed_from_u64(u64::from_le_bytes(s))
}

/// Case `index` of a target with these seeds under run seed `seed`, into `out`.
pub fn case(seed: u64, target: &Target, seeds: &[Vec<u8>], index: u64, out: &mut Vec<u8>) {
    generate(&mut case_rng(seed, target.name, index), seeds, out);
}

/// What each crate's proptest checks of its own targets: every target on the random
/// bytes `raw`, then [`exercise`]d from `seed` for `cases` mutations.
pub fn check_all(targets: &[Target], raw: &[u8], seed: u64, cases: u64) {
    for t in targets {
        (t.run)(raw);
        exercise(t, seed, cases);
    }
}

/// Runs `target` on `cases` generated inputs and on each of its seeds (the proptest
/// unit tests and quick checks call this).
pub fn exercise(target: &Target, seed: u64, cases: u64) {
    let seeds = (target.seeds)();
    for s in &seeds {
        (target.run)(s);
    }
    let mut buf = Vec::new();
    for i in 0..cases {
        case(seed, target, &seeds, i, &mut buf);
        (target.run)(&buf);
    }
}

/// Tokens that text decoders (TOML, grants, hosts, tokens, headers) treat specially.
const TOKENS: &[&[u8]] = &[
    b"\"",
    b"'",
    b"=",
    b"[",
    b"]",
    b"[[",
    b"{",
    b"}",
    b",",
    b"\n",
    b"\r\n",
    b"\\",
    b"\\u",
    b"#",
    b":",
    b"::",
    b"@",
    b"/",
    b"..",
    b"%",
    b"%ff",
    b"%00",
    b".",
    b"-",
    b"+",
    b"*",
    b"\0",
    b"\xc3\xa9",
    b"\xff",
    b"\xe2\x80\xae",
    b"0x",
    b"-1",
    b"0",
    b"65536",
    b"18446744073709551615",
    b"18446744073709551616",
    b"9223372036854775807",
    b"4294967295",
    b"-9223372036854775808",
    b"99999999999999999999999",
    b"1e999",
    b"nan",
    b"inf",
    b"true",
    b"W/",
    b"\"\"",
    b"\t",
    b" ",
    b"localhost",
    b"127.0.0.1:0",
    b"[::1]:1",
    b"0.0.0.0",
    b"shoal",
    b"SHOAL",
    b"=",
    b"==",
];

/// Numbers at the edges of the integer types.
const NUMBERS: &[&[u8]] = &[
    b"0",
    b"1",
    b"255",
    b"256",
    b"65535",
    b"65536",
    b"4294967295",
    b"4294967296",
    b"9223372036854775807",
    b"9223372036854775808",
    b"18446744073709551615",
    b"18446744073709551616",
];

/// Fills `out` with a new input: random bytes (one case in eight), or a seed changed by
/// one to four mutations.
pub fn generate(rng: &mut SmallRng, seeds: &[Vec<u8>], out: &mut Vec<u8>) {
    out.clear();
    if seeds.is_empty() || rng.random_range(0..8) == 0 {
        let len = if rng.random_bool(0.9) {
            rng.random_range(0..256)
        } else {
            rng.random_range(0..8192)
        };
        out.resize(len, 0);
        rng.fill(&mut out[..]);
        return;
    }
    out.extend_from_slice(&seeds[rng.random_range(0..seeds.len())]);
    // One mutation half the time: structured inputs (JSON, TOML, protobuf) mostly stay
    // well formed, so cases reach the checks past the parser.
    let n = if rng.random_bool(0.5) {
        1
    } else {
        rng.random_range(2..=4)
    };
    for _ in 0..n {
        mutate(rng, seeds, out);
    }
    out.truncate(MAX_INPUT);
}

/// A random position in `buf` (0 when empty).
fn pos(rng: &mut SmallRng, buf: &[u8]) -> usize {
    rng.random_range(0..=buf.len())
}

/// A random range within `buf`.
fn range(rng: &mut SmallRng, buf: &[u8]) -> std::ops::Range<usize> {
    let a = pos(rng, buf);
    let b = a + rng.random_range(0..=(buf.len() - a).min(64));
    a..b
}

/// Applies one structured mutation to `buf`.
pub fn mutate(rng: &mut SmallRng, seeds: &[Vec<u8>], buf: &mut Vec<u8>) {
    match rng.random_range(0..12) {
        // Truncate.
        0 => {
            let at = pos(rng, buf);
            buf.truncate(at);
        }
        // Flip one to eight bits.
        1 => {
            if !buf.is_empty() {
                for _ in 0..rng.random_range(1..=8) {
                    let i = rng.random_range(0..buf.len());
                    buf[i] ^= 1 << rng.random_range(0..8);
                }
            }
        }
        // Set a byte to a boundary value.
        2 => {
            if !buf.is_empty() {
                let i = rng.random_range(0..buf.len());
                buf[i] = [0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff][rng.random_range(0..6)];
            }
        }
        // Insert random bytes.
        3 => {
            let at = pos(rng, buf);
            let n = rng.random_range(1..=32);
            let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            buf.splice(at..at, bytes);
        }
        // Extend with a random tail.
        4 => {
            let n = rng.random_range(1..=1024);
            buf.extend((0..n).map(|_| rng.random::<u8>()));
        }
        // Delete a range.
        5 => {
            let r = range(rng, buf);
            buf.drain(r);
        }
        // Repeat a range many times: inflates repeated fields and counts.
        6 => {
            let r = range(rng, buf);
            let chunk = buf[r.clone()].to_vec();
            if !chunk.is_empty() {
                let times = rng.random_range(1..=(MAX_INPUT / chunk.len()).clamp(1, 4096));
                let mut grown = Vec::with_capacity(chunk.len() * times);
                for _ in 0..times {
                    grown.extend_from_slice(&chunk);
                }
                buf.splice(r.end..r.end, grown);
            }
        }
        // Overwrite with a huge length: a maximal varint, or a u32/u64 at either end.
        7 => {
            let huge: &[u8] = match rng.random_range(0..5) {
                0 => &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
                1 => &[0xff, 0xff, 0xff, 0xff, 0x0f],
                2 => &[
                    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
                ],
                3 => &[0xff, 0xff, 0xff, 0xff],
                _ => &[0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            };
            let at = pos(rng, buf);
            let end = (at + huge.len()).min(buf.len());
            buf.splice(at..end, huge.iter().copied());
        }
        // Insert a token text parsers care about.
        8 => {
            let at = pos(rng, buf);
            let t = TOKENS[rng.random_range(0..TOKENS.len())];
            buf.splice(at..at, t.iter().copied());
        }
        // Copy a range elsewhere.
        9 => {
            let r = range(rng, buf);
            let chunk = buf[r].to_vec();
            let at = pos(rng, buf);
            buf.splice(at..at, chunk);
        }
        // Replace a number written in text with a boundary value (sizes and counts in
        // JSON and TOML).
        11 => {
            let starts: Vec<usize> = (0..buf.len())
                .filter(|&i| buf[i].is_ascii_digit() && (i == 0 || !buf[i - 1].is_ascii_digit()))
                .collect();
            if !starts.is_empty() {
                let a = starts[rng.random_range(0..starts.len())];
                let b = a + buf[a..].iter().take_while(|c| c.is_ascii_digit()).count();
                let n = NUMBERS[rng.random_range(0..NUMBERS.len())];
                buf.splice(a..b, n.iter().copied());
            }
        }
        // Splice in part of another seed.
        _ => {
            if let Some(other) = seeds.get(rng.random_range(0..seeds.len().max(1))) {
                let r = range(rng, other);
                let at = pos(rng, buf);
                buf.splice(at..at, other[r].iter().copied());
            }
        }
    }
}

/// Lossy text of an input, for decoders of text.
pub fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// Checks a conversion from the wire: when it accepts `m`, the value converts back to a
/// message that it accepts again as the same value.
pub fn round_trip<P, T>(m: P)
where
    T: TryFrom<P> + PartialEq + std::fmt::Debug,
    for<'a> P: From<&'a T>,
{
    if let Ok(v) = T::try_from(m) {
        let again = T::try_from(P::from(&v));
        assert!(
            again.as_ref().is_ok_and(|a| *a == v),
            "{v:?} does not survive a round trip through the wire form"
        );
    }
}

pub(crate) fn decode<M: prost::Message + Default>(data: &[u8]) -> Option<M> {
    M::decode(data).ok()
}

pub mod seeds;
mod targets;

pub use targets::targets;

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::messages::{MutableRecord, NodeRecord, UploadOrder};
    use crate::signing::Signed;
    use crate::{pb, tls};

    #[test]
    fn seeds_decode_to_values() {
        // A seed that does not decode would leave its target fuzzing only the error path.
        for s in seeds::upload_requests() {
            assert!(decode::<pb::UploadRequest>(&s).is_some());
        }
        let o = seeds::upload_order();
        assert!(Signed::<UploadOrder>::try_from(o).is_ok());
        for s in seeds::node_record() {
            let r = decode::<pb::NodeRecord>(&s).map(Signed::<NodeRecord>::try_from);
            assert!(matches!(r, Some(Ok(_))), "{r:?}");
        }
        for s in seeds::mutable_record() {
            let r = decode::<pb::MutableRecord>(&s).map(Signed::<MutableRecord>::try_from);
            assert!(matches!(r, Some(Ok(_))), "{r:?}");
        }
        for s in seeds::pinned_peer().iter().take(3) {
            assert!(text(s).parse::<tls::PinnedPeer>().is_ok());
        }
    }

    #[test]
    fn cases_are_reproducible_from_seed_and_index() {
        let t = targets()[0];
        let seeds = (t.seeds)();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        case(42, &t, &seeds, 17, &mut a);
        case(42, &t, &seeds, 17, &mut b);
        assert_eq!(a, b);
        let differ = (0..20).any(|i| {
            case(42, &t, &seeds, i, &mut b);
            a != b
        });
        assert!(differ);
    }

    #[test]
    fn mutations_stay_within_the_input_bound() {
        let seeds = vec![vec![1u8; 1000]];
        let mut out = Vec::new();
        for i in 0..2000 {
            generate(&mut case_rng(1, "bound", i), &seeds, &mut out);
            assert!(out.len() <= MAX_INPUT);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Every decoder of this crate, on random bytes and on mutated seeds.
        #[test]
        fn decoders_give_an_error_or_a_value(
            raw in proptest::collection::vec(any::<u8>(), 0..512),
            seed in any::<u64>(),
        ) {
            check_all(&targets(), &raw, seed, 8);
        }
    }
}
