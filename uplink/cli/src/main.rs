//! `uplink`: the Shoal command-line client. Thin: parses flags, resolves the config,
//! and calls the library (`uplink`) and the S3 gateway (`uplink_gateway`), through their
//! public APIs only.
//!
//! # The modules and the one direction of imports
//!
//! One file per command family; imports point down this list only:
//!
//! ```text
//!   main ──> commands (the clap definitions and the dispatch)
//!               │
//!               ├──> access, catalog, objects (ls/cp/rm), maintain (renew/check/repair),
//!               │    gateway (`uplink gateway`)
//!               │       │
//!               │       v
//!               └────> env (opening an uplink) ──> parse (pure parsers)
//!
//!   every module ──> the `uplink` library; gateway ──> `uplink_gateway` ──> `uplink`
//! ```

mod access;
mod catalog;
mod commands;
mod env;
mod gateway;
mod maintain;
mod objects;
mod parse;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // s3s logs every refused S3 request (a client's error) at ERROR.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,s3s=off")),
        )
        .init();
    let args = commands::Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(commands::run(args));
    // Tasks still running (a gateway's background work, a blocking call that hangs)
    // do not keep the process: they get two seconds.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `check` and `repair` exit with their documented statuses (see `--help`).
        Err(e) => match e.downcast_ref::<maintain::ExitWith>() {
            Some(status) => {
                eprintln!("{status}");
                ExitCode::from(status.code)
            }
            None => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}
