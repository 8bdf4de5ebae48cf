//! Writing the audit trail: one row per audited action, in the transaction of the change.

use sqlx::PgExecutor;

use super::{Caller, RequestMeta};

/// Whether an audited action went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It happened.
    Success,
    /// It was refused (bad credential, missing role).
    Denied,
    /// It was tried and failed (bad input, a conflict, a service down).
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
            Outcome::Failed => "failed",
        }
    }
}

/// Appends one audit event. Call it inside the transaction of the change it records, so the
/// change and its audit line commit together or not at all.
pub async fn append(
    db: impl PgExecutor<'_>,
    actor: &str,
    role: Option<&str>,
    action: &str,
    target: Option<&str>,
    outcome: Outcome,
    meta: &RequestMeta,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO audit_events (actor, role, action, target, request_id, outcome, source_addr)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        actor,
        role,
        action,
        target,
        meta.request_id,
        outcome.as_str(),
        meta.source_addr,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Appends a successful action of `caller`.
pub async fn success(
    db: impl PgExecutor<'_>,
    caller: &Caller,
    action: &str,
    target: &str,
) -> sqlx::Result<()> {
    append(
        db,
        &caller.actor,
        Some(caller.role.as_str()),
        action,
        Some(target),
        Outcome::Success,
        &caller.meta,
    )
    .await
}

/// Appends an action of `caller` with its `outcome` and `detail` (what changed, or why it
/// was refused; never a secret).
pub async fn with_detail(
    db: impl PgExecutor<'_>,
    caller: &Caller,
    action: &str,
    target: Option<&str>,
    outcome: Outcome,
    detail: &serde_json::Value,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO audit_events (actor, role, action, target, request_id, outcome, source_addr, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        caller.actor,
        caller.role.as_str(),
        action,
        target,
        caller.meta.request_id,
        outcome.as_str(),
        caller.meta.source_addr,
        detail,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Appends one successful `action` per entry (its caller and target), in one statement:
/// what a group of status reports writes.
pub async fn successes(
    db: impl PgExecutor<'_>,
    action: &str,
    entries: &[(&Caller, String)],
) -> sqlx::Result<()> {
    let actors: Vec<&str> = entries.iter().map(|(c, _)| c.actor.as_str()).collect();
    let roles: Vec<&str> = entries.iter().map(|(c, _)| c.role.as_str()).collect();
    let targets: Vec<&str> = entries.iter().map(|(_, t)| t.as_str()).collect();
    let request_ids: Vec<&str> = entries.iter().map(|(c, _)| c.meta.request_id.as_str()).collect();
    let sources: Vec<Option<&str>> = entries
        .iter()
        .map(|(c, _)| c.meta.source_addr.as_deref())
        .collect();
    sqlx::query!(
        "INSERT INTO audit_events (actor, role, action, target, request_id, outcome, source_addr)
         SELECT actor, role, $3, target, request_id, $6, source_addr
         FROM unnest($1::text[], $2::text[], $4::text[], $5::text[], $7::text[])
              AS e(actor, role, target, request_id, source_addr)",
        &actors as &[&str],
        &roles as &[&str],
        action,
        &targets as &[&str],
        &request_ids as &[&str],
        Outcome::Success.as_str(),
        &sources as &[Option<&str>],
    )
    .execute(db)
    .await?;
    Ok(())
}
