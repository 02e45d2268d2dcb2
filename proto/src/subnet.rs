//! The network a placement limit counts: one rule for the DHT's routing table and
//! membership sampler and for the uplink's piece placement.

use std::net::IpAddr;

/// An IPv4 /24 or an IPv6 /48. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is the
/// IPv4 address it maps, so one host cannot count twice by naming itself both ways.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Subnet(u64);

impl Subnet {
    /// The subnet `ip` counts against.
    pub fn of(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                Subnet(
                    (4 << 56) | (u64::from(o[0]) << 16) | (u64::from(o[1]) << 8) | u64::from(o[2]),
                )
            }
            IpAddr::V6(v6) => {
                if let Some(v4) = v6.to_ipv4_mapped() {
                    return Self::of(&IpAddr::V4(v4));
                }
                let o = v6.octets();
                let v = o[..6].iter().fold(0u64, |v, b| (v << 8) | u64::from(*b));
                Subnet((6 << 56) | v)
            }
        }
    }
}

impl From<IpAddr> for Subnet {
    fn from(ip: IpAddr) -> Self {
        Self::of(&ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_24_ipv6_48_and_mapped_addresses_count_as_ipv4() {
        let a: IpAddr = "10.1.2.3".parse().unwrap();
        let b: IpAddr = "10.1.2.200".parse().unwrap();
        let c: IpAddr = "10.1.3.3".parse().unwrap();
        assert_eq!(Subnet::of(&a), Subnet::of(&b));
        assert_ne!(Subnet::of(&a), Subnet::of(&c));
        let x: IpAddr = "2001:db8:1::1".parse().unwrap();
        let y: IpAddr = "2001:db8:1:ffff::2".parse().unwrap();
        let z: IpAddr = "2001:db8:2::1".parse().unwrap();
        assert_eq!(Subnet::of(&x), Subnet::of(&y));
        assert_ne!(Subnet::of(&x), Subnet::of(&z));
        let mapped: IpAddr = "::ffff:10.1.2.9".parse().unwrap();
        assert_eq!(Subnet::of(&mapped), Subnet::of(&a));
        // An IPv6 /48 never equals an IPv4 /24, whatever its bits.
        let v6_like_v4: IpAddr = "0:0:a01:200::".parse().unwrap();
        assert_ne!(Subnet::of(&v6_like_v4), Subnet::of(&a));
    }
}
