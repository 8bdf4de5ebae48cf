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
    let answer = app.get("/api/pipelines/abc", &app.viewer).await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer.json()["field"], "id");
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
    assert_eq!(not_json.status, StatusCode::UNPROCESSABLE_ENTITY);
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
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(other.json()["field"], "Idempotency-Key");
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
    for _ in 0..20 {
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
    while let Some(answer) = tasks.join_next().await {
        let (status, body) = answer.unwrap();
        assert!(
            status == StatusCode::ACCEPTED || status == StatusCode::CONFLICT,
            "{status} {body}"
        );
        if status == StatusCode::ACCEPTED {
            ids.insert(body["id"].as_i64().unwrap());
        }
    }
    assert_eq!(ids.len(), 1, "every accepted answer names the same run");
    assert_eq!(app.count("runs").await, 1);
    assert_eq!(app.count("run_outbox").await, 1);
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
