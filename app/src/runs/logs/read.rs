//! Reading a run's logs from Prefect: a page at a time, the lines that explain a failure,
//! and the whole log as text.

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
        received_at: log.created,
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
            since: None,
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
        since: None,
    };
    let mut found: Vec<RunLog> = prefect
        .flow_run_logs(flow_run_id, LogLevel::Error.number(), window)
        .await?
        .into_iter()
        .map(|log| line(log, stages))
        .collect();
    found.reverse();
    Ok(found)
}

/// Up to `most` of a flow run's lines at `level` and above, read a Prefect page (200) at a
/// time: oldest first from `since`, or the newest first.
pub(super) async fn lines(
    prefect: &PrefectClient,
    flow_run: &str,
    level: i32,
    newest_first: bool,
    since: Option<chrono::DateTime<chrono::Utc>>,
    most: usize,
) -> std::result::Result<Vec<PrefectLog>, crate::prefect::PrefectError> {
    let mut lines = Vec::new();
    while lines.len() < most {
        let page = LogPage {
            limit: 200,
            offset: lines.len(),
            newest_first,
            since,
        };
        let found = prefect.flow_run_logs(flow_run, level, page).await?;
        let last_page = found.len() < 200;
        lines.extend(found);
        if last_page {
            break;
        }
    }
    Ok(lines)
}

/// Most lines a download holds.
const DOWNLOAD_LINES: usize = 50_000;

/// A run's whole log (up to 50,000 lines, every level) as text, one line per line:
/// time, level, stage, logger and message.
pub async fn download(
    pool: &PgPool,
    prefect: Option<&PrefectClient>,
    caller: &Caller,
    run_id: i64,
) -> Result<String> {
    let run = crate::runs::service::get(pool, caller, run_id).await?;
    let mut text = String::new();
    let Some(flow_run) = run.prefect_flow_run_id.as_deref() else {
        return Ok(text);
    };
    let prefect = prefect.ok_or_else(|| AppError::Upstream {
        service: "prefect".into(),
    })?;
    let found = lines(
        prefect,
        flow_run,
        LogLevel::Debug.number(),
        false,
        None,
        DOWNLOAD_LINES,
    )
    .await?;
    for log in found {
        text.push_str(&line(log, &run.stages).as_text());
        text.push('\n');
    }
    Ok(text)
}
