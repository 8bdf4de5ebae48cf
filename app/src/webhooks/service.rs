//! Endpoint operations (admins only): each checks its input, writes and audits in one
//! transaction. Secrets are never written to the audit trail or the logs.

use base64::Engine;
use chrono::Utc;
use rand::RngCore;
use sqlx::PgPool;

use super::db::{self, EndpointRow};
use super::{
    CreatedEndpoint, Delivery, EVENT_TYPES, Endpoint, EndpointFilter, EndpointPatch, Format, MAX_DESCRIPTION,
    MAX_URL, NewEndpoint, SecretRotation,
};
use crate::api::rules::check_text;
use crate::caller::{Caller, Role, record};
use crate::error::{AppError, Result};
use crate::filter::paging;

/// Longest overlap of a secret rotation, in hours: a week.
pub const MAX_OVERLAP_HOURS: u32 = 168;
/// Most ids or tags an endpoint filters on.
const MAX_ITEMS: usize = 100;

/// A new signing secret: `whsec_` and 24 random bytes in base64, as Standard Webhooks
/// libraries read it.
fn new_secret() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// Checks an endpoint's URL: http(s), a host, no user or password (which would end up in
/// logs), at most [`MAX_URL`] characters. Where it points is checked at each delivery.
pub fn check_url(url: &str) -> Result<()> {
    let bad = |reason: &str| Err(AppError::invalid("url", reason));
    if url.len() > MAX_URL {
        return bad("must be at most 2048 characters");
    }
    let Ok(parsed) = url::Url::parse(url) else {
        return bad("must be an absolute http or https URL");
    };
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
        return bad("must be an absolute http or https URL");
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return bad("must not carry a user or password (the signature authenticates Flowdeck)");
    }
    Ok(())
}

/// `scheme://host[:port]` of a URL, safe to log.
pub fn origin(url: &str) -> String {
    url::Url::parse(url).map_or_else(|_| "?".to_owned(), |u| u.origin().ascii_serialization())
}

/// The settings of an endpoint, checked.
struct Settings {
    url: String,
    description: String,
    event_types: Vec<String>,
    pipeline_ids: Vec<i64>,
    tags: Vec<String>,
    format: Format,
}

impl Settings {
    fn check(mut self) -> Result<Self> {
        check_url(&self.url)?;
        if self.description.chars().count() > MAX_DESCRIPTION || self.description.contains('\0') {
            return Err(AppError::invalid(
                "description",
                format!("must be at most {MAX_DESCRIPTION} characters"),
            ));
        }
        if self.event_types.is_empty() {
            return Err(AppError::invalid(
                "event_types",
                "must name at least one event type",
            ));
        }
        if let Some(unknown) = self
            .event_types
            .iter()
            .find(|t| !EVENT_TYPES.contains(&t.as_str()))
        {
            return Err(AppError::invalid(
                "event_types",
                format!("{unknown:?} is not one of {}", EVENT_TYPES.join(", ")),
            ));
        }
        if self.pipeline_ids.len() > MAX_ITEMS || self.tags.len() > MAX_ITEMS {
            return Err(AppError::invalid(
                "pipeline_ids",
                format!("at most {MAX_ITEMS} pipeline ids and {MAX_ITEMS} tags"),
            ));
        }
        if self.pipeline_ids.iter().any(|id| *id <= 0) {
            return Err(AppError::invalid(
                "pipeline_ids",
                "must be pipeline ids (positive)",
            ));
        }
        for tag in &self.tags {
            check_text("tags", tag, 100)?;
        }
        for list in [&mut self.event_types, &mut self.tags] {
            list.sort();
            list.dedup();
        }
        self.pipeline_ids.sort_unstable();
        self.pipeline_ids.dedup();
        Ok(self)
    }

    fn row(&self) -> EndpointRow<'_> {
        EndpointRow {
            url: &self.url,
            description: &self.description,
            event_types: &self.event_types,
            pipeline_ids: &self.pipeline_ids,
            tags: &self.tags,
            format: self.format,
        }
    }

    /// What the audit trail keeps of them: the URL's origin only (a receiver's path may
    /// itself be a credential, as Slack's are), never a secret.
    fn detail(&self) -> serde_json::Value {
        serde_json::json!({
            "origin": origin(&self.url), "event_types": self.event_types,
            "pipeline_ids": self.pipeline_ids, "tags": self.tags, "format": self.format,
        })
    }
}

/// Creates an endpoint; its secret is in the answer only.
#[tracing::instrument(name = "webhooks.create", skip_all)]
pub async fn create(pool: &PgPool, caller: &Caller, new: NewEndpoint) -> Result<CreatedEndpoint> {
    caller.require(Role::Admin)?;
    let settings = Settings {
        url: new.url,
        description: new.description.unwrap_or_default(),
        event_types: new.event_types,
        pipeline_ids: new.pipeline_ids.unwrap_or_default(),
        tags: new.tags.unwrap_or_default(),
        format: new.format.unwrap_or_default(),
    }
    .check()?;
    let secret = new_secret();
    let mut tx = pool.begin().await?;
    let id = db::insert(&mut *tx, &settings.row(), &secret, &caller.actor).await?;
    let target = format!("webhook:{id}");
    record::with_detail(
        &mut *tx,
        caller,
        "webhook.create",
        Some(&target),
        record::Outcome::Success,
        &settings.detail(),
    )
    .await?;
    tx.commit().await?;
    Ok(CreatedEndpoint {
        endpoint: db::fetch(pool, id).await?,
        secret,
    })
}

/// One endpoint.
pub async fn get(pool: &PgPool, caller: &Caller, id: i64) -> Result<Endpoint> {
    caller.require(Role::Admin)?;
    db::fetch(pool, id).await
}

/// The endpoints that match, newest first.
pub async fn filter(pool: &PgPool, caller: &Caller, filter: &EndpointFilter) -> Result<Vec<Endpoint>> {
    caller.require(Role::Admin)?;
    let page = paging(filter.limit, filter.offset)?;
    let mut w = db::criteria(db::COLUMNS, filter);
    w.page(" ORDER BY id DESC", page);
    let rows = w.query.build_query_as::<db::Row>().fetch_all(pool).await?;
    Ok(rows.into_iter().map(Endpoint::from).collect())
}

/// How many endpoints match.
pub async fn count(pool: &PgPool, caller: &Caller, filter: &EndpointFilter) -> Result<i64> {
    caller.require(Role::Admin)?;
    paging(filter.limit, filter.offset)?;
    let mut w = db::criteria("SELECT count(*) FROM webhook_endpoints", filter);
    Ok(w.query.build_query_scalar::<i64>().fetch_one(pool).await?)
}

/// Changes what `patch` names.
#[tracing::instrument(name = "webhooks.update", skip_all)]
pub async fn update(pool: &PgPool, caller: &Caller, id: i64, patch: EndpointPatch) -> Result<Endpoint> {
    caller.require(Role::Admin)?;
    let mut tx = pool.begin().await?;
    let current = db::fetch(&mut *tx, id).await?;
    let settings = Settings {
        url: patch.url.unwrap_or(current.url),
        description: patch.description.unwrap_or(current.description),
        event_types: patch.event_types.unwrap_or(current.event_types),
        pipeline_ids: patch.pipeline_ids.unwrap_or(current.pipeline_ids),
        tags: patch.tags.unwrap_or(current.tags),
        format: patch.format.unwrap_or(current.format),
    }
    .check()?;
    let enabled = patch.enabled.unwrap_or(current.enabled);
    db::update(&mut *tx, id, &settings.row(), enabled).await?;
    let mut detail = settings.detail();
    detail["enabled"] = serde_json::json!(enabled);
    let target = format!("webhook:{id}");
    record::with_detail(
        &mut *tx,
        caller,
        "webhook.update",
        Some(&target),
        record::Outcome::Success,
        &detail,
    )
    .await?;
    tx.commit().await?;
    db::fetch(pool, id).await
}

/// Deletes an endpoint with its deliveries.
#[tracing::instrument(name = "webhooks.delete", skip_all)]
pub async fn delete(pool: &PgPool, caller: &Caller, id: i64) -> Result<()> {
    caller.require(Role::Admin)?;
    let mut tx = pool.begin().await?;
    if !db::delete(&mut *tx, id).await? {
        return Err(AppError::not_found("Webhook endpoint"));
    }
    record::success(&mut *tx, caller, "webhook.delete", &format!("webhook:{id}")).await?;
    tx.commit().await?;
    Ok(())
}

/// Gives an endpoint a new secret; deliveries carry both signatures for the overlap.
#[tracing::instrument(name = "webhooks.rotate", skip_all)]
pub async fn rotate(
    pool: &PgPool,
    caller: &Caller,
    id: i64,
    rotation: SecretRotation,
) -> Result<CreatedEndpoint> {
    caller.require(Role::Admin)?;
    let hours = rotation.overlap_hours.unwrap_or(24);
    if hours > MAX_OVERLAP_HOURS {
        return Err(AppError::invalid(
            "overlap_hours",
            format!("must be at most {MAX_OVERLAP_HOURS} (a week)"),
        ));
    }
    let secret = new_secret();
    let until = Utc::now() + chrono::Duration::hours(i64::from(hours));
    let mut tx = pool.begin().await?;
    if !db::rotate(&mut *tx, id, &secret, until).await? {
        return Err(AppError::not_found("Webhook endpoint"));
    }
    record::success(&mut *tx, caller, "webhook.rotate", &format!("webhook:{id}")).await?;
    tx.commit().await?;
    Ok(CreatedEndpoint {
        endpoint: db::fetch(pool, id).await?,
        secret,
    })
}

/// An endpoint with its latest 50 deliveries and their attempts.
pub async fn detail(pool: &PgPool, caller: &Caller, id: i64) -> Result<(Endpoint, Vec<Delivery>)> {
    caller.require(Role::Admin)?;
    let endpoint = db::fetch(pool, id).await?;
    Ok((endpoint, db::deliveries(pool, &[id], 50).await?))
}

/// The newest 200 endpoints, each with its latest `per_endpoint` deliveries (the admin
/// page).
pub async fn overview(
    pool: &PgPool,
    caller: &Caller,
    per_endpoint: i64,
) -> Result<Vec<(Endpoint, Vec<Delivery>)>> {
    let filter = EndpointFilter {
        limit: Some(200),
        ..EndpointFilter::default()
    };
    let endpoints = self::filter(pool, caller, &filter).await?;
    let ids: Vec<i64> = endpoints.iter().map(|e| e.id).collect();
    let mut deliveries = db::deliveries(pool, &ids, per_endpoint).await?;
    Ok(endpoints
        .into_iter()
        .map(|endpoint| {
            let (own, rest) = deliveries.drain(..).partition(|d| d.endpoint_id == endpoint.id);
            deliveries = rest;
            (endpoint, own)
        })
        .collect())
}

/// Sends a delivery again, whatever became of it.
#[tracing::instrument(name = "webhooks.resend", skip_all)]
pub async fn resend(pool: &PgPool, caller: &Caller, delivery_id: i64) -> Result<()> {
    caller.require(Role::Admin)?;
    let mut tx = pool.begin().await?;
    db::resend(&mut *tx, delivery_id)
        .await?
        .ok_or_else(|| AppError::not_found("Webhook delivery"))?;
    let target = format!("webhook_delivery:{delivery_id}");
    record::success(&mut *tx, caller, "webhook.resend", &target).await?;
    // Delivered at commit: the deliverers wake once the delivery is due.
    sqlx::query("SELECT pg_notify('flowdeck_webhooks', '')")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}
