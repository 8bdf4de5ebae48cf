//! What a request's headers carry: the bearer token, the session cookie (its name, its
//! hash) and the proof that a browser's state-changing request is not a cross-site forgery.

use axum::http::{HeaderMap, HeaderValue, header};
use cookie::{Cookie, SameSite};

use super::secrets;

/// Cookie name when served over plain HTTP (localhost development).
const COOKIE_NAME: &str = "flowdeck_session";

/// Cookie name over HTTPS: the `__Host-` prefix pins it to this host and path `/`.
const SECURE_COOKIE_NAME: &str = "__Host-flowdeck_session";

/// The value of the first cookie of the request named one of `names`.
pub fn cookie<'h>(headers: &'h HeaderMap, names: &[&str]) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| names.contains(name))
        .map(|(_, value)| value)
}

/// The session cookie's value. With secure cookies only the `__Host-` cookie counts: a
/// plain one may have been planted by a sibling subdomain.
fn session_token(headers: &HeaderMap, secure_cookies: bool) -> Option<&str> {
    cookie(headers, &[session_cookie_name(secure_cookies)])
}

/// The hash of the session cookie's token, when the cookie has a session token's shape.
pub fn session_hash(headers: &HeaderMap, secure_cookies: bool) -> Option<Vec<u8>> {
    session_token(headers, secure_cookies)
        .filter(|t| secrets::looks_like_session_token(t))
        .map(secrets::hash_secret)
}

pub fn session_cookie_name(secure_cookies: bool) -> &'static str {
    if secure_cookies {
        SECURE_COOKIE_NAME
    } else {
        COOKIE_NAME
    }
}

pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Where a request comes from, as far as the browser says.
#[derive(Debug, PartialEq, Eq)]
pub enum Provenance {
    /// This origin (or the user typed it).
    SameOrigin,
    /// Another site.
    CrossSite,
    /// Neither `Sec-Fetch-Site` nor `Origin` came with it.
    Unknown,
}

pub fn provenance(headers: &HeaderMap) -> Provenance {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return if matches!(site, "same-origin" | "none") {
            Provenance::SameOrigin
        } else {
            Provenance::CrossSite
        };
    }
    match (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) {
        (Some(origin), Some(host)) if origin.split_once("://").map(|(_, rest)| rest) == Some(host) => {
            Provenance::SameOrigin
        }
        (Some(_), _) => Provenance::CrossSite,
        (None, _) => Provenance::Unknown,
    }
}

/// Whether a state-changing request carrying the session cookie may go ahead.
///
/// The browser must say it is same-origin, or, when it says nothing, the request must carry
/// the session's CSRF token (`X-CSRF-Token`, as pages give it in `<meta name="csrf-token">`).
pub fn forgery_checked(headers: &HeaderMap, secure_cookies: bool) -> bool {
    match provenance(headers) {
        Provenance::SameOrigin => true,
        Provenance::CrossSite => false,
        Provenance::Unknown => {
            let sent = headers.get("x-csrf-token").map(HeaderValue::as_bytes);
            match (sent, csrf_token_of(headers, secure_cookies)) {
                (Some(sent), Some(token)) => subtle::ConstantTimeEq::ct_eq(sent, token.as_bytes()).into(),
                _ => false,
            }
        }
    }
}

/// The CSRF token of the session of this request, for the page to hand to scripts.
pub fn csrf_token_of(headers: &HeaderMap, secure_cookies: bool) -> Option<String> {
    session_token(headers, secure_cookies).map(secrets::csrf_token)
}

/// Whether session cookies must be `Secure` (and named with `__Host-`).
///
/// Always, except when Flowdeck is reached over plain HTTP on a loopback host, where
/// browsers would otherwise have no way to keep them.
pub fn cookies_must_be_secure(public_url: &str) -> bool {
    let Ok(url) = url::Url::parse(public_url) else {
        return true;
    };
    let loopback = match url.host() {
        Some(url::Host::Domain(name)) => name == "localhost" || name.ends_with(".localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    !(url.scheme() == "http" && loopback)
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie_header(secure: bool) -> HeaderValue {
    set_cookie(
        session_cookie_name(secure),
        "",
        secure,
        cookie::time::Duration::ZERO,
    )
}

/// A `Set-Cookie` value as Flowdeck sets every cookie: `HttpOnly`, `SameSite=Lax`, path
/// `/`, and `Secure` when served over HTTPS. `value` is URL-safe (hex or base64url).
pub fn set_cookie(name: &str, value: &str, secure: bool, max_age: cookie::time::Duration) -> HeaderValue {
    let cookie = Cookie::build((name, value))
        .http_only(true)
        .secure(secure)
        .same_site(SameSite::Lax)
        .path("/")
        .max_age(max_age)
        .build();
    HeaderValue::from_str(&cookie.to_string()).expect("a URL-safe cookie is a valid header")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_static(v));
        }
        map
    }

    fn forgery_checked(headers: &HeaderMap) -> bool {
        super::forgery_checked(headers, false)
    }

    #[test]
    fn cross_site_posts_are_recognised_by_fetch_metadata_or_origin() {
        assert!(!forgery_checked(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(!forgery_checked(&headers(&[("sec-fetch-site", "same-site")])));
        assert!(forgery_checked(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(!forgery_checked(&headers(&[
            ("origin", "http://evil.test"),
            ("host", "127.0.0.1:8000")
        ])));
        assert!(!forgery_checked(&headers(&[
            ("origin", "null"),
            ("host", "127.0.0.1:8000")
        ])));
        assert!(forgery_checked(&headers(&[
            ("origin", "http://127.0.0.1:8000"),
            ("host", "127.0.0.1:8000")
        ])));
    }

    #[test]
    fn without_origin_or_fetch_metadata_the_session_token_is_needed() {
        let token = "0123abcd";
        let mut h = headers(&[("cookie", "flowdeck_session=0123abcd")]);
        assert!(!forgery_checked(&h));
        h.insert("x-csrf-token", HeaderValue::from_static("wrong"));
        assert!(!forgery_checked(&h));
        h.insert(
            "x-csrf-token",
            HeaderValue::from_str(&secrets::csrf_token(token)).unwrap(),
        );
        assert!(forgery_checked(&h));
        // The token is no substitute for a browser that says the request is cross-site.
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!forgery_checked(&h));
    }

    #[test]
    fn cookies_are_relaxed_only_for_plain_http_on_loopback() {
        assert!(!cookies_must_be_secure("http://127.0.0.1:8000"));
        assert!(!cookies_must_be_secure("http://localhost:8000"));
        assert!(!cookies_must_be_secure("http://[::1]:8000"));
        assert!(cookies_must_be_secure("https://127.0.0.1:8000"));
        assert!(cookies_must_be_secure("http://flowdeck.example.com"));
        assert!(cookies_must_be_secure("http://10.0.0.5:8000"));
        assert!(cookies_must_be_secure("not a url"));
    }

    #[test]
    fn bearer_tokens_and_session_cookies_are_read_from_headers() {
        let h = headers(&[
            ("authorization", "Bearer  abc "),
            ("cookie", "a=1; flowdeck_session=tok; b=2"),
        ]);
        assert_eq!(bearer(&h), Some("abc"));
        assert_eq!(session_token(&h, false), Some("tok"));
        assert_eq!(bearer(&headers(&[("authorization", "Basic abc")])), None);
    }

    #[test]
    fn with_secure_cookies_only_the_host_prefixed_session_cookie_is_read() {
        // A sibling subdomain can plant `flowdeck_session` for this host; it cannot plant
        // a `__Host-` cookie.
        let planted = headers(&[("cookie", "flowdeck_session=planted")]);
        assert_eq!(session_token(&planted, true), None);
        assert_eq!(session_token(&planted, false), Some("planted"));
        let both = headers(&[("cookie", "flowdeck_session=planted; __Host-flowdeck_session=real")]);
        assert_eq!(session_token(&both, true), Some("real"));
    }
}
