//! The whole HTTP application: REST, pages, server functions, static files, identity, and
//! the security headers every response carries.
//!
//! `main` and the integration tests both serve exactly this router.

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use leptos::prelude::*;
use leptos_axum::{LeptosRoutes, generate_route_list};
use leptos_meta::MetaTags;

use crate::{App, api, auth, telemetry};

mod health;
pub mod metrics;
mod openapi;
mod openapi30;
mod state;

pub use state::{AppState, Builder};
use std::time::Duration;
use tower_http::timeout::TimeoutLayer;

/// The HTML document around the app, rendered on the server, with a Content Security
/// Policy whose script nonce is new for each response.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    leptos::nonce::provide_nonce();
    if let (Some(nonce), Some(response)) = (
        leptos::nonce::use_nonce(),
        use_context::<leptos_axum::ResponseOptions>(),
    ) && let Ok(policy) = HeaderValue::from_str(&page_policy(&nonce, &sign_in_form_target()))
    {
        response.insert_header(header::CONTENT_SECURITY_POLICY, policy);
    }
    // Clients that send neither Origin nor Sec-Fetch-Site prove same-origin with this.
    let secure = use_context::<AppState>().is_some_and(|state| state.identity.secure_cookies);
    let csrf = use_context::<http::request::Parts>()
        .and_then(|parts| auth::headers::csrf_token_of(&parts.headers, secure))
        .map(|token| view! { <meta name="csrf-token" content=token /> });
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <meta name="color-scheme" content="light dark" />
                <link rel="icon" href="/favicon.svg" type="image/svg+xml" />
                {csrf}
                <HydrationScripts options islands=true />
                <MetaTags />
            </head>
            <body>
                <App />
            </body>
        </html>
    }
}

/// A page's policy: scripts only with this response's nonce (and what they load), wasm
/// compiled by them, everything else from this origin, and never inside a frame.
fn page_policy(nonce: &str, form_targets: &str) -> String {
    format!(
        "default-src 'self'; script-src 'nonce-{nonce}' 'strict-dynamic' 'wasm-unsafe-eval'; \
         style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
         base-uri 'none'; form-action 'self'{form_targets}; frame-ancestors 'none'"
    )
}

/// On the sign-in page, the issuer's origin: its sign-in form is redirected there, and
/// `form-action` governs redirects of a form submission too.
fn sign_in_form_target() -> String {
    let on_login = use_context::<http::request::Parts>().is_some_and(|p| p.uri.path() == "/login");
    use_context::<AppState>()
        .and_then(|state| state.identity.oidc.as_ref()?.issuer_origin())
        .filter(|_| on_login)
        .map(|origin| format!(" {origin}"))
        .unwrap_or_default()
}

/// What every other response (JSON, events, files) may do when a browser opens it: nothing.
const NOTHING_POLICY: &str = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'";

/// Adds the security headers to every response; a page's own policy (with its nonce) stays.
async fn secure_headers(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let fixed: [(HeaderName, &str); 4] = [
        (header::CONTENT_SECURITY_POLICY, NOTHING_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
    ];
    for (name, value) in fixed {
        headers
            .entry(name)
            .or_insert_with(|| HeaderValue::from_static(value));
    }
    headers.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    // Pages are the signed-in person's own and carry a one-time nonce and form keys: no
    // cache keeps them, and the back button asks for them afresh.
    let page = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"text/html"));
    if page {
        headers
            .entry(header::CACHE_CONTROL)
            .or_insert_with(|| HeaderValue::from_static("no-store"));
    }
    // Secure cookies mean Flowdeck is reached over HTTPS: browsers should never try HTTP.
    if state.identity.secure_cookies {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=63072000; includeSubDomains"),
        );
    }
    response
}

/// Builds the application's router around `state`.
pub fn router(state: AppState) -> Router {
    let routes = generate_route_list(App);
    let options = state.leptos_options.clone();
    let parts = state.clone();
    let fallback_parts = state.clone();
    Router::new()
        .merge(openapi::router())
        .merge(auth::oidc_routes::router())
        .route("/metrics", axum::routing::get(metrics::protected_metrics))
        .merge(crate::mcp::http::router(state.mcp_parts()))
        .leptos_routes_with_context(
            &state,
            routes,
            move || parts.provide_parts(),
            move || shell(options.clone()),
        )
        .fallback(leptos_axum::file_and_error_handler_with_context::<AppState, _>(
            move || fallback_parts.provide_parts(),
            shell,
        ))
        .layer(axum::middleware::from_fn(api::encoding::encode_kept))
        .layer(axum::middleware::from_fn_with_state(
            state.freshness.clone(),
            api::cache::after_writes,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.identity.clone(),
            auth::middleware::identify,
        ))
        .layer(DefaultBodyLimit::max(api::MAX_BODY_BYTES))
        // Refusals too, the identity layer's among them, as problem details when asked.
        .layer(axum::middleware::from_fn(crate::error::problem_media_type))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            secure_headers,
        ))
        // A request that takes this long is answered 503 (the event stream's body is not
        // bounded: only the time to its response head).
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(30),
        ))
        // Outermost: every answer, refusals and time-outs included, has its ids, span and count.
        .layer(axum::middleware::from_fn_with_state(
            state.trusted_proxies.clone(),
            telemetry::http::observe,
        ))
        .with_state(state)
}

/// Serves `app` on `listener` until `shutdown` completes, then drains.
///
/// Every event stream ends at once (they never finish by themselves), new connections are
/// refused, and the requests in flight finish (each bounded by the request time-out)
/// before this returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    hub: std::sync::Arc<crate::events::hub::Hub>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let draining = async move {
        shutdown.await;
        hub.close();
    };
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(draining)
    .await
}
