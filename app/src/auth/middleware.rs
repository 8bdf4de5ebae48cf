//! The identity middleware: who is calling, what they may reach, and sign-in/out.

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use cookie::{Cookie, SameSite};
use leptos::prelude::use_context;
use sqlx::PgPool;

use super::limits::Limits;
use super::{AuthMethod, Principal, db, keys};
use crate::audit::{self, Outcome};
use crate::error::{AppError, Result};
use crate::state::AppState;

/// Cookie name when served over plain HTTP (localhost development).
const COOKIE_NAME: &str = "flowdeck_session";
/// Cookie name over HTTPS: the `__Host-` prefix pins it to this host and path `/`.
const SECURE_COOKIE_NAME: &str = "__Host-flowdeck_session";
/// A session ends this long after sign-in, however active.
const SESSION_HOURS: i32 = 12;
/// A run's callback credential keeps working this long after the run ended (late reports).
const CALLBACK_GRACE_MINUTES: i32 = 10;
/// A session ends after this long without a request.
const SESSION_IDLE_MINUTES: i32 = 120;

/// Facts about the request kept for audit and tracing.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    /// The caller's `X-Request-ID` when it is sane, else one generated here.
    pub request_id: String,
    /// The peer address, when the server knows it.
    pub source_addr: Option<String>,
    /// The session token hash carried by the cookie, if any.
    session_hash: Option<Vec<u8>>,
}

impl RequestMeta {
    fn from_request(req: &Request) -> Self {
        let request_id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| {
                !v.is_empty()
                    && v.len() <= 128
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
            })
            .map(str::to_owned)
            .unwrap_or_else(|| hex::encode(rand::random::<[u8; 16]>()));
        let source_addr = req
            .extensions()
            .get::<ConnectInfo<std::net::SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_string());
        let session_hash = session_token(req.headers()).map(keys::hash_secret);
        Self {
            request_id,
            source_addr,
            session_hash,
        }
    }

    /// The meta of the request being served by a server function.
    pub fn current() -> Self {
        use_context::<http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<RequestMeta>().cloned())
            .unwrap_or_default()
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RequestMeta {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<RequestMeta>().cloned().unwrap_or_default())
    }
}

/// Handlers take the caller as an extractor; without an identity the answer is 401.
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Principal {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut http::request::Parts, _: &S) -> Result<Self, AppError> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or(AppError::Unauthorized)
    }
}

fn session_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME || *name == SECURE_COOKIE_NAME)
        .map(|(_, value)| value)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Paths anyone may reach: health, the sign-in page and its server function, static files.
fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/api/health" | "/login" | "/sfn/sign_in" | "/favicon.ico" | "/favicon.svg"
    ) || path.starts_with("/pkg/")
}

/// Paths answered with a JSON 401 rather than a redirect to the sign-in page.
fn is_machine_path(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/") || path.starts_with("/sfn/")
}

/// A state-changing request sent by another site with the user's cookie (CSRF).
fn is_cross_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return !matches!(site, "same-origin" | "none");
    }
    match (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) {
        (Some(origin), Some(host)) => origin.split_once("://").map(|(_, rest)| rest) != Some(host),
        _ => false,
    }
}

async fn authenticate(db: &PgPool, headers: &HeaderMap, meta: &RequestMeta) -> Result<Option<Principal>> {
    if let Some(token) = bearer(headers) {
        if keys::looks_like_callback_token(token) {
            let hash = keys::hash_secret(token);
            let run = crate::runs::db::run_for_callback_token(db, &hash, CALLBACK_GRACE_MINUTES).await?;
            return run
                .map(|run_id| {
                    Some(Principal {
                        actor: format!("run:{run_id}"),
                        role: super::Role::Operator,
                        via: AuthMethod::RunCallback,
                        run_scope: Some(run_id),
                    })
                })
                .ok_or(AppError::Unauthorized);
        }
        if !keys::looks_like_api_key(token) {
            return Err(AppError::Unauthorized);
        }
        let credential = db::use_api_key(db, &keys::hash_secret(token)).await?;
        return credential
            .map(|c| {
                Some(Principal {
                    actor: c.actor,
                    role: c.role,
                    via: AuthMethod::ApiKey,
                    run_scope: None,
                })
            })
            .ok_or(AppError::Unauthorized);
    }
    let Some(hash) = &meta.session_hash else {
        return Ok(None);
    };
    let credential = db::use_session(db, hash, SESSION_IDLE_MINUTES).await?;
    Ok(credential.map(|c| Principal {
        actor: c.actor,
        role: c.role,
        via: AuthMethod::Session,
        run_scope: None,
    }))
}

/// Establishes the caller's identity once per request and turns away those without one.
///
/// API and server-function paths answer 401 in the JSON error shape; pages redirect to the
/// sign-in page, keeping where the user wanted to go.
pub async fn identify(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let meta = RequestMeta::from_request(&req);
    let request_id = meta.request_id.clone();
    let path = req.uri().path().to_owned();
    // An address over its budget of failed authentications gets no credential checked.
    let outcome = match state.limits.admit(meta.source_addr.as_deref()) {
        Err(limited) if bearer(req.headers()).is_some() => Err(limited),
        _ => authenticate(&state.db, req.headers(), &meta).await,
    };
    let refusal = match outcome {
        Ok(Some(principal)) => {
            let via_cookie = principal.via == AuthMethod::Session;
            let unsafe_method = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
            if via_cookie && unsafe_method && is_cross_site(req.headers()) {
                Some(
                    AppError::Forbidden {
                        needed: "same-origin request".into(),
                    }
                    .into_response(),
                )
            } else {
                req.extensions_mut().insert(principal);
                None
            }
        }
        _ if is_public(&path) => None,
        Ok(None) if !is_machine_path(&path) => {
            let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
            let next = form_urlencoded_component(target);
            Some(Redirect::to(&format!("/login?next={next}")).into_response())
        }
        Ok(None) => Some(AppError::Unauthorized.into_response()),
        Err(error @ (AppError::Unauthorized | AppError::RateLimited { .. })) => {
            let audit = audit::record(
                &state.db,
                "anonymous",
                None,
                "auth.authenticate",
                Some(&path),
                Outcome::Denied,
                &meta,
            );
            if let Err(e) = audit.await {
                tracing::error!(error = %e, "could not record refused authentication");
            }
            // A wrong credential spends the address's budget; the one that spends it is 429.
            let answer = match error {
                AppError::Unauthorized => state.limits.failed(meta.source_addr.as_deref()).err(),
                _ => None,
            };
            Some(answer.unwrap_or(error).into_response())
        }
        Err(error) => Some(error.into_response()),
    };
    let mut response = match refusal {
        Some(response) => response,
        None => {
            req.extensions_mut().insert(meta);
            next.run(req).await
        }
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

fn form_urlencoded_component(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A browser session just opened; its token lives only in the cookie.
pub struct NewSession {
    token: String,
}

impl NewSession {
    /// The `Set-Cookie` value that hands the session to the browser.
    pub fn cookie_header(&self, secure: bool) -> HeaderValue {
        let name = if secure { SECURE_COOKIE_NAME } else { COOKIE_NAME };
        let cookie = Cookie::build((name, self.token.clone()))
            .http_only(true)
            .secure(secure)
            .same_site(SameSite::Lax)
            .path("/")
            .max_age(cookie::time::Duration::hours(i64::from(SESSION_HOURS)))
            .build();
        HeaderValue::from_str(&cookie.to_string()).expect("cookie of hex token is a valid header")
    }
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie_header(secure: bool) -> HeaderValue {
    let name = if secure { SECURE_COOKIE_NAME } else { COOKIE_NAME };
    let cookie = Cookie::build((name, ""))
        .http_only(true)
        .secure(secure)
        .same_site(SameSite::Lax)
        .path("/")
        .max_age(cookie::time::Duration::ZERO)
        .build();
    HeaderValue::from_str(&cookie.to_string()).expect("empty cookie is a valid header")
}

/// Checks an API key and opens a browser session for it; every attempt is audited, and
/// failures count against the address's budget.
pub async fn sign_in(db: &PgPool, limits: &Limits, api_key: &str, meta: &RequestMeta) -> Result<NewSession> {
    // A blocked address has no key checked, but the attempt is still audited.
    let admitted = limits.admit(meta.source_addr.as_deref());
    let mut tx = db.begin().await?;
    let credential = if admitted.is_ok() && keys::looks_like_api_key(api_key) {
        db::use_api_key(&mut *tx, &keys::hash_secret(api_key)).await?
    } else {
        None
    };
    let Some(credential) = credential else {
        audit::record(
            &mut *tx,
            "anonymous",
            None,
            "auth.sign_in",
            None,
            Outcome::Denied,
            meta,
        )
        .await?;
        tx.commit().await?;
        admitted?;
        limits.failed(meta.source_addr.as_deref())?;
        return Err(AppError::Unauthorized);
    };
    let token = keys::new_session_token();
    db::insert_session(
        &mut *tx,
        &token.hash,
        credential.id,
        &credential.actor,
        credential.role,
        SESSION_HOURS,
    )
    .await?;
    audit::record(
        &mut *tx,
        &credential.actor,
        Some(credential.role.as_str()),
        "auth.sign_in",
        None,
        Outcome::Success,
        meta,
    )
    .await?;
    tx.commit().await?;
    Ok(NewSession { token: token.clear })
}

/// Revokes the session of the current request, if it has one.
pub async fn sign_out(db: &PgPool, meta: &RequestMeta) -> Result<()> {
    if let Some(hash) = &meta.session_hash {
        let mut tx = db.begin().await?;
        db::revoke_session(&mut *tx, hash).await?;
        if let Ok(principal) = super::current_principal() {
            audit::record_success(&mut *tx, &principal, "auth.sign_out", &principal.actor, meta).await?;
        }
        tx.commit().await?;
    }
    Ok(())
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

    #[test]
    fn cross_site_posts_are_recognised_by_fetch_metadata_or_origin() {
        assert!(is_cross_site(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(!is_cross_site(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(is_cross_site(&headers(&[
            ("origin", "http://evil.test"),
            ("host", "127.0.0.1:8000")
        ])));
        assert!(!is_cross_site(&headers(&[
            ("origin", "http://127.0.0.1:8000"),
            ("host", "127.0.0.1:8000")
        ])));
    }

    #[test]
    fn bearer_tokens_and_session_cookies_are_read_from_headers() {
        let h = headers(&[
            ("authorization", "Bearer  abc "),
            ("cookie", "a=1; flowdeck_session=tok; b=2"),
        ]);
        assert_eq!(bearer(&h), Some("abc"));
        assert_eq!(session_token(&h), Some("tok"));
        assert_eq!(bearer(&headers(&[("authorization", "Basic abc")])), None);
    }

    #[test]
    fn sign_in_redirect_target_is_escaped() {
        assert_eq!(form_urlencoded_component("/runs/1?x=a b"), "/runs/1%3Fx%3Da%20b");
    }
}
