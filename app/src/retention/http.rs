//! `GET`/`PUT /api/audit_events/retention`: how long the audit trail is kept.

use axum::Json;
use axum::extract::State;
use sqlx::PgPool;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AuditRetention, service};
use crate::api::ApiJson;
use crate::api::responses::Errors;
use crate::caller::Caller;
use crate::error::Result;

/// How long the audit trail is kept.
#[utoipa::path(get, path = "/api/audit_events/retention", tag = "audit",
    description = "Role: admin. `days: null` keeps the trail forever (the default).",
    responses((status = 200, description = "The retention", body = AuditRetention), Errors))]
async fn read_retention(State(db): State<PgPool>, caller: Caller) -> Result<Json<AuditRetention>> {
    service::audit_retention(&db, &caller).await.map(Json)
}

/// Sets how long the audit trail is kept; older events are then pruned by age.
#[utoipa::path(put, path = "/api/audit_events/retention", tag = "audit",
    description = "Role: admin. Audit events older than `days` are deleted by the next pruning pass (every few minutes); `null` keeps them forever. The change is audited (`audit.retention_set`), and so is each batch of audit events deleted (`audit.pruned`).",
    request_body = AuditRetention,
    responses((status = 200, description = "The retention now in force", body = AuditRetention), Errors))]
async fn set_retention(
    State(db): State<PgPool>,
    caller: Caller,
    ApiJson(retention): ApiJson<AuditRetention>,
) -> Result<Json<AuditRetention>> {
    service::set_audit_retention(&db, &caller, retention)
        .await
        .map(Json)
}

/// The retention routes (admins only).
pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    PgPool: axum::extract::FromRef<S>,
{
    OpenApiRouter::new().routes(routes!(read_retention, set_retention))
}

/// What the OpenAPI document says the retention setting takes.
pub fn rules() -> Vec<crate::api::rules::Rule> {
    vec![crate::api::rules::Rule::Property(
        "AuditRetention",
        "days",
        serde_json::json!({"minimum": 1, "maximum": super::MAX_AUDIT_DAYS}),
    )]
}
