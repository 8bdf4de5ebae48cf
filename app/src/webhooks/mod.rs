//! Signed outbound webhooks for run and pipeline events (Standard Webhooks).
//!
//! Admins subscribe endpoints to event types, optionally for some pipelines. The database
//! queues one delivery per endpoint and event in the transaction of the change that caused
//! it (migration 20's triggers), and every replica's deliverer ([`deliver::run`]) claims due
//! deliveries, signs them (`webhook-id`, `webhook-timestamp`, `webhook-signature`) and
//! sends them to addresses it has checked are public, retrying with backoff for a day.

use chrono::{DateTime, Utc};
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;
use crate::filter::{IdFilter, TextFilter};

pub mod endpoint_page;
pub mod page;

#[cfg(feature = "ssr")]
pub mod db;
#[cfg(feature = "ssr")]
pub mod deliver;
#[cfg(feature = "ssr")]
pub mod http;
#[cfg(feature = "ssr")]
pub mod service;

/// The events an endpoint may subscribe to.
pub const EVENT_TYPES: [&str; 8] = [
    "run.completed",
    "run.failed",
    "run.crashed",
    "run.cancelled",
    "run.stuck",
    "run.recovered",
    "pipeline.created",
    "pipeline.deleted",
];

/// Longest endpoint URL.
pub const MAX_URL: usize = 2048;
/// Longest description.
pub const MAX_DESCRIPTION: usize = 500;

/// How a delivery's body is shaped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// The Standard Webhooks body: `{type, timestamp, data}`.
    #[default]
    Standard,
    /// A Slack incoming-webhook body (`text` and `blocks`), still signed.
    Slack,
}

impl Format {
    /// The name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Standard => "standard",
            Format::Slack => "slack",
        }
    }
}

/// A webhook endpoint as admins see it: never its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct Endpoint {
    /// Endpoint id.
    pub id: i64,
    /// Where deliveries are sent (`https://…`).
    pub url: String,
    /// What it is for.
    pub description: String,
    /// The events it gets.
    pub event_types: Vec<String>,
    /// Only these pipelines' events (with `tags`); none: every pipeline.
    pub pipeline_ids: Vec<i64>,
    /// Only events of pipelines carrying one of these tags (with `pipeline_ids`).
    pub tags: Vec<String>,
    /// The body's shape.
    pub format: Format,
    /// Whether deliveries are sent.
    pub enabled: bool,
    /// Why it was disabled (`410 Gone`, failing for a day, an admin).
    pub disabled_reason: Option<String>,
    /// Since when every attempt has failed, if so.
    pub failing_since: Option<DateTime<Utc>>,
    /// Until when the previous secret's signature is sent too (a rotation's overlap).
    pub previous_secret_until: Option<DateTime<Utc>>,
    /// Who created it.
    pub created_by: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// An endpoint just created or given a new secret: its details and, this once, the secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct CreatedEndpoint {
    /// The endpoint.
    #[serde(flatten)]
    pub endpoint: Endpoint,
    /// The signing secret (`whsec_…`), shown only now.
    pub secret: String,
}

/// `POST /api/webhooks/`.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"url": "https://hooks.example.com/flowdeck", "description": "on-call", "event_types": ["run.failed", "run.crashed"], "tags": ["marketing"]})))]
#[serde(deny_unknown_fields)]
pub struct NewEndpoint {
    /// Where to send deliveries: `https://` (or `http://`), no user or password in it.
    pub url: String,
    /// What it is for.
    #[serde(default)]
    pub description: Option<String>,
    /// One or more of the event types.
    pub event_types: Vec<String>,
    /// Only these pipelines' events.
    #[serde(default)]
    pub pipeline_ids: Option<Vec<i64>>,
    /// Only events of pipelines with one of these tags.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// The body's shape (default `standard`).
    #[serde(default)]
    pub format: Option<Format>,
}

/// `PATCH /api/webhooks/{id}`: what changes (the rest stays).
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"event_types": ["run.failed"], "enabled": true})))]
#[serde(deny_unknown_fields)]
pub struct EndpointPatch {
    /// New URL.
    #[serde(default)]
    pub url: Option<String>,
    /// New description.
    #[serde(default)]
    pub description: Option<String>,
    /// New event types.
    #[serde(default)]
    pub event_types: Option<Vec<String>>,
    /// New pipeline ids.
    #[serde(default)]
    pub pipeline_ids: Option<Vec<i64>>,
    /// New tags.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// New format.
    #[serde(default)]
    pub format: Option<Format>,
    /// Enable (clears the reason it was disabled) or disable.
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// `POST /api/webhooks/{id}/rotate`.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"overlap_hours": 24})))]
#[serde(deny_unknown_fields)]
pub struct SecretRotation {
    /// How long the old secret's signature is sent beside the new one (default 24, at
    /// most 168).
    #[serde(default)]
    pub overlap_hours: Option<u32>,
}

/// Criteria on endpoints.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EndpointCriteria {
    /// By id.
    #[serde(default, deserialize_with = "crate::filter::optional_object")]
    pub id: Option<IdFilter>,
    /// By URL.
    #[serde(default, deserialize_with = "crate::filter::optional_object")]
    pub url: Option<TextFilter>,
}

/// `POST /api/webhooks/filter` and `/count`.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"webhooks": {"url": {"like_": "example.com"}}, "limit": 50})))]
#[serde(deny_unknown_fields)]
pub struct EndpointFilter {
    /// Criteria.
    #[serde(default, deserialize_with = "crate::filter::object")]
    pub webhooks: EndpointCriteria,
    /// At most this many (1 to 200, default 50).
    #[serde(default)]
    pub limit: Option<i64>,
    /// Skip this many first.
    #[serde(default)]
    pub offset: Option<i64>,
}

/// One attempt at a delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct Attempt {
    /// When it was made.
    pub attempted_at: DateTime<Utc>,
    /// The receiver's status, if it answered.
    pub status_code: Option<i32>,
    /// How long it took.
    pub latency_ms: i32,
    /// The start of the answer's body.
    pub response_excerpt: Option<String>,
    /// Why there was no answer (refused address, time-out, connection).
    pub error: Option<String>,
}

/// A delivery of one event to one endpoint, with its attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct Delivery {
    /// Delivery id.
    pub id: i64,
    /// The endpoint.
    pub endpoint_id: i64,
    /// `webhook-id`, the same on every attempt.
    pub message_id: String,
    /// The event type.
    pub event_type: String,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    /// Attempts so far.
    pub attempts: i32,
    /// When the next attempt is due (pending only).
    pub next_attempt_at: DateTime<Utc>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When the event happened.
    pub created_at: DateTime<Utc>,
    /// When the receiver accepted it.
    pub delivered_at: Option<DateTime<Utc>>,
    /// The attempts, oldest first.
    pub attempt_log: Vec<Attempt>,
}

/// The New endpoint form's event checkboxes (a ticked box sends `on`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EventChoice {
    #[serde(default)]
    run_completed: Option<String>,
    #[serde(default)]
    run_failed: Option<String>,
    #[serde(default)]
    run_crashed: Option<String>,
    #[serde(default)]
    run_cancelled: Option<String>,
    #[serde(default)]
    run_stuck: Option<String>,
    #[serde(default)]
    run_recovered: Option<String>,
    #[serde(default)]
    pipeline_created: Option<String>,
    #[serde(default)]
    pipeline_deleted: Option<String>,
}

impl EventChoice {
    /// The boxes of a submitted form, each named like its event type with `_` for `.`
    /// (`run_failed`), ticked when `ticked` says so.
    pub fn ticked(ticked: impl Fn(&str) -> bool) -> Self {
        let mut choice = EventChoice::default();
        for (name, on) in EVENT_TYPES.iter().zip(choice.boxes()) {
            *on = ticked(&name.replace('.', "_")).then(|| "on".to_owned());
        }
        choice
    }

    /// The event types ticked, in [`EVENT_TYPES`]' order.
    pub fn types(&self) -> Vec<String> {
        let mut choice = self.clone();
        EVENT_TYPES
            .iter()
            .zip(choice.boxes())
            .filter(|(_, on)| on.is_some())
            .map(|(name, _)| (*name).to_owned())
            .collect()
    }

    /// The boxes, in [`EVENT_TYPES`]' order.
    fn boxes(&mut self) -> [&mut Option<String>; 8] {
        [
            &mut self.run_completed,
            &mut self.run_failed,
            &mut self.run_crashed,
            &mut self.run_cancelled,
            &mut self.run_stuck,
            &mut self.run_recovered,
            &mut self.pipeline_created,
            &mut self.pipeline_deleted,
        ]
    }
}

/// Every endpoint with its latest deliveries, for the admin page.
#[server(prefix = "/sfn", endpoint = "list_webhooks")]
pub async fn list_webhooks() -> Result<Vec<(Endpoint, Vec<Delivery>)>, AppError> {
    let db = expect_context::<sqlx::PgPool>();
    let caller = crate::caller::Caller::current()?;
    service::overview(&db, &caller, 5).await
}

/// The admin page's endpoint table, rendered afresh.
#[server(prefix = "/sfn", endpoint = "webhook_table")]
pub async fn webhook_table() -> Result<String, AppError> {
    let endpoints = list_webhooks().await?;
    Ok(view! { <page::EndpointTable endpoints /> }.to_html())
}

/// Subscribes an endpoint from the admin page; answers the notice with its secret, once,
/// rendered. `tags` comma-separated; `format` `standard` or `slack`.
#[server(prefix = "/sfn", endpoint = "create_webhook")]
pub async fn create_webhook(
    url: String,
    description: Option<String>,
    tags: Option<String>,
    format: Option<String>,
    #[server(flatten)] events: EventChoice,
) -> Result<String, AppError> {
    let db = expect_context::<sqlx::PgPool>();
    let caller = crate::caller::Caller::current()?;
    let tags: Vec<String> = tags
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    let new = NewEndpoint {
        url: url.trim().to_owned(),
        description: description.filter(|d| !d.trim().is_empty()),
        event_types: events.types(),
        pipeline_ids: None,
        tags: (!tags.is_empty()).then_some(tags),
        format: Some(if format.as_deref() == Some("slack") {
            Format::Slack
        } else {
            Format::Standard
        }),
    };
    let created = service::create(&db, &caller, new).await?;
    let what = format!("Endpoint {} was created.", created.endpoint.id);
    Ok(view! { <page::NewSecret created what /> }.to_html())
}

/// Sends a delivery again from the admin page (a plain form: it comes back to the page).
#[server(prefix = "/sfn", endpoint = "resend_webhook_delivery")]
pub async fn resend_webhook_delivery(id: i64) -> Result<(), AppError> {
    let db = expect_context::<sqlx::PgPool>();
    let caller = crate::caller::Caller::current()?;
    service::resend(&db, &caller, id).await
}

/// One endpoint with its latest 50 deliveries and their attempts, for its page.
#[server(prefix = "/sfn", endpoint = "webhook_detail")]
pub async fn webhook_detail(id: i64) -> Result<(Endpoint, Vec<Delivery>), AppError> {
    let db = expect_context::<sqlx::PgPool>();
    let caller = crate::caller::Caller::current()?;
    service::detail(&db, &caller, id).await
}

/// Enables (clearing why it was disabled) or disables an endpoint from its page (a plain
/// form: it comes back to the page).
#[server(prefix = "/sfn", endpoint = "set_webhook_enabled")]
pub async fn set_webhook_enabled(id: i64, enabled: bool) -> Result<(), AppError> {
    let db = expect_context::<sqlx::PgPool>();
    let caller = crate::caller::Caller::current()?;
    let patch = EndpointPatch {
        enabled: Some(enabled),
        ..EndpointPatch::default()
    };
    service::update(&db, &caller, id, patch).await.map(drop)
}

/// Gives an endpoint a new signing secret from its page; answers the notice with it,
/// once, rendered. The old secret still signs for `overlap_hours` (default 24).
#[server(prefix = "/sfn", endpoint = "rotate_webhook_secret")]
pub async fn rotate_webhook_secret(id: i64, overlap_hours: Option<u32>) -> Result<String, AppError> {
    let db = expect_context::<sqlx::PgPool>();
    let caller = crate::caller::Caller::current()?;
    let created = service::rotate(&db, &caller, id, SecretRotation { overlap_hours }).await?;
    let what = format!(
        "Endpoint {} has a new secret. Deliveries carry the old secret's signature too until {}.",
        created.endpoint.id,
        crate::ui::when(created.endpoint.previous_secret_until)
    );
    Ok(view! { <page::NewSecret created what /> }.to_html())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boxes_ticked_are_the_event_types_chosen() {
        let choice = EventChoice::ticked(|name| name == "run_failed" || name == "pipeline_created");
        assert_eq!(choice.types(), ["run.failed", "pipeline.created"]);
        assert!(EventChoice::ticked(|_| false).types().is_empty());
        assert_eq!(EventChoice::ticked(|_| true).types(), EVENT_TYPES);
    }
}
