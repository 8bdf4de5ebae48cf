//! Runs: one execution of a pipeline, its stages, triggers and status callbacks.

use chrono::{DateTime, Utc};
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;
use crate::status::RunStatus;

pub mod charts;
pub mod filter;
pub mod log_view;
pub mod logs;
pub mod params;

/// The prefix of the run event ids Flowdeck makes itself (Prefect states, submissions);
/// reports may not use it, so no caller can take an id before Flowdeck does.
pub const OWN_EVENT_PREFIX: &str = "flowdeck:";

pub mod page;

#[cfg(feature = "ssr")]
pub mod db;
#[cfg(feature = "ssr")]
pub mod dispatch;
#[cfg(feature = "ssr")]
pub mod groups;
#[cfg(feature = "ssr")]
pub mod http;
#[cfg(feature = "ssr")]
pub mod idempotency;
#[cfg(feature = "ssr")]
pub mod reports;
#[cfg(feature = "ssr")]
pub mod service;
#[cfg(feature = "ssr")]
pub mod sync;
#[cfg(feature = "ssr")]
pub mod triggers;

/// One stage of one run (or of a pipeline that has not run yet), in the seed's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct Stage {
    /// Stage run id; `None` for a pipeline that has never run.
    pub id: Option<i64>,
    /// The pipeline the stage belongs to.
    pub pipeline_id: i64,
    /// The run the stage belongs to, if any.
    pub run_id: Option<i64>,
    /// Position in the pipeline, from 0.
    pub position: i32,
    /// Stage name, e.g. `Data Ingestion`.
    pub name: String,
    /// Seed field: a short description.
    pub description: Option<String>,
    /// Current status.
    pub status: RunStatus,
    /// When the stage reported `running`.
    pub started_at: Option<DateTime<Utc>>,
    /// When the stage finished.
    pub completed_at: Option<DateTime<Utc>>,
    /// Seconds between start and finish.
    pub execution_time_seconds: Option<f64>,
    /// Records the stage processed, as reported.
    pub records_processed: Option<i64>,
    /// The error a failed stage reported.
    pub error_message: Option<String>,
    /// For a `skipped` stage, carried over by a restart: the run whose output it reuses.
    #[serde(default)]
    pub output_run_id: Option<i64>,
}

impl Stage {
    /// A stage that has not run: how a fresh pipeline shows its definition.
    pub fn planned(pipeline_id: i64, position: i32, name: &str) -> Self {
        Stage {
            id: None,
            pipeline_id,
            run_id: None,
            position,
            name: name.to_owned(),
            description: Some(format!("Pipeline stage: {name}")),
            status: RunStatus::Pending,
            started_at: None,
            completed_at: None,
            execution_time_seconds: None,
            records_processed: None,
            error_message: None,
            output_run_id: None,
        }
    }
}

/// One execution of a pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct Run {
    /// Run id.
    pub id: i64,
    /// The pipeline run.
    pub pipeline_id: i64,
    /// The pipeline's name, for display.
    pub pipeline_name: String,
    /// Current status.
    pub status: RunStatus,
    /// Parameters actually used.
    pub parameters: serde_json::Value,
    /// Who triggered it (`api-key:ci`).
    pub actor: String,
    /// Through what (`api`, `ui`, `seed-api`).
    pub source: String,
    /// Request id of the trigger.
    pub request_id: Option<String>,
    /// `Idempotency-Key` of the trigger, if any.
    pub idempotency_key: Option<String>,
    /// The run this one retries, if any.
    pub retry_of_run_id: Option<i64>,
    /// The stage a restart began at (the stages before it are `skipped`); `None` for a run
    /// of every stage.
    #[serde(default)]
    pub from_stage: Option<String>,
    /// Prefect's flow run id, once submitted.
    pub prefect_flow_run_id: Option<String>,
    /// Prefect's state name, as last seen.
    pub prefect_state: Option<String>,
    /// The message of that state, if Prefect gave one.
    #[serde(default)]
    pub prefect_message: Option<String>,
    /// Records processed, as reported.
    pub records_processed: i64,
    /// Why the run failed, if it did.
    pub error_message: Option<String>,
    /// When the trigger was accepted.
    pub created_at: DateTime<Utc>,
    /// When it was submitted to Prefect.
    pub submitted_at: Option<DateTime<Utc>>,
    /// When it started running.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub ended_at: Option<DateTime<Utc>>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Since when a running run has reported nothing (no callback, no Prefect state).
    pub stuck_since: Option<DateTime<Utc>>,
    /// The flow run in Prefect's UI, once submitted (single-run reads only).
    #[serde(default)]
    pub prefect_url: Option<String>,
    /// Its stages, in order (empty in run listings).
    pub stages: Vec<Stage>,
    /// Why it failed, when it failed or crashed.
    #[serde(default)]
    pub failure: Option<RunFailure>,
    /// The last error-level lines of a failed run's log, as kept (shown in `failure`).
    #[serde(skip)]
    pub failure_logs: Vec<logs::RunLog>,
}

/// Why a failed or crashed run ended so.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct RunFailure {
    /// The stage that failed, if one reported failing (single-run reads only: listings do
    /// not read stages).
    pub stage: Option<String>,
    /// The error that stage reported.
    pub stage_error: Option<String>,
    /// The message of Prefect's final state (`Flow run encountered an exception: …`).
    pub prefect_message: Option<String>,
    /// The reason in one line, for badges and lists.
    pub reason: String,
    /// The last error-level lines of the flow's log (at most 5, credentials masked), once
    /// Prefect has received them all; empty until then.
    #[serde(default)]
    pub log_lines: Vec<logs::RunLog>,
}

/// The stage that failed among `stages`, if one did.
pub fn failed_stage(stages: &[Stage]) -> Option<&Stage> {
    stages
        .iter()
        .find(|s| matches!(s.status, RunStatus::Failed | RunStatus::Crashed))
}

/// A failure's reason in one line: the failed stage with what it reported, else `error`.
pub fn failure_reason(stages: &[Stage], error: Option<&str>) -> Option<String> {
    match failed_stage(stages) {
        Some(stage) => Some(match &stage.error_message {
            Some(reported) => format!("{}: {reported}", stage.name),
            None => format!("{} {}", stage.name, stage.status.as_str()),
        }),
        None => error.map(str::to_owned),
    }
}

impl Run {
    /// The stage a retry of this finished run could start at: the one that failed, unless
    /// it was the first (then there is nothing to reuse).
    pub fn restart_point(&self) -> Option<String> {
        failed_stage(&self.stages)
            .filter(|s| s.position > 0)
            .map(|s| s.name.clone())
    }

    /// The run's status in words, as a screen reader announces its changes.
    pub fn spoken_status(&self) -> String {
        match &self.failure {
            Some(failure) => format!("Run #{} {}: {}", self.id, self.status, failure.reason),
            None => format!("Run #{} is {}", self.id, self.status),
        }
    }

    /// The run with [`Run::failure`] worked out from its status, stages and messages.
    pub fn explained(mut self) -> Self {
        // A run read back from JSON has its lines in `failure` only.
        let log_lines = match self.failure.take() {
            Some(failure) if self.failure_logs.is_empty() => failure.log_lines,
            _ => self.failure_logs.clone(),
        };
        self.failure = matches!(self.status, RunStatus::Failed | RunStatus::Crashed).then(|| {
            let failed = failed_stage(&self.stages);
            RunFailure {
                stage: failed.map(|s| s.name.clone()),
                stage_error: failed.and_then(|s| s.error_message.clone()),
                prefect_message: self.prefect_message.clone(),
                reason: failure_reason(&self.stages, self.error_message.as_deref())
                    .or_else(|| self.prefect_message.clone())
                    .unwrap_or_else(|| format!("{} without a reason given", self.status.as_str())),
                log_lines,
            }
        });
        self
    }
}

#[cfg(feature = "ssr")]
impl Run {
    /// The run with its link to Prefect's UI filled in.
    pub fn linked(mut self, links: &crate::prefect::PrefectLinks) -> Self {
        self.prefect_url = self
            .prefect_flow_run_id
            .as_deref()
            .and_then(|id| links.flow_run_url(id));
        self
    }
}

/// Body of a trigger: optional parameter overrides.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"parameters": {"rows": 5000}})))]
#[serde(deny_unknown_fields)]
pub struct TriggerRequest {
    /// Overrides merged over the pipeline's default parameters.
    #[serde(default)]
    #[cfg_attr(feature = "ssr", schema(value_type = Option<Object>))]
    pub parameters: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Body of a retry: where to start and what to change; none runs everything again with the
/// same parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"from_stage": "Spark Processing", "parameters": {"fail_stage": null}})))]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    /// Restart from this stage: the stages before it are carried over as `skipped`, reusing
    /// the outputs the earlier runs left, and the flow gets the `flowdeck_resume` parameter
    /// (see the README). Each of those stages must have completed (or been carried over) in
    /// the run retried.
    #[serde(default)]
    pub from_stage: Option<String>,
    /// Overrides merged over the parameters the run retried used.
    #[serde(default)]
    #[cfg_attr(feature = "ssr", schema(value_type = Option<Object>))]
    pub parameters: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A status callback, in the seed's shape (`POST /api/status-update/`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"pipeline_id": 1, "stage_name": "Data Ingestion", "status": "completed", "records_processed": 1000})))]
#[serde(deny_unknown_fields)]
pub struct StatusUpdate {
    /// The pipeline whose current (latest) run is meant.
    #[serde(default)]
    pub pipeline_id: Option<i64>,
    /// The run meant; takes precedence over `pipeline_id`.
    #[serde(default)]
    pub run_id: Option<i64>,
    /// The stage reporting; without it the update is about the whole run.
    #[serde(default)]
    pub stage_name: Option<String>,
    /// The new status.
    pub status: String,
    /// The error, for `failed`.
    #[serde(default)]
    pub error_message: Option<String>,
    /// Records processed so far.
    #[serde(default)]
    pub records_processed: Option<i64>,
    /// Sender's id for this report, unique per run; a repeat with the same id changes
    /// nothing. Ids starting with `flowdeck:` are Flowdeck's own and refused.
    #[serde(default)]
    pub event_id: Option<String>,
    /// When the reported change happened (RFC 3339), by the sender's clock. Reports that
    /// arrive out of order are applied in this order; a time in the future counts as now.
    #[serde(default)]
    pub timestamp: Option<DateTime<Utc>>,
}

/// The answer to a status callback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct StatusUpdateAck {
    /// Always true: the seed's clients read it.
    pub success: bool,
    /// The run the update was applied to.
    pub run_id: i64,
    /// That run's pipeline.
    pub pipeline_id: i64,
    /// False when the report was stale (it would have moved a status backwards).
    pub applied: bool,
    /// True when the same `event_id` had already been received.
    pub duplicate: bool,
    /// The run's status after the update.
    pub run_status: RunStatus,
}

/// Triggers a run of a pipeline from the UI; goes to the new run's page. The Run dialog
/// sends its inputs as `values[name]` with `kinds[name]` (see [`params::parse`]); the
/// plain Run button sends neither and runs with the defaults. Each rendered form carries
/// its own `idempotency_key` ([`form_key`]), so a form sent twice (a double click, a
/// resubmission) makes one run.
#[server(prefix = "/sfn", endpoint = "trigger_run")]
pub async fn trigger_run(
    pipeline_id: i64,
    values: Option<std::collections::BTreeMap<String, String>>,
    kinds: Option<std::collections::BTreeMap<String, String>>,
    idempotency_key: Option<String>,
) -> Result<i64, AppError> {
    let db = expect_context::<sqlx::PgPool>();
    let limits = expect_context::<std::sync::Arc<crate::auth::limits::Limits>>();
    let caller = crate::caller::Caller::current()?;
    let values: Vec<(String, String)> = values.unwrap_or_default().into_iter().collect();
    let kinds: Vec<(String, String)> = kinds.unwrap_or_default().into_iter().collect();
    let overrides = params::parse(&values, &kinds)?;
    let request = TriggerRequest {
        parameters: (!overrides.is_empty()).then_some(overrides),
    };
    let trigger = service::Trigger {
        pipeline_id,
        request,
        source: "ui",
        idempotency_key: idempotency_key.as_deref().filter(|k| !k.is_empty()),
        repeat_waits: true,
    };
    let triggers = expect_context::<std::sync::Arc<triggers::TriggerWriter>>();
    let run = service::trigger(&db, &limits, &triggers, &caller, trigger).await?;
    leptos_axum::redirect(&format!("/runs/{}", run.id));
    Ok(run.id)
}

/// A fresh idempotency key for one rendering of a Run form (rendered on the server only).
pub fn form_key() -> String {
    #[cfg(feature = "ssr")]
    {
        format!("ui-form-{}", crate::auth::secrets::random_base62(24))
    }
    #[cfg(not(feature = "ssr"))]
    String::new()
}

/// The Run dialog's fields for a pipeline: its deployment's parameter schema, pre-filled
/// with the pipeline's defaults (the defaults alone when Prefect cannot be asked).
#[server(prefix = "/sfn", endpoint = "run_form")]
pub async fn run_form(pipeline_id: i64) -> Result<Vec<params::ParamField>, AppError> {
    let db = expect_context::<sqlx::PgPool>();
    let prefect = expect_context::<Option<std::sync::Arc<crate::prefect::PrefectClient>>>();
    let links = expect_context::<crate::prefect::PrefectLinks>();
    let caller = crate::caller::Caller::current()?;
    service::run_form(&db, prefect.as_deref(), &links, &caller, pipeline_id).await
}

/// Cancels a run from the UI (the run page then shows it afresh).
#[server(prefix = "/sfn", endpoint = "cancel_run")]
pub async fn cancel_run(id: i64) -> Result<(), AppError> {
    let db = expect_context::<sqlx::PgPool>();
    let prefect = expect_context::<Option<std::sync::Arc<crate::prefect::PrefectClient>>>();
    let caller = crate::caller::Caller::current()?;
    service::cancel(&db, prefect.as_deref(), &caller, id).await?;
    Ok(())
}

/// Retries a finished run from the UI, from its first stage or `from_stage`; goes to the
/// new run's page.
#[server(prefix = "/sfn", endpoint = "retry_run")]
pub async fn retry_run(id: i64, from_stage: Option<String>) -> Result<i64, AppError> {
    let db = expect_context::<sqlx::PgPool>();
    let limits = expect_context::<std::sync::Arc<crate::auth::limits::Limits>>();
    let caller = crate::caller::Caller::current()?;
    let retry = service::Retry {
        run_id: id,
        request: RetryRequest {
            from_stage: from_stage.filter(|s| !s.is_empty()),
            parameters: None,
        },
        idempotency_key: None,
    };
    let run = service::retry(&db, &limits, &caller, retry).await?;
    leptos_axum::redirect(&format!("/runs/{}", run.id));
    Ok(run.id)
}

/// A run with its stages.
#[server(prefix = "/sfn", endpoint = "get_run")]
pub async fn get_run(id: i64) -> Result<Run, AppError> {
    let db = expect_context::<sqlx::PgPool>();
    let links = expect_context::<crate::prefect::PrefectLinks>();
    let run = service::get(&db, &crate::caller::Caller::current()?, id).await?;
    Ok(run.linked(&links))
}

/// A run page's parts as the server renders them, for the page's island to put in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRegions {
    /// The crumbs and heading (`page::HEAD_ID`).
    pub head: String,
    /// Cancel or Retry, for operators (`page::ACTIONS_ID`).
    pub actions: String,
    /// The timeline, stages, details and parameters (`page::BODY_ID`).
    pub body: String,
    /// The run's status in words, announced to screen readers when it changes.
    pub status: String,
}

/// A run page's parts, rendered afresh.
#[server(prefix = "/sfn", endpoint = "run_parts")]
pub async fn run_parts(id: i64) -> Result<RunRegions, AppError> {
    let run = get_run(id).await?;
    let may_operate = crate::caller::Caller::current()?
        .require(crate::caller::Role::Operator)
        .is_ok();
    let (run_id, finished, restart_from) = (run.id, run.status.is_terminal(), run.restart_point());
    Ok(RunRegions {
        status: run.spoken_status(),
        head: view! { <page::RunHead run=run.clone() /> }.to_html(),
        actions: view! { <page::RunActions run_id finished may_operate restart_from /> }.to_html(),
        body: view! { <page::RunBody run /> }.to_html(),
    })
}
