//! The queries of a group of status reports: lock the runs and stages, write them back.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::status::RunStatus;

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

/// The latest runs of these pipelines, by pipeline, locking the pipelines (so no trigger
/// replaces a latest run meanwhile); a pipeline another transaction holds, or that never
/// ran, is left out.
pub async fn lock_latest_runs(
    db: impl PgExecutor<'_>,
    pipeline_ids: &[i64],
) -> sqlx::Result<std::collections::HashMap<i64, i64>> {
    let rows = sqlx::query!(
        "SELECT id, latest_run_id FROM pipelines
         WHERE id = ANY($1) AND latest_run_id IS NOT NULL
         ORDER BY id FOR UPDATE SKIP LOCKED",
        pipeline_ids
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| Some((row.id, row.latest_run_id?)))
        .collect())
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
