//! The HTTP server (hyper 1): `/metrics` (Prometheus text of the node's whole registry),
//! `/api/status` (JSON) and `/` (a small dashboard page, plain HTML).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus::{Encoder, TextEncoder};
use serde::{Deserialize, Serialize};
use shoal_proto::time::unix_ms;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::error::Error;
use crate::node::NodeState;
use crate::size::ByteSize;

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
}

impl NodeStatus {
    pub fn of(state: &NodeState) -> Self {
        let space = state.store.space();
        let m = &state.metrics;
        let now = unix_ms();
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

/// Answers one request; no I/O beyond reading the node's state.
pub fn route(state: &NodeState, method: &Method, path: &str) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "only GET\n");
    }
    match path {
        "/metrics" => {
            state.metrics.set_space(&state.store.space());
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
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    debug!(error = %e, "HTTP accept failed");
                    continue;
                }
            },
        };
        let state = Arc::clone(&state);
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let r = route(&state, req.method(), req.uri().path());
            async move { Ok::<_, Infallible>(r) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10))
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
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
        };
        let html = dashboard(&s);
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("50.0%"));
        assert!(html.contains("1d 1h 1m"));
        assert!(html.contains(&s.node_id));
    }
}
