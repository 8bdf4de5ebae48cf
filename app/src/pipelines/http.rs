//! REST routes for pipelines, including the seed's (`/api/pipelines/`, `.../stages`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde::Deserialize;
use sqlx::PgPool;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{NewPipeline, Pipeline, service};
use crate::api::openapi::Errors;
use crate::api::{ApiId, ApiJson, ApiQuery};
use crate::auth::Principal;
use crate::auth::middleware::RequestMeta;
use crate::error::Result;
use crate::runs::Stage;
use crate::state::AppState;

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
    principal: Principal,
    ApiQuery(page): ApiQuery<Page>,
) -> Result<Json<Vec<Pipeline>>> {
    service::list(&db, &principal, page.skip, page.limit)
        .await
        .map(Json)
}

/// One pipeline with its latest run.
#[utoipa::path(get, path = "/api/pipelines/{id}", tag = "pipelines", description = "Role: viewer.",
    params(("id" = i64, Path, description = "Pipeline id", minimum = 1)),
    responses((status = 200, description = "The pipeline", body = Pipeline), Errors))]
async fn get_pipeline(
    State(db): State<PgPool>,
    principal: Principal,
    ApiId(id): ApiId,
) -> Result<Json<Pipeline>> {
    service::get(&db, &principal, id).await.map(Json)
}

/// Creates a pipeline.
#[utoipa::path(post, path = "/api/pipelines/", tag = "pipelines",
    description = "Role: admin. The seed's `{name, description}` plus the definition: deployment, stages, default parameters, tags, concurrency.",
    request_body = NewPipeline,
    responses((status = 201, description = "Created", body = Pipeline), Errors))]
async fn create_pipeline(
    State(db): State<PgPool>,
    principal: Principal,
    meta: RequestMeta,
    ApiJson(new): ApiJson<NewPipeline>,
) -> Result<(StatusCode, Json<Pipeline>)> {
    let pipeline = service::create(&db, &principal, &meta, new).await?;
    Ok((StatusCode::CREATED, Json(pipeline)))
}

/// The stages of a pipeline's latest run (or its planned stages).
#[utoipa::path(get, path = "/api/pipelines/{id}/stages", tag = "pipelines", description = "Role: viewer.",
    params(("id" = i64, Path, description = "Pipeline id", minimum = 1)),
    responses((status = 200, description = "The stages, in order", body = Vec<Stage>), Errors))]
async fn list_stages(
    State(db): State<PgPool>,
    principal: Principal,
    ApiId(id): ApiId,
) -> Result<Json<Vec<Stage>>> {
    service::get(&db, &principal, id).await.map(|p| Json(p.stages))
}

/// Pipeline routes; the collection is also served without the seed's trailing slash.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_pipelines, create_pipeline))
        .routes(routes!(get_pipeline))
        .routes(routes!(list_stages))
        .route("/api/pipelines", get(list_pipelines).post(create_pipeline))
}
