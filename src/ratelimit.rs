//! Token buckets: the per-key request budget (refilled continuously at `per_minute / 60`
//! per second, holding at most `per_minute` tokens, a full minute's burst), and the
//! per-address budget of failed authentications.
//!
//! SECURITY: a key's bucket is charged only after the caller authenticated, so an
//! attacker without the secret cannot drain a victim's budget. The failed-authentication
//! budget is checked *before* any argon2 work, so a brute-force or hash-burning flood from
//! one address is refused without hashing.

// SECURITY: request-path code must not panic on client input (see AUDIT.md, issue 8).
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::unreachable,
    clippy::todo,
    clippy::unimplemented
)]

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct TokenBucket {
    capacity: f64,
    per_sec: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// `per_minute` must be > 0 (0 means "no limit" and gets no bucket).
    pub fn per_minute(per_minute: u32, now: Instant) -> Self {
        let capacity = f64::from(per_minute.max(1));
        Self {
            capacity,
            per_sec: capacity / 60.0,
            tokens: capacity,
            last: now,
        }
    }

    /// Add what accrued since the last call, up to the capacity.
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.capacity);
        self.last = now;
    }

    /// Take one token, or say how long until one is available.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        self.check(now)?;
        self.tokens -= 1.0;
        Ok(())
    }

    /// Refill, then say whether a token is available without taking it.
    pub fn check(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.per_sec))
        }
    }

    /// Take `n` tokens even if that leaves the bucket in debt (tokens-per-minute budgets
    /// are charged after the size of a request is known; debt delays the next request).
    pub fn charge(&mut self, n: u32, now: Instant) {
        self.refill(now);
        self.tokens -= f64::from(n);
    }

    /// Full again: carries no state worth keeping.
    fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * self.per_sec >= self.capacity
    }

    /// Tokens left, rounded down (for `x-ratelimit-remaining-requests`).
    pub fn remaining(&self) -> u32 {
        self.tokens.max(0.0).floor() as u32
    }

    pub fn capacity(&self) -> u32 {
        self.capacity as u32
    }
}

/// Addresses tracked at once by the failed-authentication limiter (~100 bytes each, so
/// a few MiB at most). Beyond it, untracked addresses share one overflow bucket.
pub const MAX_TRACKED_ADDRESSES: usize = 65_536;

/// Failed authentications allowed per client address per minute.
pub struct FailedAuthLimiter {
    per_minute: u32,
    table: Mutex<HashMap<IpAddr, TokenBucket>>,
    /// SECURITY: shared by addresses that find the table full, so spraying from many
    /// addresses (e.g. a whole IPv6 range) cannot grow memory or escape the limit.
    overflow: Mutex<TokenBucket>,
}

impl FailedAuthLimiter {
    pub fn new(per_minute: u32) -> Self {
        let now = Instant::now();
        Self {
            per_minute,
            table: Mutex::new(HashMap::new()),
            overflow: Mutex::new(TokenBucket::per_minute(per_minute.saturating_mul(8), now)),
        }
    }

    /// May `addr` try (another) credential that is not already verified?
    pub fn check(&self, addr: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let full = table.len() >= MAX_TRACKED_ADDRESSES;
        match table.get_mut(&addr) {
            Some(b) => b.check(now),
            None if full => self
                .overflow
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .check(now),
            None => Ok(()),
        }
    }

    /// Charge one failed attempt to `addr`.
    pub fn record_failure(&self, addr: IpAddr, now: Instant) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if !table.contains_key(&addr) && table.len() >= MAX_TRACKED_ADDRESSES {
            table.retain(|_, b| !b.is_full(now));
        }
        if let Some(b) = table.get_mut(&addr) {
            let _ = b.try_take(now);
        } else if table.len() < MAX_TRACKED_ADDRESSES {
            let mut b = TokenBucket::per_minute(self.per_minute, now);
            let _ = b.try_take(now);
            table.insert(addr, b);
        } else {
            let _ = self
                .overflow
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .try_take(now);
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.table.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_may_go_into_debt_which_delays_the_next_request() {
        let t0 = Instant::now();
        let mut b = TokenBucket::per_minute(600, t0); // 10 tokens per second
        b.charge(1000, t0);
        let wait = b.check(t0).unwrap_err();
        // 400 tokens of debt plus one: ~40 s.
        assert!(
            wait > Duration::from_secs(39) && wait < Duration::from_secs(41),
            "{wait:?}"
        );
        assert!(b.check(t0 + Duration::from_secs(41)).is_ok());
    }

    #[test]
    fn failed_auth_budget_is_per_address_and_refills() {
        let t0 = Instant::now();
        let l = FailedAuthLimiter::new(3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert!(l.check(a, t0).is_ok());
            l.record_failure(a, t0);
        }
        let wait = l.check(a, t0).unwrap_err();
        assert!(wait <= Duration::from_secs(20), "{wait:?}");
        assert!(l.check(b, t0).is_ok(), "another address is unaffected");
        assert!(l.check(a, t0 + Duration::from_secs(21)).is_ok());
    }

    #[test]
    fn the_table_is_bounded_and_sheds_refilled_entries() {
        let t0 = Instant::now();
        let l = FailedAuthLimiter::new(10);
        for i in 0..MAX_TRACKED_ADDRESSES as u32 {
            l.record_failure(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert_eq!(l.tracked(), MAX_TRACKED_ADDRESSES);
        // Still within a minute: nothing is full again, so a new address goes to overflow.
        l.record_failure("198.51.100.7".parse().unwrap(), t0);
        assert_eq!(l.tracked(), MAX_TRACKED_ADDRESSES);
        // Later every old bucket has refilled and is dropped for the newcomer.
        let later = t0 + Duration::from_secs(120);
        l.record_failure("198.51.100.8".parse().unwrap(), later);
        assert_eq!(l.tracked(), 1);
    }

    #[test]
    fn burst_then_refuse_then_refill() {
        let t0 = Instant::now();
        let mut b = TokenBucket::per_minute(3, t0);
        assert!(b.try_take(t0).is_ok());
        assert!(b.try_take(t0).is_ok());
        assert!(b.try_take(t0).is_ok());
        let wait = b.try_take(t0).unwrap_err();
        // 3/min refills one token every 20 s.
        assert!(
            wait > Duration::from_secs(19) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(b.try_take(t0 + Duration::from_secs(10)).is_err());
        assert!(b.try_take(t0 + Duration::from_secs(21)).is_ok());
    }

    #[test]
    fn never_exceeds_capacity() {
        let t0 = Instant::now();
        let mut b = TokenBucket::per_minute(2, t0);
        let later = t0 + Duration::from_secs(3600);
        assert!(b.try_take(later).is_ok());
        assert!(b.try_take(later).is_ok());
        assert!(b.try_take(later).is_err());
    }
}
