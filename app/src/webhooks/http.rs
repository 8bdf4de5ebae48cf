//! `/api/webhooks`: endpoints (create, filter, count, read, change, delete, rotate the
//! secret), their deliveries, and sending a delivery again. Admins only.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::json;
use sqlx::PgPool;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{
    CreatedEndpoint, Delivery, Endpoint, EndpointFilter, EndpointPatch, NewEndpoint, SecretRotation, service,
};
use crate::api::responses::Errors;
use crate::api::rules::{Rule, paging, text};
use crate::api::{ApiId, ApiJson, OptionalJson};
use crate::caller::Caller;
use crate::error::Result;

/// Subscribes an endpoint; its signing secret is in this answer only.
#[utoipa::path(post, path = "/api/webhooks/", tag = "webhooks",
    description = "Role: admin. The answer's `secret` (`whsec_…`) verifies the `webhook-signature` of every delivery (Standard Webhooks); it cannot be shown again.",
    request_body = NewEndpoint,
    responses((status = 201, description = "Created", body = CreatedEndpoint), Errors))]
async fn create_webhook(
    State(db): State<PgPool>,
    caller: Caller,
    ApiJson(new): ApiJson<NewEndpoint>,
) -> Result<(StatusCode, Json<CreatedEndpoint>)> {
    let created = service::create(&db, &caller, new).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Endpoints matching a filter, newest first.
#[utoipa::path(post, path = "/api/webhooks/filter", tag = "webhooks", description = "Role: admin.",
    request_body(content = Option<EndpointFilter>, description = "Criteria and paging; none lists the newest 50"),
    responses((status = 200, description = "The endpoints, never their secrets", body = Vec<Endpoint>), Errors))]
async fn filter_webhooks(
    State(db): State<PgPool>,
    caller: Caller,
    OptionalJson(filter): OptionalJson<EndpointFilter>,
) -> Result<Json<Vec<Endpoint>>> {
    service::filter(&db, &caller, &filter).await.map(Json)
}

/// How many endpoints match a filter.
#[utoipa::path(post, path = "/api/webhooks/count", tag = "webhooks", description = "Role: admin. Answers a bare integer.",
    request_body(content = Option<EndpointFilter>, description = "Criteria (paging is ignored)"),
    responses((status = 200, description = "The count", body = i64, content_type = "application/json", example = json!(2)), Errors))]
async fn count_webhooks(
    State(db): State<PgPool>,
    caller: Caller,
    OptionalJson(filter): OptionalJson<EndpointFilter>,
) -> Result<Json<i64>> {
    service::count(&db, &caller, &filter).await.map(Json)
}

/// One endpoint.
#[utoipa::path(get, path = "/api/webhooks/{id}", tag = "webhooks", description = "Role: admin.",
    params(("id" = i64, Path, description = "Endpoint id", minimum = 1)),
    responses((status = 200, description = "The endpoint", body = Endpoint), Errors))]
async fn get_webhook(State(db): State<PgPool>, caller: Caller, ApiId(id): ApiId) -> Result<Json<Endpoint>> {
    service::get(&db, &caller, id).await.map(Json)
}

/// Changes an endpoint.
#[utoipa::path(patch, path = "/api/webhooks/{id}", tag = "webhooks",
    description = "Role: admin. Fields left out stay; `enabled: true` re-enables an endpoint that was disabled (its reason is cleared).",
    params(("id" = i64, Path, description = "Endpoint id", minimum = 1)),
    request_body = EndpointPatch,
    responses((status = 200, description = "The endpoint", body = Endpoint), Errors))]
async fn update_webhook(
    State(db): State<PgPool>,
    caller: Caller,
    ApiId(id): ApiId,
    ApiJson(patch): ApiJson<EndpointPatch>,
) -> Result<Json<Endpoint>> {
    service::update(&db, &caller, id, patch).await.map(Json)
}

/// Deletes an endpoint and its deliveries.
#[utoipa::path(delete, path = "/api/webhooks/{id}", tag = "webhooks", description = "Role: admin.",
    params(("id" = i64, Path, description = "Endpoint id", minimum = 1)),
    responses((status = 204, description = "Deleted"), Errors))]
async fn delete_webhook(State(db): State<PgPool>, caller: Caller, ApiId(id): ApiId) -> Result<StatusCode> {
    service::delete(&db, &caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Gives an endpoint a new signing secret.
#[utoipa::path(post, path = "/api/webhooks/{id}/rotate", tag = "webhooks",
    description = "Role: admin. Deliveries carry the old secret's signature too until the overlap ends, so the receiver can switch without losing any.",
    params(("id" = i64, Path, description = "Endpoint id", minimum = 1)),
    request_body(content = Option<SecretRotation>, description = "The overlap; default 24 hours"),
    responses((status = 201, description = "The endpoint with its new secret", body = CreatedEndpoint), Errors))]
async fn rotate_webhook_secret(
    State(db): State<PgPool>,
    caller: Caller,
    ApiId(id): ApiId,
    OptionalJson(rotation): OptionalJson<SecretRotation>,
) -> Result<(StatusCode, Json<CreatedEndpoint>)> {
    let created = service::rotate(&db, &caller, id, rotation).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// An endpoint's latest deliveries with every attempt.
#[utoipa::path(get, path = "/api/webhooks/{id}/deliveries", tag = "webhooks",
    description = "Role: admin. The latest 50, newest first; each with its attempts (status, latency, the start of the answer).",
    params(("id" = i64, Path, description = "Endpoint id", minimum = 1)),
    responses((status = 200, description = "The deliveries", body = Vec<Delivery>), Errors))]
async fn list_webhook_deliveries(
    State(db): State<PgPool>,
    caller: Caller,
    ApiId(id): ApiId,
) -> Result<Json<Vec<Delivery>>> {
    let (_, deliveries) = service::detail(&db, &caller, id).await?;
    Ok(Json(deliveries))
}

/// Sends a delivery again.
#[utoipa::path(post, path = "/api/webhook_deliveries/{id}/resend", tag = "webhooks",
    description = "Role: admin. The same event with the same `webhook-id`, due now, retried for another day if it fails.",
    params(("id" = i64, Path, description = "Delivery id", minimum = 1)),
    responses((status = 202, description = "Queued"), Errors))]
async fn resend_webhook_delivery(
    State(db): State<PgPool>,
    caller: Caller,
    ApiId(id): ApiId,
) -> Result<StatusCode> {
    service::resend(&db, &caller, id).await?;
    Ok(StatusCode::ACCEPTED)
}

/// The webhook routes (admins only).
pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    PgPool: axum::extract::FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(create_webhook))
        .routes(routes!(filter_webhooks))
        .routes(routes!(count_webhooks))
        .routes(routes!(get_webhook, update_webhook, delete_webhook))
        .routes(routes!(rotate_webhook_secret))
        .routes(routes!(list_webhook_deliveries))
        .routes(routes!(resend_webhook_delivery))
}

/// What the OpenAPI document says webhook requests take.
pub fn rules() -> Vec<Rule> {
    let mut rules = Vec::new();
    for schema in ["NewEndpoint", "EndpointPatch"] {
        rules.push(Rule::Property(
            schema,
            "url",
            json!({"minLength": 1, "maxLength": super::MAX_URL, "format": "uri", "pattern": "^https?://[^/@\\s]+(/[^\\s]*)?$"}),
        ));
        rules.push(Rule::Property(
            schema,
            "description",
            json!({"maxLength": super::MAX_DESCRIPTION, "pattern": "^[^\\x00]*$"}),
        ));
        rules.push(Rule::Property(schema, "event_types", json!({"minItems": 1})));
        rules.push(Rule::Property(
            schema,
            "event_types_items",
            json!({"enum": super::EVENT_TYPES}),
        ));
        rules.push(Rule::Property(schema, "pipeline_ids", json!({"maxItems": 100})));
        rules.push(Rule::Property(
            schema,
            "pipeline_ids_items",
            json!({"minimum": 1}),
        ));
        rules.push(Rule::Property(schema, "tags", json!({"maxItems": 100})));
        rules.push(Rule::Property(schema, "tags_items", text(100)));
    }
    rules.push(Rule::Property(
        "SecretRotation",
        "overlap_hours",
        json!({"minimum": 0, "maximum": service::MAX_OVERLAP_HOURS}),
    ));
    rules.extend(paging("EndpointFilter"));
    rules
}
