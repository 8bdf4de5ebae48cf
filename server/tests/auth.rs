//! Identity through the real router: 401 without a credential, 403 for a weaker role,
//! keys stored only as hashes, browser sign-in with an `HttpOnly` cookie, pages behind it.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{TestApp, session_cookie, sign_in_request};
use serde_json::json;
use sqlx::PgPool;

/// Every API route with a body that would succeed for a strong enough role.
fn routes(pipeline: i64) -> Vec<(&'static str, String, Option<serde_json::Value>)> {
    vec![
        ("GET", "/api/pipelines/".into(), None),
        ("GET", "/api/pipelines".into(), None),
        ("GET", format!("/api/pipelines/{pipeline}"), None),
        ("GET", format!("/api/pipelines/{pipeline}/stages"), None),
        ("POST", "/api/pipelines/".into(), Some(json!({"name": "new"}))),
        ("POST", format!("/api/trigger/{pipeline}"), None),
        ("POST", format!("/api/pipelines/{pipeline}/runs"), Some(json!({}))),
        ("GET", "/api/runs/1".into(), None),
        (
            "POST",
            "/api/status-update/".into(),
            Some(json!({"pipeline_id": pipeline, "status": "running"})),
        ),
        (
            "POST",
            "/api/api_keys/".into(),
            Some(json!({"name": "k", "role": "viewer"})),
        ),
        ("POST", "/api/api_keys/filter".into(), Some(json!({}))),
        ("POST", "/api/api_keys/count".into(), None),
        ("GET", "/api/api_keys/1".into(), None),
        (
            "POST",
            "/api/audit_events/filter".into(),
            Some(json!({"limit": 5})),
        ),
        ("POST", "/api/audit_events/count".into(), None),
    ]
}

#[sqlx::test(migrations = "../migrations")]
async fn every_api_route_needs_a_credential(db: PgPool) {
    let app = TestApp::new(db).await;
    let id = app.pipeline(json!({"name": "p"})).await;
    for (method, uri, body) in routes(id) {
        for key in [
            None,
            Some("fdk_0000000000000000000000000000000000000000000000000000000000000000"),
            Some("fdk_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
            Some("garbage"),
        ] {
            let answer = app.call(method, &uri, key, body.clone()).await;
            assert_eq!(
                answer.status,
                StatusCode::UNAUTHORIZED,
                "{method} {uri} with {key:?}"
            );
            assert_eq!(answer.json()["code"], "unauthorized");
            assert_eq!(answer.header("www-authenticate"), Some("Bearer"));
        }
    }
    let refused: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE outcome = 'denied'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(refused > 0, "refused bearer credentials are audited");
}

#[sqlx::test(migrations = "../migrations")]
async fn roles_gate_every_operation(db: PgPool) {
    let app = TestApp::new(db).await;
    let id = app.pipeline(json!({"name": "p"})).await;
    // (route index, least role that may call it)
    let needed = [
        "viewer", "viewer", "viewer", "viewer", "admin", "operator", "operator", "viewer", "operator",
        "admin", "admin", "admin", "admin", "admin", "admin",
    ];
    // The status update needs a run to apply to.
    app.call("POST", &format!("/api/trigger/{id}"), Some(&app.admin), None)
        .await;
    for ((method, uri, body), least) in routes(id).into_iter().zip(needed) {
        for (role, key) in [
            ("viewer", &app.viewer),
            ("operator", &app.operator),
            ("admin", &app.admin),
        ] {
            let allowed = match least {
                "viewer" => true,
                "operator" => role != "viewer",
                _ => role == "admin",
            };
            let answer = app.call(method, &uri, Some(key), body.clone()).await;
            if allowed {
                assert!(
                    answer.status.is_success(),
                    "{role} {method} {uri}: {} {}",
                    answer.status,
                    answer.text()
                );
            } else {
                assert_eq!(answer.status, StatusCode::FORBIDDEN, "{role} {method} {uri}");
                assert_eq!(answer.json()["code"], "forbidden");
            }
        }
    }
    // Every refusal for a role is in the audit trail, with what was asked.
    let target: String = sqlx::query_scalar(
        "SELECT target FROM audit_events WHERE action = 'auth.forbidden' AND actor = 'api-key:test-viewer' ORDER BY id LIMIT 1",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(target, "POST /api/pipelines/");
    let refused_viewer = needed.iter().filter(|least| **least != "viewer").count();
    assert_eq!(
        app.forbidden_audited("api-key:test-viewer").await,
        i64::try_from(refused_viewer).unwrap()
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn revoked_and_expired_keys_stop_working(db: PgPool) {
    let app = TestApp::new(db).await;
    assert_eq!(
        app.get("/api/pipelines/", &app.viewer).await.status,
        StatusCode::OK
    );
    sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE name = 'test-viewer'")
        .execute(&app.db)
        .await
        .unwrap();
    assert_eq!(
        app.get("/api/pipelines/", &app.viewer).await.status,
        StatusCode::UNAUTHORIZED
    );
    sqlx::query("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE name = 'test-operator'")
        .execute(&app.db)
        .await
        .unwrap();
    assert_eq!(
        app.get("/api/pipelines/", &app.operator).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn keys_are_stored_only_as_hashes(db: PgPool) {
    let app = TestApp::new(db).await;
    let dump: String = sqlx::query_scalar("SELECT string_agg(t::text, ' ') FROM api_keys t")
        .fetch_one(&app.db)
        .await
        .unwrap();
    for key in [&app.viewer, &app.operator, &app.admin] {
        assert!(!dump.contains(key.as_str()), "a clear key is in the database");
        assert!(!dump.contains(&key[4..]), "a clear key's body is in the database");
    }
}

fn page(uri: &str, cookie: Option<&str>) -> Request<Body> {
    let mut builder = Request::get(uri);
    if let Some(cookie) = cookie {
        builder = builder.header("cookie", cookie);
    }
    builder.body(Body::empty()).unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn pages_redirect_to_sign_in_and_render_after_it(db: PgPool) {
    let app = TestApp::new(db).await;
    let id = app.pipeline(json!({"name": "Quarterly revenue"})).await;

    let anonymous = app.send(page("/", None)).await;
    assert!(anonymous.status.is_redirection());
    assert_eq!(anonymous.header("location"), Some("/login?next=/"));
    let login = app.send(page("/login", None)).await;
    assert_eq!(login.status, StatusCode::OK);
    assert!(login.text().contains("Sign in"));

    let refused = app.send(sign_in_request("fdk_wrong", None)).await;
    assert!(
        refused.header("set-cookie").is_none(),
        "no cookie for a wrong key"
    );

    let cookie = session_cookie(&app, &app.viewer).await;
    let dashboard = app.send(page("/", Some(&cookie))).await;
    assert_eq!(dashboard.status, StatusCode::OK);
    let html = dashboard.text();
    assert!(
        html.contains("Quarterly revenue"),
        "the dashboard is server-rendered with its data"
    );
    assert!(
        html.contains("/pkg/flowdeck.js") || html.contains("flowdeck"),
        "hydration script is linked"
    );

    let detail = app.send(page(&format!("/pipelines/{id}"), Some(&cookie))).await;
    assert_eq!(detail.status, StatusCode::OK);
    assert!(detail.text().contains("Data Ingestion"));
    assert!(!detail.text().contains("▶ Run"), "viewers get no Run button");

    let operator = session_cookie(&app, &app.operator).await;
    assert!(
        app.send(page(&format!("/pipelines/{id}"), Some(&operator)))
            .await
            .text()
            .contains("▶ Run")
    );

    assert_eq!(
        app.send(page("/pipelines/424242", Some(&cookie))).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.send(page("/no/such/page", Some(&cookie))).await.status,
        StatusCode::NOT_FOUND
    );
    // The cookie authenticates API reads too.
    assert_eq!(
        app.send(page("/api/pipelines/", Some(&cookie))).await.status,
        StatusCode::OK
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn cookie_requests_from_another_site_cannot_change_anything(db: PgPool) {
    let app = TestApp::new(db).await;
    let id = app.pipeline(json!({"name": "p"})).await;
    let cookie = session_cookie(&app, &app.operator).await;
    let before = app.footprint_but_audit().await;
    let forged = Request::post(format!("/api/trigger/{id}"))
        .header("cookie", &cookie)
        .header("host", "127.0.0.1:8000")
        .header("origin", "http://evil.test")
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.send(forged).await.status, StatusCode::FORBIDDEN);
    assert_eq!(app.footprint_but_audit().await, before);
    assert_eq!(
        app.forbidden_audited("api-key:test-operator").await,
        1,
        "the forgery is audited"
    );
    let same_site = Request::post(format!("/api/trigger/{id}"))
        .header("cookie", &cookie)
        .header("host", "127.0.0.1:8000")
        .header("origin", "http://127.0.0.1:8000")
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.send(same_site).await.status, StatusCode::ACCEPTED);
}

#[sqlx::test(migrations = "../migrations")]
async fn sign_out_revokes_the_session(db: PgPool) {
    let app = TestApp::new(db).await;
    let cookie = session_cookie(&app, &app.viewer).await;
    assert_eq!(
        app.send(page("/api/pipelines/", Some(&cookie))).await.status,
        StatusCode::OK
    );
    let out = Request::post("/sfn/sign_out")
        .header("cookie", &cookie)
        .header("host", "127.0.0.1:8000")
        .header("origin", "http://127.0.0.1:8000")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::empty())
        .unwrap();
    let answer = app.send(out).await;
    assert!(
        answer
            .header("set-cookie")
            .is_some_and(|c| c.contains("Max-Age=0")),
        "{:?}",
        answer.headers
    );
    assert_eq!(
        app.send(page("/api/pipelines/", Some(&cookie))).await.status,
        StatusCode::UNAUTHORIZED
    );
}

/// The nonce a page's Content Security Policy allows scripts with.
fn policy_nonce(answer: &common::Answer) -> String {
    let policy = answer
        .header("content-security-policy")
        .expect("a page has a policy");
    policy
        .split("'nonce-")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .expect("the policy names a nonce")
        .to_owned()
}

#[sqlx::test(migrations = "../migrations")]
async fn every_response_carries_security_headers_and_pages_a_fresh_script_nonce(db: PgPool) {
    let app = TestApp::new(db).await;
    let cookie = session_cookie(&app, &app.viewer).await;

    let first = app.send(page("/", Some(&cookie))).await;
    let second = app.send(page("/", Some(&cookie))).await;
    let nonce = policy_nonce(&first);
    assert!(nonce.len() >= 16, "{nonce}");
    assert_ne!(nonce, policy_nonce(&second), "a new nonce for each response");
    assert_eq!(
        first.header("cache-control"),
        Some("no-store"),
        "no cache keeps a page"
    );
    let policy = first.header("content-security-policy").unwrap();
    for directive in [
        "'wasm-unsafe-eval'",
        "frame-ancestors 'none'",
        "object-src 'none'",
    ] {
        assert!(policy.contains(directive), "{policy}");
    }
    assert!(
        !policy.contains("unsafe-inline") && !policy.contains("'unsafe-eval'"),
        "{policy}"
    );
    // Every script on the page carries this response's nonce, and nothing else runs.
    let html = first.text();
    let scripts = html.matches("<script").count();
    assert!(scripts > 0);
    assert_eq!(
        html.matches(&format!("nonce=\"{nonce}\"")).count(),
        scripts,
        "{html}"
    );

    // JSON, refusals and sign-in redirects too.
    for answer in [
        app.get("/api/pipelines/", &app.viewer).await,
        app.get("/api/pipelines/", "fdk_wrong").await,
        app.send(page("/", None)).await,
    ] {
        assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(answer.header("x-frame-options"), Some("DENY"));
        assert_eq!(answer.header("referrer-policy"), Some("same-origin"));
        let policy = answer.header("content-security-policy").unwrap_or_default();
        assert!(policy.starts_with("default-src 'none'"), "{policy}");
        assert!(
            answer.header("strict-transport-security").is_none(),
            "plain HTTP here"
        );
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn guessing_keys_is_answered_429_and_triggers_are_limited_per_caller(db: PgPool) {
    let budget = std::num::NonZeroU32::new(3).unwrap();
    let app = TestApp::with(db, |b| {
        b.budgets(app::auth::limits::Budgets {
            auth_failures_per_minute: budget,
            triggers_per_minute: budget,
            sign_ins_per_minute: budget,
        })
    })
    .await;
    let pipeline = app.pipeline(json!({"name": "p"})).await;
    for _ in 0..3 {
        assert_eq!(
            app.start_run_as(pipeline, &app.operator).await,
            StatusCode::ACCEPTED
        );
    }
    assert_eq!(
        app.start_run_as(pipeline, &app.operator).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        app.start_run_as(pipeline, &app.admin).await,
        StatusCode::ACCEPTED,
        "another caller's budget"
    );
    assert_eq!(app.count("runs").await, 4, "a limited trigger writes nothing");

    let wrong = format!("fdk_{}", "0".repeat(64));
    for _ in 0..3 {
        assert_eq!(
            app.get("/api/pipelines/", &wrong).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let limited = app.get("/api/pipelines/", &wrong).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.json()["code"], "rate_limited");
    let wait: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=20).contains(&wait), "{wait}");
    let limited_sign_in = app.send(sign_in_request(&wrong, None)).await;
    assert_eq!(limited_sign_in.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        limited_sign_in
            .header("retry-after")
            .is_some_and(|s| s.parse::<u64>().is_ok()),
        "the sign-in page's 429 says when to retry: {:?}",
        limited_sign_in.headers
    );
    // Only failures are limited: a key that verifies works, and signs in.
    assert_eq!(
        app.get("/api/pipelines/", &app.viewer).await.status,
        StatusCode::OK
    );
    session_cookie(&app, &app.viewer).await;
    let denied: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE action = 'auth.denied' AND outcome = 'denied'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(
        denied, 1,
        "refusals from one address within a minute are one row (the rest are counted on)"
    );
    let anonymous = app.call("GET", "/api/pipelines/", None, None).await;
    assert_eq!(
        anonymous.status,
        StatusCode::UNAUTHORIZED,
        "no credential: the usual 401"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn every_page_answers_each_role_as_the_table_says(db: PgPool) {
    let app = TestApp::new(db).await;
    let id = app.pipeline(json!({"name": "p"})).await;
    let run = app.start_run(id, json!({})).await["id"].as_i64().unwrap();
    let hook = app
        .post(
            "/api/webhooks/",
            &app.admin,
            json!({"url": "https://hooks.invalid/x", "event_types": ["run.failed"]}),
        )
        .await
        .json()["id"]
        .as_i64()
        .unwrap();
    // (page, least role that may see it); weaker roles get the 403 page.
    let pages = [
        ("/".to_owned(), "viewer"),
        (format!("/pipelines/{id}"), "viewer"),
        (format!("/runs/{run}"), "viewer"),
        ("/pipelines/new".to_owned(), "admin"),
        ("/admin/api-keys".to_owned(), "admin"),
        ("/audit".to_owned(), "admin"),
        ("/admin/webhooks".to_owned(), "admin"),
        (format!("/admin/webhooks/{hook}"), "admin"),
    ];
    let cookies = [
        ("viewer", session_cookie(&app, &app.viewer).await),
        ("operator", session_cookie(&app, &app.operator).await),
        ("admin", session_cookie(&app, &app.admin).await),
    ];
    for (uri, least) in &pages {
        for (role, cookie) in &cookies {
            let allowed = match *least {
                "viewer" => true,
                "operator" => *role != "viewer",
                _ => *role == "admin",
            };
            let answer = app.send(page(uri, Some(cookie))).await;
            let expected = if allowed {
                StatusCode::OK
            } else {
                StatusCode::FORBIDDEN
            };
            assert_eq!(answer.status, expected, "{role} {uri}");
        }
        // Signed out, every page sends the browser to sign in.
        let answer = app.send(page(uri, None)).await;
        assert!(
            answer.status.is_redirection(),
            "{uri} signed out: {}",
            answer.status
        );
    }
    // Admins find the admin pages in the navigation; others do not.
    let app = &app;
    let nav = |cookie: &str| {
        let cookie = cookie.to_owned();
        async move {
            app.send(page("/", Some(&cookie)))
                .await
                .text()
                .contains(r#"href="/audit""#)
        }
    };
    assert!(nav(&cookies[2].1).await);
    assert!(!nav(&cookies[1].1).await);
}

/// The least role of every operation in the OpenAPI document: `None` for public ones,
/// `Some("callback")` is not a role but marks what a run's callback credential may call.
const ROLE_BY_ROUTE: &[(&str, &str, Option<&str>)] = &[
    ("get", "/api/health", None),
    ("get", "/api/ready", None),
    ("get", "/api/pipelines/", Some("viewer")),
    ("post", "/api/pipelines/", Some("admin")),
    ("get", "/api/pipelines/{id}", Some("viewer")),
    ("patch", "/api/pipelines/{id}", Some("admin")),
    ("delete", "/api/pipelines/{id}", Some("admin")),
    ("get", "/api/pipelines/{id}/stages", Some("viewer")),
    ("post", "/api/pipelines/{id}/runs", Some("operator")),
    ("post", "/api/trigger/{id}", Some("operator")),
    ("get", "/api/runs/{id}", Some("viewer")),
    ("get", "/api/runs/{id}/logs", Some("viewer")),
    ("get", "/api/runs/{id}/logs/download", Some("viewer")),
    ("post", "/api/runs/{id}/cancel", Some("operator")),
    ("post", "/api/runs/{id}/retry", Some("operator")),
    ("post", "/api/status-update/", Some("operator")),
    ("get", "/api/events", Some("viewer")),
    ("post", "/api/pipelines/filter", Some("viewer")),
    ("post", "/api/pipelines/count", Some("viewer")),
    ("post", "/api/runs/filter", Some("viewer")),
    ("post", "/api/runs/count", Some("viewer")),
    ("post", "/api/api_keys/", Some("admin")),
    ("post", "/api/api_keys/filter", Some("admin")),
    ("post", "/api/api_keys/count", Some("admin")),
    ("get", "/api/api_keys/{id}", Some("admin")),
    ("delete", "/api/api_keys/{id}", Some("admin")),
    ("patch", "/api/api_keys/{id}", Some("admin")),
    ("post", "/api/api_keys/{id}/rotate", Some("admin")),
    ("post", "/api/audit_events/filter", Some("admin")),
    ("post", "/api/audit_events/count", Some("admin")),
    ("get", "/api/audit_events/retention", Some("admin")),
    ("put", "/api/audit_events/retention", Some("admin")),
    ("post", "/api/webhooks/", Some("admin")),
    ("post", "/api/webhooks/filter", Some("admin")),
    ("post", "/api/webhooks/count", Some("admin")),
    ("get", "/api/webhooks/{id}", Some("admin")),
    ("patch", "/api/webhooks/{id}", Some("admin")),
    ("delete", "/api/webhooks/{id}", Some("admin")),
    ("post", "/api/webhooks/{id}/rotate", Some("admin")),
    ("get", "/api/webhooks/{id}/deliveries", Some("admin")),
    ("post", "/api/webhook_deliveries/{id}/resend", Some("admin")),
];

/// The example the document gives for a schema (following `$ref`, `oneOf`, `anyOf`).
fn example_of(doc: &serde_json::Value, schema: &serde_json::Value) -> Option<serde_json::Value> {
    if let Some(example) = schema.get("example") {
        return Some(example.clone());
    }
    if let Some(reference) = schema.get("$ref").and_then(|r| r.as_str()) {
        let name = reference.rsplit('/').next()?;
        return example_of(doc, &doc["components"]["schemas"][name]);
    }
    ["oneOf", "anyOf"]
        .iter()
        .filter_map(|k| schema.get(*k)?.as_array())
        .flatten()
        .find_map(|s| example_of(doc, s))
}

/// Only the status: an event stream never ends.
async fn status_of(app: &TestApp, request: Request<Body>) -> StatusCode {
    use tower::ServiceExt;
    app.router.clone().oneshot(request).await.unwrap().status()
}

#[sqlx::test(migrations = "../migrations")]
async fn every_documented_operation_answers_each_role_as_the_table_says(db: PgPool) {
    let app = TestApp::new(db).await;
    let doc = app.send(page("/api/openapi.json", None)).await.json();
    let mut documented: Vec<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|m| ["get", "post", "put", "patch", "delete"].contains(&m.as_str()))
                .map(move |m| (m.clone(), path.clone()))
        })
        .collect();
    documented.sort();
    let mut table: Vec<(String, String)> = ROLE_BY_ROUTE
        .iter()
        .map(|(m, p, _)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    table.sort();
    assert_eq!(
        documented, table,
        "every documented operation has a row, and every row an operation"
    );

    let pipeline = app.pipeline(json!({"name": "walked"})).await;
    let run = app.start_run(pipeline, json!({})).await["id"].as_i64().unwrap();
    let callback: String = sqlx::query_scalar("SELECT callback_token FROM run_outbox WHERE run_id = $1")
        .bind(run)
        .fetch_one(&app.db)
        .await
        .unwrap();
    let spare_key = app
        .post(
            "/api/api_keys/",
            &app.admin,
            json!({"name": "spare", "role": "viewer"}),
        )
        .await
        .json()["id"]
        .as_i64()
        .unwrap();
    let callers = [
        ("nobody", None),
        ("callback", Some(callback.as_str())),
        ("viewer", Some(app.viewer.as_str())),
        ("operator", Some(app.operator.as_str())),
        ("admin", Some(app.admin.as_str())),
    ];
    for (method, path, least) in ROLE_BY_ROUTE {
        let operation = &doc["paths"][*path][*method];
        let id = if path.starts_with("/api/runs/") {
            run
        } else if path.starts_with("/api/api_keys/") {
            spare_key
        } else {
            pipeline
        };
        let uri = path.replace("{id}", &id.to_string());
        let mut body = operation["requestBody"]["content"]["application/json"]["schema"]
            .as_object()
            .map(|schema| {
                example_of(&doc, &serde_json::Value::Object(schema.clone())).expect("a body example")
            });
        // The example reports on a pipeline's latest run; the callback credential is for `run`.
        if *path == "/api/status-update/" {
            body.as_mut().expect("a status update body")["run_id"] = json!(run);
        }
        for (caller, key) in callers {
            let mut request = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(&uri);
            if let Some(key) = key {
                request = request.header("authorization", format!("Bearer {key}"));
            }
            let request = match &body {
                Some(body) => request
                    .header("content-type", "application/json")
                    .body(Body::from(body.to_string())),
                None => request.body(Body::empty()),
            }
            .unwrap();
            let status = status_of(&app, request).await;
            let allowed = match (*least, caller) {
                (None, _) => true,
                (Some(_), "nobody") => false,
                // A callback credential reports on its run and does nothing else.
                (Some(_), "callback") => *path == "/api/status-update/",
                (Some("viewer"), _) => true,
                (Some("operator"), role) => role != "viewer",
                (Some(_), role) => role == "admin",
            };
            let context = format!("{caller} {} {uri}: {status}", method.to_uppercase());
            if allowed {
                assert!(
                    status != StatusCode::UNAUTHORIZED
                        && status != StatusCode::FORBIDDEN
                        && !status.is_server_error(),
                    "{context}"
                );
            } else if caller == "nobody" {
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{context}");
            } else {
                assert_eq!(status, StatusCode::FORBIDDEN, "{context}");
            }
        }
    }
}
