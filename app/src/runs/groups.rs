//! Writes that arrive together, committed together: writers, each taking groups from its
//! own queue.
//!
//! In `PostgreSQL` a commit that sends a NOTIFY (every write here does, through the change
//! feed) holds a database-wide lock until its log is on disk, so one transaction per
//! request would limit a replica to one disk flush per request. Status reports and
//! triggers are therefore queued; each writer takes what has arrived (up to a group's
//! size), writes it in one transaction and answers every request once it has committed.
//!
//! Each writer has its own queue, and a request goes to the writer its key (the run or
//! pipeline it is about) falls to. Requests about the same thing are therefore written by
//! one writer, in the order they arrived, and two groups of this replica never contend for
//! the same rows: with one shared queue, reports spread over ten runs kept finding their run
//! held by another writer's group, and were written one transaction each (1,343/s at 64
//! clients).

use std::future::Future;

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use crate::error::{AppError, Result};

/// One queued request: what to write, the request's span (the group's span follows from
/// it) and where its answer goes.
pub struct Job<T, A> {
    pub item: T,
    pub span: tracing::Span,
    pub reply: oneshot::Sender<Result<A>>,
}

/// The parent of a group's span: the request's span when the group holds one request (its
/// statements then show in that request's trace), none otherwise (the group's span follows
/// from each request's).
pub fn parent_of<T, A>(jobs: &[Job<T, A>]) -> Option<tracing::Id> {
    match jobs {
        [one] => one.span.id(),
        _ => None,
    }
}

/// Begins a group's transaction, whose statements keep their first (generic) plans.
///
/// A group sends the same few statements over and over with arrays of every size, and planning each
/// one afresh for its arrays took a sixth of the database's time (a `perf` profile of
/// triggers at 16 clients), for plans that come out the same.
pub async fn begin(pool: &PgPool) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    pool.begin_with("BEGIN; SET LOCAL plan_cache_mode = force_generic_plan")
        .await
}

/// Why a group's transaction did not commit.
pub enum Failure {
    /// A statement failed: nothing was written, and each request is tried again alone.
    BeforeCommit(sqlx::Error),
    /// The commit failed: nothing is acknowledged, so the callers retry.
    Commit(sqlx::Error),
}

/// The queues of one kind of grouped write, one for each writer.
pub struct Groups<T, A> {
    queues: Vec<mpsc::Sender<Job<T, A>>>,
    name: &'static str,
}

/// How a kind of write is grouped.
pub struct Shape {
    /// Named in the logs (`status report`, `trigger`).
    pub name: &'static str,
    /// Writers per replica: while one waits for the database, the others gather and write.
    pub writers: usize,
    /// The most requests one transaction holds.
    pub max_group: usize,
    /// Requests that may wait for each writer before callers wait to queue theirs.
    pub queue: usize,
}

impl<T: Send + 'static, A: Send + 'static> Groups<T, A> {
    /// Starts the writers on the current Tokio runtime; they stop when this is dropped.
    /// `write_group` writes a group and answers each of its jobs.
    pub fn start<W, Fut>(pool: PgPool, shape: Shape, write_group: W) -> Self
    where
        W: Fn(PgPool, Vec<Job<T, A>>) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let queues = (0..shape.writers.max(1))
            .map(|_| {
                let (queue, mut receiver) = mpsc::channel(shape.queue);
                let (pool, write_group) = (pool.clone(), write_group.clone());
                let max_group = shape.max_group;
                tokio::spawn(async move {
                    let mut jobs = Vec::with_capacity(max_group);
                    while receiver.recv_many(&mut jobs, max_group).await > 0 {
                        write_group(pool.clone(), std::mem::take(&mut jobs)).await;
                    }
                });
                queue
            })
            .collect();
        Groups {
            queues,
            name: shape.name,
        }
    }

    /// Queues `item`, about the run or pipeline `key`, and answers once its group has
    /// committed (or it was refused).
    pub async fn submit(&self, key: i64, item: T) -> Result<A> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            item,
            span: tracing::Span::current(),
            reply,
        };
        let queue = &self.queues[key.unsigned_abs() as usize % self.queues.len()];
        if queue.send(job).await.is_err() {
            tracing::error!(kind = self.name, "the writers have stopped");
            return Err(AppError::Internal);
        }
        answer.await.unwrap_or_else(|_| {
            tracing::error!(kind = self.name, "a writer dropped a request unanswered");
            Err(AppError::Internal)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// What the writers saw: the keys being written now, how often a key was written by
    /// two groups at once, the most groups written at once, and each key's items in the
    /// order written.
    #[derive(Default)]
    struct Seen {
        writing: Mutex<HashSet<i64>>,
        clashes: AtomicUsize,
        at_once: AtomicUsize,
        most_at_once: AtomicUsize,
        order: Mutex<Vec<(i64, usize)>>,
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_key_is_written_by_one_writer_at_a_time_in_arrival_order() {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://localhost/never-connected")
            .unwrap();
        let seen = Arc::new(Seen::default());
        let shape = Shape {
            name: "test",
            writers: 4,
            max_group: 8,
            queue: 64,
        };
        let writers_seen = seen.clone();
        let groups = Arc::new(Groups::start(
            pool,
            shape,
            move |_, jobs: Vec<Job<(i64, usize), ()>>| {
                let seen = writers_seen.clone();
                async move {
                    let keys: HashSet<i64> = jobs.iter().map(|job| job.item.0).collect();
                    {
                        let mut writing = seen.writing.lock().unwrap();
                        for key in &keys {
                            if !writing.insert(*key) {
                                seen.clashes.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                    let now = seen.at_once.fetch_add(1, Ordering::SeqCst) + 1;
                    seen.most_at_once.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    seen.order.lock().unwrap().extend(jobs.iter().map(|job| job.item));
                    seen.at_once.fetch_sub(1, Ordering::SeqCst);
                    let mut writing = seen.writing.lock().unwrap();
                    for key in &keys {
                        writing.remove(key);
                    }
                    drop(writing);
                    for job in jobs {
                        job.reply.send(Ok(())).ok();
                    }
                }
            },
        ));
        // 5 keys, each with 8 callers sending their items one after another, and one
        // sending 20 at once (queued in the order sent).
        let mut callers = Vec::new();
        for key in 0..5i64 {
            for caller in 0..8usize {
                let groups = groups.clone();
                callers.push(tokio::spawn(async move {
                    for _ in 0..10 {
                        groups.submit(key, (key, 1000 + caller)).await.unwrap();
                    }
                }));
            }
            let groups = groups.clone();
            callers.push(tokio::spawn(async move {
                let sent = (0..20).map(|n| groups.submit(key, (key, n)));
                for answer in futures_util::future::join_all(sent).await {
                    answer.unwrap();
                }
            }));
        }
        for caller in callers {
            caller.await.unwrap();
        }
        assert_eq!(
            seen.clashes.load(Ordering::SeqCst),
            0,
            "a key written by two groups at once"
        );
        assert!(
            seen.most_at_once.load(Ordering::SeqCst) > 1,
            "the writers never wrote at the same time"
        );
        let order = seen.order.lock().unwrap();
        assert_eq!(order.len(), 5 * (8 * 10 + 20));
        // The items sent at once were written in the order they were sent.
        for key in 0..5 {
            let sent: Vec<usize> = order
                .iter()
                .filter(|(k, item)| *k == key && *item < 1000)
                .map(|(_, item)| *item)
                .collect();
            assert_eq!(sent, (0..20).collect::<Vec<_>>(), "key {key}");
        }
    }
}
