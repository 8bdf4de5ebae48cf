//! API key management for admins: create (shown once), filter, rotate with an overlap
//! window, revoke. The REST routes, the admin page and the CLI all call [`service`].

use chrono::{DateTime, Utc};
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use super::Role;
use crate::error::AppError;
use crate::filter::{IdFilter, TextFilter, TimeFilter};

/// Longest key name.
pub const MAX_NAME_LEN: usize = 100;
/// Overlap of a rotation when none is asked for: the old key works one more hour.
pub const DEFAULT_OVERLAP_MINUTES: u32 = 60;
/// Longest overlap of a rotation: a week.
pub const MAX_OVERLAP_MINUTES: u32 = 7 * 24 * 60;

/// Whether a key works now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// It authenticates requests.
    Active,
    /// Its expiry time has passed.
    Expired,
    /// An admin revoked it.
    Revoked,
}

impl KeyState {
    /// The state's name as shown.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::Expired => "expired",
            KeyState::Revoked => "revoked",
        }
    }
}

/// An API key as admins see it: never its secret, which only its holder has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct ApiKey {
    /// Key id.
    pub id: i64,
    /// Who or what holds the key.
    pub name: String,
    /// What the key may do.
    pub role: Role,
    /// The first characters of the key, to tell keys apart.
    pub key_prefix: String,
    /// Whether the key works now.
    pub state: KeyState,
    /// Who created it.
    pub created_by: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
    /// When it last authenticated a request (to the minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// The key this one replaced, when it was made by rotation.
    pub rotated_from: Option<i64>,
}

/// A key just created: its details and, this once, its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct CreatedApiKey {
    /// The new key.
    #[serde(flatten)]
    pub key: ApiKey,
    /// The key itself. It is not stored and cannot be shown again.
    pub secret: String,
}

/// `POST /api/api_keys/`: a new key.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"name": "ci-bot", "role": "operator", "expires_at": "2030-01-01T00:00:00Z"})))]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    /// Who or what will hold the key (1 to 100 characters).
    pub name: String,
    /// What the key may do.
    pub role: Role,
    /// When the key stops working; never when left out.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// `POST /api/api_keys/{id}/rotate`: a successor for a key.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"overlap_minutes": 60})))]
#[serde(deny_unknown_fields)]
pub struct Rotation {
    /// How long the old key keeps working beside the new one (default 60, at most 10080).
    #[serde(default)]
    pub overlap_minutes: Option<u32>,
    /// When the new key stops working; the old key's expiry when left out.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// Criteria on keys; all must hold.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ApiKeyCriteria {
    /// By id.
    #[serde(default, deserialize_with = "crate::filter::optional_object")]
    pub id: Option<IdFilter>,
    /// By name.
    #[serde(default, deserialize_with = "crate::filter::optional_object")]
    pub name: Option<TextFilter>,
    /// By role (`any_: ["admin"]`).
    #[serde(default, deserialize_with = "crate::filter::optional_object")]
    pub role: Option<TextFilter>,
    /// By state (`any_: ["active", "expired", "revoked"]`).
    #[serde(default, deserialize_with = "crate::filter::optional_object")]
    pub state: Option<KeyStateFilter>,
    /// By creator.
    #[serde(default, deserialize_with = "crate::filter::optional_object")]
    pub created_by: Option<TextFilter>,
    /// By creation time.
    #[serde(default, deserialize_with = "crate::filter::optional_object")]
    pub created: Option<TimeFilter>,
    /// By expiry time.
    #[serde(default, deserialize_with = "crate::filter::optional_object")]
    pub expires: Option<TimeFilter>,
    /// By last use.
    #[serde(default, deserialize_with = "crate::filter::optional_object")]
    pub last_used: Option<TimeFilter>,
}

/// Operators on a key's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct KeyStateFilter {
    /// One of these states.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any_: Option<Vec<KeyState>>,
}

/// Orders of a key listing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ApiKeySort {
    /// Newest first.
    #[default]
    CreatedDesc,
    /// Oldest first.
    CreatedAsc,
    /// By name.
    NameAsc,
    /// Most recently used first, never used last.
    LastUsedDesc,
}

/// `POST /api/api_keys/filter` and `/count`.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"api_keys": {"state": {"any_": ["active"]}, "name": {"like_": "ci"}}, "sort": "LAST_USED_DESC", "limit": 50, "offset": 0})))]
#[serde(deny_unknown_fields)]
pub struct ApiKeyFilter {
    /// Criteria on keys.
    #[serde(default, deserialize_with = "crate::filter::object")]
    pub api_keys: ApiKeyCriteria,
    /// Order of the answer.
    #[serde(default)]
    pub sort: ApiKeySort,
    /// At most this many keys (1 to 200, default 50).
    #[serde(default)]
    pub limit: Option<i64>,
    /// Skip this many first.
    #[serde(default)]
    pub offset: Option<i64>,
}

/// Every key, newest first, for the admin page.
#[server(prefix = "/sfn", endpoint = "list_api_keys")]
pub async fn list_api_keys() -> Result<Vec<ApiKey>, AppError> {
    let state = expect_context::<crate::state::AppState>();
    let principal = super::current_principal()?;
    let filter = ApiKeyFilter {
        limit: Some(crate::filter::MAX_LIMIT),
        ..ApiKeyFilter::default()
    };
    service::filter(&state.db, &principal, &filter).await
}

/// Creates a key from the admin page; `expires_in_days` empty for never.
#[server(prefix = "/sfn", endpoint = "create_api_key")]
pub async fn create_api_key(
    name: String,
    role: Role,
    expires_in_days: Option<String>,
) -> Result<CreatedApiKey, AppError> {
    let state = expect_context::<crate::state::AppState>();
    let principal = super::current_principal()?;
    let meta = super::middleware::RequestMeta::current();
    let expires_at = match expires_in_days
        .as_deref()
        .map(str::trim)
        .filter(|d| !d.is_empty())
    {
        None => None,
        Some(days) => {
            let days: i64 = days
                .parse()
                .ok()
                .filter(|d| (1..=3650).contains(d))
                .ok_or_else(|| {
                    AppError::invalid("expires_in_days", "must be a whole number from 1 to 3650")
                })?;
            Some(Utc::now() + chrono::Duration::days(days))
        }
    };
    let new = NewApiKey {
        name: name.trim().to_owned(),
        role,
        expires_at,
    };
    service::create(&state.db, &principal, &meta, new).await
}

/// Rotates a key from the admin page with the default overlap.
#[server(prefix = "/sfn", endpoint = "rotate_api_key")]
pub async fn rotate_api_key(id: i64) -> Result<CreatedApiKey, AppError> {
    let state = expect_context::<crate::state::AppState>();
    let principal = super::current_principal()?;
    let meta = super::middleware::RequestMeta::current();
    service::rotate(&state.db, &principal, &meta, id, Rotation::default()).await
}

/// Revokes a key from the admin page.
#[server(prefix = "/sfn", endpoint = "revoke_api_key")]
pub async fn revoke_api_key(id: i64) -> Result<(), AppError> {
    let state = expect_context::<crate::state::AppState>();
    let principal = super::current_principal()?;
    let meta = super::middleware::RequestMeta::current();
    service::revoke(&state.db, &principal, &meta, id).await
}

#[cfg(feature = "ssr")]
pub mod service {
    //! The key operations; each checks the admin role and writes its audit event in the
    //! transaction of its change.

    use chrono::{DateTime, Utc};
    use sqlx::{PgExecutor, PgPool};

    use super::{
        ApiKey, ApiKeyFilter, ApiKeySort, CreatedApiKey, DEFAULT_OVERLAP_MINUTES, KeyState, MAX_NAME_LEN,
        MAX_OVERLAP_MINUTES, NewApiKey, Rotation,
    };
    use crate::audit;
    use crate::auth::middleware::RequestMeta;
    use crate::auth::{Principal, Role, db, keys};
    use crate::error::{AppError, Result};
    use crate::filter::{Where, paging};

    const COLUMNS: &str = "SELECT id, name, role, key_prefix, created_by, created_at, expires_at, \
                           revoked_at, last_used_at, rotated_from FROM api_keys";

    #[derive(sqlx::FromRow)]
    struct Row {
        id: i64,
        name: String,
        role: String,
        key_prefix: String,
        created_by: String,
        created_at: DateTime<Utc>,
        expires_at: Option<DateTime<Utc>>,
        revoked_at: Option<DateTime<Utc>>,
        last_used_at: Option<DateTime<Utc>>,
        rotated_from: Option<i64>,
    }

    impl Row {
        fn into_key(self, now: DateTime<Utc>) -> Result<ApiKey> {
            let state = if self.revoked_at.is_some() {
                KeyState::Revoked
            } else if self.expires_at.is_some_and(|at| at <= now) {
                KeyState::Expired
            } else {
                KeyState::Active
            };
            Ok(ApiKey {
                id: self.id,
                name: self.name,
                role: self.role.parse()?,
                key_prefix: self.key_prefix,
                state,
                created_by: self.created_by,
                created_at: self.created_at,
                expires_at: self.expires_at,
                revoked_at: self.revoked_at,
                last_used_at: self.last_used_at,
                rotated_from: self.rotated_from,
            })
        }
    }

    async fn fetch(db: impl PgExecutor<'_>, id: i64) -> Result<ApiKey> {
        let mut query = Where::new(COLUMNS);
        query.raw("id = ").query.push_bind(id);
        query
            .query
            .build_query_as::<Row>()
            .fetch_optional(db)
            .await?
            .ok_or_else(|| AppError::not_found("API key"))?
            .into_key(Utc::now())
    }

    fn check_name(name: &str) -> Result<String> {
        crate::api::rules::check_text("name", name, MAX_NAME_LEN)?;
        Ok(name.to_owned())
    }

    fn check_expiry(field: &str, at: Option<DateTime<Utc>>) -> Result<()> {
        match at {
            // Well-formed, but it clashes with the clock: a conflict, not a bad field.
            Some(at) if at <= Utc::now() => Err(AppError::conflict(format!("{field} is in the past"))),
            _ => Ok(()),
        }
    }

    /// Stores a new key and returns it with its secret, which nobody will see again.
    async fn insert(
        tx: &mut sqlx::PgConnection,
        name: &str,
        role: Role,
        expires_at: Option<DateTime<Utc>>,
        rotated_from: Option<i64>,
        created_by: &str,
    ) -> Result<CreatedApiKey> {
        let secret = keys::new_api_key();
        let row = db::NewKeyRow {
            name,
            role,
            key_prefix: &secret.shown_prefix,
            key_hash: &secret.hash,
            created_by,
            expires_at,
            rotated_from,
        };
        let id = db::insert_api_key(&mut *tx, &row).await?;
        Ok(CreatedApiKey {
            key: fetch(&mut *tx, id).await?,
            secret: secret.clear,
        })
    }

    /// Creates a key.
    #[tracing::instrument(name = "api_keys.create", skip_all)]
    pub async fn create(
        db: &PgPool,
        principal: &Principal,
        meta: &RequestMeta,
        new: NewApiKey,
    ) -> Result<CreatedApiKey> {
        principal.require(Role::Admin)?;
        let name = check_name(&new.name)?;
        check_expiry("expires_at", new.expires_at)?;
        let mut tx = db.begin().await?;
        let created = insert(&mut tx, &name, new.role, new.expires_at, None, &principal.actor).await?;
        let target = format!("api_key:{}", created.key.id);
        audit::record_success(&mut *tx, principal, "api_key.create", &target, meta).await?;
        tx.commit().await?;
        Ok(created)
    }

    /// One key.
    #[tracing::instrument(name = "api_keys.get", skip_all)]
    pub async fn get(db: &PgPool, principal: &Principal, id: i64) -> Result<ApiKey> {
        principal.require(Role::Admin)?;
        fetch(db, id).await
    }

    fn criteria(select: &str, filter: &ApiKeyFilter) -> Result<Where<'static>> {
        let c = &filter.api_keys;
        let mut w = Where::new(select);
        w.ids("id", c.id.as_ref())
            .text("name", c.name.as_ref())
            .text("role", c.role.as_ref())
            .text("created_by", c.created_by.as_ref())
            .time("created_at", c.created.as_ref())
            .time("expires_at", c.expires.as_ref())
            .time("last_used_at", c.last_used.as_ref());
        if let Some(any) = c.state.as_ref().and_then(|s| s.any_.as_ref()) {
            const STATE: &str = "CASE WHEN revoked_at IS NOT NULL THEN 'revoked' \
                                 WHEN expires_at <= now() THEN 'expired' ELSE 'active' END";
            let names = any.iter().map(|s| s.as_str().to_owned()).collect();
            w.statuses(STATE, Some(names), None);
        }
        Ok(w)
    }

    /// The keys that match, in the order asked for.
    #[tracing::instrument(name = "api_keys.filter", skip_all)]
    pub async fn filter(db: &PgPool, principal: &Principal, filter: &ApiKeyFilter) -> Result<Vec<ApiKey>> {
        principal.require(Role::Admin)?;
        let page = paging(filter.limit, filter.offset)?;
        let mut w = criteria(COLUMNS, filter)?;
        let order = match filter.sort {
            ApiKeySort::CreatedDesc => " ORDER BY created_at DESC, id DESC",
            ApiKeySort::CreatedAsc => " ORDER BY created_at, id",
            ApiKeySort::NameAsc => " ORDER BY name, id",
            ApiKeySort::LastUsedDesc => " ORDER BY last_used_at DESC NULLS LAST, id DESC",
        };
        w.page(order, page);
        let now = Utc::now();
        w.query
            .build_query_as::<Row>()
            .fetch_all(db)
            .await?
            .into_iter()
            .map(|row| row.into_key(now))
            .collect()
    }

    /// How many keys match.
    #[tracing::instrument(name = "api_keys.count", skip_all)]
    pub async fn count(db: &PgPool, principal: &Principal, filter: &ApiKeyFilter) -> Result<i64> {
        principal.require(Role::Admin)?;
        // Paging does not change a count, but a bad one is still refused.
        paging(filter.limit, filter.offset)?;
        let mut w = criteria("SELECT count(*) FROM api_keys", filter)?;
        Ok(w.query.build_query_scalar::<i64>().fetch_one(db).await?)
    }

    /// A request cannot revoke or rotate away the key that authenticates it (an admin
    /// could lock themselves out): another admin key or the CLI does that.
    fn not_in_use(principal: &Principal, id: i64) -> Result<()> {
        if principal.key_id == Some(id) {
            return Err(AppError::conflict(format!(
                "API key {id} authenticates this request; revoke or rotate it with another admin key or the CLI"
            )));
        }
        Ok(())
    }

    /// Makes a successor of an active key, with the same name and role; the old key keeps
    /// working for the overlap, then expires, so holders can switch without downtime.
    #[tracing::instrument(name = "api_keys.rotate", skip_all)]
    pub async fn rotate(
        db: &PgPool,
        principal: &Principal,
        meta: &RequestMeta,
        id: i64,
        rotation: Rotation,
    ) -> Result<CreatedApiKey> {
        principal.require(Role::Admin)?;
        let overlap = rotation.overlap_minutes.unwrap_or(DEFAULT_OVERLAP_MINUTES);
        if overlap > MAX_OVERLAP_MINUTES {
            return Err(AppError::invalid(
                "overlap_minutes",
                format!("must be at most {MAX_OVERLAP_MINUTES} (a week)"),
            ));
        }
        check_expiry("expires_at", rotation.expires_at)?;
        not_in_use(principal, id)?;
        let mut tx = db.begin().await?;
        let old = sqlx::query!("SELECT id FROM api_keys WHERE id = $1 FOR UPDATE", id)
            .fetch_optional(&mut *tx)
            .await?;
        if old.is_none() {
            return Err(AppError::not_found("API key"));
        }
        let old = fetch(&mut *tx, id).await?;
        if old.state != KeyState::Active {
            return Err(AppError::conflict(format!(
                "API key {id} is {}; only an active key can be rotated",
                old.state.as_str()
            )));
        }
        let overlap_ends = Utc::now() + chrono::Duration::minutes(i64::from(overlap));
        let old_ends = old.expires_at.map_or(overlap_ends, |at| at.min(overlap_ends));
        sqlx::query!("UPDATE api_keys SET expires_at = $2 WHERE id = $1", id, old_ends)
            .execute(&mut *tx)
            .await?;
        let expires_at = rotation.expires_at.or(old.expires_at);
        let created = insert(
            &mut tx,
            &old.name,
            old.role,
            expires_at,
            Some(id),
            &principal.actor,
        )
        .await?;
        let target = format!("api_key:{id}");
        audit::record_success(&mut *tx, principal, "api_key.rotate", &target, meta).await?;
        tx.commit().await?;
        Ok(created)
    }

    /// Revokes a key and ends the browser sessions it opened. Revoking a revoked key
    /// changes nothing and succeeds (DELETE is idempotent); an unknown id is 404.
    #[tracing::instrument(name = "api_keys.revoke", skip_all)]
    pub async fn revoke(db: &PgPool, principal: &Principal, meta: &RequestMeta, id: i64) -> Result<()> {
        principal.require(Role::Admin)?;
        not_in_use(principal, id)?;
        let mut tx = db.begin().await?;
        fetch(&mut *tx, id).await?;
        if crate::auth::db::revoke_api_key(&mut *tx, id).await? {
            let target = format!("api_key:{id}");
            audit::record_success(&mut *tx, principal, "api_key.revoke", &target, meta).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(feature = "ssr")]
pub mod http {
    //! `/api/api_keys`: create, filter, count, read, rotate, revoke.

    use axum::Json;
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::routing::post;
    use sqlx::PgPool;
    use utoipa_axum::router::OpenApiRouter;
    use utoipa_axum::routes;

    use super::{ApiKey, ApiKeyFilter, CreatedApiKey, NewApiKey, Rotation, service};
    use crate::api::openapi::Errors;
    use crate::api::{ApiId, ApiJson, OptionalJson};
    use crate::auth::Principal;
    use crate::auth::middleware::RequestMeta;
    use crate::error::Result;
    use crate::state::AppState;

    /// Creates a key; its secret is in this answer only.
    #[utoipa::path(post, path = "/api/api_keys/", tag = "api_keys",
        description = "Role: admin. The answer's `secret` is the key; it is not stored and cannot be shown again.",
        request_body = NewApiKey,
        responses((status = 201, description = "Created", body = CreatedApiKey), Errors))]
    async fn create(
        State(db): State<PgPool>,
        principal: Principal,
        meta: RequestMeta,
        ApiJson(new): ApiJson<NewApiKey>,
    ) -> Result<(StatusCode, Json<CreatedApiKey>)> {
        let created = service::create(&db, &principal, &meta, new).await?;
        Ok((StatusCode::CREATED, Json(created)))
    }

    /// Keys matching a filter.
    #[utoipa::path(post, path = "/api/api_keys/filter", tag = "api_keys", description = "Role: admin.",
        request_body(content = Option<ApiKeyFilter>, description = "Criteria, sort and paging; none lists the newest 50"),
        responses((status = 200, description = "The keys, never their secrets", body = Vec<ApiKey>), Errors))]
    async fn filter(
        State(db): State<PgPool>,
        principal: Principal,
        OptionalJson(filter): OptionalJson<ApiKeyFilter>,
    ) -> Result<Json<Vec<ApiKey>>> {
        service::filter(&db, &principal, &filter).await.map(Json)
    }

    /// How many keys match a filter.
    #[utoipa::path(post, path = "/api/api_keys/count", tag = "api_keys", description = "Role: admin. Answers a bare integer.",
        request_body(content = Option<ApiKeyFilter>, description = "Criteria (sort and paging are ignored)"),
        responses((status = 200, description = "The count", body = i64, content_type = "application/json", example = json!(3)), Errors))]
    async fn count(
        State(db): State<PgPool>,
        principal: Principal,
        OptionalJson(filter): OptionalJson<ApiKeyFilter>,
    ) -> Result<Json<i64>> {
        service::count(&db, &principal, &filter).await.map(Json)
    }

    /// One key.
    #[utoipa::path(get, path = "/api/api_keys/{id}", tag = "api_keys", description = "Role: admin.",
        params(("id" = i64, Path, description = "Key id", minimum = 1)),
        responses((status = 200, description = "The key, never its secret", body = ApiKey), Errors))]
    async fn read(State(db): State<PgPool>, principal: Principal, ApiId(id): ApiId) -> Result<Json<ApiKey>> {
        service::get(&db, &principal, id).await.map(Json)
    }

    /// Makes a successor of a key; the old key keeps working for the overlap.
    #[utoipa::path(post, path = "/api/api_keys/{id}/rotate", tag = "api_keys",
        description = "Role: admin. The successor has the same name and role; the old key expires when the overlap ends.",
        params(("id" = i64, Path, description = "Key id", minimum = 1)),
        request_body(content = Option<Rotation>, description = "Overlap and expiry; defaults: 60 minutes, the old key's expiry"),
        responses((status = 201, description = "The successor, with its secret", body = CreatedApiKey), Errors))]
    async fn rotate(
        State(db): State<PgPool>,
        principal: Principal,
        meta: RequestMeta,
        ApiId(id): ApiId,
        OptionalJson(rotation): OptionalJson<Rotation>,
    ) -> Result<(StatusCode, Json<CreatedApiKey>)> {
        let created = service::rotate(&db, &principal, &meta, id, rotation).await?;
        Ok((StatusCode::CREATED, Json(created)))
    }

    /// Revokes a key and ends the sessions it opened.
    #[utoipa::path(delete, path = "/api/api_keys/{id}", tag = "api_keys",
        description = "Role: admin. Idempotent: revoking a revoked key succeeds and changes nothing.",
        params(("id" = i64, Path, description = "Key id", minimum = 1)),
        responses((status = 204, description = "Revoked"), Errors))]
    async fn revoke(
        State(db): State<PgPool>,
        principal: Principal,
        meta: RequestMeta,
        ApiId(id): ApiId,
    ) -> Result<StatusCode> {
        service::revoke(&db, &principal, &meta, id).await?;
        Ok(StatusCode::NO_CONTENT)
    }

    /// The key routes (admins only); the collection is also served without the slash.
    pub fn router() -> OpenApiRouter<AppState> {
        OpenApiRouter::new()
            .routes(routes!(create))
            .routes(routes!(filter))
            .routes(routes!(count))
            .routes(routes!(read, revoke))
            .routes(routes!(rotate))
            .route("/api/api_keys", post(create))
    }
}
