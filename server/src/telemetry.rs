//! Logs and traces for the binary: a text or JSON log on stderr (level from `RUST_LOG`),
//! and, when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set, spans
//! exported over OTLP/HTTP (protobuf, or JSON with `OTEL_EXPORTER_OTLP_PROTOCOL=http/json`)
//! with SQL statements as child spans. Without an endpoint no span layer is installed:
//! spans cost a filter check and nothing is exported.

use std::fmt;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use opentelemetry::trace::{Span as _, SpanKind, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Key, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::var;

/// What must outlive the program's work: the span exporter, flushed on drop.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("could not flush the last spans: {e}");
        }
    }
}

/// The OTLP protocol asked for, as the OpenTelemetry environment variables say.
fn protocol() -> anyhow::Result<Protocol> {
    let mut name = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
    let mut asked = var(name)?;
    if asked.is_none() {
        name = "OTEL_EXPORTER_OTLP_PROTOCOL";
        asked = var(name)?;
    }
    match asked.as_deref().map(str::trim) {
        None | Some("http/protobuf") => Ok(Protocol::HttpBinary),
        Some("http/json") => Ok(Protocol::HttpJson),
        Some("grpc") => {
            bail!("{name}=grpc is not built in; use http/protobuf (port 4318 on a collector)")
        }
        Some(other) => bail!("{name}={other:?} is not one of http/protobuf, http/json"),
    }
}

fn tracer_provider() -> anyhow::Result<Option<SdkTracerProvider>> {
    if var("OTEL_EXPORTER_OTLP_ENDPOINT")?.is_none() && var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")?.is_none() {
        return Ok(None);
    }
    // The endpoint, headers and timeout come from the standard variables.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol()?)
        .build()
        .context("cannot set up the OTLP span exporter")?;
    // The SDK names the service from OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES, else
    // `unknown_service`: that default becomes `flowdeck`.
    let version = KeyValue::new("service.version", env!("CARGO_PKG_VERSION"));
    let mut resource = Resource::builder().with_attribute(version.clone()).build();
    let unnamed = resource
        .get(&Key::from_static_str("service.name"))
        .is_none_or(|name| name.as_str().starts_with("unknown_service"));
    if unnamed {
        resource = Resource::builder()
            .with_service_name("flowdeck")
            .with_attribute(version)
            .build();
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    Ok(Some(provider))
}

/// Sets up logging and, if configured, span export. Call once, first thing.
pub fn init(json_logs: bool) -> anyhow::Result<Telemetry> {
    let log_filter =
        || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let logs = if json_logs {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines)
            .with_filter(log_filter())
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(log_filter())
            .boxed()
    };
    let provider = tracer_provider()?;
    let spans = provider.as_ref().map(|provider| {
        let tracer = provider.tracer("flowdeck");
        // Flowdeck's own spans (and its events as span events); SQL as spans of their own.
        let ours = Targets::new()
            .with_target("app", Level::INFO)
            .with_target("server", Level::INFO)
            .with_target("flowdeck", Level::INFO);
        let statements = Targets::new().with_target("sqlx::query", Level::TRACE);
        tracing_opentelemetry::layer()
            .with_tracer(tracer.clone())
            .with_filter(ours)
            .and_then(SqlSpans { tracer }.with_filter(statements))
    });
    tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init()
        .context("cannot install the log subscriber")?;
    Ok(Telemetry { provider })
}

/// Turns sqlx's per-statement events (statement, rows, elapsed) into client spans under
/// the span the statement ran in, timed from when it started to when it finished.
struct SqlSpans {
    tracer: SdkTracer,
}

#[derive(Default)]
struct Statement {
    summary: String,
    text: String,
    rows_affected: Option<i64>,
    rows_returned: Option<i64>,
    elapsed_secs: Option<f64>,
}

impl Visit for Statement {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "summary" => value.clone_into(&mut self.summary),
            "db.statement" => value.trim().clone_into(&mut self.text),
            _ => {}
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record_i64(field, i64::try_from(value).unwrap_or(i64::MAX));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        match field.name() {
            "rows_affected" => self.rows_affected = Some(value),
            "rows_returned" => self.rows_returned = Some(value),
            _ => {}
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if field.name() == "elapsed_secs" {
            self.elapsed_secs = Some(value);
        }
    }

    fn record_debug(&mut self, _: &Field, _: &dyn fmt::Debug) {}
}

/// A span name for a statement: its verb and the table it names first (`SELECT runs`).
fn statement_name(sql: &str) -> String {
    let words: Vec<&str> = sql
        .split_whitespace()
        .take(64)
        .map(|w| w.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '_'))
        .collect();
    const VERBS: [&str; 10] = [
        "SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "BEGIN", "COMMIT", "ROLLBACK", "LISTEN", "NOTIFY",
    ];
    let verb = words
        .iter()
        .find_map(|w| VERBS.into_iter().find(|verb| w.eq_ignore_ascii_case(verb)))
        .unwrap_or("SQL");
    let table = words
        .windows(2)
        .find(|pair| {
            ["FROM", "INTO", "UPDATE"]
                .iter()
                .any(|k| pair[0].eq_ignore_ascii_case(k))
        })
        .map(|pair| pair[1]);
    match table {
        Some(table) if !table.is_empty() => format!("{verb} {table}"),
        _ => verb.to_owned(),
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for SqlSpans {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        // The current OpenTelemetry context is the entered span's (context activation).
        let parent = opentelemetry::Context::current();
        if !parent.span().span_context().is_valid() {
            return;
        }
        let mut statement = Statement::default();
        event.record(&mut statement);
        let text = if statement.text.is_empty() {
            statement.summary
        } else {
            statement.text
        };
        let ended = SystemTime::now();
        let elapsed = Duration::from_secs_f64(statement.elapsed_secs.unwrap_or(0.0).max(0.0));
        let name = statement_name(&text);
        let mut attributes = vec![
            KeyValue::new("db.system.name", "postgresql"),
            KeyValue::new("db.query.text", text),
        ];
        if let Some(rows) = statement.rows_returned.filter(|r| *r > 0) {
            attributes.push(KeyValue::new("db.response.returned_rows", rows));
        }
        if let Some(rows) = statement.rows_affected.filter(|r| *r > 0) {
            attributes.push(KeyValue::new("db.response.affected_rows", rows));
        }
        let mut span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Client)
            .with_start_time(ended.checked_sub(elapsed).unwrap_or(ended))
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent);
        span.end_with_timestamp(ended);
    }
}

/// JSON lines: `timestamp`, `level`, `target`, `message`, the event's fields, then the
/// fields of the spans it happened in (innermost wins) flattened at the top, so every line
/// of a request carries its `request_id` and `trace_id`; `span` names the innermost span.
struct JsonLines;

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::from(format!("{value:?}")));
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            Value::from(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        );
        line.insert("level".into(), Value::from(meta.level().as_str()));
        line.insert("target".into(), Value::from(meta.target()));
        if let Some(scope) = ctx.event_scope() {
            let mut innermost = None;
            for span in scope.from_root() {
                let extensions = span.extensions();
                // With `JsonFields`, a span's fields are kept as one JSON object.
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(fields.as_str())
                {
                    for (key, value) in fields {
                        // The exporter's hints are no use in a log line.
                        if !key.starts_with("otel.") {
                            line.insert(key, value);
                        }
                    }
                }
                innermost = Some(span.name());
            }
            if let Some(name) = innermost {
                line.insert("span".into(), Value::from(name));
            }
        }
        event.record(&mut JsonVisitor(&mut line));
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

#[cfg(test)]
mod tests {
    use super::statement_name;

    #[test]
    fn statements_are_named_by_verb_and_first_table() {
        assert_eq!(statement_name("SELECT id FROM runs WHERE id = $1"), "SELECT runs");
        assert_eq!(
            statement_name("INSERT INTO audit_events (actor) VALUES ($1)"),
            "INSERT audit_events"
        );
        assert_eq!(
            statement_name("UPDATE run_outbox SET attempts = 1"),
            "UPDATE run_outbox"
        );
        assert_eq!(
            statement_name("WITH claimed AS (UPDATE run_outbox SET x = 1)"),
            "WITH run_outbox"
        );
        assert_eq!(statement_name("SELECT 1"), "SELECT");
        assert_eq!(statement_name("delete from \"runs\" where true"), "DELETE runs");
    }
}
