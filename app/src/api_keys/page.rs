//! The API keys page (admins): every key with its state and last use; create, rotate and
//! revoke. A new key's secret is shown once, on this page, right after it is made.
//!
//! The table and the secret's notice are rendered on the server (`key_table`, and the
//! answer of `create_api_key` and `rotate_api_key`); the island holds the form and the
//! buttons' behaviour, so its wasm carries no key type and no table markup.

use leptos::prelude::*;

use super::{
    ApiKey, CreateApiKey, KeyState, LimitsForm, key_table, list_api_keys, revoke_api_key, rotate_api_key,
};
use crate::layout::Frame;
use crate::ui::form::{Fields, ServerForm};
use crate::ui::regions::{self, Loads};
use crate::ui::{ErrorView, when};

/// The id of the element holding the key table, which the island replaces.
const TABLE_ID: &str = "key-table";
/// The id of the element showing a new secret, once.
const SECRET_ID: &str = "new-secret";

/// The API keys page.
#[component]
pub fn ApiKeysPage() -> impl IntoView {
    let keys = OnceResource::new(list_api_keys());
    view! {
        <Frame>
            <section class="page-head">
                <h1>"API keys"</h1>
            </section>
            <Suspense fallback=|| view! { <p class="muted">"Loading keys…"</p> }>
                {move || Suspend::new(async move {
                    match keys.await {
                        Err(error) => view! { <ErrorView error /> }.into_any(),
                        Ok(keys) => view! {
                            <section class="card">
                                <h2>"New key"</h2>
                                <KeyAdmin>
                                    <NewKeyFields />
                                </KeyAdmin>
                            </section>
                            <section class="card" aria-labelledby="keys-head">
                                <h2 id="keys-head">"Keys"</h2>
                                <div id=TABLE_ID><KeyTable keys /></div>
                            </section>
                        }
                        .into_any(),
                    }
                })}
            </Suspense>
        </Frame>
    }
}

/// The New key form and what Rotate and Revoke do: an island, so a new secret shows here
/// once and the table is read again after every change. Its fields are its children,
/// rendered on the server.
#[island(lazy)]
fn KeyAdmin(children: Children) -> impl IntoView {
    crate::ui::mark_hydrated();
    let create = ServerAction::<CreateApiKey>::new();
    let error = RwSignal::new(None::<String>);
    let loads = Loads::new();
    let reload = move || loads.load(key_table(), |html| regions::put(TABLE_ID, &html));
    // A key made or rotated: its secret shows until the next one, and the table follows.
    let made = move |answer: Result<String, crate::error::AppError>| match answer {
        Ok(notice) => {
            error.set(None);
            regions::put(SECRET_ID, &notice);
            reload();
        }
        Err(e) => error.set(Some(e.to_string())),
    };
    Effect::new(move |_| {
        if let Some(answer) = create.value().get() {
            made(answer);
        }
    });
    // The table's buttons (server-rendered) name their key in `data-rotate` / `data-revoke`.
    let clicks = window_event_listener(leptos::ev::click, move |ev| {
        use leptos::wasm_bindgen::JsCast;
        let Some(button) = ev
            .target()
            .and_then(|t| t.dyn_into::<leptos::web_sys::Element>().ok())
            .and_then(|t| t.closest("[data-rotate], [data-revoke]").ok().flatten())
        else {
            return;
        };
        let key = |name| button.get_attribute(name).and_then(|id| id.parse::<i64>().ok());
        if let Some(id) = key("data-rotate") {
            leptos::task::spawn_local(async move { made(rotate_api_key(id).await) });
        } else if let Some(id) = key("data-revoke") {
            let question = format!("Revoke API key {id}? Whatever uses it stops working at once.");
            if window().confirm_with_message(&question).unwrap_or(false) {
                leptos::task::spawn_local(async move {
                    match revoke_api_key(id).await {
                        Ok(()) => reload(),
                        Err(e) => error.set(Some(e.to_string())),
                    }
                });
            }
        }
    });
    on_cleanup(move || clicks.remove());
    view! {
        <ServerForm action=create read=new_key class="param-form inline-fields">
            {children()}
            <button type="submit" class="primary" disabled=move || create.pending().get()>"Create key"</button>
        </ServerForm>
        <div id=SECRET_ID></div>
        {move || error.get().map(|e| view! { <p class="form-error" role="alert">{e}</p> })}
    }
}

/// The New key form's input, from its fields.
fn new_key(f: &Fields) -> CreateApiKey {
    CreateApiKey {
        name: f.text("name"),
        role: f.text("role"),
        expires_in_days: f.get("expires_in_days"),
        limits: LimitsForm {
            scope_tags: f.get("scope_tags"),
            scope_pipelines: f.get("scope_pipelines"),
            scope_actions: f.get("scope_actions"),
            triggers_per_hour: f.get("triggers_per_hour"),
            triggers_per_day: f.get("triggers_per_day"),
            max_unfinished_runs: f.get("max_unfinished_runs"),
        },
    }
}

/// The New key form's fields.
#[component]
fn NewKeyFields() -> impl IntoView {
    view! {
        <div class="field">
            <label for="key-name">"Name *"</label>
            <input id="key-name" name="name" required maxlength="100" autocomplete="off" placeholder="ci-bot" />
        </div>
        <div class="field">
            <label for="key-role">"Role"</label>
            <select id="key-role" name="role">
                <option value="viewer">"viewer"</option>
                <option value="operator">"operator"</option>
                <option value="admin">"admin"</option>
            </select>
        </div>
        <div class="field">
            <label for="key-days">"Expires in days (empty: never)"</label>
            <input id="key-days" name="expires_in_days" inputmode="numeric" pattern="[0-9]*" />
        </div>
        <div class="field">
            <label for="key-tags">"Only pipelines tagged (comma-separated)"</label>
            <input id="key-tags" name="scope_tags" autocomplete="off" placeholder="marketing" />
        </div>
        <div class="field">
            <label for="key-pipelines">"Only pipelines (ids or slugs)"</label>
            <input id="key-pipelines" name="scope_pipelines" autocomplete="off" placeholder="12, nightly-etl" />
        </div>
        <div class="field">
            <label for="key-actions">"Actions"</label>
            <select id="key-actions" name="scope_actions">
                <option value="">"all the role allows"</option>
                <option value="read">"read"</option>
                <option value="read,trigger">"read, trigger"</option>
                <option value="read,trigger,cancel,retry">"read, trigger, cancel, retry"</option>
                <option value="trigger">"trigger only"</option>
                <option value="report">"report only"</option>
            </select>
        </div>
        <div class="field">
            <label for="key-hour">"Runs per hour"</label>
            <input id="key-hour" name="triggers_per_hour" inputmode="numeric" pattern="[0-9]*" />
        </div>
        <div class="field">
            <label for="key-day">"Runs per day"</label>
            <input id="key-day" name="triggers_per_day" inputmode="numeric" pattern="[0-9]*" />
        </div>
        <div class="field">
            <label for="key-unfinished">"Unfinished at once"</label>
            <input id="key-unfinished" name="max_unfinished_runs" inputmode="numeric" pattern="[0-9]*" />
        </div>
    }
}

/// A new key's secret, shown once (rendered in the answer of the server functions).
#[cfg(feature = "ssr")]
#[component]
pub(super) fn NewSecret(created: super::CreatedApiKey) -> impl IntoView {
    view! {
        <div class="secret" role="status">
            <p>
                {format!("Key {} \"{}\" ({}) was created. ", created.key.id, created.key.name, created.key.role)}
                <strong>"Copy it now: it is not stored and will not be shown again."</strong>
            </p>
            <input class="code" readonly value=created.secret aria-label="The new key" />
        </div>
    }
}

/// Every key with its state, and Rotate and Revoke for the active ones.
#[component]
pub(super) fn KeyTable(keys: Vec<ApiKey>) -> impl IntoView {
    view! {
        <table class="grid keys">
            <thead>
                <tr>
                    <th>"Id"</th>
                    <th>"Name"</th>
                    <th>"Role"</th>
                    <th>"Scope and budgets"</th>
                    <th>"Key"</th>
                    <th>"State"</th>
                    <th>"Created"</th>
                    <th>"Expires"</th>
                    <th>"Last used"</th>
                    <th></th>
                </tr>
            </thead>
            <tbody>{keys.into_iter().map(|key| view! { <KeyRow key /> }).collect_view()}</tbody>
        </table>
    }
}

/// A key's scope and its budgets with their use, as text: "tags marketing; read, trigger;
/// 3/10 runs an hour".
fn limits(key: &ApiKey) -> String {
    let scope = &key.scope;
    let mut parts = Vec::new();
    let names =
        |label: &str, list: &[String]| (!list.is_empty()).then(|| format!("{label} {}", list.join(", ")));
    let ids: Vec<String> = scope.pipeline_ids.iter().map(i64::to_string).collect();
    parts.extend(names("pipelines", &ids));
    parts.extend(names("slugs", &scope.slugs));
    parts.extend(names("tags", &scope.tags));
    if !scope.limits_pipelines() {
        parts.push("every pipeline".to_owned());
    }
    if let Some(actions) = &scope.actions {
        parts.push(actions.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", "));
    }
    let used = key.usage.unwrap_or_default();
    let budget = &key.budget;
    for (limit, spent, what) in [
        (budget.triggers_per_hour, used.triggers_last_hour, "runs an hour"),
        (budget.triggers_per_day, used.triggers_last_day, "runs a day"),
        (budget.max_unfinished_runs, used.unfinished_runs, "unfinished"),
    ] {
        if let Some(limit) = limit {
            parts.push(format!("{spent}/{limit} {what}"));
        }
    }
    parts.join("; ")
}

#[component]
fn KeyRow(key: ApiKey) -> impl IntoView {
    let id = key.id;
    let active = key.state == KeyState::Active;
    let badge = match key.state {
        KeyState::Active => "completed",
        KeyState::Expired => "cancelled",
        KeyState::Revoked => "failed",
    };
    let rotated = key.rotated_from.map(|from| format!(" (rotated from {from})"));
    let limits = limits(&key);
    view! {
        <tr data-key-id=id>
            <td>{id}</td>
            <td>{key.name}{rotated}</td>
            <td>{key.role.as_str()}</td>
            <td class="scope">{limits}</td>
            <td><code>{key.key_prefix}"…"</code></td>
            <td><span class=format!("badge badge-{badge}")>{key.state.as_str()}</span></td>
            <td class="nowrap">{when(Some(key.created_at))}</td>
            <td class="nowrap">{when(key.expires_at)}</td>
            <td class="nowrap">{when(key.last_used_at)}</td>
            <td class="actions">
                {active.then(|| view! {
                    <button type="button" data-rotate=id>"Rotate"</button>
                    <button type="button" class="danger" data-revoke=id>"Revoke"</button>
                })}
            </td>
        </tr>
    }
}
