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
    /// The deployment of pipelines that name none (`FLOWDECK_DEFAULT_DEPLOYMENT`).
    #[from_ref(skip)]
    pub default_deployment: Option<String>,
    /// Prefect's UI (`PREFECT_UI_URL`, else derived from the API URL), for links to flow runs.
    #[from_ref(skip)]
    pub prefect_ui_url: Option<String>,
    /// This replica's rate limits (failed authentications, triggers).
    pub limits: Arc<crate::auth::limits::Limits>,
    /// This replica's status report writers (grouped commits).
    pub reports: Arc<crate::runs::reports::ReportWriter>,
    /// Answers of read-only listings kept until the next change (see [`crate::api::cache`]).
    pub answers: Arc<crate::api::cache::Answers>,
    /// API keys this replica verified lately (see [`crate::auth::known_keys`]).
    pub known_keys: Arc<crate::auth::known_keys::KnownKeys>,
    /// This replica's fan-out of the change feed.
    pub hub: Arc<crate::events::hub::Hub>,
    /// The OpenID Connect issuer, when one is configured.
    #[from_ref(skip)]
    pub oidc: Option<Arc<crate::auth::oidc::Oidc>>,
    /// How long a run's callback credential works at most (`FLOWDECK_CALLBACK_TTL`).
    #[from_ref(skip)]
    pub callback_ttl: std::time::Duration,
    /// Proxies whose `Forwarded`/`X-Forwarded-For` headers name the client
    /// (`FLOWDECK_TRUSTED_PROXIES`).
    pub trusted_proxies: Arc<crate::client_addr::TrustedProxies>,
    /// The trusted identity-aware proxy, when one is configured.
    #[from_ref(skip)]
    pub proxy: Option<Arc<crate::auth::proxy::ProxyConfig>>,
}

impl AppState {
    /// Where Prefect's UI shows a flow run.
    pub fn flow_run_url(&self, flow_run_id: &str) -> Option<String> {
        self.prefect_ui_url
            .as_ref()
            .map(|ui| format!("{}/runs/flow-run/{flow_run_id}", ui.trim_end_matches('/')))
    }
}
