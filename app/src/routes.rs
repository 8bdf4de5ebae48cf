//! The whole HTTP application: REST, pages, server functions, static files, identity.
//!
//! `main` and the integration tests both serve exactly this router.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use leptos_axum::{LeptosRoutes, generate_route_list};

use crate::state::AppState;
use crate::{App, api, auth, shell};

/// Builds the application's router around `state`.
pub fn router(state: AppState) -> Router {
    let routes = generate_route_list(App);
    let options = state.leptos_options.clone();
    Router::new()
        .merge(api::router())
        .leptos_routes(&state, routes, move || shell(options.clone()))
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(shell))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::middleware::identify,
        ))
        .layer(DefaultBodyLimit::max(api::MAX_BODY_BYTES))
        .with_state(state)
}
