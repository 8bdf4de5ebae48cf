//! `POST /api/audit_events/filter` and `/count`.

use axum::Json;
use axum::extract::State;
use sqlx::PgPool;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AuditEvent, AuditFilter, service};
use crate::api::OptionalJson;
use crate::api::responses::Errors;
use crate::caller::Caller;
use crate::error::Result;

/// Audit events matching a filter.
#[utoipa::path(post, path = "/api/audit_events/filter", tag = "audit", description = "Role: admin.",
    request_body(content = Option<AuditFilter>, description = "Criteria, sort and paging; none lists the newest 50"),
    responses((status = 200, description = "The events", body = Vec<AuditEvent>), Errors))]
async fn filter_audit_events(
    State(db): State<PgPool>,
    caller: Caller,
    OptionalJson(filter): OptionalJson<AuditFilter>,
) -> Result<Json<Vec<AuditEvent>>> {
    service::filter(&db, &caller, &filter).await.map(Json)
}

/// How many audit events match a filter.
#[utoipa::path(post, path = "/api/audit_events/count", tag = "audit", description = "Role: admin. Answers a bare integer.",
    request_body(content = Option<AuditFilter>, description = "Criteria (sort and paging are ignored)"),
    responses((status = 200, description = "The count", body = i64, content_type = "application/json", example = json!(42)), Errors))]
async fn count_audit_events(
    State(db): State<PgPool>,
    caller: Caller,
    OptionalJson(filter): OptionalJson<AuditFilter>,
) -> Result<Json<i64>> {
    service::count(&db, &caller, &filter).await.map(Json)
}

/// What the OpenAPI document says audit filters take.
pub fn rules() -> Vec<crate::api::rules::Rule> {
    crate::api::rules::paging("AuditFilter").into()
}

/// The audit routes (admins only).
pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    PgPool: axum::extract::FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(filter_audit_events))
        .routes(routes!(count_audit_events))
}
