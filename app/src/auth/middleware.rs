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
use crate::telemetry::{RequestIds, TraceParent, new_request_id};

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
    /// The trace the request runs in, with its span as parent (what Prefect is given).
    pub traceparent: Option<TraceParent>,
    /// The peer address, when the server knows it.
    pub source_addr: Option<String>,
    /// The session token hash carried by the cookie, if any.
    session_hash: Option<Vec<u8>>,
}

impl RequestMeta {
    fn from_request(req: &Request) -> Self {
        // `telemetry::http::observe`, the outermost layer, decided the ids.
        let ids = req.extensions().get::<RequestIds>();
        let source_addr = req
            .extensions()
            .get::<ConnectInfo<std::net::SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_string());
        let session_hash = session_token(req.headers()).map(keys::hash_secret);
        Self {
            request_id: ids.map_or_else(new_request_id, |ids| ids.request_id.clone()),
            traceparent: ids.map(|ids| ids.traceparent),
            source_addr,
            session_hash,
        }
    }

    /// The meta of a command run on the server itself (the CLI).
    pub fn local() -> Self {
        Self {
            request_id: new_request_id(),
            traceparent: None,
            source_addr: Some("local".to_owned()),
            session_hash: None,
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

fn session_token(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, &[COOKIE_NAME, SECURE_COOKIE_NAME])
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
        "/api/health"
            | "/api/ready"
            | "/api/openapi.json"
            | "/login"
            | "/sfn/sign_in"
            | "/auth/oidc/login"
            | "/auth/oidc/callback"
            | "/favicon.ico"
            | "/favicon.svg"
    ) || path.starts_with("/pkg/")
        || path == "/api/docs"
        || path.starts_with("/api/docs/")
}

/// Paths answered with a JSON 401 rather than a redirect to the sign-in page.
fn is_machine_path(path: &str) -> bool {
    path == "/api" || path == "/metrics" || path.starts_with("/api/") || path.starts_with("/sfn/")
}

/// Where a request comes from, as far as the browser says.
#[derive(Debug, PartialEq, Eq)]
enum Provenance {
    /// This origin (or the user typed it).
    SameOrigin,
    /// Another site.
    CrossSite,
    /// Neither `Sec-Fetch-Site` nor `Origin` came with it.
    Unknown,
}

fn provenance(headers: &HeaderMap) -> Provenance {
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

/// Whether a state-changing request carrying the session cookie may go ahead: the browser
/// must say it is same-origin, or, when it says nothing, the request must carry the
/// session's CSRF token (`X-CSRF-Token`, as pages give it in `<meta name="csrf-token">`).
fn forgery_checked(headers: &HeaderMap) -> bool {
    match provenance(headers) {
        Provenance::SameOrigin => true,
        Provenance::CrossSite => false,
        Provenance::Unknown => {
            let sent = headers.get("x-csrf-token").map(HeaderValue::as_bytes);
            match (sent, session_token(headers)) {
                (Some(sent), Some(token)) => {
                    subtle::ConstantTimeEq::ct_eq(sent, keys::csrf_token(token).as_bytes()).into()
                }
                _ => false,
            }
        }
    }
}

/// The CSRF token of the session of this request, for the page to hand to scripts.
pub fn csrf_token_of(headers: &HeaderMap) -> Option<String> {
    session_token(headers).map(keys::csrf_token)
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

async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    meta: &RequestMeta,
) -> Result<Option<Principal>> {
    let db = &state.db;
    if let Some(token) = bearer(headers) {
        if let Some(oidc) = &state.oidc
            && super::oidc::looks_like_jwt(token)
        {
            return match oidc.verify_bearer(token).await {
                Ok(identity) => Ok(Some(Principal {
                    actor: identity.actor,
                    role: identity.role,
                    via: AuthMethod::Oidc,
                    run_scope: None,
                    key_id: None,
                })),
                Err(super::oidc::TokenError::Issuer(why)) => {
                    tracing::warn!(reason = %why, "cannot check a bearer token: the OIDC issuer is unreachable");
                    Err(AppError::Upstream {
                        service: "oidc issuer".into(),
                    })
                }
                Err(refused) => {
                    tracing::debug!(reason = %refused, "bearer token refused");
                    Err(AppError::Unauthorized)
                }
            };
        }
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
                        key_id: None,
                    })
                })
                .ok_or(AppError::Unauthorized);
        }
        if !keys::looks_like_api_key(token) {
            return Err(AppError::Unauthorized);
        }
        let hash = keys::hash_secret(token);
        let version = state.hub.key_version();
        let credential = match state.known_keys.get(&hash, version) {
            Some(known) => Some(known),
            None => {
                let read = db::use_api_key(db, &hash).await?;
                if let Some(credential) = &read {
                    state.known_keys.remember(hash, credential.clone(), version);
                }
                read
            }
        };
        return credential
            .map(|c| {
                Some(Principal {
                    actor: c.actor,
                    role: c.role,
                    via: AuthMethod::ApiKey,
                    run_scope: None,
                    key_id: Some(c.id),
                })
            })
            .ok_or(AppError::Unauthorized);
    }
    if let Some(proxy) = &state.proxy {
        let peer = meta.source_addr.as_deref().and_then(|a| a.parse().ok());
        match proxy.identity(peer, headers) {
            Some(Ok((actor, role))) => {
                return Ok(Some(Principal {
                    actor,
                    role,
                    via: AuthMethod::Proxy,
                    run_scope: None,
                    key_id: None,
                }));
            }
            Some(Err(())) => {
                return Err(AppError::Forbidden {
                    needed: "a group that maps to a role".into(),
                });
            }
            None => {}
        }
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
        key_id: None,
    }))
}

/// Establishes the caller's identity once per request and turns away those without one.
///
/// API and server-function paths answer 401 in the JSON error shape; pages redirect to the
/// sign-in page, keeping where the user wanted to go.
pub async fn identify(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let meta = RequestMeta::from_request(&req);
    let path = req.uri().path().to_owned();
    // An address over its budget of failed authentications gets no credential checked.
    let outcome = match state.limits.admit(meta.source_addr.as_deref()) {
        Err(limited) if bearer(req.headers()).is_some() => Err(limited),
        _ => authenticate(&state, req.headers(), &meta).await,
    };
    // Signing someone in from another site (login CSRF) is refused like any forgery.
    let login_forgery = *req.method() == Method::POST
        && matches!(path.as_str(), "/sfn/sign_in" | "/auth/oidc/login")
        && provenance(req.headers()) == Provenance::CrossSite;
    let refusal = match outcome {
        _ if login_forgery => Some(cross_site_refusal()),
        Ok(Some(principal)) => {
            // Browsers carry sessions and proxy identities by themselves: forgeable.
            let via_browser = matches!(principal.via, AuthMethod::Session | AuthMethod::Proxy);
            let unsafe_method = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
            let forged = via_browser && unsafe_method && !forgery_checked(req.headers());
            req.extensions_mut().insert(principal);
            forged.then(cross_site_refusal)
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
    let caller = req.extensions().get::<Principal>().cloned();
    let method = req.method().clone();
    let response = match refusal {
        Some(response) => response,
        None => {
            req.extensions_mut().insert(meta.clone());
            next.run(req).await
        }
    };
    // A known caller refused for its role, or for a cross-site request, is audited here,
    // once, whichever route refused it.
    if response.status() == http::StatusCode::FORBIDDEN
        && let Some(caller) = caller
    {
        let target = format!("{method} {path}");
        let audit = audit::record(
            &state.db,
            &caller.actor,
            Some(caller.role.as_str()),
            "auth.forbidden",
            Some(&target),
            Outcome::Denied,
            &meta,
        );
        if let Err(e) = audit.await {
            tracing::error!(error = %e, "could not record a refused request");
        }
    }
    response
}

fn cross_site_refusal() -> Response {
    AppError::Forbidden {
        needed: "same-origin request".into(),
    }
    .into_response()
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
        set_cookie(
            name,
            &self.token,
            secure,
            cookie::time::Duration::hours(i64::from(SESSION_HOURS)),
        )
    }
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie_header(secure: bool) -> HeaderValue {
    let name = if secure { SECURE_COOKIE_NAME } else { COOKIE_NAME };
    set_cookie(name, "", secure, cookie::time::Duration::ZERO)
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
    let session = open_session(
        &mut tx,
        Some(credential.id),
        &credential.actor,
        credential.role,
        "api_key",
        meta,
    )
    .await?;
    tx.commit().await?;
    Ok(session)
}

/// Opens a browser session for a proven caller (signed in with `method`) and audits it.
pub async fn open_session(
    tx: &mut sqlx::PgConnection,
    api_key_id: Option<i64>,
    actor: &str,
    role: super::Role,
    method: &str,
    meta: &RequestMeta,
) -> Result<NewSession> {
    let token = keys::new_session_token();
    db::insert_session(&mut *tx, &token.hash, api_key_id, actor, role, SESSION_HOURS).await?;
    audit::record(
        &mut *tx,
        actor,
        Some(role.as_str()),
        "auth.sign_in",
        Some(method),
        Outcome::Success,
        meta,
    )
    .await?;
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
            HeaderValue::from_str(&keys::csrf_token(token)).unwrap(),
        );
        assert!(forgery_checked(&h));
        assert_eq!(csrf_token_of(&h), Some(keys::csrf_token(token)));
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
        assert_eq!(session_token(&h), Some("tok"));
        assert_eq!(bearer(&headers(&[("authorization", "Basic abc")])), None);
    }

    #[test]
    fn sign_in_redirect_target_is_escaped() {
        assert_eq!(form_urlencoded_component("/runs/1?x=a b"), "/runs/1%3Fx%3Da%20b");
    }
}
