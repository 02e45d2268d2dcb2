//! The hostile-client harness against live nodes, briefly (`shoal-fuzz` runs it long):
//! every kind of hostile traffic for a few rounds, after each of which the nodes still
//! store, serve and answer the DHT, and hold no reservation.

use std::time::Duration;

use shoal_tests::fuzz::{Options, run};
use shoal_tests::hostile::Live;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_nodes_survive_hostile_clients() {
    let mut opts = Options::new(Duration::from_secs(12), rand::random());
    opts.only = Some("live.".into());
    opts.slice = Duration::from_millis(200);
    let seed = opts.seed;
    let report = tokio::time::timeout(Duration::from_secs(180), run(opts, Vec::new()))
        .await
        .expect("the harness finishes")
        .expect("the harness runs");
    for f in &report.failures {
        eprintln!("FAILED {f}");
    }
    assert!(
        report.failures.is_empty(),
        "seed {seed}: {} failures",
        report.failures.len()
    );
    for live in Live::ALL {
        let rounds = report.rounds.get(live.name()).copied().unwrap_or(0);
        assert!(rounds >= 1, "{} ran no round (seed {seed})", live.name());
    }
}
