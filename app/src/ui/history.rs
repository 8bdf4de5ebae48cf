//! The browser's address bar, for islands that change what a page shows without loading a
//! new one. Called from event handlers only, which never run on the server.

use leptos::prelude::window;

/// Shows `url` in the address bar: a new history entry, or in place of the current one.
pub fn show(url: &str, replace: bool) {
    if let Ok(history) = window().history() {
        let state = leptos::wasm_bindgen::JsValue::NULL;
        if replace {
            history.replace_state_with_url(&state, "", Some(url)).ok();
        } else {
            history.push_state_with_url(&state, "", Some(url)).ok();
        }
    }
}

/// The query string of the address bar (`?…`, or empty).
pub fn search() -> String {
    window().location().search().unwrap_or_default()
}
