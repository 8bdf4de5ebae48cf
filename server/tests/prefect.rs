//! Contract tests against a real Prefect server and process worker (started by
//! `make test`, which passes `FLOWDECK_TEST_PREFECT_URL`): a trigger becomes exactly one
//! real flow run, the demo flow reports every stage back over HTTP with its run's own
//! credential, and the run ends as Prefect says.
//!
//! They are `#[ignore]`d so that a bare `cargo test` needs no Prefect; `make test` runs
//! them with `--ignored` and fails if the variable is missing.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use app::prefect::{PrefectAuth, PrefectClient};
use app::runs::dispatch::dispatch_due;
use app::runs::sync::sync_once;
use common::{TestApp, dispatch_config};
use serde_json::{Value, json};
use sqlx::PgPool;

fn prefect() -> PrefectClient {
    let url = std::env::var("FLOWDECK_TEST_PREFECT_URL")
        .expect("FLOWDECK_TEST_PREFECT_URL must point at a Prefect API with the demo deployment");
    PrefectClient::new(&url, PrefectAuth::None, Duration::from_secs(15)).unwrap()
}

/// The real router served on a loopback port, as flows reach it.
struct Served {
    callback_url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Served {
    /// Stops serving and waits, so the test database has no connection left to drop.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
        self.task.await.ok();
    }
}

async fn serve(app: &TestApp) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app.router.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            stopped.await.ok();
        })
        .await
        .unwrap();
    });
    Served {
        callback_url: format!("http://{addr}/api/status-update/"),
        stop: Some(stop),
        task,
    }
}

/// Submits due runs and follows Prefect until `run_id` finishes (or `limit` passes).
async fn drive(
    app: &TestApp,
    prefect: &PrefectClient,
    callback_url: &str,
    run_id: i64,
    limit: Duration,
) -> Value {
    let config = dispatch_config(Some("etl/demo"), callback_url);
    let started = Instant::now();
    loop {
        dispatch_due(&app.db, prefect, &config).await.unwrap();
        sync_once(&app.db, prefect).await.ok();
        let run = app.run(run_id).await;
        let status = run["status"].as_str().unwrap().to_owned();
        if ["completed", "failed", "cancelled", "crashed"].contains(&status.as_str())
            || started.elapsed() > limit
        {
            return run;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[sqlx::test(migrations = "../migrations")]
#[ignore = "needs a real Prefect: make test runs it"]
async fn a_trigger_becomes_one_real_flow_run_that_reports_every_stage(db: PgPool) {
    let app = TestApp::new(db).await;
    let prefect = Arc::new(prefect());
    let served = serve(&app).await;
    let callback_url = served.callback_url.clone();
    let pipeline = app
        .pipeline(json!({"name": "demo", "deployment": "etl/demo", "default_parameters": {"stage_seconds": 0.05, "rows": 400}}))
        .await;
    let started = Instant::now();
    let accepted = app.start_run(pipeline, json!({})).await;
    let run_id = accepted["id"].as_i64().unwrap();
    let request_id = accepted["request_id"].as_str().unwrap().to_owned();

    let run = drive(&app, &prefect, &callback_url, run_id, Duration::from_secs(120)).await;
    println!("trigger to completed: {:?}", started.elapsed());
    assert_eq!(run["status"], "completed", "{run}");
    let stages = run["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 5);
    for stage in stages {
        assert_eq!(stage["status"], "completed", "{stage}");
        assert!(stage["records_processed"].as_i64().unwrap() > 0, "{stage}");
    }
    assert_eq!(run["records_processed"], 400);
    let flow_run_id = run["prefect_flow_run_id"].as_str().unwrap();

    // Exactly one flow run carries this trigger's request id, and it is ours.
    let tagged = prefect
        .flow_runs_with_tag(&format!("flowdeck-request:{request_id}"))
        .await
        .unwrap();
    assert_eq!(tagged.len(), 1);
    assert_eq!(tagged[0].id, flow_run_id);
    // Prefect itself finishes the run too; the follower records it without moving back.
    for _ in 0..40 {
        sync_once(&app.db, &prefect).await.ok();
        if prefect.flow_runs(&[flow_run_id.to_owned()]).await.unwrap()[0]
            .state_type
            .as_deref()
            == Some("COMPLETED")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let after = app.run(run_id).await;
    assert_eq!(after["status"], "completed");
    served.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
#[ignore = "needs a real Prefect: make test runs it"]
async fn submitting_again_returns_the_same_flow_run(db: PgPool) {
    let app = TestApp::new(db.clone()).await;
    let prefect = prefect();
    let pipeline = app
        .pipeline(
            json!({"name": "demo", "deployment": "etl/demo", "default_parameters": {"stage_seconds": 0}}),
        )
        .await;
    let accepted = app.start_run(pipeline, json!({})).await;
    let run_id = accepted["id"].as_i64().unwrap();
    let token: String = sqlx::query_scalar("SELECT callback_token FROM run_outbox WHERE run_id = $1")
        .bind(run_id)
        .fetch_one(&db)
        .await
        .unwrap();
    let config = dispatch_config(None, "http://127.0.0.1:9/api/status-update/");
    dispatch_due(&db, &prefect, &config).await.unwrap();
    // As if the first answer had been lost: the same run is submitted again.
    sqlx::query("INSERT INTO run_outbox (run_id, callback_token) VALUES ($1, $2)")
        .bind(run_id)
        .bind(&token)
        .execute(&db)
        .await
        .unwrap();
    dispatch_due(&db, &prefect, &config).await.unwrap();
    let tag = format!("flowdeck-request:{}", accepted["request_id"].as_str().unwrap());
    let flow_runs = prefect.flow_runs_with_tag(&tag).await.unwrap();
    assert_eq!(
        flow_runs.len(),
        1,
        "Prefect holds exactly one flow run for the trigger"
    );
}

/// A finished run of the demo flow told to fail at `Spark Processing`.
async fn failed_demo_run(
    app: &TestApp,
    prefect: &PrefectClient,
    callback_url: &str,
    stage_seconds: f64,
) -> Value {
    let pipeline = app
        .pipeline(json!({"name": "demo", "deployment": "etl/demo"}))
        .await;
    let accepted = app
        .start_run(
            pipeline,
            json!({"parameters": {"fail_stage": "Spark Processing", "stage_seconds": stage_seconds}}),
        )
        .await;
    let run_id = accepted["id"].as_i64().unwrap();
    let run = drive(app, prefect, callback_url, run_id, Duration::from_secs(120)).await;
    assert_eq!(run["status"], "failed", "{run}");
    run
}

#[sqlx::test(migrations = "../migrations")]
#[ignore = "needs a real Prefect: make test runs it"]
async fn a_failing_stage_fails_the_run_with_its_reason(db: PgPool) {
    let app = TestApp::new(db).await;
    let prefect = prefect();
    let served = serve(&app).await;
    let callback_url = served.callback_url.clone();
    let run = failed_demo_run(&app, &prefect, &callback_url, 0.0).await;
    assert!(
        run["error_message"]
            .as_str()
            .unwrap()
            .contains("Spark Processing"),
        "{run}"
    );
    assert_eq!(run["stages"][1]["status"], "completed");
    assert_eq!(run["stages"][2]["status"], "failed");
    // Why, in one place: the stage, its report, and Prefect's final word (the run failed
    // by its stage's report first; Prefect's final state is followed after it).
    let started = Instant::now();
    let run = loop {
        sync_once(&app.db, &prefect).await.ok();
        let run = app.run(run["id"].as_i64().unwrap()).await;
        if !run["prefect_message"].is_null() || started.elapsed() > Duration::from_secs(30) {
            break run;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let failure = &run["failure"];
    assert_eq!(failure["stage"], "Spark Processing", "{run}");
    assert!(
        failure["reason"]
            .as_str()
            .unwrap()
            .starts_with("Spark Processing: simulated failure"),
        "{run}"
    );
    assert!(
        failure["prefect_message"]
            .as_str()
            .is_some_and(|m| m.contains("simulated failure")),
        "Prefect's state message: {run}"
    );
    assert_eq!(run["stages"][3]["status"], "pending");

    // The last error lines of its log, kept once Prefect's final state has settled.
    let started = Instant::now();
    let run = loop {
        app::runs::sync::explain_failures(&app.db, &prefect)
            .await
            .unwrap();
        let run = app.run(run["id"].as_i64().unwrap()).await;
        let kept = run["failure"]["log_lines"]
            .as_array()
            .is_some_and(|l| !l.is_empty());
        if kept || started.elapsed() > Duration::from_secs(30) {
            break run;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let lines = run["failure"]["log_lines"].as_array().unwrap();
    assert!((1..=5).contains(&lines.len()), "{run}");
    assert!(
        lines
            .iter()
            .all(|l| l["level"] == "error" || l["level"] == "critical")
    );
    assert!(
        lines
            .iter()
            .any(|l| l["message"].as_str().unwrap().contains("simulated failure")),
        "{run}"
    );
    served.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
#[ignore = "needs a real Prefect: make test runs it"]
async fn parameters_prefect_rejects_fail_the_run(db: PgPool) {
    let app = TestApp::new(db).await;
    let prefect = prefect();
    let pipeline = app
        .pipeline(json!({"name": "demo", "deployment": "etl/demo"}))
        .await;
    let accepted = app
        .start_run(pipeline, json!({"parameters": {"rows": "many"}}))
        .await;
    let run_id = accepted["id"].as_i64().unwrap();
    let run = drive(
        &app,
        &prefect,
        "http://127.0.0.1:9/api/status-update/",
        run_id,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(run["error_message"].as_str().unwrap().contains("rows"), "{run}");
}

#[sqlx::test(migrations = "../migrations")]
#[ignore = "needs a real Prefect: make test runs it"]
async fn cancelling_a_running_run_stops_it_in_prefect(db: PgPool) {
    let prefect = Arc::new(prefect());
    let app = TestApp::with(db, |b| b.prefect(Some(prefect.clone()))).await;
    let served = serve(&app).await;
    let callback_url = served.callback_url.clone();
    let pipeline = app
        .pipeline(
            json!({"name": "slow", "deployment": "etl/demo", "default_parameters": {"stage_seconds": 4}}),
        )
        .await;
    let run_id = app.start_run(pipeline, json!({})).await["id"].as_i64().unwrap();
    let config = dispatch_config(None, &callback_url);
    let started = Instant::now();
    loop {
        dispatch_due(&app.db, &prefect, &config).await.unwrap();
        sync_once(&app.db, &prefect).await.ok();
        let run = app.run(run_id).await;
        if run["status"] == "running" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "never started: {run}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let answer = app.run_action(run_id, "cancel", &app.operator).await;
    assert_eq!(
        answer.status,
        axum::http::StatusCode::ACCEPTED,
        "{}",
        answer.text()
    );
    assert_eq!(answer.json()["status"], "cancelling");
    let run = drive(&app, &prefect, &callback_url, run_id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "cancelled", "{run}");
    assert_eq!(run["prefect_state"], "Cancelled");
    served.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
#[ignore = "needs a real Prefect: make test runs it"]
async fn prefect_events_move_runs_without_waiting_for_a_poll(db: PgPool) {
    let prefect = Arc::new(prefect());
    let app = TestApp::with(db, |b| b.prefect(Some(prefect.clone()))).await;
    let served = serve(&app).await;
    let pipeline = app
        .pipeline(
            json!({"name": "evented", "deployment": "etl/demo", "default_parameters": {"stage_seconds": 0}}),
        )
        .await;
    // The follower polls once as it connects, then not for ten minutes: whatever Prefect
    // says after that arrives over its event stream.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let follower = tokio::spawn(app::runs::sync::run(
        app.db.clone(),
        prefect.clone(),
        Duration::from_secs(600),
        Duration::from_secs(600),
        stopped,
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let run_id = app.start_run(pipeline, json!({})).await["id"].as_i64().unwrap();
    dispatch_due(&app.db, &prefect, &dispatch_config(None, &served.callback_url))
        .await
        .unwrap();
    let started = Instant::now();
    let run = loop {
        let run = app.run(run_id).await;
        if run["prefect_state"] == "Completed" || started.elapsed() > Duration::from_secs(90) {
            break run;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!("submitted to Prefect's Completed event: {:?}", started.elapsed());
    assert_eq!(run["prefect_state"], "Completed", "{run}");
    assert_eq!(run["status"], "completed", "{run}");
    let flow_run_id = run["prefect_flow_run_id"].as_str().unwrap();
    assert_eq!(
        run["prefect_url"],
        format!("http://prefect.test/runs/flow-run/{flow_run_id}")
    );
    let states: Vec<String> = sqlx::query_scalar(
        "SELECT message FROM run_events WHERE run_id = $1 AND kind = 'prefect_state' ORDER BY occurred_at",
    )
    .bind(run_id)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert!(states.contains(&"Running".to_owned()), "{states:?}");
    assert_eq!(states.last().map(String::as_str), Some("Completed"), "{states:?}");
    stop.send(true).unwrap();
    follower.await.unwrap();
    served.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
#[ignore = "needs a real Prefect: make test runs it"]
async fn the_forms_offer_prefects_deployments_and_the_flows_parameters(db: PgPool) {
    let prefect = Arc::new(prefect());
    let app = TestApp::with(db, |b| b.prefect(Some(prefect.clone()))).await;
    let choices = app.server_fn("deployment_choices", &app.admin, "").await.json();
    assert!(
        choices["available"]
            .as_array()
            .unwrap()
            .contains(&json!("etl/demo")),
        "{choices}"
    );
    assert_eq!(choices["problem"], Value::Null);

    let pipeline = app
        .pipeline(json!({"name": "form", "default_parameters": {"rows": 42}}))
        .await;
    let fields = app
        .server_fn("run_form", &app.operator, &format!("pipeline_id={pipeline}"))
        .await
        .json();
    let fields = fields.as_array().unwrap();
    let names: Vec<&str> = fields.iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["rows", "fail_stage", "stage_seconds", "log_lines"],
        "{fields:?}"
    );
    assert_eq!(fields[0]["kind"]["kind"], "integer");
    assert_eq!(fields[0]["value"], "42", "the pipeline's default fills the form");
    assert_eq!(fields[2]["kind"]["kind"], "number");
}

/// A callback's `X-Request-ID` and `traceparent`.
type Headers = (Option<String>, Option<String>);

#[sqlx::test(migrations = "../migrations")]
#[ignore = "needs a real Prefect: make test runs it"]
async fn a_request_id_and_trace_reach_the_flow_run_and_come_back_with_every_callback(db: PgPool) {
    let app = TestApp::new(db.clone()).await;
    let prefect = Arc::new(prefect());
    // The callbacks as they arrive: their request id and trace context headers.
    let seen: Arc<std::sync::Mutex<Vec<Headers>>> = Arc::default();
    let kept = seen.clone();
    let watched = app.router.clone().layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let kept = kept.clone();
            async move {
                if req.uri().path() == "/api/status-update/" {
                    let header = |name: &str| {
                        req.headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned)
                    };
                    kept.lock()
                        .unwrap()
                        .push((header("x-request-id"), header("traceparent")));
                }
                next.run(req).await
            }
        },
    ));
    let watching = TestApp {
        router: watched,
        db: app.db.clone(),
        hub: app.hub.clone(),
        viewer: app.viewer.clone(),
        operator: app.operator.clone(),
        admin: app.admin.clone(),
    };
    let served = serve(&watching).await;
    let pipeline = app
        .pipeline(json!({"name": "traced", "deployment": "etl/demo", "default_parameters": {"stage_seconds": 0.05}}))
        .await;
    let request_id = format!("e2e-{}", std::process::id());
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let request = axum::http::Request::post(format!("/api/pipelines/{pipeline}/runs"))
        .header("authorization", format!("Bearer {}", app.operator))
        .header("content-type", "application/json")
        .header("x-request-id", &request_id)
        .header("traceparent", format!("00-{trace}-b7ad6b7169203331-01"))
        .body(axum::body::Body::from("{}"))
        .unwrap();
    let accepted = app.send(request).await;
    assert_eq!(accepted.status, 202, "{}", accepted.text());
    assert_eq!(accepted.header("x-request-id"), Some(request_id.as_str()));
    let run_id = accepted.json()["id"].as_i64().unwrap();

    let run = drive(
        &app,
        &prefect,
        &served.callback_url,
        run_id,
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(run["status"], "completed", "{run}");

    // In Prefect: the request id as tag, parameter and label; the trace as the label
    // Prefect reads for its OpenTelemetry parent.
    let flow_run_id = run["prefect_flow_run_id"].as_str().unwrap();
    let flow_run: Value = reqwest::get(format!(
        "{}/flow_runs/{flow_run_id}",
        std::env::var("FLOWDECK_TEST_PREFECT_URL").unwrap()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let tags: Vec<&str> = flow_run["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        tags.contains(&format!("flowdeck-request:{request_id}").as_str()),
        "{tags:?}"
    );
    assert_eq!(flow_run["parameters"]["flowdeck_request_id"], request_id.as_str());
    assert_eq!(flow_run["labels"]["flowdeck.request_id"], request_id.as_str());
    let label = flow_run["labels"]["__OTEL_TRACEPARENT"]
        .as_str()
        .expect("a traceparent label");
    assert!(label.starts_with(&format!("00-{trace}-")), "{label}");

    // Back in Flowdeck: every stage report carried both, and was audited under the id.
    let callbacks = seen.lock().unwrap().clone();
    assert_eq!(
        callbacks.len(),
        10,
        "running + completed for five stages: {callbacks:?}"
    );
    for (id, traceparent) in &callbacks {
        assert_eq!(id.as_deref(), Some(request_id.as_str()));
        assert_eq!(traceparent.as_deref(), Some(label));
    }
    let audited: Vec<String> = sqlx::query_scalar(
        "SELECT request_id FROM audit_events WHERE action = 'run.status_update' AND target = $1",
    )
    .bind(format!("run:{run_id}"))
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(audited.len(), 10);
    assert!(audited.iter().all(|id| *id == request_id));
    // And the run's own history finds the trigger and every stage report by the same id.
    let reported: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT kind, request_id FROM run_events WHERE run_id = $1 AND kind IN ('accepted', 'stage_status')",
    )
    .bind(run_id)
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(reported.len(), 11, "accepted + ten stage reports: {reported:?}");
    assert!(
        reported
            .iter()
            .all(|(_, id)| id.as_deref() == Some(request_id.as_str())),
        "{reported:?}"
    );
    served.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
#[ignore = "needs a real Prefect: make test runs it"]
async fn a_runs_flow_logs_are_read_from_prefect_by_level_and_stage(db: PgPool) {
    let prefect = prefect();
    let app = TestApp::with(db, |b| b.prefect(Some(Arc::new(prefect.clone())))).await;
    let served = serve(&app).await;
    let callback_url = served.callback_url.clone();
    let run = failed_demo_run(&app, &prefect, &callback_url, 0.2).await;
    let run_id = run["id"].as_i64().unwrap();

    // The flow's logs reach Prefect in batches: wait for the error that ended it.
    let logs_of = |query: &str| {
        let uri = format!("/api/runs/{run_id}/logs{query}");
        let app = &app;
        async move { app.get(&uri, &app.viewer).await }
    };
    let started = Instant::now();
    let all = loop {
        let answer = logs_of("").await;
        assert_eq!(answer.status, axum::http::StatusCode::OK, "{}", answer.text());
        let page = answer.json();
        let errors = page["logs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["level"] == "error");
        if errors || started.elapsed() > Duration::from_secs(30) {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(all["prefect_flow_run_id"], run["prefect_flow_run_id"]);
    let lines = all["logs"].as_array().unwrap();
    let records = lines
        .iter()
        .find(|l| l["message"].as_str().unwrap().starts_with("Data Generation: "))
        .unwrap_or_else(|| panic!("the first stage's info line: {all:#}"));
    assert_eq!(records["level"], "info");
    assert_eq!(
        records["stage"], "Data Generation",
        "attributed by time: {records}"
    );
    let failure = lines
        .iter()
        .find(|l| l["level"] == "error" && l["message"].as_str().unwrap().contains("simulated failure"))
        .unwrap_or_else(|| panic!("the failure's error line: {all:#}"));
    assert_eq!(failure["stage"], "Spark Processing", "{failure}");
    for line in lines {
        let text = line["message"].as_str().unwrap();
        assert!(
            !text.contains("fdc_") || text.contains("fdc_****"),
            "no callback credential in clear: {text}"
        );
    }

    // Only errors; only one stage; a page at a time.
    let errors = logs_of("?level=error").await.json();
    assert!(
        errors["logs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["level"] == "error" || l["level"] == "critical")
    );
    assert!(!errors["logs"].as_array().unwrap().is_empty());
    let stage = logs_of("?stage=Data%20Generation").await.json();
    let stage = stage["logs"].as_array().unwrap();
    assert!(!stage.is_empty() && stage.iter().all(|l| l["stage"] == "Data Generation"));
    let first = logs_of("?limit=1").await.json();
    assert_eq!(first["logs"].as_array().unwrap().len(), 1);
    assert_eq!(first["next_offset"], 1);
    assert_eq!(first["logs"][0], lines[0]);
    let second = logs_of("?limit=1&offset=1").await.json();
    assert_eq!(second["logs"][0], lines[1]);

    // Bad queries are refused, naming the field.
    for (query, field) in [
        ("?level=loud", "level"),
        ("?limit=0", "limit"),
        ("?order=up", "order"),
    ] {
        let answer = logs_of(query).await;
        assert_eq!(
            answer.status,
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "{query}"
        );
        assert!(answer.text().contains(field), "{query}: {}", answer.text());
    }
    served.stop().await;
}

/// The names of a flow run's task runs in Prefect, in the order they started, once there
/// are `expected` of them with their own names (Prefect records task runs from their
/// events, a moment later, and may show one under a provisional `run_stage-…` name first).
async fn task_run_names(flow_run_id: &str, expected: usize) -> Vec<String> {
    let started = Instant::now();
    loop {
        let names = task_runs_now(flow_run_id).await;
        let named = !names.iter().any(|n| n.starts_with("run_stage"));
        if (names.len() >= expected && named) || started.elapsed() > Duration::from_secs(30) {
            return names;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn task_runs_now(flow_run_id: &str) -> Vec<String> {
    let url = std::env::var("FLOWDECK_TEST_PREFECT_URL").unwrap();
    let filter =
        json!({"task_runs": {"flow_run_id": {"any_": [flow_run_id]}}, "sort": "EXPECTED_START_TIME_ASC"});
    let answer: Value = reqwest::Client::new()
        .post(format!("{url}/task_runs/filter"))
        .json(&filter)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    answer
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

#[sqlx::test(migrations = "../migrations")]
#[ignore = "needs a real Prefect: make test runs it"]
async fn a_failed_run_restarts_from_its_failed_stage_and_runs_only_the_rest(db: PgPool) {
    let app = TestApp::new(db).await;
    let prefect = prefect();
    let served = serve(&app).await;
    let callback_url = served.callback_url.clone();
    let failed = failed_demo_run(&app, &prefect, &callback_url, 0.0).await;
    let failed_id = failed["id"].as_i64().unwrap();
    let retry = |body: Value| {
        let app = &app;
        async move {
            let uri = format!("/api/runs/{failed_id}/retry");
            app.post(&uri, &app.operator, body).await
        }
    };

    // A stage the run does not have, or one whose earlier stages left nothing: 422 naming
    // `from_stage`, and nothing written.
    let before = app.footprint().await;
    for stage in ["Nope", "DBT Transformation"] {
        let answer = retry(json!({"from_stage": stage})).await;
        assert_eq!(
            answer.status,
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "{stage}: {}",
            answer.text()
        );
        assert!(answer.text().contains("from_stage"), "{}", answer.text());
    }
    assert_eq!(app.footprint().await, before, "a refused restart writes nothing");

    // From the failed stage, with the failure switched off.
    let answer = retry(json!({"from_stage": "Spark Processing", "parameters": {"fail_stage": null}})).await;
    assert_eq!(
        answer.status,
        axum::http::StatusCode::ACCEPTED,
        "{}",
        answer.text()
    );
    let restart = answer.json();
    let restart_id = restart["id"].as_i64().unwrap();
    assert_eq!(restart["retry_of_run_id"], failed_id);
    assert_eq!(restart["from_stage"], "Spark Processing");
    let run = drive(
        &app,
        &prefect,
        &callback_url,
        restart_id,
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(run["status"], "completed", "{run}");
    let statuses: Vec<&str> = run["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["skipped", "skipped", "completed", "completed", "completed"],
        "{run}"
    );
    for carried in &run["stages"].as_array().unwrap()[..2] {
        assert_eq!(carried["output_run_id"], failed_id, "{carried}");
    }
    // Prefect ran only the remaining stages; the failed run ran the first three.
    let names = task_run_names(run["prefect_flow_run_id"].as_str().unwrap(), 3).await;
    assert_eq!(names, ["Spark Processing", "DBT Transformation", "Data Export"]);
    let names = task_run_names(failed["prefect_flow_run_id"].as_str().unwrap(), 3).await;
    assert_eq!(names, ["Data Generation", "Data Ingestion", "Spark Processing"]);
    // Reused rows carried on: the restarted stages processed what the first run generated.
    assert_eq!(run["stages"][4]["records_processed"], 800, "{run}");

    // A restart of the restart reuses outputs of both runs, each from the run that made it.
    let uri = format!("/api/runs/{restart_id}/retry");
    let again = app
        .post(&uri, &app.operator, json!({"from_stage": "Data Export"}))
        .await;
    assert_eq!(again.status, axum::http::StatusCode::ACCEPTED, "{}", again.text());
    let again_id = again.json()["id"].as_i64().unwrap();
    let run = drive(&app, &prefect, &callback_url, again_id, Duration::from_secs(120)).await;
    assert_eq!(run["status"], "completed", "{run}");
    let sources: Vec<&Value> = run["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["output_run_id"])
        .collect();
    assert_eq!(
        sources,
        [
            &json!(failed_id),
            &json!(failed_id),
            &json!(restart_id),
            &json!(restart_id),
            &Value::Null
        ]
    );

    // Outputs that are gone: the flow refuses at the stage it would start with, saying so.
    let outputs = std::env::var("FLOWDECK_TEST_PREFECT_OUTPUTS")
        .expect("FLOWDECK_TEST_PREFECT_OUTPUTS must name where the demo worker leaves stage outputs");
    let folder = std::path::Path::new(&outputs).join(failed["prefect_flow_run_id"].as_str().unwrap());
    std::fs::remove_dir_all(&folder).unwrap_or_else(|e| panic!("{}: {e}", folder.display()));
    let answer = retry(json!({"from_stage": "Spark Processing", "parameters": {"fail_stage": null}})).await;
    let gone_id = answer.json()["id"].as_i64().unwrap();
    let run = drive(&app, &prefect, &callback_url, gone_id, Duration::from_secs(120)).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["failure"]["stage"], "Spark Processing", "{run}");
    assert!(
        run["failure"]["reason"]
            .as_str()
            .unwrap()
            .contains("output of 'Data Generation'"),
        "{run}"
    );
    served.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
#[ignore = "needs a real Prefect: make test runs it"]
async fn a_runs_log_is_followed_live_until_the_run_ends(db: PgPool) {
    let prefect = prefect();
    let app = TestApp::with(db, |b| b.prefect(Some(Arc::new(prefect.clone())))).await;
    let served = serve(&app).await;
    // The follower hears of the run's changes through this replica's change feed.
    let _listening = app.listen().await;
    let callback_url = served.callback_url.clone();
    let pipeline = app
        .pipeline(json!({"name": "demo", "deployment": "etl/demo"}))
        .await;
    let body = json!({"parameters": {"fail_stage": "Spark Processing", "stage_seconds": 1.0}});
    let run_id = app.start_run(pipeline, body).await["id"].as_i64().unwrap();
    let open = |last_event_id: Option<String>| {
        let mut request = axum::http::Request::get(format!("/api/runs/{run_id}/logs?level=debug"))
            .header("authorization", format!("Bearer {}", app.viewer))
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        app.open_stream(request.body(axum::body::Body::empty()).unwrap())
    };
    // Opened before the run reaches Prefect: the stream waits for it.
    let mut stream = open(None).await;
    let reading = async {
        let mut lines = Vec::new();
        let mut arrivals = std::collections::HashMap::new();
        while let Some(event) = stream.next(Duration::from_secs(90)).await {
            match event.event.as_deref() {
                Some("log") => {
                    let line = event.json();
                    arrivals.insert(line["id"].as_str().unwrap().to_owned(), chrono::Utc::now());
                    // The line's time in microseconds since 1970.
                    let at = event.id.as_deref().and_then(|id| id.parse::<i64>().ok());
                    let written =
                        chrono::DateTime::parse_from_rfc3339(line["timestamp"].as_str().unwrap()).unwrap();
                    assert_eq!(at, Some(written.timestamp_micros()), "a line time: {event:?}");
                    lines.push((line, app.run(run_id).await["status"].clone()));
                }
                Some("end") => return (lines, arrivals, Some(event.json())),
                _ => {}
            }
        }
        (lines, arrivals, None)
    };
    let ended = std::sync::atomic::AtomicBool::new(false);
    let reading = async {
        let read = reading.await;
        ended.store(true, std::sync::atomic::Ordering::Relaxed);
        read
    };
    // Submits the run and follows Prefect, as the server's workers would, until the
    // stream has ended (it waits for Prefect's final state after the run's own report).
    let driving = async {
        let run = drive(&app, &prefect, &callback_url, run_id, Duration::from_secs(120)).await;
        while !ended.load(std::sync::atomic::Ordering::Relaxed) {
            sync_once(&app.db, &prefect).await.ok();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        run
    };
    let (run, (lines, arrivals, end)) = tokio::join!(driving, reading);
    assert_eq!(run["status"], "failed");
    let end = end.expect("the stream ends once the run and Prefect have finished");
    assert_eq!(end["status"], "failed");
    assert!(stream.ends_within(Duration::from_secs(5)).await);

    // Lines came while the run ran, each once, the first stage's attributed to it, up to
    // the error that ended it; each shown within 2 s of Prefect receiving it.
    let ids: std::collections::HashSet<&str> = lines.iter().map(|(l, _)| l["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), lines.len(), "no line twice");
    assert!(
        lines
            .iter()
            .any(|(l, status)| l["stage"] == "Data Generation" && status == "running"),
        "a first-stage line arrived while the run was running: {lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|(l, _)| l["level"] == "error" && l["stage"] == "Spark Processing"),
        "the failure's error line: {lines:?}"
    );
    // How late each line came after Prefect received it (its `received_at`, read back).
    let page = app
        .get(&format!("/api/runs/{run_id}/logs?level=debug"), &app.viewer)
        .await
        .json();
    let delays: Vec<i64> = page["logs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| {
            let received: chrono::DateTime<chrono::Utc> =
                serde_json::from_value(l["received_at"].clone()).ok()?;
            Some((*arrivals.get(l["id"].as_str()?)? - received).num_milliseconds())
        })
        .collect();
    assert_eq!(
        delays.len(),
        lines.len(),
        "every line the stream sent is in Prefect, and back"
    );
    let worst = delays.iter().max().copied().unwrap_or_default();
    println!(
        "{} lines followed live; Prefect to follower: worst {worst} ms",
        lines.len()
    );
    assert!(
        worst < 2000,
        "every line within 2 s of Prefect receiving it: {delays:?}"
    );

    // Resuming after the second line sends what came after it, and ends.
    let second = chrono::DateTime::parse_from_rfc3339(lines[1].0["timestamp"].as_str().unwrap()).unwrap();
    let mut resumed = open(Some(second.timestamp_micros().to_string())).await;
    let mut again = Vec::new();
    while let Some(event) = resumed.next(Duration::from_secs(30)).await {
        match event.event.as_deref() {
            Some("log") => again.push(event.json()["id"].as_str().unwrap().to_owned()),
            Some("end") => break,
            _ => {}
        }
    }
    assert!(
        !again.contains(&lines[0].0["id"].as_str().unwrap().to_owned()),
        "nothing before the resume point"
    );
    assert_eq!(
        again.last(),
        lines
            .last()
            .map(|(l, _)| l["id"].as_str().unwrap().to_owned())
            .as_ref()
    );

    // A bad resume point is refused.
    let request = axum::http::Request::get(format!("/api/runs/{run_id}/logs"))
        .header("authorization", format!("Bearer {}", app.viewer))
        .header("accept", "text/event-stream")
        .header("last-event-id", "yesterday")
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(
        app.send(request).await.status,
        axum::http::StatusCode::UNPROCESSABLE_ENTITY
    );
    served.stop().await;
}
