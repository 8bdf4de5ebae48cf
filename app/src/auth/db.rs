//! Queries for API keys and browser sessions.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use super::Role;

/// An API key as listed to admins (never with its secret).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ApiKeyInfo {
    /// Key id.
    pub id: i64,
    /// Name given at creation.
    pub name: String,
    /// Role granted.
    pub role: String,
    /// First characters of the key.
    pub key_prefix: String,
    /// Who created it.
    pub created_by: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
    /// When it last authenticated a request.
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A live credential found by its hash.
pub struct Credential {
    /// Row id (API key or session).
    pub id: i64,
    /// Display name of the holder.
    pub actor: String,
    /// Role granted.
    pub role: Role,
}

/// Stores a new API key and returns its id.
pub async fn insert_api_key(
    db: impl PgExecutor<'_>,
    name: &str,
    role: Role,
    key_prefix: &str,
    key_hash: &[u8],
    created_by: &str,
) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        "INSERT INTO api_keys (name, role, key_prefix, key_hash, created_by)
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
        name,
        role.as_str(),
        key_prefix,
        key_hash,
        created_by,
    )
    .fetch_one(db)
    .await
}

/// The live (unrevoked, unexpired) API key with this hash, marking it used.
pub async fn use_api_key(db: impl PgExecutor<'_>, key_hash: &[u8]) -> sqlx::Result<Option<Credential>> {
    // Touch last_used_at at most once a minute, so reads do not turn into a write each.
    let row = sqlx::query!(
        r#"UPDATE api_keys SET last_used_at = CASE
                WHEN last_used_at IS NULL OR last_used_at < now() - interval '1 minute' THEN now()
                ELSE last_used_at END
           WHERE key_hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
           RETURNING id, name, role AS "role!""#,
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
        })
    }))
}

/// All API keys, newest first.
pub async fn list_api_keys(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<ApiKeyInfo>> {
    sqlx::query_as!(
        ApiKeyInfo,
        r#"SELECT id, name, role AS "role!", key_prefix, created_by, created_at, expires_at,
                  revoked_at, last_used_at
           FROM api_keys ORDER BY created_at DESC, id DESC"#
    )
    .fetch_all(db)
    .await
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

/// Opens a browser session for a credential; it ends after `hours` at the latest.
pub async fn insert_session(
    db: impl PgExecutor<'_>,
    token_hash: &[u8],
    api_key_id: i64,
    actor: &str,
    role: Role,
    hours: i32,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO sessions (token_hash, api_key_id, actor, role, expires_at)
         VALUES ($1, $2, $3, $4, now() + make_interval(hours => $5))",
        token_hash,
        api_key_id,
        actor,
        role.as_str(),
        hours,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The live session with this token hash, idle for less than `idle_minutes`; marks it seen.
pub async fn use_session(
    db: impl PgExecutor<'_>,
    token_hash: &[u8],
    idle_minutes: i32,
) -> sqlx::Result<Option<Credential>> {
    let row = sqlx::query!(
        r#"UPDATE sessions SET last_seen_at = CASE
                WHEN last_seen_at < now() - interval '1 minute' THEN now() ELSE last_seen_at END
           WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > now()
             AND last_seen_at > now() - make_interval(mins => $2)
           RETURNING id, actor, role AS "role!""#,
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

/// Makes a key stop working `days` from now.
pub async fn set_api_key_expiry(db: impl PgExecutor<'_>, id: i64, days: i32) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE api_keys SET expires_at = now() + make_interval(days => $2) WHERE id = $1",
        id,
        days
    )
    .execute(db)
    .await?;
    Ok(())
}
