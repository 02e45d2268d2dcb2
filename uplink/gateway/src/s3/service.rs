//! [`ShoalS3`], what every handler shares: the uplink of one access, the open multipart
//! uploads and the region, with the catalog look-ups the handlers have in common and
//! the rule that a write is acknowledged only once it is in the network.

use s3s::{S3Error, S3ErrorCode, S3Result};

use super::errors::{catalog_err, s3_err};
use crate::attrs;
use crate::multipart::Uploads;
use uplink::catalog::ObjectEntry;
use uplink::{Error, Uplink};

/// The S3 service of one access.
#[derive(Debug, Clone)]
pub struct ShoalS3 {
    pub(crate) uplink: Uplink,
    pub(crate) uploads: Uploads,
    pub(crate) region: String,
}

impl ShoalS3 {
    /// Waits until the changes made so far are in the network: a write is acknowledged
    /// only after this (concurrent requests share one publish).
    pub(super) async fn durable(&self) -> S3Result<()> {
        self.uplink.flush().await.map(|_| ()).map_err(|e| {
            tracing::warn!(error = %e, "catalog publish failed");
            S3Error::with_message(
                S3ErrorCode::ServiceUnavailable,
                format!("the change is saved on the gateway but not yet in the network: {e}"),
            )
        })
    }

    /// What every request that makes an object checks first: a valid key, valid user
    /// metadata, and an existing bucket.
    pub(super) fn may_write(
        &self,
        bucket: &str,
        key: &str,
        metadata: Option<&s3s::dto::Metadata>,
    ) -> S3Result<()> {
        super::params::check_key(key)?;
        super::params::check_metadata(metadata)?;
        self.require_bucket(bucket)
    }

    pub(super) fn require_bucket(&self, bucket: &str) -> S3Result<()> {
        match self.uplink.catalog().bucket(bucket).map_err(catalog_err)? {
            Some(_) => Ok(()),
            None => Err(s3_err(Error::NoSuchBucket(bucket.to_string()))),
        }
    }

    pub(super) fn entry(&self, bucket: &str, key: &str) -> S3Result<ObjectEntry> {
        self.uplink.stat(bucket, key).map_err(s3_err)
    }

    pub(super) fn current_etag(&self, bucket: &str, key: &str) -> S3Result<Option<String>> {
        Ok(self
            .uplink
            .catalog()
            .object(bucket, key)
            .map_err(catalog_err)?
            .map(|e| attrs::etag(&e)))
    }
}
