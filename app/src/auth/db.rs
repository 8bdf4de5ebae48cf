//! Queries of identification: live API keys and callback credentials by hash, browser
//! sessions, and the collapsed rows of refused credentials.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::caller::{Action, Budget, KeyScope, Role};

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
    /// What the key (or the key a session was opened with) is limited to.
    pub scope: KeyScope,
    /// What the key may spend.
    pub budget: Budget,
}

/// A key's scope as stored: unknown action names (none are written) grant nothing.
pub fn scope_of(
    pipeline_ids: Vec<i64>,
    slugs: Vec<String>,
    tags: Vec<String>,
    actions: Option<Vec<String>>,
) -> KeyScope {
    KeyScope {
        pipeline_ids,
        slugs,
        tags,
        actions: actions.map(|names| names.iter().filter_map(|n| n.parse::<Action>().ok()).collect()),
    }
}

/// The live (unrevoked, unexpired) API key with this hash, marking it used.
pub async fn read_api_key(db: impl PgExecutor<'_>, key_hash: &[u8]) -> sqlx::Result<Option<Credential>> {
    // Touch last_used_at at most once a minute: other uses only read, taking no row lock
    // and writing no row version.
    let row = sqlx::query!(
        r#"WITH key AS (
               SELECT id, name, role, last_used_at, expires_at, scope_pipeline_ids, scope_slugs,
                      scope_tags, scope_actions, triggers_per_hour, triggers_per_day,
                      max_unfinished_runs
               FROM api_keys
               WHERE key_hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
           ), touched AS (
               UPDATE api_keys SET last_used_at = now()
               WHERE id IN (SELECT id FROM key
                            WHERE last_used_at IS NULL OR last_used_at < now() - interval '1 minute')
           )
           SELECT id AS "id!", name AS "name!", role AS "role!", expires_at,
                  scope_pipeline_ids AS "scope_pipeline_ids!", scope_slugs AS "scope_slugs!",
                  scope_tags AS "scope_tags!", scope_actions, triggers_per_hour, triggers_per_day,
                  max_unfinished_runs
           FROM key"#,
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
            scope: scope_of(r.scope_pipeline_ids, r.scope_slugs, r.scope_tags, r.scope_actions),
            budget: Budget {
                triggers_per_hour: r.triggers_per_hour,
                triggers_per_day: r.triggers_per_day,
                max_unfinished_runs: r.max_unfinished_runs,
            },
        })
    }))
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
               SELECT s.id, s.actor, s.role, s.last_seen_at, least(s.expires_at, k.expires_at) AS expires_at,
                      k.scope_pipeline_ids, k.scope_slugs, k.scope_tags, k.scope_actions
               FROM sessions s LEFT JOIN api_keys k ON k.id = s.api_key_id
               WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > now()
                 AND s.last_seen_at > now() - make_interval(mins => $2)
                 AND (s.api_key_id IS NULL
                      OR (k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now())))
           ), touched AS (
               UPDATE sessions SET last_seen_at = now()
               WHERE id IN (SELECT id FROM session WHERE last_seen_at < now() - interval '1 minute')
           )
           SELECT id AS "id!", actor AS "actor!", role AS "role!", expires_at AS "expires_at?",
                  scope_pipeline_ids AS "scope_pipeline_ids?", scope_slugs AS "scope_slugs?",
                  scope_tags AS "scope_tags?", scope_actions AS "scope_actions?"
           FROM session"#,
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
            // A session opened with a scoped key sees what the key sees; its budgets apply
            // to API triggers (the browser's triggers are a person's).
            scope: scope_of(
                r.scope_pipeline_ids.unwrap_or_default(),
                r.scope_slugs.unwrap_or_default(),
                r.scope_tags.unwrap_or_default(),
                r.scope_actions,
            ),
            budget: Budget::default(),
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

/// Appends one collapsed row of refused credentials (`auth.denied`): `row.count` refusals
/// of one client address, or of many new ones at once, with the count in `detail`.
pub async fn record_denials(
    db: impl PgExecutor<'_>,
    row: &super::limits::DenialRow,
    request_id: Option<&str>,
) -> sqlx::Result<()> {
    let count = i64::try_from(row.count).unwrap_or(i64::MAX);
    sqlx::query!(
        "INSERT INTO audit_events (actor, action, target, request_id, outcome, source_addr, detail)
         VALUES ('anonymous', 'auth.denied', $1, $2, 'denied', $3, jsonb_build_object('count', $4::bigint))",
        row.target,
        request_id,
        row.source.addr().map(|addr| addr.to_string()),
        count,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The run a live callback credential belongs to.
///
/// The run must be unfinished or have ended less than `grace_minutes` ago, and the
/// credential younger than `max_age_seconds` since it was handed to Prefect (or made, if
/// it never was) (`FLOWDECK_CALLBACK_TTL`: a run that never ends does not keep it forever).
pub async fn run_for_callback_token(
    db: impl PgExecutor<'_>,
    token_hash: &[u8],
    grace_minutes: i32,
    max_age_seconds: i64,
) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar!(
        "SELECT id FROM runs WHERE callback_token_hash = $1
           AND (ended_at IS NULL OR ended_at > now() - make_interval(mins => $2))
           AND coalesce(submitted_at, created_at) > now() - $3::bigint * interval '1 second'",
        token_hash,
        grace_minutes,
        max_age_seconds,
    )
    .fetch_optional(db)
    .await
}
