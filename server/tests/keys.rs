//! API key management, the audit trail and the forgery check, through the real router.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::TestApp;
use serde_json::{Value, json};
use sqlx::PgPool;

async fn create_key(app: &TestApp, body: Value) -> Value {
    let answer = app.post("/api/api_keys/", &app.admin, body).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text());
    answer.json()
}

async fn works(app: &TestApp, key: &str) -> bool {
    let status = app.get("/api/pipelines/", key).await.status;
    assert!(
        status == StatusCode::OK || status == StatusCode::UNAUTHORIZED,
        "{status}"
    );
    status == StatusCode::OK
}

async fn audit_actions(app: &TestApp, filter: Value) -> Vec<String> {
    let answer = app.post("/api/audit_events/filter", &app.admin, filter).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    answer
        .json()
        .as_array()
        .expect("an array")
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect()
}

#[sqlx::test(migrations = "../migrations")]
async fn keys_are_created_shown_once_rotated_with_overlap_and_revoked(db: PgPool) {
    let app = TestApp::new(db).await;
    let created = create_key(&app, json!({"name": "ci-bot", "role": "operator"})).await;
    let id = created["id"].as_i64().unwrap();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(app::auth::secrets::looks_like_api_key(&secret), "{secret}");
    assert_eq!(created["state"], "active");
    assert_eq!(created["role"], "operator");
    assert_eq!(created["created_by"], "api-key:test-admin");
    assert!(created["last_used_at"].is_null());
    assert!(works(&app, &secret).await);

    // Reading a key never shows its secret; it does show when it was last used.
    let read = app.get(&format!("/api/api_keys/{id}"), &app.admin).await.json();
    assert!(
        read.get("secret").is_none() && read.get("key_hash").is_none(),
        "{read}"
    );
    assert!(read["last_used_at"].is_string(), "{read}");
    assert_eq!(read["key_prefix"].as_str().unwrap(), &secret[..12]);

    // Rotation: a new key at once, the old one still working during the overlap.
    let answer = app
        .post(
            &format!("/api/api_keys/{id}/rotate"),
            &app.admin,
            json!({"overlap_minutes": 5}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text());
    let successor = answer.json();
    let new_id = successor["id"].as_i64().unwrap();
    let new_secret = successor["secret"].as_str().unwrap().to_owned();
    assert_eq!(successor["rotated_from"], id);
    assert_eq!(successor["name"], "ci-bot");
    assert_eq!(successor["role"], "operator");
    assert!(works(&app, &secret).await && works(&app, &new_secret).await);
    let old = app.get(&format!("/api/api_keys/{id}"), &app.admin).await.json();
    let ends: chrono::DateTime<chrono::Utc> = serde_json::from_value(old["expires_at"].clone()).unwrap();
    let left = ends - chrono::Utc::now();
    assert!(
        left > chrono::Duration::minutes(4) && left <= chrono::Duration::minutes(5),
        "{left}"
    );
    // When the overlap is over, only the new key works.
    sqlx::query("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1")
        .bind(id)
        .execute(&app.db)
        .await
        .unwrap();
    assert!(!works(&app, &secret).await);
    assert!(works(&app, &new_secret).await);
    let rotate_again = app
        .post(&format!("/api/api_keys/{id}/rotate"), &app.admin, json!({}))
        .await;
    assert_eq!(
        rotate_again.status,
        StatusCode::CONFLICT,
        "an expired key is not rotated"
    );

    // Revocation is immediate and idempotent; an unknown key is 404.
    let delete = |id: i64| {
        let uri = format!("/api/api_keys/{id}");
        let app = &app;
        async move { app.call("DELETE", &uri, Some(&app.admin), None).await }
    };
    assert_eq!(delete(new_id).await.status, StatusCode::NO_CONTENT);
    assert!(!works(&app, &new_secret).await);
    assert_eq!(delete(new_id).await.status, StatusCode::NO_CONTENT);
    assert_eq!(delete(999_999).await.status, StatusCode::NOT_FOUND);

    // No request can revoke or rotate away the key it is authenticated with.
    let own: i64 = sqlx::query_scalar("SELECT id FROM api_keys WHERE name = 'test-admin'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(delete(own).await.status, StatusCode::CONFLICT);
    let rotate_own = app
        .post(&format!("/api/api_keys/{own}/rotate"), &app.admin, json!({}))
        .await;
    assert_eq!(rotate_own.status, StatusCode::CONFLICT);
    assert!(works(&app, &app.admin).await);

    // Only admins manage keys.
    for key in [&app.viewer, &app.operator] {
        let answer = app
            .call("DELETE", &format!("/api/api_keys/{id}"), Some(key), None)
            .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN);
        let answer = app
            .post(&format!("/api/api_keys/{id}/rotate"), key, json!({}))
            .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN);
    }

    // Each change is in the trail, once, with the admin as actor.
    let actions = audit_actions(
        &app,
        json!({"audit_events": {"action": {"like_": "api_key."}, "actor": {"eq_": "api-key:test-admin"}},
               "sort": "OCCURRED_ASC"}),
    )
    .await;
    // Revoking a revoked key changed nothing, so it left no second line.
    assert_eq!(actions, ["api_key.create", "api_key.rotate", "api_key.revoke"]);
}

#[sqlx::test(migrations = "../migrations")]
async fn bad_key_requests_name_the_field_and_write_nothing(db: PgPool) {
    let app = TestApp::new(db).await;
    let before = (app.count("api_keys").await, app.count("audit_events").await);
    for (body, field) in [
        (json!({"role": "viewer"}), "name"),
        (json!({"name": "  ", "role": "viewer"}), "name"),
        (json!({"name": "x".repeat(101), "role": "viewer"}), "name"),
        (json!({"name": "k", "role": "root"}), "role"),
        (
            json!({"name": "k", "role": "viewer", "expires_at": "soon"}),
            "expires_at",
        ),
        (json!({"name": "k", "role": "viewer", "secret": "mine"}), "secret"),
    ] {
        let answer = app.post("/api/api_keys/", &app.admin, body.clone()).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(answer.json()["field"], field, "{body}: {}", answer.text());
    }
    for (body, field) in [
        (json!({"limit": 201}), "limit"),
        (json!({"offset": -1}), "offset"),
        (json!({"sort": "SECRET_ASC"}), "sort"),
        (
            json!({"api_keys": {"name": {"startswith_": "a"}}}),
            "api_keys.name.startswith_",
        ),
        (
            json!({"api_keys": {"state": {"like_": "act"}}}),
            "api_keys.state.like_",
        ),
        (
            json!({"api_keys": {"state": {"any_": ["sleeping"]}}}),
            "api_keys.state.any_[0]",
        ),
        (json!({"api_keys": [null]}), "api_keys"),
    ] {
        let answer = app.post("/api/api_keys/filter", &app.admin, body.clone()).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(answer.json()["field"], field, "{body}: {}", answer.text());
    }
    let answer = app
        .post(
            "/api/api_keys/1/rotate",
            &app.admin,
            json!({"overlap_minutes": 100_000}),
        )
        .await;
    assert_eq!(answer.json()["field"], "overlap_minutes");
    // A key cannot be born expired: well-formed, but it clashes with the clock.
    let past = json!({"name": "k", "role": "viewer", "expires_at": "2001-01-01T00:00:00Z"});
    let answer = app.post("/api/api_keys/", &app.admin, past).await;
    assert_eq!(answer.status, StatusCode::CONFLICT, "{}", answer.text());
    assert_eq!(
        (app.count("api_keys").await, app.count("audit_events").await),
        before
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn keys_and_audit_events_filter_count_and_sort(db: PgPool) {
    let app = TestApp::new(db).await;
    let a = create_key(&app, json!({"name": "alpha", "role": "viewer"})).await;
    create_key(
        &app,
        json!({"name": "beta", "role": "admin", "expires_at": "2099-01-01T00:00:00Z"}),
    )
    .await;
    app.call(
        "DELETE",
        &format!("/api/api_keys/{}", a["id"]),
        Some(&app.admin),
        None,
    )
    .await;

    let names = |answer: common::Answer| -> Vec<String> {
        answer
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let filter = |body: Value| app.post("/api/api_keys/filter", &app.admin, body);
    assert_eq!(
        names(filter(json!({"api_keys": {"state": {"any_": ["revoked"]}}})).await),
        ["alpha"]
    );
    assert_eq!(
        names(filter(json!({"api_keys": {"name": {"like_": "ET"}, "expires": {"is_null_": false}}})).await),
        ["beta"]
    );
    assert_eq!(
        names(filter(json!({"api_keys": {"name": {"any_": ["alpha", "beta"]}}, "sort": "NAME_ASC"})).await),
        ["alpha", "beta"]
    );
    assert_eq!(
        names(filter(json!({"sort": "NAME_ASC", "limit": 1, "offset": 1})).await),
        ["beta"]
    );
    assert_eq!(
        names(filter(json!({"api_keys": {"name": {"any_": ["alpha", "beta"]}}, "sort": "NAME_DESC"})).await),
        ["beta", "alpha"]
    );
    let count = app
        .post(
            "/api/api_keys/count",
            &app.admin,
            json!({"api_keys": {"state": {"any_": ["active"]}}}),
        )
        .await;
    assert_eq!(count.json(), json!(4), "three test keys and beta");

    // The trail: newest first by default, filtered by outcome and time, counted bare.
    app.get("/api/pipelines/", "fdk_wrong").await;
    let events = app
        .post(
            "/api/audit_events/filter",
            &app.admin,
            json!({"audit_events": {"outcome": {"any_": ["denied"]}}}),
        )
        .await
        .json();
    let denied = &events.as_array().unwrap()[0];
    assert_eq!(denied["action"], "auth.denied");
    assert_eq!(denied["actor"], "anonymous");
    assert!(denied["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    let all = audit_actions(&app, json!({})).await;
    assert_eq!(all[0], "auth.denied", "newest first");
    let count_after = |after: &str| {
        app.post(
            "/api/audit_events/count",
            &app.admin,
            json!({"audit_events": {"occurred": {"after_": after}}}),
        )
    };
    assert_eq!(count_after("2000-01-01T00:00:00Z").await.json(), json!(all.len()));
    assert_eq!(
        count_after("2100-01-01T00:00:00Z").await.json(),
        json!(0),
        "after_ excludes what came before"
    );
    let none = audit_actions(
        &app,
        json!({"audit_events": {"occurred": {"before_": "2000-01-01T00:00:00Z"}}}),
    )
    .await;
    assert!(none.is_empty());
}

#[sqlx::test(migrations = "../migrations")]
async fn the_audit_trail_cannot_be_changed_or_removed(db: PgPool) {
    let app = TestApp::new(db).await;
    create_key(&app, json!({"name": "k", "role": "viewer"})).await;
    let before = app.count("audit_events").await;
    assert!(before > 0);
    for statement in [
        "UPDATE audit_events SET actor = 'someone else'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
    ] {
        let refused = sqlx::query(statement).execute(&app.db).await;
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.to_string().contains("append-only")),
            "{statement}: {refused:?}"
        );
    }
    assert_eq!(app.count("audit_events").await, before);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_cookie_request_without_origin_needs_the_pages_csrf_token(db: PgPool) {
    let app = TestApp::new(db).await;
    let id = app.pipeline(json!({"name": "p"})).await;
    let cookie = common::session_cookie(&app, &app.operator).await;
    let before = app.footprint_but_audit().await;
    let bare = Request::post(format!("/api/trigger/{id}"))
        .header("cookie", &cookie)
        .body(Body::empty())
        .unwrap();
    let answer = app.send(bare).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.text());
    assert_eq!(app.footprint_but_audit().await, before);
    assert_eq!(app.forbidden_audited("api-key:test-operator").await, 1);

    // A page gives the token to whoever can read it: the signed-in browser.
    let page = app
        .send(
            Request::get("/")
                .header("cookie", &cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .text();
    let token = page
        .split(r#"<meta name="csrf-token" content=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page carries a csrf token")
        .to_owned();
    let with_token = |token: &str| {
        Request::post(format!("/api/trigger/{id}"))
            .header("cookie", &cookie)
            .header("x-csrf-token", token)
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(
        app.send(with_token("0".repeat(64).as_str())).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(app.send(with_token(&token)).await.status, StatusCode::ACCEPTED);
    // Nor can another site sign the browser in as someone else (login CSRF).
    let sessions = app.count("sessions").await;
    let forged_login = app
        .send(common::sign_in_request(&app.viewer, Some("http://evil.test")))
        .await;
    assert_eq!(forged_login.status, StatusCode::FORBIDDEN);
    assert!(forged_login.header("set-cookie").is_none());
    assert_eq!(app.count("sessions").await, sessions);
    // Bearer callers are not browsers: no cookie, no forgery to check.
    assert_eq!(
        app.call("POST", &format!("/api/trigger/{id}"), Some(&app.operator), None)
            .await
            .status,
        StatusCode::ACCEPTED
    );
}

fn from_peer(method: &str, uri: &str, peer: &str, user: &str, groups: &str) -> Request<Body> {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header("x-forwarded-user", user)
        .header("x-forwarded-groups", groups)
        .header("host", "flowdeck.test")
        .header("origin", "http://flowdeck.test")
        .body(Body::empty())
        .unwrap();
    let addr: std::net::SocketAddr = format!("{peer}:40000").parse().unwrap();
    request.extensions_mut().insert(axum::extract::ConnectInfo(addr));
    request
}

#[sqlx::test(migrations = "../migrations")]
async fn a_trusted_proxy_names_the_user_and_nobody_else_can(db: PgPool) {
    let app = TestApp::with(db, |b| {
        b.proxy(Some(app::auth::proxy::ProxyConfig {
            trusted: vec!["127.0.0.1".parse().unwrap()],
            user_header: "x-forwarded-user".into(),
            groups_header: "x-forwarded-groups".into(),
            role_map: std::collections::HashMap::from([("data-eng".to_owned(), app::caller::Role::Operator)]),
        }))
    })
    .await;
    let id = app.pipeline(json!({"name": "p"})).await;
    let trigger = format!("/api/trigger/{id}");
    let proxied = app
        .send(from_peer(
            "POST",
            &trigger,
            "127.0.0.1",
            "alice",
            "staff,data-eng",
        ))
        .await;
    assert_eq!(proxied.status, StatusCode::ACCEPTED, "{}", proxied.text());
    let actor: String = sqlx::query_scalar("SELECT actor FROM audit_events WHERE action = 'run.trigger'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(actor, "proxy:alice");
    // The same headers from anywhere but the proxy name nobody.
    let spoofed = app
        .send(from_peer("POST", &trigger, "10.9.9.9", "alice", "data-eng"))
        .await;
    assert_eq!(spoofed.status, StatusCode::UNAUTHORIZED);
    // A user whose groups map to no role may do nothing.
    let roleless = app
        .send(from_peer("GET", "/api/pipelines/", "127.0.0.1", "bob", "staff"))
        .await;
    assert_eq!(roleless.status, StatusCode::FORBIDDEN);
    // Proxy identities ride on the browser, so forgery is checked as for cookies.
    let mut forged = from_peer("POST", &trigger, "127.0.0.1", "alice", "data-eng");
    forged
        .headers_mut()
        .insert("sec-fetch-site", "cross-site".parse().unwrap());
    assert_eq!(app.send(forged).await.status, StatusCode::FORBIDDEN);
    assert_eq!(app.count("runs").await, 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn the_cli_replaces_the_active_keys_of_a_name_as_make_run_does(db: PgPool) {
    let app = TestApp::new(db.clone()).await;
    let args = [
        "api-key",
        "create",
        "--role",
        "admin",
        "--name",
        "make-run",
        "--expires-in-days",
        "7",
        "--replace",
    ];
    let made = |out: std::process::Output| {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8(out.stdout).unwrap();
        (
            stdout.lines().last().unwrap().to_owned(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (first, _) = made(common::flowdeck(&db, &[], &args));
    let (second, said) = made(common::flowdeck(&db, &[], &args));
    assert!(said.contains("Revoked API key"), "{said}");
    assert_eq!(
        app.get("/api/pipelines/", &first).await.status,
        401,
        "the replaced key is revoked"
    );
    assert_eq!(app.get("/api/pipelines/", &second).await.status, 200);
    assert_eq!(
        app.get("/api/pipelines/", &app.admin).await.status,
        200,
        "other keys stay"
    );
    let (active, expires): (i64, Option<chrono::DateTime<chrono::Utc>>) = sqlx::query_as(
        "SELECT count(*), max(expires_at) FROM api_keys WHERE name = 'make-run' AND revoked_at IS NULL",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(active, 1);
    let left = expires.expect("an expiry") - chrono::Utc::now();
    assert!(
        left > chrono::Duration::days(6) && left <= chrono::Duration::days(7),
        "{left}"
    );
}
