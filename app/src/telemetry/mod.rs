//! Observability: request ids and W3C trace context for every request, spans around each
//! request, service operation and Prefect call, and the Prometheus metrics.
//!
//! The request id and trace context are decided once, by [`http::observe`], the outermost
//! layer of the router; everything after reads them from the request's
//! [`RequestIds`] (the run it accepts, the audit rows it writes, the log lines and spans
//! it makes). The OTLP exporter and the log format are the binary's business (`server`):
//! without an exporter the spans cost a log filter check and nothing is sent anywhere.

pub mod http;
pub mod metrics;
mod trace;

pub use trace::{TraceParent, outgoing_traceparent};

/// The ids of one request: the caller's valid `X-Request-ID` (else one made here) and the
/// trace context it runs in, as a `traceparent` naming this request's span as the parent.
#[derive(Debug, Clone)]
pub struct RequestIds {
    pub request_id: String,
    pub traceparent: TraceParent,
}

/// Whether `value` is acceptable as a request id.
///
/// 1 to 128 characters from `A–Z a–z 0–9 - _ . :`: enough for UUIDs, ULIDs and most
/// proxies' ids, nothing that could break a log line, a header or a Prefect tag.
pub fn is_valid_request_id(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// A new request id: 32 random hex digits.
pub fn new_request_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}
