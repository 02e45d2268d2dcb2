//! Every Prometheus metric of the uplink, registered in one place.

use prometheus::{Gauge, IntCounter, IntCounterVec, Opts, Registry};

/// The uplink's metrics. `Metrics::new` registers them in its own registry, which
/// [`Metrics::registry`] exposes (the gateway will serve it).
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    pub bytes_uploaded: IntCounter,
    pub bytes_downloaded: IntCounter,
    /// Piece uploads by result: `ok`, `failed`, `cut` (too slow), `cancelled` (long tail).
    pub piece_uploads: IntCounterVec,
    /// Piece downloads by result: `ok`, `failed`, `corrupt`, `cancelled`.
    pub piece_downloads: IntCounterVec,
    /// Long-tail pieces whose receipt came after their segment was committed, by what the
    /// background reaper did: `deleted`, `delete_failed` (left to lease expiry).
    pub late_pieces: IntCounterVec,
    pub segments_uploaded: IntCounter,
    pub segments_downloaded: IntCounter,
    pub stripes_decoded: IntCounter,
    /// Catalog publishes (one per command, or per group commit).
    pub catalog_publishes: IntCounter,
    /// Bytes a publish sent: pieces of catalog blobs plus record copies.
    pub catalog_publish_bytes: IntCounter,
    /// Catalog deltas and snapshots merged from the network.
    pub catalog_blobs_pulled: IntCounter,
    /// How long the oldest catalog database call in flight has been running, once it
    /// is past a second (0 otherwise): a DB call that hangs shows while it hangs. Set
    /// from the catalog's watchdog when the metrics are read ([`Metrics::watch_db`]).
    pub db_stall_seconds: Gauge,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let vec = |name: &str, help: &str| -> Result<IntCounterVec, prometheus::Error> {
            let c = IntCounterVec::new(Opts::new(name, help), &["result"])?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        Ok(Self {
            bytes_uploaded: counter(
                "shoal_uplink_bytes_uploaded_total",
                "Plaintext bytes of objects stored",
            )?,
            bytes_downloaded: counter(
                "shoal_uplink_bytes_downloaded_total",
                "Plaintext bytes of objects read back",
            )?,
            piece_uploads: vec(
                "shoal_uplink_piece_uploads_total",
                "Piece uploads by result (ok, failed, cut, cancelled, replaced: started again on another node)",
            )?,
            piece_downloads: vec(
                "shoal_uplink_piece_downloads_total",
                "Piece downloads by result (ok, failed, corrupt, cancelled)",
            )?,
            late_pieces: vec(
                "shoal_uplink_late_pieces_total",
                "Long-tail pieces that completed after their segment was committed, by what \
                 the reaper did with them (deleted, delete_failed)",
            )?,
            segments_uploaded: counter(
                "shoal_uplink_segments_uploaded_total",
                "Segments committed with at least `success` verified receipts",
            )?,
            segments_downloaded: counter(
                "shoal_uplink_segments_downloaded_total",
                "Segments decoded and decrypted",
            )?,
            stripes_decoded: counter(
                "shoal_uplink_stripes_decoded_total",
                "Downloaded stripes that needed an erasure decode (the others came whole \
                 from the data pieces)",
            )?,
            catalog_publishes: counter(
                "shoal_uplink_catalog_publishes_total",
                "Publishes of catalog changes to the network",
            )?,
            catalog_publish_bytes: counter(
                "shoal_uplink_catalog_publish_bytes_total",
                "Bytes sent by catalog publishes (blob pieces and DHT record copies)",
            )?,
            catalog_blobs_pulled: counter(
                "shoal_uplink_catalog_blobs_pulled_total",
                "Catalog deltas and snapshots fetched and merged",
            )?,
            db_stall_seconds: {
                let g = Gauge::new(
                    "shoal_uplink_db_stall_seconds",
                    "Age of the oldest catalog database call still running, once past 1 s \
                     (0: no call is stalled)",
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            registry,
        })
    }

    /// Updates the gauges read from the catalog's database watchdog.
    pub fn watch_db(&self, watch: &crate::catalog::Watchdog) {
        self.db_stall_seconds.set(watch.stall().0.as_secs_f64());
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn metrics_register_with_shoal_names() {
        let m = super::Metrics::new().unwrap();
        m.piece_uploads.with_label_values(&["ok"]).inc();
        m.bytes_uploaded.inc_by(5);
        let names: Vec<String> = m
            .registry()
            .gather()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        assert!(names.iter().all(|n| n.starts_with("shoal_uplink_")));
        assert!(names.contains(&"shoal_uplink_piece_uploads_total".to_string()));
    }
}
