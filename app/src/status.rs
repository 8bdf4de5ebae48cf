//! Run and stage statuses and the one rule that moves them: forward only.

use serde::{Deserialize, Serialize};

use crate::error::{AppError, Result};

/// Status of a run or a stage; Prefect's state types, lower-cased.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema, schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Accepted by Flowdeck, not yet in Prefect.
    Pending,
    /// Known to Prefect, waiting to start.
    Scheduled,
    /// Executing.
    Running,
    /// Finished successfully.
    Completed,
    /// Finished with an error.
    Failed,
    /// A cancel was requested and is in progress.
    Cancelling,
    /// Stopped on request.
    Cancelled,
    /// The infrastructure died under it.
    Crashed,
    /// Suspended, waiting to resume.
    Paused,
    /// A stage carried over by a restart from a later stage, its output reused from an
    /// earlier run. Stages only: no run, report or filter takes it.
    Skipped,
}

impl RunStatus {
    /// All statuses, in display order.
    pub const ALL: [RunStatus; 9] = [
        RunStatus::Pending,
        RunStatus::Scheduled,
        RunStatus::Running,
        RunStatus::Paused,
        RunStatus::Cancelling,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Cancelled,
        RunStatus::Crashed,
    ];

    /// The lower-case name, as stored and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Scheduled => "scheduled",
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelling => "cancelling",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Crashed => "crashed",
            RunStatus::Paused => "paused",
            RunStatus::Skipped => "skipped",
        }
    }

    /// Parses a stored or submitted status; `field` names it in the error.
    pub fn parse(value: &str, field: &str) -> Result<Self> {
        RunStatus::ALL.into_iter().find(|s| s.as_str() == value).ok_or_else(|| {
            AppError::invalid(
                field,
                "must be one of pending, scheduled, running, paused, cancelling, completed, failed, cancelled, crashed",
            )
        })
    }

    /// Parses a status read from the database, where the CHECK constraint guarantees it.
    pub fn from_db(value: &str) -> Self {
        if value == "skipped" {
            return RunStatus::Skipped;
        }
        Self::parse(value, "status").unwrap_or(RunStatus::Pending)
    }

    /// A finished state, which nothing moves again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Completed
                | RunStatus::Failed
                | RunStatus::Cancelled
                | RunStatus::Crashed
                | RunStatus::Skipped
        )
    }

    fn rank(self) -> u8 {
        match self {
            RunStatus::Pending => 0,
            RunStatus::Scheduled => 1,
            RunStatus::Paused => 2,
            RunStatus::Running => 3,
            RunStatus::Cancelling => 4,
            _ => 5,
        }
    }

    /// Whether a report of `next` may replace `self`: forward only, so a late or
    /// duplicate report never moves a run or stage backwards.
    pub fn may_become(self, next: RunStatus) -> bool {
        self.on_report(next, true) == Change::Move
    }

    /// What a report of `next` does to `self`. `newer` says whether the report is at least
    /// as recent as the last one applied. Forward moves are safe in any order; only the
    /// steps a live run takes back and forth (running and paused) and repeated reports of
    /// the same status, which refresh details such as records processed, need the report
    /// to be the newest.
    pub fn on_report(self, next: RunStatus, newer: bool) -> Change {
        use RunStatus::{Paused, Running};
        let in_order = |change| if newer { change } else { Change::Stale };
        if self.is_terminal() {
            Change::Stale
        } else if self == next {
            in_order(Change::Refresh)
        } else if matches!((self, next), (Running, Paused) | (Paused, Running)) {
            in_order(Change::Move)
        } else if next.rank() > self.rank() {
            Change::Move
        } else {
            Change::Stale
        }
    }
}

/// What a status report does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Moves to the reported status.
    Move,
    /// Same status; the report's details (records, message) are the newest.
    Refresh,
    /// Too late or backwards: recorded in the history, changes nothing.
    Stale,
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::RunStatus::*;
    use super::*;

    #[test]
    fn finished_states_never_move() {
        for done in [Completed, Failed, Cancelled, Crashed, Skipped] {
            for next in RunStatus::ALL {
                assert!(!done.may_become(next), "{done} -> {next}");
            }
        }
    }

    #[test]
    fn live_states_only_move_forward() {
        assert!(Pending.may_become(Running));
        assert!(Running.may_become(Completed));
        assert!(Running.may_become(Failed));
        assert!(!Running.may_become(Pending));
        assert!(!Running.may_become(Scheduled));
        assert!(!Running.may_become(Running));
        assert!(Running.may_become(Paused));
        assert!(Paused.may_become(Running));
        assert!(!Cancelling.may_become(Running));
    }

    #[test]
    fn only_back_and_forth_steps_and_refreshes_need_the_newest_report() {
        assert_eq!(Running.on_report(Completed, false), Change::Move);
        assert_eq!(Pending.on_report(Running, false), Change::Move);
        assert_eq!(Running.on_report(Paused, false), Change::Stale);
        assert_eq!(Running.on_report(Paused, true), Change::Move);
        assert_eq!(Paused.on_report(Running, false), Change::Stale);
        assert_eq!(Running.on_report(Running, true), Change::Refresh);
        assert_eq!(Running.on_report(Running, false), Change::Stale);
        assert_eq!(Completed.on_report(Completed, true), Change::Stale);
        assert_eq!(Cancelling.on_report(Running, true), Change::Stale);
    }

    #[test]
    fn unknown_status_names_the_field() {
        assert!(
            matches!(RunStatus::parse("done", "status"), Err(AppError::Invalid { field, .. }) if field == "status")
        );
        assert_eq!(RunStatus::parse("crashed", "status"), Ok(Crashed));
        // Only a restart carries a stage over; no report may say so.
        assert!(RunStatus::parse("skipped", "status").is_err());
        assert_eq!(RunStatus::from_db("skipped"), Skipped);
    }
}
