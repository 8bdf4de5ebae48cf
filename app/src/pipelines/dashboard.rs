//! The dashboard: every pipeline with its latest run, filtered, sorted and paginated on the
//! server from the URL (so views are shareable and the back button works), kept live by the
//! change feed.

use leptos::prelude::*;
use leptos_router::hooks::use_location;

use super::page::{NewPipelineLink, StageDots};
use super::{DashboardPage as Page, DashboardQuery, Pipeline, dashboard, get_pipeline};
use crate::events::Change;
use crate::events::live::{self, LiveIndicator};
use crate::layout::Frame;
use crate::runs::charts::{Sparkline, StatusBar};
use crate::status::RunStatus;
use crate::ui::{Ago, ErrorView, StatusBadge, history};

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
                            Ok(page) => view! { <LiveDashboard page query /> }.into_any(),
                            Err(error) => view! { <ErrorView error /> }.into_any(),
                        }
                    })
                }}
            </Suspense>
        </Frame>
    }
}

/// The filters, totals, rows and pager of the dashboard: an island, so filtering happens in
/// place (the URL follows with `history.pushState`, and the back button is heard) and the
/// rows follow the change feed.
#[island(lazy)]
fn LiveDashboard(page: Page, query: DashboardQuery) -> impl IntoView {
    crate::ui::mark_hydrated();
    let query = RwSignal::new(query);
    let page = RwSignal::new(page);
    // Loads the page for the current filters; an answer for filters since changed is dropped.
    let load = move || {
        let wanted = query.get_untracked();
        leptos::task::spawn_local(async move {
            if let Ok(fresh) = dashboard(Some(wanted.clone())).await
                && query.with_untracked(|q| *q == wanted)
            {
                page.set(fresh);
            }
        });
    };
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
        load();
    };
    // Back and forward: the URL is the truth.
    let listener = window_event_listener(leptos::ev::popstate, move |_| {
        query.set(DashboardQuery::from_search(&history::search()));
        load();
    });
    on_cleanup(move || listener.remove());
    // Totals follow run changes through a reload, at most one each half second.
    let reload_due = StoredValue::new(false);
    let reload_soon = Callback::new(move |()| {
        if !reload_due.get_value() {
            reload_due.set_value(true);
            set_timeout(
                move || {
                    reload_due.set_value(false);
                    load();
                },
                std::time::Duration::from_millis(500),
            );
        }
    });
    let link = live::follow(
        String::new(),
        on_change(page, query, reload_soon),
        Callback::new(move |()| load()),
    );
    view! {
        <Toolbar query set_filter />
        <PipelineTable page query link />
    }
}

/// Search, status, tag and sort. Without JavaScript it is a plain GET form; in the browser
/// each change goes to `set_filter`.
#[component]
fn Toolbar(
    query: RwSignal<DashboardQuery>,
    set_filter: impl Fn(&str, String) + Copy + 'static,
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
        </form>
    }
}

/// Applies one change to the page shown: rows change in place; a new pipeline appears where
/// it would be listed (first on the unfiltered first page by update or creation time).
fn on_change(
    page: RwSignal<Page>,
    query: RwSignal<DashboardQuery>,
    reload_soon: Callback<()>,
) -> Callback<Change> {
    Callback::new(move |change: Change| match change.kind.as_str() {
        "pipeline.created" | "pipeline.updated" => {
            let id = change.pipeline_id;
            let known = page.with_untracked(|p| p.pipelines.iter().any(|row| row.id == id));
            let takes_new = page.with_untracked(|p| p.page == 1)
                && query.with_untracked(|q| {
                    !q.is_filtered() && matches!(q.sort.as_deref(), None | Some("" | "updated" | "created"))
                });
            if known || (takes_new && change.kind == "pipeline.created") {
                leptos::task::spawn_local(async move {
                    if let Ok(fresh) = get_pipeline(id).await {
                        page.update(|p| match p.pipelines.iter_mut().find(|row| row.id == fresh.id) {
                            Some(row) => *row = fresh,
                            None => {
                                p.pipelines.insert(0, fresh);
                                p.pipelines.truncate(usize::try_from(p.per_page).unwrap_or(50));
                                p.total += 1;
                            }
                        });
                    }
                });
            }
            if change.kind == "pipeline.created" {
                reload_soon.run(());
            }
        }
        kind => {
            page.maybe_update(|p| {
                let mut changed = false;
                for row in &mut p.pipelines {
                    changed |= super::live::to_pipeline(row, &change);
                }
                changed
            });
            // A run's status moves its pipeline between the totals, which count every page.
            if kind == "run.status" || kind == "run.created" {
                reload_soon.run(());
            }
        }
    })
}

/// The totals, rows and pager of the page shown, updated live.
#[component]
fn PipelineTable(
    page: RwSignal<Page>,
    query: RwSignal<DashboardQuery>,
    link: ReadSignal<live::Link>,
) -> impl IntoView {
    let by_status = move || page.with(|p| p.by_status.clone());
    let everyone = move || page.with(|p| p.by_status.iter().map(|(_, n)| n).sum::<i64>());
    let total = move || page.with(|p| p.total);
    let filtered = move || query.with(DashboardQuery::is_filtered);
    let pager = move || {
        let (total, number, per_page) = page.with(|p| (p.total, p.page, p.per_page));
        let pages = (total + per_page - 1) / per_page;
        let q = query.get();
        view! {
            {(number > 1).then(|| view! { <a rel="prev" href=q.to_url(number - 1)>"← Previous"</a> })}
            <span class="muted">{format!("Page {number} of {}", pages.max(1))}</span>
            {(number < pages).then(|| view! { <a rel="next" href=q.to_url(number + 1)>"Next →"</a> })}
        }
    };
    view! {
        <div class="summary">
            <ul class="totals" aria-label="Pipelines by status">
                {move || by_status()
                    .into_iter()
                    .map(|(s, n)| {
                        let href = DashboardQuery { status: Some(s.as_str().to_owned()), ..DashboardQuery::default() }.to_url(1);
                        view! { <li><a href=href class="plain"><StatusBadge status=s />" "{n}</a></li> }
                    })
                    .collect_view()}
            </ul>
            {move || view! { <StatusBar counts=by_status() /> }}
            <span class="muted" data-testid="pipeline-count">{move || format!("{} of {}", total(), everyone())}</span>
            <LiveIndicator link />
        </div>
        <Show
            when=move || { total() > 0 }
            fallback=move || {
                if filtered() {
                    view! {
                        <p class="empty">"No pipeline matches these filters. " <a href="/">"Clear them"</a></p>
                    }
                    .into_any()
                } else {
                    view! {
                        <p class="empty">
                            "No pipelines yet. Create one with " <code>"POST /api/pipelines/"</code>
                            " or the New pipeline button."
                        </p>
                    }
                    .into_any()
                }
            }
        >
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
                <tbody>
                    <For each=move || page.with(|p| p.pipelines.clone()) key=|p: &Pipeline| (p.id, p.updated_at, p.status) let:p>
                        <tr data-testid="pipeline-row">
                            <td>
                                <a href=format!("/pipelines/{}", p.id)>{p.name.clone()}</a>
                                <div class="muted small">
                                    {p.slug.clone()}
                                    {p.tags
                                        .iter()
                                        .map(|t| {
                                            let href = DashboardQuery { tag: Some(t.clone()), ..DashboardQuery::default() }.to_url(1);
                                            view! { " " <a class="tag" href=href>{t.clone()}</a> }
                                        })
                                        .collect_view()}
                                </div>
                            </td>
                            <td><StatusBadge status=p.status /></td>
                            <td>
                                <StageDots stages=p.stages.iter().map(|s| (s.name.clone(), s.status)).collect() />
                            </td>
                            <td><Sparkline points=p.recent_runs.clone() /></td>
                            <td class="num">{p.records_processed}</td>
                            <td class="small"><Ago at=p.updated_at /></td>
                        </tr>
                    </For>
                </tbody>
            </table>
            <nav class="pager" aria-label="Pages">{pager}</nav>
        </Show>
    }
}
