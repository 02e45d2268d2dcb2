//! Identity generation at several proof-of-work difficulties, a record publisher key's
//! work (one attempt, and a search at difficulty 12), and sign/verify.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use shoal_proto::ids::{NodeId, PieceId, SegmentRoot};
use shoal_proto::messages::DeleteOrder;
use shoal_proto::{Identity, Signed};

fn generation(c: &mut Criterion) {
    let mut g = c.benchmark_group("identity_generate");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    for d in [8u32, 12, 16] {
        g.bench_with_input(BenchmarkId::from_parameter(d), &d, |b, &d| {
            b.iter(|| Identity::generate(d).unwrap())
        });
    }
    g.finish();
    // A publisher key's work: one attempt (one hash), and a whole search.
    let publisher = Identity::random();
    c.bench_function("publisher_work_one_attempt", |b| {
        let mut nonce = 0u64;
        b.iter(|| {
            nonce = nonce.wrapping_add(1);
            shoal_proto::work::publisher_work_bits(publisher.public_key(), nonce)
        })
    });
    // One attempt of the search: key derivation plus node-id hash.
    c.bench_function("identity_one_attempt", |b| {
        let mut seed = [0u8; 32];
        b.iter(|| {
            seed[0] = seed[0].wrapping_add(1);
            Identity::from_seed(seed).node_id()
        })
    });
}

fn sign_verify(c: &mut Criterion) {
    let id = Identity::random();
    let body = DeleteOrder {
        header: shoal_proto::messages::OrderHeader {
            node_id: NodeId([2; 32]),
            owner_key: *id.public_key(),
            timestamp_ms: 1,
            nonce: shoal_proto::Nonce([4; 16]),
        },
        piece_id: PieceId::derive(&SegmentRoot([1; 32]), &NodeId([2; 32]), 3),
    };
    c.bench_function("sign_delete_order", |b| {
        b.iter(|| Signed::sign(body.clone(), &id).unwrap())
    });
    let signed = Signed::sign(body.clone(), &id).unwrap();
    let sig = *signed.signature();
    c.bench_function("verify_delete_order", |b| {
        b.iter(|| Signed::verify(body.clone(), sig).unwrap())
    });
}

criterion_group!(benches, generation, sign_verify);
criterion_main!(benches);
