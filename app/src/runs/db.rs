//! Queries for runs, stage runs and run events.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use super::{Run, Stage};
use crate::status::RunStatus;

/// A run's row, locked for an update.
pub struct LockedRun {
    /// Run id.
    pub id: i64,
    /// The run's pipeline.
    pub pipeline_id: i64,
    /// Current status.
    pub status: RunStatus,
    /// Prefect's flow run, once submitted.
    pub prefect_flow_run_id: Option<String>,
    /// When the newest applied report happened.
    pub reported_at: Option<DateTime<Utc>>,
}

/// A run about to be recorded.
pub struct NewRun<'a> {
    /// The pipeline run.
    pub pipeline_id: i64,
    /// Parameters actually used.
    pub parameters: &'a serde_json::Value,
    /// Who triggered it.
    pub actor: &'a str,
    /// Through what (`api`, `ui`, `retry`, ...).
    pub source: &'a str,
    /// Request id of the trigger.
    pub request_id: &'a str,
    /// The trigger's trace context (`traceparent`), if known.
    pub traceparent: Option<String>,
    /// The trigger's `Idempotency-Key`, if any.
    pub idempotency_key: Option<&'a str>,
    /// One pending stage run is made per name, in order.
    pub stage_names: &'a [String],
    /// The run this one retries.
    pub retry_of_run_id: Option<i64>,
    /// SHA-256 of the run's callback credential.
    pub callback_token_hash: &'a [u8],
}

/// Inserts a pending run with one pending stage run per stage name; returns the run id.
pub async fn insert_run(db: impl PgExecutor<'_>, run: &NewRun<'_>) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"WITH run AS (
               INSERT INTO runs (pipeline_id, parameters, actor, source, request_id, idempotency_key,
                                 retry_of_run_id, callback_token_hash, traceparent)
               VALUES ($1, $2, $3, $4, $5, $6, $8, $9, $10) RETURNING id
           ), stages AS (
               INSERT INTO stage_runs (run_id, position, name)
               SELECT run.id, (s.ord - 1)::int, s.name
               FROM run, unnest($7::text[]) WITH ORDINALITY AS s (name, ord)
           )
           SELECT id AS "id!" FROM run"#,
        run.pipeline_id,
        run.parameters,
        run.actor,
        run.source,
        run.request_id,
        run.idempotency_key,
        run.stage_names,
        run.retry_of_run_id,
        run.callback_token_hash,
        run.traceparent,
    )
    .fetch_one(db)
    .await
}

/// Runs of a pipeline that have not finished.
pub async fn count_active_runs(db: impl PgExecutor<'_>, pipeline_id: i64) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM runs
           WHERE pipeline_id = $1 AND status NOT IN ('completed', 'failed', 'cancelled', 'crashed')"#,
        pipeline_id
    )
    .fetch_one(db)
    .await
}

/// One entry of a run's history.
pub struct RunEvent<'a> {
    /// The run.
    pub run_id: i64,
    /// The sender's id for it; repeats are ignored. `None` makes one up.
    pub event_id: Option<&'a str>,
    /// What happened: `accepted`, `stage_status`, `prefect_state`, ...
    pub kind: &'a str,
    /// The stage concerned, if any.
    pub stage_name: Option<&'a str>,
    /// The status reported, if any.
    pub status: Option<RunStatus>,
    /// Details: an error, a state name, a flow run id.
    pub message: Option<&'a str>,
    /// The request that reported it, if a request did.
    pub request_id: Option<&'a str>,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
}

/// Appends an event to a run's history (any news clears the run's stuck flag); false when
/// `event_id` was already recorded.
pub async fn insert_run_event(db: impl PgExecutor<'_>, event: &RunEvent<'_>) -> sqlx::Result<bool> {
    let inserted = sqlx::query_scalar!(
        r#"WITH event AS (
               INSERT INTO run_events (run_id, event_id, kind, stage_name, status, message, occurred_at, request_id)
               VALUES ($1, coalesce($2, 'flowdeck:' || gen_random_uuid()::text), $3, $4, $5, $6, $7, $8)
               ON CONFLICT ON CONSTRAINT run_events_run_id_event_id_key DO NOTHING
               RETURNING run_id
           ), unstuck AS (
               UPDATE runs SET stuck_since = NULL
               WHERE id IN (SELECT run_id FROM event) AND stuck_since IS NOT NULL
           )
           SELECT count(*) AS "count!" FROM event"#,
        event.run_id,
        event.event_id,
        event.kind,
        event.stage_name,
        event.status.map(RunStatus::as_str),
        event.message,
        event.occurred_at,
        event.request_id,
    )
    .fetch_one(db)
    .await?;
    Ok(inserted == 1)
}

/// Locks a run for an update.
pub async fn lock_run(db: impl PgExecutor<'_>, run_id: i64) -> sqlx::Result<Option<LockedRun>> {
    let row = sqlx::query!(
        "SELECT id, pipeline_id, status, prefect_flow_run_id, reported_at FROM runs WHERE id = $1 FOR UPDATE",
        run_id
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| LockedRun {
        id: r.id,
        pipeline_id: r.pipeline_id,
        status: RunStatus::from_db(&r.status),
        prefect_flow_run_id: r.prefect_flow_run_id,
        reported_at: r.reported_at,
    }))
}

/// A run as a group of status reports reads and writes it.
#[derive(Debug, Clone)]
pub struct ReportedRun {
    /// Run id.
    pub id: i64,
    /// The run's pipeline.
    pub pipeline_id: i64,
    /// Current status.
    pub status: RunStatus,
    /// When it started running.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub ended_at: Option<DateTime<Utc>>,
    /// Why it failed.
    pub error_message: Option<String>,
    /// Records processed so far (only ever raised).
    pub records_processed: i64,
    /// When the newest applied report happened.
    pub reported_at: Option<DateTime<Utc>>,
}

/// A stage run as a group of status reports reads and writes it.
#[derive(Debug, Clone)]
pub struct ReportedStage {
    /// Stage run id.
    pub id: i64,
    /// Its run.
    pub run_id: i64,
    /// Stage name.
    pub name: String,
    /// Current status.
    pub status: RunStatus,
    /// When it started running.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub ended_at: Option<DateTime<Utc>>,
    /// The latest message reported.
    pub message: Option<String>,
    /// The latest record count reported.
    pub records_processed: Option<i64>,
    /// When the newest applied report happened.
    pub reported_at: Option<DateTime<Utc>>,
}

/// The rows behind [`ReportedRun`].
struct ReportedRunRow {
    id: i64,
    pipeline_id: i64,
    status: String,
    started_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    error_message: Option<String>,
    records_processed: i64,
    reported_at: Option<DateTime<Utc>>,
}

impl From<ReportedRunRow> for ReportedRun {
    fn from(r: ReportedRunRow) -> Self {
        ReportedRun {
            id: r.id,
            pipeline_id: r.pipeline_id,
            status: RunStatus::from_db(&r.status),
            started_at: r.started_at,
            ended_at: r.ended_at,
            error_message: r.error_message,
            records_processed: r.records_processed,
            reported_at: r.reported_at,
        }
    }
}

/// Locks the runs with these ids (in id order, so two writers never wait on each other in
/// a circle) and reads them; the ones another transaction holds are left out, not waited
/// for, unless `wait`.
pub async fn lock_reported_runs(
    db: impl PgExecutor<'_>,
    ids: &[i64],
    wait: bool,
) -> sqlx::Result<Vec<ReportedRun>> {
    let rows = if wait {
        sqlx::query_as!(
            ReportedRunRow,
            "SELECT id, pipeline_id, status, started_at, ended_at, error_message, records_processed, reported_at
             FROM runs WHERE id = ANY($1) ORDER BY id FOR UPDATE",
            ids
        )
        .fetch_all(db)
        .await?
    } else {
        sqlx::query_as!(
            ReportedRunRow,
            "SELECT id, pipeline_id, status, started_at, ended_at, error_message, records_processed, reported_at
             FROM runs WHERE id = ANY($1) ORDER BY id FOR UPDATE SKIP LOCKED",
            ids
        )
        .fetch_all(db)
        .await?
    };
    Ok(rows.into_iter().map(ReportedRun::from).collect())
}

/// The stages of runs this transaction has locked.
///
/// Read them in a statement after the lock's: every write of a stage holds its run's lock,
/// and a later statement sees what the lock's previous holder committed (one statement
/// that locked the runs and joined their stages would read the stages as they were before
/// any wait).
pub async fn stages_of_locked_runs(
    db: impl PgExecutor<'_>,
    run_ids: &[i64],
) -> sqlx::Result<Vec<ReportedStage>> {
    let rows = sqlx::query!(
        "SELECT id, run_id, name, status, started_at, ended_at, message, records_processed, reported_at
         FROM stage_runs WHERE run_id = ANY($1)",
        run_ids
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| ReportedStage {
            id: r.id,
            run_id: r.run_id,
            name: r.name,
            status: RunStatus::from_db(&r.status),
            started_at: r.started_at,
            ended_at: r.ended_at,
            message: r.message,
            records_processed: r.records_processed,
            reported_at: r.reported_at,
        })
        .collect())
}

/// Run events of a group of reports, column by column.
#[derive(Default)]
pub struct ReportedEvents {
    /// Each event's run.
    pub run_ids: Vec<i64>,
    /// Each event's id (unique per run within the group).
    pub event_ids: Vec<String>,
    /// `stage_status` or `run_status`.
    pub kinds: Vec<&'static str>,
    /// The stage reported on, if any.
    pub stage_names: Vec<Option<String>>,
    /// The status reported.
    pub statuses: Vec<&'static str>,
    /// The error reported, if any.
    pub messages: Vec<Option<String>>,
    /// When it happened.
    pub occurred_at: Vec<DateTime<Utc>>,
    /// The reporting request.
    pub request_ids: Vec<String>,
}

/// Appends the events to their runs' histories (any news clears a run's stuck flag); the
/// runs and ids of those not already recorded.
pub async fn insert_reported_events(
    db: impl PgExecutor<'_>,
    events: &ReportedEvents,
) -> sqlx::Result<Vec<(i64, String)>> {
    let rows = sqlx::query!(
        r#"WITH event AS (
               INSERT INTO run_events (run_id, event_id, kind, stage_name, status, message, occurred_at, request_id)
               SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                                    $7::timestamptz[], $8::text[])
               ON CONFLICT ON CONSTRAINT run_events_run_id_event_id_key DO NOTHING
               RETURNING run_id, event_id
           ), unstuck AS (
               UPDATE runs SET stuck_since = NULL
               WHERE id IN (SELECT run_id FROM event) AND stuck_since IS NOT NULL
           )
           SELECT run_id AS "run_id!", event_id AS "event_id!" FROM event"#,
        &events.run_ids,
        &events.event_ids,
        &events.kinds as &[&str],
        &events.stage_names as &[Option<String>],
        &events.statuses as &[&str],
        &events.messages as &[Option<String>],
        &events.occurred_at,
        &events.request_ids,
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.run_id, r.event_id)).collect())
}

/// Writes the stages' new states (one statement, one change event per stage).
pub async fn write_reported_stages(db: impl PgExecutor<'_>, stages: &[&ReportedStage]) -> sqlx::Result<()> {
    let ids: Vec<i64> = stages.iter().map(|s| s.id).collect();
    let statuses: Vec<&str> = stages.iter().map(|s| s.status.as_str()).collect();
    let started: Vec<Option<DateTime<Utc>>> = stages.iter().map(|s| s.started_at).collect();
    let ended: Vec<Option<DateTime<Utc>>> = stages.iter().map(|s| s.ended_at).collect();
    let messages: Vec<Option<&str>> = stages.iter().map(|s| s.message.as_deref()).collect();
    let records: Vec<Option<i64>> = stages.iter().map(|s| s.records_processed).collect();
    let reported: Vec<Option<DateTime<Utc>>> = stages.iter().map(|s| s.reported_at).collect();
    sqlx::query!(
        "UPDATE stage_runs s SET status = u.status, started_at = u.started_at, ended_at = u.ended_at,
             message = u.message, records_processed = u.records_processed, reported_at = u.reported_at,
             updated_at = now()
         FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::text[], $6::bigint[],
                     $7::timestamptz[]) AS u(id, status, started_at, ended_at, message, records_processed, reported_at)
         WHERE s.id = u.id",
        &ids,
        &statuses as &[&str],
        &started as &[Option<DateTime<Utc>>],
        &ended as &[Option<DateTime<Utc>>],
        &messages as &[Option<&str>],
        &records as &[Option<i64>],
        &reported as &[Option<DateTime<Utc>>],
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Writes the runs' new states (one statement, one change event per run).
pub async fn write_reported_runs(db: impl PgExecutor<'_>, runs: &[&ReportedRun]) -> sqlx::Result<()> {
    let ids: Vec<i64> = runs.iter().map(|r| r.id).collect();
    let statuses: Vec<&str> = runs.iter().map(|r| r.status.as_str()).collect();
    let started: Vec<Option<DateTime<Utc>>> = runs.iter().map(|r| r.started_at).collect();
    let ended: Vec<Option<DateTime<Utc>>> = runs.iter().map(|r| r.ended_at).collect();
    let errors: Vec<Option<&str>> = runs.iter().map(|r| r.error_message.as_deref()).collect();
    let records: Vec<i64> = runs.iter().map(|r| r.records_processed).collect();
    let reported: Vec<Option<DateTime<Utc>>> = runs.iter().map(|r| r.reported_at).collect();
    sqlx::query!(
        "UPDATE runs r SET status = u.status, started_at = u.started_at, ended_at = u.ended_at,
             error_message = u.error_message, records_processed = u.records_processed,
             reported_at = u.reported_at, updated_at = now()
         FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::text[], $6::bigint[],
                     $7::timestamptz[]) AS u(id, status, started_at, ended_at, error_message, records_processed, reported_at)
         WHERE r.id = u.id",
        &ids,
        &statuses as &[&str],
        &started as &[Option<DateTime<Utc>>],
        &ended as &[Option<DateTime<Utc>>],
        &errors as &[Option<&str>],
        &records,
        &reported as &[Option<DateTime<Utc>>],
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The latest run of a pipeline, locking the pipeline (so no trigger replaces it meanwhile):
/// `None` without such a pipeline, `Some(None)` when it has never run.
pub async fn lock_latest_run_id(
    db: impl PgExecutor<'_>,
    pipeline_id: i64,
) -> sqlx::Result<Option<Option<i64>>> {
    sqlx::query_scalar!(
        "SELECT latest_run_id FROM pipelines WHERE id = $1 FOR UPDATE",
        pipeline_id
    )
    .fetch_optional(db)
    .await
}

/// Moves a run to `status` as reported at `at`, stamping start and end times; records
/// processed (a running total) are only ever raised.
pub async fn update_run_status(
    db: impl PgExecutor<'_>,
    run_id: i64,
    status: RunStatus,
    error_message: Option<&str>,
    records_processed: Option<i64>,
    at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE runs SET
             status = $2,
             started_at = CASE WHEN $2 = 'running' THEN coalesce(started_at, $6) ELSE started_at END,
             ended_at = CASE WHEN $3 THEN $6 ELSE ended_at END,
             error_message = coalesce($4, error_message),
             records_processed = GREATEST(records_processed, coalesce($5, records_processed)),
             reported_at = GREATEST(reported_at, $6),
             updated_at = now()
         WHERE id = $1",
        run_id,
        status.as_str(),
        status.is_terminal(),
        error_message,
        records_processed,
        at,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A run row with its pipeline's name, as every run read selects it.
#[derive(sqlx::FromRow)]
pub struct RunRow {
    id: i64,
    pipeline_id: i64,
    pipeline_name: String,
    status: String,
    parameters: serde_json::Value,
    actor: String,
    source: String,
    request_id: Option<String>,
    idempotency_key: Option<String>,
    retry_of_run_id: Option<i64>,
    prefect_flow_run_id: Option<String>,
    prefect_state: Option<String>,
    records_processed: i64,
    error_message: Option<String>,
    created_at: DateTime<Utc>,
    submitted_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
    stuck_since: Option<DateTime<Utc>>,
}

impl RunRow {
    /// The columns of a [`RunRow`], from `runs r JOIN pipelines p`.
    pub const COLUMNS: &str = "r.id, r.pipeline_id, p.name AS pipeline_name, r.status, r.parameters, \
        r.actor, r.source, r.request_id, r.idempotency_key, r.retry_of_run_id, \
        r.prefect_flow_run_id, r.prefect_state, r.records_processed, r.error_message, \
        r.created_at, r.submitted_at, r.started_at, r.ended_at, r.updated_at, r.stuck_since";
}

impl From<RunRow> for Run {
    fn from(r: RunRow) -> Self {
        Run {
            id: r.id,
            pipeline_id: r.pipeline_id,
            pipeline_name: r.pipeline_name,
            status: RunStatus::from_db(&r.status),
            parameters: r.parameters,
            actor: r.actor,
            source: r.source,
            request_id: r.request_id,
            idempotency_key: r.idempotency_key,
            retry_of_run_id: r.retry_of_run_id,
            prefect_flow_run_id: r.prefect_flow_run_id,
            prefect_state: r.prefect_state,
            records_processed: r.records_processed,
            error_message: r.error_message,
            created_at: r.created_at,
            submitted_at: r.submitted_at,
            started_at: r.started_at,
            ended_at: r.ended_at,
            updated_at: r.updated_at,
            stuck_since: r.stuck_since,
            prefect_url: None,
            stages: Vec::new(),
        }
    }
}

/// A run without its stages.
pub async fn run_by_id(db: impl PgExecutor<'_>, run_id: i64) -> sqlx::Result<Option<Run>> {
    let row = sqlx::query_as!(
        RunRow,
        "SELECT r.id, r.pipeline_id, p.name AS pipeline_name, r.status, r.parameters, r.actor,
                r.source, r.request_id, r.idempotency_key, r.retry_of_run_id,
                r.prefect_flow_run_id, r.prefect_state, r.records_processed, r.error_message,
                r.created_at, r.submitted_at, r.started_at, r.ended_at, r.updated_at, r.stuck_since
         FROM runs r JOIN pipelines p ON p.id = r.pipeline_id
         WHERE r.id = $1",
        run_id
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(Run::from))
}

/// The latest runs of a pipeline, newest first, without their stages.
pub async fn runs_for_pipeline(
    db: impl PgExecutor<'_>,
    pipeline_id: i64,
    limit: i64,
) -> sqlx::Result<Vec<Run>> {
    let rows = sqlx::query_as!(
        RunRow,
        "SELECT r.id, r.pipeline_id, p.name AS pipeline_name, r.status, r.parameters, r.actor,
                r.source, r.request_id, r.idempotency_key, r.retry_of_run_id,
                r.prefect_flow_run_id, r.prefect_state, r.records_processed, r.error_message,
                r.created_at, r.submitted_at, r.started_at, r.ended_at, r.updated_at, r.stuck_since
         FROM runs r JOIN pipelines p ON p.id = r.pipeline_id
         WHERE r.pipeline_id = $1
         ORDER BY r.created_at DESC, r.id DESC LIMIT $2",
        pipeline_id,
        limit
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(Run::from).collect())
}

/// The last `per_pipeline` runs of each pipeline: `(pipeline, status, seconds)`, newest
/// first within a pipeline.
pub async fn recent_outcomes(
    db: impl PgExecutor<'_>,
    pipeline_ids: &[i64],
    per_pipeline: i64,
) -> sqlx::Result<Vec<(i64, RunStatus, Option<f64>)>> {
    let rows = sqlx::query!(
        r#"SELECT p.id AS "pipeline_id!", r.status AS "status!",
                  extract(epoch FROM r.ended_at - r.started_at)::float8 AS "seconds?"
           FROM unnest($1::bigint[]) AS p (id)
           CROSS JOIN LATERAL (
               SELECT status, started_at, ended_at FROM runs WHERE runs.pipeline_id = p.id
               ORDER BY runs.created_at DESC, runs.id DESC LIMIT $2
           ) r"#,
        pipeline_ids,
        per_pipeline
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.pipeline_id, RunStatus::from_db(&r.status), r.seconds))
        .collect())
}

/// The stages of the given runs, ordered by run and position.
pub async fn stages_for_runs(db: impl PgExecutor<'_>, run_ids: &[i64]) -> sqlx::Result<Vec<Stage>> {
    let rows = sqlx::query!(
        r#"SELECT s.id, r.pipeline_id, s.run_id, s.position, s.name, s.status, s.message,
                  s.records_processed, s.started_at, s.ended_at,
                  extract(epoch FROM s.ended_at - s.started_at)::float8 AS "seconds?"
           FROM stage_runs s JOIN runs r ON r.id = s.run_id
           WHERE s.run_id = ANY($1)
           ORDER BY s.run_id, s.position"#,
        run_ids
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Stage {
            id: Some(r.id),
            pipeline_id: r.pipeline_id,
            run_id: Some(r.run_id),
            position: r.position,
            description: Some(format!("Pipeline stage: {}", r.name)),
            name: r.name,
            status: RunStatus::from_db(&r.status),
            started_at: r.started_at,
            completed_at: r.ended_at,
            execution_time_seconds: r.seconds,
            records_processed: r.records_processed,
            error_message: r.message,
        })
        .collect())
}

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
}

/// Queues a run for submission, waking the dispatchers once the transaction commits.
pub async fn insert_outbox(
    db: &mut sqlx::PgConnection,
    run_id: i64,
    callback_token: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO run_outbox (run_id, callback_token) VALUES ($1, $2)",
        run_id,
        callback_token
    )
    .execute(&mut *db)
    .await?;
    sqlx::query!("SELECT pg_notify('flowdeck_outbox', $1)", run_id.to_string())
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
                  r.prefect_idempotency_key AS idempotency_key
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
    let event = format!("{}submitted", super::OWN_EVENT_PREFIX);
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
    let event = format!("{}submit-failed", super::OWN_EVENT_PREFIX);
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

/// A run Prefect knows and that has not finished.
pub struct FollowedRun {
    /// Run id.
    pub id: i64,
    /// Prefect's flow run id.
    pub flow_run_id: String,
}

/// Unfinished runs that Prefect knows, oldest first.
pub async fn unfinished_submitted_runs(
    db: impl PgExecutor<'_>,
    limit: i64,
) -> sqlx::Result<Vec<FollowedRun>> {
    sqlx::query_as!(
        FollowedRun,
        r#"SELECT id, prefect_flow_run_id AS "flow_run_id!" FROM runs
           WHERE prefect_flow_run_id IS NOT NULL
             AND status NOT IN ('completed', 'failed', 'cancelled', 'crashed')
           ORDER BY id LIMIT $1"#,
        limit
    )
    .fetch_all(db)
    .await
}

/// The run submitted as this Prefect flow run, if any.
pub async fn run_for_flow_run(db: impl PgExecutor<'_>, flow_run_id: &str) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar!("SELECT id FROM runs WHERE prefect_flow_run_id = $1", flow_run_id)
        .fetch_optional(db)
        .await
}

/// Records Prefect's state name on a run.
pub async fn set_prefect_state(db: impl PgExecutor<'_>, run_id: i64, state_name: &str) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE runs SET prefect_state = $2 WHERE id = $1 AND prefect_state IS DISTINCT FROM $2",
        run_id,
        state_name
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Records the run an `Idempotency-Key` made; false if the key was taken meanwhile.
pub async fn insert_idempotency_key(
    db: impl PgExecutor<'_>,
    actor: &str,
    key: &str,
    request_hash: &[u8],
    run_id: i64,
) -> sqlx::Result<bool> {
    let inserted = sqlx::query!(
        "INSERT INTO idempotency_keys (actor, key, request_hash, run_id) VALUES ($1, $2, $3, $4)
         ON CONFLICT (actor, key) DO NOTHING",
        actor,
        key,
        request_hash,
        run_id
    )
    .execute(db)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// The request fingerprint and run of a caller's `Idempotency-Key`, if it was used.
pub async fn find_idempotency_key(
    db: impl PgExecutor<'_>,
    actor: &str,
    key: &str,
) -> sqlx::Result<Option<(Vec<u8>, i64)>> {
    let row = sqlx::query!(
        "SELECT request_hash, run_id FROM idempotency_keys WHERE actor = $1 AND key = $2",
        actor,
        key
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| (r.request_hash, r.run_id)))
}

/// Flags running runs that have recorded no event for `silence_seconds`; returns their ids.
pub async fn flag_stuck_runs(db: impl PgExecutor<'_>, silence_seconds: f64) -> sqlx::Result<Vec<i64>> {
    sqlx::query_scalar!(
        "UPDATE runs r SET stuck_since = now()
         WHERE r.status = 'running' AND r.stuck_since IS NULL
           AND r.updated_at < now() - make_interval(secs => $1)
           AND NOT EXISTS (
               SELECT 1 FROM run_events e
               WHERE e.run_id = r.id AND e.recorded_at > now() - make_interval(secs => $1)
           )
         RETURNING r.id",
        silence_seconds
    )
    .fetch_all(db)
    .await
}

/// The outbox's depth and the age of its oldest row in seconds (0 when empty).
pub async fn outbox_stats(db: impl PgExecutor<'_>) -> sqlx::Result<(i64, f64)> {
    sqlx::query_as(
        "SELECT count(*), coalesce(EXTRACT(EPOCH FROM now() - min(created_at))::float8, 0) FROM run_outbox",
    )
    .fetch_one(db)
    .await
}

/// What a pipeline gives each run: its deployment, stages, default parameters and limit.
pub struct RunTemplate {
    /// Prefect deployment, if the pipeline names one.
    pub deployment: Option<String>,
    /// Ordered stage names.
    pub stage_names: Vec<String>,
    /// Default parameters.
    pub default_parameters: serde_json::Value,
    /// Concurrency limit.
    pub max_concurrent_runs: Option<i32>,
}

/// A pipeline's run template, with its row locked so that concurrent triggers see each
/// other's runs.
pub async fn lock_template(db: impl PgExecutor<'_>, pipeline_id: i64) -> sqlx::Result<Option<RunTemplate>> {
    sqlx::query_as!(
        RunTemplate,
        "SELECT deployment, stage_names, default_parameters, max_concurrent_runs
         FROM pipelines WHERE id = $1 FOR UPDATE",
        pipeline_id
    )
    .fetch_optional(db)
    .await
}

/// A pipeline's run template, as it is now (the Run dialog).
pub async fn template(db: impl PgExecutor<'_>, pipeline_id: i64) -> sqlx::Result<Option<RunTemplate>> {
    sqlx::query_as!(
        RunTemplate,
        "SELECT deployment, stage_names, default_parameters, max_concurrent_runs
         FROM pipelines WHERE id = $1",
        pipeline_id
    )
    .fetch_optional(db)
    .await
}
