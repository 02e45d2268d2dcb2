//! Translations between s3s's types and ours, and the checks of request parameters
//! (keys, metadata size, part numbers, `max-keys`, `encoding-type`) that answer with
//! S3's error codes.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use s3s::S3Result;
use s3s::dto::*;
use s3s::s3_error;

use super::errors::s3_err;
use crate::attrs;
use crate::conditions::TagCondition;
use crate::listing;
use crate::multipart;

pub(super) fn ms_to_ts(ms: u64) -> Timestamp {
    Timestamp::from(SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
}

pub(super) fn ts_to_secs(t: &Timestamp) -> i64 {
    time::OffsetDateTime::from(t.clone()).unix_timestamp()
}

pub(super) fn tag(c: &ETagCondition) -> TagCondition {
    match c {
        ETagCondition::Any => TagCondition::Any,
        ETagCondition::ETag(e) => TagCondition::Tags(vec![e.value().to_string()]),
    }
}

pub(super) fn strong(etag: &str) -> ETag {
    ETag::Strong(etag.to_string())
}

pub(super) fn check_metadata(
    user: Option<&std::collections::HashMap<String, String>>,
) -> S3Result<()> {
    if attrs::user_metadata_fits(user) {
        Ok(())
    } else {
        Err(s3_error!(
            MetadataTooLarge,
            "Your metadata headers exceed the maximum allowed metadata size (2 KiB)"
        ))
    }
}

pub(super) fn check_key(key: &str) -> S3Result<()> {
    if key.len() > uplink::catalog::MAX_KEY_LEN {
        return Err(s3_error!(
            KeyTooLongError,
            "Your key is too long (at most 1024 bytes)"
        ));
    }
    uplink::error::check_key(key).map_err(s3_err)
}

pub(super) fn part_number(n: i32) -> S3Result<u32> {
    u32::try_from(n)
        .ok()
        .filter(|n| (1..=multipart::MAX_PART_NUMBER).contains(n))
        .ok_or_else(|| {
            s3_error!(
                InvalidArgument,
                "Part number must be an integer between 1 and 10000, inclusive"
            )
        })
}

pub(super) fn max_keys(v: Option<i32>) -> S3Result<usize> {
    match v {
        None => Ok(listing::MAX_KEYS),
        Some(n) if n < 0 => Err(s3_error!(InvalidArgument, "max-keys must not be negative")),
        Some(n) => Ok((n as usize).min(listing::MAX_KEYS)),
    }
}

pub(super) fn url_encoded(encoding: &Option<EncodingType>) -> S3Result<bool> {
    match encoding {
        None => Ok(false),
        Some(e) if e.as_str() == EncodingType::URL => Ok(true),
        Some(_) => Err(s3_error!(
            InvalidArgument,
            "Invalid Encoding Method specified"
        )),
    }
}

pub(super) fn enc(url: bool, s: &str) -> String {
    if url {
        listing::url_encode(s)
    } else {
        s.to_string()
    }
}

pub(super) fn standard_headers(
    cache_control: Option<String>,
    content_disposition: Option<String>,
    content_encoding: Option<String>,
    content_language: Option<String>,
    expires: Option<&Timestamp>,
) -> [(&'static str, Option<String>); 5] {
    let expires = expires.and_then(|t| {
        let mut out = Vec::new();
        t.format(TimestampFormat::HttpDate, &mut out).ok()?;
        String::from_utf8(out).ok()
    });
    [
        ("s3:cache-control", cache_control),
        ("s3:content-disposition", content_disposition),
        (
            "s3:content-encoding",
            content_encoding.and_then(stored_encoding),
        ),
        ("s3:content-language", content_language),
        ("s3:expires", expires),
    ]
}

/// The `Content-Encoding` an object keeps: the one sent, less `aws-chunked`, which
/// names how this request's body was framed (SigV4 streaming), not the object (S3 stores
/// `gzip` for `gzip, aws-chunked`, and nothing for `aws-chunked` alone).
fn stored_encoding(sent: String) -> Option<String> {
    let kept: Vec<&str> = sent
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("aws-chunked"))
        .collect();
    (!kept.is_empty()).then(|| kept.join(", "))
}

pub(super) fn stored_expires(meta: &BTreeMap<String, String>) -> Option<Timestamp> {
    attrs::standard(meta, "expires")
        .and_then(|s| Timestamp::parse(TimestampFormat::HttpDate, s).ok())
}

pub(super) fn owner() -> Owner {
    Owner {
        display_name: Some("shoal".into()),
        id: Some("shoal".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 27 (conformance): `aws-chunked` is how the request was framed, not how the
    /// object is encoded.
    #[test]
    fn aws_chunked_is_not_stored_as_the_objects_encoding() {
        let enc = |s: &str| stored_encoding(s.to_string());
        assert_eq!(enc("gzip, aws-chunked"), Some("gzip".into()));
        assert_eq!(enc("aws-chunked,gzip"), Some("gzip".into()));
        assert_eq!(enc("aws-chunked"), None);
        assert_eq!(enc("AWS-Chunked"), None);
        assert_eq!(enc("gzip, br"), Some("gzip, br".into()));
        assert_eq!(
            standard_headers(None, None, Some("gzip, aws-chunked".into()), None, None)[2].1,
            Some("gzip".into())
        );
    }
}
