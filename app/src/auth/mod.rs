//! Identity: how a caller proves who they are (API key, session cookie, a run's callback
//! credential, OIDC token, identity-aware proxy), signing in and out, and rate limits.
//!
//! [`middleware::identify`] establishes the caller once per request; everything else reads
//! it as a [`crate::caller::Caller`].

use leptos::prelude::*;

use crate::caller::Principal;
#[cfg(feature = "ssr")]
use crate::caller::{RequestMeta, current_principal};
use crate::error::AppError;

pub mod page;

#[cfg(feature = "ssr")]
pub mod budgets;
#[cfg(feature = "ssr")]
pub mod credentials;
#[cfg(feature = "ssr")]
pub mod db;
#[cfg(feature = "ssr")]
pub mod headers;
#[cfg(feature = "ssr")]
pub mod key_cache;
#[cfg(feature = "ssr")]
pub mod limits;
#[cfg(feature = "ssr")]
pub mod middleware;
#[cfg(feature = "ssr")]
pub mod oidc;
#[cfg(feature = "ssr")]
pub mod oidc_routes;
#[cfg(feature = "ssr")]
pub mod proxy;
#[cfg(feature = "ssr")]
pub mod secrets;
#[cfg(feature = "ssr")]
pub mod sessions;

/// What identifying callers needs, built once at start-up: the database, this replica's
/// limits and remembered keys, the OIDC issuer and the identity-aware proxy.
#[cfg(feature = "ssr")]
#[derive(Clone)]
pub struct Identity {
    /// The `PostgreSQL` pool.
    pub db: sqlx::PgPool,
    /// This replica's rate limits (failed authentications, sign-ins, triggers).
    pub limits: std::sync::Arc<limits::Limits>,
    /// API keys this replica verified lately.
    pub known_keys: std::sync::Arc<key_cache::KnownKeys>,
    /// Moves when what keys and sessions grant may have changed.
    pub freshness: std::sync::Arc<crate::api::cache::Freshness>,
    /// The OpenID Connect issuer, when one is configured.
    pub oidc: Option<std::sync::Arc<oidc::Oidc>>,
    /// The trusted identity-aware proxy, when one is configured.
    pub proxy: Option<std::sync::Arc<proxy::ProxyConfig>>,
    /// Whether cookies get `Secure` and the `__Host-` prefix (served over HTTPS).
    pub secure_cookies: bool,
    /// How long a run's callback credential works at most (`FLOWDECK_CALLBACK_TTL`).
    pub callback_ttl: std::time::Duration,
}

/// The signed-in user as the UI shows it, or `None` when signed out.
#[server(prefix = "/sfn", endpoint = "whoami")]
pub async fn whoami() -> Result<Option<Principal>, AppError> {
    Ok(current_principal().ok())
}

/// Exchanges an API key for a browser session cookie, then goes to `next`.
#[server(prefix = "/sfn", endpoint = "sign_in")]
pub async fn sign_in(api_key: String, next: Option<String>) -> Result<(), AppError> {
    let identity = expect_context::<Identity>();
    let meta = RequestMeta::current();
    let session = sessions::sign_in(&identity.db, &identity.limits, api_key.trim(), &meta).await?;
    let response = expect_context::<leptos_axum::ResponseOptions>();
    response.append_header(
        http::header::SET_COOKIE,
        session.cookie_header(identity.secure_cookies),
    );
    leptos_axum::redirect(&safe_next(next.as_deref()));
    Ok(())
}

/// Ends the browser session and returns to the sign-in page.
#[server(prefix = "/sfn", endpoint = "sign_out")]
pub async fn sign_out() -> Result<(), AppError> {
    let identity = expect_context::<Identity>();
    let meta = RequestMeta::current();
    let session = use_context::<http::request::Parts>()
        .and_then(|parts| headers::session_hash(&parts.headers, identity.secure_cookies));
    sessions::sign_out(&identity.db, session.as_deref(), &meta).await?;
    // This replica's event streams of the session end now (others when it is announced).
    identity.freshness.touch_keys();
    let response = expect_context::<leptos_axum::ResponseOptions>();
    response.append_header(
        http::header::SET_COOKIE,
        headers::clear_cookie_header(identity.secure_cookies),
    );
    leptos_axum::redirect("/login");
    Ok(())
}

/// Only same-site absolute paths are followed after sign-in, never another origin.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.contains('\\')
                && !path.chars().any(char::is_control)
                && path.len() <= 2000 =>
        {
            path.to_owned()
        }
        _ => "/".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_only_follows_local_paths() {
        assert_eq!(safe_next(Some("/pipelines/3")), "/pipelines/3");
        assert_eq!(safe_next(Some("//evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        // Browsers drop tabs and newlines from URLs: `/\t/evil` would become `//evil`.
        assert_eq!(safe_next(Some("/\t/evil.example")), "/");
        assert_eq!(safe_next(None), "/");
    }
}
