//! Writes that arrive together, committed together: a queue and the writers that take
//! groups from it.
//!
//! In `PostgreSQL` a commit that sends a NOTIFY (every write here does, through the change
//! feed) holds a database-wide lock until its log is on disk, so one transaction per
//! request would limit a replica to one disk flush per request. Status reports and
//! triggers are therefore queued; each writer takes what has arrived (up to a group's
//! size), writes it in one transaction and answers every request once it has committed.

use std::future::Future;
use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot};

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

/// The queue of one kind of grouped write.
pub struct Groups<T, A> {
    queue: mpsc::Sender<Job<T, A>>,
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
    /// Requests that may wait for a writer before callers wait to queue theirs.
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
        let (queue, receiver) = mpsc::channel(shape.queue);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..shape.writers {
            let (pool, receiver, write_group) = (pool.clone(), receiver.clone(), write_group.clone());
            let max_group = shape.max_group;
            tokio::spawn(async move {
                let mut jobs = Vec::with_capacity(max_group);
                loop {
                    // The lock is held only while waiting, so another writer gathers the
                    // next group while this one writes.
                    if receiver.lock().await.recv_many(&mut jobs, max_group).await == 0 {
                        return;
                    }
                    write_group(pool.clone(), std::mem::take(&mut jobs)).await;
                }
            });
        }
        Groups {
            queue,
            name: shape.name,
        }
    }

    /// Queues `item` and answers once its group has committed (or it was refused).
    pub async fn submit(&self, item: T) -> Result<A> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            item,
            span: tracing::Span::current(),
            reply,
        };
        if self.queue.send(job).await.is_err() {
            tracing::error!(kind = self.name, "the writers have stopped");
            return Err(AppError::Internal);
        }
        answer.await.unwrap_or_else(|_| {
            tracing::error!(kind = self.name, "a writer dropped a request unanswered");
            Err(AppError::Internal)
        })
    }
}
