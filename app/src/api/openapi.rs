//! The OpenAPI document and its interactive docs.
//!
//! The document is generated from the handlers' `#[utoipa::path]` attributes and the types'
//! `ToSchema` derives (collected by `utoipa-axum` as the routes are added), served at
//! `/api/openapi.json`, with Swagger UI (vendored into the binary) at `/api/docs`.

use std::collections::BTreeMap;

use axum::Router;
use axum::http::{HeaderValue, header};
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{IntoResponses, Modify, OpenApi};

use crate::error::ErrorBody;
use crate::state::AppState;

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

/// The error answers an operation may give, all in the one error shape.
pub struct Errors;

impl IntoResponses for Errors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        [
            ("401", "No valid credential"),
            (
                "403",
                "The credential's role does not allow this, or a cross-site browser request",
            ),
            ("404", "No such object"),
            ("409", "The request clashes with the current state"),
            ("413", "The body is larger than the limit (1 MiB by default)"),
            (
                "405",
                "The route does not take this method; `Allow` lists those it takes",
            ),
            ("415", "The body is not JSON"),
            ("422", "A field is missing or wrong; `field` names it"),
            ("429", "Over a rate limit; retry after `Retry-After` seconds"),
            ("500", "Internal error; details are in Flowdeck's log"),
            ("502", "Prefect or the identity provider failed"),
            (
                "503",
                "The database is unreachable for now; nothing was changed, retry after `Retry-After` seconds",
            ),
        ]
        .into_iter()
        .map(|(status, description)| {
            let content = ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build();
            let response = ResponseBuilder::new()
                .description(description)
                .content("application/json", content)
                .build();
            (status.to_owned(), RefOr::T(response))
        })
        .collect()
    }
}

/// `/api/openapi.json` and the interactive docs at `/api/docs`.
///
/// The docs' assets are in the binary. The docs page gets a policy that lets Swagger UI run (its own scripts and
/// inline styles), nothing from elsewhere.
pub fn docs_router(document: utoipa::openapi::OpenApi) -> Router<AppState> {
    let mut document = serde_json::to_value(document).expect("the OpenAPI document serializes");
    super::rules::constrain(&mut document);
    let swagger: Router<AppState> = utoipa_swagger_ui::SwaggerUi::new("/api/docs")
        .external_url_unchecked("/api/openapi.json", document)
        .into();
    swagger.layer(axum::middleware::map_response(docs_policy))
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
