//! API-key authentication: `Authorization: Bearer key_id:api_key` (or HTTP Basic with
//! user = key_id, password = api_key) checked against argon2id hashes.
//!
//! SECURITY:
//! - Unknown key ids are verified against a dummy hash with the same cost, so response
//!   timing does not tell an attacker which ids exist.
//! - Argon2 runs on tokio's blocking pool behind a semaphore: a flood of guesses cannot
//!   stall the async workers or allocate unbounded argon2 memory.
//! - After the first successful verification, an HMAC-SHA256 (key random per process) of
//!   the secret is cached per key id; later requests recompute the HMAC and compare in
//!   constant time (`ring::hmac::verify`), costing microseconds. The cache holds at most
//!   one tag per configured key, never the secret.
//! - Expiry and rate limits are checked only after the secret is proven, so they reveal
//!   nothing to someone without it.
//! - Failed attempts are counted per client address (IPv6 per /64); an address out of
//!   budget gets 429 before any argon2 work. A credential already in the verified cache
//!   is still accepted from that address, so an attacker behind the same NAT cannot lock
//!   out clients whose key already proved itself.
//! - Key rotation (`reload`, on SIGHUP): the new set replaces the old one atomically. The
//!   verified-secret tag lives in each key's record, so a removed or changed key
//!   (different hash, expiry or limit) gets a fresh record and can never be served from a
//!   tag the old secret earned; unchanged keys keep their record (cache, rate-limit
//!   budget and generation slots). Requests already authenticated keep running.

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

use crate::keys::{self, KeyEntry};
use crate::ratelimit::{FailedAuthLimiter, TokenBucket};
use argon2::password_hash::PasswordHashString;
use argon2::{Argon2, PasswordVerifier};
use base64ct::{Base64, Encoding};
use ring::hmac;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use tokio::sync::Semaphore;

/// Longest Authorization header value considered; anything longer is malformed.
const MAX_CREDENTIAL_LEN: usize = 512;

/// Why a request was not authenticated. Messages never include the credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    Missing,
    Malformed,
    Invalid,
    Expired,
    RateLimited {
        retry_after: Duration,
        limit: u32,
    },
    /// Too many failed attempts from this client address.
    TooManyFailures {
        retry_after: Duration,
    },
    Internal,
}

/// argon2 verifications run by every KeyStore in this process (for /metrics).
static ARGON2_RUNS_TOTAL: AtomicU64 = AtomicU64::new(0);
/// Requests refused by the failed-authentication limiter (for /metrics).
static ADDRESS_THROTTLED_TOTAL: AtomicU64 = AtomicU64::new(0);

pub fn argon2_runs_total() -> u64 {
    ARGON2_RUNS_TOTAL.load(Ordering::Relaxed)
}

pub fn address_throttled_total() -> u64 {
    ADDRESS_THROTTLED_TOTAL.load(Ordering::Relaxed)
}

/// Who a request is, once authenticated.
#[derive(Debug, Clone)]
pub struct Principal {
    pub key_id: Arc<str>,
    /// Requests-per-minute limit and what is left, when the key has one.
    pub rate: Option<(u32, u32)>,
    /// The key's tokens-per-minute budget, when it has one (charged by the API layer
    /// once the prompt is tokenized).
    pub tokens: Option<Arc<Mutex<TokenBucket>>>,
    /// The key's slots for generations in progress (queued or running).
    pub generations: Arc<Semaphore>,
}

struct KeyRecord {
    hash: PasswordHashString,
    expires: Option<OffsetDateTime>,
    requests_per_minute: u32,
    bucket: Option<Mutex<TokenBucket>>,
    tokens: Option<Arc<Mutex<TokenBucket>>>,
    generations: Arc<Semaphore>,
    id: Arc<str>,
    /// HMAC tag of the secret that last verified for this key (None until one has).
    verified: Mutex<Option<hmac::Tag>>,
}

impl KeyRecord {
    /// Whether a reloaded entry describes this same key (so its record may be kept).
    fn same_as(&self, entry: &KeyEntry, rpm: u32) -> bool {
        self.hash.as_str() == entry.hash.as_str()
            && self.expires == entry.expires
            && self.requests_per_minute == rpm
    }
}

type KeyMap = HashMap<String, Arc<KeyRecord>>;

/// Per-key defaults from `[auth]`, kept so a reload builds records the same way.
#[derive(Debug, Clone, Copy)]
struct Defaults {
    rpm: u32,
    tpm: u32,
    generations: u32,
}

/// What a reload changed (counts only: ids are not secret, but the log names counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadSummary {
    pub added: usize,
    pub removed: usize,
    pub changed: usize,
    pub unchanged: usize,
}

pub struct KeyStore {
    /// Swapped whole by `reload`; readers clone the Arc and never hold the lock across
    /// an await.
    keys: RwLock<Arc<KeyMap>>,
    defaults: Defaults,
    dummy_hash: PasswordHashString,
    cache_key: hmac::Key,
    verify_slots: Arc<Semaphore>,
    argon2_runs: AtomicU64,
    failures: FailedAuthLimiter,
}

impl KeyStore {
    pub fn new(
        entries: Vec<KeyEntry>,
        default_rpm: u32,
        default_tpm: u32,
        generations_per_key: u32,
        max_concurrent_verifications: u32,
        failed_per_minute_per_address: u32,
    ) -> Result<Self, String> {
        let rng = ring::rand::SystemRandom::new();
        let cache_key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .map_err(|_| "the system random source failed".to_string())?;
        // The dummy takes the first key's parameters so an unknown id costs the same.
        let params = entries
            .first()
            .and_then(|e| argon2::Params::try_from(&e.hash.password_hash()).ok())
            .unwrap_or_else(keys::default_params);
        let dummy_secret = keys::generate_secret()?;
        let dummy = keys::hash_secret(dummy_secret.as_bytes(), params)?;
        let dummy_hash = PasswordHashString::new(&dummy).map_err(|e| e.to_string())?;
        let defaults = Defaults {
            rpm: default_rpm,
            tpm: default_tpm,
            generations: generations_per_key,
        };
        let (keys, _) = build_map(entries, &KeyMap::new(), defaults);
        Ok(Self {
            keys: RwLock::new(Arc::new(keys)),
            defaults,
            dummy_hash,
            cache_key,
            verify_slots: Arc::new(Semaphore::new(max_concurrent_verifications.max(1) as usize)),
            argon2_runs: AtomicU64::new(0),
            failures: FailedAuthLimiter::new(failed_per_minute_per_address),
        })
    }

    /// Replace the key set with `entries` (already fully validated by the caller).
    /// SECURITY: removed and changed keys lose their verified tag with their record.
    pub fn reload(&self, entries: Vec<KeyEntry>) -> Result<ReloadSummary, String> {
        let mut guard = self
            .keys
            .write()
            .map_err(|_| "the key set lock is poisoned".to_string())?;
        let (map, summary) = build_map(entries, &guard, self.defaults);
        *guard = Arc::new(map);
        Ok(summary)
    }

    fn snapshot(&self) -> Option<Arc<KeyMap>> {
        self.keys.read().ok().map(|g| Arc::clone(&g))
    }

    pub fn len(&self) -> usize {
        self.snapshot().map_or(0, |k| k.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many argon2 verifications have run (cache misses and unknown ids).
    pub fn argon2_runs(&self) -> u64 {
        self.argon2_runs.load(Ordering::Relaxed)
    }

    /// Authenticate one request from its Authorization header value.
    /// `addr` is the client's address key (see `http::address_key`).
    pub async fn authenticate(
        &self,
        header: Option<&[u8]>,
        addr: std::net::IpAddr,
    ) -> Result<Principal, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let (id, secret) = match parse_authorization(header) {
            Ok(x) => x,
            Err(e) => {
                self.failures.record_failure(addr, Instant::now());
                return Err(e);
            }
        };
        let tag_input = cache_input(&id, &secret);
        let record = self
            .snapshot()
            .ok_or(AuthError::Internal)?
            .get(&id)
            .cloned();
        let cached = record
            .as_ref()
            .is_some_and(|r| self.cache_hit(r, &tag_input));
        if !cached {
            if let Err(retry_after) = self.failures.check(addr, Instant::now()) {
                ADDRESS_THROTTLED_TOTAL.fetch_add(1, Ordering::Relaxed);
                return Err(AuthError::TooManyFailures { retry_after });
            }
        }
        let Some(record) = record else {
            // SECURITY: same work as a real check, result discarded.
            let _ = self.argon2_verify(self.dummy_hash.clone(), secret).await;
            self.failures.record_failure(addr, Instant::now());
            return Err(AuthError::Invalid);
        };
        if !cached {
            if !self.argon2_verify(record.hash.clone(), secret).await? {
                self.failures.record_failure(addr, Instant::now());
                return Err(AuthError::Invalid);
            }
            let tag = hmac::sign(&self.cache_key, &tag_input);
            if let Ok(mut slot) = record.verified.lock() {
                *slot = Some(tag);
            }
        }
        if let Some(expires) = record.expires {
            if OffsetDateTime::now_utc() >= expires {
                return Err(AuthError::Expired);
            }
        }
        let rate = match &record.bucket {
            None => None,
            Some(bucket) => {
                let mut b = bucket.lock().map_err(|_| AuthError::Internal)?;
                match b.try_take(Instant::now()) {
                    Ok(()) => Some((b.capacity(), b.remaining())),
                    Err(retry_after) => {
                        return Err(AuthError::RateLimited {
                            retry_after,
                            limit: b.capacity(),
                        })
                    }
                }
            }
        };
        Ok(Principal {
            key_id: record.id.clone(),
            rate,
            tokens: record.tokens.clone(),
            generations: record.generations.clone(),
        })
    }

    fn cache_hit(&self, record: &KeyRecord, tag_input: &[u8]) -> bool {
        let Ok(slot) = record.verified.lock() else {
            return false;
        };
        match slot.as_ref() {
            // SECURITY: constant-time comparison of the recomputed tag.
            Some(tag) => hmac::verify(&self.cache_key, tag_input, tag.as_ref()).is_ok(),
            None => false,
        }
    }

    async fn argon2_verify(
        &self,
        hash: PasswordHashString,
        secret: Vec<u8>,
    ) -> Result<bool, AuthError> {
        let _permit = self
            .verify_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| AuthError::Internal)?;
        self.argon2_runs.fetch_add(1, Ordering::Relaxed);
        ARGON2_RUNS_TOTAL.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || {
            Argon2::default()
                .verify_password(&secret, &hash.password_hash())
                .is_ok()
        })
        .await
        .map_err(|_| AuthError::Internal)
    }
}

/// Records for `entries`, reusing `old`'s record for every key that did not change.
fn build_map(entries: Vec<KeyEntry>, old: &KeyMap, d: Defaults) -> (KeyMap, ReloadSummary) {
    let now = Instant::now();
    let mut summary = ReloadSummary {
        added: 0,
        removed: 0,
        changed: 0,
        unchanged: 0,
    };
    let mut map = KeyMap::with_capacity(entries.len());
    for e in entries {
        let rpm = e.requests_per_minute.unwrap_or(d.rpm);
        let record = match old.get(&e.id) {
            Some(r) if r.same_as(&e, rpm) => {
                summary.unchanged += 1;
                Arc::clone(r)
            }
            previous => {
                if previous.is_some() {
                    summary.changed += 1;
                } else {
                    summary.added += 1;
                }
                Arc::new(KeyRecord {
                    bucket: (rpm > 0).then(|| Mutex::new(TokenBucket::per_minute(rpm, now))),
                    tokens: (d.tpm > 0)
                        .then(|| Arc::new(Mutex::new(TokenBucket::per_minute(d.tpm, now)))),
                    generations: Arc::new(Semaphore::new(d.generations.max(1) as usize)),
                    id: Arc::from(e.id.as_str()),
                    hash: e.hash,
                    expires: e.expires,
                    requests_per_minute: rpm,
                    verified: Mutex::new(None),
                })
            }
        };
        map.insert(e.id, record);
    }
    summary.removed = old.keys().filter(|id| !map.contains_key(*id)).count();
    (map, summary)
}

fn cache_input(id: &str, secret: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(id.len() + 1 + secret.len());
    v.extend_from_slice(id.as_bytes());
    v.push(0);
    v.extend_from_slice(secret);
    v
}

/// Parse `Bearer key_id:api_key` or `Basic base64(key_id:api_key)`.
pub fn parse_authorization(value: &[u8]) -> Result<(String, Vec<u8>), AuthError> {
    if value.len() > MAX_CREDENTIAL_LEN {
        return Err(AuthError::Malformed);
    }
    let text = std::str::from_utf8(value).map_err(|_| AuthError::Malformed)?;
    let (scheme, rest) = text.trim().split_once(' ').ok_or(AuthError::Malformed)?;
    let rest = rest.trim();
    let pair = if scheme.eq_ignore_ascii_case("bearer") {
        rest.to_string()
    } else if scheme.eq_ignore_ascii_case("basic") {
        let bytes = Base64::decode_vec(rest).map_err(|_| AuthError::Malformed)?;
        String::from_utf8(bytes).map_err(|_| AuthError::Malformed)?
    } else {
        return Err(AuthError::Malformed);
    };
    let (id, secret) = pair.split_once(':').ok_or(AuthError::Malformed)?;
    if keys::check_key_id(id).is_err() || secret.is_empty() {
        return Err(AuthError::Malformed);
    }
    Ok((id.to_string(), secret.as_bytes().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{hash_secret, parse_keys};

    const HOST: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    fn store(lines: &str) -> KeyStore {
        KeyStore::new(parse_keys(lines).unwrap(), 0, 0, 4, 2, 1000).unwrap()
    }

    fn cheap_hash(secret: &str) -> String {
        hash_secret(
            secret.as_bytes(),
            argon2::Params::new(7 * 1024, 1, 1, None).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn parses_bearer_and_basic() {
        assert_eq!(
            parse_authorization(b"Bearer alice:s3cret").unwrap(),
            ("alice".into(), b"s3cret".to_vec())
        );
        let basic = format!("Basic {}", Base64::encode_string(b"bob:pw:with:colons"));
        assert_eq!(
            parse_authorization(basic.as_bytes()).unwrap(),
            ("bob".into(), b"pw:with:colons".to_vec())
        );
        for bad in [
            &b"Bearer"[..],
            b"Bearer nocolon",
            b"Token a:b",
            b"Bearer :x",
            b"Bearer a:",
            b"Basic !!!",
        ] {
            assert_eq!(
                parse_authorization(bad),
                Err(AuthError::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(parse_authorization(&[b'a'; 600]), Err(AuthError::Malformed));
    }

    #[tokio::test]
    async fn second_success_is_a_cache_hit_without_argon2() {
        let s = store(&format!("alice:{}\n", cheap_hash("right")));
        // KeyStore::new hashed the dummy; that is not a verification.
        assert_eq!(s.argon2_runs(), 0);
        let p = s
            .authenticate(Some(b"Bearer alice:right"), HOST)
            .await
            .unwrap();
        assert_eq!(&*p.key_id, "alice");
        assert_eq!(s.argon2_runs(), 1);
        for _ in 0..5 {
            s.authenticate(Some(b"Bearer alice:right"), HOST)
                .await
                .unwrap();
        }
        assert_eq!(s.argon2_runs(), 1, "cache must serve repeated successes");
        // A wrong secret for a cached id is not served from the cache.
        assert_eq!(
            s.authenticate(Some(b"Bearer alice:wrong"), HOST)
                .await
                .unwrap_err(),
            AuthError::Invalid
        );
        assert_eq!(s.argon2_runs(), 2);
        // And the right one still hits afterwards.
        s.authenticate(Some(b"Bearer alice:right"), HOST)
            .await
            .unwrap();
        assert_eq!(s.argon2_runs(), 2);
    }

    #[tokio::test]
    async fn unknown_id_costs_an_argon2_run() {
        let s = store(&format!("alice:{}\n", cheap_hash("right")));
        assert_eq!(
            s.authenticate(Some(b"Bearer mallory:right"), HOST)
                .await
                .unwrap_err(),
            AuthError::Invalid
        );
        assert_eq!(s.argon2_runs(), 1);
        assert_eq!(
            s.authenticate(None, HOST).await.unwrap_err(),
            AuthError::Missing
        );
    }

    #[tokio::test]
    async fn expiry_and_rate_limit_apply_after_the_secret_is_proven() {
        let h = cheap_hash("k");
        let s = store(&format!("old:{h}::2001-01-01T00:00:00Z\nslow:{h}:2\n"));
        assert_eq!(
            s.authenticate(Some(b"Bearer old:k"), HOST)
                .await
                .unwrap_err(),
            AuthError::Expired
        );
        assert_eq!(
            s.authenticate(Some(b"Bearer old:x"), HOST)
                .await
                .unwrap_err(),
            AuthError::Invalid
        );
        s.authenticate(Some(b"Bearer slow:k"), HOST).await.unwrap();
        s.authenticate(Some(b"Bearer slow:k"), HOST).await.unwrap();
        match s
            .authenticate(Some(b"Bearer slow:k"), HOST)
            .await
            .unwrap_err()
        {
            AuthError::RateLimited { retry_after, limit } => {
                assert_eq!(limit, 2);
                assert!(retry_after > Duration::from_secs(1));
            }
            other => panic!("expected rate limit, got {other:?}"),
        }
        // A wrong secret does not consume the victim's budget, it is simply invalid.
        assert_eq!(
            s.authenticate(Some(b"Bearer slow:bad"), HOST)
                .await
                .unwrap_err(),
            AuthError::Invalid
        );
    }

    #[tokio::test]
    async fn an_address_out_of_failures_gets_429_without_argon2_but_cached_keys_pass() {
        let s = KeyStore::new(
            parse_keys(&format!("alice:{}\n", cheap_hash("right"))).unwrap(),
            0,
            0,
            4,
            2,
            3,
        )
        .unwrap();
        s.authenticate(Some(b"Bearer alice:right"), HOST)
            .await
            .unwrap();
        assert_eq!(s.argon2_runs(), 1);
        for _ in 0..3 {
            assert_eq!(
                s.authenticate(Some(b"Bearer alice:wrong"), HOST)
                    .await
                    .unwrap_err(),
                AuthError::Invalid
            );
        }
        assert_eq!(s.argon2_runs(), 4);
        for cred in [&b"Bearer alice:wrong"[..], b"Bearer mallory:x"] {
            assert!(matches!(
                s.authenticate(Some(cred), HOST).await.unwrap_err(),
                AuthError::TooManyFailures { .. }
            ));
        }
        assert_eq!(s.argon2_runs(), 4, "throttled attempts must not hash");
        // The already-verified key still works from the throttled address, without argon2.
        s.authenticate(Some(b"Bearer alice:right"), HOST)
            .await
            .unwrap();
        assert_eq!(s.argon2_runs(), 4);
        // Another address is unaffected.
        let other = std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 9));
        assert_eq!(
            s.authenticate(Some(b"Bearer alice:wrong"), other)
                .await
                .unwrap_err(),
            AuthError::Invalid
        );
    }

    #[tokio::test]
    async fn reload_keeps_unchanged_keys_and_forgets_removed_or_changed_ones() {
        let s = store(&format!(
            "alice:{}\ncarol:{}\n",
            cheap_hash("a1"),
            cheap_hash("c1")
        ));
        s.authenticate(Some(b"Bearer alice:a1"), HOST)
            .await
            .unwrap();
        s.authenticate(Some(b"Bearer carol:c1"), HOST)
            .await
            .unwrap();
        assert_eq!(s.argon2_runs(), 2);
        let alice_line = s.snapshot().unwrap()["alice"].hash.as_str().to_string();
        // alice unchanged, carol's secret rotated, bob added, nobody removed.
        let summary = s
            .reload(
                parse_keys(&format!(
                    "alice:{alice_line}\ncarol:{}\nbob:{}\n",
                    cheap_hash("c2"),
                    cheap_hash("b1")
                ))
                .unwrap(),
            )
            .unwrap();
        assert_eq!(
            summary,
            ReloadSummary {
                added: 1,
                removed: 0,
                changed: 1,
                unchanged: 1
            }
        );
        // alice is still served from her cached tag: no argon2.
        s.authenticate(Some(b"Bearer alice:a1"), HOST)
            .await
            .unwrap();
        assert_eq!(s.argon2_runs(), 2);
        // carol's old secret is refused (its tag went with the old record), the new works.
        assert_eq!(
            s.authenticate(Some(b"Bearer carol:c1"), HOST)
                .await
                .unwrap_err(),
            AuthError::Invalid
        );
        s.authenticate(Some(b"Bearer carol:c2"), HOST)
            .await
            .unwrap();
        s.authenticate(Some(b"Bearer bob:b1"), HOST).await.unwrap();
        // Remove alice: her cached secret is refused at once.
        let summary = s
            .reload(parse_keys(&format!("bob:{}\n", cheap_hash("b1"))).unwrap())
            .unwrap();
        assert_eq!((summary.removed, summary.changed, summary.added), (2, 1, 0));
        assert_eq!(
            s.authenticate(Some(b"Bearer alice:a1"), HOST)
                .await
                .unwrap_err(),
            AuthError::Invalid
        );
        assert_eq!(s.len(), 1);
    }
}
