//! The browser entry point: hydrates the islands of the server-rendered page.

// The islands are wasm exports of the `app` crate, which nothing here names: this line
// makes sure it is linked.
use app as _;

/// Called by the generated JavaScript glue once the wasm is loaded, before the islands
/// hydrate (each marks the page with `data-hydrated` when it has).
///
/// A page without islands (its forms are plain forms) is marked at once: it has nothing
/// more to load.
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_islands();
    let document = leptos::prelude::document();
    if let (Ok(None), Some(body)) = (document.query_selector("leptos-island"), document.body()) {
        body.set_attribute("data-hydrated", "true").ok();
    }
}
