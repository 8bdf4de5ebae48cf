//! The `api_keys` table: reads, filters, and the writes of creating, rotating and revoking.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use super::{ApiKey, ApiKeyFilter, KeyState};
use crate::caller::{Budget, KeyScope, Role};
use crate::error::{AppError, Result};
use crate::filter::Where;

/// The columns an [`ApiKey`] is read from.
pub const COLUMNS: &str = "SELECT id, name, role, key_prefix, created_by, created_at, expires_at, \
                       revoked_at, last_used_at, rotated_from, scope_pipeline_ids, scope_slugs, scope_tags, \
                       scope_actions, triggers_per_hour, triggers_per_day, max_unfinished_runs FROM api_keys";

#[derive(sqlx::FromRow)]
/// An `api_keys` row.
pub struct Row {
    id: i64,
    name: String,
    role: String,
    key_prefix: String,
    created_by: String,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    last_used_at: Option<DateTime<Utc>>,
    rotated_from: Option<i64>,
    scope_pipeline_ids: Vec<i64>,
    scope_slugs: Vec<String>,
    scope_tags: Vec<String>,
    scope_actions: Option<Vec<String>>,
    triggers_per_hour: Option<i32>,
    triggers_per_day: Option<i32>,
    max_unfinished_runs: Option<i32>,
}

impl Row {
    /// The key as shown at `now` (its state depends on the time).
    pub fn into_key(self, now: DateTime<Utc>) -> Result<ApiKey> {
        let state = if self.revoked_at.is_some() {
            KeyState::Revoked
        } else if self.expires_at.is_some_and(|at| at <= now) {
            KeyState::Expired
        } else {
            KeyState::Active
        };
        Ok(ApiKey {
            id: self.id,
            name: self.name,
            role: self.role.parse()?,
            key_prefix: self.key_prefix,
            state,
            created_by: self.created_by,
            created_at: self.created_at,
            expires_at: self.expires_at,
            revoked_at: self.revoked_at,
            last_used_at: self.last_used_at,
            rotated_from: self.rotated_from,
            scope: crate::auth::db::scope_of(
                self.scope_pipeline_ids,
                self.scope_slugs,
                self.scope_tags,
                self.scope_actions,
            ),
            budget: Budget {
                triggers_per_hour: self.triggers_per_hour,
                triggers_per_day: self.triggers_per_day,
                max_unfinished_runs: self.max_unfinished_runs,
            },
            usage: None,
        })
    }
}

/// One key; 404 when there is none.
pub async fn fetch(db: impl PgExecutor<'_>, id: i64) -> Result<ApiKey> {
    let mut query = Where::new(COLUMNS);
    query.raw("id = ").query.push_bind(id);
    query
        .query
        .build_query_as::<Row>()
        .fetch_optional(db)
        .await?
        .ok_or_else(|| AppError::not_found("API key"))?
        .into_key(Utc::now())
}

/// The `WHERE` clause of a filter, after `select`.
pub fn criteria(select: &str, filter: &ApiKeyFilter) -> Where<'static> {
    let c = &filter.api_keys;
    let mut w = Where::new(select);
    w.ids("id", c.id.as_ref())
        .text("name", c.name.as_ref())
        .text("role", c.role.as_ref())
        .text("created_by", c.created_by.as_ref())
        .time("created_at", c.created.as_ref())
        .time("expires_at", c.expires.as_ref())
        .time("last_used_at", c.last_used.as_ref());
    if let Some(any) = c.state.as_ref().and_then(|s| s.any_.as_ref()) {
        const STATE: &str = "CASE WHEN revoked_at IS NOT NULL THEN 'revoked' \
                             WHEN expires_at <= now() THEN 'expired' ELSE 'active' END";
        let names = any.iter().map(|s| s.as_str().to_owned()).collect();
        w.statuses(STATE, Some(names), None);
    }
    w
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
    pub scope: &'a KeyScope,
    pub budget: Budget,
}

/// Stores a new API key and returns its id.
pub async fn insert(db: impl PgExecutor<'_>, key: &NewKeyRow<'_>) -> sqlx::Result<i64> {
    let actions = actions(key.scope);
    sqlx::query_scalar!(
        "INSERT INTO api_keys (name, role, key_prefix, key_hash, created_by, expires_at, rotated_from,
                               scope_pipeline_ids, scope_slugs, scope_tags, scope_actions,
                               triggers_per_hour, triggers_per_day, max_unfinished_runs)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id",
        key.name,
        key.role.as_str(),
        key.key_prefix,
        key.key_hash,
        key.created_by,
        key.expires_at,
        key.rotated_from,
        &key.scope.pipeline_ids,
        &key.scope.slugs,
        &key.scope.tags,
        actions.as_deref(),
        key.budget.triggers_per_hour,
        key.budget.triggers_per_day,
        key.budget.max_unfinished_runs,
    )
    .fetch_one(db)
    .await
}

/// Revokes a key (and the sessions it opened); false if no live key has this id.
pub async fn revoke(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<bool> {
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

/// Locks a key for a change and reads it; 404 when there is none.
pub async fn lock(tx: &mut sqlx::PgConnection, id: i64) -> Result<ApiKey> {
    let locked = sqlx::query!("SELECT id FROM api_keys WHERE id = $1 FOR UPDATE", id)
        .fetch_optional(&mut *tx)
        .await?;
    if locked.is_none() {
        return Err(AppError::not_found("API key"));
    }
    fetch(&mut *tx, id).await
}

/// Sets when a key stops working.
pub async fn set_expiry(db: impl PgExecutor<'_>, id: i64, expires_at: DateTime<Utc>) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE api_keys SET expires_at = $2 WHERE id = $1",
        id,
        expires_at
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A scope's actions as stored.
fn actions(scope: &KeyScope) -> Option<Vec<String>> {
    scope
        .actions
        .as_ref()
        .map(|actions| actions.iter().map(|a| a.as_str().to_owned()).collect())
}

/// Replaces a key's scope and budgets.
pub async fn set_limits(
    db: impl PgExecutor<'_>,
    id: i64,
    scope: &KeyScope,
    budget: Budget,
) -> sqlx::Result<()> {
    let actions = actions(scope);
    sqlx::query!(
        "UPDATE api_keys SET scope_pipeline_ids = $2, scope_slugs = $3, scope_tags = $4, scope_actions = $5,
                triggers_per_hour = $6, triggers_per_day = $7, max_unfinished_runs = $8
         WHERE id = $1",
        id,
        &scope.pipeline_ids,
        &scope.slugs,
        &scope.tags,
        actions.as_deref(),
        budget.triggers_per_hour,
        budget.triggers_per_day,
        budget.max_unfinished_runs,
    )
    .execute(db)
    .await?;
    Ok(())
}
