//! `uplink ls`, `cp` (and its planner) and `rm`: objects and files.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::env::Env;
use crate::parse::{
    Location, format_time, parse_duration, parse_location, parse_range, require_location,
};
use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use uplink::catalog::Listing;
use uplink::{PutOptions, Scheme};

#[derive(Debug, clap::Args)]
pub(super) struct CpArgs {
    pub(super) src: String,
    pub(super) dst: String,
    /// Copy a directory tree (or every object under a prefix).
    #[arg(short, long)]
    pub(super) recursive: bool,
    /// Show progress bars even when stderr is not a terminal.
    #[arg(long, overrides_with = "no_progress")]
    pub(super) progress: bool,
    /// Never show progress bars.
    #[arg(long)]
    pub(super) no_progress: bool,
    /// Redundancy scheme K/REPAIR/SUCCESS/TOTAL for uploads.
    #[arg(long = "rs", value_name = "K/R/S/T")]
    pub(super) scheme: Option<Scheme>,
    /// Files transferred at once with -r (default from config, else 4).
    #[arg(long, value_name = "N")]
    pub(super) parallelism: Option<usize>,
    /// Download only bytes START through END (inclusive; END may be empty for "to the end").
    #[arg(long, value_name = "START-END")]
    pub(super) range: Option<String>,
    /// Let uploaded objects expire after this long (e.g. 30s, 90m, 12h, 7d).
    #[arg(long, value_name = "DURATION")]
    pub(super) expires: Option<String>,
}

pub(super) fn ls(env: &Env, location: Option<String>, recursive: bool, json: bool) -> Result<()> {
    let Some(location) = location else {
        for b in env.uplink.buckets()? {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"kind": "bucket", "name": b.name, "created_ms": b.created_ms})
                );
            } else {
                println!("{}  {}", format_time(b.created_ms), b.name);
            }
        }
        return Ok(());
    };
    let loc = require_location(&location)?;
    let rows = env
        .uplink
        .list(&loc.bucket, &loc.key, recursive)
        .with_context(|| format!("cannot list {location}"))?;
    for row in rows {
        if json {
            println!("{}", serde_json::to_string(&row)?);
            continue;
        }
        match row {
            Listing::Object {
                key,
                size,
                modified_ms,
                ..
            } => {
                println!("{}  {size:>14}  {key}", format_time(modified_ms));
            }
            Listing::Prefix { prefix } => println!("{:>19}  {:>14}  {prefix}", "", "PRE"),
        }
    }
    Ok(())
}

pub(super) fn progress_bar(args: &CpArgs, total: u64) -> ProgressBar {
    let show = !args.no_progress && (args.progress || std::io::stderr().is_terminal());
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{bar:40.cyan/blue} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
    ) {
        bar.set_style(style);
    }
    bar
}

/// One transfer of a `cp`.
#[derive(Debug)]
pub(super) enum Transfer {
    Up { from: Option<PathBuf>, to: Location },
    Down { from: Location, to: Option<PathBuf> },
}

pub(super) fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read directory {}", dir.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot read directory {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let kind = e
            .file_type()
            .with_context(|| format!("cannot stat {}", path.display()))?;
        if kind.is_dir() {
            walk(&path, out)?;
        } else if kind.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

pub(super) fn join_key(prefix: &str, rest: &str) -> String {
    if prefix.is_empty() || prefix.ends_with('/') {
        format!("{prefix}{rest}")
    } else {
        format!("{prefix}/{rest}")
    }
}

pub(super) fn plan_cp(env: &Env, args: &CpArgs) -> Result<Vec<Transfer>> {
    let (src, dst) = (parse_location(&args.src), parse_location(&args.dst));
    match (src, dst) {
        (None, Some(to)) => {
            if args.src == "-" {
                if to.key.is_empty() || to.key.ends_with('/') {
                    bail!(
                        "uploading stdin needs a full object key, not `{}`",
                        args.dst
                    );
                }
                return Ok(vec![Transfer::Up { from: None, to }]);
            }
            let src = PathBuf::from(&args.src);
            if src.is_dir() {
                if !args.recursive {
                    bail!("{} is a directory; use -r to copy it", src.display());
                }
                let mut files = Vec::new();
                walk(&src, &mut files)?;
                return files
                    .into_iter()
                    .map(|f| {
                        let rel = f.strip_prefix(&src).unwrap_or(&f);
                        let rel = rel
                            .to_str()
                            .ok_or_else(|| anyhow!("{} is not valid UTF-8", f.display()))?
                            .to_string();
                        Ok(Transfer::Up {
                            from: Some(f),
                            to: Location {
                                bucket: to.bucket.clone(),
                                key: join_key(&to.key, &rel),
                            },
                        })
                    })
                    .collect();
            }
            let name = src
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| anyhow!("{} has no usable file name", src.display()))?;
            let key = if to.key.is_empty() || to.key.ends_with('/') {
                format!("{}{name}", to.key)
            } else {
                to.key.clone()
            };
            Ok(vec![Transfer::Up {
                from: Some(src),
                to: Location {
                    bucket: to.bucket,
                    key,
                },
            }])
        }
        (Some(from), None) => {
            if args.recursive {
                let rows = env.uplink.list(&from.bucket, &from.key, true)?;
                let base = PathBuf::from(&args.dst);
                let strip = if from.key.is_empty() || from.key.ends_with('/') {
                    from.key.clone()
                } else {
                    format!("{}/", from.key)
                };
                return rows
                    .into_iter()
                    .filter_map(|r| match r {
                        Listing::Object { key, .. } => Some(key),
                        Listing::Prefix { .. } => None,
                    })
                    .map(|key| {
                        let rel = key.strip_prefix(&strip).unwrap_or(&key).to_string();
                        if rel.split('/').any(|c| c == ".." || c == ".")
                            || rel.starts_with('/')
                            || rel.is_empty()
                        {
                            bail!("object key `{key}` cannot be a safe local path");
                        }
                        Ok(Transfer::Down {
                            from: Location {
                                bucket: from.bucket.clone(),
                                key: key.clone(),
                            },
                            to: Some(base.join(rel)),
                        })
                    })
                    .collect();
            }
            if from.key.is_empty() {
                bail!(
                    "`{}` names a bucket, not an object; use -r to copy everything in it",
                    args.src
                );
            }
            if args.dst == "-" {
                return Ok(vec![Transfer::Down { from, to: None }]);
            }
            let mut to = PathBuf::from(&args.dst);
            if to.is_dir() {
                to = to.join(from.key.rsplit('/').next().unwrap_or(&from.key));
            }
            Ok(vec![Transfer::Down { from, to: Some(to) }])
        }
        (Some(_), Some(_)) => bail!(
            "copying between two shoal:// locations is not supported yet; download and upload instead"
        ),
        (None, None) => bail!("one of SRC and DST must be a shoal:// location"),
    }
}

/// Longest `cp` waits after its transfers for the deletion of late long-tail pieces.
pub(super) const LATE_PIECE_WAIT: Duration = Duration::from_secs(5);

/// The read buffer for a file of `size` bytes: 1 MiB, or the file and a byte (to see
/// its end) when smaller. The buffer is zeroed when made: a 1 MiB buffer for each file
/// of a `cp -r` of small files was a fifth of its CPU time (perf, 3,000 × 100 B).
pub(super) fn read_buffer(size: Option<u64>) -> usize {
    pub(super) const MAX: usize = 1 << 20;
    size.map_or(MAX, |s| {
        usize::try_from(s)
            .unwrap_or(MAX)
            .saturating_add(1)
            .clamp(8 << 10, MAX)
    })
}

pub(super) async fn cp(env: &Env, args: CpArgs) -> Result<()> {
    let transfers = plan_cp(env, &args)?;
    let expires = args.expires.as_deref().map(parse_duration).transpose()?;
    let mut total = 0u64;
    for t in &transfers {
        total += match t {
            Transfer::Up { from: Some(p), .. } => {
                std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
            }
            Transfer::Up { from: None, .. } => 0,
            Transfer::Down { from, .. } => env
                .uplink
                .stat(&from.bucket, &from.key)
                .map(|e| e.size)
                .unwrap_or(0),
        };
    }
    let bar = progress_bar(&args, total);
    let progress: uplink::Progress = {
        let bar = bar.clone();
        Arc::new(move |n| bar.inc(n))
    };
    let parallelism = args.parallelism.unwrap_or(env.parallelism).max(1);
    let count = transfers.len();
    let results: Vec<Result<()>> = futures::stream::iter(transfers.into_iter().map(|t| {
        let progress = progress.clone();
        let args = &args;
        async move { transfer(env, args, t, expires, progress).await }
    }))
    .buffer_unordered(parallelism)
    .collect()
    .await;
    bar.finish_and_clear();
    // One publish for the whole copy, also when some transfers failed: what was stored
    // must be found again.
    let published = env.publish().await;
    // Let the reaper delete long-tail pieces whose receipts come late rather than leave
    // them to their lease; bounded, so a stalled node cannot hold the command up.
    env.uplink.settle(LATE_PIECE_WAIT).await;
    let failures: Vec<_> = results.into_iter().filter_map(|r| r.err()).collect();
    for f in &failures {
        eprintln!("error: {f:#}");
    }
    if !failures.is_empty() {
        bail!("{} of {count} transfers failed", failures.len());
    }
    published
}

pub(super) async fn transfer(
    env: &Env,
    args: &CpArgs,
    t: Transfer,
    expires: Option<Duration>,
    progress: uplink::Progress,
) -> Result<()> {
    match t {
        Transfer::Up { from, to } => {
            let opts = PutOptions {
                size_hint: None,
                content_type: None,
                metadata: BTreeMap::new(),
                expires,
                scheme: args.scheme,
                progress: Some(progress),
            };
            let name = from
                .as_ref()
                .map_or("stdin".to_string(), |p| p.display().to_string());
            let target = format!("shoal://{}/{}", to.bucket, to.key);
            let report = match &from {
                Some(path) => {
                    let file = tokio::fs::File::open(path)
                        .await
                        .with_context(|| format!("cannot open {}", path.display()))?;
                    let size = file.metadata().await.ok().map(|m| m.len());
                    let opts = PutOptions {
                        size_hint: size,
                        ..opts
                    };
                    env.uplink
                        .put(
                            &to.bucket,
                            &to.key,
                            tokio::io::BufReader::with_capacity(read_buffer(size), file),
                            opts,
                        )
                        .await
                }
                None => {
                    env.uplink
                        .put(&to.bucket, &to.key, tokio::io::stdin(), opts)
                        .await
                }
            }
            .with_context(|| format!("cannot copy {name} to {target}"))?;
            if let Some(used) = report.used
                && used != report.requested
            {
                // Said once per scheme pair, not once per file of a recursive copy.
                static SAID: std::sync::Mutex<BTreeSet<(String, String)>> =
                    std::sync::Mutex::new(BTreeSet::new());
                let first = SAID
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert((report.requested.to_string(), used.to_string()));
                if first {
                    eprintln!(
                        "note: the network is too small for scheme {}; {target} was stored with {used}",
                        report.requested
                    );
                }
            }
            Ok(())
        }
        Transfer::Down { from, to } => {
            let source = format!("shoal://{}/{}", from.bucket, from.key);
            let range = match &args.range {
                Some(r) => {
                    let size = env
                        .uplink
                        .stat(&from.bucket, &from.key)
                        .with_context(|| format!("cannot read {source}"))?
                        .size;
                    Some(parse_range(r, size)?)
                }
                None => None,
            };
            match to {
                None => {
                    let mut out = tokio::io::stdout();
                    env.uplink
                        .get(&from.bucket, &from.key, range, &mut out, Some(progress))
                        .await
                        .with_context(|| format!("cannot copy {source} to stdout"))?;
                }
                Some(path) => {
                    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                        tokio::fs::create_dir_all(parent)
                            .await
                            .with_context(|| format!("cannot create {}", parent.display()))?;
                    }
                    // Write next to the target and rename, so a failed download never
                    // leaves a truncated file under the real name.
                    let tmp = path.with_file_name(format!(
                        ".{}.shoal-partial",
                        path.file_name()
                            .and_then(|n| n.to_str())
                            .unwrap_or("download")
                    ));
                    let file = tokio::fs::File::create(&tmp)
                        .await
                        .with_context(|| format!("cannot create {}", tmp.display()))?;
                    let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
                    let result = env
                        .uplink
                        .get(&from.bucket, &from.key, range, &mut out, Some(progress))
                        .await;
                    if let Err(e) = result {
                        let _ = tokio::fs::remove_file(&tmp).await;
                        return Err(e).with_context(|| {
                            format!("cannot copy {source} to {}", path.display())
                        });
                    }
                    tokio::fs::rename(&tmp, &path).await.with_context(|| {
                        format!("cannot move the download into {}", path.display())
                    })?;
                }
            }
            Ok(())
        }
    }
}

pub(super) async fn rm(env: &Env, location: &str, recursive: bool) -> Result<()> {
    let loc = require_location(location)?;
    let keys: Vec<String> = if recursive {
        env.uplink
            .list(&loc.bucket, &loc.key, true)?
            .into_iter()
            .filter_map(|r| match r {
                Listing::Object { key, .. } => Some(key),
                Listing::Prefix { .. } => None,
            })
            .collect()
    } else {
        if loc.key.is_empty() {
            bail!("`{location}` names a bucket; use `uplink rb` or rm -r");
        }
        vec![loc.key.clone()]
    };
    let mut failed = 0;
    let mut result = Ok(());
    for key in keys {
        match env
            .uplink
            .delete(&loc.bucket, &key)
            .await
            .with_context(|| format!("cannot remove shoal://{}/{key}", loc.bucket))
        {
            Ok(r) => {
                failed += r.pieces_failed;
                println!("removed shoal://{}/{key}", loc.bucket);
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    // What was removed is published even when a later removal failed.
    env.publish().await?;
    result?;
    if failed > 0 {
        eprintln!(
            "warning: {failed} pieces could not be deleted now; their nodes drop them when the lease ends"
        );
    }
    Ok(())
}
