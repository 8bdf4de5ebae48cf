//! The browser entry point: hydrates the islands of the server-rendered page.

// The islands are wasm exports of the `app` crate, which nothing here names: this line
// makes sure it is linked.
use app as _;

/// Called by the generated JavaScript glue once the wasm is loaded, before the islands
/// hydrate.
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_islands();
    // Tells tests (and people debugging) that the wasm has taken over the page.
    if let Some(body) = leptos::prelude::document().body() {
        body.set_attribute("data-hydrated", "true").ok();
    }
}
