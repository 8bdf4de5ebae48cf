//! `/metrics`: the gauges read at scrape time, then every metric as OpenMetrics text.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::caller::{Principal, Role};
use crate::error::AppError;
use crate::telemetry::metrics::{self, Gauges};

async fn render(state: &AppState) -> Response {
    let outbox = crate::runs::dispatch::db::outbox_stats(&state.db)
        .await
        .inspect_err(|e| tracing::debug!(error = %e, "metrics: cannot read the outbox"))
        .ok();
    let gauges = Gauges {
        outbox_depth: outbox.map(|(depth, _)| depth),
        outbox_oldest: outbox.map(|(_, oldest)| oldest),
        subscribers: state.hub.subscribers(),
        pool_size: state.db.size(),
        pool_idle: state.db.num_idle(),
        pool_max: state.db.options().get_max_connections(),
    };
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::render(&gauges),
    )
        .into_response()
}

/// `GET /metrics` on the main address: for callers with at least the viewer role (a
/// Prometheus scrape job with a viewer API key as bearer token).
pub async fn protected_metrics(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Response, AppError> {
    principal.require(Role::Viewer)?;
    if principal.scope.limits_pipelines() {
        return Err(AppError::OutOfScope {
            action: "metrics of every pipeline".to_owned(),
        });
    }
    Ok(render(&state).await)
}

/// `GET /metrics` on the separate metrics address (`FLOWDECK_METRICS_ADDR`), which is
/// meant to be reachable only by the scraper, so it asks for no credential.
pub async fn open_metrics(State(state): State<AppState>) -> Response {
    render(&state).await
}
