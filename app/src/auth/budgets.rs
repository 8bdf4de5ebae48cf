//! A key's budgets, counted in the database from the runs it made.
//!
//! Triggers in the last hour and day, and runs still unfinished. Every replica counts the same rows, and a
//! trigger checks and records under a lock on its key, so budgets hold across replicas.

use std::collections::HashMap;

use sqlx::{PgConnection, PgExecutor};

use crate::caller::{Budget, BudgetUse};
use crate::error::{AppError, Result};

/// What the keys with these ids have spent.
pub async fn usage(db: impl PgExecutor<'_>, key_ids: &[i64]) -> sqlx::Result<HashMap<i64, BudgetUse>> {
    let rows = sqlx::query!(
        r#"SELECT k.id AS "id!",
                  (SELECT count(*) FROM runs r WHERE r.api_key_id = k.id
                     AND r.created_at > now() - interval '1 hour') AS "hour!",
                  (SELECT count(*) FROM runs r WHERE r.api_key_id = k.id
                     AND r.created_at > now() - interval '1 day') AS "day!",
                  (SELECT count(*) FROM runs r WHERE r.api_key_id = k.id
                     AND r.status NOT IN ('completed', 'failed', 'cancelled', 'crashed')) AS "unfinished!"
           FROM unnest($1::bigint[]) AS k (id)"#,
        key_ids
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let spent = BudgetUse {
                triggers_last_hour: r.hour,
                triggers_last_day: r.day,
                unfinished_runs: r.unfinished,
            };
            (r.id, spent)
        })
        .collect())
}

/// Refuses a new run of key `key_id` that would go over `budget`.
///
/// Call it in the transaction that records the run. It takes a lock on the key until that transaction
/// ends, so concurrent triggers of one key, on any replica, are counted one after another.
pub async fn check(tx: &mut PgConnection, key_id: i64, budget: Budget) -> Result<()> {
    if !budget.limits() {
        return Ok(());
    }
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtext('flowdeck.key_budget'), $1::int)",
        i32::try_from(key_id).unwrap_or(i32::MAX)
    )
    .execute(&mut *tx)
    .await?;
    let spent = usage(&mut *tx, &[key_id])
        .await?
        .remove(&key_id)
        .unwrap_or_default();
    for (name, limit, used, window) in [
        (
            "triggers_per_hour",
            budget.triggers_per_hour,
            spent.triggers_last_hour,
            3600,
        ),
        (
            "triggers_per_day",
            budget.triggers_per_day,
            spent.triggers_last_day,
            86_400,
        ),
    ] {
        let Some(limit) = limit.map(i64::from) else {
            continue;
        };
        if used >= limit {
            // A slot frees when the run that filled it leaves the window.
            let oldest = sqlx::query_scalar!(
                r#"SELECT created_at AS "at!" FROM runs
                   WHERE api_key_id = $1 AND created_at > now() - make_interval(secs => $2)
                   ORDER BY created_at OFFSET $3 LIMIT 1"#,
                key_id,
                f64::from(window),
                used - limit,
            )
            .fetch_optional(&mut *tx)
            .await?;
            let frees_in = oldest.map_or(i64::from(window), |at| {
                (at + chrono::Duration::seconds(i64::from(window)) - chrono::Utc::now()).num_seconds() + 1
            });
            return Err(AppError::OverBudget {
                budget: name.to_owned(),
                limit,
                used,
                retry_after: Some(u64::try_from(frees_in.max(1)).unwrap_or(1)),
            });
        }
    }
    if let Some(limit) = budget.max_unfinished_runs.map(i64::from)
        && spent.unfinished_runs >= limit
    {
        return Err(AppError::OverBudget {
            budget: "max_unfinished_runs".to_owned(),
            limit,
            used: spent.unfinished_runs,
            retry_after: None,
        });
    }
    Ok(())
}
