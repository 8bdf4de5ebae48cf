//! The queries of the state follower: which runs to follow, their Prefect state, stuck runs.

use sqlx::PgExecutor;

/// A run Prefect knows and that has not finished.
pub struct FollowedRun {
    /// Run id.
    pub id: i64,
    /// Prefect's flow run id.
    pub flow_run_id: String,
}

/// The runs to ask Prefect about.
///
/// Unfinished runs that Prefect knows, oldest first, and runs that finished in the last
/// 10 minutes (by their own report, say) while Prefect had not yet shown its final state,
/// so that state and its message are recorded too.
pub async fn runs_to_follow(db: impl PgExecutor<'_>, limit: i64) -> sqlx::Result<Vec<FollowedRun>> {
    sqlx::query_as!(
        FollowedRun,
        r#"(SELECT id AS "id!", prefect_flow_run_id AS "flow_run_id!" FROM runs
            WHERE prefect_flow_run_id IS NOT NULL
              AND status NOT IN ('completed', 'failed', 'cancelled', 'crashed')
            ORDER BY id LIMIT $1)
           UNION ALL
           (SELECT id, prefect_flow_run_id FROM runs
            WHERE ended_at > now() - interval '10 minutes' AND prefect_flow_run_id IS NOT NULL
              AND status IN ('completed', 'failed', 'cancelled', 'crashed')
              AND prefect_state IS DISTINCT FROM 'Completed' AND prefect_state IS DISTINCT FROM 'Failed'
              AND prefect_state IS DISTINCT FROM 'Crashed' AND prefect_state IS DISTINCT FROM 'Cancelled'
            ORDER BY ended_at DESC LIMIT $1)"#,
        limit
    )
    .fetch_all(db)
    .await
}

/// A failed run whose last error lines were not read yet.
pub struct FailureToExplain {
    /// Run id.
    pub id: i64,
    /// Prefect's flow run id.
    pub flow_run_id: String,
    /// Whether Prefect's final state came long enough ago for its last lines to be in.
    pub settled: bool,
}

/// Failed or crashed runs of the last 10 minutes in a final Prefect state whose error
/// lines were not read yet, oldest first.
pub async fn failures_to_explain(db: impl PgExecutor<'_>, limit: i64) -> sqlx::Result<Vec<FailureToExplain>> {
    sqlx::query_as!(
        FailureToExplain,
        r#"SELECT id AS "id!", prefect_flow_run_id AS "flow_run_id!",
                  updated_at < now() - interval '3 seconds' AS "settled!"
           FROM runs
           WHERE status IN ('failed', 'crashed') AND failure_logs IS NULL
             AND prefect_flow_run_id IS NOT NULL AND ended_at > now() - interval '10 minutes'
             AND prefect_state IN ('Failed', 'Crashed', 'Cancelled', 'Completed')
           ORDER BY ended_at LIMIT $1"#,
        limit
    )
    .fetch_all(db)
    .await
}

/// Keeps a failed run's last error lines (a JSON array of run log lines).
pub async fn set_failure_logs(
    db: impl PgExecutor<'_>,
    run_id: i64,
    lines: &serde_json::Value,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE runs SET failure_logs = $2 WHERE id = $1 AND failure_logs IS NULL",
        run_id,
        lines
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The run submitted as this Prefect flow run, if any.
pub async fn run_for_flow_run(db: impl PgExecutor<'_>, flow_run_id: &str) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar!("SELECT id FROM runs WHERE prefect_flow_run_id = $1", flow_run_id)
        .fetch_optional(db)
        .await
}

/// Records Prefect's state name on a run, and its message unless the state is older than
/// what the run already knows (`newer` false) and a message is kept.
pub async fn set_prefect_state(
    db: impl PgExecutor<'_>,
    run_id: i64,
    state_name: &str,
    message: Option<&str>,
    newer: bool,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE runs SET prefect_state = $2,
                prefect_message = CASE WHEN $4 OR prefect_message IS NULL THEN $3 ELSE prefect_message END
         WHERE id = $1
           AND (prefect_state IS DISTINCT FROM $2
                OR (($4 OR prefect_message IS NULL) AND prefect_message IS DISTINCT FROM $3))",
        run_id,
        state_name,
        message,
        newer
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Flags running runs that have recorded no event for `silence_seconds`; returns their ids.
pub async fn flag_stuck_runs(db: impl PgExecutor<'_>, silence_seconds: f64) -> sqlx::Result<Vec<i64>> {
    sqlx::query_scalar!(
        "UPDATE runs r SET stuck_since = now()
         WHERE r.status = 'running' AND r.stuck_since IS NULL
           AND r.updated_at < now() - make_interval(secs => $1)
           AND NOT EXISTS (
               SELECT 1 FROM run_events e
               WHERE e.run_id = r.id AND e.recorded_at > now() - make_interval(secs => $1)
           )
         RETURNING r.id",
        silence_seconds
    )
    .fetch_all(db)
    .await
}
