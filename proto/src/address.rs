//! Which addresses a participant may dial or advertise: the one rule, used by the DHT (for
//! signed node records and bootstrap entries), the storage node (for what it advertises)
//! and the uplink (for grants and configured node lists).
//!
//! On the public network every address must be globally routable: a signed record that
//! names a loopback, private, link-local, unique-local or otherwise special address would
//! make every node that believes it dial into its own host or LAN (the record's signer
//! chooses where thousands of nodes connect to). A network that lives on one machine or
//! one LAN (devnet, tests, a home lab) says so with `local_network = true`, and then any
//! unicast address is allowed.
//!
//! The classification follows the IANA special-purpose registries (RFC 6890 and its
//! updates), the same ranges as the standard library's unstable `IpAddr::is_global`
//! (which stable Rust does not offer), kept deliberately strict: an address that is not
//! certainly global is refused.
//!
//! **Test ranges (for test harnesses only).** A harness that runs a network of real hosts
//! inside private network namespaces (`shoal-tests`' `netns`) wants the public network's
//! rules exercised with private addresses that exist only inside it. It declares those
//! ranges (`test_address_ranges = ["10.77.0.0/16"]` in the node's and the uplink's
//! config): [`AddressScope::with_test_ranges`] then treats an address inside a declared
//! range as global, and every other address exactly as the public network does. Never
//! set it on a real network.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Which addresses a network accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AddressScope {
    /// The public network: globally routable unicast addresses only (the default).
    #[default]
    Public,
    /// A network on one machine or LAN (`local_network = true`): any unicast address.
    Local,
    /// The public network's rules, except that the addresses inside the declared test
    /// ranges count as global (a test harness's private network; see the module doc).
    PublicWithTestRanges(TestRanges),
}

/// Most test ranges a config may declare.
pub const MAX_TEST_RANGES: usize = 4;

/// One address range in CIDR notation (`10.77.0.0/16`, `fd00:77::/32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressRange {
    network: IpAddr,
    prefix: u8,
}

/// A test range that cannot be parsed or declared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("test address range {range:?}: {reason}")]
pub struct BadTestRange {
    pub range: String,
    pub reason: String,
}

impl AddressRange {
    /// Parses `ADDRESS/PREFIX` whose host bits are zero.
    pub fn parse(s: &str) -> Result<Self, BadTestRange> {
        let bad = |reason: &str| BadTestRange {
            range: s.to_owned(),
            reason: reason.to_owned(),
        };
        let (ip, prefix) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| bad("not ADDRESS/PREFIX"))?;
        let network: IpAddr = ip.parse().map_err(|_| bad("not an IP address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| bad("not a prefix length"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(bad("prefix longer than the address"));
        }
        let range = Self { network, prefix };
        if range.mask(network) != network {
            return Err(bad("host bits are set"));
        }
        Ok(range)
    }

    /// `ip` with the bits after the prefix cleared.
    fn mask(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                let m = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(bits & m))
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let m = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(bits & m))
            }
        }
    }

    /// Whether `ip` is inside the range.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        let ip = canonical(*ip);
        ip.is_ipv4() == self.network.is_ipv4() && self.mask(ip) == self.network
    }
}

impl fmt::Display for AddressRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The test ranges a config declares (at most [`MAX_TEST_RANGES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TestRanges([Option<AddressRange>; MAX_TEST_RANGES]);

impl TestRanges {
    /// Parses a config's `test_address_ranges`.
    pub fn parse<S: AsRef<str>>(ranges: &[S]) -> Result<Self, BadTestRange> {
        let mut out = [None; MAX_TEST_RANGES];
        if ranges.len() > MAX_TEST_RANGES {
            return Err(BadTestRange {
                range: ranges
                    .iter()
                    .map(AsRef::as_ref)
                    .collect::<Vec<_>>()
                    .join(", "),
                reason: format!("at most {MAX_TEST_RANGES} ranges"),
            });
        }
        for (slot, r) in out.iter_mut().zip(ranges) {
            *slot = Some(AddressRange::parse(r.as_ref())?);
        }
        Ok(Self(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }

    /// Whether `ip` is inside one of the ranges.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.0.iter().flatten().any(|r| r.contains(ip))
    }

    /// The ranges as config entries.
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().flatten().map(ToString::to_string).collect()
    }
}

/// An address the network's scope does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{ip} is a {kind} address, which only a local network may use (set `local_network = true` in config.toml for a network on one machine or LAN)"
)]
pub struct NonRoutable {
    pub ip: IpAddr,
    /// What kind of special address it is (`loopback`, `private`, ...).
    pub kind: &'static str,
}

/// An address no network may use (nobody can be dialled there).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} cannot be dialled")]
pub struct Undialable(pub SocketAddr);

/// Why an address is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressRefused {
    #[error(transparent)]
    NonRoutable(#[from] NonRoutable),
    #[error(transparent)]
    Undialable(#[from] Undialable),
}

impl AddressScope {
    /// `Local` when `local_network` is set.
    pub fn from_local_network(local_network: bool) -> Self {
        if local_network {
            Self::Local
        } else {
            Self::Public
        }
    }

    /// The public network with `ranges` declared as test ranges (unchanged when there
    /// are none, and a local network stays local).
    pub fn with_test_ranges(self, ranges: TestRanges) -> Self {
        match self {
            Self::Public | Self::PublicWithTestRanges(_) if !ranges.is_empty() => {
                Self::PublicWithTestRanges(ranges)
            }
            Self::PublicWithTestRanges(_) => Self::Public,
            other => other,
        }
    }

    /// Whether this is a local network (`local_network = true`).
    pub fn is_local(self) -> bool {
        self == Self::Local
    }

    /// The declared test ranges (none but for [`AddressScope::PublicWithTestRanges`]).
    pub fn test_ranges(self) -> TestRanges {
        match self {
            Self::PublicWithTestRanges(r) => r,
            _ => TestRanges::default(),
        }
    }

    /// Checks that `addr` may be dialled or advertised in this network.
    pub fn check(self, addr: &SocketAddr) -> Result<(), AddressRefused> {
        let ip = canonical(addr.ip());
        if addr.port() == 0 || ip.is_unspecified() || ip.is_multicast() || is_broadcast(&ip) {
            return Err(Undialable(*addr).into());
        }
        match (self, special_kind(&ip)) {
            (Self::Local, _) | (_, None) => Ok(()),
            (Self::PublicWithTestRanges(r), Some(_)) if r.contains(&ip) => Ok(()),
            (_, Some(kind)) => Err(NonRoutable { ip, kind }.into()),
        }
    }

    /// Checks every address of a list (e.g. a node record's).
    pub fn check_all<'a>(
        self,
        addrs: impl IntoIterator<Item = &'a SocketAddr>,
    ) -> Result<(), AddressRefused> {
        addrs.into_iter().try_for_each(|a| self.check(a))
    }
}

impl fmt::Display for AddressScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Public => "public network",
            Self::Local => "local network",
            Self::PublicWithTestRanges(_) => "public network with test ranges",
        })
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is its IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn is_broadcast(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
}

/// The group a peer's limits count against: an IPv4 address, or the /64 of an IPv6
/// address (one subscriber usually holds a whole /64, so per-address limits would not
/// bind it). IPv4-mapped IPv6 addresses count as their IPv4 address.
pub fn peer_group(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// Whether `ip` is globally routable: no special kind.
pub fn is_global(ip: &IpAddr) -> bool {
    let ip = canonical(*ip);
    !ip.is_unspecified() && !ip.is_multicast() && special_kind(&ip).is_none()
}

/// The kind of a unicast address that is not globally routable, or `None` for a global
/// one.
fn special_kind(ip: &IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_kind(v4),
        IpAddr::V6(v6) => v6_kind(v6),
    }
}

fn v4_kind(ip: &Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (127, ..) => "loopback",
        (10, ..) | (172, 16..=31, _) | (192, 168, _) => "private",
        (169, 254, _) => "link-local",
        (100, 64..=127, _) => "shared (carrier-grade NAT)",
        (0, ..) => "\"this network\"",
        (192, 0, 0) => "IETF protocol assignment",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18..=19, _) => "benchmarking",
        (240..=255, ..) => "reserved",
        _ => return None,
    })
}

fn v6_kind(ip: &Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    Some(match s {
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_unique_local() => "unique local (ULA)",
        _ if ip.is_unicast_link_local() => "link-local",
        [0xfec0..=0xfeff, ..] => "site-local",
        // ::/96: IPv4-compatible addresses (deprecated).
        [0, 0, 0, 0, 0, 0, ..] => "reserved",
        [0x0064, 0xff9b, 0x0001, ..] => "local-use NAT64",
        [0x5f00, ..] => "segment routing (SRv6)",
        [0x0100, 0, 0, 0, ..] => "discard-only",
        [0x2001, 0x0db8, ..] | [0x3fff, 0x0000..=0x0fff, ..] => "documentation",
        [0x2001, 0x0000..=0x01ff, ..] => "IETF protocol assignment",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_public_network_refuses_every_special_range_and_says_which() {
        let refused = [
            ("127.0.0.1:7777", "loopback"),
            ("127.3.2.1:1", "loopback"),
            ("10.1.2.3:7777", "private"),
            ("172.16.0.1:7777", "private"),
            ("172.31.255.255:7777", "private"),
            ("192.168.1.10:7777", "private"),
            ("169.254.169.254:80", "link-local"),
            ("100.64.0.1:7777", "shared (carrier-grade NAT)"),
            ("0.1.2.3:7777", "\"this network\""),
            ("192.0.2.1:7777", "documentation"),
            ("198.18.0.1:7777", "benchmarking"),
            ("240.0.0.1:7777", "reserved"),
            ("[::1]:7777", "loopback"),
            ("[fd00::1]:7777", "unique local (ULA)"),
            ("[fc12::1]:7777", "unique local (ULA)"),
            ("[fe80::1]:7777", "link-local"),
            ("[fec0::1]:7777", "site-local"),
            ("[::ffff:10.0.0.1]:7777", "private"),
            ("[::ffff:127.0.0.1]:7777", "loopback"),
            ("[::10.0.0.1]:7777", "reserved"),
            ("[2001:db8::1]:7777", "documentation"),
            ("[64:ff9b:1::1]:7777", "local-use NAT64"),
            ("[100::1]:7777", "discard-only"),
        ];
        for (a, kind) in refused {
            let err = AddressScope::Public.check(&addr(a)).unwrap_err();
            assert_eq!(
                err,
                AddressRefused::NonRoutable(NonRoutable {
                    ip: canonical(addr(a).ip()),
                    kind
                }),
                "{a}"
            );
            assert!(err.to_string().contains("local_network = true"), "{err}");
            // A local network takes them all.
            assert_eq!(AddressScope::Local.check(&addr(a)), Ok(()), "{a}");
            assert!(!is_global(&addr(a).ip()), "{a}");
        }
    }

    #[test]
    fn declared_test_ranges_pass_and_everything_else_keeps_the_public_rules() {
        let ranges = TestRanges::parse(&["10.77.0.0/16", "fd00:77::/32"]).unwrap();
        let scope = AddressScope::Public.with_test_ranges(ranges);
        assert_eq!(scope, AddressScope::PublicWithTestRanges(ranges));
        assert_eq!(scope.test_ranges(), ranges);
        for a in [
            "10.77.0.2:7777",
            "10.77.255.3:1",
            "[::ffff:10.77.4.2]:7777",
            "[fd00:77::1]:7777",
            "1.1.1.1:7777",
        ] {
            assert_eq!(scope.check(&addr(a)), Ok(()), "{a}");
        }
        // Negative: just outside the range, or another special range, is refused as on
        // the public network; undialable stays undialable.
        for (a, kind) in [
            ("10.78.0.2:7777", "private"),
            ("10.76.255.255:7777", "private"),
            ("127.0.0.1:7777", "loopback"),
            ("192.168.77.1:7777", "private"),
            ("[fd00:78::1]:7777", "unique local (ULA)"),
        ] {
            assert_eq!(
                scope.check(&addr(a)),
                Err(AddressRefused::NonRoutable(NonRoutable {
                    ip: canonical(addr(a).ip()),
                    kind
                })),
                "{a}"
            );
        }
        assert!(matches!(
            scope.check(&addr("10.77.0.2:0")),
            Err(AddressRefused::Undialable(_))
        ));
        // No ranges: the public network; a local network stays local.
        let none = TestRanges::parse::<&str>(&[]).unwrap();
        assert_eq!(
            AddressScope::Public.with_test_ranges(none),
            AddressScope::Public
        );
        assert_eq!(scope.with_test_ranges(none), AddressScope::Public);
        assert_eq!(
            AddressScope::Local.with_test_ranges(ranges),
            AddressScope::Local
        );
        assert_eq!(ranges.to_strings(), ["10.77.0.0/16", "fd00:77::/32"]);
    }

    #[test]
    fn malformed_test_ranges_are_refused_with_the_reason() {
        for (r, reason) in [
            ("10.77.0.0", "not ADDRESS/PREFIX"),
            ("10.77.0.1/16", "host bits are set"),
            ("10.77.0.0/33", "prefix longer than the address"),
            ("ten/8", "not an IP address"),
            ("10.0.0.0/x", "not a prefix length"),
        ] {
            let err = TestRanges::parse(&[r]).unwrap_err();
            assert_eq!(err.reason, reason, "{r}");
        }
        assert!(TestRanges::parse(&["10.0.0.0/8"; MAX_TEST_RANGES + 1]).is_err());
        assert!(
            AddressRange::parse("0.0.0.0/0")
                .unwrap()
                .contains(&"8.8.8.8".parse().unwrap())
        );
    }

    #[test]
    fn peers_are_grouped_by_ipv4_address_and_ipv6_slash_64() {
        let g = |s: &str| peer_group(s.parse().unwrap());
        assert_eq!(g("203.0.114.7"), g("203.0.114.7"));
        assert_ne!(g("203.0.114.7"), g("203.0.114.8"));
        assert_eq!(g("2001:db8:1:2::1"), g("2001:db8:1:2:ffff:ffff:ffff:ffff"));
        assert_ne!(g("2001:db8:1:2::1"), g("2001:db8:1:3::1"));
        assert_eq!(g("::ffff:203.0.114.7"), g("203.0.114.7"));
    }

    #[test]
    fn global_addresses_pass_and_undialable_ones_fail_everywhere() {
        for a in [
            "1.1.1.1:7777",
            "8.8.8.8:53",
            "172.32.0.1:7777",
            "100.128.0.1:7777",
            "192.0.3.1:7777",
            "[2a00:1450:4001::1]:443",
            "[2606:4700::1111]:7777",
            "[::ffff:8.8.8.8]:7777",
        ] {
            for scope in [AddressScope::Public, AddressScope::Local] {
                assert_eq!(scope.check(&addr(a)), Ok(()), "{a} in {scope}");
            }
            assert!(is_global(&addr(a).ip()), "{a}");
        }
        for a in [
            "0.0.0.0:7777",
            "[::]:7777",
            "1.1.1.1:0",
            "224.0.0.1:7777",
            "255.255.255.255:7777",
            "[ff02::1]:7777",
        ] {
            for scope in [AddressScope::Public, AddressScope::Local] {
                assert!(
                    matches!(scope.check(&addr(a)), Err(AddressRefused::Undialable(_))),
                    "{a} in {scope}"
                );
            }
        }
    }
}
