//! Pieces every page uses: status badges, times, errors (the page frame is `layout`).

use chrono::{DateTime, Utc};
use leptos::prelude::*;

use crate::error::AppError;
use crate::status::RunStatus;

pub mod form;
pub mod history;
pub mod regions;

#[cfg(feature = "ssr")]
#[path = "status_ssr.rs"]
mod http_status;
#[cfg(not(feature = "ssr"))]
#[path = "status_browser.rs"]
mod http_status;

/// Marks the page as taken over by the wasm (`<body data-hydrated>`) once this island has
/// hydrated; tests and people debugging wait for it. Islands load lazily, after the page.
pub fn mark_hydrated() {
    Effect::new(|_| {
        if let Some(body) = document().body() {
            body.set_attribute("data-hydrated", "true").ok();
        }
    });
}

/// The page's `:id` path parameter, when it is a number.
pub fn path_id() -> Option<i64> {
    leptos_router::hooks::use_params_map().with_untracked(|p| p.get("id").and_then(|id| id.parse().ok()))
}

/// A coloured badge for a run or stage status.
#[component]
pub fn StatusBadge(status: RunStatus) -> impl IntoView {
    view! { <span class=format!("badge badge-{}", status.as_str())>{status.as_str()}</span> }
}

/// A timestamp in UTC, or a dash.
pub fn when(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(
        || "—".to_owned(),
        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

/// How long ago `at` was, in words: `just now`, `5 min ago`, `3 h ago`, `2 d ago`.
pub fn ago(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let seconds = (now - at).num_seconds().max(0);
    match seconds {
        0..45 => "just now".to_owned(),
        45..3600 => format!("{} min ago", (seconds + 30) / 60),
        3600..86_400 => format!("{} h ago", seconds / 3600),
        _ => format!("{} d ago", seconds / 86_400),
    }
}

/// A relative time with the exact time on hover (and for machines, in `datetime`).
#[component]
pub fn Ago(at: DateTime<Utc>) -> impl IntoView {
    view! {
        <time datetime=at.to_rfc3339() title=when(Some(at))>{ago(at, Utc::now())}</time>
    }
}

/// Seconds as `1m 05s` or `3.2s`.
pub fn duration(seconds: Option<f64>) -> String {
    match seconds {
        None => "—".to_owned(),
        Some(s) if s < 60.0 => format!("{s:.1}s"),
        Some(s) => format!("{}m {:02}s", (s / 60.0).floor(), (s % 60.0).floor()),
    }
}

/// An error in place of a page's content; sets the HTTP status when rendered on the server.
#[component]
pub fn ErrorView(error: AppError) -> impl IntoView {
    http_status::set(error.status_code());
    let (title, hint) = match &error {
        AppError::NotFound { .. } => ("Not found", "It may have been deleted, or the link is wrong."),
        AppError::Forbidden { .. } => ("Not allowed", "Your role does not allow this."),
        AppError::OutOfScope { .. } => ("Not allowed", "The key you signed in with is limited to less."),
        AppError::Unauthorized => ("Signed out", "Sign in again to continue."),
        _ => ("Something went wrong", "Try again in a moment."),
    };
    view! {
        <section class="error-panel" role="alert">
            <h1>{title}</h1>
            <p>{error.to_string()}</p>
            <p class="muted">{hint}</p>
            <a href="/">"Back to pipelines"</a>
        </section>
    }
}

/// The refusal a server function answered a plain form post with: without JavaScript, it
/// sends the browser back with the error in the address (`__path` names the function,
/// `__err` holds the error). `path` is the function's (`<F as ServerFn>::PATH`). Shown as
/// text, and only on the page the form posted from (read from the page's request, so
/// nothing shows where a server function renders the same part afresh).
#[component]
pub fn FormError(path: &'static str) -> impl IntoView {
    #[cfg(feature = "ssr")]
    let error = use_context::<http::request::Parts>().and_then(|parts| {
        let query = parts.uri.query()?;
        let pairs = || form_urlencoded::parse(query.as_bytes());
        pairs().find(|(k, v)| k == "__path" && v == path)?;
        let (_, err) = pairs().find(|(k, _)| k == "__err")?;
        let error = leptos::server_fn::error::ServerFnUrlError::<AppError>::decode_err(&err);
        Some(error.to_string())
    });
    #[cfg(not(feature = "ssr"))]
    let error: Option<String> = {
        let _ = path;
        None
    };
    error.map(|e| view! { <p class="form-error" role="alert">{e}</p> })
}
