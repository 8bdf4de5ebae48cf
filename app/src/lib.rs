//! Flowdeck's application: pages, server functions and shared types, compiled for the
//! server (`ssr`) and for the browser (`hydrate`); server-only capabilities sit behind
//! `ssr` on their `mod` lines.

#![recursion_limit = "256"]

use leptos::prelude::*;
use leptos_meta::{Stylesheet, Title, provide_meta_context};
use leptos_router::components::{Route, Router, Routes};
use leptos_router::{SsrMode, path};

pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod caller;
pub mod error;
pub mod events;
pub mod filter;
pub mod layout;
pub mod pipelines;
pub mod runs;
pub mod status;
pub mod ui;
pub mod webhooks;

#[cfg(feature = "ssr")]
pub mod api;
#[cfg(feature = "ssr")]
pub mod client_addr;
#[cfg(feature = "ssr")]
pub mod db_roles;
#[cfg(feature = "ssr")]
pub mod mcp;
#[cfg(feature = "ssr")]
pub mod prefect;
#[cfg(feature = "ssr")]
pub mod retention;
#[cfg(feature = "ssr")]
pub mod routes;
#[cfg(feature = "ssr")]
pub mod shutdown;
#[cfg(feature = "ssr")]
pub mod telemetry;

/// The app's routes, rendered on the server only: the parts of a page that change in the
/// browser are islands (`#[island]`), the only components shipped as wasm.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    view! {
        <Stylesheet id="leptos" href="/pkg/flowdeck.css" />
        <Title text="Flowdeck" />
        <Router>
            <Routes fallback=layout::NotFoundPage>
                <Route path=path!("/login") view=auth::page::LoginPage />
                // Async: the whole page is rendered before the first byte, so a missing
                // pipeline or run can still answer 404 rather than a streamed 200.
                <Route path=path!("/") view=pipelines::dashboard::DashboardPage ssr=SsrMode::Async />
                <Route path=path!("/pipelines/new") view=pipelines::page::NewPipelinePage ssr=SsrMode::Async />
                <Route
                    path=path!("/pipelines/:id")
                    view=pipelines::page::PipelinePage
                    ssr=SsrMode::Async
                />
                <Route path=path!("/runs/:id") view=runs::page::RunPage ssr=SsrMode::Async />
                <Route path=path!("/admin/api-keys") view=api_keys::page::ApiKeysPage ssr=SsrMode::Async />
                <Route path=path!("/audit") view=audit::page::AuditTrailPage ssr=SsrMode::Async />
                <Route path=path!("/admin/webhooks") view=webhooks::page::WebhooksPage ssr=SsrMode::Async />
                <Route
                    path=path!("/admin/webhooks/:id")
                    view=webhooks::endpoint_page::EndpointPage
                    ssr=SsrMode::Async
                />
            </Routes>
        </Router>
    }
}
