//! Conditional requests as S3 answers them: the conditions a request carries (read,
//! write, copy source) and the error each failed condition becomes. The rules are in
//! [`crate::conditions`]; this file only maps them to S3's answers.

use s3s::dto::{ETagCondition, Timestamp, TimestampFormat};
use s3s::{S3Error, S3ErrorCode, S3Result, s3_error};

use super::params::{ms_to_ts, tag, ts_to_secs};
use crate::attrs;
use crate::conditions::{self, Conditions, Outcome};
use uplink::catalog::ObjectEntry;

/// The conditions of a read (GET, HEAD) or of a copy's source (the `x-amz-copy-source-if-*`
/// headers): ETags and dates.
pub(super) fn read_conditions(
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> Conditions {
    Conditions {
        if_match: if_match.map(tag),
        if_none_match: if_none_match.map(tag),
        if_modified_since: if_modified_since.map(ts_to_secs),
        if_unmodified_since: if_unmodified_since.map(ts_to_secs),
    }
}

/// The conditions of a write (PUT, CompleteMultipartUpload): ETags only.
pub(super) fn write_conditions(
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
) -> Conditions {
    Conditions {
        if_match: if_match.map(tag),
        if_none_match: if_none_match.map(tag),
        ..Default::default()
    }
}

fn precondition_failed() -> S3Error {
    s3_error!(
        PreconditionFailed,
        "At least one of the pre-conditions you specified did not hold"
    )
}

/// Whether a read may go on: PreconditionFailed (412), or NotModified (304) with the
/// representation's ETag and Last-Modified.
pub(super) fn check_read(c: &Conditions, entry: &ObjectEntry) -> S3Result<()> {
    match conditions::evaluate_read(c, &attrs::etag(entry), (entry.modified_ms / 1000) as i64) {
        Outcome::Proceed => Ok(()),
        Outcome::PreconditionFailed => Err(precondition_failed()),
        Outcome::NotModified => {
            // A 304 still names the representation (RFC 9110 §15.4.5).
            let mut e = S3Error::new(S3ErrorCode::NotModified);
            let mut h = http::HeaderMap::new();
            if let Ok(v) = http::HeaderValue::from_str(&format!("\"{}\"", attrs::etag(entry))) {
                h.insert(http::header::ETAG, v);
            }
            let mut date = Vec::new();
            if ms_to_ts(entry.modified_ms)
                .format(TimestampFormat::HttpDate, &mut date)
                .is_ok()
                && let Ok(v) = http::HeaderValue::from_bytes(&date)
            {
                h.insert(http::header::LAST_MODIFIED, v);
            }
            e.set_headers(h);
            Err(e)
        }
    }
}

/// Whether a copy may read its source: any failed condition is PreconditionFailed.
pub(super) fn check_copy_source(c: &Conditions, entry: &ObjectEntry) -> S3Result<()> {
    match conditions::evaluate_copy_source(
        c,
        &attrs::etag(entry),
        (entry.modified_ms / 1000) as i64,
    ) {
        Outcome::Proceed => Ok(()),
        _ => Err(precondition_failed()),
    }
}

/// The answer to a write's conditions: If-Match on a key that does not exist is
/// NoSuchKey (404), any other failed condition PreconditionFailed (412).
pub(super) fn write_outcome(c: &Conditions, current: Option<&str>) -> S3Result<()> {
    match conditions::evaluate_write(c, current) {
        Outcome::Proceed => Ok(()),
        _ if current.is_none() && c.if_match.is_some() => Err(s3_error!(
            NoSuchKey,
            "The specified key does not exist (If-Match needs an object)"
        )),
        _ => Err(precondition_failed()),
    }
}
