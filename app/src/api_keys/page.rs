//! The API keys page (admins): every key with its state and last use; create, rotate and
//! revoke. A new key's secret is shown once, on this page, right after it is made.

use leptos::prelude::*;

use super::{ApiKey, CreateApiKey, CreatedApiKey, KeyState, RevokeApiKey, RotateApiKey, list_api_keys};
use crate::layout::Frame;
use crate::ui::{ErrorView, when};

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
                        Ok(keys) => view! { <KeyAdmin keys /> }.into_any(),
                    }
                })}
            </Suspense>
        </Frame>
    }
}

/// The key table and the New key form: an island, so a new secret shows here once and the
/// table follows every change.
#[island(lazy)]
fn KeyAdmin(keys: Vec<ApiKey>) -> impl IntoView {
    crate::ui::mark_hydrated();
    let keys = RwSignal::new(keys);
    let create = ServerAction::<CreateApiKey>::new();
    let rotate = ServerAction::<RotateApiKey>::new();
    let revoke = ServerAction::<RevokeApiKey>::new();
    let reload = move || {
        leptos::task::spawn_local(async move {
            if let Ok(fresh) = list_api_keys().await {
                keys.set(fresh);
            }
        });
    };
    // After each finished action, the table is read again.
    Effect::new(move |_| {
        let done = (
            create.version().get(),
            rotate.version().get(),
            revoke.version().get(),
        );
        if done != (0, 0, 0) {
            reload();
        }
    });
    // The latest key made here, created or rotated, shown until the next one.
    let secret = RwSignal::new(None::<CreatedApiKey>);
    for made in [create.value(), rotate.value()] {
        Effect::new(move |_| {
            if let Some(Ok(created)) = made.get() {
                secret.set(Some(created));
            }
        });
    }
    let error = move || {
        [
            create.value().get().and_then(Result::err),
            rotate.value().get().and_then(Result::err),
            revoke.value().get().and_then(Result::err),
        ]
        .into_iter()
        .flatten()
        .next()
        .map(|e| e.to_string())
    };
    view! {
        <section class="card">
            <h2>"New key"</h2>
            <ActionForm action=create attr:class="param-form inline-fields">
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
                <button type="submit" class="primary" disabled=move || create.pending().get()>"Create key"</button>
            </ActionForm>
            {move || secret.get().map(|created| view! { <NewSecret created /> })}
            {move || error().map(|e| view! { <p class="form-error" role="alert">{e}</p> })}
        </section>
        <table class="grid keys">
            <thead>
                <tr>
                    <th>"Id"</th>
                    <th>"Name"</th>
                    <th>"Role"</th>
                    <th>"Key"</th>
                    <th>"State"</th>
                    <th>"Created"</th>
                    <th>"Expires"</th>
                    <th>"Last used"</th>
                    <th></th>
                </tr>
            </thead>
            <tbody>
                <For each=move || keys.get() key=|k| (k.id, k.state, k.expires_at) let:key>
                    <KeyRow key rotate revoke />
                </For>
            </tbody>
        </table>
    }
}

#[component]
fn NewSecret(created: CreatedApiKey) -> impl IntoView {
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

#[component]
fn KeyRow(
    key: ApiKey,
    rotate: ServerAction<RotateApiKey>,
    revoke: ServerAction<RevokeApiKey>,
) -> impl IntoView {
    let id = key.id;
    let active = key.state == KeyState::Active;
    let badge = match key.state {
        KeyState::Active => "completed",
        KeyState::Expired => "cancelled",
        KeyState::Revoked => "failed",
    };
    let rotated = key.rotated_from.map(|from| format!(" (rotated from {from})"));
    view! {
        <tr data-key-id=id>
            <td>{id}</td>
            <td>{key.name}{rotated}</td>
            <td>{key.role.as_str()}</td>
            <td><code>{key.key_prefix}"…"</code></td>
            <td><span class=format!("badge badge-{badge}")>{key.state.as_str()}</span></td>
            <td class="nowrap">{when(Some(key.created_at))}</td>
            <td class="nowrap">{when(key.expires_at)}</td>
            <td class="nowrap">{when(key.last_used_at)}</td>
            <td class="actions">
                {active.then(|| view! {
                    <button type="button" on:click=move |_| { rotate.dispatch(RotateApiKey { id }); }>
                        "Rotate"
                    </button>
                    <button type="button" class="danger" on:click=move |_| {
                        let question = format!("Revoke API key {id}? Whatever uses it stops working at once.");
                        if window().confirm_with_message(&question).unwrap_or(false) {
                            revoke.dispatch(RevokeApiKey { id });
                        }
                    }>
                        "Revoke"
                    </button>
                })}
            </td>
        </tr>
    }
}
