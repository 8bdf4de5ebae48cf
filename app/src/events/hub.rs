//! One replica's side of the change feed: listen, read each change once, fan out.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{broadcast, watch};

use super::Change;
use crate::api::cache::{Freshness, Scope};

/// The NOTIFY channel the triggers announce on.
pub const CHANNEL: &str = "flowdeck_changes";
/// The NOTIFY channel on which changes to API keys are announced (no payload).
pub const KEYS_CHANNEL: &str = "flowdeck_keys";
/// Changes a subscriber may fall behind before it is told to resync.
const BACKLOG: usize = 4096;

/// A change with its JSON, serialised once for every subscriber.
#[derive(Debug)]
pub struct Published {
    /// The change.
    pub change: Change,
    /// `change` as JSON.
    pub json: String,
}

impl Published {
    fn new(change: Change) -> Arc<Self> {
        let json = serde_json::to_string(&change).unwrap_or_else(|_| "{}".to_owned());
        Arc::new(Published { change, json })
    }
}

/// Fans changes out to this replica's subscribers.
pub struct Hub {
    sender: broadcast::Sender<Arc<Published>>,
    /// Turns true when the process is shutting down: every open feed ends, so that the
    /// server can drain (browsers reconnect, to another replica or to the restarted one).
    closing: watch::Sender<bool>,
    /// Moved by every announced change and lost connection.
    freshness: Arc<Freshness>,
}

struct Row {
    id: i64,
    kind: String,
    pipeline_id: i64,
    run_id: Option<i64>,
    data: serde_json::Value,
    created_at: chrono::DateTime<chrono::Utc>,
}

impl From<Row> for Change {
    fn from(r: Row) -> Self {
        Change {
            id: r.id,
            kind: r.kind,
            pipeline_id: r.pipeline_id,
            run_id: r.run_id,
            data: r.data,
            at: r.created_at,
        }
    }
}

/// The changes with these ids, in order.
async fn changes_by_id(pool: &PgPool, ids: &[i64]) -> sqlx::Result<Vec<Change>> {
    let rows = sqlx::query_as!(
        Row,
        "SELECT id, kind, pipeline_id, run_id, data, created_at FROM changes WHERE id = ANY($1) ORDER BY id",
        ids
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Change::from).collect())
}

/// At most `limit` changes after `after`, in order: what a reconnecting subscriber missed.
pub async fn changes_after(pool: &PgPool, after: i64, limit: i64) -> sqlx::Result<Vec<Change>> {
    let rows = sqlx::query_as!(
        Row,
        "SELECT id, kind, pipeline_id, run_id, data, created_at FROM changes WHERE id > $1 ORDER BY id LIMIT $2",
        after,
        limit
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Change::from).collect())
}

async fn latest_id(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar!(r#"SELECT coalesce(max(id), 0) AS "id!" FROM changes"#)
        .fetch_one(pool)
        .await
}

async fn listen(pool: &PgPool) -> sqlx::Result<PgListener> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen_all([CHANNEL, KEYS_CHANNEL]).await?;
    Ok(listener)
}

impl Hub {
    /// A hub with no subscribers that moves `freshness`; [`Hub::run`] feeds it.
    pub fn new(freshness: Arc<Freshness>) -> Arc<Self> {
        let (sender, _) = broadcast::channel(BACKLOG);
        Arc::new(Hub {
            sender,
            closing: watch::Sender::new(false),
            freshness,
        })
    }

    /// Ends every open feed, now and for feeds opened later.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Turns true when [`Hub::close`] is called.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// A new subscriber's feed of every change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.sender.subscribe()
    }

    /// How many subscriptions are open on this process.
    pub fn subscribers(&self) -> usize {
        self.sender.receiver_count()
    }

    fn publish(&self, changes: Vec<Change>) {
        for change in changes {
            // No subscriber is not an error.
            self.sender.send(Published::new(change)).ok();
        }
    }

    /// Moves the stamps of what `changes` change: a run or stage change moves its run and
    /// its pipeline, anything else (a pipeline's name shows in its runs) everything.
    fn mark_changed(&self, changes: &[Change]) {
        let mut scopes = Vec::with_capacity(changes.len() * 2);
        for change in changes {
            match change.run_id {
                Some(run_id) if change.kind.starts_with("run.") || change.kind.starts_with("stage.") => {
                    scopes.extend(Scope::of_run(change.pipeline_id, run_id));
                }
                _ => return self.freshness.touch(),
            }
        }
        self.freshness.touch_scopes(scopes);
    }

    /// Listens for announced changes until `shutdown`, reconnecting as needed; after a lost
    /// connection it publishes what was committed meanwhile. (Old changes are pruned by
    /// [`crate::retention`].)
    pub async fn run(self: Arc<Self>, pool: PgPool, mut shutdown: watch::Receiver<bool>) {
        let mut last_seen = latest_id(&pool).await.unwrap_or(0);
        loop {
            let mut listener = match listen(&pool).await {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::warn!(%error, "cannot LISTEN for changes; retrying");
                    let pause = tokio::time::sleep(Duration::from_secs(1));
                    if crate::shutdown::stopped_while(pause, &mut shutdown).await {
                        return;
                    }
                    continue;
                }
            };
            // Whatever was committed while nobody listened.
            match changes_after(&pool, last_seen, 10_000).await {
                Ok(missed) => {
                    last_seen = missed.last().map_or(last_seen, |c| c.id);
                    self.publish(missed);
                }
                Err(error) => tracing::warn!(%error, "cannot read missed changes"),
            }
            self.freshness.set_listening(true);
            loop {
                let notification = tokio::select! {
                    n = listener.try_recv() => n,
                    _ = shutdown.changed() => {
                        self.freshness.set_listening(false);
                        return;
                    }
                };
                let first = match notification {
                    Ok(Some(n)) => n,
                    // The connection was lost: reconnect and catch up.
                    Ok(None) | Err(_) => {
                        self.freshness.set_listening(false);
                        break;
                    }
                };
                // What has arrived with it is read with one query. (A pause to gather more
                // capped the listener at one burst per pause: under a load of reports it fell
                // seconds behind, so kept answers were stale that long, and were read afresh
                // long after the load had ended.)
                let mut burst = vec![first];
                while burst.len() < 1000
                    && let Some(n) = listener.next_buffered()
                {
                    burst.push(n);
                }
                let mut ids = Vec::new();
                let mut keys_changed = false;
                for n in burst {
                    if n.channel() == KEYS_CHANNEL {
                        keys_changed = true;
                    } else {
                        ids.extend(n.payload().split(',').filter_map(|id| id.parse::<i64>().ok()));
                    }
                }
                // After every notification taken: an answer read before now may predate
                // these changes.
                if keys_changed {
                    self.freshness.touch_keys();
                }
                if ids.is_empty() {
                    continue;
                }
                match changes_by_id(&pool, &ids).await {
                    Ok(changes) => {
                        // Before subscribers hear of them, so a read they make in answer
                        // shows the changes.
                        self.mark_changed(&changes);
                        last_seen = changes
                            .iter()
                            .map(|c| c.id)
                            .max()
                            .unwrap_or(last_seen)
                            .max(last_seen);
                        self.publish(changes);
                    }
                    Err(error) => {
                        self.freshness.touch();
                        tracing::warn!(%error, "cannot read announced changes");
                    }
                }
            }
        }
    }
}
