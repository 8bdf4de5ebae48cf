//! Who is at the other end: the client's address, the peer's own, or, behind proxies that
//! Flowdeck trusts (`FLOWDECK_TRUSTED_PROXIES`), the one they forwarded.
//!
//! A proxy appends the address it received the request from to `Forwarded` (RFC 7239) or
//! `X-Forwarded-For`; everything to the left of that was written by whoever sent the
//! request and proves nothing. So the client is the right-most address that is not a
//! trusted proxy, and from an untrusted peer the headers are not read at all.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The addresses of the request being served, decided once by the outermost layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr {
    /// The client: the peer, or the right-most untrusted address its proxies forwarded.
    pub client: IpAddr,
    /// The connection's own peer (a proxy, when there is one).
    pub peer: IpAddr,
}

/// The proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

/// IPv4 peers of a dual-stack listener show as `::ffff:a.b.c.d`.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

impl TrustedProxies {
    /// Parses a comma-separated list of addresses and CIDR ranges (`10.0.0.0/8, ::1`).
    pub fn parse(list: &str) -> Result<Self, String> {
        let nets = list
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| {
                item.parse::<IpNet>()
                    .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{item:?} is neither an IP address nor a CIDR range"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { nets })
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The addresses of a request that arrived from `peer` with these headers.
    pub fn client_addr(&self, peer: IpAddr, headers: &HeaderMap) -> ClientAddr {
        let peer = canonical(peer);
        ClientAddr {
            client: self.client(peer, headers),
            peer,
        }
    }

    fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let mut nearest = peer;
        for hop in forwarded_hops(headers).into_iter().rev() {
            // An address that cannot be read (`unknown`, obfuscated, garbage): nothing left of
            // it can be placed, so the last proxy that handed it on is as near as we know.
            let Some(ip) = hop else { return nearest };
            nearest = canonical(ip);
            if !self.contains(nearest) {
                return nearest;
            }
        }
        nearest
    }
}

/// The forwarded-for addresses, oldest first: from `Forwarded` when the request has one,
/// else from `X-Forwarded-For`; `None` for a hop that is not an IP address.
fn forwarded_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let values = |name: &str| {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
    };
    let forwarded = values("forwarded");
    if !forwarded.is_empty() {
        return forwarded
            .into_iter()
            .flat_map(|value| match value {
                Some(value) => rfc7239::parse(value)
                    .map(|node| {
                        node.ok()
                            .and_then(|node| node.forwarded_for.and_then(|id| id.ip().copied()))
                    })
                    .collect(),
                None => vec![None],
            })
            .collect();
    }
    values("x-forwarded-for")
        .into_iter()
        .flat_map(|value| match value {
            Some(value) => value.split(',').map(|hop| forwarded_ip(hop.trim())).collect(),
            None => vec![None],
        })
        .collect()
}

/// One `X-Forwarded-For` entry: a bare address, or one with a port (`1.2.3.4:80`, `[::1]:80`).
fn forwarded_ip(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn client(trusted: &str, peer: &str, pairs: &[(&'static str, &'static str)]) -> IpAddr {
        TrustedProxies::parse(trusted)
            .unwrap()
            .client_addr(ip(peer), &headers(pairs))
            .client
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let spoofed = [("x-forwarded-for", "1.1.1.1"), ("forwarded", "for=2.2.2.2")];
        assert_eq!(client("", "203.0.113.9", &spoofed), ip("203.0.113.9"));
        assert_eq!(client("10.0.0.0/8", "203.0.113.9", &spoofed), ip("203.0.113.9"));
    }

    #[test]
    fn the_client_is_the_right_most_address_that_is_not_a_trusted_proxy() {
        let trusted = "10.0.0.0/8, 192.0.2.7";
        // The client wrote 6.6.6.6 itself; the edge proxy appended the real address.
        let xff = [("x-forwarded-for", "6.6.6.6, 198.51.100.4, 10.1.2.3")];
        assert_eq!(client(trusted, "192.0.2.7", &xff), ip("198.51.100.4"));
        let split = [
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "198.51.100.4:5123"),
        ];
        assert_eq!(client(trusted, "10.0.0.1", &split), ip("198.51.100.4"));
        let rfc = [(
            "forwarded",
            "for=6.6.6.6, for=\"[2001:db8::17]:4711\";proto=https, for=10.9.9.9",
        )];
        assert_eq!(client(trusted, "10.0.0.1", &rfc), ip("2001:db8::17"));
        // `Forwarded` wins over `X-Forwarded-For` when both came.
        let both = [
            ("forwarded", "for=198.51.100.5"),
            ("x-forwarded-for", "198.51.100.6"),
        ];
        assert_eq!(client(trusted, "10.0.0.1", &both), ip("198.51.100.5"));
    }

    #[test]
    fn unreadable_hops_and_missing_headers_stop_at_the_nearest_known_address() {
        let trusted = "10.0.0.0/8";
        assert_eq!(client(trusted, "10.0.0.1", &[]), ip("10.0.0.1"));
        let unknown = [("forwarded", "for=198.51.100.4, for=unknown, for=10.0.0.9")];
        assert_eq!(client(trusted, "10.0.0.1", &unknown), ip("10.0.0.9"));
        let garbage = [("x-forwarded-for", "198.51.100.4, not-an-ip")];
        assert_eq!(client(trusted, "10.0.0.1", &garbage), ip("10.0.0.1"));
        let all_trusted = [("x-forwarded-for", "10.5.5.5, 10.6.6.6")];
        assert_eq!(client(trusted, "10.0.0.1", &all_trusted), ip("10.5.5.5"));
        // A dual-stack listener's mapped IPv4 peer is the same proxy.
        let xff = [("x-forwarded-for", "198.51.100.4")];
        assert_eq!(client(trusted, "::ffff:10.0.0.1", &xff), ip("198.51.100.4"));
    }

    #[test]
    fn the_setting_takes_addresses_and_ranges_and_names_what_it_cannot_read() {
        let proxies = TrustedProxies::parse(" 10.0.0.0/8 ,::1, 192.0.2.1").unwrap();
        assert!(proxies.contains(ip("10.200.0.1")));
        assert!(proxies.contains(ip("::1")));
        assert!(!proxies.contains(ip("192.0.2.2")));
        let error = TrustedProxies::parse("10.0.0.0/8, proxy.local").unwrap_err();
        assert!(error.contains("proxy.local"), "{error}");
    }
}
