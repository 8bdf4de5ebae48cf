//! Webhooks through the real router and deliverer: a failed run is delivered once, signed
//! as Standard Webhooks (checked here with the reference library), retried with the same
//! `webhook-id` until the receiver accepts it; loopback targets are refused unless allowed;
//! `410 Gone` disables the endpoint; bad subscriptions are refused and write nothing.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use app::webhooks::deliver::{Deliverer, DeliveryConfig};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::TestApp;
use serde_json::{Value, json};
use sqlx::PgPool;

/// What the receiver got: each request's `webhook-id` and body, once its signature checked.
#[derive(Default)]
struct Received {
    verified: Vec<(String, Value)>,
    unsigned: usize,
    /// Status answered to the requests before the last, in order; then 200.
    script: Vec<u16>,
}

#[derive(Clone)]
struct Receiver {
    secret: Arc<Mutex<Option<String>>>,
    received: Arc<Mutex<Received>>,
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let secret = receiver.secret.lock().unwrap().clone().expect("a secret");
    let webhook = standardwebhooks::Webhook::new(&secret).unwrap();
    let mut received = receiver.received.lock().unwrap();
    if webhook.verify(&body, &headers).is_err() {
        received.unsigned += 1;
        return StatusCode::UNAUTHORIZED;
    }
    let id = headers["webhook-id"].to_str().unwrap().to_owned();
    received
        .verified
        .push((id, serde_json::from_slice(&body).unwrap()));
    if received.script.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::from_u16(received.script.remove(0)).unwrap()
    }
}

/// A receiver on a loopback port; answers as `script` says, then 200.
async fn receiver(script: Vec<u16>) -> (SocketAddr, Receiver) {
    let state = Receiver {
        secret: Arc::default(),
        received: Arc::new(Mutex::new(Received {
            script,
            ..Received::default()
        })),
    };
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, state)
}

/// What the receiver verified so far (webhook-id and body of each) and how many requests
/// it refused as unsigned.
fn seen(receiver: &Receiver) -> (Vec<(String, Value)>, usize) {
    let received = receiver.received.lock().unwrap();
    (received.verified.clone(), received.unsigned)
}

fn config(allow_loopback: bool) -> DeliveryConfig {
    DeliveryConfig {
        public_url: "https://flowdeck.example".into(),
        links: app::prefect::PrefectLinks::default(),
        allow: if allow_loopback {
            vec!["127.0.0.0/8".parse().unwrap()]
        } else {
            vec![]
        },
        timeout: Duration::from_secs(5),
    }
}

/// Delivers what is due, then makes every pending retry due at once (instead of waiting
/// out the backoff); `rounds` times.
async fn deliver_rounds(db: &PgPool, config: &DeliveryConfig, rounds: usize) {
    let deliverer = Deliverer::new(db.clone(), config.clone()).unwrap();
    for _ in 0..rounds {
        deliverer.drain().await.unwrap();
        sqlx::query("UPDATE webhook_deliveries SET next_attempt_at = now() WHERE state = 'pending'")
            .execute(db)
            .await
            .unwrap();
    }
}

async fn subscribe(app: &TestApp, url: &str, events: &[&str]) -> (i64, String) {
    let answer = app
        .post(
            "/api/webhooks/",
            &app.admin,
            json!({"url": url, "event_types": events}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text());
    let created = answer.json();
    (
        created["id"].as_i64().unwrap(),
        created["secret"].as_str().unwrap().to_owned(),
    )
}

/// A run of a new pipeline whose stage `extract` failed with `boom`.
async fn failed_run(app: &TestApp) -> i64 {
    let pipeline = app
        .pipeline(json!({"name": "Nightly", "stages": ["extract", "load"], "tags": ["ops"]}))
        .await;
    fail_run(app, pipeline).await
}

/// A new run of `pipeline` whose stage `extract` failed with `boom`.
async fn fail_run(app: &TestApp, pipeline: i64) -> i64 {
    let run = app.start_run(pipeline, json!({})).await["id"].as_i64().unwrap();
    let report = app
        .post(
            "/api/status-update/",
            &app.operator,
            json!({"run_id": run, "stage_name": "extract", "status": "failed", "error_message": "boom"}),
        )
        .await;
    assert_eq!(report.status, StatusCode::OK, "{}", report.text());
    run
}

#[sqlx::test(migrations = "../migrations")]
async fn a_failed_run_is_delivered_signed_and_retried_with_one_id_until_accepted(db: PgPool) {
    let app = TestApp::new(db.clone()).await;
    let (addr, receiver) = receiver(vec![503, 503, 503]).await;
    let (endpoint, secret) = subscribe(&app, &format!("http://{addr}/hook"), &["run.failed"]).await;
    *receiver.secret.lock().unwrap() = Some(secret.clone());
    assert!(secret.starts_with("whsec_"));
    let run = failed_run(&app).await;

    deliver_rounds(&db, &config(true), 6).await;
    let (verified, unsigned) = seen(&receiver);
    assert_eq!(unsigned, 0, "every request carried a valid signature");
    assert_eq!(verified.len(), 4, "three 503s, then accepted");
    let ids: Vec<&str> = verified.iter().map(|(id, _)| id.as_str()).collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one webhook-id on every attempt: {ids:?}"
    );
    let event = &verified[3].1;
    assert_eq!(event["type"], "run.failed");
    assert_eq!(event["data"]["run"]["id"], run);
    assert_eq!(event["data"]["failed_stage"]["name"], "extract");
    assert_eq!(event["data"]["failed_stage"]["error_message"], "boom");
    assert_eq!(event["data"]["pipeline"]["name"], "Nightly");
    assert_eq!(
        event["data"]["links"]["run"],
        format!("https://flowdeck.example/runs/{run}")
    );
    assert!(event["data"]["run"]["request_id"].is_string());

    let deliveries = app
        .get(&format!("/api/webhooks/{endpoint}/deliveries"), &app.admin)
        .await
        .json();
    assert_eq!(deliveries.as_array().unwrap().len(), 1, "one event, one delivery");
    assert_eq!(deliveries[0]["state"], "delivered");
    let log = deliveries[0]["attempt_log"].as_array().unwrap();
    let statuses: Vec<i64> = log.iter().map(|a| a["status_code"].as_i64().unwrap()).collect();
    assert_eq!(statuses, vec![503, 503, 503, 200]);

    // Resent on request, with the same id.
    let id = deliveries[0]["id"].as_i64().unwrap();
    let resend = app
        .call(
            "POST",
            &format!("/api/webhook_deliveries/{id}/resend"),
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(resend.status, StatusCode::ACCEPTED);
    deliver_rounds(&db, &config(true), 1).await;
    let (verified, _) = seen(&receiver);
    assert_eq!(verified.len(), 5);
    assert_eq!(verified[4].0, verified[0].0);

    // The secret is nowhere in the audit trail.
    let leaked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE detail::text LIKE '%' || $1 || '%'")
            .bind(secret.trim_start_matches("whsec_"))
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(leaked, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn loopback_targets_are_refused_without_the_setting_and_410_disables(db: PgPool) {
    let app = TestApp::new(db.clone()).await;
    let (addr, receiver) = receiver(vec![410]).await;
    let (endpoint, secret) = subscribe(&app, &format!("http://{addr}/hook"), &["run.failed"]).await;
    *receiver.secret.lock().unwrap() = Some(secret);
    failed_run(&app).await;

    deliver_rounds(&db, &config(false), 1).await;
    assert!(
        receiver.received.lock().unwrap().verified.is_empty(),
        "nothing reached loopback"
    );
    let deliveries = app
        .get(&format!("/api/webhooks/{endpoint}/deliveries"), &app.admin)
        .await
        .json();
    let error = deliveries[0]["attempt_log"][0]["error"].as_str().unwrap();
    assert!(error.contains("may not reach"), "{error}");
    assert_eq!(deliveries[0]["state"], "pending", "still retried");

    // With the range allowed it gets through; the receiver answers 410 Gone.
    deliver_rounds(&db, &config(true), 1).await;
    assert_eq!(seen(&receiver).0.len(), 1);
    let endpoint = app
        .get(&format!("/api/webhooks/{endpoint}"), &app.admin)
        .await
        .json();
    assert_eq!(endpoint["enabled"], false);
    assert!(endpoint["disabled_reason"].as_str().unwrap().contains("410"));
}

#[sqlx::test(migrations = "../migrations")]
async fn bad_subscriptions_are_refused_and_write_nothing(db: PgPool) {
    let app = TestApp::new(db).await;
    let before = app.count("webhook_endpoints").await;
    for body in [
        json!({"url": "ftp://example.com/x", "event_types": ["run.failed"]}),
        json!({"url": "https://user:pw@example.com/x", "event_types": ["run.failed"]}),
        json!({"url": "https://example.com/x", "event_types": []}),
        json!({"url": "https://example.com/x", "event_types": ["run.exploded"]}),
        json!({"url": "https://example.com/x", "event_types": ["run.failed"], "pipeline_ids": [0]}),
    ] {
        let answer = app.post("/api/webhooks/", &app.admin, body.clone()).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            answer.text()
        );
    }
    let operator = app
        .post(
            "/api/webhooks/",
            &app.operator,
            json!({"url": "https://example.com/x", "event_types": ["run.failed"]}),
        )
        .await;
    assert_eq!(operator.status, StatusCode::FORBIDDEN);
    assert_eq!(app.count("webhook_endpoints").await, before);
}

/// A receiver that takes `delay` to answer 200, counting requests and the most it held
/// at once.
#[derive(Clone, Default)]
struct Timed {
    now: Arc<std::sync::atomic::AtomicUsize>,
    most: Arc<std::sync::atomic::AtomicUsize>,
    done: Arc<std::sync::atomic::AtomicUsize>,
}

async fn timed_receiver(delay: Duration) -> (SocketAddr, Timed) {
    use std::sync::atomic::Ordering::SeqCst;
    let state = Timed::default();
    let held = state.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let held = held.clone();
            async move {
                let now = held.now.fetch_add(1, SeqCst) + 1;
                held.most.fetch_max(now, SeqCst);
                tokio::time::sleep(delay).await;
                held.now.fetch_sub(1, SeqCst);
                held.done.fetch_add(1, SeqCst);
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, state)
}

/// Waits up to `limit` for `count` to reach `want`; answers how long it took.
async fn reached(count: &std::sync::atomic::AtomicUsize, want: usize, limit: Duration) -> Duration {
    let started = std::time::Instant::now();
    while count.load(std::sync::atomic::Ordering::SeqCst) < want {
        assert!(started.elapsed() < limit, "{want} not reached in {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_slow_receiver_holds_only_its_own_slots(db: PgPool) {
    use std::sync::atomic::Ordering::SeqCst;
    let app = TestApp::new(db.clone()).await;
    let (slow_addr, slow) = timed_receiver(Duration::from_millis(800)).await;
    let (fast_addr, fast) = timed_receiver(Duration::ZERO).await;
    subscribe(&app, &format!("http://{slow_addr}/hook"), &["run.failed"]).await;
    subscribe(&app, &format!("http://{fast_addr}/hook"), &["run.failed"]).await;
    let pipeline = app.pipeline(json!({"name": "Many", "stages": ["extract"]})).await;
    const RUNS: usize = 12;
    for _ in 0..RUNS {
        fail_run(&app, pipeline).await;
    }

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let deliverer = Deliverer::new(db.clone(), config(true)).unwrap();
    let running = tokio::spawn(deliverer.run(stopped));
    reached(&fast.done, RUNS, Duration::from_secs(10)).await;
    assert!(
        slow.done.load(SeqCst) < RUNS,
        "the fast receiver got every event before the slow one's backlog was through"
    );
    reached(&slow.done, RUNS, Duration::from_secs(20)).await;
    let most = slow.most.load(SeqCst);
    assert_eq!(
        most,
        app::webhooks::deliver::PER_ENDPOINT as usize,
        "the slow receiver had at most (and at some point exactly) the per-endpoint bound in flight"
    );
    stop.send(true).unwrap();
    running.await.unwrap();
    let pending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries WHERE state <> 'delivered'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(pending, 0);
}
