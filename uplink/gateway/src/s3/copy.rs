//! CopyObject and UploadPartCopy: the source named, checked against its conditions and
//! read (a whole object shares its pieces; a part is copied as bytes).

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::body::{self, body_reader};
use super::errors::s3_err;
use super::multipart;
use super::params::{ms_to_ts, part_number, standard_headers, strong};
use super::preconditions::{self, read_conditions};
use super::service::ShoalS3;
use crate::attrs;
use crate::conditions::Conditions;
use crate::digest::{self, BodyReader, Expected};
use crate::multipart::MAX_PART_SIZE;
use uplink::PutOptions;
use uplink::catalog::ObjectEntry;

pub(super) async fn copy_object(
    s3: &ShoalS3,
    req: S3Request<CopyObjectInput>,
) -> S3Result<S3Response<CopyObjectOutput>> {
    let i = req.input;
    s3.may_write(&i.bucket, &i.key, i.metadata.as_ref())?;
    let user = attrs::user_metadata_as_sent(i.metadata.as_ref(), &req.headers);
    let c = read_conditions(
        i.copy_source_if_match.as_ref(),
        i.copy_source_if_none_match.as_ref(),
        i.copy_source_if_modified_since.as_ref(),
        i.copy_source_if_unmodified_since.as_ref(),
    );
    let (src_bucket, src_key, src) = copy_source(s3, &i.copy_source, &c)?;
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
            Some(attrs::replace(&src.metadata, user.as_ref(), &standard)),
        )
    } else {
        (None, None)
    };
    let entry = s3
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
    s3.durable().await?;
    Ok(S3Response::new(CopyObjectOutput {
        copy_object_result: Some(CopyObjectResult {
            e_tag: Some(strong(&attrs::etag(&entry))),
            last_modified: Some(ms_to_ts(entry.modified_ms)),
            ..Default::default()
        }),
        ..Default::default()
    }))
}

pub(super) async fn upload_part_copy(
    s3: &ShoalS3,
    req: S3Request<UploadPartCopyInput>,
) -> S3Result<S3Response<UploadPartCopyOutput>> {
    let i = req.input;
    multipart::upload_record(s3, &i.bucket, &i.key, &i.upload_id)?;
    let c = read_conditions(
        i.copy_source_if_match.as_ref(),
        i.copy_source_if_none_match.as_ref(),
        i.copy_source_if_modified_since.as_ref(),
        i.copy_source_if_unmodified_since.as_ref(),
    );
    let (src_bucket, src_key, src) = copy_source(s3, &i.copy_source, &c)?;
    let (start, end) = match &i.copy_source_range {
        Some(spec) => copy_range(spec, src.size)?,
        None => (0, src.size),
    };
    if end - start > MAX_PART_SIZE {
        return Err(s3_error!(EntityTooLarge, "A part may be at most 5 GiB"));
    }
    let body = body::stream(&s3.uplink, &src_bucket, &src_key, src, start, end);
    let mut reader = BodyReader::new(body_reader(Some(body)), &Expected::default(), u64::MAX);
    let number = part_number(i.part_number)?;
    let opts = PutOptions {
        size_hint: Some(end - start),
        ..Default::default()
    };
    let mut part = s3
        .uplink
        .stage_part(&i.bucket, &i.key, number, &mut reader, &opts)
        .await
        .map_err(s3_err)?;
    let computed = reader.finish();
    part.info.md5 = computed.md5;
    multipart::record_part(s3, &i.upload_id, &part).await?;
    Ok(S3Response::new(UploadPartCopyOutput {
        copy_part_result: Some(CopyPartResult {
            e_tag: Some(strong(&digest::md5_hex(&computed.md5))),
            last_modified: Some(ms_to_ts(shoal_proto::time::unix_ms())),
            ..Default::default()
        }),
        ..Default::default()
    }))
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
/// The source of a copy, checked against its conditions.
fn copy_source(
    s3: &ShoalS3,
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
    s3.require_bucket(bucket)?;
    let entry = s3.entry(bucket, key)?;
    preconditions::check_copy_source(c, &entry)?;
    Ok((bucket.to_string(), key.to_string(), entry))
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
}
