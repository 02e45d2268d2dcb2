//! Who may read the local HTTP endpoints (a node's dashboard, status and metrics, the
//! gateway's metrics): plain rules over the `Host` and `Authorization` headers, shared
//! by every server that has such pages.
//!
//! A page on another site can make a browser send requests to 127.0.0.1 under its own
//! name (DNS rebinding), and read the answer. So a page is served only to a `Host` that
//! is an IP literal or `localhost` ([`page_host_allowed`]). Metrics are scraped by name
//! inside container networks (`seed:7778`), so they also accept a single-label name: a
//! rebinding attacker needs a registrable domain, which always has a dot
//! ([`metrics_host_allowed`]). With a metrics token set, a scraper must send it as
//! `Authorization: Bearer TOKEN` and then any `Host` is fine ([`metrics_access`]).

/// The name part of a `Host` header: without the port, IPv6 brackets removed; `None`
/// when malformed.
fn host_name(host: &str) -> Option<&str> {
    let host = host.trim();
    // `[v6]:port`, `[v6]`, `v4:port`, `v4`, `name:port`, `name`.
    match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, after)) if after.is_empty() || after.starts_with(':') => Some(v6),
            _ => None,
        },
        None => Some(host.rsplit_once(':').map_or(host, |(name, _)| name)),
    }
}

/// Whether a browser page may be served to a request for `host` (the `Host` header, if
/// any): an IP literal (with or without a port) or `localhost`. Any other name may be
/// an attacker's domain re-pointed at this machine.
pub fn page_host_allowed(host: Option<&str>) -> bool {
    let Some(name) = host.and_then(host_name) else {
        return false;
    };
    name.parse::<std::net::IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || name.eq_ignore_ascii_case("localhost.")
}

/// Whether metrics may be served to a request for `host` without a token: what
/// [`page_host_allowed`] allows, or a single-label name (a container or LAN host name).
pub fn metrics_host_allowed(host: Option<&str>) -> bool {
    if page_host_allowed(host) {
        return true;
    }
    host.and_then(host_name).is_some_and(|name| {
        !name.is_empty()
            && !name.contains('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// Why a metrics request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MetricsRefused {
    /// No token is set and the `Host` names another site (HTTP 421).
    #[error(
        "read metrics at an IP address, localhost or a single-label host name, or set a metrics token"
    )]
    Host,
    /// A token is set and the request does not carry it (HTTP 401).
    #[error("this endpoint needs `Authorization: Bearer <metrics token>`")]
    Token,
}

impl MetricsRefused {
    /// The HTTP status to answer with.
    pub fn status(self) -> u16 {
        match self {
            MetricsRefused::Host => 421,
            MetricsRefused::Token => 401,
        }
    }
}

/// Whether a metrics request with these `Host` and `Authorization` headers is served,
/// given the configured token (if any). The token is compared in constant time.
pub fn metrics_access(
    host: Option<&str>,
    authorization: Option<&str>,
    token: Option<&str>,
) -> Result<(), MetricsRefused> {
    match token {
        Some(token) => {
            let sent = authorization
                .and_then(|a| a.trim().strip_prefix("Bearer "))
                .map(str::trim)
                .unwrap_or_default();
            if constant_time_eq(sent.as_bytes(), token.as_bytes()) && !token.is_empty() {
                Ok(())
            } else {
                Err(MetricsRefused::Token)
            }
        }
        None if metrics_host_allowed(host) => Ok(()),
        None => Err(MetricsRefused::Host),
    }
}

/// Equal bytes, in time that depends only on the lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_only_for_ip_literals_and_localhost() {
        for ok in [
            "127.0.0.1:7778",
            "[::1]:7778",
            "localhost",
            "LOCALHOST:1",
            "10.0.0.2",
        ] {
            assert!(page_host_allowed(Some(ok)), "{ok}");
        }
        for bad in ["evil.example:7778", "seed:7778", "[::1", "", "a.b"] {
            assert!(!page_host_allowed(Some(bad)), "{bad}");
        }
        assert!(!page_host_allowed(None));
    }

    /// Issue 27: metrics refuse another site's name (DNS rebinding) unless a token is
    /// set and sent; a container's single-label name is fine.
    #[test]
    fn metrics_need_a_local_host_or_the_token() {
        assert_eq!(metrics_access(Some("127.0.0.1:7778"), None, None), Ok(()));
        assert_eq!(metrics_access(Some("seed:7778"), None, None), Ok(()));
        assert_eq!(
            metrics_access(Some("rebind.evil.example:7778"), None, None),
            Err(MetricsRefused::Host)
        );
        assert_eq!(metrics_access(None, None, None), Err(MetricsRefused::Host));
        let token = Some("s3cret-token");
        assert_eq!(
            metrics_access(Some("127.0.0.1"), None, token),
            Err(MetricsRefused::Token)
        );
        assert_eq!(
            metrics_access(Some("127.0.0.1"), Some("Bearer wrong-token!"), token),
            Err(MetricsRefused::Token)
        );
        assert_eq!(
            metrics_access(Some("any.example"), Some("Bearer s3cret-token"), token),
            Ok(())
        );
        assert_eq!(MetricsRefused::Host.status(), 421);
        assert_eq!(MetricsRefused::Token.status(), 401);
    }
}
