//! The webhooks page (admins): every endpoint with its state and latest deliveries; a form
//! to subscribe one (its secret is shown once, here); Resend for any delivery.
//!
//! The table and the secret's notice are rendered on the server (`webhook_table`, the
//! answer of `create_webhook`); the island holds only the form. Resend is a plain form.

use leptos::prelude::*;

use super::{
    CreateWebhook, Delivery, EVENT_TYPES, Endpoint, EventChoice, ResendWebhookDelivery, list_webhooks,
    webhook_table,
};
use crate::layout::Frame;
use crate::ui::form::{Fields, ServerForm};
use crate::ui::regions::{self, Loads};
use crate::ui::{ErrorView, FormError, when};

/// The id of the element holding the endpoint table, which the island replaces.
const TABLE_ID: &str = "webhook-table";
/// The id of the element showing a new secret, once.
const SECRET_ID: &str = "new-webhook-secret";

/// The webhooks page.
#[component]
pub fn WebhooksPage() -> impl IntoView {
    let endpoints = OnceResource::new(list_webhooks());
    view! {
        <Frame>
            <section class="page-head">
                <h1>"Webhooks"</h1>
            </section>
            <Suspense fallback=|| view! { <p class="muted">"Loading endpoints…"</p> }>
                {move || Suspend::new(async move {
                    match endpoints.await {
                        Err(error) => view! { <ErrorView error /> }.into_any(),
                        Ok(endpoints) => view! {
                            <section class="card">
                                <h2>"New endpoint"</h2>
                                <WebhookAdmin>
                                    <NewEndpointFields />
                                </WebhookAdmin>
                            </section>
                            <div id=TABLE_ID><EndpointTable endpoints /></div>
                        }
                        .into_any(),
                    }
                })}
            </Suspense>
        </Frame>
    }
}

/// The New endpoint form: an island, so the new secret shows here once and the table is
/// read again. Its fields are its children, rendered on the server.
#[island(lazy)]
fn WebhookAdmin(children: Children) -> impl IntoView {
    crate::ui::mark_hydrated();
    let create = ServerAction::<CreateWebhook>::new();
    let error = RwSignal::new(None::<String>);
    let loads = Loads::new();
    Effect::new(move |_| match create.value().get() {
        Some(Ok(notice)) => {
            error.set(None);
            regions::put(SECRET_ID, &notice);
            loads.load(webhook_table(), |html| regions::put(TABLE_ID, &html));
        }
        Some(Err(e)) => error.set(Some(e.to_string())),
        None => {}
    });
    view! {
        <ServerForm action=create read=new_endpoint class="param-form inline-fields">
            {children()}
            <button type="submit" class="primary" disabled=move || create.pending().get()>"Create endpoint"</button>
        </ServerForm>
        <div id=SECRET_ID></div>
        {move || error.get().map(|e| view! { <p class="form-error" role="alert">{e}</p> })}
    }
}

/// The New endpoint form's input, from its fields.
fn new_endpoint(f: &Fields) -> CreateWebhook {
    CreateWebhook {
        url: f.text("url"),
        description: f.get("description"),
        tags: f.get("tags"),
        format: f.get("format"),
        events: EventChoice::ticked(|name| f.get(name).is_some()),
    }
}

/// The New endpoint form's fields.
#[component]
fn NewEndpointFields() -> impl IntoView {
    view! {
        <div class="field wide">
            <label for="hook-url">"URL *"</label>
            <input id="hook-url" name="url" type="url" required maxlength="2048" placeholder="https://hooks.example.com/flowdeck" />
        </div>
        <div class="field">
            <label for="hook-description">"Description"</label>
            <input id="hook-description" name="description" maxlength="500" />
        </div>
        <div class="field">
            <label for="hook-tags">"Only pipelines tagged (comma-separated)"</label>
            <input id="hook-tags" name="tags" autocomplete="off" />
        </div>
        <div class="field">
            <label for="hook-format">"Body"</label>
            <select id="hook-format" name="format">
                <option value="standard">"Standard Webhooks"</option>
                <option value="slack">"Slack message"</option>
            </select>
        </div>
        <fieldset class="field wide events">
            <legend>"Events *"</legend>
            {EVENT_TYPES
                .iter()
                .map(|event| {
                    let name = event.replace('.', "_");
                    view! {
                        <label class="check">
                            <input type="checkbox" name=name checked=*event == "run.failed" />
                            {*event}
                        </label>
                    }
                })
                .collect_view()}
        </fieldset>
    }
}

/// A new endpoint's secret, shown once (rendered in the answer of `create_webhook`).
#[cfg(feature = "ssr")]
#[component]
pub(super) fn NewSecret(created: super::CreatedEndpoint, what: String) -> impl IntoView {
    view! {
        <div class="secret" role="status">
            <p>
                {what}
                " "
                <strong>"Copy its signing secret now: it will not be shown again."</strong>
            </p>
            <input class="code" readonly value=created.secret aria-label="The signing secret" />
        </div>
    }
}

/// Every endpoint with its latest deliveries.
#[component]
pub(super) fn EndpointTable(endpoints: Vec<(Endpoint, Vec<Delivery>)>) -> impl IntoView {
    use leptos::server_fn::ServerFn;
    if endpoints.is_empty() {
        return view! { <p class="muted">"No endpoints yet."</p> }.into_any();
    }
    view! {
        <FormError path=ResendWebhookDelivery::PATH />
        {endpoints.into_iter().map(|(endpoint, deliveries)| view! { <EndpointCard endpoint deliveries /> }).collect_view()}
    }
    .into_any()
}

/// An endpoint's state in words, with the badge class that colours it.
pub(super) fn state(endpoint: &Endpoint) -> (String, &'static str) {
    match (endpoint.enabled, endpoint.failing_since) {
        (true, Some(since)) => (format!("failing since {}", when(Some(since))), "failed"),
        (true, None) => ("enabled".to_owned(), "completed"),
        (false, _) => (
            format!(
                "disabled: {}",
                endpoint.disabled_reason.as_deref().unwrap_or_default()
            ),
            "cancelled",
        ),
    }
}

/// The badge class that colours a delivery's state.
pub(super) fn delivery_badge(state: &str) -> &'static str {
    match state {
        "delivered" => "completed",
        "failed" => "failed",
        _ => "running",
    }
}

/// Which pipelines' events an endpoint gets, in words.
pub(super) fn scope(endpoint: &Endpoint) -> String {
    if endpoint.tags.is_empty() && endpoint.pipeline_ids.is_empty() {
        return "every pipeline".to_owned();
    }
    let ids: Vec<String> = endpoint.pipeline_ids.iter().map(|id| format!("#{id}")).collect();
    let tags: Vec<String> = endpoint.tags.iter().map(|tag| format!("tagged {tag}")).collect();
    ids.into_iter().chain(tags).collect::<Vec<_>>().join(", ")
}

#[component]
fn EndpointCard(endpoint: Endpoint, deliveries: Vec<Delivery>) -> impl IntoView {
    let (state, badge) = state(&endpoint);
    let summary = format!(
        "#{} · {} · {} · {}",
        endpoint.id,
        endpoint.event_types.join(", "),
        scope(&endpoint),
        endpoint.format.as_str()
    );
    view! {
        <section class="card webhook" data-webhook-id=endpoint.id>
            <h2>
                <a href=format!("/admin/webhooks/{}", endpoint.id)><code>{endpoint.url}</code></a>
                " "
                <span class=format!("badge badge-{badge}")>{state}</span>
            </h2>
            <p class="muted">
                {summary}
                {(!endpoint.description.is_empty()).then(|| format!(" · {}", endpoint.description))}
            </p>
            <table class="grid deliveries">
                <thead>
                    <tr>
                        <th>"Event"</th>
                        <th>"State"</th>
                        <th>"Attempts"</th>
                        <th>"Last answer"</th>
                        <th>"Happened"</th>
                        <th><span class="visually-hidden">"Actions"</span></th>
                    </tr>
                </thead>
                <tbody>
                    {deliveries.into_iter().map(|delivery| view! { <DeliveryRow delivery /> }).collect_view()}
                </tbody>
            </table>
        </section>
    }
}

#[component]
fn DeliveryRow(delivery: Delivery) -> impl IntoView {
    let resend = ServerAction::<ResendWebhookDelivery>::new();
    let last = delivery
        .attempt_log
        .last()
        .map(|a| match (a.status_code, &a.error) {
            (Some(status), _) => format!("HTTP {status} in {} ms", a.latency_ms),
            (None, Some(error)) => error.clone(),
            (None, None) => "—".to_owned(),
        });
    let badge = delivery_badge(&delivery.state);
    view! {
        <tr>
            <td>{delivery.event_type}</td>
            <td><span class=format!("badge badge-{badge}")>{delivery.state}</span></td>
            <td>{delivery.attempts}</td>
            <td>{last.unwrap_or_else(|| "—".to_owned())}</td>
            <td class="nowrap">{when(Some(delivery.created_at))}</td>
            <td class="actions">
                <ActionForm action=resend>
                    <input type="hidden" name="id" value=delivery.id.to_string() />
                    <button type="submit">"Resend"</button>
                </ActionForm>
            </td>
        </tr>
    }
}
