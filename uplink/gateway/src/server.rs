//! The hyper edge: bind, the accept loop with its connection cap and backoff, graceful
//! shutdown, and the background tasks of a running gateway.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use s3s::config::{S3Config, StaticConfigProvider};
use s3s::service::{S3Service, S3ServiceBuilder};
use shoal_proto::limits::{AcceptBackoff, ConnectionLimits};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::auth::{MAX_XML_BODY, OpRecorder, SingleKey};
use super::background::{pull, sweep};
use super::config::GatewayConfig;
use super::metrics::GatewayMetrics;
use super::request::handle;
use super::s3::ShoalS3;
use super::{host, multipart};
use uplink::Uplink;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the access key and the secret key must not be empty")]
    EmptyCredentials,
    #[error("invalid domain `{0}` for virtual-host-style requests")]
    Domain(String),
    #[error("cannot register the gateway's metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Catalog(#[from] uplink::catalog::CatalogError),
}

/// A bound gateway, ready to [`Gateway::run`].
#[derive(Debug)]
pub struct Gateway {
    listener: TcpListener,
    s3: ShoalS3,
    service: S3Service,
    metrics: GatewayMetrics,
    config: GatewayConfig,
}

impl Gateway {
    pub async fn bind(
        uplink: Uplink,
        listen: SocketAddr,
        config: GatewayConfig,
    ) -> Result<Self, GatewayError> {
        if config.access_key.is_empty() || config.secret_key.is_empty() {
            return Err(GatewayError::EmptyCredentials);
        }
        for d in &config.domains {
            if d.is_empty()
                || !d
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            {
                return Err(GatewayError::Domain(d.clone()));
            }
        }
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| GatewayError::Bind {
                addr: listen,
                source,
            })?;
        let uploads = multipart::Uploads::new(uplink.catalog().db().clone());
        let s3 = ShoalS3 {
            uplink,
            uploads,
            region: config.region.clone(),
        };
        let mut builder = S3ServiceBuilder::new(s3.clone());
        builder.set_auth(SingleKey {
            access_key: config.access_key.clone(),
            secret_key: config.secret_key.clone(),
        });
        builder.set_access(OpRecorder);
        builder.set_config(Arc::new(StaticConfigProvider::new(Arc::new(s3s_limits()))));
        builder.set_host(host::GatewayHost::new(config.domains.clone()));
        Ok(Self {
            listener,
            s3,
            service: builder.build(),
            metrics: GatewayMetrics::new()?,
            config,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves; then stops accepting, lets requests in flight
    /// finish (for at most `shutdown_grace`), publishes the catalog's last changes and
    /// returns.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), uplink::Error> {
        let Gateway {
            listener,
            s3,
            service,
            metrics,
            config,
        } = self;
        let sweeper = tokio::spawn(sweep(
            s3.clone(),
            config.multipart_max_age,
            config.sweep_interval,
        ));
        let puller = tokio::spawn(pull(s3.uplink.clone(), config.pull_interval));
        let renewer = uplink::maintain::spawn_renewer(s3.uplink.clone(), config.renew_interval);
        let graceful = GracefulShutdown::new();
        let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
        let per_ip = ConnectionLimits::new(
            config.max_connections.max(1),
            config.max_connections_per_ip.max(1),
        );
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30));
        tokio::pin!(shutdown);
        let mut backoff = AcceptBackoff::default();
        let metrics_token: Option<Arc<str>> = config.metrics_token.as_deref().map(Arc::from);
        loop {
            // A connection slot first: at the cap, new connections wait in the backlog.
            let permit = tokio::select! {
                () = &mut shutdown => break,
                p = Arc::clone(&slots).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                r = listener.accept() => r,
            };
            let (stream, peer) = match accepted {
                Ok(c) => {
                    backoff.succeeded();
                    c
                }
                Err(e) => {
                    // Out of descriptors or similar: back off instead of spinning.
                    let pause = backoff.failed();
                    tracing::warn!(
                        error = %e,
                        pause_ms = pause.as_millis() as u64,
                        "gateway accept failed; backing off"
                    );
                    if pause_unless_shutdown(pause, &mut shutdown).await {
                        continue;
                    }
                    break;
                }
            };
            let Some(ip_slot) = per_ip.admit(peer.ip()) else {
                tracing::debug!(%peer, "connection closed: its address has too many open");
                continue;
            };
            // Small answers go out at once (no Nagle wait for the client's delayed ACK).
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
            }
            let (service, metrics, uplink) = (service.clone(), metrics.clone(), s3.uplink.clone());
            let token = metrics_token.clone();
            let body_idle = config.body_idle_timeout;
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                handle(
                    service.clone(),
                    metrics.clone(),
                    uplink.clone(),
                    token.clone(),
                    body_idle,
                    req,
                )
            });
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            let conn = graceful.watch(conn.into_owned());
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, error = %e, "gateway connection ended with an error");
                }
                drop((permit, ip_slot));
            });
        }
        drop(listener);
        sweeper.abort();
        puller.abort();
        // A renewal cut short is harmless (renewing is idempotent; the next run redoes it).
        drop(renewer);
        if tokio::time::timeout(config.shutdown_grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("requests still running after the shutdown grace were cut off");
        }
        s3.uplink.flush().await?;
        s3.uplink.settle(Duration::from_secs(10)).await;
        Ok(())
    }
}

/// s3s's size limits, set here rather than taken from its defaults: XML documents at
/// most [`MAX_XML_BODY`] (a longer one is refused before it is read:
/// [`crate::auth::whole_body_refusal`]), and PostObject is refused before s3s sees it
/// ([`crate::request::refuse_before_body`]), so its form limits only back that up.
fn s3s_limits() -> S3Config {
    let mut c = S3Config::default();
    c.xml_max_body_size = MAX_XML_BODY;
    c.post_object_max_file_size = 0;
    c.form_max_field_size = 64 << 10;
    c.form_max_fields_size = 256 << 10;
    c.form_max_parts = 64;
    c
}

/// The pause after a failed accept, cut short by a shutdown: true when it ran out, false
/// when `shutdown` came first.
async fn pause_unless_shutdown<S>(pause: Duration, shutdown: &mut S) -> bool
where
    S: std::future::Future<Output = ()> + Unpin,
{
    tokio::select! {
        () = shutdown => false,
        () = tokio::time::sleep(pause) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_backoff_pause_ends_on_shutdown() {
        let mut stopped = std::future::ready(());
        let ended = tokio::time::timeout(
            Duration::from_secs(10),
            pause_unless_shutdown(Duration::from_secs(3600), &mut stopped),
        )
        .await;
        assert_eq!(ended, Ok(false), "a shutdown ends the pause at once");
        let mut running = std::future::pending::<()>();
        assert!(pause_unless_shutdown(Duration::from_millis(5), &mut running).await);
    }
}
