//! Following the server's event streams: a run until it ends (`run --wait`), a run's log
//! (`runs logs --follow`). A stream that drops is opened again where it left off
//! (`Last-Event-ID`); while the change feed cannot be had, the run is polled.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use app::runs::logs::RunLog;
use app::runs::{Run, Stage};
use app::status::RunStatus;
use futures_util::{Stream, StreamExt};
use reqwest::header::ACCEPT;
use serde_json::Value;
use sse_stream::{Sse, SseStream};

use super::{Failure, Remote, seconds};

/// How long the server may stay unreachable while a run or log is followed.
const PATIENCE: Duration = Duration::from_secs(60);
/// A pause between attempts, and how often a run is polled without its event stream.
const PAUSE: Duration = Duration::from_secs(2);

type Events = Pin<Box<dyn Stream<Item = Result<Sse, sse_stream::Error>> + Send>>;

/// Opens an event stream at `path`, resuming after `last_event_id`.
async fn open(remote: &Remote, path: &str, last_event_id: Option<&str>) -> Result<Events, Failure> {
    let mut request = remote
        .http
        .get(remote.url(path))
        .header(ACCEPT, "text/event-stream");
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let response = remote.send(request).await?;
    let chunks = futures_util::stream::unfold(Some(response), |response| async move {
        let mut response = response?;
        match response.chunk().await {
            Ok(Some(chunk)) => Some((Ok(chunk), Some(response))),
            Ok(None) => None,
            Err(error) => Some((Err(error), None)),
        }
    });
    Ok(Box::pin(SseStream::from_bytes_stream(chunks)))
}

/// Reads the run, trying again while the server is unreachable or unavailable for a while.
async fn read_run(remote: &Remote, run_id: i64) -> Result<(Run, Value), Failure> {
    let started = tokio::time::Instant::now();
    loop {
        match remote.get::<Run>(&format!("api/runs/{run_id}")).await {
            Err(failure) if passing(&failure) && started.elapsed() < PATIENCE => {
                tokio::time::sleep(PAUSE).await;
            }
            other => return other,
        }
    }
}

/// Whether `failure` may pass by itself: no answer, or the server's `503`.
fn passing(failure: &Failure) -> bool {
    match failure {
        Failure::Connection(_) => true,
        Failure::Refused { status, .. } => status.is_server_error(),
        Failure::Usage(_) | Failure::RunDidNotComplete(_) => false,
    }
}

/// Follows run `run_id` until it has ended, printing a line on stderr each time it or one
/// of its stages moves; answers the ended run.
pub async fn until_ended(remote: &Remote, run_id: i64) -> Result<(Run, Value), Failure> {
    let mut progress = Progress::default();
    let mut last_event_id: Option<String> = None;
    loop {
        // Subscribed before the run is read, so no change falls between the two.
        let path = format!("api/events?run_id={run_id}");
        let events = match open(remote, &path, last_event_id.as_deref()).await {
            Ok(events) => Some(events),
            Err(failure) if passing(&failure) => None,
            Err(failure) => return Err(failure),
        };
        let (run, raw) = read_run(remote, run_id).await?;
        progress.show(&run);
        if run.status.is_terminal() {
            return Ok((run, raw));
        }
        let Some(mut events) = events else {
            tokio::time::sleep(PAUSE).await;
            continue;
        };
        while let Some(Ok(event)) = events.next().await {
            if event.id.is_some() {
                last_event_id = event.id.clone();
            }
            if matches!(event.event.as_deref(), None | Some("heartbeat")) {
                continue;
            }
            let (run, raw) = read_run(remote, run_id).await?;
            progress.show(&run);
            if run.status.is_terminal() {
                return Ok((run, raw));
            }
        }
        // The stream ended (a restart, a proxy's timeout): open it again where it was.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What has been said of a run: its status and each stage's.
#[derive(Default)]
struct Progress {
    run: Option<RunStatus>,
    stages: HashMap<String, RunStatus>,
}

impl Progress {
    /// Prints what moved since last time.
    fn show(&mut self, run: &Run) {
        let now = chrono::Utc::now().format("%H:%M:%S");
        for stage in &run.stages {
            // A stage is said when it moves; waiting at first is no news.
            let before = self.stages.insert(stage.name.clone(), stage.status);
            let first_wait = before.is_none() && stage.status == RunStatus::Pending;
            if before != Some(stage.status) && !first_wait {
                let [name, status, time, records] = stage_row(stage);
                let detail = [time, records]
                    .into_iter()
                    .filter(|d| !d.is_empty())
                    .collect::<Vec<_>>()
                    .join(", ");
                let error = stage
                    .error_message
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default();
                let line = format!("{now}  {name:<24} {status:<10} {detail}{error}");
                eprintln!("{}", line.trim_end());
            }
        }
        if self.run != Some(run.status) {
            self.run = Some(run.status);
            eprintln!("{now}  run #{} {}", run.id, run.status);
        }
    }
}

/// A stage as a table row: name, status, time, records.
pub fn stage_row(stage: &Stage) -> [String; 4] {
    let time = stage
        .execution_time_seconds
        .map(|s| seconds((s * 1000.0) as i64))
        .unwrap_or_default();
    let records = stage
        .records_processed
        .map(|r| format!("{r} records"))
        .unwrap_or_default();
    [stage.name.clone(), stage.status.to_string(), time, records]
}

/// Prints run `run_id`'s log as the flow writes it, until the run has ended.
pub async fn logs(remote: &Remote, run_id: i64, json: bool) -> Result<(), Failure> {
    let mut last_event_id: Option<String> = None;
    let mut unreachable_since: Option<tokio::time::Instant> = None;
    loop {
        let path = format!("api/runs/{run_id}/logs");
        let mut events = match open(remote, &path, last_event_id.as_deref()).await {
            Ok(events) => events,
            Err(failure) if passing(&failure) => {
                let since = *unreachable_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() > PATIENCE {
                    return Err(failure);
                }
                tokio::time::sleep(PAUSE).await;
                continue;
            }
            Err(failure) => return Err(failure),
        };
        unreachable_since = None;
        while let Some(Ok(event)) = events.next().await {
            match event.event.as_deref() {
                Some("log") => {
                    let data = event.data.as_deref().unwrap_or_default();
                    let line: RunLog = serde_json::from_str(data).map_err(|error| {
                        Failure::Connection(format!("a log line is not what this client reads: {error}"))
                    })?;
                    match json {
                        true => println!("{data}"),
                        false => println!("{}", line.as_text()),
                    }
                    last_event_id = event.id;
                }
                Some("truncated") => {
                    eprintln!("(earlier lines left out: `flowdeck runs logs {run_id}` prints the whole log)")
                }
                Some("end") => return Ok(()),
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
