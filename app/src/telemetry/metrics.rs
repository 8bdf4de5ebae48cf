//! The process's metrics, exposed at `/metrics` in the OpenMetrics text format (which
//! Prometheus scrapes natively).
//!
//! Counters and histograms are updated where things happen; gauges that describe shared
//! state (outbox, pool, subscribers, memory) are read when scraped, so a scrape costs one
//! small query and nothing is polled in between.

use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry, Unit};

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency buckets, 1 ms to 30 s (the request time-out).
const SECONDS_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(SECONDS_BUCKETS)
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// An HTTP request: method, matched route (`/api/pipelines/{id}`, never the raw path)
/// and status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PrefectLabels {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PrefectErrorLabels {
    operation: &'static str,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    from: &'static str,
    to: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabels {
    table: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    state: &'static str,
}

/// Every metric family Flowdeck exports.
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_errors: Family<HttpLabels, Counter>,
    http_duration: Histograms<HttpLabels>,
    triggers: Family<OutcomeLabels, Counter>,
    status_updates: Family<OutcomeLabels, Counter>,
    transitions: Family<TransitionLabels, Counter>,
    prefect_duration: Histograms<PrefectLabels>,
    prefect_errors: Family<PrefectErrorLabels, Counter>,
    pruned_rows: Family<TableLabels, Counter>,
    prune_passes: Family<OutcomeLabels, Counter>,
    outbox_depth: Gauge,
    outbox_oldest: Gauge<f64, AtomicU64>,
    sse_subscribers: Gauge,
    pool_connections: Family<PoolLabels, Gauge>,
    pool_max: Gauge,
    resident_memory: Gauge,
    peak_resident_memory: Gauge,
}

/// `metric`, registered in `registry` under `name` (and `unit`, which suffixes the name).
fn registered<M: Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    unit: Option<Unit>,
    help: &str,
    metric: M,
) -> M {
    match unit {
        Some(unit) => registry.register_with_unit(name, help, unit, metric.clone()),
        None => registry.register(name, help, metric.clone()),
    }
    metric
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// This process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("flowdeck");
        let r = &mut registry;
        Metrics {
            http_requests: registered(
                r,
                "http_requests",
                None,
                "HTTP requests answered, by method, route and status",
                Default::default(),
            ),
            http_errors: registered(
                r,
                "http_errors",
                None,
                "HTTP requests answered with a status of 400 or more, by method, route and status",
                Default::default(),
            ),
            http_duration: registered(
                r,
                "http_request_duration",
                Some(Unit::Seconds),
                "Time to answer an HTTP request (to the response head)",
                Family::new_with_constructor(latency_histogram),
            ),
            triggers: registered(
                r,
                "triggers",
                None,
                "Run triggers and retries by outcome: accepted, deduplicated (an Idempotency-Key repeat), refused, rate_limited, failed",
                Default::default(),
            ),
            status_updates: registered(
                r,
                "status_updates",
                None,
                "Stage status callbacks by outcome: applied, stale (older than what is known), duplicate (an event id seen before)",
                Default::default(),
            ),
            transitions: registered(
                r,
                "run_transitions",
                None,
                "Run status changes made by this process, by previous and new status",
                Default::default(),
            ),
            prefect_duration: registered(
                r,
                "prefect_request_duration",
                Some(Unit::Seconds),
                "Time of one HTTP call to Prefect's API, by operation",
                Family::new_with_constructor(latency_histogram),
            ),
            prefect_errors: registered(
                r,
                "prefect_errors",
                None,
                "Failed calls to Prefect's API by operation and kind (unavailable: retried; rejected, garbage: not)",
                Default::default(),
            ),
            pruned_rows: registered(
                r,
                "pruned_rows",
                None,
                "Rows deleted by retention pruning, by table",
                Default::default(),
            ),
            prune_passes: registered(
                r,
                "prune_passes",
                None,
                "Pruning passes by outcome: pruned, skipped (another replica held the lock), failed",
                Default::default(),
            ),
            outbox_depth: registered(
                r,
                "outbox_depth",
                None,
                "Accepted runs not yet handed to Prefect",
                Default::default(),
            ),
            outbox_oldest: registered(
                r,
                "outbox_oldest_age",
                Some(Unit::Seconds),
                "Age of the oldest run waiting in the outbox (0 when empty)",
                Default::default(),
            ),
            sse_subscribers: registered(
                r,
                "sse_subscribers",
                None,
                "Open change-feed (server-sent events) subscriptions on this process",
                Default::default(),
            ),
            pool_connections: registered(
                r,
                "db_pool_connections",
                None,
                "Database pool connections by state (idle, in_use)",
                Default::default(),
            ),
            pool_max: registered(
                r,
                "db_pool_max_connections",
                None,
                "The database pool's size limit",
                Default::default(),
            ),
            resident_memory: registered(
                r,
                "process_resident_memory",
                Some(Unit::Bytes),
                "Resident memory of this process",
                Default::default(),
            ),
            peak_resident_memory: registered(
                r,
                "process_peak_resident_memory",
                Some(Unit::Bytes),
                "Peak resident memory of this process since it started",
                Default::default(),
            ),
            registry,
        }
    }

    /// One answered HTTP request.
    pub fn http(&self, labels: &HttpLabels, elapsed: Duration) {
        self.http_duration
            .get_or_create(labels)
            .observe(elapsed.as_secs_f64());
        if labels.status >= 400 {
            self.http_errors.get_or_create(labels).inc();
        }
        self.http_requests.get_or_create(labels).inc();
    }

    /// One trigger or retry, by outcome.
    pub fn trigger(&self, outcome: &'static str) {
        self.triggers.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// One stage status callback, by outcome.
    pub fn status_update(&self, outcome: &'static str) {
        self.status_updates
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// A run moved from one status to another (committed).
    pub fn transition(&self, from: &'static str, to: &'static str) {
        if from != to {
            self.transitions
                .get_or_create(&TransitionLabels { from, to })
                .inc();
        }
    }

    /// Rows of `table` deleted by a pruning pass.
    pub fn pruned(&self, table: &'static str, rows: u64) {
        self.pruned_rows
            .get_or_create(&TableLabels { table })
            .inc_by(rows);
    }

    /// One pruning pass, by outcome.
    pub fn prune_pass(&self, outcome: &'static str) {
        self.prune_passes.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// One HTTP call to Prefect and, if it failed, how.
    pub fn prefect_call(&self, operation: &'static str, elapsed: Duration, error: Option<&'static str>) {
        self.prefect_duration
            .get_or_create(&PrefectLabels { operation })
            .observe(elapsed.as_secs_f64());
        if let Some(kind) = error {
            self.prefect_errors
                .get_or_create(&PrefectErrorLabels { operation, kind })
                .inc();
        }
    }
}

/// What is read when scraped: the outbox, subscribers and the database pool.
pub struct Gauges {
    /// Runs accepted and not yet submitted to Prefect.
    pub outbox_depth: Option<i64>,
    /// Seconds the oldest of them has waited.
    pub outbox_oldest: Option<f64>,
    /// Open event streams on this replica.
    pub subscribers: usize,
    /// The pool's open connections.
    pub pool_size: u32,
    /// Of those, idle.
    pub pool_idle: usize,
    /// The pool's most connections.
    pub pool_max: u32,
}

/// The metrics as OpenMetrics text, with `gauges` as read now.
pub fn render(gauges: &Gauges) -> String {
    let m = metrics();
    // Unread gauges keep their last values; readiness reports the database itself.
    if let (Some(depth), Some(oldest)) = (gauges.outbox_depth, gauges.outbox_oldest) {
        m.outbox_depth.set(depth);
        m.outbox_oldest.set(oldest.max(0.0));
    }
    m.sse_subscribers
        .set(i64::try_from(gauges.subscribers).unwrap_or(i64::MAX));
    let size = i64::from(gauges.pool_size);
    let idle = i64::try_from(gauges.pool_idle).unwrap_or(0);
    m.pool_connections
        .get_or_create(&PoolLabels { state: "idle" })
        .set(idle);
    m.pool_connections
        .get_or_create(&PoolLabels { state: "in_use" })
        .set((size - idle).max(0));
    m.pool_max.set(i64::from(gauges.pool_max));
    if let Some((rss, peak)) = memory() {
        m.resident_memory.set(rss);
        m.peak_resident_memory.set(peak);
    }
    let mut out = String::with_capacity(16 * 1024);
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &m.registry);
    out
}

/// Resident and peak resident memory in bytes, from `/proc/self/status` (Linux).
fn memory() -> Option<(i64, i64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
            .map(|kb| kb * 1024)
    };
    Some((kib("VmRSS:")?, kib("VmHWM:")?))
}
