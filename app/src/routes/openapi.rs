//! Every REST route under `/api`, the OpenAPI document that describes them, and its
//! interactive docs.
//!
//! The document is generated from the handlers' `#[utoipa::path]` attributes and the types'
//! `ToSchema` derives (collected by `utoipa-axum` as the routes are added), served at
//! `/api/openapi.json` (OpenAPI 3.1) and `/api/openapi-3.0.json` (the same, as 3.0, for
//! generators that read only that: `openapi30`), with Swagger UI (vendored into the
//! binary) at `/api/docs`.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::{any, get};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::health::{__path_health, __path_ready, health, ready};
use crate::api::rules;
use crate::error::{AppError, ErrorBody};

/// The document's fixed parts; the paths and schemas come from the routes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Flowdeck",
        description = "Control plane for data pipelines run as Prefect flows. Every route but \
                       `/api/health` needs `Authorization: Bearer` with an API key (`fdk_…`), a \
                       run's callback credential (`fdc_…`, status updates of its run only) or a \
                       JWT of the configured OpenID Connect issuer. Each operation says the least \
                       role it needs: viewer < operator < admin. Collections follow Prefect's \
                       conventions: `POST /api/{collection}/filter` and `/count` with filter \
                       bodies (`any_`, `eq_`, `like_`, `is_null_`, `before_`, `after_`), `sort`, \
                       `limit` (at most 200) and `offset`."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(ErrorBody)),
    tags(
        (name = "pipelines", description = "Pipeline definitions and their latest run"),
        (name = "runs", description = "Triggers, runs and status callbacks"),
        (name = "events", description = "The live change feed (Server-Sent Events)"),
        (name = "api_keys", description = "API key management (admin)"),
        (name = "audit", description = "The audit trail (admin)"),
        (name = "webhooks", description = "Signed outbound webhooks of run and pipeline events (admin)"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key (`fdk_…`), a run's callback credential (`fdc_…`) or an OIDC JWT",
                    ))
                    .build(),
            ),
        );
    }
}

/// What each capability says its inputs take, for the document.
fn capability_rules() -> Vec<rules::Rule> {
    [
        crate::pipelines::validate::rules(),
        crate::runs::http::rules(),
        crate::api_keys::http::rules(),
        crate::audit::http::rules(),
        crate::retention::http::rules(),
        crate::webhooks::http::rules(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// `/api/openapi.json`, its 3.0 form and the interactive docs at `/api/docs`.
///
/// The docs' assets are in the binary. The docs page gets a policy that lets Swagger UI run (its own scripts and
/// inline styles), nothing from elsewhere.
fn docs_router(document: utoipa::openapi::OpenApi) -> Router<AppState> {
    let mut document = serde_json::to_value(document).expect("the OpenAPI document serializes");
    rules::constrain(&mut document, &capability_rules());
    let old_form = axum::Json(super::openapi30::downgrade(&document));
    let swagger: Router<AppState> = utoipa_swagger_ui::SwaggerUi::new("/api/docs")
        .external_url_unchecked("/api/openapi.json", document)
        .into();
    swagger.layer(axum::middleware::map_response(docs_policy)).route(
        "/api/openapi-3.0.json",
        get(move || async move { old_form.clone() }),
    )
}

async fn docs_policy(mut response: axum::response::Response) -> axum::response::Response {
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
             script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    response
}

/// A method the route does not take: `405` with `Allow` (as axum sets it), in the one
/// error shape.
async fn json_method_not_allowed(response: axum::response::Response) -> axum::response::Response {
    if response.status() != axum::http::StatusCode::METHOD_NOT_ALLOWED {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    let allowed = allow
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .unwrap_or("other methods");
    let body = crate::error::ErrorBody::new(
        405,
        format!("this route takes {allowed}"),
        "method_not_allowed",
        None,
        None,
    );
    let mut answer = (axum::http::StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response();
    if let Some(allow) = allow {
        answer.headers_mut().insert(header::ALLOW, allow);
    }
    answer
}

async fn unknown_api_path() -> AppError {
    AppError::not_found("API route")
}

/// Every REST route under `/api`, and the OpenAPI document that describes them.
pub fn router() -> Router<AppState> {
    let (api, document) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(ready))
        .merge(crate::pipelines::http::router())
        .merge(crate::runs::http::router())
        .merge(crate::events::http::router())
        .merge(crate::api_keys::http::router())
        .merge(crate::audit::http::router())
        .merge(crate::retention::http::router())
        .merge(crate::webhooks::http::router())
        .split_for_parts();
    api.layer(axum::middleware::map_response(json_method_not_allowed))
        .merge(docs_router(document))
        .route("/api", any(unknown_api_path))
        .route("/api/{*rest}", any(unknown_api_path))
}
