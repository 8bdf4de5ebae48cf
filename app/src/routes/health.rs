//! Liveness and readiness: what load balancers and `make run` ask.

use axum::response::IntoResponse;

use super::AppState;

/// Whether the process is up.
#[utoipa::path(get, path = "/api/health", tag = "health", security(()), description = "Role: none.",
    responses((status = 200, description = "Up", body = Object, example = json!({"status": "ok"}))))]
pub async fn health() -> impl IntoResponse {
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
pub async fn ready(axum::extract::State(state): axum::extract::State<AppState>) -> impl IntoResponse {
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
