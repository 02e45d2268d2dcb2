//! Listings: ListObjects (v1 and v2) and ListObjectVersions over the catalog (the
//! paging rules are in [`crate::listing`]), ListParts and ListMultipartUploads
//! over the open uploads.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::errors::catalog_err;
use super::multipart::upload_record;
use super::params::{enc, max_keys, ms_to_ts, owner, strong, url_encoded};
use super::service::ShoalS3;
use crate::listing::{self, Resume, Row};
use crate::{attrs, digest};
use uplink::catalog::ObjectSummary;

pub(super) async fn list_objects(
    s3: &ShoalS3,
    req: S3Request<ListObjectsInput>,
) -> S3Result<S3Response<ListObjectsOutput>> {
    let i = req.input;
    let Shape {
        url,
        max,
        prefix,
        delimiter,
    } = Shape::of(&i.encoding_type, i.max_keys, &i.prefix, &i.delimiter)?;
    let marker = i.marker.clone().unwrap_or_default();
    let resume = Resume::from_marker(&marker, delimiter.as_deref());
    let page = list_page(s3, &i.bucket, &prefix, delimiter.as_deref(), &resume, max)?;
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
        contents: Some(page.objects().map(|e| object_row(e, url, true)).collect()),
        common_prefixes: Some(common_prefixes(url, page.prefixes())),
        delimiter: delimiter.map(|d| enc(url, &d)),
        next_marker,
        encoding_type: i.encoding_type,
        request_charged: None,
    }))
}

pub(super) async fn list_objects_v2(
    s3: &ShoalS3,
    req: S3Request<ListObjectsV2Input>,
) -> S3Result<S3Response<ListObjectsV2Output>> {
    let i = req.input;
    let Shape {
        url,
        max,
        prefix,
        delimiter,
    } = Shape::of(&i.encoding_type, i.max_keys, &i.prefix, &i.delimiter)?;
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
    let page = list_page(s3, &i.bucket, &prefix, delimiter.as_deref(), &resume, max)?;
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
                .map(|e| object_row(e, url, fetch_owner))
                .collect(),
        ),
        common_prefixes: Some(common_prefixes(url, page.prefixes())),
        delimiter: delimiter.map(|d| enc(url, &d)),
        start_after: i.start_after.map(|s| enc(url, &s)),
        encoding_type: i.encoding_type,
        request_charged: None,
    }))
}

pub(super) async fn list_object_versions(
    s3: &ShoalS3,
    req: S3Request<ListObjectVersionsInput>,
) -> S3Result<S3Response<ListObjectVersionsOutput>> {
    // Versioning is not kept: every object has one version, "null", the latest.
    let i = req.input;
    let Shape {
        url,
        max,
        prefix,
        delimiter,
    } = Shape::of(&i.encoding_type, i.max_keys, &i.prefix, &i.delimiter)?;
    let marker = i.key_marker.clone().unwrap_or_default();
    let resume = Resume::from_marker(&marker, delimiter.as_deref());
    let page = list_page(s3, &i.bucket, &prefix, delimiter.as_deref(), &resume, max)?;
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
                e_tag: Some(strong(&attrs::listed_etag(e))),
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
        common_prefixes: Some(common_prefixes(url, page.prefixes())),
        delimiter: delimiter.map(|d| enc(url, &d)),
        encoding_type: i.encoding_type,
        ..Default::default()
    }))
}

pub(super) async fn list_parts(
    s3: &ShoalS3,
    req: S3Request<ListPartsInput>,
) -> S3Result<S3Response<ListPartsOutput>> {
    let i = req.input;
    upload_record(s3, &i.bucket, &i.key, &i.upload_id)?;
    let max = match i.max_parts {
        None => 1000,
        Some(n) if n < 0 => {
            return Err(s3_error!(InvalidArgument, "max-parts must not be negative"));
        }
        Some(n) => (n as usize).min(1000),
    };
    let marker = i.part_number_marker.unwrap_or(0).max(0) as u32;
    let stored = s3.uploads.parts(&i.upload_id).map_err(catalog_err)?;
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

pub(super) async fn list_multipart_uploads(
    s3: &ShoalS3,
    req: S3Request<ListMultipartUploadsInput>,
) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
    let i = req.input;
    s3.require_bucket(&i.bucket)?;
    let Shape {
        url,
        max,
        prefix,
        delimiter,
    } = Shape::of(&i.encoding_type, i.max_uploads, &i.prefix, &i.delimiter)?;
    let key_marker = i.key_marker.clone().unwrap_or_default();
    let id_marker = i.upload_id_marker.clone().unwrap_or_default();
    let mut uploads: Vec<_> = s3
        .uploads
        .list()
        .map_err(catalog_err)?
        .into_iter()
        .filter(|(_, r)| r.bucket == i.bucket && r.key.starts_with(&prefix))
        .collect();
    // S3 lists by key, then by initiation time.
    uploads.sort_by(|a, b| (&a.1.key, a.1.created_ms, &a.0).cmp(&(&b.1.key, b.1.created_ms, &b.0)));
    // Where the page starts: with upload-id-marker, at the uploads of key-marker after
    // that id (those before it are dropped here, as the rule of pages has no position
    // inside one key); else after key-marker, as a ListObjects marker (a common prefix
    // a previous page ended on skips its keys).
    let resume = if !key_marker.is_empty() && !id_marker.is_empty() {
        let mut past_id = false;
        uploads.retain(|(id, r)| {
            if r.key != key_marker {
                return r.key > key_marker;
            }
            let keep = past_id;
            past_id = past_id || *id == id_marker;
            keep
        });
        Resume::Start
    } else {
        Resume::from_marker(&key_marker, delimiter.as_deref())
    };
    let mut cursor = listing::Sorted::new(
        uploads
            .into_iter()
            .map(|(id, r)| (r.key.clone(), (id, r)))
            .collect(),
    );
    let Ok(page) = listing::page(&mut cursor, &prefix, delimiter.as_deref(), &resume, max);
    let truncated = page.is_truncated();
    // The next page starts after the last row: its key and upload id, or the common
    // prefix (as key-marker alone, which skips the prefix's keys).
    let (next_key_marker, next_upload_id_marker) = match (&page.next, page.rows.last()) {
        (Some(Resume::AfterKey(k)), Some(Row::Object((id, _)))) => {
            (Some(enc(url, k)), Some(id.clone()))
        }
        (Some(Resume::AfterPrefix(p)), _) => (Some(enc(url, p)), None),
        _ => (None, None),
    };
    let prefixes: Vec<&str> = page.prefixes().collect();
    let list = page
        .objects()
        .map(|(id, r)| MultipartUpload {
            key: Some(enc(url, &r.key)),
            upload_id: Some(id.clone()),
            initiated: Some(ms_to_ts(r.created_ms)),
            owner: Some(owner()),
            initiator: Some(Initiator {
                display_name: Some("shoal".into()),
                id: Some("shoal".into()),
            }),
            storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
            ..Default::default()
        })
        .collect();
    Ok(S3Response::new(ListMultipartUploadsOutput {
        bucket: Some(i.bucket),
        prefix: Some(enc(url, &prefix)),
        delimiter: delimiter.map(|d| enc(url, &d)),
        key_marker: Some(enc(url, &key_marker)),
        upload_id_marker: Some(id_marker),
        max_uploads: Some(max as i32),
        is_truncated: Some(truncated),
        next_key_marker,
        next_upload_id_marker,
        uploads: Some(list),
        common_prefixes: Some(common_prefixes(url, prefixes.into_iter())),
        encoding_type: i.encoding_type,
        request_charged: None,
    }))
}

/// What every listing request asks the same way: URL-encoded names or not, the page
/// size (at most 1,000), the prefix, and the delimiter (an empty one is none).
struct Shape {
    url: bool,
    max: usize,
    prefix: String,
    delimiter: Option<String>,
}

impl Shape {
    fn of(
        encoding: &Option<EncodingType>,
        max: Option<i32>,
        prefix: &Option<String>,
        delimiter: &Option<String>,
    ) -> S3Result<Self> {
        Ok(Self {
            url: url_encoded(encoding)?,
            max: max_keys(max)?,
            prefix: prefix.clone().unwrap_or_default(),
            delimiter: delimiter.clone().filter(|d| !d.is_empty()),
        })
    }
}

/// The rows of folded common prefixes.
fn common_prefixes<'a>(url: bool, prefixes: impl Iterator<Item = &'a str>) -> Vec<CommonPrefix> {
    prefixes
        .map(|p| CommonPrefix {
            prefix: Some(enc(url, p)),
        })
        .collect()
}

fn object_row(e: &ObjectSummary, url: bool, with_owner: bool) -> Object {
    Object {
        owner: with_owner.then(owner),
        key: Some(enc(url, &e.key)),
        size: Some(e.size as i64),
        e_tag: Some(strong(&attrs::listed_etag(e))),
        last_modified: Some(ms_to_ts(e.modified_ms)),
        storage_class: Some(ObjectStorageClass::from_static(
            ObjectStorageClass::STANDARD,
        )),
        ..Default::default()
    }
}
/// One page of `bucket` under `prefix`.
fn list_page(
    s3: &ShoalS3,
    bucket: &str,
    prefix: &str,
    delimiter: Option<&str>,
    resume: &Resume,
    max: usize,
) -> S3Result<listing::Page<ObjectSummary>> {
    s3.require_bucket(bucket)?;
    // One read transaction for the page; the page seeks to where it starts.
    let raw = s3
        .uplink
        .catalog()
        .read_objects(bucket, |cursor| {
            listing::page(cursor, prefix, delimiter, resume, max)
        })
        .map_err(catalog_err)?;
    // Only the objects the page returns are decoded (folded rows never are), and only
    // what a listing row shows of them.
    raw.try_map(|o| o.summary(bucket)).map_err(catalog_err)
}
