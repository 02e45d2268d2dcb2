//! How the gateway answers when something fails: the one map from an uplink error to
//! S3's code and status, and the errors of digests and request bodies.

use s3s::{S3Error, S3ErrorCode, s3_error};

use crate::digest::DigestError;
use uplink::Error;

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

pub(super) fn catalog_err(e: uplink::catalog::CatalogError) -> S3Error {
    s3_err(Error::Catalog(e))
}

pub(super) fn digest_err(e: DigestError) -> S3Error {
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
pub(super) fn body_err(
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

#[cfg(test)]
mod tests {
    use super::*;

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
