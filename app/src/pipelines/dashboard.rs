//! The dashboard: every pipeline with its latest run, filtered, sorted and paginated on the
//! server from the URL (so views are shareable and the back button works), kept live by the
//! change feed.

use leptos::prelude::*;
use leptos_router::NavigateOptions;
use leptos_router::hooks::{use_navigate, use_query_map};

use super::page::{NewPipelineLink, StageDots};
use super::{DashboardPage as Page, DashboardQuery, Pipeline, dashboard, get_pipeline};
use crate::events::live::{self, LiveIndicator};
use crate::events::{Change, apply};
use crate::runs::RunStatus;
use crate::ui::charts::{Sparkline, StatusBar};
use crate::ui::{Ago, ErrorView, Frame, StatusBadge};

/// Every pipeline with its latest run.
#[component]
pub fn DashboardPage() -> impl IntoView {
    let params = use_query_map();
    let query = Memo::new(move |_| {
        params.with(|m| DashboardQuery {
            q: m.get("q"),
            status: m.get("status"),
            tag: m.get("tag"),
            sort: m.get("sort"),
            page: m.get("page").and_then(|p| p.parse().ok()),
        })
    });
    let data = Resource::new(move || query.get(), |q| dashboard(Some(q)));
    let reload = Callback::new(move |()| data.refetch());
    view! {
        <Frame>
            <section class="page-head">
                <h1>"Pipelines"</h1>
                <NewPipelineLink />
            </section>
            <Toolbar query />
            <Transition fallback=|| view! { <p class="muted">"Loading pipelines…"</p> }>
                {move || Suspend::new(async move {
                    match data.await {
                        Ok(page) => {
                            view! { <PipelineTable page query=query.get_untracked() reload /> }.into_any()
                        }
                        Err(error) => view! { <ErrorView error /> }.into_any(),
                    }
                })}
            </Transition>
        </Frame>
    }
}

/// Search, status, tag and sort; each change goes into the URL. Without JavaScript it is a
/// plain GET form.
#[component]
fn Toolbar(query: Memo<DashboardQuery>) -> impl IntoView {
    let navigate = use_navigate();
    let set = move |field: &str, value: String| {
        let mut q = query.get_untracked();
        let value = Some(value).filter(|v| !v.trim().is_empty());
        match field {
            "q" => q.q = value,
            "status" => q.status = value,
            "tag" => q.tag = value,
            _ => q.sort = value,
        }
        let options = NavigateOptions {
            // Typing replaces the entry; choosing from a menu makes a new one.
            replace: field == "q" || field == "tag",
            scroll: false,
            ..NavigateOptions::default()
        };
        navigate(&q.to_url(1), options);
    };
    let current = query.get_untracked();
    let status_now = current.status.clone().unwrap_or_default();
    let sort_now = current.sort.clone().unwrap_or_else(|| "updated".to_owned());
    let (set_q, set_status, set_tag, set_sort) = (set.clone(), set.clone(), set.clone(), set);
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
                on:input=move |ev| set_q("q", event_target_value(&ev))
            />
            <select
                name="status"
                aria-label="Status"
                data-testid="status-filter"
                on:change=move |ev| set_status("status", event_target_value(&ev))
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
                on:change=move |ev| set_tag("tag", event_target_value(&ev))
            />
            <select name="sort" aria-label="Sort by" on:change=move |ev| set_sort("sort", event_target_value(&ev))>
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

/// The rows of one page, their totals and the pager, updated live.
#[component]
fn PipelineTable(page: Page, query: DashboardQuery, reload: Callback<()>) -> impl IntoView {
    let rows = RwSignal::new(page.pipelines);
    let everyone: i64 = page.by_status.iter().map(|(_, n)| n).sum();
    let (total, number, per_page) = (page.total, page.page, page.per_page);
    // A new pipeline shows up where it would be listed: first on the unfiltered first page.
    let takes_new = number == 1
        && !query.is_filtered()
        && matches!(query.sort.as_deref(), None | Some("" | "updated" | "created"));
    let on_change = Callback::new(move |change: Change| match change.kind.as_str() {
        "pipeline.created" | "pipeline.updated" => {
            let id = change.pipeline_id;
            let known = rows.with_untracked(|list| list.iter().any(|p| p.id == id));
            if known || (takes_new && change.kind == "pipeline.created") {
                leptos::task::spawn_local(async move {
                    if let Ok(fresh) = get_pipeline(id).await {
                        rows.update(|list| match list.iter_mut().find(|p| p.id == fresh.id) {
                            Some(row) => *row = fresh,
                            None => {
                                list.insert(0, fresh);
                                list.truncate(usize::try_from(per_page).unwrap_or(50));
                            }
                        });
                    }
                });
            }
        }
        _ => rows.maybe_update(|list| {
            let mut changed = false;
            for p in list.iter_mut() {
                changed |= apply::to_pipeline(p, &change);
            }
            changed
        }),
    });
    let link = live::follow(String::new(), on_change, reload);
    let pages = (total + per_page - 1) / per_page;
    let filtered = query.is_filtered();
    view! {
        <div class="summary">
            <ul class="totals" aria-label="Pipelines by status">
                {page
                    .by_status
                    .iter()
                    .map(|(s, n)| {
                        let href = DashboardQuery { status: Some(s.as_str().to_owned()), ..DashboardQuery::default() }.to_url(1);
                        view! { <li><a href=href class="plain"><StatusBadge status=*s />" "{*n}</a></li> }
                    })
                    .collect_view()}
            </ul>
            <StatusBar counts=page.by_status.clone() />
            <span class="muted" data-testid="pipeline-count">{format!("{total} of {everyone}")}</span>
            <LiveIndicator link />
        </div>
        <Show
            when=move || { total > 0 }
            fallback=move || {
                if filtered {
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
                    <For each=move || rows.get() key=|p: &Pipeline| (p.id, p.updated_at, p.status) let:p>
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
            <nav class="pager" aria-label="Pages">
                {(number > 1).then(|| view! { <a rel="prev" href=query.to_url(number - 1)>"← Previous"</a> })}
                <span class="muted">{format!("Page {number} of {}", pages.max(1))}</span>
                {(number < pages).then(|| view! { <a rel="next" href=query.to_url(number + 1)>"Next →"</a> })}
            </nav>
        </Show>
    }
}
