//! Throughput of the uplink's per-byte work on one core, at k = 29, n = 80, for both
//! erasure codecs in one run:
//! - `upload/<codec>`: encrypt (AES-256-GCM) + erasure-encode + BLAKE3 piece hashing of
//!   every one of the 80 shards: what an upload costs per plaintext byte;
//! - `download/<codec>`: verify 29 shards per stripe + decode with 29 data shards lost
//!   (the worst case: all from parity) + decrypt;
//! - `stage/*`: each step alone, to see where time goes.
//!
//! Throughput is in plaintext bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shoal_proto::piece_hash::{PieceHasher, block_hash};
use uplink::catalog::SegmentInfo;
use uplink::codec::{CodecKind, Scheme};
use uplink::crypto::{BlockCipher, ObjectId, ObjectKey, PLAIN_BLOCK, seal_all};
use uplink::segment::{BlockOpener, SegmentEncoder, Stripe, StripeDecoder, plan_range};

const BLOCKS: usize = 29 * 4; // 4 stripes of 29 × 64 KiB: 7.4 MiB of plaintext
const CODECS: [CodecKind; 2] = [CodecKind::ReedSolomonSimd, CodecKind::ReedSolomonErasure];

fn scheme() -> Scheme {
    Scheme::new(29, 35, 80, 80).unwrap()
}

fn plaintext() -> Vec<u8> {
    (0..BLOCKS * PLAIN_BLOCK)
        .map(|i| (i * 131 + i / 7) as u8)
        .collect()
}

fn encode(cipher: &BlockCipher, codec: CodecKind, plain: &[u8], hash: bool) -> (Vec<Stripe>, u64) {
    let mut enc = SegmentEncoder::new(cipher, codec, scheme(), 64 * 1024, 0).unwrap();
    let mut fresh = Vec::new();
    let mut stripes = Vec::new();
    let mut hashers: Vec<PieceHasher> = (0..80).map(|_| PieceHasher::new(64 * 1024)).collect();
    // Each new stripe's 80 shards are hashed once, as the piece uploads do.
    // With `hash`, stripes are dropped after hashing (as after sending); without, they
    // are returned for the download benchmark.
    let mut take = |fresh: &mut Vec<Stripe>, stripes: &mut Vec<Stripe>| {
        for st in fresh.drain(..) {
            if hash {
                for (h, shard) in hashers.iter_mut().zip(&st) {
                    h.update(shard);
                }
            }
            // Uploads send and free each stripe at once; keep them only for download.
            if !hash {
                stripes.push(st);
            }
        }
    };
    let blocks: Vec<&[u8]> = plain.chunks(PLAIN_BLOCK).collect();
    for (i, b) in blocks.iter().enumerate() {
        enc.push_block(b, i + 1 == blocks.len(), &mut fresh)
            .unwrap();
        take(&mut fresh, &mut stripes);
    }
    let (_, sealed) = enc.finish(&mut fresh).unwrap();
    take(&mut fresh, &mut stripes);
    (stripes, sealed)
}

fn bench(c: &mut Criterion) {
    let plain = plaintext();
    let key = ObjectKey::random();
    let cipher = BlockCipher::new(&key, ObjectId::random());

    let mut g = c.benchmark_group("pipeline-29-80");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(plain.len() as u64));
    for codec in CODECS {
        g.bench_function(format!("upload/{codec}"), |b| {
            b.iter(|| encode(&cipher, codec, &plain, true))
        });
    }
    for codec in CODECS {
        // Stripes as stored: keep only parity shards 29..58, i.e. all data shards lost.
        let (stripes, sealed) = encode(&cipher, codec, &plain, false);
        let seg = SegmentInfo {
            index: 0,
            plain_size: plain.len() as u64,
            sealed_size: sealed,
            codec,
            scheme: scheme(),
            shard_size: 64 * 1024,
            piece_size: stripes.len() as u64 * 64 * 1024,
            pieces: Vec::new(),
        };
        let hashes: Vec<Vec<[u8; 32]>> = stripes
            .iter()
            .map(|st| st.iter().map(|s| block_hash(s)).collect())
            .collect();
        g.bench_function(format!("download/{codec}"), |b| {
            b.iter(|| {
                let plan = plan_range(&seg, 0, seg.plain_size);
                let mut dec = StripeDecoder::new(codec, scheme(), 64 * 1024).unwrap();
                let mut opener = BlockOpener::new(&cipher, &seg, true, &plan);
                let mut out = Vec::with_capacity(plain.len());
                let mut data = Vec::new();
                for (st, h) in stripes.iter().zip(&hashes) {
                    let shards: Vec<(u16, Bytes)> = (29..58)
                        .map(|i| {
                            assert_eq!(block_hash(&st[i]), h[i]);
                            (i as u16, st[i].clone())
                        })
                        .collect();
                    data.clear();
                    dec.decode(&shards, &mut data).unwrap();
                    opener.push(&data, &mut out).unwrap();
                }
                assert_eq!(out.len(), plain.len());
                out
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("stage-29-80");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(plain.len() as u64));
    g.bench_function("encrypt", |b| b.iter(|| seal_all(&cipher, 0, &plain, true)));
    let sealed = seal_all(&cipher, 0, &plain, true);
    g.bench_function("hash-80-of-29", |b| {
        // Hashing covers 80/29 of the sealed bytes: every shard of every piece.
        b.iter(|| {
            let mut h = PieceHasher::new(64 * 1024);
            for _ in 0..80 {
                h.update(&sealed[..sealed.len() / 29]);
            }
            h.finish()
        })
    });
    for codec in CODECS {
        let mut coder = codec.coder(29, 51, 64 * 1024).unwrap();
        let data: Vec<&[u8]> = sealed.chunks(64 * 1024).take(29).collect();
        let stripes = BLOCKS / 29;
        g.bench_function(format!("rs-encode/{codec}"), |b| {
            b.iter(|| {
                let mut parity = vec![Vec::new(); 51];
                for _ in 0..stripes {
                    coder.encode(&data, &mut parity).unwrap();
                }
                parity
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
