//! The real `flowdeck` binary, started as operators start it, with JSON logs, a separate
//! metrics address and an OTLP endpoint served by this test: request ids and trace context
//! reach the response, the run, the spans and the log lines; `/metrics` parses and holds
//! every family; readiness follows the database.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use app::caller::Role;
use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{Value, json};
use sqlx::PgPool;

/// One exported span with the resource it came from.
#[derive(Debug, Clone)]
struct Received {
    span: Span,
    resource: Vec<KeyValue>,
}

type Inbox = Arc<Mutex<Vec<Received>>>;

/// An OTLP/HTTP receiver on a loopback port: decodes every protobuf export it gets.
async fn otlp_receiver() -> (String, Inbox) {
    let inbox: Inbox = Arc::default();
    let kept = inbox.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: Bytes| {
            let kept = kept.clone();
            async move {
                assert_eq!(
                    headers.get("content-type").and_then(|v| v.to_str().ok()),
                    Some("application/x-protobuf")
                );
                let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
                let mut kept = kept.lock().unwrap();
                for resource_spans in request.resource_spans {
                    let resource = resource_spans.resource.map(|r| r.attributes).unwrap_or_default();
                    for scope in resource_spans.scope_spans {
                        for span in scope.spans {
                            kept.push(Received {
                                span,
                                resource: resource.clone(),
                            });
                        }
                    }
                }
                // An empty ExportTraceServiceResponse.
                ([("content-type", "application/x-protobuf")], Vec::<u8>::new())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, inbox)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The binary, running; stopped (SIGTERM) when dropped.
struct Flowdeck {
    child: Child,
    url: String,
    metrics_url: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Flowdeck {
    async fn start(db: &PgPool, otlp: &str) -> Self {
        let port = free_port();
        let metrics_port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_flowdeck"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", common::database_url(db))
            .env("FLOWDECK_ADDR", format!("127.0.0.1:{port}"))
            .env("FLOWDECK_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
            .env("FLOWDECK_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp)
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            // A Prefect that is down: submissions fail (and are retried later).
            .env("PREFECT_API_URL", format!("http://127.0.0.1:{}/api", free_port()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the flowdeck binary starts");
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let lines = BufReader::new(child.stderr.take().unwrap());
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in lines.lines().map_while(Result::ok) {
                kept.lock().unwrap().push(line);
            }
        });
        let flowdeck = Flowdeck {
            child,
            url: format!("http://127.0.0.1:{port}"),
            metrics_url: format!("http://127.0.0.1:{metrics_port}/metrics"),
            log,
        };
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Ok(answer) = client.get(format!("{}/api/health", flowdeck.url)).send().await
                && answer.status() == 200
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "flowdeck did not start: {:?}",
                flowdeck.log.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        flowdeck
    }

    fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Flowdeck {
    /// Sends SIGTERM (the graceful path: the exporter flushes) and waits at most 10 s for
    /// the process to end; its exit status, if it ended.
    fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .ok();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Flowdeck {
    fn drop(&mut self) {
        if self.terminate().is_none() {
            self.child.kill().ok();
            self.child.wait().ok();
        }
    }
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

fn string_attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    match attribute(attributes, key) {
        Some(any_value::Value::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

fn int_attribute(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match attribute(attributes, key) {
        Some(any_value::Value::IntValue(i)) => Some(*i),
        _ => None,
    }
}

/// Waits until `found` holds for the spans received so far.
async fn wait_for_spans(inbox: &Inbox, what: &str, found: impl Fn(&[Received]) -> bool) -> Vec<Received> {
    let started = Instant::now();
    loop {
        let spans = inbox.lock().unwrap().clone();
        if found(&spans) {
            return spans;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no {what} among {} spans: {:?}",
            spans.len(),
            spans.iter().map(|r| &r.span.name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One sample of the OpenMetrics text: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses the OpenMetrics text format strictly enough to catch a malformed exposition:
/// every sample belongs to a declared family, labels are `name="value"`, values are
/// numbers, and the text ends with `# EOF`.
fn parse_openmetrics(text: &str) -> (BTreeMap<String, String>, Vec<Sample>) {
    let mut families = BTreeMap::new();
    let mut samples = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "the exposition ends with # EOF");
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            families.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with("# UNIT ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment line {line:?}");
        let (series, value) = line.rsplit_once(' ').expect("name value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("{line:?}: the value is not a number"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("labels end with }");
                let mut labels = BTreeMap::new();
                for pair in body.split("\",").filter(|p| !p.is_empty()) {
                    let (key, value) = pair.split_once("=\"").expect("label=\"value\"");
                    labels.insert(key.to_owned(), value.trim_end_matches('"').to_owned());
                }
                (name.to_owned(), labels)
            }
        };
        let family = families
            .keys()
            .filter(|family| name.starts_with(family.as_str()))
            .max_by_key(|family| family.len())
            .unwrap_or_else(|| panic!("sample {name} belongs to no declared family"));
        let suffix = &name[family.len()..];
        assert!(
            ["", "_total", "_bucket", "_count", "_sum", "_created"].contains(&suffix),
            "sample {name} does not fit family {family}"
        );
        samples.push((name, labels, value));
    }
    (families, samples)
}

fn value_of(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
}

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[sqlx::test(migrations = "../migrations")]
async fn ids_spans_metrics_and_logs_of_the_real_binary(db: PgPool) {
    let admin = common::key(&db, Role::Admin).await;
    let viewer = common::key(&db, Role::Viewer).await;
    let (otlp, inbox) = otlp_receiver().await;
    let mut flowdeck = Flowdeck::start(&db, &otlp).await;
    let client = reqwest::Client::new();
    let api = |path: &str| format!("{}{path}", flowdeck.url);

    // A pipeline, then a trigger with the caller's request id and trace context.
    let created = client
        .post(api("/api/pipelines/"))
        .bearer_auth(&admin)
        .json(&json!({"name": "Observed", "deployment": "etl/demo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let pipeline: Value = created.json().await.unwrap();
    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let triggered = client
        .post(api(&format!("/api/pipelines/{}/runs", pipeline["id"])))
        .bearer_auth(&admin)
        .header("x-request-id", "trigger-0001")
        .header("traceparent", &traceparent)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(triggered.status(), 202);
    assert_eq!(triggered.headers()["x-request-id"], "trigger-0001");
    let run: Value = triggered.json().await.unwrap();
    assert_eq!(run["request_id"], "trigger-0001");
    let stored: Option<String> = sqlx::query_scalar("SELECT traceparent FROM runs WHERE id = $1")
        .bind(run["id"].as_i64().unwrap())
        .fetch_one(&db)
        .await
        .unwrap();
    let stored = stored.expect("the run keeps its trace context");
    assert!(stored.starts_with(&format!("00-{CALLER_TRACE}-")), "{stored}");
    assert!(
        !stored.contains(CALLER_SPAN),
        "the parent handed on is Flowdeck's span: {stored}"
    );
    let audited: String =
        sqlx::query_scalar("SELECT request_id FROM audit_events WHERE action = 'run.trigger'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(audited, "trigger-0001");

    // An id that could break a header or a log line is replaced, not echoed.
    let odd = client
        .get(api("/api/health"))
        .header("x-request-id", "two words\"and a quote")
        .send()
        .await
        .unwrap();
    let replaced = odd.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(replaced.len(), 32);
    assert!(replaced.bytes().all(|b| b.is_ascii_hexdigit()), "{replaced}");
    // A status report moves the run (a transition).
    let reported = client
        .post(api("/api/status-update/"))
        .bearer_auth(&admin)
        .header("x-request-id", "report-0001")
        .json(&json!({"run_id": run["id"], "stage_name": "Data Generation", "status": "running"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reported.status(), 200);

    // Spans: the request continues the caller's trace; the service operation and its SQL
    // statements are its descendants; the resource names the service and version.
    let spans = wait_for_spans(&inbox, "trigger request with its SQL", |spans| {
        spans
            .iter()
            .any(|r| r.span.name == "POST /api/pipelines/{id}/runs")
            && spans.iter().any(|r| r.span.name == "runs.trigger")
            && spans
                .iter()
                .any(|r| r.span.name.starts_with("INSERT") && hex(&r.span.trace_id) == CALLER_TRACE)
    })
    .await;
    let request = spans
        .iter()
        .find(|r| r.span.name == "POST /api/pipelines/{id}/runs")
        .unwrap();
    assert_eq!(hex(&request.span.trace_id), CALLER_TRACE);
    assert_eq!(hex(&request.span.parent_span_id), CALLER_SPAN);
    assert_eq!(request.span.kind, 2, "a server span");
    let attributes = &request.span.attributes;
    assert_eq!(
        string_attribute(attributes, "http.route").as_deref(),
        Some("/api/pipelines/{id}/runs")
    );
    assert_eq!(
        string_attribute(attributes, "http.request.method").as_deref(),
        Some("POST")
    );
    assert_eq!(
        int_attribute(attributes, "http.response.status_code"),
        Some(202),
        "{attributes:?}"
    );
    assert_eq!(
        string_attribute(attributes, "request_id").as_deref(),
        Some("trigger-0001")
    );
    assert_eq!(
        string_attribute(&request.resource, "service.name").as_deref(),
        Some("flowdeck")
    );
    assert_eq!(
        string_attribute(&request.resource, "service.version").as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert!(
        stored.contains(&hex(&request.span.span_id)),
        "the run's traceparent names the request span: {stored}"
    );
    let service = spans.iter().find(|r| r.span.name == "runs.trigger").unwrap();
    assert_eq!(service.span.parent_span_id, request.span.span_id);
    let in_trace: Vec<&Received> = spans
        .iter()
        .filter(|r| hex(&r.span.trace_id) == CALLER_TRACE)
        .collect();
    let statements: Vec<&Received> = in_trace
        .iter()
        .copied()
        .filter(|r| string_attribute(&r.span.attributes, "db.system.name").as_deref() == Some("postgresql"))
        .collect();
    assert!(statements.len() >= 3, "the trigger's statements: {statements:?}");
    for statement in &statements {
        assert_eq!(statement.span.kind, 3, "a client span");
        let text = string_attribute(&statement.span.attributes, "db.query.text").unwrap();
        assert!(!text.contains(&admin), "no secret in a statement");
        // Values are bound, not written into the text (the run's request id is one of them).
        assert!(!text.contains("trigger-0001"), "a bound value in {text}");
        // Each statement hangs under a span of this trace and lies within its time.
        let parent = in_trace
            .iter()
            .find(|r| r.span.span_id == statement.span.parent_span_id)
            .unwrap_or_else(|| panic!("{} has no parent in the trace", statement.span.name));
        assert!(
            parent.span.start_time_unix_nano <= statement.span.start_time_unix_nano
                && statement.span.end_time_unix_nano <= parent.span.end_time_unix_nano,
            "{} is timed outside its parent {}",
            statement.span.name,
            parent.span.name
        );
    }

    // Not ready while Prefect is down, and saying so.
    let ready = client.get(api("/api/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(
        ready["checks"],
        json!({"database": "ok", "prefect": "unreachable"})
    );
    // The dispatcher's attempt continues the trigger's trace, its Prefect call a child.
    let spans = wait_for_spans(&inbox, "failed Prefect call in the trigger's trace", |spans| {
        spans
            .iter()
            .any(|r| r.span.name == "prefect read_deployment" && hex(&r.span.trace_id) == CALLER_TRACE)
    })
    .await;
    let call = spans
        .iter()
        .find(|r| r.span.name == "prefect read_deployment" && hex(&r.span.trace_id) == CALLER_TRACE)
        .unwrap();
    assert_eq!(call.span.kind, 3, "a client span");
    assert_eq!(
        call.span.status.as_ref().map(|s| s.code),
        Some(2),
        "an error status"
    );
    // Something to count as an error.
    let missing = client
        .get(api("/api/pipelines/999"))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // Metrics, on the separate address without credentials.
    let text = client
        .get(&flowdeck.metrics_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (families, samples) = parse_openmetrics(&text);
    for (family, kind) in [
        ("flowdeck_http_requests", "counter"),
        ("flowdeck_http_errors", "counter"),
        ("flowdeck_http_request_duration_seconds", "histogram"),
        ("flowdeck_triggers", "counter"),
        ("flowdeck_status_updates", "counter"),
        ("flowdeck_run_transitions", "counter"),
        ("flowdeck_prefect_request_duration_seconds", "histogram"),
        ("flowdeck_prefect_errors", "counter"),
        ("flowdeck_outbox_depth", "gauge"),
        ("flowdeck_outbox_oldest_age_seconds", "gauge"),
        ("flowdeck_sse_subscribers", "gauge"),
        ("flowdeck_db_pool_connections", "gauge"),
        ("flowdeck_db_pool_max_connections", "gauge"),
        ("flowdeck_process_resident_memory_bytes", "gauge"),
        ("flowdeck_process_peak_resident_memory_bytes", "gauge"),
    ] {
        assert_eq!(
            families.get(family).map(String::as_str),
            Some(kind),
            "{family} in {text}"
        );
    }
    let trigger_route = [
        ("route", "/api/pipelines/{id}/runs"),
        ("method", "POST"),
        ("status", "202"),
    ];
    assert_eq!(
        value_of(&samples, "flowdeck_http_requests_total", &trigger_route),
        Some(1.0)
    );
    assert_eq!(
        value_of(
            &samples,
            "flowdeck_http_request_duration_seconds_count",
            &trigger_route
        ),
        Some(1.0)
    );
    assert_eq!(
        value_of(
            &samples,
            "flowdeck_http_request_duration_seconds_bucket",
            &[("route", "/api/pipelines/{id}/runs"), ("le", "+Inf")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value_of(&samples, "flowdeck_triggers_total", &[("outcome", "accepted")]),
        Some(1.0)
    );
    assert_eq!(
        value_of(
            &samples,
            "flowdeck_status_updates_total",
            &[("outcome", "applied")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value_of(
            &samples,
            "flowdeck_run_transitions_total",
            &[("from", "pending"), ("to", "running")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value_of(
            &samples,
            "flowdeck_http_errors_total",
            &[("route", "/api/pipelines/{id}"), ("status", "404")]
        ),
        Some(1.0)
    );
    assert!(
        value_of(
            &samples,
            "flowdeck_prefect_errors_total",
            &[("operation", "read_deployment"), ("kind", "unavailable")]
        )
        .unwrap()
            >= 1.0
    );
    assert!(
        value_of(
            &samples,
            "flowdeck_prefect_request_duration_seconds_count",
            &[("operation", "read_deployment")]
        )
        .unwrap()
            >= 1.0
    );
    // Prefect is down: the run waits in the outbox.
    assert_eq!(value_of(&samples, "flowdeck_outbox_depth", &[]), Some(1.0));
    assert!(value_of(&samples, "flowdeck_outbox_oldest_age_seconds", &[]).unwrap() > 0.0);
    // The limit `flowdeck` sets on its pool.
    assert_eq!(
        value_of(&samples, "flowdeck_db_pool_max_connections", &[]),
        Some(16.0)
    );
    assert!(value_of(&samples, "flowdeck_process_resident_memory_bytes", &[]).unwrap() > 1e6);
    // Raw paths never become series.
    assert!(samples.iter().all(|(_, labels, _)| {
        labels
            .get("route")
            .is_none_or(|r| !r.chars().any(|c| c.is_ascii_digit()))
    }));

    // On the main address `/metrics` needs a credential; a viewer's will do.
    let anonymous = client.get(api("/metrics")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let scraped = client
        .get(api("/metrics"))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(scraped.status(), 200);
    assert!(
        scraped.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );

    // Logs: every line is JSON; lines inside the trigger carry its request and trace ids.
    let lines = flowdeck.log_lines();
    let parsed: Vec<Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let accepted = parsed
        .iter()
        .find(|line| line["message"] == "run accepted")
        .unwrap_or_else(|| panic!("no 'run accepted' line in {lines:?}"));
    assert_eq!(accepted["request_id"], "trigger-0001");
    assert_eq!(accepted["trace_id"], CALLER_TRACE);
    assert_eq!(accepted["level"], "INFO");
    assert!(accepted["timestamp"].as_str().is_some());
    assert!(
        lines
            .iter()
            .all(|line| !line.contains(&admin) && !line.contains(&viewer)),
        "no key in the log"
    );

    // SIGTERM drains (server/tests/replicas.rs) and the process exits 0 once it is done.
    let status = flowdeck.terminate();
    assert!(
        status.is_some_and(|s| s.success()),
        "exit after SIGTERM: {status:?}; {:?}",
        flowdeck.log_lines().iter().rev().take(6).collect::<Vec<_>>()
    );
    assert!(
        flowdeck
            .log_lines()
            .iter()
            .any(|line| line.contains("flowdeck stopped")),
        "the last line says it stopped"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[sqlx::test(migrations = "../migrations")]
async fn readiness_follows_the_database(db: PgPool) {
    let app = common::TestApp::new(db.clone()).await;
    let ready = app.call("GET", "/api/ready", None, None).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(
        ready.json()["checks"],
        json!({"database": "ok", "prefect": "not configured"})
    );
    // The pool closed is the database gone, for this replica.
    db.close().await;
    let down = app.call("GET", "/api/ready", None, None).await;
    assert_eq!(down.status, 503);
    assert_eq!(down.json()["status"], "unavailable");
    assert_eq!(down.json()["checks"]["database"], "unreachable");
    // The process itself is still up.
    assert_eq!(app.call("GET", "/api/health", None, None).await.status, 200);
}

#[sqlx::test(migrations = "../migrations")]
async fn readiness_follows_prefect_when_one_is_configured(db: PgPool) {
    // Nothing listens on port 1.
    let gone = app::prefect::PrefectClient::new(
        "http://127.0.0.1:1/api",
        app::prefect::PrefectAuth::None,
        Duration::from_secs(1),
    )
    .unwrap();
    let app = common::TestApp::with(db, |b| b.prefect(Some(Arc::new(gone)))).await;
    let down = app.call("GET", "/api/ready", None, None).await;
    assert_eq!(down.status, 503, "{}", down.text());
    assert_eq!(
        down.json()["checks"],
        json!({"database": "ok", "prefect": "unreachable"})
    );
}
