//! Helpers for tests that drive the real router against a fresh `PostgreSQL` database.
#![allow(dead_code, reason = "each test crate uses a different part of these helpers")]

use app::auth::secrets;
use app::caller::Role;
use app::routes::Builder;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use sqlx::PgPool;
use std::time::Duration;
use tower::ServiceExt;

/// The router of `main`, around a test database, with one API key per role.
pub struct TestApp {
    pub router: Router,
    pub db: PgPool,
    pub hub: std::sync::Arc<app::events::hub::Hub>,
    pub viewer: String,
    pub operator: String,
    pub admin: String,
}

/// A response read to the end.
pub struct Answer {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Tests send many refused requests on purpose: budgets no test reaches by accident.
fn roomy_budgets() -> app::auth::limits::Budgets {
    let roomy = std::num::NonZeroU32::new(100_000).unwrap();
    app::auth::limits::Budgets {
        auth_failures_per_minute: roomy,
        triggers_per_minute: roomy,
        sign_ins_per_minute: roomy,
    }
}

pub async fn key(db: &PgPool, role: Role) -> String {
    let key = secrets::new_api_key();
    let row = app::api_keys::db::NewKeyRow {
        name: &format!("test-{role}"),
        role,
        key_prefix: &key.shown_prefix,
        key_hash: &key.hash,
        created_by: "test",
        expires_at: None,
        rotated_from: None,
        scope: &Default::default(),
        budget: Default::default(),
    };
    app::api_keys::db::insert(db, &row).await.expect("insert api key");
    key.clear
}

impl TestApp {
    /// The app as `main` builds it, with roomy budgets and a default deployment.
    pub async fn new(db: PgPool) -> Self {
        Self::with(db, |b| b).await
    }

    /// The app as [`TestApp::new`], with `change` made to its builder first.
    pub async fn with(db: PgPool, change: impl FnOnce(Builder) -> Builder) -> Self {
        let builder = Builder::new(db.clone())
            .budgets(roomy_budgets())
            .links(app::prefect::PrefectLinks {
                default_deployment: Some("etl/demo".to_owned()),
                ui_url: Some("http://prefect.test".to_owned()),
            });
        let state = change(builder).build();
        TestApp {
            hub: state.hub.clone(),
            router: app::routes::router(state),
            viewer: key(&db, Role::Viewer).await,
            operator: key(&db, Role::Operator).await,
            admin: key(&db, Role::Admin).await,
            db,
        }
    }

    pub async fn send(&self, request: Request<Body>) -> Answer {
        let response: Response<Body> = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("router answers");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        Answer {
            status,
            headers,
            body,
        }
    }

    /// A request with an optional bearer key and an optional JSON body.
    pub async fn call(&self, method: &str, uri: &str, key: Option<&str>, body: Option<Value>) -> Answer {
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(key) = key {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {key}"));
        }
        let request = match body {
            Some(json) => builder
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(json.to_string())),
            None => builder.body(Body::empty()),
        };
        self.send(request.expect("valid request")).await
    }

    pub async fn get(&self, uri: &str, key: &str) -> Answer {
        self.call("GET", uri, Some(key), None).await
    }

    pub async fn post(&self, uri: &str, key: &str, body: Value) -> Answer {
        self.call("POST", uri, Some(key), Some(body)).await
    }

    /// Starts this replica's change listener; it stops when the sender is dropped or set.
    pub async fn listen(&self) -> tokio::sync::watch::Sender<bool> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(self.hub.clone().run(self.db.clone(), stopped));
        // LISTEN is in place once the listener has read the feed's end; give it a moment.
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop
    }

    /// Opens `GET /api/events{query}` as `key`, optionally resuming after `last_event_id`.
    pub async fn subscribe(&self, query: &str, key: &str, last_event_id: Option<&str>) -> Sse {
        let mut request = Request::get(format!("/api/events{query}"))
            .header(header::AUTHORIZATION, format!("Bearer {key}"))
            .header(header::ACCEPT, "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        self.open_stream(request.body(Body::empty()).expect("valid request"))
            .await
    }

    /// Sends a request for an event stream; asserts `200` and returns the open stream.
    pub async fn open_stream(&self, request: Request<Body>) -> Sse {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("router answers");
        assert_eq!(response.status(), StatusCode::OK);
        Sse {
            body: response.into_body(),
            buffer: String::new(),
        }
    }

    /// Calls a server function (`/sfn/<name>`) with a form body, as a browser form does.
    pub async fn server_fn(&self, name: &str, key: &str, form: &str) -> Answer {
        let request = Request::post(format!("/sfn/{name}"))
            .header(header::AUTHORIZATION, format!("Bearer {key}"))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(Body::from(form.to_owned()))
            .expect("valid request");
        self.send(request).await
    }

    /// Creates a pipeline as admin and returns its id.
    pub async fn pipeline(&self, body: Value) -> i64 {
        let answer = self.post("/api/pipelines/", &self.admin, body).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text());
        answer.json()["id"].as_i64().expect("id")
    }

    /// Triggers a run of `pipeline` as operator; asserts `202` and returns the run.
    pub async fn start_run(&self, pipeline: i64, body: Value) -> Value {
        let answer = self
            .post(&format!("/api/pipelines/{pipeline}/runs"), &self.operator, body)
            .await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text());
        answer.json()
    }

    /// `POST /api/runs/{run_id}/{action}` (`cancel`, `retry`) with `key`.
    /// Triggers `pipeline` with `key`; the answer's status.
    pub async fn start_run_as(&self, pipeline: i64, key: &str) -> StatusCode {
        self.post(
            &format!("/api/pipelines/{pipeline}/runs"),
            key,
            serde_json::json!({}),
        )
        .await
        .status
    }

    pub async fn run_action(&self, run_id: i64, action: &str, key: &str) -> Answer {
        self.call("POST", &format!("/api/runs/{run_id}/{action}"), Some(key), None)
            .await
    }

    /// A run as a viewer reads it.
    pub async fn run(&self, run_id: i64) -> Value {
        self.get(&format!("/api/runs/{run_id}"), &self.viewer)
            .await
            .json()
    }

    /// Rows in a table, to prove that a rejected request wrote nothing.
    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&self.db)
            .await
            .expect("count")
    }

    /// [`Self::footprint`] without the audit trail, which records refusals.
    pub async fn footprint_but_audit(&self) -> Vec<i64> {
        let mut counts = self.footprint().await;
        counts.remove(4);
        counts
    }

    /// How many refusals of `actor` for its role or a cross-site request were audited.
    pub async fn forbidden_audited(&self, actor: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM audit_events WHERE action = 'auth.forbidden' AND outcome = 'denied' AND actor = $1",
        )
        .bind(actor)
        .fetch_one(&self.db)
        .await
        .expect("count")
    }

    /// Row counts of every table a request could write to.
    pub async fn footprint(&self) -> Vec<i64> {
        let mut counts = Vec::new();
        for table in [
            "pipelines",
            "runs",
            "stage_runs",
            "run_events",
            "audit_events",
            "sessions",
        ] {
            counts.push(self.count(table).await);
        }
        counts
    }
}

/// What a dispatcher in a test needs: a default deployment (if any) and where flows call back.
pub fn dispatch_config(
    default_deployment: Option<&str>,
    callback_url: &str,
) -> app::runs::dispatch::DispatchConfig {
    app::runs::dispatch::DispatchConfig {
        default_deployment: default_deployment.map(str::to_owned),
        callback_url: callback_url.to_owned(),
        lease: std::time::Duration::from_secs(60),
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone, Default)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).expect("JSON data")
    }
}

/// An open event stream, read event by event.
pub struct Sse {
    body: Body,
    buffer: String,
}

impl Sse {
    /// The next event with data (comments, `retry:` and heartbeats skipped), or `None` if
    /// none arrives within `limit`.
    pub async fn next(&mut self, limit: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent::default();
                let mut has_data = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        event.id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event.event = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        has_data = true;
                        event.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                let chatter = matches!(event.event.as_deref(), Some("hello" | "heartbeat"));
                if has_data && !chatter {
                    return Some(event);
                }
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame())
                .await
                .ok()??
                .ok()?;
            if let Ok(data) = frame.into_data() {
                self.buffer.push_str(&String::from_utf8_lossy(&data));
            }
        }
    }

    /// Whether the stream ends (its body finishes) within `limit`; events before the end
    /// are skipped.
    pub async fn ends_within(&mut self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.body.frame()).await {
                Err(_) => return false,
                Ok(None) => return true,
                Ok(Some(Err(_))) => return true,
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// The next event, which must come within five seconds.
    pub async fn expect(&mut self) -> SseEvent {
        self.next(Duration::from_secs(5))
            .await
            .expect("an event within 5 s")
    }
}

/// `POST /sfn/sign_in` as the sign-in form sends it, from `origin` if given.
pub fn sign_in_request(key: &str, origin: Option<&str>) -> Request<Body> {
    let mut builder = Request::post("/sfn/sign_in")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("host", "127.0.0.1:8000");
    if let Some(origin) = origin {
        builder = builder.header("origin", origin);
    }
    builder
        .body(Body::from(format!("api_key={key}&next=%2Fpipelines%2F1")))
        .unwrap()
}

/// Signs in with `key` and returns the session cookie (`name=value`).
pub async fn session_cookie(app: &TestApp, key: &str) -> String {
    let answer = app.send(sign_in_request(key, None)).await;
    assert!(
        answer.status.is_redirection() || answer.status.is_success(),
        "{} {}",
        answer.status,
        answer.text()
    );
    let cookie = answer.header("set-cookie").expect("a session cookie").to_owned();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    cookie.split(';').next().unwrap().to_owned()
}

/// The URL of the test database `db` (what the binary is given as `DATABASE_URL`).
pub fn database_url(db: &PgPool) -> String {
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let mut url = url::Url::parse(&base).unwrap();
    url.set_path(db.connect_options().get_database().expect("a database name"));
    url.to_string()
}

/// Runs the `flowdeck` binary with `args` against `db`; its exit status and output.
pub fn flowdeck(db: &PgPool, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_flowdeck"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", database_url(db))
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("the flowdeck binary runs")
}
