//! Per-peer request rate limit: a token bucket per peer, plain code with the caller's
//! clock: the DHT's Discovery service and the node's piece service feed it; tests drive
//! it directly.
//!
//! Each peer group (an IPv4 address or an IPv6 /64, [`crate::address::peer_group`])
//! gets `burst` tokens that refill at `per_second`; a request takes one or is refused. The
//! table of peers is bounded: when it is full, peers whose bucket has refilled completely
//! (they look like newcomers anyway) are forgotten first, and if none has, the new peer
//! is refused rather than an old one's debt erased.

use std::collections::HashMap;
use std::net::IpAddr;

/// The limit's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateConfig {
    /// Tokens a peer regains per second. 0 turns the limit off.
    pub per_second: f64,
    /// Requests a peer may make at once after a quiet period.
    pub burst: f64,
    /// Peers tracked at most.
    pub max_peers: usize,
}

impl Default for RateConfig {
    fn default() -> Self {
        Self {
            per_second: 50.0,
            burst: 200.0,
            max_peers: 10_000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: u64,
}

/// Token buckets of every peer group seen recently.
#[derive(Debug)]
pub struct RateLimiter {
    cfg: RateConfig,
    buckets: HashMap<IpAddr, Bucket>,
}

impl RateLimiter {
    pub fn new(cfg: RateConfig) -> Self {
        Self {
            cfg,
            buckets: HashMap::new(),
        }
    }

    fn refilled(&self, b: &Bucket, now_ms: u64) -> f64 {
        let secs = now_ms.saturating_sub(b.at_ms) as f64 / 1000.0;
        (b.tokens + secs * self.cfg.per_second).min(self.cfg.burst)
    }

    /// Takes one token of `peer`'s group at `now_ms`; false if it has none left.
    pub fn admit(&mut self, peer: IpAddr, now_ms: u64) -> bool {
        if self.cfg.per_second <= 0.0 {
            return true;
        }
        let group = crate::address::peer_group(peer);
        if !self.buckets.contains_key(&group) && self.buckets.len() >= self.cfg.max_peers {
            let full: Vec<IpAddr> = self
                .buckets
                .iter()
                .filter(|(_, b)| self.refilled(b, now_ms) >= self.cfg.burst)
                .map(|(ip, _)| *ip)
                .collect();
            for ip in full {
                self.buckets.remove(&ip);
            }
            if self.buckets.len() >= self.cfg.max_peers {
                return false;
            }
        }
        let burst = self.cfg.burst;
        let tokens = match self.buckets.get(&group) {
            Some(b) => self.refilled(b, now_ms),
            None => burst,
        };
        let admitted = tokens >= 1.0;
        self.buckets.insert(
            group,
            Bucket {
                tokens: if admitted { tokens - 1.0 } else { tokens },
                at_ms: now_ms,
            },
        );
        admitted
    }

    /// Peers tracked now.
    pub fn peers(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_peer_gets_its_burst_then_its_rate_and_others_are_unaffected() {
        let mut r = RateLimiter::new(RateConfig {
            per_second: 10.0,
            burst: 5.0,
            max_peers: 100,
        });
        let a = ip("203.0.114.1");
        assert!((0..5).all(|_| r.admit(a, 0)));
        assert!(!r.admit(a, 0), "burst spent");
        assert!(
            r.admit(ip("203.0.114.2"), 0),
            "another peer has its own bucket"
        );
        // 100 ms later: one token back.
        assert!(r.admit(a, 100));
        assert!(!r.admit(a, 100));
        // A long pause refills up to the burst only.
        let admitted = (0..10).filter(|_| r.admit(a, 60_000)).count();
        assert_eq!(admitted, 5);
    }

    #[test]
    fn an_ipv6_slash_64_is_one_peer() {
        let mut r = RateLimiter::new(RateConfig {
            per_second: 1.0,
            burst: 2.0,
            max_peers: 100,
        });
        assert!(r.admit(ip("2001:db8:1:2::1"), 0));
        assert!(r.admit(ip("2001:db8:1:2:ffff::9"), 0));
        assert!(!r.admit(ip("2001:db8:1:2:abcd::1"), 0), "same /64");
        assert!(r.admit(ip("2001:db8:1:3::1"), 0), "another /64");
    }

    #[test]
    fn the_peer_table_is_bounded_and_forgets_only_rested_peers() {
        let mut r = RateLimiter::new(RateConfig {
            per_second: 1.0,
            burst: 2.0,
            max_peers: 3,
        });
        for i in 1..=3 {
            assert!(r.admit(ip(&format!("203.0.114.{i}")), 0));
        }
        // Full of peers still in debt: a fourth is refused, nobody's debt is erased.
        assert!(!r.admit(ip("203.0.114.4"), 0));
        assert_eq!(r.peers(), 3);
        // Once they have rested, they make room.
        assert!(r.admit(ip("203.0.114.4"), 10_000));
        assert!(r.peers() <= 3);
    }
}
