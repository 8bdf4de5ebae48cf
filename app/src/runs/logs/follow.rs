//! Following a run's logs as they are written: `GET /api/runs/{id}/logs` as Server-Sent
//! Events, for the run page's log viewer and for automation.
//!
//! A follower waits for the run to reach Prefect, subscribes to Prefect's log stream for
//! its flow run, then reads what was written before (`POST /logs/filter`: the newest
//! [`TAIL`] lines, or everything after `Last-Event-ID`), so nothing falls between the two;
//! lines seen both ways are sent once. While the log stream is down it polls
//! `logs/filter` every second and tries the stream again. Once the run has finished and
//! Prefect has said so, it reads the last lines Prefect received and ends with `end`.
//!
//! Each line is a `log` event whose `id` is its time (resume with `Last-Event-ID`) and
//! whose data is a [`RunLog`]. The run (its status, Prefect state and stages) is read again
//! when the change feed says it changed, at most once a second, so lines of a stage that
//! just started name it. The stream ends when its credential does, and at shutdown.

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::Event;
use chrono::{DateTime, Utc};
use futures_util::Stream;
use sqlx::PgPool;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use super::read::{line, lines};
use super::{LogLevel, RunLog};
use crate::auth::Identity;
use crate::auth::credentials::{Presented, recheck};
use crate::caller::Caller;
use crate::error::{AppError, Result};
use crate::events::hub::{Hub, Published};
use crate::prefect::{LogStream, PrefectClient, PrefectLog};
use crate::runs::{Run, service};

/// Lines a new follower is sent first: the newest this many.
pub const TAIL: usize = 1000;
/// How often the run is read again if it changed (status, stages), and logs polled while
/// the stream is down.
const TICK: Duration = Duration::from_secs(1);
/// How long after the run and Prefect both finished the last lines are read.
const SETTLE: Duration = Duration::from_secs(3);
/// How long a finished run waits for Prefect's final state before the follower ends anyway.
const GIVE_UP: Duration = Duration::from_secs(60);
/// How long the log stream stays down before it is tried again.
const RECONNECT: Duration = Duration::from_secs(10);
/// While the log stream is up, `logs/filter` is still read this often: a Prefect that does
/// not publish its logs (`PREFECT_SERVER_LOGS_STREAM_PUBLISHING_ENABLED` off, its
/// default) accepts the subscription and stays silent.
const CROSS_CHECK: Duration = Duration::from_secs(5);
/// How far before the newest line sent a catch-up reads again: lines written by another
/// process (the worker, a task) may arrive a moment late with an older time, and a
/// stream under load may drop some; lines read twice are sent once.
const OVERLAP: chrono::TimeDelta = chrono::TimeDelta::seconds(2);
/// A line Prefect received this long ago and the stream never sent was missed by it.
const MISSED: chrono::TimeDelta = chrono::TimeDelta::seconds(2);
/// A quiet follower sends `heartbeat` this often.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// A follower's credential is checked again this often.
const RECHECK: Duration = Duration::from_secs(15);
/// Most lines one catch-up reads.
const CATCH_UP: usize = 5000;
/// Line ids remembered to send each line once.
const REMEMBERED: usize = 4096;
/// How long a browser waits before reconnecting (`retry:`).
const RETRY: Duration = Duration::from_secs(2);
/// Prefect's final state names.
const FINAL: [&str; 4] = ["Completed", "Failed", "Crashed", "Cancelled"];

/// The latest line time an event id may name: the end of the year 9999, in microseconds
/// since 1970 (the document states the range, so every id it allows is read).
pub const LAST_EVENT_ID_MAX: i64 = 253_402_300_799_999_999;

/// A line's event id: its time in microseconds since 1970, a plain integer that clients
/// and the document describe exactly.
fn event_id(at: DateTime<Utc>) -> String {
    at.timestamp_micros().to_string()
}

/// Where a resuming follower left off: the line time in `Last-Event-ID`.
pub fn resume_from(last_event_id: Option<&str>) -> Result<Option<DateTime<Utc>>> {
    last_event_id
        .map(|id| {
            id.trim()
                .parse::<i64>()
                .ok()
                .filter(|micros| (0..=LAST_EVENT_ID_MAX).contains(micros))
                .and_then(DateTime::from_timestamp_micros)
                .ok_or_else(|| {
                    AppError::invalid("Last-Event-ID", "must be a line's event id from this stream")
                })
        })
        .transpose()
}

/// What a follower needs besides the run.
pub struct Parts {
    /// The database.
    pub db: PgPool,
    /// Prefect.
    pub prefect: Arc<PrefectClient>,
    /// For checking the credential again.
    pub identity: Identity,
    /// The change feed: when the run changes, and when the server is closing.
    pub hub: Arc<Hub>,
}

/// Starts following run `run_id`'s lines at `level` and above for `caller`, who must see
/// the run (checked here, before the stream starts).
pub async fn follow(
    parts: Parts,
    caller: &Caller,
    presented: Presented,
    run_id: i64,
    level: LogLevel,
    resume: Option<DateTime<Utc>>,
) -> Result<impl Stream<Item = std::result::Result<Event, Infallible>> + use<>> {
    // Subscribed before the run is read, so no change to it falls between the two.
    let changes = parts.hub.subscribe();
    let run = service::get(&parts.db, caller, run_id).await?;
    let (events, receiver) = mpsc::channel(256);
    let follower = Follower {
        key_moves: parts.identity.freshness.key_moves(),
        closing: parts.hub.closing(),
        changes: Some(changes),
        changed: false,
        parts,
        presented,
        run,
        level: level.number(),
        since: resume,
        seen: Seen::default(),
        socket: None,
        reconnect_at: Instant::now(),
        cross_check_at: Instant::now() + CROSS_CHECK,
        stream_missed: false,
        finished_at: None,
        tick: Instant::now() + TICK,
        heartbeat: Instant::now() + HEARTBEAT,
        check: Instant::now() + RECHECK,
        events,
    };
    tokio::spawn(follower.run());
    Ok(futures_util::stream::unfold(
        receiver,
        |mut receiver| async move { receiver.recv().await.map(|event| (Ok(event), receiver)) },
    ))
}

/// The ids of the lines sent lately, so a line read both ways is sent once.
#[derive(Default)]
struct Seen {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl Seen {
    /// True the first time `id` is offered.
    fn first(&mut self, id: &str) -> bool {
        if self.ids.contains(id) {
            return false;
        }
        if self.order.len() == REMEMBERED
            && let Some(old) = self.order.pop_front()
        {
            self.ids.remove(&old);
        }
        self.ids.insert(id.to_owned());
        self.order.push_back(id.to_owned());
        true
    }
}

/// The subscriber went away, or the follower must stop.
struct Gone;

/// What woke a follower.
#[derive(Debug, PartialEq)]
enum Wake {
    /// A line from the log stream.
    Line(PrefectLog),
    /// The log stream ended.
    Dropped,
    /// Time to read the run again.
    Tick,
}

/// What a follower does on the way to its next wake.
enum Chore {
    Heartbeat,
    Recheck,
    /// A change on the feed, perhaps to this run.
    Noted(std::result::Result<Arc<Published>, RecvError>),
}

struct Follower {
    parts: Parts,
    presented: Presented,
    key_moves: tokio::sync::watch::Receiver<()>,
    run: Run,
    level: i32,
    /// The newest line time sent (or resumed from).
    since: Option<DateTime<Utc>>,
    seen: Seen,
    socket: Option<LogStream>,
    reconnect_at: Instant,
    /// When `logs/filter` is next read while the stream is up.
    cross_check_at: Instant,
    /// The stream missed lines: this follower polls from then on.
    stream_missed: bool,
    /// When the run and Prefect were first both seen finished.
    finished_at: Option<Instant>,
    /// When the run is next read again, a heartbeat is due, the credential next checked.
    tick: Instant,
    heartbeat: Instant,
    check: Instant,
    events: mpsc::Sender<Event>,
    closing: tokio::sync::watch::Receiver<bool>,
    /// This replica's change feed (`None` once it closed: the run is then read every tick).
    changes: Option<broadcast::Receiver<Arc<Published>>>,
    /// The feed said the run (or its stages) changed since it was last read.
    changed: bool,
}

/// The next change on the feed; never, once it closed.
async fn next_change(
    changes: &mut Option<broadcast::Receiver<Arc<Published>>>,
) -> std::result::Result<Arc<Published>, RecvError> {
    match changes {
        Some(changes) => changes.recv().await,
        None => std::future::pending().await,
    }
}

/// The next line of the log stream; never, while it is down.
async fn next_line(socket: &mut Option<LogStream>) -> std::result::Result<PrefectLog, ()> {
    match socket {
        Some(socket) => socket.next().await.map_err(|_| ()),
        None => std::future::pending().await,
    }
}

impl Follower {
    async fn run(mut self) {
        let hello = Event::default().event("hello").retry(RETRY).data("{}");
        if self.send(hello).await.is_ok() && self.follow().await.is_ok() {
            let end =
                serde_json::json!({ "status": self.run.status, "prefect_state": self.run.prefect_state });
            self.send(Event::default().event("end").data(end.to_string()))
                .await
                .ok();
        }
    }

    async fn send(&mut self, event: Event) -> std::result::Result<(), Gone> {
        self.heartbeat = Instant::now() + HEARTBEAT;
        self.events.send(event).await.map_err(|_| Gone)
    }

    /// Reads the run again (status, Prefect state, stages) if the change feed said it
    /// changed, or cannot say.
    async fn refresh(&mut self) {
        if !std::mem::take(&mut self.changed) && self.changes.is_some() {
            return;
        }
        if let Ok(Some(mut run)) = crate::runs::db::run_by_id(&self.parts.db, self.run.id).await
            && let Ok(stages) = crate::runs::db::stages_for_runs(&self.parts.db, &[run.id]).await
        {
            run.stages = stages;
            self.run = run;
        }
    }

    /// Whether the last lines may be read and the stream ended.
    fn settled(&mut self) -> bool {
        let prefect_done = self
            .run
            .prefect_state
            .as_deref()
            .is_some_and(|s| FINAL.contains(&s));
        if !self.run.status.is_terminal() {
            return false;
        }
        let first = *self.finished_at.get_or_insert_with(Instant::now);
        (prefect_done && first.elapsed() >= SETTLE) || first.elapsed() >= GIVE_UP
    }

    async fn follow(&mut self) -> std::result::Result<(), Gone> {
        let flow_run = loop {
            if let Some(flow_run) = self.run.prefect_flow_run_id.clone() {
                break flow_run;
            }
            // Finished without reaching Prefect (cancelled while pending): no lines.
            if self.run.status.is_terminal() {
                return Ok(());
            }
            while self.next_wake().await? != Wake::Tick {}
            self.refresh().await;
        };
        self.connect(&flow_run).await;
        match self.since {
            // A resume sends only what came after the line the client has.
            Some(_) => {
                self.catch_up(&flow_run, chrono::TimeDelta::zero()).await?;
            }
            None => self.tail(&flow_run).await?,
        }
        loop {
            match self.next_wake().await? {
                Wake::Line(line) => {
                    self.emit(line).await?;
                }
                Wake::Dropped => {
                    self.socket = None;
                    self.reconnect_at = Instant::now() + RECONNECT;
                }
                Wake::Tick => {
                    self.refresh().await;
                    if self.socket.is_none() {
                        if Instant::now() >= self.reconnect_at && !self.stream_missed {
                            self.connect(&flow_run).await;
                        }
                        self.catch_up(&flow_run, OVERLAP).await?;
                    } else if Instant::now() >= self.cross_check_at {
                        self.cross_check_at = Instant::now() + CROSS_CHECK;
                        if self.catch_up(&flow_run, OVERLAP).await? > 0 {
                            tracing::info!(
                                run.id = self.run.id,
                                "Prefect's log stream missed lines; polling instead"
                            );
                            self.stream_missed = true;
                            self.socket = None;
                        }
                    }
                    if self.settled() {
                        self.catch_up(&flow_run, OVERLAP).await?;
                        return Ok(());
                    }
                }
            }
        }
    }

    /// What comes next: a line, the log stream dropping, or the next tick. Heartbeats and
    /// credential checks happen on the way; fails when the subscriber left, the
    /// credential ended or the server is closing.
    async fn next_wake(&mut self) -> std::result::Result<Wake, Gone> {
        loop {
            let woke = tokio::select! {
                line = next_line(&mut self.socket) => match line {
                    Ok(line) => return Ok(Wake::Line(line)),
                    Err(()) => return Ok(Wake::Dropped),
                },
                () = tokio::time::sleep_until(self.tick) => {
                    self.tick = Instant::now() + TICK;
                    return Ok(Wake::Tick);
                }
                () = tokio::time::sleep_until(self.heartbeat) => Chore::Heartbeat,
                () = tokio::time::sleep_until(self.check) => Chore::Recheck,
                Ok(()) = self.key_moves.changed() => Chore::Recheck,
                change = next_change(&mut self.changes) => Chore::Noted(change),
                _ = self.closing.wait_for(|closing| *closing) => return Err(Gone),
                () = self.events.closed() => return Err(Gone),
            };
            match woke {
                Chore::Heartbeat => {
                    self.send(Event::default().event("heartbeat").data("{}")).await?;
                }
                Chore::Noted(Ok(published)) => {
                    self.changed |= published.change.run_id == Some(self.run.id);
                }
                // Missed changes may have been this run's; a closed feed says nothing more.
                Chore::Noted(Err(RecvError::Lagged(_))) => self.changed = true,
                Chore::Noted(Err(RecvError::Closed)) => self.changes = None,
                Chore::Recheck => {
                    self.check = Instant::now() + RECHECK;
                    if !recheck(&self.parts.identity, &mut self.presented).await {
                        return Err(Gone);
                    }
                }
            }
        }
    }

    async fn connect(&mut self, flow_run: &str) {
        self.socket = self
            .parts
            .prefect
            .flow_run_log_stream(flow_run, self.level)
            .await
            .inspect_err(|e| tracing::debug!(error = %e, "log stream unavailable; polling"))
            .ok();
        if self.socket.is_none() {
            self.reconnect_at = Instant::now() + RECONNECT;
        }
    }

    /// Sends a line not sent yet; true if it was new.
    async fn emit(&mut self, log: PrefectLog) -> std::result::Result<bool, Gone> {
        if log.level < self.level || !self.seen.first(&log.id) {
            return Ok(false);
        }
        let line: RunLog = line(log, &self.run.stages);
        self.since = Some(self.since.map_or(line.timestamp, |s| s.max(line.timestamp)));
        let data = serde_json::to_string(&line).unwrap_or_default();
        let id = event_id(line.timestamp);
        self.send(Event::default().event("log").id(id).data(data)).await?;
        Ok(true)
    }

    /// The newest [`TAIL`] lines, oldest first; `truncated` first when there are more.
    async fn tail(&mut self, flow_run: &str) -> std::result::Result<(), Gone> {
        // Read again by the next catch-up if Prefect cannot be read now.
        let lines = lines(&self.parts.prefect, flow_run, self.level, true, None, TAIL)
            .await
            .unwrap_or_default();
        if lines.len() >= TAIL {
            let note = serde_json::json!({ "shown": TAIL, "download": format!("/api/runs/{}/logs/download", self.run.id) });
            self.send(Event::default().event("truncated").data(note.to_string()))
                .await?;
        }
        for log in lines.into_iter().rev() {
            self.emit(log).await?;
        }
        Ok(())
    }

    /// Every line from `overlap` before the newest sent, oldest first (up to 5,000 a call); returns
    /// how many of those sent were received by Prefect a while ago (missed by the stream).
    async fn catch_up(
        &mut self,
        flow_run: &str,
        overlap: chrono::TimeDelta,
    ) -> std::result::Result<usize, Gone> {
        let since = self.since.map(|since| since - overlap);
        let found = lines(&self.parts.prefect, flow_run, self.level, false, since, CATCH_UP)
            .await
            .unwrap_or_default();
        let mut missed = 0;
        for log in found {
            let old = log.created.is_some_and(|at| at < Utc::now() - MISSED);
            if self.emit(log).await? && old {
                missed += 1;
            }
        }
        Ok(missed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_line_is_sent_once_and_old_ids_are_forgotten() {
        let mut seen = Seen::default();
        assert!(seen.first("a"));
        assert!(!seen.first("a"));
        for i in 0..REMEMBERED {
            seen.first(&i.to_string());
        }
        assert!(seen.first("a"), "forgotten after {REMEMBERED} newer ids");
        assert_eq!(seen.ids.len(), REMEMBERED);
    }

    #[test]
    fn a_resume_names_a_line_time() {
        let written = DateTime::parse_from_rfc3339("2026-12-03T10:00:00.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        let at = resume_from(Some(&event_id(written))).unwrap().unwrap();
        assert_eq!(at, written);
        assert!(
            resume_from(Some(&LAST_EVENT_ID_MAX.to_string()))
                .unwrap()
                .is_some()
        );
        for bad in ["2026-12-03T10:00:00Z", "-1", "253402300800000000", "x", ""] {
            assert!(resume_from(Some(bad)).is_err(), "{bad}");
        }
        assert_eq!(resume_from(None).unwrap(), None);
    }
}
