//! HTTP/2 abuse over real TLS (ALPN h2): a client opening far more streams than allowed
//! and a rapid-reset flood. The server must bound both and keep serving everyone else.

mod common;

use common::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_advertises_32_streams_and_serves_a_burst_of_200_requests() {
    let server = Server::start();
    let (client, _) = h2_connect(&server).await;
    let mut client = client.ready().await.unwrap();
    // After one exchange the server's SETTINGS have arrived.
    let (resp, _) = client.send_request(h2_get_models(), true).unwrap();
    assert_eq!(resp.await.unwrap().status(), 200);
    assert_eq!(client.current_max_send_streams(), 32);
    let mut pending = Vec::new();
    for _ in 0..200 {
        client = client.ready().await.unwrap();
        let (resp, _) = client.send_request(h2_get_models(), true).unwrap();
        pending.push(resp);
    }
    for resp in pending {
        assert_eq!(resp.await.unwrap().status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rapid_reset_flood_ends_that_connection_and_others_are_served() {
    let server = Server::start();
    // Another tenant (carol) whose key has proved itself before the flood: her later
    // requests are verified from the cache, so the flood cannot cost her anything, even
    // from the flooder's own address (whose failed-authentication budget the flood's
    // unverified requests hold while their argon2 checks are queued).
    let mut other = server.client().await;
    assert_eq!(other.get("/v1/models", Some(BOB)).await.status, 200);
    let (client, _) = h2_connect(&server).await;
    let mut client = client.ready().await.unwrap();
    let started = Instant::now();
    let mut sent = 0;
    let mut ended = false;
    // Open a stream and cancel it at once (RST_STREAM), as fast as possible.
    while started.elapsed() < Duration::from_secs(10) && sent < 100_000 {
        client = match client.ready().await {
            Ok(c) => c,
            Err(_) => {
                ended = true;
                break;
            }
        };
        match client.send_request(h2_get_models(), true) {
            Ok((resp, stream)) => {
                drop(stream);
                drop(resp);
                sent += 1;
                // Let the connection task write the frames out.
                tokio::task::yield_now().await;
            }
            Err(_) => {
                ended = true;
                break;
            }
        }
    }
    assert!(
        ended,
        "the server kept accepting after {sent} reset streams"
    );
    // The flood cost almost no request handling.
    let served = server.log_text().matches("request done").count();
    assert!(
        served < 1000,
        "{served} of {sent} reset streams were handled"
    );
    // Everyone else is unaffected: the other tenant is served at once, on a new
    // connection from the same address.
    let mut c = server.client().await;
    assert_eq!(c.get("/v1/models", Some(BOB)).await.status, 200);
    // The flooding key is not locked out: until the argon2 checks its flood queued have
    // settled, its address may be refused with 429 and Retry-After (never another
    // error); then it is served again. Waits on that event, for at most 30 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut refused = 0;
    loop {
        let reply = c.get("/v1/models", Some(ALICE)).await;
        if reply.status == 200 {
            break;
        }
        assert_eq!(reply.status, 429, "the flooding key got {}", reply.status);
        assert!(
            reply.headers.contains_key("retry-after"),
            "a 429 without Retry-After"
        );
        refused += 1;
        assert!(
            Instant::now() < deadline,
            "the flooding key was still refused after 30 s ({refused} tries)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "rapid reset: connection ended after {sent} streams, {served} handled; \
         the flooding key was refused {refused} times before being served"
    );
}

#[tokio::test]
async fn with_http2_off_alpn_offers_only_http_1_1() {
    let server = Server::start_with(Options {
        server_extra: "http2 = false\n".into(),
        ..Options::default()
    });
    let tls = tls_connect(&server, &[b"h2", b"http/1.1"]).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
}

/// `server.max_requests_per_connection` holds for HTTP/2 too: after that many streams
/// the server sends GOAWAY and the connection ends; a new connection is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_gets_goaway_after_its_request_budget() {
    let server = Server::start_with(Options {
        server_extra: "max_requests_per_connection = 3\n".into(),
        ..Options::default()
    });
    let (client, ended) = h2_connect(&server).await;
    let mut client = client.ready().await.unwrap();
    for i in 0..3 {
        if i > 0 {
            client = client.ready().await.unwrap();
        }
        let (resp, _) = client.send_request(h2_get_models(), true).unwrap();
        assert_eq!(resp.await.unwrap().status(), 200, "request {i}");
    }
    // The connection ends by itself (GOAWAY, then close): no fourth request is served.
    tokio::time::timeout(Duration::from_secs(10), ended)
        .await
        .expect("the connection stayed open after its request budget")
        .unwrap();
    let fourth = match client.ready().await {
        Ok(mut c) => match c.send_request(h2_get_models(), true) {
            Ok((resp, _)) => resp.await.map(|r| r.status()),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    assert!(fourth.is_err(), "a fourth request was served: {fourth:?}");
    // Another connection starts with a fresh budget.
    let (client, _) = h2_connect(&server).await;
    let mut client = client.ready().await.unwrap();
    let (resp, _) = client.send_request(h2_get_models(), true).unwrap();
    assert_eq!(resp.await.unwrap().status(), 200);
}
