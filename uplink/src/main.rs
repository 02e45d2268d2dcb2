//! `uplink`: the Shoal command-line client. Thin: parses flags, resolves the config,
//! and calls the library (see `cli/`).

mod cli;

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
    let args = cli::Args::parse();
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
    let result = runtime.block_on(cli::run(args));
    // Tasks still running (a gateway's background work, a blocking call that hangs)
    // do not keep the process: they get two seconds.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `check` and `repair` exit with their documented statuses (see `--help`).
        Err(e) => match e.downcast_ref::<cli::ExitWith>() {
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
