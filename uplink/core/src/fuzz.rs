//! Fuzz targets for the uplink's decoders (see `shoal_proto::fuzz`): access grants,
//! `config.toml`, catalog blobs, records and entries. What the S3 gateway reads from
//! requests is fuzzed by `uplink_gateway::fuzz`, which uses the sample entries here
//! ([`entries`], [`sample_part`], [`sample_segment`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use shoal_proto::address::AddressScope;
use shoal_proto::fuzz::{Target, text};

use crate::access::{Access, GRANT_PREFIX, RootSecret};
use crate::catalog::log::{self, BlobRef, Delta, Head, HeadDelta};
use crate::catalog::{
    BucketInfo, Change, Content, EntryKey, ObjectEntry, PartInfo, SegmentInfo, Value, Version,
    WriterId,
};
use crate::codec::{CodecKind, Scheme};
use crate::config::{FileConfig, parse_node};
use crate::crypto::{ObjectId, WrappedKey};
use crate::store::PiecePlacement;

const CATALOG_KEY: [u8; 32] = [7; 32];

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

/// A sample segment of three pieces (scheme 2/3/4/5).
pub fn sample_segment() -> SegmentInfo {
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

/// A sample part `number` of a multipart object (5 MiB, one segment).
pub fn sample_part(number: u32) -> PartInfo {
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
pub fn entries() -> Vec<ObjectEntry> {
    vec![
        entry(Content::Inline {
            sealed: vec![4; 19],
        }),
        entry(Content::Segments(vec![sample_segment(), sample_segment()])),
        entry(Content::Parts {
            parts: vec![sample_part(1), sample_part(2)],
            segments: vec![sample_segment(), sample_segment()],
        }),
    ]
}

/// What the uplink does with a decoded entry: its segments and part ranges (what the
/// gateway does with one, its S3 attributes and the selection of a range or a part, is
/// the target `gateway.objects`).
fn use_entry(e: &ObjectEntry) {
    let n = e.segments().len();
    for (_, r) in e.content.part_ranges() {
        assert!(
            r.start <= r.end && r.end <= n,
            "part range {r:?} of {n} segments"
        );
    }
}

fn catalog_blob(d: &[u8]) {
    if let Ok(blob) = log::decode_blob("blob", d) {
        let again = log::encode_blob(&blob).and_then(|b| log::decode_blob("blob", &b));
        assert!(again.as_ref().is_ok_and(|a| *a == blob), "{again:?}");
        let changes: &[Change] = match &blob {
            log::Blob::Delta(d) => &d.changes,
            log::Blob::Snapshot(_) => &[],
            log::Blob::Chunk(c) => {
                // A chunk from the network is checked against the id a parent names.
                let key = crate::catalog::tree::TreeKey::new(&[7; 32]);
                let id = crate::catalog::tree::ChunkId([0; 32]);
                let _ = crate::catalog::tree::verify(&key, &id, c.level(), c.entries(), c);
                match c {
                    crate::catalog::tree::Chunk::Leaf(changes) => changes,
                    crate::catalog::tree::Chunk::Node { .. } => &[],
                }
            }
        };
        for c in changes {
            let _ = c.is_consistent();
            if let Value::Object(e) = &c.value {
                use_entry(e);
            }
        }
    }
}

fn blob_ref() -> BlobRef {
    BlobRef {
        object_id: ObjectId([1; 16]),
        size: 1234,
        segments: vec![sample_segment()],
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
        writers_seq: 1,
        merged: Default::default(),
        clock: Default::default(),
        frontier: Default::default(),
        changes,
        prev_seq: Some(1),
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
        delta: HeadDelta::Blob(blob_ref()),
    };
    let inline = Head {
        writer: WriterId([1; 16]),
        seq: 3,
        delta: HeadDelta::Inline(Delta {
            writer: WriterId([1; 16]),
            seq: 3,
            prev: Some(blob_ref()),
            snapshot: None,
            writers_seq: 1,
            merged: Default::default(),
            clock: Default::default(),
            frontier: Default::default(),
            changes: Vec::new(),
            prev_seq: Some(1),
        }),
    };
    let writers = BTreeSet::from([WriterId([1; 16]), WriterId([2; 16])]);
    [
        log::seal_head(&CATALOG_KEY, &head),
        log::seal_head(&CATALOG_KEY, &inline),
        log::seal_writers(&CATALOG_KEY, 1, &writers),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn catalog_entry(d: &[u8]) {
    if let Ok(e) = crate::catalog::decode::<ObjectEntry>("entry", d) {
        use_entry(&e);
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
