//! How [`AppError`] becomes an HTTP answer, and how internal errors become an [`AppError`].

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AppError;

/// The one JSON error body of the API: RFC 9457 problem details (`type`, `title`,
/// `status`, `detail`) with Flowdeck's members (`code`, `field`, `budget`).
///
/// `detail` keeps the seed's (`FastAPI`'s) field name, so existing clients still read it.
/// It is sent as `application/json`, which every client generator reads, or as
/// `application/problem+json` to a client whose `Accept` asks for that.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"type": "about:blank", "title": "Unprocessable Entity", "status": 422,
    "detail": "name: is required", "code": "invalid", "field": "name"}))]
pub struct ErrorBody {
    /// The problem type: `about:blank`, so `title` is the HTTP status's and `code` says
    /// which problem it is.
    #[serde(rename = "type")]
    pub problem_type: &'static str,
    /// The HTTP status's reason phrase.
    pub title: &'static str,
    /// The HTTP status code.
    pub status: u16,
    /// Human-readable explanation.
    pub detail: String,
    /// Machine-readable code: `not_found`, `conflict`, `in_progress` (the request's
    /// `Idempotency-Key` is in use; retry after `Retry-After`), `invalid`, `unauthorized`,
    /// `forbidden`, `over_budget`, `rate_limited`, `too_large`, `unsupported_media_type`,
    /// `upstream`, `unavailable`, `internal`.
    pub code: String,
    /// The offending field, for `invalid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The budget spent, for `over_budget`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetBody>,
}

/// Which budget of a key is spent, and when it frees.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BudgetBody {
    /// `triggers_per_hour`, `triggers_per_day` or `max_unfinished_runs`.
    pub name: String,
    /// The budget.
    pub limit: i64,
    /// What is spent of it.
    pub used: i64,
    /// When it frees, for budgets that free with time (unfinished runs free it as they end).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frees_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl ErrorBody {
    /// The body answering `error`.
    pub fn of(error: &AppError) -> Self {
        let field = match error {
            AppError::Invalid { field, .. } => Some(field.clone()),
            _ => None,
        };
        let budget = match error {
            AppError::OverBudget {
                budget,
                limit,
                used,
                retry_after,
            } => Some(BudgetBody {
                name: budget.clone(),
                limit: *limit,
                used: *used,
                frees_at: retry_after.map(|s| chrono::Utc::now() + chrono::Duration::seconds(s as i64)),
            }),
            _ => None,
        };
        ErrorBody::new(
            error.status_code(),
            error.to_string(),
            error.code(),
            field,
            budget,
        )
    }

    /// A body for `status`, with the problem details' members filled in.
    pub fn new(
        status: u16,
        detail: String,
        code: &str,
        field: Option<String>,
        budget: Option<BudgetBody>,
    ) -> Self {
        let title = StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        ErrorBody {
            problem_type: "about:blank",
            title,
            status,
            detail,
            code: code.to_owned(),
            field,
            budget,
        }
    }
}

/// The media type of problem details (RFC 9457).
const PROBLEM_JSON: &str = "application/problem+json";

/// Sends an error body as `application/problem+json` to a client whose `Accept` names that
/// type (and not plain JSON first); others get `application/json`, as before.
pub async fn problem_media_type(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let wants_problem = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains(PROBLEM_JSON));
    let mut response = next.run(request).await;
    let is_error_json = response.status().as_u16() >= 400
        && response.headers().get(header::CONTENT_TYPE)
            == Some(&HeaderValue::from_static("application/json"));
    if wants_problem && is_error_json {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    }
    response
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status_code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody::of(&self);
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<sqlx::Error> for AppError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::RowNotFound => AppError::not_found("Record"),
            other if database_unreachable(&other) => {
                tracing::warn!(error = %other, "database unreachable");
                AppError::Unavailable {
                    service: "database".to_owned(),
                }
            }
            other => {
                tracing::error!(error = %other, "database error");
                AppError::Internal
            }
        }
    }
}

/// Whether `error` says the database could not be reached or went away (no connection in
/// time, a broken connection, a server shutting down or starting up), rather than that a
/// statement failed: such a request changed nothing and may be sent again.
fn database_unreachable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
            true
        }
        // SQLSTATE class 08 (connection exception) and 57P (shutdown, cannot connect now).
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => false,
    }
}

/// Turns a unique-constraint violation into [`AppError::Conflict`] (after realworld's
/// `on_constraint`), leaving every other error to the usual conversion.
pub trait ResultExt<T> {
    /// Maps a violation of `constraint` to a conflict with `message`.
    fn on_constraint(self, constraint: &str, message: &str) -> Result<T, AppError>;
}

impl<T> ResultExt<T> for Result<T, sqlx::Error> {
    fn on_constraint(self, constraint: &str, message: &str) -> Result<T, AppError> {
        self.map_err(|error| match &error {
            sqlx::Error::Database(db) if db.constraint() == Some(constraint) => AppError::conflict(message),
            _ => AppError::from(error),
        })
    }
}

/// Sets the status of the server function response being made, unless the caller is a
/// plain HTML form, which server functions answer with a redirect back to the form.
pub(super) fn answer_server_fn_with(error: &AppError) {
    let code = error.status_code();
    use leptos::prelude::use_context;
    let form_post = use_context::<http::request::Parts>().is_some_and(|parts| {
        parts
            .headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"))
    });
    if let (false, Some(response), Ok(status)) = (
        form_post,
        use_context::<leptos_axum::ResponseOptions>(),
        StatusCode::from_u16(code),
    ) {
        response.set_status(status);
        if let Some(seconds) = error.retry_after() {
            response.insert_header(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_database_is_503_with_retry_after_and_other_failures_are_not() {
        for error in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        ] {
            let app = AppError::from(error);
            assert_eq!(app.code(), "unavailable");
            let response = app.into_response();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        }
        assert_eq!(AppError::from(sqlx::Error::RowNotFound).status_code(), 404);
        assert_eq!(
            AppError::from(sqlx::Error::ColumnNotFound("x".to_owned())),
            AppError::Internal
        );
    }
}
