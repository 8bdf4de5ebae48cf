//! The dashboard: every pipeline with its latest run, filtered, sorted and paginated on the
//! server from the URL (so views are shareable and the back button works), kept live by the
//! change feed.
//!
//! The rows are rendered on the server only, also when they change: the island holds the
//! filters and the change-feed follower, and replaces the rows with HTML the server renders
//! (`dashboard_rows`). So the browser's wasm carries no pipeline type and no row markup, and
//! the dashboard's first load stays small.

use leptos::prelude::*;
use leptos_router::hooks::use_location;

use super::page::{NewPipelineLink, StageDots};
use super::{DashboardPage as Page, DashboardQuery, dashboard, dashboard_rows};
use crate::events::live::{self, LiveIndicator};
use crate::layout::Frame;
use crate::runs::charts::{Sparkline, StatusBar};
use crate::status::RunStatus;
use crate::ui::regions::{self, Loads, Throttle};
use crate::ui::{Ago, ErrorView, StatusBadge, history};

/// The id of the element holding the rows, which the island replaces.
const ROWS_ID: &str = "dashboard-rows";

/// Every pipeline with its latest run.
#[component]
pub fn DashboardPage() -> impl IntoView {
    let query = DashboardQuery::from_search(&use_location().search.get_untracked());
    let data = OnceResource::new(dashboard(Some(query.clone())));
    view! {
        <Frame>
            <section class="page-head">
                <h1>"Pipelines"</h1>
                <NewPipelineLink />
            </section>
            <Suspense fallback=|| view! { <p class="muted">"Loading pipelines…"</p> }>
                {move || {
                    let query = query.clone();
                    Suspend::new(async move {
                        match data.await {
                            Ok(page) => view! {
                                <DashboardFilters query=query.clone() />
                                <div id=ROWS_ID><DashboardRows page query /></div>
                            }
                            .into_any(),
                            Err(error) => view! { <ErrorView error /> }.into_any(),
                        }
                    })
                }}
            </Suspense>
        </Frame>
    }
}

/// The filters and the live indicator: an island, so filtering happens in place (the URL
/// follows with `history.pushState`, and the back button is heard) and the rows follow the
/// change feed. Eager (in the main wasm module), so the dashboard is interactive after one
/// wasm download.
#[island]
fn DashboardFilters(query: DashboardQuery) -> impl IntoView {
    crate::ui::mark_hydrated();
    let query = RwSignal::new(query);
    let loads = Loads::new();
    // Status changes of the rows shown, for screen readers (not every refresh).
    let announce = RwSignal::new(String::new());
    let load = Callback::new(move |()| {
        let rows = dashboard_rows(Some(query.get_untracked()));
        loads.load(rows, move |html| {
            let before = regions::attributes(ROWS_ID, "data-status");
            regions::put(ROWS_ID, &html);
            let changed = regions::changed(&before, &regions::attributes(ROWS_ID, "data-status"));
            if !changed.is_empty() {
                announce.set(changed.join("; "));
            }
        });
    });
    let set_filter = move |field: &str, value: String| {
        let value = Some(value).filter(|v| !v.trim().is_empty());
        query.update(|q| {
            match field {
                "q" => q.q = value,
                "status" => q.status = value,
                "tag" => q.tag = value,
                _ => q.sort = value,
            }
            q.page = None;
        });
        // Typing replaces the history entry; choosing from a menu makes a new one.
        history::show(&query.get_untracked().to_url(1), field == "q" || field == "tag");
        load.run(());
    };
    // Back and forward: the URL is the truth.
    let listener = window_event_listener(leptos::ev::popstate, move |_| {
        query.set(DashboardQuery::from_search(&history::search()));
        load.run(());
    });
    on_cleanup(move || listener.remove());
    // Any change may move a row or the totals (which count every page).
    let throttle = Throttle::new(load);
    let link = live::follow(String::new(), Callback::new(move |()| throttle.changed()), load);
    view! {
        <Toolbar query set_filter>
            <LiveIndicator link />
        </Toolbar>
        <span class="visually-hidden" role="status" aria-live="polite" data-testid="rows-announce">
            {move || announce.get()}
        </span>
    }
}

/// Search, status, tag and sort. Without JavaScript it is a plain GET form; in the browser
/// each change goes to `set_filter`.
#[component]
fn Toolbar(
    query: RwSignal<DashboardQuery>,
    set_filter: impl Fn(&str, String) + Copy + 'static,
    children: Children,
) -> impl IntoView {
    let current = query.get_untracked();
    let status_now = current.status.clone().unwrap_or_default();
    let sort_now = current.sort.clone().unwrap_or_else(|| "updated".to_owned());
    let field = move |get: fn(&DashboardQuery) -> &Option<String>| {
        move || query.with(|q| get(q).clone().unwrap_or_default())
    };
    view! {
        <form class="toolbar" role="search" method="get" action="/">
            <input
                type="search"
                name="q"
                class="filter"
                placeholder="Filter by name, slug or tag"
                aria-label="Filter pipelines"
                data-testid="pipeline-filter"
                value=current.q.clone().unwrap_or_default()
                prop:value=field(|q| &q.q)
                on:input=move |ev| set_filter("q", event_target_value(&ev))
            />
            <select
                name="status"
                aria-label="Status"
                data-testid="status-filter"
                prop:value=field(|q| &q.status)
                on:change=move |ev| set_filter("status", event_target_value(&ev))
            >
                <option value="" selected=status_now.is_empty()>"Any status"</option>
                {RunStatus::ALL
                    .into_iter()
                    .map(|s| {
                        let selected = s.as_str() == status_now;
                        view! { <option value=s.as_str() selected=selected>{s.as_str()}</option> }
                    })
                    .collect_view()}
            </select>
            <input
                type="text"
                name="tag"
                class="tag-filter"
                placeholder="Tag"
                aria-label="Tag"
                value=current.tag.clone().unwrap_or_default()
                prop:value=field(|q| &q.tag)
                on:change=move |ev| set_filter("tag", event_target_value(&ev))
            />
            <select
                name="sort"
                aria-label="Sort by"
                prop:value=move || query.with(|q| q.sort.clone().unwrap_or_else(|| "updated".to_owned()))
                on:change=move |ev| set_filter("sort", event_target_value(&ev))
            >
                {[("updated", "Recently updated"), ("name", "Name"), ("status", "Status"), ("created", "Newest")]
                    .into_iter()
                    .map(|(value, label)| {
                        let selected = value == sort_now;
                        view! { <option value=value selected=selected>{label}</option> }
                    })
                    .collect_view()}
            </select>
            <noscript>
                <button type="submit">"Apply"</button>
            </noscript>
            {children()}
        </form>
    }
}

/// The totals, rows and pager of one page: rendered on the server, for the first load and
/// for each `dashboard_rows` answer.
#[component]
pub(super) fn DashboardRows(page: Page, query: DashboardQuery) -> impl IntoView {
    let everyone = page.by_status.iter().map(|(_, n)| n).sum::<i64>();
    let pages = (page.total + page.per_page - 1) / page.per_page;
    let number = page.page;
    let totals = page
        .by_status
        .iter()
        .map(|&(s, n)| {
            let href = DashboardQuery {
                status: Some(s.as_str().to_owned()),
                ..DashboardQuery::default()
            }
            .to_url(1);
            view! { <li><a href=href class="plain"><StatusBadge status=s />" "{n}</a></li> }
        })
        .collect_view();
    let summary = view! {
        <div class="summary">
            <ul class="totals" aria-label="Pipelines by status">{totals}</ul>
            <StatusBar counts=page.by_status.clone() />
            <span class="muted" data-testid="pipeline-count">{format!("{} of {everyone}", page.total)}</span>
        </div>
    };
    if page.total == 0 {
        let empty = if query.is_filtered() {
            view! { <p class="empty">"No pipeline matches these filters. " <a href="/">"Clear them"</a></p> }
                .into_any()
        } else {
            view! {
                <p class="empty">
                    "No pipelines yet. Create one with " <code>"POST /api/pipelines/"</code>
                    " or the New pipeline button."
                </p>
            }
            .into_any()
        };
        return view! { {summary} {empty} }.into_any();
    }
    let rows = page
        .pipelines
        .into_iter()
        .map(|p| {
            let tags = p
                .tags
                .iter()
                .map(|t| {
                    let href = DashboardQuery {
                        tag: Some(t.clone()),
                        ..DashboardQuery::default()
                    }
                    .to_url(1);
                    view! { " " <a class="tag" href=href>{t.clone()}</a> }
                })
                .collect_view();
            // Why the latest run failed, on hover.
            let reason = matches!(p.status, RunStatus::Failed | RunStatus::Crashed)
                .then(|| crate::runs::failure_reason(&p.stages, p.error_message.as_deref()))
                .flatten();
            let spoken = format!("{}: {}", p.name, p.status.as_str());
            view! {
                <tr data-testid="pipeline-row" data-status=spoken>
                    <td>
                        <a href=format!("/pipelines/{}", p.id)>{p.name}</a>
                        <div class="muted small">{p.slug}{tags}</div>
                    </td>
                    <td title=reason><StatusBadge status=p.status /></td>
                    <td><StageDots stages=p.stages.into_iter().map(|s| (s.name, s.status)).collect() /></td>
                    <td><Sparkline points=p.recent_runs /></td>
                    <td class="num">{p.records_processed}</td>
                    <td class="small"><Ago at=p.updated_at /></td>
                </tr>
            }
        })
        .collect_view();
    view! {
        {summary}
        <table class="grid">
            <thead>
                <tr>
                    <th scope="col">"Pipeline"</th>
                    <th scope="col">"Status"</th>
                    <th scope="col">"Stages"</th>
                    <th scope="col">"Last runs"</th>
                    <th scope="col" class="num">"Records"</th>
                    <th scope="col">"Updated"</th>
                </tr>
            </thead>
            <tbody>{rows}</tbody>
        </table>
        <nav class="pager" aria-label="Pages">
            {(number > 1).then(|| view! { <a rel="prev" href=query.to_url(number - 1)>"← Previous"</a> })}
            <span class="muted">{format!("Page {number} of {}", pages.max(1))}</span>
            {(number < pages).then(|| view! { <a rel="next" href=query.to_url(number + 1)>"Next →"</a> })}
        </nav>
    }
    .into_any()
}
