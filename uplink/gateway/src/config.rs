//! What a gateway is started with: its settings, and the credentials derived from an
//! access.

use std::time::Duration;

/// Settings of a gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub access_key: String,
    pub secret_key: String,
    /// Default `us-east-1`.
    pub region: String,
    /// Domains for virtual-host-style requests (`BUCKET.DOMAIN`). Default `localhost`.
    pub domains: Vec<String>,
    /// Multipart uploads neither completed nor aborted within this are aborted and
    /// their pieces deleted. Default 7 days.
    pub multipart_max_age: Duration,
    /// How often the sweeper looks for such uploads. Default 1 hour.
    pub sweep_interval: Duration,
    /// Open connections at most; more wait in the listen backlog. Default 1024.
    pub max_connections: usize,
    /// Open connections at most from one IP address (IPv6: one /64); more are closed
    /// as soon as they are accepted, so one client cannot take every slot. Default 128
    /// (rclone and restic open a few dozen at most).
    pub max_connections_per_ip: usize,
    /// How long in-flight requests may run on after a shutdown signal. Default 30 s.
    pub shutdown_grace: Duration,
    /// How often the gateway pulls what other writers of this access published (so a
    /// `uplink cp` elsewhere shows up here). Default 30 s.
    pub pull_interval: Duration,
    /// How often the gateway renews the leases of everything the access stores (objects
    /// and catalog; see [`uplink::maintain::spawn_renewer`]), starting at start-up. Leases
    /// last `default_lease` (90 days), so a gateway that runs keeps the data alive.
    /// Default 24 h.
    pub renew_interval: Duration,
    /// When set, the metrics page answers only requests with `Authorization: Bearer
    /// TOKEN`; otherwise only requests for an IP address, `localhost` or a single-label
    /// host name ([`shoal_proto::http::metrics_access`]). Default: none.
    pub metrics_token: Option<String>,
    /// Longest a request body may send nothing while it is being read; the request
    /// then fails and its connection ends. Default
    /// [`BODY_IDLE_TIMEOUT`](crate::BODY_IDLE_TIMEOUT) (60 s); the hostile
    /// harness sets a short one to exercise it.
    pub body_idle_timeout: Duration,
}

impl GatewayConfig {
    /// A config with the given credentials and every other field at its default.
    pub fn new(access_key: String, secret_key: String) -> Self {
        Self {
            access_key,
            secret_key,
            region: "us-east-1".into(),
            domains: vec!["localhost".into()],
            multipart_max_age: Duration::from_secs(7 * 24 * 3600),
            sweep_interval: Duration::from_secs(3600),
            max_connections: 1024,
            max_connections_per_ip: 128,
            shutdown_grace: Duration::from_secs(30),
            pull_interval: Duration::from_secs(30),
            renew_interval: Duration::from_secs(24 * 3600),
            metrics_token: None,
            body_idle_timeout: crate::request::BODY_IDLE_TIMEOUT,
        }
    }
}

/// Credentials derived from an access's root secret and an epoch: stable for one access
/// and epoch on every machine, and telling nothing about the secret. Advancing the epoch
/// (`uplink gateway --rotate-credentials`) gives new keys and refuses the old ones.
/// Epoch 0 gives the keys gateways derived before epochs existed. Returns (access key
/// id, secret key).
pub fn derived_credentials(root: &[u8; 32], epoch: u64) -> (String, String) {
    use base64::Engine;
    let mut material = root.to_vec();
    if epoch > 0 {
        material.extend_from_slice(&epoch.to_le_bytes());
    }
    let id = blake3::derive_key("shoal v1 s3 gateway access key id", &material);
    let secret = blake3::derive_key("shoal v1 s3 gateway secret access key", &material);
    (
        format!("SHOAL{}", shoal_proto::ids::to_hex(&id[..8]).to_uppercase()),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&secret[..30]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_credentials_are_stable_and_distinct() {
        let a = derived_credentials(&[1; 32], 0);
        assert_eq!(a, derived_credentials(&[1; 32], 0));
        let b = derived_credentials(&[2; 32], 0);
        assert_ne!(a.0, b.0);
        assert_ne!(a.1, b.1);
        assert!(a.0.starts_with("SHOAL") && a.0.len() == 21);
        assert_eq!(a.1.len(), 40);
        // Issue 27: each epoch has its own keys, none telling the others.
        let rotated = derived_credentials(&[1; 32], 1);
        assert_ne!(rotated.0, a.0);
        assert_ne!(rotated.1, a.1);
        assert_ne!(derived_credentials(&[1; 32], 2), rotated);
    }
}
