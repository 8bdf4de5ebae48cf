//! REST routes for pipelines, including the seed's (`/api/pipelines/`, `.../stages`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde::Deserialize;
use sqlx::PgPool;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::filter::PipelineFilter;
use super::{NewPipeline, Pipeline, PipelinePatch, service};
use crate::api::cache::Answers;
use crate::api::encoding::KeptJson;
use crate::api::responses::Errors;
use crate::api::{ApiId, ApiJson, ApiQuery, OptionalJson};
use crate::caller::Caller;
use crate::error::Result;
use crate::runs::Stage;

/// `skip`/`limit` as the seed takes them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    #[serde(default)]
    skip: i64,
    #[serde(default = "default_limit")]
    limit: i64,
}

fn default_limit() -> i64 {
    100
}

/// Lists pipelines with their latest run (the seed's listing).
#[utoipa::path(get, path = "/api/pipelines/", tag = "pipelines",
    description = "Role: viewer. Pipelines by id with their latest run and its stages; `skip`/`limit` as the seed takes them.",
    params(("skip" = Option<i64>, Query, description = "Pipelines to skip", minimum = 0),
           ("limit" = Option<i64>, Query, description = "At most this many (1 to 1000, default 100)", minimum = 1, maximum = 1000)),
    responses((status = 200, description = "The pipelines", body = Vec<Pipeline>), Errors))]
async fn list_pipelines(
    State(db): State<PgPool>,
    State(answers): State<Arc<Answers>>,
    caller: Caller,
    ApiQuery(page): ApiQuery<Page>,
) -> Result<KeptJson> {
    service::list(&db, &answers, &caller, page.skip, page.limit)
        .await
        .map(KeptJson)
}

/// One pipeline with its latest run.
#[utoipa::path(get, path = "/api/pipelines/{id}", tag = "pipelines", description = "Role: viewer.",
    params(("id" = i64, Path, description = "Pipeline id", minimum = 1)),
    responses((status = 200, description = "The pipeline", body = Pipeline), Errors))]
async fn get_pipeline(
    State(db): State<PgPool>,
    State(answers): State<Arc<Answers>>,
    caller: Caller,
    ApiId(id): ApiId,
) -> Result<KeptJson> {
    service::get_json(&db, &answers, &caller, id).await.map(KeptJson)
}

/// Creates a pipeline.
#[utoipa::path(post, path = "/api/pipelines/", tag = "pipelines",
    description = "Role: admin. The seed's `{name, description}` plus the definition: deployment, stages, default parameters, tags, concurrency.",
    request_body = NewPipeline,
    responses((status = 201, description = "Created", body = Pipeline), Errors))]
async fn create_pipeline(
    State(db): State<PgPool>,
    caller: Caller,
    ApiJson(new): ApiJson<NewPipeline>,
) -> Result<(StatusCode, Json<Pipeline>)> {
    let pipeline = service::create(&db, &caller, new).await?;
    Ok((StatusCode::CREATED, Json(pipeline)))
}

/// The stages of a pipeline's latest run (or its planned stages).
#[utoipa::path(get, path = "/api/pipelines/{id}/stages", tag = "pipelines", description = "Role: viewer.",
    params(("id" = i64, Path, description = "Pipeline id", minimum = 1)),
    responses((status = 200, description = "The stages, in order", body = Vec<Stage>), Errors))]
async fn list_stages(State(db): State<PgPool>, caller: Caller, ApiId(id): ApiId) -> Result<Json<Vec<Stage>>> {
    service::get(&db, &caller, id).await.map(|p| Json(p.stages))
}

/// Changes a pipeline's definition.
#[utoipa::path(patch, path = "/api/pipelines/{id}", tag = "pipelines",
    description = "Role: admin. Only the fields given change; they are checked as on creation. The slug stays.",
    params(("id" = i64, Path, description = "Pipeline id", minimum = 1)),
    request_body = PipelinePatch,
    responses((status = 200, description = "The pipeline", body = Pipeline), Errors))]
async fn update_pipeline(
    State(db): State<PgPool>,
    caller: Caller,
    ApiId(id): ApiId,
    ApiJson(patch): ApiJson<PipelinePatch>,
) -> Result<Json<Pipeline>> {
    service::update(&db, &caller, id, patch).await.map(Json)
}

/// Deletes a pipeline and its runs' history.
#[utoipa::path(delete, path = "/api/pipelines/{id}", tag = "pipelines",
    description = "Role: admin. Refused (409) while a run is unfinished. The audit trail keeps the deletion.",
    params(("id" = i64, Path, description = "Pipeline id", minimum = 1)),
    responses((status = 204, description = "Deleted"), Errors))]
async fn delete_pipeline(State(db): State<PgPool>, caller: Caller, ApiId(id): ApiId) -> Result<StatusCode> {
    service::delete(&db, &caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Pipelines matching a filter.
#[utoipa::path(post, path = "/api/pipelines/filter", tag = "pipelines", description = "Role: viewer.",
    request_body(content = Option<PipelineFilter>, description = "Criteria, sort and paging; none lists the newest 50"),
    responses((status = 200, description = "The pipelines with their latest runs", body = Vec<Pipeline>), Errors))]
async fn filter_pipelines(
    State(db): State<PgPool>,
    State(answers): State<Arc<Answers>>,
    caller: Caller,
    OptionalJson(filter): OptionalJson<PipelineFilter>,
) -> Result<KeptJson> {
    service::filter(&db, &answers, &caller, &filter)
        .await
        .map(KeptJson)
}

/// How many pipelines match a filter.
#[utoipa::path(post, path = "/api/pipelines/count", tag = "pipelines", description = "Role: viewer. Answers a bare integer.",
    request_body(content = Option<PipelineFilter>, description = "Criteria (sort and paging are ignored)"),
    responses((status = 200, description = "The count", body = i64, content_type = "application/json", example = json!(12)), Errors))]
async fn count_pipelines(
    State(db): State<PgPool>,
    caller: Caller,
    OptionalJson(filter): OptionalJson<PipelineFilter>,
) -> Result<Json<i64>> {
    service::count(&db, &caller, &filter).await.map(Json)
}

/// Pipeline routes; the collection is also served without the seed's trailing slash.
pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    PgPool: axum::extract::FromRef<S>,
    Arc<Answers>: axum::extract::FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(list_pipelines, create_pipeline))
        .routes(routes!(get_pipeline, update_pipeline, delete_pipeline))
        .routes(routes!(list_stages))
        .routes(routes!(filter_pipelines))
        .routes(routes!(count_pipelines))
        .route("/api/pipelines", get(list_pipelines).post(create_pipeline))
}
