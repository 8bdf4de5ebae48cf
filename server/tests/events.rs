//! `GET /api/events`: changes reach subscribers of every replica, resume with
//! `Last-Event-ID`, and are filtered and authenticated like the rest of the API.

mod common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::TestApp;
use serde_json::json;
use sqlx::PgPool;

#[sqlx::test(migrations = "../migrations")]
async fn a_change_made_through_one_replica_reaches_a_subscriber_of_another(db: PgPool) {
    let one = TestApp::new(db.clone()).await;
    let two = TestApp::new(db).await;
    let _listening = (one.listen().await, two.listen().await);
    let mut feed = two.subscribe("", &two.viewer, None).await;

    let started = Instant::now();
    let pipeline = one.pipeline(json!({"name": "Replicated", "tags": ["x"]})).await;
    let created = feed.expect().await;
    println!(
        "pipeline.created reached the other replica in {:?}",
        started.elapsed()
    );
    assert_eq!(created.event.as_deref(), Some("pipeline.created"));
    let change = created.json();
    assert_eq!(change["pipeline_id"], pipeline);
    assert_eq!(change["data"]["name"], "Replicated");
    assert_eq!(created.id, Some(change["id"].to_string()));

    let run_id = one.start_run(pipeline, json!({})).await["id"].as_i64().unwrap();
    let run = feed.expect().await;
    assert_eq!(run.event.as_deref(), Some("run.created"));
    assert_eq!(run.json()["run_id"], run_id);

    let update = json!({"run_id": run_id, "stage_name": "Data Ingestion", "status": "running", "records_processed": 7});
    assert_eq!(
        one.post("/api/status-update/", &one.operator, update)
            .await
            .status,
        StatusCode::OK
    );
    let mut events = Vec::new();
    while let Some(event) = feed.next(Duration::from_millis(500)).await {
        events.push(event);
    }
    let mut kinds: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["run.status", "stage.status"], "one event per changed row");
    let stage = events
        .iter()
        .find(|e| e.event.as_deref() == Some("stage.status"))
        .expect("a stage event");
    assert_eq!(stage.json()["data"]["name"], "Data Ingestion");
    assert_eq!(stage.json()["data"]["records_processed"], 7);
    let last_run = events
        .iter()
        .rev()
        .find(|e| e.event.as_deref() == Some("run.status"))
        .expect("a run event");
    assert_eq!(last_run.json()["data"]["status"], "running");
    assert_eq!(last_run.json()["data"]["records_processed"], 7);
    let ids: Vec<i64> = events
        .iter()
        .map(|e| e.id.as_deref().unwrap().parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids only grow: {ids:?}");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_subscriber_resumes_after_its_last_event_id_and_filters_apply(db: PgPool) {
    let app = TestApp::new(db).await;
    let _listening = app.listen().await;
    let first = app.pipeline(json!({"name": "first"})).await;
    let mut feed = app.subscribe("", &app.viewer, None).await;
    let other = app.pipeline(json!({"name": "other"})).await;
    // The creation of `first` may still be on its way to the hub: wait for `other`'s.
    let seen = loop {
        let event = feed.expect().await;
        if event.json()["pipeline_id"] == other {
            break event;
        }
    };
    drop(feed);

    // While nobody listens: a run of each pipeline.
    let run_first = app.start_run(first, json!({})).await["id"].as_i64().unwrap();
    let run_other = app.start_run(other, json!({})).await["id"].as_i64().unwrap();

    let mut resumed = app.subscribe("", &app.viewer, seen.id.as_deref()).await;
    let replayed: Vec<i64> = [resumed.expect().await, resumed.expect().await]
        .iter()
        .map(|e| e.json()["run_id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        replayed,
        [run_first, run_other],
        "missed changes come back in order"
    );

    // The same resume, limited to one pipeline, replays only its run; live changes follow.
    let query = format!("?pipeline_id={first}");
    let mut filtered = app.subscribe(&query, &app.viewer, seen.id.as_deref()).await;
    assert_eq!(filtered.expect().await.json()["run_id"], run_first);
    app.start_run(other, json!({})).await;
    let again = app.start_run(first, json!({})).await["id"].as_i64().unwrap();
    assert_eq!(filtered.expect().await.json()["run_id"], again);

    // A run filter: only that run's changes.
    let mut by_run = app
        .subscribe(&format!("?run_id={again}"), &app.viewer, None)
        .await;
    let update = json!({"run_id": again, "status": "running"});
    app.post("/api/status-update/", &app.operator, update).await;
    let event = by_run.expect().await;
    assert_eq!(
        (event.event.as_deref(), event.json()["run_id"].as_i64()),
        (Some("run.status"), Some(again))
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn the_event_stream_needs_a_key_and_checks_its_parameters(db: PgPool) {
    let app = TestApp::new(db).await;
    assert_eq!(
        app.call("GET", "/api/events", None, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    for (query, field) in [("?pipeline_id=x", "pipeline_id"), ("?colour=red", "colour")] {
        let answer = app.get(&format!("/api/events{query}"), &app.viewer).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        assert_eq!(answer.json()["field"], field);
    }
    let request = axum::http::Request::get("/api/events")
        .header("authorization", format!("Bearer {}", app.viewer))
        .header("last-event-id", "yesterday")
        .body(axum::body::Body::empty())
        .unwrap();
    let answer = app.send(request).await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer.json()["field"], "Last-Event-ID");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_statement_that_changes_many_rows_announces_each_change_once(db: PgPool) {
    let one = TestApp::new(db.clone()).await;
    let _listening = one.listen().await;
    let mut feed = one.subscribe("", &one.viewer, None).await;
    let pipeline = one.pipeline(json!({"name": "Bulk"})).await;
    assert_eq!(feed.expect().await.event.as_deref(), Some("pipeline.created"));
    // One statement, 1,000 new runs: one change each, announced in NOTIFYs of at most 400
    // ids (a payload holds under 8,000 bytes).
    sqlx::query(
        "INSERT INTO runs (pipeline_id, actor, source) SELECT $1, 'test', 'api' FROM generate_series(1, 1000)",
    )
    .bind(pipeline)
    .execute(&db)
    .await
    .unwrap();
    let mut runs = Vec::new();
    while let Some(event) = feed.next(Duration::from_secs(2)).await {
        assert_eq!(event.event.as_deref(), Some("run.created"));
        runs.push(event.json()["run_id"].as_i64().unwrap());
    }
    let mut distinct = runs.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(
        (runs.len(), distinct.len()),
        (1000, 1000),
        "each run announced once"
    );
    let latest: Option<i64> = sqlx::query_scalar("SELECT latest_run_id FROM pipelines WHERE id = $1")
        .bind(pipeline)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(
        latest,
        distinct.last().copied(),
        "the pipeline points at its newest run"
    );
    // A statement that changes nothing shown announces nothing.
    sqlx::query("UPDATE runs SET parameters = '{\"x\": 1}' WHERE pipeline_id = $1")
        .bind(pipeline)
        .execute(&db)
        .await
        .unwrap();
    assert!(feed.next(Duration::from_millis(500)).await.is_none());
}
