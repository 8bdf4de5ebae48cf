//! Queries of the pruner and of the audit retention setting.

use sqlx::{PgConnection, PgExecutor};

use crate::caller::Caller;

/// The pruner's advisory lock key (`flowdeck` in ASCII): whoever holds it prunes.
const LOCK_KEY: i64 = 0x666c_6f77_6465_636b;

/// A table the pruner deletes from by a setting's age, with its own age rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Run history, by when it was recorded.
    RunEvents,
    /// The change feed, by when the change was made.
    Changes,
    /// Browser sessions, by when they ended (expired or revoked).
    Sessions,
    /// `Idempotency-Key` records, by when the key was first used.
    IdempotencyKeys,
    /// OpenID Connect sign-ins that were never completed, by when they began.
    OidcLogins,
}

impl Table {
    /// Every table, in the order a pass prunes them.
    pub const ALL: [Table; 5] = [
        Table::RunEvents,
        Table::Changes,
        Table::Sessions,
        Table::IdempotencyKeys,
        Table::OidcLogins,
    ];

    /// The table's name.
    pub fn name(self) -> &'static str {
        match self {
            Table::RunEvents => "run_events",
            Table::Changes => "changes",
            Table::Sessions => "sessions",
            Table::IdempotencyKeys => "idempotency_keys",
            Table::OidcLogins => "oidc_logins",
        }
    }
}

/// Deletes at most `batch` rows of `table` older than `age_seconds`, oldest first (along
/// the table's age index); returns how many.
pub async fn delete_older(
    db: impl PgExecutor<'_>,
    table: Table,
    age_seconds: f64,
    batch: i64,
) -> sqlx::Result<u64> {
    // `= ANY(ARRAY(...))` picks the rows first, then deletes them by key.
    let done = match table {
        Table::RunEvents => {
            sqlx::query!(
                "DELETE FROM run_events WHERE id = ANY(ARRAY(
                     SELECT id FROM run_events WHERE recorded_at < now() - make_interval(secs => $1)
                     ORDER BY recorded_at LIMIT $2))",
                age_seconds,
                batch
            )
            .execute(db)
            .await?
        }
        Table::Changes => {
            sqlx::query!(
                "DELETE FROM changes WHERE id = ANY(ARRAY(
                     SELECT id FROM changes WHERE created_at < now() - make_interval(secs => $1)
                     ORDER BY created_at LIMIT $2))",
                age_seconds,
                batch
            )
            .execute(db)
            .await?
        }
        Table::Sessions => {
            // Ended: expired, or revoked before that (least() skips a NULL revoked_at).
            sqlx::query!(
                "DELETE FROM sessions WHERE id = ANY(ARRAY(
                     SELECT id FROM sessions
                     WHERE least(expires_at, revoked_at) < now() - make_interval(secs => $1)
                     ORDER BY least(expires_at, revoked_at) LIMIT $2))",
                age_seconds,
                batch
            )
            .execute(db)
            .await?
        }
        Table::IdempotencyKeys => {
            sqlx::query!(
                "DELETE FROM idempotency_keys WHERE (actor, key) IN (
                     SELECT actor, key FROM idempotency_keys
                     WHERE created_at < now() - make_interval(secs => $1)
                     ORDER BY created_at LIMIT $2)",
                age_seconds,
                batch
            )
            .execute(db)
            .await?
        }
        Table::OidcLogins => {
            sqlx::query!(
                "DELETE FROM oidc_logins WHERE state_hash = ANY(ARRAY(
                     SELECT state_hash FROM oidc_logins
                     WHERE created_at < now() - make_interval(secs => $1) LIMIT $2))",
                age_seconds,
                batch
            )
            .execute(db)
            .await?
        }
    };
    Ok(done.rows_affected())
}

/// Deletes at most `batch` audit events older than the admin's retention (none while it is
/// unset) through `flowdeck_prune_audit`, which reads the retention itself; returns how many.
pub async fn prune_audit(db: impl PgExecutor<'_>, batch: i32) -> sqlx::Result<u64> {
    let deleted = sqlx::query_scalar!(r#"SELECT flowdeck_prune_audit($1) AS "deleted!""#, batch)
        .fetch_one(db)
        .await?;
    Ok(u64::try_from(deleted).unwrap_or(0))
}

/// The audit retention in days, `None` for forever.
pub async fn audit_retention_days(db: impl PgExecutor<'_>) -> sqlx::Result<Option<i32>> {
    sqlx::query_scalar!("SELECT audit_retention_days FROM settings")
        .fetch_one(db)
        .await
}

/// Sets the audit retention (`None`: keep forever) through `flowdeck_set_audit_retention`,
/// which writes the `audit.retention_set` row with it; returns the old retention.
pub async fn set_audit_retention(
    db: impl PgExecutor<'_>,
    days: Option<i32>,
    caller: &Caller,
) -> sqlx::Result<Option<i32>> {
    sqlx::query_scalar!(
        "SELECT flowdeck_set_audit_retention($1, $2, $3, $4, $5)",
        days,
        caller.actor,
        caller.role.as_str(),
        caller.meta.request_id,
        caller.meta.source_addr,
    )
    .fetch_one(db)
    .await
}

/// Takes the pruner's session lock on `conn` if no other session holds it.
pub async fn try_lock(conn: &mut PgConnection) -> sqlx::Result<bool> {
    sqlx::query_scalar!(r#"SELECT pg_try_advisory_lock($1) AS "locked!""#, LOCK_KEY)
        .fetch_one(conn)
        .await
}
