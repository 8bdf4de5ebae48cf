//! Status reports, written in groups that share one transaction.
//!
//! A report is answered only once its transaction has committed, but reports that arrive
//! together share one: one commit for all of them ([`super::groups`] says why).
//!
//! Reports about the same run go to the same writer, so this replica's groups do not hold
//! each other's runs (a report naming only a pipeline goes by the pipeline). A group never
//! waits for a lock. A report whose run another transaction holds (a cancel, a Prefect
//! state, another replica's group) is written on its own, in a transaction that waits, so
//! one busy run cannot hold up the others. So is a report that names only a pipeline whose
//! row another transaction holds (a trigger), and every report of a group whose
//! transaction fails before its commit. A report that names only a pipeline is otherwise
//! grouped like the others, about the pipeline's latest run.

pub mod db;
mod plan;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::Utc;
use sqlx::{PgConnection, PgPool};
use tracing::Instrument;

use super::groups::{self, Failure, Groups, Shape};
use super::{StatusUpdate, StatusUpdateAck};
use crate::caller::Caller;
use crate::caller::record;
use crate::error::{AppError, Result};
use crate::status::RunStatus;
use crate::telemetry::metrics::metrics;

/// The audit action of a report.
const ACTION: &str = "run.status_update";

/// A report that passed validation and the caller's role, ready to be written.
pub struct Report {
    /// Who sent it, and the request it came in.
    pub caller: Caller,
    /// What it says.
    pub update: StatusUpdate,
    /// `update.status`, parsed.
    pub status: RunStatus,
}

type Job = groups::Job<Report, StatusUpdateAck>;

/// This replica's status report writers.
pub struct ReportWriter {
    groups: Groups<Report, StatusUpdateAck>,
}

impl ReportWriter {
    /// Starts the writers on the current Tokio runtime; they stop when this is dropped.
    pub fn start(pool: PgPool) -> Arc<Self> {
        let shape = Shape {
            name: "status report",
            // In a profile at 10,000 runs and 64 clients, 2 writers left the cores 14-18 %
            // idle, 4 left them 4-6 %.
            writers: 4,
            max_group: 128,
            queue: 4096,
        };
        let groups = Groups::start(
            pool,
            shape,
            |pool, jobs| async move { write_group(&pool, jobs).await },
        );
        Arc::new(ReportWriter { groups })
    }

    /// Writes `report` and answers once it is committed (or refused). Reports naming the
    /// same run, or only the same pipeline, go to the same writer, in arrival order.
    pub async fn submit(&self, report: Report) -> Result<StatusUpdateAck> {
        let update = &report.update;
        let key = update.run_id.or(update.pipeline_id).unwrap_or_default();
        self.groups.submit(key, report).await
    }
}

/// What one report does inside a transaction.
enum Step {
    /// Written (`applied` or `stale`, each audited) or found to be a `duplicate` (not).
    Done {
        ack: StatusUpdateAck,
        before: RunStatus,
        outcome: &'static str,
    },
    /// Refused; nothing was written for it.
    Refused(AppError),
    /// Its run is locked by another transaction.
    Busy,
}

async fn write_group(pool: &PgPool, jobs: Vec<Job>) {
    let span =
        tracing::info_span!(parent: groups::parent_of(&jobs), "runs.status_group", reports = jobs.len());
    for job in &jobs {
        span.follows_from(&job.span);
    }
    let grouped = jobs;
    if grouped.is_empty() {
        return;
    }
    let steps = match apply_group(pool, &grouped).instrument(span).await {
        Ok(steps) => steps,
        Err(Failure::BeforeCommit(error)) => {
            tracing::warn!(%error, reports = grouped.len(), "a group of status reports failed; writing each alone");
            for job in grouped {
                send_alone(pool, job);
            }
            return;
        }
        Err(Failure::Commit(error)) => {
            // Nothing is acknowledged; the senders retry (repeats are recognised by event id).
            let error = AppError::from(error);
            for job in grouped {
                job.reply.send(Err(error.clone())).ok();
            }
            return;
        }
    };
    for (job, step) in grouped.into_iter().zip(steps) {
        match step {
            Step::Done {
                ack, before, outcome, ..
            } => {
                count(outcome, before, ack.run_status);
                job.reply.send(Ok(ack)).ok();
            }
            Step::Refused(error) => {
                job.reply.send(Err(error)).ok();
            }
            Step::Busy => send_alone(pool, job),
        }
    }
}

/// Applies every report in one transaction, in arrival order, and commits.
async fn apply_group(pool: &PgPool, jobs: &[Job]) -> Result<Vec<Step>, Failure> {
    let mut tx = groups::begin(pool).await.map_err(Failure::BeforeCommit)?;
    // A report that names only a pipeline (the seed's payload) is about its latest run.
    let pipelines: Vec<i64> = jobs
        .iter()
        .filter(|job| job.item.update.run_id.is_none())
        .filter_map(|job| job.item.update.pipeline_id)
        .collect();
    let latest = if pipelines.is_empty() {
        HashMap::new()
    } else {
        db::lock_latest_runs(&mut *tx, &pipelines)
            .await
            .map_err(Failure::BeforeCommit)?
    };
    // A report whose run is not known here (its pipeline held by another transaction,
    // unknown, or never run) is about no run: it is sent on alone, which says which.
    let reports: Vec<(i64, &Report)> = jobs
        .iter()
        .map(|job| {
            let update = &job.item.update;
            let run_id = update
                .run_id
                .or_else(|| update.pipeline_id.and_then(|p| latest.get(&p).copied()));
            (run_id.unwrap_or_default(), &job.item)
        })
        .collect();
    let steps = apply(&mut tx, &reports, false)
        .await
        .map_err(Failure::BeforeCommit)?;
    audit_steps(&mut tx, &reports, &steps)
        .await
        .map_err(Failure::BeforeCommit)?;
    tx.commit().await.map_err(Failure::Commit)?;
    Ok(steps)
}

/// One audit line for each report written (duplicates and refusals get none).
async fn audit_steps(
    conn: &mut PgConnection,
    reports: &[(i64, &Report)],
    steps: &[Step],
) -> sqlx::Result<()> {
    let entries: Vec<(&Caller, String)> = reports
        .iter()
        .zip(steps)
        .filter_map(|((_, report), step)| match step {
            Step::Done { ack, .. } if !ack.duplicate => Some((&report.caller, format!("run:{}", ack.run_id))),
            _ => None,
        })
        .collect();
    if entries.is_empty() {
        return Ok(());
    }
    record::successes(&mut *conn, ACTION, &entries).await
}

/// Writes one report in a transaction of its own, which waits for its run's lock.
fn send_alone(pool: &PgPool, job: Job) {
    let pool = pool.clone();
    let span = tracing::info_span!(parent: &job.span, "runs.status_alone");
    tokio::spawn(
        async move {
            let answer = write_alone(&pool, &job.item).await;
            job.reply.send(answer).ok();
        }
        .instrument(span),
    );
}

async fn write_alone(pool: &PgPool, report: &Report) -> Result<StatusUpdateAck> {
    let update = &report.update;
    let mut tx = pool.begin().await?;
    let run_id = match (update.run_id, update.pipeline_id) {
        (Some(run_id), _) => run_id,
        (None, Some(pipeline_id)) => db::lock_latest_run_id(&mut *tx, pipeline_id)
            .await?
            .ok_or_else(|| AppError::not_found("Pipeline"))?
            .ok_or_else(|| AppError::conflict("pipeline has no run to update; trigger it first"))?,
        (None, None) => unreachable!("validate_update requires one of them"),
    };
    let reports = [(run_id, report)];
    let steps = apply(&mut tx, &reports, true).await?;
    audit_steps(&mut tx, &reports, &steps).await?;
    match steps.into_iter().next() {
        Some(Step::Done {
            ack, before, outcome, ..
        }) => {
            tx.commit().await?;
            count(outcome, before, ack.run_status);
            Ok(ack)
        }
        Some(Step::Refused(error)) => Err(error),
        Some(Step::Busy) | None => unreachable!("a report's own transaction waits for its run"),
    }
}

fn count(outcome: &'static str, before: RunStatus, after: RunStatus) {
    metrics().status_update(outcome);
    metrics().transition(before.as_str(), after.as_str());
}

/// Applies reports (each with the run it is about) to their runs and stages, in order,
/// forward only, with a fixed number of statements whatever their number: lock the runs,
/// read their stages, record the events, then write each changed stage and run once.
/// What each report does is decided by [`plan`], without the database; every refusal is
/// decided before the first write. Without `wait`, a report whose run another
/// transaction holds is [`Step::Busy`] (so is one about no run: its own transaction tells
/// which).
async fn apply(conn: &mut PgConnection, reports: &[(i64, &Report)], wait: bool) -> sqlx::Result<Vec<Step>> {
    let mut ids: Vec<i64> = reports.iter().map(|(run_id, _)| *run_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let runs = db::lock_reported_runs(&mut *conn, &ids, wait).await?;
    let named_stage = reports.iter().any(|(_, r)| r.update.stage_name.is_some());
    let stages = if named_stage && !runs.is_empty() {
        let locked: Vec<i64> = runs.iter().map(|run| run.id).collect();
        db::stages_of_locked_runs(&mut *conn, &locked).await?
    } else {
        Vec::new()
    };
    let mut state = plan::State::new(runs, stages);
    let (plans, events) = state.check(reports, wait, Utc::now());
    let fresh: HashSet<(i64, String)> = if events.event_ids.is_empty() {
        HashSet::new()
    } else {
        db::insert_reported_events(&mut *conn, &events)
            .await?
            .into_iter()
            .collect()
    };
    let steps = state.settle(reports, plans, &fresh);
    let (runs, stages) = state.changed();
    if !stages.is_empty() {
        db::write_reported_stages(&mut *conn, &stages).await?;
    }
    if !runs.is_empty() {
        db::write_reported_runs(&mut *conn, &runs).await?;
    }
    Ok(steps)
}
