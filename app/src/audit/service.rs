//! Reading the trail (admins only).

use sqlx::PgPool;

use super::{AuditEvent, AuditFilter, db};
use crate::caller::{Caller, Role};
use crate::error::Result;
use crate::filter::paging;

/// The events that match, in the order asked for.
#[tracing::instrument(name = "audit.filter", skip_all)]
pub async fn filter(pool: &PgPool, caller: &Caller, filter: &AuditFilter) -> Result<Vec<AuditEvent>> {
    caller.require(Role::Admin)?;
    let page = paging(filter.limit, filter.offset)?;
    Ok(db::page_of(pool, filter, page).await?)
}

/// How many events match.
#[tracing::instrument(name = "audit.count", skip_all)]
pub async fn count(pool: &PgPool, caller: &Caller, filter: &AuditFilter) -> Result<i64> {
    caller.require(Role::Admin)?;
    // Paging does not change a count, but a bad one is still refused.
    paging(filter.limit, filter.offset)?;
    Ok(db::count(pool, filter).await?)
}
