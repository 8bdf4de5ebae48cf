//! The error answers an operation may give, as the OpenAPI document lists them.

use std::collections::BTreeMap;

use utoipa::IntoResponses;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::{Ref, RefOr};

/// The error answers an operation may give, all in the one error shape.
pub struct Errors;

impl IntoResponses for Errors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        [
            ("401", "No valid credential"),
            (
                "403",
                "The credential's role does not allow this, or a cross-site browser request",
            ),
            ("404", "No such object"),
            (
                "409",
                "The request clashes with the current state (`conflict`), or its `Idempotency-Key` is still in use by another request (`in_progress`, retry after `Retry-After` seconds)",
            ),
            ("413", "The body is larger than the limit (1 MiB by default)"),
            (
                "405",
                "The route does not take this method; `Allow` lists those it takes",
            ),
            ("415", "The body is not JSON"),
            ("422", "A field is missing or wrong; `field` names it"),
            ("429", "Over a rate limit; retry after `Retry-After` seconds"),
            ("500", "Internal error; details are in Flowdeck's log"),
            ("502", "Prefect or the identity provider failed"),
            (
                "503",
                "The database is unreachable for now; nothing was changed, retry after `Retry-After` seconds",
            ),
        ]
        .into_iter()
        .map(|(status, description)| {
            let content = ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build();
            let response = ResponseBuilder::new()
                .description(description)
                .content("application/json", content)
                .build();
            (status.to_owned(), RefOr::T(response))
        })
        .collect()
    }
}

/// One event of a `text/event-stream` answer, as a client parses it: the schema each event
/// of the stream has (OpenAPI 3.2 names it `itemSchema`; 3.0 and 3.1 tools read `schema` so).
#[derive(utoipa::ToSchema)]
#[allow(dead_code, reason = "only its schema is used")]
pub struct StreamEvent {
    /// Its type: the operation lists them (`log`, `heartbeat`, `end`; `run.status`, …).
    event: String,
    /// JSON text: the change or the line, `{}` for the stream's own events.
    data: String,
    /// Where the stream stands; sent back as `Last-Event-ID` to resume after it.
    id: Option<String>,
    /// Milliseconds a client waits before it reconnects.
    retry: Option<u64>,
}
