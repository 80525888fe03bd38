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
use crate::metrics::AuthCounters;
use crate::ratelimit::{FailedAuthLimiter, TokenBucket};
use argon2::password_hash::PasswordHashString;
use argon2_pool::{Argon2Pool, PoolError};
use base64ct::{Base64, Base64Unpadded, Encoding};
use ring::hmac;
use ring::rand::SecureRandom;
use std::collections::{BTreeMap, HashMap};
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
    /// What /metrics shows of authentication (the registry holds the other end).
    counters: Arc<AuthCounters>,
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
            counters: Arc::default(),
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

    /// The counters the metrics registry renders.
    pub fn counters(&self) -> Arc<AuthCounters> {
        Arc::clone(&self.counters)
    }

    /// How many argon2 verifications have run (cache misses and unknown ids).
    pub fn argon2_runs(&self) -> u64 {
        self.verifier.runs()
    }

    /// Authenticate one request from its Authorization header value.
    /// `addr` is the client's address key (see `address::address_key`).
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
                self.counters.address_throttled();
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
                let counters = Arc::clone(&self.counters);
                Box::new(move |ok: bool| {
                    counters.argon2_ran();
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
mod tests;
