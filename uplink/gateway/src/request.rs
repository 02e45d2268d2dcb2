//! One HTTP request: the metrics page, or S3 through s3s, with what the gateway adds
//! around it (request ids, the presigned-URL age limit, `Connection: close` after an
//! unread body, the request's metrics).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

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
    metrics_token: Option<Arc<str>>,
    body_idle: Duration,
    req: Request<Incoming>,
) -> Result<Response<GatewayBody>, Infallible> {
    let version = req.version();
    let (parts, body) = req.into_parts();
    let (body, read) = WatchedBody::new(body, body_idle);
    let mut resp = serve(
        service,
        metrics,
        uplink,
        metrics_token,
        Request::from_parts(parts, body),
    )
    .await;
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
    metrics_token: Option<Arc<str>>,
    mut req: Request<WatchedBody>,
) -> Response<GatewayBody> {
    if req.uri().path() == METRICS_PATH && req.method() == hyper::Method::GET {
        let header =
            |name: hyper::header::HeaderName| req.headers().get(name).and_then(|v| v.to_str().ok());
        let host =
            header(hyper::header::HOST).or_else(|| req.uri().authority().map(|a| a.as_str()));
        let access = shoal_proto::http::metrics_access(
            host,
            header(hyper::header::AUTHORIZATION),
            metrics_token.as_deref(),
        );
        if let Err(refused) = access {
            let mut resp = Response::new(
                Full::new(Bytes::from(format!("{refused}\n")))
                    .map_err(|e| match e {})
                    .boxed(),
            );
            *resp.status_mut() =
                StatusCode::from_u16(refused.status()).unwrap_or(StatusCode::FORBIDDEN);
            return resp;
        }
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
    if let Some(e) = refuse_before_body(req.method(), req.uri(), req.headers()) {
        let resp = finish(s3s_response(e), &request_id).await;
        metrics.record("unauthenticated", resp.status(), started.elapsed(), 0, 0);
        return resp;
    }
    let slot = OpSlot::default();
    req.extensions_mut().insert(slot.clone());
    let declared_in = content_length(req.headers(), "x-amz-decoded-content-length")
        .or_else(|| content_length(req.headers(), "content-length"))
        .unwrap_or(0);
    let resp = match service.call(req.map(s3s::Body::http_body_unsync)).await {
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

/// Longest a request body may send nothing while it is being read, by default
/// (`GatewayConfig::body_idle_timeout`): a client that stops sending half way holds a
/// connection slot and a half-written upload no longer than this (the 30 s header
/// timeout covers only the request line and headers).
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why reading a request body failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Http(#[from] hyper::Error),
    #[error("the request body sent nothing for {} s", .0.as_secs())]
    Idle(Duration),
}

impl From<Infallible> for BodyError {
    fn from(e: Infallible) -> Self {
        match e {}
    }
}

/// A request body that records whether it was read to its end (or was empty), and
/// fails once it has sent nothing for `idle` while being read.
struct WatchedBody<B = Incoming> {
    inner: B,
    read: Arc<AtomicBool>,
    idle: Duration,
    /// Armed by the first poll that finds nothing, reset by every frame.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B: hyper::body::Body> WatchedBody<B> {
    fn new(inner: B, idle: Duration) -> (Self, Arc<AtomicBool>) {
        let read = Arc::new(AtomicBool::new(hyper::body::Body::is_end_stream(&inner)));
        (
            Self {
                inner,
                read: Arc::clone(&read),
                idle,
                timer: None,
            },
            read,
        )
    }
}

impl<B> hyper::body::Body for WatchedBody<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    BodyError: From<B::Error>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, BodyError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match polled {
            Poll::Pending => {
                let idle = self.idle;
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(BodyError::Idle(idle))));
                }
                Poll::Pending
            }
            Poll::Ready(r) => {
                self.timer = None;
                if r.is_none() || self.inner.is_end_stream() {
                    self.read.store(true, Ordering::Release);
                }
                Poll::Ready(r.map(|f| f.map_err(BodyError::from)))
            }
        }
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

/// Why a request is refused before anything reads its body or checks its signature:
/// the rules the gateway adds in front of s3s (plain code, no I/O).
///
/// - **PostObject** (a browser form upload: `POST` with `multipart/form-data`): s3s
///   reads the whole form into memory before it checks the signature, so any page the
///   user visits could make the gateway buffer gigabytes (a form POST to 127.0.0.1 needs
///   no CORS preflight). The gateway does not offer it: refused before the body.
/// - **Signature version 2** (`Authorization: AWS key:sig`, or `AWSAccessKeyId` and
///   `Signature` in the query): HMAC-SHA1, no clock-skew window, presigned URLs with any
///   `Expires`. Refused, as on S3's newer regions: only SigV4 is accepted.
/// - **Presigned URLs past a week**: `X-Amz-Expires` is checked on the decoded query
///   (percent-encoded names and repeated parameters included), as s3s reads it.
pub fn refuse_before_body(
    method: &hyper::Method,
    uri: &hyper::Uri,
    headers: &hyper::HeaderMap,
) -> Option<s3s::S3Error> {
    let is_form = headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| {
            t.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        });
    if method == hyper::Method::POST && is_form {
        return Some(s3_error!(
            NotImplemented,
            "POST object (browser form upload) is not supported by this gateway; use PUT"
        ));
    }
    let v2_header = headers
        .get_all(hyper::header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            let v = v.trim_start();
            v.len() > 4 && v[..4].eq_ignore_ascii_case("AWS ")
        });
    let query: Vec<(String, String)> = uri
        .query()
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default();
    let has = |name: &str| query.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    if v2_header || (has("AWSAccessKeyId") && has("Signature")) {
        return Some(s3_error!(
            InvalidRequest,
            "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256."
        ));
    }
    let too_long = query
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("X-Amz-Expires"))
        .any(|(_, v)| {
            v.trim()
                .parse::<u64>()
                .map_or(true, |n| n > MAX_PRESIGNED_EXPIRY_S)
        });
    if too_long {
        return Some(s3_error!(
            AccessDenied,
            "X-Amz-Expires must be less than a week (in seconds) that is 604800"
        ));
    }
    None
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

    fn refusal(method: &str, uri: &str, headers: &[(&str, &str)]) -> Option<String> {
        let mut h = hyper::HeaderMap::new();
        for (k, v) in headers {
            h.append(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let method = hyper::Method::from_bytes(method.as_bytes()).unwrap();
        refuse_before_body(&method, &uri.parse().unwrap(), &h).map(|e| e.code().as_str().to_owned())
    }

    #[test]
    fn presigned_urls_live_at_most_a_week() {
        assert_eq!(refusal("GET", "/b/k", &[]), None);
        assert_eq!(refusal("GET", "/b/k?X-Amz-Expires=604800&a=b", &[]), None);
        let denied = Some("AccessDenied".to_owned());
        assert_eq!(refusal("GET", "/b/k?a=b&X-Amz-Expires=604801", &[]), denied);
        assert_eq!(refusal("GET", "/b/k?x-amz-expires=-1", &[]), denied);
        assert_eq!(refusal("GET", "/b?list-type=2", &[]), None);
        // Issue 27: checked on the decoded query, as s3s reads it.
        assert_eq!(
            refusal("GET", "/b/k?X%2DAmz%2DExpires=315360000", &[]),
            denied
        );
        assert_eq!(
            refusal("GET", "/b/k?X-Amz-Expires=%33%31%35%33%36%30%30%30%30", &[]),
            denied
        );
        assert_eq!(
            refusal("GET", "/b/k?X-Amz-Expires=60&X-Amz-Expires=315360000", &[]),
            denied
        );
    }

    /// Issue 27: a browser form upload and SigV2 (header or query) are refused before
    /// the body is read or the signature checked.
    #[test]
    fn post_object_and_sigv2_are_refused_before_the_body() {
        let form = [("content-type", "multipart/form-data; boundary=x")];
        assert_eq!(
            refusal("POST", "/bucket", &form),
            Some("NotImplemented".into())
        );
        assert_eq!(
            refusal(
                "POST",
                "/bucket",
                &[("Content-Type", "Multipart/Form-Data")]
            ),
            Some("NotImplemented".into())
        );
        // DeleteObjects and CompleteMultipartUpload are POSTs with XML: served.
        assert_eq!(
            refusal(
                "POST",
                "/bucket?delete",
                &[("content-type", "application/xml")]
            ),
            None
        );
        let v2 = Some("InvalidRequest".to_owned());
        assert_eq!(
            refusal("GET", "/b/k", &[("authorization", "AWS AKID:c2lnbmF0dXJl")]),
            v2
        );
        assert_eq!(
            refusal(
                "GET",
                "/b/k?AWSAccessKeyId=AKID&Expires=2000000000&Signature=abc",
                &[]
            ),
            v2
        );
        let v4 = "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00";
        assert_eq!(refusal("GET", "/b/k", &[("authorization", v4)]), None);
    }

    /// Issue 27: a body that stops sending is cut after the idle timeout; one that
    /// keeps sending, however slowly, is not.
    #[tokio::test(start_paused = true)]
    async fn a_body_that_sends_nothing_for_the_idle_timeout_fails() {
        let (tx, rx) =
            tokio::sync::mpsc::channel::<Result<hyper::body::Frame<Bytes>, Infallible>>(1);
        let body = http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        let (mut body, read) = WatchedBody::new(body, Duration::from_secs(60));
        let feeder = tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_secs(59)).await;
                tx.send(Ok(hyper::body::Frame::data(Bytes::from_static(b"x"))))
                    .await
                    .unwrap();
            }
            // Then silence, with the sender held open.
            std::future::pending::<()>().await;
        });
        for _ in 0..3 {
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), Bytes::from_static(b"x"));
        }
        let started = tokio::time::Instant::now();
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(matches!(err, BodyError::Idle(_)), "{err}");
        assert_eq!(started.elapsed(), Duration::from_secs(60));
        assert!(!read.load(Ordering::Acquire));
        feeder.abort();
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
