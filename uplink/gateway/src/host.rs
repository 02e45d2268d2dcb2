//! Path-style and virtual-host-style addressing, decided from the `Host` header.
//!
//! A request to one of the gateway's domains (`--domain`, default `localhost`) names
//! its bucket as the first label (`photos.localhost:7780` → bucket `photos`); a request
//! to the bare domain, to an IP address or to any other name is path-style. (s3s's own
//! `SingleDomain` would take an unknown host such as `127.0.0.1:7780` for a bucket
//! name; a gateway reached by address must not.)

use s3s::S3Result;
use s3s::host::{S3Host, VirtualHost};

#[derive(Debug, Clone)]
pub struct GatewayHost {
    domains: Vec<String>,
}

impl GatewayHost {
    /// `domains` are lowercase DNS names without a port.
    pub fn new(domains: Vec<String>) -> Self {
        Self {
            domains: domains
                .into_iter()
                .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
                .filter(|d| !d.is_empty())
                .collect(),
        }
    }

    /// The bucket a `Host` header names, if any (plain code for tests).
    pub fn bucket_of<'a>(&self, host: &'a str) -> Option<&'a str> {
        let name = strip_port(host).trim_end_matches('.');
        self.domains.iter().find_map(|d| {
            if name.len() <= d.len() + 1 {
                return None;
            }
            let split = name.len() - d.len();
            // DNS names compare case-insensitively.
            (name.is_char_boundary(split)
                && name[split..].eq_ignore_ascii_case(d)
                && name.as_bytes()[split - 1] == b'.')
                .then(|| &name[..split - 1])
        })
    }
}

/// The host without a `:port` (IPv6 literals keep their brackets).
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..h.len() + 1]);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

impl S3Host for GatewayHost {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<VirtualHost<'a>> {
        let vh = VirtualHost::new(strip_port(host));
        Ok(match self.bucket_of(host) {
            Some(bucket) => vh.with_bucket(bucket),
            None => vh,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_hosts_and_paths() {
        let h = GatewayHost::new(vec!["localhost".into(), "s3.example.test".into()]);
        assert_eq!(h.bucket_of("photos.localhost:7780"), Some("photos"));
        assert_eq!(h.bucket_of("my.bucket.s3.example.test"), Some("my.bucket"));
        assert_eq!(h.bucket_of("localhost:7780"), None);
        assert_eq!(h.bucket_of("127.0.0.1:7780"), None);
        assert_eq!(h.bucket_of("[::1]:7780"), None);
        assert_eq!(h.bucket_of("elsewhere.test"), None);
        assert_eq!(h.bucket_of("notlocalhost"), None);
        assert_eq!(h.bucket_of(".localhost"), None);
    }
}
