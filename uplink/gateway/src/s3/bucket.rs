//! Bucket operations: ListBuckets, CreateBucket, HeadBucket, DeleteBucket and
//! GetBucketLocation.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::errors::s3_err;
use super::params::{ms_to_ts, owner};
use super::service::ShoalS3;
use crate::listing::Resume;
use uplink::Error;

pub(super) async fn list_buckets(
    s3: &ShoalS3,
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
    let mut names = s3
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
            bucket_region: Some(s3.region.clone()),
        })
        .collect();
    Ok(S3Response::new(ListBucketsOutput {
        buckets: Some(buckets),
        owner: Some(owner()),
        continuation_token: token,
        prefix: i.prefix,
    }))
}

pub(super) async fn create_bucket(
    s3: &ShoalS3,
    req: S3Request<CreateBucketInput>,
) -> S3Result<S3Response<CreateBucketOutput>> {
    let bucket = &req.input.bucket;
    if let Some(loc) = req
        .input
        .create_bucket_configuration
        .as_ref()
        .and_then(|c| c.location_constraint.as_ref())
        && loc.as_str() != s3.region
        && !(loc.as_str().is_empty() && s3.region == "us-east-1")
    {
        return Err(s3_error!(
            InvalidLocationConstraint,
            "The specified location-constraint is not valid for this gateway's region"
        ));
    }
    match s3.uplink.create_bucket(bucket) {
        Ok(()) => s3.durable().await?,
        // For legacy compatibility S3 answers 200 to re-creating a bucket one owns in
        // us-east-1, and BucketAlreadyOwnedByYou in every other region.
        Err(Error::BucketExists(_)) if s3.region == "us-east-1" => {}
        Err(e) => return Err(s3_err(e)),
    }
    Ok(S3Response::new(CreateBucketOutput {
        location: Some(format!("/{bucket}")),
    }))
}

pub(super) async fn head_bucket(
    s3: &ShoalS3,
    req: S3Request<HeadBucketInput>,
) -> S3Result<S3Response<HeadBucketOutput>> {
    s3.require_bucket(&req.input.bucket)?;
    Ok(S3Response::new(HeadBucketOutput {
        bucket_region: Some(s3.region.clone()),
        ..Default::default()
    }))
}

pub(super) async fn delete_bucket(
    s3: &ShoalS3,
    req: S3Request<DeleteBucketInput>,
) -> S3Result<S3Response<DeleteBucketOutput>> {
    s3.uplink
        .remove_bucket(&req.input.bucket, false)
        .await
        .map_err(s3_err)?;
    s3.durable().await?;
    Ok(S3Response::new(DeleteBucketOutput {}))
}

pub(super) async fn get_bucket_location(
    s3: &ShoalS3,
    req: S3Request<GetBucketLocationInput>,
) -> S3Result<S3Response<GetBucketLocationOutput>> {
    s3.require_bucket(&req.input.bucket)?;
    // us-east-1 is the empty constraint, as on AWS.
    let location_constraint =
        (s3.region != "us-east-1").then(|| BucketLocationConstraint::from(s3.region.clone()));
    Ok(S3Response::new(GetBucketLocationOutput {
        location_constraint,
    }))
}
