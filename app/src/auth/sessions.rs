//! Browser sessions: signing in with an API key (or the issuer), the session cookie, and
//! signing out.

use axum::http::HeaderValue;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::headers::{session_cookie_name, set_cookie};
use super::limits::Limits;
use super::middleware::refuse;
use super::{db, secrets};
use crate::caller::record::{self, Outcome};
use crate::caller::{Caller, RequestMeta};
use crate::error::Result;

/// A session ends this long after sign-in, however active.
const SESSION_HOURS: i32 = 12;

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

/// Checks an API key and opens a browser session for it, ending no later than the key.
/// A key that verifies always signs in; a refused one is handled as every refused
/// credential is ([`refuse`]).
pub async fn sign_in(db: &PgPool, limits: &Limits, api_key: &str, meta: &RequestMeta) -> Result<NewSession> {
    let credential = if secrets::looks_like_api_key(api_key) {
        db::read_api_key(db, &secrets::hash_secret(api_key)).await?
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
    let token = secrets::new_session_token();
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
            let caller = Caller {
                principal,
                meta: meta.clone(),
            };
            record::success(&mut *tx, &caller, "auth.sign_out", &caller.actor).await?;
        }
        tx.commit().await?;
    }
    Ok(())
}
