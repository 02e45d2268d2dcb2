//! `uplink gateway`: the S3 gateway until a signal, and the exit deadline.

use std::time::Duration;

use crate::env::open_pulled;
use crate::parse::parse_duration;
use anyhow::{Context, Result, bail};
use uplink::config::Paths;

#[derive(Debug, clap::Args)]
pub(super) struct GatewayArgs {
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:7780")]
    pub(super) listen: std::net::SocketAddr,
    /// Access key id clients must sign with (default: derived from the grant).
    #[arg(long, env = "SHOAL_GATEWAY_ACCESS_KEY", requires = "secret_key")]
    pub(super) access_key: Option<String>,
    /// Secret key clients must sign with (default: derived from the grant).
    #[arg(
        long,
        env = "SHOAL_GATEWAY_SECRET_KEY",
        requires = "access_key",
        hide_env_values = true
    )]
    pub(super) secret_key: Option<String>,
    /// Region clients sign for.
    #[arg(long, default_value = "us-east-1")]
    pub(super) region: String,
    /// Domain for virtual-host-style requests (BUCKET.DOMAIN); repeatable.
    #[arg(long = "domain", default_value = "localhost")]
    pub(super) domains: Vec<String>,
    /// Multipart uploads neither completed nor aborted after this long are aborted
    /// and their pieces deleted (e.g. 7d, 12h).
    #[arg(long, default_value = "7d")]
    pub(super) multipart_max_age: String,
    /// Derive new credentials from the grant (the next epoch, saved in the config dir)
    /// and refuse the old ones from now on; clients need the new keys.
    #[arg(long)]
    pub(super) rotate_credentials: bool,
    /// Serve the metrics page only to requests with `Authorization: Bearer TOKEN`.
    #[arg(long, env = "SHOAL_GATEWAY_METRICS_TOKEN", hide_env_values = true)]
    pub(super) metrics_token: Option<String>,
    /// Print the secret key at start (it is not printed otherwise: terminal scrollback
    /// and service logs are read by more people than the key should be).
    #[arg(long)]
    pub(super) show_secret: bool,
}

pub(super) async fn gateway(paths: Paths, args: GatewayArgs) -> Result<()> {
    let mut epoch = paths
        .gateway_epoch()
        .context("cannot read the gateway's credential epoch")?;
    if args.rotate_credentials {
        if args.access_key.is_some() {
            bail!(
                "--rotate-credentials rotates the derived credentials; it cannot be used with --access-key"
            );
        }
        epoch += 1;
        paths
            .save_gateway_epoch(epoch)
            .context("cannot save the gateway's credential epoch")?;
        eprintln!(
            "gateway credentials rotated (epoch {epoch}): the old keys are refused from now on"
        );
    }
    let env = open_pulled(paths).await?;
    let derived = args.access_key.is_none();
    let (access_key, secret_key) = match (args.access_key, args.secret_key) {
        (Some(a), Some(s)) => (a, s),
        _ => uplink_gateway::derived_credentials(env.uplink.access().root().as_bytes(), epoch),
    };
    if access_key.trim().is_empty() || secret_key.trim().is_empty() {
        bail!("--access-key and --secret-key must not be empty");
    }
    let mut config = uplink_gateway::GatewayConfig::new(access_key.clone(), secret_key.clone());
    config.region = args.region.clone();
    config.domains = args.domains;
    config.multipart_max_age = parse_duration(&args.multipart_max_age)?;
    config.metrics_token = args.metrics_token.filter(|t| !t.is_empty());
    // Requests in flight get 10 s after a shutdown signal, the last publish the rest of
    // EXIT_DEADLINE.
    config.shutdown_grace = Duration::from_secs(10);
    let gateway = uplink_gateway::Gateway::bind(env.uplink.clone(), args.listen, config)
        .await
        .context("cannot start the S3 gateway")?;
    let addr = gateway.local_addr()?;
    println!("S3 gateway for this access on http://{addr}");
    println!("  access key: {access_key}");
    if args.show_secret {
        println!("  secret key: {secret_key}");
    } else if derived {
        println!("  secret key: not shown; run `uplink gateway --show-secret` to print it");
    } else {
        println!("  secret key: as given (--secret-key or SHOAL_GATEWAY_SECRET_KEY)");
    }
    println!("  region:     {}", args.region);
    println!(
        "  try:        AWS_ACCESS_KEY_ID={access_key} AWS_SECRET_ACCESS_KEY=... aws --endpoint-url http://{addr} s3 ls"
    );
    println!(
        "  metrics:    http://{addr}{}",
        uplink_gateway::METRICS_PATH
    );
    use std::io::Write;
    std::io::stdout().flush()?;
    gateway
        .run(shutdown_signal())
        .await
        .context("the gateway stopped, but the catalog's last changes are not in the network yet; run `uplink catalog sync`")?;
    eprintln!("gateway stopped; every change is in the network");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub(super) async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
    exit_after(EXIT_DEADLINE);
}

/// How long the gateway may take, from the shutdown signal, to finish its requests and
/// publish: then the process exits whatever it is doing (a hung call never keeps it).
pub(crate) const EXIT_DEADLINE: Duration = Duration::from_secs(25);

/// Exits the process `after` from now, from a plain thread (so that neither a busy
/// runtime nor a stuck blocking call can keep it alive). The catalog loses nothing: a
/// change not yet published stays queued in the database for the next command.
pub(crate) fn exit_after(after: Duration) {
    let spawned = std::thread::Builder::new()
        .name("exit-deadline".into())
        .spawn(move || {
            std::thread::sleep(after);
            eprintln!(
                "error: the shutdown did not finish within {} s of the signal; exiting now. \
                 Changes not yet in the network stay queued on this machine: run `uplink catalog sync`.",
                after.as_secs()
            );
            std::process::exit(1);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the exit deadline thread");
    }
}
