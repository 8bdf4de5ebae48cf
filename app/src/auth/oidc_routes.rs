//! Browser sign-in through the OpenID Connect issuer.
//!
//! `POST /auth/oidc/login` sends the browser to the issuer, `GET /auth/oidc/callback`
//! brings it back with a code, which is redeemed (with the PKCE verifier) for an ID token,
//! checked, and turned into a session.
//!
//! The callback is the one state-changing GET, as the protocol has it; it only acts for
//! the browser that started the sign-in (the `state` must match that browser's cookie) and
//! only once (the pending sign-in is deleted as it is read).

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

use super::Identity;
use super::oidc::PendingLogin;
use super::{safe_next, secrets};
use crate::caller::RequestMeta;
use crate::error::AppError;

/// How long a sign-in may take at the issuer.
const LOGIN_MINUTES: i32 = 10;

fn state_cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-flowdeck_oidc"
    } else {
        "flowdeck_oidc"
    }
}

fn state_cookie(secure: bool, value: &str, minutes: i64) -> HeaderValue {
    let max_age = cookie::time::Duration::minutes(minutes);
    super::headers::set_cookie(state_cookie_name(secure), value, secure, max_age)
}

fn back_to_login(reason: &str) -> Response {
    Redirect::to(&format!("/login?error={reason}")).into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    next: Option<String>,
}

async fn login(State(identity): State<Identity>, meta: RequestMeta, Form(form): Form<LoginForm>) -> Response {
    let Some(oidc) = &identity.oidc else {
        return AppError::not_found("Sign-in provider").into_response();
    };
    // Each start writes a pending sign-in: anyone may ask, so each address has a budget.
    if let Err(limited) = identity.limits.sign_in_started(meta.client()) {
        return limited.into_response();
    }
    let pending = PendingLogin::new(safe_next(form.next.as_deref()));
    let url = match oidc.authorization_url(&pending).await {
        Ok(url) => url,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start an OIDC sign-in");
            return back_to_login("issuer");
        }
    };
    let stored = sqlx::query!(
        "WITH expired AS (
             DELETE FROM oidc_logins WHERE created_at < now() - make_interval(mins => $5)
         )
         INSERT INTO oidc_logins (state_hash, code_verifier, nonce, next_path) VALUES ($1, $2, $3, $4)",
        secrets::hash_secret(&pending.state),
        pending.code_verifier,
        pending.nonce,
        pending.next,
        LOGIN_MINUTES,
    )
    .execute(&identity.db)
    .await;
    if let Err(e) = stored {
        return AppError::from(e).into_response();
    }
    let mut response = Redirect::to(&url).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        state_cookie(identity.secure_cookies, &pending.state, i64::from(LOGIN_MINUTES)),
    );
    response
}

#[derive(Deserialize)]
struct Callback {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

async fn callback(
    State(identity): State<Identity>,
    meta: RequestMeta,
    headers: HeaderMap,
    Query(back): Query<Callback>,
) -> Response {
    let outcome = finish(&identity, &meta, &headers, back).await;
    let secure = identity.secure_cookies;
    let mut response = match outcome {
        Ok(response) => response,
        Err(reason) => {
            tracing::info!(reason, "OIDC sign-in refused");
            match super::middleware::refuse(&identity.db, &identity.limits, &meta, "GET /auth/oidc/callback")
                .await
            {
                AppError::Unauthorized => back_to_login("oidc"),
                limited => limited.into_response(),
            }
        }
    };
    // The pending sign-in is used up either way.
    response
        .headers_mut()
        .append(header::SET_COOKIE, state_cookie(secure, "", 0));
    response
}

/// Completes a sign-in; the error is the reason, for the log only.
async fn finish(
    identity: &Identity,
    meta: &RequestMeta,
    headers: &HeaderMap,
    back: Callback,
) -> Result<Response, &'static str> {
    let oidc = identity.oidc.as_ref().ok_or("no issuer is configured")?;
    if back.error.is_some() {
        return Err("the issuer refused the sign-in");
    }
    let (Some(code), Some(returned)) = (back.code, back.state) else {
        return Err("no code or state");
    };
    let started = super::headers::cookie(headers, &[state_cookie_name(identity.secure_cookies)])
        .ok_or("no state cookie")?;
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        started.as_bytes(),
        returned.as_bytes(),
    )) {
        return Err("the state is not this browser's");
    }
    let row = sqlx::query!(
        "DELETE FROM oidc_logins WHERE state_hash = $1 AND created_at > now() - make_interval(mins => $2)
         RETURNING code_verifier, nonce, next_path",
        secrets::hash_secret(&returned),
        LOGIN_MINUTES,
    )
    .fetch_optional(&identity.db)
    .await
    .map_err(|_| "database error")?
    .ok_or("unknown, used or expired sign-in")?;
    let pending = PendingLogin {
        state: returned,
        nonce: row.nonce,
        code_verifier: row.code_verifier,
        next: row.next_path,
    };
    let person = oidc.finish_login(&code, &pending).await.map_err(|e| {
        tracing::debug!(error = %e, "ID token refused");
        "the ID token was refused"
    })?;
    let mut tx = identity.db.begin().await.map_err(|_| "database error")?;
    let opened = super::sessions::SessionOpened {
        api_key_id: None,
        actor: &person.actor,
        role: person.role,
        method: "oidc",
        ends_by: None,
    };
    let session = super::sessions::open_session(&mut tx, &opened, meta)
        .await
        .map_err(|_| "database error")?;
    tx.commit().await.map_err(|_| "database error")?;
    let mut response = Redirect::to(&safe_next(Some(&pending.next))).into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, session.cookie_header(identity.secure_cookies));
    Ok(response)
}

/// The sign-in routes (public: they are how one signs in).
pub fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Identity: axum::extract::FromRef<S>,
{
    Router::new()
        .route("/auth/oidc/login", post(login))
        .route("/auth/oidc/callback", get(callback))
}
