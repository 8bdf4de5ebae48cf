//! Live changes: what `GET /api/events` streams and the hydrated pages follow.
//!
//! Triggers on pipelines, runs and stage runs record each change in the `changes` table in
//! the changing transaction and announce its id with `NOTIFY flowdeck_changes` at commit.
//! Every replica listens, reads each announced change once, and fans it out in memory to
//! its subscribers.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[cfg(feature = "ssr")]
pub mod http;
#[cfg(feature = "ssr")]
pub mod hub;
pub mod live;

/// One change, as sent to subscribers (the SSE event's `data`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// Position in the change feed; the SSE event id.
    pub id: i64,
    /// `pipeline.created`, `pipeline.updated`, `run.created`, `run.status`, `stage.status`.
    pub kind: String,
    /// The pipeline concerned.
    pub pipeline_id: i64,
    /// The run concerned, for run and stage changes.
    pub run_id: Option<i64>,
    /// The changed fields (the row's new values).
    pub data: serde_json::Value,
    /// When the change was committed.
    pub at: DateTime<Utc>,
}

/// Which changes a subscriber wants.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Only changes of this pipeline (and its runs).
    #[serde(default)]
    pub pipeline_id: Option<i64>,
    /// Only changes of this run (and its stages).
    #[serde(default)]
    pub run_id: Option<i64>,
}

impl Filter {
    /// Whether `change` passes the filter.
    pub fn matches(&self, change: &Change) -> bool {
        self.pipeline_id.is_none_or(|p| p == change.pipeline_id)
            && self.run_id.is_none_or(|r| change.run_id == Some(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(pipeline_id: i64, run_id: Option<i64>) -> Change {
        Change {
            id: 1,
            kind: "run.status".into(),
            pipeline_id,
            run_id,
            data: serde_json::Value::Null,
            at: Utc::now(),
        }
    }

    fn pipeline() -> crate::pipelines::Pipeline {
        let names = vec!["A".to_owned(), "B".to_owned()];
        crate::pipelines::Pipeline {
            id: 1,
            slug: "p".into(),
            name: "P".into(),
            description: None,
            status: crate::status::RunStatus::Completed,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            prefect_flow_run_id: None,
            records_processed: 9,
            error_message: None,
            recent_runs: Vec::new(),
            stages: Vec::new(),
            latest_run_id: Some(5),
            deployment: None,
            stage_names: names,
            default_parameters: serde_json::json!({}),
            tags: Vec::new(),
            max_concurrent_runs: None,
        }
    }

    fn event(kind: &str, run_id: i64, data: serde_json::Value) -> Change {
        Change {
            id: 10,
            kind: kind.into(),
            pipeline_id: 1,
            run_id: Some(run_id),
            data,
            at: Utc::now(),
        }
    }

    #[test]
    fn a_dashboard_row_follows_its_newest_run_and_ignores_older_ones() {
        use crate::status::RunStatus;
        let mut p = pipeline();
        let created = event(
            "run.created",
            6,
            serde_json::json!({"status": "pending", "records_processed": 0}),
        );
        assert!(apply::to_pipeline(&mut p, &created));
        assert_eq!(
            (p.latest_run_id, p.status, p.stages.len()),
            (Some(6), RunStatus::Pending, 2)
        );
        let stage = event(
            "stage.status",
            6,
            serde_json::json!({"position": 1, "status": "running", "records_processed": 3}),
        );
        assert!(apply::to_pipeline(&mut p, &stage));
        assert_eq!(
            (p.stages[1].status, p.stages[1].records_processed),
            (RunStatus::Running, Some(3))
        );
        let older = event("run.status", 5, serde_json::json!({"status": "failed"}));
        assert!(
            !apply::to_pipeline(&mut p, &older),
            "an older run does not change the row"
        );
        assert_eq!(p.status, RunStatus::Pending);
    }

    #[test]
    fn filters_select_by_pipeline_and_run() {
        let any = Filter::default();
        let pipeline = Filter {
            pipeline_id: Some(1),
            run_id: None,
        };
        let run = Filter {
            pipeline_id: None,
            run_id: Some(7),
        };
        assert!(any.matches(&change(2, None)));
        assert!(pipeline.matches(&change(1, Some(7))) && !pipeline.matches(&change(2, Some(7))));
        assert!(run.matches(&change(1, Some(7))) && !run.matches(&change(1, None)));
    }
}

/// Applying changes to what a page shows.
pub mod apply {
    use chrono::{DateTime, Utc};
    use serde_json::Value;

    use super::Change;
    use crate::pipelines::Pipeline;
    use crate::runs::{Run, Stage};
    use crate::status::RunStatus;

    fn status(data: &Value) -> Option<RunStatus> {
        data.get("status")
            .and_then(Value::as_str)
            .and_then(|s| RunStatus::parse(s, "status").ok())
    }

    fn time(data: &Value, key: &str) -> Option<DateTime<Utc>> {
        data.get(key).and_then(Value::as_str).and_then(|t| t.parse().ok())
    }

    fn text(data: &Value, key: &str) -> Option<String> {
        data.get(key).and_then(Value::as_str).map(str::to_owned)
    }

    /// Updates a stage from a `stage.status` change.
    fn stage(stage: &mut Stage, data: &Value) {
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

    /// Applies a run or stage change to a dashboard row (a pipeline with its latest run);
    /// true when the row changed. Pipeline changes need the full pipeline: the caller
    /// fetches it.
    pub fn to_pipeline(p: &mut Pipeline, change: &Change) -> bool {
        let Some(run_id) = change.run_id else { return false };
        if change.pipeline_id != p.id || p.latest_run_id.is_some_and(|latest| run_id < latest) {
            return false;
        }
        match change.kind.as_str() {
            "run.created" | "run.status" => {
                if p.latest_run_id != Some(run_id) {
                    p.latest_run_id = Some(run_id);
                    p.stages = p
                        .stage_names
                        .iter()
                        .zip(0..)
                        .map(|(name, position)| Stage::planned(p.id, position, name))
                        .collect();
                }
                if let Some(s) = status(&change.data) {
                    p.status = s;
                }
                p.records_processed = change
                    .data
                    .get("records_processed")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                p.error_message = text(&change.data, "error_message");
                p.prefect_flow_run_id = text(&change.data, "prefect_flow_run_id");
                p.updated_at = change.at;
                true
            }
            "stage.status" if p.latest_run_id == Some(run_id) => {
                let position = change.data.get("position").and_then(Value::as_i64);
                match p
                    .stages
                    .iter_mut()
                    .find(|s| Some(i64::from(s.position)) == position)
                {
                    Some(s) => {
                        stage(s, &change.data);
                        p.updated_at = change.at;
                        true
                    }
                    None => false,
                }
            }
            _ => false,
        }
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
                run.prefect_flow_run_id =
                    text(data, "prefect_flow_run_id").or(run.prefect_flow_run_id.take());
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
}
