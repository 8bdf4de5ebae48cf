//! A run as changes arrive: what the run page applies from the change feed, and the
//! readers of a change's data other pages share.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{Run, Stage};
use crate::events::Change;
use crate::status::RunStatus;

/// The `status` a change's data carries.
pub fn status(data: &Value) -> Option<RunStatus> {
    data.get("status")
        .and_then(Value::as_str)
        .and_then(|s| RunStatus::parse(s, "status").ok())
}

/// A time a change's data carries.
pub fn time(data: &Value, key: &str) -> Option<DateTime<Utc>> {
    data.get(key).and_then(Value::as_str).and_then(|t| t.parse().ok())
}

/// A text a change's data carries.
pub fn text(data: &Value, key: &str) -> Option<String> {
    data.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// Updates a stage from a `stage.status` change's data.
pub fn stage(stage: &mut Stage, data: &Value) {
    if let Some(s) = status(data) {
        stage.status = s;
    }
    stage.records_processed = data.get("records_processed").and_then(Value::as_i64);
    stage.error_message = text(data, "error_message");
    stage.started_at = time(data, "started_at");
    stage.completed_at = time(data, "completed_at");
    stage.execution_time_seconds = match (stage.started_at, stage.completed_at) {
        (Some(start), Some(end)) => Some((end - start).num_milliseconds() as f64 / 1000.0),
        _ => None,
    };
}

/// Applies a run or stage change to the run page's run; true when it changed.
pub fn to_run(run: &mut Run, change: &Change) -> bool {
    if change.run_id != Some(run.id) {
        return false;
    }
    let data = &change.data;
    match change.kind.as_str() {
        "run.status" => {
            if let Some(s) = status(data) {
                run.status = s;
            }
            run.records_processed = data.get("records_processed").and_then(Value::as_i64).unwrap_or(0);
            run.error_message = text(data, "error_message");
            run.prefect_state = text(data, "prefect_state");
            run.prefect_flow_run_id = text(data, "prefect_flow_run_id").or(run.prefect_flow_run_id.take());
            run.started_at = time(data, "started_at");
            run.ended_at = time(data, "ended_at");
            run.stuck_since = time(data, "stuck_since");
            run.updated_at = change.at;
            true
        }
        "stage.status" => {
            let position = data.get("position").and_then(Value::as_i64);
            match run
                .stages
                .iter_mut()
                .find(|s| Some(i64::from(s.position)) == position)
            {
                Some(s) => {
                    stage(s, data);
                    true
                }
                None => false,
            }
        }
        _ => false,
    }
}
