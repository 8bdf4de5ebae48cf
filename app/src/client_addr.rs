//! Who is at the other end: the client's address, the peer's own, or, behind proxies that
//! Flowdeck trusts (`FLOWDECK_TRUSTED_PROXIES`), the one they forwarded.
//!
//! A proxy appends the address it received the request from to `X-Forwarded-For` or
//! `Forwarded` (RFC 7239); everything to the left of that was written by whoever sent the
//! request and proves nothing. So the client is the right-most address that is not a
//! trusted proxy, and from an untrusted peer the headers are not read at all. Only the
//! header the proxies write is read (`FLOWDECK_FORWARDED_HEADER`): most proxies append to
//! `X-Forwarded-For` and pass a client's own `Forwarded` on untouched, so reading that one
//! too would let a client name itself.

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

/// The header the trusted proxies append the client to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For` (nginx, `HAProxy`, AWS ALB, most ingresses).
    #[default]
    XForwardedFor,
    /// `Forwarded` (RFC 7239).
    Forwarded,
}

impl std::str::FromStr for ForwardedHeader {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name.trim().to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Ok(Self::XForwardedFor),
            "forwarded" => Ok(Self::Forwarded),
            other => Err(format!("{other:?} is neither X-Forwarded-For nor Forwarded")),
        }
    }
}

/// The proxies whose forwarding header is believed, and which header that is.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    header: ForwardedHeader,
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
        Ok(Self {
            nets,
            header: ForwardedHeader::default(),
        })
    }

    /// The same proxies, read from `header`.
    #[must_use]
    pub fn reading(self, header: ForwardedHeader) -> Self {
        Self { header, ..self }
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
        for hop in forwarded_hops(headers, self.header).into_iter().rev() {
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

/// The forwarded-for addresses in `header`, oldest first; `None` for a hop that is not an
/// IP address. Each element is read on its own, so bytes a client put in its part of a
/// line cannot hide the parts the proxies appended.
fn forwarded_hops(headers: &HeaderMap, header: ForwardedHeader) -> Vec<Option<IpAddr>> {
    let name = match header {
        ForwardedHeader::XForwardedFor => "x-forwarded-for",
        ForwardedHeader::Forwarded => "forwarded",
    };
    headers
        .get_all(name)
        .iter()
        .flat_map(|value| value.as_bytes().split(|b| *b == b','))
        .map(|element| {
            let element = std::str::from_utf8(element).ok()?.trim();
            match header {
                ForwardedHeader::XForwardedFor => forwarded_ip(element),
                ForwardedHeader::Forwarded => {
                    let node = rfc7239::parse(element).next()?.ok()?;
                    node.forwarded_for.and_then(|id| id.ip().copied())
                }
            }
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

    fn client_by_rfc(trusted: &str, peer: &str, pairs: &[(&'static str, &'static str)]) -> IpAddr {
        TrustedProxies::parse(trusted)
            .unwrap()
            .reading(ForwardedHeader::Forwarded)
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
        assert_eq!(client_by_rfc(trusted, "10.0.0.1", &rfc), ip("2001:db8::17"));
        // Only the configured header counts: a client's own `Forwarded`, passed on by a
        // proxy that appends to `X-Forwarded-For`, names nobody (and the reverse).
        let both = [
            ("forwarded", "for=198.51.100.5"),
            ("x-forwarded-for", "198.51.100.6"),
        ];
        assert_eq!(client(trusted, "10.0.0.1", &both), ip("198.51.100.6"));
        assert_eq!(client_by_rfc(trusted, "10.0.0.1", &both), ip("198.51.100.5"));
        let spoofed = [("forwarded", "for=1.2.3.4")];
        assert_eq!(client(trusted, "10.0.0.1", &spoofed), ip("10.0.0.1"));
        assert_eq!(
            "Forwarded".parse::<ForwardedHeader>(),
            Ok(ForwardedHeader::Forwarded)
        );
        assert!("via".parse::<ForwardedHeader>().is_err());
    }

    #[test]
    fn unreadable_hops_and_missing_headers_stop_at_the_nearest_known_address() {
        let trusted = "10.0.0.0/8";
        assert_eq!(client(trusted, "10.0.0.1", &[]), ip("10.0.0.1"));
        let unknown = [("forwarded", "for=198.51.100.4, for=unknown, for=10.0.0.9")];
        assert_eq!(client_by_rfc(trusted, "10.0.0.1", &unknown), ip("10.0.0.9"));
        // Bytes that are not text in the client's part do not hide what the proxy appended.
        let mut raw = HeaderMap::new();
        raw.insert(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\xff\xfe, 198.51.100.4").unwrap(),
        );
        let proxies = TrustedProxies::parse(trusted).unwrap();
        assert_eq!(
            proxies.client_addr(ip("10.0.0.1"), &raw).client,
            ip("198.51.100.4")
        );
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
