//! Multipart uploads: CreateMultipartUpload, UploadPart, CompleteMultipartUpload and
//! AbortMultipartUpload, with the records of open uploads (the rules of completion are
//! in [`crate::multipart`]). UploadPartCopy is in [`super::copy`], the listings
//! of uploads and parts in [`super::list`].

use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

use super::body::{self, checksums, expected_digests, verify_body};
use super::errors::{catalog_err, digest_err, s3_err};
use super::params::{part_number, standard_headers, strong};
use super::preconditions::{write_conditions, write_outcome};
use super::service::ShoalS3;
use crate::multipart::{self as rules, CompleteError, Completed, PartRecorded, UploadRecord};
use crate::{attrs, digest};
use uplink::{PutOptions, StagedPart};

pub(super) async fn create_multipart_upload(
    s3: &ShoalS3,
    req: S3Request<CreateMultipartUploadInput>,
) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
    let i = req.input;
    s3.may_write(&i.bucket, &i.key, i.metadata.as_ref())?;
    let user = attrs::user_metadata_as_sent(i.metadata.as_ref(), &req.headers);
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
        metadata: attrs::build(user.as_ref(), &standard, ""),
    };
    let id = s3.uploads.create(&record).map_err(catalog_err)?;
    s3.uplink
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

pub(super) async fn upload_part(
    s3: &ShoalS3,
    req: S3Request<UploadPartInput>,
) -> S3Result<S3Response<UploadPartOutput>> {
    let S3Request {
        input: i,
        headers,
        trailing_headers,
        ..
    } = req;
    upload_record(s3, &i.bucket, &i.key, &i.upload_id)?;
    let declared = i.content_length;
    if declared.is_some_and(|n| n as u64 > rules::MAX_PART_SIZE) {
        return Err(s3_error!(EntityTooLarge, "A part may be at most 5 GiB"));
    }
    let expected = expected_digests(&headers, i.content_md5.as_deref(), checksums!(i))?;
    let number = part_number(i.part_number)?;
    let opts = PutOptions {
        size_hint: declared.and_then(|n| u64::try_from(n).ok()),
        ..Default::default()
    };
    let (up, bucket, key) = (s3.uplink.clone(), i.bucket.clone(), i.key.clone());
    let (mut part, computed) = body::read_body(
        i.body,
        &expected,
        rules::MAX_PART_SIZE,
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
        s3.uplink.discard_part(&part).await;
        return Err(digest_err(e));
    }
    part.info.md5 = computed.md5;
    record_part(s3, &i.upload_id, &part).await?;
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

pub(super) async fn complete_multipart_upload(
    s3: &ShoalS3,
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
    if let Some(d) = s3.uploads.completed(&i.upload_id).map_err(catalog_err)?
        && d.bucket == i.bucket
        && d.key == i.key
    {
        return Ok(S3Response::new(done_output(&d)));
    }
    let record = upload_record(s3, &i.bucket, &i.key, &i.upload_id)?;
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
    let mut stored = s3.uploads.parts(&i.upload_id).map_err(catalog_err)?;
    let order = rules::plan_complete(&requested, &stored).map_err(|e| {
        let code = match e {
            CompleteError::NoParts => S3ErrorCode::MalformedXML,
            CompleteError::InvalidPartOrder => S3ErrorCode::InvalidPartOrder,
            CompleteError::InvalidPart(_) => S3ErrorCode::InvalidPart,
            CompleteError::EntityTooSmall(_) => S3ErrorCode::EntityTooSmall,
        };
        S3Error::with_message(code, e.to_string())
    })?;
    let conditions = write_conditions(i.if_match.as_ref(), i.if_none_match.as_ref());
    write_outcome(&conditions, s3.current_etag(&i.bucket, &i.key)?.as_deref())?;
    let parts: Vec<_> = order.iter().filter_map(|n| stored.remove(n)).collect();
    let md5s: Vec<[u8; 16]> = parts.iter().map(|p| p.info.md5).collect();
    let etag = digest::multipart_etag(&md5s);
    let mut metadata = record.metadata;
    metadata.insert(attrs::ETAG.to_string(), etag.clone());
    s3.uplink
        .commit_parts(&i.bucket, &i.key, parts, record.content_type, metadata)
        .await
        .map_err(s3_err)?;
    let done = Completed {
        bucket: i.bucket.clone(),
        key: i.key.clone(),
        etag,
        completed_ms: shoal_proto::time::unix_ms(),
    };
    s3.uploads
        .mark_completed(&i.upload_id, &done)
        .map_err(catalog_err)?;
    s3.durable().await?;
    // Parts uploaded but not named in the list are not part of the object.
    for p in stored.values() {
        s3.uplink.discard_part(p).await;
    }
    Ok(S3Response::new(done_output(&done)))
}

pub(super) async fn abort_multipart_upload(
    s3: &ShoalS3,
    req: S3Request<AbortMultipartUploadInput>,
) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
    let i = req.input;
    upload_record(s3, &i.bucket, &i.key, &i.upload_id)?;
    abort(s3, &i.upload_id).await?;
    s3.uplink
        .catalog()
        .flush_async()
        .await
        .map_err(catalog_err)?;
    Ok(S3Response::new(AbortMultipartUploadOutput::default()))
}

pub(super) fn upload_record(
    s3: &ShoalS3,
    bucket: &str,
    key: &str,
    id: &str,
) -> S3Result<UploadRecord> {
    match s3.uploads.get(id).map_err(catalog_err)? {
        Some(r) if r.bucket == bucket && r.key == key => Ok(r),
        _ => Err(no_such_upload()),
    }
}

fn no_such_upload() -> S3Error {
    s3_error!(
        NoSuchUpload,
        "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed."
    )
}

/// Records a stored part (deleting the one it replaces) and makes it durable here. A
/// part whose upload was completed or aborted while it was being sent is deleted and
/// answered NoSuchUpload, as S3 answers it.
pub(super) async fn record_part(s3: &ShoalS3, upload_id: &str, part: &StagedPart) -> S3Result<()> {
    let old = match s3.uploads.put_part(upload_id, part).map_err(catalog_err)? {
        PartRecorded::Recorded(old) => old,
        PartRecorded::NoUpload => {
            s3.uplink.discard_part(part).await;
            return Err(no_such_upload());
        }
    };
    s3.uplink
        .catalog()
        .flush_async()
        .await
        .map_err(catalog_err)?;
    if let Some(old) = old {
        s3.uplink.discard_part(&old).await;
    }
    Ok(())
}
/// Aborts an upload: deletes its parts' pieces and its records.
pub(crate) async fn abort(s3: &ShoalS3, id: &str) -> S3Result<()> {
    let parts = s3.uploads.parts(id).map_err(catalog_err)?;
    s3.uploads.remove(id).map_err(catalog_err)?;
    for p in parts.values() {
        s3.uplink.discard_part(p).await;
    }
    Ok(())
}
