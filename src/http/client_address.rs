//! Who the client is. Behind a balancer every connection comes from the balancer's address, so
//! per-address limits would count every client as one. From peers in `TRUSTED_PROXIES` only,
//! the client is the one their PROXY protocol header names (`proxy_protocol.rs`), and then the
//! right-most address of `X-Forwarded-For` that is not itself a trusted proxy (each proxy
//! appends the address it took the request from; entries to its left are the client's word).

use std::net::IpAddr;

use axum::http::HeaderMap;

use crate::domain::Networks;

/// The address a request is counted and logged under: the client's, as far as the trusted
/// proxies vouch for it (a request extension set by the accept loop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress(pub IpAddr);

/// The balancers whose word on the client's address is taken (`TRUSTED_PROXIES`).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Networks);

impl TrustedProxies {
    pub fn new(networks: Networks) -> Self {
        Self(networks)
    }

    /// Whether a connection from `peer` may open with a PROXY header.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        !self.0.is_empty() && self.0.contains(peer)
    }

    /// The client of a request that reached us from `from` (the TCP peer, or the client a
    /// trusted peer's PROXY header named): `from` itself unless it is a trusted proxy; then the
    /// right-most `X-Forwarded-For` entry that is not. A malformed entry ends the walk: the
    /// last trusted hop is the best address known.
    pub fn client_of(&self, from: IpAddr, headers: &HeaderMap) -> ClientAddress {
        let mut client = from.to_canonical();
        if !self.trusts(client) {
            return ClientAddress(client);
        }
        let values = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok());
        let hops: Vec<&str> = values.flat_map(|v| v.split(',')).collect();
        for hop in hops.iter().rev() {
            let Some(ip) = parse_hop(hop) else { break };
            client = ip.to_canonical();
            if !self.trusts(client) {
                break;
            }
        }
        ClientAddress(client)
    }
}

/// One `X-Forwarded-For` entry: an address, maybe with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Ok(addr) = hop.parse::<std::net::SocketAddr>() {
        return Some(addr.ip());
    }
    hop.strip_prefix('[').and_then(|h| h.strip_suffix(']')).and_then(|h| h.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in xff {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        headers
    }

    fn proxies(list: &str) -> TrustedProxies {
        TrustedProxies::new(Networks::parse(list).unwrap())
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client_whatever_it_says() {
        let none = proxies("");
        assert_eq!(none.client_of(ip("10.0.0.5"), &headers(&["1.2.3.4"])), ClientAddress(ip("10.0.0.5")));
        let other = proxies("10.0.0.1");
        assert_eq!(other.client_of(ip("10.0.0.5"), &headers(&["1.2.3.4"])), ClientAddress(ip("10.0.0.5")));
    }

    #[test]
    fn from_a_trusted_proxy_the_right_most_untrusted_hop_is_the_client() {
        let trusted = proxies("10.0.0.0/24");
        let client = |xff: &[&str]| trusted.client_of(ip("10.0.0.1"), &headers(xff)).0;
        assert_eq!(client(&["203.0.113.7"]), ip("203.0.113.7"));
        assert_eq!(client(&["6.6.6.6, 203.0.113.7"]), ip("203.0.113.7"), "the client's own entry is ignored");
        assert_eq!(
            client(&["6.6.6.6", "203.0.113.7, 10.0.0.2"]),
            ip("203.0.113.7"),
            "two proxies, two headers"
        );
        assert_eq!(client(&["[2001:db8::1]:4711"]), ip("2001:db8::1"));
        assert_eq!(client(&["203.0.113.7:80"]), ip("203.0.113.7"));
        assert_eq!(client(&[]), ip("10.0.0.1"), "no header: the proxy itself");
        assert_eq!(client(&["garbage, 10.0.0.3"]), ip("10.0.0.3"), "a malformed hop stops the walk");
        assert_eq!(client(&["::ffff:203.0.113.7"]), ip("203.0.113.7"));
    }

    #[test]
    fn a_mapped_ipv4_peer_is_trusted_as_ipv4() {
        let trusted = proxies("127.0.0.1");
        assert!(trusted.trusts(ip("::ffff:127.0.0.1")));
        assert!(!proxies("").trusts(ip("127.0.0.1")));
    }
}
