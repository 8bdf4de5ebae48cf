//! The application state: every part a handler, server function or worker may need, built
//! once by [`Builder`] (the one way `main` and the tests make it).
//!
//! Capabilities never name [`AppState`]: REST handlers take the parts they use as
//! `State<…>` (through `FromRef`), and server functions read the same parts as Leptos
//! context, which [`AppState::provide_parts`] provides for every page and server function.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use leptos::config::LeptosOptions;
use leptos::prelude::provide_context;
use sqlx::PgPool;

use crate::api::cache::{Answers, Freshness};
use crate::auth::Identity;
use crate::auth::limits::{Budgets, Limits};
use crate::auth::oidc::Oidc;
use crate::auth::proxy::ProxyConfig;
use crate::client_addr::TrustedProxies;
use crate::events::hub::Hub;
use crate::prefect::{PrefectClient, PrefectLinks};
use crate::runs::reports::ReportWriter;
use crate::runs::triggers::TriggerWriter;

/// Everything a request may need, built once at start-up.
#[derive(Clone, FromRef)]
pub struct AppState {
    /// Leptos' rendering options (site root, output name).
    pub leptos_options: LeptosOptions,
    /// The `PostgreSQL` pool.
    pub db: PgPool,
    /// What identifying callers needs (see [`Identity`]).
    pub identity: Identity,
    /// The Prefect API, when configured (cancelling a submitted run needs it).
    pub prefect: Option<Arc<PrefectClient>>,
    /// The default deployment and Prefect's UI.
    pub links: PrefectLinks,
    /// This replica's status report writers (grouped commits).
    pub reports: Arc<ReportWriter>,
    /// This replica's trigger writers (grouped commits).
    pub triggers: Arc<TriggerWriter>,
    /// Answers of read-only listings kept until the next change.
    pub answers: Arc<Answers>,
    /// Moves when what the database holds may have changed.
    pub freshness: Arc<Freshness>,
    /// This replica's fan-out of the change feed.
    pub hub: Arc<Hub>,
    /// Proxies whose `Forwarded`/`X-Forwarded-For` headers name the client.
    pub trusted_proxies: Arc<TrustedProxies>,
}

/// The rate limits handlers take are the identity's (one set per replica).
impl FromRef<AppState> for Arc<Limits> {
    fn from_ref(state: &AppState) -> Self {
        state.identity.limits.clone()
    }
}

impl AppState {
    /// The parts the MCP server's tools call services with.
    pub fn mcp_parts(&self) -> crate::mcp::McpParts {
        crate::mcp::McpParts {
            db: self.db.clone(),
            answers: self.answers.clone(),
            prefect: self.prefect.clone(),
            links: self.links.clone(),
            limits: self.identity.limits.clone(),
            triggers: self.triggers.clone(),
            hub: self.hub.clone(),
        }
    }

    /// Makes the parts server functions read available as Leptos context.
    pub fn provide_parts(&self) {
        provide_context(self.db.clone());
        provide_context(self.identity.clone());
        provide_context(self.prefect.clone());
        provide_context(self.links.clone());
        provide_context(self.identity.limits.clone());
        provide_context(self.reports.clone());
        provide_context(self.triggers.clone());
        provide_context(self.answers.clone());
        provide_context(self.clone());
    }
}

/// Builds the [`AppState`]: the database and the defaults, changed by its methods.
pub struct Builder {
    db: PgPool,
    leptos_options: LeptosOptions,
    secure_cookies: bool,
    prefect: Option<Arc<PrefectClient>>,
    links: PrefectLinks,
    budgets: Budgets,
    oidc: Option<Arc<Oidc>>,
    proxy: Option<Arc<ProxyConfig>>,
    trusted_proxies: TrustedProxies,
    callback_ttl: Duration,
}

impl Builder {
    /// An application on `db`: plain-HTTP cookies, no Prefect, no issuer or proxy, the
    /// default budgets, callback credentials that work for a day.
    pub fn new(db: PgPool) -> Self {
        Self {
            db,
            leptos_options: LeptosOptions::builder().output_name("flowdeck").build(),
            secure_cookies: false,
            prefect: None,
            links: PrefectLinks::default(),
            budgets: Budgets::default(),
            oidc: None,
            proxy: None,
            trusted_proxies: TrustedProxies::default(),
            callback_ttl: Duration::from_secs(24 * 3600),
        }
    }

    /// Leptos' rendering options.
    #[must_use]
    pub fn leptos_options(mut self, options: LeptosOptions) -> Self {
        self.leptos_options = options;
        self
    }

    /// Whether cookies get `Secure` and the `__Host-` prefix (served over HTTPS).
    #[must_use]
    pub fn secure_cookies(mut self, secure: bool) -> Self {
        self.secure_cookies = secure;
        self
    }

    /// The Prefect API.
    #[must_use]
    pub fn prefect(mut self, prefect: Option<Arc<PrefectClient>>) -> Self {
        self.prefect = prefect;
        self
    }

    /// The default deployment and Prefect's UI.
    #[must_use]
    pub fn links(mut self, links: PrefectLinks) -> Self {
        self.links = links;
        self
    }

    /// The rate-limit budgets.
    #[must_use]
    pub fn budgets(mut self, budgets: Budgets) -> Self {
        self.budgets = budgets;
        self
    }

    /// The OpenID Connect issuer.
    #[must_use]
    pub fn oidc(mut self, oidc: Option<Arc<Oidc>>) -> Self {
        self.oidc = oidc;
        self
    }

    /// The trusted identity-aware proxy.
    #[must_use]
    pub fn proxy(mut self, proxy: Option<ProxyConfig>) -> Self {
        self.proxy = proxy.map(Arc::new);
        self
    }

    /// Proxies whose forwarding headers name the client.
    #[must_use]
    pub fn trusted_proxies(mut self, proxies: TrustedProxies) -> Self {
        self.trusted_proxies = proxies;
        self
    }

    /// How long a run's callback credential works at most.
    #[must_use]
    pub fn callback_ttl(mut self, ttl: Duration) -> Self {
        self.callback_ttl = ttl;
        self
    }

    /// The state; starts this replica's status report writers (call it inside the runtime).
    pub fn build(self) -> AppState {
        let freshness = Arc::new(Freshness::default());
        let identity = Identity {
            db: self.db.clone(),
            limits: Arc::new(Limits::new(self.budgets)),
            known_keys: Arc::default(),
            freshness: freshness.clone(),
            oidc: self.oidc,
            proxy: self.proxy,
            secure_cookies: self.secure_cookies,
            callback_ttl: self.callback_ttl,
        };
        AppState {
            leptos_options: self.leptos_options,
            reports: ReportWriter::start(self.db.clone()),
            triggers: TriggerWriter::start(self.db.clone()),
            db: self.db,
            identity,
            prefect: self.prefect,
            links: self.links,
            answers: Arc::new(Answers::new(freshness.clone())),
            hub: Hub::new(freshness.clone()),
            freshness,
            trusted_proxies: Arc::new(self.trusted_proxies),
        }
    }
}
