//! How S3's object attributes live in an [`ObjectEntry`]'s metadata map.
//!
//! User metadata (`x-amz-meta-NAME: value`) is stored under `x-amz-meta-NAME` (the name
//! lowercased, the value the header's text exactly as sent: see [`user_metadata_as_sent`]
//! for the rule and why); the gateway's own attributes under
//! `s3:` names (`s3:etag`, `s3:cache-control` ...). A header name cannot contain `:`, so
//! the two never collide. Objects stored by `uplink cp` have no `s3:etag`: their ETag is
//! derived from the object id and ends in `-1`, which S3 clients treat as "not an MD5"
//! (as for multipart objects) instead of comparing it with a local MD5.

use std::collections::{BTreeMap, HashMap};

use uplink::catalog::{Content, ObjectEntry, ObjectSummary};
use uplink::crypto::ObjectId;

pub const ETAG: &str = "s3:etag";
pub const USER_PREFIX: &str = "x-amz-meta-";

/// The standard headers stored with an object (besides Content-Type, which the entry
/// holds itself), by the name they are stored under.
pub const STANDARD: [(&str, &str); 5] = [
    ("s3:cache-control", "cache-control"),
    ("s3:content-disposition", "content-disposition"),
    ("s3:content-encoding", "content-encoding"),
    ("s3:content-language", "content-language"),
    ("s3:expires", "expires"),
];

/// The ETag of an object, unquoted.
pub fn etag(entry: &ObjectEntry) -> String {
    etag_of(&entry.metadata, &entry.object_id)
}

/// The ETag of an object a listing shows, unquoted (the same rule as [`etag`]).
pub fn listed_etag(o: &ObjectSummary) -> String {
    etag_of(&o.metadata, &o.object_id)
}

fn etag_of(metadata: &BTreeMap<String, String>, object_id: &ObjectId) -> String {
    if let Some(e) = metadata.get(ETAG) {
        return e.clone();
    }
    format!("{}-1", shoal_proto::ids::to_hex(&object_id.0))
}

/// The number of parts of a multipart object.
pub fn parts_count(entry: &ObjectEntry) -> Option<usize> {
    match &entry.content {
        Content::Parts { parts, .. } => Some(parts.len()),
        _ => None,
    }
}

/// User metadata as stored (names without the prefix).
pub fn user_metadata(meta: &BTreeMap<String, String>) -> HashMap<String, String> {
    meta.iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(USER_PREFIX)?.to_string(), v.clone())))
        .collect()
}

/// The user metadata of a request as it is stored: every value is the text of its
/// `x-amz-meta-*` header exactly as the client sent it. `decoded` is s3s's reading of
/// those headers (names lowercased, values RFC 2047-decoded); `headers` the request's.
///
/// The rule (issue 27), one for both ways of sending a value that is not ASCII, and its
/// other half in [`user_metadata_headers`]: **a value goes back byte for byte as it was
/// sent.**
/// - Raw UTF-8 header bytes (what botocore sends for `Metadata={"a": "Zoë"}`, what
///   Ceph RGW and the third-party conformance suite expect back unchanged) come back as
///   the same raw bytes. s3s alone would send them back RFC 2047-encoded, which clients
///   comparing bytes take for another value.
/// - An RFC 2047 encoded-word (`=?UTF-8?B?w7xiZXI=?=`, the mail-safe form S3 documents)
///   comes back as that encoded-word: S3 decodes it on store and encodes it again on
///   return, so the client sees what it sent either way.
///
/// Nothing else changes: the 2 KiB limit counts the decoded values (as S3 does, and as
/// [`user_metadata_fits`] is given them), and a header s3s could not read was refused
/// before this is called. A value whose header is missing (never from s3s) keeps s3s's
/// reading.
pub fn user_metadata_as_sent(
    decoded: Option<&HashMap<String, String>>,
    headers: &http::HeaderMap,
) -> Option<HashMap<String, String>> {
    let decoded = decoded?;
    let sent = |name: &str| {
        let v = headers.get(format!("{USER_PREFIX}{name}").as_str())?;
        std::str::from_utf8(v.as_bytes()).ok().map(str::to_string)
    };
    Some(
        decoded
            .iter()
            .map(|(name, value)| (name.clone(), sent(name).unwrap_or_else(|| value.clone())))
            .collect(),
    )
}

/// The other half of [`user_metadata_as_sent`]: an object's user metadata for a GET or
/// HEAD response, as headers carrying each stored value's bytes unchanged, and the
/// values that cannot be a header value as they are (control characters, stored by no
/// request this gateway accepts) for s3s, which sends those RFC 2047-encoded.
pub fn user_metadata_headers(
    meta: &BTreeMap<String, String>,
) -> (http::HeaderMap, HashMap<String, String>) {
    let mut raw = http::HeaderMap::new();
    let mut rest = HashMap::new();
    for (name, value) in meta {
        let Some(short) = name.strip_prefix(USER_PREFIX) else {
            continue;
        };
        let header = http::HeaderName::from_bytes(name.as_bytes());
        match (header, http::HeaderValue::from_bytes(value.as_bytes())) {
            (Ok(h), Ok(v)) => {
                raw.insert(h, v);
            }
            _ => {
                rest.insert(short.to_string(), value.clone());
            }
        }
    }
    (raw, rest)
}

/// Most bytes of user metadata (names and values) an object may carry, as on S3.
pub const MAX_USER_METADATA: usize = 2048;

/// Whether user metadata fits [`MAX_USER_METADATA`].
pub fn user_metadata_fits(user: Option<&HashMap<String, String>>) -> bool {
    user.into_iter()
        .flatten()
        .map(|(k, v)| k.len() + v.len())
        .sum::<usize>()
        <= MAX_USER_METADATA
}

/// The metadata map of a new object: user metadata, standard headers and the ETag.
pub fn build(
    user: Option<&HashMap<String, String>>,
    standard: &[(&str, Option<String>)],
    etag: &str,
) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for (k, v) in user.into_iter().flatten() {
        m.insert(
            format!("{USER_PREFIX}{}", k.to_ascii_lowercase()),
            v.clone(),
        );
    }
    for (name, value) in standard {
        if let Some(v) = value {
            m.insert((*name).to_string(), v.clone());
        }
    }
    m.insert(ETAG.to_string(), etag.to_string());
    m
}

/// The stored value of a standard header (`cache-control` ...).
pub fn standard<'a>(meta: &'a BTreeMap<String, String>, header: &str) -> Option<&'a str> {
    STANDARD
        .iter()
        .find(|(_, h)| *h == header)
        .and_then(|(name, _)| meta.get(*name))
        .map(String::as_str)
}

/// Keeps the attributes a copy with `x-amz-metadata-directive: REPLACE` does not
/// replace (the ETag), and takes everything else from the request.
pub fn replace(
    old: &BTreeMap<String, String>,
    new_user: Option<&HashMap<String, String>>,
    standard: &[(&str, Option<String>)],
) -> BTreeMap<String, String> {
    let etag = old.get(ETAG).cloned();
    let mut m = build(new_user, standard, "");
    match etag {
        Some(e) => m.insert(ETAG.to_string(), e),
        None => m.remove(ETAG),
    };
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_metadata_is_bounded() {
        let small: HashMap<String, String> = [("a".to_string(), "b".repeat(100))].into();
        assert!(user_metadata_fits(Some(&small)) && user_metadata_fits(None));
        let big: HashMap<String, String> = [("a".to_string(), "b".repeat(2048))].into();
        assert!(!user_metadata_fits(Some(&big)));
    }

    /// Issue 27: user metadata goes back byte for byte as it was sent, raw UTF-8 as raw
    /// UTF-8 and an RFC 2047 encoded-word as that encoded-word.
    #[test]
    fn user_metadata_goes_back_as_sent() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "x-amz-meta-author",
            http::HeaderValue::from_bytes("Zoë".as_bytes()).unwrap(),
        );
        h.insert(
            "x-amz-meta-purpose",
            http::HeaderValue::from_static("=?UTF-8?B?w7xiZXI=?="),
        );
        h.insert("x-amz-meta-plain", http::HeaderValue::from_static("a b"));
        // What s3s makes of those headers.
        let decoded: HashMap<String, String> = [
            ("author".to_string(), "Zoë".to_string()),
            ("purpose".to_string(), "über".to_string()),
            ("plain".to_string(), "a b".to_string()),
        ]
        .into();
        let stored = user_metadata_as_sent(Some(&decoded), &h).unwrap();
        assert_eq!(stored["author"], "Zoë");
        assert_eq!(stored["purpose"], "=?UTF-8?B?w7xiZXI=?=");
        assert_eq!(stored["plain"], "a b");
        assert_eq!(user_metadata_as_sent(None, &h), None);
        // A name s3s read whose header is not there keeps s3s's value.
        let only: HashMap<String, String> = [("gone".to_string(), "v".to_string())].into();
        assert_eq!(user_metadata_as_sent(Some(&only), &h), Some(only.clone()));

        let meta = build(Some(&stored), &[], "e");
        let (raw, rest) = user_metadata_headers(&meta);
        assert_eq!(raw["x-amz-meta-author"].as_bytes(), "Zoë".as_bytes());
        assert_eq!(
            raw["x-amz-meta-purpose"].as_bytes(),
            b"=?UTF-8?B?w7xiZXI=?="
        );
        assert_eq!(raw["x-amz-meta-plain"].as_bytes(), b"a b");
        assert_eq!(raw.len(), 3, "the ETag is not user metadata");
        assert!(rest.is_empty());
        // A control character cannot be a header value as it is: left to s3s.
        let odd: HashMap<String, String> = [("c".to_string(), "\u{4}w".to_string())].into();
        let (raw, rest) = user_metadata_headers(&build(Some(&odd), &[], "e"));
        assert!(raw.is_empty());
        assert_eq!(rest["c"], "\u{4}w");
    }

    #[test]
    fn user_metadata_and_etag_round_trip() {
        let user: HashMap<String, String> = [("Color".to_string(), "grün".to_string())].into();
        let m = build(
            Some(&user),
            &[("s3:cache-control", Some("no-cache".into()))],
            "abc",
        );
        assert_eq!(
            user_metadata(&m).get("color").map(String::as_str),
            Some("grün")
        );
        assert_eq!(standard(&m, "cache-control"), Some("no-cache"));
        assert_eq!(m.get(ETAG).map(String::as_str), Some("abc"));
        let r = replace(&m, None, &[]);
        assert_eq!(r.get(ETAG).map(String::as_str), Some("abc"));
        assert!(user_metadata(&r).is_empty());
    }
}
