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
            ("409", "The request clashes with the current state"),
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
