//! The one error type of Flowdeck, shared by REST handlers, server functions and the browser.
//!
//! Every variant is something a client can act on. Conversions from internal errors
//! (`sqlx`, I/O) log the detail once, here, and keep it out of the answer.

use serde::{Deserialize, Serialize};

/// Result with [`AppError`] as the default error.
pub type Result<T, E = AppError> = std::result::Result<T, E>;

/// What went wrong, in terms a caller can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum AppError {
    /// The named thing does not exist (or the caller may not know it does).
    #[error("{what} not found")]
    NotFound {
        /// What was looked for, e.g. `Pipeline`.
        what: String,
    },
    /// The request clashes with the current state (a duplicate, a finished run).
    #[error("{message}")]
    Conflict {
        /// Why the request clashes.
        message: String,
    },
    /// Another request with the same `Idempotency-Key` is still being processed; sent again
    /// once that one has ended, the request answers its result.
    #[error("{message}")]
    InProgress {
        /// What is in progress.
        message: String,
    },
    /// A field of the request is missing or wrong.
    #[error("{field}: {reason}")]
    Invalid {
        /// The offending field, as a dotted path (`stages.2`), or `body`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No valid credential came with the request.
    #[error("authentication required")]
    Unauthorized,
    /// The credential is valid but its role does not allow the operation.
    #[error("this operation needs the {needed} role")]
    Forbidden {
        /// The least role that would do.
        needed: String,
    },
    /// The credential is a scoped API key whose scope does not allow the operation.
    #[error("this key's scope does not allow {action}")]
    OutOfScope {
        /// What was refused (`cancel`, `admin operations`).
        action: String,
    },
    /// The key has spent one of its budgets: `429` for triggers per hour or day (with
    /// `Retry-After`), `409` for its unfinished runs (they free it as they end).
    #[error("over budget: {used} of {limit} {budget} used{}", retry_after.map(|s| format!("; frees in {s} s")).unwrap_or_default())]
    OverBudget {
        /// Which budget: `triggers_per_hour`, `triggers_per_day`, `max_unfinished_runs`.
        budget: String,
        /// The budget.
        limit: i64,
        /// What is spent of it now.
        used: i64,
        /// Seconds until it frees, for the budgets that free with time.
        retry_after: Option<u64>,
    },
    /// The caller is over a rate limit; it may try again after `retry_after` seconds.
    #[error("too many requests; try again in {retry_after} s")]
    RateLimited {
        /// Seconds until a new attempt can succeed (also sent as `Retry-After`).
        retry_after: u64,
    },
    /// The request body is larger than the server reads.
    #[error("the body is larger than {limit} bytes")]
    TooLarge {
        /// The largest body read, in bytes.
        limit: usize,
    },
    /// The request body is not in a format the route reads (it reads JSON).
    #[error("the body must be application/json")]
    UnsupportedMediaType,
    /// A service Flowdeck depends on failed.
    #[error("upstream service failed: {service}")]
    Upstream {
        /// Which service (`prefect`).
        service: String,
    },
    /// A service Flowdeck cannot do without is unreachable for now (the database while it
    /// restarts); nothing was changed and the same request may be sent again.
    #[error("{service} unavailable; try again shortly")]
    Unavailable {
        /// Which service (`database`).
        service: String,
    },
    /// Something failed inside Flowdeck; details are in its logs, not here.
    #[error("internal error")]
    Internal,
}

impl AppError {
    /// A [`AppError::NotFound`] for `what`.
    pub fn not_found(what: &str) -> Self {
        Self::NotFound {
            what: what.to_owned(),
        }
    }

    /// A [`AppError::Invalid`] naming `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// A [`AppError::Conflict`] with `message`.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::Conflict {
            message: message.into(),
        }
    }

    /// The HTTP status this error answers with.
    pub fn status_code(&self) -> u16 {
        match self {
            Self::NotFound { .. } => 404,
            Self::Conflict { .. } | Self::InProgress { .. } => 409,
            Self::Invalid { .. } => 422,
            Self::Unauthorized => 401,
            Self::Forbidden { .. } | Self::OutOfScope { .. } => 403,
            Self::OverBudget {
                retry_after: Some(_), ..
            } => 429,
            Self::OverBudget { .. } => 409,
            Self::RateLimited { .. } => 429,
            Self::TooLarge { .. } => 413,
            Self::UnsupportedMediaType => 415,
            Self::Upstream { .. } => 502,
            Self::Unavailable { .. } => 503,
            Self::Internal => 500,
        }
    }

    /// Seconds after which the same request may succeed (the `Retry-After` header), for
    /// errors that pass.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after } => Some(*retry_after),
            Self::OverBudget { retry_after, .. } => *retry_after,
            Self::Unavailable { .. } | Self::InProgress { .. } => Some(1),
            _ => None,
        }
    }

    /// The machine-readable code of the error, as in the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "not_found",
            Self::Conflict { .. } => "conflict",
            Self::InProgress { .. } => "in_progress",
            Self::Invalid { .. } => "invalid",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden { .. } | Self::OutOfScope { .. } => "forbidden",
            Self::OverBudget { .. } => "over_budget",
            Self::RateLimited { .. } => "rate_limited",
            Self::TooLarge { .. } => "too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::Upstream { .. } => "upstream",
            Self::Unavailable { .. } => "unavailable",
            Self::Internal => "internal",
        }
    }
}

impl leptos::server_fn::error::FromServerFnError for AppError {
    type Encoder = leptos::server_fn::codec::JsonEncoding;

    fn from_server_fn_error(value: leptos::server_fn::error::ServerFnErrorErr) -> Self {
        use leptos::server_fn::error::ServerFnErrorErr as E;
        match value {
            E::Args(reason) | E::MissingArg(reason) => Self::invalid("body", reason),
            _ => Self::Internal,
        }
    }

    /// Encodes the error for the caller and, on the server, answers with its HTTP status
    /// (403, 422, ...) rather than server functions' blanket 500.
    fn ser(&self) -> leptos::server_fn::Bytes {
        #[cfg(feature = "ssr")]
        http::answer_server_fn_with(self);
        <Self::Encoder as leptos::server_fn::Encodes<Self>>::encode(self)
            .unwrap_or_else(|_| leptos::server_fn::Bytes::from_static(br#"{"code":"internal"}"#))
    }
}

#[cfg(feature = "ssr")]
mod http;
#[cfg(feature = "ssr")]
pub use http::{ErrorBody, ResultExt, problem_media_type};
