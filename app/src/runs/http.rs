//! REST routes for runs: triggers (canonical and seed), run reads and status callbacks.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::Sse;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json};
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::filter::RunFilter;
use super::logs::{self, LogQuery, RunLogs, follow};
use super::reports::ReportWriter;
use super::triggers::TriggerWriter;
use super::{RetryRequest, Run, StatusUpdate, StatusUpdateAck, TriggerRequest, service};
use crate::api::cache::{Answers, Touched};
use crate::api::encoding::KeptJson;
use crate::api::responses::Errors;
use crate::api::rules::{self, MAX_NAME, Rule, text};
use crate::api::{ApiId, ApiJson, ApiQuery, OptionalJson};
use crate::auth::Identity;
use crate::auth::credentials::Presented;
use crate::auth::limits::Limits;
use crate::caller::Caller;
use crate::error::{AppError, Result};
use crate::events::hub::Hub;
use crate::prefect::{PrefectClient, PrefectLinks};
use crate::status::RunStatus;

/// The `Idempotency-Key` header, if the caller sent one.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>> {
    headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str()
                .map_err(|_| AppError::invalid("Idempotency-Key", "must be visible ASCII"))
        })
        .transpose()
}

/// Triggers a run of a pipeline.
#[utoipa::path(post, path = "/api/pipelines/{id}/runs", tag = "runs",
    description = "Role: operator. The run is recorded at once and submitted to Prefect after commit. With the same `Idempotency-Key` a repeat answers the first run and creates nothing.",
    params(("id" = i64, Path, description = "Pipeline id", minimum = 1),
           ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the same key and body answer the first run; another body is `422`; `409` while a request with the key is still being processed")),
    request_body(content = Option<TriggerRequest>, description = "Optional parameter overrides"),
    responses((status = 202, description = "Accepted", body = Run), Errors))]
async fn create_run(
    State(db): State<PgPool>,
    State(limits): State<Arc<Limits>>,
    State(triggers): State<Arc<TriggerWriter>>,
    caller: Caller,
    headers: HeaderMap,
    ApiId(pipeline_id): ApiId,
    OptionalJson(request): OptionalJson<TriggerRequest>,
) -> Result<(StatusCode, Extension<Touched>, Json<Run>)> {
    let run = trigger(
        &db,
        &limits,
        &triggers,
        &caller,
        &headers,
        pipeline_id,
        request,
        "api",
    )
    .await?;
    let touched = Touched::run(run.pipeline_id, run.id);
    Ok((StatusCode::ACCEPTED, Extension(touched), Json(run)))
}

/// A REST trigger: the `Idempotency-Key` header read, then the one service path.
#[allow(clippy::too_many_arguments)]
async fn trigger(
    db: &PgPool,
    limits: &Limits,
    triggers: &TriggerWriter,
    caller: &Caller,
    headers: &HeaderMap,
    pipeline_id: i64,
    request: TriggerRequest,
    source: &str,
) -> Result<Run> {
    let trigger = service::Trigger {
        pipeline_id,
        request,
        source,
        idempotency_key: idempotency_key(headers)?,
        repeat_waits: false,
    };
    service::trigger(db, limits, triggers, caller, trigger).await
}

/// The seed's trigger answer, with the accepted run added.
#[derive(Serialize, utoipa::ToSchema)]
struct SeedTriggerAck {
    success: bool,
    message: String,
    run_id: i64,
    run: Run,
}

/// Triggers a run, answering in the seed's shape.
#[utoipa::path(post, path = "/api/trigger/{id}", tag = "runs",
    description = "Role: operator. The seed's trigger; the same as `POST /api/pipelines/{id}/runs`.",
    params(("id" = i64, Path, description = "Pipeline id", minimum = 1),
           ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the same key and body answer the first run; another body is `422`; `409` while a request with the key is still being processed")),
    request_body(content = Option<TriggerRequest>, description = "Optional parameter overrides"),
    responses((status = 202, description = "Accepted", body = SeedTriggerAck), Errors))]
async fn trigger_pipeline(
    State(db): State<PgPool>,
    State(limits): State<Arc<Limits>>,
    State(triggers): State<Arc<TriggerWriter>>,
    caller: Caller,
    headers: HeaderMap,
    ApiId(pipeline_id): ApiId,
    OptionalJson(request): OptionalJson<TriggerRequest>,
) -> Result<(StatusCode, Extension<Touched>, Json<SeedTriggerAck>)> {
    let run = trigger(
        &db,
        &limits,
        &triggers,
        &caller,
        &headers,
        pipeline_id,
        request,
        "seed-api",
    )
    .await?;
    let touched = Extension(Touched::run(run.pipeline_id, run.id));
    let ack = SeedTriggerAck {
        success: true,
        message: format!("Pipeline {pipeline_id} triggered"),
        run_id: run.id,
        run,
    };
    Ok((StatusCode::ACCEPTED, touched, Json(ack)))
}

/// One run with its stages.
#[utoipa::path(get, path = "/api/runs/{id}", tag = "runs", description = "Role: viewer.",
    params(("id" = i64, Path, description = "Run id", minimum = 1)),
    responses((status = 200, description = "The run", body = Run), Errors))]
async fn get_run(
    State(db): State<PgPool>,
    State(answers): State<Arc<Answers>>,
    State(links): State<PrefectLinks>,
    caller: Caller,
    ApiId(id): ApiId,
) -> Result<KeptJson> {
    service::get_json(&db, &answers, &links, &caller, id)
        .await
        .map(KeptJson)
}

/// A page of a run's flow logs, read from Prefect; or, asked for `text/event-stream`, the
/// lines as they are written.
#[utoipa::path(get, path = "/api/runs/{id}/logs", tag = "runs",
    description = "Role: viewer. The flow run's Prefect logs (flow and task logs), oldest first, each with the stage that was running when it was written; credentials Flowdeck passed to the flow are masked. Empty before the run is submitted. With `Accept: text/event-stream`, follows the run live instead: `log` events (data: one line; `id`: its time in microseconds since 1970, resume with `Last-Event-ID`), first the newest 1,000 lines (`truncated` first when there are more), `heartbeat` while quiet, and `end` once the run and Prefect have finished; only `level` applies there.",
    params(("id" = i64, Path, description = "Run id", minimum = 1), LogQuery,
           ("Last-Event-ID" = Option<i64>, Header, minimum = 0, maximum = 253_402_300_799_999_999_i64, description = "Event stream only: resume after this line (the `id` of the last `log` event received: the line's time in microseconds since 1970)")),
    responses((status = 200, description = "The lines", content(
        (RunLogs = "application/json"),
        (crate::api::responses::StreamEvent = "text/event-stream"),
    )), Errors))]
#[allow(clippy::too_many_arguments)]
async fn run_logs(
    State(db): State<PgPool>,
    State(prefect): State<Option<Arc<PrefectClient>>>,
    State(hub): State<Arc<Hub>>,
    State(identity): State<Identity>,
    caller: Caller,
    presented: std::result::Result<Presented, AppError>,
    headers: HeaderMap,
    ApiId(id): ApiId,
    ApiQuery(query): ApiQuery<LogQuery>,
) -> Result<Response> {
    let wants_stream = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    // Checked for both answers: a resume point that is not one is refused either way.
    let last_event_id = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("not text"));
    let resume = follow::resume_from(last_event_id)?;
    if !wants_stream {
        let page = logs::page(&db, prefect.as_deref(), &caller, id, &query).await?;
        return Ok(Json(page).into_response());
    }
    let presented = presented?;
    let prefect = prefect.ok_or_else(|| AppError::Upstream {
        service: "prefect".into(),
    })?;
    let parts = follow::Parts {
        db,
        prefect,
        identity,
        hub,
    };
    let level = query.level.unwrap_or_default();
    let lines = follow::follow(parts, &caller, presented, id, level, resume).await?;
    Ok(Sse::new(lines).into_response())
}

/// A run's whole flow log as a text file.
#[utoipa::path(get, path = "/api/runs/{id}/logs/download", tag = "runs",
    description = "Role: viewer. Every line of the run's flow log (up to 50,000, every level) as text, one per line: time, level, stage, logger, message; credentials masked.",
    params(("id" = i64, Path, description = "Run id", minimum = 1)),
    responses((status = 200, description = "The log", content_type = "text/plain", body = String), Errors))]
async fn download_logs(
    State(db): State<PgPool>,
    State(prefect): State<Option<Arc<PrefectClient>>>,
    caller: Caller,
    ApiId(id): ApiId,
) -> Result<Response> {
    let text = logs::download(&db, prefect.as_deref(), &caller, id).await?;
    let headers = [
        (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
        (
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"run-{id}-logs.txt\""),
        ),
    ];
    Ok((headers, text).into_response())
}

/// A stage or run status report (the seed's callback).
#[utoipa::path(post, path = "/api/status-update/", tag = "runs",
    description = "Role: operator, or the run's own callback credential. Duplicates (same `event_id`) and stale reports change nothing.",
    request_body = StatusUpdate,
    responses((status = 200, description = "Recorded", body = StatusUpdateAck), Errors))]
async fn update_status(
    State(db): State<PgPool>,
    State(writer): State<Arc<ReportWriter>>,
    caller: Caller,
    ApiJson(update): ApiJson<StatusUpdate>,
) -> Result<(Extension<Touched>, Json<StatusUpdateAck>)> {
    let ack = service::apply_status_update(&db, &writer, &caller, update).await?;
    let touched = Extension(Touched::run(ack.pipeline_id, ack.run_id));
    Ok((touched, Json(ack)))
}

/// Cancels a run.
#[utoipa::path(post, path = "/api/runs/{id}/cancel", tag = "runs",
    description = "Role: operator. A pending run is cancelled at once; a submitted one is asked to cancel in Prefect.",
    params(("id" = i64, Path, description = "Run id", minimum = 1)),
    responses((status = 202, description = "Cancelling", body = Run), Errors))]
async fn cancel_run(
    State(db): State<PgPool>,
    State(prefect): State<Option<Arc<PrefectClient>>>,
    caller: Caller,
    ApiId(id): ApiId,
) -> Result<(StatusCode, Json<Run>)> {
    let run = service::cancel(&db, prefect.as_deref(), &caller, id).await?;
    Ok((StatusCode::ACCEPTED, Json(run)))
}

/// Runs a finished run again, from its first stage or a later one.
#[utoipa::path(post, path = "/api/runs/{id}/retry", tag = "runs",
    description = "Role: operator. A new run linked to this one, with its parameters and the body's overrides on top. With `from_stage`, the stages before it are carried over as `skipped` (each naming the run whose output it reuses) and the flow starts there, told by its `flowdeck_resume` parameter; `422` if the run has no such stage or a stage before it did not complete.",
    params(("id" = i64, Path, description = "Run id", minimum = 1),
           ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the same key and body answer the first run; another body is `422`; `409` while a request with the key is still being processed")),
    request_body(content = Option<RetryRequest>, description = "Where to start and what to change; none runs everything again"),
    responses((status = 202, description = "The new run", body = Run), Errors))]
async fn retry_run(
    State(db): State<PgPool>,
    State(limits): State<Arc<Limits>>,
    caller: Caller,
    headers: HeaderMap,
    ApiId(id): ApiId,
    OptionalJson(request): OptionalJson<RetryRequest>,
) -> Result<(StatusCode, Extension<Touched>, Json<Run>)> {
    let retry = service::Retry {
        run_id: id,
        request,
        idempotency_key: idempotency_key(&headers)?,
    };
    let run = service::retry(&db, &limits, &caller, retry).await?;
    let touched = Extension(Touched::run(run.pipeline_id, run.id));
    Ok((StatusCode::ACCEPTED, touched, Json(run)))
}

/// Runs matching a filter, on their own fields and their pipeline's.
#[utoipa::path(post, path = "/api/runs/filter", tag = "runs", description = "Role: viewer. Runs without their stages (read one run for them).",
    request_body(content = Option<RunFilter>, description = "Criteria, sort and paging; none lists the newest 50"),
    responses((status = 200, description = "The runs", body = Vec<Run>), Errors))]
async fn filter_runs(
    State(db): State<PgPool>,
    State(answers): State<Arc<Answers>>,
    caller: Caller,
    OptionalJson(filter): OptionalJson<RunFilter>,
) -> Result<KeptJson> {
    service::filter(&db, &answers, &caller, &filter)
        .await
        .map(KeptJson)
}

/// How many runs match a filter.
#[utoipa::path(post, path = "/api/runs/count", tag = "runs", description = "Role: viewer. Answers a bare integer.",
    request_body(content = Option<RunFilter>, description = "Criteria (sort and paging are ignored)"),
    responses((status = 200, description = "The count", body = i64, content_type = "application/json", example = json!(120)), Errors))]
async fn count_runs(
    State(db): State<PgPool>,
    caller: Caller,
    OptionalJson(filter): OptionalJson<RunFilter>,
) -> Result<Json<i64>> {
    service::count(&db, &caller, &filter).await.map(Json)
}

/// Run routes; the status callback is also served without the seed's trailing slash.
pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    PgPool: axum::extract::FromRef<S>,
    Arc<Answers>: axum::extract::FromRef<S>,
    Arc<Limits>: axum::extract::FromRef<S>,
    Arc<ReportWriter>: axum::extract::FromRef<S>,
    Arc<TriggerWriter>: axum::extract::FromRef<S>,
    Option<Arc<PrefectClient>>: axum::extract::FromRef<S>,
    PrefectLinks: axum::extract::FromRef<S>,
    Arc<Hub>: axum::extract::FromRef<S>,
    Identity: axum::extract::FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(create_run))
        .routes(routes!(trigger_pipeline))
        .routes(routes!(get_run))
        .routes(routes!(run_logs))
        .routes(routes!(download_logs))
        .routes(routes!(cancel_run))
        .routes(routes!(retry_run))
        .routes(routes!(update_status))
        .routes(routes!(filter_runs))
        .routes(routes!(count_runs))
        .route("/api/status-update", post(update_status))
}

/// What the OpenAPI document says triggers and status reports take.
pub fn rules() -> Vec<Rule> {
    let mut rules = vec![
        Rule::Property("StatusUpdate", "stage_name", text(MAX_NAME)),
        Rule::Property(
            "StatusUpdate",
            "status",
            json!({"enum": RunStatus::ALL.map(RunStatus::as_str)}),
        ),
        Rule::Property(
            "StatusUpdate",
            "error_message",
            json!({"maxLength": service::MAX_MESSAGE}),
        ),
        Rule::Property("StatusUpdate", "records_processed", json!({"minimum": 0})),
        Rule::Property(
            "StatusUpdate",
            "event_id",
            // `not` a string with Flowdeck's prefix: `null` (no id) stays valid.
            json!({"minLength": 1, "maxLength": MAX_NAME, "not": {"type": "string", "pattern": "^flowdeck:"}}),
        ),
        Rule::Header("Idempotency-Key", service::IDEMPOTENCY_KEY),
        Rule::FreeForm("TriggerRequest", "parameters"),
        Rule::FreeForm("RetryRequest", "parameters"),
        Rule::Property("RetryRequest", "from_stage", text(MAX_NAME)),
        // A status report names a run, or a pipeline whose latest run is meant: one of the
        // two is present and not null.
        Rule::Schema(
            "StatusUpdate",
            "anyOf",
            json!([
                {"required": ["run_id"], "properties": {"run_id": {"type": "integer"}}},
                {"required": ["pipeline_id"], "properties": {"pipeline_id": {"type": "integer"}}},
            ]),
        ),
    ];
    rules.extend(rules::paging("RunFilter"));
    rules
}
