//! S3 listings over a catalog of 100,000 objects (`SHOAL_BENCH_OBJECTS`), in process:
//! the catalog read and the paging rules a ListObjectsV2 request runs, without HTTP.
//! - `folded/seek`: `prefix=big/`, `delimiter=/` over 500 sub-prefixes of 200 keys each
//!   (a directory listing: 500 common prefixes), as the gateway runs it;
//! - `folded/scan`: the same page with seeking turned off (every key under the prefix
//!   read, each folded row skipped undecoded), for the ratio in one run;
//! - `flat/1000`: a plain page of 1,000 keys.
//!
//! And the same two listings through HTTP, as an S3 client sees them: a real gateway
//! ([`Gateway`], hyper) on 127.0.0.1 over the same catalog, asked over one kept-alive
//! HTTP/1.1 connection with SigV4-signed ListObjectsV2 requests (the test kit's signer,
//! [`shoal_test_kit::sigv4`]; the gateway checks every signature), the whole XML body
//! read:
//! - `http/folded`: `GET /bkt?list-type=2&prefix=big/&delimiter=/` (500 common prefixes);
//! - `http/flat/1000`: `GET /bkt?list-type=2&prefix=big/` (a page of 1,000 keys).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::{BodyExt, Empty};
use shoal_test_kit::sigv4;
use uplink::catalog::{
    Catalog, CatalogError, Content, ObjectCursor, ObjectEntry, RawObject, Version,
};
use uplink::crypto::{ObjectId, WrappedKey};
use uplink::testing::MemoryPieceStore;
use uplink::{Access, RootSecret, StaticNodes, Uplink, UplinkConfig};
use uplink_gateway::listing::{Cursor, Entry, Resume, page};
use uplink_gateway::{Gateway, GatewayConfig};

const ACCESS_KEY: &str = "bench-access";
const SECRET_KEY: &str = "bench-secret";

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

/// One page as the gateway reads it: one read transaction, the objects returned decoded
/// as a listing shows them ([`RawObject::summary`]).
fn list(catalog: &Catalog, delimiter: Option<&str>, seek: bool) -> (usize, usize) {
    let raw = catalog
        .read_objects("bkt", |c| {
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
    let p = raw.try_map(|o| o.summary("bkt")).unwrap();
    (p.prefixes().count(), p.objects().count())
}

/// An uplink over an in-memory network on `catalog`, with bucket `bkt`.
fn uplink_on(catalog: Catalog) -> Uplink {
    let store = MemoryPieceStore::with_nodes(8);
    let config = UplinkConfig {
        scheme: "2/3/4/6".parse().unwrap(),
        ..UplinkConfig::default()
    };
    let up = Uplink::new(
        Access::new(RootSecret::from_bytes([7; 32]), vec![]),
        Arc::new(store.clone()),
        Arc::new(StaticNodes(store.candidates())),
        catalog,
        config,
    )
    .unwrap();
    up.create_bucket("bkt").unwrap();
    up
}

/// A client of the gateway at `addr`: one HTTP/1.1 connection, kept alive.
struct Client {
    addr: SocketAddr,
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Self {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        Self { addr, sender }
    }

    /// A SigV4-signed GET of `path` with `query`; the status and the whole body.
    async fn get(&mut self, path: &str, query: &[(&str, &str)]) -> (u16, Bytes) {
        let query: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let host = self.addr.to_string();
        let payload = "UNSIGNED-PAYLOAD";
        let unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (auth, stamp) = sigv4::authorization(
            ACCESS_KEY, SECRET_KEY, "GET", path, &query, &host, payload, unix,
        );
        let uri = format!(
            "{}?{}",
            sigv4::uri_encode(path, true),
            query
                .iter()
                .map(|(k, v)| format!(
                    "{}={}",
                    sigv4::uri_encode(k, false),
                    sigv4::uri_encode(v, false)
                ))
                .collect::<Vec<_>>()
                .join("&")
        );
        let req = hyper::Request::builder()
            .method("GET")
            .uri(uri)
            .header("host", host)
            .header("x-amz-date", stamp)
            .header("x-amz-content-sha256", payload)
            .header("authorization", auth)
            .body(Empty::<Bytes>::new())
            .unwrap();
        self.sender.ready().await.unwrap();
        let resp = self.sender.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    }
}

/// How many times `needle` occurs in `hay`.
fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

fn bench(c: &mut Criterion) {
    let n: u64 = std::env::var("SHOAL_BENCH_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let catalog = Catalog::temporary().unwrap();
    let uplink = uplink_on(catalog.clone());
    let dirs = 500;
    let t = std::time::Instant::now();
    for i in 0..n {
        let key = format!("big/d{:03}/f{:06}", i % dirs, i / dirs);
        catalog
            .put_object_local("bkt", entry(key, i), |_| {})
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

    // The same listings through a real gateway and HTTP.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut config = GatewayConfig::new(ACCESS_KEY.into(), SECRET_KEY.into());
    // Nothing in the background while the figures are taken (each runs once at
    // start-up, then not again within the bench).
    config.pull_interval = Duration::from_secs(24 * 3600);
    config.renew_interval = Duration::from_secs(24 * 3600);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let addr = rt.block_on(async {
        let gateway = Gateway::bind(uplink, "127.0.0.1:0".parse().unwrap(), config)
            .await
            .unwrap();
        let addr = gateway.local_addr().unwrap();
        tokio::spawn(gateway.run(async {
            let _ = stopped.await;
        }));
        addr
    });
    let mut client = rt.block_on(Client::connect(addr));
    let folded = [("list-type", "2"), ("prefix", "big/"), ("delimiter", "/")];
    let flat = [("list-type", "2"), ("prefix", "big/")];
    // Checked once, outside the timing: the answers are the pages the figures are of.
    let (status, body) = rt.block_on(client.get("/bkt", &folded));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(count(&body, b"<CommonPrefixes>"), dirs as usize);
    assert_eq!(count(&body, b"<Key>"), 0);
    let (status, body) = rt.block_on(client.get("/bkt", &flat));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(count(&body, b"<Key>"), 1000);
    eprintln!(
        "http/flat/1000 answers {} bytes; http/folded {} bytes",
        body.len(),
        rt.block_on(client.get("/bkt", &folded)).1.len()
    );

    let mut g = c.benchmark_group("listing");
    g.bench_function("http/folded", |b| {
        b.iter(|| {
            let (status, body) = rt.block_on(client.get("/bkt", &folded));
            assert_eq!(status, 200);
            body.len()
        })
    });
    g.bench_function("http/flat/1000", |b| {
        b.iter(|| {
            let (status, body) = rt.block_on(client.get("/bkt", &flat));
            assert_eq!(status, 200);
            body.len()
        })
    });
    g.finish();
    let _ = stop.send(());
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
