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
            *s = Some(name.clone());
        }
        match cx.credentials() {
            Some(c) if !c.access_key.is_empty() => {}
            _ => {
                return Err(s3_error!(
                    AccessDenied,
                    "Anonymous requests are not allowed"
                ));
            }
        }
        match whole_body_refusal(&name, cx.headers()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Most bytes of a request body s3s reads whole (an XML document): no document the
/// gateway accepts comes near it (DeleteObjects names at most 1,000 keys of at most
/// 1 KiB; a CompleteMultipartUpload of 10,000 parts is ~1 MiB).
pub(super) const MAX_XML_BODY: usize = 4 << 20;

/// Why a request of operation `op` is refused before its body is read: s3s reads the
/// body of every operation but PutObject and UploadPart (which stream) whole, up to
/// [`MAX_XML_BODY`], and answers a longer one 500 InternalError after reading 4 MiB.
/// So such a body must declare its length (411 MissingContentLength otherwise, as on
/// S3), and one declaring more than the limit is refused at once with S3's 400
/// MaxMessageLengthExceeded.
pub(super) fn whole_body_refusal(op: &str, headers: &http::HeaderMap) -> Option<s3s::S3Error> {
    if matches!(op, "PutObject" | "UploadPart") {
        return None;
    }
    let length = |name: &str| -> Option<Option<u64>> {
        let v = headers.get(name)?;
        Some(v.to_str().ok().and_then(|v| v.trim().parse().ok()))
    };
    let declared = length("x-amz-decoded-content-length").or_else(|| length("content-length"));
    let has_body = declared.is_some() || headers.contains_key(http::header::TRANSFER_ENCODING);
    match declared {
        Some(Some(n)) if n > MAX_XML_BODY as u64 => Some(s3_error!(
            MaxMessageLengthExceeded,
            "Your request was too big (at most 4 MiB for this operation)"
        )),
        Some(Some(_)) => None,
        _ if has_body => Some(s3_error!(
            MissingContentLength,
            "You must provide the Content-Length HTTP header"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(op: &str, headers: &[(&str, &str)]) -> Option<String> {
        let mut h = http::HeaderMap::new();
        for (k, v) in headers {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        whole_body_refusal(op, &h).map(|e| e.code().as_str().to_owned())
    }

    /// Issue 27 (found by `live.gateway_http`): an XML body declaring more than s3s
    /// reads is 400 MaxMessageLengthExceeded before it is read (s3s alone answers 500
    /// after reading 4 MiB), and one declaring no length 411; streamed uploads are not
    /// limited here.
    #[test]
    fn whole_bodies_declare_a_length_within_the_limit() {
        let too_long = Some("MaxMessageLengthExceeded".to_owned());
        let huge = [("content-length", "1073741824")];
        assert_eq!(refusal("DeleteObjects", &huge), too_long);
        assert_eq!(refusal("CompleteMultipartUpload", &huge), too_long);
        assert_eq!(
            refusal(
                "PutBucketTagging",
                &[("x-amz-decoded-content-length", "4194305")]
            ),
            too_long
        );
        assert_eq!(
            refusal("DeleteObjects", &[("content-length", "4194304")]),
            None
        );
        assert_eq!(refusal("PutObject", &huge), None);
        assert_eq!(refusal("UploadPart", &huge), None);
        let chunked = [("transfer-encoding", "chunked")];
        assert_eq!(
            refusal("DeleteObjects", &chunked),
            Some("MissingContentLength".into())
        );
        assert_eq!(refusal("PutObject", &chunked), None);
        assert_eq!(
            refusal("DeleteObjects", &[("content-length", "x")]),
            Some("MissingContentLength".into())
        );
        assert_eq!(refusal("GetObject", &[]), None);
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
