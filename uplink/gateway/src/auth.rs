//! Who may call: the one pair of credentials the gateway accepts, no anonymous
//! requests, and the name of the operation s3s resolved (for the metrics).

use std::sync::{Arc, Mutex};

use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::{S3Result, s3_error};

/// The operation s3s resolved for a request, recorded by [`OpRecorder`] for the
/// metrics (requests refused before that count as `unauthenticated`).
#[derive(Debug, Clone, Default)]
pub(super) struct OpSlot(pub(super) Arc<Mutex<Option<String>>>);

/// Refuses anonymous requests (every request must be signed with the gateway's
/// credentials) and records the operation's name.
#[derive(Debug)]
pub(super) struct OpRecorder;

#[async_trait::async_trait]
impl S3Access for OpRecorder {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let name = cx.s3_op().name().to_string();
        if let Some(slot) = cx.extensions_mut().get::<OpSlot>().cloned()
            && let Ok(mut s) = slot.0.lock()
        {
            *s = Some(name);
        }
        match cx.credentials() {
            Some(c) if !c.access_key.is_empty() => Ok(()),
            _ => Err(s3_error!(
                AccessDenied,
                "Anonymous requests are not allowed"
            )),
        }
    }
}

/// The one pair of credentials the gateway accepts.
#[derive(Debug)]
pub(super) struct SingleKey {
    pub(super) access_key: String,
    pub(super) secret_key: String,
}

#[async_trait::async_trait]
impl S3Auth for SingleKey {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        if !access_key.is_empty() && access_key == self.access_key {
            Ok(SecretKey::from(self.secret_key.clone()))
        } else {
            Err(s3_error!(
                InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records"
            ))
        }
    }
}
