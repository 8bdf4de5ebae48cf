//! Identification per credential type.
//!
//! An OIDC token, a run's callback credential, an API key, the identity-aware proxy's
//! headers or the session cookie; and checking again, for a long-lived event stream, that
//! the credential still holds.

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};

use super::headers::{bearer, session_hash};
use super::{Identity, db, secrets};
use crate::caller::{AuthMethod, Budget, KeyScope, Principal, RequestMeta, identified};
use crate::error::{AppError, Result};

/// A run's callback credential keeps working this long after the run ended (late reports).
const CALLBACK_GRACE_MINUTES: i32 = 10;

/// A session ends after this long without a request.
pub const SESSION_IDLE_MINUTES: i32 = 120;

/// The credential a request presented, kept so that a long request (an event stream) can
/// check it again: it ends when the credential does.
#[derive(Debug, Clone)]
pub struct Presented {
    /// What to read again.
    proof: Proof,
    /// When it stops being valid at the latest, as far as known when it was checked.
    pub expires_at: Option<DateTime<Utc>>,
    /// The scope it was checked with: a stream ends when its key's scope changes (its
    /// client reconnects and sees what the new scope allows).
    scope: KeyScope,
}

/// An event stream takes the credential it was opened with; without one the answer is 401.
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Presented {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut http::request::Parts, _: &S) -> Result<Self, AppError> {
        identified(parts)
    }
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
                    scope: KeyScope::default(),
                    budget: Budget::default(),
                },
                Presented {
                    proof: Proof::Token,
                    expires_at: identity.expires_at,
                    scope: KeyScope::default(),
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
    if secrets::looks_like_callback_token(token) {
        let hash = secrets::hash_secret(token);
        let run_id = live_callback(identity, &hash)
            .await?
            .ok_or(AppError::Unauthorized)?;
        let principal = Principal {
            actor: format!("run:{run_id}"),
            role: crate::caller::Role::Operator,
            via: AuthMethod::RunCallback,
            run_scope: Some(run_id),
            key_id: None,
            scope: KeyScope::default(),
            budget: Budget::default(),
        };
        let presented = Presented {
            proof: Proof::Callback(hash),
            expires_at: None,
            scope: KeyScope::default(),
        };
        return Ok((principal, presented));
    }
    if !secrets::looks_like_api_key(token) {
        return Err(AppError::Unauthorized);
    }
    let hash = secrets::hash_secret(token);
    let key = live_api_key(identity, &hash)
        .await?
        .ok_or(AppError::Unauthorized)?;
    let principal = Principal {
        actor: key.actor,
        role: key.role,
        via: AuthMethod::ApiKey,
        run_scope: None,
        key_id: Some(key.id),
        scope: key.scope.clone(),
        budget: key.budget,
    };
    let presented = Presented {
        proof: Proof::ApiKey(hash),
        expires_at: key.expires_at,
        scope: key.scope,
    };
    Ok((principal, presented))
}

/// Who is calling, if anyone: a bearer credential, the identity-aware proxy's headers, or
/// a session cookie, in that order.
pub async fn authenticate(
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
                    scope: KeyScope::default(),
                    budget: Budget::default(),
                };
                let presented = Presented {
                    proof: Proof::Proxy,
                    expires_at: None,
                    scope: KeyScope::default(),
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
        scope: session.scope.clone(),
        budget: Budget::default(),
    };
    let presented = Presented {
        proof: Proof::Session(hash.clone()),
        expires_at: session.expires_at,
        scope: session.scope,
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
        Proof::ApiKey(hash) => live_api_key(identity, hash).await.map(|key| {
            key.filter(|key| key.scope == presented.scope)
                .map(|key| key.expires_at)
        }),
        Proof::Session(hash) => db::read_session(&identity.db, hash, SESSION_IDLE_MINUTES)
            .await
            .map(|session| {
                session
                    .filter(|session| session.scope == presented.scope)
                    .map(|session| session.expires_at)
            })
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
