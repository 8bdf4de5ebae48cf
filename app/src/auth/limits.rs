//! Rate limits and the tally of refusals, per client address and per principal.
//!
//! Everything here is in memory, per replica, and bounded: the maps are pruned on a timer
//! ([`Limits::prune`]) and never hold more than [`MAX_ADDRESSES`] addresses, whatever a
//! flood of distinct addresses does (IPv6 clients are counted per /64, the block one
//! subscriber usually holds).
//!
//! - Failed authentications: a credential that verifies is always accepted; only failures
//!   count, and an address past its budget is answered 429 for its failures. A credential
//!   of the wrong shape or checksum is refused before any database work, so the budget
//!   guards the database against guessing.
//! - Unauthenticated writes (starting an OIDC sign-in) have a budget per address.
//! - Triggers have a budget per principal.
//! - Refusals are written to the audit trail collapsed: at most one `auth.denied` row per
//!   address a minute, carrying how many refusals it stands for ([`Denials`]).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use sqlx::PgPool;

use super::db;
use crate::error::{AppError, Result};

/// Addresses (or principals) a limiter or the refusal tally holds at most. Past it, a
/// limiter starts afresh and the tally counts new addresses together.
pub const MAX_ADDRESSES: usize = 100_000;
/// At most one `auth.denied` row per address in this window.
pub const DENIAL_WINDOW: Duration = Duration::from_secs(60);
/// Refusal rows written at once (not waiting for the timer) per window, all addresses
/// together; beyond, refusals from new addresses are counted in one row per window.
const IMMEDIATE_DENIAL_ROWS: u32 = 600;

/// The budgets, per minute.
#[derive(Debug, Clone, Copy)]
pub struct Budgets {
    /// Failed authentications one client address may make before its failures are 429.
    pub auth_failures_per_minute: NonZeroU32,
    /// Runs one principal may trigger or retry.
    pub triggers_per_minute: NonZeroU32,
    /// Unauthenticated requests that write (starting a sign-in) one client address may make.
    pub sign_ins_per_minute: NonZeroU32,
}

impl Default for Budgets {
    fn default() -> Self {
        Self {
            auth_failures_per_minute: NonZeroU32::new(10).expect("non-zero"),
            triggers_per_minute: NonZeroU32::new(120).expect("non-zero"),
            sign_ins_per_minute: NonZeroU32::new(30).expect("non-zero"),
        }
    }
}

/// What an address is counted as: itself, or its /64 for IPv6.
fn limit_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// Requests without a known client (never the case behind `main`'s listener) share one.
const UNKNOWN_CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

fn client_key(addr: Option<IpAddr>) -> IpAddr {
    addr.map_or(UNKNOWN_CLIENT, limit_key)
}

fn too_many(wait: Duration) -> AppError {
    AppError::RateLimited {
        retry_after: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
    }
}

/// A keyed GCRA limiter (`governor`) that never holds more than [`MAX_ADDRESSES`] keys.
struct Bounded<K: Hash + Eq + Clone> {
    quota: Quota,
    limiter: RwLock<DefaultKeyedRateLimiter<K>>,
}

impl<K: Hash + Eq + Clone> Bounded<K> {
    fn new(per_minute: NonZeroU32) -> Self {
        let quota = Quota::per_minute(per_minute);
        Self {
            quota,
            limiter: RwLock::new(DefaultKeyedRateLimiter::keyed(quota)),
        }
    }

    /// Takes one cell of `key`'s budget, or says how long until there is one.
    fn check(&self, key: &K) -> std::result::Result<(), Duration> {
        let limiter = self
            .limiter
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let checked = limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()));
        let full = limiter.len() > MAX_ADDRESSES;
        drop(limiter);
        if full {
            self.prune();
        }
        checked
    }

    /// Forgets keys whose budget is full again; starts afresh if still too many remain.
    fn prune(&self) {
        let mut limiter = self
            .limiter
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        limiter.retain_recent();
        if limiter.len() > MAX_ADDRESSES / 2 {
            // A flood of distinct addresses, each spending part of its budget: forgetting
            // them costs each a fresh budget, which is what a new address gets anyway.
            *limiter = DefaultKeyedRateLimiter::keyed(self.quota);
        } else {
            limiter.shrink_to_fit();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.limiter
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

/// One address's refusals since its last `auth.denied` row.
#[derive(Debug)]
struct Tally {
    /// When this address's last row was written, if one was.
    last_row: Option<Instant>,
    /// Refusals since then.
    pending: u64,
    /// What the first of them asked for.
    target: String,
}

/// Whose refusals a row counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refused {
    /// One client address (`None`: the server did not know it).
    Client(Option<IpAddr>),
    /// New addresses beyond what is tallied one by one, counted together.
    Crowd,
}

impl Refused {
    /// The client address the row names, if one.
    pub fn addr(self) -> Option<IpAddr> {
        match self {
            Refused::Client(addr) => addr,
            Refused::Crowd => None,
        }
    }
}

/// A refusal row to write: `count` refusals of `source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenialRow {
    /// Whose refusals.
    pub source: Refused,
    /// Refusals this row stands for.
    pub count: u64,
    /// What the first of them asked for (`METHOD /path`, cut to 256 characters).
    pub target: String,
}

/// The tally of refusals per client address (see the module header).
#[derive(Debug, Default)]
pub struct Denials {
    by_addr: HashMap<Refused, Tally>,
    /// The current window's start and its rows written at once.
    window: Option<(Instant, u32)>,
}

impl Tally {
    /// The row of the refusals counted so far, written at `now`; the count starts again.
    fn written(&mut self, source: Refused, now: Instant) -> DenialRow {
        self.last_row = Some(now);
        DenialRow {
            source,
            count: std::mem::take(&mut self.pending),
            target: std::mem::take(&mut self.target),
        }
    }
}

fn window_passed(last_row: Option<Instant>, now: Instant) -> bool {
    last_row.is_none_or(|last| now.duration_since(last) >= DENIAL_WINDOW)
}

/// The longest audit target written for a refusal.
pub const MAX_TARGET_CHARS: usize = 256;

/// `target` cut to [`MAX_TARGET_CHARS`] characters.
pub fn cut_target(target: &str) -> String {
    target.chars().take(MAX_TARGET_CHARS).collect()
}

impl Denials {
    /// Counts a refusal of `addr` at `now`; answers the row to write at once, if one is due
    /// (the address's first refusal in a window).
    pub fn refused(&mut self, addr: Option<IpAddr>, target: &str, now: Instant) -> Option<DenialRow> {
        let client = Refused::Client(addr);
        let window = match self.window {
            Some((start, rows)) if now.duration_since(start) < DENIAL_WINDOW => (start, rows),
            _ => (now, 0),
        };
        let known = self.by_addr.contains_key(&client);
        let crowded = window.1 >= IMMEDIATE_DENIAL_ROWS || (self.by_addr.len() >= MAX_ADDRESSES && !known);
        let key = if crowded && !known { Refused::Crowd } else { client };
        let tally = self.by_addr.entry(key).or_insert_with(|| Tally {
            last_row: None,
            pending: 0,
            target: String::new(),
        });
        if tally.pending == 0 {
            tally.target = cut_target(target);
        }
        tally.pending += 1;
        let due = key != Refused::Crowd && !crowded && window_passed(tally.last_row, now);
        if !due {
            self.window = Some(window);
            return None;
        }
        self.window = Some((window.0, window.1 + 1));
        Some(tally.written(key, now))
    }

    /// The rows due at `now`: addresses with refusals not yet written whose last row is a
    /// window old. Forgets addresses that have been quiet for a window.
    pub fn due(&mut self, now: Instant) -> Vec<DenialRow> {
        let mut rows = Vec::new();
        self.by_addr.retain(|source, tally| {
            if !window_passed(tally.last_row, now) {
                return true;
            }
            if tally.pending == 0 {
                return false;
            }
            rows.push(tally.written(*source, now));
            true
        });
        rows
    }

    /// Addresses tallied.
    pub fn len(&self) -> usize {
        self.by_addr.len()
    }

    /// Whether no address is tallied.
    pub fn is_empty(&self) -> bool {
        self.by_addr.is_empty()
    }
}

/// This replica's rate limiters and refusal tally.
pub struct Limits {
    failures: Bounded<IpAddr>,
    sign_ins: Bounded<IpAddr>,
    triggers: Bounded<String>,
    denials: Mutex<Denials>,
}

impl Limits {
    /// Limiters with these budgets.
    pub fn new(budgets: Budgets) -> Self {
        Self {
            failures: Bounded::new(budgets.auth_failures_per_minute),
            sign_ins: Bounded::new(budgets.sign_ins_per_minute),
            triggers: Bounded::new(budgets.triggers_per_minute),
            denials: Mutex::default(),
        }
    }

    /// Counts a failed authentication from `addr`: `Err(429)` once its budget is spent.
    pub fn failed(&self, addr: Option<IpAddr>) -> Result<()> {
        self.failures.check(&client_key(addr)).map_err(too_many)
    }

    /// Takes one unauthenticated write (a sign-in started) from `addr`'s budget, or 429.
    pub fn sign_in_started(&self, addr: Option<IpAddr>) -> Result<()> {
        self.sign_ins.check(&client_key(addr)).map_err(too_many)
    }

    /// Takes one trigger from `actor`'s budget, or fails with 429.
    pub fn trigger(&self, actor: &str) -> Result<()> {
        self.triggers.check(&actor.to_owned()).map_err(too_many)
    }

    /// Counts a refusal; the row to write now, if one is due.
    pub fn refused(&self, addr: Option<IpAddr>, target: &str) -> Option<DenialRow> {
        self.denials
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .refused(addr, target, Instant::now())
    }

    /// Prunes the maps (call it on a timer); answers the refusal rows now due.
    pub fn prune(&self) -> Vec<DenialRow> {
        self.failures.prune();
        self.sign_ins.prune();
        self.triggers.prune();
        self.denials
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .due(Instant::now())
    }

    /// Every refusal counted and not yet written, due or not (at shutdown).
    pub fn drain(&self) -> Vec<DenialRow> {
        let mut denials = self
            .denials
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::mem::take(&mut *denials)
            .by_addr
            .into_iter()
            .filter(|(_, tally)| tally.pending > 0)
            .map(|(source, mut tally)| tally.written(source, Instant::now()))
            .collect()
    }

    /// Addresses and principals held, all maps together.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.failures.len()
            + self.sign_ins.len()
            + self.triggers.len()
            + self
                .denials
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(failures: u32, triggers: u32) -> Limits {
        Limits::new(Budgets {
            auth_failures_per_minute: NonZeroU32::new(failures).unwrap(),
            triggers_per_minute: NonZeroU32::new(triggers).unwrap(),
            sign_ins_per_minute: NonZeroU32::new(2).unwrap(),
        })
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn failures_past_the_budget_are_429_and_other_addresses_keep_theirs() {
        let limits = limits(3, 100);
        let attacker = ip("10.0.0.1");
        for _ in 0..3 {
            limits.failed(attacker).unwrap();
        }
        let Err(AppError::RateLimited { retry_after }) = limits.failed(attacker) else {
            panic!("the fourth failure is refused");
        };
        assert!((1..=20).contains(&retry_after), "{retry_after}");
        limits.failed(ip("10.0.0.2")).unwrap();
    }

    #[test]
    fn an_ipv6_client_is_counted_by_its_64_block() {
        let limits = limits(2, 100);
        limits.failed(ip("2001:db8:1:2::1")).unwrap();
        limits.failed(ip("2001:db8:1:2:ffff::9")).unwrap();
        assert!(limits.failed(ip("2001:db8:1:2::abcd")).is_err());
        limits.failed(ip("2001:db8:1:3::1")).unwrap();
    }

    #[test]
    fn triggers_and_sign_ins_have_budgets_of_their_own() {
        let limits = limits(3, 2);
        limits.trigger("api-key:ci").unwrap();
        limits.trigger("api-key:ci").unwrap();
        assert!(
            matches!(limits.trigger("api-key:ci"), Err(AppError::RateLimited { retry_after }) if retry_after >= 1)
        );
        limits.trigger("api-key:other").unwrap();
        let browser = ip("192.0.2.1");
        limits.sign_in_started(browser).unwrap();
        limits.sign_in_started(browser).unwrap();
        assert!(limits.sign_in_started(browser).is_err());
        limits.failed(browser).unwrap();
    }

    #[test]
    fn refusals_make_one_row_per_address_a_minute_with_their_count() {
        let mut denials = Denials::default();
        let start = Instant::now();
        let a = ip("198.51.100.1");
        let first = denials
            .refused(a, "GET /api/x", start)
            .expect("the first is written");
        assert_eq!((first.count, first.target.as_str()), (1, "GET /api/x"));
        for i in 1..50 {
            assert_eq!(
                denials.refused(a, "GET /other", start + Duration::from_millis(i)),
                None
            );
        }
        assert_eq!(
            denials
                .refused(ip("198.51.100.2"), "POST /y", start)
                .map(|r| r.count),
            Some(1),
            "another address has its own row"
        );
        assert!(
            denials.due(start + Duration::from_secs(30)).is_empty(),
            "not before the minute"
        );
        let due = denials.due(start + DENIAL_WINDOW);
        assert_eq!(
            due,
            vec![DenialRow {
                source: Refused::Client(a),
                count: 49,
                target: "GET /other".into()
            }]
        );
        // Quiet for a window: forgotten, and its next refusal is written at once.
        assert!(denials.due(start + 2 * DENIAL_WINDOW).is_empty());
        assert_eq!(denials.len(), 0);
        let later = denials.refused(a, "GET /z", start + 3 * DENIAL_WINDOW);
        assert_eq!(later.map(|r| r.count), Some(1));
    }

    #[test]
    fn targets_are_cut_to_256_characters() {
        let mut denials = Denials::default();
        let long = format!("GET /{}", "é".repeat(10_000));
        let row = denials.refused(ip("192.0.2.9"), &long, Instant::now()).unwrap();
        assert_eq!(row.target.chars().count(), MAX_TARGET_CHARS);
    }

    #[test]
    fn a_flood_of_new_addresses_is_written_as_one_row_a_minute() {
        let mut denials = Denials::default();
        let start = Instant::now();
        let mut written = 0;
        for i in 0..5_000u32 {
            let addr = Some(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)));
            written += usize::from(denials.refused(addr, "GET /", start).is_some());
        }
        assert_eq!(written, IMMEDIATE_DENIAL_ROWS as usize);
        let due = denials.due(start + DENIAL_WINDOW);
        let crowd: Vec<_> = due.iter().filter(|r| r.source == Refused::Crowd).collect();
        assert_eq!(crowd.len(), 1);
        assert_eq!(crowd[0].count, 5_000 - u64::from(IMMEDIATE_DENIAL_ROWS));
    }

    #[test]
    fn a_million_distinct_addresses_leave_the_maps_bounded() {
        let limits = limits(10, 10);
        for i in 0..1_000_000u32 {
            let addr = Some(IpAddr::V4(std::net::Ipv4Addr::from(i)));
            limits.failed(addr).ok();
            limits.refused(addr, "GET /");
        }
        let held = limits.held();
        assert!(
            held <= 2 * MAX_ADDRESSES + 2,
            "{held} entries held after a million addresses"
        );
        limits.prune();
        assert!(limits.held() <= 2 * MAX_ADDRESSES + 2);
    }
}

/// Keeps this replica's limiters bounded and writes the refusal rows that come due, every
/// few seconds until `stopped`; then writes what is still counted.
pub async fn keep_limits(
    db: PgPool,
    limits: std::sync::Arc<Limits>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.wait_for(|stop| *stop) => break,
        }
        write_refusals(&db, &limits.prune(), None).await;
    }
    write_refusals(&db, &limits.drain(), None).await;
}

pub(super) async fn write_refusals(db: &PgPool, rows: &[DenialRow], request_id: Option<&str>) {
    for row in rows {
        if let Err(e) = db::record_denials(db, row, request_id).await {
            tracing::error!(error = %e, "could not record refused credentials");
        }
    }
}
