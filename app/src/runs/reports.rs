//! Status reports, written in groups that share one transaction.
//!
//! Each report is acknowledged only once the transaction that holds it has committed, but
//! reports that arrive together share it: one commit, one WAL flush and one NOTIFY lock
//! for all of them (group commit). A `PostgreSQL` commit that notifies holds a
//! database-wide lock through its WAL flush, so one transaction per report caps a replica
//! at one flush time per report, whatever the cores.
//!
//! A grouped report never waits for a lock: a run held by another transaction (a cancel, a
//! Prefect state, another replica's group) sends its report on alone, in a transaction of
//! its own that waits, so one busy run cannot stall the others. So does a report that names
//! only a pipeline, and every report of a group whose transaction fails before its commit.

use std::sync::Arc;

use chrono::Utc;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{Mutex, mpsc, oneshot};
use tracing::Instrument;

use super::{Change, RunStatus, StatusUpdate, StatusUpdateAck, db};
use crate::audit;
use crate::auth::Principal;
use crate::auth::middleware::RequestMeta;
use crate::error::{AppError, Result};
use crate::telemetry::metrics::metrics;

/// The most reports one transaction holds.
const MAX_GROUP: usize = 128;
/// Writers per replica: while one commits, the next gathers its group.
const WRITERS: usize = 2;
/// Reports that may wait for a writer before callers wait to queue theirs.
const QUEUE: usize = 4096;
/// The audit action of a report.
const ACTION: &str = "run.status_update";

/// A report that passed validation and the caller's role, ready to be written.
pub struct Report {
    /// Who sent it.
    pub principal: Principal,
    /// The request it came in.
    pub meta: RequestMeta,
    /// What it says.
    pub update: StatusUpdate,
    /// `update.status`, parsed.
    pub status: RunStatus,
}

struct Job {
    report: Report,
    /// The request's span: the group's span follows from it.
    span: tracing::Span,
    reply: oneshot::Sender<Result<StatusUpdateAck>>,
}

/// This replica's status report writers.
pub struct ReportWriter {
    queue: mpsc::Sender<Job>,
}

impl ReportWriter {
    /// Starts the writers on the current Tokio runtime; they stop when this is dropped.
    pub fn start(pool: PgPool) -> Arc<Self> {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..WRITERS {
            tokio::spawn(write(pool.clone(), receiver.clone()));
        }
        Arc::new(ReportWriter { queue })
    }

    /// Writes `report` and answers once it is committed (or refused).
    pub async fn submit(&self, report: Report) -> Result<StatusUpdateAck> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            report,
            span: tracing::Span::current(),
            reply,
        };
        if self.queue.send(job).await.is_err() {
            tracing::error!("the status report writers have stopped");
            return Err(AppError::Internal);
        }
        answer.await.unwrap_or_else(|_| {
            tracing::error!("a status report writer dropped a report unanswered");
            Err(AppError::Internal)
        })
    }
}

async fn write(pool: PgPool, receiver: Arc<Mutex<mpsc::Receiver<Job>>>) {
    let mut jobs = Vec::with_capacity(MAX_GROUP);
    loop {
        // The lock is held only while waiting, so the other writer gathers the next group
        // while this one writes.
        if receiver.lock().await.recv_many(&mut jobs, MAX_GROUP).await == 0 {
            return;
        }
        write_group(&pool, std::mem::take(&mut jobs)).await;
    }
}

/// What one report does inside a transaction.
enum Step {
    /// Written (or found to be a duplicate); `audit` says whether it gets an audit line.
    Done {
        ack: StatusUpdateAck,
        before: RunStatus,
        outcome: &'static str,
        audit: bool,
    },
    /// Refused; nothing was written for it.
    Refused(AppError),
    /// Its run is locked by another transaction.
    Busy,
}

async fn write_group(pool: &PgPool, jobs: Vec<Job>) {
    let span = tracing::info_span!("runs.status_group", reports = jobs.len());
    for job in &jobs {
        span.follows_from(&job.span);
    }
    let (grouped, alone): (Vec<Job>, Vec<Job>) = jobs
        .into_iter()
        .partition(|job| job.report.update.run_id.is_some());
    for job in alone {
        send_alone(pool, job);
    }
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

enum Failure {
    BeforeCommit(sqlx::Error),
    Commit(sqlx::Error),
}

/// Applies every report in one transaction, in arrival order, and commits.
async fn apply_group(pool: &PgPool, jobs: &[Job]) -> Result<Vec<Step>, Failure> {
    let mut tx = pool.begin().await.map_err(Failure::BeforeCommit)?;
    let mut steps = Vec::with_capacity(jobs.len());
    for job in jobs {
        let run_id = job.report.update.run_id.unwrap_or_default();
        let step = match db::try_lock_run(&mut *tx, run_id)
            .await
            .map_err(Failure::BeforeCommit)?
        {
            Some(run) => apply(&mut tx, &job.report, run)
                .await
                .map_err(Failure::BeforeCommit)?,
            // Locked elsewhere, or no such run: the report's own transaction tells which.
            None => Step::Busy,
        };
        steps.push(step);
    }
    let entries: Vec<(&Principal, String, &RequestMeta)> = jobs
        .iter()
        .zip(&steps)
        .filter_map(|(job, step)| match step {
            Step::Done { ack, audit: true, .. } => Some((
                &job.report.principal,
                format!("run:{}", ack.run_id),
                &job.report.meta,
            )),
            _ => None,
        })
        .collect();
    if !entries.is_empty() {
        audit::record_successes(&mut *tx, ACTION, &entries)
            .await
            .map_err(Failure::BeforeCommit)?;
    }
    tx.commit().await.map_err(Failure::Commit)?;
    Ok(steps)
}

/// Writes one report in a transaction of its own, which waits for its run's lock.
fn send_alone(pool: &PgPool, job: Job) {
    let pool = pool.clone();
    let span = tracing::info_span!(parent: &job.span, "runs.status_alone");
    tokio::spawn(
        async move {
            let answer = write_alone(&pool, &job.report).await;
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
        (None, None) => {
            return Err(AppError::invalid(
                "pipeline_id",
                "pipeline_id or run_id is required",
            ));
        }
    };
    let run = db::lock_run(&mut *tx, run_id)
        .await?
        .ok_or_else(|| AppError::not_found("Run"))?;
    match apply(&mut tx, report, run).await? {
        Step::Done {
            ack,
            before,
            outcome,
            audit,
        } => {
            if audit {
                audit::record_success(
                    &mut *tx,
                    &report.principal,
                    ACTION,
                    &format!("run:{}", ack.run_id),
                    &report.meta,
                )
                .await?;
                tx.commit().await?;
            }
            count(outcome, before, ack.run_status);
            Ok(ack)
        }
        Step::Refused(error) => Err(error),
        Step::Busy => unreachable!("a report's own transaction waits for its run"),
    }
}

fn count(outcome: &'static str, before: RunStatus, after: RunStatus) {
    metrics().status_update(outcome);
    metrics().transition(before.as_str(), after.as_str());
}

/// Applies a report to its locked run (and the stage it names), forward only. Every refusal comes
/// before the first write, so a refused report leaves its transaction as it found it.
///
/// A stage's `running` starts the run, its `failed` fails the run, and the last stage's
/// `completed` completes it, as the seed did. A report that would move a status backwards
/// is recorded in the run's history but changes nothing (`applied: false`).
async fn apply(conn: &mut PgConnection, report: &Report, run: db::LockedRun) -> sqlx::Result<Step> {
    let update = &report.update;
    let status = report.status;
    if update
        .pipeline_id
        .is_some_and(|pipeline_id| pipeline_id != run.pipeline_id)
    {
        return Ok(Step::Refused(AppError::not_found("Run of this pipeline")));
    }
    if let Err(error) = report.principal.may_report_on(run.id) {
        return Ok(Step::Refused(error));
    }
    let stage = match &update.stage_name {
        Some(name) => match db::stage_of_locked_run(&mut *conn, run.id, name).await? {
            Some(stage) => Some(stage),
            None => return Ok(Step::Refused(AppError::not_found(&format!("Stage '{name}'")))),
        },
        None => None,
    };
    let now = Utc::now();
    let at = update.timestamp.map_or(now, |t| t.min(now));
    let fresh = db::insert_run_event(
        &mut *conn,
        &db::RunEvent {
            run_id: run.id,
            event_id: update.event_id.as_deref(),
            kind: if update.stage_name.is_some() {
                "stage_status"
            } else {
                "run_status"
            },
            stage_name: update.stage_name.as_deref(),
            status: Some(status),
            message: update.error_message.as_deref(),
            request_id: Some(&report.meta.request_id),
            occurred_at: at,
        },
    )
    .await?;
    if !fresh {
        return Ok(Step::Done {
            ack: StatusUpdateAck {
                success: true,
                run_id: run.id,
                applied: false,
                duplicate: true,
                run_status: run.status,
            },
            before: run.status,
            outcome: "duplicate",
            audit: false,
        });
    }
    let newer = |last: Option<chrono::DateTime<Utc>>| last.is_none_or(|last| at >= last);
    let mut run_status = run.status;
    let applied = match stage {
        Some(stage) => {
            let change = stage.status.on_report(status, newer(stage.reported_at));
            if change != Change::Stale {
                db::update_stage(
                    &mut *conn,
                    stage.id,
                    status,
                    update.error_message.as_deref(),
                    update.records_processed,
                    at,
                )
                .await?;
            }
            let records = update.records_processed.filter(|_| change != Change::Stale);
            let follow = match (change, status) {
                (Change::Move, RunStatus::Running) => Some(RunStatus::Running),
                (Change::Move, RunStatus::Failed) => Some(RunStatus::Failed),
                (Change::Move, RunStatus::Completed)
                    if db::all_stages_completed(&mut *conn, run.id).await? =>
                {
                    Some(RunStatus::Completed)
                }
                _ => None,
            };
            if let Some(next) = follow.filter(|next| run.status.may_become(*next)) {
                let error = update
                    .error_message
                    .as_deref()
                    .filter(|_| next == RunStatus::Failed);
                // One update of the run (one change event) carries both.
                db::update_run_status(&mut *conn, run.id, next, error, records, at).await?;
                run_status = next;
            } else if let Some(records) = records {
                db::raise_run_records(&mut *conn, run.id, records).await?;
            }
            change != Change::Stale
        }
        None => {
            let change = run.status.on_report(status, newer(run.reported_at));
            if change != Change::Stale {
                db::update_run_status(
                    &mut *conn,
                    run.id,
                    status,
                    update.error_message.as_deref(),
                    update.records_processed,
                    at,
                )
                .await?;
                run_status = status;
            }
            change != Change::Stale
        }
    };
    Ok(Step::Done {
        ack: StatusUpdateAck {
            success: true,
            run_id: run.id,
            applied,
            duplicate: false,
            run_status,
        },
        before: run.status,
        outcome: if applied { "applied" } else { "stale" },
        audit: true,
    })
}
