//! The key store's tests: verification, the dummy-hash path, caching, reloads, limits.

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
    let s = Arc::new(KeyStore::new(parse_keys(&format!("alice:{slow}\n")).unwrap(), l).unwrap());
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
