//! A run's flow logs, read from Prefect when asked (Flowdeck keeps no copy of them).
//!
//! Each line has its level, time, the stage that was running when it was written, and
//! its message with any credential masked (flows may print the parameters Flowdeck
//! passed, the run's callback credential among them).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A log line's level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// 10.
    Debug,
    /// 20.
    #[default]
    Info,
    /// 30.
    Warning,
    /// 40.
    Error,
    /// 50.
    Critical,
}

impl LogLevel {
    /// Every level, lowest first.
    pub const ALL: [LogLevel; 5] = [
        LogLevel::Debug,
        LogLevel::Info,
        LogLevel::Warning,
        LogLevel::Error,
        LogLevel::Critical,
    ];

    /// Python's number for it.
    pub fn number(self) -> i32 {
        match self {
            LogLevel::Debug => 10,
            LogLevel::Info => 20,
            LogLevel::Warning => 30,
            LogLevel::Error => 40,
            LogLevel::Critical => 50,
        }
    }

    /// The level of a Python level number (the nearest below for numbers between).
    pub fn of(number: i32) -> Self {
        Self::ALL
            .into_iter()
            .rev()
            .find(|level| number >= level.number())
            .unwrap_or(LogLevel::Debug)
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warning => "warning",
            LogLevel::Error => "error",
            LogLevel::Critical => "critical",
        }
    }
}

/// In which order lines come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum LogOrder {
    /// Oldest first.
    #[default]
    Asc,
    /// Newest first.
    Desc,
}

/// One line of a run's flow logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct RunLog {
    /// Prefect's log id.
    pub id: String,
    /// When it was written.
    pub timestamp: DateTime<Utc>,
    /// Its level.
    pub level: LogLevel,
    /// The logger (`prefect.flow_runs`, a task's logger, …).
    pub logger: String,
    /// The stage that was running when it was written, as the flow reported its stages.
    pub stage: Option<String>,
    /// The Prefect task run that wrote it, if a task did.
    pub task_run_id: Option<String>,
    /// The line, with credentials masked.
    pub message: String,
    /// When Prefect received it, for lines read back from Prefect (lines streamed live
    /// come before Prefect says).
    #[serde(default)]
    pub received_at: Option<DateTime<Utc>>,
}

impl RunLog {
    /// The line as text: time, level, stage, logger and message.
    pub fn as_text(&self) -> String {
        format!(
            "{} {:<8} [{}] {}: {}",
            self.timestamp
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            self.level.as_str().to_uppercase(),
            self.stage.as_deref().unwrap_or("-"),
            self.logger,
            self.message
        )
    }
}

/// A page of a run's logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct RunLogs {
    /// The run.
    pub run_id: i64,
    /// Its Prefect flow run; none before it was submitted (and then there are no logs).
    pub prefect_flow_run_id: Option<String>,
    /// The lines, oldest first (newest first with `order=desc`).
    pub logs: Vec<RunLog>,
    /// The `offset` of the next page, when there is one.
    pub next_offset: Option<i64>,
}

/// `GET /api/runs/{id}/logs`'s query.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "ssr", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Only lines at this level or above (default `info`).
    #[serde(default)]
    #[cfg_attr(feature = "ssr", param(inline))]
    pub level: Option<LogLevel>,
    /// Only lines written while this stage ran.
    #[serde(default)]
    #[cfg_attr(feature = "ssr", param(max_length = 200))]
    pub stage: Option<String>,
    /// At most this many (1 to 200, default 200).
    #[serde(default)]
    #[cfg_attr(feature = "ssr", param(minimum = 1, maximum = 200))]
    pub limit: Option<i64>,
    /// Skip this many first.
    #[serde(default)]
    #[cfg_attr(feature = "ssr", param(minimum = 0, maximum = 100_000))]
    pub offset: Option<i64>,
    /// `asc` (default: oldest first) or `desc`.
    #[serde(default)]
    #[cfg_attr(feature = "ssr", param(inline))]
    pub order: Option<LogOrder>,
}

#[cfg(feature = "ssr")]
pub mod follow;
#[cfg(feature = "ssr")]
mod read;
#[cfg(feature = "ssr")]
pub use read::{download, explain_logs, page};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_named_as_python_numbers_them() {
        assert_eq!(LogLevel::of(20), LogLevel::Info);
        assert_eq!(LogLevel::of(45), LogLevel::Error);
        assert_eq!(LogLevel::of(5), LogLevel::Debug);
        assert_eq!(LogLevel::of(90), LogLevel::Critical);
        assert_eq!(serde_json::to_value(LogLevel::Warning).unwrap(), "warning");
    }
}
