//! Request and response bodies: a request body read into a staged object or part with
//! its digests computed and checked (`Content-MD5`, `x-amz-checksum-*`, trailers), and an
//! object's bytes streamed out as a response body.

use bytes::Bytes;
use futures::StreamExt;
use s3s::dto::StreamingBlob;
use s3s::{S3Result, s3_error};
use tokio::io::AsyncRead;
use tokio_util::io::{ReaderStream, StreamReader};

use super::errors::{body_err, s3_err};
use crate::digest::{self, BodyReader, Computed, DigestError, Expected};
use uplink::catalog::ObjectEntry;
use uplink::{Error, Uplink};

/// Bytes buffered between a download and the HTTP response (or a part being copied).
const PIPE_BUFFER: usize = 256 * 1024;

/// A request body as an `AsyncRead`.
pub(super) fn body_reader(body: Option<StreamingBlob>) -> impl AsyncRead + Unpin + Send {
    let stream = match body {
        Some(b) => b.map(|r| r.map_err(std::io::Error::other)).left_stream(),
        None => futures::stream::empty::<std::io::Result<Bytes>>().right_stream(),
    };
    StreamReader::new(stream)
}

/// The `x-amz-checksum-*` values of a PutObject or UploadPart input, for
/// [`expected_digests`].
macro_rules! checksums {
    ($input:expr) => {
        [
            ("x-amz-checksum-crc32", $input.checksum_crc32.as_ref()),
            ("x-amz-checksum-crc32c", $input.checksum_crc32c.as_ref()),
            (
                "x-amz-checksum-crc64nvme",
                $input.checksum_crc64nvme.as_ref(),
            ),
            ("x-amz-checksum-sha1", $input.checksum_sha1.as_ref()),
            ("x-amz-checksum-sha256", $input.checksum_sha256.as_ref()),
        ]
    };
}
pub(super) use checksums;

/// The digests a request asks to be checked.
pub(super) fn expected_digests(
    headers: &http::HeaderMap,
    content_md5: Option<&str>,
    checksums: [(&str, Option<&String>); 5],
) -> S3Result<Expected> {
    // s3s reads an empty `Content-MD5` as none; S3 refuses it (InvalidDigest), and so
    // does the gateway: a client that sends the header means to have the body checked.
    let sent_empty = headers
        .get("content-md5")
        .is_some_and(|v| v.as_bytes().iter().all(u8::is_ascii_whitespace));
    if sent_empty {
        return Err(super::errors::digest_err(DigestError::InvalidDigest));
    }
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
pub(super) fn verify_body(
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

/// Streams bytes `[start, end)` of `entry` as a response body.
pub(super) fn stream(
    uplink: &Uplink,
    bucket: &str,
    key: &str,
    entry: ObjectEntry,
    start: u64,
    end: u64,
) -> StreamingBlob {
    let (writer, reader) = tokio::io::duplex(PIPE_BUFFER);
    let (up, b, k) = (uplink.clone(), bucket.to_string(), key.to_string());
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
pub(super) async fn read_body<T, F, Fut>(
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 27 (conformance): an empty `Content-MD5` is refused (400 InvalidDigest),
    /// not taken as absent.
    #[test]
    fn an_empty_content_md5_is_an_invalid_digest() {
        let none: [(&str, Option<&String>); 5] = [("", None); 5];
        let mut h = http::HeaderMap::new();
        h.insert("content-md5", http::HeaderValue::from_static(""));
        let err = expected_digests(&h, None, none).unwrap_err();
        assert_eq!(err.code().as_str(), "InvalidDigest");
        let mut h = http::HeaderMap::new();
        h.insert(
            "content-md5",
            http::HeaderValue::from_static("1B2M2Y8AsgTpgAmY7PhCfg=="),
        );
        let e = expected_digests(&h, Some("1B2M2Y8AsgTpgAmY7PhCfg=="), none).unwrap();
        assert_eq!(e.content_md5.as_deref(), Some("1B2M2Y8AsgTpgAmY7PhCfg=="));
        assert!(expected_digests(&http::HeaderMap::new(), None, none).is_ok());
    }
}
