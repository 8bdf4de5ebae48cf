//! `/api/api_keys`: create, filter, count, read, rotate, revoke.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::json;
use sqlx::PgPool;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiKey, ApiKeyFilter, CreatedApiKey, KeyLimits, NewApiKey, Rotation, service};
use crate::api::responses::Errors;
use crate::api::rules::{Rule, paging, text};
use crate::api::{ApiId, ApiJson, OptionalJson};
use crate::caller::Caller;
use crate::error::Result;

/// Creates a key; its secret is in this answer only.
#[utoipa::path(post, path = "/api/api_keys/", tag = "api_keys",
    description = "Role: admin. The answer's `secret` is the key; it is not stored and cannot be shown again.",
    request_body = NewApiKey,
    responses((status = 201, description = "Created", body = CreatedApiKey), Errors))]
async fn create_api_key(
    State(db): State<PgPool>,
    caller: Caller,
    ApiJson(new): ApiJson<NewApiKey>,
) -> Result<(StatusCode, Json<CreatedApiKey>)> {
    let created = service::create(&db, &caller, new).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Keys matching a filter.
#[utoipa::path(post, path = "/api/api_keys/filter", tag = "api_keys", description = "Role: admin.",
    request_body(content = Option<ApiKeyFilter>, description = "Criteria, sort and paging; none lists the newest 50"),
    responses((status = 200, description = "The keys, never their secrets", body = Vec<ApiKey>), Errors))]
async fn filter_api_keys(
    State(db): State<PgPool>,
    caller: Caller,
    OptionalJson(filter): OptionalJson<ApiKeyFilter>,
) -> Result<Json<Vec<ApiKey>>> {
    service::filter(&db, &caller, &filter).await.map(Json)
}

/// How many keys match a filter.
#[utoipa::path(post, path = "/api/api_keys/count", tag = "api_keys", description = "Role: admin. Answers a bare integer.",
    request_body(content = Option<ApiKeyFilter>, description = "Criteria (sort and paging are ignored)"),
    responses((status = 200, description = "The count", body = i64, content_type = "application/json", example = json!(3)), Errors))]
async fn count_api_keys(
    State(db): State<PgPool>,
    caller: Caller,
    OptionalJson(filter): OptionalJson<ApiKeyFilter>,
) -> Result<Json<i64>> {
    service::count(&db, &caller, &filter).await.map(Json)
}

/// One key.
#[utoipa::path(get, path = "/api/api_keys/{id}", tag = "api_keys", description = "Role: admin.",
    params(("id" = i64, Path, description = "Key id", minimum = 1)),
    responses((status = 200, description = "The key, never its secret", body = ApiKey), Errors))]
async fn get_api_key(State(db): State<PgPool>, caller: Caller, ApiId(id): ApiId) -> Result<Json<ApiKey>> {
    service::get(&db, &caller, id).await.map(Json)
}

/// Changes a key's scope or budgets.
#[utoipa::path(patch, path = "/api/api_keys/{id}", tag = "api_keys",
    description = "Role: admin. Replaces the key's scope or budgets (a field left out stays as it is); audited as `api_key.limit` with both, and in force on every replica at the key's next request.",
    params(("id" = i64, Path, description = "Key id", minimum = 1)),
    request_body = KeyLimits,
    responses((status = 200, description = "The key", body = ApiKey), Errors))]
async fn limit_api_key(
    State(db): State<PgPool>,
    caller: Caller,
    ApiId(id): ApiId,
    ApiJson(limits): ApiJson<KeyLimits>,
) -> Result<Json<ApiKey>> {
    service::limit(&db, &caller, id, limits).await.map(Json)
}

/// Makes a successor of a key; the old key keeps working for the overlap.
#[utoipa::path(post, path = "/api/api_keys/{id}/rotate", tag = "api_keys",
    description = "Role: admin. The successor has the same name, role, scope and budgets; the old key expires when the overlap ends.",
    params(("id" = i64, Path, description = "Key id", minimum = 1)),
    request_body(content = Option<Rotation>, description = "Overlap and expiry; defaults: 60 minutes, the old key's expiry"),
    responses((status = 201, description = "The successor, with its secret", body = CreatedApiKey), Errors))]
async fn rotate_api_key(
    State(db): State<PgPool>,
    caller: Caller,
    ApiId(id): ApiId,
    OptionalJson(rotation): OptionalJson<Rotation>,
) -> Result<(StatusCode, Json<CreatedApiKey>)> {
    let created = service::rotate(&db, &caller, id, rotation).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Revokes a key and ends the sessions it opened.
#[utoipa::path(delete, path = "/api/api_keys/{id}", tag = "api_keys",
    description = "Role: admin. Idempotent: revoking a revoked key succeeds and changes nothing.",
    params(("id" = i64, Path, description = "Key id", minimum = 1)),
    responses((status = 204, description = "Revoked"), Errors))]
async fn revoke_api_key(State(db): State<PgPool>, caller: Caller, ApiId(id): ApiId) -> Result<StatusCode> {
    service::revoke(&db, &caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The key routes (admins only); the collection is also served without the slash.
pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    PgPool: axum::extract::FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(create_api_key))
        .routes(routes!(filter_api_keys))
        .routes(routes!(count_api_keys))
        .routes(routes!(get_api_key, revoke_api_key, limit_api_key))
        .routes(routes!(rotate_api_key))
        .route("/api/api_keys", post(create_api_key))
}

/// What the OpenAPI document says key requests take.
pub fn rules() -> Vec<Rule> {
    let mut rules = vec![
        Rule::Property("NewApiKey", "name", text(super::MAX_NAME_LEN)),
        Rule::Property(
            "Rotation",
            "overlap_minutes",
            json!({"minimum": 0, "maximum": super::MAX_OVERLAP_MINUTES}),
        ),
    ];
    use crate::caller::scope::{MAX_BUDGET, MAX_SCOPE_ITEMS, MAX_SCOPE_NAME};
    for list in ["pipeline_ids", "slugs", "tags"] {
        rules.push(Rule::Property(
            "KeyScope",
            list,
            json!({"maxItems": MAX_SCOPE_ITEMS}),
        ));
    }
    rules.push(Rule::Property(
        "KeyScope",
        "pipeline_ids_items",
        json!({"minimum": 1}),
    ));
    rules.push(Rule::Property("KeyScope", "slugs_items", text(MAX_SCOPE_NAME)));
    rules.push(Rule::Property("KeyScope", "tags_items", text(MAX_SCOPE_NAME)));
    rules.push(Rule::Property("KeyScope", "actions", json!({"minItems": 1})));
    for budget in ["triggers_per_hour", "triggers_per_day", "max_unfinished_runs"] {
        rules.push(Rule::Property(
            "Budget",
            budget,
            json!({"minimum": 1, "maximum": MAX_BUDGET}),
        ));
    }
    rules.extend(paging("ApiKeyFilter"));
    rules
}
