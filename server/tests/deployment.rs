//! A real deployment: behind a TLS proxy, against a hostile Internet. Client addresses from
//! trusted proxies only, valid credentials never locked out, refusals collapsed, sessions
//! and event streams that end with their credential, `__Host-` cookies only, run-scoped
//! report ids and callback credentials with a maximum age.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use app::auth::limits::Budgets;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use common::{Answer, TestApp, session_cookie, sign_in_request};
use serde_json::{Value, json};
use sqlx::PgPool;

const PROXY: &str = "10.0.0.5:443";

/// `GET uri` with `key` as bearer, arriving from `peer`, with extra headers.
fn from_peer(uri: &str, key: &str, peer: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut builder = Request::get(uri).header(header::AUTHORIZATION, format!("Bearer {key}"));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let mut request = builder.body(Body::empty()).unwrap();
    let peer: SocketAddr = peer.parse().unwrap();
    request.extensions_mut().insert(ConnectInfo(peer));
    request
}

fn tight_budgets(failures: u32) -> Budgets {
    let n = |n| std::num::NonZeroU32::new(n).unwrap();
    Budgets {
        auth_failures_per_minute: n(failures),
        triggers_per_minute: n(1000),
        sign_ins_per_minute: n(2),
    }
}

/// An app behind a proxy at 10.0.0.0/8 with these budgets.
async fn behind_proxy(db: PgPool, budgets: Budgets) -> TestApp {
    TestApp::with(db, |b| {
        b.trusted_proxies(app::client_addr::TrustedProxies::parse("10.0.0.0/8").unwrap())
            .budgets(budgets)
    })
    .await
}

async fn denied_rows(app: &TestApp) -> Vec<(Option<String>, Option<String>, Value)> {
    sqlx::query_as(
        "SELECT source_addr, target, detail FROM audit_events WHERE action = 'auth.denied' ORDER BY id",
    )
    .fetch_all(&app.db)
    .await
    .unwrap()
}

/// A pending run of a new pipeline and its callback credential (as Prefect would be given it).
async fn run_with_callback(app: &TestApp) -> (i64, String) {
    let pipeline = app
        .pipeline(json!({"name": format!("p-{}", rand_suffix()), "stages": ["a", "b"]}))
        .await;
    let run = app.start_run(pipeline, json!({})).await;
    let run_id = run["id"].as_i64().unwrap();
    let token: String = sqlx::query_scalar("SELECT callback_token FROM run_outbox WHERE run_id = $1")
        .bind(run_id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    (run_id, token)
}

fn rand_suffix() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        .to_string()
}

fn report(run_id: i64, stage: &str, status: &str, event_id: Option<&str>) -> Value {
    json!({"run_id": run_id, "stage_name": stage, "status": status, "event_id": event_id})
}

#[sqlx::test(migrations = "../migrations")]
async fn behind_a_trusted_proxy_the_forwarded_client_is_limited_and_audited(db: PgPool) {
    let app = behind_proxy(db, tight_budgets(3)).await;
    let junk = format!("fdk_{}", "0".repeat(64));
    let attacker = [("x-forwarded-for", "6.6.6.6, 198.51.100.7")];
    for _ in 0..3 {
        let answer = app
            .send(from_peer("/api/pipelines/", &junk, PROXY, &attacker))
            .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    }
    let limited = app
        .send(from_peer("/api/pipelines/", &junk, PROXY, &attacker))
        .await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    // Another client behind the same proxy keeps its own budget.
    let neighbour = [("x-forwarded-for", "198.51.100.8")];
    let answer = app
        .send(from_peer("/api/pipelines/", &junk, PROXY, &neighbour))
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "not the attacker's 429");
    // A client's own `Forwarded` header, passed on by a proxy that appends to
    // `X-Forwarded-For`, is not read: the attacker cannot name itself.
    let named = [
        ("forwarded", "for=192.0.2.99"),
        ("x-forwarded-for", "198.51.100.7"),
    ];
    let answer = app.send(from_peer("/api/pipelines/", &junk, PROXY, &named)).await;
    assert_eq!(
        answer.status,
        StatusCode::TOO_MANY_REQUESTS,
        "still the attacker's budget"
    );
    // From an untrusted peer the header is ignored: the peer itself is the client.
    let spoofer = app
        .send(from_peer("/api/pipelines/", &junk, "203.0.113.9:5000", &attacker))
        .await;
    assert_eq!(spoofer.status, StatusCode::UNAUTHORIZED);
    let sources: Vec<Option<String>> = denied_rows(&app).await.into_iter().map(|r| r.0).collect();
    assert_eq!(
        sources,
        [
            Some("198.51.100.7".to_owned()),
            Some("198.51.100.8".to_owned()),
            Some("203.0.113.9".to_owned())
        ]
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_valid_credential_is_never_locked_out_by_junk_from_its_address(db: PgPool) {
    let app = behind_proxy(db, tight_budgets(10)).await;
    let (run_id, callback) = run_with_callback(&app).await;
    let client = [("x-forwarded-for", "198.51.100.20")];
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..50 {
        // Malformed, wrongly checksummed and well-formed unknown keys alike.
        let junk = match i % 3 {
            0 => "junk".to_owned(),
            1 => format!("fdk_{}AAAAAA", "a".repeat(32)),
            _ => format!("fdk_{}", "0".repeat(64)),
        };
        let answer = app
            .send(from_peer("/api/pipelines/", &junk, PROXY, &client))
            .await;
        *statuses.entry(answer.status.as_u16()).or_insert(0) += 1;
    }
    assert_eq!(statuses.get(&401), Some(&10), "{statuses:?}");
    assert_eq!(statuses.get(&429), Some(&40), "{statuses:?}");
    let key = app
        .send(from_peer("/api/pipelines/", &app.viewer, PROXY, &client))
        .await;
    assert_eq!(key.status, StatusCode::OK, "a valid key from the same address");
    let mut request = Request::post("/api/status-update/")
        .header(header::AUTHORIZATION, format!("Bearer {callback}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-forwarded-for", "198.51.100.20")
        .body(Body::from(report(run_id, "a", "running", None).to_string()))
        .unwrap();
    request
        .extensions_mut()
        .insert(ConnectInfo(PROXY.parse::<SocketAddr>().unwrap()));
    let reported = app.send(request).await;
    assert_eq!(reported.status, StatusCode::OK, "{}", reported.text());
    let mut sign_in = sign_in_request(&app.operator, None);
    sign_in
        .extensions_mut()
        .insert(ConnectInfo(PROXY.parse::<SocketAddr>().unwrap()));
    sign_in
        .headers_mut()
        .insert("x-forwarded-for", "198.51.100.20".parse().unwrap());
    let signed_in = app.send(sign_in).await;
    assert!(signed_in.header("set-cookie").is_some(), "{}", signed_in.text());
}

#[sqlx::test(migrations = "../migrations")]
async fn refusals_are_one_short_row_per_address_a_minute(db: PgPool) {
    let app = behind_proxy(db, tight_budgets(1000)).await;
    let long_path = format!("/api/pipelines/{}", "x".repeat(5000));
    for _ in 0..50 {
        let answer = app
            .send(from_peer(&long_path, "junk", "203.0.113.50:1", &[]))
            .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    }
    let rows = denied_rows(&app).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (source, target, detail) = &rows[0];
    assert_eq!(source.as_deref(), Some("203.0.113.50"));
    let target = target.as_deref().unwrap();
    assert_eq!(target.chars().count(), 256);
    assert!(target.starts_with("GET /api/pipelines/xxx"), "{target}");
    assert_eq!(detail["count"], 1);
    let legacy: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE action = 'auth.authenticate'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(legacy, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn starting_sign_ins_is_rate_limited_per_address(db: PgPool) {
    let oidc = app::auth::oidc::OidcConfig {
        issuer: "http://127.0.0.1:9".into(),
        audience: "flowdeck".into(),
        client_id: "flowdeck".into(),
        client_secret: None,
        role_claim: "role".into(),
        role_map: std::collections::HashMap::new(),
        allow_missing_nbf: false,
        algorithms: vec![jsonwebtoken::Algorithm::ES256],
        redirect_uri: "http://127.0.0.1:8000/auth/oidc/callback".into(),
        jwks_min_refresh: Duration::from_secs(30),
    };
    let app = TestApp::with(db, |b| {
        b.oidc(Some(app::auth::oidc::Oidc::new(oidc)))
            .budgets(tight_budgets(1000))
    })
    .await;
    let start = |peer: &str| {
        let mut request = Request::post("/auth/oidc/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from("next=%2F"))
            .unwrap();
        request
            .extensions_mut()
            .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        request
    };
    let mut answers: Vec<u16> = Vec::new();
    for _ in 0..3 {
        answers.push(app.send(start("198.51.100.30:1")).await.status.as_u16());
    }
    assert_eq!(answers[2], 429, "{answers:?}");
    assert_ne!(answers[0], 429);
    let other: Answer = app.send(start("198.51.100.31:1")).await;
    assert_ne!(other.status, StatusCode::TOO_MANY_REQUESTS, "another address");
}

/// Creates an API key through the API; its id and secret.
async fn new_key(app: &TestApp, body: Value) -> (i64, String) {
    let created = app.post("/api/api_keys/", &app.admin, body).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let json = created.json();
    (
        json["id"].as_i64().unwrap(),
        json["secret"].as_str().unwrap().to_owned(),
    )
}

async fn status_with_cookie(app: &TestApp, cookie: &str) -> StatusCode {
    let request = Request::get("/api/pipelines/")
        .header(header::COOKIE, cookie)
        .body(Body::empty())
        .unwrap();
    app.send(request).await.status
}

#[sqlx::test(migrations = "../migrations")]
async fn sessions_end_with_the_key_that_opened_them(db: PgPool) {
    let app = TestApp::new(db).await;
    // Expiry: the session (and its cookie) ends no later than the key.
    let expires = chrono::Utc::now() + chrono::Duration::minutes(30);
    let (_, short) = new_key(
        &app,
        json!({"name": "short", "role": "viewer", "expires_at": expires}),
    )
    .await;
    let answer = app.send(sign_in_request(&short, None)).await;
    let set_cookie = answer.header("set-cookie").unwrap().to_owned();
    let max_age: i64 = set_cookie
        .split(';')
        .find_map(|part| part.trim().strip_prefix("Max-Age="))
        .unwrap()
        .parse()
        .unwrap();
    assert!((1700..=1800).contains(&max_age), "{set_cookie}");
    let ends: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT max(expires_at) FROM sessions")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(ends <= expires, "{ends} after the key's {expires}");

    // Rotation: the old key's sessions end when its overlap ends (here at once).
    let (id, rotated) = new_key(&app, json!({"name": "rotated", "role": "viewer"})).await;
    let cookie = session_cookie(&app, &rotated).await;
    assert_eq!(status_with_cookie(&app, &cookie).await, StatusCode::OK);
    let rotation = app
        .post(
            &format!("/api/api_keys/{id}/rotate"),
            &app.admin,
            json!({"overlap_minutes": 0}),
        )
        .await;
    assert!(rotation.status.is_success(), "{}", rotation.text());
    assert_eq!(status_with_cookie(&app, &cookie).await, StatusCode::UNAUTHORIZED);

    // Revocation ends them at once.
    let (id, revoked) = new_key(&app, json!({"name": "revoked", "role": "viewer"})).await;
    let cookie = session_cookie(&app, &revoked).await;
    let gone = app
        .call("DELETE", &format!("/api/api_keys/{id}"), Some(&app.admin), None)
        .await;
    assert!(gone.status.is_success(), "{}", gone.text());
    assert_eq!(status_with_cookie(&app, &cookie).await, StatusCode::UNAUTHORIZED);
}

#[sqlx::test(migrations = "../migrations")]
async fn event_streams_end_when_their_credential_does(db: PgPool) {
    let app = TestApp::new(db).await;
    let _listening = app.listen().await;
    // A revoked key's stream ends.
    let (id, key) = new_key(&app, json!({"name": "stream", "role": "viewer"})).await;
    let mut stream = app.subscribe("", &key, None).await;
    assert!(
        !stream.ends_within(Duration::from_millis(300)).await,
        "open while valid"
    );
    let gone = app
        .call("DELETE", &format!("/api/api_keys/{id}"), Some(&app.admin), None)
        .await;
    assert!(gone.status.is_success());
    assert!(
        stream.ends_within(Duration::from_secs(5)).await,
        "ends once revoked"
    );
    assert_eq!(
        app.get("/api/events", &key).await.status,
        StatusCode::UNAUTHORIZED
    );

    // A rotated key's stream ends when the overlap does (here at once).
    let (id, rotated) = new_key(&app, json!({"name": "rotated-stream", "role": "viewer"})).await;
    let mut stream = app.subscribe("", &rotated, None).await;
    assert!(!stream.ends_within(Duration::from_millis(300)).await);
    let rotation = app
        .post(
            &format!("/api/api_keys/{id}/rotate"),
            &app.admin,
            json!({"overlap_minutes": 0}),
        )
        .await;
    assert!(rotation.status.is_success(), "{}", rotation.text());
    assert!(
        stream.ends_within(Duration::from_secs(5)).await,
        "ends with the overlap"
    );

    // An expiring key's stream ends at its expiry.
    let expires = chrono::Utc::now() + chrono::Duration::seconds(2);
    let (_, brief) = new_key(
        &app,
        json!({"name": "brief", "role": "viewer", "expires_at": expires}),
    )
    .await;
    let mut stream = app.subscribe("", &brief, None).await;
    assert!(stream.ends_within(Duration::from_secs(5)).await, "ends at expiry");

    // A session's stream ends when it signs out.
    let cookie = session_cookie(&app, &app.viewer).await;
    let open = |cookie: &str| {
        Request::get("/api/events")
            .header(header::COOKIE, cookie)
            .header(header::ACCEPT, "text/event-stream")
            .body(Body::empty())
            .unwrap()
    };
    let mut stream = app.open_stream(open(&cookie)).await;
    assert!(!stream.ends_within(Duration::from_millis(300)).await);
    let sign_out = Request::post("/sfn/sign_out")
        .header(header::COOKIE, &cookie)
        .header("sec-fetch-site", "same-origin")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::empty())
        .unwrap();
    let signed_out = app.send(sign_out).await;
    assert!(signed_out.status.is_redirection() || signed_out.status.is_success());
    assert!(
        stream.ends_within(Duration::from_secs(5)).await,
        "ends at sign-out"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn with_secure_cookies_a_planted_plain_cookie_is_ignored(db: PgPool) {
    let app = TestApp::with(db, |b| b.secure_cookies(true)).await;
    let cookie = session_cookie(&app, &app.viewer).await;
    let (name, token) = cookie.split_once('=').unwrap();
    assert_eq!(name, "__Host-flowdeck_session");
    assert_eq!(status_with_cookie(&app, &cookie).await, StatusCode::OK);
    let planted = format!("flowdeck_session={token}");
    assert_eq!(status_with_cookie(&app, &planted).await, StatusCode::UNAUTHORIZED);
}

#[sqlx::test(migrations = "../migrations")]
async fn report_ids_are_per_run_and_flowdecks_own_are_reserved(db: PgPool) {
    let app = TestApp::new(db).await;
    let (first, _) = run_with_callback(&app).await;
    let (second, _) = run_with_callback(&app).await;
    for run_id in [first, second] {
        let answer = app
            .post(
                "/api/status-update/",
                &app.operator,
                report(run_id, "a", "running", Some("e-1")),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        assert_eq!(
            answer.json()["duplicate"],
            false,
            "run {run_id}: {}",
            answer.text()
        );
    }
    let repeat = app
        .post(
            "/api/status-update/",
            &app.operator,
            report(first, "a", "running", Some("e-1")),
        )
        .await;
    assert_eq!(repeat.json()["duplicate"], true);
    let reserved = app
        .post(
            "/api/status-update/",
            &app.operator,
            report(second, "b", "running", Some("flowdeck:prefect-state-1")),
        )
        .await;
    assert_eq!(reserved.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reserved.json()["field"], "event_id");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_callback_credential_has_a_maximum_age_even_while_its_run_goes_on(db: PgPool) {
    let app = TestApp::new(db).await;
    let (run_id, token) = run_with_callback(&app).await;
    let fresh = app
        .post(
            "/api/status-update/",
            &token,
            report(run_id, "a", "running", None),
        )
        .await;
    assert_eq!(fresh.status, StatusCode::OK, "{}", fresh.text());
    sqlx::query("UPDATE runs SET created_at = now() - interval '25 hours' WHERE id = $1")
        .bind(run_id)
        .execute(&app.db)
        .await
        .unwrap();
    let aged = app
        .post(
            "/api/status-update/",
            &token,
            report(run_id, "a", "completed", None),
        )
        .await;
    assert_eq!(aged.status, StatusCode::UNAUTHORIZED, "{}", aged.text());
}
