//! The REST API through the real router against real `PostgreSQL`: the seed's contract,
//! canonical routes, validation, and "nothing written on rejection".

mod common;

use axum::http::StatusCode;
use common::TestApp;
use serde_json::{Value, json};
use sqlx::PgPool;

#[sqlx::test(migrations = "../migrations")]
async fn health_answers_without_credentials(db: PgPool) {
    let app = TestApp::new(db).await;
    let answer = app.call("GET", "/api/health", None, None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json()["status"], "ok");
    assert!(answer.header("x-request-id").is_some_and(|id| !id.is_empty()));
}

#[sqlx::test(migrations = "../migrations")]
async fn seed_contract_round_trip(db: PgPool) {
    let app = TestApp::new(db).await;

    // The seed's create payload: name, description, status.
    let created = app
        .post(
            "/api/pipelines/",
            &app.admin,
            json!({"name": "Daily sales", "description": "ETL", "status": "pending"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let p = created.json();
    let id = p["id"].as_i64().unwrap();
    for field in [
        "id",
        "name",
        "description",
        "status",
        "created_at",
        "updated_at",
        "prefect_flow_run_id",
        "records_processed",
        "error_message",
        "stages",
    ] {
        assert!(p.get(field).is_some(), "pipeline lacks seed field {field}: {p}");
    }
    assert_eq!(p["status"], "pending");
    assert_eq!(p["records_processed"], 0);
    assert_eq!(p["slug"], "daily-sales");
    let stage_names: Vec<&str> = p["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        stage_names,
        [
            "Data Generation",
            "Data Ingestion",
            "Spark Processing",
            "DBT Transformation",
            "Data Export"
        ]
    );

    let list = app.get("/api/pipelines/?skip=0&limit=10", &app.viewer).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.json().as_array().unwrap().len(), 1);
    assert_eq!(
        app.get(&format!("/api/pipelines/{id}"), &app.viewer).await.json()["name"],
        "Daily sales"
    );

    // Trigger the seed way: no body.
    let trigger = app
        .call("POST", &format!("/api/trigger/{id}"), Some(&app.operator), None)
        .await;
    assert_eq!(trigger.status, StatusCode::ACCEPTED, "{}", trigger.text());
    let ack = trigger.json();
    assert_eq!(ack["success"], true);
    assert_eq!(ack["run"]["status"], "pending");
    let run_id = ack["run_id"].as_i64().unwrap();

    // The flow reports each stage; the pipeline's current run follows.
    let stages = [
        "Data Generation",
        "Data Ingestion",
        "Spark Processing",
        "DBT Transformation",
        "Data Export",
    ];
    for (i, stage) in stages.iter().enumerate() {
        for status in ["running", "completed"] {
            let update = json!({"pipeline_id": id, "stage_name": stage, "status": status, "records_processed": 100 * (i + 1)});
            let answer = app.post("/api/status-update/", &app.operator, update).await;
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
            assert_eq!(answer.json()["success"], true);
        }
        if i == 0 {
            assert_eq!(
                app.get(&format!("/api/pipelines/{id}"), &app.viewer).await.json()["status"],
                "running"
            );
        }
    }
    let done = app.get(&format!("/api/pipelines/{id}"), &app.viewer).await.json();
    assert_eq!(done["status"], "completed");
    assert_eq!(done["records_processed"], 500);
    assert_eq!(done["latest_run_id"], run_id);

    let stages_answer = app.get(&format!("/api/pipelines/{id}/stages"), &app.viewer).await;
    let stages_json = stages_answer.json();
    let listed = stages_json.as_array().unwrap();
    assert_eq!(listed.len(), 5);
    assert!(
        listed
            .iter()
            .all(|s| s["status"] == "completed" && s["completed_at"].is_string())
    );
    assert!(
        listed
            .iter()
            .all(|s| s["execution_time_seconds"].as_f64().is_some_and(|d| d >= 0.0))
    );

    let run = app.run(run_id).await;
    assert_eq!(run["status"], "completed");
    assert!(run["started_at"].is_string() && run["ended_at"].is_string());
    assert_eq!(run["stages"].as_array().unwrap().len(), 5);
}

#[sqlx::test(migrations = "../migrations")]
async fn canonical_trigger_records_a_pending_run_with_merged_parameters(db: PgPool) {
    let app = TestApp::new(db).await;
    let id = app
        .pipeline(
            json!({"name": "p", "stages": ["a", "b"], "default_parameters": {"rows": 10, "fail": false}}),
        )
        .await;
    let answer = app
        .post(
            &format!("/api/pipelines/{id}/runs"),
            &app.operator,
            json!({"parameters": {"rows": 99}}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text());
    let run = answer.json();
    assert_eq!(run["status"], "pending");
    assert_eq!(run["parameters"], json!({"rows": 99, "fail": false}));
    assert_eq!(run["actor"], "api-key:test-operator");
    assert_eq!(run["source"], "api");
    assert_eq!(run["stages"].as_array().unwrap().len(), 2);
    // The answer is made from what the insert returned, not read again: it must be the run
    // exactly as a read shows it (times, stage ids and all).
    assert_eq!(run, app.run(run["id"].as_i64().unwrap()).await);
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM run_events WHERE kind = 'accepted'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(events, 1);
    let audits: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE action = 'run.trigger' AND outcome = 'success'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(audits, 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn the_newest_run_is_the_pipelines_latest_for_the_list_and_for_seed_callbacks(db: PgPool) {
    let app = TestApp::new(db).await;
    let id = app.pipeline(json!({"name": "p", "stages": ["a"]})).await;
    let other = app.pipeline(json!({"name": "q", "stages": ["a"]})).await;
    let first = app.start_run(id, json!({})).await["id"].as_i64().unwrap();
    let second = app.start_run(id, json!({})).await["id"].as_i64().unwrap();
    app.start_run(other, json!({})).await;
    let update = json!({"pipeline_id": id, "stage_name": "a", "status": "running"});
    assert_eq!(
        app.post("/api/status-update/", &app.operator, update)
            .await
            .status,
        StatusCode::OK
    );

    let listed = app.get("/api/pipelines/", &app.viewer).await.json();
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id)
        .unwrap()
        .clone();
    assert_eq!(row["latest_run_id"], second);
    assert_eq!(row["status"], "running");
    assert_eq!(
        app.run(first).await["status"],
        "pending",
        "the older run is untouched"
    );
    assert_eq!(app.run(second).await["status"], "running");
}

#[sqlx::test(migrations = "../migrations")]
async fn concurrency_limit_refuses_an_extra_run(db: PgPool) {
    let app = TestApp::new(db).await;
    let id = app
        .pipeline(json!({"name": "one at a time", "max_concurrent_runs": 1}))
        .await;
    assert_eq!(
        app.post(&format!("/api/pipelines/{id}/runs"), &app.operator, json!({}))
            .await
            .status,
        StatusCode::ACCEPTED
    );
    let before = app.footprint().await;
    let second = app
        .post(&format!("/api/pipelines/{id}/runs"), &app.operator, json!({}))
        .await;
    assert_eq!(second.status, StatusCode::CONFLICT);
    assert_eq!(app.footprint().await, before);
}

#[sqlx::test(migrations = "../migrations")]
async fn triggers_at_once_are_each_one_run_one_outbox_row_and_one_audit_line(db: PgPool) {
    let app = TestApp::new(db.clone()).await;
    let open = app
        .pipeline(json!({"name": "open", "stages": ["a", "b", "c"], "default_parameters": {"n": 1}}))
        .await;
    let limited = app
        .pipeline(json!({"name": "limited", "stages": ["x"], "max_concurrent_runs": 5}))
        .await;
    let held = app.pipeline(json!({"name": "held", "stages": ["y"]})).await;
    // Another transaction holds one pipeline's row: its triggers wait, the others do not.
    let mut holder = db.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM pipelines WHERE id = $1 FOR UPDATE")
        .bind(held)
        .execute(&mut *holder)
        .await
        .unwrap();
    let mut targets = Vec::new();
    for i in 0..60_i64 {
        targets.push(match i % 4 {
            0 | 1 => open,
            2 => limited,
            _ if i == 3 => 999_999,
            _ => held,
        });
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (i, &pipeline) in targets.iter().enumerate() {
        let router = app.router.clone();
        let request = axum::http::Request::post(format!("/api/pipelines/{pipeline}/runs"))
            .header("authorization", format!("Bearer {}", app.operator))
            .header("content-type", "application/json")
            .body(axum::body::Body::from(
                json!({"parameters": {"i": i}}).to_string(),
            ))
            .unwrap();
        tasks.spawn(async move {
            let response = tower::ServiceExt::oneshot(router, request).await.unwrap();
            let status = response.status();
            let body = http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap()
                .to_bytes();
            (pipeline, status, serde_json::from_slice::<Value>(&body).unwrap())
        });
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    holder.commit().await.unwrap();
    let mut answers = Vec::new();
    while let Some(answer) = tasks.join_next().await {
        answers.push(answer.unwrap());
    }
    let mut accepted = std::collections::HashMap::new();
    for (pipeline, status, run) in &answers {
        match *status {
            StatusCode::ACCEPTED => {
                assert_eq!(run["pipeline_id"], *pipeline);
                assert_eq!(run["status"], "pending");
                if *pipeline == open {
                    assert_eq!(run["parameters"]["n"], 1, "defaults merged");
                    assert_eq!(run["stages"].as_array().unwrap().len(), 3);
                }
                *accepted.entry(*pipeline).or_insert(0) += 1;
            }
            StatusCode::CONFLICT => assert_eq!(*pipeline, limited, "{run}"),
            StatusCode::NOT_FOUND => assert_eq!(*pipeline, 999_999),
            other => panic!("{other}: {run}"),
        }
    }
    assert_eq!(accepted.get(&open), Some(&30));
    assert_eq!(
        accepted.get(&limited),
        Some(&5),
        "the limit holds within and across groups"
    );
    assert_eq!(
        accepted.get(&held),
        Some(&14),
        "held triggers waited, then were accepted"
    );
    let total: i64 = accepted.values().sum();
    let counts: (i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM runs),
                (SELECT count(*) FROM run_outbox),
                (SELECT count(*) FROM run_events WHERE kind = 'accepted'),
                (SELECT count(*) FROM audit_events WHERE action = 'run.trigger' AND outcome = 'success'),
                (SELECT count(DISTINCT callback_token_hash) FROM runs)",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(counts, (total, total, total, total, total));
    let mismatched: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM runs r JOIN pipelines p ON p.id = r.pipeline_id
         WHERE (SELECT count(*) FROM stage_runs s WHERE s.run_id = r.id) <> cardinality(p.stage_names)
            OR NOT EXISTS (SELECT 1 FROM audit_events a WHERE a.target = 'run:' || r.id)",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(mismatched, 0, "every run has its own stages and audit line");
}

#[sqlx::test(migrations = "../migrations")]
async fn unknown_ids_are_404_in_the_error_shape(db: PgPool) {
    let app = TestApp::new(db).await;
    for (method, uri) in [
        ("GET", "/api/pipelines/999"),
        ("GET", "/api/pipelines/999/stages"),
        ("GET", "/api/runs/999"),
        ("POST", "/api/trigger/999"),
        ("POST", "/api/pipelines/999/runs"),
        ("GET", "/api/no-such-route"),
    ] {
        let answer = app.call(method, uri, Some(&app.admin), None).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{method} {uri}");
        let body = answer.json();
        assert_eq!(body["code"], "not_found", "{method} {uri}");
        assert!(body["detail"].as_str().is_some_and(|d| d.contains("not found")));
    }
    let answer = app
        .post(
            "/api/status-update/",
            &app.operator,
            json!({"pipeline_id": 999, "status": "running"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    for id in ["abc", "0", "-1", "None"] {
        let answer = app.get(&format!("/api/pipelines/{id}"), &app.viewer).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{id}");
    }
}

/// Each bad request, with the field its 422 must name.
fn bad_pipelines() -> Vec<(Value, &'static str)> {
    vec![
        (json!({}), "name"),
        (json!({"name": ""}), "name"),
        (json!({"name": 5}), "name"),
        (json!({"name": "x", "stages": ["a", "a"]}), "stages.1"),
        (json!({"name": "x", "stages": ["a", 7]}), "stages[1]"),
        (
            json!({"name": "x", "default_parameters": [1, 2]}),
            "default_parameters",
        ),
        (json!({"name": "x", "slug": "Not A Slug"}), "slug"),
        (json!({"name": "x", "tags": ["fine", "not fine"]}), "tags.1"),
        (
            json!({"name": "x", "max_concurrent_runs": 0}),
            "max_concurrent_runs",
        ),
        (json!({"name": "x", "deployment": "nope"}), "deployment"),
        (json!({"name": "x", "colour": "red"}), "colour"),
    ]
}

#[sqlx::test(migrations = "../migrations")]
async fn invalid_pipelines_are_422_naming_the_field_and_write_nothing(db: PgPool) {
    let app = TestApp::new(db).await;
    let before = app.footprint().await;
    for (body, field) in bad_pipelines() {
        let answer = app.post("/api/pipelines/", &app.admin, body.clone()).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            answer.text()
        );
        let error = answer.json();
        assert_eq!(error["code"], "invalid", "{body}");
        assert_eq!(error["field"], field, "{body}: {error}");
    }
    let malformed = app
        .send(
            axum::http::Request::post("/api/pipelines/")
                .header("authorization", format!("Bearer {}", app.admin))
                .header("content-type", "application/json")
                .body(axum::body::Body::from("{\"name\": "))
                .unwrap(),
        )
        .await;
    assert_eq!(malformed.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(malformed.json()["field"], "body");
    let not_json = app
        .send(
            axum::http::Request::post("/api/pipelines/")
                .header("authorization", format!("Bearer {}", app.admin))
                .header("content-type", "text/plain")
                .body(axum::body::Body::from("name=x"))
                .unwrap(),
        )
        .await;
    assert_eq!(not_json.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(not_json.json()["code"], "unsupported_media_type");
    let huge = format!("{{\"name\": \"{}\"}}", "x".repeat(app::api::MAX_BODY_BYTES));
    let too_large = app
        .send(
            axum::http::Request::post("/api/pipelines/")
                .header("authorization", format!("Bearer {}", app.admin))
                .header("content-type", "application/json")
                .body(axum::body::Body::from(huge))
                .unwrap(),
        )
        .await;
    assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(too_large.json()["code"], "too_large");
    assert_eq!(
        app.footprint().await,
        before,
        "a rejected request wrote something"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn duplicate_slug_is_a_conflict_but_a_duplicate_name_gets_a_new_slug(db: PgPool) {
    let app = TestApp::new(db).await;
    app.pipeline(json!({"name": "ETL", "slug": "etl"})).await;
    let again = app
        .post("/api/pipelines/", &app.admin, json!({"name": "ETL"}))
        .await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.json()["slug"], "etl-2");
    let before = app.footprint().await;
    let clash = app
        .post(
            "/api/pipelines/",
            &app.admin,
            json!({"name": "Other", "slug": "etl"}),
        )
        .await;
    assert_eq!(clash.status, StatusCode::CONFLICT);
    assert_eq!(clash.json()["code"], "conflict");
    assert_eq!(app.footprint().await, before);
}

#[sqlx::test(migrations = "../migrations")]
async fn bad_status_updates_are_rejected_and_write_nothing(db: PgPool) {
    let app = TestApp::new(db).await;
    let id = app.pipeline(json!({"name": "p"})).await;
    let no_run = app
        .post(
            "/api/status-update/",
            &app.operator,
            json!({"pipeline_id": id, "status": "running"}),
        )
        .await;
    assert_eq!(no_run.status, StatusCode::CONFLICT);
    app.call("POST", &format!("/api/trigger/{id}"), Some(&app.operator), None)
        .await;
    let before = app.footprint().await;
    for (body, status, field) in [
        (json!({"pipeline_id": id, "status": "done"}), 422, Some("status")),
        (json!({"status": "running"}), 422, Some("pipeline_id")),
        (
            json!({"pipeline_id": id, "status": "running", "records_processed": -1}),
            422,
            Some("records_processed"),
        ),
        (
            json!({"pipeline_id": "one", "status": "running"}),
            422,
            Some("pipeline_id"),
        ),
        (
            json!({"pipeline_id": id, "stage_name": "Nope", "status": "running"}),
            404,
            None,
        ),
    ] {
        let answer = app.post("/api/status-update/", &app.operator, body.clone()).await;
        assert_eq!(answer.status.as_u16(), status, "{body}: {}", answer.text());
        if let Some(field) = field {
            assert_eq!(answer.json()["field"], field, "{body}");
        }
    }
    assert_eq!(app.footprint().await, before);
}

#[sqlx::test(migrations = "../migrations")]
async fn late_and_duplicate_callbacks_never_move_status_backwards(db: PgPool) {
    let app = TestApp::new(db).await;
    let id = app.pipeline(json!({"name": "p", "stages": ["only"]})).await;
    let run_id = app.start_run(id, json!({})).await["id"].as_i64().unwrap();
    let update = |status: &str, event: &str| json!({"run_id": run_id, "stage_name": "only", "status": status, "event_id": event});

    let first = app
        .post("/api/status-update/", &app.operator, update("completed", "e1"))
        .await
        .json();
    assert_eq!(first["applied"], true);
    assert_eq!(first["run_status"], "completed");

    let late = app
        .post("/api/status-update/", &app.operator, update("running", "e0"))
        .await
        .json();
    assert_eq!(late["applied"], false);
    assert_eq!(late["run_status"], "completed");

    let repeat = app
        .post("/api/status-update/", &app.operator, update("completed", "e1"))
        .await
        .json();
    assert_eq!(repeat["duplicate"], true);

    let run = app.run(run_id).await;
    assert_eq!(run["status"], "completed");
    assert_eq!(run["stages"][0]["status"], "completed");
    let events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM run_events WHERE run_id = $1 AND kind = 'stage_status'")
            .bind(run_id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(events, 2, "the duplicate is not recorded twice");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_failed_stage_fails_the_run_with_its_error(db: PgPool) {
    let app = TestApp::new(db).await;
    let id = app.pipeline(json!({"name": "p", "stages": ["a", "b"]})).await;
    app.call("POST", &format!("/api/trigger/{id}"), Some(&app.operator), None)
        .await;
    app.post(
        "/api/status-update/",
        &app.operator,
        json!({"pipeline_id": id, "stage_name": "a", "status": "running"}),
    )
    .await;
    let failed = app
        .post(
            "/api/status-update/",
            &app.operator,
            json!({"pipeline_id": id, "stage_name": "a", "status": "failed", "error_message": "disk full"}),
        )
        .await;
    assert_eq!(failed.json()["run_status"], "failed");
    let p = app.get(&format!("/api/pipelines/{id}"), &app.viewer).await.json();
    assert_eq!(p["status"], "failed");
    assert_eq!(p["error_message"], "disk full");
    assert_eq!(p["stages"][0]["error_message"], "disk full");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_pending_run_is_cancelled_here_and_a_finished_one_can_be_retried(db: PgPool) {
    let app = TestApp::new(db).await;
    let id = app
        .pipeline(json!({"name": "p", "default_parameters": {"rows": 5}}))
        .await;
    let run = app.start_run(id, json!({"parameters": {"rows": 7}})).await;
    let run_id = run["id"].as_i64().unwrap();

    assert_eq!(
        app.run_action(run_id, "cancel", &app.viewer).await.status,
        StatusCode::FORBIDDEN
    );
    let retry_live = app.run_action(run_id, "retry", &app.operator).await;
    assert_eq!(
        retry_live.status,
        StatusCode::CONFLICT,
        "a live run is not retried"
    );

    let cancelled = app.run_action(run_id, "cancel", &app.operator).await;
    assert_eq!(cancelled.status, StatusCode::ACCEPTED, "{}", cancelled.text());
    assert_eq!(cancelled.json()["status"], "cancelled");
    assert_eq!(
        app.count("run_outbox").await,
        0,
        "a cancelled run is never submitted"
    );
    let again = app.run_action(run_id, "cancel", &app.operator).await;
    assert_eq!(again.status, StatusCode::CONFLICT);

    let retried = app.run_action(run_id, "retry", &app.operator).await;
    assert_eq!(retried.status, StatusCode::ACCEPTED, "{}", retried.text());
    let retry = retried.json();
    assert_ne!(retry["id"], run_id);
    assert_eq!(retry["retry_of_run_id"], run_id);
    assert_eq!(retry["status"], "pending");
    assert_eq!(
        retry["parameters"],
        json!({"rows": 7}),
        "the retry repeats the original's parameters"
    );
    assert_eq!(app.count("run_outbox").await, 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_run_being_submitted_is_not_cancelled_behind_the_dispatchers_back(db: PgPool) {
    let app = TestApp::new(db.clone()).await;
    let id = app.pipeline(json!({"name": "p"})).await;
    let run_id = app.start_run(id, json!({})).await["id"].as_i64().unwrap();
    sqlx::query("UPDATE run_outbox SET locked_until = now() + interval '1 minute'")
        .execute(&db)
        .await
        .unwrap();
    let answer = app.run_action(run_id, "cancel", &app.operator).await;
    assert_eq!(answer.status, StatusCode::CONFLICT);
    assert_eq!(app.run(run_id).await["status"], "pending");
    assert_eq!(app.count("run_outbox").await, 1);
}

fn keyed_trigger(
    pipeline: i64,
    api_key: &str,
    idempotency_key: &str,
    body: Value,
) -> axum::http::Request<axum::body::Body> {
    axum::http::Request::post(format!("/api/pipelines/{pipeline}/runs"))
        .header("authorization", format!("Bearer {api_key}"))
        .header("content-type", "application/json")
        .header("idempotency-key", idempotency_key)
        .body(axum::body::Body::from(body.to_string()))
        .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn an_idempotency_key_replays_the_first_run_and_refuses_another_body(db: PgPool) {
    let app = TestApp::new(db).await;
    let id = app.pipeline(json!({"name": "p"})).await;
    let first = app
        .send(keyed_trigger(
            id,
            &app.operator,
            "job-42",
            json!({"parameters": {"a": 1, "b": 2}}),
        ))
        .await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let run_id = first.json()["id"].as_i64().unwrap();
    // The same request, keys in another order: the same run comes back.
    let again = app
        .send(keyed_trigger(
            id,
            &app.operator,
            "job-42",
            json!({"parameters": {"b": 2, "a": 1}}),
        ))
        .await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.json()["id"], run_id);
    assert_eq!(app.count("runs").await, 1);

    let before = app.footprint().await;
    let other = app
        .send(keyed_trigger(
            id,
            &app.operator,
            "job-42",
            json!({"parameters": {"a": 9}}),
        ))
        .await;
    // Another body under a used key is 422 (the IETF Idempotency-Key draft), naming the key.
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", other.text());
    assert_eq!(other.json()["field"], "Idempotency-Key");
    assert!(
        other.json()["detail"]
            .as_str()
            .unwrap()
            .contains("different request")
    );
    let too_long = app
        .send(keyed_trigger(id, &app.operator, &"k".repeat(300), json!({})))
        .await;
    assert_eq!(too_long.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.footprint().await, before);

    // Keys belong to their caller: another caller's identical key is a new request.
    let admin = app
        .send(keyed_trigger(
            id,
            &app.admin,
            "job-42",
            json!({"parameters": {"a": 1, "b": 2}}),
        ))
        .await;
    assert_eq!(admin.status, StatusCode::ACCEPTED);
    assert_ne!(admin.json()["id"], run_id);
}

#[sqlx::test(migrations = "../migrations")]
async fn concurrent_triggers_with_one_idempotency_key_make_one_run(db: PgPool) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let app = TestApp::new(db).await;
    let id = app.pipeline(json!({"name": "p"})).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let router = app.router.clone();
        let request = keyed_trigger(id, &app.operator, "burst", json!({}));
        tasks.spawn(async move {
            let response = router.oneshot(request).await.unwrap();
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice::<Value>(&body).unwrap())
        });
    }
    let mut ids = std::collections::HashSet::new();
    let mut in_progress = 0;
    while let Some(answer) = tasks.join_next().await {
        let (status, body) = answer.unwrap();
        match status {
            StatusCode::ACCEPTED => {
                ids.insert(body["id"].as_i64().unwrap());
            }
            // A repeat while the first is still being processed (the IETF draft's 409).
            StatusCode::CONFLICT => {
                assert_eq!(body["code"], "in_progress", "{body}");
                in_progress += 1;
            }
            _ => panic!("{status} {body}"),
        }
    }
    assert_eq!(ids.len(), 1, "every accepted answer names the same run");
    assert_eq!(app.count("runs").await, 1);
    assert_eq!(app.count("run_outbox").await, 1);
    println!(
        "50 at once: {} accepted, {in_progress} told the key is in use",
        50 - in_progress
    );

    // Held by a request still being processed (here: a transaction holding its lock),
    // the key answers 409 at once; once that ends, the repeat answers the run.
    let actor: String = sqlx::query_scalar("SELECT actor FROM runs LIMIT 1")
        .fetch_one(&app.db)
        .await
        .unwrap();
    let mut held = app.db.begin().await.unwrap();
    assert!(
        app::runs::idempotency::hold(&mut *held, &actor, "burst", false)
            .await
            .unwrap()
    );
    let busy = app
        .send(keyed_trigger(id, &app.operator, "burst", json!({})))
        .await;
    assert_eq!(busy.status, StatusCode::CONFLICT, "{}", busy.text());
    assert_eq!(busy.json()["code"], "in_progress");
    assert_eq!(busy.header("retry-after"), Some("1"));
    held.rollback().await.unwrap();
    let after = app
        .send(keyed_trigger(id, &app.operator, "burst", json!({})))
        .await;
    assert_eq!(after.status, StatusCode::ACCEPTED, "{}", after.text());
    assert!(ids.contains(&after.json()["id"].as_i64().unwrap()));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_silent_running_run_is_flagged_stuck_until_it_reports_again(db: PgPool) {
    let app = TestApp::new(db.clone()).await;
    let id = app.pipeline(json!({"name": "p", "stages": ["a", "b"]})).await;
    let run_id = app.start_run(id, json!({})).await["id"].as_i64().unwrap();
    let report = |stage: &str, status: &str| json!({"run_id": run_id, "stage_name": stage, "status": status});
    app.post("/api/status-update/", &app.operator, report("a", "running"))
        .await;

    let silence = std::time::Duration::from_secs(60);
    assert!(
        app::runs::sync::flag_stuck(&db, silence)
            .await
            .unwrap()
            .is_empty(),
        "it just reported"
    );
    sqlx::query("UPDATE run_events SET recorded_at = now() - interval '1 hour'")
        .execute(&db)
        .await
        .unwrap();
    sqlx::query("UPDATE runs SET updated_at = now() - interval '1 hour'")
        .execute(&db)
        .await
        .unwrap();
    assert_eq!(
        app::runs::sync::flag_stuck(&db, silence).await.unwrap(),
        vec![run_id]
    );
    assert!(
        app::runs::sync::flag_stuck(&db, silence)
            .await
            .unwrap()
            .is_empty(),
        "flagged once"
    );
    assert!(app.run(run_id).await["stuck_since"].is_string());

    app.post("/api/status-update/", &app.operator, report("a", "completed"))
        .await;
    assert!(app.run(run_id).await["stuck_since"].is_null());
}

/// A stage report at `seconds` after `t0`.
fn report(
    run_id: i64,
    stage: Option<&str>,
    status: &str,
    t0: chrono::DateTime<chrono::Utc>,
    seconds: i64,
) -> Value {
    let mut body = json!({
        "run_id": run_id,
        "status": status,
        "timestamp": (t0 + chrono::Duration::seconds(seconds)).to_rfc3339(),
    });
    if let Some(stage) = stage {
        body["stage_name"] = json!(stage);
    }
    body
}

#[sqlx::test(migrations = "../migrations")]
async fn callbacks_arriving_out_of_order_apply_in_the_order_they_happened(db: PgPool) {
    let app = TestApp::new(db).await;
    let pipeline = app.pipeline(json!({"name": "ordered"})).await;
    let run_id = app.start_run(pipeline, json!({})).await["id"].as_i64().unwrap();
    // Whole microseconds, as PostgreSQL keeps them.
    let t0 = chrono::DateTime::from_timestamp_micros(
        (chrono::Utc::now() - chrono::Duration::minutes(10)).timestamp_micros(),
    )
    .unwrap();
    let send = |body: Value| {
        let app = &app;
        async move {
            let answer = app.post("/api/status-update/", &app.operator, body).await;
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
            answer.json()
        }
    };
    let stage = Some("Data Generation");

    // Progress reports of one stage: the newest by time wins, whatever the arrival order.
    send(report(run_id, stage, "running", t0, 0)).await;
    let mut newest = report(run_id, stage, "running", t0, 20);
    newest["records_processed"] = json!(300);
    assert_eq!(send(newest).await["applied"], true);
    let mut older = report(run_id, stage, "running", t0, 10);
    older["records_processed"] = json!(200);
    assert_eq!(
        send(older).await["applied"],
        false,
        "an older progress report is stale"
    );
    let run = app.run(run_id).await;
    assert_eq!(run["stages"][0]["records_processed"], 300, "{run}");
    assert_eq!(run["status"], "running");

    // Pause and resume of the run: a late `running` does not undo a newer `paused`.
    assert_eq!(
        send(report(run_id, None, "paused", t0, 40)).await["run_status"],
        "paused"
    );
    let late = send(report(run_id, None, "running", t0, 30)).await;
    assert_eq!(
        (late["applied"].clone(), late["run_status"].clone()),
        (json!(false), json!("paused"))
    );
    assert_eq!(
        send(report(run_id, None, "running", t0, 50)).await["run_status"],
        "running"
    );

    // Forward moves apply in any order; times are the sender's, and never in the future.
    let done = send(report(run_id, stage, "completed", t0, 3600 * 24)).await;
    assert_eq!(done["applied"], true);
    let run = app.run(run_id).await;
    let stage = &run["stages"][0];
    assert_eq!(stage["status"], "completed");
    let started: chrono::DateTime<chrono::Utc> = stage["started_at"].as_str().unwrap().parse().unwrap();
    let ended: chrono::DateTime<chrono::Utc> = stage["completed_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(started, t0, "the stage started when it said it did");
    assert!(
        ended <= chrono::Utc::now(),
        "a future time counts as now: {ended}"
    );
    assert_eq!(
        send(report(run_id, Some("Data Generation"), "running", t0, 3600 * 25)).await["applied"],
        false
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn the_new_pipeline_form_creates_a_pipeline_and_refuses_bad_input(db: PgPool) {
    let app = TestApp::new(db).await;
    let form = "name=Form+made&description=From+the+UI&deployment=etl%2Fdemo&stages=Extract%0D%0A%0D%0ALoad%0A\
                &default_parameters=%7B%22rows%22%3A+5%7D&tags=daily%2C+finance";
    let made = app.server_fn("create_pipeline", &app.admin, form).await;
    assert!(made.status.is_success(), "{} {}", made.status, made.text());
    let id = made.json().as_i64().expect("the new pipeline's id");
    let pipeline = app.get(&format!("/api/pipelines/{id}"), &app.viewer).await.json();
    assert_eq!(pipeline["slug"], "form-made");
    assert_eq!(pipeline["deployment"], "etl/demo");
    assert_eq!(pipeline["stage_names"], json!(["Extract", "Load"]));
    assert_eq!(pipeline["tags"], json!(["daily", "finance"]));
    assert_eq!(pipeline["default_parameters"], json!({"rows": 5}));

    let before = app.footprint().await;
    let bad_json = "name=Other&description=&deployment=&stages=&default_parameters=%5B1%5D&tags=";
    let refused = app.server_fn("create_pipeline", &app.admin, bad_json).await;
    assert!(!refused.status.is_success(), "{}", refused.text());
    assert!(
        refused.text().contains("default_parameters"),
        "{}",
        refused.text()
    );
    let operator = app
        .server_fn(
            "create_pipeline",
            &app.operator,
            "name=Mine&description=&deployment=&stages=&default_parameters=&tags=",
        )
        .await;
    assert_eq!(operator.status, StatusCode::FORBIDDEN, "{}", operator.text());
    assert_eq!(
        app.footprint().await[..3],
        before[..3],
        "a refused form writes nothing"
    );

    // Without Prefect the form still offers the default deployment and says why the list is empty.
    let choices = app.server_fn("deployment_choices", &app.admin, "").await.json();
    assert_eq!(choices["default"], "etl/demo");
    assert!(
        choices["problem"].as_str().unwrap().contains("PREFECT_API_URL"),
        "{choices}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn the_run_dialog_sends_typed_parameters_and_refuses_bad_ones(db: PgPool) {
    let app = TestApp::new(db).await;
    let pipeline = app
        .pipeline(json!({"name": "dialog", "default_parameters": {"rows": 100, "label": "x", "ratio": 0.5}}))
        .await;
    // Without Prefect the form is made from the pipeline's defaults.
    let fields = app
        .server_fn("run_form", &app.operator, &format!("pipeline_id={pipeline}"))
        .await
        .json();
    let names: Vec<&str> = fields
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["label", "ratio", "rows"]);
    assert_eq!(fields[2]["kind"]["kind"], "integer");
    assert_eq!(fields[2]["value"], "100");

    let form = format!(
        "pipeline_id={pipeline}&values%5Brows%5D=20&kinds%5Brows%5D=integer&values%5Blabel%5D=&kinds%5Blabel%5D=text\
         &values%5Bratio%5D=0.25&kinds%5Bratio%5D=number"
    );
    let made = app.server_fn("trigger_run", &app.operator, &form).await;
    assert!(made.status.is_success(), "{} {}", made.status, made.text());
    let run = app.run(made.json().as_i64().unwrap()).await;
    assert_eq!(run["parameters"]["rows"], 20);
    assert_eq!(run["parameters"]["ratio"], 0.25);
    assert_eq!(
        run["parameters"]["label"], "x",
        "an empty input keeps the default"
    );

    // A form sent twice with its key (a double click) makes one run.
    let twice = format!("pipeline_id={pipeline}&idempotency_key=ui-form-double");
    let first = app.server_fn("trigger_run", &app.operator, &twice).await.json();
    let second = app.server_fn("trigger_run", &app.operator, &twice).await.json();
    assert!(first.is_i64() && first == second, "{first} {second}");
    let once_more = app
        .server_fn("trigger_run", &app.operator, &format!("pipeline_id={pipeline}"))
        .await
        .json();
    assert_ne!(once_more, first, "without a key, each press is a run");

    let before = app.footprint_but_audit().await;
    let bad = format!("pipeline_id={pipeline}&values%5Brows%5D=many&kinds%5Brows%5D=integer");
    let refused = app.server_fn("trigger_run", &app.operator, &bad).await;
    assert!(!refused.status.is_success());
    assert!(refused.text().contains("parameters.rows"), "{}", refused.text());
    let context = format!("pipeline_id={pipeline}&values%5Bflowdeck_token%5D=x");
    assert!(
        !app.server_fn("trigger_run", &app.operator, &context)
            .await
            .status
            .is_success()
    );
    let viewer = app
        .server_fn("trigger_run", &app.viewer, &format!("pipeline_id={pipeline}"))
        .await;
    assert_eq!(viewer.status, StatusCode::FORBIDDEN);
    assert_eq!(
        app.footprint_but_audit().await,
        before,
        "refused triggers write nothing but their audit line"
    );
    assert_eq!(app.forbidden_audited("api-key:test-viewer").await, 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_plain_form_refused_comes_back_to_its_page_and_says_why_there(db: PgPool) {
    use axum::body::Body;
    use axum::http::{Request, header};
    let app = TestApp::new(db).await;
    let pipeline = app.pipeline(json!({"name": "Plain forms"})).await;
    let page = format!("http://localhost/pipelines/{pipeline}");
    let before = app.footprint_but_audit().await;
    // What a browser without the wasm sends: a form post that accepts HTML, from the page.
    let request = Request::post("/sfn/trigger_run")
        .header(header::AUTHORIZATION, format!("Bearer {}", app.operator))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::ACCEPT, "text/html")
        .header(header::REFERER, &page)
        .body(Body::from(format!(
            "pipeline_id={pipeline}&values%5Brows%5D=many&kinds%5Brows%5D=integer"
        )))
        .expect("valid request");
    let answer = app.send(request).await;
    assert_eq!(answer.status, StatusCode::FOUND, "{}", answer.text());
    let location = answer.headers[header::LOCATION].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(&format!("{page}?__path=%2Fsfn%2Ftrigger_run&__err=")),
        "{location}"
    );
    assert_eq!(
        app.footprint_but_audit().await,
        before,
        "a refusal writes nothing"
    );

    // The page it comes back to says why, as text, next to its Run button.
    let shown = app
        .get(location.trim_start_matches("http://localhost"), &app.operator)
        .await;
    assert_eq!(shown.status, StatusCode::OK);
    let html = shown.text();
    let alert = html
        .find(r#"<p role="alert" class="form-error">"#)
        .unwrap_or_else(|| panic!("the refusal is shown: {html}"));
    assert!(html[alert..].contains("parameters.rows"), "{html}");
    // Another function's error, or none, shows nothing.
    let other = location.replace("trigger_run", "cancel_run");
    let html = app
        .get(other.trim_start_matches("http://localhost"), &app.operator)
        .await
        .text();
    assert!(!html.contains(r#"role="alert""#), "{html}");
}

#[sqlx::test(migrations = "../migrations")]
async fn the_dashboard_filters_sorts_and_pages_on_the_server(db: PgPool) {
    let app = TestApp::new(db).await;
    for n in 1..=55 {
        let tags = if n % 5 == 0 {
            json!(["finance"])
        } else {
            json!(["ops"])
        };
        app.pipeline(json!({"name": format!("Pipe {n:02}"), "tags": tags}))
            .await;
    }
    let special = app.pipeline(json!({"name": "100% real_thing"})).await;
    let run = app.start_run(special, json!({})).await["id"].as_i64().unwrap();
    app.post(
        "/api/status-update/",
        &app.operator,
        json!({"run_id": run, "status": "failed"}),
    )
    .await;
    let page = |form: &str| {
        let app = &app;
        let form = form.to_owned();
        async move {
            let answer = app.server_fn("dashboard", &app.viewer, &form).await;
            assert_eq!(answer.status, StatusCode::OK, "{form}: {}", answer.text());
            answer.json()
        }
    };
    let names = |page: &Value| -> Vec<String> {
        page["pipelines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    };

    let first = page("").await;
    assert_eq!(
        (first["total"].as_i64(), first["per_page"].as_i64()),
        (Some(56), Some(50))
    );
    assert_eq!(names(&first).len(), 50);
    assert_eq!(names(&first)[0], "100% real_thing", "recently updated first");
    let second = page("query[page]=2").await;
    assert_eq!(names(&second).len(), 6);

    let by_name = page("query[sort]=name").await;
    assert_eq!(names(&by_name)[..2], ["100% real_thing", "Pipe 01"]);
    assert_eq!(page("query[tag]=finance").await["total"], 11);
    assert_eq!(page("query[q]=pipe+0").await["total"], 9);
    // `%` and `_` are literal, not wildcards.
    assert_eq!(names(&page("query[q]=0%25+r").await), ["100% real_thing"]);
    assert_eq!(page("query[q]=e_t").await["total"], 0);
    let failed = page("query[status]=failed").await;
    assert_eq!(names(&failed), ["100% real_thing"]);
    assert_eq!(
        failed["pipelines"][0]["recent_runs"],
        json!([["failed", null]]),
        "the sparkline's data"
    );
    let counts = failed["by_status"].as_array().unwrap();
    assert!(
        counts.contains(&json!(["failed", 1])) && counts.contains(&json!(["pending", 55])),
        "{counts:?}"
    );

    for (form, field) in [
        ("query[sort]=colour", "sort"),
        ("query[status]=done", "status"),
        ("query[page]=0", "page"),
    ] {
        let answer = app.server_fn("dashboard", &app.viewer, form).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{form}");
        assert!(answer.text().contains(field), "{}", answer.text());
    }

    // The rows the dashboard's island puts in place: the same page, rendered on the server.
    let rows = |form: &str| {
        let app = &app;
        let form = form.to_owned();
        async move {
            let answer = app.server_fn("dashboard_rows", &app.viewer, &form).await;
            assert_eq!(answer.status, StatusCode::OK, "{form}: {}", answer.text());
            answer.json().as_str().expect("HTML as a string").to_owned()
        }
    };
    let html = rows("query[q]=pipe+0").await;
    assert_eq!(html.matches(r#"data-testid="pipeline-row""#).count(), 9, "{html}");
    assert!(html.contains(">9 of 56<"), "{html}");
    let html = rows("query[status]=failed").await;
    assert_eq!(html.matches(r#"data-testid="pipeline-row""#).count(), 1, "{html}");
    assert!(
        html.contains(&format!(r#"href="/pipelines/{special}""#)),
        "{html}"
    );
    assert!(
        rows("query[q]=nothing+like+it")
            .await
            .contains("No pipeline matches these filters")
    );
    // Names are text, never markup.
    app.pipeline(json!({"name": "<img src=x onerror=alert(1)>"}))
        .await;
    let html = rows("query[q]=onerror").await;
    assert!(
        html.contains("&lt;img src=x onerror=alert(1)&gt;") && !html.contains("<img"),
        "{html}"
    );
    let answer = app
        .server_fn("dashboard_rows", &app.viewer, "query[sort]=colour")
        .await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[sqlx::test(migrations = "../migrations")]
async fn the_run_page_is_rendered_afresh_for_its_island_with_the_callers_actions(db: PgPool) {
    let app = TestApp::new(db).await;
    let pipeline = app.pipeline(json!({"name": "Parts <b>bold</b>"})).await;
    let run = app.start_run(pipeline, json!({})).await["id"].as_i64().unwrap();
    let parts = |key: &str| {
        let app = &app;
        let form = format!("id={run}");
        let key = key.to_owned();
        async move {
            let answer = app.server_fn("run_parts", &key, &form).await;
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
            answer.json()
        }
    };
    let fresh = parts(&app.viewer).await;
    let head = fresh["head"].as_str().unwrap();
    assert!(
        head.contains(&format!("Run #{run} ")) && head.contains("pending"),
        "{head}"
    );
    assert!(
        head.contains("Parts &lt;b&gt;bold&lt;/b&gt;"),
        "names are text: {head}"
    );
    let body = fresh["body"].as_str().unwrap();
    assert_eq!(body.matches(r#"data-testid="stage-row""#).count(), 5, "{body}");
    // Viewers get no actions; operators get Cancel while the run is live.
    assert!(!fresh["actions"].as_str().unwrap().contains("<form"), "{fresh}");
    let actions = parts(&app.operator).await["actions"].as_str().unwrap().to_owned();
    assert!(
        actions.contains(r#"action="/sfn/cancel_run""#) && !actions.contains("Retry"),
        "{actions}"
    );

    // Viewers may look, not cancel; an operator's cancel is what the next parts show.
    let refused = app
        .server_fn("cancel_run", &app.viewer, &format!("id={run}"))
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        !parts(&app.viewer).await["head"]
            .as_str()
            .unwrap()
            .contains("cancelled")
    );
    let cancelled = app
        .server_fn("cancel_run", &app.operator, &format!("id={run}"))
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.text());
    let after = parts(&app.operator).await;
    assert!(after["head"].as_str().unwrap().contains("cancelled"), "{after}");
    let actions = after["actions"].as_str().unwrap();
    assert!(
        actions.contains(r#"action="/sfn/retry_run""#) && !actions.contains("Cancel"),
        "{actions}"
    );

    let missing = app.server_fn("run_parts", &app.viewer, "id=987654").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[sqlx::test(migrations = "../migrations")]
async fn the_openapi_document_and_its_docs_come_from_the_binary(db: PgPool) {
    let app = TestApp::new(db).await;
    let answer = app.call("GET", "/api/openapi.json", None, None).await;
    assert_eq!(answer.status, StatusCode::OK);
    let doc = answer.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    for schema in [
        "ErrorBody",
        "Pipeline",
        "Run",
        "StatusUpdate",
        "ApiKey",
        "AuditFilter",
        "TextFilter",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "schema {schema}"
        );
    }
    let mut operations = 0;
    let mut operation_ids = std::collections::HashSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            operations += 1;
            // Client generators name their functions after it: one name, one operation.
            let id = operation["operationId"].as_str().unwrap_or_default().to_owned();
            assert!(
                operation_ids.insert(id.clone()),
                "{method} {path}: operationId {id} again"
            );
            let description = operation["description"].as_str().unwrap_or_default();
            assert!(description.starts_with("Role: "), "{method} {path} says its role");
            if !["/api/health", "/api/ready"].contains(&path.as_str()) {
                assert!(
                    operation["responses"]["401"].is_object(),
                    "{method} {path} documents 401"
                );
                assert!(
                    operation["responses"]["422"].is_object(),
                    "{method} {path} documents 422"
                );
            }
        }
    }
    assert!(operations >= 20, "{operations} operations");

    // The same document as OpenAPI 3.0, for generators that read only that.
    let old = app.call("GET", "/api/openapi-3.0.json", None, None).await;
    assert_eq!(old.status, StatusCode::OK);
    let old = old.json();
    assert_eq!(old["openapi"], "3.0.3");
    assert_eq!(
        old["paths"].as_object().unwrap().len(),
        doc["paths"].as_object().unwrap().len()
    );
    let text = old.to_string();
    for keyword in ["\"null\"", "propertyNames", "\"const\""] {
        assert!(!text.contains(keyword), "3.0 has no {keyword}");
    }

    // The interactive docs: Swagger UI from the binary, under a policy that loads nothing
    // from anywhere else.
    let ui = app.call("GET", "/api/docs/", None, None).await;
    assert_eq!(ui.status, StatusCode::OK, "{}", ui.text());
    assert!(ui.text().contains("swagger-ui"));
    assert!(!ui.text().contains("https://"), "no asset from another origin");
    let policy = ui.header("content-security-policy").unwrap();
    assert!(
        policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"),
        "{policy}"
    );
    let bundle = app
        .call("GET", "/api/docs/swagger-ui-bundle.js", None, None)
        .await;
    assert_eq!(bundle.status, StatusCode::OK);
    assert!(bundle.body.len() > 100_000);
}

#[sqlx::test(migrations = "../migrations")]
async fn wrong_methods_and_unknown_api_paths_answer_in_the_error_shape(db: PgPool) {
    let app = TestApp::new(db).await;
    let id = app.pipeline(json!({"name": "p"})).await;
    let answer = app
        .call("PUT", &format!("/api/pipelines/{id}"), Some(&app.admin), None)
        .await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(
        answer.header("allow").is_some_and(|a| a.contains("GET")),
        "{:?}",
        answer.headers
    );
    assert_eq!(answer.json()["code"], "method_not_allowed");
    let unknown = app.get("/api/no/such/thing", &app.admin).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.json()["code"], "not_found");
    // RFC 9457 problem details, as JSON; as application/problem+json when asked for.
    assert_eq!(unknown.json()["type"], "about:blank");
    assert_eq!(unknown.json()["title"], "Not Found");
    assert_eq!(unknown.json()["status"], 404);
    assert_eq!(unknown.header("content-type"), Some("application/json"));
    let asking_for_problems = |uri: &str, key: Option<&str>| {
        let mut request = axum::http::Request::get(uri).header("accept", "application/problem+json");
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        app.send(request.body(axum::body::Body::empty()).unwrap())
    };
    let problem = asking_for_problems("/api/pipelines/999", Some(&app.viewer)).await;
    assert_eq!(problem.status, StatusCode::NOT_FOUND);
    assert_eq!(problem.header("content-type"), Some("application/problem+json"));
    assert_eq!(problem.json()["detail"], "Pipeline not found");
    let refused = asking_for_problems("/api/pipelines/", None).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.header("content-type"), Some("application/problem+json"));
    assert_eq!(refused.json()["status"], 401);
}

#[sqlx::test(migrations = "../migrations")]
async fn runs_and_pipelines_filter_on_their_fields_and_related_ones(db: PgPool) {
    let app = TestApp::new(db).await;
    let nightly = app
        .pipeline(json!({"name": "Nightly ETL", "tags": ["etl", "nightly"]}))
        .await;
    let hourly = app
        .pipeline(json!({"name": "Hourly sync", "tags": ["etl"]}))
        .await;
    let report = app.pipeline(json!({"name": "Report"})).await;
    let failed = app.start_run(nightly, json!({})).await["id"].as_i64().unwrap();
    let status = json!({"run_id": failed, "status": "failed", "error_message": "boom"});
    assert_eq!(
        app.post("/api/status-update/", &app.operator, status)
            .await
            .status,
        StatusCode::OK
    );
    let pending = app.start_run(hourly, json!({})).await["id"].as_i64().unwrap();
    let ids = |answer: common::Answer| -> Vec<i64> {
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        answer
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["id"].as_i64().unwrap())
            .collect()
    };
    let runs = |body: Value| app.post("/api/runs/filter", &app.viewer, body);
    assert_eq!(ids(runs(json!({})).await), [pending, failed], "newest first");
    assert_eq!(ids(runs(json!({"sort": "CREATED_ASC"})).await), [failed, pending]);
    assert_eq!(
        ids(runs(json!({"runs": {"status": {"any_": ["failed"]}}})).await),
        [failed]
    );
    assert_eq!(
        ids(runs(json!({"runs": {"status": {"not_any_": ["failed"]}}})).await),
        [pending]
    );
    assert_eq!(
        ids(runs(json!({"pipelines": {"name": {"like_": "NIGHT"}}})).await),
        [failed]
    );
    assert_eq!(
        ids(runs(json!({"pipelines": {"tags": {"all_": ["etl"]}}})).await),
        [pending, failed]
    );
    assert_eq!(
        ids(runs(json!({"pipelines": {"tags": {"all_": ["etl", "nightly"]}}})).await),
        [failed]
    );
    assert_eq!(
        ids(runs(json!({"pipelines": {"status": {"any_": ["pending"]}}})).await),
        [pending]
    );
    assert_eq!(
        ids(runs(json!({"runs": {"created": {"before_": "2000-01-01T00:00:00Z"}}})).await),
        Vec::<i64>::new()
    );
    assert_eq!(
        ids(runs(json!({"runs": {"ended": {"is_null_": false}}, "sort": "ENDED_DESC"})).await),
        [failed]
    );
    assert_eq!(
        ids(runs(json!({"sort": "ENDED_ASC"})).await),
        [failed, pending],
        "unfinished runs last"
    );
    assert_eq!(ids(runs(json!({"limit": 1, "offset": 1})).await), [failed]);
    let count = app
        .post(
            "/api/runs/count",
            &app.viewer,
            json!({"pipelines": {"id": {"any_": [nightly, hourly]}}}),
        )
        .await;
    assert_eq!(count.json(), json!(2));

    let pipelines = |body: Value| app.post("/api/pipelines/filter", &app.viewer, body);
    assert_eq!(
        ids(pipelines(json!({"sort": "ID_ASC"})).await),
        [nightly, hourly, report]
    );
    assert_eq!(
        ids(pipelines(json!({"sort": "NAME_ASC"})).await),
        [hourly, nightly, report]
    );
    // Each field sorts both ways.
    for (sort, order) in [
        ("ID_DESC", [report, hourly, nightly]),
        ("NAME_DESC", [report, nightly, hourly]),
        // The later of the definition's change and its latest run's.
        ("UPDATED_DESC", [hourly, nightly, report]),
        ("UPDATED_ASC", [report, nightly, hourly]),
    ] {
        assert_eq!(ids(pipelines(json!({"sort": sort})).await), order, "{sort}");
    }
    assert_eq!(
        ids(pipelines(json!({"pipelines": {"tags": {"is_null_": true}}})).await),
        [report]
    );
    assert_eq!(
        ids(pipelines(json!({"pipelines": {"status": {"any_": ["failed"]}}})).await),
        [nightly]
    );
    let listed = pipelines(json!({"pipelines": {"id": {"any_": [nightly]}}}))
        .await
        .json();
    assert_eq!(
        listed[0]["status"], "failed",
        "pipelines come with their latest run"
    );
    let count = app
        .post(
            "/api/pipelines/count",
            &app.viewer,
            json!({"pipelines": {"tags": {"any_": ["etl"]}}}),
        )
        .await;
    assert_eq!(count.json(), json!(2));

    for (uri, body, field) in [
        ("/api/runs/filter", json!({"sort": "FASTEST"}), "sort"),
        ("/api/runs/filter", json!({"limit": 201}), "limit"),
        (
            "/api/runs/filter",
            json!({"runs": {"status": {"any_": ["exploded"]}}}),
            "runs.status.any_[0]",
        ),
        (
            "/api/runs/filter",
            json!({"runs": {"colour": {"eq_": "red"}}}),
            "runs.colour",
        ),
        (
            "/api/runs/filter",
            json!({"pipelines": {"tags": {"none_": ["x"]}}}),
            "pipelines.tags.none_",
        ),
        (
            "/api/pipelines/filter",
            json!({"pipelines": {"created": {"after_": "yesterday"}}}),
            "pipelines.created.after_",
        ),
        ("/api/pipelines/count", json!({"runs": {}}), "runs"),
    ] {
        let answer = app.post(uri, &app.viewer, body.clone()).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{uri} {body}");
        assert_eq!(answer.json()["field"], field, "{uri} {body}: {}", answer.text());
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn pipelines_are_patched_field_by_field_and_deleted_once_idle(db: PgPool) {
    let app = TestApp::new(db).await;
    let id = app
        .pipeline(json!({"name": "Orders", "description": "old", "tags": ["etl"], "max_concurrent_runs": 1}))
        .await;
    let uri = format!("/api/pipelines/{id}");
    let patch = |body: Value| app.call("PATCH", &uri, Some(&app.admin), Some(body));
    let changed = patch(json!({"name": "Orders v2", "description": null, "max_concurrent_runs": null})).await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text());
    let changed = changed.json();
    assert_eq!(changed["name"], "Orders v2");
    assert_eq!(changed["slug"], "orders", "the slug stays");
    assert!(changed["description"].is_null() && changed["max_concurrent_runs"].is_null());
    assert_eq!(changed["tags"], json!(["etl"]), "fields not named stay");
    for (body, field) in [
        (json!({"name": ""}), "name"),
        (json!({"stages": ["a", "a"]}), "stages"),
        (json!({"default_parameters": [1]}), "default_parameters"),
        (json!({"slug": "new"}), "slug"),
    ] {
        let answer = patch(body.clone()).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(
            answer.json()["field"].as_str().unwrap().starts_with(field),
            "{body}: {}",
            answer.text()
        );
    }
    assert_eq!(
        app.call("PATCH", &uri, Some(&app.operator), Some(json!({"name": "x"})))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.get(&uri, &app.viewer).await.json()["name"],
        "Orders v2",
        "refusals changed nothing"
    );

    // Deleting waits for the runs to end.
    let run = app.start_run(id, json!({})).await["id"].as_i64().unwrap();
    let delete = || app.call("DELETE", &uri, Some(&app.admin), None);
    assert_eq!(delete().await.status, StatusCode::CONFLICT);
    app.run_action(run, "cancel", &app.operator).await;
    assert_eq!(delete().await.status, StatusCode::NO_CONTENT);
    assert_eq!(app.get(&uri, &app.viewer).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        app.get(&format!("/api/runs/{run}"), &app.viewer).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(delete().await.status, StatusCode::NOT_FOUND);
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE action IN ('pipeline.update', 'pipeline.delete')",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(audited, 2);
}
