//! Token buckets: the per-key request budget (refilled continuously at `per_minute / 60`
//! per second, holding at most `per_minute` tokens, a full minute's burst), and the
//! per-address budget of failed authentications.
//!
//! SECURITY: a key's bucket is charged only after the caller authenticated, so an
//! attacker without the secret cannot drain a victim's budget. The failed-authentication
//! budget is checked *before* any argon2 work, so a brute-force or hash-burning flood from
//! one address is refused without hashing.

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

    /// Return one token taken by `try_take` (never above the capacity).
    fn give_back(&mut self, now: Instant) {
        self.refill(now);
        self.tokens = (self.tokens + 1.0).min(self.capacity);
    }

    /// Full again: carries no state worth keeping.
    pub fn is_full(&self, now: Instant) -> bool {
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

/// Failed authentications allowed per client address per minute.
///
/// SECURITY:
/// - A token is *reserved* before any argon2 work and refunded when the secret proves
///   right, so concurrent requests from one address can never start more verifications
///   than its budget (issue 16: 150 concurrent bad requests ran 41 argon2 checks against
///   a budget of 10).
/// - The table holds at most `capacity` addresses (`auth.failed_auth_tracked_addresses`).
///   An address that is not in it has no failures on record and is never refused: when
///   the table is full, entries that refilled are dropped, then the entry closest to full
///   makes room. There is no shared overflow bucket, so filling the table from many
///   addresses cannot lock out an address that never failed (or a shared NAT). What
///   bounds the total argon2 work of an attacker with more addresses than the table is
///   the verifier pool (`auth::argon2_pool`): fixed threads, bounded queue.
pub struct FailedAuthLimiter {
    per_minute: u32,
    capacity: usize,
    table: Mutex<HashMap<IpAddr, TokenBucket>>,
}

impl FailedAuthLimiter {
    pub fn new(per_minute: u32, capacity: usize) -> Self {
        Self {
            per_minute,
            capacity: capacity.max(1),
            table: Mutex::new(HashMap::new()),
        }
    }

    /// Reserve one failure for `addr` before a verification: `Err(wait)` when its budget
    /// is spent. Refund it with `refund` if the secret proves right.
    pub fn reserve(&self, addr: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = table.get_mut(&addr) {
            return b.try_take(now);
        }
        if table.len() >= self.capacity {
            make_room(&mut table, now);
        }
        let mut b = TokenBucket::per_minute(self.per_minute, now);
        let taken = b.try_take(now);
        table.insert(addr, b);
        taken
    }

    /// Charge a failure that needed no verification (a malformed credential); an
    /// address already out of budget stays so.
    pub fn charge(&self, addr: IpAddr, now: Instant) {
        let _ = self.reserve(addr, now);
    }

    /// Give back a reservation whose secret proved right.
    pub fn refund(&self, addr: IpAddr, now: Instant) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = table.get_mut(&addr) {
            b.give_back(now);
            if b.is_full(now) {
                table.remove(&addr);
            }
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.table.lock().unwrap().len()
    }
}

/// Free one place: drop every entry that refilled; if none did, the one closest to full
/// (the address that failed least recently).
fn make_room(table: &mut HashMap<IpAddr, TokenBucket>, now: Instant) {
    let before = table.len();
    table.retain(|_, b| !b.is_full(now));
    if table.len() < before {
        return;
    }
    let fullest = table
        .iter_mut()
        .map(|(addr, b)| {
            b.refill(now);
            (*addr, b.tokens)
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(addr, _)| addr);
    if let Some(addr) = fullest {
        table.remove(&addr);
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
    fn failed_auth_budget_is_per_address_refunded_on_success_and_refills() {
        let t0 = Instant::now();
        let l = FailedAuthLimiter::new(3, 100);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        // Reserved up front: three concurrent attempts take the whole budget at once.
        for _ in 0..3 {
            assert!(l.reserve(a, t0).is_ok());
        }
        let wait = l.reserve(a, t0).unwrap_err();
        assert!(wait <= Duration::from_secs(20), "{wait:?}");
        assert!(l.reserve(b, t0).is_ok(), "another address is unaffected");
        // One of the three proved right: its token comes back.
        l.refund(a, t0);
        assert!(l.reserve(a, t0).is_ok());
        assert!(l.reserve(a, t0).is_err());
        assert!(l.reserve(a, t0 + Duration::from_secs(21)).is_ok());
    }

    #[test]
    fn a_refund_to_full_forgets_the_address() {
        let t0 = Instant::now();
        let l = FailedAuthLimiter::new(3, 100);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        l.reserve(a, t0).unwrap();
        assert_eq!(l.tracked(), 1);
        l.refund(a, t0);
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn a_full_table_never_refuses_an_address_that_never_failed() {
        let t0 = Instant::now();
        let l = FailedAuthLimiter::new(2, 4);
        let addr = |i: u8| IpAddr::from([198, 51, 100, i]);
        // Four addresses spend their whole budget: the table is full of spent entries.
        for i in 0..4 {
            l.charge(addr(i), t0);
            l.charge(addr(i), t0);
            assert!(l.reserve(addr(i), t0).is_err());
        }
        assert_eq!(l.tracked(), 4);
        // A fifth address, and a sixth, are allowed; the table stays at its size.
        assert!(l.reserve(addr(100), t0).is_ok());
        assert!(l.reserve(addr(101), t0).is_ok());
        assert_eq!(l.tracked(), 4);
        // The address that made room for the newest is the one that failed least
        // recently (closest to full): 100 (one token left) was evicted by 101.
        assert!(l.reserve(addr(101), t0).is_ok());
        assert!(
            l.reserve(addr(101), t0).is_err(),
            "101 is tracked and spent"
        );
    }

    #[test]
    fn refilled_entries_are_shed_first() {
        let t0 = Instant::now();
        let l = FailedAuthLimiter::new(10, 64);
        for i in 0..64u32 {
            l.charge(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert_eq!(l.tracked(), 64);
        // Later every old bucket has refilled and is dropped for the newcomer.
        let later = t0 + Duration::from_secs(120);
        l.charge("198.51.100.8".parse().unwrap(), later);
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
