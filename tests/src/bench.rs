//! Whole-system benchmarks behind `shoal-bench`: real storage nodes in this process on
//! `127.0.N.1`, a real uplink over gRPC, one machine-readable summary line per case.
//!
//! - [`updown`]: end-to-end upload and download throughput of one large object.
//! - [`small_objects`]: puts and gets of many 4 KiB objects per second.
//! - [`rss_child`] / [`measure_rss`]: the uplink's peak RSS (`VmHWM`) uploading a large
//!   file, in a child process that runs only the uplink, so the nodes' memory is not
//!   counted.
//!
//! Sizes are in MiB; rates in MB/s are 10^6 bytes per second.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use shoal_proto::NodeId;
use shoal_test_kit::settle;
use uplink::catalog::Catalog;
use uplink::{Access, NodeCandidate, PutOptions, RootSecret, Scheme, Uplink, UplinkConfig};

use crate::e2e::{HashWriter, Pattern, candidates, cluster_uplink};
use crate::{Cluster, NodeOptions};

pub const MIB: u64 = 1 << 20;
const BUCKET: &str = "bench";

/// Options of the nodes a benchmark starts: room for large objects.
pub fn node_options() -> NodeOptions {
    NodeOptions {
        allocate: 64 << 30,
        ..NodeOptions::default()
    }
}

/// Starts `n` nodes and reports how long that took.
pub async fn start_cluster(n: usize) -> anyhow::Result<Cluster> {
    let t = Instant::now();
    let cluster = Cluster::start(n, node_options())
        .await
        .with_context(|| format!("starting {n} storage nodes"))?;
    eprintln!("started {n} nodes in {:.1} s", t.elapsed().as_secs_f64());
    // Measure a settled network: the joins' lookups and dial-backs are over once no
    // routing table has changed for a second, not during the first upload.
    let tables = || -> Vec<usize> {
        cluster
            .nodes
            .iter()
            .map(|node| node.running().dht().table().len())
            .collect()
    };
    let last = settle(
        Duration::from_secs(60),
        Duration::from_secs(1),
        Duration::from_millis(50),
        || std::future::ready(tables()),
    )
    .await;
    eprintln!(
        "DHT settled after {:.1} s: table sizes {}..={}",
        t.elapsed().as_secs_f64(),
        last.iter().min().unwrap_or(&0),
        last.iter().max().unwrap_or(&0)
    );
    Ok(cluster)
}

fn uplink_for(nodes: Vec<NodeCandidate>, scheme: Scheme) -> anyhow::Result<Uplink> {
    let cfg = UplinkConfig {
        scheme,
        allow_smaller_scheme: false,
        ..UplinkConfig::default()
    };
    let up = cluster_uplink(
        Access::new(RootSecret::random(), Vec::new()),
        nodes,
        Catalog::temporary()?,
        cfg,
    )?;
    up.create_bucket(BUCKET)?;
    Ok(up)
}

/// CPU seconds (user + system) this process has used so far, from `/proc/self/stat`:
/// uplink and nodes together. On a shared machine, CPU per byte is steadier than wall
/// time; 0 where procfs is missing.
pub fn cpu_seconds() -> f64 {
    stat_cpu_seconds("/proc/self/stat")
}

/// CPU seconds (user + system) in a `/proc/…/stat` file; 0 where it cannot be read.
pub fn stat_cpu_seconds(path: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0.0;
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn mbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs.max(1e-9)
}

/// Uploads and downloads one object of `size_mib` MiB at `scheme`, checks it by hash,
/// deletes it, and prints `case=updown ...`.
pub async fn updown(cluster: &Cluster, scheme: Scheme, size_mib: u64) -> anyhow::Result<()> {
    let up = uplink_for(candidates(cluster), scheme)?;
    let len = size_mib * MIB;
    let pattern = Pattern::new(size_mib);
    let opts = PutOptions {
        size_hint: Some(len),
        ..PutOptions::default()
    };
    let (t, cpu) = (Instant::now(), cpu_seconds());
    let report = up.put(BUCKET, "big", pattern.reader(len), opts).await?;
    let up_secs = t.elapsed().as_secs_f64();
    let up_cpu = cpu_seconds() - cpu;
    if report.used != Some(scheme) {
        bail!("stored at {:?} instead of {scheme}", report.used);
    }
    let mut out = HashWriter::new();
    let (t, cpu) = (Instant::now(), cpu_seconds());
    up.get(BUCKET, "big", None, &mut out, None).await?;
    let down_secs = t.elapsed().as_secs_f64();
    let down_cpu = cpu_seconds() - cpu;
    if out.len != len || out.finalize() != pattern.hash(0, len) {
        bail!("the download differs from the upload");
    }
    let deleted = up.delete(BUCKET, "big").await?;
    println!(
        "case=updown scheme={scheme} nodes={} size_mib={size_mib} up_s={up_secs:.2} \
         up_mbps={:.1} up_cpu_s={up_cpu:.2} up_cpu_mbps={:.1} down_s={down_secs:.2} \
         down_mbps={:.1} down_cpu_s={down_cpu:.2} down_cpu_mbps={:.1} stripes_decoded={} \
         piece_downloads_failed={} pieces_deleted={}",
        cluster.nodes.len(),
        mbps(len, up_secs),
        mbps(len, up_cpu),
        mbps(len, down_secs),
        mbps(len, down_cpu),
        up.metrics().stripes_decoded.get(),
        up.metrics()
            .piece_downloads
            .with_label_values(&["failed"])
            .get(),
        deleted.pieces_deleted
    );
    Ok(())
}

/// Puts then gets `count` objects of `len` bytes with `concurrency` in flight; prints
/// `case=small ...`. Objects up to 4 KiB are stored inline in the catalog; 4 KiB + 1 is
/// the smallest object whose bytes go to the nodes.
pub async fn small_objects(
    cluster: &Cluster,
    scheme: Scheme,
    count: usize,
    concurrency: usize,
    len: u64,
) -> anyhow::Result<()> {
    use futures::StreamExt;
    let up = uplink_for(candidates(cluster), scheme)?;
    let t = Instant::now();
    let puts: Vec<anyhow::Result<()>> = futures::stream::iter((0..count).map(|i| {
        let up = up.clone();
        async move {
            let opts = PutOptions {
                size_hint: Some(len),
                ..PutOptions::default()
            };
            up.put(
                BUCKET,
                &format!("obj/{i:05}"),
                Pattern::new(i as u64).reader(len),
                opts,
            )
            .await?;
            Ok(())
        }
    }))
    .buffer_unordered(concurrency.max(1))
    .collect()
    .await;
    let put_secs = t.elapsed().as_secs_f64();
    puts.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    up.catalog().flush()?;
    let t = Instant::now();
    let gets: Vec<anyhow::Result<()>> = futures::stream::iter((0..count).map(|i| {
        let up = up.clone();
        async move {
            let mut out = Vec::with_capacity(len as usize);
            up.get(BUCKET, &format!("obj/{i:05}"), None, &mut out, None)
                .await?;
            if out != Pattern::new(i as u64).bytes(0, len) {
                bail!("object {i} differs");
            }
            Ok(())
        }
    }))
    .buffer_unordered(concurrency.max(1))
    .collect()
    .await;
    let get_secs = t.elapsed().as_secs_f64();
    gets.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    println!(
        "case=small count={count} size={len} concurrency={concurrency} \
         put_per_s={:.0} get_per_s={:.0}",
        count as f64 / put_secs.max(1e-9),
        count as f64 / get_secs.max(1e-9)
    );
    Ok(())
}

/// Peak resident set of this process (`VmHWM`), in KiB.
pub fn peak_rss_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/self/status")
}

/// Writes the candidates as `NODEID@IP:PORT FREE` lines for a child process.
fn write_nodes(path: &Path, nodes: &[NodeCandidate]) -> anyhow::Result<()> {
    let text: String = nodes
        .iter()
        .map(|n| format!("{}@{} {}\n", n.id.to_hex(), n.address, n.free_space))
        .collect();
    std::fs::write(path, text)?;
    Ok(())
}

fn read_nodes(path: &Path) -> anyhow::Result<Vec<NodeCandidate>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .map(|l| {
            let (node, free) = l.split_once(' ').context("bad node line")?;
            let (id, addr) = node.split_once('@').context("bad node line")?;
            Ok(NodeCandidate {
                id: NodeId::from_hex(id).context("bad node id")?,
                public_key: None,
                address: addr.parse()?,
                free_space: free.parse()?,
            })
        })
        .collect()
}

/// The child side of [`measure_rss`]: uploads `size_mib` MiB to the nodes in
/// `nodes_file`, deletes it, and prints `vmhwm_kib=... up_s=...`.
pub async fn rss_child(nodes_file: &Path, scheme: Scheme, size_mib: u64) -> anyhow::Result<()> {
    let up = uplink_for(read_nodes(nodes_file)?, scheme)?;
    let before = peak_rss_kib()?;
    let len = size_mib * MIB;
    let opts = PutOptions {
        size_hint: Some(len),
        ..PutOptions::default()
    };
    let t = Instant::now();
    up.put(BUCKET, "big", Pattern::new(7).reader(len), opts)
        .await?;
    let secs = t.elapsed().as_secs_f64();
    let peak = peak_rss_kib()?;
    up.delete(BUCKET, "big").await?;
    println!("vmhwm_kib={peak} before_kib={before} up_s={secs:.2}");
    Ok(())
}

/// Runs [`rss_child`] in a child process (`exe rss-child ...`) and prints `case=rss ...`.
pub async fn measure_rss(
    exe: &Path,
    cluster: &Cluster,
    scheme: Scheme,
    size_mib: u64,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let nodes_file = dir.path().join("nodes");
    write_nodes(&nodes_file, &candidates(cluster))?;
    let out = tokio::process::Command::new(exe)
        .arg("rss-child")
        .arg("--nodes-file")
        .arg(&nodes_file)
        .arg("--scheme")
        .arg(scheme.to_string())
        .arg("--size-mib")
        .arg(size_mib.to_string())
        .kill_on_drop(true)
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "the rss child failed: {}{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let field = |name: &str| -> Option<f64> {
        stdout
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
    };
    let peak = field("vmhwm_kib").context("the child printed no vmhwm_kib")?;
    let base = field("before_kib").unwrap_or(0.0);
    let secs = field("up_s").unwrap_or(0.0);
    println!(
        "case=rss scheme={scheme} nodes={} size_mib={size_mib} peak_rss_mib={:.1} \
         rss_before_upload_mib={:.1} up_s={secs:.2} up_mbps={:.1}",
        cluster.nodes.len(),
        peak / 1024.0,
        base / 1024.0,
        mbps(size_mib * MIB, secs)
    );
    Ok(())
}
