//! The run page's log viewer: an island that follows the run's flow log.
//!
//! It reads Flowdeck's event stream (`GET /api/runs/{id}/logs` as `text/event-stream`;
//! the browser never calls Prefect) and filters by level, stage and text.
//!
//! Unlike the page's other islands, this one renders data in the browser: log lines never
//! pass through Flowdeck's database, so there is no server rendering to put in place. It
//! keeps the newest [`KEPT`] lines. Only the stream's state is announced to screen readers
//! (connecting, live, finished, lost), never each line.

use leptos::prelude::*;
use serde::Deserialize;

use crate::events::live::Link;

/// Lines the viewer keeps; older ones are dropped (the download has them all).
pub const KEPT: usize = 5000;

/// One line as the event stream sends it (only what the viewer shows).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ViewLine {
    /// Prefect's log id.
    pub id: String,
    /// RFC 3339 time.
    pub timestamp: String,
    /// `debug` … `critical`.
    pub level: String,
    /// The stage that was running.
    #[serde(default)]
    pub stage: Option<String>,
    /// The text, credentials masked.
    pub message: String,
}

/// The levels, lowest first.
const LEVELS: [&str; 5] = ["debug", "info", "warning", "error", "critical"];

fn rank(level: &str) -> usize {
    LEVELS.iter().position(|l| *l == level).unwrap_or(0)
}

/// What the stream's state says, for screen readers too.
fn says(link: Link, ended: bool) -> &'static str {
    match (ended, link) {
        (true, _) => "The run has finished; its log is complete.",
        (false, Link::Connecting) => "Connecting to the log…",
        (false, Link::Live) => "Following the log live.",
        (false, Link::Offline) => "Lost the log stream; trying again.",
    }
}

/// The filters a line must pass to show.
#[derive(Debug, Clone, Default, PartialEq)]
struct Filters {
    level: usize,
    stage: String,
    search: String,
}

impl Filters {
    fn shows(&self, line: &ViewLine) -> bool {
        rank(&line.level) >= self.level
            && (self.stage.is_empty() || line.stage.as_deref() == Some(self.stage.as_str()))
            && (self.search.is_empty() || line.message.to_lowercase().contains(&self.search))
    }
}

/// `hh:mm:ss.mmm` of an RFC 3339 time (UTC, as sent).
fn clock(timestamp: &str) -> &str {
    timestamp.get(11..23).unwrap_or(timestamp)
}

/// The log viewer of run `run_id`, whose stages are `stages`.
#[island(lazy)]
pub fn RunLogViewer(run_id: i64, stages: Vec<String>) -> impl IntoView {
    crate::ui::mark_hydrated();
    let lines = RwSignal::new(Vec::<ViewLine>::new());
    let (link, set_link) = signal(Link::Connecting);
    let ended = RwSignal::new(false);
    let truncated = RwSignal::new(false);
    let filters = RwSignal::new(Filters {
        level: 1,
        ..Filters::default()
    });
    let following = RwSignal::new(true);
    let list = NodeRef::<leptos::html::Ol>::new();
    #[cfg(feature = "hydrate")]
    {
        let (stop, stopped) = futures_channel::oneshot::channel::<()>();
        on_cleanup(move || {
            stop.send(()).ok();
        });
        leptos::task::spawn_local(follow(run_id, lines, set_link, ended, truncated, stopped));
        // New lines scroll into view while following.
        Effect::new(move |_| {
            lines.track();
            filters.track();
            if following.get()
                && let Some(list) = list.get()
            {
                // After the new rows are laid out.
                request_animation_frame(move || list.set_scroll_top(list.scroll_height()));
            }
        });
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = set_link;
    let shown = Memo::new(move |_| {
        let filters = filters.get();
        lines.with(|lines| {
            lines
                .iter()
                .filter(|l| filters.shows(l))
                .cloned()
                .collect::<Vec<_>>()
        })
    });
    let count = move || {
        let (shown, all) = (shown.with(Vec::len), lines.with(Vec::len));
        if shown == all {
            format!("{all} lines")
        } else {
            format!("{shown} of {all} lines")
        }
    };
    let download = format!("/api/runs/{run_id}/logs/download");
    view! {
        <div class="log-controls" role="group" aria-label="Log filters">
            <label>
                "Level "
                <select
                    data-testid="log-level"
                    on:change=move |e| {
                        let level = rank(&event_target_value(&e));
                        filters.update(|f| f.level = level);
                    }
                >
                    {LEVELS
                        .iter()
                        .map(|l| view! { <option value=*l selected=*l == "info">{*l}" and above"</option> })
                        .collect_view()}
                </select>
            </label>
            <label>
                "Stage "
                <select
                    data-testid="log-stage"
                    on:change=move |e| {
                        let stage = event_target_value(&e);
                        filters.update(|f| f.stage = stage);
                    }
                >
                    <option value="">"All stages"</option>
                    {stages.into_iter().map(|s| view! { <option value=s.clone()>{s.clone()}</option> }).collect_view()}
                </select>
            </label>
            <label>
                "Search "
                <input
                    type="search"
                    data-testid="log-search"
                    on:input=move |e| {
                        let search = event_target_value(&e).to_lowercase();
                        filters.update(|f| f.search = search);
                    }
                />
            </label>
            <button
                type="button"
                data-testid="log-follow"
                aria-pressed=move || following.get().to_string()
                on:click=move |_| following.update(|f| *f = !*f)
            >
                {move || if following.get() { "Pause scrolling" } else { "Follow" }}
            </button>
            <a href=download download="" class="button">"Download"</a>
        </div>
        <p class="muted small" role="status" aria-live="polite" data-testid="log-state">
            {move || says(link.get(), ended.get())}
        </p>
        <p class="muted small">
            {count}
            {move || truncated.get().then_some(" — older lines are only in the download")}
        </p>
        <ol class="log-lines" tabindex="0" aria-label="Log lines" data-testid="log-lines" node_ref=list>
            <For
                each=move || shown.get()
                key=|line| line.id.clone()
                children=|line| {
                    let title = line.timestamp.clone();
                    view! {
                        <li class=format!("log l-{}", line.level) data-id=line.id.clone()>
                            <time title=title>{clock(&line.timestamp).to_owned()}</time>
                            <span class="log-level">{line.level.to_uppercase()}</span>
                            <span class="log-stage">{line.stage.unwrap_or_default()}</span>
                            <span class="log-message">{line.message}</span>
                        </li>
                    }
                }
            />
        </ol>
    }
}

/// Follows the run's log until it ends or the page goes away; a lost stream is opened
/// again (lines it sends again are dropped by id).
#[cfg(feature = "hydrate")]
async fn follow(
    run_id: i64,
    lines: RwSignal<Vec<ViewLine>>,
    link: WriteSignal<Link>,
    ended: RwSignal<bool>,
    truncated: RwSignal<bool>,
    stopped: futures_channel::oneshot::Receiver<()>,
) {
    use crate::events::live::{Read, read_stream};
    let mut seen = std::collections::HashSet::new();
    let url = format!("/api/runs/{run_id}/logs?level=debug");
    let kinds = ["hello", "heartbeat", "log", "truncated", "end"];
    // Lines are rendered ten times a second at most, however fast they come.
    let gather = Some(std::time::Duration::from_millis(100));
    read_stream(&url, &kinds, gather, link, stopped, |events, _| {
        let mut new = Vec::new();
        let mut read = Read::More;
        for (kind, message) in events {
            let data = message.data().as_string().unwrap_or_default();
            match kind.as_str() {
                "log" => {
                    if let Ok(line) = serde_json::from_str::<ViewLine>(&data)
                        && seen.insert(line.id.clone())
                    {
                        new.push(line);
                    }
                }
                "truncated" => truncated.set(true),
                "end" => {
                    ended.set(true);
                    read = Read::Done;
                }
                _ => {}
            }
        }
        append(lines, truncated, new);
        read
    })
    .await;
}

/// Adds `new` lines, keeping the newest [`KEPT`].
#[cfg(feature = "hydrate")]
fn append(lines: RwSignal<Vec<ViewLine>>, truncated: RwSignal<bool>, new: Vec<ViewLine>) {
    if new.is_empty() {
        return;
    }
    lines.update(|lines| {
        lines.extend(new);
        if lines.len() > KEPT {
            lines.drain(..lines.len() - KEPT);
            truncated.set(true);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(level: &str, stage: Option<&str>, message: &str) -> ViewLine {
        ViewLine {
            id: message.into(),
            timestamp: "2026-12-03T10:00:01.234567Z".into(),
            level: level.into(),
            stage: stage.map(Into::into),
            message: message.into(),
        }
    }

    #[test]
    fn filters_combine_level_stage_and_text() {
        let info = line("info", Some("Load"), "Loaded 5 rows");
        let debug = line("debug", Some("Load"), "connecting");
        let error = line("error", Some("Spark"), "Out of memory");
        let mut filters = Filters {
            level: 1,
            ..Filters::default()
        };
        assert!(filters.shows(&info) && !filters.shows(&debug) && filters.shows(&error));
        filters.stage = "Spark".into();
        assert!(!filters.shows(&info) && filters.shows(&error));
        filters.stage.clear();
        filters.search = "rows".into();
        assert!(filters.shows(&info) && !filters.shows(&error));
        assert_eq!(clock(&info.timestamp), "10:00:01.234");
    }
}
