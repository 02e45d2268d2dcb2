//! `shoal-bench --processes N`: the release `uplink` CLI against N separate
//! `storage-node` processes ([`ProcessNetwork`]), as a user runs them.
//!
//! - [`updown`], [`tree`], [`startup`], [`maintenance`]: one summary line per case;
//!   every download is compared byte for byte with its source after the timing.
//!
//! Times are wall times of whole `uplink` processes (start-up, DHT join and sampling
//! included). CPU is the uplink process's own user + system time and the nodes' CPU over
//! the same interval; `peak_rss` is the uplink's `VmHWM` (see [`crate::process_net`]).

use anyhow::{Context, bail};
use std::io::Write;
use std::path::Path;
use uplink::Scheme;

use crate::bench::MIB;
use crate::e2e::Pattern;
use crate::process_net::{BUCKET, ProcessNetwork, Usage, same_file};

fn mbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs.max(1e-9)
}

fn random_file(path: &Path, len: u64) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    // Pseudo-random (splitmix64) with a random seed: incompressible, and fast to make.
    let pattern = Pattern::new(rand::random());
    while left > 0 {
        let n = (left as usize).min(buf.len());
        pattern.fill(len - left, &mut buf[..n]);
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

/// Uploads a random file of `size_mib` MiB with `uplink cp`, downloads it into a new
/// file with `uplink cp`, compares the two, removes the object; prints `case=cli-updown`.
pub fn updown(net: &ProcessNetwork, scheme: Scheme, size_mib: u64) -> anyhow::Result<()> {
    let dir = net.scratch("updown")?;
    let (src, back) = (dir.join("object"), dir.join("back"));
    let len = size_mib * MIB;
    random_file(&src, len)?;
    let key = format!("shoal://{BUCKET}/object-{size_mib}");
    let rs = scheme.to_string();
    let src_s = src.to_string_lossy().to_string();
    let back_s = back.to_string_lossy().to_string();
    let up = net.uplink(&["cp", "--no-progress", "--rs", &rs, &src_s, &key])?;
    let down = net.uplink(&["cp", "--no-progress", &key, &back_s])?;
    let identical = same_file(&src, &back)?;
    net.uplink(&["rm", &key])?;
    std::fs::remove_dir_all(&dir)?;
    println!(
        "case=cli-updown scheme={scheme} processes={} size_mib={size_mib} \
         up_s={:.2} up_mbps={:.1} up_cpu_uplink_s={:.2} up_cpu_nodes_s={:.2} \
         down_s={:.2} down_mbps={:.1} down_cpu_uplink_s={:.2} down_cpu_nodes_s={:.2} \
         uplink_peak_rss_mib={:.1} identical={}",
        net.len(),
        up.secs,
        mbps(len, up.secs),
        up.uplink_cpu,
        up.nodes_cpu,
        down.secs,
        mbps(len, down.secs),
        down.uplink_cpu,
        down.nodes_cpu,
        up.peak_rss_kib.max(down.peak_rss_kib) as f64 / 1024.0,
        if identical { "yes" } else { "NO" }
    );
    if !identical {
        bail!("the download of {size_mib} MiB differs from the upload");
    }
    Ok(())
}

/// `cp -r` of `count` files of `size` bytes up, then `cp -r` back into a new directory;
/// every file compared; prints `case=cli-tree`.
pub fn tree(
    net: &ProcessNetwork,
    scheme: Scheme,
    count: usize,
    size: u64,
    parallelism: Option<usize>,
) -> anyhow::Result<()> {
    let dir = net.scratch("tree")?;
    let (src, back) = (dir.join("src"), dir.join("back"));
    std::fs::create_dir_all(&src)?;
    for i in 0..count {
        std::fs::write(
            src.join(format!("f{i:05}")),
            Pattern::new(i as u64 + size).bytes(0, size),
        )?;
    }
    let key = format!("shoal://{BUCKET}/tree-{size}/");
    let rs = scheme.to_string();
    let (src_s, back_s) = (
        src.to_string_lossy().to_string(),
        back.to_string_lossy().to_string(),
    );
    let par = parallelism.map(|p| p.to_string());
    let par_args: Vec<&str> = match &par {
        Some(p) => vec!["--parallelism", p],
        None => Vec::new(),
    };
    let up_args = [
        &["cp", "-r", "--no-progress", "--rs", &rs][..],
        &par_args,
        &[&src_s, &key],
    ];
    let up = net.uplink(&up_args.concat())?;
    let down_args = [
        &["cp", "-r", "--no-progress"][..],
        &par_args,
        &[&key, &back_s],
    ];
    let down = net.uplink(&down_args.concat())?;
    let mut differ = 0;
    for i in 0..count {
        let name = format!("f{i:05}");
        if !same_file(&src.join(&name), &back.join(&name)).unwrap_or(false) {
            differ += 1;
        }
    }
    net.uplink(&["rm", "-r", &key])?;
    std::fs::remove_dir_all(&dir)?;
    println!(
        "case=cli-tree scheme={scheme} processes={} files={count} size={size} parallelism={} \
         up_s={:.2} up_files_s={:.0} up_cpu_uplink_s={:.2} up_cpu_nodes_s={:.2} \
         down_s={:.2} down_files_s={:.0} down_cpu_uplink_s={:.2} down_cpu_nodes_s={:.2} \
         identical={}",
        net.len(),
        par.as_deref().unwrap_or("default"),
        up.secs,
        count as f64 / up.secs.max(1e-9),
        up.uplink_cpu,
        up.nodes_cpu,
        down.secs,
        count as f64 / down.secs.max(1e-9),
        down.uplink_cpu,
        down.nodes_cpu,
        if differ == 0 {
            "yes".to_string()
        } else {
            format!("NO({differ})")
        }
    );
    if differ > 0 {
        bail!("{differ} of {count} files differ after the round trip");
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// What one command costs before it moves any data: `uplink ls` (process start, access,
/// catalog), `cp` of one 4 KiB + 1 file up (adds the DHT join, sampling and ten piece
/// uploads) and down (no DHT), each `repeat` times; prints medians as `case=cli-startup`.
pub fn startup(net: &ProcessNetwork, scheme: Scheme, repeat: usize) -> anyhow::Result<()> {
    let dir = net.scratch("startup")?;
    let (src, back) = (dir.join("one"), dir.join("back"));
    std::fs::write(&src, Pattern::new(99).bytes(0, 4097))?;
    let key = format!("shoal://{BUCKET}/startup-one");
    let rs = scheme.to_string();
    let (src_s, back_s) = (
        src.to_string_lossy().to_string(),
        back.to_string_lossy().to_string(),
    );
    let (mut ls, mut up, mut down) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..repeat.max(1) {
        ls.push(net.uplink(&["ls", &format!("shoal://{BUCKET}")])?.secs);
        up.push(
            net.uplink(&["cp", "--no-progress", "--rs", &rs, &src_s, &key])?
                .secs,
        );
        down.push(net.uplink(&["cp", "--no-progress", &key, &back_s])?.secs);
        if !same_file(&src, &back)? {
            bail!("the one-file download differs");
        }
    }
    net.uplink(&["rm", &key])?;
    std::fs::remove_dir_all(&dir)?;
    println!(
        "case=cli-startup scheme={scheme} processes={} repeat={} ls_ms={:.0} \
         cp_one_up_ms={:.0} cp_one_down_ms={:.0}",
        net.len(),
        repeat.max(1),
        median(ls) * 1e3,
        median(up) * 1e3,
        median(down) * 1e3
    );
    Ok(())
}

/// Issue 12's figures on the process network: uploads `objects` random objects of
/// `size_mib` MiB at `scheme`, then
/// - `uplink renew -r`: renew throughput, pieces per second (one batch order per node);
/// - `uplink check -r --audit-fraction F`: audit traffic per GB of piece data checked
///   (and per GB of object data);
/// - kills `kill` node processes and runs `uplink repair -r`: repair throughput, MB/s of
///   segment (sealed) data repaired.
///
/// Prints `case=cli-renew`, `case=cli-check` and `case=cli-repair`.
pub fn maintenance(
    net: &mut ProcessNetwork,
    scheme: Scheme,
    objects: usize,
    size_mib: u64,
    kill: usize,
    audit_fraction: f64,
    renew_files: usize,
) -> anyhow::Result<()> {
    let dir = net.scratch("maintenance")?;
    let rs = scheme.to_string();
    // Many small objects (8 KiB, one segment each) for the renew case: `cp -r` once.
    if renew_files > 0 {
        let tree = dir.join("small");
        std::fs::create_dir_all(&tree)?;
        for i in 0..renew_files {
            std::fs::write(
                tree.join(format!("f{i:05}")),
                Pattern::new(i as u64).bytes(0, 8192),
            )?;
        }
        let tree_s = tree.to_string_lossy().to_string();
        let dst = format!("shoal://{BUCKET}/renew-small");
        net.uplink(&["cp", "-r", "--no-progress", "--rs", &rs, &tree_s, &dst])?;
        std::fs::remove_dir_all(&tree)?;
    }
    for i in 0..objects {
        let src = dir.join(format!("object-{i}"));
        random_file(&src, size_mib * MIB)?;
        let src_s = src.to_string_lossy().to_string();
        let key = format!("shoal://{BUCKET}/maint/object-{i}");
        net.uplink(&["cp", "--no-progress", "--rs", &rs, &src_s, &key])?;
        std::fs::remove_file(&src)?;
    }
    let scope = format!("shoal://{BUCKET}/maint/");
    let json = |u: &Usage| -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(&u.stdout).context("the uplink's --json output")
    };
    let renew = net.uplink(&["renew", "-r", "--json", &format!("shoal://{BUCKET}")])?;
    let r = json(&renew)?;
    let pieces = r["pieces"].as_u64().unwrap_or(0);
    println!(
        "case=cli-renew scheme={scheme} processes={} objects={} pieces={pieces} renewed={} orders={} s={:.2} pieces_per_s={:.0} cpu_uplink_s={:.2} cpu_nodes_s={:.2}",
        net.len(),
        objects + renew_files,
        r["renewed"],
        r["orders"],
        renew.secs,
        pieces as f64 / renew.secs.max(1e-9),
        renew.uplink_cpu,
        renew.nodes_cpu
    );
    let fraction = audit_fraction.to_string();
    let check = net.uplink_accepting(
        &[
            "check",
            "-r",
            "--json",
            "--audit-fraction",
            &fraction,
            &scope,
        ],
        &[0, 2, 3],
    )?;
    let c = json(&check)?;
    let audit = c["audit_bytes"].as_u64().unwrap_or(0) as f64;
    let checked = c["checked_bytes"].as_u64().unwrap_or(0) as f64;
    let object_bytes = (objects as u64 * size_mib * MIB) as f64;
    println!(
        "case=cli-check scheme={scheme} processes={} audit_fraction={audit_fraction} s={:.2} audit_bytes={audit} piece_bytes_checked={checked} audit_bytes_per_gb_of_pieces={:.0} audit_bytes_per_gb_of_objects={:.0}",
        net.len(),
        check.secs,
        audit / (checked / 1e9).max(1e-9),
        audit / (object_bytes / 1e9).max(1e-9)
    );
    // Kill the last `kill` nodes (never the DHT seed, node 0).
    let n = net.len();
    for i in (n.saturating_sub(kill).max(1)..n).rev() {
        net.kill_node(i)?;
    }
    let repair = net.uplink_accepting(&["repair", "-r", "--json", &scope], &[0, 2, 3])?;
    let r = json(&repair)?;
    let bytes = r["segment_bytes_repaired"].as_u64().unwrap_or(0);
    println!(
        "case=cli-repair scheme={scheme} processes={} killed={kill} segments={} below_threshold={} repaired={} pieces_uploaded={} s={:.2} mbps={:.1} cpu_uplink_s={:.2} failures={}",
        net.len(),
        r["check"]["segments"].as_array().map_or(0, Vec::len),
        r["check"]["below_threshold"],
        r["segments_repaired"],
        r["pieces_uploaded"],
        repair.secs,
        mbps(bytes, repair.secs),
        repair.uplink_cpu,
        r["failures"].as_array().map_or(0, Vec::len)
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
