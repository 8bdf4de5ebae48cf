//! One webhook endpoint's page (admins, `/admin/webhooks/{id}`).
//!
//! Its settings and state, Enable or Disable, a new signing secret (shown once, signed
//! with beside the old one for an overlap), and its latest 50 deliveries with every
//! attempt (when, the answer's status or why there was none, latency, the start of the
//! answer's body) and Resend.
//!
//! Rendered on the server; the island holds only the secret's form, so the new secret
//! shows here once. Enable, Disable and Resend are plain forms that come back to the page.

use leptos::prelude::*;

use super::page::{delivery_badge, scope, state};
use super::{
    Delivery, Endpoint, ResendWebhookDelivery, RotateWebhookSecret, SetWebhookEnabled, webhook_detail,
};
use crate::error::AppError;
use crate::layout::Frame;
use crate::ui::form::{Fields, ServerForm};
use crate::ui::{ErrorView, FormError, path_id, regions, when};

/// The id of the element showing a new secret, once.
const ROTATED_ID: &str = "rotated-webhook-secret";

/// The endpoint's page.
#[component]
pub fn EndpointPage() -> impl IntoView {
    let id = path_id();
    let detail = OnceResource::new(async move {
        match id {
            Some(id) => webhook_detail(id).await,
            None => Err(AppError::not_found("Webhook endpoint")),
        }
    });
    view! {
        <Frame>
            <Suspense fallback=|| view! { <p class="muted">"Loading the endpoint…"</p> }>
                {move || Suspend::new(async move {
                    match detail.await {
                        Err(error) => view! { <ErrorView error /> }.into_any(),
                        Ok((endpoint, deliveries)) => view! { <Detail endpoint deliveries /> }.into_any(),
                    }
                })}
            </Suspense>
        </Frame>
    }
}

#[component]
fn Detail(endpoint: Endpoint, deliveries: Vec<Delivery>) -> impl IntoView {
    use leptos::server_fn::ServerFn;
    let toggle = ServerAction::<SetWebhookEnabled>::new();
    let (state, badge) = state(&endpoint);
    let id = endpoint.id;
    view! {
        <section class="page-head">
            <h1>{format!("Webhook endpoint {id}")}</h1>
            <a href="/admin/webhooks">"All endpoints"</a>
        </section>
        <div class="columns">
            <section class="card" aria-labelledby="hook-settings">
                <h2 id="hook-settings">"Settings"</h2>
                <dl class="facts">
                    <dt>"URL"</dt>
                    <dd><code>{endpoint.url.clone()}</code></dd>
                    <dt>"State"</dt>
                    <dd><span class=format!("badge badge-{badge}")>{state}</span></dd>
                    <dt>"Events"</dt>
                    <dd>{endpoint.event_types.join(", ")}</dd>
                    <dt>"Pipelines"</dt>
                    <dd>{scope(&endpoint)}</dd>
                    <dt>"Body"</dt>
                    <dd>{endpoint.format.as_str()}</dd>
                    <dt>"Description"</dt>
                    <dd>{if endpoint.description.is_empty() { "—".to_owned() } else { endpoint.description.clone() }}</dd>
                    <dt>"Created"</dt>
                    <dd>{format!("{} by {}", when(Some(endpoint.created_at)), endpoint.created_by)}</dd>
                    <dt>"Old secret signs until"</dt>
                    <dd>{when(endpoint.previous_secret_until)}</dd>
                </dl>
                <FormError path=SetWebhookEnabled::PATH />
                <ActionForm action=toggle attr:class="inline-form">
                    <input type="hidden" name="id" value=id.to_string() />
                    <input type="hidden" name="enabled" value=(!endpoint.enabled).to_string() />
                    <button type="submit">{if endpoint.enabled { "Disable" } else { "Enable" }}</button>
                </ActionForm>
            </section>
            <section class="card" aria-labelledby="hook-secret">
                <h2 id="hook-secret">"Signing secret"</h2>
                <p class="muted">
                    "A new secret is shown once. Until the overlap ends, deliveries carry the old secret's signature too, so the receiver can switch without missing any."
                </p>
                <RotateSecret id>
                    <div class="field">
                        <label for="hook-overlap">"Overlap"</label>
                        <select id="hook-overlap" name="overlap_hours">
                            <option value="1">"1 hour"</option>
                            <option value="24" selected>"24 hours"</option>
                            <option value="168">"A week"</option>
                        </select>
                    </div>
                </RotateSecret>
            </section>
        </div>
        <section class="card" aria-labelledby="hook-deliveries">
            <h2 id="hook-deliveries">"Deliveries"</h2>
            <FormError path=ResendWebhookDelivery::PATH />
            {if deliveries.is_empty() {
                view! { <p class="muted">"No deliveries yet."</p> }.into_any()
            } else {
                view! {
                    <ol class="delivery-log">
                        {deliveries.into_iter().map(|delivery| view! { <li><DeliveryDetail delivery /></li> }).collect_view()}
                    </ol>
                }
                .into_any()
            }}
        </section>
    }
}

/// The New secret form: an island, so the secret shows here once. Its fields are its
/// children, rendered on the server.
#[island(lazy)]
fn RotateSecret(id: i64, children: Children) -> impl IntoView {
    crate::ui::mark_hydrated();
    let rotate = ServerAction::<RotateWebhookSecret>::new();
    let error = RwSignal::new(None::<String>);
    Effect::new(move |_| match rotate.value().get() {
        Some(Ok(notice)) => {
            error.set(None);
            regions::put(ROTATED_ID, &notice);
        }
        Some(Err(e)) => error.set(Some(e.to_string())),
        None => {}
    });
    view! {
        <ServerForm action=rotate read=move |f| new_secret(id, f) class="param-form inline-fields">
            <input type="hidden" name="id" value=id.to_string() />
            {children()}
            <button type="submit" disabled=move || rotate.pending().get()>"New secret"</button>
        </ServerForm>
        <div id=ROTATED_ID></div>
        {move || error.get().map(|e| view! { <p class="form-error" role="alert">{e}</p> })}
    }
}

/// The New secret form's input for endpoint `id`, from its fields.
fn new_secret(id: i64, f: &Fields) -> RotateWebhookSecret {
    RotateWebhookSecret {
        id,
        overlap_hours: f.get("overlap_hours").and_then(|h| h.parse().ok()),
    }
}

/// One delivery: a line that opens onto its attempts, and Resend.
#[component]
fn DeliveryDetail(delivery: Delivery) -> impl IntoView {
    let resend = ServerAction::<ResendWebhookDelivery>::new();
    let badge = delivery_badge(&delivery.state);
    let attempts = match delivery.attempts {
        1 => "1 attempt".to_owned(),
        n => format!("{n} attempts"),
    };
    let next = (delivery.state == "pending")
        .then(|| format!("Next attempt {}.", when(Some(delivery.next_attempt_at))));
    view! {
        <details class="delivery" data-delivery-id=delivery.id>
            <summary>
                <span class=format!("badge badge-{badge}")>{delivery.state.clone()}</span>
                " "
                <strong>{delivery.event_type}</strong>
                <span class="muted">{format!(" · {} · {attempts}", when(Some(delivery.created_at)))}</span>
            </summary>
            <p class="muted">"webhook-id " <code>{delivery.message_id}</code> " " {next}</p>
            {(!delivery.attempt_log.is_empty()).then(|| view! {
                <table class="grid attempts">
                    <thead>
                        <tr>
                            <th>"When"</th>
                            <th>"Answer"</th>
                            <th>"Latency"</th>
                            <th>"Body"</th>
                        </tr>
                    </thead>
                    <tbody>
                        {delivery.attempt_log.into_iter().map(|a| view! {
                            <tr>
                                <td class="nowrap">{when(Some(a.attempted_at))}</td>
                                <td>{match (a.status_code, a.error) {
                                    (Some(status), _) => format!("HTTP {status}"),
                                    (None, Some(error)) => error,
                                    (None, None) => "—".to_owned(),
                                }}</td>
                                <td class="nowrap">{format!("{} ms", a.latency_ms)}</td>
                                <td><code class="excerpt">{a.response_excerpt.unwrap_or_default()}</code></td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
            })}
            <ActionForm action=resend attr:class="inline-form">
                <input type="hidden" name="id" value=delivery.id.to_string() />
                <button type="submit">"Resend"</button>
            </ActionForm>
        </details>
    }
}
