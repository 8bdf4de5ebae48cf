//! A dashboard row as changes arrive: a pipeline with its latest run.

use serde_json::Value;

use super::Pipeline;
use crate::events::Change;
use crate::runs::Stage;
use crate::runs::live::{stage, status, text};

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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn pipeline() -> Pipeline {
        let names = vec!["A".to_owned(), "B".to_owned()];
        Pipeline {
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
        assert!(to_pipeline(&mut p, &created));
        assert_eq!(
            (p.latest_run_id, p.status, p.stages.len()),
            (Some(6), RunStatus::Pending, 2)
        );
        let stage = event(
            "stage.status",
            6,
            serde_json::json!({"position": 1, "status": "running", "records_processed": 3}),
        );
        assert!(to_pipeline(&mut p, &stage));
        assert_eq!(
            (p.stages[1].status, p.stages[1].records_processed),
            (RunStatus::Running, Some(3))
        );
        let older = event("run.status", 5, serde_json::json!({"status": "failed"}));
        assert!(
            !to_pipeline(&mut p, &older),
            "an older run does not change the row"
        );
        assert_eq!(p.status, RunStatus::Pending);
    }
}
