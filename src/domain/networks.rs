//! A list of addresses and CIDR networks, as operators write them in settings
//! (`127.0.0.1, 10.0.0.0/8, ::1`): the post fetcher's allow list and the trusted proxies.

use std::net::IpAddr;

/// Addresses and networks; an address matches when it is in any of them. IPv4-mapped IPv6
/// addresses (`::ffff:10.0.0.1`, as a dual-stack listener sees IPv4 peers) match as IPv4.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Networks(Vec<(IpAddr, u8)>);

impl Networks {
    /// Comma-separated addresses or CIDR networks; an empty list is allowed.
    pub fn parse(list: &str) -> Result<Self, String> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(network)
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|(net, bits)| in_network(ip, *net, *bits))
    }
}

fn network(item: &str) -> Result<(IpAddr, u8), String> {
    let (addr, bits) = match item.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (item, None),
    };
    let ip: IpAddr = addr.parse().map_err(|_| format!("not an address: {item:?}"))?;
    let ip = ip.to_canonical();
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let bits = match bits {
        Some(b) => {
            b.parse::<u8>().ok().filter(|b| *b <= max).ok_or_else(|| format!("bad prefix: {item:?}"))?
        }
        None => max,
    };
    Ok((ip, bits))
}

fn in_network(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - u32::from(bits)) };
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - u32::from(bits)) };
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_and_networks_match_what_they_cover() {
        let nets = Networks::parse("127.0.0.1, 10.0.0.0/8, fd00::/8").unwrap();
        assert!(nets.contains(ip("127.0.0.1")));
        assert!(!nets.contains(ip("127.0.0.2")));
        assert!(nets.contains(ip("10.200.1.1")));
        assert!(nets.contains(ip("::ffff:10.0.0.1")), "IPv4-mapped matches as IPv4");
        assert!(nets.contains(ip("fd12::1")));
        assert!(!nets.contains(ip("192.168.0.1")));
        assert!(Networks::parse("").unwrap().is_empty());
    }

    #[test]
    fn a_malformed_entry_is_refused_by_name() {
        assert_eq!(Networks::parse("nonsense").unwrap_err(), "not an address: \"nonsense\"");
        assert!(Networks::parse("10.0.0.0/33").unwrap_err().starts_with("bad prefix"));
        assert!(Networks::parse("::1/129").is_err());
    }
}
