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
pub use service::{explain_logs, page};

#[cfg(feature = "ssr")]
mod service {
    use super::{LogLevel, LogOrder, LogQuery, RunLog, RunLogs};
    use crate::auth::secrets::mask;
    use crate::caller::Caller;
    use crate::error::{AppError, Result};
    use crate::prefect::{LogPage, PrefectClient, PrefectLog};
    use crate::runs::{Run, Stage};
    use sqlx::PgPool;

    /// The stage that was running at `at`: the last to start at or before it (a stage's
    /// lines may follow its report of `completed` by a moment).
    fn stage_at(stages: &[Stage], at: chrono::DateTime<chrono::Utc>) -> Option<String> {
        stages
            .iter()
            .filter(|s| s.started_at.is_some_and(|started| started <= at))
            .max_by_key(|s| s.started_at)
            .map(|s| s.name.clone())
    }

    /// A Prefect log line as the run's log shows it.
    pub fn line(log: PrefectLog, stages: &[Stage]) -> RunLog {
        RunLog {
            stage: stage_at(stages, log.timestamp),
            level: LogLevel::of(log.level),
            message: mask(&log.message).into_owned(),
            id: log.id,
            timestamp: log.timestamp,
            logger: log.name,
            task_run_id: log.task_run_id,
        }
    }

    /// The checked query: minimum level, limit, offset, newest first.
    fn checked(query: &LogQuery) -> Result<(i32, usize, usize, bool)> {
        let level = query.level.unwrap_or_default().number();
        if query
            .stage
            .as_ref()
            .is_some_and(|stage| stage.chars().count() > 200)
        {
            return Err(AppError::invalid("stage", "must be at most 200 characters"));
        }
        let limit = query.limit.unwrap_or(200);
        if !(1..=200).contains(&limit) {
            return Err(AppError::invalid("limit", "must be between 1 and 200"));
        }
        let offset = query.offset.unwrap_or(0);
        if !(0..=100_000).contains(&offset) {
            return Err(AppError::invalid("offset", "must be between 0 and 100000"));
        }
        let newest_first = query.order == Some(LogOrder::Desc);
        Ok((level, limit as usize, offset as usize, newest_first))
    }

    /// A page of a run's logs. A stage filter reads Prefect's pages of the whole run and
    /// keeps that stage's lines, so `offset` then counts that stage's lines.
    pub async fn page(
        pool: &PgPool,
        prefect: Option<&PrefectClient>,
        caller: &Caller,
        run_id: i64,
        query: &LogQuery,
    ) -> Result<RunLogs> {
        let (level, limit, offset, newest_first) = checked(query)?;
        let run = crate::runs::service::get(pool, caller, run_id).await?;
        let empty = |run: &Run| RunLogs {
            run_id: run.id,
            prefect_flow_run_id: run.prefect_flow_run_id.clone(),
            logs: Vec::new(),
            next_offset: None,
        };
        let Some(flow_run) = run.prefect_flow_run_id.clone() else {
            return Ok(empty(&run));
        };
        let prefect = prefect.ok_or_else(|| AppError::Upstream {
            service: "prefect".into(),
        })?;
        let mut kept = Vec::new();
        let mut skipped = 0;
        let mut from = 0;
        // One more than asked, to know whether there is a next page; a stage's lines are
        // looked for in at most 10,000 of the run's.
        let mut exhausted = false;
        for _ in 0..50 {
            // A stage's lines are looked for in full pages; otherwise only what is missing.
            let window = LogPage {
                limit: if query.stage.is_some() {
                    200
                } else {
                    (limit + 1 - kept.len()).min(200)
                },
                offset: if query.stage.is_some() {
                    from
                } else {
                    offset + kept.len()
                },
                newest_first,
            };
            let found = prefect.flow_run_logs(&flow_run, level, window).await?;
            let last_page = found.len() < window.limit;
            from += found.len();
            for log in found {
                let log = line(log, &run.stages);
                if query
                    .stage
                    .as_ref()
                    .is_some_and(|stage| log.stage.as_ref() != Some(stage))
                {
                    continue;
                }
                if query.stage.is_some() && skipped < offset {
                    skipped += 1;
                    continue;
                }
                kept.push(log);
            }
            exhausted = last_page;
            if last_page || kept.len() > limit {
                break;
            }
        }
        // More lines, or a stage's lines not all looked for yet (the next page goes on).
        let more = kept.len() > limit || !exhausted;
        kept.truncate(limit);
        let next = offset + kept.len();
        Ok(RunLogs {
            next_offset: (more && next <= 100_000).then_some(next as i64),
            logs: kept,
            ..empty(&run)
        })
    }

    /// The last `count` error-level lines of a flow run, oldest first, masked: what explains
    /// a failure beside the stage's own report.
    pub async fn explain_logs(
        prefect: &PrefectClient,
        flow_run_id: &str,
        stages: &[Stage],
        count: usize,
    ) -> Result<Vec<RunLog>> {
        let window = LogPage {
            limit: count,
            offset: 0,
            newest_first: true,
        };
        let mut found: Vec<RunLog> = prefect
            .flow_run_logs(flow_run_id, 40, window)
            .await?
            .into_iter()
            .map(|log| line(log, stages))
            .collect();
        found.reverse();
        Ok(found)
    }
}

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
