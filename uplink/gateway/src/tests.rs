//! Tests of the gateway as a whole: a gateway (or its S3 service) on an uplink over
//! an in-memory network.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::background::sweep_once;
use super::config::GatewayConfig;
use super::server::Gateway;
use super::{multipart, s3};
use uplink::catalog::Catalog;
use uplink::testing::MemoryPieceStore;
use uplink::{Access, PutOptions, RootSecret, StaticNodes, Uplink, UplinkConfig};

fn memory_s3() -> (MemoryPieceStore, s3::ShoalS3) {
    let store = MemoryPieceStore::with_nodes(8);
    let config = UplinkConfig {
        scheme: "2/3/4/6".parse().unwrap(),
        segment_blocks: 4,
        ..UplinkConfig::default()
    };
    let catalog = Catalog::temporary().unwrap();
    let uploads = multipart::Uploads::new(catalog.db().clone());
    let up = Uplink::new(
        Access::new(RootSecret::from_bytes([7; 32]), vec![]),
        Arc::new(store.clone()),
        Arc::new(StaticNodes(store.candidates())),
        catalog,
        config,
    )
    .unwrap();
    up.create_bucket("bkt").unwrap();
    let s3 = s3::ShoalS3 {
        uplink: up,
        uploads,
        region: "us-east-1".into(),
    };
    (store, s3)
}

async fn stage(s3: &s3::ShoalS3, id: &str, number: u32, data: &[u8]) {
    let mut part = s3
        .uplink
        .stage_part("bkt", "k", number, data, &PutOptions::default())
        .await
        .unwrap();
    part.info.md5 = [number as u8; 16];
    s3.uploads.put_part(id, &part).unwrap();
}

fn record(created_ms: u64) -> multipart::UploadRecord {
    multipart::UploadRecord {
        bucket: "bkt".into(),
        key: "k".into(),
        created_ms,
        content_type: None,
        metadata: Default::default(),
    }
}

#[tokio::test]
async fn uploads_past_their_age_are_aborted_and_their_pieces_deleted() {
    let (store, s3) = memory_s3();
    let old = s3.uploads.create(&record(1_000)).unwrap();
    let new = s3.uploads.create(&record(u64::MAX / 2)).unwrap();
    stage(&s3, &old, 1, &[1u8; 100_000]).await;
    stage(&s3, &old, 2, &[2u8; 10]).await;
    let before = store.piece_count();
    stage(&s3, &new, 1, &[3u8; 100_000]).await;
    let with_new = store.piece_count();
    assert!(before > 0 && with_new > before);
    assert_eq!(sweep_once(&s3, 2_000).await.unwrap(), 1);
    assert_eq!(s3.uploads.get(&old).unwrap(), None);
    assert!(s3.uploads.parts(&old).unwrap().is_empty());
    // Only the old upload's pieces went.
    assert_eq!(store.piece_count(), with_new - before);
    assert!(s3.uploads.get(&new).unwrap().is_some());
}

#[tokio::test]
async fn parts_assemble_into_one_object_read_back_in_ranges() {
    let (store, s3) = memory_s3();
    let id = s3.uploads.create(&record(1)).unwrap();
    let a: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let b: Vec<u8> = (0..70_000u32).map(|i| (i % 13) as u8).collect();
    // Part 1 sent twice: the second replaces the first (a fresh key: no nonce reuse).
    stage(&s3, &id, 1, &[9u8; 5000]).await;
    stage(&s3, &id, 1, &a).await;
    stage(&s3, &id, 2, &b).await;
    stage(&s3, &id, 3, &[]).await;
    let parts: Vec<_> = s3.uploads.parts(&id).unwrap().into_values().collect();
    s3.uplink
        .commit_parts("bkt", "k", parts, None, Default::default())
        .await
        .unwrap();
    let whole = [a.clone(), b.clone()].concat();
    for (start, end) in [
        (0, whole.len()),
        (299_990, 300_010),
        (300_000, 300_001),
        (5, 6),
    ] {
        let mut out = Vec::new();
        s3.uplink
            .get("bkt", "k", Some((start as u64, end as u64)), &mut out, None)
            .await
            .unwrap();
        assert_eq!(out, whole[start..end], "{start}..{end}");
    }
    // A copy shares the pieces; deleting the original keeps them.
    let pieces = store.piece_count();
    s3.uplink
        .copy("bkt", "k", "bkt", "k2", None, None)
        .await
        .unwrap();
    s3.uplink.delete("bkt", "k").await.unwrap();
    assert_eq!(store.piece_count(), pieces);
    let mut out = Vec::new();
    s3.uplink
        .get("bkt", "k2", None, &mut out, None)
        .await
        .unwrap();
    assert_eq!(out, whole);
    s3.uplink.delete("bkt", "k2").await.unwrap();
    assert!(store.piece_count() < pieces);
}

/// Reads one HTTP/1.1 response head (status line and headers, lower-cased) and its
/// `content-length` body from `conn`.
/// A gateway with `config` over an in-memory network, serving on 127.0.0.1 until the
/// returned sender is used; the task returns what `Gateway::run` did.
async fn serve_memory(
    config: GatewayConfig,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), uplink::Error>>,
) {
    let (_store, s3) = memory_s3();
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let gateway = Gateway::bind(s3.uplink.clone(), listen, config)
        .await
        .unwrap();
    let addr = gateway.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(gateway.run(async {
        let _ = stopped.await;
    }));
    (addr, stop, server)
}

async fn read_response(conn: &mut tokio::io::BufReader<tokio::net::TcpStream>) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut head = String::new();
    loop {
        let mut line = String::new();
        assert!(
            conn.read_line(&mut line).await.unwrap() > 0,
            "EOF in {head}"
        );
        if line == "\r\n" {
            break;
        }
        head.push_str(&line.to_ascii_lowercase());
    }
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map_or(0, |n| n.trim().parse().unwrap());
    let mut body = vec![0; len];
    conn.read_exact(&mut body).await.unwrap();
    head
}

/// An answer sent before the request body was read (here: a PUT refused for its
/// missing signature, with `Expect: 100-continue`, so the client holds the body
/// back) says `Connection: close` and ends the connection: the unread body can never
/// be taken for the next request, and clients do not reuse a connection the gateway
/// is closing. A request without a body keeps its connection.
#[tokio::test]
async fn answers_before_the_body_close_the_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = GatewayConfig::new("AK".into(), "SK".into());
    let (addr, stop, server) = serve_memory(config).await;
    tokio::time::timeout(Duration::from_secs(30), async {
        let mut conn =
            tokio::io::BufReader::new(tokio::net::TcpStream::connect(addr).await.unwrap());
        // No body: the connection stays open for the next request.
        for _ in 0..2 {
            conn.get_mut()
                .write_all(b"GET /_shoal/metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .await
                .unwrap();
            let head = read_response(&mut conn).await;
            assert!(head.starts_with("http/1.1 200"), "{head}");
            assert!(!head.contains("connection: close"), "{head}");
        }
        // A body the gateway never reads.
        conn.get_mut()
            .write_all(
                b"PUT /bkt/k HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
            )
            .await
            .unwrap();
        let head = read_response(&mut conn).await;
        assert!(head.starts_with("http/1.1 403"), "{head}");
        assert!(head.contains("connection: close"), "{head}");
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "nothing after the answer: {rest:?}");
    })
    .await
    .expect("the gateway answers within 30 s");
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// Issue 27: an anonymous browser-form POST (PostObject) declaring a 1 GiB body is
/// refused before a byte of its body is read, and one address may hold at most
/// `max_connections_per_ip` connections (the next is closed at once) while another
/// address is still served.
#[tokio::test]
async fn form_posts_are_refused_unread_and_one_address_cannot_take_every_slot() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = GatewayConfig::new("AK".into(), "SK".into());
    config.max_connections_per_ip = 2;
    let (addr, stop, server) = serve_memory(config).await;
    tokio::time::timeout(Duration::from_secs(30), async {
        let mut conn =
            tokio::io::BufReader::new(tokio::net::TcpStream::connect(addr).await.unwrap());
        // The headers only: the body is never sent, and the answer comes anyway.
        conn.get_mut()
            .write_all(
                b"POST /bkt HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; boundary=xx\r\nContent-Length: 1073741824\r\n\r\n",
            )
            .await
            .unwrap();
        let head = read_response(&mut conn).await;
        assert!(head.starts_with("http/1.1 501"), "{head}");
        assert!(head.contains("connection: close"), "{head}");

        // Two connections from 127.0.0.1 are held open; the third is closed at once.
        let held = [
            tokio::net::TcpStream::connect(addr).await.unwrap(),
            tokio::net::TcpStream::connect(addr).await.unwrap(),
        ];
        drop(conn);
        let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        // Whether or not the first connection's slot was given back yet, this is at
        // least the third open from 127.0.0.1: closed at once.
        let closed = third.read(&mut buf).await;
        assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
        // Another address is served.
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut other = tokio::io::BufReader::new(s.connect(addr).await.unwrap());
        other
            .get_mut()
            .write_all(b"GET /_shoal/metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let head = read_response(&mut other).await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        // The metrics page for another site's name (DNS rebinding): refused.
        other
            .get_mut()
            .write_all(b"GET /_shoal/metrics HTTP/1.1\r\nHost: rebind.evil.example\r\n\r\n")
            .await
            .unwrap();
        let head = read_response(&mut other).await;
        assert!(head.starts_with("http/1.1 421"), "{head}");
        drop(held);
    })
    .await
    .expect("the gateway answers within 30 s");
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// An S3 request as s3s hands it to the service (already authenticated).
fn s3_request<T>(input: T) -> s3s::S3Request<T> {
    s3s::S3Request {
        input,
        method: http::Method::PUT,
        uri: http::Uri::from_static("/"),
        headers: http::HeaderMap::new(),
        extensions: http::Extensions::new(),
        credentials: None,
        region: None,
        service: None,
        trailing_headers: None,
    }
}

type Chunk = Result<bytes::Bytes, std::io::Error>;

/// An UploadPart of `upload` whose body is fed by the returned sender (the part is
/// recorded once the sender is dropped); the task answers with the part's ETag.
fn upload_part(
    s3: &s3::ShoalS3,
    upload: &str,
    number: i32,
    len: usize,
) -> (
    tokio::sync::mpsc::Sender<Chunk>,
    tokio::task::JoinHandle<s3s::S3Result<String>>,
) {
    use s3s::S3;
    let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(4);
    let body = s3s::dto::StreamingBlob::wrap(tokio_stream::wrappers::ReceiverStream::new(rx));
    let input = s3s::dto::UploadPartInput {
        body: Some(body),
        bucket: "bkt".into(),
        key: "k".into(),
        upload_id: upload.into(),
        part_number: number,
        content_length: Some(len as i64),
        ..Default::default()
    };
    let s3 = s3.clone();
    let task = tokio::spawn(async move {
        let out = s3.upload_part(s3_request(input)).await?.output;
        Ok(out.e_tag.map(|e| e.value().to_string()).unwrap_or_default())
    });
    (tx, task)
}

/// Sends `data` as the whole body of a part and waits for its ETag.
async fn finish_part(
    tx: tokio::sync::mpsc::Sender<Chunk>,
    task: tokio::task::JoinHandle<s3s::S3Result<String>>,
    data: &[u8],
) -> String {
    for c in data.chunks(1 << 20) {
        tx.send(Ok(bytes::Bytes::copy_from_slice(c))).await.unwrap();
    }
    drop(tx);
    task.await.unwrap().unwrap()
}

async fn create_upload(s3: &s3::ShoalS3) -> String {
    use s3s::S3;
    let input = s3s::dto::CreateMultipartUploadInput {
        bucket: "bkt".into(),
        key: "k".into(),
        ..Default::default()
    };
    let out = s3.create_multipart_upload(s3_request(input)).await.unwrap();
    out.output.upload_id.unwrap()
}

async fn complete(s3: &s3::ShoalS3, upload: &str, parts: &[(i32, &str)]) -> s3s::S3Result<()> {
    use s3s::S3;
    let parts = parts
        .iter()
        .map(|(n, e)| s3s::dto::CompletedPart {
            part_number: Some(*n),
            e_tag: Some(s3s::dto::ETag::Strong((*e).to_string())),
            ..Default::default()
        })
        .collect();
    let input = s3s::dto::CompleteMultipartUploadInput {
        bucket: "bkt".into(),
        key: "k".into(),
        upload_id: upload.into(),
        multipart_upload: Some(s3s::dto::CompletedMultipartUpload { parts: Some(parts) }),
        ..Default::default()
    };
    s3.complete_multipart_upload(s3_request(input)).await?;
    Ok(())
}

async fn read_object(s3: &s3::ShoalS3) -> Vec<u8> {
    let mut out = Vec::new();
    s3.uplink
        .get("bkt", "k", None, &mut out, None)
        .await
        .unwrap();
    out
}

/// Issue 27 (conformance): part 1 sent twice at once, the two uploads finishing in
/// either order, part 2 in between. The last upload of a part number to *finish* is
/// the part (as on S3); a Complete naming its ETag succeeds and the object is those
/// bytes, one naming the replaced upload's ETag is InvalidPart, and a Complete that
/// lists both uploads of part 1 (a client keeping every ETag it got, in the order it
/// got them, as the third-party conformance suite does) takes the last one listed.
/// A part that finishes after its upload completed is refused (NoSuchUpload). No piece
/// of a replaced or refused part is left behind.
#[tokio::test]
async fn a_part_sent_again_is_the_upload_that_finished_last() {
    let (store, s3) = memory_s3();
    let big = multipart::MIN_PART_SIZE as usize;
    let x: Vec<u8> = (0..big).map(|i| (i % 251) as u8).collect();
    let y: Vec<u8> = (0..big).map(|i| (i % 241) as u8).collect();
    let z = vec![7u8; 1000];

    // The upload started second finishes last.
    let id = create_upload(&s3).await;
    let (tx1, first) = upload_part(&s3, &id, 1, big);
    let (tx1b, second) = upload_part(&s3, &id, 1, big);
    let (tx2, two) = upload_part(&s3, &id, 2, z.len());
    tx1.send(Ok(bytes::Bytes::copy_from_slice(&x[..1000])))
        .await
        .unwrap();
    let etag_x = finish_part(tx1, first, &x[1000..]).await;
    let etag_z = finish_part(tx2, two, &z).await;
    let etag_y = finish_part(tx1b, second, &y).await;
    complete(&s3, &id, &[(1, &etag_y), (2, &etag_z)])
        .await
        .unwrap();
    assert_eq!(read_object(&s3).await, [&y[..], &z[..]].concat());
    assert_ne!(etag_x, etag_y);

    // The upload started first finishes last.
    let id = create_upload(&s3).await;
    let (tx1, first) = upload_part(&s3, &id, 1, big);
    tx1.send(Ok(bytes::Bytes::copy_from_slice(&x[..1000])))
        .await
        .unwrap();
    let (tx1b, second) = upload_part(&s3, &id, 1, big);
    let etag_y = finish_part(tx1b, second, &y).await;
    let (tx2, two) = upload_part(&s3, &id, 2, z.len());
    let etag_z = finish_part(tx2, two, &z).await;
    let etag_x = finish_part(tx1, first, &x[1000..]).await;
    let refused = complete(&s3, &id, &[(1, &etag_y), (2, &etag_z)]).await;
    assert_eq!(
        refused.unwrap_err().code().as_str(),
        "InvalidPart",
        "the upload that finished first was replaced"
    );
    // A part still being sent when the upload completes.
    let (tx3, late) = upload_part(&s3, &id, 3, z.len());
    tx3.send(Ok(bytes::Bytes::copy_from_slice(&z[..10])))
        .await
        .unwrap();
    // Past the upload's check: its body is being read.
    shoal_test_kit::wait_until(Duration::from_secs(30), "part 3 is being read", || {
        let taken = tx3.capacity() == tx3.max_capacity();
        async move { taken }
    })
    .await
    .unwrap();
    // Both uploads of part 1 listed, in the order they finished: the last one counts.
    complete(&s3, &id, &[(1, &etag_y), (1, &etag_x), (2, &etag_z)])
        .await
        .unwrap();
    assert_eq!(read_object(&s3).await, [&x[..], &z[..]].concat());
    // The late part is refused as S3 refuses it, and its pieces deleted (below).
    for c in z[10..].chunks(100) {
        tx3.send(Ok(bytes::Bytes::copy_from_slice(c)))
            .await
            .unwrap();
    }
    drop(tx3);
    let refused = late.await.unwrap().unwrap_err();
    assert_eq!(refused.code().as_str(), "NoSuchUpload");

    // Nothing of the replaced parts (nor of the first object) is left.
    s3.uplink.delete("bkt", "k").await.unwrap();
    assert_eq!(store.piece_count(), 0);
}

/// Issue 27 (conformance): user metadata goes back as the bytes it was sent as, through
/// s3s's parsing and serialization (without its signature check): raw UTF-8 as the
/// same raw bytes (s3s alone answers them RFC 2047-encoded), an RFC 2047 encoded-word
/// as that encoded-word; on a GET, a HEAD and after a copy that replaces the metadata.
#[tokio::test]
async fn user_metadata_goes_back_as_the_bytes_sent() {
    use http::HeaderValue;
    let (_store, s3) = memory_s3();
    let service = s3s::service::S3ServiceBuilder::new(s3).build();
    let call = |method: &str, path: &str, headers: Vec<(&'static str, HeaderValue)>| {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("http://localhost{path}"))
            .header("host", "localhost")
            .header("content-length", "2");
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let req = req
            .body(s3s::Body::from(bytes::Bytes::from_static(b"hi")))
            .unwrap();
        let service = service.clone();
        async move { service.call(req).await.unwrap() }
    };
    let zoe = HeaderValue::from_bytes("Zoë".as_bytes()).unwrap();
    let word = HeaderValue::from_static("=?UTF-8?B?w7xiZXI=?=");
    let put = call(
        "PUT",
        "/bkt/meta",
        vec![
            ("x-amz-meta-author", zoe.clone()),
            ("x-amz-meta-purpose", word.clone()),
        ],
    )
    .await;
    assert_eq!(put.status(), 200);
    for method in ["GET", "HEAD"] {
        let got = call(method, "/bkt/meta", vec![]).await;
        assert_eq!(got.status(), 200, "{method}");
        assert_eq!(got.headers()["x-amz-meta-author"], zoe, "{method}");
        assert_eq!(got.headers()["x-amz-meta-purpose"], word, "{method}");
    }
    let copy = call(
        "PUT",
        "/bkt/meta2",
        vec![
            ("x-amz-copy-source", HeaderValue::from_static("bkt/meta")),
            (
                "x-amz-metadata-directive",
                HeaderValue::from_static("REPLACE"),
            ),
            (
                "x-amz-meta-city",
                HeaderValue::from_bytes("Zürich".as_bytes()).unwrap(),
            ),
        ],
    )
    .await;
    assert_eq!(copy.status(), 200);
    let got = call("HEAD", "/bkt/meta2", vec![]).await;
    assert_eq!(
        got.headers()["x-amz-meta-city"].as_bytes(),
        "Zürich".as_bytes()
    );
    assert!(got.headers().get("x-amz-meta-author").is_none());
}

/// ListMultipartUploads of `prefix`/`delimiter` from the markers, `max` a page: the
/// rows (keys with their upload ids, `P:` common prefixes) and the next markers.
async fn list_uploads(
    s3: &s3::ShoalS3,
    prefix: &str,
    delimiter: Option<&str>,
    markers: (Option<String>, Option<String>),
    max: i32,
) -> (Vec<String>, Option<String>, Option<String>) {
    use s3s::S3;
    let input = s3s::dto::ListMultipartUploadsInput {
        bucket: "bkt".into(),
        prefix: Some(prefix.into()),
        delimiter: delimiter.map(Into::into),
        key_marker: markers.0,
        upload_id_marker: markers.1,
        max_uploads: Some(max),
        ..Default::default()
    };
    let out = s3
        .list_multipart_uploads(s3_request(input))
        .await
        .unwrap()
        .output;
    let mut rows: Vec<String> = out
        .uploads
        .unwrap_or_default()
        .into_iter()
        .map(|u| format!("{}#{}", u.key.unwrap(), u.upload_id.unwrap()))
        .collect();
    // Common prefixes come in their own list: in key order among the uploads.
    rows.extend(
        out.common_prefixes
            .unwrap_or_default()
            .into_iter()
            .map(|p| format!("P:{}", p.prefix.unwrap())),
    );
    rows.sort_by(|a, b| {
        let key = |r: &str| {
            r.trim_start_matches("P:")
                .split('#')
                .next()
                .unwrap_or("")
                .to_string()
        };
        key(a).cmp(&key(b))
    });
    assert_eq!(
        out.is_truncated == Some(true),
        out.next_key_marker.is_some(),
        "a truncated page says where the next starts"
    );
    (rows, out.next_key_marker, out.next_upload_id_marker)
}

/// ListMultipartUploads pages and folds by the same rule as the object listings:
/// uploads by key then by initiation, common prefixes at the delimiter, a page cut at
/// `max-uploads`, and pages (through the next markers, including inside one key's
/// uploads and after a common prefix) that join up to the whole listing.
#[tokio::test]
async fn multipart_uploads_list_in_pages_that_fold() {
    let (_store, s3) = memory_s3();
    let mut ids = std::collections::HashMap::new();
    for (i, key) in ["a", "d/x", "d/y", "d/e/z", "k", "k", "k", "z/1", "zz"]
        .into_iter()
        .enumerate()
    {
        let mut r = record(1_000 + i as u64);
        r.key = key.into();
        let id = s3.uploads.create(&r).unwrap();
        ids.entry(key).or_insert_with(Vec::new).push(id);
    }
    // Another bucket's upload is never listed.
    let mut other = record(1);
    other.bucket = "other".into();
    s3.uploads.create(&other).unwrap();
    let k = &ids["k"];
    let (whole, next, _) = list_uploads(&s3, "", Some("/"), (None, None), 1000).await;
    assert_eq!(next, None);
    assert_eq!(
        whole,
        [
            format!("a#{}", ids["a"][0]),
            "P:d/".into(),
            format!("k#{}", k[0]),
            format!("k#{}", k[1]),
            format!("k#{}", k[2]),
            "P:z/".into(),
            format!("zz#{}", ids["zz"][0]),
        ]
    );
    let (rows, _, _) = list_uploads(&s3, "d/", Some("/"), (None, None), 1000).await;
    assert_eq!(
        rows,
        [
            "P:d/e/".to_string(),
            format!("d/x#{}", ids["d/x"][0]),
            format!("d/y#{}", ids["d/y"][0]),
        ]
    );
    for max in 1..=4 {
        let mut got = Vec::new();
        let mut markers = (None, None);
        for _ in 0..whole.len() + 1 {
            let (rows, key, id) = list_uploads(&s3, "", Some("/"), markers, max).await;
            assert!(rows.len() <= max as usize);
            got.extend(rows);
            if key.is_none() {
                break;
            }
            markers = (key, id);
        }
        assert_eq!(got, whole, "max-uploads {max}");
    }
    // A page cut after a common prefix names it as the next key marker.
    let (rows, key, id) = list_uploads(&s3, "", Some("/"), (None, None), 2).await;
    assert_eq!(rows[1], "P:d/");
    assert_eq!((key.as_deref(), id), (Some("d/"), None));
}
