//! Rate limits: failed authentications per source address, and triggers per principal.
//!
//! Both are kept in memory, per replica (GCRA buckets from `governor`). An address that
//! spends its budget of failures is turned away before any credential it sends is checked,
//! until the bucket refills, so guessing keys or brute-forcing the sign-in page gains
//! nothing from a correct guess made while blocked.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::error::{AppError, Result};

/// The budgets, per minute.
#[derive(Debug, Clone, Copy)]
pub struct Budgets {
    /// Failed authentications one source address may make.
    pub auth_failures_per_minute: NonZeroU32,
    /// Runs one principal may trigger or retry.
    pub triggers_per_minute: NonZeroU32,
}

impl Default for Budgets {
    fn default() -> Self {
        Self {
            auth_failures_per_minute: NonZeroU32::new(10).expect("non-zero"),
            triggers_per_minute: NonZeroU32::new(120).expect("non-zero"),
        }
    }
}

/// This replica's rate limiters.
pub struct Limits {
    failures: DefaultKeyedRateLimiter<IpAddr>,
    /// Addresses over their failure budget, and until when.
    blocked: Mutex<HashMap<IpAddr, Instant>>,
    triggers: DefaultKeyedRateLimiter<String>,
}

/// Addresses without a known peer (never the case behind `main`'s listener) share one.
const UNKNOWN_PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

fn peer(addr: Option<&str>) -> IpAddr {
    addr.and_then(|a| a.parse().ok()).unwrap_or(UNKNOWN_PEER)
}

fn too_many(wait: Duration) -> AppError {
    AppError::RateLimited {
        retry_after: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
    }
}

impl Limits {
    /// Limiters with these budgets.
    pub fn new(budgets: Budgets) -> Self {
        Self {
            failures: DefaultKeyedRateLimiter::keyed(Quota::per_minute(budgets.auth_failures_per_minute)),
            blocked: Mutex::new(HashMap::new()),
            triggers: DefaultKeyedRateLimiter::keyed(Quota::per_minute(budgets.triggers_per_minute)),
        }
    }

    /// Fails with 429 while `addr` is blocked for failed authentications.
    pub fn admit(&self, addr: Option<&str>) -> Result<()> {
        let ip = peer(addr);
        let mut blocked = self
            .blocked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        match blocked.get(&ip) {
            Some(until) if *until > now => Err(too_many(*until - now)),
            Some(_) => {
                blocked.remove(&ip);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Counts a failed authentication from `addr`; once its budget is spent the address is
    /// blocked until the bucket allows one more, and the answer is 429.
    pub fn failed(&self, addr: Option<&str>) -> Result<()> {
        let ip = peer(addr);
        let Err(not_until) = self.failures.check_key(&ip) else {
            return Ok(());
        };
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        let mut blocked = self
            .blocked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        // Forget addresses whose block has ended, so the map cannot grow without bound.
        if blocked.len() > 10_000 {
            blocked.retain(|_, until| *until > now);
            self.failures.retain_recent();
        }
        blocked.insert(ip, now + wait);
        Err(too_many(wait))
    }

    /// Takes one trigger from `actor`'s budget, or fails with 429.
    pub fn trigger(&self, actor: &str) -> Result<()> {
        self.triggers
            .check_key(&actor.to_owned())
            .map_err(|not_until| too_many(not_until.wait_time_from(DefaultClock::default().now())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(failures: u32, triggers: u32) -> Limits {
        Limits::new(Budgets {
            auth_failures_per_minute: NonZeroU32::new(failures).unwrap(),
            triggers_per_minute: NonZeroU32::new(triggers).unwrap(),
        })
    }

    #[test]
    fn an_address_is_blocked_once_its_failures_are_spent_and_others_are_not() {
        let limits = limits(3, 100);
        let attacker = Some("10.0.0.1");
        for _ in 0..3 {
            limits.admit(attacker).unwrap();
            limits.failed(attacker).unwrap();
        }
        let Err(AppError::RateLimited { retry_after }) = limits.failed(attacker) else {
            panic!("the fourth failure is refused");
        };
        assert!((1..=20).contains(&retry_after), "{retry_after}");
        assert!(matches!(
            limits.admit(attacker),
            Err(AppError::RateLimited { .. })
        ));
        limits.admit(Some("10.0.0.2")).unwrap();
        limits.failed(Some("10.0.0.2")).unwrap();
    }

    #[test]
    fn triggers_are_counted_per_principal() {
        let limits = limits(3, 2);
        limits.trigger("api-key:ci").unwrap();
        limits.trigger("api-key:ci").unwrap();
        assert!(
            matches!(limits.trigger("api-key:ci"), Err(AppError::RateLimited { retry_after }) if retry_after >= 1)
        );
        limits.trigger("api-key:other").unwrap();
    }
}
