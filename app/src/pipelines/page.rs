//! The pipeline page (definition, stages, recent runs, Run dialog) and the New pipeline form.

use leptos::prelude::*;

use super::{CreatePipeline, deployment_choices, get_pipeline_detail};
use crate::auth::page::signed_in_as;
use crate::caller::Role;
use crate::error::AppError;
use crate::layout::Frame;
use crate::runs::charts::DurationTrend;
use crate::runs::params::{ParamField, ParamKind};
use crate::runs::{TriggerRun, form_key, run_form};
use crate::status::RunStatus;
use crate::ui::form::{Fields, ServerForm};
use crate::ui::{ErrorView, FormError, StatusBadge, duration, path_id, when};

/// The way to the New pipeline form, for admins.
#[component]
pub(super) fn NewPipelineLink() -> impl IntoView {
    let admin = signed_in_as(Role::Admin);
    view! {
        <Suspense>
            {Suspend::new(async move {
                admin.await.then(|| view! { <a class="button primary" href="/pipelines/new">"+ New pipeline"</a> })
            })}
        </Suspense>
    }
}

/// One dot per stage, coloured by status.
#[component]
pub(super) fn StageDots(stages: Vec<(String, RunStatus)>) -> impl IntoView {
    view! {
        <span class="dots">
            {stages
                .into_iter()
                .map(|(name, status)| {
                    let label = format!("{name}: {status}");
                    view! { <span class=format!("dot dot-{}", status.as_str()) role="img" title=label.clone() aria-label=label></span> }
                })
                .collect_view()}
        </span>
    }
}

/// One pipeline: its definition, latest stages, recent runs, and a Run button.
#[component]
pub fn PipelinePage() -> impl IntoView {
    let id = path_id();
    let detail = OnceResource::new(async move {
        match id {
            Some(id) => get_pipeline_detail(id).await,
            None => Err(AppError::not_found("Pipeline")),
        }
    });
    view! {
        <Frame>
            <Suspense fallback=|| view! { <p class="muted">"Loading pipeline…"</p> }>
                {move || {
                    let may_run = signed_in_as(Role::Operator);
                    Suspend::new(async move {
                        match detail.await {
                            Ok(d) => {
                                // Operators get the Run dialog, drawn from the flow's parameters.
                                let run_fields = match may_run.await {
                                    true => Some(run_form(d.pipeline.id).await),
                                    false => None,
                                };
                                view! { <PipelineView detail=d run_fields /> }.into_any()
                            }
                            Err(error) => view! { <ErrorView error /> }.into_any(),
                        }
                    })
                }}
            </Suspense>
        </Frame>
    }
}

#[component]
fn PipelineView(
    detail: super::PipelineDetail,
    run_fields: Option<Result<Vec<ParamField>, AppError>>,
) -> impl IntoView {
    let p = detail.pipeline;
    let params = serde_json::to_string_pretty(&p.default_parameters).unwrap_or_default();
    view! {
        <section class="page-head">
            <div>
                <p class="crumbs"><a href="/">"Pipelines"</a>" / "{p.slug.clone()}</p>
                <h1>{p.name.clone()}" " <StatusBadge status=p.status /></h1>
                <p class="muted">{p.description.clone().unwrap_or_default()}</p>
            </div>
            {run_fields.map(|fields| view! { <RunControls pipeline_id=p.id fields /> })}
        </section>
        <div class="columns">
            <section class="card">
                <h2>"Definition"</h2>
                <dl class="facts">
                    <dt>"Deployment"</dt>
                    <dd>{p.deployment.clone().unwrap_or_else(|| "default".to_owned())}</dd>
                    <dt>"Tags"</dt>
                    <dd>{if p.tags.is_empty() { "—".to_owned() } else { p.tags.join(", ") }}</dd>
                    <dt>"Concurrency"</dt>
                    <dd>{p.max_concurrent_runs.map_or_else(|| "unlimited".to_owned(), |n| format!("{n} at a time"))}</dd>
                    <dt>"Created"</dt>
                    <dd>{when(Some(p.created_at))}</dd>
                </dl>
                <h3>"Default parameters"</h3>
                <pre class="code">{params}</pre>
            </section>
            <section class="card">
                <h2>{if p.latest_run_id.is_some() { "Latest run's stages" } else { "Stages" }}</h2>
                <ol class="stages">
                    {p.stages
                        .iter()
                        .map(|s| view! {
                            <li>
                                <span class="stage-name">{s.name.clone()}</span>
                                <StatusBadge status=s.status />
                                <span class="muted small">{duration(s.execution_time_seconds)}</span>
                            </li>
                        })
                        .collect_view()}
                </ol>
            </section>
        </div>
        <section class="card">
            <h2>"Duration and outcome of recent runs"</h2>
            <DurationTrend points=detail
                .recent_runs
                .iter()
                .rev()
                .map(|r| (r.status, r.started_at.zip(r.ended_at).map(|(s, e)| (e - s).num_milliseconds() as f64 / 1000.0)))
                .collect() />
        </section>
        <section class="card">
            <h2>"Recent runs"</h2>
            <Show
                when={
                    let empty = detail.recent_runs.is_empty();
                    move || !empty
                }
                fallback=|| view! { <p class="empty">"This pipeline has not run yet."</p> }
            >
                <table class="grid">
                    <thead>
                        <tr>
                            <th scope="col">"Run"</th>
                            <th scope="col">"Status"</th>
                            <th scope="col">"Triggered by"</th>
                            <th scope="col">"Created"</th>
                            <th scope="col">"Records"</th>
                        </tr>
                    </thead>
                    <tbody>
                        {detail.recent_runs
                            .iter()
                            .map(|r| view! {
                                <tr data-testid="run-row">
                                    <td><a href=format!("/runs/{}", r.id)>{format!("#{}", r.id)}</a></td>
                                    <td>
                                        <StatusBadge status=r.status />
                                        {r.failure.as_ref().map(|f| view! { <div class="form-error small" data-testid="run-failure">{f.reason.clone()}</div> })}
                                    </td>
                                    <td class="small">{r.actor.clone()}" via "{r.source.clone()}</td>
                                    <td class="small">{when(Some(r.created_at))}</td>
                                    <td class="num">{r.records_processed}</td>
                                </tr>
                            })
                            .collect_view()}
                    </tbody>
                </table>
            </Show>
        </section>
    }
}

/// Run (with the defaults) and the Run dialog, for operators: plain forms posting to the
/// `trigger_run` server function, which goes to the new run's page (a refusal comes back in
/// the address and shows here). No wasm: the page needs none.
#[component]
fn RunControls(pipeline_id: i64, fields: Result<Vec<ParamField>, AppError>) -> impl IntoView {
    use leptos::server_fn::ServerFn;
    let action = ServerAction::<TriggerRun>::new();
    let dialog = match fields {
        Ok(fields) => view! {
            <ActionForm action attr:class="param-form">
                <input type="hidden" name="pipeline_id" value=pipeline_id.to_string() />
                <input type="hidden" name="idempotency_key" value=form_key() />
                {fields.is_empty().then(|| view! { <p class="muted">"This flow takes no parameters."</p> })}
                {fields.into_iter().map(|f| view! { <ParamInput field=f /> }).collect_view()}
                <button type="submit" class="primary">"▶ Run with these parameters"</button>
            </ActionForm>
        }
        .into_any(),
        Err(error) => view! { <p class="form-error">{error.to_string()}</p> }.into_any(),
    };
    view! {
        <div class="run-actions">
            <ActionForm action attr:class="run-form">
                <input type="hidden" name="pipeline_id" value=pipeline_id.to_string() />
                <input type="hidden" name="idempotency_key" value=form_key() />
                <button type="submit" class="primary">"▶ Run"</button>
            </ActionForm>
            <details class="run-dialog">
                <summary>"Run with parameters…"</summary>
                <div class="dialog-body" role="group" aria-label="Run parameters">{dialog}</div>
            </details>
            <FormError path=TriggerRun::PATH />
        </div>
    }
}

/// One parameter's input, sent as `values[name]` with its kind as `kinds[name]`.
#[component]
fn ParamInput(field: ParamField) -> impl IntoView {
    let id = format!("param-{}", field.name);
    let value_name = format!("values[{}]", field.name);
    let kind_name = format!("kinds[{}]", field.name);
    let kind = field.kind.name();
    let required = field.required;
    let input = match field.kind.clone() {
        ParamKind::Choice(options) => view! {
            <select id=id.clone() name=value_name required=required>
                {(!required).then(|| view! { <option value="">"(default)"</option> })}
                {options
                    .into_iter()
                    .map(|o| {
                        let selected = o == field.value;
                        view! { <option value=o.clone() selected=selected>{o.clone()}</option> }
                    })
                    .collect_view()}
            </select>
        }
        .into_any(),
        ParamKind::Boolean => view! {
            <select id=id.clone() name=value_name>
                <option value="true" selected={field.value == "true"}>"true"</option>
                <option value="false" selected={field.value != "true"}>"false"</option>
            </select>
        }
        .into_any(),
        ParamKind::Json => view! {
            <textarea id=id.clone() name=value_name rows="3" class="code" required=required>{field.value.clone()}</textarea>
        }
        .into_any(),
        other => {
            let (input_type, step) = match other {
                ParamKind::Integer => ("number", Some("1")),
                ParamKind::Number => ("number", Some("any")),
                _ => ("text", None),
            };
            view! {
                <input id=id.clone() type=input_type step=step name=value_name value=field.value.clone() required=required />
            }
            .into_any()
        }
    };
    view! {
        <div class="field">
            <label for=id>{field.title.clone()}{required.then_some(" *")}</label>
            {input}
            <input type="hidden" name=kind_name value=kind />
            {field.description.clone().map(|d| view! { <p class="muted small">{d}</p> })}
        </div>
    }
}

/// Creating a pipeline (admins): name, deployment from Prefect's list, stages, defaults.
#[component]
pub fn NewPipelinePage() -> impl IntoView {
    let choices = Resource::new(|| (), |_| deployment_choices());
    view! {
        <Frame>
            <section class="page-head">
                <div>
                    <p class="crumbs"><a href="/">"Pipelines"</a>" / new"</p>
                    <h1>"New pipeline"</h1>
                </div>
            </section>
            <section class="card">
                <Suspense fallback=|| view! { <p class="muted">"Asking Prefect for its deployments…"</p> }>
                    {move || Suspend::new(async move {
                        match choices.await {
                            Err(error) => view! { <ErrorView error /> }.into_any(),
                            Ok(choices) => view! {
                                <NewPipelineForm>
                                    <NewPipelineFields choices />
                                </NewPipelineForm>
                            }
                            .into_any(),
                        }
                    })}
                </Suspense>
            </section>
        </Frame>
    }
}

/// The New pipeline form: an island, so a refusal shows next to the form without a reload
/// (and what was typed stays). Its fields are its children, rendered on the server.
#[island(lazy)]
fn NewPipelineForm(children: Children) -> impl IntoView {
    crate::ui::mark_hydrated();
    let action = ServerAction::<CreatePipeline>::new();
    let error = move || match action.value().get() {
        Some(Err(e)) => Some(e.to_string()),
        _ => None,
    };
    view! {
        <ServerForm action read=new_pipeline class="param-form">
            {children()}
            <button type="submit" class="primary" disabled=move || action.pending().get()>
                "Create pipeline"
            </button>
            {move || error().map(|e| view! { <p class="form-error" role="alert">{e}</p> })}
        </ServerForm>
    }
}

/// The New pipeline form's input, from its fields.
fn new_pipeline(f: &Fields) -> CreatePipeline {
    CreatePipeline {
        name: f.text("name"),
        description: f.text("description"),
        deployment: f.text("deployment"),
        stages: f.text("stages"),
        default_parameters: f.text("default_parameters"),
        tags: f.text("tags"),
    }
}

/// The New pipeline form's fields: name, deployment, stages, defaults, tags.
#[component]
fn NewPipelineFields(choices: super::DeploymentMenu) -> impl IntoView {
    let stages = super::DEFAULT_STAGES.join("\n");
    view! {
        <div class="field">
            <label for="name">"Name *"</label>
            <input id="name" name="name" required maxlength="200" autocomplete="off" />
        </div>
        <div class="field">
            <label for="description">"Description"</label>
            <input id="description" name="description" maxlength="2000" />
        </div>
        <DeploymentField choices />
        <div class="field">
            <label for="stages">"Stages, one per line"</label>
            <textarea id="stages" name="stages" rows="5">{stages}</textarea>
        </div>
        <div class="field">
            <label for="default_parameters">"Default parameters (JSON object)"</label>
            <textarea id="default_parameters" name="default_parameters" rows="3" class="code" placeholder="{\"rows\": 1000}"></textarea>
        </div>
        <div class="field">
            <label for="tags">"Tags, comma-separated"</label>
            <input id="tags" name="tags" />
        </div>
    }
}

/// The deployment menu: Prefect's deployments, or a text box when Prefect cannot be asked.
#[component]
fn DeploymentField(choices: super::DeploymentMenu) -> impl IntoView {
    let default_label = match &choices.default {
        Some(d) => format!("Default deployment ({d})"),
        None => "Default deployment".to_owned(),
    };
    let input = if choices.available.is_empty() {
        view! { <input id="deployment" name="deployment" placeholder="flow-name/deployment-name" /> }
            .into_any()
    } else {
        view! {
            <select id="deployment" name="deployment">
                <option value="">{default_label}</option>
                {choices.available.into_iter().map(|d| view! { <option value=d.clone()>{d.clone()}</option> }).collect_view()}
            </select>
        }
        .into_any()
    };
    view! {
        <div class="field">
            <label for="deployment">"Prefect deployment"</label>
            {input}
            {choices.problem.map(|p| view! { <p class="muted small">{p}</p> })}
        </div>
    }
}
