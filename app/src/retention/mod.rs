//! Retention: data that grows forever is pruned by age.
//!
//! Run events, changes, sessions, idempotency keys and pending sign-ins follow the
//! server's settings; the audit trail is kept unless an admin sets a retention
//! (`/api/audit_events/retention`), and is then pruned by age only, through a database
//! function. One replica prunes at a time.

use serde::{Deserialize, Serialize};

pub mod db;
pub mod http;
pub mod service;

/// Longest audit retention an admin may set: a hundred years.
pub const MAX_AUDIT_DAYS: i32 = 36_500;

/// How long the audit trail is kept: `GET`/`PUT /api/audit_events/retention`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"days": 365}))]
#[serde(deny_unknown_fields)]
pub struct AuditRetention {
    /// Days audit events are kept (1 to 36500); `null` keeps them forever. Required: a
    /// body without it is refused rather than read as "forever".
    #[serde(deserialize_with = "Option::deserialize")]
    #[schema(required = true)]
    pub days: Option<i32>,
}
