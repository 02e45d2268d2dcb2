//! How S3's object attributes live in an [`ObjectEntry`]'s metadata map.
//!
//! User metadata (`x-amz-meta-NAME: value`) is stored under `x-amz-meta-NAME` (the name
//! lowercased, the value as sent, UTF-8 preserved); the gateway's own attributes under
//! `s3:` names (`s3:etag`, `s3:cache-control` ...). A header name cannot contain `:`, so
//! the two never collide. Objects stored by `uplink cp` have no `s3:etag`: their ETag is
//! derived from the object id and ends in `-1`, which S3 clients treat as "not an MD5"
//! (as for multipart objects) instead of comparing it with a local MD5.

use std::collections::{BTreeMap, HashMap};

use uplink::catalog::{Content, ObjectEntry};

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
    if let Some(e) = entry.metadata.get(ETAG) {
        return e.clone();
    }
    format!("{}-1", shoal_proto::ids::to_hex(&entry.object_id.0))
}

/// The number of parts of a multipart object.
pub fn parts_count(entry: &ObjectEntry) -> Option<usize> {
    match &entry.content {
        Content::Parts { parts, .. } => Some(parts.len()),
        _ => None,
    }
}

/// User metadata as S3 returns it (names without the prefix).
pub fn user_metadata(meta: &BTreeMap<String, String>) -> HashMap<String, String> {
    meta.iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(USER_PREFIX)?.to_string(), v.clone())))
        .collect()
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
