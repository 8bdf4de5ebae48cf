//! The outbox: accepted runs waiting to be submitted to Prefect, claimed by one dispatcher
//! at a time.

use chrono::Utc;
use sqlx::PgExecutor;

use crate::runs::OWN_EVENT_PREFIX;
use crate::runs::db::{RunEvent, insert_run_event};
use crate::status::RunStatus;

/// A claimed outbox row with what submitting its run needs.
pub struct OutboxRun {
    /// The run.
    pub run_id: i64,
    /// Attempts so far, this one included.
    pub attempts: i32,
    /// The run's callback credential, in clear until submitted.
    pub callback_token: String,
    /// Parameters of the run.
    pub parameters: serde_json::Value,
    /// Request id of the trigger.
    pub request_id: Option<String>,
    /// The trigger's trace context.
    pub traceparent: Option<String>,
    /// The pipeline's slug.
    pub pipeline_slug: String,
    /// The pipeline's deployment, if it names one.
    pub deployment: Option<String>,
    /// The run's Prefect idempotency key, the same on every attempt.
    pub idempotency_key: String,
    /// For a restart, the flow's `flowdeck_resume` parameter: `{"from_stage": …,
    /// "outputs": {stage: the Prefect flow run whose output it reuses}}` (flow run ids, not
    /// Flowdeck's run ids, which another Flowdeck on the same Prefect may also use).
    pub resume: Option<serde_json::Value>,
}

/// Queues a run for submission, waking the dispatchers once the transaction commits (on
/// [`super::OUTBOX_CHANNEL`], as a group of triggers does): one statement.
pub async fn insert_outbox(
    db: &mut sqlx::PgConnection,
    run_id: i64,
    callback_token: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "WITH queued AS (
             INSERT INTO run_outbox (run_id, callback_token) VALUES ($1, $2) RETURNING run_id
         )
         SELECT pg_notify($3, run_id::text) FROM queued",
        run_id,
        callback_token,
        super::OUTBOX_CHANNEL,
    )
    .execute(&mut *db)
    .await?;
    Ok(())
}

/// Claims up to `limit` due rows for `lease_seconds`, skipping rows other dispatchers hold.
pub async fn claim_outbox(
    db: impl PgExecutor<'_>,
    limit: i64,
    lease_seconds: i32,
) -> sqlx::Result<Vec<OutboxRun>> {
    sqlx::query_as!(
        OutboxRun,
        r#"WITH claimed AS (
               UPDATE run_outbox SET attempts = attempts + 1,
                                     locked_until = now() + make_interval(secs => $2)
               WHERE run_id IN (
                   SELECT run_id FROM run_outbox
                   WHERE next_attempt_at <= now() AND (locked_until IS NULL OR locked_until < now())
                   ORDER BY next_attempt_at, run_id
                   LIMIT $1
                   FOR UPDATE SKIP LOCKED
               )
               RETURNING run_id, attempts, callback_token
           )
           SELECT c.run_id AS "run_id!", c.attempts AS "attempts!", c.callback_token AS "callback_token!",
                  r.parameters, r.request_id, r.traceparent, p.slug AS pipeline_slug, p.deployment,
                  r.prefect_idempotency_key AS idempotency_key,
                  CASE WHEN r.from_stage IS NOT NULL THEN jsonb_build_object(
                      'from_stage', r.from_stage,
                      'outputs', (SELECT coalesce(jsonb_object_agg(s.name, o.prefect_flow_run_id), '{}')
                                  FROM stage_runs s LEFT JOIN runs o ON o.id = s.output_run_id
                                  WHERE s.run_id = r.id AND s.status = 'skipped'))
                  END AS resume
           FROM claimed c JOIN runs r ON r.id = c.run_id JOIN pipelines p ON p.id = r.pipeline_id
           ORDER BY c.run_id"#,
        limit,
        f64::from(lease_seconds),
    )
    .fetch_all(db)
    .await
}

/// Takes a run out of the outbox unless a dispatcher holds it right now; false if one does.
pub async fn withdraw_from_outbox(db: impl PgExecutor<'_>, run_id: i64) -> sqlx::Result<bool> {
    let held = sqlx::query_scalar!(
        r#"WITH gone AS (
               DELETE FROM run_outbox WHERE run_id = $1 AND (locked_until IS NULL OR locked_until < now())
               RETURNING run_id
           )
           SELECT EXISTS (SELECT 1 FROM run_outbox WHERE run_id = $1)
                  AND NOT EXISTS (SELECT 1 FROM gone) AS "held!""#,
        run_id
    )
    .fetch_one(db)
    .await?;
    Ok(!held)
}

/// Records the flow run Prefect created and drops the outbox row (with the clear token);
/// true if that moved the run from `pending` to `scheduled`.
pub async fn mark_submitted(pool: &sqlx::PgPool, run_id: i64, flow_run_id: &str) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    let before = sqlx::query_scalar!(
        "UPDATE runs r SET prefect_flow_run_id = $2, submitted_at = coalesce(r.submitted_at, now()),
                           status = CASE WHEN r.status = 'pending' THEN 'scheduled' ELSE r.status END,
                           updated_at = now()
         FROM (SELECT id, status FROM runs WHERE id = $1 FOR UPDATE) old
         WHERE r.id = old.id
         RETURNING old.status",
        run_id,
        flow_run_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    sqlx::query!("DELETE FROM run_outbox WHERE run_id = $1", run_id)
        .execute(&mut *tx)
        .await?;
    let event = format!("{}submitted", OWN_EVENT_PREFIX);
    insert_run_event(
        &mut *tx,
        &RunEvent {
            run_id,
            event_id: Some(&event),
            kind: "submitted",
            stage_name: None,
            status: Some(RunStatus::Scheduled),
            message: Some(flow_run_id),
            request_id: None,
            occurred_at: Utc::now(),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(before.as_deref() == Some("pending"))
}

/// Fails a run Prefect refused for good, with the reason, and drops its outbox row;
/// returns the status it had if that failed it (a finished run stays as it is).
pub async fn fail_submission(
    pool: &sqlx::PgPool,
    run_id: i64,
    reason: &str,
) -> sqlx::Result<Option<RunStatus>> {
    let mut tx = pool.begin().await?;
    let before = sqlx::query_scalar!(
        "UPDATE runs r SET status = 'failed', error_message = $2, ended_at = now(), updated_at = now()
         FROM (SELECT id, status FROM runs WHERE id = $1 FOR UPDATE) old
         WHERE r.id = old.id AND old.status NOT IN ('completed', 'failed', 'cancelled', 'crashed')
         RETURNING old.status",
        run_id,
        reason
    )
    .fetch_optional(&mut *tx)
    .await?;
    sqlx::query!("DELETE FROM run_outbox WHERE run_id = $1", run_id)
        .execute(&mut *tx)
        .await?;
    let event = format!("{}submit-failed", OWN_EVENT_PREFIX);
    insert_run_event(
        &mut *tx,
        &RunEvent {
            run_id,
            event_id: Some(&event),
            kind: "submit_failed",
            stage_name: None,
            status: Some(RunStatus::Failed),
            message: Some(reason),
            request_id: None,
            occurred_at: Utc::now(),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(before.as_deref().map(RunStatus::from_db))
}

/// Releases a claimed row to be tried again in `delay_seconds`.
pub async fn retry_later(
    db: impl PgExecutor<'_>,
    run_id: i64,
    delay_seconds: i32,
    error: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE run_outbox SET locked_until = NULL, last_error = $3,
                               next_attempt_at = now() + make_interval(secs => $2)
         WHERE run_id = $1",
        run_id,
        f64::from(delay_seconds),
        error
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The outbox's depth and the age of its oldest row in seconds (0 when empty).
pub async fn outbox_stats(db: impl PgExecutor<'_>) -> sqlx::Result<(i64, f64)> {
    sqlx::query_as(
        "SELECT count(*), coalesce(EXTRACT(EPOCH FROM now() - min(created_at))::float8, 0) FROM run_outbox",
    )
    .fetch_one(db)
    .await
}
