//! The page frame every signed-in page sits in: navigation and who is signed in.

use leptos::prelude::*;

use crate::auth::page::{SignOutButton, provide_me};
use crate::error::AppError;
use crate::ui::ErrorView;

/// The page frame: header with navigation and the signed-in user, then the page.
#[component]
pub fn Frame(children: Children) -> impl IntoView {
    let me = provide_me();
    view! {
        <header class="topbar">
            <a class="brand" href="/">
                <span class="brand-mark" aria-hidden="true">"◆"</span>
                "Flowdeck"
            </a>
            <nav aria-label="Main">
                <a href="/">"Pipelines"</a>
                <Suspense>
                    {move || Suspend::new(async move {
                        let admin = me.await.ok().flatten().is_some_and(|p| p.role >= crate::caller::Role::Admin);
                        admin.then(|| view! {
                            <a href="/admin/api-keys">"API keys"</a>
                            <a href="/admin/webhooks">"Webhooks"</a>
                            <a href="/audit">"Audit"</a>
                        })
                    })}
                </Suspense>
            </nav>
            <div class="who">
                <Suspense>
                    {move || Suspend::new(async move {
                        me.await
                            .ok()
                            .flatten()
                            .map(|p| {
                                view! {
                                    <span class="actor" title=p.actor.clone()>
                                        {p.actor.clone()}
                                    </span>
                                    <span class="role">{p.role.as_str()}</span>
                                    <SignOutButton />
                                }
                            })
                    })}
                </Suspense>
            </div>
        </header>
        <main class="page">{children()}</main>
    }
}

/// The page for any path the app does not know.
#[component]
pub fn NotFoundPage() -> impl IntoView {
    view! {
        <Frame>
            <ErrorView error=AppError::not_found("Page") />
        </Frame>
    }
}
