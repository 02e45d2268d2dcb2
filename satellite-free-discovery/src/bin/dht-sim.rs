//! `dht-sim`: drives the DHT core over an in-memory network with virtual time and prints
//! one summary line (last) in the format of issue 4. See `satellite_free_discovery::sim`
//! for the latency model and what a hop counts.

use std::time::Instant;

use clap::Parser;
use satellite_free_discovery::core::node::NodeConfig;
use satellite_free_discovery::sim::{SimConfig, run};

#[derive(Debug, Parser)]
#[command(about = "Simulate the Shoal DHT with virtual time")]
struct Args {
    /// Nodes in the network.
    #[arg(long, default_value_t = 10_000)]
    nodes: usize,
    /// Measured lookups (and as many record reads).
    #[arg(long, default_value_t = 2_000)]
    lookups: usize,
    /// Fraction of nodes replaced during the measured window.
    #[arg(long, default_value_t = 0.0)]
    churn: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Measured window, minutes of virtual time.
    #[arg(long, default_value_t = 60)]
    window_min: u64,
    /// Bucket refresh interval, minutes (0: never).
    #[arg(long, default_value_t = 60)]
    refresh_min: u64,
    /// Message loss probability.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// One-way latency: base ms plus spread ms per unit of distance.
    #[arg(long, default_value_t = 5.0)]
    latency_base_ms: f64,
    #[arg(long, default_value_t = 100.0)]
    latency_spread_ms: f64,
    /// Relative jitter added to each delay.
    #[arg(long, default_value_t = 0.1)]
    jitter: f64,
    #[arg(long, default_value_t = 20)]
    k: usize,
    #[arg(long, default_value_t = 3)]
    alpha: usize,
    /// Mutable records, and updates of each during the window.
    #[arg(long, default_value_t = 100)]
    records: usize,
    #[arg(long, default_value_t = 3)]
    updates: usize,
    /// Liveness pings of routing-table entries silent this long, minutes (0: never).
    #[arg(long, default_value_t = 60)]
    liveness_min: u64,
    /// Fraction of nodes that lie: answer lookups only with each other, serve stale
    /// records, refuse to store.
    #[arg(long, default_value_t = 0.0)]
    adversarial: f64,
    /// Disjoint paths of record reads and writes (S/Kademlia).
    #[arg(long, default_value_t = NodeConfig::default().record_paths)]
    record_paths: usize,
    /// Disjoint paths of node lookups.
    #[arg(long, default_value_t = NodeConfig::default().node_paths)]
    node_paths: usize,
    /// Nodes first named by one answer that count among a lookup's closest (0: no
    /// bound).
    #[arg(long, default_value_t = NodeConfig::default().per_source)]
    per_source: usize,
    /// Random joined nodes each joining node pings first (its bootstrap list); it joins
    /// once they answered (or 1 s later if some did).
    #[arg(long, default_value_t = 4)]
    bootstrap_peers: usize,
    /// Times an unanswered request is sent again before its hard timeout.
    #[arg(long, default_value_t = NodeConfig::default().retransmits)]
    retransmits: u32,
    /// A request unanswered this long has failed, ms.
    #[arg(long, default_value_t = 5_000)]
    hard_timeout_ms: u64,
    /// Build the initial tables from the global view instead of joining every node
    /// through the protocol (fast set-up for very large networks).
    #[arg(long)]
    direct_join: bool,
    /// Record keys whose closest nodes a node remembers from its last read or write of
    /// the key, and asks first next time (0: none).
    #[arg(long, default_value_t = NodeConfig::default().closest_cache)]
    closest_cache: usize,
}

fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    anyhow::ensure!(a.nodes >= 2, "--nodes must be at least 2");
    anyhow::ensure!(
        (0.0..=1.0).contains(&a.churn),
        "--churn must be within 0..=1"
    );
    anyhow::ensure!((0.0..1.0).contains(&a.loss), "--loss must be within 0..1");
    anyhow::ensure!(
        (0.0..1.0).contains(&a.adversarial),
        "--adversarial must be within 0..1"
    );
    anyhow::ensure!(
        a.record_paths >= 1 && a.node_paths >= 1,
        "--record-paths and --node-paths must be at least 1"
    );
    anyhow::ensure!(
        a.k >= 1 && a.alpha >= 1,
        "--k and --alpha must be at least 1"
    );
    let cfg = SimConfig {
        nodes: a.nodes,
        lookups: a.lookups,
        churn: a.churn,
        seed: a.seed,
        k: a.k,
        alpha: a.alpha,
        latency_base_ms: a.latency_base_ms,
        latency_spread_ms: a.latency_spread_ms,
        jitter: a.jitter,
        loss: a.loss,
        window_ms: a.window_min * 60_000,
        refresh_ms: a.refresh_min * 60_000,
        records: a.records,
        updates: a.updates,
        direct_join: a.direct_join,
        liveness_ms: a.liveness_min * 60_000,
        adversarial: a.adversarial,
        record_paths: a.record_paths,
        node_paths: a.node_paths,
        per_source: a.per_source,
        bootstrap_peers: a.bootstrap_peers,
        retransmits: a.retransmits,
        hard_timeout_ms: a.hard_timeout_ms,
        closest_cache: a.closest_cache,
    };
    let started = Instant::now();
    let r = run(cfg);
    println!(
        "messages={} virtual_s={} live_at_end={} hops_mean={:.2} closest_found_mean={:.2} record_reads={} wall_s={:.1} peak_rss_mib={}",
        r.messages,
        r.virtual_ms / 1000,
        r.final_live,
        r.hops_mean,
        r.closest_found_mean,
        r.record_reads,
        started.elapsed().as_secs_f64(),
        peak_rss_mib().map_or("?".into(), |m| m.to_string()),
    );
    let [find, get, put, ping] = r.requests_by_kind;
    println!(
        "requests: find={find} get={get} put={put} ping={ping} during_setup={}",
        r.setup_requests
    );
    println!(
        "at end: open_operations={} pending_requests={} queued_events={}",
        r.open_operations, r.pending_requests, r.queued_events
    );
    if r.adversarial > 0.0 {
        println!(
            "liars: {} of {} routing-table entries of honest nodes ({:.3})",
            r.liar_table_entries,
            r.honest_table_entries,
            r.liar_table_entries as f64 / r.honest_table_entries.max(1) as f64
        );
    }
    println!("{}", r.line());
    Ok(())
}
