//! Per-key request budget: a token bucket refilled continuously at `per_minute / 60` per
//! second, holding at most `per_minute` tokens (a full minute's burst).
//!
//! SECURITY: the bucket is charged only after the caller authenticated, so an attacker
//! without the secret cannot drain a victim's budget.

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

    /// Take one token, or say how long until one is available.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.capacity);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let missing = 1.0 - self.tokens;
            Err(Duration::from_secs_f64(missing / self.per_sec))
        }
    }

    /// Tokens left, rounded down (for `x-ratelimit-remaining-requests`).
    pub fn remaining(&self) -> u32 {
        self.tokens.max(0.0).floor() as u32
    }

    pub fn capacity(&self) -> u32 {
        self.capacity as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
