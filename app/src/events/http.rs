//! `GET /api/events`: the change feed as Server-Sent Events.

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use futures_util::Stream;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use super::hub::Hub;
use super::hub::{Published, changes_after};
use super::{Change, Filter};
use crate::api::ApiQuery;
use crate::api::responses::Errors;
use crate::auth::Identity;
use crate::auth::credentials::{Presented, recheck};
use crate::caller::{Caller, KeyScope, Role};
use crate::error::{AppError, Result};

/// At most this many missed changes are replayed; beyond, the subscriber is told to resync.
const REPLAY: i64 = 1000;
/// How long a browser waits before reconnecting (`retry:`).
const RETRY: Duration = Duration::from_secs(2);
/// A quiet stream sends a `heartbeat` event this often, so clients can tell silence from
/// a dead link.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// A stream's credential is checked again this often, busy or quiet (and at once when
/// credentials change).
const RECHECK: Duration = Duration::from_secs(15);

/// Where a resuming subscriber left off: `Last-Event-ID`, or `last_event_id` in the query
/// for clients that cannot set headers.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Query {
    #[serde(default)]
    pipeline_id: Option<i64>,
    #[serde(default)]
    run_id: Option<i64>,
    #[serde(default)]
    last_event_id: Option<i64>,
}

fn last_event_id(headers: &HeaderMap) -> Result<Option<i64>> {
    headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .filter(|id| *id >= 0)
                .ok_or_else(|| AppError::invalid("Last-Event-ID", "must be an event id from this stream"))
        })
        .transpose()
}

fn event(change: &Change, json: &str) -> Event {
    Event::default()
        .id(change.id.to_string())
        .event(&change.kind)
        .data(json)
}

/// Tells the subscriber it missed changes that cannot be replayed: reload what it shows.
fn resync(reason: &str) -> Event {
    Event::default()
        .event("resync")
        .data(format!("{{\"reason\":\"{reason}\"}}"))
}

/// The pipelines a scoped caller sees, kept current as pipelines change (a pipeline tagged
/// into the scope appears, one tagged out disappears).
struct Visible {
    scope: KeyScope,
    ids: HashSet<i64>,
}

impl Visible {
    /// Every pipeline in `scope` now; `None` when the scope names no pipelines.
    async fn load(db: &sqlx::PgPool, scope: &KeyScope) -> Result<Option<Self>> {
        if !scope.limits_pipelines() {
            return Ok(None);
        }
        let ids = sqlx::query_scalar!(
            "SELECT id FROM pipelines p WHERE p.id = ANY($1) OR p.slug = ANY($2) OR p.tags && $3",
            &scope.pipeline_ids,
            &scope.slugs,
            &scope.tags,
        )
        .fetch_all(db)
        .await?;
        Ok(Some(Self {
            scope: scope.clone(),
            ids: ids.into_iter().collect(),
        }))
    }

    /// Whether the caller sees `change`; a pipeline's change moves it in or out of view.
    fn sees(&mut self, change: &Change) -> bool {
        if change.kind.starts_with("pipeline.") {
            let slug = change
                .data
                .get("slug")
                .and_then(|s| s.as_str())
                .unwrap_or_default();
            let tags: Vec<String> = change
                .data
                .get("tags")
                .and_then(|t| serde_json::from_value(t.clone()).ok())
                .unwrap_or_default();
            let covered =
                change.kind != "pipeline.deleted" && self.scope.covers(change.pipeline_id, slug, &tags);
            let was = if covered {
                !self.ids.insert(change.pipeline_id)
            } else {
                self.ids.remove(&change.pipeline_id)
            };
            // A pipeline leaving the scope is told once (as deleted would be), then not again.
            return covered || was;
        }
        self.ids.contains(&change.pipeline_id)
    }
}

fn visible(visible: &mut Option<Visible>, change: &Change) -> bool {
    visible.as_mut().is_none_or(|v| v.sees(change))
}

struct Feed {
    first: Option<Event>,
    replay: VecDeque<(Change, String)>,
    replayed: HashSet<i64>,
    filter: Filter,
    /// What a scoped caller sees; `None` sees every pipeline.
    visible: Option<Visible>,
    subscription: broadcast::Receiver<Arc<Published>>,
    closing: tokio::sync::watch::Receiver<bool>,
    /// The credential the stream was opened with: the stream ends when it does.
    presented: Presented,
    /// Moves when credentials may have changed (revoked, rotated, signed out).
    key_moves: tokio::sync::watch::Receiver<()>,
    /// When the credential is next checked again.
    next_check: tokio::time::Instant,
    /// When a heartbeat is due if nothing else is sent.
    next_heartbeat: tokio::time::Instant,
    identity: Identity,
}

/// What woke a waiting feed.
enum Woke {
    /// A change, a lag or a closed hub.
    Received(std::result::Result<Arc<Published>, RecvError>),
    /// Nothing was sent for a heartbeat's time.
    Quiet,
    /// What credentials grant may have changed, or it is time to check anyway.
    Recheck,
}

/// Sleeps until `at`, or forever without one.
async fn until(at: Option<chrono::DateTime<chrono::Utc>>) {
    match at {
        Some(at) => {
            let left = (at - chrono::Utc::now()).to_std().unwrap_or_default();
            tokio::time::sleep(left).await;
        }
        None => std::future::pending().await,
    }
}

impl Feed {
    async fn next(&mut self) -> Option<Event> {
        let event = self.next_event().await;
        self.next_heartbeat = tokio::time::Instant::now() + HEARTBEAT;
        event
    }

    async fn next_event(&mut self) -> Option<Event> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        if let Some((change, json)) = self.replay.pop_front() {
            return Some(event(&change, &json));
        }
        loop {
            let woke = tokio::select! {
                received = self.subscription.recv() => Woke::Received(received),
                () = tokio::time::sleep_until(self.next_heartbeat) => Woke::Quiet,
                _ = self.closing.wait_for(|closing| *closing) => return None,
                () = until(self.presented.expires_at) => return None,
                Ok(()) = self.key_moves.changed() => Woke::Recheck,
                () = tokio::time::sleep_until(self.next_check) => Woke::Recheck,
            };
            let received = match woke {
                Woke::Received(received) => received,
                Woke::Quiet => return Some(Event::default().event("heartbeat").data("{}")),
                Woke::Recheck => {
                    self.next_check = tokio::time::Instant::now() + RECHECK;
                    if recheck(&self.identity, &mut self.presented).await {
                        continue;
                    }
                    return None;
                }
            };
            match received {
                Ok(published) => {
                    let Published { change, json } = &*published;
                    if self.filter.matches(change)
                        && !self.replayed.contains(&change.id)
                        && visible(&mut self.visible, change)
                    {
                        return Some(event(change, json));
                    }
                }
                Err(RecvError::Lagged(_)) => return Some(resync("lagged")),
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

/// The change feed.
#[utoipa::path(get, path = "/api/events", tag = "events",
    description = "Role: viewer. Server-Sent Events: one `data:` JSON change per event (`id` resumes with `Last-Event-ID`), `heartbeat` events while quiet, `resync` when too much was missed. A scoped key sees only the changes of pipelines in its scope. The stream ends when its credential expires or is revoked, when its key's scope changes, or when its session signs out.",
    params(("pipeline_id" = Option<i64>, Query, description = "Only this pipeline's changes"),
           ("run_id" = Option<i64>, Query, description = "Only this run's changes"),
           ("last_event_id" = Option<i64>, Query, minimum = 0, description = "Resume after this change id"),
           ("Last-Event-ID" = Option<i64>, Header, minimum = 0, description = "Resume after this change id")),
    responses((status = 200, description = "The stream", content_type = "text/event-stream", body = crate::api::responses::StreamEvent), Errors))]
async fn events(
    State(hub): State<Arc<Hub>>,
    State(identity): State<Identity>,
    caller: Caller,
    presented: Presented,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<Query>,
) -> Result<Sse<impl Stream<Item = std::result::Result<Event, Infallible>>>> {
    caller.require(Role::Viewer)?;
    if query.last_event_id.is_some_and(|id| id < 0) {
        return Err(AppError::invalid(
            "last_event_id",
            "must be an event id from this stream",
        ));
    }
    let resume = last_event_id(&headers)?.or(query.last_event_id);
    let filter = Filter {
        pipeline_id: query.pipeline_id,
        run_id: query.run_id,
    };
    // Subscribe before reading the backlog, so nothing falls between the two.
    let subscription = hub.subscribe();
    let mut in_view = Visible::load(&identity.db, &caller.scope).await?;
    let mut first = Some(Event::default().event("hello").retry(RETRY).data("{}"));
    let mut replay = VecDeque::new();
    if let Some(after) = resume {
        let missed = changes_after(&identity.db, after, REPLAY + 1).await?;
        if missed.len() as i64 > REPLAY {
            first = Some(resync("too many changes to replay").retry(RETRY));
        } else {
            replay = missed
                .into_iter()
                .filter(|c| filter.matches(c) && visible(&mut in_view, c))
                .map(|c| {
                    let json = serde_json::to_string(&c).unwrap_or_default();
                    (c, json)
                })
                .collect();
        }
    }
    let feed = Feed {
        first,
        replayed: replay.iter().map(|(c, _)| c.id).collect(),
        replay,
        filter,
        visible: in_view,
        subscription,
        closing: hub.closing(),
        presented,
        key_moves: identity.freshness.key_moves(),
        next_check: tokio::time::Instant::now() + RECHECK,
        next_heartbeat: tokio::time::Instant::now() + HEARTBEAT,
        identity,
    };
    let stream = futures_util::stream::unfold(feed, |mut feed| async move {
        feed.next().await.map(|event| (Ok(event), feed))
    });
    Ok(Sse::new(stream))
}

/// `GET /api/events`.
pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    Arc<Hub>: axum::extract::FromRef<S>,
    Identity: axum::extract::FromRef<S>,
{
    OpenApiRouter::new().routes(routes!(events))
}
