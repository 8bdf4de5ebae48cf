//! Queries for API keys and browser sessions.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use super::Role;

/// A live credential found by its hash.
#[derive(Debug, Clone)]
pub struct Credential {
    /// Row id (API key or session).
    pub id: i64,
    /// Display name of the holder.
    pub actor: String,
    /// Role granted.
    pub role: Role,
    /// When it stops being valid, if it has an end.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A new API key row: the secret itself is never stored, only its hash and shown prefix.
pub struct NewKeyRow<'a> {
    pub name: &'a str,
    pub role: Role,
    pub key_prefix: &'a str,
    pub key_hash: &'a [u8],
    pub created_by: &'a str,
    pub expires_at: Option<DateTime<Utc>>,
    /// The key this one succeeds (rotation).
    pub rotated_from: Option<i64>,
}

/// Stores a new API key and returns its id.
pub async fn insert_api_key(db: impl PgExecutor<'_>, key: &NewKeyRow<'_>) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        "INSERT INTO api_keys (name, role, key_prefix, key_hash, created_by, expires_at, rotated_from)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        key.name,
        key.role.as_str(),
        key.key_prefix,
        key.key_hash,
        key.created_by,
        key.expires_at,
        key.rotated_from,
    )
    .fetch_one(db)
    .await
}

/// The live (unrevoked, unexpired) API key with this hash, marking it used.
pub async fn read_api_key(db: impl PgExecutor<'_>, key_hash: &[u8]) -> sqlx::Result<Option<Credential>> {
    // Touch last_used_at at most once a minute: other uses only read, taking no row lock
    // and writing no row version.
    let row = sqlx::query!(
        r#"WITH key AS (
               SELECT id, name, role, last_used_at, expires_at FROM api_keys
               WHERE key_hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
           ), touched AS (
               UPDATE api_keys SET last_used_at = now()
               WHERE id IN (SELECT id FROM key
                            WHERE last_used_at IS NULL OR last_used_at < now() - interval '1 minute')
           )
           SELECT id AS "id!", name AS "name!", role AS "role!", expires_at FROM key"#,
        key_hash,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.and_then(|r| {
        let role = r.role.parse().ok()?;
        Some(Credential {
            id: r.id,
            actor: format!("api-key:{}", r.name),
            role,
            expires_at: r.expires_at,
        })
    }))
}

/// Revokes a key (and the sessions it opened); false if no live key has this id.
pub async fn revoke_api_key(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<bool> {
    let revoked = sqlx::query_scalar!(
        r#"WITH revoked AS (
               UPDATE api_keys SET revoked_at = now()
               WHERE id = $1 AND revoked_at IS NULL RETURNING id
           ), closed AS (
               UPDATE sessions SET revoked_at = now()
               WHERE api_key_id IN (SELECT id FROM revoked) AND revoked_at IS NULL
           )
           SELECT count(*) AS "count!" FROM revoked"#,
        id
    )
    .fetch_one(db)
    .await?;
    Ok(revoked > 0)
}

/// Opens a browser session for a credential; it ends after `hours`, or at `ends_by` (its
/// key's expiry) if that comes first. Answers when it ends.
pub async fn insert_session(
    db: impl PgExecutor<'_>,
    token_hash: &[u8],
    api_key_id: Option<i64>,
    actor: &str,
    role: Role,
    hours: i32,
    ends_by: Option<DateTime<Utc>>,
) -> sqlx::Result<DateTime<Utc>> {
    // least() ignores NULL: no key expiry, the session's own end.
    sqlx::query_scalar!(
        r#"INSERT INTO sessions (token_hash, api_key_id, actor, role, expires_at)
           VALUES ($1, $2, $3, $4, least(now() + make_interval(hours => $5), $6))
           RETURNING expires_at"#,
        token_hash,
        api_key_id,
        actor,
        role.as_str(),
        hours,
        ends_by,
    )
    .fetch_one(db)
    .await
}

/// The live session with this token hash; marks it seen.
///
/// Live: idle for less than `idle_minutes`, and its API key (if it was opened with one)
/// still live, so a rotated key's sessions end with its overlap, a revoked key's at once.
pub async fn read_session(
    db: impl PgExecutor<'_>,
    token_hash: &[u8],
    idle_minutes: i32,
) -> sqlx::Result<Option<Credential>> {
    // As for keys: written at most once a minute, otherwise only read.
    let row = sqlx::query!(
        r#"WITH session AS (
               SELECT s.id, s.actor, s.role, s.last_seen_at, least(s.expires_at, k.expires_at) AS expires_at
               FROM sessions s LEFT JOIN api_keys k ON k.id = s.api_key_id
               WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > now()
                 AND s.last_seen_at > now() - make_interval(mins => $2)
                 AND (s.api_key_id IS NULL
                      OR (k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now())))
           ), touched AS (
               UPDATE sessions SET last_seen_at = now()
               WHERE id IN (SELECT id FROM session WHERE last_seen_at < now() - interval '1 minute')
           )
           SELECT id AS "id!", actor AS "actor!", role AS "role!", expires_at AS "expires_at?" FROM session"#,
        token_hash,
        idle_minutes,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.and_then(|r| {
        Some(Credential {
            id: r.id,
            actor: r.actor,
            role: r.role.parse().ok()?,
            expires_at: r.expires_at,
        })
    }))
}

/// Ends the session with this token hash.
pub async fn revoke_session(db: impl PgExecutor<'_>, token_hash: &[u8]) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE sessions SET revoked_at = now() WHERE token_hash = $1 AND revoked_at IS NULL",
        token_hash
    )
    .execute(db)
    .await?;
    Ok(())
}
