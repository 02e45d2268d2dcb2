//! Every metric of the DHT, registered in one place. Names start with `shoal_dht_`.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// The DHT's metrics. Created with the DHT; [`Metrics::register`] adds them to the host's
/// registry (the storage node's `/metrics`).
#[derive(Debug, Clone)]
pub struct Metrics {
    pub table_size: IntGauge,
    pub records_held: IntGauge,
    pub members: IntGauge,
    pub lookups: IntCounterVec,
    pub lookup_failures: IntCounter,
    pub lookup_hops: Histogram,
    pub requests_failed: IntCounter,
    pub peers_refused: IntCounterVec,
    pub dialbacks_failed: IntCounter,
    pub record_checks: IntCounterVec,
    pub records_restored: IntCounterVec,
    pub persist_errors: IntCounter,
    pub direct_puts: IntCounterVec,
    pub direct_reads: IntCounterVec,
}

impl Metrics {
    pub(crate) fn new() -> Result<Self, prometheus::Error> {
        Ok(Self {
            table_size: IntGauge::new("shoal_dht_table_size", "Nodes in the routing table")?,
            records_held: IntGauge::new(
                "shoal_dht_records_held",
                "Mutable records this node stores for the network",
            )?,
            members: IntGauge::new("shoal_dht_members", "Nodes known to the membership sampler")?,
            lookups: IntCounterVec::new(
                Opts::new(
                    "shoal_dht_lookups_total",
                    "Iterative lookups started, by kind",
                ),
                &["kind"],
            )?,
            lookup_failures: IntCounter::new(
                "shoal_dht_lookup_failures_total",
                "Lookups that ended without any node answering",
            )?,
            lookup_hops: Histogram::with_opts(
                HistogramOpts::new(
                    "shoal_dht_lookup_hops",
                    "Sequential round trips on the longest path to a lookup's results",
                )
                .buckets(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]),
            )?,
            requests_failed: IntCounter::new(
                "shoal_dht_requests_failed_total",
                "Outgoing DHT requests that failed or timed out",
            )?,
            peers_refused: IntCounterVec::new(
                Opts::new(
                    "shoal_dht_peers_refused_total",
                    "Peers kept out of the routing table, by reason",
                ),
                &["reason"],
            )?,
            dialbacks_failed: IntCounter::new(
                "shoal_dht_dialbacks_failed_total",
                "Claimed addresses that did not answer when dialled back",
            )?,
            record_checks: IntCounterVec::new(
                Opts::new(
                    "shoal_dht_record_checks_total",
                    "Node records received, by outcome: verified (signature and work \
                     checked now), cached (the same bytes were checked before), rejected",
                ),
                &["result"],
            )?,
            records_restored: IntCounterVec::new(
                Opts::new(
                    "shoal_dht_records_restored_total",
                    "Records read back from the node's store at start, by outcome: \
                     restored, expired, refused (store bounds or an older seq), invalid \
                     (bad encoding or signature)",
                ),
                &["result"],
            )?,
            persist_errors: IntCounter::new(
                "shoal_dht_persist_errors_total",
                "Reads and writes of the node's store of records and known peers that \
                 failed or took too long",
            )?,
            direct_puts: IntCounterVec::new(
                Opts::new(
                    "shoal_dht_direct_puts_total",
                    "Record writes sent straight to the closest nodes cached for the key \
                     (direct), and those of them that fell back to a lookup (fallback)",
                ),
                &["result"],
            )?,
            direct_reads: IntCounterVec::new(
                Opts::new(
                    "shoal_dht_direct_reads_total",
                    "Record reads sent straight to the closest nodes known for the key, \
                     one round (direct), and those of them that too few answered (fallback)",
                ),
                &["result"],
            )?,
        })
    }

    /// Registers every metric in `registry`.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.table_size.clone()))?;
        registry.register(Box::new(self.records_held.clone()))?;
        registry.register(Box::new(self.members.clone()))?;
        registry.register(Box::new(self.lookups.clone()))?;
        registry.register(Box::new(self.lookup_failures.clone()))?;
        registry.register(Box::new(self.lookup_hops.clone()))?;
        registry.register(Box::new(self.requests_failed.clone()))?;
        registry.register(Box::new(self.peers_refused.clone()))?;
        registry.register(Box::new(self.dialbacks_failed.clone()))?;
        registry.register(Box::new(self.record_checks.clone()))?;
        registry.register(Box::new(self.records_restored.clone()))?;
        registry.register(Box::new(self.persist_errors.clone()))?;
        registry.register(Box::new(self.direct_puts.clone()))?;
        registry.register(Box::new(self.direct_reads.clone()))?;
        Ok(())
    }
}
