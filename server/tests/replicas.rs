//! What holds when Flowdeck runs as several replicas and when one of them stops: the checks
//! of `scripts/fault-test.sh` that need no real Prefect, in process.
//!
//! - Draining (what SIGTERM starts): requests in flight finish and are stored, event
//!   streams end at once, new connections are refused.
//! - Two replicas on one database: one `Idempotency-Key` sent to both at once makes one
//!   run; a listing one replica keeps is read afresh after a change through the other.

mod common;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::TestApp;
use serde_json::{Value, json};
use sqlx::PgPool;

#[sqlx::test(migrations = "../migrations")]
async fn draining_finishes_requests_in_flight_ends_streams_and_refuses_new_connections(db: PgPool) {
    let app = TestApp::new(db.clone()).await;
    let _listening = app.listen().await;
    let pipeline = app.pipeline(json!({"name": "Drained"})).await;
    let run = app.start_run(pipeline, json!({})).await["id"].as_i64().unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app::routes::serve(
        listener,
        app.router.clone(),
        app.hub.clone(),
        async move {
            stopped.await.ok();
        },
    ));
    let client = reqwest::Client::new();
    let mut stream = client
        .get(format!("{base}/api/events"))
        .bearer_auth(&app.viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);

    // Status reports about a run whose row another transaction holds wait inside theirs.
    let mut lock = db.begin().await.unwrap();
    sqlx::query("SELECT id FROM runs WHERE id = $1 FOR UPDATE")
        .bind(run)
        .execute(&mut *lock)
        .await
        .unwrap();
    let held: Vec<_> = (1..=8)
        .map(|i| {
            let request = client
                .post(format!("{base}/api/status-update/"))
                .bearer_auth(&app.operator)
                .json(&json!({"run_id": run, "status": "running", "event_id": format!("held-{i}")}));
            tokio::spawn(async move { request.send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        held.iter().all(|h| !h.is_finished()),
        "a held report finished while its run was locked"
    );

    stop.send(()).unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "the event stream was still open 5 s into the drain"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let refused = fresh.get(format!("{base}/api/health")).send().await;
    assert!(
        refused.as_ref().is_err_and(reqwest::Error::is_connect),
        "a new connection was accepted while draining: {refused:?}"
    );
    assert!(
        !server.is_finished(),
        "the server stopped before its requests in flight finished"
    );

    lock.commit().await.unwrap();
    for request in held {
        assert_eq!(request.await.unwrap().unwrap(), 200);
    }
    let served = tokio::time::timeout(Duration::from_secs(5), server).await;
    assert!(
        matches!(served, Ok(Ok(Ok(())))),
        "the drain did not end cleanly: {served:?}"
    );
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM run_events WHERE event_id LIKE 'held-%'")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(stored, 8, "every report answered 200 during the drain is stored");
}

/// A trigger of `pipeline` with `key` as its `Idempotency-Key`, sent again while the key
/// is in use elsewhere (`409`), as a client would: its status and run id.
async fn keyed_trigger(app: &TestApp, pipeline: i64, key: &str) -> (StatusCode, Option<i64>) {
    loop {
        let request = Request::post(format!("/api/pipelines/{pipeline}/runs"))
            .header(header::AUTHORIZATION, format!("Bearer {}", app.operator))
            .header(header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", key)
            .body(Body::from("{}"))
            .unwrap();
        let answer = app.send(request).await;
        if answer.status != StatusCode::CONFLICT {
            return (answer.status, answer.json()["id"].as_i64());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn one_idempotency_key_sent_to_two_replicas_at_once_makes_one_run(db: PgPool) {
    let one = TestApp::new(db.clone()).await;
    let two = TestApp::new(db.clone()).await;
    let pipeline = one.pipeline(json!({"name": "Keyed"})).await;
    for k in 1..=5 {
        let key = format!("both-{k}");
        let (a, b) = tokio::join!(
            keyed_trigger(&one, pipeline, &key),
            keyed_trigger(&two, pipeline, &key)
        );
        assert_eq!((a.0, b.0), (StatusCode::ACCEPTED, StatusCode::ACCEPTED), "{key}");
        assert_eq!(a.1, b.1, "{key} made two runs");
    }
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM runs WHERE pipeline_id = $1")
        .bind(pipeline)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(runs, 5);
}

/// The names `app` lists.
async fn listed_names(app: &TestApp) -> Vec<String> {
    let answer = app.get("/api/pipelines/", &app.viewer).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let listed: Value = answer.json();
    let rows = listed.as_array().expect("a list").iter();
    rows.filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect()
}

/// Waits until `app` lists a pipeline named `name`; how long that took.
async fn lists_within(app: &TestApp, name: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    while !listed_names(app).await.iter().any(|listed| listed == name) {
        assert!(started.elapsed() < limit, "{name} is not listed after {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

#[sqlx::test(migrations = "../migrations")]
async fn what_one_replica_keeps_is_read_afresh_after_a_change_through_the_other(db: PgPool) {
    let one = TestApp::new(db.clone()).await;
    let two = TestApp::new(db).await;
    let _listening = (one.listen().await, two.listen().await);
    let pipeline = one.pipeline(json!({"name": "Before"})).await;
    // Replica two keeps the listing and the pipeline it answers (a second read of either
    // is served from memory).
    lists_within(&two, "Before", Duration::from_secs(5)).await;
    let path = format!("/api/pipelines/{pipeline}");
    let name = |answer: common::Answer| answer.json()["name"].as_str().map(str::to_owned);
    assert_eq!(name(two.get(&path, &two.viewer).await).as_deref(), Some("Before"));
    let renamed = one
        .call(
            "PATCH",
            &format!("/api/pipelines/{pipeline}"),
            Some(&one.admin),
            Some(json!({"name": "After"})),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.text());
    let waited = lists_within(&two, "After", Duration::from_secs(5)).await;
    println!("replica two listed the rename after {waited:?}");
    assert_eq!(name(two.get(&path, &two.viewer).await).as_deref(), Some("After"));
    assert_eq!(
        name(one.get(&path, &one.viewer).await).as_deref(),
        Some("After"),
        "its own write"
    );
}

/// Records processed that `app` answers for run `run_id`.
async fn records(app: &TestApp, run_id: i64) -> i64 {
    app.run(run_id).await["records_processed"]
        .as_i64()
        .expect("records_processed")
}

/// Waits until `app` answers `want` records for `run_id`; how long that took.
async fn records_within(app: &TestApp, run_id: i64, want: i64) -> Duration {
    let started = Instant::now();
    while records(app, run_id).await != want {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "run {run_id} never showed {want} records"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_report_moves_the_reads_of_its_run_and_pipeline_on_every_replica_and_no_others(db: PgPool) {
    let one = TestApp::new(db.clone()).await;
    let two = TestApp::new(db.clone()).await;
    let _listening = (one.listen().await, two.listen().await);
    let reported = one.pipeline(json!({"name": "Reported"})).await;
    let quiet = one.pipeline(json!({"name": "Quiet"})).await;
    let run = one.start_run(reported, json!({})).await["id"].as_i64().unwrap();
    let other = one.start_run(quiet, json!({})).await["id"].as_i64().unwrap();
    // Both replicas keep both runs and the reported pipeline.
    for app in [&one, &two] {
        records_within(app, run, 0).await;
        records_within(app, other, 0).await;
        let pipeline = app.get(&format!("/api/pipelines/{reported}"), &app.viewer).await;
        assert_eq!(pipeline.json()["records_processed"], 0);
    }
    // A change nobody announces (written with the change feed's triggers off) stands for
    // "nothing changed" as far as the replicas can tell: what they keep of the quiet run
    // still answers 0 afterwards only if they kept it.
    let mut tx = db.begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE runs SET records_processed = 99 WHERE id = $1")
        .bind(other)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let report = json!({"run_id": run, "status": "running", "records_processed": 7});
    let answer = one.post("/api/status-update/", &one.operator, report).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.json()["pipeline_id"], reported);
    // Its own write at once on replica one; on replica two once announced.
    assert_eq!(records(&one, run).await, 7, "its own write");
    let waited = records_within(&two, run, 7).await;
    println!("replica two read the report after {waited:?}");
    for app in [&one, &two] {
        let pipeline = app.get(&format!("/api/pipelines/{reported}"), &app.viewer).await;
        assert_eq!(
            pipeline.json()["records_processed"],
            7,
            "the pipeline's latest run moved"
        );
        assert_eq!(records(app, other).await, 0, "the other run's read stayed kept");
    }
    // A change to a pipeline moves everything (a run shows its pipeline's name).
    let renamed = one
        .call(
            "PATCH",
            &format!("/api/pipelines/{quiet}"),
            Some(&one.admin),
            Some(json!({"name": "Renamed"})),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.text());
    assert_eq!(records(&one, other).await, 99);
    records_within(&two, other, 99).await;
}
