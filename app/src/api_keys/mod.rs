//! API key management for admins: create (shown once), filter, rotate with an overlap
//! window, revoke. The REST routes, the admin page and the CLI all call [`service`].

use chrono::{DateTime, Utc};
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::caller::{Budget, BudgetUse, KeyScope, Role};
use crate::error::AppError;
use crate::filter::{IdFilter, TextFilter, TimeFilter};

pub mod page;

#[cfg(feature = "ssr")]
pub mod db;
#[cfg(feature = "ssr")]
pub mod http;
#[cfg(feature = "ssr")]
pub mod service;

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
    /// What the key is limited to (nothing listed: everything its role allows).
    pub scope: KeyScope,
    /// What the key may spend (nothing set: no budget).
    pub budget: Budget,
    /// What it has spent of its budgets now, for a key with budgets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<BudgetUse>,
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
#[cfg_attr(feature = "ssr", schema(example = json!({"name": "marketing-agent", "role": "operator", "expires_at": "2030-01-01T00:00:00Z", "scope": {"tags": ["marketing"], "actions": ["read", "trigger"]}, "budget": {"triggers_per_hour": 10, "max_unfinished_runs": 2}})))]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    /// Who or what will hold the key (1 to 100 characters).
    pub name: String,
    /// What the key may do.
    pub role: Role,
    /// When the key stops working; never when left out.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Limits the key to some pipelines and actions; it can only narrow the role.
    #[serde(default, deserialize_with = "crate::filter::object")]
    pub scope: KeyScope,
    /// Budgets of the key's runs.
    #[serde(default, deserialize_with = "crate::filter::object")]
    pub budget: Budget,
}

/// `PATCH /api/api_keys/{id}`: a key's new scope or budgets (what is left out stays).
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"scope": {"tags": ["marketing", "sales"]}, "budget": {"triggers_per_day": 50}})))]
#[serde(deny_unknown_fields)]
pub struct KeyLimits {
    /// The key's whole new scope (`{}` lifts it).
    #[serde(default, deserialize_with = "crate::filter::optional_object")]
    pub scope: Option<KeyScope>,
    /// The key's whole new budgets (`{}` lifts them).
    #[serde(default, deserialize_with = "crate::filter::optional_object")]
    pub budget: Option<Budget>,
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
    /// By name, from Z to A.
    NameDesc,
    /// Most recently used first, never used last.
    LastUsedDesc,
    /// Least recently used first, never used last.
    LastUsedAsc,
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
    let db = expect_context::<sqlx::PgPool>();
    let caller = crate::caller::Caller::current()?;
    let filter = ApiKeyFilter {
        limit: Some(crate::filter::MAX_LIMIT),
        ..ApiKeyFilter::default()
    };
    service::filter(&db, &caller, &filter).await
}

/// The admin page's key table, rendered afresh.
#[server(prefix = "/sfn", endpoint = "key_table")]
pub async fn key_table() -> Result<String, AppError> {
    let keys = list_api_keys().await?;
    Ok(view! { <page::KeyTable keys /> }.to_html())
}

/// The New key form's scope and budgets, as typed (empty fields leave them out).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LimitsForm {
    /// Tags, comma-separated.
    #[serde(default)]
    pub scope_tags: Option<String>,
    /// Pipeline ids or slugs, comma-separated.
    #[serde(default)]
    pub scope_pipelines: Option<String>,
    /// Actions, comma-separated; empty for every action of the role.
    #[serde(default)]
    pub scope_actions: Option<String>,
    /// Runs per hour.
    #[serde(default)]
    pub triggers_per_hour: Option<String>,
    /// Runs per day.
    #[serde(default)]
    pub triggers_per_day: Option<String>,
    /// Unfinished runs at once.
    #[serde(default)]
    pub max_unfinished_runs: Option<String>,
}

impl LimitsForm {
    /// The scope and budgets the form asks for; a number that is not one names its field.
    pub fn parse(&self) -> Result<(KeyScope, Budget), AppError> {
        fn items(text: &Option<String>) -> Vec<String> {
            text.as_deref()
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        }
        fn number(field: &str, text: &Option<String>) -> Result<Option<i32>, AppError> {
            match text.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
                None => Ok(None),
                Some(t) => t
                    .parse()
                    .map(Some)
                    .map_err(|_| AppError::invalid(field, "must be a whole number from 1")),
            }
        }
        let mut scope = KeyScope {
            tags: items(&self.scope_tags),
            ..KeyScope::default()
        };
        for item in items(&self.scope_pipelines) {
            match item.parse::<i64>() {
                Ok(id) => scope.pipeline_ids.push(id),
                Err(_) => scope.slugs.push(item),
            }
        }
        let actions = items(&self.scope_actions);
        if !actions.is_empty() {
            scope.actions = Some(actions.iter().map(|a| a.parse()).collect::<Result<_, _>>()?);
        }
        let budget = Budget {
            triggers_per_hour: number("triggers_per_hour", &self.triggers_per_hour)?,
            triggers_per_day: number("triggers_per_day", &self.triggers_per_day)?,
            max_unfinished_runs: number("max_unfinished_runs", &self.max_unfinished_runs)?,
        };
        Ok((scope, budget))
    }
}

/// Creates a key from the admin page; `role` by its name, `expires_in_days` empty for
/// never, the scope and budgets as [`LimitsForm`] takes them. Answers the notice showing
/// its secret, once, rendered.
#[server(prefix = "/sfn", endpoint = "create_api_key")]
pub async fn create_api_key(
    name: String,
    role: String,
    expires_in_days: Option<String>,
    #[server(flatten)] limits: LimitsForm,
) -> Result<String, AppError> {
    let db = expect_context::<sqlx::PgPool>();
    let caller = crate::caller::Caller::current()?;
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
    let (scope, budget) = limits.parse()?;
    let new = NewApiKey {
        name: name.trim().to_owned(),
        role: role.parse()?,
        expires_at,
        scope,
        budget,
    };
    let created = service::create(&db, &caller, new).await?;
    Ok(view! { <page::NewSecret created /> }.to_html())
}

/// Rotates a key from the admin page with the default overlap; answers the successor's
/// notice, as `create_api_key` does.
#[server(prefix = "/sfn", endpoint = "rotate_api_key")]
pub async fn rotate_api_key(id: i64) -> Result<String, AppError> {
    let db = expect_context::<sqlx::PgPool>();
    let caller = crate::caller::Caller::current()?;
    let created = service::rotate(&db, &caller, id, Rotation::default()).await?;
    Ok(view! { <page::NewSecret created /> }.to_html())
}

/// Revokes a key from the admin page.
#[server(prefix = "/sfn", endpoint = "revoke_api_key")]
pub async fn revoke_api_key(id: i64) -> Result<(), AppError> {
    let db = expect_context::<sqlx::PgPool>();
    let caller = crate::caller::Caller::current()?;
    service::revoke(&db, &caller, id).await
}
