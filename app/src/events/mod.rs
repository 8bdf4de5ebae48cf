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
