//! State sync: Prefect is the source of truth for a run's state once it has the run.
//!
//! Two followers move runs forward (never backwards) to the state Prefect reports: one
//! listens to Prefect's event stream and applies each flow run state as it happens; the
//! other polls `POST /flow_runs/filter` for every unfinished run, often while the stream is
//! down and rarely while it is up, and once right after each (re)connect to catch up with
//! what the stream missed.

pub mod db;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{Notify, watch};

use super::service::{self, PrefectState};
use crate::prefect::{FlowRunState, PrefectClient, StateChange};
use crate::shutdown::stopped_while;
use crate::status::RunStatus;

/// How many runs one poll asks Prefect about.
const BATCH: i64 = 200;
/// The slowest poll while the event stream is up.
const LIVE_POLL: Duration = Duration::from_secs(30);
/// The longest wait between two attempts to reach the event stream.
const MAX_RECONNECT: Duration = Duration::from_secs(30);

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

/// Identifies one state of one flow run the same way whether it was polled or streamed:
/// by its type and timestamp (Prefect's events do not carry the state's id).
fn state_key(
    flow_run_id: &str,
    state_type: &str,
    at: Option<chrono::DateTime<chrono::Utc>>,
    fallback: &str,
) -> String {
    match at {
        Some(at) => format!("{flow_run_id}-{state_type}-{}", at.timestamp_micros()),
        None => format!("{flow_run_id}-{state_type}-{fallback}"),
    }
}

/// A state Prefect returned for a flow run (polled, or answering a state change).
pub(super) fn observed_state(flow_run_id: &str, state: &FlowRunState) -> Option<PrefectState> {
    Some(PrefectState {
        status: status_for(&state.kind)?,
        name: state.name.clone().unwrap_or_else(|| state.kind.clone()),
        key: state_key(
            flow_run_id,
            &state.kind,
            state.timestamp,
            state.id.as_deref().unwrap_or(""),
        ),
        message: state.message.clone().filter(|m| !m.is_empty()),
        at: state.timestamp,
    })
}

/// The state a streamed event announces, if Flowdeck knows its type.
fn streamed_state(change: &StateChange) -> Option<PrefectState> {
    Some(PrefectState {
        status: status_for(&change.state_type)?,
        name: change.state_name.clone(),
        key: state_key(
            &change.flow_run_id,
            &change.state_type,
            change.timestamp,
            &change.event_id,
        ),
        message: change.message.clone(),
        at: change.timestamp,
    })
}

/// Polls Prefect once for every unfinished submitted run; returns how many it looked at.
pub async fn sync_once(pool: &PgPool, prefect: &PrefectClient) -> crate::error::Result<usize> {
    let followed = db::runs_to_follow(pool, BATCH).await?;
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
        if let Some(state) = flow_runs
            .iter()
            .find(|f| f.id == run.flow_run_id)
            .and_then(|f| observed_state(&f.id, f.state.as_ref()?))
        {
            service::apply_prefect_state(pool, run.id, &state).await?;
        }
    }
    Ok(followed.len())
}

/// Applies one streamed state change to the run it belongs to; flow runs Flowdeck did not
/// start (or has not yet recorded) are left to the poll.
pub async fn apply_change(pool: &PgPool, change: &StateChange) -> crate::error::Result<bool> {
    let Some(state) = streamed_state(change) else {
        return Ok(false);
    };
    let Some(run_id) = db::run_for_flow_run(pool, &change.flow_run_id).await? else {
        return Ok(false);
    };
    service::apply_prefect_state(pool, run_id, &state).await?;
    Ok(true)
}

/// Follows Prefect's event stream until shutdown, reconnecting with backoff. `live` tells
/// the poller whether the stream is up; `resync` asks it for a pass after each connect.
async fn follow_events(
    pool: PgPool,
    prefect: Arc<PrefectClient>,
    live: Arc<AtomicBool>,
    resync: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut wait = Duration::from_secs(1);
    let mut warned = false;
    loop {
        match prefect.flow_run_events().await {
            Ok(mut stream) => {
                tracing::info!("following Prefect's event stream");
                live.store(true, Ordering::Relaxed);
                resync.notify_one();
                wait = Duration::from_secs(1);
                warned = false;
                loop {
                    tokio::select! {
                        next = stream.next() => match next {
                            Ok(change) => {
                                if let Err(e) = apply_change(&pool, &change).await {
                                    tracing::warn!(error = %e, prefect.flow_run = %change.flow_run_id, "cannot apply a Prefect event; the poll will");
                                }
                                // A failure's last lines are read by the poll: wake it.
                                if matches!(change.state_type.as_str(), "FAILED" | "CRASHED") {
                                    resync.notify_one();
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "Prefect's event stream ended; polling until it is back");
                                break;
                            }
                        },
                        _ = shutdown.changed() => break,
                    }
                }
                live.store(false, Ordering::Relaxed);
                if *shutdown.borrow() {
                    break;
                }
            }
            Err(e) if !warned => {
                tracing::warn!(error = %e, "cannot open Prefect's event stream; polling instead");
                warned = true;
            }
            Err(e) => tracing::debug!(error = %e, "cannot open Prefect's event stream"),
        }
        if stopped_while(tokio::time::sleep(wait), &mut shutdown).await {
            break;
        }
        wait = (wait * 2).min(MAX_RECONNECT);
    }
}

/// Error lines kept per failed run.
const FAILURE_LINES: usize = 5;
/// How soon the poll comes back while a failed run's last lines are still arriving.
const SETTLE: Duration = Duration::from_secs(3);

/// Keeps the last error lines of runs that failed, once Prefect's final state has settled
/// (the flow's last lines follow it by a moment); returns how many failed runs still wait.
pub async fn explain_failures(pool: &PgPool, prefect: &PrefectClient) -> crate::error::Result<usize> {
    let mut waiting = 0;
    for run in db::failures_to_explain(pool, 20).await? {
        if !run.settled {
            waiting += 1;
            continue;
        }
        let stages = super::db::stages_for_runs(pool, &[run.id]).await?;
        match super::logs::explain_logs(prefect, &run.flow_run_id, &stages, FAILURE_LINES).await {
            Ok(lines) => {
                let lines = serde_json::to_value(lines).map_err(|_| crate::error::AppError::Internal)?;
                db::set_failure_logs(pool, run.id, &lines).await?;
            }
            Err(e) => tracing::debug!(error = %e, run.id = run.id, "cannot read a failed run's last lines"),
        }
    }
    Ok(waiting)
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

/// Follows Prefect until `shutdown` turns true: its event stream, and a poll every
/// `interval` (every 30 s at most while the stream is up); flags runs silent for `silence`.
pub async fn run(
    pool: PgPool,
    prefect: Arc<PrefectClient>,
    interval: Duration,
    silence: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let live = Arc::new(AtomicBool::new(false));
    let resync = Arc::new(Notify::new());
    let events = tokio::spawn(follow_events(
        pool.clone(),
        prefect.clone(),
        live.clone(),
        resync.clone(),
        shutdown.clone(),
    ));
    loop {
        if let Err(e) = sync_once(&pool, &prefect).await {
            tracing::debug!(error = %e, "state sync pass failed");
        }
        if let Err(e) = flag_stuck(&pool, silence).await {
            tracing::error!(error = %e, "cannot flag stuck runs");
        }
        let explaining = explain_failures(&pool, &prefect).await.unwrap_or_else(|e| {
            tracing::debug!(error = %e, "cannot keep failed runs' last lines");
            0
        });
        let mut pause = if live.load(Ordering::Relaxed) {
            (interval * 10).min(LIVE_POLL).max(interval)
        } else {
            interval
        };
        if explaining > 0 {
            pause = pause.min(SETTLE);
        }
        let wake = async {
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = resync.notified() => {}
            }
        };
        if stopped_while(wake, &mut shutdown).await {
            break;
        }
    }
    events.await.ok();
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
