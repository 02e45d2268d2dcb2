//! `uplink gateway`: the S3 API over HTTP on top of [`Uplink`], for the access in the
//! config dir. The gateway runs on the user's own machine, so the keys never leave it.
//!
//! [s3s](https://crates.io/crates/s3s) parses requests (path- and virtual-host-style),
//! checks SigV4 signatures (headers, presigned URLs with their expiry, aws-chunked
//! bodies with chunk signatures, `UNSIGNED-PAYLOAD`, the unsigned trailer form) and
//! writes S3's XML. [`s3::ShoalS3`] maps operations onto the uplink; the protocol rules
//! that are ours (listing pages, conditional requests, digests, multipart completion,
//! addressing) are plain code in the modules below, tested without sockets. This file
//! is the hyper edge: accept loop, connection cap, graceful shutdown, metrics.
//!
//! Every write (PUT, completed multipart upload, copy, delete, bucket change) is
//! acknowledged only once its catalog change is in the network ([`Uplink::flush`];
//! concurrent requests share one publish).

pub mod attrs;
pub mod conditions;
pub mod digest;
pub mod host;
pub mod listing;
pub mod multipart;
pub(crate) mod s3;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{S3Result, s3_error};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::Uplink;

/// Where the gateway serves its own metrics. Bucket names cannot start with `_`, so
/// this path never names a bucket.
pub const METRICS_PATH: &str = "/_shoal/metrics";

/// Settings of a gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub access_key: String,
    pub secret_key: String,
    /// Default `us-east-1`.
    pub region: String,
    /// Domains for virtual-host-style requests (`BUCKET.DOMAIN`). Default `localhost`.
    pub domains: Vec<String>,
    /// Multipart uploads neither completed nor aborted within this are aborted and
    /// their pieces deleted. Default 7 days.
    pub multipart_max_age: Duration,
    /// How often the sweeper looks for such uploads. Default 1 hour.
    pub sweep_interval: Duration,
    /// Open connections at most; more wait in the listen backlog. Default 1024.
    pub max_connections: usize,
    /// How long in-flight requests may run on after a shutdown signal. Default 30 s.
    pub shutdown_grace: Duration,
    /// How often the gateway pulls what other writers of this access published (so a
    /// `uplink cp` elsewhere shows up here). Default 30 s.
    pub pull_interval: Duration,
    /// How often the gateway renews the leases of everything the access stores (objects
    /// and catalog; see [`crate::repair::spawn_renewer`]), starting at start-up. Leases
    /// last `default_lease` (90 days), so a gateway that runs keeps the data alive.
    /// Default 24 h.
    pub renew_interval: Duration,
}

impl GatewayConfig {
    /// A config with the given credentials and every other field at its default.
    pub fn new(access_key: String, secret_key: String) -> Self {
        Self {
            access_key,
            secret_key,
            region: "us-east-1".into(),
            domains: vec!["localhost".into()],
            multipart_max_age: Duration::from_secs(7 * 24 * 3600),
            sweep_interval: Duration::from_secs(3600),
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(30),
            pull_interval: Duration::from_secs(30),
            renew_interval: Duration::from_secs(24 * 3600),
        }
    }
}

/// Credentials derived from an access's root secret: stable for one access on every
/// machine, and telling nothing about the secret. Returns (access key id, secret key).
pub fn derived_credentials(root: &[u8; 32]) -> (String, String) {
    use base64::Engine;
    let id = blake3::derive_key("shoal v1 s3 gateway access key id", root);
    let secret = blake3::derive_key("shoal v1 s3 gateway secret access key", root);
    (
        format!("SHOAL{}", shoal_proto::ids::to_hex(&id[..8]).to_uppercase()),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&secret[..30]),
    )
}

/// The gateway's metrics (`shoal_gateway_*`).
#[derive(Debug, Clone)]
pub struct GatewayMetrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    bytes_in: IntCounter,
    bytes_out: IntCounter,
}

impl GatewayMetrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "shoal_gateway_requests_total",
                "S3 requests by operation and HTTP status",
            ),
            &["operation", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "shoal_gateway_request_seconds",
                "Time to the response head, by operation",
            )
            .buckets(prometheus::exponential_buckets(0.001, 2.0, 16)?),
            &["operation"],
        )?;
        let bytes_in = IntCounter::new(
            "shoal_gateway_bytes_in_total",
            "Request body bytes announced by clients (Content-Length)",
        )?;
        let bytes_out = IntCounter::new(
            "shoal_gateway_bytes_out_total",
            "Response body bytes announced to clients (Content-Length)",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(bytes_in.clone()))?;
        registry.register(Box::new(bytes_out.clone()))?;
        Ok(Self {
            registry,
            requests,
            latency,
            bytes_in,
            bytes_out,
        })
    }

    fn record(
        &self,
        op: &str,
        status: StatusCode,
        elapsed: Duration,
        bytes_in: u64,
        bytes_out: u64,
    ) {
        self.requests
            .with_label_values(&[op, status.as_str()])
            .inc();
        self.latency
            .with_label_values(&[op])
            .observe(elapsed.as_secs_f64());
        self.bytes_in.inc_by(bytes_in);
        self.bytes_out.inc_by(bytes_out);
    }

    fn render(&self, uplink: &Uplink) -> String {
        uplink.metrics().watch_db(uplink.catalog().watchdog());
        let mut families = self.registry.gather();
        families.extend(uplink.metrics().registry().gather());
        let mut out = Vec::new();
        let _ = prometheus::TextEncoder::new().encode(&families, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// The operation s3s resolved for a request, recorded by [`OpRecorder`] for the
/// metrics (requests refused before that count as `unauthenticated`).
#[derive(Debug, Clone, Default)]
struct OpSlot(Arc<Mutex<Option<String>>>);

/// Refuses anonymous requests (every request must be signed with the gateway's
/// credentials) and records the operation's name.
#[derive(Debug)]
struct OpRecorder;

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
struct SingleKey {
    access_key: String,
    secret_key: String,
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

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the access key and the secret key must not be empty")]
    EmptyCredentials,
    #[error("invalid domain `{0}` for virtual-host-style requests")]
    Domain(String),
    #[error("cannot register the gateway's metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
}

/// A bound gateway, ready to [`Gateway::run`].
#[derive(Debug)]
pub struct Gateway {
    listener: TcpListener,
    s3: s3::ShoalS3,
    service: S3Service,
    metrics: GatewayMetrics,
    config: GatewayConfig,
}

type GatewayBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

impl Gateway {
    pub async fn bind(
        uplink: Uplink,
        listen: SocketAddr,
        config: GatewayConfig,
    ) -> Result<Self, GatewayError> {
        if config.access_key.is_empty() || config.secret_key.is_empty() {
            return Err(GatewayError::EmptyCredentials);
        }
        for d in &config.domains {
            if d.is_empty()
                || !d
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            {
                return Err(GatewayError::Domain(d.clone()));
            }
        }
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| GatewayError::Bind {
                addr: listen,
                source,
            })?;
        let uploads = multipart::Uploads::new(uplink.catalog().db().clone());
        let s3 = s3::ShoalS3 {
            uplink,
            uploads,
            region: config.region.clone(),
        };
        let mut builder = S3ServiceBuilder::new(s3.clone());
        builder.set_auth(SingleKey {
            access_key: config.access_key.clone(),
            secret_key: config.secret_key.clone(),
        });
        builder.set_access(OpRecorder);
        builder.set_host(host::GatewayHost::new(config.domains.clone()));
        Ok(Self {
            listener,
            s3,
            service: builder.build(),
            metrics: GatewayMetrics::new()?,
            config,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves; then stops accepting, lets requests in flight
    /// finish (for at most `shutdown_grace`), publishes the catalog's last changes and
    /// returns.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), crate::Error> {
        let Gateway {
            listener,
            s3,
            service,
            metrics,
            config,
        } = self;
        let sweeper = tokio::spawn(sweep(
            s3.clone(),
            config.multipart_max_age,
            config.sweep_interval,
        ));
        let puller = tokio::spawn(pull(s3.uplink.clone(), config.pull_interval));
        let renewer = crate::repair::spawn_renewer(s3.uplink.clone(), config.renew_interval);
        let graceful = GracefulShutdown::new();
        let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30));
        tokio::pin!(shutdown);
        let mut backoff = Duration::from_millis(5);
        loop {
            // A connection slot first: at the cap, new connections wait in the backlog.
            let permit = tokio::select! {
                () = &mut shutdown => break,
                p = Arc::clone(&slots).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let (stream, peer) = tokio::select! {
                () = &mut shutdown => break,
                r = listener.accept() => match r {
                    Ok(c) => {
                        backoff = Duration::from_millis(5);
                        c
                    }
                    Err(e) => {
                        // Out of descriptors or similar: back off instead of spinning.
                        tracing::warn!(error = %e, "gateway accept failed; backing off");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                        continue;
                    }
                },
            };
            // Small answers go out at once (no Nagle wait for the client's delayed ACK).
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
            }
            let (service, metrics, uplink) = (service.clone(), metrics.clone(), s3.uplink.clone());
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                handle(service.clone(), metrics.clone(), uplink.clone(), req)
            });
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            let conn = graceful.watch(conn.into_owned());
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, error = %e, "gateway connection ended with an error");
                }
                drop(permit);
            });
        }
        drop(listener);
        sweeper.abort();
        puller.abort();
        // A renewal cut short is harmless (renewing is idempotent; the next run redoes it).
        drop(renewer);
        if tokio::time::timeout(config.shutdown_grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("requests still running after the shutdown grace were cut off");
        }
        s3.uplink.flush().await?;
        s3.uplink.settle(Duration::from_secs(10)).await;
        Ok(())
    }
}

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
async fn handle(
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

/// Merges other writers' changes now and then.
async fn pull(uplink: Uplink, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(e) = uplink.pull().await {
            tracing::warn!(error = %e, "cannot pull the catalog; retrying later");
        }
    }
}

/// Aborts multipart uploads older than `max_age` and forgets old completion records.
async fn sweep(s3: s3::ShoalS3, max_age: Duration, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    loop {
        tick.tick().await;
        let cutoff = shoal_proto::time::unix_ms().saturating_sub(max_age.as_millis() as u64);
        if let Err(e) = sweep_once(&s3, cutoff).await {
            tracing::warn!(error = %e, "cannot read the multipart uploads");
        }
    }
}

/// Aborts the uploads started before `cutoff_ms` (deleting their parts' pieces) and
/// drops completion records older than it. Returns how many uploads were aborted.
async fn sweep_once(
    s3: &s3::ShoalS3,
    cutoff_ms: u64,
) -> Result<usize, crate::catalog::CatalogError> {
    let (uploads, completed) = s3.uploads.expired(cutoff_ms)?;
    let mut aborted = 0;
    for id in uploads {
        tracing::info!(upload = %id, "aborting a multipart upload past its age");
        match s3.abort(&id).await {
            Ok(()) => aborted += 1,
            Err(e) => tracing::warn!(upload = %id, error = ?e, "cannot abort an old upload"),
        }
    }
    for id in completed {
        s3.uploads.forget_completed(&id)?;
    }
    Ok(aborted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::testing::MemoryPieceStore;
    use crate::{Access, PutOptions, RootSecret, StaticNodes, UplinkConfig};

    fn memory_s3() -> (MemoryPieceStore, s3::ShoalS3) {
        let store = MemoryPieceStore::with_nodes(8);
        let config = UplinkConfig {
            scheme: "2/3/4/6".parse().unwrap(),
            segment_blocks: 4,
            ..UplinkConfig::default()
        };
        let catalog = Catalog::temporary().unwrap();
        let uploads = multipart::Uploads::new(catalog.db().clone());
        let up = Uplink::new(
            Access::new(RootSecret::from_bytes([7; 32]), vec![]),
            Arc::new(store.clone()),
            Arc::new(StaticNodes(store.candidates())),
            catalog,
            config,
        )
        .unwrap();
        up.create_bucket("bkt").unwrap();
        let s3 = s3::ShoalS3 {
            uplink: up,
            uploads,
            region: "us-east-1".into(),
        };
        (store, s3)
    }

    async fn stage(s3: &s3::ShoalS3, id: &str, number: u32, data: &[u8]) {
        let mut part = s3
            .uplink
            .stage_part("bkt", "k", number, data, &PutOptions::default())
            .await
            .unwrap();
        part.info.md5 = [number as u8; 16];
        s3.uploads.put_part(id, &part).unwrap();
    }

    fn record(created_ms: u64) -> multipart::UploadRecord {
        multipart::UploadRecord {
            bucket: "bkt".into(),
            key: "k".into(),
            created_ms,
            content_type: None,
            metadata: Default::default(),
        }
    }

    #[tokio::test]
    async fn uploads_past_their_age_are_aborted_and_their_pieces_deleted() {
        let (store, s3) = memory_s3();
        let old = s3.uploads.create(&record(1_000)).unwrap();
        let new = s3.uploads.create(&record(u64::MAX / 2)).unwrap();
        stage(&s3, &old, 1, &[1u8; 100_000]).await;
        stage(&s3, &old, 2, &[2u8; 10]).await;
        let before = store.piece_count();
        stage(&s3, &new, 1, &[3u8; 100_000]).await;
        let with_new = store.piece_count();
        assert!(before > 0 && with_new > before);
        assert_eq!(sweep_once(&s3, 2_000).await.unwrap(), 1);
        assert_eq!(s3.uploads.get(&old).unwrap(), None);
        assert!(s3.uploads.parts(&old).unwrap().is_empty());
        // Only the old upload's pieces went.
        assert_eq!(store.piece_count(), with_new - before);
        assert!(s3.uploads.get(&new).unwrap().is_some());
    }

    #[tokio::test]
    async fn parts_assemble_into_one_object_read_back_in_ranges() {
        let (store, s3) = memory_s3();
        let id = s3.uploads.create(&record(1)).unwrap();
        let a: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let b: Vec<u8> = (0..70_000u32).map(|i| (i % 13) as u8).collect();
        // Part 1 sent twice: the second replaces the first (a fresh key: no nonce reuse).
        stage(&s3, &id, 1, &[9u8; 5000]).await;
        stage(&s3, &id, 1, &a).await;
        stage(&s3, &id, 2, &b).await;
        stage(&s3, &id, 3, &[]).await;
        let parts: Vec<_> = s3.uploads.parts(&id).unwrap().into_values().collect();
        s3.uplink
            .commit_parts("bkt", "k", parts, None, Default::default())
            .await
            .unwrap();
        let whole = [a.clone(), b.clone()].concat();
        for (start, end) in [
            (0, whole.len()),
            (299_990, 300_010),
            (300_000, 300_001),
            (5, 6),
        ] {
            let mut out = Vec::new();
            s3.uplink
                .get("bkt", "k", Some((start as u64, end as u64)), &mut out, None)
                .await
                .unwrap();
            assert_eq!(out, whole[start..end], "{start}..{end}");
        }
        // A copy shares the pieces; deleting the original keeps them.
        let pieces = store.piece_count();
        s3.uplink
            .copy("bkt", "k", "bkt", "k2", None, None)
            .await
            .unwrap();
        s3.uplink.delete("bkt", "k").await.unwrap();
        assert_eq!(store.piece_count(), pieces);
        let mut out = Vec::new();
        s3.uplink
            .get("bkt", "k2", None, &mut out, None)
            .await
            .unwrap();
        assert_eq!(out, whole);
        s3.uplink.delete("bkt", "k2").await.unwrap();
        assert!(store.piece_count() < pieces);
    }

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

    #[test]
    fn derived_credentials_are_stable_and_distinct() {
        let a = derived_credentials(&[1; 32]);
        assert_eq!(a, derived_credentials(&[1; 32]));
        let b = derived_credentials(&[2; 32]);
        assert_ne!(a.0, b.0);
        assert_ne!(a.1, b.1);
        assert!(a.0.starts_with("SHOAL") && a.0.len() == 21);
        assert_eq!(a.1.len(), 40);
    }

    /// Reads one HTTP/1.1 response head (status line and headers, lower-cased) and its
    /// `content-length` body from `conn`.
    async fn read_response(conn: &mut tokio::io::BufReader<tokio::net::TcpStream>) -> String {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt};
        let mut head = String::new();
        loop {
            let mut line = String::new();
            assert!(
                conn.read_line(&mut line).await.unwrap() > 0,
                "EOF in {head}"
            );
            if line == "\r\n" {
                break;
            }
            head.push_str(&line.to_ascii_lowercase());
        }
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map_or(0, |n| n.trim().parse().unwrap());
        let mut body = vec![0; len];
        conn.read_exact(&mut body).await.unwrap();
        head
    }

    /// An answer sent before the request body was read (here: a PUT refused for its
    /// missing signature, with `Expect: 100-continue`, so the client holds the body
    /// back) says `Connection: close` and ends the connection: the unread body can never
    /// be taken for the next request, and clients do not reuse a connection the gateway
    /// is closing. A request without a body keeps its connection.
    #[tokio::test]
    async fn answers_before_the_body_close_the_connection() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (_store, s3) = memory_s3();
        let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let config = GatewayConfig::new("AK".into(), "SK".into());
        let gateway = Gateway::bind(s3.uplink.clone(), listen, config)
            .await
            .unwrap();
        let addr = gateway.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(gateway.run(async {
            let _ = stopped.await;
        }));
        tokio::time::timeout(Duration::from_secs(30), async {
            let mut conn =
                tokio::io::BufReader::new(tokio::net::TcpStream::connect(addr).await.unwrap());
            // No body: the connection stays open for the next request.
            for _ in 0..2 {
                conn.get_mut()
                    .write_all(b"GET /_shoal/metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
                    .await
                    .unwrap();
                let head = read_response(&mut conn).await;
                assert!(head.starts_with("http/1.1 200"), "{head}");
                assert!(!head.contains("connection: close"), "{head}");
            }
            // A body the gateway never reads.
            conn.get_mut()
                .write_all(
                    b"PUT /bkt/k HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
                )
                .await
                .unwrap();
            let head = read_response(&mut conn).await;
            assert!(head.starts_with("http/1.1 403"), "{head}");
            assert!(head.contains("connection: close"), "{head}");
            let mut rest = Vec::new();
            conn.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty(), "nothing after the answer: {rest:?}");
        })
        .await
        .expect("the gateway answers within 30 s");
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }
}
