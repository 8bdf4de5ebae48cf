//! Forms that post to a server function, for islands.
//!
//! Without wasm a [`ServerForm`] is a plain form posting to its server function. Once its
//! island has hydrated, a submit reads the fields by name ([`Fields`]) and dispatches the
//! server action, so the answer shows in place.
//!
//! Leptos's `ActionForm` does the same, but decodes the form into the function's input
//! with `serde_qs`. That decoder, with serde's buffering for `flatten`, was a 26 KB
//! (brotli) wasm chunk that every page with a form loaded. Here each form says in a few
//! lines how its fields make the input. Forms outside islands cost no wasm and may keep
//! `ActionForm`.

use leptos::ev::SubmitEvent;
use leptos::prelude::*;
use leptos::server_fn::ServerFn;
use leptos::wasm_bindgen::JsCast;
use leptos::web_sys::{FormData, HtmlFormElement};

/// A submitted form's fields, read by name.
pub struct Fields(FormData);

impl Fields {
    fn of(ev: &SubmitEvent) -> Option<Self> {
        let form = ev.target()?.dyn_into::<HtmlFormElement>().ok()?;
        FormData::new_with_form(&form).ok().map(Fields)
    }

    /// The field's text; `None` when the form sent no such field (a box not ticked).
    pub fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).as_string()
    }

    /// The field's text, empty when the form sent none.
    pub fn text(&self, name: &str) -> String {
        self.get(name).unwrap_or_default()
    }
}

/// A form posting to `action`'s server function; hydrated, it dispatches `action` with
/// the input `read` makes from the fields.
#[component]
pub fn ServerForm<S>(
    /// The server function's action; its value and pending state are the form's.
    action: ServerAction<S>,
    /// Makes the server function's input from the submitted fields.
    read: impl Fn(&Fields) -> S + 'static,
    /// The form's class.
    #[prop(optional)]
    class: Option<&'static str>,
    /// The fields and buttons.
    children: Children,
) -> impl IntoView
where
    S: ServerFn + Clone + Send + Sync + 'static,
    S::Output: Send + Sync + 'static,
    S::Error: Send + Sync + 'static,
{
    // A server function that redirects (signing in, a new pipeline) sends the browser on,
    // unless a router has set the hook already.
    _ = leptos::server_fn::redirect::set_redirect_hook(|to: &str| {
        _ = window().location().set_href(to);
    });
    let submit = move |ev: SubmitEvent| {
        if let Some(fields) = Fields::of(&ev) {
            ev.prevent_default();
            action.dispatch(read(&fields));
        }
    };
    view! {
        <form action=S::url() method="post" class=class on:submit=submit>
            {children()}
        </form>
    }
}
