//! OpenID Connect against a small issuer of the test's own on loopback: discovery, a key
//! set of keys made here (ES256, Ed25519), a token endpoint that checks PKCE. Bearer
//! tokens are tried in every broken way; browser sign-in goes through the whole flow.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use app::auth::oidc::{Oidc, OidcConfig, pkce_challenge};
use app::caller::Role;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::TestApp;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};
use sqlx::PgPool;

const CLIENT_ID: &str = "flowdeck-test";

/// A signing key of the issuer: its id, algorithm, private half and public JWK.
#[derive(Clone)]
struct SigningKey {
    kid: String,
    alg: Algorithm,
    private: EncodingKey,
    jwk: Value,
}

fn es256(kid: &str) -> SigningKey {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let point = pair.public_key().as_ref();
    SigningKey {
        kid: kid.into(),
        alg: Algorithm::ES256,
        private: EncodingKey::from_ec_der(pkcs8.as_ref()),
        jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
                    "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65])}),
    }
}

fn ed25519(kid: &str) -> SigningKey {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    SigningKey {
        kid: kid.into(),
        alg: Algorithm::EdDSA,
        private: EncodingKey::from_ed_der(pkcs8.as_ref()),
        jwk: json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA", "use": "sig",
                    "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref())}),
    }
}

/// What the authorization endpoint handed out: the PKCE challenge and nonce of a code.
struct Grant {
    challenge: String,
    nonce: String,
    redirect_uri: String,
    claims: Value,
}

#[derive(Default)]
struct IssuerState {
    url: String,
    published: Mutex<Vec<SigningKey>>,
    jwks_reads: AtomicUsize,
    grants: Mutex<HashMap<String, Grant>>,
}

struct Issuer {
    state: Arc<IssuerState>,
}

impl Issuer {
    async fn start(keys: Vec<SigningKey>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(IssuerState {
            url,
            published: Mutex::new(keys),
            ..IssuerState::default()
        });
        let router = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/token", post(token))
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Issuer { state }
    }

    fn url(&self) -> &str {
        &self.state.url
    }

    fn key(&self, i: usize) -> SigningKey {
        self.state.published.lock().unwrap()[i].clone()
    }

    fn jwks_reads(&self) -> usize {
        self.state.jwks_reads.load(Ordering::SeqCst)
    }

    /// Claims of a good token for `audience` with `role`, valid from now for ten minutes.
    fn claims(&self, role: &str) -> Value {
        let now = chrono::Utc::now().timestamp();
        json!({"iss": self.url(), "aud": "flowdeck-api", "sub": "u-1", "preferred_username": "alice",
               "flowdeck_role": role, "iat": now, "nbf": now, "exp": now + 600})
    }

    fn config(&self, min_refresh: Duration) -> OidcConfig {
        OidcConfig {
            issuer: self.url().to_owned(),
            audience: "flowdeck-api".into(),
            client_id: CLIENT_ID.into(),
            client_secret: None,
            role_claim: "flowdeck_role".into(),
            // With a map only its entries grant roles: `viewer` and `operator` are mapped
            // here, `admin` is not (only `platform-admins` makes an admin).
            role_map: HashMap::from([
                ("platform-admins".to_owned(), Role::Admin),
                ("operator".to_owned(), Role::Operator),
                ("viewer".to_owned(), Role::Viewer),
            ]),
            allow_missing_nbf: false,
            algorithms: vec![Algorithm::ES256, Algorithm::EdDSA],
            redirect_uri: "http://127.0.0.1:8000/auth/oidc/callback".into(),
            jwks_min_refresh: min_refresh,
        }
    }
}

fn sign(key: &SigningKey, claims: &Value) -> String {
    let mut header = Header::new(key.alg);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.private).unwrap()
}

async fn discovery(State(s): State<Arc<IssuerState>>) -> Json<Value> {
    Json(json!({
        "issuer": s.url,
        "jwks_uri": format!("{}/jwks", s.url),
        "authorization_endpoint": format!("{}/authorize", s.url),
        "token_endpoint": format!("{}/token", s.url),
    }))
}

async fn jwks(State(s): State<Arc<IssuerState>>) -> Json<Value> {
    s.jwks_reads.fetch_add(1, Ordering::SeqCst);
    let keys: Vec<Value> = s
        .published
        .lock()
        .unwrap()
        .iter()
        .map(|k| k.jwk.clone())
        .collect();
    // A symmetric key in the set must never be used to check anything.
    let mut keys = keys;
    keys.push(json!({"kty": "oct", "kid": "shared", "k": URL_SAFE_NO_PAD.encode(b"secret")}));
    Json(json!({ "keys": keys }))
}

/// The token endpoint: redeems a code once, only with the verifier of its challenge.
async fn token(
    State(s): State<Arc<IssuerState>>,
    Form(form): Form<HashMap<String, String>>,
) -> (StatusCode, Json<Value>) {
    let refuse = |why: &str| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant", "why": why})),
        )
    };
    if form.get("grant_type").map(String::as_str) != Some("authorization_code")
        || form.get("client_id").map(String::as_str) != Some(CLIENT_ID)
    {
        return refuse("grant type or client");
    }
    let Some(grant) = form.get("code").and_then(|c| s.grants.lock().unwrap().remove(c)) else {
        return refuse("unknown code");
    };
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    if pkce_challenge(&verifier) != grant.challenge {
        return refuse("PKCE verifier does not match the challenge");
    }
    if form.get("redirect_uri") != Some(&grant.redirect_uri) {
        return refuse("redirect_uri");
    }
    let key = s.published.lock().unwrap()[0].clone();
    let mut claims = grant.claims;
    claims["aud"] = json!(CLIENT_ID);
    claims["nonce"] = json!(grant.nonce);
    (
        StatusCode::OK,
        Json(json!({"id_token": sign(&key, &claims), "token_type": "Bearer"})),
    )
}

async fn status_with(app: &TestApp, token: &str) -> StatusCode {
    app.call("GET", "/api/pipelines/", Some(token), None).await.status
}

fn edit(claims: &Value, change: impl FnOnce(&mut Value)) -> Value {
    let mut claims = claims.clone();
    change(&mut claims);
    claims
}

#[sqlx::test(migrations = "../migrations")]
async fn bearer_tokens_are_accepted_only_when_every_check_passes(db: PgPool) {
    let issuer = Issuer::start(vec![es256("k1"), ed25519("k2")]).await;
    let app = TestApp::with(db, |b| {
        b.oidc(Some(Oidc::new(issuer.config(Duration::from_secs(30)))))
    })
    .await;
    let (es, ed) = (issuer.key(0), issuer.key(1));
    let good = issuer.claims("viewer");
    let now = chrono::Utc::now().timestamp();

    assert_eq!(status_with(&app, &sign(&es, &good)).await, StatusCode::OK);
    assert_eq!(status_with(&app, &sign(&ed, &good)).await, StatusCode::OK);
    // Within the clock skew.
    let late = edit(&good, |c| c["exp"] = json!(now - 30));
    assert_eq!(status_with(&app, &sign(&es, &late)).await, StatusCode::OK);

    // The role comes from the claim, directly or through the map; the strongest wins.
    let viewer = sign(&es, &good);
    let create = json!({"name": "by-oidc"});
    assert_eq!(
        app.post("/api/pipelines/", &viewer, create.clone()).await.status,
        StatusCode::FORBIDDEN
    );
    let admin = sign(
        &es,
        &edit(&good, |c| {
            c["flowdeck_role"] = json!(["viewer", "platform-admins"])
        }),
    );
    assert_eq!(
        app.post("/api/pipelines/", &admin, create).await.status,
        StatusCode::CREATED
    );
    let actor: String = sqlx::query_scalar("SELECT actor FROM audit_events WHERE action = 'pipeline.create'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(actor, "oidc:u-1");

    let header = |alg: &str, kid: &str| {
        URL_SAFE_NO_PAD.encode(json!({"alg": alg, "typ": "JWT", "kid": kid}).to_string())
    };
    let payload = URL_SAFE_NO_PAD.encode(good.to_string());
    let good_token = sign(&es, &good);
    let signature = good_token.rsplit('.').next().unwrap();
    let forged_payload =
        URL_SAFE_NO_PAD.encode(edit(&good, |c| c["flowdeck_role"] = json!("admin")).to_string());
    let hmac_with_public_key = {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("k1".into());
        let public = URL_SAFE_NO_PAD.decode(es.jwk["x"].as_str().unwrap()).unwrap();
        jsonwebtoken::encode(&h, &good, &EncodingKey::from_secret(&public)).unwrap()
    };
    let hmac_with_set_secret = {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("shared".into());
        jsonwebtoken::encode(&h, &good, &EncodingKey::from_secret(b"secret")).unwrap()
    };
    let mut unknown_kid = es.clone();
    unknown_kid.kid = "k-unknown".into();
    let mut ed_as_es = ed.clone();
    ed_as_es.alg = Algorithm::ES256;

    let refused: Vec<(&str, String)> = vec![
        (
            "expired",
            sign(&es, &edit(&good, |c| c["exp"] = json!(now - 120))),
        ),
        (
            "not yet valid",
            sign(&es, &edit(&good, |c| c["nbf"] = json!(now + 300))),
        ),
        (
            "no nbf",
            sign(
                &es,
                &edit(&good, |c| {
                    c.as_object_mut().unwrap().remove("nbf");
                }),
            ),
        ),
        (
            "no aud",
            sign(
                &es,
                &edit(&good, |c| {
                    c.as_object_mut().unwrap().remove("aud");
                }),
            ),
        ),
        (
            "wrong audience",
            sign(&es, &edit(&good, |c| c["aud"] = json!("someone-else"))),
        ),
        (
            "wrong issuer",
            sign(&es, &edit(&good, |c| c["iss"] = json!("http://evil.test"))),
        ),
        (
            "no role",
            sign(&es, &edit(&good, |c| c["flowdeck_role"] = json!("root"))),
        ),
        (
            "a group named admin that the role map does not name",
            sign(&es, &edit(&good, |c| c["flowdeck_role"] = json!("admin"))),
        ),
        ("unknown kid", sign(&unknown_kid, &good)),
        ("alg none", format!("{}.{payload}.", header("none", "k1"))),
        (
            "tampered payload",
            format!(
                "{}.{forged_payload}.{signature}",
                good_token.split('.').next().unwrap()
            ),
        ),
        ("HS256 keyed with the public key", hmac_with_public_key),
        ("HS256 with a symmetric key of the set", hmac_with_set_secret),
        ("Ed25519 key claimed as ES256", {
            let mut h = Header::new(Algorithm::EdDSA);
            h.kid = Some("k2".into());
            let t = jsonwebtoken::encode(&h, &good, &ed_as_es.private).unwrap();
            let mut parts = t.splitn(2, '.');
            parts.next();
            format!("{}.{}", header("ES256", "k2"), parts.next().unwrap())
        }),
        ("garbage", "a.b.c".to_owned()),
        (
            "an ID token",
            sign(&es, &edit(&good, |c| c["nonce"] = json!("n"))),
        ),
    ];
    for (why, token) in refused {
        let answer = app.call("GET", "/api/pipelines/", Some(&token), None).await;
        assert_eq!(
            answer.status,
            StatusCode::UNAUTHORIZED,
            "{why}: {}",
            answer.text()
        );
        assert!(!answer.text().contains(&token), "{why}: the token is echoed");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn tokens_without_nbf_pass_only_when_the_setting_allows_them(db: PgPool) {
    let issuer = Issuer::start(vec![es256("k1")]).await;
    let mut config = issuer.config(Duration::from_secs(30));
    config.allow_missing_nbf = true;
    let app = TestApp::with(db, |b| b.oidc(Some(Oidc::new(config)))).await;
    let es = issuer.key(0);
    let now = chrono::Utc::now().timestamp();
    let without_nbf = edit(&issuer.claims("viewer"), |c| {
        c.as_object_mut().unwrap().remove("nbf");
    });
    assert_eq!(status_with(&app, &sign(&es, &without_nbf)).await, StatusCode::OK);
    // An nbf that is there is still checked.
    let early = edit(&issuer.claims("viewer"), |c| c["nbf"] = json!(now + 300));
    assert_eq!(
        status_with(&app, &sign(&es, &early)).await,
        StatusCode::UNAUTHORIZED
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn unknown_key_ids_refresh_the_key_set_at_a_bounded_rate(db: PgPool) {
    let issuer = Issuer::start(vec![es256("k1")]).await;
    // Refreshes at most every 3 s: the flood below stays within one interval even on a
    // machine loaded by the other tests (at 1 s it once took two).
    let app = TestApp::with(db, |b| {
        b.oidc(Some(Oidc::new(issuer.config(Duration::from_secs(3)))))
    })
    .await;
    let good = issuer.claims("viewer");
    assert_eq!(
        status_with(&app, &sign(&issuer.key(0), &good)).await,
        StatusCode::OK
    );
    assert_eq!(
        status_with(&app, &sign(&issuer.key(0), &good)).await,
        StatusCode::OK
    );
    assert_eq!(issuer.jwks_reads(), 1, "the key set is cached");

    // The issuer rotates in a new key; a token signed with it makes Flowdeck look again.
    let rotated = es256("k2");
    issuer.state.published.lock().unwrap().push(rotated.clone());
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(status_with(&app, &sign(&rotated, &good)).await, StatusCode::OK);
    assert_eq!(issuer.jwks_reads(), 2);

    // A flood of unknown key ids cannot make Flowdeck hammer the issuer.
    let mut bogus = rotated.clone();
    for i in 0..20 {
        bogus.kid = format!("bogus-{i}");
        assert_eq!(
            status_with(&app, &sign(&bogus, &good)).await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert!(issuer.jwks_reads() <= 3, "{} key set reads", issuer.jwks_reads());
}

fn query_of(url: &str) -> HashMap<String, String> {
    url::Url::parse(url).unwrap().query_pairs().into_owned().collect()
}

/// `POST /auth/oidc/login` from this origin; the redirect's query and the state cookie.
async fn start_login(app: &TestApp) -> (HashMap<String, String>, String) {
    let answer = app
        .send(
            Request::post("/auth/oidc/login")
                .header("content-type", "application/x-www-form-urlencoded")
                .header("host", "127.0.0.1:8000")
                .header("origin", "http://127.0.0.1:8000")
                .body(Body::from("next=%2Fpipelines%2Fnew"))
                .unwrap(),
        )
        .await;
    assert!(
        answer.status.is_redirection(),
        "{} {}",
        answer.status,
        answer.text()
    );
    let cookie = answer.header("set-cookie").expect("a state cookie").to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    (
        query_of(answer.header("location").unwrap()),
        cookie.split(';').next().unwrap().to_owned(),
    )
}

fn callback(code: &str, state: &str, cookie: Option<&str>) -> Request<Body> {
    let mut request = Request::get(format!("/auth/oidc/callback?code={code}&state={state}"));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    request.body(Body::empty()).unwrap()
}

impl Issuer {
    /// What the authorization endpoint does once the person has signed in: a code bound
    /// to the request's PKCE challenge and nonce.
    fn authorize(&self, query: &HashMap<String, String>, claims: Value) -> String {
        let code = format!("code-{}", rand_suffix());
        self.state.grants.lock().unwrap().insert(
            code.clone(),
            Grant {
                challenge: query["code_challenge"].clone(),
                nonce: query["nonce"].clone(),
                redirect_uri: query["redirect_uri"].clone(),
                claims,
            },
        );
        code
    }
}

fn rand_suffix() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::SeqCst).to_string()
}

#[sqlx::test(migrations = "../migrations")]
async fn people_sign_in_through_the_issuer_with_pkce(db: PgPool) {
    let issuer = Issuer::start(vec![es256("k1")]).await;
    let app = TestApp::with(db, |b| {
        b.oidc(Some(Oidc::new(issuer.config(Duration::from_secs(30)))))
    })
    .await;

    // The sign-in page offers the issuer, and lets its form be redirected there.
    let page = app
        .send(Request::get("/login").body(Body::empty()).unwrap())
        .await;
    assert!(page.text().contains(r#"action="/auth/oidc/login""#));
    let policy = page.header("content-security-policy").unwrap();
    assert!(
        policy.contains(&format!("form-action 'self' {}", issuer.url())),
        "{policy}"
    );

    let (query, state_cookie) = start_login(&app).await;
    assert_eq!(query["response_type"], "code");
    assert_eq!(query["client_id"], CLIENT_ID);
    assert_eq!(query["code_challenge_method"], "S256");
    assert_eq!(query["code_challenge"].len(), 43);
    assert!(state_cookie.ends_with(&query["state"]));
    let code = issuer.authorize(&query, issuer.claims("operator"));

    // Another browser (no state cookie) cannot use the code.
    let stolen = app.send(callback(&code, &query["state"], None)).await;
    assert_eq!(stolen.header("location"), Some("/login?error=oidc"));
    // The browser that started it is signed in and sent where it was going.
    let (query, state_cookie) = start_login(&app).await;
    let code = issuer.authorize(&query, issuer.claims("operator"));
    let done = app
        .send(callback(&code, &query["state"], Some(&state_cookie)))
        .await;
    assert_eq!(done.header("location"), Some("/pipelines/new"), "{}", done.text());
    let session = done
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|c| c.starts_with("flowdeck_session="))
        .expect("a session cookie")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let me = app
        .send(
            Request::get("/api/pipelines/")
                .header("cookie", &session)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(me.status, StatusCode::OK);
    let signed_in: (String, String) = sqlx::query_as(
        "SELECT actor, role FROM audit_events WHERE action = 'auth.sign_in' AND outcome = 'success'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(signed_in, ("oidc:u-1".to_owned(), "operator".to_owned()));

    // A state is good once: even with a fresh, valid code for it.
    let sessions = app.count("sessions").await;
    let fresh = issuer.authorize(&query, issuer.claims("operator"));
    let replay = app
        .send(callback(&fresh, &query["state"], Some(&state_cookie)))
        .await;
    assert_eq!(replay.header("location"), Some("/login?error=oidc"));
    // A code redeemed without the verifier of its challenge is refused by the issuer.
    let (query, state_cookie) = start_login(&app).await;
    let mut other = query.clone();
    other.insert("code_challenge".into(), pkce_challenge("someone else's verifier"));
    let code = issuer.authorize(&other, issuer.claims("operator"));
    let refused = app
        .send(callback(&code, &query["state"], Some(&state_cookie)))
        .await;
    assert_eq!(refused.header("location"), Some("/login?error=oidc"));
    assert_eq!(app.count("sessions").await, sessions);
    // Three refused sign-ins from one address within a minute: one row, the first; the
    // others are counted into the address's next row.
    let denied: Vec<String> = sqlx::query_scalar(
        "SELECT target FROM audit_events WHERE action = 'auth.denied' AND outcome = 'denied'",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(denied, ["GET /auth/oidc/callback"]);

    // Another site cannot start a sign-in for the browser.
    let forged = app
        .send(
            Request::post("/auth/oidc/login")
                .header("content-type", "application/x-www-form-urlencoded")
                .header("sec-fetch-site", "cross-site")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
}
