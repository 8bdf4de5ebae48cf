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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use tokio::sync::{Mutex, mpsc, oneshot};
use tracing::Instrument;

use super::{StatusUpdate, StatusUpdateAck, db};
use crate::caller::Principal;
use crate::caller::RequestMeta;
use crate::caller::record;
use crate::error::{AppError, Result};
use crate::status::{Change, RunStatus};
use crate::telemetry::metrics::metrics;

/// The most reports one transaction holds.
const MAX_GROUP: usize = 128;
/// Writers per replica: while one waits for the database, the others gather and write
/// their groups (in a profile at 10,000 runs and 64 clients, 2 left the cores 14-18 %
/// idle, 4 left them 4-6 %).
const WRITERS: usize = 4;
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
        // The lock is held only while waiting, so another writer gathers the next group
        // while this one writes.
        if receiver.lock().await.recv_many(&mut jobs, MAX_GROUP).await == 0 {
            return;
        }
        write_group(&pool, std::mem::take(&mut jobs)).await;
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
    let reports: Vec<(i64, &Report)> = jobs
        .iter()
        .map(|job| (job.report.update.run_id.unwrap_or_default(), &job.report))
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
    let entries: Vec<(&Principal, String, &RequestMeta)> = reports
        .iter()
        .zip(steps)
        .filter_map(|((_, report), step)| match step {
            Step::Done { ack, .. } if !ack.duplicate => {
                Some((&report.principal, format!("run:{}", ack.run_id), &report.meta))
            }
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

/// A fresh event id for a report that came without one.
fn new_event_id() -> String {
    format!(
        "{}report-{:032x}",
        super::OWN_EVENT_PREFIX,
        rand::random::<u128>()
    )
}

/// What pass one decided for a report.
enum Plan {
    /// Settled already: refused, or its run is busy.
    Settled(Step),
    /// A repeat of an event id earlier in the same group.
    Repeat,
    /// To apply, if its event is new.
    Apply { event_id: String, at: DateTime<Utc> },
}

/// Applies reports (each with the run it is about) to their runs and stages, in order,
/// forward only, with a fixed number of statements whatever their number: lock the runs,
/// read their stages, record the events, then write each changed stage and run once.
/// Every refusal is decided before the first write.
///
/// A stage's `running` starts the run, its `failed` fails the run, and the last stage's
/// `completed` completes it, as the seed did. A report that would move a status backwards
/// is recorded in the run's history but changes nothing (`applied: false`). Without `wait`,
/// a report whose run another transaction holds is [`Step::Busy`] (so is one about no run:
/// its own transaction tells which).
async fn apply(conn: &mut PgConnection, reports: &[(i64, &Report)], wait: bool) -> sqlx::Result<Vec<Step>> {
    let mut ids: Vec<i64> = reports.iter().map(|(run_id, _)| *run_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut runs: HashMap<i64, db::ReportedRun> = db::lock_reported_runs(&mut *conn, &ids, wait)
        .await?
        .into_iter()
        .map(|run| (run.id, run))
        .collect();
    let locked: Vec<i64> = runs.keys().copied().collect();
    let named_stage = reports.iter().any(|(_, r)| r.update.stage_name.is_some());
    let mut stages = if named_stage && !locked.is_empty() {
        db::stages_of_locked_runs(&mut *conn, &locked).await?
    } else {
        Vec::new()
    };
    let stage_index: HashMap<(i64, String), usize> = stages
        .iter()
        .enumerate()
        .map(|(i, s)| ((s.run_id, s.name.clone()), i))
        .collect();

    // Pass one: refusals, repeats within the group, and the events to record.
    let now = Utc::now();
    let mut events = db::ReportedEvents::default();
    let mut seen = HashSet::new();
    let mut plans = Vec::with_capacity(reports.len());
    for (run_id, report) in reports {
        let update = &report.update;
        let Some(run) = runs.get(run_id) else {
            plans.push(Plan::Settled(if wait {
                Step::Refused(AppError::not_found("Run"))
            } else {
                Step::Busy
            }));
            continue;
        };
        if update
            .pipeline_id
            .is_some_and(|pipeline_id| pipeline_id != run.pipeline_id)
        {
            plans.push(Plan::Settled(Step::Refused(AppError::not_found(
                "Run of this pipeline",
            ))));
            continue;
        }
        if let Err(error) = report.principal.may_report_on(run.id) {
            plans.push(Plan::Settled(Step::Refused(error)));
            continue;
        }
        if let Some(name) = &update.stage_name
            && !stage_index.contains_key(&(run.id, name.clone()))
        {
            plans.push(Plan::Settled(Step::Refused(AppError::not_found(&format!(
                "Stage '{name}'"
            )))));
            continue;
        }
        let event_id = update.event_id.clone().unwrap_or_else(new_event_id);
        if !seen.insert((run.id, event_id.clone())) {
            plans.push(Plan::Repeat);
            continue;
        }
        let at = update.timestamp.map_or(now, |t| t.min(now));
        events.run_ids.push(run.id);
        events.event_ids.push(event_id.clone());
        events.kinds.push(if update.stage_name.is_some() {
            "stage_status"
        } else {
            "run_status"
        });
        events.stage_names.push(update.stage_name.clone());
        events.statuses.push(report.status.as_str());
        events.messages.push(update.error_message.clone());
        events.occurred_at.push(at);
        events.request_ids.push(report.meta.request_id.clone());
        plans.push(Plan::Apply { event_id, at });
    }
    let fresh: HashSet<(i64, String)> = if events.event_ids.is_empty() {
        HashSet::new()
    } else {
        db::insert_reported_events(&mut *conn, &events)
            .await?
            .into_iter()
            .collect()
    };

    // Pass two: each new report applied in order to the runs and stages as they stand.
    let mut changed_runs = HashSet::new();
    let mut changed_stages = HashSet::new();
    let mut steps = Vec::with_capacity(reports.len());
    for ((run_id, report), plan) in reports.iter().zip(plans) {
        let at = match plan {
            Plan::Settled(step) => {
                steps.push(step);
                continue;
            }
            Plan::Apply { ref event_id, at } if fresh.contains(&(*run_id, event_id.clone())) => at,
            Plan::Repeat | Plan::Apply { .. } => {
                let status = runs[run_id].status;
                steps.push(Step::Done {
                    ack: StatusUpdateAck {
                        success: true,
                        run_id: *run_id,
                        applied: false,
                        duplicate: true,
                        run_status: status,
                    },
                    before: status,
                    outcome: "duplicate",
                });
                continue;
            }
        };
        let update = &report.update;
        let status = report.status;
        let run = runs.get_mut(run_id).expect("planned reports have a locked run");
        let before = run.status;
        let newer = |last: Option<DateTime<Utc>>| last.is_none_or(|last| at >= last);
        let applied = match &update.stage_name {
            Some(name) => {
                let index = stage_index[&(*run_id, name.clone())];
                let stage = &mut stages[index];
                let change = stage.status.on_report(status, newer(stage.reported_at));
                if change != Change::Stale {
                    stage.status = status;
                    stage.started_at = started(stage.started_at, status, at);
                    if status.is_terminal() {
                        stage.ended_at = Some(at);
                    }
                    stage.message = update.error_message.clone().or(stage.message.take());
                    stage.records_processed = update.records_processed.or(stage.records_processed);
                    stage.reported_at = Some(stage.reported_at.map_or(at, |last| last.max(at)));
                    changed_stages.insert(index);
                }
                let records = update.records_processed.filter(|_| change != Change::Stale);
                let all_completed = || {
                    stages
                        .iter()
                        .filter(|s| s.run_id == *run_id)
                        .all(|s| s.status == RunStatus::Completed)
                };
                let follow = match (change, status) {
                    (Change::Move, RunStatus::Running) => Some(RunStatus::Running),
                    (Change::Move, RunStatus::Failed) => Some(RunStatus::Failed),
                    (Change::Move, RunStatus::Completed) if all_completed() => Some(RunStatus::Completed),
                    _ => None,
                };
                if let Some(next) = follow.filter(|next| run.status.may_become(*next)) {
                    let error = update
                        .error_message
                        .as_deref()
                        .filter(|_| next == RunStatus::Failed);
                    move_run(run, next, error, records, at);
                    changed_runs.insert(*run_id);
                } else if let Some(records) = records {
                    run.records_processed = run.records_processed.max(records);
                    changed_runs.insert(*run_id);
                }
                change != Change::Stale
            }
            None => {
                let change = run.status.on_report(status, newer(run.reported_at));
                if change != Change::Stale {
                    move_run(
                        run,
                        status,
                        update.error_message.as_deref(),
                        update.records_processed,
                        at,
                    );
                    changed_runs.insert(*run_id);
                }
                change != Change::Stale
            }
        };
        steps.push(Step::Done {
            ack: StatusUpdateAck {
                success: true,
                run_id: *run_id,
                applied,
                duplicate: false,
                run_status: runs[run_id].status,
            },
            before,
            outcome: if applied { "applied" } else { "stale" },
        });
    }
    if !changed_stages.is_empty() {
        let changed: Vec<&db::ReportedStage> = changed_stages.iter().map(|i| &stages[*i]).collect();
        db::write_reported_stages(&mut *conn, &changed).await?;
    }
    if !changed_runs.is_empty() {
        let changed: Vec<&db::ReportedRun> = changed_runs.iter().map(|id| &runs[id]).collect();
        db::write_reported_runs(&mut *conn, &changed).await?;
    }
    Ok(steps)
}

/// When a stage or run started, once `status` is reported at `at`.
fn started(started_at: Option<DateTime<Utc>>, status: RunStatus, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if status == RunStatus::Running {
        started_at.or(Some(at))
    } else {
        started_at
    }
}

/// Moves a run to `status` as reported at `at`, stamping start and end times; records
/// processed (a running total) are only ever raised, an earlier error is kept unless a new
/// one is given.
fn move_run(
    run: &mut db::ReportedRun,
    status: RunStatus,
    error: Option<&str>,
    records: Option<i64>,
    at: DateTime<Utc>,
) {
    run.status = status;
    run.started_at = started(run.started_at, status, at);
    if status.is_terminal() {
        run.ended_at = Some(at);
    }
    if let Some(error) = error {
        run.error_message = Some(error.to_owned());
    }
    if let Some(records) = records {
        run.records_processed = run.records_processed.max(records);
    }
    run.reported_at = Some(run.reported_at.map_or(at, |last| last.max(at)));
}
