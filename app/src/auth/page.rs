//! The sign-in page, the sign-out button and the signed-in user as context.

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

use super::{SignIn, SignOut, whoami};
use crate::caller::Principal;
use crate::error::AppError;
use crate::ui::form::ServerForm;

/// The signed-in user, loaded once per page frame.
pub type MeResource = Resource<Result<Option<Principal>, AppError>>;

/// Loads the signed-in user and makes it available to the page below.
pub fn provide_me() -> MeResource {
    let me = Resource::new(|| (), |_| whoami());
    provide_context(me);
    me
}

/// The signed-in user resource provided by the page frame.
pub fn use_me() -> MeResource {
    expect_context::<MeResource>()
}

/// Whether the signed-in user has at least `role`; call it inside the page frame, await it
/// in a `Suspend`.
pub fn signed_in_as(role: crate::caller::Role) -> impl Future<Output = bool> {
    let me = use_me();
    async move { me.await.ok().flatten().is_some_and(|p| p.role >= role) }
}

/// Sign in with an API key; the session lives in an HttpOnly cookie.
#[component]
pub fn LoginPage() -> impl IntoView {
    let query = use_query_map();
    let next = query.with_untracked(|q| q.get("next").unwrap_or_else(|| "/".to_owned()));
    let error = query.with_untracked(|q| q.get("error"));
    view! {
        <main class="login">
            <section class="login-card">
                <h1>
                    <span class="brand-mark" aria-hidden="true">"◆"</span>
                    " Flowdeck"
                </h1>
                <p class="muted">"Sign in with an API key. Create one with "
                    <code>"flowdeck api-key create"</code>"."</p>
                {sign_in_error(error.as_deref())
                    .map(|message| view! { <p class="form-error" role="alert">{message}</p> })}
                {oidc_enabled().then(|| view! {
                    <form method="post" action="/auth/oidc/login" class="oidc">
                        <input type="hidden" name="next" value=next.clone() />
                        <button type="submit" class="primary">"Sign in with your identity provider"</button>
                    </form>
                    <p class="muted or">"or"</p>
                })}
                <SignInForm next />
            </section>
        </main>
    }
}

/// Whether people may sign in through an OpenID Connect issuer.
fn oidc_enabled() -> bool {
    #[cfg(feature = "ssr")]
    {
        use_context::<super::Identity>().is_some_and(|s| s.oidc.is_some())
    }
    #[cfg(not(feature = "ssr"))]
    {
        false
    }
}

/// What the sign-in page says when the issuer sent the browser back without a session.
fn sign_in_error(code: Option<&str>) -> Option<&'static str> {
    match code? {
        "issuer" => Some("The identity provider cannot be reached; try again later."),
        _ => Some("Signing in with the identity provider did not work; try again."),
    }
}

/// The sign-in form: an island, so a refused key is said without a reload (without
/// JavaScript it is a plain form).
#[island(lazy)]
fn SignInForm(next: String) -> impl IntoView {
    crate::ui::mark_hydrated();
    let action = ServerAction::<SignIn>::new();
    let failed = move || matches!(action.value().get(), Some(Err(_)));
    view! {
        <ServerForm action read=|f| SignIn { api_key: f.text("api_key"), next: f.get("next") }>
            <input type="hidden" name="next" value=next />
            <label for="api_key">"API key"</label>
            <input
                id="api_key"
                name="api_key"
                type="password"
                autocomplete="current-password"
                placeholder="fdk_…"
                required
            />
            <Show when=failed>
                <p class="form-error" role="alert">"That key is not valid, expired or revoked."</p>
            </Show>
            <button type="submit" class="primary" disabled=move || action.pending().get()>
                "Sign in"
            </button>
        </ServerForm>
    }
}

/// Ends the session.
#[component]
pub fn SignOutButton() -> impl IntoView {
    let action = ServerAction::<SignOut>::new();
    view! {
        <ActionForm action attr:class="inline">
            <button type="submit" class="link">"Sign out"</button>
        </ActionForm>
    }
}
