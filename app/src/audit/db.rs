//! Reading the `audit_events` table (rows are written with the change they record, mostly
//! through `caller::record`).

use sqlx::PgExecutor;

use super::{AuditEvent, AuditFilter, AuditSort};
use crate::filter::Where;

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

/// One page (`limit`, `offset`) of the events that match, in the order asked for.
pub async fn page_of(
    db: impl PgExecutor<'_>,
    filter: &AuditFilter,
    page: (i64, i64),
) -> sqlx::Result<Vec<AuditEvent>> {
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
    w.query.build_query_as::<AuditEvent>().fetch_all(db).await
}

/// How many events match.
pub async fn count(db: impl PgExecutor<'_>, filter: &AuditFilter) -> sqlx::Result<i64> {
    let mut w = criteria("SELECT count(*) FROM audit_events", filter);
    w.query.build_query_scalar::<i64>().fetch_one(db).await
}

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
