//! The audit retention setting (admins only, audited) and the pruner.
//!
//! The pruner is a background worker that, on one replica at a time, deletes what is older
//! than its retention in short batches, pausing between them so that requests are never
//! starved.

use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::watch;

use super::db::{self, Table};
use super::{AuditRetention, MAX_AUDIT_DAYS};
use crate::caller::{Caller, Role};
use crate::error::{AppError, Result};
use crate::shutdown::stopped_while;
use crate::telemetry::metrics::metrics;

/// Most rows one audit pruning call deletes (`flowdeck_prune_audit` caps it there too).
const MAX_BATCH: i32 = 10_000;

/// How long each kind of data is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Run events, by when they were recorded (`FLOWDECK_RETAIN_RUN_EVENTS_DAYS`).
    pub run_events: Duration,
    /// The change feed (`FLOWDECK_RETAIN_CHANGES_HOURS`).
    pub changes: Duration,
    /// Sessions after they ended, expired or revoked (`FLOWDECK_RETAIN_SESSIONS_DAYS`).
    pub sessions: Duration,
    /// `Idempotency-Key` records (`FLOWDECK_RETAIN_IDEMPOTENCY_HOURS`).
    pub idempotency_keys: Duration,
    /// OpenID Connect sign-ins never completed (they are good for ten minutes).
    pub oidc_logins: Duration,
}

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

impl Default for Retention {
    fn default() -> Self {
        Retention {
            run_events: DAY * 90,
            changes: HOUR * 24,
            sessions: DAY * 7,
            idempotency_keys: HOUR * 24,
            oidc_logins: HOUR,
        }
    }
}

impl Retention {
    /// How long rows of `table` are kept.
    pub fn of(&self, table: Table) -> Duration {
        match table {
            Table::RunEvents => self.run_events,
            Table::Changes => self.changes,
            Table::Sessions => self.sessions,
            Table::IdempotencyKeys => self.idempotency_keys,
            Table::OidcLogins => self.oidc_logins,
        }
    }
}

/// The pruner's settings.
#[derive(Debug, Clone)]
pub struct Pruner {
    /// How long each kind of data is kept.
    pub retention: Retention,
    /// Time from the end of one pass to the start of the next.
    pub interval: Duration,
    /// Rows deleted per statement (1 to 10,000), each statement its own transaction.
    pub batch: i32,
    /// Least pause after a batch; the pause is as long as the batch took if that is
    /// longer, so pruning holds its connection at most half the time.
    pub pause: Duration,
}

impl Pruner {
    /// A pruner with these retentions, passing every five minutes in batches of 5,000.
    pub fn new(retention: Retention) -> Self {
        Pruner {
            retention,
            interval: Duration::from_secs(300),
            batch: 5000,
            pause: Duration::from_millis(10),
        }
    }
}

/// What one pass deleted, by table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Pruned {
    /// Run events.
    pub run_events: u64,
    /// Changes.
    pub changes: u64,
    /// Sessions.
    pub sessions: u64,
    /// Idempotency keys.
    pub idempotency_keys: u64,
    /// Pending sign-ins.
    pub oidc_logins: u64,
    /// Audit events.
    pub audit_events: u64,
}

impl Pruned {
    fn count(&mut self, table: Table) -> &mut u64 {
        match table {
            Table::RunEvents => &mut self.run_events,
            Table::Changes => &mut self.changes,
            Table::Sessions => &mut self.sessions,
            Table::IdempotencyKeys => &mut self.idempotency_keys,
            Table::OidcLogins => &mut self.oidc_logins,
        }
    }

    /// Rows deleted from `table`.
    pub fn of(mut self, table: Table) -> u64 {
        *self.count(table)
    }
}

/// What one batch deletes from.
#[derive(Debug, Clone, Copy)]
enum Target {
    Table(Table),
    Audit,
}

/// Deletes `target`'s old rows batch by batch until a batch comes back short (or the
/// process is stopping); returns how many.
async fn drain(
    conn: &mut PgConnection,
    pruner: &Pruner,
    target: Target,
    shutdown: &mut watch::Receiver<bool>,
) -> sqlx::Result<u64> {
    let batch = pruner.batch.clamp(1, MAX_BATCH);
    let full = u64::from(batch.unsigned_abs());
    let mut total = 0;
    loop {
        let started = Instant::now();
        let deleted = match target {
            Target::Table(table) => {
                let age = pruner.retention.of(table).as_secs_f64();
                db::delete_older(&mut *conn, table, age, i64::from(batch)).await?
            }
            Target::Audit => db::prune_audit(&mut *conn, batch).await?,
        };
        total += deleted;
        if deleted < full {
            return Ok(total);
        }
        let pause = tokio::time::sleep(pruner.pause.max(started.elapsed()));
        if stopped_while(pause, shutdown).await {
            return Ok(total);
        }
    }
}

/// Prunes every table on `conn`, which holds the lock; each call of `flowdeck_prune_audit`
/// that deletes audit events records them (`audit.pruned`) itself.
async fn prune_all(
    conn: &mut PgConnection,
    pruner: &Pruner,
    shutdown: &mut watch::Receiver<bool>,
) -> sqlx::Result<Pruned> {
    let mut pruned = Pruned::default();
    for table in Table::ALL {
        let deleted = drain(conn, pruner, Target::Table(table), shutdown).await?;
        *pruned.count(table) = deleted;
    }
    if db::audit_retention_days(&mut *conn).await?.is_some() {
        pruned.audit_events = drain(conn, pruner, Target::Audit, shutdown).await?;
    }
    Ok(pruned)
}

/// One pass over every table, unless another replica is pruning (`None`).
///
/// The pass runs on a connection of its own, outside the pool, so requests never wait for
/// one; it holds the pruner's session lock, which goes with the connection however the
/// pass ends.
pub async fn prune_once(
    pool: &PgPool,
    pruner: &Pruner,
    shutdown: &mut watch::Receiver<bool>,
) -> sqlx::Result<Option<Pruned>> {
    let mut conn = PgConnection::connect_with(&pool.connect_options()).await?;
    let outcome = if db::try_lock(&mut conn).await? {
        prune_all(&mut conn, pruner, shutdown).await.map(Some)
    } else {
        Ok(None)
    };
    // Closing the session releases the lock.
    conn.close().await.ok();
    outcome
}

/// Prunes every `pruner.interval`, starting now, until `shutdown`; one log line per pass.
pub async fn run(pool: PgPool, pruner: Pruner, mut shutdown: watch::Receiver<bool>) {
    loop {
        let started = Instant::now();
        match prune_once(&pool, &pruner, &mut shutdown).await {
            Ok(Some(pruned)) => {
                let m = metrics();
                for table in Table::ALL {
                    m.pruned(table.name(), pruned.of(table));
                }
                m.pruned("audit_events", pruned.audit_events);
                m.prune_pass("pruned");
                tracing::info!(
                    pruned.run_events = pruned.run_events,
                    pruned.changes = pruned.changes,
                    pruned.sessions = pruned.sessions,
                    pruned.idempotency_keys = pruned.idempotency_keys,
                    pruned.oidc_logins = pruned.oidc_logins,
                    pruned.audit_events = pruned.audit_events,
                    elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    "pruned old rows"
                );
            }
            Ok(None) => {
                metrics().prune_pass("skipped");
                tracing::debug!("another replica is pruning; pass skipped");
            }
            Err(error) => {
                metrics().prune_pass("failed");
                tracing::warn!(%error, "pruning failed; retrying at the next pass");
            }
        }
        if stopped_while(tokio::time::sleep(pruner.interval), &mut shutdown).await {
            return;
        }
    }
}

/// How long the audit trail is kept (admins only).
#[tracing::instrument(name = "retention.audit_get", skip_all)]
pub async fn audit_retention(pool: &PgPool, caller: &Caller) -> Result<AuditRetention> {
    caller.require(Role::Admin)?;
    let days = db::audit_retention_days(pool).await?;
    Ok(AuditRetention { days })
}

/// Sets how long the audit trail is kept (admins only); the change and its audit event,
/// with the old and new values, commit together.
#[tracing::instrument(name = "retention.audit_set", skip_all)]
pub async fn set_audit_retention(
    pool: &PgPool,
    caller: &Caller,
    retention: AuditRetention,
) -> Result<AuditRetention> {
    caller.require(Role::Admin)?;
    if retention
        .days
        .is_some_and(|days| !(1..=MAX_AUDIT_DAYS).contains(&days))
    {
        return Err(AppError::invalid(
            "days",
            format!(
                "must be a whole number of days from 1 to {MAX_AUDIT_DAYS}, or null to keep the trail forever"
            ),
        ));
    }
    let old = db::set_audit_retention(pool, retention.days, caller).await?;
    tracing::info!(old_days = old, new_days = retention.days, "audit retention set");
    Ok(retention)
}
