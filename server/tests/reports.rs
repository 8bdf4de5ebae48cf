//! Status reports written in groups, and listings kept until a change: through the real
//! router against real `PostgreSQL`.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use common::TestApp;
use serde_json::{Value, json};
use sqlx::PgPool;

/// Sends every report at once; the answers by event id.
async fn send_all(app: &Arc<TestApp>, reports: Vec<Value>) -> Vec<(Value, StatusCode, Value)> {
    let mut tasks = tokio::task::JoinSet::new();
    for report in reports {
        let app = app.clone();
        tasks.spawn(async move {
            let answer = app
                .post("/api/status-update/", &app.operator, report.clone())
                .await;
            (report, answer.status, answer.json())
        });
    }
    let mut answers = Vec::new();
    while let Some(answer) = tasks.join_next().await {
        answers.push(answer.unwrap());
    }
    answers
}

#[sqlx::test(migrations = "../migrations")]
async fn reports_sent_at_once_are_each_applied_once_and_answered_for_themselves(db: PgPool) {
    let app = Arc::new(TestApp::new(db).await);
    let pipeline = app.pipeline(json!({"name": "p", "stages": ["a", "b"]})).await;
    let mut runs = Vec::new();
    for _ in 0..20 {
        runs.push(app.start_run(pipeline, json!({})).await["id"].as_i64().unwrap());
    }
    let mut reports = Vec::new();
    for run in &runs {
        for (stage, status) in [
            ("a", "running"),
            ("a", "completed"),
            ("b", "running"),
            ("b", "completed"),
        ] {
            let report = json!({"run_id": run, "stage_name": stage, "status": status,
                                "event_id": format!("{run}-{stage}-{status}"), "records_processed": 10});
            // Each report twice: one of the two is the duplicate.
            reports.push(report.clone());
            reports.push(report);
        }
    }
    let before = app.count("audit_events").await;
    reports.push(json!({"run_id": runs[0], "stage_name": "nope", "status": "running", "event_id": "x1"}));
    reports.push(json!({"run_id": 999_999, "stage_name": "a", "status": "running", "event_id": "x2"}));
    reports
        .push(json!({"run_id": runs[1], "pipeline_id": pipeline + 1, "status": "running", "event_id": "x3"}));

    let answers = send_all(&app, reports).await;
    let mut firsts: HashMap<String, usize> = HashMap::new();
    for (report, status, body) in &answers {
        let event = report["event_id"].as_str().unwrap().to_owned();
        if event.starts_with('x') {
            assert_eq!(*status, StatusCode::NOT_FOUND, "{report} {body}");
            continue;
        }
        assert_eq!(*status, StatusCode::OK, "{report} {body}");
        assert_eq!(
            body["run_id"], report["run_id"],
            "each answer is its own report's"
        );
        if body["duplicate"] == false {
            *firsts.entry(event).or_default() += 1;
        }
    }
    assert_eq!(firsts.len(), 80, "every report was taken once");
    assert!(firsts.values().all(|n| *n == 1), "and only once: {firsts:?}");

    for run in &runs {
        let run = app.run(*run).await;
        assert_eq!(run["status"], "completed", "{run}");
        assert_eq!(run["records_processed"], 10);
        assert!(
            run["stages"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["status"] == "completed"),
            "{run}"
        );
    }
    let (events, nope): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE kind = 'stage_status'), count(*) FILTER (WHERE event_id LIKE 'x%') FROM run_events",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(
        (events, nope),
        (80, 0),
        "each report recorded once, refused ones not at all"
    );
    assert_eq!(
        app.count("audit_events").await - before,
        80,
        "one audit line per report taken"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn seed_reports_naming_only_a_pipeline_sent_at_once_reach_its_latest_run(db: PgPool) {
    let app = Arc::new(TestApp::new(db).await);
    let mut latest = Vec::new();
    for i in 0..8 {
        let pipeline = app
            .pipeline(json!({"name": format!("seed {i}"), "stages": ["a", "b"]}))
            .await;
        app.start_run(pipeline, json!({})).await;
        let run = app.start_run(pipeline, json!({})).await["id"].as_i64().unwrap();
        latest.push((pipeline, run));
    }
    let never_ran = app.pipeline(json!({"name": "never ran"})).await;
    let mut reports = Vec::new();
    for (pipeline, _) in &latest {
        for (stage, status) in [
            ("a", "running"),
            ("a", "completed"),
            ("b", "running"),
            ("b", "completed"),
        ] {
            let report = json!({"pipeline_id": pipeline, "stage_name": stage, "status": status,
                                "event_id": format!("{pipeline}-{stage}-{status}")});
            reports.push(report.clone());
            reports.push(report);
        }
    }
    reports.push(json!({"pipeline_id": never_ran, "status": "running", "event_id": "y1"}));
    reports.push(json!({"pipeline_id": 999_999, "status": "running", "event_id": "y2"}));

    let answers = send_all(&app, reports).await;
    for (report, status, body) in &answers {
        match report["event_id"].as_str().unwrap() {
            "y1" => assert_eq!(*status, StatusCode::CONFLICT, "{body}"),
            "y2" => assert_eq!(*status, StatusCode::NOT_FOUND, "{body}"),
            _ => {
                assert_eq!(*status, StatusCode::OK, "{report} {body}");
                let (_, run) = latest.iter().find(|(p, _)| report["pipeline_id"] == *p).unwrap();
                assert_eq!(body["run_id"], *run, "the pipeline's latest run");
            }
        }
    }
    for (_, run) in &latest {
        assert_eq!(app.run(*run).await["status"], "completed");
    }
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM run_events WHERE kind = 'stage_status'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(recorded, 32, "each report recorded once, on the latest run");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_report_on_a_busy_run_waits_alone_while_the_others_go_on(db: PgPool) {
    let app = Arc::new(TestApp::new(db.clone()).await);
    let pipeline = app.pipeline(json!({"name": "p", "stages": ["a"]})).await;
    let busy = app.start_run(pipeline, json!({})).await["id"].as_i64().unwrap();
    let free = app.start_run(pipeline, json!({})).await["id"].as_i64().unwrap();

    let mut holder = db.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM runs WHERE id = $1 FOR UPDATE")
        .bind(busy)
        .execute(&mut *holder)
        .await
        .unwrap();
    let waiting = tokio::spawn({
        let app = app.clone();
        async move {
            app.post(
                "/api/status-update/",
                &app.operator,
                json!({"run_id": busy, "stage_name": "a", "status": "running"}),
            )
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    for status in ["running", "completed"] {
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            app.post(
                "/api/status-update/",
                &app.operator,
                json!({"run_id": free, "stage_name": "a", "status": status}),
            ),
        )
        .await
        .expect("a report on another run is not held up");
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    }
    assert_eq!(app.run(free).await["status"], "completed");
    assert!(!waiting.is_finished(), "the busy run's report waits for its lock");

    holder.commit().await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("answered once the lock is gone")
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.json()["applied"], true);
    assert_eq!(app.run(busy).await["status"], "running");
}

/// The first page of the pipeline list, by name.
async fn names(app: &TestApp) -> Vec<String> {
    let answer = app.get("/api/pipelines/", &app.viewer).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    answer
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Polls the list until `check` holds, for at most five seconds.
async fn eventually(app: &TestApp, what: &str, check: impl Fn(&[String]) -> bool) {
    for _ in 0..100 {
        if check(&names(app).await) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: the list still says {:?}", names(app).await);
}

/// `GET uri` as `key`, asking for `encoding` (none: no `Accept-Encoding`).
async fn get_encoded(app: &TestApp, uri: &str, key: &str, encoding: Option<&str>) -> common::Answer {
    let mut request = axum::http::Request::builder()
        .uri(uri)
        .header("authorization", format!("Bearer {key}"));
    if let Some(encoding) = encoding {
        request = request.header("accept-encoding", encoding);
    }
    app.send(request.body(axum::body::Body::empty()).unwrap()).await
}

#[sqlx::test(migrations = "../migrations")]
async fn a_kept_answer_is_sent_in_the_encoding_asked_for(db: PgPool) {
    use std::io::Read;
    let app = TestApp::new(db.clone()).await;
    for i in 0..20 {
        app.pipeline(json!({"name": format!("pipeline {i}"), "description": "the same words again"}))
            .await;
    }
    let _listening = app.listen().await;
    let plain = get_encoded(&app, "/api/pipelines/", &app.viewer, None).await;
    assert_eq!(plain.status, StatusCode::OK);
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.header("vary"), Some("accept-encoding"));
    for _ in 0..2 {
        let br = get_encoded(&app, "/api/pipelines/", &app.viewer, Some("gzip, deflate, br")).await;
        assert_eq!(br.header("content-encoding"), Some("br"));
        assert!(
            br.body.len() * 4 < plain.body.len(),
            "{} of {}",
            br.body.len(),
            plain.body.len()
        );
        let mut decoded = Vec::new();
        brotli::Decompressor::new(&br.body[..], 4096)
            .read_to_end(&mut decoded)
            .unwrap();
        assert_eq!(decoded, plain.body);
    }
    let gzip = get_encoded(&app, "/api/pipelines/", &app.viewer, Some("br;q=0, gzip")).await;
    assert_eq!(gzip.header("content-encoding"), Some("gzip"));
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(&gzip.body[..])
        .read_to_end(&mut decoded)
        .unwrap();
    assert_eq!(decoded, plain.body);
    // Refusals are not kept answers: sent as they are.
    let refused = get_encoded(&app, "/api/pipelines/", "fdk_nonsense", Some("br")).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.header("content-encoding"), None);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_kept_listing_lasts_until_a_change_from_anywhere(db: PgPool) {
    let app = TestApp::new(db.clone()).await;
    let first = app.pipeline(json!({"name": "first"})).await;

    // Not listening: every read goes to the database.
    assert_eq!(names(&app).await, ["first"]);
    sqlx::query("UPDATE pipelines SET name = 'renamed quietly' WHERE id = $1")
        .bind(first)
        .execute(&db)
        .await
        .unwrap();
    assert_eq!(names(&app).await, ["renamed quietly"]);

    let _listening = app.listen().await;
    assert_eq!(names(&app).await, ["renamed quietly"]);
    // A write that announces nothing (triggers off, as no writer of Flowdeck's does) is
    // not seen: the answer is kept.
    let mut quiet = db.acquire().await.unwrap();
    sqlx::query("SET session_replication_role = replica")
        .execute(&mut *quiet)
        .await
        .unwrap();
    sqlx::query("UPDATE pipelines SET name = 'unannounced' WHERE id = $1")
        .bind(first)
        .execute(&mut *quiet)
        .await
        .unwrap();
    sqlx::query("RESET session_replication_role")
        .execute(&mut *quiet)
        .await
        .unwrap();
    drop(quiet);
    assert_eq!(names(&app).await, ["renamed quietly"], "kept");

    // Written through this replica: read afresh at once, by the writer's next request.
    let second = app.pipeline(json!({"name": "second"})).await;
    assert_eq!(names(&app).await, ["second", "unannounced"]);

    // Written elsewhere (another replica, a migration): read afresh once announced.
    sqlx::query("UPDATE pipelines SET name = 'renamed elsewhere' WHERE id = $1")
        .bind(second)
        .execute(&db)
        .await
        .unwrap();
    eventually(&app, "an announced rename", |names| {
        names == ["renamed elsewhere", "unannounced"]
    })
    .await;
    sqlx::query("DELETE FROM pipelines WHERE id = $1")
        .bind(second)
        .execute(&db)
        .await
        .unwrap();
    eventually(&app, "an announced delete", |names| names == ["unannounced"]).await;

    // The run filter is kept the same way, and a kept answer is still only for readers.
    let filter = json!({"runs": {"status": {"any_": ["pending"]}}});
    let empty = app.post("/api/runs/filter", &app.viewer, filter.clone()).await;
    assert_eq!(empty.json(), json!([]));
    let run = app.start_run(first, json!({})).await["id"].as_i64().unwrap();
    let found = app
        .post("/api/runs/filter", &app.viewer, filter.clone())
        .await
        .json();
    assert_eq!(found.as_array().map(|runs| runs.len()), Some(1), "{found}");
    assert_eq!(found[0]["id"], run);
    // A run's callback credential may report on its run, not read listings, kept or not.
    let callback: String = sqlx::query_scalar("SELECT callback_token FROM run_outbox WHERE run_id = $1")
        .bind(run)
        .fetch_one(&db)
        .await
        .unwrap();
    let refused = app.post("/api/runs/filter", &callback, filter).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text());
    assert_eq!(
        app.get("/api/pipelines/", &callback).await.status,
        StatusCode::FORBIDDEN
    );
}

/// A key's id by its secret's hash.
async fn key_id(db: &PgPool, secret: &str) -> i64 {
    sqlx::query_scalar("SELECT id FROM api_keys WHERE key_hash = $1")
        .bind(app::auth::secrets::hash_secret(secret))
        .fetch_one(db)
        .await
        .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_remembered_key_is_refused_once_revoked_here_or_elsewhere_or_expired(db: PgPool) {
    let app = TestApp::new(db.clone()).await;
    let _listening = app.listen().await;
    let status = |key: String| {
        let app = &app;
        async move { app.get("/api/pipelines/", &key).await.status }
    };

    // Revoked through this replica: the very next request is refused.
    let here = common::key(&db, app::caller::Role::Viewer).await;
    assert_eq!(status(here.clone()).await, StatusCode::OK);
    assert_eq!(status(here.clone()).await, StatusCode::OK, "remembered");
    let id = key_id(&db, &here).await;
    let revoked = app
        .call("DELETE", &format!("/api/api_keys/{id}"), Some(&app.admin), None)
        .await;
    assert!(revoked.status.is_success(), "{}", revoked.text());
    assert_eq!(status(here).await, StatusCode::UNAUTHORIZED);

    // Revoked elsewhere (another replica, the CLI): refused once the change is announced.
    let elsewhere = common::key(&db, app::caller::Role::Viewer).await;
    assert_eq!(status(elsewhere.clone()).await, StatusCode::OK);
    sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE id = $1")
        .bind(key_id(&db, &elsewhere).await)
        .execute(&db)
        .await
        .unwrap();
    let mut refused = false;
    for _ in 0..100 {
        if status(elsewhere.clone()).await == StatusCode::UNAUTHORIZED {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "a key revoked elsewhere still works 5 s later");

    // A change nobody announces (triggers off) is not seen: the key is remembered. But its
    // expiry, once known, is checked on every use.
    let quiet = common::key(&db, app::caller::Role::Viewer).await;
    let quiet_id = key_id(&db, &quiet).await;
    sqlx::query("UPDATE api_keys SET expires_at = now() + interval '1 second' WHERE id = $1")
        .bind(quiet_id)
        .execute(&db)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(status(quiet.clone()).await, StatusCode::OK);
    let mut unannounced = db.acquire().await.unwrap();
    sqlx::query("SET session_replication_role = replica")
        .execute(&mut *unannounced)
        .await
        .unwrap();
    sqlx::query("UPDATE api_keys SET role = 'admin' WHERE id = $1")
        .bind(quiet_id)
        .execute(&mut *unannounced)
        .await
        .unwrap();
    sqlx::query("RESET session_replication_role")
        .execute(&mut *unannounced)
        .await
        .unwrap();
    drop(unannounced);
    let admin_only = app.post("/api/api_keys/filter", &quiet, json!({})).await;
    assert_eq!(
        admin_only.status,
        StatusCode::FORBIDDEN,
        "still the remembered viewer"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(status(quiet).await, StatusCode::UNAUTHORIZED, "expired");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_failed_run_says_why_in_the_api_and_on_its_pages(db: PgPool) {
    let app = TestApp::new(db.clone()).await;
    let pipeline = app
        .pipeline(json!({"name": "Why", "stages": ["extract", "load"]}))
        .await;
    let run = app.start_run(pipeline, json!({})).await["id"].as_i64().unwrap();
    assert_eq!(
        app.run(run).await["failure"],
        Value::Null,
        "a pending run has no failure"
    );
    let report = app
        .post(
            "/api/status-update/",
            &app.operator,
            json!({"run_id": run, "stage_name": "extract", "status": "failed", "error_message": "disk full"}),
        )
        .await;
    assert_eq!(report.status, StatusCode::OK, "{}", report.text());
    // Prefect's final state arrives after the stage's report: its message is kept beside it.
    let state = app::runs::service::PrefectState {
        status: app::status::RunStatus::Failed,
        name: "Failed".into(),
        key: "test-failed".into(),
        message: Some("Flow run encountered an exception: OSError".into()),
        at: None,
    };
    app::runs::service::apply_prefect_state(&db, run, &state)
        .await
        .unwrap();

    let read = app.run(run).await;
    let failure = &read["failure"];
    assert_eq!(failure["stage"], "extract", "{read}");
    assert_eq!(failure["stage_error"], "disk full");
    assert_eq!(
        failure["prefect_message"],
        "Flow run encountered an exception: OSError"
    );
    assert_eq!(failure["reason"], "extract: disk full");

    // The run page says why at its top, the pipeline page beside the run, the dashboard
    // on its badge.
    let cookie = common::session_cookie(&app, &app.viewer).await;
    for (uri, needle) in [
        (format!("/runs/{run}"), "Why it failed"),
        (format!("/pipelines/{pipeline}"), "run-failure"),
        ("/".to_owned(), r#"title="extract: disk full""#),
    ] {
        let request = axum::http::Request::get(&uri)
            .header("cookie", &cookie)
            .body(axum::body::Body::empty())
            .unwrap();
        let html = app.send(request).await.text();
        assert!(html.contains(needle), "{uri} lacks {needle}");
        assert!(html.contains("extract: disk full"), "{uri} lacks the reason");
        if uri.starts_with("/runs/") {
            assert!(html.contains("Prefect: Flow run encountered an exception: OSError"));
        }
    }

    // The last error lines of its log, once kept, in the API and atop the run page.
    let line = json!([{"id": "l1", "timestamp": "2026-12-03T10:00:00Z", "level": "error",
        "logger": "prefect.flow_runs", "stage": "extract", "task_run_id": null,
        "message": "OSError: [Errno 28] No space left on device", "received_at": null}]);
    sqlx::query("UPDATE runs SET failure_logs = $2 WHERE id = $1")
        .bind(run)
        .bind(&line)
        .execute(&db)
        .await
        .unwrap();
    let read = app.run(run).await;
    assert_eq!(
        read["failure"]["log_lines"][0]["message"], line[0]["message"],
        "{read}"
    );
    let html = page_html(&app, &format!("/runs/{run}"), &app.viewer).await;
    assert!(html.contains("Last error lines of the log (1)"));
    assert!(html.contains("No space left on device"));
}

/// The HTML of page `uri` as the holder of `key` sees it.
async fn page_html(app: &TestApp, uri: &str, key: &str) -> String {
    let cookie = common::session_cookie(app, key).await;
    let request = axum::http::Request::get(uri)
        .header("cookie", &cookie)
        .body(axum::body::Body::empty())
        .unwrap();
    app.send(request).await.text()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_failed_run_restarts_from_a_stage_with_the_stages_before_it_carried_over(db: PgPool) {
    let app = TestApp::new(db.clone()).await;
    let pipeline = app
        .pipeline(json!({"name": "Restart", "stages": ["extract", "transform", "load"], "default_parameters": {"rows": 5}}))
        .await;
    let run = app.start_run(pipeline, json!({})).await["id"].as_i64().unwrap();
    for (stage, status) in [
        ("extract", "completed"),
        ("transform", "completed"),
        ("load", "failed"),
    ] {
        let report =
            json!({"run_id": run, "stage_name": stage, "status": status, "error_message": "disk full"});
        let answer = app.post("/api/status-update/", &app.operator, report).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    }
    sqlx::query("UPDATE runs SET prefect_flow_run_id = 'flow-run-1' WHERE id = $1")
        .bind(run)
        .execute(&db)
        .await
        .unwrap();
    // Operators are offered a restart at the failed stage.
    let html = page_html(&app, &format!("/runs/{run}"), &app.operator).await;
    assert!(
        html.contains("Retry from load"),
        "the run page offers the restart"
    );

    let uri = format!("/api/runs/{run}/retry");
    let restart = |key: &'static str, body: Value| {
        let app = &app;
        let uri = uri.clone();
        async move {
            let request = axum::http::Request::post(&uri)
                .header("authorization", format!("Bearer {}", app.operator))
                .header("content-type", "application/json")
                .header("idempotency-key", key)
                .body(axum::body::Body::from(body.to_string()))
                .unwrap();
            app.send(request).await
        }
    };
    let body = json!({"from_stage": "load", "parameters": {"rows": 9}});
    let first = restart("restart-1", body.clone()).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text());
    let new = first.json();
    assert_eq!(new["from_stage"], "load");
    assert_eq!(new["retry_of_run_id"], run);
    assert_eq!(
        new["parameters"],
        json!({"rows": 9}),
        "the overrides on top of the run's parameters"
    );
    let stages: Vec<(&str, &Value)> = new["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["status"].as_str().unwrap(), &s["output_run_id"]))
        .collect();
    assert_eq!(
        stages,
        [
            ("skipped", &json!(run)),
            ("skipped", &json!(run)),
            ("pending", &Value::Null)
        ]
    );

    // The same key and body: the same run; the same key for another request: refused.
    let again = restart("restart-1", body).await;
    assert_eq!(again.json()["id"], new["id"]);
    let other = restart("restart-1", json!({"from_stage": "transform"})).await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", other.text());
    assert_eq!(other.json()["field"], "Idempotency-Key");

    // The flow is told where to start and which flow run left each output.
    let claimed = app::runs::dispatch::db::claim_outbox(&db, 10, 60).await.unwrap();
    let resume = claimed
        .iter()
        .find(|c| json!(c.run_id) == new["id"])
        .and_then(|c| c.resume.clone());
    assert_eq!(
        resume,
        Some(json!({"from_stage": "load", "outputs": {"extract": "flow-run-1", "transform": "flow-run-1"}}))
    );

    // The new run's page says what it restarts and where each carried stage comes from.
    let new_id = new["id"].as_i64().unwrap();
    let html = page_html(&app, &format!("/runs/{new_id}"), &app.viewer).await;
    assert!(html.contains("from load"), "the page says where it started");
    assert_eq!(html.matches("Output reused from").count(), 2);

    // From the first stage is a plain retry; a stage the run does not have is refused.
    let plain = restart("restart-2", json!({"from_stage": "extract"})).await;
    assert_eq!(plain.status, StatusCode::ACCEPTED, "{}", plain.text());
    assert_eq!(plain.json()["from_stage"], Value::Null);
    assert!(
        plain.json()["stages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "pending")
    );
    let before = app.footprint().await;
    let gap = restart("restart-3", json!({"from_stage": "nope"})).await;
    assert_eq!(gap.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", gap.text());
    assert!(gap.text().contains("extract, transform, load"), "{}", gap.text());
    assert_eq!(app.footprint().await, before, "a refused restart writes nothing");
}
