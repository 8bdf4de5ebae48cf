//! The key operations; each checks the admin role and writes its audit event in the
//! transaction of its change.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::db;
use super::{
    ApiKey, ApiKeyFilter, ApiKeySort, CreatedApiKey, DEFAULT_OVERLAP_MINUTES, KeyLimits, KeyState,
    MAX_NAME_LEN, MAX_OVERLAP_MINUTES, NewApiKey, Rotation,
};
use crate::auth::{budgets, secrets};
use crate::caller::{Budget, Caller, KeyScope, Role, record};
use crate::error::{AppError, Result};
use crate::filter::paging;

fn check_name(name: &str) -> Result<String> {
    crate::api::rules::check_text("name", name, MAX_NAME_LEN)?;
    Ok(name.to_owned())
}

/// A scope for a key of `role`, checked ([`KeyScope::checked`]) and its slugs and tags
/// text as the document describes it.
fn check_scope(scope: KeyScope, role: Role) -> Result<KeyScope> {
    let scope = scope.checked(role)?;
    for (field, names) in [("scope.slugs", &scope.slugs), ("scope.tags", &scope.tags)] {
        for name in names {
            crate::api::rules::check_text(field, name, crate::caller::scope::MAX_SCOPE_NAME)?;
        }
    }
    Ok(scope)
}

fn check_expiry(field: &str, at: Option<DateTime<Utc>>) -> Result<()> {
    match at {
        // Well-formed, but it clashes with the clock: a conflict, not a bad field.
        Some(at) if at <= Utc::now() => Err(AppError::conflict(format!("{field} is in the past"))),
        _ => Ok(()),
    }
}

/// A key as stored, before its secret is made.
struct Template<'a> {
    name: &'a str,
    role: Role,
    expires_at: Option<DateTime<Utc>>,
    rotated_from: Option<i64>,
    scope: &'a KeyScope,
    budget: Budget,
}

/// Stores a new key and returns it with its secret, which nobody will see again.
async fn insert(tx: &mut sqlx::PgConnection, key: Template<'_>, created_by: &str) -> Result<CreatedApiKey> {
    let secret = secrets::new_api_key();
    let row = db::NewKeyRow {
        name: key.name,
        role: key.role,
        key_prefix: &secret.shown_prefix,
        key_hash: &secret.hash,
        created_by,
        expires_at: key.expires_at,
        rotated_from: key.rotated_from,
        scope: key.scope,
        budget: key.budget,
    };
    let id = db::insert(&mut *tx, &row).await?;
    Ok(CreatedApiKey {
        key: db::fetch(&mut *tx, id).await?,
        secret: secret.clear,
    })
}

/// Creates a key.
#[tracing::instrument(name = "api_keys.create", skip_all)]
pub async fn create(db: &PgPool, caller: &Caller, new: NewApiKey) -> Result<CreatedApiKey> {
    caller.require(Role::Admin)?;
    let name = check_name(&new.name)?;
    check_expiry("expires_at", new.expires_at)?;
    let scope = check_scope(new.scope, new.role)?;
    let budget = new.budget.checked()?;
    let mut tx = db.begin().await?;
    let key = Template {
        name: &name,
        role: new.role,
        expires_at: new.expires_at,
        rotated_from: None,
        scope: &scope,
        budget,
    };
    let created = insert(&mut tx, key, &caller.actor).await?;
    let target = format!("api_key:{}", created.key.id);
    let detail = serde_json::json!({"role": new.role, "scope": scope, "budget": budget});
    record::with_detail(
        &mut *tx,
        caller,
        "api_key.create",
        Some(&target),
        record::Outcome::Success,
        &detail,
    )
    .await?;
    tx.commit().await?;
    Ok(created)
}

/// One key.
#[tracing::instrument(name = "api_keys.get", skip_all)]
pub async fn get(db: &PgPool, caller: &Caller, id: i64) -> Result<ApiKey> {
    caller.require(Role::Admin)?;
    let mut keys = with_usage(db, vec![db::fetch(db, id).await?]).await?;
    Ok(keys.remove(0))
}

/// Keys with what they have spent of their budgets, for those that have budgets.
async fn with_usage(db: &PgPool, mut keys: Vec<ApiKey>) -> Result<Vec<ApiKey>> {
    let budgeted: Vec<i64> = keys.iter().filter(|k| k.budget.limits()).map(|k| k.id).collect();
    if budgeted.is_empty() {
        return Ok(keys);
    }
    let mut spent = budgets::usage(db, &budgeted).await?;
    for key in &mut keys {
        key.usage = spent.remove(&key.id);
    }
    Ok(keys)
}

/// Replaces a key's scope or budgets; audited with both, and announced to every replica
/// (which read the key again at its next use).
#[tracing::instrument(name = "api_keys.limit", skip_all)]
pub async fn limit(db: &PgPool, caller: &Caller, id: i64, limits: KeyLimits) -> Result<ApiKey> {
    caller.require(Role::Admin)?;
    not_in_use(caller, id)?;
    let mut tx = db.begin().await?;
    let key = db::lock(&mut tx, id).await?;
    if key.state == KeyState::Revoked {
        return Err(AppError::conflict(format!("API key {id} is revoked")));
    }
    let scope = check_scope(limits.scope.unwrap_or(key.scope.clone()), key.role)?;
    let budget = limits.budget.unwrap_or(key.budget).checked()?;
    db::set_limits(&mut *tx, id, &scope, budget).await?;
    let detail = serde_json::json!({
        "before": {"scope": key.scope, "budget": key.budget},
        "after": {"scope": scope, "budget": budget},
    });
    let target = format!("api_key:{id}");
    record::with_detail(
        &mut *tx,
        caller,
        "api_key.limit",
        Some(&target),
        record::Outcome::Success,
        &detail,
    )
    .await?;
    tx.commit().await?;
    let mut keys = with_usage(db, vec![db::fetch(db, id).await?]).await?;
    Ok(keys.remove(0))
}

/// The keys that match, in the order asked for.
#[tracing::instrument(name = "api_keys.filter", skip_all)]
pub async fn filter(db: &PgPool, caller: &Caller, filter: &ApiKeyFilter) -> Result<Vec<ApiKey>> {
    caller.require(Role::Admin)?;
    let page = paging(filter.limit, filter.offset)?;
    let mut w = db::criteria(db::COLUMNS, filter);
    let order = match filter.sort {
        ApiKeySort::CreatedDesc => " ORDER BY created_at DESC, id DESC",
        ApiKeySort::CreatedAsc => " ORDER BY created_at, id",
        ApiKeySort::NameAsc => " ORDER BY name, id",
        ApiKeySort::NameDesc => " ORDER BY name DESC, id DESC",
        ApiKeySort::LastUsedDesc => " ORDER BY last_used_at DESC NULLS LAST, id DESC",
        ApiKeySort::LastUsedAsc => " ORDER BY last_used_at NULLS LAST, id",
    };
    w.page(order, page);
    let now = Utc::now();
    let keys = w
        .query
        .build_query_as::<db::Row>()
        .fetch_all(db)
        .await?
        .into_iter()
        .map(|row| row.into_key(now))
        .collect::<Result<Vec<_>>>()?;
    with_usage(db, keys).await
}

/// How many keys match.
#[tracing::instrument(name = "api_keys.count", skip_all)]
pub async fn count(db: &PgPool, caller: &Caller, filter: &ApiKeyFilter) -> Result<i64> {
    caller.require(Role::Admin)?;
    // Paging does not change a count, but a bad one is still refused.
    paging(filter.limit, filter.offset)?;
    let mut w = db::criteria("SELECT count(*) FROM api_keys", filter);
    Ok(w.query.build_query_scalar::<i64>().fetch_one(db).await?)
}

/// A request cannot revoke or rotate away the key that authenticates it (an admin
/// could lock themselves out): another admin key or the CLI does that.
fn not_in_use(caller: &Caller, id: i64) -> Result<()> {
    if caller.key_id == Some(id) {
        return Err(AppError::conflict(format!(
            "API key {id} authenticates this request; revoke, rotate or limit it with another admin key or the CLI"
        )));
    }
    Ok(())
}

/// Makes a successor of an active key, with the same name and role; the old key keeps
/// working for the overlap, then expires, so holders can switch without downtime.
#[tracing::instrument(name = "api_keys.rotate", skip_all)]
pub async fn rotate(db: &PgPool, caller: &Caller, id: i64, rotation: Rotation) -> Result<CreatedApiKey> {
    caller.require(Role::Admin)?;
    let overlap = rotation.overlap_minutes.unwrap_or(DEFAULT_OVERLAP_MINUTES);
    if overlap > MAX_OVERLAP_MINUTES {
        return Err(AppError::invalid(
            "overlap_minutes",
            format!("must be at most {MAX_OVERLAP_MINUTES} (a week)"),
        ));
    }
    check_expiry("expires_at", rotation.expires_at)?;
    not_in_use(caller, id)?;
    let mut tx = db.begin().await?;
    let old = db::lock(&mut tx, id).await?;
    if old.state != KeyState::Active {
        return Err(AppError::conflict(format!(
            "API key {id} is {}; only an active key can be rotated",
            old.state.as_str()
        )));
    }
    let overlap_ends = Utc::now() + chrono::Duration::minutes(i64::from(overlap));
    let old_ends = old.expires_at.map_or(overlap_ends, |at| at.min(overlap_ends));
    db::set_expiry(&mut *tx, id, old_ends).await?;
    let successor = Template {
        name: &old.name,
        role: old.role,
        expires_at: rotation.expires_at.or(old.expires_at),
        rotated_from: Some(id),
        scope: &old.scope,
        budget: old.budget,
    };
    let created = insert(&mut tx, successor, &caller.actor).await?;
    let target = format!("api_key:{id}");
    record::success(&mut *tx, caller, "api_key.rotate", &target).await?;
    tx.commit().await?;
    Ok(created)
}

/// Revokes a key and ends the browser sessions it opened. Revoking a revoked key
/// changes nothing and succeeds (DELETE is idempotent); an unknown id is 404.
#[tracing::instrument(name = "api_keys.revoke", skip_all)]
pub async fn revoke(db: &PgPool, caller: &Caller, id: i64) -> Result<()> {
    caller.require(Role::Admin)?;
    not_in_use(caller, id)?;
    let mut tx = db.begin().await?;
    db::fetch(&mut *tx, id).await?;
    if db::revoke(&mut *tx, id).await? {
        let target = format!("api_key:{id}");
        record::success(&mut *tx, caller, "api_key.revoke", &target).await?;
    }
    tx.commit().await?;
    Ok(())
}
