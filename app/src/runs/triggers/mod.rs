//! Triggers, accepted in groups that share one transaction.
//!
//! A trigger is answered only once its run is committed, but triggers that arrive together
//! share one transaction and one commit ([`super::groups`] says why), with a fixed number
//! of statements whatever the group's size: lock the pipelines, count their unfinished
//! runs where a pipeline limits them, record the runs with their stages, outbox entries and
//! first events in one statement, and the audit lines in another. Each trigger is answered
//! with its run made from what that statement returned (ids, times, stage ids), not read
//! again after the commit.
//!
//! A group never waits for a lock: a trigger whose pipeline another transaction holds (or
//! that does not exist) is accepted on its own, in a transaction that waits (and says
//! `404` for a pipeline that is not there), as is every trigger of a group whose
//! transaction fails before its commit. Triggers with an `Idempotency-Key` and retries are
//! always accepted on their own (`service::accept`): a key must be claimed or found in a
//! transaction that waits for a concurrent one with the same key.

pub mod db;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use sqlx::PgPool;
use tracing::Instrument;

use super::groups::{self, Failure, Groups, Shape};
use super::{Run, Stage};
use crate::auth::secrets;
use crate::caller::{Caller, record};
use crate::error::{AppError, Result};
use crate::status::RunStatus;
use crate::telemetry::metrics::metrics;

/// The audit action of a trigger.
const ACTION: &str = "run.trigger";

/// A trigger that passed the caller's role and budget, ready to be accepted.
pub struct NewTrigger {
    /// Who sent it, and the request it came in.
    pub caller: Caller,
    /// The pipeline to run.
    pub pipeline_id: i64,
    /// Parameter overrides, on top of the pipeline's defaults.
    pub overrides: serde_json::Map<String, serde_json::Value>,
    /// Where it came from (`api`, `seed-api`, `ui`).
    pub source: String,
}

type Job = groups::Job<NewTrigger, Run>;

/// This replica's trigger writers.
pub struct TriggerWriter {
    groups: Groups<NewTrigger, Run>,
}

impl TriggerWriter {
    /// Starts the writers on the current Tokio runtime; they stop when this is dropped.
    pub fn start(pool: PgPool) -> Arc<Self> {
        let shape = Shape {
            name: "trigger",
            // Commits that notify are taken one at a time, so the rate is the group's size
            // per commit, and every group pays the same few statements: at 16 clients (wrk,
            // 100 pipelines) 2 writers made groups of 4.2 (1,112/s, the database's share of
            // the 2 cores saturated), 1 writer groups of 7.9 (1,303/s).
            writers: 1,
            max_group: 64,
            queue: 4096,
        };
        let groups = Groups::start(
            pool,
            shape,
            |pool, jobs| async move { write_group(&pool, jobs).await },
        );
        Arc::new(TriggerWriter { groups })
    }

    /// Accepts `trigger` and answers its run once committed (or the refusal).
    pub async fn submit(&self, trigger: NewTrigger) -> Result<Run> {
        self.groups.submit(trigger.pipeline_id, trigger).await
    }
}

/// What one trigger of a group came to.
enum Step {
    /// Recorded, at this index of the group's new runs.
    Recorded(usize),
    /// Refused (its pipeline's limit of unfinished runs); nothing was written for it.
    Refused(AppError),
    /// Its pipeline is held by another transaction, or is not there.
    Alone,
}

async fn write_group(pool: &PgPool, jobs: Vec<Job>) {
    let span =
        tracing::info_span!(parent: groups::parent_of(&jobs), "runs.trigger_group", triggers = jobs.len());
    for job in &jobs {
        span.follows_from(&job.span);
    }
    let (steps, runs) = match accept_group(pool, &jobs).instrument(span).await {
        Ok(accepted) => accepted,
        Err(Failure::BeforeCommit(error)) => {
            tracing::warn!(%error, triggers = jobs.len(), "a group of triggers failed; accepting each alone");
            for job in jobs {
                send_alone(pool, job);
            }
            return;
        }
        Err(Failure::Commit(error)) => {
            // Nothing is acknowledged, so nothing acknowledged is lost: the callers retry.
            let error = AppError::from(error);
            for job in jobs {
                job.reply.send(Err(error.clone())).ok();
            }
            return;
        }
    };
    // The recorded steps come in the order of their runs.
    let mut runs = runs.into_iter();
    for (job, step) in jobs.into_iter().zip(steps) {
        match step {
            Step::Recorded(_) => {
                let run = runs.next().ok_or_else(|| AppError::not_found("Run"));
                if let Ok(run) = &run {
                    metrics().trigger("accepted");
                    tracing::info!(parent: &job.span, run.id = run.id, pipeline.id = run.pipeline_id, "run accepted");
                }
                job.reply.send(run).ok();
            }
            Step::Refused(error) => {
                job.reply.send(Err(error)).ok();
            }
            Step::Alone => send_alone(pool, job),
        }
    }
}

/// Accepts every trigger it can in one transaction, in arrival order, and commits; answers
/// each trigger's step and the new runs, as the answers show them.
async fn accept_group(pool: &PgPool, jobs: &[Job]) -> Result<(Vec<Step>, Vec<Run>), Failure> {
    let mut tx = groups::begin(pool).await.map_err(Failure::BeforeCommit)?;
    let mut ids: Vec<i64> = jobs.iter().map(|job| job.item.pipeline_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let templates = db::lock_templates(&mut tx, &ids)
        .await
        .map_err(Failure::BeforeCommit)?;
    let limited: Vec<i64> = templates
        .iter()
        .filter(|(_, locked)| locked.template.max_concurrent_runs.is_some())
        .map(|(id, _)| *id)
        .collect();
    let mut active = if limited.is_empty() {
        HashMap::new()
    } else {
        db::active_runs(&mut tx, &limited)
            .await
            .map_err(Failure::BeforeCommit)?
    };

    let mut runs = db::NewRuns::default();
    let mut callbacks = Vec::new();
    let mut steps = Vec::with_capacity(jobs.len());
    for job in jobs {
        let trigger = &job.item;
        let Some(db::Locked { template, .. }) = templates.get(&trigger.pipeline_id) else {
            steps.push(Step::Alone);
            continue;
        };
        if let Some(limit) = template.max_concurrent_runs {
            let unfinished = active.entry(trigger.pipeline_id).or_default();
            if *unfinished >= i64::from(limit) {
                steps.push(Step::Refused(super::service::over_limit(*unfinished, limit)));
                continue;
            }
            *unfinished += 1;
        }
        let index = runs.pipeline_ids.len();
        let callback = secrets::new_callback_token();
        runs.pipeline_ids.push(trigger.pipeline_id);
        runs.parameters.push(super::service::with_defaults(
            &template.default_parameters,
            trigger.overrides.clone(),
        ));
        runs.actors.push(trigger.caller.actor.clone());
        runs.api_key_ids.push(trigger.caller.key_id);
        runs.sources.push(trigger.source.clone());
        runs.request_ids.push(trigger.caller.meta.request_id.clone());
        runs.traceparents
            .push(trigger.caller.meta.traceparent.map(|t| t.to_string()));
        runs.callback_token_hashes.push(callback.hash);
        for (position, name) in template.stage_names.iter().enumerate() {
            runs.stage_runs.push(i32::try_from(index + 1).unwrap_or(i32::MAX));
            runs.stage_positions
                .push(i32::try_from(position).unwrap_or(i32::MAX));
            runs.stage_names.push(name.clone());
        }
        callbacks.push(callback.clear);
        steps.push(Step::Recorded(index));
    }
    if callbacks.is_empty() {
        tx.commit().await.map_err(Failure::Commit)?;
        return Ok((steps, Vec::new()));
    }

    let recorded = db::insert_runs(&mut tx, &runs, &callbacks, Utc::now())
        .await
        .map_err(Failure::BeforeCommit)?;
    let answers: Vec<Run> = recorded
        .into_iter()
        .enumerate()
        .filter_map(|(index, recorded)| {
            let locked = templates.get(runs.pipeline_ids.get(index)?)?;
            new_run(&runs, index, locked, recorded)
        })
        .collect();
    if answers.len() != callbacks.len() {
        tracing::error!(
            runs = callbacks.len(),
            recorded = answers.len(),
            "a group recorded another number of runs or stages"
        );
        return Err(Failure::BeforeCommit(sqlx::Error::RowNotFound));
    }
    let audited: Vec<(&Caller, String)> = jobs
        .iter()
        .zip(&steps)
        .filter_map(|(job, step)| match step {
            Step::Recorded(index) => Some((&job.item.caller, format!("run:{}", answers[*index].id))),
            _ => None,
        })
        .collect();
    record::successes(&mut *tx, ACTION, &audited)
        .await
        .map_err(Failure::BeforeCommit)?;
    tx.commit().await.map_err(Failure::Commit)?;
    Ok((steps, answers))
}

/// The run at `index` of `runs` as the database recorded it: what a read would answer right
/// after the commit (`pending`, nothing reported, its stages not started).
fn new_run(runs: &db::NewRuns, index: usize, locked: &db::Locked, recorded: db::Recorded) -> Option<Run> {
    let pipeline_id = *runs.pipeline_ids.get(index)?;
    let names = &locked.template.stage_names;
    if recorded.stage_ids.len() != names.len() {
        return None;
    }
    let stages = names
        .iter()
        .zip(recorded.stage_ids)
        .enumerate()
        .map(|(position, (name, id))| Stage {
            id: Some(id),
            run_id: Some(recorded.id),
            ..Stage::planned(pipeline_id, i32::try_from(position).unwrap_or(i32::MAX), name)
        })
        .collect();
    Some(Run {
        id: recorded.id,
        pipeline_id,
        pipeline_name: locked.name.clone(),
        status: RunStatus::Pending,
        parameters: runs.parameters.get(index)?.clone(),
        actor: runs.actors.get(index)?.clone(),
        source: runs.sources.get(index)?.clone(),
        request_id: Some(runs.request_ids.get(index)?.clone()),
        idempotency_key: None,
        retry_of_run_id: None,
        from_stage: None,
        prefect_flow_run_id: None,
        prefect_state: None,
        prefect_message: None,
        records_processed: 0,
        error_message: None,
        created_at: recorded.created_at,
        submitted_at: None,
        started_at: None,
        ended_at: None,
        updated_at: recorded.updated_at,
        stuck_since: None,
        prefect_url: None,
        failure: None,
        failure_logs: Vec::new(),
        stages,
    })
}

/// Accepts one trigger in a transaction of its own, which waits for its pipeline's lock.
fn send_alone(pool: &PgPool, job: Job) {
    let pool = pool.clone();
    let span = tracing::info_span!(parent: &job.span, "runs.trigger_alone");
    tokio::spawn(
        async move {
            let trigger = job.item;
            let answer = super::service::accept_alone(&pool, &trigger).await;
            job.reply.send(answer).ok();
        }
        .instrument(span),
    );
}
