//! The REST surface under `/api`: extractors that answer in the one error shape, the
//! health check, and the JSON 404 for unknown API paths.

use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts};
use axum::response::IntoResponse;
use axum::routing::any;
use serde::de::DeserializeOwned;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::AppError;
use crate::state::AppState;

pub mod cache;
pub mod openapi;
pub mod rules;

/// Largest JSON body the API reads.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A JSON body whose errors name the offending field (`422 {"field": "stages.2"}`).
pub struct ApiJson<T>(pub T);

fn path_of(path: &serde_path_to_error::Path) -> String {
    let text = path.to_string();
    if text == "." || text.is_empty() {
        "body".to_owned()
    } else {
        text
    }
}

fn is_json(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim();
            mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")
        })
}

async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<axum::body::Bytes, AppError> {
    axum::body::Bytes::from_request(req, state)
        .await
        .map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                AppError::TooLarge {
                    limit: MAX_BODY_BYTES,
                }
            } else {
                AppError::invalid("body", rejection.body_text())
            }
        })
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        let json = is_json(&req);
        let bytes = body_bytes(req, state).await?;
        if !json {
            return Err(AppError::UnsupportedMediaType);
        }
        Self::parse(&bytes)
    }
}

/// The largest magnitude a number may have: `PostgreSQL` keeps numbers exactly, and one
/// near the limit of a double would not read back.
const MAX_NUMBER: f64 = 1e300;

/// Readies a parsed body in one walk: numbers written with a zero fraction (`2.0`) become
/// integers, as JSON Schema counts them; a string or key holding U+0000, or a number beyond
/// [`MAX_NUMBER`], which `PostgreSQL` could not store and give back, is refused with the
/// segments of its path, innermost first (keys escaped and led by a dot).
fn normalize(value: &mut serde_json::Value) -> Result<(), Vec<String>> {
    use serde_json::Value;
    match value {
        Value::String(s) if s.contains('\0') => Err(Vec::new()),
        Value::Number(n) => {
            let Some(f) = n.as_f64() else { return Ok(()) };
            if f.abs() > MAX_NUMBER {
                return Err(Vec::new());
            }
            if !n.is_i64() && !n.is_u64() && f.fract() == 0.0 && f.abs() < 9.0e15 {
                #[expect(clippy::cast_possible_truncation, reason = "whole and within ±9e15")]
                let whole = f as i64;
                *value = Value::from(whole);
            }
            Ok(())
        }
        Value::Array(items) => items.iter_mut().enumerate().try_for_each(|(i, item)| {
            normalize(item).map_err(|mut path| {
                path.push(format!("[{i}]"));
                path
            })
        }),
        Value::Object(fields) => fields.iter_mut().try_for_each(|(key, field)| {
            let segment = || format!(".{}", key.escape_default());
            if key.contains('\0') {
                return Err(vec![segment()]);
            }
            normalize(field).map_err(|mut path| {
                path.push(segment());
                path
            })
        }),
        _ => Ok(()),
    }
}

impl<T: DeserializeOwned> ApiJson<T> {
    /// Parses `bytes`, naming the offending field when that fails.
    fn parse(bytes: &[u8]) -> Result<Self, AppError> {
        let mut value: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| AppError::invalid("body", format!("is not valid JSON: {e}")))?;
        if !value.is_object() {
            return Err(AppError::invalid("body", "must be a JSON object"));
        }
        normalize(&mut value).map_err(|segments| {
            let path: String = segments.into_iter().rev().collect();
            AppError::invalid(
                path.strip_prefix('.').unwrap_or(&path),
                "holds U+0000 or a number beyond ±1e300, which cannot be stored",
            )
        })?;
        let value = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = path_of(e.path());
            let message = e.into_inner().to_string();
            // serde reports a missing field at its parent; name the field itself.
            match message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next())
            {
                Some(missing) if path == "body" => AppError::invalid(missing, "is required"),
                Some(missing) => AppError::invalid(format!("{path}.{missing}"), "is required"),
                None => AppError::invalid(path, message),
            }
        })?;
        Ok(ApiJson(value))
    }
}

/// A JSON body that may be absent altogether (the seed's trigger sends none).
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        let json = is_json(&req);
        let bytes = body_bytes(req, state).await?;
        // No body, or JSON `null`, asks for the defaults.
        let trimmed = bytes.trim_ascii();
        if trimmed.is_empty() || trimmed == b"null" {
            return Ok(OptionalJson(T::default()));
        }
        if !json {
            return Err(AppError::UnsupportedMediaType);
        }
        ApiJson::parse(&bytes).map(|ApiJson(v)| OptionalJson(v))
    }
}

/// Query parameters whose errors name the offending parameter.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, AppError> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|e| AppError::invalid(path_of(e.path()), e.into_inner().to_string()))
    }
}

/// A numeric id in the path; anything else is an unknown id (404).
pub struct ApiId(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for ApiId {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        // No object has an id that is not a positive integer: such an id is not found.
        let axum::extract::Path(raw) = axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| AppError::not_found("Object with this id"))?;
        raw.parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .map(ApiId)
            .ok_or_else(|| AppError::not_found("Object with this id"))
    }
}

/// Whether the process is up.
#[utoipa::path(get, path = "/api/health", tag = "health", security(()), description = "Role: none.",
    responses((status = 200, description = "Up", body = Object, example = json!({"status": "ok"}))))]
async fn health() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

/// How long readiness waits for each dependency.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether this replica can serve: the database answers, and Prefect does (or none is
/// configured). `503` otherwise, naming what failed, so a load balancer takes the
/// replica out of rotation until it recovers.
#[utoipa::path(get, path = "/api/ready", tag = "health", security(()), description = "Role: none.",
    responses(
        (status = 200, description = "Ready", body = Object,
            example = json!({"status": "ready", "checks": {"database": "ok", "prefect": "ok"}})),
        (status = 503, description = "Not ready: the failing checks say why", body = Object,
            example = json!({"status": "unavailable", "checks": {"database": "ok", "prefect": "unreachable"}}))))]
async fn ready(axum::extract::State(state): axum::extract::State<AppState>) -> impl IntoResponse {
    let database = async {
        let ping = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.db);
        match tokio::time::timeout(READY_TIMEOUT, ping).await {
            Ok(Ok(_)) => "ok",
            Ok(Err(_)) => "unreachable",
            Err(_) => "timed out",
        }
    };
    let prefect = async {
        match &state.prefect {
            None => "not configured",
            Some(prefect) => match tokio::time::timeout(READY_TIMEOUT, prefect.healthy()).await {
                Ok(true) => "ok",
                Ok(false) => "unreachable",
                Err(_) => "timed out",
            },
        }
    };
    let (database, prefect) = tokio::join!(database, prefect);
    let up = database == "ok" && matches!(prefect, "ok" | "not configured");
    let status = if up {
        axum::http::StatusCode::OK
    } else {
        tracing::warn!(database, prefect, "not ready");
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": if up { "ready" } else { "unavailable" },
        "checks": { "database": database, "prefect": prefect },
    });
    (status, axum::Json(body))
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
    let body = crate::error::ErrorBody {
        detail: format!("this route takes {allowed}"),
        code: "method_not_allowed".to_owned(),
        field: None,
    };
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
    let (api, document) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(ready))
        .merge(crate::pipelines::http::router())
        .merge(crate::runs::http::router())
        .merge(crate::events::http::router())
        .merge(crate::auth::api_keys::http::router())
        .merge(crate::audit::http::router())
        .merge(crate::retention::http::router())
        .split_for_parts();
    api.layer(axum::middleware::map_response(json_method_not_allowed))
        .merge(openapi::docs_router(document))
        .route("/api", any(unknown_api_path))
        .route("/api/{*rest}", any(unknown_api_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "only the parse result matters here")]
    struct Sample {
        name: String,
        stages: Option<Vec<String>>,
    }

    fn field(bytes: &[u8]) -> String {
        match ApiJson::<Sample>::parse(bytes) {
            Err(AppError::Invalid { field, .. }) => field,
            other => panic!("expected invalid, got {:?}", other.map(|ApiJson(s)| s)),
        }
    }

    #[test]
    fn json_errors_name_the_field() {
        assert_eq!(field(br#"{"stages": ["a"]}"#), "name");
        assert_eq!(field(br#"{"name": 3}"#), "name");
        assert_eq!(field(br#"{"name": "x", "stages": ["a", 2]}"#), "stages[1]");
        assert_eq!(field(br#"{"name": "x", "colour": "red"}"#), "colour");
        assert_eq!(field(br#"{"name": "#), "body");
        assert!(ApiJson::<Sample>::parse(br#"{"name": "x"}"#).is_ok());
        assert_eq!(field(br#"[{"name": "x"}]"#), "body");
        assert_eq!(field(br#"{"name": "x", "stages": ["a\u0000"]}"#), "stages[0]");
    }

    #[test]
    fn whole_numbers_written_with_a_fraction_are_integers() {
        #[derive(Debug, serde::Deserialize)]
        struct Limits {
            n: i32,
        }
        assert_eq!(
            ApiJson::<Limits>::parse(br#"{"n": 2.0}"#)
                .map(|ApiJson(l)| l.n)
                .ok(),
            Some(2)
        );
        assert!(ApiJson::<Limits>::parse(br#"{"n": 2.5}"#).is_err());
    }
}
