//! Credential brute force over real TLS: an address out of failed-attempt budget gets
//! 429 without any argon2 work, other clients and already-verified keys keep working.

mod common;

use common::*;
use std::time::Instant;

#[tokio::test]
async fn brute_force_from_one_address_is_throttled_without_hashing() {
    let server = Server::start_with(Options {
        auth_extra: "failed_auth_per_minute_per_address = 5\n".into(),
        ..Options::default()
    });
    let mut c = server.client().await;
    // A legitimate client proves its key once.
    assert_eq!(c.get("/v1/models", Some(ALICE)).await.status, 200);

    for i in 0..5 {
        let r = c.get("/v1/models", Some(&format!("alice:guess-{i}"))).await;
        assert_eq!(r.status, 401, "attempt {i}");
    }
    let hashed = server.metric("lgi_argon2_verifications_total");
    for cred in ["alice:guess-x", "mallory:whatever", "bob:x"] {
        let r = c.get("/v1/models", Some(cred)).await;
        assert_eq!(r.status, 429, "{cred}");
        assert_eq!(r.json()["error"]["type"], "rate_limit_error");
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
    }
    assert_eq!(
        server.metric("lgi_argon2_verifications_total"),
        hashed,
        "throttled attempts must not run argon2"
    );
    assert_eq!(server.metric("lgi_auth_address_throttled_total"), 3);
    // The verified key still works from the same address (HMAC cache, no argon2).
    assert_eq!(c.get("/v1/models", Some(ALICE)).await.status, 200);
    assert_eq!(server.metric("lgi_argon2_verifications_total"), hashed);
}

#[tokio::test]
async fn tokens_per_minute_are_charged_as_prompt_plus_max_tokens() {
    let server = Server::start_with(Options {
        auth_extra: "default_tokens_per_minute = 100\n".into(),
        ..Options::default()
    });
    let mut c = server.client().await;
    // The charge is prompt + max_tokens asked, at admission; the stop strings end each
    // answer within a token or two, so the refill while it runs (100 a minute) is small
    // however slow the machine is.
    let body = serde_json::json!({"model": MODEL_ID, "prompt": "Hello there", "max_tokens": 60,
        "stop": [" ", ",", ".", "\n"]});
    let r = c.post("/v1/completions", Some(ALICE), &body).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ratelimit-limit-tokens").as_deref(), Some("100"));
    let prompt = r.json()["usage"]["prompt_tokens"].as_u64().unwrap();
    let remaining: u64 = r
        .header("x-ratelimit-remaining-tokens")
        .unwrap()
        .parse()
        .unwrap();
    // 100 - (prompt + 60), give or take the refill during the request.
    assert!(
        remaining.abs_diff(100 - prompt - 60) <= 2,
        "remaining {remaining}, prompt {prompt}"
    );
    // Still some budget left: admitted, and the charge goes into debt.
    assert_eq!(
        c.post("/v1/completions", Some(ALICE), &body).await.status,
        200
    );
    // In debt now: refused until it refills.
    let r = c.post("/v1/completions", Some(ALICE), &body).await;
    assert_eq!(r.status, 429);
    let v = r.json();
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("100 tokens per minute"),
        "{v}"
    );
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((5..=60).contains(&retry), "{retry}");
    // Other endpoints are not token-limited.
    assert_eq!(c.get("/v1/models", Some(ALICE)).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_cannot_hold_more_generations_than_its_slots() {
    use http_body_util::BodyExt;
    let server = Server::start_with(Options {
        auth_extra: "max_concurrent_generations_per_key = 1\n".into(),
        model_section: "context = 4096\nthreads = 2\n".into(),
        extra_toml: "[limits]\nmax_tokens = 3000\n".into(),
        ..Options::default()
    });
    // A long streamed generation holds alice's only slot while its body is open.
    let mut c = server.client().await;
    let long = serde_json::json!({"model": MODEL_ID, "prompt": "1, 2, 3, 4,", "max_tokens": 3000,
        "temperature": 0, "stream": true});
    let resp = c
        .send_raw(request(
            "POST",
            "/v1/completions",
            Some(ALICE),
            Some(long.to_string()),
        ))
        .await;
    assert_eq!(resp.status(), 200);
    let mut stream = resp.into_body();
    stream.frame().await.unwrap().unwrap();

    let short = serde_json::json!({"model": MODEL_ID, "prompt": "Hi", "max_tokens": 2});
    let mut other = server.client().await;
    let r = other.post("/v1/completions", Some(ALICE), &short).await;
    assert_eq!(r.status, 429, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("concurrent requests for this key (limit 1)"));
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    // Listing models needs no slot.
    assert_eq!(other.get("/v1/models", Some(ALICE)).await.status, 200);

    // The client leaves: the slot comes back.
    drop(stream);
    drop(c);
    let mut ok = false;
    for _ in 0..100 {
        let r = other.post("/v1/completions", Some(ALICE), &short).await;
        if r.status == 200 {
            ok = true;
            break;
        }
        assert_eq!(r.status, 429);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ok, "the slot was not released after the stream was dropped");
}

/// 127.0.0.N: loopback addresses the kernel already routes, one "client address" each.
fn loopback(n: u8) -> std::net::IpAddr {
    std::net::IpAddr::from([127, 0, 0, n])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_bad_requests_run_no_more_argon2_than_the_address_budget() {
    let server = Server::start_with(Options {
        server_extra: "max_connections = 400\nmax_connections_per_address = 200\n".into(),
        auth_extra: "failed_auth_per_minute_per_address = 10\n".into(),
        ..Options::default()
    });
    // 150 connections from one address, then one bad request on each, all at once.
    let mut clients = Vec::new();
    for _ in 0..150 {
        clients.push(server.client().await);
    }
    let before = server.metric("lgi_argon2_verifications_total");
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            tokio::spawn(async move {
                let cred = if i % 2 == 0 {
                    format!("mallory:guess-{i}")
                } else {
                    format!("alice:guess-{i}")
                };
                c.get("/v1/models", Some(&cred)).await.status.as_u16()
            })
        })
        .collect();
    let mut statuses = std::collections::BTreeMap::new();
    for t in tasks {
        *statuses.entry(t.await.unwrap()).or_insert(0) += 1;
    }
    let runs = server.metric("lgi_argon2_verifications_total") - before;
    eprintln!("150 concurrent bad requests: {statuses:?}, {runs} argon2 runs");
    assert_eq!(runs, 10, "argon2 ran beyond the address's budget of 10");
    assert_eq!(statuses.get(&401), Some(&10), "{statuses:?}");
    assert_eq!(statuses.get(&429), Some(&140), "{statuses:?}");
    // Another address is not affected; its valid key is verified at once.
    let mut other = Client::connect_from(loopback(2), server.api, &server.ca_pem())
        .await
        .unwrap();
    assert_eq!(other.get("/v1/models", Some(ALICE)).await.status, 200);

    // The trail: `auth failed` events name the address, the key id and the reason, at
    // most 6 for this address however many it sent; never the secret. The request lines
    // carry the client address.
    let log = server.log_text();
    let events: Vec<&str> = log.lines().filter(|l| l.contains("auth failed")).collect();
    assert_eq!(events.len(), 6, "{events:#?}");
    for e in &events {
        assert!(e.contains("client=127.0.0.1"), "{e}");
        assert!(
            e.contains("key_id=mallory") || e.contains("key_id=alice"),
            "{e}"
        );
        // The throttled ones are refused at once, so they may be logged first.
        assert!(
            e.contains("reason=invalid") || e.contains("reason=address_throttled"),
            "{e}"
        );
    }
    assert!(
        !log.contains("guess-"),
        "a presented secret reached the log"
    );
    assert!(
        log.lines()
            .filter(|l| l.contains("request done"))
            .all(|l| l.contains("client=127.0.0.")),
        "a request line without the client address"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_failure_table_never_locks_out_an_address_that_never_failed() {
    // A table of 4 addresses is filled (and overfilled) by 20 addresses that each spend
    // their budget of 2.
    let server = Server::start_with(Options {
        auth_extra: "failed_auth_per_minute_per_address = 2\nfailed_auth_tracked_addresses = 4\n"
            .into(),
        ..Options::default()
    });
    for n in 2..22 {
        let mut c = Client::connect_from(loopback(n), server.api, &server.ca_pem())
            .await
            .unwrap();
        let statuses: Vec<u16> = [
            c.get("/v1/models", Some("mallory:x")).await.status.as_u16(),
            c.get("/v1/models", Some("mallory:y")).await.status.as_u16(),
            c.get("/v1/models", Some("mallory:z")).await.status.as_u16(),
        ]
        .into();
        // Each address still gets exactly its own budget, full table or not.
        assert_eq!(statuses, [401, 401, 429], "address 127.0.0.{n}");
    }
    // A fresh address with a valid key that was never verified: served.
    let started = Instant::now();
    let mut fresh = Client::connect_from(loopback(50), server.api, &server.ca_pem())
        .await
        .unwrap();
    let r = fresh.get("/v1/models", Some(BOB)).await;
    eprintln!(
        "valid uncached key from a fresh address with the table full: {} in {:?}",
        r.status,
        started.elapsed()
    );
    assert_eq!(r.status, 200);
}
