//! Run operations shared by REST handlers and server functions: validate, authorize,
//! change, audit, commit.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::filter::RunFilter;
use super::params::{self, ParamField};
use super::reports::{Report, ReportWriter};
use super::triggers::{NewTrigger, TriggerWriter};
use super::{
    RetryRequest, Run, Stage, StatusUpdate, StatusUpdateAck, TriggerRequest, db, dispatch, idempotency,
    reports, sync,
};
use crate::api::cache::{self, Answers, Scope};
use crate::api::encoding::Kept;
use crate::api::rules::{self, MAX_NAME};
use crate::auth::budgets;
use crate::auth::limits::Limits;
use crate::auth::secrets;
use crate::caller::record;
use crate::caller::{Action, Caller, Role};
use crate::error::{AppError, Result};
use crate::filter::paging;
use crate::prefect::{PrefectClient, PrefectError, PrefectLinks};
use crate::status::{Change, RunStatus};
use crate::telemetry::metrics::metrics;

/// An `Idempotency-Key` header.
pub const IDEMPOTENCY_KEY: &str = r"^[\x21-\x7e]{1,255}$";
/// Longest error message in a status report.
pub const MAX_MESSAGE: usize = 10_000;

static IDEMPOTENCY_KEY_RE: std::sync::LazyLock<regex::Regex> =
    std::sync::LazyLock::new(|| rules::compile(IDEMPOTENCY_KEY));

/// The most recent runs a pipeline page shows.
pub const RECENT_RUNS: i64 = 20;

/// Where a new run's parameters come from.
enum Parameters {
    /// The pipeline's defaults with these overrides on top (a trigger).
    Overrides(serde_json::Map<String, serde_json::Value>),
    /// Exactly these (a retry repeats what the original used).
    Exact(serde_json::Value),
}

/// What a new run is made from: its pipeline and parameters, where the request came from,
/// the run it retries (and the stage it restarts from), the audit action and the
/// idempotency key.
struct Accept<'a> {
    pipeline_id: i64,
    parameters: Parameters,
    source: &'a str,
    retry_of: Option<i64>,
    restart: Option<Restart<'a>>,
    action: &'a str,
    idempotency: Option<&'a Idempotency>,
}

/// A restart from a stage: where it starts and the stages of the run it retries.
struct Restart<'a> {
    from_stage: &'a str,
    original: &'a [Stage],
}

impl Restart<'_> {
    /// For each stage of the pipeline before the restart's first, the run whose output it
    /// reuses: the run retried where the stage completed, or the run it reused in turn.
    fn carried_over(&self, stage_names: &[String]) -> Result<Vec<i64>> {
        let start = stage_names
            .iter()
            .position(|name| name == self.from_stage)
            .ok_or_else(|| {
                AppError::invalid(
                    "from_stage",
                    format!("must be one of the pipeline's stages: {}", stage_names.join(", ")),
                )
            })?;
        stage_names[..start]
            .iter()
            .map(|name| {
                let earlier = self.original.iter().find(|s| &s.name == name);
                match earlier.map(|s| (s.status, s.run_id, s.output_run_id)) {
                    Some((RunStatus::Completed, Some(run_id), _)) => Ok(run_id),
                    Some((RunStatus::Skipped, _, Some(output_run_id))) => Ok(output_run_id),
                    _ => Err(AppError::invalid(
                        "from_stage",
                        format!(
                            "stage '{name}' did not complete in the run retried, so there is no output to start '{}' from; retry from an earlier stage",
                            self.from_stage
                        ),
                    )),
                }
            })
            .collect()
    }
}

/// Records a `pending` run with its stages, callback credential, outbox entry, first event
/// and audit line in one transaction. Submitting it to Prefect happens after commit.
async fn accept(pool: &PgPool, caller: &Caller, new: Accept<'_>) -> Result<Run> {
    let Accept {
        pipeline_id,
        parameters,
        source,
        retry_of,
        restart,
        action,
        idempotency,
    } = new;
    let mut tx = pool.begin().await?;
    if let Some(idempotency) = idempotency {
        if !idempotency::hold(&mut *tx, &caller.actor, &idempotency.key, idempotency.wait).await? {
            return Err(in_progress());
        }
        if let Some(run) = replay(pool, caller, idempotency).await? {
            return Ok(run);
        }
    }
    let pipeline = db::lock_template(&mut *tx, pipeline_id)
        .await?
        .ok_or_else(|| AppError::not_found("Pipeline"))?;
    let reused = match &restart {
        Some(restart) => restart.carried_over(&pipeline.stage_names)?,
        None => Vec::new(),
    };
    if let Some(key_id) = caller.key_id {
        budgets::check(&mut tx, key_id, caller.budget).await?;
    }
    if let Some(limit) = pipeline.max_concurrent_runs {
        let active = db::count_active_runs(&mut *tx, pipeline_id).await?;
        if active >= i64::from(limit) {
            return Err(over_limit(active, limit));
        }
    }
    let parameters = match parameters {
        Parameters::Overrides(overrides) => with_defaults(&pipeline.default_parameters, overrides),
        Parameters::Exact(parameters) => parameters,
    };
    let callback = secrets::new_callback_token();
    let new_run = db::NewRun {
        pipeline_id,
        parameters: &parameters,
        actor: &caller.actor,
        source,
        request_id: &caller.meta.request_id,
        traceparent: caller.meta.traceparent.map(|t| t.to_string()),
        idempotency_key: idempotency.map(|i| i.key.as_str()),
        stage_names: &pipeline.stage_names,
        retry_of_run_id: retry_of,
        from_stage: restart
            .as_ref()
            .map(|r| r.from_stage)
            .filter(|_| !reused.is_empty()),
        reused: &reused,
        callback_token_hash: &callback.hash,
        api_key_id: caller.key_id,
    };
    let run_id = db::insert_run(&mut *tx, &new_run).await?;
    if let Some(idempotency) = idempotency {
        // The key is held (above), so it is free here; taken would mean held elsewhere.
        let claimed = idempotency::insert_idempotency_key(
            &mut *tx,
            &caller.actor,
            &idempotency.key,
            &idempotency.hash,
            run_id,
        )
        .await?;
        if !claimed {
            return Err(in_progress());
        }
    }
    dispatch::db::insert_outbox(&mut tx, run_id, &callback.clear).await?;
    db::insert_run_event(
        &mut *tx,
        &db::RunEvent {
            run_id,
            event_id: None,
            kind: "accepted",
            stage_name: None,
            status: Some(RunStatus::Pending),
            message: None,
            request_id: Some(&caller.meta.request_id),
            occurred_at: Utc::now(),
        },
    )
    .await?;
    record::success(&mut *tx, caller, action, &format!("run:{run_id}")).await?;
    tx.commit().await?;
    metrics().trigger("accepted");
    tracing::info!(run.id = run_id, pipeline.id = pipeline_id, "run accepted");
    get_unchecked(pool, run_id).await
}

/// The refusal of a run over its pipeline's limit of unfinished runs.
pub(super) fn over_limit(active: i64, limit: i32) -> AppError {
    AppError::conflict(format!(
        "pipeline already has {active} unfinished run(s), its limit is {limit}"
    ))
}

/// A pipeline's default parameters with a trigger's overrides on top.
pub(super) fn with_defaults(
    defaults: &serde_json::Value,
    overrides: serde_json::Map<String, serde_json::Value>,
) -> serde_json::Value {
    let mut merged = match defaults {
        serde_json::Value::Object(map) => map.clone(),
        _ => serde_json::Map::new(),
    };
    merged.extend(overrides);
    serde_json::Value::Object(merged)
}

/// Accepts a trigger without an `Idempotency-Key` in a transaction of its own (one its
/// group could not take: see [`super::triggers`]).
pub(super) async fn accept_alone(pool: &PgPool, trigger: &NewTrigger) -> Result<Run> {
    let new = Accept {
        pipeline_id: trigger.pipeline_id,
        parameters: Parameters::Overrides(trigger.overrides.clone()),
        source: &trigger.source,
        retry_of: None,
        restart: None,
        action: "run.trigger",
        idempotency: None,
    };
    accept(pool, &trigger.caller, new).await
}

/// The refusal of a request whose `Idempotency-Key` another request is still using (`409`,
/// as the IETF Idempotency-Key draft says); sent again once that one ends, it answers its run.
fn in_progress() -> AppError {
    AppError::InProgress {
        message: "a request with this Idempotency-Key is still being processed; send it again in a moment"
            .to_owned(),
    }
}

/// A trigger's `Idempotency-Key` with the fingerprint of what it asked for.
pub struct Idempotency {
    key: String,
    hash: Vec<u8>,
    /// Whether a repeat waits for the request still using the key rather than being
    /// refused: a form submitted twice shows its run, not a refusal.
    wait: bool,
}

impl Idempotency {
    /// Checks the header value and fingerprints the request (target, such as
    /// `trigger 7`, and parsed body, so the same JSON with other spacing or key order
    /// counts as the same request).
    pub fn new(key: &str, target: &str, request: &impl serde::Serialize) -> Result<Self> {
        if !IDEMPOTENCY_KEY_RE.is_match(key) {
            return Err(AppError::invalid(
                "Idempotency-Key",
                "must be 1 to 255 visible ASCII characters",
            ));
        }
        let body = serde_json::to_string(request).map_err(|_| AppError::Internal)?;
        let hash = secrets::hash_secret(&format!("{target} {body}"));
        Ok(Idempotency {
            key: key.to_owned(),
            hash,
            wait: false,
        })
    }

    /// The same key, but a repeat waits for the request using it instead of a `409`.
    pub fn waiting(self) -> Self {
        Self { wait: true, ..self }
    }
}

/// The run an earlier request with the same key made, if any (counted as deduplicated);
/// refuses a different request (`422`, as the IETF Idempotency-Key draft says).
///
/// Read once the key is held, so a request that used it before has committed.
async fn replay(pool: &PgPool, caller: &Caller, idempotency: &Idempotency) -> Result<Option<Run>> {
    let Some((hash, run_id)) =
        idempotency::find_idempotency_key(pool, &caller.actor, &idempotency.key).await?
    else {
        return Ok(None);
    };
    if hash != idempotency.hash {
        return Err(AppError::invalid(
            "Idempotency-Key",
            "was already used for a different request; use a new key",
        ));
    }
    let run = get_unchecked(pool, run_id).await?;
    metrics().trigger("deduplicated");
    Ok(Some(run))
}

/// A trigger as it arrives: the pipeline, the caller's overrides, where it came from
/// (`api`, `seed-api`, `ui`) and its `Idempotency-Key`.
pub struct Trigger<'a> {
    /// The pipeline to run.
    pub pipeline_id: i64,
    /// Parameter overrides.
    pub request: TriggerRequest,
    /// Where the trigger came from.
    pub source: &'a str,
    /// The caller's `Idempotency-Key`, if any.
    pub idempotency_key: Option<&'a str>,
    /// Whether a repeat of the key waits for the request still using it (a form sent
    /// twice) instead of being refused with `409`.
    pub repeat_waits: bool,
}

/// Accepts a trigger: a `pending` run with the pipeline's defaults and the caller's overrides.
///
/// With an `Idempotency-Key`, a repeat of the same request returns the same run; without
/// one, the trigger is accepted together with those arriving at the same time.
#[tracing::instrument(name = "runs.trigger", skip_all, fields(pipeline.id = trigger.pipeline_id))]
pub async fn trigger(
    pool: &PgPool,
    limits: &Limits,
    triggers: &TriggerWriter,
    caller: &Caller,
    trigger: Trigger<'_>,
) -> Result<Run> {
    let Trigger {
        pipeline_id,
        request,
        source,
        idempotency_key,
        repeat_waits,
    } = trigger;
    let accepted = async {
        caller.may(Action::Trigger)?;
        caller.sees_pipeline(pool, pipeline_id).await?;
        limits.trigger(&caller.actor)?;
        let idempotency = idempotency_key
            .map(|key| Idempotency::new(key, &format!("trigger {pipeline_id}"), &request))
            .transpose()?
            .map(|key| if repeat_waits { key.waiting() } else { key });
        // A key with budgets is counted under its lock, one trigger at a time (`accept`).
        if idempotency.is_none() && !caller.budget.limits() {
            let new = NewTrigger {
                caller: caller.clone(),
                pipeline_id,
                overrides: request.parameters.unwrap_or_default(),
                source: source.to_owned(),
            };
            return triggers.submit(new).await;
        }
        let overrides = Parameters::Overrides(request.parameters.unwrap_or_default());
        let new = Accept {
            pipeline_id,
            parameters: overrides,
            source,
            retry_of: None,
            restart: None,
            action: "run.trigger",
            idempotency: idempotency.as_ref(),
        };
        accept(pool, caller, new).await
    };
    count_refusal(accepted.await)
}

/// Counts a trigger or retry that was not accepted, by why.
fn count_refusal(result: Result<Run>) -> Result<Run> {
    if let Err(error) = &result {
        metrics().trigger(match error {
            AppError::RateLimited { .. } => "rate_limited",
            _ if error.status_code() >= 500 => "failed",
            _ => "refused",
        });
    }
    result
}

/// A retry as it arrives: the run retried, where to start and what to change, and its
/// `Idempotency-Key`.
pub struct Retry<'a> {
    /// The run to run again.
    pub run_id: i64,
    /// Where to start and the parameters to change.
    pub request: RetryRequest,
    /// The caller's `Idempotency-Key`, if any.
    pub idempotency_key: Option<&'a str>,
}

/// Runs a finished run again: a new run linked to the original.
///
/// It has the original's parameters and the request's overrides on top. With
/// `from_stage`, the stages before it are carried
/// over as `skipped` and the flow starts there; a stage the run does not have, or one
/// whose earlier stages left no output, is refused before anything is written.
#[tracing::instrument(name = "runs.retry", skip_all, fields(run.id = retry.run_id))]
pub async fn retry(pool: &PgPool, limits: &Limits, caller: &Caller, retry: Retry<'_>) -> Result<Run> {
    let Retry {
        run_id,
        request,
        idempotency_key,
    } = retry;
    let accepted = async {
        caller.may(Action::Retry)?;
        caller.sees_run(pool, run_id).await?;
        let original = db::run_by_id(pool, run_id)
            .await?
            .ok_or_else(|| AppError::not_found("Run"))?;
        let stages = match &request.from_stage {
            Some(_) => db::stages_for_runs(pool, &[run_id]).await?,
            None => Vec::new(),
        };
        if let Some(from_stage) = &request.from_stage
            && !stages.iter().any(|s| &s.name == from_stage)
        {
            let names: Vec<&str> = stages.iter().map(|s| s.name.as_str()).collect();
            return Err(AppError::invalid(
                "from_stage",
                format!("must be one of the run's stages: {}", names.join(", ")),
            ));
        }
        limits.trigger(&caller.actor)?;
        let idempotency = idempotency_key
            .map(|key| Idempotency::new(key, &format!("retry {run_id}"), &request))
            .transpose()?;
        if !original.status.is_terminal() {
            return Err(AppError::conflict(format!(
                "only a finished run can be retried; this one is {}",
                original.status
            )));
        }
        let parameters = Parameters::Exact(with_defaults(
            &original.parameters,
            request.parameters.clone().unwrap_or_default(),
        ));
        let new = Accept {
            pipeline_id: original.pipeline_id,
            parameters,
            source: "retry",
            retry_of: Some(run_id),
            restart: request.from_stage.as_deref().map(|from_stage| Restart {
                from_stage,
                original: &stages,
            }),
            action: "run.retry",
            idempotency: idempotency.as_ref(),
        };
        accept(pool, caller, new).await
    };
    count_refusal(accepted.await)
}

/// Cancels a run. One that has not reached Prefect is taken out of the outbox and cancelled
/// here; one that has is set to `CANCELLING` in Prefect, which then stops it.
#[tracing::instrument(name = "runs.cancel", skip_all, fields(run.id = run_id))]
pub async fn cancel(
    pool: &PgPool,
    prefect: Option<&PrefectClient>,
    caller: &Caller,
    run_id: i64,
) -> Result<Run> {
    caller.may(Action::Cancel)?;
    caller.sees_run(pool, run_id).await?;
    let mut tx = pool.begin().await?;
    let locked = db::lock_run(&mut *tx, run_id)
        .await?
        .ok_or_else(|| AppError::not_found("Run"))?;
    if locked.status.is_terminal() {
        return Err(AppError::conflict(format!(
            "the run is already {}",
            locked.status
        )));
    }
    match locked.prefect_flow_run_id {
        None => {
            if !dispatch::db::withdraw_from_outbox(&mut *tx, run_id).await? {
                return Err(AppError::conflict(
                    "the run is being handed to Prefect right now; try again in a moment",
                ));
            }
            let reason = "cancelled before it reached Prefect";
            move_locked_run(&mut tx, run_id, RunStatus::Cancelled, Some(reason), Utc::now()).await?;
            db::insert_run_event(
                &mut *tx,
                &db::RunEvent {
                    run_id,
                    event_id: None,
                    kind: "cancelled",
                    stage_name: None,
                    status: Some(RunStatus::Cancelled),
                    message: Some(reason),
                    request_id: Some(&caller.meta.request_id),
                    occurred_at: Utc::now(),
                },
            )
            .await?;
            record::success(&mut *tx, caller, "run.cancel", &format!("run:{run_id}")).await?;
            tx.commit().await?;
            metrics().transition(locked.status.as_str(), RunStatus::Cancelled.as_str());
        }
        Some(flow_run_id) => {
            tx.rollback().await?;
            let prefect = prefect.ok_or_else(|| AppError::Upstream {
                service: "prefect".into(),
            })?;
            let answer = prefect.cancel_flow_run(&flow_run_id).await.map_err(|error| {
                tracing::warn!(run.id = run_id, %error, "Prefect did not cancel the flow run");
                match error {
                    PrefectError::Rejected { message, .. } => {
                        AppError::conflict(format!("Prefect refused to cancel: {message}"))
                    }
                    other => other.into(),
                }
            })?;
            // REJECT can come with the run already CANCELLED (it had not started); ABORT
            // with a finished state: either way the returned state is the truth.
            if let Some(state) = answer
                .state
                .as_ref()
                .and_then(|state| super::sync::observed_state(&flow_run_id, state))
            {
                apply_prefect_state(pool, run_id, &state).await?;
            }
            record::success(pool, caller, "run.cancel", &format!("run:{run_id}")).await?;
            if answer.status == "ABORT" {
                return Err(AppError::conflict("Prefect says the run has already finished"));
            }
        }
    }
    get_unchecked(pool, run_id).await
}

/// What a trigger would hand Prefect.
///
/// The deployment and the parameters (the pipeline's defaults with the caller's overrides; Flowdeck adds its run id, callback address and
/// credential, and request id when it submits).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Preview {
    /// The deployment the run goes to (`flow/deployment`).
    pub deployment: String,
    /// The parameters, as the flow will get them (without Flowdeck's own).
    pub parameters: serde_json::Value,
    /// Whether the parameters were checked against the deployment's schema (false when
    /// Prefect could not be asked; the flow run then checks them).
    pub schema_checked: bool,
}

/// Works out what a trigger of `pipeline_id` with `overrides` would send to Prefect, and
/// checks the parameters against the deployment's schema; writes nothing.
#[tracing::instrument(name = "runs.preview", skip_all, fields(pipeline.id = pipeline_id))]
pub async fn preview(
    pool: &PgPool,
    prefect: Option<&PrefectClient>,
    links: &PrefectLinks,
    caller: &Caller,
    pipeline_id: i64,
    overrides: serde_json::Map<String, serde_json::Value>,
) -> Result<Preview> {
    caller.may(Action::Trigger)?;
    caller.sees_pipeline(pool, pipeline_id).await?;
    let pipeline = db::template(pool, pipeline_id)
        .await?
        .ok_or_else(|| AppError::not_found("Pipeline"))?;
    let deployment = pipeline
        .deployment
        .or_else(|| links.default_deployment.clone())
        .ok_or_else(|| {
            AppError::conflict("the pipeline has no deployment and no default deployment is configured")
        })?;
    if let Some(name) = overrides.keys().find(|k| k.starts_with(params::CONTEXT_PREFIX)) {
        return Err(AppError::invalid(
            format!("parameters.{name}"),
            "is set by Flowdeck itself",
        ));
    }
    let parameters = with_defaults(&pipeline.default_parameters, overrides);
    let schema = parameter_schema(prefect, &deployment).await?;
    if let (Some(schema), Some(map)) = (&schema, parameters.as_object()) {
        params::check(schema, map)?;
    }
    Ok(Preview {
        deployment,
        parameters,
        schema_checked: schema.is_some(),
    })
}

/// The Run dialog's fields for a pipeline (operators and admins).
#[tracing::instrument(name = "runs.run_form", skip_all)]
pub async fn run_form(
    pool: &PgPool,
    prefect: Option<&PrefectClient>,
    links: &PrefectLinks,
    caller: &Caller,
    pipeline_id: i64,
) -> Result<Vec<ParamField>> {
    caller.may(Action::Trigger)?;
    caller.sees_pipeline(pool, pipeline_id).await?;
    let pipeline = db::template(pool, pipeline_id)
        .await?
        .ok_or_else(|| AppError::not_found("Pipeline"))?;
    let defaults = pipeline
        .default_parameters
        .as_object()
        .cloned()
        .unwrap_or_default();
    let schema = match pipeline.deployment.or_else(|| links.default_deployment.clone()) {
        // A deployment Prefect does not have: the form shows the pipeline's defaults.
        Some(reference) => parameter_schema(prefect, &reference).await.unwrap_or(None),
        None => None,
    };
    Ok(params::fields(schema.as_ref(), &defaults))
}

/// The parameter schema of `deployment`: `None` without Prefect, or when Prefect cannot
/// be asked now (logged); a conflict when Prefect has no such deployment.
async fn parameter_schema(
    prefect: Option<&PrefectClient>,
    deployment: &str,
) -> Result<Option<serde_json::Value>> {
    let Some(prefect) = prefect else { return Ok(None) };
    match prefect.deployment(deployment).await {
        Ok(found) => Ok(found.parameter_openapi_schema),
        Err(PrefectError::Rejected { status: 404, .. }) => {
            tracing::warn!(%deployment, "Prefect has no such deployment");
            Err(AppError::conflict(format!(
                "Prefect has no deployment {deployment}"
            )))
        }
        Err(error) => {
            tracing::warn!(%error, %deployment, "cannot read the deployment's parameter schema");
            Ok(None)
        }
    }
}

/// A run with its stages, for any signed-in caller.
#[tracing::instrument(name = "runs.get", skip_all)]
pub async fn get(pool: &PgPool, caller: &Caller, run_id: i64) -> Result<Run> {
    caller.require(Role::Viewer)?;
    caller.sees_run(pool, run_id).await?;
    get_unchecked(pool, run_id).await
}

/// A run with its stages and its link to Prefect's UI, as the JSON `GET /api/runs/{id}`
/// answers; kept until the database may have changed, like the listings.
#[tracing::instrument(name = "runs.get_json", skip_all)]
pub async fn get_json(
    pool: &PgPool,
    answers: &Answers,
    links: &PrefectLinks,
    caller: &Caller,
    run_id: i64,
) -> Result<Arc<Kept>> {
    caller.require(Role::Viewer)?;
    // The answer is the same for every caller who may see it.
    caller.sees_run(pool, run_id).await?;
    answers
        .answer_in(Scope::Run(run_id), cache::key("runs.get", &run_id), || async {
            cache::to_json(&get_unchecked(pool, run_id).await?.linked(links))
        })
        .await
}

async fn get_unchecked(pool: &PgPool, run_id: i64) -> Result<Run> {
    let mut run = db::run_by_id(pool, run_id)
        .await?
        .ok_or_else(|| AppError::not_found("Run"))?;
    run.stages = db::stages_for_runs(pool, &[run_id]).await?;
    Ok(run.explained())
}

/// The latest runs of a pipeline, newest first.
#[tracing::instrument(name = "runs.recent_for_pipeline", skip_all)]
pub async fn recent_for_pipeline(pool: &PgPool, caller: &Caller, pipeline_id: i64) -> Result<Vec<Run>> {
    caller.require(Role::Viewer)?;
    caller.sees_pipeline(pool, pipeline_id).await?;
    let mut runs = db::runs_for_pipeline(pool, pipeline_id, RECENT_RUNS).await?;
    // Their stages, so each failure names its stage.
    let ids: Vec<i64> = runs.iter().map(|r| r.id).collect();
    let mut stages = db::stages_for_runs(pool, &ids).await?;
    for run in &mut runs {
        let (own, rest) = stages.drain(..).partition(|s| s.run_id == Some(run.id));
        stages = rest;
        run.stages = own;
    }
    Ok(runs.into_iter().map(Run::explained).collect())
}

fn validate_update(update: &StatusUpdate) -> Result<RunStatus> {
    let status = RunStatus::parse(&update.status, "status")?;
    if update.pipeline_id.is_none() && update.run_id.is_none() {
        return Err(AppError::invalid(
            "pipeline_id",
            "pipeline_id or run_id is required",
        ));
    }
    if update.records_processed.is_some_and(|n| n < 0) {
        return Err(AppError::invalid("records_processed", "must not be negative"));
    }
    if let Some(name) = &update.stage_name {
        rules::check_text("stage_name", name, MAX_NAME)?;
    }
    if update
        .error_message
        .as_ref()
        .is_some_and(|m| m.chars().count() > MAX_MESSAGE)
    {
        return Err(AppError::invalid(
            "error_message",
            format!("must be at most {} characters", MAX_MESSAGE),
        ));
    }
    if let Some(id) = &update.event_id
        && (id.is_empty() || id.chars().count() > MAX_NAME)
    {
        return Err(AppError::invalid(
            "event_id",
            format!("must be 1 to {} characters", MAX_NAME),
        ));
    }
    if update
        .event_id
        .as_ref()
        .is_some_and(|id| id.starts_with(super::OWN_EVENT_PREFIX))
    {
        return Err(AppError::invalid(
            "event_id",
            format!(
                "must not start with {:?}: Flowdeck's own events use it",
                super::OWN_EVENT_PREFIX
            ),
        ));
    }
    Ok(status)
}

/// Applies a status callback to a run or one of its stages, forward only, once its
/// transaction commits (see [`super::reports`]: reports arriving together share one).
///
/// A stage's `running` starts the run, its `failed` fails the run, and the last stage's
/// `completed` completes it, as the seed did. A report that would move a status backwards
/// is recorded in the run's history but changes nothing (`applied: false`).
#[tracing::instrument(name = "runs.status_update", skip_all, fields(run.id = update.run_id, stage = update.stage_name.as_deref()))]
pub async fn apply_status_update(
    pool: &PgPool,
    writer: &ReportWriter,
    caller: &Caller,
    update: StatusUpdate,
) -> Result<StatusUpdateAck> {
    if caller.run_scope.is_none() {
        caller.may(Action::Report)?;
    }
    let status = validate_update(&update)?;
    if let Some(run_id) = update.run_id {
        caller.may_report_on(run_id)?;
        caller.sees_run(pool, run_id).await?;
    } else if let Some(pipeline_id) = update.pipeline_id {
        caller.sees_pipeline(pool, pipeline_id).await?;
    }
    writer
        .submit(Report {
            caller: caller.clone(),
            update,
            status,
        })
        .await
}

/// A flow run state Prefect reported, by polling or on its event stream.
#[derive(Debug, Clone, PartialEq)]
pub struct PrefectState {
    /// Flowdeck's status for the state type.
    pub status: RunStatus,
    /// Prefect's state name (`Late`, `Crashed`, ...).
    pub name: String,
    /// Identifies this state of this flow run, however it was learned.
    pub key: String,
    /// Why the run is in this state.
    pub message: Option<String>,
    /// When Prefect entered the state.
    pub at: Option<DateTime<Utc>>,
}

/// Moves a run to the state Prefect reports, forward only; each Prefect state (by key) is
/// recorded once in the run's history.
#[tracing::instrument(name = "runs.prefect_state", skip_all, fields(run.id = run_id, prefect.state = %state.name))]
pub async fn apply_prefect_state(pool: &PgPool, run_id: i64, state: &PrefectState) -> Result<()> {
    let mut tx = pool.begin().await?;
    let mut locked = reports::db::lock_reported_runs(&mut *tx, &[run_id], true).await?;
    let run = locked.first_mut().ok_or_else(|| AppError::not_found("Run"))?;
    let before = run.status;
    let now = Utc::now();
    let at = state.at.map_or(now, |t| t.min(now));
    let event_id = format!("{}prefect-state-{}", super::OWN_EVENT_PREFIX, state.key);
    let fresh = db::insert_run_event(
        &mut *tx,
        &db::RunEvent {
            run_id,
            event_id: Some(&event_id),
            kind: "prefect_state",
            stage_name: None,
            status: Some(state.status),
            message: Some(&state.name),
            request_id: None,
            occurred_at: at,
        },
    )
    .await?;
    if !fresh {
        return Ok(());
    }
    let newer = run.reported_at.is_none_or(|last| at >= last);
    // A flow's exception may quote its parameters, the callback credential among them.
    let message = state.message.as_deref().map(crate::auth::secrets::mask);
    sync::db::set_prefect_state(&mut *tx, run_id, &state.name, message.as_deref(), newer).await?;
    let moved = run.status.on_report(state.status, newer) == Change::Move;
    if moved {
        let error = message
            .as_deref()
            .filter(|_| matches!(state.status, RunStatus::Failed | RunStatus::Crashed));
        run.move_to(state.status, error, None, at);
        reports::db::write_reported_runs(&mut *tx, &[run]).await?;
    }
    tx.commit().await?;
    if moved {
        metrics().transition(before.as_str(), state.status.as_str());
        tracing::info!(run.id = run_id, run.status = %state.status, prefect.state = %state.name, "run state from Prefect");
    }
    Ok(())
}

/// Moves a run this transaction has locked to `status`, by the rule status reports follow
/// ([`ReportedRun::move_to`](super::reports::db::ReportedRun::move_to)).
async fn move_locked_run(
    tx: &mut sqlx::PgConnection,
    run_id: i64,
    status: RunStatus,
    error: Option<&str>,
    at: DateTime<Utc>,
) -> Result<()> {
    let mut runs = reports::db::lock_reported_runs(&mut *tx, &[run_id], true).await?;
    let run = runs.first_mut().ok_or_else(|| AppError::not_found("Run"))?;
    run.move_to(status, error, None, at);
    reports::db::write_reported_runs(&mut *tx, &[run]).await?;
    Ok(())
}

/// The runs that match, without their stages.
#[tracing::instrument(name = "runs.filter", skip_all)]
pub async fn filter(
    pool: &PgPool,
    answers: &Answers,
    caller: &Caller,
    filter: &RunFilter,
) -> Result<Arc<Kept>> {
    caller.require(Role::Viewer)?;
    let page = paging(filter.limit, filter.offset)?;
    answers
        .answer(
            cache::key("runs.filter", &(filter, caller.scope.listing())),
            || async { cache::to_json(&db::matching(pool, filter, &caller.scope, page).await?) },
        )
        .await
}

/// How many runs match.
#[tracing::instrument(name = "runs.count", skip_all)]
pub async fn count(pool: &PgPool, caller: &Caller, filter: &RunFilter) -> Result<i64> {
    caller.require(Role::Viewer)?;
    // Paging does not change a count, but a bad one is still refused.
    paging(filter.limit, filter.offset)?;
    Ok(db::count_matching(pool, filter, &caller.scope).await?)
}
