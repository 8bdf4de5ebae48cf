//! The webhook tables: endpoints, the delivery outbox and the attempts log.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use super::{Attempt, Delivery, Endpoint, EndpointFilter, Format};
use crate::error::{AppError, Result};
use crate::filter::Where;

/// The columns an [`Endpoint`] is read from.
pub const COLUMNS: &str = "SELECT id, url, description, event_types, pipeline_ids, tags, format, enabled, \
    disabled_reason, failing_since, previous_until, created_by, created_at, updated_at FROM webhook_endpoints";

/// A `webhook_endpoints` row, without its secrets.
#[derive(sqlx::FromRow)]
pub struct Row {
    id: i64,
    url: String,
    description: String,
    event_types: Vec<String>,
    pipeline_ids: Vec<i64>,
    tags: Vec<String>,
    format: String,
    enabled: bool,
    disabled_reason: Option<String>,
    failing_since: Option<DateTime<Utc>>,
    previous_until: Option<DateTime<Utc>>,
    created_by: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<Row> for Endpoint {
    fn from(row: Row) -> Self {
        Endpoint {
            id: row.id,
            url: row.url,
            description: row.description,
            event_types: row.event_types,
            pipeline_ids: row.pipeline_ids,
            tags: row.tags,
            format: if row.format == "slack" {
                Format::Slack
            } else {
                Format::Standard
            },
            enabled: row.enabled,
            disabled_reason: row.disabled_reason,
            failing_since: row.failing_since,
            previous_secret_until: row.previous_until.filter(|until| *until > Utc::now()),
            created_by: row.created_by,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// An endpoint as stored from a checked request.
pub struct EndpointRow<'a> {
    pub url: &'a str,
    pub description: &'a str,
    pub event_types: &'a [String],
    pub pipeline_ids: &'a [i64],
    pub tags: &'a [String],
    pub format: Format,
}

/// One endpoint; 404 when there is none.
pub async fn fetch(db: impl PgExecutor<'_>, id: i64) -> Result<Endpoint> {
    let mut w = Where::new(COLUMNS);
    w.raw("id = ").query.push_bind(id);
    w.query
        .build_query_as::<Row>()
        .fetch_optional(db)
        .await?
        .map(Endpoint::from)
        .ok_or_else(|| AppError::not_found("Webhook endpoint"))
}

/// The `WHERE` clause of a filter, after `select`.
pub fn criteria(select: &str, filter: &EndpointFilter) -> Where<'static> {
    let mut w = Where::new(select);
    w.ids("id", filter.webhooks.id.as_ref())
        .text("url", filter.webhooks.url.as_ref());
    w
}

/// Stores an endpoint with its secret; answers its id.
pub async fn insert(
    db: impl PgExecutor<'_>,
    row: &EndpointRow<'_>,
    secret: &str,
    by: &str,
) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        "INSERT INTO webhook_endpoints (url, description, event_types, pipeline_ids, tags, format, secret, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        row.url,
        row.description,
        row.event_types,
        row.pipeline_ids,
        row.tags,
        row.format.as_str(),
        secret,
        by,
    )
    .fetch_one(db)
    .await
}

/// Replaces an endpoint's settings; `enabled` true also clears why it was disabled.
pub async fn update(
    db: impl PgExecutor<'_>,
    id: i64,
    row: &EndpointRow<'_>,
    enabled: bool,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE webhook_endpoints SET url = $2, description = $3, event_types = $4, pipeline_ids = $5,
                tags = $6, format = $7, enabled = $8,
                disabled_reason = CASE WHEN $8 THEN NULL ELSE coalesce(disabled_reason, 'disabled by an admin') END,
                failing_since = CASE WHEN $8 AND NOT enabled THEN NULL ELSE failing_since END,
                updated_at = now()
         WHERE id = $1",
        id,
        row.url,
        row.description,
        row.event_types,
        row.pipeline_ids,
        row.tags,
        row.format.as_str(),
        enabled,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Gives an endpoint a new secret; the old one is still signed with until `until`.
pub async fn rotate(
    db: impl PgExecutor<'_>,
    id: i64,
    secret: &str,
    until: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE webhook_endpoints SET previous_secret = secret, previous_until = $3, secret = $2, updated_at = now()
         WHERE id = $1",
        id,
        secret,
        until,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Deletes an endpoint and its deliveries; false if there was none.
pub async fn delete(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<bool> {
    let done = sqlx::query!("DELETE FROM webhook_endpoints WHERE id = $1", id)
        .execute(db)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// The latest `limit` deliveries of each of these endpoints, newest first, with their
/// attempts: two queries, whatever the number of endpoints.
pub async fn deliveries(db: &sqlx::PgPool, endpoint_ids: &[i64], limit: i64) -> sqlx::Result<Vec<Delivery>> {
    let rows = sqlx::query!(
        r#"SELECT d.id AS "id!", d.endpoint_id AS "endpoint_id!", d.message_id AS "message_id!",
                  d.event_type AS "event_type!", d.state AS "state!", d.attempts AS "attempts!",
                  d.next_attempt_at AS "next_attempt_at!", d.last_error,
                  d.created_at AS "created_at!", d.delivered_at
           FROM unnest($1::bigint[]) AS e (id)
           CROSS JOIN LATERAL (SELECT * FROM webhook_deliveries
                               WHERE endpoint_id = e.id ORDER BY id DESC LIMIT $2) d"#,
        endpoint_ids,
        limit,
    )
    .fetch_all(db)
    .await?;
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let attempts = sqlx::query!(
        "SELECT delivery_id, attempted_at, status_code, latency_ms, response_excerpt, error
         FROM webhook_attempts WHERE delivery_id = ANY($1) ORDER BY id",
        &ids,
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Delivery {
            attempt_log: attempts
                .iter()
                .filter(|a| a.delivery_id == r.id)
                .map(|a| Attempt {
                    attempted_at: a.attempted_at,
                    status_code: a.status_code,
                    latency_ms: a.latency_ms,
                    response_excerpt: a.response_excerpt.clone(),
                    error: a.error.clone(),
                })
                .collect(),
            id: r.id,
            endpoint_id: r.endpoint_id,
            message_id: r.message_id,
            event_type: r.event_type,
            state: r.state,
            attempts: r.attempts,
            next_attempt_at: r.next_attempt_at,
            last_error: r.last_error,
            created_at: r.created_at,
            delivered_at: r.delivered_at,
        })
        .collect())
}

/// Sends a delivery again: pending and due now, with a day of retries from now. Answers
/// its endpoint; `None` when there is no such delivery.
pub async fn resend(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar!(
        "UPDATE webhook_deliveries SET state = 'pending', next_attempt_at = now(),
                created_at = CASE WHEN state = 'pending' THEN created_at ELSE now() END
         WHERE id = $1 RETURNING endpoint_id",
        id
    )
    .fetch_optional(db)
    .await
}

/// A delivery claimed for an attempt, with what sending it needs.
pub struct Claimed {
    pub id: i64,
    pub endpoint_id: i64,
    pub message_id: String,
    pub payload: serde_json::Value,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub url: String,
    pub format: String,
    pub secret: String,
    pub previous_secret: Option<String>,
}

/// Claims up to `limit` due deliveries of enabled endpoints for `lease_seconds`; another
/// replica skips them meanwhile.
///
/// Each endpoint gives its oldest due deliveries, no more than `per_endpoint` minus those
/// it already has in flight (leased and pending, by any replica), so a slow receiver's
/// backlog neither fills the claim nor holds up the others. Replicas claim for an
/// endpoint one at a time (a transaction-scoped advisory lock each; an endpoint another
/// replica is claiming for is skipped), and the claim itself is a later statement, which
/// sees the leases the replica before committed: the bound holds across replicas.
pub async fn claim(
    pool: &sqlx::PgPool,
    limit: i64,
    lease_seconds: i32,
    per_endpoint: i64,
) -> sqlx::Result<Vec<Claimed>> {
    let mut tx = pool.begin().await?;
    let endpoints: Vec<i64> = sqlx::query_scalar!(
        r#"SELECT id AS "id!" FROM webhook_endpoints
           WHERE enabled AND pg_try_advisory_xact_lock(hashtextextended('flowdeck:webhook-claim:' || id, 0))"#
    )
    .fetch_all(&mut *tx)
    .await?;
    if endpoints.is_empty() {
        return Ok(Vec::new());
    }
    let claimed = sqlx::query_as!(
        Claimed,
        r#"WITH room AS (
               SELECT w.id, $3 - (SELECT count(*) FROM webhook_deliveries b
                                  WHERE b.endpoint_id = w.id AND b.state = 'pending'
                                    AND b.locked_until >= now()) AS free
               FROM webhook_endpoints w WHERE w.id = ANY($4) AND w.enabled
           ), due AS (
               SELECT d.id FROM room r CROSS JOIN LATERAL (
                   SELECT d.id, d.next_attempt_at FROM webhook_deliveries d
                   WHERE d.endpoint_id = r.id AND d.state = 'pending' AND d.next_attempt_at <= now()
                     AND (d.locked_until IS NULL OR d.locked_until < now())
                   ORDER BY d.next_attempt_at LIMIT greatest(r.free, 0)
                   FOR UPDATE OF d SKIP LOCKED
               ) d
               ORDER BY d.next_attempt_at LIMIT $1
           ), claimed AS (
               UPDATE webhook_deliveries d SET locked_until = now() + make_interval(secs => $2)
               FROM due WHERE d.id = due.id
               RETURNING d.id, d.endpoint_id, d.message_id, d.payload, d.attempts, d.created_at
           )
           SELECT c.id AS "id!", c.endpoint_id AS "endpoint_id!", c.message_id AS "message_id!",
                  c.payload AS "payload!", c.attempts AS "attempts!", c.created_at AS "created_at!",
                  w.url, w.format, w.secret,
                  CASE WHEN w.previous_until > now() THEN w.previous_secret END AS previous_secret
           FROM claimed c JOIN webhook_endpoints w ON w.id = c.endpoint_id"#,
        limit,
        f64::from(lease_seconds),
        per_endpoint,
        &endpoints,
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(claimed)
}

/// What an attempt found.
pub struct Outcome<'a> {
    pub status_code: Option<i32>,
    pub latency_ms: i32,
    pub excerpt: Option<&'a str>,
    pub error: Option<&'a str>,
}

/// Records an attempt and its consequence.
///
/// `next` `None` ends the delivery (delivered
/// when `delivered`, failed otherwise), `Some(at)` retries at `at`. A success clears the
/// endpoint's failing time; a failure starts it, and disables an endpoint that has been
/// failing for 24 hours. `disable` disables the endpoint anyway, saying why.
pub async fn record_attempt(
    tx: &mut sqlx::PgConnection,
    id: i64,
    outcome: &Outcome<'_>,
    delivered: bool,
    next: Option<DateTime<Utc>>,
    disable: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO webhook_attempts (delivery_id, status_code, latency_ms, response_excerpt, error)
         VALUES ($1, $2, $3, $4, $5)",
        id,
        outcome.status_code,
        outcome.latency_ms,
        outcome.excerpt,
        outcome.error,
    )
    .execute(&mut *tx)
    .await?;
    let last_error = outcome.error.map(str::to_owned).or_else(|| {
        outcome
            .status_code
            .filter(|_| !delivered)
            .map(|s| format!("HTTP {s}"))
    });
    let endpoint = sqlx::query_scalar!(
        "UPDATE webhook_deliveries SET attempts = attempts + 1, locked_until = NULL, last_error = $2,
                state = CASE WHEN $3 THEN 'delivered' WHEN $4::timestamptz IS NULL THEN 'failed' ELSE 'pending' END,
                next_attempt_at = coalesce($4, next_attempt_at),
                delivered_at = CASE WHEN $3 THEN now() END
         WHERE id = $1 RETURNING endpoint_id",
        id,
        last_error,
        delivered,
        next,
    )
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query!(
        "UPDATE webhook_endpoints SET
                failing_since = CASE WHEN $2 THEN NULL ELSE coalesce(failing_since, now()) END,
                enabled = enabled AND $3::text IS NULL
                          AND ($2 OR failing_since IS NULL OR failing_since >= now() - interval '24 hours'),
                disabled_reason = coalesce(
                    $3,
                    CASE WHEN NOT $2 AND failing_since < now() - interval '24 hours'
                         THEN 'every delivery failed for 24 hours' END,
                    disabled_reason)
         WHERE id = $1",
        endpoint,
        delivered,
        disable,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}
