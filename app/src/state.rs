//! The shared application state handed to every handler and server function.

use axum::extract::FromRef;
use leptos::config::LeptosOptions;
use std::sync::Arc;

use sqlx::PgPool;

use crate::prefect::PrefectClient;

/// Everything a request may need, built once at start-up.
#[derive(Clone, FromRef)]
pub struct AppState {
    /// Leptos' rendering options (site root, output name).
    pub leptos_options: LeptosOptions,
    /// The `PostgreSQL` pool.
    pub db: PgPool,
    /// Whether cookies get `Secure` and the `__Host-` prefix (served over HTTPS).
    pub secure_cookies: bool,
    /// The Prefect API, when configured (cancelling a submitted run needs it).
    pub prefect: Option<Arc<PrefectClient>>,
}
