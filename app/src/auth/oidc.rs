//! OpenID Connect: bearer JWTs from one configured issuer, and browser sign-in through it
//! (authorization code with PKCE).
//!
//! The issuer's metadata comes from discovery (`/.well-known/openid-configuration`) and its
//! keys from `jwks_uri`, both fetched when first needed. The key set is refreshed when a
//! token names a key id it lacks (issuers rotate keys), at most once per
//! [`OidcConfig::jwks_min_refresh`], and at least hourly. Signature checks are
//! `jsonwebtoken`'s (ring underneath): only the configured asymmetric algorithms, the key's
//! family must match the token's algorithm, and `iss`, `aud`, `exp` and `nbf` are required
//! (`nbf` may be allowed to be missing).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use crate::caller::Role;

/// How far token times may be off (seconds).
const CLOCK_SKEW_S: u64 = 60;
/// The key set is read again at least this often.
const JWKS_MAX_AGE: Duration = Duration::from_secs(3600);

/// What Flowdeck needs to know about its issuer (from `FLOWDECK_OIDC_*`).
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// The issuer URL, exactly as tokens name it in `iss`.
    pub issuer: String,
    /// The `aud` bearer tokens must carry (default: the client id).
    pub audience: String,
    /// The client id for browser sign-in (also the `aud` of ID tokens).
    pub client_id: String,
    /// The client secret, for confidential clients; public clients rely on PKCE alone.
    pub client_secret: Option<String>,
    /// The claim that names the role: a string or an array of strings.
    pub role_claim: String,
    /// Claim values mapped to roles (`admins` → admin). When empty, role names map to
    /// themselves; when set, only its entries grant a role (see [`map_role`]).
    pub role_map: HashMap<String, Role>,
    /// Accept tokens without `nbf` (`FLOWDECK_OIDC_ALLOW_MISSING_NBF`; several issuers
    /// omit it). An `nbf` that is present is checked either way.
    pub allow_missing_nbf: bool,
    /// Accepted signature algorithms (asymmetric only).
    pub algorithms: Vec<Algorithm>,
    /// Where the issuer sends the browser back: `{public URL}/auth/oidc/callback`.
    pub redirect_uri: String,
    /// The key set is fetched again for an unknown key id at most this often.
    pub jwks_min_refresh: Duration,
}

/// Parses `FLOWDECK_OIDC_ALGORITHMS`: asymmetric algorithms only, never `none` or HMAC.
pub fn parse_algorithms(list: &str) -> Result<Vec<Algorithm>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|name| {
            let alg = Algorithm::from_str(name).map_err(|_| format!("unknown algorithm {name:?}"))?;
            if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
                return Err(format!(
                    "{name} is symmetric; only public-key algorithms are accepted"
                ));
            }
            Ok(alg)
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(|algs| {
            if algs.is_empty() {
                Err("no algorithm given".to_owned())
            } else {
                Ok(algs)
            }
        })
}

/// Parses `FLOWDECK_OIDC_ROLE_MAP` (`admins=admin,ops=operator`).
pub fn parse_role_map(list: &str) -> Result<HashMap<String, Role>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (value, role) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?} is not value=role"))?;
            let role = role
                .trim()
                .parse()
                .map_err(|_| format!("{role:?} is not a role"))?;
            Ok((value.trim().to_owned(), role))
        })
        .collect()
}

/// The role a group or claim value grants: with a role map, only its entries (a group
/// that happens to be named `admin` grants nothing unless mapped); without one, role names.
pub fn map_role(map: &HashMap<String, Role>, value: &str) -> Option<Role> {
    if map.is_empty() {
        value.parse().ok()
    } else {
        map.get(value).copied()
    }
}

/// Why a token was refused; logged at debug level, never sent to the caller (who gets 401).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Malformed, badly signed, expired, not yet valid, wrong issuer or audience.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The issuer could not be reached to learn its keys.
    #[error("issuer unreachable: {0}")]
    Issuer(String),
}

/// A caller proven by the issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcIdentity {
    /// `oidc:` + the subject (`sub`).
    pub actor: String,
    /// The strongest role its claims map to.
    pub role: Role,
    /// When the token expires (`exp`).
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
    authorization_endpoint: String,
    token_endpoint: String,
}

#[derive(Default)]
struct KeyCache {
    keys: HashMap<String, Jwk>,
    /// A key set without ids may hold one key, used for tokens without `kid`.
    only: Option<Jwk>,
    /// When the keys were read.
    fetched: Option<Instant>,
    /// When a read was last tried, whatever came of it.
    attempted: Option<Instant>,
}

/// The issuer as Flowdeck sees it: configuration, metadata and cached keys.
pub struct Oidc {
    /// The configuration.
    pub config: OidcConfig,
    http: reqwest::Client,
    discovery: Mutex<Option<Discovery>>,
    keys: Mutex<KeyCache>,
}

impl Oidc {
    /// An issuer whose metadata and keys are fetched when first needed.
    pub fn new(config: OidcConfig) -> Arc<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client with a timeout builds");
        Arc::new(Self {
            config,
            http,
            discovery: Mutex::new(None),
            keys: Mutex::new(KeyCache::default()),
        })
    }

    async fn discovery(&self) -> Result<Discovery, TokenError> {
        let mut cached = self.discovery.lock().await;
        if let Some(d) = cached.as_ref() {
            return Ok(d.clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let found: Discovery = self.get_json(&url).await?;
        if found.issuer != self.config.issuer {
            return Err(TokenError::Issuer(format!(
                "discovery names issuer {:?}, not the configured one",
                found.issuer
            )));
        }
        *cached = Some(found.clone());
        Ok(found)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, TokenError> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| TokenError::Issuer(e.without_url().to_string()))?;
        response
            .json()
            .await
            .map_err(|e| TokenError::Issuer(format!("unreadable answer: {}", e.without_url())))
    }

    /// The key for `kid`, reading the key set again when it lacks it or is an hour old.
    /// Reads are rate-bounded (one per `jwks_min_refresh`, failed ones included), and when
    /// a read fails the keys already known keep working.
    async fn key(&self, kid: Option<&str>) -> Result<Jwk, TokenError> {
        let mut cache = self.keys.lock().await;
        let lookup = |cache: &KeyCache| match kid {
            Some(kid) => cache.keys.get(kid).cloned(),
            None => cache.only.clone(),
        };
        let stale = cache.fetched.is_none_or(|at| at.elapsed() > JWKS_MAX_AGE);
        let known = lookup(&cache);
        if !stale && let Some(key) = &known {
            return Ok(key.clone());
        }
        let may_read = cache
            .attempted
            .is_none_or(|at| at.elapsed() >= self.config.jwks_min_refresh);
        if may_read {
            cache.attempted = Some(Instant::now());
            match self.read_key_set().await {
                Ok(fresh) => {
                    tracing::debug!(keys = fresh.keys.len(), "read the issuer's key set");
                    *cache = KeyCache {
                        attempted: cache.attempted,
                        ..fresh
                    };
                }
                Err(e) if known.is_some() => {
                    tracing::warn!(error = %e, "cannot refresh the issuer's key set; keeping the known keys")
                }
                Err(e) => return Err(e),
            }
        }
        lookup(&cache).ok_or_else(|| TokenError::Invalid("no key of the issuer has this id".into()))
    }

    async fn read_key_set(&self) -> Result<KeyCache, TokenError> {
        let discovery = self.discovery().await?;
        let set: Value = self.get_json(&discovery.jwks_uri).await?;
        Ok(KeyCache::from_set(&set))
    }

    fn validation(&self, alg: Algorithm, audience: &str) -> Validation {
        let mut v = Validation::new(alg);
        v.algorithms = vec![alg];
        v.set_issuer(&[&self.config.issuer]);
        v.set_audience(&[audience]);
        v.leeway = CLOCK_SKEW_S;
        v.validate_exp = true;
        v.validate_nbf = true;
        let required: &[&str] = if self.config.allow_missing_nbf {
            &["iss", "aud", "exp"]
        } else {
            &["iss", "aud", "exp", "nbf"]
        };
        v.required_spec_claims = required.iter().map(|c| (*c).to_owned()).collect();
        v
    }

    /// Checks a token from this issuer for `audience` and returns its claims.
    async fn claims(
        &self,
        token: &str,
        audience: &str,
    ) -> Result<serde_json::Map<String, Value>, TokenError> {
        let invalid = |e: jsonwebtoken::errors::Error| TokenError::Invalid(e.to_string());
        let header = jsonwebtoken::decode_header(token).map_err(invalid)?;
        if !self.config.algorithms.contains(&header.alg) {
            return Err(TokenError::Invalid(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let jwk = self.key(header.kid.as_deref()).await?;
        if let Some(key_alg) = jwk.common.key_algorithm
            && !same_algorithm(key_alg, header.alg)
        {
            return Err(TokenError::Invalid("the key is for another algorithm".into()));
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(invalid)?;
        let data = jsonwebtoken::decode::<serde_json::Map<String, Value>>(
            token,
            &key,
            &self.validation(header.alg, audience),
        )
        .map_err(invalid)?;
        Ok(data.claims)
    }

    /// The identity in a bearer access token. ID tokens (they carry a `nonce`) are for
    /// signing in, never bearer credentials, even when their audience matches.
    pub async fn verify_bearer(&self, token: &str) -> Result<OidcIdentity, TokenError> {
        let claims = self.claims(token, &self.config.audience).await?;
        if claims.contains_key("nonce") {
            return Err(TokenError::Invalid(
                "an ID token is not a bearer credential".into(),
            ));
        }
        self.identity(&claims)
    }

    fn identity(&self, claims: &serde_json::Map<String, Value>) -> Result<OidcIdentity, TokenError> {
        // The subject, not a name or email the person may change: the audit trail must
        // not let one person pass for another.
        let name = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty() && n.len() <= 200)
            .ok_or_else(|| TokenError::Invalid("no subject".into()))?;
        let values: Vec<&str> = match claims.get(&self.config.role_claim) {
            Some(Value::String(one)) => vec![one.as_str()],
            Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let role = values
            .iter()
            .filter_map(|v| map_role(&self.config.role_map, v))
            .max()
            .ok_or_else(|| {
                TokenError::Invalid(format!("claim {:?} names no role", self.config.role_claim))
            })?;
        let expires_at = claims
            .get("exp")
            .and_then(Value::as_i64)
            .and_then(|exp| chrono::DateTime::from_timestamp(exp, 0));
        Ok(OidcIdentity {
            actor: format!("oidc:{name}"),
            role,
            expires_at,
        })
    }

    /// Where to send the browser to sign in: the authorization endpoint with this login's
    /// state, nonce and PKCE challenge.
    pub async fn authorization_url(&self, login: &PendingLogin) -> Result<String, TokenError> {
        let discovery = self.discovery().await?;
        let mut url = url::Url::parse(&discovery.authorization_endpoint)
            .map_err(|e| TokenError::Issuer(format!("authorization endpoint: {e}")))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", &self.config.redirect_uri)
            .append_pair("scope", "openid profile email")
            .append_pair("state", &login.state)
            .append_pair("nonce", &login.nonce)
            .append_pair("code_challenge", &pkce_challenge(&login.code_verifier))
            .append_pair("code_challenge_method", "S256");
        Ok(url.into())
    }

    /// Trades the authorization code for an ID token and checks it (signature, issuer,
    /// audience = client id, times, and the nonce of this login).
    pub async fn finish_login(&self, code: &str, login: &PendingLogin) -> Result<OidcIdentity, TokenError> {
        #[derive(Deserialize)]
        struct Tokens {
            id_token: String,
        }
        let discovery = self.discovery().await?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &self.config.redirect_uri),
            ("client_id", &self.config.client_id),
            ("code_verifier", &login.code_verifier),
        ];
        if let Some(secret) = &self.config.client_secret {
            form.push(("client_secret", secret));
        }
        let tokens: Tokens = self
            .http
            .post(&discovery.token_endpoint)
            .form(&form)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| TokenError::Issuer(format!("token endpoint: {}", e.without_url())))?
            .json()
            .await
            .map_err(|e| TokenError::Issuer(format!("token endpoint answer: {}", e.without_url())))?;
        let claims = self.claims(&tokens.id_token, &self.config.client_id).await?;
        let nonce = claims.get("nonce").and_then(Value::as_str).unwrap_or_default();
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            nonce.as_bytes(),
            login.nonce.as_bytes(),
        )) {
            return Err(TokenError::Invalid(
                "the ID token is for another sign-in (nonce)".into(),
            ));
        }
        self.identity(&claims)
    }

    /// The origin of the issuer, which the sign-in page's form may be sent on to.
    pub fn issuer_origin(&self) -> Option<String> {
        url::Url::parse(&self.config.issuer)
            .ok()
            .map(|u| u.origin().ascii_serialization())
    }
}

impl KeyCache {
    /// The usable public keys of a key set; others (symmetric, unknown types) are skipped.
    fn from_set(set: &Value) -> Self {
        let keys: Vec<Jwk> = set
            .get("keys")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
            .filter(|k| !matches!(k.algorithm, jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)))
            .collect();
        let only = (keys.len() == 1).then(|| keys[0].clone());
        Self {
            keys: keys
                .into_iter()
                .filter_map(|k| k.common.key_id.clone().map(|id| (id, k)))
                .collect(),
            only,
            fetched: Some(Instant::now()),
            attempted: None,
        }
    }
}

/// Whether a key published for `key` may check a token signed with `alg` (the two enums
/// share their variant names: `RS256`, `ES256`, `EdDSA`...).
fn same_algorithm(key: KeyAlgorithm, alg: Algorithm) -> bool {
    format!("{key:?}") == format!("{alg:?}")
}

/// A sign-in through the issuer waiting for the browser to come back.
#[derive(Debug, Clone)]
pub struct PendingLogin {
    /// Sent to the issuer and back; also kept in a cookie of the browser that started it.
    pub state: String,
    /// Binds the ID token to this sign-in.
    pub nonce: String,
    /// The PKCE secret; the issuer only ever sees its hash until the code is redeemed.
    pub code_verifier: String,
    /// Where to go after signing in.
    pub next: String,
}

impl PendingLogin {
    /// A new sign-in with fresh random state, nonce and verifier.
    pub fn new(next: String) -> Self {
        let random = || URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        Self {
            state: random(),
            nonce: random(),
            code_verifier: random(),
            next,
        }
    }
}

/// The PKCE S256 challenge of `verifier` (RFC 7636 §4.2).
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Whether `token` has the shape of a JWT (three base64url parts).
pub fn looks_like_jwt(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| {
            p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        && !parts[0].is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_key_algorithms_are_accepted() {
        assert_eq!(
            parse_algorithms("RS256, ES256,EdDSA"),
            Ok(vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA])
        );
        assert!(parse_algorithms("HS256").is_err());
        assert!(parse_algorithms("none").is_err());
        assert!(parse_algorithms("").is_err());
    }

    #[test]
    fn pkce_challenge_matches_rfc_7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn role_map_parses_pairs_and_refuses_unknown_roles() {
        let map = parse_role_map("admins=admin, ops = operator").unwrap();
        assert_eq!(map.get("admins"), Some(&Role::Admin));
        assert_eq!(map.get("ops"), Some(&Role::Operator));
        assert!(parse_role_map("x=root").is_err());
        assert!(parse_role_map("nonsense").is_err());
    }

    #[test]
    fn a_role_map_grants_only_its_entries() {
        let map = parse_role_map("admins=admin").unwrap();
        assert_eq!(map_role(&map, "admins"), Some(Role::Admin));
        assert_eq!(
            map_role(&map, "admin"),
            None,
            "a group named like a role grants nothing"
        );
        assert_eq!(map_role(&HashMap::new(), "operator"), Some(Role::Operator));
        assert_eq!(map_role(&HashMap::new(), "admins"), None);
    }

    #[test]
    fn jwt_shape() {
        assert!(looks_like_jwt("eyJh.eyJz.c2ln"));
        assert!(!looks_like_jwt("fdk_abc"));
        assert!(!looks_like_jwt("a.b"));
        assert!(!looks_like_jwt("a.b.c d"));
    }
}
