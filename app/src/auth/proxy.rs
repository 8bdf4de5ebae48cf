//! Trusted identity-aware proxy mode.
//!
//! An oauth2-proxy, Pomerium or similar in front of Flowdeck signs people in and passes
//! who they are in request headers. Those headers are
//! believed only on connections from the configured proxy addresses; from anywhere else
//! they are ignored, so nobody can name themselves by sending them.

use std::collections::HashMap;
use std::net::IpAddr;

use axum::http::HeaderMap;

use crate::caller::Role;

/// Where the proxy is and how it names users and groups (`FLOWDECK_PROXY_*`).
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Peer addresses whose identity headers are believed.
    pub trusted: Vec<IpAddr>,
    /// The header naming the user (oauth2-proxy: `X-Forwarded-User`).
    pub user_header: String,
    /// The header listing the user's groups, comma-separated (`X-Forwarded-Groups`).
    pub groups_header: String,
    /// Groups mapped to roles (see [`super::oidc::map_role`]). The strongest wins.
    pub role_map: HashMap<String, Role>,
}

impl ProxyConfig {
    /// The user the proxy vouches for and their role, when the peer is a trusted proxy and
    /// sent a user; `Err` when it sent a user whose groups give no role, or a header twice.
    pub fn identity(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<Result<(String, Role), ()>> {
        // An IPv4 peer of a dual-stack listener shows as `::ffff:a.b.c.d`.
        let peer = peer?.to_canonical();
        if !self.trusted.iter().any(|t| t.to_canonical() == peer) {
            return None;
        }
        // A proxy that appended its headers to the client's would leave two: believe none.
        let single = |name: &str| {
            let mut values = headers.get_all(name).iter();
            match (values.next(), values.next()) {
                (one, None) => Ok(one),
                _ => Err(()),
            }
        };
        let (Ok(user), Ok(groups)) = (single(&self.user_header), single(&self.groups_header)) else {
            return Some(Err(()));
        };
        let user = user?
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|u| !u.is_empty() && u.len() <= 200)?;
        let role = groups
            .and_then(|v| v.to_str().ok())
            .into_iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter_map(|group| super::oidc::map_role(&self.role_map, group))
            .max();
        Some(role.map(|role| (format!("proxy:{user}"), role)).ok_or(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn config() -> ProxyConfig {
        ProxyConfig {
            trusted: vec!["10.0.0.2".parse().unwrap()],
            user_header: "x-forwarded-user".into(),
            groups_header: "x-forwarded-groups".into(),
            role_map: HashMap::from([("data-eng".to_owned(), Role::Operator)]),
        }
    }

    fn headers(user: &'static str, groups: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-user", HeaderValue::from_static(user));
        h.insert("x-forwarded-groups", HeaderValue::from_static(groups));
        h
    }

    #[test]
    fn headers_are_believed_only_from_the_proxy() {
        let proxy = Some("10.0.0.2".parse().unwrap());
        let other = Some("10.0.0.3".parse().unwrap());
        let h = headers("alice", "staff, data-eng");
        assert_eq!(
            config().identity(proxy, &h),
            Some(Ok(("proxy:alice".to_owned(), Role::Operator)))
        );
        assert_eq!(config().identity(other, &h), None);
        assert_eq!(config().identity(None, &h), None);
        assert_eq!(config().identity(proxy, &headers("bob", "staff")), Some(Err(())));
        // With a role map, only its entries grant roles: a group named `admin` does not.
        assert_eq!(
            config().identity(proxy, &headers("carol", "viewer,admin")),
            Some(Err(()))
        );
        let unmapped = ProxyConfig {
            role_map: HashMap::new(),
            ..config()
        };
        assert_eq!(
            unmapped
                .identity(proxy, &headers("carol", "viewer,admin"))
                .map(|r| r.map(|(_, role)| role)),
            Some(Ok(Role::Admin)),
            "without a map, role names map to themselves"
        );
        assert_eq!(config().identity(proxy, &HeaderMap::new()), None);
        let mapped = Some("::ffff:10.0.0.2".parse().unwrap());
        assert!(matches!(config().identity(mapped, &h), Some(Ok(_))));
        let mut twice = headers("alice", "staff");
        twice.append("x-forwarded-groups", HeaderValue::from_static("admin"));
        assert_eq!(config().identity(proxy, &twice), Some(Err(())));
    }
}
