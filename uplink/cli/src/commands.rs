//! Command-line flags and what each command does, on top of the `uplink` library.
//!
//! One file per command family; imports point down this list only: `parse` (pure
//! parsers) ← `env` (opening an uplink) ← `gateway`, `catalog`, `access`, `objects`
//! (`ls`/`cp`/`rm`), `maintain` (`renew`/`check`/`repair`) ← this file (the clap
//! definitions and the dispatch). Everything goes through the `uplink` library's public API.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use uplink::config::Paths;

use crate::access::{AccessCommand, access};
use crate::catalog::{CatalogCommand, catalog};
use crate::env::{explain_missing, open_pulled};
use crate::gateway::{GatewayArgs, gateway};
use crate::maintain;
use crate::objects::{CpArgs, cp, ls, rm};
use crate::parse::require_location;

#[derive(Debug, Parser)]
#[command(
    name = "uplink",
    version,
    about = "Store and fetch data on a Shoal network",
    after_help = maintain::EXIT_STATUSES
)]
pub struct Args {
    /// Directory holding the config, the access grant and the catalog
    /// (default: the user's config and data dirs).
    #[arg(long, env = "SHOAL_CONFIG_DIR", global = true)]
    config_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, import or inspect the access grant.
    #[command(subcommand)]
    Access(AccessCommand),
    /// Make a bucket: `uplink mb shoal://BUCKET`.
    Mb { bucket: String },
    /// Remove a bucket.
    Rb {
        bucket: String,
        /// Delete the bucket's objects too.
        #[arg(long)]
        force: bool,
    },
    /// List buckets, or the objects of `shoal://BUCKET[/PREFIX]`.
    Ls {
        location: Option<String>,
        /// List every key under the prefix instead of folding at `/`.
        #[arg(short, long)]
        recursive: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Copy files up or objects down; `-` is stdin or stdout.
    Cp(CpArgs),
    /// Remove an object, or with -r every object under a prefix.
    Rm {
        location: String,
        #[arg(short, long)]
        recursive: bool,
    },
    /// Move (rename) an object; its pieces stay where they are.
    Mv { from: String, to: String },
    /// The catalog in the network.
    #[command(subcommand)]
    Catalog(CatalogCommand),
    #[command(flatten)]
    Maintain(maintain::MaintainCommand),
    /// Serve the S3 API for this access (aws CLI, rclone, restic, boto3 ...) until
    /// SIGINT or SIGTERM. Without --access-key/--secret-key, credentials derived from the
    /// access grant are printed at start.
    Gateway(GatewayArgs),
}

pub async fn run(args: Args) -> Result<()> {
    let paths = Paths::resolve(args.config_dir)?;
    match args.command {
        Command::Access(cmd) => access(paths, cmd).await,
        Command::Catalog(cmd) => catalog(paths, cmd).await,
        Command::Maintain(cmd) => maintain::run(paths, cmd).await,
        Command::Gateway(args) => gateway(paths, args).await,
        Command::Mb { bucket } => {
            let env = open_pulled(paths).await?;
            let loc = require_location(&bucket)?;
            env.uplink
                .create_bucket(&loc.bucket)
                .with_context(|| format!("cannot make bucket {bucket}"))?;
            env.publish().await?;
            println!("Bucket {} created", loc.bucket);
            Ok(())
        }
        Command::Rb { bucket, force } => {
            let env = open_pulled(paths).await?;
            let loc = require_location(&bucket)?;
            let report = env
                .uplink
                .remove_bucket(&loc.bucket, force)
                .await
                .with_context(|| format!("cannot remove bucket {bucket}"))?;
            env.publish().await?;
            if report.pieces_failed > 0 {
                eprintln!(
                    "warning: {} pieces could not be deleted now; their nodes drop them when the lease ends",
                    report.pieces_failed
                );
            }
            println!("Bucket {} removed", loc.bucket);
            Ok(())
        }
        Command::Ls {
            location,
            recursive,
            json,
        } => {
            let env = open_pulled(paths).await?;
            explain_missing(&env, ls(&env, location, recursive, json))
        }
        Command::Cp(cp_args) => {
            let env = open_pulled(paths).await?;
            explain_missing(&env, cp(&env, cp_args).await)
        }
        Command::Rm {
            location,
            recursive,
        } => {
            let env = open_pulled(paths).await?;
            explain_missing(&env, rm(&env, &location, recursive).await)
        }
        Command::Mv { from, to } => {
            let env = open_pulled(paths).await?;
            let (a, b) = (require_location(&from)?, require_location(&to)?);
            let to_key = if b.key.is_empty() || b.key.ends_with('/') {
                format!("{}{}", b.key, a.key.rsplit('/').next().unwrap_or(&a.key))
            } else {
                b.key.clone()
            };
            env.uplink
                .rename(&a.bucket, &a.key, &b.bucket, &to_key)
                .with_context(|| format!("cannot move {from} to {to}"))?;
            env.publish().await?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::objects::read_buffer;
    use crate::parse::{Location, format_time, parse_duration, parse_location, parse_range};
    use std::time::Duration;

    #[test]
    fn a_small_file_gets_a_small_read_buffer() {
        assert_eq!(read_buffer(Some(100)), 8 << 10);
        assert_eq!(read_buffer(Some(64 << 10)), (64 << 10) + 1);
        assert_eq!(read_buffer(Some(5 << 30)), 1 << 20);
        assert_eq!(read_buffer(None), 1 << 20, "unknown size: the largest");
    }

    #[test]
    fn locations_ranges_and_durations_parse() {
        assert_eq!(
            parse_location("shoal://b/a/c"),
            Some(Location {
                bucket: "b".into(),
                key: "a/c".into()
            })
        );
        assert_eq!(
            parse_location("shoal://b"),
            Some(Location {
                bucket: "b".into(),
                key: "".into()
            })
        );
        assert_eq!(parse_location("/tmp/x"), None);
        assert_eq!(parse_range("0-9", 100).unwrap(), (0, 10));
        assert_eq!(parse_range("10-", 100).unwrap(), (10, 100));
        assert_eq!(parse_range("90-200", 100).unwrap(), (90, 100));
        assert!(parse_range("5-2", 100).is_err());
        assert!(parse_range("x", 100).is_err());
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("3y").is_err());
        assert_eq!(format_time(0), "1970-01-01 00:00:00");
        assert_eq!(format_time(1_700_000_000_000), "2023-11-14 22:13:20");
    }
}
