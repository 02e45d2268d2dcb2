//! GetObject and HeadObject, one path: the same checks (version, bucket, key,
//! conditions), the same selection of a range or a part, the same representation
//! headers; GET adds the body.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::body;
use super::params::{ms_to_ts, stored_expires, strong};
use super::preconditions::{self, read_conditions};
use super::service::ShoalS3;
use crate::attrs;
use crate::conditions::Conditions;
use uplink::catalog::{Content, ObjectEntry};

/// What a GET or a HEAD asks for (the two inputs are two types with the same fields).
struct ReadRequest<'a> {
    bucket: &'a str,
    key: &'a str,
    version_id: Option<&'a str>,
    conditions: Conditions,
    range: Option<&'a Range>,
    part_number: Option<i32>,
}

/// The [`ReadRequest`] of a `GetObjectInput` or a `HeadObjectInput`.
macro_rules! read_request {
    ($input:expr) => {{
        let i = $input;
        ReadRequest {
            bucket: &i.bucket,
            key: &i.key,
            version_id: i.version_id.as_deref(),
            conditions: read_conditions(
                i.if_match.as_ref(),
                i.if_none_match.as_ref(),
                i.if_modified_since.as_ref(),
                i.if_unmodified_since.as_ref(),
            ),
            range: i.range.as_ref(),
            part_number: i.part_number,
        }
    }};
}

/// The representation headers GetObject and HeadObject share (their outputs are two
/// types with the same fields).
macro_rules! object_output {
    ($ty:ident, $entry:expr, $sel:expr, { $($extra:tt)* }) => {{
        let entry: &ObjectEntry = $entry;
        let sel: Selection = $sel;
        let standard = |h: &str| attrs::standard(&entry.metadata, h).map(str::to_string);
        $ty {
            content_length: Some((sel.end - sel.start) as i64),
            content_range: sel.content_range,
            accept_ranges: Some("bytes".into()),
            content_type: entry.content_type.clone(),
            e_tag: Some(strong(&attrs::etag(entry))),
            last_modified: Some(ms_to_ts(entry.modified_ms)),
            // Sent as raw headers by [`respond`]; here only what cannot be one.
            metadata: Some(attrs::user_metadata_headers(&entry.metadata).1),
            cache_control: standard("cache-control"),
            content_disposition: standard("content-disposition"),
            content_encoding: standard("content-encoding"),
            content_language: standard("content-language"),
            expires: stored_expires(&entry.metadata),
            parts_count: attrs::parts_count(entry).map(|n| n as i32),
            $($extra)*
            ..Default::default()
        }
    }};
}

/// The one path of a GET and a HEAD: the entry read, after its version and conditions
/// are checked, and the bytes selected.
fn open(s3: &ShoalS3, r: ReadRequest<'_>) -> S3Result<(ObjectEntry, Selection)> {
    if r.version_id.is_some_and(|v| v != "null") {
        return Err(s3_error!(InvalidArgument, "Invalid version id specified"));
    }
    s3.require_bucket(r.bucket)?;
    let entry = s3.entry(r.bucket, r.key)?;
    preconditions::check_read(&r.conditions, &entry)?;
    let sel = select(&entry, r.range, r.part_number)?;
    Ok((entry, sel))
}

pub(super) async fn get_object(
    s3: &ShoalS3,
    req: S3Request<GetObjectInput>,
) -> S3Result<S3Response<GetObjectOutput>> {
    let i = &req.input;
    let (entry, sel) = open(s3, read_request!(i))?;
    let body = body::stream(
        &s3.uplink,
        &i.bucket,
        &i.key,
        entry.clone(),
        sel.start,
        sel.end,
    );
    let output = object_output!(GetObjectOutput, &entry, sel, {
        body: Some(body),
    });
    Ok(respond(output, &entry))
}

pub(super) async fn head_object(
    s3: &ShoalS3,
    req: S3Request<HeadObjectInput>,
) -> S3Result<S3Response<HeadObjectOutput>> {
    let (entry, sel) = open(s3, read_request!(&req.input))?;
    let output = object_output!(HeadObjectOutput, &entry, sel, {});
    Ok(respond(output, &entry))
}

/// The response of a GET or HEAD: the output, and the object's user metadata as
/// headers carrying the stored bytes unchanged ([`attrs::user_metadata_headers`]: a
/// value goes back as it was sent; s3s would RFC 2047-encode any that is not ASCII).
fn respond<T>(output: T, entry: &ObjectEntry) -> S3Response<T> {
    let mut resp = S3Response::new(output);
    resp.headers = attrs::user_metadata_headers(&entry.metadata).0;
    resp
}

/// The bytes a GET or HEAD answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Selection {
    start: u64,
    end: u64,
    /// `Content-Range` (and status 206) for a range or a part of a multipart object.
    content_range: Option<String>,
}

/// Resolves `Range` or `partNumber` (not both) against an object.
pub(crate) fn select(
    entry: &ObjectEntry,
    range: Option<&Range>,
    part: Option<i32>,
) -> S3Result<Selection> {
    let size = entry.size;
    let (start, end, partial) = match (range, part) {
        (Some(_), Some(_)) => {
            return Err(s3_error!(
                InvalidRequest,
                "Cannot specify both Range header and partNumber query parameter"
            ));
        }
        (Some(r), None) => {
            let r = r
                .check(size)
                .map_err(|_| s3_error!(InvalidRange, "The requested range is not satisfiable"))?;
            (r.start, r.end, true)
        }
        (None, Some(n)) => {
            let (a, b) = part_range(entry, n)?;
            (a, b, attrs::parts_count(entry).is_some())
        }
        (None, None) => (0, size, false),
    };
    let content_range = partial.then(|| {
        if start == end {
            format!("bytes */{size}")
        } else {
            format!("bytes {start}-{}/{size}", end - 1)
        }
    });
    Ok(Selection {
        start,
        end,
        content_range,
    })
}

/// The byte range of part `n` (GetObject/HeadObject `partNumber`): a part of a
/// multipart object, or the whole of any other object as its part 1.
fn part_range(entry: &ObjectEntry, n: i32) -> S3Result<(u64, u64)> {
    // Ceph's s3-tests (the conformance suite) expect 400 InvalidPart here.
    let bad = || s3_error!(InvalidPart, "The requested part number is not satisfiable");
    match &entry.content {
        Content::Parts { parts, .. } => {
            let mut offset = 0u64;
            for p in parts {
                // Part sizes come from a catalog entry (a file, or another writer's
                // delta): sizes that overflow make the part unservable, not a panic.
                let end = offset.checked_add(p.size).ok_or_else(bad)?;
                if i64::from(p.number) == i64::from(n) {
                    return Ok((offset, end));
                }
                offset = end;
            }
            Err(bad())
        }
        _ if n == 1 => Ok((0, entry.size)),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use s3s::S3ErrorCode;

    #[test]
    fn part_sizes_that_overflow_are_refused_not_a_panic() {
        // Found by shoal-fuzz (uplink.catalog_entry): a corrupt entry whose part sizes
        // add past u64::MAX made `partNumber` panic on overflow.
        let mut e = uplink::fuzz::entries().remove(2);
        let Content::Parts { parts, .. } = &mut e.content else {
            panic!("the third sample is a multipart object");
        };
        parts[0].size = u64::MAX;
        for n in [2, 3] {
            let err = select(&e, None, Some(n)).unwrap_err();
            assert_eq!(err.code(), &S3ErrorCode::InvalidPart);
        }
        assert_eq!(select(&e, None, Some(1)).unwrap().end, u64::MAX);
    }
}
