//! Fuzz targets for the uplink's decoders (see `shoal_proto::fuzz`): access grants,
//! `config.toml`, catalog blobs, records and entries, and what the S3 gateway reads from
//! requests (listing tokens and markers, `Host`, conditions, ranges, digests, multipart
//! records, attributes).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use shoal_proto::address::AddressScope;
use shoal_proto::fuzz::{Target, text};

use crate::StagedPart;
use crate::access::{Access, GRANT_PREFIX, RootSecret};
use crate::catalog::log::{self, BlobRef, Delta, Head};
use crate::catalog::{
    BucketInfo, Change, Content, EntryKey, ObjectEntry, PartInfo, SegmentInfo, Value, Version,
    WriterId,
};
use crate::codec::{CodecKind, Scheme};
use crate::config::{FileConfig, parse_node};
use crate::crypto::{ObjectId, WrappedKey};
use crate::gateway::conditions::{self, Conditions, TagCondition};
use crate::gateway::listing::Resume;
use crate::gateway::{attrs, digest, host::GatewayHost, multipart, s3};
use crate::store::PiecePlacement;

const CATALOG_KEY: [u8; 32] = [7; 32];

/// Lines of `text`, at most `n`.
fn lines(d: &[u8], n: usize) -> Vec<String> {
    text(d).lines().take(n).map(str::to_string).collect()
}

fn grant(d: &[u8]) {
    // The grant as typed, and the payload under a valid checksum (so mutations reach
    // the peer list and difficulty, not only the checksum).
    let typed = Access::from_grant(&text(d));
    let mut payload = d.to_vec();
    payload.extend_from_slice(&crate::access::checksum(d));
    let framed = format!("{GRANT_PREFIX}{}", URL_SAFE_NO_PAD.encode(&payload));
    for access in [typed, Access::from_grant(&framed)].into_iter().flatten() {
        // Every grant that reads back writes again (its peers fit by construction).
        let again = access.to_grant().map(|g| Access::from_grant(&g));
        assert!(
            again.is_ok_and(|again| again
                .is_ok_and(|a| a.bootstrap() == access.bootstrap()
                    && a.difficulty() == access.difficulty())),
            "{access:?} does not survive a round trip through its grant"
        );
    }
}

fn grant_seeds() -> Vec<Vec<u8>> {
    let access = Access::new(
        RootSecret::from_bytes([4; 32]),
        vec![
            format!(
                "{}@127.0.0.1:7777",
                shoal_proto::fuzz::seeds::identity().node_id()
            ),
            "peer.example.org:7777".into(),
        ],
    )
    .with_difficulty(8);
    let grant = access.to_grant().unwrap_or_default();
    // The payload seed for the framed path: the grant's body without its checksum.
    let body = URL_SAFE_NO_PAD
        .decode(grant.trim_start_matches(GRANT_PREFIX))
        .unwrap_or_default();
    vec![
        grant.into_bytes(),
        body[..body.len().saturating_sub(4)].to_vec(),
    ]
}

fn config(d: &[u8]) {
    if let Ok(c) = toml::from_str::<FileConfig>(&text(d)) {
        let _ = c.uplink_config(Path::new("config.toml"));
        for n in &c.nodes {
            let _ = parse_node(n, c.address_scope());
        }
    }
    let _ = text(d).parse::<Scheme>();
    let _ = text(d).parse::<CodecKind>();
    let _ = parse_node(&text(d), AddressScope::Local);
}

fn config_seeds() -> Vec<Vec<u8>> {
    let id = shoal_proto::fuzz::seeds::identity().node_id();
    vec![
        format!(
            "local_network = true\nnodes = [\"{id}@127.0.0.1:7777\"]\nscheme = \"29/35/80/110\"\n\
             codec = \"reed-solomon-simd\"\ncatalog_scheme = \"8/12/16/24\"\nsnapshot_every = 64\n\
             default_lease_secs = 86400\npiece_timeout_secs = 30\nlong_tail_grace_ms = 500\n\
             allow_smaller_scheme = true\nparallelism = 8\ndifficulty = 8\n"
        )
        .into_bytes(),
        b"29/35/80/110".to_vec(),
    ]
}

fn segment() -> SegmentInfo {
    SegmentInfo {
        index: 0,
        plain_size: 1234,
        sealed_size: 1250,
        codec: CodecKind::default(),
        scheme: Scheme::new(2, 3, 4, 5).unwrap_or_default(),
        shard_size: 4096,
        piece_size: 4096,
        pieces: (0..3u8)
            .map(|i| PiecePlacement {
                index: u16::from(i),
                node_id: [i; 32],
                address: ([127, 0, i, 1], 7777).into(),
                piece_id: [2; 32],
                piece_hash: [3; 32],
            })
            .collect(),
    }
}

fn part(number: u32) -> PartInfo {
    PartInfo {
        number,
        size: 5 << 20,
        segments: 1,
        md5: [number as u8; 16],
        object_id: ObjectId([5; 16]),
        wrapped_key: WrappedKey {
            nonce: [2; 12],
            sealed: vec![3; 48],
        },
    }
}

fn entry(content: Content) -> ObjectEntry {
    ObjectEntry {
        key: "photos/a.jpg".into(),
        size: 10 << 20,
        created_ms: 1,
        modified_ms: 2,
        expires_ms: Some(3),
        content_type: Some("image/jpeg".into()),
        metadata: BTreeMap::from([
            ("user:camera".into(), "x".into()),
            ("s3:cache-control".into(), "no-cache".into()),
        ]),
        object_id: ObjectId([1; 16]),
        wrapped_key: WrappedKey {
            nonce: [2; 12],
            sealed: vec![3; 48],
        },
        content,
        version: Version::default(),
    }
}

/// Sample entries: inline, segments, and a multipart object of two parts.
pub(crate) fn entries() -> Vec<ObjectEntry> {
    vec![
        entry(Content::Inline {
            sealed: vec![4; 19],
        }),
        entry(Content::Segments(vec![segment(), segment()])),
        entry(Content::Parts {
            parts: vec![part(1), part(2)],
            segments: vec![segment(), segment()],
        }),
    ]
}

/// What the uplink and gateway do with a decoded entry: its segments, part ranges, S3
/// attributes and the selection of a range or a part.
fn use_entry(e: &ObjectEntry, d: &[u8]) {
    let n = e.segments().len();
    for (_, r) in e.content.part_ranges() {
        assert!(
            r.start <= r.end && r.end <= n,
            "part range {r:?} of {n} segments"
        );
    }
    let _ = attrs::etag(e);
    let _ = attrs::parts_count(e);
    let _ = attrs::user_metadata(&e.metadata);
    let spec = text(d);
    if let Ok(range) = s3s::dto::Range::parse(&spec) {
        let _ = s3::select(e, Some(&range), None);
    }
    let part = d.first().map_or(1, |&b| i32::from(b as i8));
    let _ = s3::select(e, None, Some(part));
    let _ = s3::select(e, None, None);
    let _ = s3::copy_range(&spec, e.size);
}

fn catalog_blob(d: &[u8]) {
    if let Ok(blob) = log::decode_blob("blob", d) {
        let again = log::encode_blob(&blob).and_then(|b| log::decode_blob("blob", &b));
        assert!(again.as_ref().is_ok_and(|a| *a == blob), "{again:?}");
        let changes = match &blob {
            log::Blob::Delta(d) => &d.changes,
            log::Blob::Snapshot(s) => &s.changes,
        };
        for c in changes {
            let _ = c.is_consistent();
            if let Value::Object(e) = &c.value {
                use_entry(e, &[]);
            }
        }
    }
}

fn blob_ref() -> BlobRef {
    BlobRef {
        object_id: ObjectId([1; 16]),
        size: 1234,
        segments: vec![segment()],
    }
}

fn catalog_blob_seeds() -> Vec<Vec<u8>> {
    let changes = entries()
        .into_iter()
        .map(|e| Change {
            key: EntryKey::Object {
                bucket: "b".into(),
                key: e.key.clone(),
            },
            version: Version::default(),
            value: Value::Object(e),
        })
        .chain([Change {
            key: EntryKey::Bucket("b".into()),
            version: Version::default(),
            value: Value::Bucket(BucketInfo {
                name: "b".into(),
                created_ms: 1,
                version: Version::default(),
            }),
        }])
        .collect();
    let delta = log::Blob::Delta(Delta {
        writer: WriterId([1; 16]),
        seq: 2,
        prev: Some(blob_ref()),
        snapshot: None,
        changes,
    });
    [delta]
        .iter()
        .filter_map(|b| log::encode_blob(b).ok())
        .collect()
}

fn catalog_records(d: &[u8]) {
    let seq = d.first().map_or(0, |&b| u64::from(b % 4));
    let _ = log::open_head(&CATALOG_KEY, &WriterId([1; 16]), seq, d);
    let _ = log::open_writers(&CATALOG_KEY, seq, d);
}

fn catalog_records_seeds() -> Vec<Vec<u8>> {
    let head = Head {
        writer: WriterId([1; 16]),
        seq: 1,
        delta: blob_ref(),
    };
    let writers = BTreeSet::from([WriterId([1; 16]), WriterId([2; 16])]);
    [
        log::seal_head(&CATALOG_KEY, &head),
        log::seal_writers(&CATALOG_KEY, 1, &writers),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn catalog_entry(d: &[u8]) {
    if let Ok(e) = crate::catalog::decode::<ObjectEntry>("entry", d) {
        use_entry(&e, d);
    }
    let _ = crate::catalog::decode::<BucketInfo>("bucket", d);
    if let Ok(c) = crate::catalog::decode::<Change>("change", d) {
        let _ = c.is_consistent();
    }
    let _ = crate::catalog::decode::<Version>("version", d);
}

fn catalog_entry_seeds() -> Vec<Vec<u8>> {
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
        info: part(1),
        segments: vec![segment()],
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
    let _ = Resume::from_marker(marker, Some(delimiter)).scan_from();
    let _ = Resume::from_marker(marker, None);
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

/// The uplink's targets.
pub fn targets() -> Vec<Target> {
    vec![
        Target {
            name: "uplink.access_grant",
            seeds: grant_seeds,
            run: grant,
        },
        Target {
            name: "uplink.config",
            seeds: config_seeds,
            run: config,
        },
        Target {
            name: "uplink.catalog_blob",
            seeds: catalog_blob_seeds,
            run: catalog_blob,
        },
        Target {
            name: "uplink.catalog_records",
            seeds: catalog_records_seeds,
            run: catalog_records,
        },
        Target {
            name: "uplink.catalog_entry",
            seeds: catalog_entry_seeds,
            run: catalog_entry,
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
    ]
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn seeds_decode() {
        assert!(Access::from_grant(&text(&grant_seeds()[0])).is_ok());
        let c = toml::from_str::<FileConfig>(&text(&config_seeds()[0]));
        assert!(c.is_ok_and(|c| c.uplink_config(Path::new("c")).is_ok()));
        for s in catalog_blob_seeds() {
            assert!(log::decode_blob("seed", &s).is_ok());
        }
        let records = catalog_records_seeds();
        assert!(log::open_head(&CATALOG_KEY, &WriterId([1; 16]), 1, &records[0]).is_ok());
        for s in catalog_entry_seeds() {
            assert!(crate::catalog::decode::<ObjectEntry>("seed", &s).is_ok());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn uplink_decoders_give_an_error_or_a_value(
            raw in proptest::collection::vec(any::<u8>(), 0..512),
            seed in any::<u64>(),
        ) {
            shoal_proto::fuzz::check_all(&targets(), &raw, seed, 8);
        }
    }
}
