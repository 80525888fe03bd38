//! Which client a per-address limit counts: an IPv4 address as itself (also when it
//! arrives IPv4-mapped on a dual-stack socket), an IPv6 address by its /64, and for the
//! wider connection cap by its /48.
//!
//! SECURITY: one host or customer usually owns a whole IPv6 /64 (and a site a /48), so
//! counting single IPv6 addresses would let one client take any per-address limit
//! 2^64 times over. Used by the connection caps (`http`) and the failed-login budget
//! (`auth`, through `api`).

use std::net::{IpAddr, Ipv6Addr};

/// The address a per-address limit counts: IPv4 as is (also when IPv4-mapped), IPv6 by
/// its /64, which one host or customer usually owns whole.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The IPv6 /48 an address belongs to (None for IPv4 and IPv4-mapped addresses).
pub fn ipv6_48(ip: IpAddr) -> Option<IpAddr> {
    match address_key(ip) {
        IpAddr::V4(_) => None,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            Some(IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{address_key, ipv6_48};
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_addresses_count_per_64_and_per_48_ipv4_as_itself() {
        // One /64 is one address for the per-address caps (a host gets a whole /64).
        assert_eq!(
            address_key(ip("2001:db8:1:2:aaaa::1")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            address_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")),
            ip("2001:db8:1:2::")
        );
        assert_ne!(address_key(ip("2001:db8:1:3::1")), ip("2001:db8:1:2::"));
        // IPv4, also when it arrives IPv4-mapped on a dual-stack socket, is itself.
        assert_eq!(address_key(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(address_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        // The wider cap groups /64s by their /48.
        assert_eq!(ipv6_48(ip("2001:db8:1:2::1")), Some(ip("2001:db8:1::")));
        assert_eq!(ipv6_48(ip("2001:db8:1:ffff::1")), Some(ip("2001:db8:1::")));
        assert_eq!(ipv6_48(ip("192.0.2.7")), None);
        assert_eq!(ipv6_48(ip("::ffff:192.0.2.7")), None);
    }
}
