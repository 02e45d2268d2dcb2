//! The S3 operations, on top of [`Uplink`]. s3s parses and authenticates requests and
//! writes responses; this file only translates between its types and the uplink's,
//! with the rules themselves in [`super::listing`], [`super::conditions`],
//! [`super::digest`], [`super::multipart`] and [`super::attrs`].

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use s3s::dto::*;
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use tokio::io::AsyncRead;
use tokio_util::io::{ReaderStream, StreamReader};

use super::attrs;
use super::conditions::{self, Conditions, Outcome, TagCondition};
use super::digest::{self, BodyReader, Computed, DigestError, Expected};
use super::listing::{self, Resume, Row};
use super::multipart::{self, CompleteError, Completed, UploadRecord, Uploads};
use crate::catalog::{Content, ObjectEntry};
use crate::{Error, PutOptions, Uplink};

/// Bytes buffered between a download and the HTTP response (or a part being copied).
const PIPE_BUFFER: usize = 256 * 1024;

/// The S3 service of one access.
#[derive(Debug, Clone)]
pub struct ShoalS3 {
    pub(super) uplink: Uplink,
    pub(super) uploads: Uploads,
    pub(super) region: String,
}

/// Maps an uplink error to S3's code and status, in one place.
pub(super) fn s3_err(e: Error) -> S3Error {
    let code = match &e {
        Error::NoSuchBucket(_) => S3ErrorCode::NoSuchBucket,
        Error::NoSuchObject { .. } => S3ErrorCode::NoSuchKey,
        Error::BucketExists(_) => S3ErrorCode::BucketAlreadyOwnedByYou,
        Error::BucketNotEmpty(_) => S3ErrorCode::BucketNotEmpty,
        Error::InvalidBucket { .. } => S3ErrorCode::InvalidBucketName,
        Error::InvalidKey { .. } => S3ErrorCode::InvalidArgument,
        Error::ObjectExists { .. } => S3ErrorCode::PreconditionFailed,
        Error::InvalidRange { .. } => S3ErrorCode::InvalidRange,
        Error::Read { .. } => S3ErrorCode::IncompleteBody,
        // The network could not take or give the data now: the client may retry.
        Error::Upload { .. }
        | Error::Download { .. }
        | Error::NetworkTooSmall { .. }
        | Error::Discovery(_)
        | Error::Sync(_) => S3ErrorCode::ServiceUnavailable,
        Error::Write { .. }
        | Error::Crypto { .. }
        | Error::Scheme(_)
        | Error::Codec(_)
        | Error::Catalog(_)
        | Error::CatalogScheme { .. }
        | Error::Metrics(_) => S3ErrorCode::InternalError,
    };
    if code == S3ErrorCode::InternalError || code == S3ErrorCode::ServiceUnavailable {
        tracing::warn!(error = %e, "request failed");
    }
    S3Error::with_message(code, e.to_string())
}

fn catalog_err(e: crate::catalog::CatalogError) -> S3Error {
    s3_err(Error::Catalog(e))
}

fn ms_to_ts(ms: u64) -> Timestamp {
    Timestamp::from(SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
}

fn ts_to_secs(t: &Timestamp) -> i64 {
    time::OffsetDateTime::from(t.clone()).unix_timestamp()
}

fn tag(c: &ETagCondition) -> TagCondition {
    match c {
        ETagCondition::Any => TagCondition::Any,
        ETagCondition::ETag(e) => TagCondition::Tags(vec![e.value().to_string()]),
    }
}

fn strong(etag: &str) -> ETag {
    ETag::Strong(etag.to_string())
}

fn check_metadata(user: Option<&std::collections::HashMap<String, String>>) -> S3Result<()> {
    if attrs::user_metadata_fits(user) {
        Ok(())
    } else {
        Err(s3_error!(
            MetadataTooLarge,
            "Your metadata headers exceed the maximum allowed metadata size (2 KiB)"
        ))
    }
}

fn check_key(key: &str) -> S3Result<()> {
    if key.len() > crate::catalog::MAX_KEY_LEN {
        return Err(s3_error!(
            KeyTooLongError,
            "Your key is too long (at most 1024 bytes)"
        ));
    }
    crate::error::check_key(key).map_err(s3_err)
}

fn part_number(n: i32) -> S3Result<u32> {
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

fn max_keys(v: Option<i32>) -> S3Result<usize> {
    match v {
        None => Ok(listing::MAX_KEYS),
        Some(n) if n < 0 => Err(s3_error!(InvalidArgument, "max-keys must not be negative")),
        Some(n) => Ok((n as usize).min(listing::MAX_KEYS)),
    }
}

fn url_encoded(encoding: &Option<EncodingType>) -> S3Result<bool> {
    match encoding {
        None => Ok(false),
        Some(e) if e.as_str() == EncodingType::URL => Ok(true),
        Some(_) => Err(s3_error!(
            InvalidArgument,
            "Invalid Encoding Method specified"
        )),
    }
}

fn enc(url: bool, s: &str) -> String {
    if url {
        listing::url_encode(s)
    } else {
        s.to_string()
    }
}

/// A request body as an `AsyncRead`.
fn body_reader(body: Option<StreamingBlob>) -> impl AsyncRead + Unpin + Send {
    let stream = match body {
        Some(b) => b.map(|r| r.map_err(std::io::Error::other)).left_stream(),
        None => futures::stream::empty::<std::io::Result<Bytes>>().right_stream(),
    };
    StreamReader::new(stream)
}

/// The digests a request asks to be checked.
fn expected_digests(
    headers: &http::HeaderMap,
    content_md5: Option<&str>,
    checksums: [(&str, Option<&String>); 5],
) -> S3Result<Expected> {
    let mut e = Expected {
        content_md5: content_md5.map(str::to_string),
        ..Default::default()
    };
    for (name, value) in checksums {
        if let Some(v) = value {
            e.checksums.push((name.to_string(), v.clone()));
        }
    }
    for name in ["x-amz-sdk-checksum-algorithm", "x-amz-checksum-algorithm"] {
        if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
            let h = digest::checksum_header(v).ok_or_else(|| {
                s3_error!(InvalidRequest, "Checksum algorithm provided is unsupported")
            })?;
            e.compute.push(h);
        }
    }
    if let Some(v) = headers.get("x-amz-trailer").and_then(|v| v.to_str().ok()) {
        for name in v.split(',') {
            let name = name.trim().to_ascii_lowercase();
            if digest::CHECKSUM_HEADERS.contains(&name.as_str()) {
                e.compute.push(name);
            }
        }
    }
    Ok(e)
}

/// Checks a body's digests, the trailer's checksums (read once the body has ended)
/// included.
fn verify_body(
    mut expected: Expected,
    trailing: Option<s3s::TrailingHeaders>,
    computed: &Computed,
) -> Result<(), DigestError> {
    if let Some(t) = trailing.and_then(|t| t.take()) {
        for (name, value) in &t {
            if let Ok(v) = value.to_str() {
                expected.add_trailer(name.as_str(), v);
            }
        }
    }
    digest::verify(&expected, computed)
}

fn digest_err(e: DigestError) -> S3Error {
    match e {
        DigestError::InvalidDigest => {
            S3Error::with_message(S3ErrorCode::InvalidDigest, e.to_string())
        }
        DigestError::BadDigest | DigestError::ChecksumMismatch(_) => {
            S3Error::with_message(S3ErrorCode::BadDigest, e.to_string())
        }
    }
}

/// Why a request body could not be read: too large, a signature or payload hash that
/// s3s found wrong (its stream fails at the chunk, or at the end for a whole-payload
/// hash), or a client that went away. Decided from what the request declared and what
/// arrived, never from an error's text.
fn body_err(
    too_large: bool,
    received: u64,
    declared: Option<i64>,
    headers: &http::HeaderMap,
) -> S3Error {
    if too_large {
        return s3_error!(
            EntityTooLarge,
            "Your proposed upload exceeds the maximum allowed size"
        );
    }
    let payload = headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if payload.starts_with("STREAMING-AWS4-HMAC-SHA256-PAYLOAD") {
        return s3_error!(
            SignatureDoesNotMatch,
            "A chunk signature of the payload does not match"
        );
    }
    let complete = declared.is_some_and(|d| u64::try_from(d).ok() == Some(received));
    if complete && payload.len() == 64 {
        let mut e = S3Error::with_message(
            S3ErrorCode::Custom("XAmzContentSHA256Mismatch".into()),
            "The provided 'x-amz-content-sha256' header does not match what was computed",
        );
        e.set_status_code(http::StatusCode::BAD_REQUEST);
        return e;
    }
    s3_error!(
        IncompleteBody,
        "You did not provide the number of bytes specified by the Content-Length HTTP header"
    )
}

impl ShoalS3 {
    /// Waits until the changes made so far are in the network: a write is acknowledged
    /// only after this (concurrent requests share one publish).
    async fn durable(&self) -> S3Result<()> {
        self.uplink.flush().await.map(|_| ()).map_err(|e| {
            tracing::warn!(error = %e, "catalog publish failed");
            S3Error::with_message(
                S3ErrorCode::ServiceUnavailable,
                format!("the change is saved on the gateway but not yet in the network: {e}"),
            )
        })
    }

    fn require_bucket(&self, bucket: &str) -> S3Result<()> {
        match self.uplink.catalog().bucket(bucket).map_err(catalog_err)? {
            Some(_) => Ok(()),
            None => Err(s3_err(Error::NoSuchBucket(bucket.to_string()))),
        }
    }

    fn entry(&self, bucket: &str, key: &str) -> S3Result<ObjectEntry> {
        self.uplink.stat(bucket, key).map_err(s3_err)
    }

    fn current_etag(&self, bucket: &str, key: &str) -> S3Result<Option<String>> {
        Ok(self
            .uplink
            .catalog()
            .object(bucket, key)
            .map_err(catalog_err)?
            .map(|e| attrs::etag(&e)))
    }

    /// Streams bytes `[start, end)` of `entry` as a response body.
    fn stream(
        &self,
        bucket: &str,
        key: &str,
        entry: ObjectEntry,
        start: u64,
        end: u64,
    ) -> StreamingBlob {
        let (writer, reader) = tokio::io::duplex(PIPE_BUFFER);
        let (up, b, k) = (self.uplink.clone(), bucket.to_string(), key.to_string());
        let task = tokio::spawn(async move {
            up.get_entry(&b, &k, &entry, Some((start, end)), writer, None)
                .await
        });
        // The body ends with the download's outcome: a failure mid-way aborts the
        // response instead of ending it short.
        let outcome = futures::stream::once(async move {
            match task.await {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "download failed mid-response");
                    Some(Err(std::io::Error::other(e)))
                }
                Err(e) => Some(Err(std::io::Error::other(e))),
            }
        })
        .filter_map(std::future::ready);
        StreamingBlob::wrap(ReaderStream::new(reader).chain(outcome))
    }

    /// Reads a request body into a staged object or part, computing its digests.
    async fn read_body<T, F, Fut>(
        &self,
        body: Option<StreamingBlob>,
        expected: &Expected,
        limit: u64,
        declared: Option<i64>,
        headers: &http::HeaderMap,
        stage: F,
    ) -> S3Result<(T, Computed)>
    where
        F: FnOnce(BodyReader<Box<dyn AsyncRead + Unpin + Send>>) -> Fut,
        Fut: std::future::Future<
                Output = (
                    Result<T, Error>,
                    BodyReader<Box<dyn AsyncRead + Unpin + Send>>,
                ),
            >,
    {
        let reader: Box<dyn AsyncRead + Unpin + Send> = Box::new(body_reader(body));
        let (result, reader) = stage(BodyReader::new(reader, expected, limit)).await;
        let (too_large, failed) = (reader.too_large, reader.failed);
        let computed = reader.finish();
        match result {
            Ok(v) => Ok((v, computed)),
            Err(Error::Read { .. }) if too_large || failed => {
                Err(body_err(too_large, computed.received, declared, headers))
            }
            Err(e) => Err(s3_err(e)),
        }
    }

    /// The entry a GET or HEAD reads, after its version and conditions are checked.
    fn read_entry(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        c: &Conditions,
    ) -> S3Result<ObjectEntry> {
        if version_id.is_some_and(|v| v != "null") {
            return Err(s3_error!(InvalidArgument, "Invalid version id specified"));
        }
        self.require_bucket(bucket)?;
        let entry = self.entry(bucket, key)?;
        Self::check_read(c, &entry)?;
        Ok(entry)
    }

    fn read_conditions(
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

    fn check_read(c: &Conditions, entry: &ObjectEntry) -> S3Result<()> {
        match conditions::evaluate_read(c, &attrs::etag(entry), (entry.modified_ms / 1000) as i64) {
            Outcome::Proceed => Ok(()),
            Outcome::PreconditionFailed => Err(s3_error!(
                PreconditionFailed,
                "At least one of the pre-conditions you specified did not hold"
            )),
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

    /// The source of a copy, checked against its conditions.
    fn copy_source(
        &self,
        source: &CopySource,
        c: &Conditions,
    ) -> S3Result<(String, String, ObjectEntry)> {
        let CopySource::Bucket {
            bucket,
            key,
            version_id,
        } = source
        else {
            return Err(s3_error!(
                NotImplemented,
                "Access point copy sources are not supported"
            ));
        };
        if version_id.as_deref().is_some_and(|v| v != "null") {
            return Err(s3_error!(InvalidArgument, "Invalid version id specified"));
        }
        self.require_bucket(bucket)?;
        let entry = self.entry(bucket, key)?;
        match conditions::evaluate_copy_source(
            c,
            &attrs::etag(&entry),
            (entry.modified_ms / 1000) as i64,
        ) {
            Outcome::Proceed => {}
            _ => {
                return Err(s3_error!(
                    PreconditionFailed,
                    "At least one of the pre-conditions you specified did not hold"
                ));
            }
        }
        Ok((bucket.to_string(), key.to_string(), entry))
    }

    /// Records a stored part (deleting the one it replaces) and makes it durable here.
    async fn record_part(&self, upload_id: &str, part: &crate::StagedPart) -> S3Result<()> {
        let old = self
            .uploads
            .put_part(upload_id, part)
            .map_err(catalog_err)?;
        self.uplink
            .catalog()
            .flush_async()
            .await
            .map_err(catalog_err)?;
        if let Some(old) = old {
            self.uplink.discard_part(&old).await;
        }
        Ok(())
    }

    fn upload(&self, bucket: &str, key: &str, id: &str) -> S3Result<UploadRecord> {
        match self.uploads.get(id).map_err(catalog_err)? {
            Some(r) if r.bucket == bucket && r.key == key => Ok(r),
            _ => Err(s3_error!(
                NoSuchUpload,
                "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed."
            )),
        }
    }

    /// Aborts an upload: deletes its parts' pieces and its records.
    pub(super) async fn abort(&self, id: &str) -> S3Result<()> {
        let parts = self.uploads.parts(id).map_err(catalog_err)?;
        self.uploads.remove(id).map_err(catalog_err)?;
        for p in parts.values() {
            self.uplink.discard_part(p).await;
        }
        Ok(())
    }

    fn object_row(&self, e: &ObjectEntry, url: bool, with_owner: bool) -> Object {
        Object {
            owner: with_owner.then(owner),
            key: Some(enc(url, &e.key)),
            size: Some(e.size as i64),
            e_tag: Some(strong(&attrs::etag(e))),
            last_modified: Some(ms_to_ts(e.modified_ms)),
            storage_class: Some(ObjectStorageClass::from_static(
                ObjectStorageClass::STANDARD,
            )),
            ..Default::default()
        }
    }

    /// One page of `bucket` under `prefix`.
    fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        resume: &Resume,
        max: usize,
    ) -> S3Result<listing::Page<ObjectEntry>> {
        self.require_bucket(bucket)?;
        let from = match resume.scan_from() {
            Some(k) if k > prefix => k,
            _ => prefix,
        };
        let entries = self
            .uplink
            .catalog()
            .objects_from(bucket, from)
            .map(|r| r.map(|e| (e.key.clone(), e)));
        listing::page(entries, prefix, delimiter, resume, max).map_err(catalog_err)
    }
}

fn standard_headers(
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
        ("s3:content-encoding", content_encoding),
        ("s3:content-language", content_language),
        ("s3:expires", expires),
    ]
}

fn stored_expires(meta: &BTreeMap<String, String>) -> Option<Timestamp> {
    attrs::standard(meta, "expires")
        .and_then(|s| Timestamp::parse(TimestampFormat::HttpDate, s).ok())
}

/// The answer to a write's conditions: If-Match on a key that does not exist is
/// NoSuchKey (404), any other failed condition PreconditionFailed (412).
fn write_outcome(c: &Conditions, current: Option<&str>) -> S3Result<()> {
    match conditions::evaluate_write(c, current) {
        Outcome::Proceed => Ok(()),
        _ if current.is_none() && c.if_match.is_some() => Err(s3_error!(
            NoSuchKey,
            "The specified key does not exist (If-Match needs an object)"
        )),
        _ => Err(s3_error!(
            PreconditionFailed,
            "At least one of the pre-conditions you specified did not hold"
        )),
    }
}

fn owner() -> Owner {
    Owner {
        display_name: Some("shoal".into()),
        id: Some("shoal".into()),
    }
}

/// Parses `bytes=a-b` of `x-amz-copy-source-range` (both ends required, inclusive).
pub(crate) fn copy_range(spec: &str, size: u64) -> S3Result<(u64, u64)> {
    let bad = || {
        s3_error!(
            InvalidArgument,
            "The x-amz-copy-source-range value must be of the form bytes=first-last"
        )
    };
    let (a, b) = spec
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
        .ok_or_else(bad)?;
    let (a, b): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if a > b || b >= size {
        return Err(s3_error!(
            InvalidRange,
            "The requested range is not satisfiable"
        ));
    }
    Ok((a, b + 1))
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
            metadata: Some(attrs::user_metadata(&entry.metadata)),
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

#[async_trait::async_trait]
impl S3 for ShoalS3 {
    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let i = req.input;
        let max = match i.max_buckets {
            None => usize::MAX,
            Some(n) if (1..=10_000).contains(&n) => n as usize,
            Some(_) => {
                return Err(s3_error!(
                    InvalidArgument,
                    "max-buckets must be between 1 and 10000"
                ));
            }
        };
        let after = match i.continuation_token.as_deref().filter(|t| !t.is_empty()) {
            Some(t) => match Resume::from_token(t) {
                Some(Resume::AfterKey(name)) => Some(name),
                _ => {
                    return Err(s3_error!(
                        InvalidArgument,
                        "The continuation token provided is incorrect"
                    ));
                }
            },
            None => None,
        };
        let prefix = i.prefix.clone().unwrap_or_default();
        // Buckets come in name order from the catalog.
        let mut names = self
            .uplink
            .buckets()
            .map_err(s3_err)?
            .into_iter()
            .filter(|b| b.name.starts_with(&prefix))
            .filter(|b| after.as_ref().is_none_or(|a| b.name.as_str() > a.as_str()));
        let page: Vec<_> = names.by_ref().take(max).collect();
        let more = names.next().is_some();
        let token = if more {
            page.last()
                .and_then(|b| Resume::AfterKey(b.name.clone()).token())
        } else {
            None
        };
        let buckets = page
            .into_iter()
            .map(|b| Bucket {
                name: Some(b.name),
                creation_date: Some(ms_to_ts(b.created_ms)),
                bucket_region: Some(self.region.clone()),
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(owner()),
            continuation_token: token,
            prefix: i.prefix,
        }))
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let bucket = &req.input.bucket;
        if let Some(loc) = req
            .input
            .create_bucket_configuration
            .as_ref()
            .and_then(|c| c.location_constraint.as_ref())
            && loc.as_str() != self.region
            && !(loc.as_str().is_empty() && self.region == "us-east-1")
        {
            return Err(s3_error!(
                InvalidLocationConstraint,
                "The specified location-constraint is not valid for this gateway's region"
            ));
        }
        match self.uplink.create_bucket(bucket) {
            Ok(()) => self.durable().await?,
            // For legacy compatibility S3 answers 200 to re-creating a bucket one owns in
            // us-east-1, and BucketAlreadyOwnedByYou in every other region.
            Err(Error::BucketExists(_)) if self.region == "us-east-1" => {}
            Err(e) => return Err(s3_err(e)),
        }
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{bucket}")),
        }))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.require_bucket(&req.input.bucket)?;
        Ok(S3Response::new(HeadBucketOutput {
            bucket_region: Some(self.region.clone()),
            ..Default::default()
        }))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.uplink
            .remove_bucket(&req.input.bucket, false)
            .await
            .map_err(s3_err)?;
        self.durable().await?;
        Ok(S3Response::new(DeleteBucketOutput {}))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.require_bucket(&req.input.bucket)?;
        // us-east-1 is the empty constraint, as on AWS.
        let location_constraint = (self.region != "us-east-1")
            .then(|| BucketLocationConstraint::from(self.region.clone()));
        Ok(S3Response::new(GetBucketLocationOutput {
            location_constraint,
        }))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let S3Request {
            input,
            headers,
            trailing_headers,
            ..
        } = req;
        let (bucket, key) = (input.bucket.clone(), input.key.clone());
        check_key(&key)?;
        check_metadata(input.metadata.as_ref())?;
        self.require_bucket(&bucket)?;
        let declared = input.content_length;
        if declared.is_some_and(|n| n as u64 > multipart::MAX_PART_SIZE) {
            return Err(s3_error!(
                EntityTooLarge,
                "Your proposed upload exceeds the maximum allowed size"
            ));
        }
        let write_conditions = Conditions {
            if_match: input.if_match.as_ref().map(tag),
            if_none_match: input.if_none_match.as_ref().map(tag),
            ..Default::default()
        };
        let precondition =
            |current: Option<String>| write_outcome(&write_conditions, current.as_deref());
        precondition(self.current_etag(&bucket, &key)?)?;
        let expected = expected_digests(
            &headers,
            input.content_md5.as_deref(),
            [
                ("x-amz-checksum-crc32", input.checksum_crc32.as_ref()),
                ("x-amz-checksum-crc32c", input.checksum_crc32c.as_ref()),
                (
                    "x-amz-checksum-crc64nvme",
                    input.checksum_crc64nvme.as_ref(),
                ),
                ("x-amz-checksum-sha1", input.checksum_sha1.as_ref()),
                ("x-amz-checksum-sha256", input.checksum_sha256.as_ref()),
            ],
        )?;
        let opts = PutOptions {
            size_hint: declared.and_then(|n| u64::try_from(n).ok()),
            ..Default::default()
        };
        let up = self.uplink.clone();
        let (staged, computed) = self
            .read_body(
                input.body,
                &expected,
                multipart::MAX_PART_SIZE,
                declared,
                &headers,
                |mut reader| async move {
                    let r = up.stage(&bucket, &key, &mut reader, &opts).await;
                    (r, reader)
                },
            )
            .await?;
        if let Err(e) = verify_body(expected, trailing_headers, &computed) {
            self.uplink.discard(staged).await;
            return Err(digest_err(e));
        }
        let (bucket, key) = (input.bucket, input.key);
        if let Err(e) = precondition(self.current_etag(&bucket, &key)?) {
            self.uplink.discard(staged).await;
            return Err(e);
        }
        let etag = digest::md5_hex(&computed.md5);
        let metadata = attrs::build(
            input.metadata.as_ref(),
            &standard_headers(
                input.cache_control,
                input.content_disposition,
                input.content_encoding,
                input.content_language,
                input.expires.as_ref(),
            ),
            &etag,
        );
        self.uplink
            .commit(staged, input.content_type, metadata)
            .await
            .map_err(s3_err)?;
        self.durable().await?;
        let c = computed.checksums;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(strong(&etag)),
            checksum_crc32: c.checksum_crc32,
            checksum_crc32c: c.checksum_crc32c,
            checksum_crc64nvme: c.checksum_crc64nvme,
            checksum_sha1: c.checksum_sha1,
            checksum_sha256: c.checksum_sha256,
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let i = &req.input;
        let entry = self.read_entry(
            &i.bucket,
            &i.key,
            i.version_id.as_deref(),
            &Self::read_conditions(
                i.if_match.as_ref(),
                i.if_none_match.as_ref(),
                i.if_modified_since.as_ref(),
                i.if_unmodified_since.as_ref(),
            ),
        )?;
        let sel = select(&entry, i.range.as_ref(), i.part_number)?;
        let body = self.stream(&i.bucket, &i.key, entry.clone(), sel.start, sel.end);
        Ok(S3Response::new(
            object_output!(GetObjectOutput, &entry, sel, {
                body: Some(body),
            }),
        ))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let i = &req.input;
        let entry = self.read_entry(
            &i.bucket,
            &i.key,
            i.version_id.as_deref(),
            &Self::read_conditions(
                i.if_match.as_ref(),
                i.if_none_match.as_ref(),
                i.if_modified_since.as_ref(),
                i.if_unmodified_since.as_ref(),
            ),
        )?;
        let sel = select(&entry, i.range.as_ref(), i.part_number)?;
        Ok(S3Response::new(object_output!(
            HeadObjectOutput,
            &entry,
            sel,
            {}
        )))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let i = &req.input;
        self.require_bucket(&i.bucket)?;
        // Deleting a key that is not there succeeds, as on S3.
        match self.uplink.delete(&i.bucket, &i.key).await {
            Ok(_) | Err(Error::NoSuchObject { .. }) => {}
            Err(e) => return Err(s3_err(e)),
        }
        self.durable().await?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let i = req.input;
        self.require_bucket(&i.bucket)?;
        if i.delete.objects.len() > listing::MAX_KEYS {
            return Err(s3_error!(
                MalformedXML,
                "A DeleteObjects request may name at most 1000 keys"
            ));
        }
        let quiet = i.delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for o in i.delete.objects {
            match self.uplink.delete(&i.bucket, &o.key).await {
                Ok(_) | Err(Error::NoSuchObject { .. }) => {
                    if !quiet {
                        deleted.push(DeletedObject {
                            key: Some(o.key),
                            ..Default::default()
                        });
                    }
                }
                Err(e) => {
                    let e = s3_err(e);
                    errors.push(s3s::dto::Error {
                        code: Some(e.code().as_str().to_string()),
                        message: e.message().map(str::to_string),
                        key: Some(o.key),
                        ..Default::default()
                    });
                }
            }
        }
        self.durable().await?;
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            ..Default::default()
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let i = req.input;
        check_key(&i.key)?;
        check_metadata(i.metadata.as_ref())?;
        self.require_bucket(&i.bucket)?;
        let c = Conditions {
            if_match: i.copy_source_if_match.as_ref().map(tag),
            if_none_match: i.copy_source_if_none_match.as_ref().map(tag),
            if_modified_since: i.copy_source_if_modified_since.as_ref().map(ts_to_secs),
            if_unmodified_since: i.copy_source_if_unmodified_since.as_ref().map(ts_to_secs),
        };
        let (src_bucket, src_key, src) = self.copy_source(&i.copy_source, &c)?;
        let replace = match i.metadata_directive.as_ref().map(|d| d.as_str()) {
            None | Some(MetadataDirective::COPY) => false,
            Some(MetadataDirective::REPLACE) => true,
            Some(_) => {
                return Err(s3_error!(InvalidArgument, "Unknown metadata directive"));
            }
        };
        if src_bucket == i.bucket && src_key == i.key && !replace {
            return Err(s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes."
            ));
        }
        let (content_type, metadata) = if replace {
            let standard = standard_headers(
                i.cache_control,
                i.content_disposition,
                i.content_encoding,
                i.content_language,
                i.expires.as_ref(),
            );
            (
                Some(i.content_type),
                Some(attrs::replace(
                    &src.metadata,
                    i.metadata.as_ref(),
                    &standard,
                )),
            )
        } else {
            (None, None)
        };
        let entry = self
            .uplink
            .copy(
                &src_bucket,
                &src_key,
                &i.bucket,
                &i.key,
                content_type,
                metadata,
            )
            .await
            .map_err(s3_err)?;
        self.durable().await?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(strong(&attrs::etag(&entry))),
                last_modified: Some(ms_to_ts(entry.modified_ms)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let i = req.input;
        let url = url_encoded(&i.encoding_type)?;
        let max = max_keys(i.max_keys)?;
        let prefix = i.prefix.clone().unwrap_or_default();
        let delimiter = i.delimiter.clone().filter(|d| !d.is_empty());
        let marker = i.marker.clone().unwrap_or_default();
        let resume = Resume::from_marker(&marker, delimiter.as_deref());
        let page = self.list_page(&i.bucket, &prefix, delimiter.as_deref(), &resume, max)?;
        // NextMarker only with a delimiter, as on S3 (clients take the last key
        // otherwise).
        let next_marker = match (&page.next, &delimiter) {
            (Some(Resume::AfterKey(k) | Resume::AfterPrefix(k)), Some(_)) => Some(enc(url, k)),
            _ => None,
        };
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(i.bucket),
            // v1 echoes the prefix as sent: clients decode only Delimiter, Marker,
            // NextMarker and Key (botocore; Ceph's s3-tests check it).
            prefix: Some(prefix.clone()),
            marker: Some(enc(url, &marker)),
            max_keys: Some(max as i32),
            is_truncated: Some(page.is_truncated()),
            contents: Some(
                page.objects()
                    .map(|e| self.object_row(e, url, true))
                    .collect(),
            ),
            common_prefixes: Some(
                page.prefixes()
                    .map(|p| CommonPrefix {
                        prefix: Some(enc(url, p)),
                    })
                    .collect(),
            ),
            delimiter: delimiter.map(|d| enc(url, &d)),
            next_marker,
            encoding_type: i.encoding_type,
            request_charged: None,
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let i = req.input;
        let url = url_encoded(&i.encoding_type)?;
        let max = max_keys(i.max_keys)?;
        let prefix = i.prefix.clone().unwrap_or_default();
        let delimiter = i.delimiter.clone().filter(|d| !d.is_empty());
        let fetch_owner = i.fetch_owner.unwrap_or(false);
        let resume = match (&i.continuation_token, &i.start_after) {
            // An empty token is no token (as S3 and the conformance suite have it).
            (Some(t), _) if !t.is_empty() => Resume::from_token(t).ok_or_else(|| {
                s3_error!(
                    InvalidArgument,
                    "The continuation token provided is incorrect"
                )
            })?,
            (None, Some(s)) if !s.is_empty() => Resume::AfterKey(s.clone()),
            _ => Resume::Start,
        };
        let page = self.list_page(&i.bucket, &prefix, delimiter.as_deref(), &resume, max)?;
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(i.bucket),
            prefix: Some(enc(url, &prefix)),
            max_keys: Some(max as i32),
            key_count: Some(page.rows.len() as i32),
            continuation_token: i.continuation_token,
            is_truncated: Some(page.is_truncated()),
            next_continuation_token: page.next.as_ref().and_then(Resume::token),
            contents: Some(
                page.objects()
                    .map(|e| self.object_row(e, url, fetch_owner))
                    .collect(),
            ),
            common_prefixes: Some(
                page.prefixes()
                    .map(|p| CommonPrefix {
                        prefix: Some(enc(url, p)),
                    })
                    .collect(),
            ),
            delimiter: delimiter.map(|d| enc(url, &d)),
            start_after: i.start_after.map(|s| enc(url, &s)),
            encoding_type: i.encoding_type,
            request_charged: None,
        }))
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        // Versioning is not kept: every object has one version, "null", the latest.
        let i = req.input;
        let url = url_encoded(&i.encoding_type)?;
        let max = max_keys(i.max_keys)?;
        let prefix = i.prefix.clone().unwrap_or_default();
        let delimiter = i.delimiter.clone().filter(|d| !d.is_empty());
        let marker = i.key_marker.clone().unwrap_or_default();
        let resume = Resume::from_marker(&marker, delimiter.as_deref());
        let page = self.list_page(&i.bucket, &prefix, delimiter.as_deref(), &resume, max)?;
        let next_key_marker = match &page.next {
            Some(Resume::AfterKey(k) | Resume::AfterPrefix(k)) => Some(enc(url, k)),
            _ => None,
        };
        let versions = page
            .rows
            .iter()
            .filter_map(|r| match r {
                Row::Object(e) => Some(ObjectVersion {
                    key: Some(enc(url, &e.key)),
                    size: Some(e.size as i64),
                    e_tag: Some(strong(&attrs::etag(e))),
                    last_modified: Some(ms_to_ts(e.modified_ms)),
                    is_latest: Some(true),
                    version_id: Some("null".into()),
                    owner: Some(owner()),
                    storage_class: Some(ObjectVersionStorageClass::from_static(
                        ObjectVersionStorageClass::STANDARD,
                    )),
                    ..Default::default()
                }),
                Row::CommonPrefix(_) => None,
            })
            .collect();
        Ok(S3Response::new(ListObjectVersionsOutput {
            name: Some(i.bucket),
            prefix: Some(enc(url, &prefix)),
            key_marker: Some(enc(url, &marker)),
            version_id_marker: i.version_id_marker,
            max_keys: Some(max as i32),
            is_truncated: Some(page.is_truncated()),
            next_version_id_marker: next_key_marker.as_ref().map(|_| "null".to_string()),
            next_key_marker,
            versions: Some(versions),
            common_prefixes: Some(
                page.prefixes()
                    .map(|p| CommonPrefix {
                        prefix: Some(enc(url, p)),
                    })
                    .collect(),
            ),
            delimiter: delimiter.map(|d| enc(url, &d)),
            encoding_type: i.encoding_type,
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let i = req.input;
        check_key(&i.key)?;
        check_metadata(i.metadata.as_ref())?;
        self.require_bucket(&i.bucket)?;
        let standard = standard_headers(
            i.cache_control,
            i.content_disposition,
            i.content_encoding,
            i.content_language,
            i.expires.as_ref(),
        );
        let record = UploadRecord {
            bucket: i.bucket.clone(),
            key: i.key.clone(),
            created_ms: shoal_proto::time::unix_ms(),
            content_type: i.content_type,
            // The ETag is filled in at completion.
            metadata: attrs::build(i.metadata.as_ref(), &standard, ""),
        };
        let id = self.uploads.create(&record).map_err(catalog_err)?;
        self.uplink
            .catalog()
            .flush_async()
            .await
            .map_err(catalog_err)?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            upload_id: Some(id),
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let S3Request {
            input: i,
            headers,
            trailing_headers,
            ..
        } = req;
        self.upload(&i.bucket, &i.key, &i.upload_id)?;
        let declared = i.content_length;
        if declared.is_some_and(|n| n as u64 > multipart::MAX_PART_SIZE) {
            return Err(s3_error!(EntityTooLarge, "A part may be at most 5 GiB"));
        }
        let expected = expected_digests(
            &headers,
            i.content_md5.as_deref(),
            [
                ("x-amz-checksum-crc32", i.checksum_crc32.as_ref()),
                ("x-amz-checksum-crc32c", i.checksum_crc32c.as_ref()),
                ("x-amz-checksum-crc64nvme", i.checksum_crc64nvme.as_ref()),
                ("x-amz-checksum-sha1", i.checksum_sha1.as_ref()),
                ("x-amz-checksum-sha256", i.checksum_sha256.as_ref()),
            ],
        )?;
        let number = part_number(i.part_number)?;
        let opts = PutOptions {
            size_hint: declared.and_then(|n| u64::try_from(n).ok()),
            ..Default::default()
        };
        let (up, bucket, key) = (self.uplink.clone(), i.bucket.clone(), i.key.clone());
        let (mut part, computed) = self
            .read_body(
                i.body,
                &expected,
                multipart::MAX_PART_SIZE,
                declared,
                &headers,
                |mut reader| async move {
                    let r = up
                        .stage_part(&bucket, &key, number, &mut reader, &opts)
                        .await;
                    (r, reader)
                },
            )
            .await?;
        if let Err(e) = verify_body(expected, trailing_headers, &computed) {
            self.uplink.discard_part(&part).await;
            return Err(digest_err(e));
        }
        part.info.md5 = computed.md5;
        self.record_part(&i.upload_id, &part).await?;
        let c = computed.checksums;
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(strong(&digest::md5_hex(&computed.md5))),
            checksum_crc32: c.checksum_crc32,
            checksum_crc32c: c.checksum_crc32c,
            checksum_crc64nvme: c.checksum_crc64nvme,
            checksum_sha1: c.checksum_sha1,
            checksum_sha256: c.checksum_sha256,
            ..Default::default()
        }))
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let i = req.input;
        self.upload(&i.bucket, &i.key, &i.upload_id)?;
        let c = Conditions {
            if_match: i.copy_source_if_match.as_ref().map(tag),
            if_none_match: i.copy_source_if_none_match.as_ref().map(tag),
            if_modified_since: i.copy_source_if_modified_since.as_ref().map(ts_to_secs),
            if_unmodified_since: i.copy_source_if_unmodified_since.as_ref().map(ts_to_secs),
        };
        let (src_bucket, src_key, src) = self.copy_source(&i.copy_source, &c)?;
        let (start, end) = match &i.copy_source_range {
            Some(spec) => copy_range(spec, src.size)?,
            None => (0, src.size),
        };
        if end - start > multipart::MAX_PART_SIZE {
            return Err(s3_error!(EntityTooLarge, "A part may be at most 5 GiB"));
        }
        let body = self.stream(&src_bucket, &src_key, src, start, end);
        let mut reader = BodyReader::new(body_reader(Some(body)), &Expected::default(), u64::MAX);
        let number = part_number(i.part_number)?;
        let opts = PutOptions {
            size_hint: Some(end - start),
            ..Default::default()
        };
        let mut part = self
            .uplink
            .stage_part(&i.bucket, &i.key, number, &mut reader, &opts)
            .await
            .map_err(s3_err)?;
        let computed = reader.finish();
        part.info.md5 = computed.md5;
        self.record_part(&i.upload_id, &part).await?;
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(strong(&digest::md5_hex(&computed.md5))),
                last_modified: Some(ms_to_ts(shoal_proto::time::unix_ms())),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let i = req.input;
        let done_output = |d: &Completed| CompleteMultipartUploadOutput {
            bucket: Some(d.bucket.clone()),
            key: Some(d.key.clone()),
            e_tag: Some(strong(&d.etag)),
            location: Some(format!("/{}/{}", d.bucket, d.key)),
            ..Default::default()
        };
        // A repeated Complete of a finished upload answers as the first did.
        if let Some(d) = self.uploads.completed(&i.upload_id).map_err(catalog_err)?
            && d.bucket == i.bucket
            && d.key == i.key
        {
            return Ok(S3Response::new(done_output(&d)));
        }
        let record = self.upload(&i.bucket, &i.key, &i.upload_id)?;
        let mut requested = Vec::new();
        for p in i.multipart_upload.and_then(|m| m.parts).unwrap_or_default() {
            let number = p
                .part_number
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| s3_error!(InvalidPart, "A part has no valid part number"))?;
            let etag = match &p.e_tag {
                Some(e) => Some(digest::parse_md5_etag(e.value()).ok_or_else(|| {
                    s3_error!(InvalidPart, "Part {number} has an ETag that is not ours")
                })?),
                None => None,
            };
            requested.push((number, etag));
        }
        let mut stored = self.uploads.parts(&i.upload_id).map_err(catalog_err)?;
        let order = multipart::plan_complete(&requested, &stored).map_err(|e| {
            let code = match e {
                CompleteError::NoParts => S3ErrorCode::MalformedXML,
                CompleteError::InvalidPartOrder => S3ErrorCode::InvalidPartOrder,
                CompleteError::InvalidPart(_) => S3ErrorCode::InvalidPart,
                CompleteError::EntityTooSmall(_) => S3ErrorCode::EntityTooSmall,
            };
            S3Error::with_message(code, e.to_string())
        })?;
        let write_conditions = Conditions {
            if_match: i.if_match.as_ref().map(tag),
            if_none_match: i.if_none_match.as_ref().map(tag),
            ..Default::default()
        };
        write_outcome(
            &write_conditions,
            self.current_etag(&i.bucket, &i.key)?.as_deref(),
        )?;
        let parts: Vec<_> = order.iter().filter_map(|n| stored.remove(n)).collect();
        let md5s: Vec<[u8; 16]> = parts.iter().map(|p| p.info.md5).collect();
        let etag = digest::multipart_etag(&md5s);
        let mut metadata = record.metadata;
        metadata.insert(attrs::ETAG.to_string(), etag.clone());
        self.uplink
            .commit_parts(&i.bucket, &i.key, parts, record.content_type, metadata)
            .await
            .map_err(s3_err)?;
        let done = Completed {
            bucket: i.bucket.clone(),
            key: i.key.clone(),
            etag,
            completed_ms: shoal_proto::time::unix_ms(),
        };
        self.uploads
            .mark_completed(&i.upload_id, &done)
            .map_err(catalog_err)?;
        self.durable().await?;
        // Parts uploaded but not named in the list are not part of the object.
        for p in stored.values() {
            self.uplink.discard_part(p).await;
        }
        Ok(S3Response::new(done_output(&done)))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let i = req.input;
        self.upload(&i.bucket, &i.key, &i.upload_id)?;
        self.abort(&i.upload_id).await?;
        self.uplink
            .catalog()
            .flush_async()
            .await
            .map_err(catalog_err)?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let i = req.input;
        self.upload(&i.bucket, &i.key, &i.upload_id)?;
        let max = match i.max_parts {
            None => 1000,
            Some(n) if n < 0 => {
                return Err(s3_error!(InvalidArgument, "max-parts must not be negative"));
            }
            Some(n) => (n as usize).min(1000),
        };
        let marker = i.part_number_marker.unwrap_or(0).max(0) as u32;
        let stored = self.uploads.parts(&i.upload_id).map_err(catalog_err)?;
        let after: Vec<_> = stored.range(marker.saturating_add(1)..).collect();
        let truncated = after.len() > max;
        let page: Vec<_> = after.into_iter().take(max).collect();
        let next = page.last().map(|(n, _)| **n as i32);
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            upload_id: Some(i.upload_id),
            part_number_marker: Some(marker as i32),
            next_part_number_marker: if truncated { next } else { None },
            max_parts: Some(max as i32),
            is_truncated: Some(truncated),
            owner: Some(owner()),
            initiator: Some(Initiator {
                display_name: Some("shoal".into()),
                id: Some("shoal".into()),
            }),
            storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
            parts: Some(
                page.into_iter()
                    .map(|(n, p)| Part {
                        part_number: Some(*n as i32),
                        size: Some(p.info.size as i64),
                        e_tag: Some(strong(&digest::md5_hex(&p.info.md5))),
                        last_modified: Some(ms_to_ts(p.staged_ms)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let i = req.input;
        self.require_bucket(&i.bucket)?;
        let url = url_encoded(&i.encoding_type)?;
        let max = max_keys(i.max_uploads)?;
        let prefix = i.prefix.clone().unwrap_or_default();
        let delimiter = i.delimiter.clone().filter(|d| !d.is_empty());
        let key_marker = i.key_marker.clone().unwrap_or_default();
        let id_marker = i.upload_id_marker.clone().unwrap_or_default();
        let mut uploads: Vec<_> = self
            .uploads
            .list()
            .map_err(catalog_err)?
            .into_iter()
            .filter(|(_, r)| r.bucket == i.bucket && r.key.starts_with(&prefix))
            .collect();
        // S3 lists by key, then by initiation time.
        uploads.sort_by(|a, b| {
            (&a.1.key, a.1.created_ms, &a.0).cmp(&(&b.1.key, b.1.created_ms, &b.0))
        });
        // Past the markers: keys after key-marker, or, with upload-id-marker, uploads
        // of key-marker after that id.
        let mut past_id = id_marker.is_empty();
        let rows = uploads.into_iter().filter(|(id, r)| {
            if key_marker.is_empty() {
                return true;
            }
            if r.key == key_marker && !id_marker.is_empty() {
                if past_id {
                    return true;
                }
                past_id = *id == id_marker;
                return false;
            }
            r.key > key_marker
        });
        let mut list = Vec::new();
        let mut prefixes: Vec<String> = Vec::new();
        let mut truncated = false;
        let mut last: Option<(String, String)> = None;
        for (id, r) in rows {
            let folded = delimiter.as_deref().and_then(|d| {
                r.key[prefix.len()..]
                    .find(d)
                    .map(|at| r.key[..prefix.len() + at + d.len()].to_string())
            });
            if let Some(p) = &folded
                && prefixes.last() == Some(p)
            {
                continue;
            }
            if list.len() + prefixes.len() == max {
                truncated = true;
                break;
            }
            match folded {
                Some(p) => prefixes.push(p),
                None => {
                    last = Some((r.key.clone(), id.clone()));
                    list.push(MultipartUpload {
                        key: Some(enc(url, &r.key)),
                        upload_id: Some(id),
                        initiated: Some(ms_to_ts(r.created_ms)),
                        owner: Some(owner()),
                        initiator: Some(Initiator {
                            display_name: Some("shoal".into()),
                            id: Some("shoal".into()),
                        }),
                        storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
                        ..Default::default()
                    });
                }
            }
        }
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(i.bucket),
            prefix: Some(enc(url, &prefix)),
            delimiter: delimiter.map(|d| enc(url, &d)),
            key_marker: Some(enc(url, &key_marker)),
            upload_id_marker: Some(id_marker),
            max_uploads: Some(max as i32),
            is_truncated: Some(truncated),
            next_key_marker: if truncated {
                last.as_ref().map(|(k, _)| enc(url, k))
            } else {
                None
            },
            next_upload_id_marker: if truncated {
                last.map(|(_, id)| id)
            } else {
                None
            },
            uploads: Some(list),
            common_prefixes: Some(
                prefixes
                    .into_iter()
                    .map(|p| CommonPrefix {
                        prefix: Some(enc(url, &p)),
                    })
                    .collect(),
            ),
            encoding_type: i.encoding_type,
            request_charged: None,
        }))
    }
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

    #[test]
    fn copy_ranges_are_checked() {
        assert_eq!(copy_range("bytes=0-9", 10).unwrap(), (0, 10));
        assert_eq!(copy_range("bytes=5-5", 10).unwrap(), (5, 6));
        for bad in ["bytes=9-10", "bytes=5-4", "0-9", "bytes=a-b", "bytes=-3"] {
            assert!(copy_range(bad, 10).is_err(), "{bad}");
        }
    }

    #[test]
    fn part_sizes_that_overflow_are_refused_not_a_panic() {
        // Found by shoal-fuzz (uplink.catalog_entry): a corrupt entry whose part sizes
        // add past u64::MAX made `partNumber` panic on overflow.
        let mut e = crate::fuzz::entries().remove(2);
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

    #[test]
    fn errors_map_to_s3_codes() {
        let e = s3_err(Error::NoSuchObject {
            bucket: "b".into(),
            key: "k".into(),
        });
        assert_eq!(e.code(), &S3ErrorCode::NoSuchKey);
        assert_eq!(e.status_code(), Some(http::StatusCode::NOT_FOUND));
        let e = s3_err(Error::BucketExists("b".into()));
        assert_eq!(e.status_code(), Some(http::StatusCode::CONFLICT));
        let e = s3_err(Error::BucketNotEmpty("b".into()));
        assert_eq!(e.code(), &S3ErrorCode::BucketNotEmpty);
    }

    #[test]
    fn body_errors_are_classified_by_what_arrived() {
        let mut h = http::HeaderMap::new();
        assert_eq!(
            body_err(true, 0, None, &h).code(),
            &S3ErrorCode::EntityTooLarge
        );
        h.insert("x-amz-content-sha256", "a".repeat(64).parse().unwrap());
        let e = body_err(false, 10, Some(10), &h);
        assert_eq!(e.code().as_str(), "XAmzContentSHA256Mismatch");
        assert_eq!(e.status_code(), Some(http::StatusCode::BAD_REQUEST));
        assert_eq!(
            body_err(false, 5, Some(10), &h).code(),
            &S3ErrorCode::IncompleteBody
        );
        h.insert(
            "x-amz-content-sha256",
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD".parse().unwrap(),
        );
        assert_eq!(
            body_err(false, 5, Some(10), &h).code(),
            &S3ErrorCode::SignatureDoesNotMatch
        );
    }
}
