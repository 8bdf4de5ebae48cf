//! W3C Trace Context (`traceparent`): parsing what callers send, and the value handed on
//! to Prefect and to the flows' callbacks.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// A version-00 `traceparent`: trace id, parent span id and flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub flags: TraceFlags,
}

impl TraceParent {
    /// Parses a `traceparent` header as the W3C recommendation says: `00-<32 hex>-<16 hex>-<2 hex>`
    /// in lower case, neither id all zeros. A later version is read by its first four
    /// fields if it is longer; anything else is `None` (and the request starts a new trace).
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        let mut parts = value.splitn(5, '-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let span = parts.next()?;
        let flags = parts.next()?;
        let rest = parts.next();
        let lower_hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !lower_hex(version, 2)
            || version == "ff"
            || !lower_hex(trace, 32)
            || !lower_hex(span, 16)
            || !lower_hex(flags, 2)
        {
            return None;
        }
        // Version 00 has exactly four fields; later versions may append more.
        if version == "00" && rest.is_some() {
            return None;
        }
        let trace_id = TraceId::from_hex(trace).ok()?;
        let span_id = SpanId::from_hex(span).ok()?;
        if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
            return None;
        }
        let flags = TraceFlags::new(u8::from_str_radix(flags, 16).ok()? & TraceFlags::SAMPLED.to_u8());
        Some(TraceParent {
            trace_id,
            span_id,
            flags,
        })
    }

    /// A new trace (sampled), for requests that bring none while no exporter is set: the
    /// trace id still ties the logs, the run and the Prefect flow run together.
    pub fn new_root() -> Self {
        TraceParent {
            trace_id: TraceId::from_bytes(rand::random::<[u8; 16]>()),
            span_id: SpanId::from_bytes(rand::random::<[u8; 8]>()),
            flags: TraceFlags::SAMPLED,
        }
    }

    /// The same trace with a new span id (this process's span, when nothing records spans).
    pub fn child(self) -> Self {
        TraceParent {
            span_id: SpanId::from_bytes(rand::random::<[u8; 8]>()),
            ..self
        }
    }

    /// The trace id as 32 hex digits.
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// This context as the remote parent of a span.
    pub fn as_parent(&self) -> opentelemetry::Context {
        let context = SpanContext::new(self.trace_id, self.span_id, self.flags, true, TraceState::NONE);
        opentelemetry::Context::new().with_remote_span_context(context)
    }

    /// The context of `span` when spans are being recorded (an exporter is set).
    pub fn of_span(span: &tracing::Span) -> Option<Self> {
        let context = span.context();
        let span_context = context.span().span_context().clone();
        span_context.is_valid().then(|| TraceParent {
            trace_id: span_context.trace_id(),
            span_id: span_context.span_id(),
            flags: span_context.trace_flags(),
        })
    }

    /// Makes `span` continue `parent` (if any), records the trace id as its `trace_id`
    /// field, and returns the context work inside `span` runs in: the span's own when spans
    /// are recorded, else the parent's trace (or a new one) with a fresh span id, so ids are
    /// the same shape either way.
    pub fn adopt(span: &tracing::Span, parent: Option<TraceParent>) -> Self {
        if let Some(parent) = parent {
            // Fails only when no span layer is installed: then there is nothing to parent.
            let _ = span.set_parent(parent.as_parent());
        }
        let context = Self::of_span(span).unwrap_or_else(|| parent.map_or_else(Self::new_root, Self::child));
        span.record("trace_id", context.trace_id_hex());
        context
    }
}

impl std::fmt::Display for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id,
            self.span_id,
            self.flags.to_u8()
        )
    }
}

/// The `traceparent` for a call made from inside the current span: that span's context
/// when spans are recorded, else `fallback` (what the work was started with).
pub fn outgoing_traceparent(fallback: Option<TraceParent>) -> Option<TraceParent> {
    TraceParent::of_span(&tracing::Span::current()).or(fallback)
}

#[cfg(test)]
mod tests {
    use super::TraceParent;

    #[test]
    fn a_valid_traceparent_round_trips() {
        let value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = TraceParent::parse(value).expect("valid");
        assert_eq!(parsed.to_string(), value);
        assert_eq!(parsed.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let unsampled =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(!unsampled.flags.is_sampled());
    }

    #[test]
    fn malformed_traceparents_are_refused() {
        for value in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
        ] {
            assert_eq!(TraceParent::parse(value), None, "{value:?}");
        }
        // A later version may carry more fields; the first four are read.
        assert!(TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what").is_some());
    }

    #[test]
    fn without_a_span_layer_the_callers_trace_continues_with_a_new_span() {
        let caller = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let ours = TraceParent::adopt(&tracing::Span::none(), Some(caller));
        assert_eq!(ours.trace_id, caller.trace_id);
        assert_ne!(ours.span_id, caller.span_id);
        let fresh = TraceParent::adopt(&tracing::Span::none(), None);
        assert_ne!(fresh.trace_id, caller.trace_id);
    }
}
