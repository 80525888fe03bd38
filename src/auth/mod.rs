//! API-key authentication: `Authorization: Bearer key_id:api_key` (or HTTP Basic with
//! user = key_id, password = api_key) checked against argon2id hashes.
//!
//! SECURITY:
//! - Unknown key ids are verified against a dummy hash with the same parameters as real
//!   keys: one dummy per parameter set in the keys file (rebuilt on reload), chosen for an
//!   unknown id by a keyed hash of the id, so an id answers with the timing of some real
//!   key's parameters and always the same one.
//! - argon2 runs on a fixed pool of long-lived threads with reused working memory and a
//!   bounded queue (`argon2_pool`): a flood of guesses can neither stall the async
//!   workers, grow memory, nor queue work a valid key then waits behind (429 at once).
//! - After the first successful verification, an HMAC-SHA256 (key random per process) of
//!   the secret is cached per key id; later requests recompute the HMAC and compare in
//!   constant time (`ring::hmac::verify`), costing microseconds. The cache holds at most
//!   one tag per configured key, never the secret.
//! - Expiry and rate limits are checked only after the secret is proven, so they reveal
//!   nothing to someone without it.
//! - Failed attempts are budgeted per client address (IPv6 per /64): a token is reserved
//!   before argon2 and refunded on success (`ratelimit::FailedAuthLimiter`), so an address
//!   out of budget gets 429 before any hashing, however many requests it sends at once.
//!   A credential already in the verified cache is still accepted from that address, so
//!   an attacker behind the same NAT cannot lock out clients whose key already proved
//!   itself.
//! - Key rotation (`reload`, on SIGHUP): the new set replaces the old one atomically. The
//!   verified-secret tag lives in each key's record, so a removed or changed key
//!   (different hash, expiry or limit) gets a fresh record and can never be served from a
//!   tag the old secret earned; unchanged keys keep their record (cache, rate-limit
//!   budget and generation slots). Requests already authenticated keep running.

pub mod argon2_pool;
pub mod audit;

use crate::config::AuthConfig;
use crate::keys::{self, KeyEntry};
use crate::ratelimit::{FailedAuthLimiter, TokenBucket};
use argon2::password_hash::PasswordHashString;
use argon2_pool::{Argon2Pool, PoolError};
use base64ct::{Base64, Base64Unpadded, Encoding};
use ring::hmac;
use ring::rand::SecureRandom;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use tokio::sync::Semaphore;

/// Longest Authorization header value considered; anything longer is malformed.
const MAX_CREDENTIAL_LEN: usize = 512;
/// What a client told "busy" should wait before trying again.
const VERIFY_BUSY_RETRY: Duration = Duration::from_secs(1);

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
    /// Every argon2 thread is busy and the queue is full; no work was done.
    VerifierBusy {
        retry_after: Duration,
    },
    Internal,
}

impl AuthError {
    /// A fixed label for logs and metrics (never the credential).
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed => "malformed",
            AuthError::Invalid => "invalid",
            AuthError::Expired => "expired",
            AuthError::RateLimited { .. } => "rate_limited",
            AuthError::TooManyFailures { .. } => "address_throttled",
            AuthError::VerifierBusy { .. } => "verifier_busy",
            AuthError::Internal => "internal",
        }
    }
}

/// A refused request: why, and the key id it named when that id was well-formed (key ids
/// are not secret; the secret never leaves `authenticate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub error: AuthError,
    pub key_id: Option<String>,
}

impl From<AuthError> for Refusal {
    fn from(error: AuthError) -> Self {
        Self {
            error,
            key_id: None,
        }
    }
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
    /// The key's identity beyond its id: id plus a digest of its hash line, so an id that
    /// is removed and later reissued is a different owner (the prefix cache keys on it).
    pub owner: Arc<str>,
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
    owner: Arc<str>,
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

/// The keys and the dummy hashes for their parameter sets; swapped whole by `reload`.
struct KeySet {
    keys: KeyMap,
    /// One per distinct argon2 parameter set (memory, passes, lanes, salt and output
    /// lengths) among the keys; never empty.
    dummies: Vec<PasswordHashString>,
}

/// The `[auth]` settings a KeyStore uses.
#[derive(Debug, Clone, Copy)]
pub struct AuthLimits {
    pub default_rpm: u32,
    pub default_tpm: u32,
    pub generations_per_key: u32,
    pub verifications: u32,
    pub queued_verifications: u32,
    pub failed_per_minute_per_address: u32,
    pub tracked_addresses: u32,
}

impl From<&AuthConfig> for AuthLimits {
    fn from(a: &AuthConfig) -> Self {
        Self {
            default_rpm: a.default_requests_per_minute,
            default_tpm: a.default_tokens_per_minute,
            generations_per_key: a.max_concurrent_generations_per_key,
            verifications: a.max_concurrent_verifications,
            queued_verifications: a.max_queued_verifications,
            failed_per_minute_per_address: a.failed_auth_per_minute_per_address,
            tracked_addresses: a.failed_auth_tracked_addresses,
        }
    }
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
    keys: RwLock<Arc<KeySet>>,
    limits: AuthLimits,
    cache_key: hmac::Key,
    verifier: Argon2Pool,
    failures: Arc<FailedAuthLimiter>,
}

impl KeyStore {
    pub fn new(entries: Vec<KeyEntry>, limits: AuthLimits) -> Result<Self, String> {
        let rng = ring::rand::SystemRandom::new();
        let cache_key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .map_err(|_| "the system random source failed".to_string())?;
        let set = build_set(entries, &KeyMap::new(), limits)?.0;
        Ok(Self {
            keys: RwLock::new(Arc::new(set)),
            limits,
            cache_key,
            verifier: Argon2Pool::new(limits.verifications, limits.queued_verifications),
            failures: Arc::new(FailedAuthLimiter::new(
                limits.failed_per_minute_per_address,
                limits.tracked_addresses as usize,
            )),
        })
    }

    /// Replace the key set with `entries` (already fully validated by the caller).
    /// SECURITY: removed and changed keys lose their verified tag with their record; the
    /// dummy hashes follow the new set's parameters.
    pub fn reload(&self, entries: Vec<KeyEntry>) -> Result<ReloadSummary, String> {
        let old = self.snapshot().ok_or("the key set lock is poisoned")?;
        let (set, summary) = build_set(entries, &old.keys, self.limits)?;
        let mut guard = self
            .keys
            .write()
            .map_err(|_| "the key set lock is poisoned".to_string())?;
        *guard = Arc::new(set);
        Ok(summary)
    }

    fn snapshot(&self) -> Option<Arc<KeySet>> {
        self.keys.read().ok().map(|g| Arc::clone(&g))
    }

    pub fn len(&self) -> usize {
        self.snapshot().map_or(0, |k| k.keys.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many argon2 verifications have run (cache misses and unknown ids).
    pub fn argon2_runs(&self) -> u64 {
        self.verifier.runs()
    }

    /// Authenticate one request from its Authorization header value.
    /// `addr` is the client's address key (see `http::address_key`).
    pub async fn authenticate(
        &self,
        header: Option<&[u8]>,
        addr: std::net::IpAddr,
    ) -> Result<Principal, Refusal> {
        let header = header.ok_or(AuthError::Missing)?;
        let (id, secret) = match parse_authorization(header) {
            Ok(x) => x,
            Err(e) => {
                self.failures.charge(addr, Instant::now());
                return Err(e.into());
            }
        };
        let refuse = |error: AuthError| Refusal {
            error,
            key_id: Some(id.clone()),
        };
        let set = self.snapshot().ok_or_else(|| refuse(AuthError::Internal))?;
        let tag_input = cache_input(&id, &secret);
        let record = set.keys.get(&id).cloned();
        let cached = record
            .as_ref()
            .is_some_and(|r| self.cache_hit(r, &tag_input));
        if !cached {
            // SECURITY: the failure is reserved before any argon2 work, refunded below if
            // the secret proves right.
            if let Err(retry_after) = self.failures.reserve(addr, Instant::now()) {
                ADDRESS_THROTTLED_TOTAL.fetch_add(1, Ordering::Relaxed);
                return Err(refuse(AuthError::TooManyFailures { retry_after }));
            }
            let hash = match &record {
                Some(r) => r.hash.clone(),
                // SECURITY: same work as a real check, result discarded.
                None => self
                    .dummy_for(&set, &id)
                    .ok_or_else(|| refuse(AuthError::Internal))?,
            };
            // SECURITY: settled on the argon2 thread whether or not this request is
            // still waiting, so a client that resets its stream mid-verification is
            // charged (wrong secret) or refunded and cached (right one) all the same.
            let settle: argon2_pool::Settle = {
                let failures = Arc::clone(&self.failures);
                let record = record.clone();
                let cache_key = self.cache_key.clone();
                let tag_input = tag_input.clone();
                Box::new(move |ok: bool| {
                    ARGON2_RUNS_TOTAL.fetch_add(1, Ordering::Relaxed);
                    let Some(record) = record.filter(|_| ok) else {
                        return;
                    };
                    failures.refund(addr, Instant::now());
                    let tag = hmac::sign(&cache_key, &tag_input);
                    if let Ok(mut slot) = record.verified.lock() {
                        *slot = Some(tag);
                    };
                })
            };
            let verified = match self.verifier.verify(hash, secret, settle).await {
                Ok(ok) => ok && record.is_some(),
                Err(e) => {
                    // No work was done: the reservation goes back.
                    self.failures.refund(addr, Instant::now());
                    return Err(refuse(match e {
                        PoolError::Busy => AuthError::VerifierBusy {
                            retry_after: VERIFY_BUSY_RETRY,
                        },
                        PoolError::Internal => AuthError::Internal,
                    }));
                }
            };
            if !verified {
                return Err(refuse(AuthError::Invalid));
            }
        }
        let Some(record) = record else {
            return Err(refuse(AuthError::Invalid));
        };
        if let Some(expires) = record.expires {
            if OffsetDateTime::now_utc() >= expires {
                return Err(refuse(AuthError::Expired));
            }
        }
        let rate = match &record.bucket {
            None => None,
            Some(bucket) => {
                let mut b = bucket.lock().map_err(|_| refuse(AuthError::Internal))?;
                match b.try_take(Instant::now()) {
                    Ok(()) => Some((b.capacity(), b.remaining())),
                    Err(retry_after) => {
                        return Err(refuse(AuthError::RateLimited {
                            retry_after,
                            limit: b.capacity(),
                        }))
                    }
                }
            }
        };
        Ok(Principal {
            key_id: record.id.clone(),
            owner: record.owner.clone(),
            rate,
            tokens: record.tokens.clone(),
            generations: record.generations.clone(),
        })
    }

    /// The dummy hash an unknown id is checked against: always the same one for the same
    /// id (a keyed hash picks it), so repeating a guess shows no variation either.
    fn dummy_for(&self, set: &KeySet, id: &str) -> Option<PasswordHashString> {
        let tag = hmac::sign(&self.cache_key, id.as_bytes());
        let pick = tag
            .as_ref()
            .iter()
            .take(8)
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        let n = set.dummies.len().max(1) as u64;
        let i = (pick % n) as usize;
        set.dummies.get(i).cloned()
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
}

/// Records for `entries`, reusing `old`'s record for every key that did not change, and
/// one dummy hash per parameter set among them (the default parameters when none).
fn build_set(
    entries: Vec<KeyEntry>,
    old: &KeyMap,
    d: AuthLimits,
) -> Result<(KeySet, ReloadSummary), String> {
    let now = Instant::now();
    let mut summary = ReloadSummary {
        added: 0,
        removed: 0,
        changed: 0,
        unchanged: 0,
    };
    // Parameter set -> (params, salt length, output length); BTreeMap for a stable order.
    let mut shapes: BTreeMap<(u32, u32, u32, usize, usize), argon2::Params> = BTreeMap::new();
    let mut map = KeyMap::with_capacity(entries.len());
    for e in entries {
        let parsed = e.hash.password_hash();
        if let (Ok(params), Some(salt), Some(out)) =
            (argon2::Params::try_from(&parsed), parsed.salt, parsed.hash)
        {
            let shape = (
                params.m_cost(),
                params.t_cost(),
                params.p_cost(),
                salt.len(),
                out.len(),
            );
            shapes.entry(shape).or_insert(params);
        }
        let rpm = e.requests_per_minute.unwrap_or(d.default_rpm);
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
                    tokens: (d.default_tpm > 0)
                        .then(|| Arc::new(Mutex::new(TokenBucket::per_minute(d.default_tpm, now)))),
                    generations: Arc::new(Semaphore::new(d.generations_per_key.max(1) as usize)),
                    id: Arc::from(e.id.as_str()),
                    owner: owner_of(&e),
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
    let mut dummies = Vec::with_capacity(shapes.len().max(1));
    for ((_, _, _, salt_len, out_len), params) in &shapes {
        dummies.push(dummy_hash(params, *salt_len, *out_len)?);
    }
    if dummies.is_empty() {
        dummies.push(dummy_hash(&keys::default_params(), 22, 32)?);
    }
    Ok((KeySet { keys: map, dummies }, summary))
}

/// A hash no secret matches, with `params`, a random salt of `salt_b64` base64
/// characters and a random output of `out_bytes`: verifying against it costs what
/// verifying a real key with these parameters costs. Made without hashing.
fn dummy_hash(
    params: &argon2::Params,
    salt_b64: usize,
    out_bytes: usize,
) -> Result<PasswordHashString, String> {
    let rng = ring::rand::SystemRandom::new();
    let random = |len: usize| -> Result<String, String> {
        let mut bytes = vec![0u8; len];
        rng.fill(&mut bytes)
            .map_err(|_| "the system random source failed".to_string())?;
        Ok(Base64Unpadded::encode_string(&bytes))
    };
    let text = format!(
        "$argon2id$v=19$m={},t={},p={}${}${}",
        params.m_cost(),
        params.t_cost(),
        params.p_cost(),
        random(salt_b64 * 3 / 4)?,
        random(out_bytes)?
    );
    PasswordHashString::new(&text).map_err(|e| format!("cannot build a dummy hash: {e}"))
}

/// The prefix-cache owner of a key: its id plus the first 8 bytes of SHA-256 of its hash
/// line (the hash includes a random salt, so a reissued id never matches).
fn owner_of(e: &KeyEntry) -> Arc<str> {
    let d = ring::digest::digest(&ring::digest::SHA256, e.hash.as_str().as_bytes());
    let hex: String = d
        .as_ref()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    Arc::from(format!("{}#{hex}", e.id))
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

    fn limits(failed_per_minute: u32) -> AuthLimits {
        AuthLimits {
            default_rpm: 0,
            default_tpm: 0,
            generations_per_key: 4,
            verifications: 2,
            queued_verifications: 8,
            failed_per_minute_per_address: failed_per_minute,
            tracked_addresses: 1000,
        }
    }

    /// Why `s` refused `cred` from `addr` (panics if it was accepted).
    async fn refused(s: &KeyStore, cred: &[u8], addr: std::net::IpAddr) -> AuthError {
        s.authenticate(Some(cred), addr).await.unwrap_err().error
    }

    fn store(lines: &str) -> KeyStore {
        KeyStore::new(parse_keys(lines).unwrap(), limits(1000)).unwrap()
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
            refused(&s, b"Bearer alice:wrong", HOST).await,
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
            refused(&s, b"Bearer mallory:right", HOST).await,
            AuthError::Invalid
        );
        assert_eq!(s.argon2_runs(), 1);
        assert_eq!(
            s.authenticate(None, HOST).await.unwrap_err().error,
            AuthError::Missing
        );
    }

    #[tokio::test]
    async fn expiry_and_rate_limit_apply_after_the_secret_is_proven() {
        let h = cheap_hash("k");
        let s = store(&format!("old:{h}::2001-01-01T00:00:00Z\nslow:{h}:2\n"));
        assert_eq!(refused(&s, b"Bearer old:k", HOST).await, AuthError::Expired);
        assert_eq!(refused(&s, b"Bearer old:x", HOST).await, AuthError::Invalid);
        s.authenticate(Some(b"Bearer slow:k"), HOST).await.unwrap();
        s.authenticate(Some(b"Bearer slow:k"), HOST).await.unwrap();
        match refused(&s, b"Bearer slow:k", HOST).await {
            AuthError::RateLimited { retry_after, limit } => {
                assert_eq!(limit, 2);
                assert!(retry_after > Duration::from_secs(1));
            }
            other => panic!("expected rate limit, got {other:?}"),
        }
        // A wrong secret does not consume the victim's budget, it is simply invalid.
        assert_eq!(
            refused(&s, b"Bearer slow:bad", HOST).await,
            AuthError::Invalid
        );
    }

    #[tokio::test]
    async fn an_address_out_of_failures_gets_429_without_argon2_but_cached_keys_pass() {
        let s = KeyStore::new(
            parse_keys(&format!("alice:{}\n", cheap_hash("right"))).unwrap(),
            limits(3),
        )
        .unwrap();
        s.authenticate(Some(b"Bearer alice:right"), HOST)
            .await
            .unwrap();
        assert_eq!(s.argon2_runs(), 1);
        for _ in 0..3 {
            assert_eq!(
                refused(&s, b"Bearer alice:wrong", HOST).await,
                AuthError::Invalid
            );
        }
        assert_eq!(s.argon2_runs(), 4);
        for cred in [&b"Bearer alice:wrong"[..], b"Bearer mallory:x"] {
            assert!(matches!(
                refused(&s, cred, HOST).await,
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
            refused(&s, b"Bearer alice:wrong", other).await,
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
        let alice_line = s.snapshot().unwrap().keys["alice"]
            .hash
            .as_str()
            .to_string();
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
            refused(&s, b"Bearer carol:c1", HOST).await,
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
            refused(&s, b"Bearer alice:a1", HOST).await,
            AuthError::Invalid
        );
        assert_eq!(s.len(), 1);
    }

    fn cheap_hash_with(secret: &str, m: u32, t: u32) -> String {
        hash_secret(
            secret.as_bytes(),
            argon2::Params::new(m, t, 1, None).unwrap(),
        )
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_bad_requests_cannot_outrun_the_address_budget() {
        let mut l = limits(3);
        l.queued_verifications = 1000;
        let s = Arc::new(
            KeyStore::new(
                parse_keys(&format!("alice:{}\n", cheap_hash("right"))).unwrap(),
                l,
            )
            .unwrap(),
        );
        let tasks: Vec<_> = (0..60)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move {
                    let cred = if i % 2 == 0 {
                        "Bearer mallory:x"
                    } else {
                        "Bearer alice:wrong"
                    };
                    refused(&s, cred.as_bytes(), HOST).await
                })
            })
            .collect();
        let mut invalid = 0;
        let mut throttled = 0;
        for t in tasks {
            match t.await.unwrap() {
                AuthError::Invalid => invalid += 1,
                AuthError::TooManyFailures { .. } => throttled += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!((invalid, throttled), (3, 57));
        assert_eq!(s.argon2_runs(), 3, "only the budget's worth of argon2 ran");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_verifier_queue_is_429_at_once_and_costs_no_budget() {
        let mut l = limits(1000);
        l.verifications = 1;
        l.queued_verifications = 0;
        let slow = hash_secret(b"s", argon2::Params::new(32 * 1024, 4, 1, None).unwrap()).unwrap();
        let s =
            Arc::new(KeyStore::new(parse_keys(&format!("alice:{slow}\n")).unwrap(), l).unwrap());
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move { refused(&s, b"Bearer alice:wrong", HOST).await })
            })
            .collect();
        let mut busy = 0;
        for t in tasks {
            match t.await.unwrap() {
                AuthError::VerifierBusy { retry_after } => {
                    assert_eq!(retry_after, VERIFY_BUSY_RETRY);
                    busy += 1
                }
                AuthError::Invalid => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(
            busy >= 1,
            "with one thread and no queue, some must be refused"
        );
        assert_eq!(s.argon2_runs() + busy, 8, "a refused request did not hash");
    }

    #[tokio::test]
    async fn one_dummy_per_parameter_set_rebuilt_on_reload() {
        let s = store(&format!(
            "a:{}\nb:{}\nc:{}\n",
            cheap_hash_with("x", 7 * 1024, 1),
            cheap_hash_with("y", 7 * 1024, 1),
            cheap_hash_with("z", 8 * 1024, 2)
        ));
        let params = |s: &KeyStore| -> Vec<String> {
            s.snapshot()
                .unwrap()
                .dummies
                .iter()
                .map(|d| {
                    let p = argon2::Params::try_from(&d.password_hash()).unwrap();
                    format!("m={},t={},p={}", p.m_cost(), p.t_cost(), p.p_cost())
                })
                .collect()
        };
        assert_eq!(params(&s), ["m=7168,t=1,p=1", "m=8192,t=2,p=1"]);
        // An unknown id always meets the same dummy.
        let set = s.snapshot().unwrap();
        let first = s.dummy_for(&set, "mallory").unwrap();
        for _ in 0..5 {
            assert_eq!(
                s.dummy_for(&set, "mallory").unwrap().as_str(),
                first.as_str()
            );
        }
        // Dummies are not real keys' hashes and no secret matches them.
        assert_eq!(
            refused(&s, b"Bearer mallory:x", HOST).await,
            AuthError::Invalid
        );
        s.reload(parse_keys(&format!("d:{}\n", cheap_hash_with("w", 9 * 1024, 3))).unwrap())
            .unwrap();
        assert_eq!(params(&s), ["m=9216,t=3,p=1"]);
    }

    #[tokio::test]
    async fn a_reissued_id_is_a_different_owner() {
        let s = store(&format!("alice:{}\n", cheap_hash("a1")));
        let first = s
            .authenticate(Some(b"Bearer alice:a1"), HOST)
            .await
            .unwrap();
        assert!(first.owner.starts_with("alice#"));
        s.reload(parse_keys(&format!("alice:{}\n", cheap_hash("a2"))).unwrap())
            .unwrap();
        let second = s
            .authenticate(Some(b"Bearer alice:a2"), HOST)
            .await
            .unwrap();
        assert_eq!(first.key_id, second.key_id);
        assert_ne!(first.owner, second.owner);
    }
}
