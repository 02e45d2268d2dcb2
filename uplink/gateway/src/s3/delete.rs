//! DeleteObject and DeleteObjects: deleting a key that is not there succeeds, as on S3.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::errors::s3_err;
use super::service::ShoalS3;
use crate::listing;
use uplink::Error;

pub(super) async fn delete_object(
    s3: &ShoalS3,
    req: S3Request<DeleteObjectInput>,
) -> S3Result<S3Response<DeleteObjectOutput>> {
    let i = &req.input;
    s3.require_bucket(&i.bucket)?;
    // Deleting a key that is not there succeeds, as on S3.
    match s3.uplink.delete(&i.bucket, &i.key).await {
        Ok(_) | Err(Error::NoSuchObject { .. }) => {}
        Err(e) => return Err(s3_err(e)),
    }
    s3.durable().await?;
    Ok(S3Response::new(DeleteObjectOutput::default()))
}

pub(super) async fn delete_objects(
    s3: &ShoalS3,
    req: S3Request<DeleteObjectsInput>,
) -> S3Result<S3Response<DeleteObjectsOutput>> {
    let i = req.input;
    s3.require_bucket(&i.bucket)?;
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
        match s3.uplink.delete(&i.bucket, &o.key).await {
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
    s3.durable().await?;
    Ok(S3Response::new(DeleteObjectsOutput {
        deleted: Some(deleted),
        errors: (!errors.is_empty()).then_some(errors),
        ..Default::default()
    }))
}
