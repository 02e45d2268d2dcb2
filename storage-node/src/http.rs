//! The HTTP server (hyper 1): `/metrics` (Prometheus text of the node's whole registry),
//! `/api/status` (JSON) and `/` (a small dashboard page, plain HTML).
//!
//! Bounded like every server of the node: at most [`MAX_CONNECTIONS`] connections at
//! once (more wait in the listen backlog), one request per connection within
//! [`CONNECTION_DEADLINE`], accept errors paused with the shared backoff. The pages a
//! browser shows (`/`, `/api/status`) answer only requests whose `Host` is an IP
//! literal or `localhost` ([`host_allowed`]): a page on another site whose name was
//! re-pointed at 127.0.0.1 (DNS rebinding) names its own host and gets 421, so it cannot
//! read the dashboard through the victim's browser. `/metrics` also accepts a
//! single-label name (Prometheus scrapes `seed:7778` in the compose network), or, with
//! `metrics_token` set, only requests that carry it
//! ([`shoal_proto::http::metrics_access`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus::{Encoder, TextEncoder};
use serde::{Deserialize, Serialize};
use shoal_proto::limits::AcceptBackoff;
use shoal_proto::time::unix_ms;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use shoal_proto::PublicKey;

use crate::error::Error;
use crate::metrics::TOP_OWNERS;
use crate::size::ByteSize;
use crate::state::NodeState;
use crate::store::Usage;

/// What `/api/status` returns (and `storage-node info` prints).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_id: String,
    pub version: String,
    pub grpc_address: String,
    pub external_address: Option<String>,
    pub http_address: String,
    pub started_at_ms: u64,
    pub uptime_seconds: u64,
    pub allocated_bytes: u64,
    pub used_bytes: u64,
    pub reserved_bytes: u64,
    pub free_bytes: u64,
    pub pieces: u64,
    pub uploads: u64,
    pub downloads: u64,
    pub upload_bytes: u64,
    pub download_bytes: u64,
    /// Owner keys storing at least one piece.
    #[serde(default)]
    pub owners: u64,
    /// The per-owner limit in bytes, if any.
    #[serde(default)]
    pub max_bytes_per_owner: Option<u64>,
    /// The largest owners (at most [`TOP_OWNERS`]), most first.
    #[serde(default)]
    pub top_owners: Vec<OwnerStatus>,
}

/// One owner's totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerStatus {
    /// The owner's public key, hex.
    pub owner: String,
    /// Its label in `/metrics` ([`crate::metrics::owner_label`]).
    #[serde(default)]
    pub label: String,
    /// Charged bytes (sizes plus the per-piece overhead).
    pub bytes: u64,
    pub pieces: u64,
}

impl OwnerStatus {
    pub fn list(top: &[(PublicKey, Usage)]) -> Vec<Self> {
        top.iter()
            .map(|(k, u)| Self {
                owner: k.to_hex(),
                label: crate::metrics::owner_label(k),
                bytes: u.bytes,
                pieces: u.pieces,
            })
            .collect()
    }
}

impl NodeStatus {
    pub fn of(state: &NodeState) -> Self {
        let space = state.store.space();
        let m = &state.metrics;
        let now = unix_ms();
        let (top, owners) = state.store.top_owners(TOP_OWNERS).unwrap_or_default();
        Self {
            node_id: state.identity.node_id().to_hex(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            grpc_address: state.grpc_addr.to_string(),
            external_address: state.external_address.clone(),
            http_address: state.http_addr.to_string(),
            started_at_ms: state.started_at_ms,
            uptime_seconds: now.saturating_sub(state.started_at_ms) / 1000,
            allocated_bytes: space.allocated,
            used_bytes: space.used,
            reserved_bytes: space.reserved,
            free_bytes: space.free,
            pieces: space.pieces,
            uploads: m.requests_total("upload"),
            downloads: m.requests_total("download"),
            upload_bytes: m.bytes_total("upload"),
            download_bytes: m.bytes_total("download"),
            owners: owners as u64,
            max_bytes_per_owner: state.store.max_bytes_per_owner(),
            top_owners: OwnerStatus::list(&top),
        }
    }
}

type Body = Full<Bytes>;

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    if let Ok(v) = "no-store".parse() {
        r.headers_mut().insert(CACHE_CONTROL, v);
    }
    r
}

/// Most HTTP connections served at once.
pub const MAX_CONNECTIONS: usize = 32;
/// Longest one HTTP connection may live: reading the request, answering, and the
/// client reading the answer.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(30);

/// Whether a browser page may be served to a request for `host`: the rule of
/// [`shoal_proto::http::page_host_allowed`].
pub use shoal_proto::http::page_host_allowed as host_allowed;

/// Answers one request; no I/O beyond reading the node's state. `host` and
/// `authorization` are the request's headers; `/metrics` follows
/// [`shoal_proto::http::metrics_access`] with the node's `metrics_token`.
pub fn route(
    state: &NodeState,
    method: &Method,
    path: &str,
    host: Option<&str>,
    authorization: Option<&str>,
) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "only GET\n");
    }
    if path == "/metrics" {
        if let Some(refused) = metrics_refused(state, host, authorization) {
            return refused;
        }
    } else if !host_allowed(host) {
        return reply(
            StatusCode::MISDIRECTED_REQUEST,
            "text/plain",
            "open the dashboard at an IP address (http://127.0.0.1:PORT/) or localhost\n",
        );
    }
    match path {
        "/metrics" => metrics_page(state, true),
        "/api/status" => match serde_json::to_vec_pretty(&NodeStatus::of(state)) {
            Ok(json) => reply(StatusCode::OK, "application/json", json),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("cannot encode status: {e}\n"),
            ),
        },
        "/" | "/index.html" => reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            dashboard(&NodeStatus::of(state)),
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

/// The answer to a metrics request that may not be served, if it may not.
fn metrics_refused(
    state: &NodeState,
    host: Option<&str>,
    authorization: Option<&str>,
) -> Option<Response<Body>> {
    let refused =
        shoal_proto::http::metrics_access(host, authorization, state.metrics_token.as_deref())
            .err()?;
    let status = StatusCode::from_u16(refused.status()).unwrap_or(StatusCode::FORBIDDEN);
    Some(reply(status, "text/plain", format!("{refused}\n")))
}

/// The Prometheus page. With `read_db`, the owner gauges are refreshed from the
/// metadata first; without, they keep their last values (the answer when the database
/// does not answer in time: the stall gauge must stay readable exactly then).
pub fn metrics_page(state: &NodeState, read_db: bool) -> Response<Body> {
    state.metrics.set_space(&state.store.space());
    state.metrics.set_db_stall(state.store.meta().stall());
    if read_db && let Ok((top, owners)) = state.store.top_owners(TOP_OWNERS) {
        state.metrics.set_owners(&top, owners);
    }
    let mut buf = Vec::new();
    let encoder = TextEncoder::new();
    match encoder.encode(&state.registry.gather(), &mut buf) {
        Ok(()) => reply(StatusCode::OK, encoder.format_type(), buf),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("cannot encode metrics: {e}\n"),
        ),
    }
}

/// Longest a request waits for the pages' database reads (owner totals) before it is
/// answered without them (`/metrics`) or with 503 (the other pages).
pub const DB_DEADLINE: Duration = Duration::from_secs(2);

/// [`route`] on a blocking thread (its pages read the metadata database), bounded by
/// [`DB_DEADLINE`].
async fn route_bounded(
    state: Arc<NodeState>,
    method: Method,
    path: String,
    host: Option<String>,
    authorization: Option<String>,
) -> Response<Body> {
    // Checked here as well: past the deadline `/metrics` is answered from here.
    if path == "/metrics"
        && let Some(refused) = metrics_refused(&state, host.as_deref(), authorization.as_deref())
    {
        return refused;
    }
    let st = Arc::clone(&state);
    let p = path.clone();
    let task = tokio::task::spawn_blocking(move || {
        route(&st, &method, &p, host.as_deref(), authorization.as_deref())
    });
    match tokio::time::timeout(DB_DEADLINE, task).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("the request failed: {e}\n"),
        ),
        Err(_) if path == "/metrics" => metrics_page(&state, false),
        Err(_) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "the metadata database did not answer in time; see shoal_node_db_stall_seconds on /metrics\n",
        ),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h {m}m")
    } else {
        format!("{h}h {m}m {s}s")
    }
}

/// The dashboard: one page, no scripts, refreshes itself every 10 seconds.
pub fn dashboard(s: &NodeStatus) -> String {
    let pct = if s.allocated_bytes == 0 {
        0.0
    } else {
        s.used_bytes as f64 * 100.0 / s.allocated_bytes as f64
    };
    let up = s.uptime_seconds.max(1) as f64;
    let rate = |b: u64| ByteSize((b as f64 / up) as u64).human() + "/s";
    let row = |k: &str, v: String| format!("<tr><th>{k}</th><td>{}</td></tr>\n", escape(&v));
    let mut rows = String::new();
    rows += &row("Node ID", s.node_id.clone());
    rows += &row("Version", s.version.clone());
    rows += &row("Uptime", duration(s.uptime_seconds));
    rows += &row("gRPC address", s.grpc_address.clone());
    rows += &row(
        "External address",
        s.external_address
            .clone()
            .unwrap_or_else(|| "(listen address)".into()),
    );
    rows += &row("Pieces", s.pieces.to_string());
    rows += &row(
        "Used / allocated",
        format!(
            "{} / {} ({pct:.1}%)",
            ByteSize(s.used_bytes).human(),
            ByteSize(s.allocated_bytes).human()
        ),
    );
    rows += &row("Free", ByteSize(s.free_bytes).human());
    rows += &row(
        "Owners",
        format!(
            "{} (limit per owner: {})",
            s.owners,
            s.max_bytes_per_owner
                .map_or("none".into(), |b| ByteSize(b).human())
        ),
    );
    for o in &s.top_owners {
        rows += &row(
            &format!("&nbsp;&nbsp;owner {}…", &o.owner[..o.owner.len().min(16)]),
            format!("{} in {} pieces", ByteSize(o.bytes).human(), o.pieces),
        );
    }
    rows += &row(
        "Ingress (uploads)",
        format!(
            "{} in {} uploads, {} average",
            ByteSize(s.upload_bytes).human(),
            s.uploads,
            rate(s.upload_bytes)
        ),
    );
    rows += &row(
        "Egress (downloads)",
        format!(
            "{} in {} downloads, {} average",
            ByteSize(s.download_bytes).human(),
            s.downloads,
            rate(s.download_bytes)
        ),
    );
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"10\">\
<title>Shoal storage node</title>\n<style>body{{font-family:sans-serif;max-width:46em;margin:2em auto}}\
th{{text-align:left;padding-right:2em}}td{{font-family:monospace}}\
.bar{{background:#ddd;height:1.2em;width:100%}}.used{{background:#2a7;height:100%}}</style></head>\n\
<body><h1>Shoal storage node</h1>\n<div class=\"bar\"><div class=\"used\" style=\"width:{pct:.1}%\"></div></div>\n\
<table>\n{rows}</table>\n<p><a href=\"/metrics\">metrics</a> · <a href=\"/api/status\">status JSON</a></p></body></html>\n"
    )
}

/// Serves until `stop` is cancelled, then lets open requests finish (for at most a few
/// seconds) and returns.
pub async fn serve(
    listener: TcpListener,
    state: Arc<NodeState>,
    stop: CancellationToken,
) -> Result<(), Error> {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = AcceptBackoff::default();
    loop {
        // A free slot first: past the cap, connections wait in the listen backlog.
        let slot = tokio::select! {
            () = stop.cancelled() => break,
            s = Arc::clone(&slots).acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => {
                    backoff.succeeded();
                    c
                }
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    let pause = backoff.failed();
                    warn!(error = %e, pause_ms = pause.as_millis() as u64, "HTTP accept failed");
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(pause) => continue,
                    }
                }
            },
        };
        let state = Arc::clone(&state);
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let host = req
                .headers()
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .or_else(|| req.uri().authority().map(|a| a.as_str()));
            let host = host.map(str::to_owned);
            let authorization = req
                .headers()
                .get(hyper::header::AUTHORIZATION)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned);
            let r = route_bounded(
                Arc::clone(&state),
                req.method().clone(),
                req.uri().path().to_owned(),
                host,
                authorization,
            );
            async move { Ok::<_, Infallible>(r.await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10))
            .keep_alive(false)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            match tokio::time::timeout(CONNECTION_DEADLINE, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!(%peer, error = %e, "HTTP connection ended with an error"),
                Err(_) => debug!(%peer, "HTTP connection cut at its deadline"),
            }
            drop(slot);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashboard_escapes_and_shows_the_essentials() {
        let s = NodeStatus {
            node_id: "ab".repeat(32),
            version: "0.1.0".into(),
            grpc_address: "127.0.0.1:7777".into(),
            external_address: Some("<script>".into()),
            http_address: "127.0.0.1:7778".into(),
            started_at_ms: 0,
            uptime_seconds: 90_061,
            allocated_bytes: 1 << 30,
            used_bytes: 1 << 29,
            reserved_bytes: 0,
            free_bytes: 1 << 29,
            pieces: 7,
            uploads: 9,
            downloads: 3,
            upload_bytes: 1 << 29,
            download_bytes: 10,
            owners: 0,
            max_bytes_per_owner: None,
            top_owners: Vec::new(),
        };
        let html = dashboard(&s);
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("50.0%"));
        assert!(html.contains("1d 1h 1m"));
        assert!(html.contains(&s.node_id));
    }

    #[test]
    fn browser_pages_need_an_ip_or_localhost_host_header() {
        for ok in [
            "127.0.0.1:7778",
            "127.0.0.1",
            "[::1]:7778",
            "[::1]",
            "10.0.0.4:7778",
            "localhost:7778",
            "LOCALHOST",
        ] {
            assert!(host_allowed(Some(ok)), "{ok}");
        }
        for bad in [
            None,
            Some("evil.example.com:7778"),
            Some("evil.example.com"),
            Some("127.0.0.1.evil.example.com:7778"),
            Some("localhost.evil.example.com"),
            Some("[::1"),
            Some("[::1]x"),
            Some(""),
        ] {
            assert!(!host_allowed(bad), "{bad:?}");
        }
    }
}
