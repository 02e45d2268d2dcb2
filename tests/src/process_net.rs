//! A network of separate processes, as a user runs them: N `storage-node run` processes
//! and the `uplink` CLI against them (used by `shoal-bench --processes`, `node-soak` and
//! the resilience tests).
//!
//! - [`ProcessNetwork`]: node `i` is `storage-node run` on `127.0.{i}.1` (port 0, one /24
//!   each) in its own directory; node 1 is the DHT seed and the others bootstrap from it.
//!   The uplink config dir holds an access grant naming the seed, so every `uplink`
//!   command finds the nodes through the DHT, exactly as after `uplink access create
//!   --bootstrap`. [`ProcessNetwork::uplink_in`] runs one timed command and reports its
//!   [`Usage`] (CPU from `/proc/PID/stat` once it has exited, before it is reaped, and
//!   `peak_rss`, the `VmHWM` sampled every 20 ms).
//! - [`setup_node`] / [`run_node`]: one node process, for harnesses that start their own.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rustix::process::{Pid, WaitId, WaitIdOptions};
use shoal_test_kit::{poll_until, settle};

/// Proof-of-work bits of the benchmark network: low, so that setup takes milliseconds.
const DIFFICULTY: u32 = 2;
/// The bucket the network's config dir makes, for the benchmarks' objects.
pub const BUCKET: &str = "bench";

/// The release binaries next to this executable.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub storage_node: PathBuf,
    pub uplink: PathBuf,
}

impl Binaries {
    /// `storage-node` and `uplink` from `dir` (`target/release` for a release build).
    pub fn in_dir(dir: &Path) -> anyhow::Result<Self> {
        let b = Self {
            storage_node: dir.join("storage-node"),
            uplink: dir.join("uplink"),
        };
        for p in [&b.storage_node, &b.uplink] {
            if !p.exists() {
                bail!(
                    "{} is missing; build it first: cargo build --release -p storage-node -p uplink-cli",
                    p.display()
                );
            }
        }
        Ok(b)
    }
}

/// One `storage-node run` process.
#[derive(Debug)]
pub(crate) struct NodeProcess {
    pub(crate) child: Child,
    pub(crate) http: SocketAddr,
    /// Where its gRPC server listens (taken again on a restart).
    pub(crate) grpc: SocketAddr,
    /// `NODEID@IP:PORT`.
    pub(crate) pinned: String,
}

/// N storage-node processes and an uplink config dir that reaches them through the DHT.
#[derive(Debug)]
pub struct ProcessNetwork {
    bins: Binaries,
    root: tempfile::TempDir,
    nodes: Vec<NodeProcess>,
    /// The seed, pinned: `NODEID@IP:PORT`.
    seed: String,
    /// The access grant of the config dir (what `access create` printed).
    grant: String,
    commands: std::sync::atomic::AtomicUsize,
}

pub(crate) fn setup_node(
    bins: &Binaries,
    dir: &Path,
    i: usize,
    seed: Option<&str>,
) -> anyhow::Result<()> {
    let ip = format!("127.0.{i}.1");
    let mut cmd = Command::new(&bins.storage_node);
    cmd.arg("setup")
        .arg("--dir")
        .arg(dir)
        .args([
            "--difficulty",
            &DIFFICULTY.to_string(),
            "--allocate",
            "64GiB",
        ])
        .args(["--listen", &format!("{ip}:0"), "--http", &format!("{ip}:0")])
        // The bench network lives on 127.0.N.1.
        .arg("--local-network");
    if let Some(seed) = seed {
        cmd.args(["--bootstrap", seed]);
    }
    let out = cmd.output().context("cannot run storage-node setup")?;
    if !out.status.success() {
        bail!(
            "setup of node {i} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Starts `storage-node run` and waits for its `ready ... grpc=ADDR http=ADDR` line.
/// Starts a set-up node; returns it and its pinned `NODEID@IP:PORT` entry. With
/// `listen`, on that address (a restarted node takes its old one) instead of the
/// configured port 0.
pub(crate) fn run_node(
    bins: &Binaries,
    dir: &Path,
    i: usize,
    listen: Option<SocketAddr>,
) -> anyhow::Result<(NodeProcess, String)> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.with_extension("log"))?;
    let mut cmd = Command::new(&bins.storage_node);
    cmd.arg("run").arg("--dir").arg(dir);
    if let Some(addr) = listen {
        cmd.args(["--listen", &addr.to_string()]);
    }
    let mut child = cmd
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .context("cannot start storage-node")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = loop {
        match lines.next() {
            Some(l) if l.as_ref().is_ok_and(|l| l.starts_with("ready ")) => break l?,
            Some(_) => continue,
            None => {
                let _ = child.wait();
                bail!(
                    "node {i} exited before it was ready; see {}",
                    dir.with_extension("log").display()
                );
            }
        }
    };
    // Keep reading, so that a later line on stdout never meets a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let field = |name: &str| -> anyhow::Result<SocketAddr> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
            .with_context(|| format!("node {i} printed no {name}= on its ready line: {line:?}"))
    };
    let node_id = line
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("node_id="))
        .map(str::to_owned)
        .with_context(|| format!("node {i} printed no node_id= on its ready line: {line:?}"));
    let (grpc, http, node_id) = match (field("grpc"), field("http"), node_id) {
        (Ok(g), Ok(h), Ok(id)) => (g, h, id),
        (Err(e), ..) | (_, Err(e), _) | (.., Err(e)) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    };
    let pinned = format!("{node_id}@{grpc}");
    Ok((
        NodeProcess {
            child,
            http,
            grpc,
            pinned: pinned.clone(),
        },
        pinned,
    ))
}

/// `shoal_dht_table_size` of a node, from its `/metrics`.
async fn table_size(http: SocketAddr) -> Option<u64> {
    let (code, body) =
        tokio::time::timeout(Duration::from_secs(2), crate::http_get(http, "/metrics"))
            .await
            .ok()?
            .ok()?;
    if code != 200 {
        return None;
    }
    body.lines()
        .find_map(|l| l.strip_prefix("shoal_dht_table_size "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// CPU seconds (user + system) of process `pid` so far, from `/proc/PID/stat`; also
/// readable for an exited process that has not been reaped yet.
pub fn process_cpu_seconds(pid: u32) -> f64 {
    crate::bench::stat_cpu_seconds(&format!("/proc/{pid}/stat"))
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// What one `uplink` command cost.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub secs: f64,
    pub uplink_cpu: f64,
    pub nodes_cpu: f64,
    pub peak_rss_kib: u64,
    /// What the command printed on stdout.
    pub stdout: String,
}

impl ProcessNetwork {
    /// Sets up and starts `n` nodes, then waits until their routing tables have settled.
    pub fn start(bins: Binaries, n: usize) -> anyhow::Result<Self> {
        if !(1..=254).contains(&n) {
            bail!("between 1 and 254 node processes, not {n}");
        }
        let t = Instant::now();
        let root = tempfile::Builder::new()
            .prefix("shoal-cli-bench")
            .tempdir()?;
        let base = root.path().to_path_buf();
        let dir = |i: usize| base.join(format!("node{i:03}"));
        setup_node(&bins, &dir(1), 1, None)?;
        let (seed_node, seed) = run_node(&bins, &dir(1), 1, None)?;
        let mut net = Self {
            bins,
            root,
            nodes: vec![seed_node],
            seed,
            grant: String::new(),
            commands: Default::default(),
        };
        // Set up the others in parallel (each setup is a short process of its own).
        let dirs: Vec<PathBuf> = (2..=n).map(dir).collect();
        std::thread::scope(|s| -> anyhow::Result<()> {
            let handles: Vec<_> = dirs
                .iter()
                .enumerate()
                .map(|(j, d)| {
                    let bins = &net.bins;
                    let seed = net.seed.as_str();
                    s.spawn(move || setup_node(bins, d, j + 2, Some(seed)))
                })
                .collect();
            for h in handles {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a setup thread panicked"))??;
            }
            Ok(())
        })?;
        for (j, d) in dirs.iter().enumerate() {
            let (node, _) = run_node(&net.bins, d, j + 2, None)?;
            net.nodes.push(node);
        }
        eprintln!(
            "started {n} node processes in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        net.write_uplink_config()?;
        Ok(net)
    }

    /// Waits until no node's routing table has changed for a second (at most 60 s), so
    /// that the joins' lookups and dial-backs are over before anything is measured.
    pub async fn settle(&self) -> anyhow::Result<()> {
        let t = Instant::now();
        let sizes = || async {
            let mut v = Vec::with_capacity(self.nodes.len());
            for n in &self.nodes {
                v.push(table_size(n.http).await.unwrap_or(0));
            }
            v
        };
        let last = settle(
            Duration::from_secs(60),
            Duration::from_secs(1),
            Duration::from_millis(100),
            sizes,
        )
        .await;
        eprintln!(
            "DHT settled after {:.1} s: table sizes {}..={}",
            t.elapsed().as_secs_f64(),
            last.iter().min().unwrap_or(&0),
            last.iter().max().unwrap_or(&0)
        );
        Ok(())
    }

    /// The access grant of [`ProcessNetwork::config_dir`].
    pub fn grant(&self) -> &str {
        &self.grant
    }

    /// A new, empty config dir for the network (a second machine): `config.toml` only.
    pub fn new_config_dir(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.root.path().join(name);
        std::fs::create_dir_all(&dir)?;
        std::fs::copy(
            self.config_dir().join("config.toml"),
            dir.join("config.toml"),
        )?;
        Ok(dir)
    }

    /// The config dir every [`ProcessNetwork::uplink`] command uses.
    pub fn config_dir(&self) -> PathBuf {
        self.root.path().join("uplink")
    }

    /// Node `i` (0-based) as a pinned `NODEID@IP:PORT` entry.
    pub fn pinned(&self, i: usize) -> Option<&str> {
        self.nodes.get(i).map(|n| n.pinned.as_str())
    }

    /// Runs `uplink --config-dir DIR ARGS` (another config dir of this network):
    /// whether it succeeded, its stdout and its stderr.
    pub fn uplink_output(
        &self,
        dir: &Path,
        args: &[&str],
    ) -> anyhow::Result<(bool, String, String)> {
        std::fs::create_dir_all(dir)?;
        let config = dir.join("config.toml");
        if !config.exists() {
            std::fs::write(
                &config,
                format!("difficulty = {DIFFICULTY}\nlocal_network = true\n"),
            )?;
        }
        self.uplink_logged(dir, args, "warn")
    }

    /// [`Self::uplink_output`] with `RUST_LOG=rust_log`: what the command logged is in
    /// its stderr.
    pub fn uplink_logged(
        &self,
        dir: &Path,
        args: &[&str],
        rust_log: &str,
    ) -> anyhow::Result<(bool, String, String)> {
        let out = Command::new(&self.bins.uplink)
            .arg("--config-dir")
            .arg(dir)
            .args(args)
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .output()
            .context("cannot start uplink")?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// Stops every node (SIGTERM, as an operator does; SIGKILL after 10 s) and starts
    /// each again on its directory and its address: the whole network restarted.
    pub fn restart_all(&mut self) -> anyhow::Result<()> {
        let listen: Vec<SocketAddr> = self.nodes.iter().map(|n| n.grpc).collect();
        self.stop_all();
        let base = self.root.path().to_path_buf();
        for (j, addr) in listen.into_iter().enumerate() {
            let dir = base.join(format!("node{:03}", j + 1));
            let (node, _) = run_node(&self.bins, &dir, j + 1, Some(addr))?;
            self.nodes.push(node);
        }
        Ok(())
    }

    /// A scratch directory for the cases' files, inside the network's temp dir.
    pub fn scratch(&self, name: &str) -> anyhow::Result<PathBuf> {
        let p = self.root.path().join("scratch").join(name);
        std::fs::create_dir_all(&p)?;
        Ok(p)
    }

    fn write_uplink_config(&mut self) -> anyhow::Result<()> {
        let dir = self.config_dir();
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join("config.toml"),
            format!("difficulty = {DIFFICULTY}\nlocal_network = true\n"),
        )?;
        let created = self.uplink(&["access", "create", "--bootstrap", &self.seed])?;
        // The grant is the last line printed.
        self.grant = created
            .stdout
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or_default()
            .to_owned();
        self.uplink(&["mb", &format!("shoal://{BUCKET}")])?;
        Ok(())
    }

    /// Runs `uplink ARGS` with this network's config dir; fails unless it succeeds.
    pub fn uplink(&self, args: &[&str]) -> anyhow::Result<Usage> {
        self.uplink_accepting(args, &[0])
    }

    /// [`ProcessNetwork::uplink`] that also accepts the exit codes in `accept` (e.g. the
    /// documented statuses of `check` and `repair`).
    pub fn uplink_accepting(&self, args: &[&str], accept: &[i32]) -> anyhow::Result<Usage> {
        self.uplink_in(&self.config_dir(), args, accept)
    }

    /// `uplink ARGS` with config dir `config_dir` (another writer or machine of the same
    /// grant); fails unless its exit code is in `accept`.
    pub fn uplink_in(
        &self,
        config_dir: &Path,
        args: &[&str],
        accept: &[i32],
    ) -> anyhow::Result<Usage> {
        let nodes_before = self.nodes_cpu();
        let t = Instant::now();
        // SHOAL_BENCH_PERF_DIR=DIR: record each uplink command with `perf record -g`
        // (`--call-graph $SHOAL_BENCH_PERF_CALL_GRAPH`, default `fp`)
        // into DIR (for profiles; the CPU and RSS figures are then perf's own).
        let mut cmd = match std::env::var_os("SHOAL_BENCH_PERF_DIR") {
            Some(dir) => {
                let n = self
                    .commands
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let name: String = args
                    .iter()
                    .filter(|a| !a.starts_with('/') && !a.starts_with("--"))
                    .map(|a| a.replace(['/', ':'], "_"))
                    .collect::<Vec<_>>()
                    .join("-");
                // SHOAL_BENCH_PERF_CALL_GRAPH=dwarf attributes samples to their callers
                // in binaries built without frame pointers (bigger files).
                let call_graph =
                    std::env::var("SHOAL_BENCH_PERF_CALL_GRAPH").unwrap_or_else(|_| "fp".into());
                let mut c = Command::new("perf");
                c.args([
                    "record",
                    "-q",
                    "-F",
                    "999",
                    "--call-graph",
                    &call_graph,
                    "-o",
                ])
                .arg(Path::new(&dir).join(format!("{n:03}-{name}.data")))
                .arg("--")
                .arg(&self.bins.uplink);
                c
            }
            None => Command::new(&self.bins.uplink),
        };
        let mut child = cmd
            .args(args)
            .env("SHOAL_CONFIG_DIR", config_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start uplink")?;
        let pid = child.id();
        let mut stderr = child.stderr.take().context("no stderr")?;
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let mut stdout = child.stdout.take().context("no stdout")?;
        let out_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        // Sample the peak RSS until the process exits; read its CPU time while it is
        // a zombie (exited, not reaped), then reap it.
        let mut peak = 0;
        let Some(raw) = Pid::from_raw(pid as i32) else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("uplink got an invalid pid {pid}");
        };
        loop {
            let exited = rustix::process::waitid(
                WaitId::Pid(raw),
                WaitIdOptions::EXITED | WaitIdOptions::NOWAIT | WaitIdOptions::NOHANG,
            );
            match exited {
                Ok(Some(_)) => break,
                Ok(None) => {}
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(e).context("cannot wait for uplink");
                }
            }
            if let Some(kib) = peak_rss_kib(pid) {
                peak = peak.max(kib);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let secs = t.elapsed().as_secs_f64();
        let uplink_cpu = process_cpu_seconds(pid);
        let status = child.wait()?;
        let nodes_cpu = self.nodes_cpu() - nodes_before;
        let err = reader.join().unwrap_or_default();
        let stdout = out_reader.join().unwrap_or_default();
        if !status.code().is_some_and(|c| accept.contains(&c)) {
            bail!("uplink {} failed ({status}): {err}", args.join(" "));
        }
        Ok(Usage {
            secs,
            uplink_cpu,
            nodes_cpu,
            peak_rss_kib: peak,
            stdout,
        })
    }

    /// CPU seconds all node processes have used so far.
    pub fn nodes_cpu(&self) -> f64 {
        self.nodes
            .iter()
            .map(|n| process_cpu_seconds(n.child.id()))
            .sum()
    }

    /// The largest peak RSS of any node process, in KiB.
    pub fn nodes_peak_rss_kib(&self) -> u64 {
        self.nodes
            .iter()
            .filter_map(|n| peak_rss_kib(n.child.id()))
            .max()
            .unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Kills node `i` (0-based) at once, as a machine that goes away.
    pub fn kill_node(&mut self, i: usize) -> anyhow::Result<()> {
        let n = self.nodes.get_mut(i).context("no such node")?;
        n.child.kill()?;
        n.child.wait()?;
        Ok(())
    }

    /// Stops every node (SIGTERM, then SIGKILL after 10 s) and removes the temp dir.
    pub fn shutdown(mut self) -> anyhow::Result<()> {
        self.stop_all();
        Ok(())
    }

    fn stop_all(&mut self) {
        for n in &self.nodes {
            if let Some(pid) = Pid::from_raw(n.child.id() as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
        // Whatever has not exited within 10 s of SIGTERM is killed.
        let exited = |n: &mut NodeProcess| !matches!(n.child.try_wait(), Ok(None));
        let _ = poll_until(Duration::from_secs(10), "every node to exit", || {
            self.nodes.iter_mut().all(exited)
        });
        for n in &mut self.nodes {
            if !exited(n) {
                let _ = n.child.kill();
                let _ = n.child.wait();
            }
        }
        self.nodes.clear();
    }
}

impl Drop for ProcessNetwork {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Whether two files hold the same bytes.
pub fn same_file(a: &Path, b: &Path) -> anyhow::Result<bool> {
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}
