//! The identity middleware: who is calling, what they may reach, and sign-in/out.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use cookie::{Cookie, SameSite};
use sqlx::PgPool;

use super::Identity;
use super::limits::{DenialRow, Limits};
use super::{db, keys};
use crate::caller::record::{self, Outcome};
use crate::caller::{AuthMethod, Principal, RequestMeta, identified};
use crate::error::{AppError, Result};

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
        .filter(|t| keys::looks_like_session_token(t))
        .map(keys::hash_secret)
}

fn session_cookie_name(secure_cookies: bool) -> &'static str {
    if secure_cookies {
        SECURE_COOKIE_NAME
    } else {
        COOKIE_NAME
    }
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
fn forgery_checked(headers: &HeaderMap, secure_cookies: bool) -> bool {
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
    session_token(headers, secure_cookies).map(keys::csrf_token)
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

/// The credential a request presented, kept so that a long request (an event stream) can
/// check it again: it ends when the credential does.
#[derive(Debug, Clone)]
pub struct Presented {
    /// What to read again.
    proof: Proof,
    /// When it stops being valid at the latest, as far as known when it was checked.
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
enum Proof {
    /// An API key, by its hash.
    ApiKey(Vec<u8>),
    /// A browser session, by its token hash.
    Session(Vec<u8>),
    /// A run's callback credential, by its hash.
    Callback(Vec<u8>),
    /// An OIDC bearer token: it ends at its expiry.
    Token,
    /// The identity-aware proxy's headers: nothing to read again.
    Proxy,
}

/// The live API key with this hash: remembered by this replica, or read (and remembered).
async fn live_api_key(identity: &Identity, hash: &[u8]) -> Result<Option<db::Credential>> {
    let version = identity.freshness.key_version();
    if let Some(known) = identity.known_keys.get(hash, version) {
        return Ok(Some(known));
    }
    let read = db::read_api_key(&identity.db, hash).await?;
    if let Some(credential) = &read {
        identity
            .known_keys
            .remember(hash.to_vec(), credential.clone(), version);
    }
    Ok(read)
}

/// The run a live callback credential with this hash reports on.
async fn live_callback(identity: &Identity, hash: &[u8]) -> Result<Option<i64>> {
    let ttl = i64::try_from(identity.callback_ttl.as_secs()).unwrap_or(i64::MAX);
    Ok(db::run_for_callback_token(&identity.db, hash, CALLBACK_GRACE_MINUTES, ttl).await?)
}

/// Who presented a bearer credential, checked: an OIDC token, a run's callback credential or
/// an API key. A credential of the wrong shape or checksum is refused without any database
/// work.
async fn authenticate_bearer(identity: &Identity, token: &str) -> Result<(Principal, Presented)> {
    if let Some(oidc) = &identity.oidc
        && super::oidc::looks_like_jwt(token)
    {
        return match oidc.verify_bearer(token).await {
            Ok(identity) => Ok((
                Principal {
                    actor: identity.actor,
                    role: identity.role,
                    via: AuthMethod::Oidc,
                    run_scope: None,
                    key_id: None,
                },
                Presented {
                    proof: Proof::Token,
                    expires_at: identity.expires_at,
                },
            )),
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
        let run_id = live_callback(identity, &hash)
            .await?
            .ok_or(AppError::Unauthorized)?;
        let principal = Principal {
            actor: format!("run:{run_id}"),
            role: crate::caller::Role::Operator,
            via: AuthMethod::RunCallback,
            run_scope: Some(run_id),
            key_id: None,
        };
        let presented = Presented {
            proof: Proof::Callback(hash),
            expires_at: None,
        };
        return Ok((principal, presented));
    }
    if !keys::looks_like_api_key(token) {
        return Err(AppError::Unauthorized);
    }
    let hash = keys::hash_secret(token);
    let key = live_api_key(identity, &hash)
        .await?
        .ok_or(AppError::Unauthorized)?;
    let principal = Principal {
        actor: key.actor,
        role: key.role,
        via: AuthMethod::ApiKey,
        run_scope: None,
        key_id: Some(key.id),
    };
    let presented = Presented {
        proof: Proof::ApiKey(hash),
        expires_at: key.expires_at,
    };
    Ok((principal, presented))
}

/// Who is calling, if anyone: a bearer credential, the identity-aware proxy's headers, or
/// a session cookie, in that order.
async fn authenticate(
    identity: &Identity,
    headers: &HeaderMap,
    meta: &RequestMeta,
) -> Result<Option<(Principal, Presented)>> {
    if let Some(token) = bearer(headers) {
        return authenticate_bearer(identity, token).await.map(Some);
    }
    if let Some(proxy) = &identity.proxy {
        match proxy.identity(meta.peer(), headers) {
            Some(Ok((actor, role))) => {
                let principal = Principal {
                    actor,
                    role,
                    via: AuthMethod::Proxy,
                    run_scope: None,
                    key_id: None,
                };
                let presented = Presented {
                    proof: Proof::Proxy,
                    expires_at: None,
                };
                return Ok(Some((principal, presented)));
            }
            Some(Err(())) => {
                return Err(AppError::Forbidden {
                    needed: "a group that maps to a role".into(),
                });
            }
            None => {}
        }
    }
    // A cookie that is not a session token's shape (64 hex digits) costs no database work.
    let Some(hash) = &session_hash(headers, identity.secure_cookies) else {
        return Ok(None);
    };
    let Some(session) = db::read_session(&identity.db, hash, SESSION_IDLE_MINUTES).await? else {
        return Ok(None);
    };
    let principal = Principal {
        actor: session.actor,
        role: session.role,
        via: AuthMethod::Session,
        run_scope: None,
        key_id: None,
    };
    let presented = Presented {
        proof: Proof::Session(hash.clone()),
        expires_at: session.expires_at,
    };
    Ok(Some((principal, presented)))
}

/// Checks again a credential checked earlier in this request; false once it no longer
/// holds.
///
/// Not expired, not revoked, its session not signed out or idle, its key not past a
/// rotation's overlap. Its expiry is read afresh (a rotation moves it). A database that
/// cannot answer keeps it (the next check decides).
pub async fn recheck(identity: &Identity, presented: &mut Presented) -> bool {
    if presented.expires_at.is_some_and(|end| end <= Utc::now()) {
        return false;
    }
    let live = match &presented.proof {
        Proof::ApiKey(hash) => live_api_key(identity, hash)
            .await
            .map(|key| key.map(|key| key.expires_at)),
        Proof::Session(hash) => db::read_session(&identity.db, hash, SESSION_IDLE_MINUTES)
            .await
            .map(|session| session.map(|session| session.expires_at))
            .map_err(AppError::from),
        Proof::Callback(hash) => live_callback(identity, hash)
            .await
            .map(|run| run.map(|_| presented.expires_at)),
        Proof::Token | Proof::Proxy => Ok(Some(presented.expires_at)),
    };
    match live {
        Ok(Some(expires_at)) => {
            presented.expires_at = expires_at;
            expires_at.is_none_or(|end| end > Utc::now())
        }
        Ok(None) => false,
        Err(error) => {
            tracing::debug!(%error, "cannot check a credential again now");
            true
        }
    }
}

/// An event stream takes the credential it was opened with; without one the answer is 401.
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Presented {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut http::request::Parts, _: &S) -> Result<Self, AppError> {
        identified(parts)
    }
}

/// Establishes the caller's identity once per request and turns away those without one.
///
/// API and server-function paths answer 401 in the JSON error shape; pages redirect to the
/// sign-in page, keeping where the user wanted to go. A credential that verifies is
/// accepted whatever the address did before; a refused one counts against the address's
/// budget of failures (429 once spent) and in the collapsed refusal tally of the audit trail.
pub async fn identify(State(identity): State<Identity>, mut req: Request, next: Next) -> Response {
    let meta = RequestMeta::from_request(&req);
    let path = req.uri().path().to_owned();
    let outcome = authenticate(&identity, req.headers(), &meta).await;
    // Signing someone in from another site (login CSRF) is refused like any forgery.
    let login_forgery = *req.method() == Method::POST
        && matches!(path.as_str(), "/sfn/sign_in" | "/auth/oidc/login")
        && provenance(req.headers()) == Provenance::CrossSite;
    let refusal = match outcome {
        _ if login_forgery => Some(cross_site_refusal()),
        Ok(Some((principal, presented))) => {
            // Browsers carry sessions and proxy identities by themselves: forgeable.
            let via_browser = matches!(principal.via, AuthMethod::Session | AuthMethod::Proxy);
            let unsafe_method = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
            let forged =
                via_browser && unsafe_method && !forgery_checked(req.headers(), identity.secure_cookies);
            req.extensions_mut().insert(principal);
            req.extensions_mut().insert(presented);
            forged.then(cross_site_refusal)
        }
        _ if is_public(&path) => None,
        Ok(None) if !is_machine_path(&path) => {
            let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
            let next = form_urlencoded_component(target);
            Some(Redirect::to(&format!("/login?next={next}")).into_response())
        }
        Ok(None) => Some(AppError::Unauthorized.into_response()),
        Err(AppError::Unauthorized) => {
            let target = format!("{} {path}", req.method());
            Some(
                refuse(&identity.db, &identity.limits, &meta, &target)
                    .await
                    .into_response(),
            )
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
        let target = super::limits::cut_target(&format!("{method} {path}"));
        let audit = record::append(
            &identity.db,
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

/// Refuses a credential: counts it against the client's budget and in the refusal tally,
/// and answers 401, or 429 once the budget is spent.
pub async fn refuse(db: &PgPool, limits: &Limits, meta: &RequestMeta, target: &str) -> AppError {
    if let Some(row) = limits.refused(meta.client(), target) {
        write_refusals(db, &[row], Some(&meta.request_id)).await;
    }
    limits
        .failed(meta.client())
        .err()
        .unwrap_or(AppError::Unauthorized)
}

async fn write_refusals(db: &PgPool, rows: &[DenialRow], request_id: Option<&str>) {
    for row in rows {
        if let Err(e) = db::record_denials(db, row, request_id).await {
            tracing::error!(error = %e, "could not record refused credentials");
        }
    }
}

/// Keeps this replica's limiters bounded and writes the refusal rows that come due, every
/// few seconds until `stopped`; then writes what is still counted.
pub async fn keep_limits(
    db: PgPool,
    limits: std::sync::Arc<Limits>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.wait_for(|stop| *stop) => break,
        }
        write_refusals(&db, &limits.prune(), None).await;
    }
    write_refusals(&db, &limits.drain(), None).await;
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
    /// How long the cookie lasts: the session's own end, never past its key's.
    max_age: cookie::time::Duration,
}

impl NewSession {
    /// The `Set-Cookie` value that hands the session to the browser.
    pub fn cookie_header(&self, secure: bool) -> HeaderValue {
        set_cookie(session_cookie_name(secure), &self.token, secure, self.max_age)
    }
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

/// Checks an API key and opens a browser session for it, ending no later than the key.
/// A key that verifies always signs in; a refused one is handled as every refused
/// credential is ([`refuse`]).
pub async fn sign_in(db: &PgPool, limits: &Limits, api_key: &str, meta: &RequestMeta) -> Result<NewSession> {
    let credential = if keys::looks_like_api_key(api_key) {
        db::read_api_key(db, &keys::hash_secret(api_key)).await?
    } else {
        None
    };
    let Some(credential) = credential else {
        return Err(refuse(db, limits, meta, "POST /sfn/sign_in").await);
    };
    let mut tx = db.begin().await?;
    let opened = SessionOpened {
        api_key_id: Some(credential.id),
        actor: &credential.actor,
        role: credential.role,
        method: "api_key",
        ends_by: credential.expires_at,
    };
    let session = open_session(&mut tx, &opened, meta).await?;
    tx.commit().await?;
    Ok(session)
}

/// What a new browser session stands on.
pub struct SessionOpened<'a> {
    /// The API key it was opened with, if one: the session ends when the key does.
    pub api_key_id: Option<i64>,
    /// Who signed in.
    pub actor: &'a str,
    /// Their role.
    pub role: crate::caller::Role,
    /// How they proved it (`api_key`, `oidc`), for the audit trail.
    pub method: &'a str,
    /// The latest end the session may have (its key's expiry).
    pub ends_by: Option<DateTime<Utc>>,
}

/// Opens a browser session for a proven caller and audits it.
pub async fn open_session(
    tx: &mut sqlx::PgConnection,
    opened: &SessionOpened<'_>,
    meta: &RequestMeta,
) -> Result<NewSession> {
    let token = keys::new_session_token();
    let expires_at = db::insert_session(
        &mut *tx,
        &token.hash,
        opened.api_key_id,
        opened.actor,
        opened.role,
        SESSION_HOURS,
        opened.ends_by,
    )
    .await?;
    record::append(
        &mut *tx,
        opened.actor,
        Some(opened.role.as_str()),
        "auth.sign_in",
        Some(opened.method),
        Outcome::Success,
        meta,
    )
    .await?;
    let seconds = (expires_at - Utc::now()).num_seconds().max(0);
    Ok(NewSession {
        token: token.clear,
        max_age: cookie::time::Duration::seconds(seconds),
    })
}

/// Revokes the session of the current request, if it has one.
pub async fn sign_out(db: &PgPool, session_hash: Option<&[u8]>, meta: &RequestMeta) -> Result<()> {
    if let Some(hash) = session_hash {
        let mut tx = db.begin().await?;
        db::revoke_session(&mut *tx, hash).await?;
        if let Ok(principal) = crate::caller::current_principal() {
            record::success(&mut *tx, &principal, "auth.sign_out", &principal.actor, meta).await?;
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
            HeaderValue::from_str(&keys::csrf_token(token)).unwrap(),
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

    #[test]
    fn sign_in_redirect_target_is_escaped() {
        assert_eq!(form_urlencoded_component("/runs/1?x=a b"), "/runs/1%3Fx%3Da%20b");
    }
}
