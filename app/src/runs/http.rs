//! REST routes for runs: triggers (canonical and seed), run reads and status callbacks.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use sqlx::PgPool;
use std::sync::Arc;

use super::{Run, StatusUpdate, StatusUpdateAck, TriggerRequest, service};
use crate::api::{ApiId, ApiJson, OptionalJson};
use crate::auth::Principal;
use crate::auth::limits::Limits;
use crate::auth::middleware::RequestMeta;
use crate::error::{AppError, Result};
use crate::state::AppState;

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

async fn create_run(
    State(db): State<PgPool>,
    State(limits): State<Arc<Limits>>,
    principal: Principal,
    meta: RequestMeta,
    headers: HeaderMap,
    ApiId(pipeline_id): ApiId,
    OptionalJson(request): OptionalJson<TriggerRequest>,
) -> Result<(StatusCode, Json<Run>)> {
    let key = idempotency_key(&headers)?;
    let run = service::trigger(&db, &limits, &principal, &meta, pipeline_id, request, "api", key).await?;
    Ok((StatusCode::ACCEPTED, Json(run)))
}

/// The seed's trigger answer, with the accepted run added.
#[derive(Serialize)]
struct SeedTriggerAck {
    success: bool,
    message: String,
    run_id: i64,
    run: Run,
}

async fn trigger_pipeline(
    State(db): State<PgPool>,
    State(limits): State<Arc<Limits>>,
    principal: Principal,
    meta: RequestMeta,
    headers: HeaderMap,
    ApiId(pipeline_id): ApiId,
    OptionalJson(request): OptionalJson<TriggerRequest>,
) -> Result<(StatusCode, Json<SeedTriggerAck>)> {
    let key = idempotency_key(&headers)?;
    let run = service::trigger(
        &db,
        &limits,
        &principal,
        &meta,
        pipeline_id,
        request,
        "seed-api",
        key,
    )
    .await?;
    let ack = SeedTriggerAck {
        success: true,
        message: format!("Pipeline {pipeline_id} triggered"),
        run_id: run.id,
        run,
    };
    Ok((StatusCode::ACCEPTED, Json(ack)))
}

async fn get_run(State(state): State<AppState>, principal: Principal, ApiId(id): ApiId) -> Result<Json<Run>> {
    let run = service::get(&state.db, &principal, id).await?;
    Ok(Json(run.linked(&state)))
}

async fn update_status(
    State(db): State<PgPool>,
    principal: Principal,
    meta: RequestMeta,
    ApiJson(update): ApiJson<StatusUpdate>,
) -> Result<Json<StatusUpdateAck>> {
    service::apply_status_update(&db, &principal, &meta, update)
        .await
        .map(Json)
}

async fn cancel_run(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    ApiId(id): ApiId,
) -> Result<(StatusCode, Json<Run>)> {
    let run = service::cancel(&state.db, state.prefect.as_deref(), &principal, &meta, id).await?;
    Ok((StatusCode::ACCEPTED, Json(run)))
}

async fn retry_run(
    State(db): State<PgPool>,
    State(limits): State<Arc<Limits>>,
    principal: Principal,
    meta: RequestMeta,
    ApiId(id): ApiId,
) -> Result<(StatusCode, Json<Run>)> {
    let run = service::retry(&db, &limits, &principal, &meta, id).await?;
    Ok((StatusCode::ACCEPTED, Json(run)))
}

/// Run routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/pipelines/{id}/runs", post(create_run))
        .route("/api/trigger/{id}", post(trigger_pipeline))
        .route("/api/runs/{id}", get(get_run))
        .route("/api/runs/{id}/cancel", post(cancel_run))
        .route("/api/runs/{id}/retry", post(retry_run))
        .route("/api/status-update", post(update_status))
        .route("/api/status-update/", post(update_status))
}
