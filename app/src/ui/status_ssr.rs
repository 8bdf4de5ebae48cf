//! Sets the HTTP status of a server-rendered page.

/// Answers the current request with `code`.
pub fn set(code: u16) {
    if let (Some(response), Ok(status)) = (
        leptos::prelude::use_context::<leptos_axum::ResponseOptions>(),
        http::StatusCode::from_u16(code),
    ) {
        response.set_status(status);
    }
}
