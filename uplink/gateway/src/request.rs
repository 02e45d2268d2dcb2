//! One HTTP request: the metrics page, or S3 through s3s, with what the gateway adds
//! around it (request ids, the presigned-URL age limit, `Connection: close` after an
//! unread body, the request's metrics).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use s3s::s3_error;
use s3s::service::S3Service;

use super::auth::OpSlot;
use super::metrics::GatewayMetrics;
use uplink::Uplink;

/// Where the gateway serves its own metrics. Bucket names cannot start with `_`, so
/// this path never names a bucket.
pub const METRICS_PATH: &str = "/_shoal/metrics";

pub(super) type GatewayBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// An S3 error as s3s renders it.
fn s3s_response(e: s3s::S3Error) -> s3s::HttpResponse {
    match e.to_http_response() {
        Ok(r) => r,
        Err(_) => {
            let mut r = Response::new(s3s::Body::empty());
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r
        }
    }
}

/// Adds the request id (header always, `<RequestId>` in error documents).
async fn finish(resp: s3s::HttpResponse, request_id: &str) -> Response<GatewayBody> {
    let (mut parts, body) = resp.into_parts();
    if let Ok(v) = hyper::header::HeaderValue::from_str(request_id) {
        parts.headers.insert("x-amz-request-id", v);
    }
    let small = hyper::body::Body::size_hint(&body)
        .exact()
        .or_else(|| content_length(&parts.headers, "content-length"))
        .is_some_and(|n| n as usize <= MAX_ERROR_BODY);
    if parts.status.as_u16() >= 400 && small {
        let bytes = match body.collect().await {
            Ok(c) => c.to_bytes(),
            Err(_) => Bytes::new(),
        };
        let bytes = match with_request_id(&bytes, request_id) {
            Some(b) => Bytes::from(b),
            None => bytes,
        };
        parts.headers.insert(
            hyper::header::CONTENT_LENGTH,
            hyper::header::HeaderValue::from(bytes.len()),
        );
        return Response::from_parts(parts, Full::new(bytes).map_err(|e| match e {}).boxed());
    }
    Response::from_parts(
        parts,
        body.map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { e })
            .boxed(),
    )
}

/// One request: the metrics page, or S3.
pub(super) async fn handle(
    service: S3Service,
    metrics: GatewayMetrics,
    uplink: Uplink,
    req: Request<Incoming>,
) -> Result<Response<GatewayBody>, Infallible> {
    let version = req.version();
    let (parts, body) = req.into_parts();
    let (body, read) = WatchedBody::new(body);
    let mut resp = serve(service, metrics, uplink, Request::from_parts(parts, body)).await;
    if must_close(version, read.load(Ordering::Acquire)) {
        resp.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
    }
    Ok(resp)
}

async fn serve(
    service: S3Service,
    metrics: GatewayMetrics,
    uplink: Uplink,
    mut req: Request<WatchedBody>,
) -> Response<GatewayBody> {
    if req.uri().path() == METRICS_PATH && req.method() == hyper::Method::GET {
        let body = Full::new(Bytes::from(metrics.render(&uplink)))
            .map_err(|e| match e {})
            .boxed();
        let mut resp = Response::new(body);
        resp.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
        );
        return resp;
    }
    let started = Instant::now();
    let request_id = format!("{:016X}", rand::random::<u64>());
    if presigned_expiry_too_long(req.uri().query()) {
        let e = s3_error!(
            AccessDenied,
            "X-Amz-Expires must be less than a week (in seconds) that is 604800"
        );
        let resp = finish(s3s_response(e), &request_id).await;
        metrics.record("unauthenticated", resp.status(), started.elapsed(), 0, 0);
        return resp;
    }
    let slot = OpSlot::default();
    req.extensions_mut().insert(slot.clone());
    let declared_in = content_length(req.headers(), "x-amz-decoded-content-length")
        .or_else(|| content_length(req.headers(), "content-length"))
        .unwrap_or(0);
    let resp = match service.call(req.map(s3s::Body::http_body)).await {
        Ok(r) => finish(r, &request_id).await,
        Err(e) => {
            tracing::error!(error = ?e, "S3 service failed");
            let mut r = Response::new(Full::new(Bytes::new()).map_err(|e| match e {}).boxed());
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r
        }
    };
    let op = slot
        .0
        .lock()
        .ok()
        .and_then(|s| s.clone())
        .unwrap_or_else(|| "unauthenticated".to_string());
    let out = content_length(resp.headers(), "content-length").unwrap_or(0);
    metrics.record(&op, resp.status(), started.elapsed(), declared_in, out);
    resp
}

/// Whether an HTTP/1 response must end its connection, and say so (`Connection: close`):
/// when it answers a request whose body was not read to its end (an error found before
/// the body, such as a failed `If-Match` or a bad signature; with `Expect: 100-continue`
/// the client never sent it). hyper then closes the connection rather than read the
/// rest of the body as the next request; without the header the client learns of the
/// close only when it reuses the connection, and botocore then reports the earlier
/// request's status for the next one (a bare "404 Not Found" on a `PutObject`).
/// HTTP/2 streams end on their own and forbid the header.
fn must_close(version: hyper::Version, body_read: bool) -> bool {
    version < hyper::Version::HTTP_2 && !body_read
}

/// A request body that records whether it was read to its end (or was empty).
struct WatchedBody {
    inner: Incoming,
    read: Arc<AtomicBool>,
}

impl WatchedBody {
    fn new(inner: Incoming) -> (Self, Arc<AtomicBool>) {
        let read = Arc::new(AtomicBool::new(hyper::body::Body::is_end_stream(&inner)));
        (
            Self {
                inner,
                read: Arc::clone(&read),
            },
            read,
        )
    }
}

impl hyper::body::Body for WatchedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.read.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Longest a SigV4 presigned URL may live (`X-Amz-Expires`), as on S3: one week.
pub const MAX_PRESIGNED_EXPIRY_S: u64 = 604_800;

/// Whether a query string carries an `X-Amz-Expires` beyond a week (or unreadable).
fn presigned_expiry_too_long(query: Option<&str>) -> bool {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter_map(|kv| kv.split_once('='))
        .any(|(k, v)| {
            k.eq_ignore_ascii_case("X-Amz-Expires")
                && v.parse::<u64>()
                    .map_or(true, |n| n > MAX_PRESIGNED_EXPIRY_S)
        })
}

/// An S3 error document with `<RequestId>` added (the same id as the
/// `x-amz-request-id` header), or `None` when it is not one or already has it.
fn with_request_id(body: &[u8], id: &str) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(body).ok()?;
    if !text.contains("<Error>") || text.contains("<RequestId>") {
        return None;
    }
    let at = text.rfind("</Error>")?;
    Some(format!("{}<RequestId>{id}</RequestId>{}", &text[..at], &text[at..]).into_bytes())
}

/// Error documents are small; larger bodies are passed on untouched.
const MAX_ERROR_BODY: usize = 64 * 1024;

fn content_length(h: &hyper::HeaderMap, name: &str) -> Option<u64> {
    h.get(name)?.to_str().ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presigned_urls_live_at_most_a_week() {
        assert!(!presigned_expiry_too_long(None));
        assert!(!presigned_expiry_too_long(Some("X-Amz-Expires=604800&a=b")));
        assert!(presigned_expiry_too_long(Some("a=b&X-Amz-Expires=604801")));
        assert!(presigned_expiry_too_long(Some("x-amz-expires=-1")));
        assert!(!presigned_expiry_too_long(Some("list-type=2")));
    }

    #[test]
    fn error_documents_get_the_request_id() {
        let doc = b"<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code></Error>";
        let out = with_request_id(doc, "ABC").unwrap();
        assert!(
            String::from_utf8(out)
                .unwrap()
                .ends_with("<RequestId>ABC</RequestId></Error>")
        );
        assert_eq!(with_request_id(b"<ListBucketResult/>", "A"), None);
        assert_eq!(
            with_request_id(b"<Error><RequestId>x</RequestId></Error>", "A"),
            None
        );
    }
}
