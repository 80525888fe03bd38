//! The trail of failed authentications: one `auth failed` log event per refusal, naming
//! the client address, the key id when it was well-formed, and the reason — never the
//! secret.
//!
//! SECURITY: a flood must not flood the log. Each client address (IPv6: its /64) may log
//! `EVENTS_PER_MINUTE_PER_ADDRESS` events a minute and the whole process
//! `EVENTS_PER_MINUTE`; what is over either is counted and reported once per
//! `SUMMARY_INTERVAL` by `summary`. The address table is bounded; an address that finds
//! it full (after refilled entries are shed) is suppressed and counted, never stored.

use crate::ratelimit::TokenBucket;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `auth failed` events one address may log per minute (a burst of this many, then one
/// every 60/N s): enough to see who is knocking, not enough to fill a disk.
pub const EVENTS_PER_MINUTE_PER_ADDRESS: u32 = 6;
/// `auth failed` events the whole process may log per minute, however many addresses.
pub const EVENTS_PER_MINUTE: u32 = 600;
/// Addresses whose log budget is tracked at once (~100 bytes each).
const MAX_TRACKED: usize = 4096;
/// How often suppressed events are summarised (one line, only when some were).
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(60);

/// Events suppressed since the last summary, and from how many addresses (at most
/// `MAX_TRACKED` distinct ones are counted; beyond that the count says "at least").
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Suppressed {
    pub events: u64,
    pub addresses: usize,
}

struct State {
    per_address: HashMap<IpAddr, TokenBucket>,
    global: TokenBucket,
    suppressed: u64,
    suppressed_from: std::collections::HashSet<IpAddr>,
}

pub struct AuthAudit {
    state: Mutex<State>,
}

impl Default for AuthAudit {
    fn default() -> Self {
        Self::new()
    }
}

impl AuthAudit {
    pub fn new() -> Self {
        Self {
            state: Mutex::new(State {
                per_address: HashMap::new(),
                global: TokenBucket::per_minute(EVENTS_PER_MINUTE, Instant::now()),
                suppressed: 0,
                suppressed_from: Default::default(),
            }),
        }
    }

    /// Log one refusal from `client` (counted against `addr_key`, its address key)
    /// unless a budget is spent. Returns whether it was logged.
    pub fn record(
        &self,
        client: IpAddr,
        addr_key: IpAddr,
        key_id: Option<&str>,
        reason: &'static str,
    ) -> bool {
        if !self.admit(addr_key, Instant::now()) {
            return false;
        }
        tracing::warn!(
            client = %client,
            key_id = %key_id.unwrap_or("-"),
            reason = %reason,
            "auth failed"
        );
        true
    }

    fn admit(&self, addr_key: IpAddr, now: Instant) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let State {
            per_address,
            global,
            suppressed,
            suppressed_from,
        } = &mut *s;
        if !per_address.contains_key(&addr_key) && per_address.len() >= MAX_TRACKED {
            per_address.retain(|_, b| !b.is_full(now));
        }
        let room = per_address.len() < MAX_TRACKED;
        let own = match per_address.get_mut(&addr_key) {
            Some(b) => b.check(now).is_ok(),
            None if room => {
                per_address.insert(
                    addr_key,
                    TokenBucket::per_minute(EVENTS_PER_MINUTE_PER_ADDRESS, now),
                );
                true
            }
            None => false,
        };
        if own && global.try_take(now).is_ok() {
            if let Some(b) = per_address.get_mut(&addr_key) {
                let _ = b.try_take(now);
            }
            return true;
        }
        *suppressed += 1;
        if suppressed_from.len() < MAX_TRACKED {
            suppressed_from.insert(addr_key);
        }
        false
    }

    /// Take the suppressed counts since the last call (and reset them).
    pub fn take_suppressed(&self) -> Suppressed {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let out = Suppressed {
            events: s.suppressed,
            addresses: s.suppressed_from.len(),
        };
        s.suppressed = 0;
        s.suppressed_from.clear();
        out
    }

    /// Every `SUMMARY_INTERVAL`: one line if any event was suppressed. Runs until aborted.
    pub async fn summary(&self) {
        loop {
            tokio::time::sleep(SUMMARY_INTERVAL).await;
            let s = self.take_suppressed();
            if s.events > 0 {
                tracing::warn!(
                    suppressed = s.events,
                    addresses = s.addresses,
                    interval_secs = SUMMARY_INTERVAL.as_secs(),
                    "auth failed events suppressed (log rate limit)"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_logs_a_burst_then_is_counted() {
        let audit = AuthAudit::new();
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let logged = (0..20).filter(|_| audit.admit(a, t0)).count();
        assert_eq!(logged, EVENTS_PER_MINUTE_PER_ADDRESS as usize);
        assert!(audit.admit(b, t0), "another address still logs");
        assert_eq!(
            audit.take_suppressed(),
            Suppressed {
                events: 20 - u64::from(EVENTS_PER_MINUTE_PER_ADDRESS),
                addresses: 1
            }
        );
        assert_eq!(audit.take_suppressed(), Suppressed::default());
        // A minute later the address has its burst again.
        assert!(audit.admit(a, t0 + Duration::from_secs(61)));
    }

    #[test]
    fn the_whole_process_is_capped_across_addresses() {
        let audit = AuthAudit::new();
        let t0 = Instant::now();
        let logged = (0..2000u32)
            .filter(|i| audit.admit(IpAddr::from(i.to_be_bytes()), t0))
            .count();
        assert_eq!(logged, EVENTS_PER_MINUTE as usize);
        assert_eq!(
            audit.take_suppressed().events,
            2000 - u64::from(EVENTS_PER_MINUTE)
        );
    }
}
