//! `/mcp`: the MCP server's Streamable HTTP endpoint (POST, GET, DELETE), behind a check
//! that the caller presented a bearer credential.

use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

use super::{Flowdeck, McpParts, takes};
use crate::caller::Principal;
use crate::error::AppError;

/// Only a caller with a bearer credential gets through (401 otherwise, with
/// `WWW-Authenticate: Bearer`).
async fn bearer_only(request: Request, next: Next) -> Response {
    match request.extensions().get::<Principal>() {
        Some(principal) if takes(principal) => next.run(request).await,
        _ => AppError::Unauthorized.into_response(),
    }
}

/// The `/mcp` route.
///
/// Stateless: no session is kept between requests, so any replica
/// answers any of them. The `Host` check against DNS rebinding is left to the bearer
/// credential every request needs (a browser never sends one by itself).
pub fn router<S>(parts: McpParts) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .disable_allowed_hosts();
    let service = StreamableHttpService::new(
        move || Ok(Flowdeck::new(parts.clone())),
        std::sync::Arc::new(NeverSessionManager::default()),
        config,
    );
    Router::new()
        .route_service("/mcp", service)
        .layer(axum::middleware::from_fn(bearer_only))
}
