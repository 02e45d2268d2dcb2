//! `uplink renew`, `uplink check` and `uplink repair`: keeping data alive (see
//! `uplink::maintain` and `uplink::health`).

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Subcommand;
use uplink::health::{EXIT_BELOW_THRESHOLD, EXIT_HEALTHY, EXIT_LOST, SegmentState};
use uplink::maintain::{CheckOptions, CheckReport, Maintenance, Scope};

use crate::env::{Env, open_pulled};
use crate::parse::{format_time, parse_duration, require_location};
use uplink::config::Paths;

/// Exit statuses of `check` and `repair`, shown in `--help`.
pub(crate) const EXIT_STATUSES: &str = "Exit status of `check` and `repair`: 0 every segment healthy; 2 some segment at or below \
its repair threshold (none lost); 3 some segment lost (fewer than k healthy pieces); 1 any \
other error.";

#[derive(Debug, Subcommand)]
pub enum MaintainCommand {
    /// Extend the leases of pieces (default: of everything, catalog included).
    ///
    /// Every piece is renewed by the configured lease (default 90 days), one signed
    /// batch order per node. Objects stored with --expires are left to expire.
    /// Idempotent; never shortens a lease.
    Renew {
        /// `shoal://BUCKET[/PREFIX]`: only these objects (the catalog is renewed only
        /// when no location is given).
        location: Option<String>,
        /// Every object under the prefix (without it: the one object named).
        #[arg(short, long)]
        recursive: bool,
        /// Lease from now (e.g. 30d, 12h); default `default_lease_secs` of config.toml.
        #[arg(long, value_name = "DURATION")]
        lease: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Audit pieces (default: of everything, catalog included); exit 2 below
    /// threshold, 3 lost.
    ///
    /// Per segment, how many pieces are reachable and verified (random blocks checked
    /// against the recorded hashes); a summary of healthy, below the repair threshold,
    /// and lost segments.
    #[command(after_help = EXIT_STATUSES)]
    Check {
        #[command(flatten)]
        args: CheckArgs,
        /// Repair what is below the threshold, as `uplink repair` does.
        #[arg(long)]
        repair: bool,
    },
    /// Check, then repair every segment at or below its repair threshold.
    ///
    /// Fetches k verified pieces, regenerates only the missing ones on new nodes (one
    /// per /24, none holding a piece of the segment), and publishes the new placements.
    /// A damaged catalog blob is replaced by a fresh snapshot of the whole catalog.
    /// Healthy segments are untouched; rerun after a crash.
    #[command(after_help = EXIT_STATUSES)]
    Repair {
        #[command(flatten)]
        args: CheckArgs,
    },
}

/// What `check` and `repair` cover, and how.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// `shoal://BUCKET[/PREFIX]`: only these objects (the catalog's own blobs are
    /// checked only when no location is given).
    location: Option<String>,
    /// Every object under the prefix (without it: the one object named).
    #[arg(short, long)]
    recursive: bool,
    /// One JSON document instead of text.
    #[arg(long)]
    json: bool,
    /// Fraction of each piece's blocks to audit (at least 1, at most 8 per piece).
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    audit_fraction: f64,
}

impl CheckArgs {
    fn scope(&self) -> Result<Scope> {
        target(self.location.as_deref(), self.recursive)
    }

    fn options(&self) -> CheckOptions {
        CheckOptions {
            audit_fraction: self.audit_fraction,
        }
    }
}

/// A command that finished but must exit with `code` (the documented statuses above).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ExitWith {
    pub code: u8,
    pub message: String,
}

/// The objects a location names, or without one everything (catalog included).
fn target(location: Option<&str>, recursive: bool) -> Result<Scope> {
    let Some(location) = location else {
        return Ok(Scope::everything());
    };
    let loc = require_location(location)?;
    Ok(Scope {
        bucket: Some(loc.bucket),
        prefix: loc.key,
        recursive,
    })
}

fn finish(code: u8) -> Result<()> {
    match code {
        EXIT_HEALTHY => Ok(()),
        EXIT_BELOW_THRESHOLD => Err(ExitWith {
            code,
            message: "some segments are at or below their repair threshold; run `uplink repair`"
                .into(),
        }
        .into()),
        EXIT_LOST => Err(ExitWith {
            code,
            message: "some segments are lost: fewer than k pieces could be verified".into(),
        }
        .into()),
        other => Err(ExitWith {
            code: other,
            message: "unexpected check status".into(),
        }
        .into()),
    }
}

fn print_check(r: &CheckReport) {
    let objects = r
        .segments
        .iter()
        .map(|s| (format!("{}/{}", s.bucket, s.key), s));
    let catalog = r.catalog.iter().map(|s| (format!("catalog {}", s.key), s));
    for (what, s) in objects.chain(catalog) {
        if s.state == SegmentState::Healthy {
            continue;
        }
        println!(
            "{:<15} {what} segment {}: {} of {} pieces verified (scheme {})",
            format!("{:?}", s.state),
            s.segment,
            s.healthy,
            s.pieces,
            s.scheme
        );
        for p in &s.problems {
            let node = p.node.get(..16).unwrap_or(&p.node);
            println!("    piece {} on {node}: {}", p.index, p.reason);
        }
    }
    let catalog = if r.catalog.is_empty() {
        String::new()
    } else {
        format!(" plus {} of the catalog's own", r.catalog.len())
    };
    println!(
        "{} objects, {} segments{catalog}: {} healthy, {} below the repair threshold, {} lost ({} bytes audited for {} bytes of pieces)",
        r.objects,
        r.segments.len(),
        r.healthy,
        r.below_threshold,
        r.lost,
        r.audit_bytes,
        r.checked_bytes
    );
    for e in &r.catalog_renewed_elsewhere {
        let whose = if e.presumed_gone {
            "renewed by no live writer: its writer has not published"
        } else {
            "renewed only by their writer, which last published"
        };
        eprintln!(
            "{}: {} catalog deltas of writer {} that the newest snapshot does not cover are {whose} since {}; `uplink renew` takes a snapshot that covers them",
            if e.presumed_gone { "warning" } else { "note" },
            e.deltas,
            e.writer,
            format_time(e.last_published_ms)
        );
    }
}

async fn repair(env: &Env, scope: &Scope, options: CheckOptions, json: bool) -> Result<()> {
    let report = Maintenance::new(&env.uplink)
        .repair(scope, options)
        .await
        .context("repair failed")?;
    env.publish().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_check(&report.check);
        println!(
            "repaired {} segments ({} bytes): {} new pieces stored",
            report.segments_repaired, report.segment_bytes_repaired, report.pieces_uploaded
        );
        if report.catalog_snapshot {
            println!(
                "the catalog's blobs had lost pieces: published a fresh snapshot of the catalog"
            );
        }
        for f in &report.failures {
            eprintln!("warning: {f}");
        }
    }
    finish(report.exit_status())
}

pub async fn run(paths: Paths, cmd: MaintainCommand) -> Result<()> {
    match cmd {
        MaintainCommand::Renew {
            location,
            recursive,
            lease,
            json,
        } => {
            let env = open_pulled(paths).await?;
            let scope = target(location.as_deref(), recursive)?;
            let lease: Option<Duration> = lease.as_deref().map(parse_duration).transpose()?;
            let r = Maintenance::new(&env.uplink)
                .renew(&scope, lease)
                .await
                .context("renew failed")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "renewed {} of {} pieces until {} ({} orders to {} nodes; {} catalog blobs)",
                    r.renewed,
                    r.pieces,
                    format_time(r.expires_at_ms),
                    r.orders,
                    r.nodes,
                    r.catalog_blobs
                );
                if r.catalog_snapshot {
                    println!(
                        "took a snapshot of the catalog covering every writer's deltas merged here: this machine now renews them"
                    );
                }
                if r.catalog_records > 0 {
                    println!("renewed {} catalog records", r.catalog_records);
                }
                if r.capped > 0 {
                    eprintln!(
                        "note: {} pieces were renewed only up to their node's max_lease",
                        r.capped
                    );
                }
                if r.missing + r.refused + r.unreachable > 0 {
                    eprintln!(
                        "warning: {} pieces missing, {} refused, {} on unreachable nodes; run `uplink check` and `uplink repair`",
                        r.missing, r.refused, r.unreachable
                    );
                }
            }
            Ok(())
        }
        MaintainCommand::Check {
            args,
            repair: also_repair,
        } => {
            let env = open_pulled(paths).await?;
            let (scope, options, json) = (args.scope()?, args.options(), args.json);
            if also_repair {
                return repair(&env, &scope, options, json).await;
            }
            let r = Maintenance::new(&env.uplink)
                .check(&scope, options)
                .await
                .context("check failed")?;
            // Audits update this machine's node reputation.
            env.uplink.catalog().flush()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print_check(&r);
            }
            finish(r.exit_status())
        }
        MaintainCommand::Repair { args } => {
            let env = open_pulled(paths).await?;
            repair(&env, &args.scope()?, args.options(), args.json).await
        }
    }
}
