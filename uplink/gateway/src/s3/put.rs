//! PutObject: a body read, its digests checked, the write's conditions checked before
//! and after, and the object committed and made durable.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::body::{self, checksums, expected_digests, verify_body};
use super::errors::{digest_err, s3_err};
use super::params::{standard_headers, strong};
use super::preconditions::{write_conditions, write_outcome};
use super::service::ShoalS3;
use crate::{attrs, digest, multipart};
use uplink::PutOptions;

pub(super) async fn put_object(
    s3: &ShoalS3,
    req: S3Request<PutObjectInput>,
) -> S3Result<S3Response<PutObjectOutput>> {
    let S3Request {
        input,
        headers,
        trailing_headers,
        ..
    } = req;
    let (bucket, key) = (input.bucket.clone(), input.key.clone());
    s3.may_write(&bucket, &key, input.metadata.as_ref())?;
    let declared = input.content_length;
    if declared.is_some_and(|n| n as u64 > multipart::MAX_PART_SIZE) {
        return Err(s3_error!(
            EntityTooLarge,
            "Your proposed upload exceeds the maximum allowed size"
        ));
    }
    let conditions = write_conditions(input.if_match.as_ref(), input.if_none_match.as_ref());
    let precondition = |current: Option<String>| write_outcome(&conditions, current.as_deref());
    precondition(s3.current_etag(&bucket, &key)?)?;
    let expected = expected_digests(&headers, input.content_md5.as_deref(), checksums!(input))?;
    let opts = PutOptions {
        size_hint: declared.and_then(|n| u64::try_from(n).ok()),
        ..Default::default()
    };
    let up = s3.uplink.clone();
    let (staged, computed) = body::read_body(
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
        s3.uplink.discard(staged).await;
        return Err(digest_err(e));
    }
    let (bucket, key) = (input.bucket, input.key);
    if let Err(e) = precondition(s3.current_etag(&bucket, &key)?) {
        s3.uplink.discard(staged).await;
        return Err(e);
    }
    let etag = digest::md5_hex(&computed.md5);
    let metadata = attrs::build(
        attrs::user_metadata_as_sent(input.metadata.as_ref(), &headers).as_ref(),
        &standard_headers(
            input.cache_control,
            input.content_disposition,
            input.content_encoding,
            input.content_language,
            input.expires.as_ref(),
        ),
        &etag,
    );
    s3.uplink
        .commit(staged, input.content_type, metadata)
        .await
        .map_err(s3_err)?;
    s3.durable().await?;
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
