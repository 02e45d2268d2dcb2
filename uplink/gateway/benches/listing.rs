//! S3 listings over a catalog of 100,000 objects (`SHOAL_BENCH_OBJECTS`), in process:
//! the catalog read and the paging rules a ListObjectsV2 request runs, without HTTP.
//! - `folded/seek`: `prefix=big/`, `delimiter=/` over 500 sub-prefixes of 200 keys each
//!   (a directory listing: 500 common prefixes), as the gateway runs it;
//! - `folded/scan`: the same page with seeking turned off (every key under the prefix
//!   read, each folded row skipped undecoded), for the ratio in one run;
//! - `flat/1000`: a plain page of 1,000 keys.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;

use criterion::{Criterion, criterion_group, criterion_main};
use uplink::catalog::{
    Catalog, CatalogError, Content, ObjectCursor, ObjectEntry, RawObject, Version,
};
use uplink::crypto::{ObjectId, WrappedKey};
use uplink_gateway::listing::{Cursor, Entry, Resume, page};

fn entry(key: String, i: u64) -> ObjectEntry {
    ObjectEntry {
        key,
        size: 4096,
        created_ms: i,
        modified_ms: i,
        expires_ms: None,
        content_type: Some("application/octet-stream".into()),
        metadata: BTreeMap::new(),
        object_id: ObjectId([(i % 251) as u8; 16]),
        wrapped_key: WrappedKey {
            nonce: [2; 12],
            sealed: vec![3; 48],
        },
        content: Content::Inline {
            sealed: vec![4; 64],
        },
        version: Version::default(),
    }
}

/// The catalog's cursor with seeking turned off (it still starts at the prefix).
struct NoSeek<'a, 't>(&'a mut ObjectCursor<'t>, bool);

impl Cursor for NoSeek<'_, '_> {
    type Item = RawObject;
    type Error = CatalogError;
    fn next_entry(&mut self) -> Option<Entry<RawObject, CatalogError>> {
        self.0.next_entry()
    }
    fn seek(&mut self, key: &str) {
        if !self.1 {
            self.1 = true;
            self.0.seek(key);
        }
    }
}

/// One page as the gateway reads it: one read transaction, the objects kept decoded.
fn list(catalog: &Catalog, delimiter: Option<&str>, seek: bool) -> (usize, usize) {
    let raw = catalog
        .read_objects("b", |c| {
            if seek {
                page(c, "big/", delimiter, &Resume::Start, 1000)
            } else {
                page(
                    &mut NoSeek(c, false),
                    "big/",
                    delimiter,
                    &Resume::Start,
                    1000,
                )
            }
        })
        .unwrap();
    let p = raw.try_map(|o| o.decode("b")).unwrap();
    (p.prefixes().count(), p.objects().count())
}

fn bench(c: &mut Criterion) {
    let n: u64 = std::env::var("SHOAL_BENCH_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let catalog = Catalog::temporary().unwrap();
    let dirs = 500;
    let t = std::time::Instant::now();
    for i in 0..n {
        let key = format!("big/d{:03}/f{:06}", i % dirs, i / dirs);
        catalog
            .put_object_local("b", entry(key, i), |_| {})
            .unwrap();
    }
    catalog.flush().unwrap();
    eprintln!("{n} objects in {:?}", t.elapsed());

    let mut g = c.benchmark_group("listing");
    g.bench_function("folded/seek", |b| {
        b.iter(|| assert_eq!(list(&catalog, Some("/"), true), (dirs as usize, 0)))
    });
    g.bench_function("folded/scan", |b| {
        b.iter(|| assert_eq!(list(&catalog, Some("/"), false), (dirs as usize, 0)))
    });
    g.bench_function("flat/1000", |b| {
        b.iter(|| assert_eq!(list(&catalog, None, true), (0, 1000)))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
