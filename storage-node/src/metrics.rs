//! Every Prometheus metric of the node, registered in one place. Names start with
//! `shoal_node_`. The registry is the node's: other components (the DHT) register their
//! own metrics into it, and `/metrics` serves all of it.

use prometheus::{
    Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use shoal_proto::PublicKey;

use crate::store::{Space, Usage};

/// Owners shown one by one in the metrics (and `/api/status`, `storage-node info`): the
/// ones storing the most bytes. Bounded, because every label value is a time series
/// Prometheus keeps: one series per owner key would let anyone with free keys blow up
/// the operator's Prometheus. The top ten name who uses the node; everyone else is in
/// the totals (`shoal_node_used_bytes`, `shoal_node_owners`). Hashed buckets were the
/// other candidate: bounded too, but a bucket names no one an operator could act on.
pub const TOP_OWNERS: usize = 10;

/// The label of an owner: 16 hex digits of a hash of its key. `/metrics` may be read by
/// more people than the operator (a scraper, a shared dashboard), and an owner's key
/// ties its pieces together across nodes; the hash names no key. `storage-node info`
/// and the dashboard show each owner's key next to its label.
pub fn owner_label(owner: &PublicKey) -> String {
    let h = blake3::derive_key("shoal v1 node metrics owner label", owner.as_bytes());
    h[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Operations the node counts, as metric labels.
pub const OPS: [&str; 6] = [
    "upload",
    "download",
    "delete",
    "audit",
    "renew",
    "list_pieces",
];

/// The node's metrics.
#[derive(Debug, Clone)]
pub struct NodeMetrics {
    /// Requests by operation, whatever their outcome.
    pub requests: IntCounterVec,
    /// Failed requests by operation and reason (see [`crate::Error::reason`]).
    pub failures: IntCounterVec,
    /// Piece bytes received (upload) and sent (download, audit).
    pub bytes: IntCounterVec,
    /// Request latency by operation.
    pub latency: HistogramVec,
    /// Streams open right now.
    pub active_streams: IntGauge,
    /// Pieces collected by the expiry worker.
    pub expired: IntCounter,
    pub used_bytes: IntGauge,
    pub allocated_bytes: IntGauge,
    pub reserved_bytes: IntGauge,
    pub free_bytes: IntGauge,
    pub pieces: IntGauge,
    /// Owners storing at least one piece.
    pub owners: IntGauge,
    /// Charged bytes and pieces of the [`TOP_OWNERS`] largest owners.
    pub owner_bytes: IntGaugeVec,
    pub owner_pieces: IntGaugeVec,
    pub start_time: Gauge,
    pub build_info: IntGaugeVec,
    /// How long the oldest metadata call in flight has been running, once past
    /// [`DB_STALL_THRESHOLD`] (0 otherwise).
    pub db_stall: Gauge,
}

/// A metadata call running longer than this shows in `shoal_node_db_stall_seconds`.
pub const DB_STALL_THRESHOLD: std::time::Duration = std::time::Duration::from_secs(1);

impl NodeMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            requests: IntCounterVec::new(
                Opts::new(
                    "shoal_node_requests_total",
                    "Piece-store requests received, by operation.",
                ),
                &["op"],
            )?,
            failures: IntCounterVec::new(
                Opts::new(
                    "shoal_node_request_failures_total",
                    "Piece-store requests that failed, by operation and reason.",
                ),
                &["op", "reason"],
            )?,
            bytes: IntCounterVec::new(
                Opts::new(
                    "shoal_node_transferred_bytes_total",
                    "Piece bytes received (upload) or sent (download, audit).",
                ),
                &["op"],
            )?,
            latency: HistogramVec::new(
                HistogramOpts::new(
                    "shoal_node_request_duration_seconds",
                    "Time from request start to its last message, by operation.",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0,
                ]),
                &["op"],
            )?,
            active_streams: IntGauge::new(
                "shoal_node_active_streams",
                "Piece-store requests in progress.",
            )?,
            expired: IntCounter::new(
                "shoal_node_expired_pieces_total",
                "Pieces removed by the expiry worker because their lease ended.",
            )?,
            used_bytes: IntGauge::new("shoal_node_used_bytes", "Bytes of stored pieces.")?,
            allocated_bytes: IntGauge::new(
                "shoal_node_allocated_bytes",
                "Bytes the operator allocated to the node.",
            )?,
            reserved_bytes: IntGauge::new(
                "shoal_node_reserved_bytes",
                "Bytes reserved by uploads in progress.",
            )?,
            free_bytes: IntGauge::new(
                "shoal_node_free_bytes",
                "Bytes a new upload may still reserve (allocated - used - reserved).",
            )?,
            pieces: IntGauge::new("shoal_node_pieces", "Stored pieces.")?,
            owners: IntGauge::new(
                "shoal_node_owners",
                "Owner keys storing at least one piece on this node.",
            )?,
            owner_bytes: IntGaugeVec::new(
                Opts::new(
                    "shoal_node_owner_used_bytes",
                    "Bytes (sizes plus the per-piece overhead) stored by each of the ten largest owners; label: the first 16 hex digits of the owner key.",
                ),
                &["owner"],
            )?,
            owner_pieces: IntGaugeVec::new(
                Opts::new(
                    "shoal_node_owner_pieces",
                    "Pieces stored by each of the ten largest owners (by bytes).",
                ),
                &["owner"],
            )?,
            start_time: Gauge::new(
                "shoal_node_start_time_seconds",
                "Unix time at which the node started.",
            )?,
            build_info: IntGaugeVec::new(
                Opts::new("shoal_node_build_info", "Always 1; labels carry the build."),
                &["version"],
            )?,
            db_stall: Gauge::new(
                "shoal_node_db_stall_seconds",
                "Seconds the oldest metadata-database call in flight has been running, once past 1 s (0: none stalled). Watch it: a DB call never takes seconds unless the disk or the database is stuck.",
            )?,
        };
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.failures.clone()))?;
        registry.register(Box::new(m.bytes.clone()))?;
        registry.register(Box::new(m.latency.clone()))?;
        registry.register(Box::new(m.active_streams.clone()))?;
        registry.register(Box::new(m.expired.clone()))?;
        registry.register(Box::new(m.used_bytes.clone()))?;
        registry.register(Box::new(m.allocated_bytes.clone()))?;
        registry.register(Box::new(m.reserved_bytes.clone()))?;
        registry.register(Box::new(m.free_bytes.clone()))?;
        registry.register(Box::new(m.pieces.clone()))?;
        registry.register(Box::new(m.owners.clone()))?;
        registry.register(Box::new(m.owner_bytes.clone()))?;
        registry.register(Box::new(m.owner_pieces.clone()))?;
        registry.register(Box::new(m.start_time.clone()))?;
        registry.register(Box::new(m.build_info.clone()))?;
        registry.register(Box::new(m.db_stall.clone()))?;
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        // Make every op appear from the start, so dashboards see zeros, not gaps.
        for op in OPS {
            m.requests.with_label_values(&[op]);
        }
        for op in ["upload", "download", "audit"] {
            m.bytes.with_label_values(&[op]);
        }
        Ok(m)
    }

    /// Copies the store's space figures into the gauges (before every scrape).
    pub fn set_space(&self, s: &Space) {
        let g = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.used_bytes.set(g(s.used));
        self.allocated_bytes.set(g(s.allocated));
        self.reserved_bytes.set(g(s.reserved));
        self.free_bytes.set(g(s.free));
        self.pieces.set(g(s.pieces));
    }

    /// Copies the largest owners and the owner count into the gauges (before every
    /// scrape); owners that left the top are dropped, so the series stay bounded.
    pub fn set_owners(&self, top: &[(PublicKey, Usage)], owners: usize) {
        let g = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.owners.set(g(owners as u64));
        self.owner_bytes.reset();
        self.owner_pieces.reset();
        for (owner, usage) in top.iter().take(TOP_OWNERS) {
            let label = owner_label(owner);
            self.owner_bytes
                .with_label_values(&[&label])
                .set(g(usage.bytes));
            self.owner_pieces
                .with_label_values(&[&label])
                .set(g(usage.pieces));
        }
    }

    /// Sets the stall gauge from the longest DB call in flight ([`crate::meta::MetaDb::stall`]).
    pub fn set_db_stall(&self, longest: Option<(std::time::Duration, &'static str)>) {
        let secs = match longest {
            Some((d, _)) if d >= DB_STALL_THRESHOLD => d.as_secs_f64(),
            _ => 0.0,
        };
        self.db_stall.set(secs);
    }

    pub fn bytes_total(&self, op: &str) -> u64 {
        self.bytes.with_label_values(&[op]).get()
    }

    pub fn requests_total(&self, op: &str) -> u64 {
        self.requests.with_label_values(&[op]).get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_names_are_prefixed_and_documented() {
        let r = Registry::new();
        let m = NodeMetrics::register(&r).unwrap();
        m.failures.with_label_values(&["upload", "no_space"]).inc();
        m.latency.with_label_values(&["upload"]).observe(0.1);
        let families = r.gather();
        assert!(families.len() >= 10);
        for f in families {
            assert!(f.name().starts_with("shoal_node_"), "{}", f.name());
            assert!(!f.help().is_empty(), "{}", f.name());
        }
        m.set_db_stall(Some((std::time::Duration::from_millis(999), "get")));
        assert_eq!(m.db_stall.get(), 0.0, "under a second is no stall");
        m.set_db_stall(Some((std::time::Duration::from_secs(3), "flush")));
        assert_eq!(m.db_stall.get(), 3.0);
        m.set_db_stall(None);
        assert_eq!(m.db_stall.get(), 0.0);
        // Registering twice in one registry is refused rather than silently shadowed.
        assert!(NodeMetrics::register(&r).is_err());
    }

    #[test]
    fn owner_series_stay_at_the_top_ten() {
        let r = Registry::new();
        let m = NodeMetrics::register(&r).unwrap();
        let owners: Vec<(PublicKey, Usage)> = (0..25u8)
            .map(|i| {
                let key = *shoal_proto::Identity::from_seed([i; 32]).public_key();
                (
                    key,
                    Usage {
                        bytes: 1000 - u64::from(i),
                        pieces: 1,
                    },
                )
            })
            .collect();
        m.set_owners(&owners, 25);
        let series = |name: &str| {
            r.gather()
                .into_iter()
                .find(|f| f.name() == name)
                .map_or(0, |f| f.get_metric().len())
        };
        assert_eq!(series("shoal_node_owner_used_bytes"), TOP_OWNERS);
        assert_eq!(m.owners.get(), 25);
        // A new top replaces the old series instead of adding to them.
        m.set_owners(&owners[20..], 25);
        assert_eq!(series("shoal_node_owner_used_bytes"), 5);
        assert_eq!(series("shoal_node_owner_pieces"), 5);
    }
}
