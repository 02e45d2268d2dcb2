//! The chaos run on a [`NetnsNetwork`]: CLI workers and an S3 worker (through `uplink
//! gateway`) write, read, list and delete without pause while the [`schedule`] kills,
//! restarts, cuts and partitions nodes; then `uplink check` of everything and a
//! byte-for-byte comparison of every acknowledged object.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use shoal_test_kit::{Xorshift, test_data};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::s3::S3;
use super::schedule::{self, Event, Fault, Params};
use crate::netns::{Member, NetnsNetwork, NetnsOptions, UplinkRunner, in_namespace};
use crate::process_net::Binaries;

/// The data scheme: `total - repair` = 8 nodes may be down at once.
pub const SCHEME: &str = "4/8/12/16";
/// Most nodes down at once: the scheme's `total - repair` (16 - 8), which bounds the
/// holders of any segment that are down.
pub const MAX_DOWN: usize = 8;
/// Deadline of one client operation.
const OP_LIMIT: Duration = Duration::from_secs(120);
/// Object sizes the workers pick from (inline, one small segment, larger ones).
const SIZES: [usize; 4] = [1_000, 20_000, 300_000, 2_000_000];
const GATEWAY_PORT: u16 = 7780;
const ACCESS_KEY: &str = "SHOALCHAOSKEY";
const SECRET_KEY: &str = "shoal-chaos-secret-key-0123456789";

/// What the run is.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    pub minutes: f64,
    pub seed: u64,
    pub nodes: usize,
    pub seeds: usize,
    pub cli_workers: usize,
}

/// One worker's account.
#[derive(Debug, Default)]
pub struct Ledger {
    pub name: String,
    pub ops: u64,
    /// Failed operations by reason.
    pub failed: BTreeMap<String, u64>,
    /// Objects acknowledged and not deleted: key → (length, data seed).
    pub acked: BTreeMap<String, (usize, u64)>,
    /// Keys whose state is unknown (a failed write or delete).
    pub uncertain: BTreeSet<String>,
    /// Keys acknowledged as deleted.
    pub deleted: BTreeSet<String>,
    /// Reads that returned other bytes than were written.
    pub corrupt: u64,
    pub unavailable: Duration,
    failing_since: Option<Instant>,
}

impl Ledger {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            ..Self::default()
        }
    }

    fn ok(&mut self) {
        self.ops += 1;
        if let Some(t) = self.failing_since.take() {
            self.unavailable += t.elapsed();
        }
    }

    fn fail(&mut self, what: &str, reason: &str) {
        self.ops += 1;
        self.failing_since.get_or_insert_with(Instant::now);
        let line = reason
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("no message");
        // Long enough for the whole cause chain of a CLI error or an S3 error body.
        let short: String = line.chars().take(600).collect();
        *self.failed.entry(format!("{what}: {short}")).or_default() += 1;
    }

    fn close(&mut self) {
        if let Some(t) = self.failing_since.take() {
            self.unavailable += t.elapsed();
        }
    }

    pub fn failures(&self) -> u64 {
        self.failed.values().sum()
    }
}

/// What the run found.
#[derive(Debug)]
pub struct Report {
    pub ledgers: Vec<Ledger>,
    pub events: Vec<Event>,
    pub lost: Vec<String>,
    pub resurrected: Vec<String>,
    pub check: String,
    pub seconds: f64,
}

impl Report {
    /// The summary line.
    pub fn summary(&self, o: &ChaosOptions) -> String {
        let ops: u64 = self.ledgers.iter().map(|l| l.ops).sum();
        let failed: u64 = self.ledgers.iter().map(Ledger::failures).sum();
        let acked: usize = self.ledgers.iter().map(|l| l.acked.len()).sum();
        let corrupt: u64 = self.ledgers.iter().map(|l| l.corrupt).sum();
        let count = |f: fn(&Fault) -> bool| self.events.iter().filter(|e| f(&e.fault)).count();
        let unavailable = self
            .ledgers
            .iter()
            .map(|l| format!("{} {:.1}s", l.name, l.unavailable.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "chaos seed={} minutes={} nodes={} scheme={SCHEME}: {ops} operations, {failed} failed, {acked} objects acknowledged, {} lost, {corrupt} corrupt reads, {} resurrected; faults: {} kill -9, {} restarts, {} cuts, {} partitions; unavailability: {unavailable}; check: {}; {:.0} s",
            o.seed,
            o.minutes,
            o.nodes,
            self.lost.len(),
            self.resurrected.len(),
            count(|f| matches!(f, Fault::Kill(_))),
            count(|f| matches!(f, Fault::Restart(_))),
            count(|f| matches!(f, Fault::Cut(_))),
            count(|f| matches!(f, Fault::Partition(_))),
            self.check,
            self.seconds,
        )
    }
}

/// A CLI worker: `cp` up, `cp` down (compared), `ls`, `rm`, in bucket `bucket`.
async fn cli_worker(
    runner: UplinkRunner,
    dir: PathBuf,
    scratch: PathBuf,
    bucket: String,
    seed: u64,
    until: Instant,
) -> Ledger {
    let mut l = Ledger::new(&bucket);
    let mut rng = Xorshift::new(seed);
    let mut n = 0u64;
    while Instant::now() < until {
        let roll = rng.next_u64() % 100;
        let pick_acked = |rng: &mut Xorshift, l: &Ledger| {
            let keys: Vec<&String> = l.acked.keys().collect();
            (!keys.is_empty()).then(|| keys[(rng.next_u64() % keys.len() as u64) as usize].clone())
        };
        if roll < 40 || l.acked.is_empty() {
            n += 1;
            let key = format!("k{n:05}");
            let len = SIZES[(rng.next_u64() % SIZES.len() as u64) as usize];
            let data_seed = seed ^ (n << 20);
            let file = scratch.join("up");
            if std::fs::write(&file, test_data(len, data_seed)).is_err() {
                l.fail("put", "cannot write the local file");
                continue;
            }
            let target = format!("shoal://{bucket}/{key}");
            match runner
                .run(&dir, &["cp", &file.to_string_lossy(), &target], OP_LIMIT)
                .await
            {
                Ok(r) if r.success() => {
                    l.ok();
                    l.acked.insert(key, (len, data_seed));
                }
                Ok(r) => {
                    l.fail("put", &r.stderr);
                    l.uncertain.insert(key);
                }
                Err(e) => {
                    l.fail("put", &format!("{e:#}"));
                    l.uncertain.insert(key);
                }
            }
        } else if roll < 65 {
            let Some(key) = pick_acked(&mut rng, &l) else {
                continue;
            };
            let back = scratch.join("down");
            let _ = std::fs::remove_file(&back);
            let src = format!("shoal://{bucket}/{key}");
            match runner
                .run(&dir, &["cp", &src, &back.to_string_lossy()], OP_LIMIT)
                .await
            {
                Ok(r) if r.success() => {
                    l.ok();
                    let (len, s) = l.acked[&key];
                    if std::fs::read(&back).ok() != Some(test_data(len, s)) {
                        l.corrupt += 1;
                    }
                }
                Ok(r) => l.fail("get", &r.stderr),
                Err(e) => l.fail("get", &format!("{e:#}")),
            }
        } else if roll < 80 {
            match runner
                .run(&dir, &["ls", &format!("shoal://{bucket}/")], OP_LIMIT)
                .await
            {
                Ok(r) if r.success() => {
                    let missing = l.acked.keys().find(|k| !r.stdout.contains(k.as_str()));
                    match missing {
                        None => l.ok(),
                        Some(k) => {
                            let k = k.clone();
                            l.fail("list", &format!("acknowledged {k} not listed"));
                        }
                    }
                }
                Ok(r) => l.fail("list", &r.stderr),
                Err(e) => l.fail("list", &format!("{e:#}")),
            }
        } else {
            let Some(key) = pick_acked(&mut rng, &l) else {
                continue;
            };
            let target = format!("shoal://{bucket}/{key}");
            let r = runner.run(&dir, &["rm", &target], OP_LIMIT).await;
            l.acked.remove(&key);
            match r {
                Ok(r) if r.success() => {
                    l.ok();
                    l.deleted.insert(key);
                }
                Ok(r) => {
                    l.fail("delete", &r.stderr);
                    l.uncertain.insert(key);
                }
                Err(e) => {
                    l.fail("delete", &format!("{e:#}"));
                    l.uncertain.insert(key);
                }
            }
        }
    }
    l.close();
    l
}

/// The S3 worker: PUT, GET (compared), LIST (read your writes), DELETE in `bucket`.
async fn s3_worker(s3: S3, bucket: String, seed: u64, until: Instant) -> Ledger {
    let mut l = Ledger::new("gateway");
    let mut rng = Xorshift::new(seed);
    let mut n = 0u64;
    let path = |key: &str| format!("/{bucket}/{key}");
    while Instant::now() < until {
        let roll = rng.next_u64() % 100;
        let keys: Vec<String> = l.acked.keys().cloned().collect();
        let acked =
            (!keys.is_empty()).then(|| keys[(rng.next_u64() % keys.len() as u64) as usize].clone());
        match (roll, acked) {
            (0..40, _) | (_, None) => {
                n += 1;
                let key = format!("g{n:05}");
                let len = SIZES[(rng.next_u64() % 3) as usize];
                let data_seed = seed ^ (n << 20);
                match s3
                    .request("PUT", &path(&key), &[], test_data(len, data_seed))
                    .await
                {
                    Ok(a) if a.status == 200 => {
                        l.ok();
                        l.acked.insert(key, (len, data_seed));
                    }
                    Ok(a) => {
                        l.fail(
                            "put",
                            &format!("{} {}", a.status, String::from_utf8_lossy(&a.body)),
                        );
                        l.uncertain.insert(key);
                    }
                    Err(e) => {
                        l.fail("put", &format!("{e:#}"));
                        l.uncertain.insert(key);
                    }
                }
            }
            (40..65, Some(key)) => match s3.request("GET", &path(&key), &[], Vec::new()).await {
                Ok(a) if a.status == 200 => {
                    l.ok();
                    let (len, s) = l.acked[&key];
                    if a.body.as_ref() != test_data(len, s).as_slice() {
                        l.corrupt += 1;
                    }
                }
                Ok(a) => l.fail(
                    "get",
                    &format!("{} {}", a.status, String::from_utf8_lossy(&a.body)),
                ),
                Err(e) => l.fail("get", &format!("{e:#}")),
            },
            (65..80, Some(_)) => {
                let q = [("list-type".to_owned(), "2".to_owned())];
                match s3
                    .request("GET", &format!("/{bucket}"), &q, Vec::new())
                    .await
                {
                    Ok(a) if a.status == 200 => {
                        let body = String::from_utf8_lossy(&a.body);
                        // The first page (1000 keys) holds every key of a short run.
                        let missing = l
                            .acked
                            .keys()
                            .take(900)
                            .find(|k| !body.contains(&format!("<Key>{k}</Key>")));
                        match missing {
                            None => l.ok(),
                            Some(k) => {
                                let k = k.clone();
                                l.fail("list", &format!("acknowledged {k} not listed"));
                            }
                        }
                    }
                    Ok(a) => l.fail("list", &format!("{}", a.status)),
                    Err(e) => l.fail("list", &format!("{e:#}")),
                }
            }
            (_, Some(key)) => {
                let r = s3.request("DELETE", &path(&key), &[], Vec::new()).await;
                l.acked.remove(&key);
                match r {
                    Ok(a) if a.status == 204 || a.status == 200 => {
                        l.ok();
                        l.deleted.insert(key);
                    }
                    Ok(a) => {
                        l.fail("delete", &format!("{}", a.status));
                        l.uncertain.insert(key);
                    }
                    Err(e) => {
                        l.fail("delete", &format!("{e:#}"));
                        l.uncertain.insert(key);
                    }
                }
            }
        }
    }
    l.close();
    l
}

/// Applies one fault to the network.
fn apply(net: &mut NetnsNetwork, f: &Fault) -> anyhow::Result<()> {
    let members = |g: &[usize]| g.iter().map(|&i| Member::Node(i)).collect::<Vec<_>>();
    match f {
        Fault::Kill(i) => net.kill(*i),
        Fault::Restart(i) => net.restart(*i),
        Fault::Cut(i) => net.cut(Member::Node(*i)),
        Fault::Reconnect(i) => net.reconnect(Member::Node(*i)),
        Fault::Partition(g) => net.split(&[members(g)]),
        Fault::Heal(g) => net.merge(&members(g)),
    }
}

/// Starts `uplink gateway` with `runner` (its client namespace); returns it once it
/// listens.
async fn start_gateway(
    runner: &UplinkRunner,
    dir: &Path,
    listen: std::net::SocketAddr,
) -> anyhow::Result<tokio::process::Child> {
    let mut child = runner
        .command(
            dir,
            &[
                "gateway",
                "--listen",
                &listen.to_string(),
                "--access-key",
                ACCESS_KEY,
                "--secret-key",
                SECRET_KEY,
            ],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let mut lines = BufReader::new(stdout).lines();
    tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await? {
            if line.contains("on http://") {
                return Ok(());
            }
        }
        bail!("the gateway exited before saying where it listens")
    })
    .await
    .context("the gateway did not start within 120 s")??;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(child)
}

/// Runs the whole chaos run; fails only when the harness cannot (objects lost are in
/// the report).
pub async fn run(bins: Binaries, o: ChaosOptions) -> anyhow::Result<Report> {
    let started = Instant::now();
    let options = NetnsOptions {
        nodes: o.nodes,
        seeds: o.seeds,
        // Each client is a machine of its own: CLI worker `w` in client namespace `w`,
        // the gateway (and the S3 worker talking to it) in the last one. Nodes budget
        // their DHT requests per source address (50/s, bursts of 200): three busy
        // clients behind one address exceed it (see BENCHMARKS.md, "Chaos").
        clients: o.cli_workers + 1,
        uplink_config: format!("scheme = \"{SCHEME}\"\npiece_timeout_secs = 10\n"),
        ..NetnsOptions::default()
    };
    let net = tokio::task::spawn_blocking(move || NetnsNetwork::start(bins, options)).await??;
    eprintln!(
        "chaos: {} nodes started in {:.0} s",
        o.nodes,
        started.elapsed().as_secs_f64()
    );
    net.wait_seen(0, o.nodes, Duration::from_secs(300)).await?;
    eprintln!("chaos: the DHT holds every node");
    let mut dirs = Vec::new();
    for w in 0..o.cli_workers {
        let dir = net.import(w, &format!("cli{w}")).await?;
        net.uplink_ok(w, &dir, &["mb", &format!("shoal://cli{w}")], OP_LIMIT)
            .await?;
        dirs.push(dir);
    }
    let gw_client = o.cli_workers;
    let gw_dir = net.import(gw_client, "gateway").await?;
    let listen = std::net::SocketAddr::new(net.client(gw_client).ip.into(), GATEWAY_PORT);
    let mut gateway = start_gateway(&net.runner(gw_client)?, &gw_dir, listen).await?;
    let s3 = S3 {
        addr: listen,
        access_key: ACCESS_KEY.into(),
        secret_key: SECRET_KEY.into(),
        limit: OP_LIMIT,
    };
    let client_ns = net.client(gw_client).ns.clone();
    {
        let s3 = s3.clone();
        in_namespace(&client_ns, OP_LIMIT, move || async move {
            let a = s3.request("PUT", "/s3gw", &[], Vec::new()).await?;
            if a.status != 200 {
                bail!(
                    "CreateBucket answered {}: {}",
                    a.status,
                    String::from_utf8_lossy(&a.body)
                );
            }
            Ok(())
        })
        .await?;
    }

    let duration = Duration::from_secs_f64(o.minutes * 60.0);
    let max_down = MAX_DOWN;
    let events = schedule::schedule(
        o.seed,
        &Params {
            nodes: o.nodes,
            max_down,
            duration,
            gap: (Duration::from_secs(3), Duration::from_secs(12)),
        },
    );
    eprintln!(
        "chaos: {} fault events over {:.0} s, at most {max_down} nodes down at once",
        events.len(),
        duration.as_secs_f64()
    );
    let t0 = Instant::now();
    let until = t0 + duration;
    let mut workers = Vec::new();
    for (w, dir) in dirs.iter().enumerate() {
        let scratch = net.scratch(&format!("cli{w}"))?;
        workers.push(tokio::spawn(cli_worker(
            net.runner(w)?,
            dir.clone(),
            scratch,
            format!("cli{w}"),
            o.seed ^ ((w as u64 + 1) << 40),
            until,
        )));
    }
    let gw = {
        let (s3, ns, seed) = (s3.clone(), client_ns.clone(), o.seed ^ (0xA5A5 << 32));
        tokio::spawn(async move {
            in_namespace(&ns, duration + OP_LIMIT * 2, move || async move {
                Ok(s3_worker(s3, "s3gw".into(), seed, until).await)
            })
            .await
        })
    };
    // The faults, on this task; the network is touched by nobody else meanwhile.
    let net = Arc::new(Mutex::new(net));
    let faults = {
        let net = net.clone();
        let events = events.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            for e in &events {
                let wait = (t0 + e.at).saturating_duration_since(Instant::now());
                std::thread::sleep(wait);
                let mut net = net.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                apply(&mut net, &e.fault)
                    .with_context(|| format!("fault {:?} at {:?}", e.fault, e.at))?;
                eprintln!("chaos: {:>6.1} s {:?}", t0.elapsed().as_secs_f64(), e.fault);
            }
            Ok(())
        })
    };
    let mut ledgers = Vec::new();
    for w in workers {
        ledgers.push(w.await?);
    }
    ledgers.push(gw.await??);
    faults.await??;
    let _ = gateway.kill().await;
    let net = Arc::try_unwrap(net)
        .map_err(|_| anyhow::anyhow!("the network is still shared"))?
        .into_inner()
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    eprintln!("chaos: faults over; every node back; checking");
    net.wait_seen(0, o.nodes, Duration::from_secs(300)).await?;

    // `uplink check` of everything, from a writer that has pulled every other's changes.
    let reader = dirs.first().cloned().unwrap_or(gw_dir);
    let check = net
        .uplink(0, &reader, &["check", "--json"], Duration::from_secs(900))
        .await?;
    let check = match serde_json::from_str::<serde_json::Value>(&check.stdout) {
        Ok(v) => format!(
            "exit {:?}, {} objects, {} segments healthy, {} below threshold, {} lost",
            check.code, v["objects"], v["healthy"], v["below_threshold"], v["lost"]
        ),
        Err(_) => format!("exit {:?}: {}", check.code, check.stderr.trim()),
    };
    // Every acknowledged object, byte for byte.
    let mut lost = Vec::new();
    let mut resurrected = Vec::new();
    for l in &ledgers {
        let bucket = if l.name == "gateway" { "s3gw" } else { &l.name };
        let down = net.scratch(&format!("final-{bucket}"))?;
        let _ = net
            .uplink(
                0,
                &reader,
                &[
                    "cp",
                    "-r",
                    &format!("shoal://{bucket}/"),
                    &down.to_string_lossy(),
                ],
                Duration::from_secs(1200),
            )
            .await?;
        for (key, &(len, s)) in &l.acked {
            if std::fs::read(down.join(key)).ok() != Some(test_data(len, s)) {
                lost.push(format!("{bucket}/{key}"));
            }
        }
        for key in &l.deleted {
            if down.join(key).exists() && !l.uncertain.contains(key) {
                resurrected.push(format!("{bucket}/{key}"));
            }
        }
    }
    let mut net = net;
    net.teardown()?;
    Ok(Report {
        ledgers,
        events,
        lost,
        resurrected,
        check,
        seconds: started.elapsed().as_secs_f64(),
    })
}
