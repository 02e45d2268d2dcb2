//! The gateway's own metrics (`shoal_gateway_*`), rendered with the uplink's.

use std::time::Duration;

use hyper::StatusCode;
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};

use uplink::Uplink;

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

    pub(super) fn record(
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

    pub(super) fn render(&self, uplink: &Uplink) -> String {
        uplink.metrics().watch_db(uplink.catalog().watchdog());
        let mut families = self.registry.gather();
        families.extend(uplink.metrics().registry().gather());
        let mut out = Vec::new();
        let _ = prometheus::TextEncoder::new().encode(&families, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}
