//! The metadata soak (issue 22, "Done when", first bullet): a gateway under concurrent
//! S3 writes, deletes and listings from 16 clients, while a second config dir of the
//! same grant publishes large deltas with `uplink cp -r` and a third process runs
//! `uplink ls` / `uplink cp` in a loop on the *gateway's* config dir. Every object
//! becomes visible to every process, no S3 call stalls more than 5 s, the gateway's
//! `shoal_uplink_db_stall_seconds` never shows a stalled DB call, and SIGTERM ends the
//! gateway and a CLI process within 30 s while they work.
//!
//! Bounded for CI (about a minute of load, deltas of 300 objects). By hand, longer and
//! at the issue's size:
//!
//!     SHOAL_SOAK_MINUTES=30 SHOAL_SOAK_OBJECTS=2000 cargo test -p shoal-tests --test soak -- --nocapture
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use shoal_test_kit::{bounded, repo_root};
use shoal_tests::cli_net::{ACCESS_KEY, CliNet, GatewayProc, SECRET_KEY, terminate};

const NODES: usize = 8;
const CONFIG: &str = "difficulty = 0\nlocal_network = true\nscheme = \"2/3/4/6\"\ncatalog_scheme = \"2/3/4/6\"\nsnapshot_every = 16\n";
const CLIENTS: usize = 16;
/// Longest an S3 call or a DB call may take.
const STALL_LIMIT: Duration = Duration::from_secs(5);
/// Longest a process may take to exit after SIGTERM.
const EXIT_LIMIT: Duration = Duration::from_secs(30);

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The S3 clients: `soak_clients.py` for `seconds`; its JSON report.
fn s3_clients(gw: &GatewayProc, seconds: u64, tolerate: bool) -> tokio::process::Command {
    let mut c = tokio::process::Command::new("python3");
    c.arg("tests/s3/soak_clients.py")
        .args([
            &gw.endpoint(),
            ACCESS_KEY,
            SECRET_KEY,
            "soak",
            &CLIENTS.to_string(),
            &seconds.to_string(),
        ])
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    if tolerate {
        c.arg("--tolerate-errors");
    }
    c
}

/// `n` small files (inline in the catalog) under `root`.
fn write_files(root: &Path, n: u64, round: u64) {
    std::fs::create_dir_all(root).unwrap();
    for i in 0..n {
        std::fs::write(
            root.join(format!("f{i:05}")),
            format!("round {round} file {i}"),
        )
        .unwrap();
    }
}

/// The keys `uplink ls -r` printed (the last column of each object line).
fn ls_keys(out: &str) -> BTreeSet<String> {
    out.lines()
        .filter_map(|l| l.split_whitespace().last())
        .map(|k| k.to_string())
        .collect()
}

/// Scrapes the gateway's stall gauge.
async fn db_stall_seconds(gw: &GatewayProc) -> f64 {
    let url = format!("{}{}", gw.endpoint(), uplink_gateway::METRICS_PATH);
    let out = tokio::process::Command::new("python3")
        .args([
            "-c",
            "import sys,urllib.request;print(urllib.request.urlopen(sys.argv[1],timeout=10).read().decode())",
            &url,
        ])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("shoal_uplink_db_stall_seconds "))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("no shoal_uplink_db_stall_seconds in the metrics:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateway_cli_and_second_writer_share_the_catalog_under_load() {
    let minutes = env_u64("SHOAL_SOAK_MINUTES", 0);
    let load_secs = if minutes == 0 { 45 } else { minutes * 60 };
    let objects = env_u64("SHOAL_SOAK_OBJECTS", 300);
    let budget = Duration::from_secs(load_secs + 600);
    bounded(budget, async {
        let net = CliNet::start(NODES, CONFIG).await.unwrap();
        let (gw_dir, _) = net.config_dir("gateway").await.unwrap();
        let (w2_dir, _) = net.config_dir("writer2").await.unwrap();
        net.ok(&gw_dir, &["mb", "shoal://soak"]).await.unwrap();
        let gw = GatewayProc::start(&net, &gw_dir).await.unwrap();

        // 1. Load: S3 clients, the second writer's deltas, the CLI loop on the gateway's
        // dir, and a scrape of the stall gauge, all at once.
        let started = Instant::now();
        let clients = s3_clients(&gw, load_secs, false).spawn().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let net = Arc::new(net);
        let writer2 = {
            let (net, dir, stop) = (net.clone(), w2_dir.clone(), stop.clone());
            tokio::spawn(async move {
                let mut rounds = Vec::new();
                let mut round = 0u64;
                // At least one delta; more while the load runs.
                while round == 0 || !stop.load(Ordering::SeqCst) {
                    let src = net.work.path().join(format!("bulk-{round}"));
                    write_files(&src, objects, round);
                    let t = Instant::now();
                    net.ok(
                        &dir,
                        &[
                            "cp",
                            "-r",
                            "--no-progress",
                            src.to_str().unwrap(),
                            &format!("shoal://soak/bulk-{round}"),
                        ],
                    )
                    .await
                    .unwrap();
                    rounds.push((round, t.elapsed()));
                    round += 1;
                }
                rounds
            })
        };
        let cli_loop = {
            let (net, dir, stop) = (net.clone(), gw_dir.clone(), stop.clone());
            tokio::spawn(async move {
                let mut runs = Vec::new();
                let dest = net.work.path().join("down");
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let t = Instant::now();
                    if i.is_multiple_of(2) {
                        net.ok(&dir, &["ls", "-r", "shoal://soak"]).await.unwrap();
                    } else {
                        // An object the gateway's clients keep writing next to.
                        let src = net.work.path().join("one");
                        std::fs::write(&src, format!("cli {i}")).unwrap();
                        net.ok(
                            &dir,
                            &["cp", src.to_str().unwrap(), &format!("shoal://soak/cli/{i}")],
                        )
                        .await
                        .unwrap();
                        net.ok(
                            &dir,
                            &["cp", &format!("shoal://soak/cli/{i}"), dest.to_str().unwrap()],
                        )
                        .await
                        .unwrap();
                        assert_eq!(std::fs::read_to_string(&dest).unwrap(), format!("cli {i}"));
                    }
                    runs.push(t.elapsed());
                    i += 1;
                }
                runs
            })
        };
        let mut worst_stall = 0f64;
        while started.elapsed() < Duration::from_secs(load_secs) {
            worst_stall = worst_stall.max(db_stall_seconds(&gw).await);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let report = clients.wait_with_output().await.unwrap();
        stop.store(true, Ordering::SeqCst);
        let rounds = writer2.await.unwrap();
        let cli_runs = cli_loop.await.unwrap();
        let report_text = String::from_utf8_lossy(&report.stdout).into_owned();
        assert!(report.status.success(), "S3 clients failed: {report_text}");
        let report: serde_json::Value = serde_json::from_str(report_text.trim()).unwrap();
        let slowest = report["slowest_s"].as_f64().unwrap();
        let cli_worst = cli_runs.iter().max().copied().unwrap_or_default();
        println!(
            "soak: {load_secs} s of load; S3 puts {} deletes {} lists {}, slowest S3 call {slowest:.2} s ({}); \
             writer2 rounds of {objects}: {rounds:?}; CLI commands on the gateway's dir: {}, slowest {cli_worst:?}; \
             worst DB stall gauge {worst_stall}",
            report["puts"], report["deletes"], report["lists"], report["slowest"], cli_runs.len()
        );
        assert!(
            slowest < STALL_LIMIT.as_secs_f64(),
            "an S3 call took {slowest:.2} s: {}",
            report["slowest"]
        );
        assert!(
            worst_stall < STALL_LIMIT.as_secs_f64(),
            "a catalog DB call of the gateway stalled {worst_stall} s"
        );
        assert!(!cli_runs.is_empty(), "the CLI loop ran no command");

        // 2. Every object is visible to every process.
        let live: BTreeSet<String> = report["live"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect();
        let bulk: BTreeSet<String> = rounds
            .iter()
            .flat_map(|(r, _)| (0..objects).map(move |i| format!("bulk-{r}/f{i:05}")))
            .collect();
        // The second writer sees what the S3 clients left, exactly.
        let w2 = ls_keys(&net.ok(&w2_dir, &["ls", "-r", "shoal://soak/s3/"]).await.unwrap());
        let want_s3: BTreeSet<String> = live.iter().map(|k| k.trim_start_matches("s3/").to_string()).collect();
        let w2_s3: BTreeSet<String> = w2.iter().map(|k| k.trim_start_matches("s3/").to_string()).collect();
        assert_eq!(w2_s3, want_s3, "the second writer's view of the S3 objects");
        // The gateway's dir (a CLI on it) and the gateway itself see every bulk object.
        let gw_keys = ls_keys(&net.ok(&gw_dir, &["ls", "-r", "shoal://soak/"]).await.unwrap());
        let missing: Vec<_> = bulk
            .iter()
            .filter(|k| !gw_keys.iter().any(|g| g.ends_with(k.as_str())))
            .take(3)
            .collect();
        assert!(missing.is_empty(), "the gateway's dir misses {missing:?}");
        let check = tokio::process::Command::new("python3")
            .args([
                "-c",
                "import sys,boto3\nfrom botocore.config import Config\n\
s3=boto3.client('s3',endpoint_url=sys.argv[1],aws_access_key_id=sys.argv[2],aws_secret_access_key=sys.argv[3],region_name='us-east-1',config=Config(s3={'addressing_style':'path'}))\n\
n=0\nfor p in s3.get_paginator('list_objects_v2').paginate(Bucket='soak',Prefix='bulk-'):\n  n+=len(p.get('Contents',[]))\nprint(n)",
                &gw.endpoint(),
                ACCESS_KEY,
                SECRET_KEY,
            ])
            .output()
            .await
            .unwrap();
        let seen: usize = String::from_utf8_lossy(&check.stdout).trim().parse().unwrap_or(0);
        assert_eq!(seen, bulk.len(), "the gateway lists every bulk object over S3");

        // 3. SIGTERM while they work: the gateway under S3 load, and a CLI `cp -r`
        // publishing on the gateway's dir; both exit within 30 s.
        let burst = s3_clients(&gw, 60, true).spawn().unwrap();
        let src = net.work.path().join("last");
        write_files(&src, objects, 999);
        let mut cli = net
            .command(
                &gw_dir,
                &["cp", "-r", "--no-progress", src.to_str().unwrap(), "shoal://soak/last"],
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let cli_pid = cli.id();
        let cli_sent = Instant::now();
        if let Some(pid) = cli_pid {
            terminate(pid).unwrap();
        }
        let (gw_status, gw_took) = gw.stop_within(EXIT_LIMIT).await.unwrap();
        tokio::time::timeout(EXIT_LIMIT, cli.wait())
            .await
            .expect("the CLI did not exit within 30 s of SIGTERM")
            .unwrap();
        let cli_took = cli_sent.elapsed();
        drop(burst);
        println!("soak: SIGTERM: gateway exited {gw_status} after {gw_took:?}, CLI after {cli_took:?}");
        assert!(cli_took < EXIT_LIMIT);
        assert!(gw_took < EXIT_LIMIT);
        // The dir works afterwards.
        net.ok(&gw_dir, &["ls", "shoal://soak"]).await.unwrap();
    })
    .await;
}
