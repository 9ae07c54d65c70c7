//! Which addresses the server may fetch pages from: public ones only, unless an operator
//! allows more (`POST_FETCH_ALLOW`, e.g. for an intranet or tests). This is the guard against
//! server-side request forgery: without it, a URL could make the server read its own admin
//! ports, the cloud metadata service, or the private network.

use std::net::IpAddr;

use crate::domain::Networks;

/// Allowed addresses: public ones, plus the networks listed.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    allowed: Networks,
}

impl AddressPolicy {
    /// Public addresses plus `allow`: comma-separated addresses or CIDR networks
    /// (`127.0.0.1`, `10.0.0.0/8`, `::1`).
    pub fn parse(allow: &str) -> Result<Self, String> {
        Ok(Self { allowed: Networks::parse(allow)? })
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        is_public(ip) || self.allowed.contains(ip)
    }
}

/// Whether an address is on the public internet.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])) // shared address space (CGNAT)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
                || (o[0] == 198 && (18..20).contains(&o[1])) // benchmarking
                || o[0] >= 240) // reserved
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x64 && s[1] == 0xff9b)) // NAT64 (could reach private IPv4)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn private_loopback_and_link_local_addresses_are_refused_by_default() {
        let policy = AddressPolicy::default();
        for addr in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!policy.allows(ip(addr)), "{addr}");
        }
        for addr in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(policy.allows(ip(addr)), "{addr}");
        }
    }

    #[test]
    fn the_allow_list_opens_addresses_and_networks() {
        let policy = AddressPolicy::parse("127.0.0.1, 10.0.0.0/8").unwrap();
        assert!(policy.allows(ip("127.0.0.1")));
        assert!(!policy.allows(ip("127.0.0.2")));
        assert!(policy.allows(ip("10.200.1.1")));
        assert!(!policy.allows(ip("192.168.0.1")));
        assert!(AddressPolicy::parse("nonsense").is_err());
        assert!(AddressPolicy::parse("10.0.0.0/33").is_err());
    }
}
