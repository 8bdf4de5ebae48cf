//! Scoped API keys and budgets through the real router: a key limited to a tag sees and
//! triggers only those pipelines (REST, the event stream, the dashboard), a scope never
//! widens a role, and budgets refuse what would overspend them, also under concurrency.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::{TestApp, session_cookie};
use serde_json::{Value, json};
use sqlx::PgPool;

/// Creates a key as admin and returns its answer (with `secret`).
async fn create_key(app: &TestApp, body: Value) -> Value {
    let answer = app.post("/api/api_keys/", &app.admin, body).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text());
    answer.json()
}

fn ids(list: &Value) -> Vec<i64> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|p| p["id"].as_i64().expect("id"))
        .collect()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_key_scoped_to_a_tag_sees_and_triggers_only_those_pipelines(db: PgPool) {
    let app = TestApp::new(db).await;
    let marketing = app
        .pipeline(json!({"name": "Campaign ETL", "tags": ["marketing"]}))
        .await;
    let finance = app
        .pipeline(json!({"name": "Ledger ETL", "tags": ["finance"]}))
        .await;
    let finance_run = app.start_run(finance, json!({})).await["id"].as_i64().unwrap();
    let key = create_key(
        &app,
        json!({"name": "agent", "role": "operator",
               "scope": {"tags": ["marketing"], "actions": ["trigger", "read", "read"]}}),
    )
    .await;
    assert_eq!(key["scope"]["tags"], json!(["marketing"]));
    assert_eq!(
        key["scope"]["actions"],
        json!(["read", "trigger"]),
        "sorted, once each"
    );
    let agent = key["secret"].as_str().unwrap().to_owned();

    // Lists, filters and counts leave the other pipeline out; reading it is 404, not 403.
    assert_eq!(
        ids(&app.get("/api/pipelines/", &agent).await.json()),
        vec![marketing]
    );
    let filtered = app.post("/api/pipelines/filter", &agent, json!({})).await.json();
    assert_eq!(ids(&filtered), vec![marketing]);
    assert_eq!(
        app.post("/api/pipelines/count", &agent, json!({})).await.json(),
        1
    );
    for uri in [
        format!("/api/pipelines/{finance}"),
        format!("/api/pipelines/{finance}/stages"),
        format!("/api/runs/{finance_run}"),
    ] {
        let answer = app.get(&uri, &agent).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{uri}: {}", answer.text());
    }
    assert_eq!(app.post("/api/runs/count", &agent, json!({})).await.json(), 0);
    assert_eq!(
        app.get(&format!("/api/pipelines/{marketing}"), &agent)
            .await
            .status,
        StatusCode::OK
    );

    // Triggering outside the scope is 404 and writes nothing; inside, it is a run.
    let before = app.footprint_but_audit().await;
    assert_eq!(app.start_run_as(finance, &agent).await, StatusCode::NOT_FOUND);
    let seed = app
        .call("POST", &format!("/api/trigger/{finance}"), Some(&agent), None)
        .await;
    assert_eq!(seed.status, StatusCode::NOT_FOUND);
    assert_eq!(app.footprint_but_audit().await, before);
    assert_eq!(app.start_run_as(marketing, &agent).await, StatusCode::ACCEPTED);
    let runs = app.post("/api/runs/filter", &agent, json!({})).await.json();
    assert_eq!(runs.as_array().unwrap().len(), 1);
    assert_eq!(runs[0]["pipeline_id"], marketing);
    let (actor, key_id): (String, Option<i64>) =
        sqlx::query_as("SELECT actor, api_key_id FROM runs WHERE pipeline_id = $1")
            .bind(marketing)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!((actor.as_str(), key_id), ("api-key:agent", key["id"].as_i64()));

    // Actions the scope leaves out are refused, as are admin operations and the metrics of
    // every pipeline.
    let run_id = runs[0]["id"].as_i64().unwrap();
    let cancel = app.run_action(run_id, "cancel", &agent).await;
    assert_eq!(cancel.status, StatusCode::FORBIDDEN);
    assert_eq!(cancel.json()["code"], "forbidden");
    assert!(cancel.text().contains("cancel"), "{}", cancel.text());
    assert_eq!(app.get("/metrics", &agent).await.status, StatusCode::FORBIDDEN);
    let report = app
        .post(
            "/api/status-update/",
            &agent,
            json!({"run_id": run_id, "status": "running"}),
        )
        .await;
    assert_eq!(report.status, StatusCode::FORBIDDEN);

    // A pipeline tagged later is in scope from then on.
    let patch = app
        .call(
            "PATCH",
            &format!("/api/pipelines/{finance}"),
            Some(&app.admin),
            Some(json!({"tags": ["finance", "marketing"]})),
        )
        .await;
    assert_eq!(patch.status, StatusCode::OK, "{}", patch.text());
    assert_eq!(
        app.get(&format!("/api/pipelines/{finance}"), &agent).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.post("/api/pipelines/count", &agent, json!({})).await.json(),
        2
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn the_event_stream_and_the_dashboard_show_only_the_scope(db: PgPool) {
    let app = TestApp::new(db).await;
    let _listening = app.listen().await;
    let marketing = app
        .pipeline(json!({"name": "Campaign ETL", "tags": ["marketing"]}))
        .await;
    let finance = app
        .pipeline(json!({"name": "Ledger ETL", "tags": ["finance"]}))
        .await;
    let key = create_key(
        &app,
        json!({"name": "watcher", "role": "viewer", "scope": {"slugs": ["campaign-etl"]}}),
    )
    .await;
    let watcher = key["secret"].as_str().unwrap().to_owned();

    let mut stream = app.subscribe("", &watcher, None).await;
    app.start_run(finance, json!({})).await;
    let seen = app.start_run(marketing, json!({})).await["id"].as_i64().unwrap();
    let mut run_ids = Vec::new();
    while let Some(event) = stream.next(Duration::from_secs(2)).await {
        if event
            .event
            .as_deref()
            .is_some_and(|e| e != "heartbeat" && e != "hello")
        {
            let change = event.json();
            assert_eq!(change["pipeline_id"], marketing, "{change}");
            run_ids.push(change["run_id"].as_i64());
        }
    }
    assert!(
        run_ids.contains(&Some(seen)),
        "the scope's run was streamed: {run_ids:?}"
    );

    // The dashboard, signed in with the key, lists its pipeline and counts only it.
    let cookie = session_cookie(&app, &watcher).await;
    let request = axum::http::Request::get("/")
        .header(axum::http::header::COOKIE, cookie)
        .body(axum::body::Body::empty())
        .unwrap();
    let page = app.send(request).await;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.text();
    assert!(html.contains("Campaign ETL"), "the scope's pipeline is listed");
    assert!(!html.contains("Ledger ETL"), "the other pipeline is not");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_scope_narrows_a_role_and_its_changes_are_audited_and_in_force_at_once(db: PgPool) {
    let app = TestApp::new(db).await;
    let _listening = app.listen().await;
    let one = app.pipeline(json!({"name": "One"})).await;
    let two = app.pipeline(json!({"name": "Two"})).await;

    let before = app.count("api_keys").await;
    let wider = app
        .post(
            "/api/api_keys/",
            &app.admin,
            json!({"name": "v", "role": "viewer", "scope": {"actions": ["read", "trigger"]}}),
        )
        .await;
    assert_eq!(wider.status, StatusCode::CONFLICT, "{}", wider.text());
    assert!(wider.text().contains("scope.actions"), "{}", wider.text());
    assert_eq!(app.count("api_keys").await, before, "nothing was written");

    let key = create_key(
        &app,
        json!({"name": "narrow", "role": "operator", "scope": {"pipeline_ids": [one]}}),
    )
    .await;
    let id = key["id"].as_i64().unwrap();
    let narrow = key["secret"].as_str().unwrap().to_owned();
    assert_eq!(ids(&app.get("/api/pipelines/", &narrow).await.json()), vec![one]);
    // A scoped admin-role key still cannot manage keys: a scope never widens.
    assert_eq!(
        app.post("/api/api_keys/filter", &narrow, json!({})).await.status,
        StatusCode::FORBIDDEN
    );

    let changed = app
        .call(
            "PATCH",
            &format!("/api/api_keys/{id}"),
            Some(&app.admin),
            Some(json!({"scope": {"pipeline_ids": [two]}})),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text());
    assert_eq!(changed.json()["scope"]["pipeline_ids"], json!([two]));
    // In force at the key's next request (the key was remembered at the old scope).
    assert_eq!(ids(&app.get("/api/pipelines/", &narrow).await.json()), vec![two]);
    let listed = app
        .post(
            "/api/api_keys/filter",
            &app.admin,
            json!({"api_keys": {"id": {"any_": [id]}}}),
        )
        .await
        .json();
    assert_eq!(listed[0]["scope"]["pipeline_ids"], json!([two]));
    let (detail,): (Value,) =
        sqlx::query_as("SELECT detail FROM audit_events WHERE action = 'api_key.limit' AND target = $1")
            .bind(format!("api_key:{id}"))
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(detail["before"]["scope"]["pipeline_ids"], json!([one]));
    assert_eq!(detail["after"]["scope"]["pipeline_ids"], json!([two]));
}

#[sqlx::test(migrations = "../migrations")]
async fn budgets_refuse_what_would_overspend_them_even_under_concurrency(db: PgPool) {
    let app = TestApp::new(db).await;
    let pipeline = app.pipeline(json!({"name": "p"})).await;
    let key = create_key(
        &app,
        json!({"name": "hourly", "role": "operator", "budget": {"triggers_per_hour": 3}}),
    )
    .await;
    let hourly = key["secret"].as_str().unwrap().to_owned();
    let uri = format!("/api/pipelines/{pipeline}/runs");
    let answers = futures_util::future::join_all((0..8).map(|_| app.post(&uri, &hourly, json!({})))).await;
    let accepted = answers
        .iter()
        .filter(|a| a.status == StatusCode::ACCEPTED)
        .count();
    assert_eq!(accepted, 3, "exactly the budget is accepted");
    assert_eq!(app.count("runs").await, 3);
    let refused = answers
        .iter()
        .find(|a| a.status == StatusCode::TOO_MANY_REQUESTS)
        .expect("the rest are refused");
    assert_eq!(refused.json()["code"], "over_budget");
    assert_eq!(refused.json()["budget"]["name"], "triggers_per_hour");
    assert_eq!(refused.json()["budget"]["limit"], 3);
    let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (3500..=3601).contains(&retry_after),
        "frees in about an hour: {retry_after}"
    );
    let listed = app
        .get(&format!("/api/api_keys/{}", key["id"]), &app.admin)
        .await
        .json();
    assert_eq!(listed["usage"]["triggers_last_hour"], 3);

    // At most one unfinished run: the second waits for the first to end (409, no Retry-After).
    let key = create_key(
        &app,
        json!({"name": "one-at-a-time", "role": "operator", "budget": {"max_unfinished_runs": 1}}),
    )
    .await;
    let single = key["secret"].as_str().unwrap().to_owned();
    let first = app.post(&uri, &single, json!({})).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let second = app.post(&uri, &single, json!({})).await;
    assert_eq!(second.status, StatusCode::CONFLICT, "{}", second.text());
    assert_eq!(second.json()["budget"]["name"], "max_unfinished_runs");
    assert!(second.header("retry-after").is_none());
    let first_id = first.json()["id"].as_i64().unwrap();
    assert!(
        app.run_action(first_id, "cancel", &app.admin)
            .await
            .status
            .is_success()
    );
    assert_eq!(
        app.post(&uri, &single, json!({})).await.status,
        StatusCode::ACCEPTED
    );
}
