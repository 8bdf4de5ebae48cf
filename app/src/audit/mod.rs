//! The audit trail: an append-only record of every mutation, trigger, sign-in and refusal
//! (the database refuses to change or delete a row), and how admins read it.

use chrono::{DateTime, Utc};
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;
use crate::filter::{IdFilter, TextFilter, TimeFilter};

pub mod page;

#[cfg(feature = "ssr")]
pub mod db;
#[cfg(feature = "ssr")]
pub mod http;
#[cfg(feature = "ssr")]
pub mod service;

/// One audited action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct AuditEvent {
    /// Event id; ids grow with time.
    pub id: i64,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// Who acted (`api-key:ci`, `oidc:alice`, `anonymous`).
    pub actor: String,
    /// The actor's role then, when known.
    pub role: Option<String>,
    /// What was done (`run.trigger`, `auth.sign_in`, `api_key.revoke`...).
    pub action: String,
    /// What it was done to (`pipeline:3`, `run:12`, a path), when anything.
    pub target: Option<String>,
    /// The request that did it (`X-Request-ID`).
    pub request_id: Option<String>,
    /// `success` or `denied`.
    pub outcome: String,
    /// The caller's address.
    pub source_addr: Option<String>,
}

/// Criteria on audit events; all must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AuditCriteria {
    /// By id.
    #[serde(
        default,
        deserialize_with = "crate::filter::optional_object",
        skip_serializing_if = "Option::is_none"
    )]
    pub id: Option<IdFilter>,
    /// By time.
    #[serde(
        default,
        deserialize_with = "crate::filter::optional_object",
        skip_serializing_if = "Option::is_none"
    )]
    pub occurred: Option<TimeFilter>,
    /// By actor.
    #[serde(
        default,
        deserialize_with = "crate::filter::optional_object",
        skip_serializing_if = "Option::is_none"
    )]
    pub actor: Option<TextFilter>,
    /// By role.
    #[serde(
        default,
        deserialize_with = "crate::filter::optional_object",
        skip_serializing_if = "Option::is_none"
    )]
    pub role: Option<TextFilter>,
    /// By action.
    #[serde(
        default,
        deserialize_with = "crate::filter::optional_object",
        skip_serializing_if = "Option::is_none"
    )]
    pub action: Option<TextFilter>,
    /// By target.
    #[serde(
        default,
        deserialize_with = "crate::filter::optional_object",
        skip_serializing_if = "Option::is_none"
    )]
    pub target: Option<TextFilter>,
    /// By outcome (`success`, `denied`).
    #[serde(
        default,
        deserialize_with = "crate::filter::optional_object",
        skip_serializing_if = "Option::is_none"
    )]
    pub outcome: Option<TextFilter>,
    /// By request id.
    #[serde(
        default,
        deserialize_with = "crate::filter::optional_object",
        skip_serializing_if = "Option::is_none"
    )]
    pub request_id: Option<TextFilter>,
    /// By source address.
    #[serde(
        default,
        deserialize_with = "crate::filter::optional_object",
        skip_serializing_if = "Option::is_none"
    )]
    pub source_addr: Option<TextFilter>,
}

/// Orders of an audit listing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuditSort {
    /// Newest first.
    #[default]
    OccurredDesc,
    /// Oldest first.
    OccurredAsc,
}

/// `POST /api/audit_events/filter` and `/count`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"audit_events": {"outcome": {"any_": ["denied"]}, "occurred": {"after_": "2026-11-01T00:00:00Z"}}, "sort": "OCCURRED_DESC", "limit": 50, "offset": 0})))]
#[serde(deny_unknown_fields)]
pub struct AuditFilter {
    /// Criteria on events.
    #[serde(default, deserialize_with = "crate::filter::object")]
    pub audit_events: AuditCriteria,
    /// Order of the answer.
    #[serde(default)]
    pub sort: AuditSort,
    /// At most this many events (1 to 200, default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    /// Skip this many first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
}

/// A page of the audit trail with the number of events that match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditListing {
    /// The events of this page.
    pub events: Vec<AuditEvent>,
    /// All events that match.
    pub total: i64,
}

/// The audit page's data.
#[server(prefix = "/sfn", endpoint = "audit_page")]
pub async fn audit_page(filter: AuditFilter) -> Result<AuditListing, AppError> {
    let db = expect_context::<sqlx::PgPool>();
    let caller = crate::caller::Caller::current()?;
    let events = service::filter(&db, &caller, &filter).await?;
    let total = service::count(&db, &caller, &filter).await?;
    Ok(AuditListing { events, total })
}
