//! Answers of read-only listings and single reads, kept until the database may have changed
//! what they show.
//!
//! An answer is stored with the [`Stamp`] it was read under ([`Freshness::stamp`]) and served
//! while the stamp stays the same. A listing's stamp moves with every change; a single
//! pipeline's or run's only with changes to it (its [`Scope`]). A change committed by any
//! replica moves stamps when its announcement has been read, and a write made through this
//! replica when its request ends, so a caller always reads its own writes. Callers asking for
//! the same answer at once wait for one read of it. Nothing is kept while the replica is not
//! listening for changes.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde::Serialize;
use tokio::sync::{OnceCell, watch};

use super::encoding::Kept;
use crate::error::{AppError, Result};

/// What an answer shows, so that only changes to it make it stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Anything (listings, filters): every change moves it.
    All,
    /// One pipeline with its runs' outcomes (`GET /api/pipelines/{id}`): moved by changes to
    /// the pipeline and to any of its runs or their stages.
    Pipeline(i64),
    /// One run with its stages (`GET /api/runs/{id}`): moved by changes to the run and its
    /// stages. (A run shows its pipeline's name: a change to a pipeline moves everything.)
    Run(i64),
}

impl Scope {
    /// What a change to run `run_id` of pipeline `pipeline_id` moves: the run and its
    /// pipeline (which shows its runs' outcomes).
    pub fn of_run(pipeline_id: i64, run_id: i64) -> [Scope; 2] {
        [Scope::Pipeline(pipeline_id), Scope::Run(run_id)]
    }
}

/// When an answer was read: an answer is current while its scope's stamp is the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// Moves when anything may have changed (see [`Freshness::touch`]).
    epoch: u64,
    /// The version at the scope's last change (for [`Scope::All`], the version itself).
    version: u64,
}

/// Scopes whose last change is remembered at most; past this they are forgotten together
/// and every stamp moves.
const MAX_SCOPES: usize = 65_536;

/// Counters that move whenever the database may have changed.
///
/// The change feed's listener (`events::hub`) moves them when a change is announced, and
/// this replica's writes when they commit; an answer read at one stamp is still current
/// while the stamp stays.
pub struct Freshness {
    /// Counts every announced change, every lost connection and every write made through
    /// this replica.
    version: AtomicU64,
    /// Counts what may have changed anything: lost connections, writes that do not say
    /// what they changed, changes to pipelines, forgotten scopes.
    epoch: AtomicU64,
    /// The version at the last change of each pipeline and run that changed since `epoch`
    /// last moved.
    scopes: Mutex<HashMap<Scope, u64>>,
    /// As `version`, for API keys: announced key changes, lost connections, local writes.
    key_version: AtomicU64,
    /// Wakes open feeds to check their credential again whenever `key_version` moves.
    key_moved: watch::Sender<()>,
    /// Whether this replica is listening, so that `version` follows every change.
    listening: AtomicBool,
}

impl Default for Freshness {
    fn default() -> Self {
        Self {
            version: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            scopes: Mutex::default(),
            key_version: AtomicU64::new(0),
            key_moved: watch::Sender::new(()),
            listening: AtomicBool::new(false),
        }
    }
}

impl Freshness {
    /// The stamp of what `scope` shows, or `None` while this replica cannot tell (it is not
    /// listening). An answer read after seeing stamp `s` is current for as long as the stamp
    /// is still `s`: a change committed later moves it when announced, or, made through this
    /// replica, when its request ends.
    pub fn stamp(&self, scope: Scope) -> Option<Stamp> {
        if !self.listening.load(Ordering::Acquire) {
            return None;
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        let version = match scope {
            Scope::All => self.version.load(Ordering::Acquire),
            _ => self.scopes().get(&scope).copied().unwrap_or(0),
        };
        Some(Stamp { epoch, version })
    }

    /// As [`Freshness::stamp`], for what API keys grant.
    pub fn key_version(&self) -> Option<u64> {
        self.listening
            .load(Ordering::Acquire)
            .then(|| self.key_version.load(Ordering::Acquire))
    }

    /// Changes each time what credentials grant may have changed (keys, sessions).
    pub fn key_moves(&self) -> watch::Receiver<()> {
        self.key_moved.subscribe()
    }

    fn scopes(&self) -> std::sync::MutexGuard<'_, HashMap<Scope, u64>> {
        self.scopes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Says that anything may have changed: a write made through this replica that does
    /// not say what it changed has committed, or a change to a pipeline was announced.
    pub fn touch(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    /// Says that what `scopes` show has changed (and so have the listings); [`Scope::All`]
    /// among them moves everything, as [`Freshness::touch`] does.
    pub fn touch_scopes(&self, scopes: impl IntoIterator<Item = Scope>) {
        let scopes: Vec<Scope> = scopes.into_iter().collect();
        if scopes.contains(&Scope::All) {
            return self.touch();
        }
        let version = self.version.fetch_add(1, Ordering::AcqRel) + 1;
        let mut remembered = self.scopes();
        for scope in scopes {
            remembered.insert(scope, version);
        }
        if remembered.len() > MAX_SCOPES {
            remembered.clear();
            self.epoch.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Says that a change to API keys or sessions has committed.
    pub fn touch_keys(&self) {
        self.key_version.fetch_add(1, Ordering::AcqRel);
        self.key_moved.send_replace(());
    }

    /// Says whether the change feed is being followed; moves every stamp either way
    /// (nothing read before a lost connection is known to be current).
    pub fn set_listening(&self, listening: bool) {
        self.touch();
        self.touch_keys();
        self.listening.store(listening, Ordering::Release);
    }
}

/// Distinct answers kept at most: every listing page asked for, and single objects
/// (`GET /api/pipelines/{id}`, `/api/runs/{id}`).
const MAX_ENTRIES: usize = 4096;
/// Bytes kept at most, all answers together.
const MAX_TOTAL: usize = 32 * 1024 * 1024;
/// Answers larger than this are not kept.
const MAX_BYTES: usize = 1024 * 1024;

struct Entry {
    scope: Scope,
    stamp: Stamp,
    answer: Arc<OnceCell<Arc<Kept>>>,
    /// The answer's JSON length once read (its compressed forms, smaller, are not counted) (counted in [`Store::bytes`]).
    counted: usize,
}

/// The entries and the bytes their read answers hold.
#[derive(Default)]
struct Store {
    entries: HashMap<String, Entry>,
    bytes: usize,
}

impl Store {
    /// Makes room for one more entry: drops the ones no longer current (`current` gives a
    /// scope's stamp now), then, if still full, every one.
    fn make_room(&mut self, current: impl Fn(Scope) -> Option<Stamp>) {
        if self.entries.len() < MAX_ENTRIES && self.bytes < MAX_TOTAL {
            return;
        }
        self.entries
            .retain(|_, entry| current(entry.scope) == Some(entry.stamp));
        self.bytes = self.entries.values().map(|entry| entry.counted).sum();
        if self.entries.len() >= MAX_ENTRIES || self.bytes >= MAX_TOTAL {
            self.entries.clear();
            self.bytes = 0;
        }
    }

    /// Counts (or, when too large to keep, drops) the entry under `key` once `answer` in it
    /// has been read.
    fn settle(&mut self, key: &str, answer: &Arc<OnceCell<Arc<Kept>>>, len: usize) {
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        if !Arc::ptr_eq(&entry.answer, answer) || entry.counted > 0 {
            return;
        }
        if len > MAX_BYTES {
            self.entries.remove(key);
        } else {
            entry.counted = len;
            self.bytes += len;
        }
    }
}

/// This replica's kept answers, by key (the route and its canonical query).
#[derive(Default)]
pub struct Answers {
    store: Mutex<Store>,
    freshness: Arc<Freshness>,
}

impl Answers {
    /// No answers yet; they are kept while `freshness` says they are current.
    pub fn new(freshness: Arc<Freshness>) -> Self {
        Self {
            store: Mutex::default(),
            freshness,
        }
    }

    /// The answer for `key`, which shows what any change may change (a listing): kept, or
    /// read by `read` (see [`Answers::get_or_read`]). Call it only after the caller's role
    /// has been checked: a kept answer is served to anyone allowed to read it.
    pub async fn answer<F, Fut>(&self, key: String, read: F) -> Result<Arc<Kept>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes>>,
    {
        self.answer_in(Scope::All, key, read).await
    }

    /// As [`Answers::answer`], for an answer that only changes to `scope` change.
    pub async fn answer_in<F, Fut>(&self, scope: Scope, key: String, read: F) -> Result<Arc<Kept>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes>>,
    {
        let stamp = self.freshness.stamp(scope);
        self.get_or_read(scope, stamp, key, read).await
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The answer for `key` of `scope` read at `stamp`: kept, or read by `read` and kept.
    /// With no stamp (not listening), `read` is simply called.
    async fn get_or_read<F, Fut>(
        &self,
        scope: Scope,
        stamp: Option<Stamp>,
        key: String,
        read: F,
    ) -> Result<Arc<Kept>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes>>,
    {
        let Some(stamp) = stamp else {
            return Ok(Arc::new(Kept::new(read().await?)));
        };
        let answer = {
            let mut store = self.store();
            match store.entries.get(&key) {
                Some(entry) if entry.stamp == stamp => entry.answer.clone(),
                _ => {
                    if let Some(old) = store.entries.remove(&key) {
                        store.bytes -= old.counted;
                    }
                    store.make_room(|scope| self.freshness.stamp(scope));
                    let answer = Arc::new(OnceCell::new());
                    store.entries.insert(
                        key.clone(),
                        Entry {
                            scope,
                            stamp,
                            answer: answer.clone(),
                            counted: 0,
                        },
                    );
                    answer
                }
            }
        };
        // A failed read keeps nothing: the next caller reads again. An answer kept already
        // was counted when it was read: a hit takes the lock once.
        let kept = answer.initialized();
        let read = || async { Ok::<_, AppError>(Arc::new(Kept::new(read().await?))) };
        let found = answer.get_or_try_init(read).await?.clone();
        if !kept {
            self.store().settle(&key, &answer, found.json().len());
        }
        Ok(found)
    }
}

/// The key of a query: its operation and its canonical JSON.
pub fn key(operation: &str, query: &impl Serialize) -> String {
    let query = serde_json::to_string(query).unwrap_or_default();
    format!("{operation} {query}")
}

/// `value` as the JSON an answer is kept as.
pub fn to_json(value: &impl Serialize) -> Result<Bytes> {
    serde_json::to_vec(value).map(Bytes::from).map_err(|error| {
        tracing::error!(%error, "cannot serialise an answer");
        AppError::Internal
    })
}

/// What a write changed, when its handler can say exactly.
///
/// Set on the response, it makes [`after_writes`] move only those scopes' stamps (and the listings'), so single reads of
/// everything else stay kept. A write without it moves every stamp.
#[derive(Clone, Debug)]
pub struct Touched(pub Vec<Scope>);

impl Touched {
    /// A write to run `run_id` of pipeline `pipeline_id` (a trigger, a status report).
    pub fn run(pipeline_id: i64, run_id: i64) -> Self {
        Touched(Scope::of_run(pipeline_id, run_id).to_vec())
    }
}

/// Moves the stamps after every request that may have written through this replica.
///
/// They move once the answer is ready (its transaction has committed), so the caller's
/// next read is read afresh: only the scopes a successful answer names in [`Touched`], or
/// else every stamp. Reads sent as `POST` (`.../filter`, `.../count`) move nothing; a write
/// to API keys (REST `/api/api_keys…` or the admin page's `…_api_key` server functions)
/// also moves the key version, so a key revoked here is refused at once.
pub async fn after_writes(State(freshness): State<Arc<Freshness>>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let writes = !request.method().is_safe() && !path.ends_with("/filter") && !path.ends_with("/count");
    let keys = writes && path.contains("api_key");
    let response = next.run(request).await;
    if writes {
        match response.extensions().get::<Touched>() {
            Some(Touched(scopes)) if response.status().is_success() => {
                freshness.touch_scopes(scopes.iter().copied());
            }
            _ => freshness.touch(),
        }
    }
    if keys {
        freshness.touch_keys();
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn at(version: u64) -> Option<Stamp> {
        Some(Stamp { epoch: 0, version })
    }

    async fn read_counted(reads: &AtomicUsize, text: &'static str) -> Result<Bytes> {
        reads.fetch_add(1, Ordering::SeqCst);
        Ok(Bytes::from_static(text.as_bytes()))
    }

    #[tokio::test]
    async fn an_answer_is_kept_until_the_version_moves() {
        let answers = Answers::default();
        let reads = AtomicUsize::new(0);
        let first = answers
            .get_or_read(Scope::All, at(1), "k".into(), || read_counted(&reads, "a"))
            .await;
        let again = answers
            .get_or_read(Scope::All, at(1), "k".into(), || read_counted(&reads, "b"))
            .await;
        assert_eq!(
            (first.unwrap().json(), again.unwrap().json()),
            (&Bytes::from("a"), &Bytes::from("a"))
        );
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        let moved = answers
            .get_or_read(Scope::All, at(2), "k".into(), || read_counted(&reads, "c"))
            .await;
        assert_eq!(moved.unwrap().json(), &Bytes::from("c"));
        let other = answers
            .get_or_read(Scope::All, at(2), "j".into(), || read_counted(&reads, "d"))
            .await;
        assert_eq!(other.unwrap().json(), &Bytes::from("d"));
        assert_eq!(reads.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_single_read_is_kept_until_a_change_to_it_and_a_listing_until_any() {
        let freshness = Arc::new(Freshness::default());
        freshness.set_listening(true);
        let answers = Answers::new(freshness.clone());
        let reads = AtomicUsize::new(0);
        async fn read_all(answers: &Answers, reads: &AtomicUsize) {
            for (scope, key) in [
                (Scope::Pipeline(1), "p1"),
                (Scope::Run(7), "r7"),
                (Scope::All, "list"),
            ] {
                answers
                    .answer_in(scope, key.into(), || read_counted(reads, "x"))
                    .await
                    .unwrap();
            }
        }
        read_all(&answers, &reads).await;
        read_all(&answers, &reads).await;
        assert_eq!(reads.load(Ordering::SeqCst), 3, "all three kept");
        // A change to another pipeline's run moves the listing only.
        freshness.touch_scopes([Scope::Pipeline(2), Scope::Run(8)]);
        read_all(&answers, &reads).await;
        assert_eq!(reads.load(Ordering::SeqCst), 4);
        // A change to run 7 (of pipeline 1) moves both and the listing.
        freshness.touch_scopes([Scope::Pipeline(1), Scope::Run(7)]);
        read_all(&answers, &reads).await;
        assert_eq!(reads.load(Ordering::SeqCst), 7);
        // A write that does not say what it changed moves everything.
        freshness.touch();
        read_all(&answers, &reads).await;
        assert_eq!(reads.load(Ordering::SeqCst), 10);
        // So does forgetting the scopes when too many changed.
        freshness.touch_scopes((0..=MAX_SCOPES as i64).map(Scope::Run));
        read_all(&answers, &reads).await;
        assert_eq!(reads.load(Ordering::SeqCst), 13);
        read_all(&answers, &reads).await;
        assert_eq!(reads.load(Ordering::SeqCst), 13);
    }

    #[tokio::test]
    async fn nothing_is_kept_without_a_version_or_after_a_failed_read() {
        let answers = Answers::default();
        let reads = AtomicUsize::new(0);
        for _ in 0..2 {
            answers
                .get_or_read(Scope::All, None, "k".into(), || read_counted(&reads, "a"))
                .await
                .unwrap();
        }
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        let failed = answers
            .get_or_read(Scope::All, at(1), "k".into(), || async {
                Err(crate::error::AppError::Internal)
            })
            .await;
        assert_eq!(failed.err(), Some(crate::error::AppError::Internal));
        let after = answers
            .get_or_read(Scope::All, at(1), "k".into(), || read_counted(&reads, "b"))
            .await;
        assert_eq!(after.unwrap().json(), &Bytes::from("b"));
    }

    #[tokio::test]
    async fn callers_at_once_share_one_read() {
        let answers = Answers::default();
        let reads = AtomicUsize::new(0);
        let counter = &reads;
        let slow = move || async move {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            Ok(Bytes::from_static(b"x"))
        };
        let (a, b) = tokio::join!(
            answers.get_or_read(Scope::All, at(7), "k".into(), slow),
            answers.get_or_read(Scope::All, at(7), "k".into(), slow)
        );
        assert_eq!(
            (a.unwrap().json(), b.unwrap().json()),
            (&Bytes::from("x"), &Bytes::from("x"))
        );
        assert_eq!(reads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_number_of_answers_kept_is_bounded() {
        let answers = Answers::default();
        let reads = AtomicUsize::new(0);
        for i in 0..(MAX_ENTRIES * 2) {
            answers
                .get_or_read(Scope::All, at(1), format!("k{i}"), || read_counted(&reads, "a"))
                .await
                .unwrap();
        }
        assert!(answers.store().entries.len() <= MAX_ENTRIES);
    }

    #[tokio::test]
    async fn the_bytes_kept_are_bounded_and_a_huge_answer_is_not_kept() {
        let answers = Answers::default();
        let half_mib = Bytes::from(vec![b'x'; 512 * 1024]);
        for i in 0..100 {
            let answer = half_mib.clone();
            answers
                .get_or_read(Scope::All, at(1), format!("k{i}"), || async move { Ok(answer) })
                .await
                .unwrap();
            let store = answers.store();
            assert!(store.bytes <= MAX_TOTAL, "{} bytes kept", store.bytes);
            assert_eq!(
                store.bytes,
                store.entries.values().map(|e| e.counted).sum::<usize>()
            );
        }
        let reads = AtomicUsize::new(0);
        let huge = || async {
            reads.fetch_add(1, Ordering::SeqCst);
            Ok(Bytes::from(vec![b'y'; MAX_BYTES + 1]))
        };
        for _ in 0..2 {
            answers
                .get_or_read(Scope::All, at(1), "huge".into(), huge)
                .await
                .unwrap();
        }
        assert_eq!(
            reads.load(Ordering::SeqCst),
            2,
            "an answer over the limit is read each time"
        );
    }
}
