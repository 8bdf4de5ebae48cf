//! The outermost layer of the router: ids, span and metrics for every request.

use std::time::Instant;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;
use tracing::field::Empty;

use super::metrics::{self, metrics};
use super::{RequestIds, TraceParent, is_valid_request_id, new_request_id};
use crate::client_addr::TrustedProxies;

/// Names requests by route, never by raw path (ids and typos would make every path a
/// new metric series).
fn route_of(req: &Request) -> String {
    req.extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned())
}

/// Gives the request its ids and client address, runs it inside its span and counts it.
///
/// The span carries method, route, client address, request id, trace id and, at the end,
/// the status (an error status for 5xx); it continues the caller's `traceparent`. The
/// answer echoes `X-Request-ID`. Only the path is recorded, never the query (it may hold
/// codes).
pub async fn observe(State(proxies): State<Arc<TrustedProxies>>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let addr = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| proxies.client_addr(peer.ip(), req.headers()));
    let method = req.method().as_str().to_owned();
    let route = route_of(&req);
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_valid_request_id(v))
        .map_or_else(new_request_id, str::to_owned);
    let caller_trace = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse);
    let span = tracing::info_span!(
        "request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = %method,
        http.route = %route,
        url.path = %req.uri().path(),
        http.response.status_code = Empty,
        client.address = Empty,
        request_id = %request_id,
        trace_id = Empty,
    );
    if let Some(addr) = addr {
        span.record("client.address", tracing::field::display(addr.client));
        req.extensions_mut().insert(addr);
    }
    let traceparent = TraceParent::adopt(&span, caller_trace);
    req.extensions_mut().insert(RequestIds {
        request_id: request_id.clone(),
        traceparent,
    });
    let mut response = next.run(req).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    let elapsed = started.elapsed();
    let labels = metrics::HttpLabels {
        method,
        route,
        status: status.as_u16(),
    };
    metrics().http(&labels, elapsed);
    tracing::debug!(parent: &span, status = status.as_u16(), elapsed_ms = elapsed.as_secs_f64() * 1e3, "answered");
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}
