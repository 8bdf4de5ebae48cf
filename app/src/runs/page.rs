//! The run page: a run's status, timings, parameters and stages.
//!
//! The page is rendered on the server, also when the run changes: the `RunLive` island
//! follows the change feed and puts the server's fresh HTML of the run (`run_parts`) in
//! place, so the browser's wasm carries no run type and no run markup.

use leptos::prelude::*;

use super::log_view::RunLogViewer;
use super::{CancelRun, RetryRun, Run, get_run, run_parts};
use crate::auth::page::signed_in_as;
use crate::caller::Role;
use crate::error::AppError;
use crate::events::live::{self, LiveIndicator};
use crate::layout::Frame;
use crate::runs::charts::StageTimeline;
use crate::status::RunStatus;
use crate::ui::regions::{self, Loads, Throttle};
use crate::ui::{ErrorView, FormError, StatusBadge, duration, path_id, when};

/// The id of the element holding the run's heading, which `RunLive` replaces.
pub(super) const HEAD_ID: &str = "run-head";
/// The id of the element holding Cancel or Retry, which `RunLive` replaces.
pub(super) const ACTIONS_ID: &str = "run-actions";
/// The id of the element holding the rest of the run, which `RunLive` replaces.
pub(super) const BODY_ID: &str = "run-body";

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
                                let run_id = run.id;
                                let finished = run.status.is_terminal();
                                let restart_from = run.restart_point();
                                let status = run.spoken_status();
                                let stages: Vec<String> = run.stages.iter().map(|s| s.name.clone()).collect();
                                view! {
                                    <section class="page-head">
                                        <div id=HEAD_ID><RunHead run=run.clone() /></div>
                                        <div class="head-side">
                                            <RunLive run_id status />
                                            <div id=ACTIONS_ID><RunActions run_id finished may_operate restart_from /></div>
                                        </div>
                                    </section>
                                    <div id=BODY_ID><RunBody run /></div>
                                    {prefect_configured().then(|| view! {
                                        <section class="card" aria-labelledby="logs-head">
                                            <h2 id="logs-head">"Logs"</h2>
                                            <RunLogViewer run_id stages />
                                        </section>
                                    })}
                                }
                                .into_any()
                            }
                            Err(error) => view! { <ErrorView error /> }.into_any(),
                        }
                    })
                }}
            </Suspense>
        </Frame>
    }
}

/// Whether this server talks to Prefect (without it there are no logs to show).
fn prefect_configured() -> bool {
    #[cfg(feature = "ssr")]
    {
        use_context::<Option<std::sync::Arc<crate::prefect::PrefectClient>>>()
            .flatten()
            .is_some()
    }
    #[cfg(not(feature = "ssr"))]
    false
}

/// The live indicator: an island that keeps the page's run current. Eager (in the main wasm
/// module, as the dashboard's), so the page needs no other wasm.
#[island]
fn RunLive(run_id: i64, status: String) -> impl IntoView {
    crate::ui::mark_hydrated();
    let loads = Loads::new();
    // The status as last shown, and what to announce when it changes.
    let last = StoredValue::new(status);
    let announce = RwSignal::new(String::new());
    let load = Callback::new(move |()| {
        loads.load(run_parts(run_id), move |parts| {
            regions::put(HEAD_ID, &parts.head);
            regions::put(ACTIONS_ID, &parts.actions);
            regions::put(BODY_ID, &parts.body);
            if last.get_value() != parts.status {
                announce.set(parts.status.clone());
                last.set_value(parts.status);
            }
        });
    });
    let throttle = Throttle::new(load);
    let link = live::follow(
        format!("?run_id={run_id}"),
        Callback::new(move |()| throttle.changed()),
        load,
    );
    view! {
        <LiveIndicator link />
        <span class="visually-hidden" role="status" aria-live="polite" data-testid="run-announce">
            {move || announce.get()}
        </span>
    }
}

/// Cancel (while the run is live) and Retry (once it has finished), for operators, with
/// "Retry from <stage>" when a later stage failed: plain forms posting to server functions.
/// Cancel comes back to this page, Retry goes to the new run's; a refusal comes back in
/// the address and shows here.
#[component]
pub(super) fn RunActions(
    run_id: i64,
    finished: bool,
    may_operate: bool,
    restart_from: Option<String>,
) -> impl IntoView {
    use leptos::server_fn::ServerFn;
    let (retry, cancel) = (ServerAction::<RetryRun>::new(), ServerAction::<CancelRun>::new());
    let form = match (may_operate, finished) {
        (false, _) => None,
        (true, true) => Some({
            // With a restart on offer, that is the main action.
            let retry_class = if restart_from.is_some() { "" } else { "primary" };
            view! {
                <div class="run-buttons">
                {restart_from.map(|stage| {
                    let label = format!("↻ Retry from {stage}");
                    view! {
                        <ActionForm action=retry>
                            <input type="hidden" name="id" value=run_id.to_string() />
                            <input type="hidden" name="from_stage" value=stage />
                            <button type="submit" class="primary" data-testid="retry-from">{label}</button>
                        </ActionForm>
                    }
                })}
                <ActionForm action=retry>
                    <input type="hidden" name="id" value=run_id.to_string() />
                    <button type="submit" class=retry_class>"↻ Retry"</button>
                </ActionForm>
                </div>
            }
            .into_any()
        }),
        (true, false) => Some(
            view! {
                <ActionForm action=cancel>
                    <input type="hidden" name="id" value=run_id.to_string() />
                    <button type="submit">"■ Cancel"</button>
                </ActionForm>
            }
            .into_any(),
        ),
    };
    form.map(|form| {
        view! {
            <div class="run-form">
                {form}
                <FormError path=CancelRun::PATH />
                <FormError path=RetryRun::PATH />
            </div>
        }
    })
}

/// The run's crumbs, heading with its status, error and retry link.
#[component]
pub(super) fn RunHead(run: Run) -> impl IntoView {
    let id = run.id;
    view! {
        <p class="crumbs">
            <a href="/">"Pipelines"</a>" / "
            <a href=format!("/pipelines/{}", run.pipeline_id)>{run.pipeline_name}</a>
            " / run"
        </p>
        <h1>{format!("Run #{id} ")}<StatusBadge status=run.status /></h1>
        {match run.failure {
            Some(failure) => {
                let prefect = failure.prefect_message.filter(|m| *m != failure.reason);
                view! {
                    <section class="failure" aria-labelledby="failure-head">
                        <h2 id="failure-head">"Why it failed"</h2>
                        <p data-testid="failure-reason">{failure.reason}</p>
                        {prefect.map(|m| view! { <p class="muted small">{format!("Prefect: {m}")}</p> })}
                        {(!failure.log_lines.is_empty()).then(|| {
                            let text = failure
                                .log_lines
                                .iter()
                                .map(|line| line.as_text())
                                .collect::<Vec<_>>()
                                .join("\n");
                            view! {
                                <details class="failure-lines" open>
                                    <summary>{format!("Last error lines of the log ({})", failure.log_lines.len())}</summary>
                                    <pre class="code" tabindex="0" data-testid="failure-lines">{text}</pre>
                                </details>
                            }
                        })}
                    </section>
                }
                .into_any()
            }
            None => run.error_message.map(|e| view! { <p class="form-error">{e}</p> }).into_any(),
        }}
        {run.stuck_since.map(|since| view! {
            <p class="form-error" role="status">
                {format!("No report since {} — the run may be stuck.", when(Some(since)))}
            </p>
        })}
        {run.retry_of_run_id.map(|original| {
            let from = run.from_stage.map(|stage| format!(", from {stage}")).unwrap_or_default();
            view! {
                <p class="muted small" data-testid="retry-of">
                    "Retry of "<a href=format!("/runs/{original}")>{format!("run #{original}")}</a>{from}
                </p>
            }
        })}
    }
}

/// The run's timeline, stages, details and parameters.
#[component]
pub(super) fn RunBody(run: Run) -> impl IntoView {
    let parameters = serde_json::to_string_pretty(&run.parameters).unwrap_or_default();
    let prefect_run = match (run.prefect_flow_run_id, run.prefect_url) {
        (Some(id), Some(url)) => view! {
            <a href=url target="_blank" rel="noopener noreferrer">{id}" ↗"</a>
        }
        .into_any(),
        (Some(id), None) => view! { <code>{id}</code> }.into_any(),
        (None, _) => "not submitted yet".into_any(),
    };
    let stages = run
        .stages
        .iter()
        .map(|s| view! {
            <tr data-testid="stage-row">
                <td class="num">{s.position + 1}</td>
                <td>
                    {s.name.clone()}
                    {s.error_message.clone().map(|e| view! { <div class="form-error small">{e}</div> })}
                    {s.output_run_id.filter(|_| s.status == RunStatus::Skipped).map(|from| view! {
                        <div class="muted small">
                            "Output reused from "<a href=format!("/runs/{from}")>{format!("run #{from}")}</a>
                        </div>
                    })}
                </td>
                <td><StatusBadge status=s.status /></td>
                <td class="small">{when(s.started_at)}</td>
                <td class="small">{duration(s.execution_time_seconds)}</td>
                <td class="num">{s.records_processed.map_or_else(|| "—".to_owned(), |n| n.to_string())}</td>
            </tr>
        })
        .collect_view();
    view! {
        <section class="card">
            <h2>"Timeline"</h2>
            <StageTimeline stages=run.stages now=chrono::Utc::now() />
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
                <tbody>{stages}</tbody>
            </table>
        </section>
        <div class="columns">
            <section class="card">
                <h2>"Details"</h2>
                <dl class="facts">
                    <dt>"Triggered by"</dt>
                    <dd>{format!("{} via {}", run.actor, run.source)}</dd>
                    <dt>"Request id"</dt>
                    <dd><code>{run.request_id.unwrap_or_default()}</code></dd>
                    <dt>"Created"</dt>
                    <dd>{when(Some(run.created_at))}</dd>
                    <dt>"Submitted"</dt>
                    <dd>{when(run.submitted_at)}</dd>
                    <dt>"Started"</dt>
                    <dd>{when(run.started_at)}</dd>
                    <dt>"Ended"</dt>
                    <dd>{when(run.ended_at)}</dd>
                    <dt>"Prefect flow run"</dt>
                    <dd data-testid="prefect-flow-run">
                        {prefect_run}
                        {run.prefect_state.map(|s| view! { <span class="muted small">" ("{s}")"</span> })}
                    </dd>
                    <dt>"Records"</dt>
                    <dd>{run.records_processed}</dd>
                </dl>
            </section>
            <section class="card">
                <h2>"Parameters"</h2>
                <pre class="code">{parameters}</pre>
            </section>
        </div>
    }
}
