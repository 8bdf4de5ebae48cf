//! The dispatcher against a fake Prefect that fails on demand (5xx, 429 + Retry-After,
//! timeouts, garbage, refusals): every accepted run is submitted exactly once, with its
//! idempotency key, and waits as `pending` while Prefect is unavailable.

mod common;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use app::prefect::PrefectClient;
use app::runs::dispatch::{DispatchConfig, dispatch_due};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use common::{TestApp, dispatch_config};
use serde_json::{Value, json};
use sqlx::PgPool;

const DEPLOYMENT_ID: &str = "6f0c1c2e-0000-4000-8000-000000000001";

/// One scripted answer of the fake's `create_flow_run`.
enum Answer {
    Status(u16, &'static str),
    RateLimited { retry_after_secs: u64 },
    Garbage,
    Hang(Duration),
}

#[derive(Default)]
struct Fake {
    script: Mutex<VecDeque<Answer>>,
    /// Flow runs by idempotency key, as Prefect keeps them.
    runs: Mutex<HashMap<String, (String, Value)>>,
    calls: Mutex<usize>,
}

async fn deployment_by_name(Path((flow, name)): Path<(String, String)>) -> Response {
    if (flow.as_str(), name.as_str()) == ("etl", "demo") {
        Json(json!({ "id": DEPLOYMENT_ID })).into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            Json(json!({ "detail": "Deployment not found" })),
        )
            .into_response()
    }
}

async fn create_flow_run(
    State(fake): State<Arc<Fake>>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    *fake.calls.lock().unwrap() += 1;
    assert_eq!(id, DEPLOYMENT_ID);
    let next = fake.script.lock().unwrap().pop_front();
    match next {
        Some(Answer::Status(code, detail)) => {
            return (
                StatusCode::from_u16(code).unwrap(),
                Json(json!({ "detail": detail })),
            )
                .into_response();
        }
        Some(Answer::RateLimited { retry_after_secs }) => {
            let mut headers = HeaderMap::new();
            headers.insert("retry-after", retry_after_secs.to_string().parse().unwrap());
            return (StatusCode::TOO_MANY_REQUESTS, headers, "slow down").into_response();
        }
        Some(Answer::Garbage) => return (StatusCode::OK, "<html>proxy error</html>").into_response(),
        Some(Answer::Hang(delay)) => tokio::time::sleep(delay).await,
        None => {}
    }
    let key = body["idempotency_key"].as_str().unwrap().to_owned();
    let mut runs = fake.runs.lock().unwrap();
    let count = runs.len();
    let (flow_run_id, _) = runs
        .entry(key)
        .or_insert_with(|| {
            (
                format!("00000000-0000-4000-8000-{:012}", count + 1),
                body["parameters"].clone(),
            )
        })
        .clone();
    (
        StatusCode::CREATED,
        Json(json!({ "id": flow_run_id, "state_type": "SCHEDULED", "state_name": "Scheduled" })),
    )
        .into_response()
}

async fn start_fake(script: Vec<Answer>) -> (Arc<Fake>, String) {
    let fake = Arc::new(Fake {
        script: Mutex::new(script.into()),
        ..Fake::default()
    });
    let router = Router::new()
        .route("/api/deployments/name/{flow}/{name}", get(deployment_by_name))
        .route("/api/deployments/{id}/create_flow_run", post(create_flow_run))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (fake, format!("http://{addr}/api"))
}

fn client(url: &str, retries: usize, timeout: Duration) -> PrefectClient {
    PrefectClient::new(url, app::prefect::PrefectAuth::None, timeout)
        .unwrap()
        .with_retries(retries)
}

fn config() -> DispatchConfig {
    dispatch_config(Some("etl/demo"), "http://127.0.0.1:9/api/status-update/")
}

async fn trigger(app: &TestApp, pipeline: i64) -> i64 {
    app.start_run(pipeline, json!({})).await["id"].as_i64().unwrap()
}

async fn make_due(db: &PgPool) {
    sqlx::query("UPDATE run_outbox SET next_attempt_at = now()")
        .execute(db)
        .await
        .unwrap();
}

async fn outbox_len(db: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM run_outbox")
        .fetch_one(db)
        .await
        .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn prefect_errors_keep_the_run_pending_until_it_is_submitted_once(db: PgPool) {
    let app = TestApp::new(db.clone()).await;
    let pipeline = app.pipeline(json!({"name": "p"})).await;
    let id = trigger(&app, pipeline).await;
    let (fake, url) = start_fake(vec![
        Answer::Status(503, "Service Unavailable"),
        Answer::Status(502, "Bad Gateway"),
        Answer::Garbage,
        Answer::Hang(Duration::from_secs(3)),
    ])
    .await;
    let prefect = client(&url, 0, Duration::from_millis(500));
    for _ in 0..4 {
        assert_eq!(dispatch_due(&db, &prefect, &config()).await.unwrap(), 1);
        assert_eq!(
            app.run(id).await["status"],
            "pending",
            "a Prefect failure leaves the run pending"
        );
        let next: bool = sqlx::query_scalar("SELECT next_attempt_at > now() FROM run_outbox")
            .fetch_one(&db)
            .await
            .unwrap();
        assert!(next, "a failed attempt is retried later, not at once");
        make_due(&db).await;
    }
    assert_eq!(dispatch_due(&db, &prefect, &config()).await.unwrap(), 1);
    let submitted = app.run(id).await;
    assert_eq!(submitted["status"], "scheduled");
    assert!(submitted["prefect_flow_run_id"].is_string());
    assert_eq!(
        outbox_len(&db).await,
        0,
        "the outbox row (and its clear token) is gone"
    );
    assert_eq!(
        dispatch_due(&db, &prefect, &config()).await.unwrap(),
        0,
        "nothing left to submit"
    );

    let runs = fake.runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 1, "exactly one flow run");
    let (key, (_, parameters)) = runs.iter().next().unwrap();
    let stored: String = sqlx::query_scalar("SELECT prefect_idempotency_key FROM runs WHERE id = $1")
        .bind(id)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(key, &stored);
    assert!(
        key.starts_with("flowdeck-run-") && key.len() > 40,
        "a key unique across databases: {key}"
    );
    assert_eq!(parameters["flowdeck_run_id"], id);
    assert!(parameters["flowdeck_token"].as_str().unwrap().starts_with("fdc_"));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_repeated_submission_after_a_lost_answer_makes_no_second_flow_run(db: PgPool) {
    let app = TestApp::new(db.clone()).await;
    let pipeline = app.pipeline(json!({"name": "p"})).await;
    let id = trigger(&app, pipeline).await;
    // Prefect creates the run but the answer never arrives in time.
    let (fake, url) = start_fake(vec![]).await;
    let slow = client(&url, 0, Duration::from_secs(5));
    assert_eq!(dispatch_due(&db, &slow, &config()).await.unwrap(), 1);
    // As if the dispatcher had crashed before recording it: the row comes back.
    sqlx::query("INSERT INTO run_outbox (run_id, callback_token) VALUES ($1, 'fdc_x')")
        .bind(id)
        .execute(&db)
        .await
        .unwrap();
    dispatch_due(&db, &slow, &config()).await.unwrap();
    assert_eq!(*fake.calls.lock().unwrap(), 2);
    assert_eq!(
        fake.runs.lock().unwrap().len(),
        1,
        "the idempotency key made the repeat harmless"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn retry_after_is_honoured(db: PgPool) {
    let app = TestApp::new(db.clone()).await;
    let pipeline = app.pipeline(json!({"name": "p"})).await;
    let id = trigger(&app, pipeline).await;
    let (_fake, url) = start_fake(vec![Answer::RateLimited { retry_after_secs: 1 }]).await;
    let prefect = client(&url, 2, Duration::from_secs(5));
    let started = Instant::now();
    dispatch_due(&db, &prefect, &config()).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "waited {:?}",
        started.elapsed()
    );
    assert_eq!(app.run(id).await["status"], "scheduled");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_refusal_fails_the_run_with_prefects_reason(db: PgPool) {
    let app = TestApp::new(db.clone()).await;
    let pipeline = app.pipeline(json!({"name": "p"})).await;
    let unknown = app
        .pipeline(json!({"name": "q", "deployment": "etl/missing"}))
        .await;
    let refused = trigger(&app, pipeline).await;
    let missing = trigger(&app, unknown).await;
    let (fake, url) = start_fake(vec![Answer::Status(409, "Validation failed for field 'rows'")]).await;
    let prefect = client(&url, 0, Duration::from_secs(5));
    dispatch_due(&db, &prefect, &config()).await.unwrap();
    let refused = app.run(refused).await;
    assert_eq!(refused["status"], "failed");
    assert!(
        refused["error_message"]
            .as_str()
            .unwrap()
            .contains("Validation failed for field 'rows'")
    );
    let missing = app.run(missing).await;
    assert_eq!(missing["status"], "failed");
    assert!(
        missing["error_message"]
            .as_str()
            .unwrap()
            .contains("Deployment not found")
    );
    assert_eq!(outbox_len(&db).await, 0);
    assert!(fake.runs.lock().unwrap().is_empty());
}

#[sqlx::test(migrations = "../migrations")]
async fn concurrent_dispatchers_submit_each_run_once(db: PgPool) {
    let app = TestApp::new(db.clone()).await;
    let pipeline = app.pipeline(json!({"name": "p"})).await;
    for _ in 0..12 {
        trigger(&app, pipeline).await;
    }
    let (fake, url) = start_fake(vec![]).await;
    let prefect = client(&url, 0, Duration::from_secs(5));
    let cfg = config();
    let (a, b, c) = tokio::join!(
        dispatch_due(&db, &prefect, &cfg),
        dispatch_due(&db, &prefect, &cfg),
        dispatch_due(&db, &prefect, &cfg),
    );
    let claimed = a.unwrap() + b.unwrap() + c.unwrap();
    assert!(claimed <= 12);
    while dispatch_due(&db, &prefect, &config()).await.unwrap() > 0 {}
    assert_eq!(*fake.calls.lock().unwrap(), 12, "one create_flow_run per run");
    assert_eq!(fake.runs.lock().unwrap().len(), 12);
    let scheduled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM runs WHERE status = 'scheduled' AND prefect_flow_run_id IS NOT NULL",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(scheduled, 12);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_callback_credential_reports_on_its_own_run_only(db: PgPool) {
    let app = TestApp::new(db.clone()).await;
    let pipeline = app.pipeline(json!({"name": "p", "stages": ["only"]})).await;
    let mine = trigger(&app, pipeline).await;
    let other = trigger(&app, pipeline).await;
    let (fake, url) = start_fake(vec![]).await;
    dispatch_due(&db, &client(&url, 0, Duration::from_secs(5)), &config())
        .await
        .unwrap();
    let key: String = sqlx::query_scalar("SELECT prefect_idempotency_key FROM runs WHERE id = $1")
        .bind(mine)
        .fetch_one(&db)
        .await
        .unwrap();
    let token = fake.runs.lock().unwrap()[&key].1["flowdeck_token"]
        .as_str()
        .unwrap()
        .to_owned();

    let report = |run_id: i64| json!({"run_id": run_id, "stage_name": "only", "status": "running"});
    assert_eq!(
        app.post("/api/status-update/", &token, report(mine)).await.status,
        StatusCode::OK
    );
    let refused = app.post("/api/status-update/", &token, report(other)).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(
        app.get("/api/pipelines/", &token).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.post(&format!("/api/pipelines/{pipeline}/runs"), &token, json!({}))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let forged = format!("fdc_{}", "0".repeat(64));
    assert_eq!(
        app.post("/api/status-update/", &forged, report(mine))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.run(mine).await["status"], "running");
    assert_eq!(app.run(other).await["status"], "scheduled");
}
