//! State sync: Prefect is the source of truth for a run's state once it has the run.
//!
//! This follower polls `POST /flow_runs/filter` for every unfinished run Prefect knows and
//! moves each forward (never backwards) to the state Prefect reports.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;

use super::{RunStatus, db, service};
use crate::prefect::{FlowRun, PrefectClient};

/// How many runs one poll asks Prefect about.
const BATCH: i64 = 200;

/// Flowdeck's status for a Prefect state type (`Late` is a `SCHEDULED` state).
pub fn status_for(state_type: &str) -> Option<RunStatus> {
    Some(match state_type {
        "SCHEDULED" | "PENDING" => RunStatus::Scheduled,
        "RUNNING" => RunStatus::Running,
        "COMPLETED" => RunStatus::Completed,
        "FAILED" => RunStatus::Failed,
        "CANCELLING" => RunStatus::Cancelling,
        "CANCELLED" => RunStatus::Cancelled,
        "CRASHED" => RunStatus::Crashed,
        "PAUSED" => RunStatus::Paused,
        _ => return None,
    })
}

async fn apply(pool: &PgPool, run_id: i64, flow_run: &FlowRun) -> crate::error::Result<()> {
    let Some(state) = &flow_run.state else {
        return Ok(());
    };
    let Some(status) = status_for(&state.kind) else {
        return Ok(());
    };
    let name = state.name.clone().unwrap_or_else(|| state.kind.clone());
    let state_id = state
        .id
        .clone()
        .unwrap_or_else(|| format!("{}-{}", flow_run.id, state.kind));
    service::apply_prefect_state(pool, run_id, status, &name, &state_id, state.message.as_deref()).await
}

/// Polls Prefect once for every unfinished submitted run; returns how many it looked at.
pub async fn sync_once(pool: &PgPool, prefect: &PrefectClient) -> crate::error::Result<usize> {
    let followed = db::unfinished_submitted_runs(pool, BATCH).await?;
    if followed.is_empty() {
        return Ok(0);
    }
    let ids: Vec<String> = followed.iter().map(|r| r.flow_run_id.clone()).collect();
    let flow_runs = prefect.flow_runs(&ids).await.map_err(|e| {
        tracing::warn!(error = %e, "cannot read flow runs from Prefect");
        crate::error::AppError::Upstream {
            service: "prefect".into(),
        }
    })?;
    for run in &followed {
        if let Some(flow_run) = flow_runs.iter().find(|f| f.id == run.flow_run_id) {
            apply(pool, run.id, flow_run).await?;
        }
    }
    Ok(followed.len())
}

/// Flags running runs silent for longer than `silence`, logging each once.
pub async fn flag_stuck(pool: &PgPool, silence: Duration) -> sqlx::Result<Vec<i64>> {
    let stuck = db::flag_stuck_runs(pool, silence.as_secs_f64()).await?;
    for run_id in &stuck {
        tracing::warn!(
            run.id = run_id,
            silence.secs = silence.as_secs(),
            "run flagged as stuck: no report"
        );
    }
    Ok(stuck)
}

/// Polls every `interval` until `shutdown` turns true, flagging runs silent for `silence`.
pub async fn run(
    pool: PgPool,
    prefect: Arc<PrefectClient>,
    interval: Duration,
    silence: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if let Err(e) = sync_once(&pool, &prefect).await {
            tracing::debug!(error = %e, "state sync pass failed");
        }
        if let Err(e) = flag_stuck(&pool, silence).await {
            tracing::error!(error = %e, "cannot flag stuck runs");
        }
        if stopped_while(tokio::time::sleep(interval), &mut shutdown).await {
            break;
        }
    }
}

/// Waits for `wake` or a shutdown; true when the background task should stop.
pub(super) async fn stopped_while(
    wake: impl Future<Output = ()>,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    tokio::select! {
        () = wake => {}
        _ = shutdown.changed() => {}
    }
    *shutdown.borrow()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefect_state_types_map_onto_run_statuses() {
        assert_eq!(status_for("PENDING"), Some(RunStatus::Scheduled));
        assert_eq!(status_for("CRASHED"), Some(RunStatus::Crashed));
        assert_eq!(status_for("CANCELLING"), Some(RunStatus::Cancelling));
        assert_eq!(status_for("SOMETHING_NEW"), None);
    }
}
