//! REST routes for pipelines, including the seed's (`/api/pipelines/`, `.../stages`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use sqlx::PgPool;

use super::{NewPipeline, Pipeline, service};
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

async fn list_pipelines(
    State(db): State<PgPool>,
    principal: Principal,
    ApiQuery(page): ApiQuery<Page>,
) -> Result<Json<Vec<Pipeline>>> {
    service::list(&db, &principal, page.skip, page.limit)
        .await
        .map(Json)
}

async fn get_pipeline(
    State(db): State<PgPool>,
    principal: Principal,
    ApiId(id): ApiId,
) -> Result<Json<Pipeline>> {
    service::get(&db, &principal, id).await.map(Json)
}

async fn create_pipeline(
    State(db): State<PgPool>,
    principal: Principal,
    meta: RequestMeta,
    ApiJson(new): ApiJson<NewPipeline>,
) -> Result<(StatusCode, Json<Pipeline>)> {
    let pipeline = service::create(&db, &principal, &meta, new).await?;
    Ok((StatusCode::CREATED, Json(pipeline)))
}

async fn list_stages(
    State(db): State<PgPool>,
    principal: Principal,
    ApiId(id): ApiId,
) -> Result<Json<Vec<Stage>>> {
    service::get(&db, &principal, id).await.map(|p| Json(p.stages))
}

/// Pipeline routes; each path is served with and without the seed's trailing slash.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/pipelines", get(list_pipelines).post(create_pipeline))
        .route("/api/pipelines/", get(list_pipelines).post(create_pipeline))
        .route("/api/pipelines/{id}", get(get_pipeline))
        .route("/api/pipelines/{id}/stages", get(list_stages))
}
