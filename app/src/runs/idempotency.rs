//! Idempotency keys of triggers: a repeated key answers the run its first request made.

use sqlx::PgExecutor;

/// Holds a caller's key for the rest of the transaction, on every replica.
///
/// One request per key is processed at a time (a transaction-scoped advisory lock in its
/// own key space). With `wait`, waits for a request holding it to end; else answers false
/// at once.
pub async fn hold(db: impl PgExecutor<'_>, actor: &str, key: &str, wait: bool) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"SELECT CASE WHEN $3
                  THEN (SELECT true FROM pg_advisory_xact_lock(hashtext('flowdeck.idempotency_key'), hashtext($1 || E'\n' || $2)))
                  ELSE pg_try_advisory_xact_lock(hashtext('flowdeck.idempotency_key'), hashtext($1 || E'\n' || $2))
                  END AS "held!""#,
        actor,
        key,
        wait
    )
    .fetch_one(db)
    .await
}

/// Records the run an `Idempotency-Key` made; false if the key was taken meanwhile.
pub async fn insert_idempotency_key(
    db: impl PgExecutor<'_>,
    actor: &str,
    key: &str,
    request_hash: &[u8],
    run_id: i64,
) -> sqlx::Result<bool> {
    let inserted = sqlx::query!(
        "INSERT INTO idempotency_keys (actor, key, request_hash, run_id) VALUES ($1, $2, $3, $4)
         ON CONFLICT (actor, key) DO NOTHING",
        actor,
        key,
        request_hash,
        run_id
    )
    .execute(db)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// The request fingerprint and run of a caller's `Idempotency-Key`, if it was used.
pub async fn find_idempotency_key(
    db: impl PgExecutor<'_>,
    actor: &str,
    key: &str,
) -> sqlx::Result<Option<(Vec<u8>, i64)>> {
    let row = sqlx::query!(
        "SELECT request_hash, run_id FROM idempotency_keys WHERE actor = $1 AND key = $2",
        actor,
        key
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| (r.request_hash, r.run_id)))
}
