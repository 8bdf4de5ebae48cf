//! The audit trail: an append-only record of every mutation, trigger, sign-in and refusal
//! (the database refuses to change or delete a row), and how admins read it.

use chrono::{DateTime, Utc};
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;
use crate::filter::{IdFilter, TextFilter, TimeFilter};

pub mod page;

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
    let principal = crate::caller::current_principal()?;
    let events = service::filter(&db, &principal, &filter).await?;
    let total = service::count(&db, &principal, &filter).await?;
    Ok(AuditListing { events, total })
}

#[cfg(feature = "ssr")]
pub mod service {
    //! Reading the trail (admins only).

    use sqlx::PgPool;

    use super::{AuditEvent, AuditFilter, AuditSort};
    use crate::caller::{Principal, Role};
    use crate::error::Result;
    use crate::filter::{Where, paging};

    fn criteria(select: &str, filter: &AuditFilter) -> Where<'static> {
        let c = &filter.audit_events;
        let mut w = Where::new(select);
        w.ids("id", c.id.as_ref())
            .time("occurred_at", c.occurred.as_ref())
            .text("actor", c.actor.as_ref())
            .text("role", c.role.as_ref())
            .text("action", c.action.as_ref())
            .text("target", c.target.as_ref())
            .text("outcome", c.outcome.as_ref())
            .text("request_id", c.request_id.as_ref())
            .text("source_addr", c.source_addr.as_ref());
        w
    }

    /// The events that match, in the order asked for.
    #[tracing::instrument(name = "audit.filter", skip_all)]
    pub async fn filter(db: &PgPool, principal: &Principal, filter: &AuditFilter) -> Result<Vec<AuditEvent>> {
        principal.require(Role::Admin)?;
        let page = paging(filter.limit, filter.offset)?;
        let mut w = criteria(
            "SELECT id, occurred_at, actor, role, action, target, request_id, outcome, source_addr \
             FROM audit_events",
            filter,
        );
        let order = match filter.sort {
            AuditSort::OccurredDesc => " ORDER BY occurred_at DESC, id DESC",
            AuditSort::OccurredAsc => " ORDER BY occurred_at, id",
        };
        w.page(order, page);
        Ok(w.query.build_query_as::<AuditEvent>().fetch_all(db).await?)
    }

    /// How many events match.
    #[tracing::instrument(name = "audit.count", skip_all)]
    pub async fn count(db: &PgPool, principal: &Principal, filter: &AuditFilter) -> Result<i64> {
        principal.require(Role::Admin)?;
        // Paging does not change a count, but a bad one is still refused.
        paging(filter.limit, filter.offset)?;
        let mut w = criteria("SELECT count(*) FROM audit_events", filter);
        Ok(w.query.build_query_scalar::<i64>().fetch_one(db).await?)
    }
}

#[cfg(feature = "ssr")]
impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for AuditEvent {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> sqlx::Result<Self> {
        use sqlx::Row;
        Ok(Self {
            id: row.try_get("id")?,
            occurred_at: row.try_get("occurred_at")?,
            actor: row.try_get("actor")?,
            role: row.try_get("role")?,
            action: row.try_get("action")?,
            target: row.try_get("target")?,
            request_id: row.try_get("request_id")?,
            outcome: row.try_get("outcome")?,
            source_addr: row.try_get("source_addr")?,
        })
    }
}

#[cfg(feature = "ssr")]
pub mod http {
    //! `POST /api/audit_events/filter` and `/count`.

    use axum::Json;
    use axum::extract::State;
    use sqlx::PgPool;
    use utoipa_axum::router::OpenApiRouter;
    use utoipa_axum::routes;

    use super::{AuditEvent, AuditFilter, service};
    use crate::api::OptionalJson;
    use crate::api::responses::Errors;
    use crate::caller::Principal;
    use crate::error::Result;

    /// Audit events matching a filter.
    #[utoipa::path(post, path = "/api/audit_events/filter", tag = "audit", description = "Role: admin.",
        request_body(content = Option<AuditFilter>, description = "Criteria, sort and paging; none lists the newest 50"),
        responses((status = 200, description = "The events", body = Vec<AuditEvent>), Errors))]
    async fn filter(
        State(db): State<PgPool>,
        principal: Principal,
        OptionalJson(filter): OptionalJson<AuditFilter>,
    ) -> Result<Json<Vec<AuditEvent>>> {
        service::filter(&db, &principal, &filter).await.map(Json)
    }

    /// How many audit events match a filter.
    #[utoipa::path(post, path = "/api/audit_events/count", tag = "audit", description = "Role: admin. Answers a bare integer.",
        request_body(content = Option<AuditFilter>, description = "Criteria (sort and paging are ignored)"),
        responses((status = 200, description = "The count", body = i64, content_type = "application/json", example = json!(42)), Errors))]
    async fn count(
        State(db): State<PgPool>,
        principal: Principal,
        OptionalJson(filter): OptionalJson<AuditFilter>,
    ) -> Result<Json<i64>> {
        service::count(&db, &principal, &filter).await.map(Json)
    }

    /// The audit routes (admins only).
    /// What the OpenAPI document says audit filters take.
    pub fn rules() -> Vec<crate::api::rules::Rule> {
        crate::api::rules::paging("AuditFilter").into()
    }

    pub fn router<S>() -> OpenApiRouter<S>
    where
        S: Clone + Send + Sync + 'static,
        PgPool: axum::extract::FromRef<S>,
    {
        OpenApiRouter::new()
            .routes(routes!(filter))
            .routes(routes!(count))
    }
}
