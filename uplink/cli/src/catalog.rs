//! `uplink catalog ...`: the catalog in the network (status, pull, flush, rebuild).

use crate::env::{open, warn_unavailable};
use crate::parse::format_time;
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use uplink::config::Paths;

#[derive(Debug, Subcommand)]
pub(super) enum CatalogCommand {
    /// This writer's id, changes not yet published, the last snapshot, and every writer
    /// known with the sequence number merged here.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Pull what other writers published and publish what is queued here.
    Sync,
    /// The last resort when the DHT has lost this access's catalog records (every
    /// command then finds no catalog, or fails on a missing head record): list this
    /// owner's pieces on every node, find the catalog's own among them (their tags are
    /// sealed with the grant), merge every snapshot and delta found into this config
    /// dir's catalog, and publish each writer's head record and the writers record again.
    Rebuild {
        /// The report as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(super) async fn catalog(paths: Paths, cmd: CatalogCommand) -> Result<()> {
    match cmd {
        CatalogCommand::Status { json } => {
            let env = open(paths).await?;
            let status = env.uplink.catalog_status()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
                return Ok(());
            }
            println!("writer:        {} (this config dir)", status.writer);
            println!("unpublished:   {} changes", status.pending);
            println!("published seq: {}", status.published_seq);
            match &status.last_snapshot {
                Some(s) => println!(
                    "last snapshot: by writer {} at {}, {} entries",
                    s.taken_by,
                    format_time(s.taken_at_ms),
                    s.entries
                ),
                None => println!("last snapshot: none yet"),
            }
            println!("writers (sequence number merged here):");
            for (w, seq) in &status.writers {
                let me = if *w == status.writer {
                    "  (this one)"
                } else {
                    ""
                };
                let missing = if status.unavailable.contains_key(w) {
                    "  (UNAVAILABLE, see below)"
                } else {
                    ""
                };
                println!("  {w}  {seq}{me}{missing}");
            }
            if !status.unavailable.is_empty() {
                println!("writers whose changes the last pull could not read:");
                for (w, why) in &status.unavailable {
                    println!("  {w}: {why}");
                }
            }
            Ok(())
        }
        CatalogCommand::Rebuild { json } => {
            let env = open(paths).await?;
            let r = env
                .uplink
                .rebuild_catalog()
                .await
                .context("cannot rebuild the catalog from the nodes")?;
            let published = env.uplink.flush().await;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print_rebuild(&r);
            }
            published.context("the catalog was rebuilt here, but publishing it failed")?;
            if r.writers.is_empty() {
                bail!(
                    "no catalog piece of this access was found on the {} nodes that answered ({} asked): either nothing was ever stored with this grant, or its catalog's pieces are gone (their leases ended)",
                    r.nodes_answered,
                    r.nodes_asked
                );
            }
            Ok(())
        }
        CatalogCommand::Sync => {
            let env = open(paths).await?;
            let pulled = env.uplink.pull().await.context("cannot pull the catalog")?;
            warn_unavailable(&pulled);
            let published = env
                .uplink
                .flush()
                .await
                .context("cannot publish the catalog's changes")?;
            println!(
                "pulled {} deltas and {} snapshots from {} writers ({} changes merged); published {}",
                pulled.deltas,
                pulled.snapshots,
                pulled.writers,
                pulled.changes_applied,
                match published.seq {
                    Some(seq) => format!("{} changes as delta {seq}", published.changes),
                    None => "nothing (no changes queued)".to_string(),
                }
            );
            Ok(())
        }
    }
}

pub(super) fn print_rebuild(r: &uplink::rebuild::RebuildReport) {
    println!(
        "nodes: {} answered of {} asked; {} pieces of this access listed, {} of them the catalog's ({} skipped)",
        r.nodes_answered, r.nodes_asked, r.pieces_listed, r.catalog_pieces, r.pieces_skipped
    );
    println!(
        "blobs: {} found, {} merged ({} changes applied)",
        r.blobs_found, r.blobs_merged, r.changes_applied
    );
    println!("writers:");
    for (w, f) in &r.writers {
        let snapshot = f.snapshot.map_or("no snapshot".to_string(), |s| {
            format!("snapshot at delta {s}")
        });
        let head = match f.head {
            Some(h) if f.head_republished => format!("head delta {h} republished"),
            Some(h) => format!("head delta {h} NOT republished"),
            None => "no delta found".to_string(),
        };
        println!(
            "  {w}  {snapshot}, {} deltas merged, {head}",
            f.deltas.len()
        );
    }
    println!(
        "writers record: {}",
        if r.writers_republished {
            "republished"
        } else {
            "NOT republished"
        }
    );
    println!("catalog: {} buckets, {} objects", r.buckets, r.objects);
    if r.unrecovered.is_empty() {
        println!("nothing found was left unrecovered");
    } else {
        println!("not recovered:");
        for u in &r.unrecovered {
            println!("  {}: {}", u.what, u.reason);
        }
    }
}
