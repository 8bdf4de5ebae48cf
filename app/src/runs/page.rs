//! The run page: a run's status, timings, parameters and stages.

use leptos::prelude::*;

use super::{CancelRun, RetryRun, Run, get_run};
use crate::auth::page::signed_in_as;
use crate::caller::Role;
use crate::error::AppError;
use crate::events::live::LiveIndicator;
use crate::layout::Frame;
use crate::runs::charts::StageTimeline;
use crate::ui::{ErrorView, StatusBadge, duration, path_id, when};

/// One run and its stages.
#[component]
pub fn RunPage() -> impl IntoView {
    let id = path_id();
    let run = OnceResource::new(async move {
        match id {
            Some(id) => get_run(id).await,
            None => Err(AppError::not_found("Run")),
        }
    });
    view! {
        <Frame>
            <Suspense fallback=|| view! { <p class="muted">"Loading run…"</p> }>
                {move || {
                    let may_operate = signed_in_as(Role::Operator);
                    Suspend::new(async move {
                        match run.await {
                            Ok(run) => {
                                let may_operate = may_operate.await;
                                view! { <LiveRun run may_operate /> }.into_any()
                            }
                            Err(error) => view! { <ErrorView error /> }.into_any(),
                        }
                    })
                }}
            </Suspense>
        </Frame>
    }
}

/// Cancel (while the run is live) and Retry (once it has finished), for operators.
#[component]
fn RunActions(run_id: i64, finished: bool, cancel: ServerAction<CancelRun>) -> impl IntoView {
    let retry = ServerAction::<RetryRun>::new();
    let error = move || {
        let failed = |r: Option<Result<_, AppError>>| r.and_then(|r| r.err()).map(|e| e.to_string());
        failed(cancel.value().get().map(|r| r.map(|_| ())))
            .or_else(|| failed(retry.value().get().map(|r| r.map(|_| ()))))
    };
    view! {
        <div class="run-form">
            <Show
                when=move || finished
                fallback=move || {
                    view! {
                        <ActionForm action=cancel>
                            <input type="hidden" name="id" value=run_id.to_string() />
                            <button type="submit" disabled=move || cancel.pending().get()>
                                "■ Cancel"
                            </button>
                        </ActionForm>
                    }
                }
            >
                <ActionForm action=retry>
                    <input type="hidden" name="id" value=run_id.to_string() />
                    <button type="submit" class="primary" disabled=move || retry.pending().get()>
                        "↻ Retry"
                    </button>
                </ActionForm>
            </Show>
            {move || error().map(|e| view! { <p class="form-error" role="alert">{e}</p> })}
        </div>
    }
}

/// The run, kept live by the change feed: an island. Operators also get Cancel and Retry.
#[island(lazy)]
fn LiveRun(run: Run, may_operate: bool) -> impl IntoView {
    crate::ui::mark_hydrated();
    let cancel = ServerAction::<CancelRun>::new();
    let id = run.id;
    let parameters = serde_json::to_string_pretty(&run.parameters).unwrap_or_default();
    let pipeline_id = run.pipeline_id;
    let pipeline_name = run.pipeline_name.clone();
    let retry_of = run.retry_of_run_id;
    let actor = format!("{} via {}", run.actor, run.source);
    let request_id = run.request_id.clone().unwrap_or_default();
    let created_at = run.created_at;
    let run = RwSignal::new(run);
    let reload = Callback::new(move |()| {
        leptos::task::spawn_local(async move {
            if let Ok(fresh) = get_run(id).await {
                run.set(fresh);
            }
        });
    });
    // A cancel answers with the run as it is now.
    Effect::new(move |_| {
        if let Some(Ok(fresh)) = cancel.value().get() {
            run.set(fresh);
        }
    });
    let on_change = Callback::new(move |change: crate::events::Change| {
        let mut linked = true;
        run.maybe_update(|r| {
            let changed = super::live::to_run(r, &change);
            linked = r.prefect_flow_run_id.is_none() || r.prefect_url.is_some();
            changed
        });
        // The link to Prefect's UI comes from the server.
        if !linked {
            reload.run(());
        }
    });
    let link = crate::events::live::follow(format!("?run_id={id}"), on_change, reload);
    let status = move || run.with(|r| r.status);
    view! {
        <section class="page-head">
            <div>
                <p class="crumbs">
                    <a href="/">"Pipelines"</a>" / "
                    <a href=format!("/pipelines/{pipeline_id}")>{pipeline_name}</a>
                    " / run"
                </p>
                <h1>{format!("Run #{id} ")}{move || view! { <StatusBadge status=status() /> }}</h1>
                {move || run.with(|r| r.error_message.clone()).map(|e| view! { <p class="form-error">{e}</p> })}
                {move || run.with(|r| r.stuck_since).map(|since| view! {
                    <p class="form-error" role="status">
                        {format!("No report since {} — the run may be stuck.", when(Some(since)))}
                    </p>
                })}
                {retry_of.map(|original| view! {
                    <p class="muted small">"Retry of "<a href=format!("/runs/{original}")>{format!("run #{original}")}</a></p>
                })}
            </div>
            <div class="head-side">
                <LiveIndicator link />
                {move || {
                    let finished = status().is_terminal();
                    may_operate.then(|| view! { <RunActions run_id=id finished cancel /> })
                }}
            </div>
        </section>
        <section class="card">
            <h2>"Timeline"</h2>
            {move || run.with(|r| view! { <StageTimeline stages=r.stages.clone() now=chrono::Utc::now() /> })}
        </section>
        <section class="card">
            <h2>"Stages"</h2>
                <table class="grid" data-testid="stage-table">
                    <thead>
                        <tr>
                            <th scope="col">"#"</th>
                            <th scope="col">"Stage"</th>
                            <th scope="col">"Status"</th>
                            <th scope="col">"Started"</th>
                            <th scope="col">"Duration"</th>
                            <th scope="col">"Records"</th>
                        </tr>
                    </thead>
                    <tbody>
                        {move || run.with(|r| r.stages
                            .iter()
                            .map(|s| view! {
                                <tr data-testid="stage-row">
                                    <td class="num">{s.position + 1}</td>
                                    <td>
                                        {s.name.clone()}
                                        {s.error_message.clone().map(|e| view! { <div class="form-error small">{e}</div> })}
                                    </td>
                                    <td><StatusBadge status=s.status /></td>
                                    <td class="small">{when(s.started_at)}</td>
                                    <td class="small">{duration(s.execution_time_seconds)}</td>
                                    <td class="num">{s.records_processed.map_or_else(|| "—".to_owned(), |n| n.to_string())}</td>
                                </tr>
                            })
                            .collect_view())}
                    </tbody>
                </table>
        </section>
        <div class="columns">
            <section class="card">
                <h2>"Details"</h2>
                <dl class="facts">
                    <dt>"Triggered by"</dt>
                    <dd>{actor}</dd>
                    <dt>"Request id"</dt>
                    <dd><code>{request_id}</code></dd>
                    <dt>"Created"</dt>
                    <dd>{when(Some(created_at))}</dd>
                    <dt>"Submitted"</dt>
                    <dd>{move || when(run.with(|r| r.submitted_at))}</dd>
                    <dt>"Started"</dt>
                    <dd>{move || when(run.with(|r| r.started_at))}</dd>
                    <dt>"Ended"</dt>
                    <dd>{move || when(run.with(|r| r.ended_at))}</dd>
                    <dt>"Prefect flow run"</dt>
                    <dd data-testid="prefect-flow-run">
                        {move || run.with(|r| match (r.prefect_flow_run_id.clone(), r.prefect_url.clone()) {
                            (Some(id), Some(url)) => view! {
                                <a href=url target="_blank" rel="noopener noreferrer">{id}" ↗"</a>
                            }
                            .into_any(),
                            (Some(id), None) => view! { <code>{id}</code> }.into_any(),
                            (None, _) => "not submitted yet".into_any(),
                        })}
                        {move || run.with(|r| r.prefect_state.clone()).map(|s| view! { <span class="muted small">" ("{s}")"</span> })}
                    </dd>
                    <dt>"Records"</dt>
                    <dd>{move || run.with(|r| r.records_processed)}</dd>
                </dl>
            </section>
            <section class="card">
                <h2>"Parameters"</h2>
                <pre class="code">{parameters}</pre>
            </section>
        </div>
    }
}
