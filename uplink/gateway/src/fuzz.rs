//! Fuzz targets for what the S3 gateway reads from requests and from the catalog (see
//! `shoal_proto::fuzz`): multipart records, listing tokens and markers, `Host`,
//! conditions, digests, attributes, and the S3 view of a decoded object entry (its
//! attributes, range and part selection). The uplink library's own decoders are in
//! `uplink::fuzz`; `shoal-fuzz` runs both.

use std::collections::{BTreeMap, HashMap};

use shoal_proto::fuzz::{Target, text};
use uplink::StagedPart;
use uplink::catalog::ObjectEntry;
use uplink::catalog::Value;
use uplink::catalog::log::{self, Blob};
use uplink::fuzz::{entries, sample_part, sample_segment};

use crate::conditions::{self, Conditions, TagCondition};
use crate::listing::{Resume, after_all_with_prefix};
use crate::{attrs, digest, host::GatewayHost, multipart, s3};

/// Lines of `text`, at most `n`.
fn lines(d: &[u8], n: usize) -> Vec<String> {
    text(d).lines().take(n).map(str::to_string).collect()
}

/// What the gateway does with an entry: its S3 attributes and the selection of a range
/// or a part.
fn use_entry(e: &ObjectEntry, d: &[u8]) {
    let _ = attrs::etag(e);
    let _ = attrs::parts_count(e);
    let _ = attrs::user_metadata(&e.metadata);
    let _ = attrs::user_metadata_headers(&e.metadata);
    let spec = text(d);
    if let Ok(range) = s3s::dto::Range::parse(&spec) {
        let _ = s3::select(e, Some(&range), None);
    }
    let part = d.first().map_or(1, |&b| i32::from(b as i8));
    let _ = s3::select(e, None, Some(part));
    let _ = s3::select(e, None, None);
    let _ = s3::copy_range(&spec, e.size);
}

/// An object entry as the catalog stores it (JSON), or the objects of a catalog blob:
/// what the gateway serves from them.
fn objects(d: &[u8]) {
    if let Ok(e) = serde_json::from_slice::<ObjectEntry>(d) {
        use_entry(&e, d);
    }
    if let Ok(blob) = log::decode_blob("blob", d) {
        let changes: &[uplink::catalog::Change] = match &blob {
            Blob::Delta(d) => &d.changes,
            Blob::Chunk(uplink::catalog::tree::Chunk::Leaf(changes)) => changes,
            Blob::Snapshot(_) | Blob::Chunk(_) => &[],
        };
        for c in changes {
            if let Value::Object(e) = &c.value {
                use_entry(e, &[]);
            }
        }
    }
}

fn objects_seeds() -> Vec<Vec<u8>> {
    entries()
        .iter()
        .filter_map(|e| serde_json::to_vec(e).ok())
        .collect()
}

fn multipart_record(d: &[u8]) {
    let _ = multipart::decode::<multipart::UploadRecord>(d);
    let _ = multipart::decode::<multipart::Completed>(d);
    if let Ok(p) = multipart::decode::<StagedPart>(d) {
        let stored = BTreeMap::from([(p.info.number, p)]);
        let requested: Vec<(u32, Option<[u8; 16]>)> = stored
            .keys()
            .map(|n| (*n, None))
            .chain([(0, None)])
            .collect();
        let _ = multipart::plan_complete(&requested, &stored);
    }
    let _ = multipart::valid_upload_id(&text(d));
}

fn multipart_seeds() -> Vec<Vec<u8>> {
    let record = multipart::UploadRecord {
        bucket: "b".into(),
        key: "k".into(),
        created_ms: 1,
        content_type: Some("text/plain".into()),
        metadata: BTreeMap::from([("user:a".into(), "b".into())]),
    };
    let done = multipart::Completed {
        bucket: "b".into(),
        key: "k".into(),
        etag: "0123456789abcdef0123456789abcdef-2".into(),
        completed_ms: 2,
    };
    let staged = StagedPart {
        info: sample_part(1),
        segments: vec![sample_segment()],
        staged_ms: 3,
    };
    [
        serde_json::to_vec(&record),
        serde_json::to_vec(&done),
        serde_json::to_vec(&staged),
    ]
    .into_iter()
    .flatten()
    .chain([b"0123456789abcdef0123456789abcdef".to_vec()])
    .collect()
}

fn listing(d: &[u8]) {
    let t = text(d);
    if let Some(r) = Resume::from_token(&t) {
        let again = r.token().and_then(|tok| Resume::from_token(&tok));
        assert_eq!(
            again.as_ref(),
            Some(&r),
            "token of {r:?} does not decode back"
        );
    }
    let (marker, delimiter) = t.split_once('\n').unwrap_or((&t, "/"));
    let _ = Resume::from_marker(marker, Some(delimiter));
    let _ = Resume::from_marker(marker, None);
    // The bound a listing seeks to after a common prefix is above every key under it.
    if let Some(b) = after_all_with_prefix(marker) {
        let under = format!("{marker}{delimiter}\u{10FFFF}");
        assert!(
            marker < b.as_str() && under.as_str() < b.as_str(),
            "{marker:?} -> {b:?}"
        );
    }
}

fn listing_seeds() -> Vec<Vec<u8>> {
    [
        Resume::AfterKey("photos/2024/a.jpg".into()),
        Resume::AfterPrefix("photos/".into()),
    ]
    .iter()
    .filter_map(Resume::token)
    .map(String::into_bytes)
    .chain([b"photos/\n/".to_vec()])
    .collect()
}

fn host(d: &[u8]) {
    let t = text(d);
    let (domains, header) = t.split_once('\n').unwrap_or(("localhost", &t));
    let h = GatewayHost::new(domains.split(',').map(str::to_string).collect());
    if let Some(bucket) = h.bucket_of(header) {
        assert!(header.contains(bucket));
    }
    let _ = s3s::host::S3Host::parse_host_header(&h, header);
}

fn host_seeds() -> Vec<Vec<u8>> {
    vec![
        b"localhost,s3.example.org\nphotos.localhost:7780".to_vec(),
        b"s3.example.org\nmy.bucket.S3.Example.org.".to_vec(),
        b"localhost\n[::1]:7780".to_vec(),
    ]
}

/// One header per line, as the gateway receives them: If-Match, If-None-Match,
/// If-Modified-Since, If-Unmodified-Since (unix seconds), then the object's ETag and
/// modification time.
fn conditions(d: &[u8]) {
    let l = lines(d, 6);
    let get = |i: usize| l.get(i).map(String::as_str).unwrap_or("");
    let tags = |s: &str| match s {
        "" => None,
        "*" => Some(TagCondition::Any),
        s => Some(TagCondition::Tags(
            s.split(',')
                .filter_map(|t| s3s::dto::ETag::parse_http_header(t.trim().as_bytes()).ok())
                .map(|e| e.value().to_string())
                .collect(),
        )),
    };
    let secs = |s: &str| s.trim().parse::<i64>().ok();
    let c = Conditions {
        if_match: tags(get(0)),
        if_none_match: tags(get(1)),
        if_modified_since: secs(get(2)),
        if_unmodified_since: secs(get(3)),
    };
    let modified = secs(get(5)).unwrap_or(0);
    let _ = conditions::evaluate_read(&c, get(4), modified);
    let _ = conditions::evaluate_copy_source(&c, get(4), modified);
    let _ = conditions::evaluate_write(&c, Some(get(4)));
    let _ = conditions::evaluate_write(&c, None);
}

fn conditions_seeds() -> Vec<Vec<u8>> {
    vec![
        b"\"0123456789abcdef0123456789abcdef\", W/\"x\"\n*\n1700000000\n1800000000\n0123456789abcdef0123456789abcdef\n1750000000".to_vec(),
        b"\n\"a\"\n\n-1\na\n9223372036854775807".to_vec(),
    ]
}

/// `Content-MD5`, then trailer lines `name: value`, then algorithms to compute.
fn digests(d: &[u8]) {
    let l = lines(d, 64);
    let mut expected = digest::Expected {
        content_md5: l.first().cloned(),
        ..Default::default()
    };
    for line in l.iter().skip(1) {
        match line.split_once(':') {
            Some((name, value)) => expected.add_trailer(name, value),
            None => expected.compute.extend(digest::checksum_header(line)),
        }
        let _ = digest::parse_md5_etag(line);
    }
    let computed = digest::Computed {
        md5: [0; 16],
        checksums: Default::default(),
        received: d.len() as u64,
    };
    let _ = digest::verify(&expected, &computed);
    let md5s: Vec<[u8; 16]> = l.iter().filter_map(|s| digest::parse_md5_etag(s)).collect();
    let _ = digest::multipart_etag(&md5s);
}

fn digest_seeds() -> Vec<Vec<u8>> {
    vec![
        b"AAAAAAAAAAAAAAAAAAAAAA==\nx-amz-checksum-crc32: AAAAAA==\nx-amz-checksum-sha256: 47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\nCRC32C\n\"0123456789abcdef0123456789abcdef\"".to_vec(),
    ]
}

/// User metadata (`name: value` per line) and standard headers of a PUT or a copy.
fn attributes(d: &[u8]) {
    let user: HashMap<String, String> = lines(d, 256)
        .into_iter()
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    if attrs::user_metadata_fits(Some(&user)) {
        let standard = [("s3:cache-control", user.get("cache-control").cloned())];
        let built = attrs::build(Some(&user), &standard, "etag");
        let _ = attrs::standard(&built, "cache-control");
        let replaced = attrs::replace(&built, Some(&user), &standard);
        assert_eq!(replaced.get("etag"), built.get("etag"));
        let _ = attrs::user_metadata(&replaced);
    }
}

fn attributes_seeds() -> Vec<Vec<u8>> {
    vec![b"camera: x\nCache-Control: no-cache\ncontent-type: text/plain".to_vec()]
}

/// A request's first line and headers as a hostile client sends them (`METHOD URI`,
/// then `name: value` lines): the rules applied before the body or the signature
/// (PostObject, SigV2, the presigned expiry).
fn request_edge(d: &[u8]) {
    let t = text(d);
    let mut lines = t.lines();
    let first = lines.next().unwrap_or_default();
    let (method, uri) = first.split_once(' ').unwrap_or((first, "/"));
    let Ok(method) = hyper::Method::from_bytes(method.as_bytes()) else {
        return;
    };
    let Ok(uri) = uri.parse::<hyper::Uri>() else {
        return;
    };
    let mut headers = hyper::HeaderMap::new();
    for line in lines.take(64) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if let (Ok(n), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(name.trim().as_bytes()),
            hyper::header::HeaderValue::from_str(value.trim()),
        ) {
            headers.append(n, v);
        }
    }
    let _ = crate::request::refuse_before_body(&method, &uri, &headers);
}

fn request_edge_seeds() -> Vec<Vec<u8>> {
    vec![
        b"POST /bucket\ncontent-type: multipart/form-data; boundary=x\ncontent-length: 1073741824"
            .to_vec(),
        b"GET /b/k?AWSAccessKeyId=AK&Expires=4102444800&Signature=abc".to_vec(),
        b"GET /b/k\nauthorization: AWS AK:c2ln".to_vec(),
        b"GET /b/k?X-Amz-Expires=604800&X%2DAmz%2DExpires=999999999".to_vec(),
    ]
}

/// The gateway's targets.
pub fn targets() -> Vec<Target> {
    vec![
        Target {
            name: "gateway.request_edge",
            seeds: request_edge_seeds,
            run: request_edge,
        },
        Target {
            name: "gateway.multipart_records",
            seeds: multipart_seeds,
            run: multipart_record,
        },
        Target {
            name: "gateway.listing_token",
            seeds: listing_seeds,
            run: listing,
        },
        Target {
            name: "gateway.host",
            seeds: host_seeds,
            run: host,
        },
        Target {
            name: "gateway.conditions",
            seeds: conditions_seeds,
            run: conditions,
        },
        Target {
            name: "gateway.digests",
            seeds: digest_seeds,
            run: digests,
        },
        Target {
            name: "gateway.attrs",
            seeds: attributes_seeds,
            run: attributes,
        },
        Target {
            name: "gateway.objects",
            seeds: objects_seeds,
            run: objects,
        },
    ]
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn seeds_decode() {
        for s in objects_seeds() {
            assert!(serde_json::from_slice::<ObjectEntry>(&s).is_ok());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn gateway_decoders_give_an_error_or_a_value(
            raw in proptest::collection::vec(any::<u8>(), 0..512),
            seed in any::<u64>(),
        ) {
            shoal_proto::fuzz::check_all(&targets(), &raw, seed, 8);
        }
    }
}
