//! Abuse at the connection and HTTP framing level, against the real binary over real
//! sockets: slow and silent clients, connection floods from one address, keep-alive
//! hoarding, oversized and overcrowded heads, smuggling attempts, plain HTTP and old TLS
//! versions on the TLS port. After each, a normal client is still served.

mod common;

use common::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

fn server() -> Server {
    Server::start()
}

/// A server with extra `[server]` keys (short timeouts, small caps).
fn server_with(server_section: &str) -> Server {
    Server::start_with(Options {
        server_extra: server_section.into(),
        ..Options::default()
    })
}

async fn tls(server: &Server) -> TlsStream<TcpStream> {
    tls_connect(server, &[b"http/1.1"]).await.unwrap()
}

/// Read until the peer closes or `limit` passes; (bytes, closed, elapsed).
async fn read_until_close<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    limit: Duration,
) -> (Vec<u8>, bool, Duration) {
    let start = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true, start.elapsed()),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (out, false, start.elapsed()),
        }
    }
}

/// A normal authenticated request still succeeds, and quickly.
async fn assert_normal_client_served(server: &Server) -> Duration {
    let start = Instant::now();
    let mut c = server.client().await;
    let r = c.get("/v1/models", Some(ALICE)).await;
    assert_eq!(r.status, 200);
    start.elapsed()
}

fn status_of(resp: &[u8]) -> u16 {
    std::str::from_utf8(resp.get(9..12).unwrap_or(b"000"))
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn silent_and_trickling_clients_are_dropped_at_the_header_timeout() {
    let server = server_with("header_read_timeout_secs = 1\n");
    // Silent after the handshake.
    let mut silent = tls(&server).await;
    // Trickling: a valid request line, then one header byte every 200 ms.
    let mut trickle = tls(&server).await;
    trickle
        .write_all(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let trickler = tokio::spawn(async move {
        let start = Instant::now();
        for b in b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
            .iter()
            .cycle()
        {
            if trickle.write_all(&[*b]).await.is_err() || trickle.flush().await.is_err() {
                return (true, start.elapsed());
            }
            let (_, closed, _) = read_until_close(&mut trickle, Duration::from_millis(200)).await;
            if closed {
                return (true, start.elapsed());
            }
            if start.elapsed() > Duration::from_secs(10) {
                return (false, start.elapsed());
            }
        }
        unreachable!()
    });
    // Meanwhile a normal client is served at once.
    let normal = assert_normal_client_served(&server).await;
    assert!(
        normal < Duration::from_secs(1),
        "normal request took {normal:?}"
    );

    let (_, closed, after) = read_until_close(&mut silent, Duration::from_secs(10)).await;
    assert!(closed, "silent client still connected after {after:?}");
    let (closed, after) = trickler.await.unwrap();
    assert!(closed, "trickling client still connected after {after:?}");
    assert!(
        after < Duration::from_secs(5),
        "trickler dropped only after {after:?}"
    );
    assert_normal_client_served(&server).await;
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let server = server_with("header_read_timeout_secs = 1\n");
    let mut s = tls(&server).await;
    s.write_all(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert_eq!(status_of(&buf[..n]), 401);
    // The response is complete; the connection now idles.
    let (_, closed, after) = read_until_close(&mut s, Duration::from_secs(10)).await;
    assert!(closed, "idle keep-alive connection open after {after:?}");
    assert!(
        after < Duration::from_secs(4),
        "closed only after {after:?}"
    );
}

#[tokio::test]
async fn one_address_cannot_take_more_than_its_connection_cap() {
    let server = server_with("max_connections_per_address = 3\n");
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(tls(&server).await);
    }
    // The fourth is accepted and closed before the handshake.
    let fourth = tokio::time::timeout(Duration::from_secs(5), tls_connect(&server, &[])).await;
    assert!(
        matches!(fourth, Ok(Err(_))),
        "fourth connection from one address must be refused"
    );
    // Closing one frees a slot.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_normal_client_served(&server).await;
}

#[tokio::test]
async fn a_connection_serves_at_most_the_configured_number_of_requests() {
    let server = server_with("max_requests_per_connection = 3\n");
    let mut s = tls(&server).await;
    let mut last = Vec::new();
    for i in 0..3 {
        s.write_all(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        last = buf[..n].to_vec();
        let head = String::from_utf8_lossy(&last).to_lowercase();
        assert_eq!(
            head.contains("connection: close"),
            i == 2,
            "request {i}: {head}"
        );
    }
    let (_, closed, _) = read_until_close(&mut s, Duration::from_secs(5)).await;
    assert!(closed, "connection must close after the third response");
    assert_eq!(status_of(&last), 401);
}

#[tokio::test]
async fn oversized_or_overcrowded_heads_are_431_and_smuggling_is_refused() {
    let server = server();
    // A 32 KiB header (cap 16 KiB).
    let mut s = tls(&server).await;
    let big = format!(
        "GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(32 * 1024)
    );
    let _ = s.write_all(big.as_bytes()).await;
    let (resp, _, _) = read_until_close(&mut s, Duration::from_secs(5)).await;
    assert_eq!(status_of(&resp), 431, "{}", String::from_utf8_lossy(&resp));

    // 100 headers (cap 64).
    let mut s = tls(&server).await;
    let mut req = String::from("GET /v1/models HTTP/1.1\r\nHost: x\r\n");
    for i in 0..100 {
        req.push_str(&format!("X-H{i}: v\r\n"));
    }
    req.push_str("\r\n");
    let _ = s.write_all(req.as_bytes()).await;
    let (resp, _, _) = read_until_close(&mut s, Duration::from_secs(5)).await;
    assert_eq!(status_of(&resp), 431, "{}", String::from_utf8_lossy(&resp));

    // Content-Length and Transfer-Encoding together, with a smuggled second request in
    // the body: 411 (bodies need Content-Length), the connection closes, and the smuggled
    // request is never answered.
    let mut s = tls(&server).await;
    let smuggle = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 44\r\n\
                   Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n";
    let _ = s.write_all(smuggle.as_bytes()).await;
    let (resp, closed, _) = read_until_close(&mut s, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&resp);
    assert_eq!(status_of(&resp), 411, "{text}");
    assert!(
        text.contains("\"type\":\"invalid_request_error\""),
        "{text}"
    );
    assert_eq!(
        text.matches("HTTP/1.1 ").count(),
        1,
        "smuggled request answered: {text}"
    );
    assert!(closed);

    // Two different Content-Length values.
    let mut s = tls(&server).await;
    let dup = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\
               Content-Length: 40\r\nContent-Type: application/json\r\n\r\n{}";
    let _ = s.write_all(dup.as_bytes()).await;
    let (resp, _, _) = read_until_close(&mut s, Duration::from_secs(5)).await;
    assert_eq!(status_of(&resp), 400, "{}", String::from_utf8_lossy(&resp));

    assert_normal_client_served(&server).await;
}

#[tokio::test]
async fn plain_http_and_old_tls_versions_on_the_tls_port_are_refused() {
    let server = server();
    // Plain HTTP: no HTTP answer, the connection ends (rustls rejects the record).
    let mut tcp = TcpStream::connect(server.api).await.unwrap();
    tcp.write_all(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (resp, closed, _) = read_until_close(&mut tcp, Duration::from_secs(5)).await;
    assert!(closed);
    assert!(!resp.starts_with(b"HTTP/"), "{resp:?}");

    // TLS 1.0 and 1.1 ClientHellos (no supported_versions extension, RSA/AES-CBC suite):
    // answered with a fatal alert record (type 21, level 2), no ServerHello.
    for minor in [0x01u8, 0x02] {
        old_tls_hello_is_refused(&server, minor).await;
    }
    assert_normal_client_served(&server).await;
}

async fn old_tls_hello_is_refused(server: &Server, minor: u8) {
    let mut hello = vec![0x03, minor]; // client_version TLS 1.0 / 1.1
    hello.extend([7u8; 32]); // random
    hello.push(0); // session id
    hello.extend([0x00, 0x02, 0x00, 0x2f]); // one cipher suite
    hello.extend([0x01, 0x00]); // null compression
    let mut handshake = vec![0x01, 0x00, 0x00, hello.len() as u8];
    handshake.extend(&hello);
    let mut record = vec![0x16, 0x03, 0x01, 0x00, handshake.len() as u8];
    record.extend(&handshake);
    let mut tcp = TcpStream::connect(server.api).await.unwrap();
    tcp.write_all(&record).await.unwrap();
    let (resp, _, _) = read_until_close(&mut tcp, Duration::from_secs(5)).await;
    assert!(resp.len() >= 7, "{resp:?}");
    assert_eq!(resp[0], 21, "expected an alert record: {resp:?}");
    assert_eq!(resp[5], 2, "expected a fatal alert: {resp:?}");
    // rustls answers handshake_failure (40): no protocol version in common.
    assert!(matches!(resp[6], 40 | 70), "unexpected alert: {resp:?}");
}

#[tokio::test]
async fn a_client_that_never_starts_tls_is_dropped_at_the_handshake_timeout() {
    let server = server_with(
        "tls_handshake_timeout_secs = 1
",
    );
    let mut tcp = TcpStream::connect(server.api).await.unwrap();
    let (_, closed, after) = read_until_close(&mut tcp, Duration::from_secs(10)).await;
    assert!(closed, "silent TCP client still connected after {after:?}");
    assert!(
        after < Duration::from_secs(4),
        "dropped only after {after:?}"
    );
    assert_normal_client_served(&server).await;
}

#[tokio::test]
async fn a_request_line_longer_than_the_head_limit_is_refused() {
    let server = server();
    let mut s = tls(&server).await;
    let long = format!(
        "GET /v1/{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    let _ = s.write_all(long.as_bytes()).await;
    let (resp, _, _) = read_until_close(&mut s, Duration::from_secs(5)).await;
    let status = status_of(&resp);
    assert!(
        matches!(status, 414 | 431),
        "{}",
        String::from_utf8_lossy(&resp)
    );
    assert_normal_client_served(&server).await;
}

#[tokio::test]
async fn at_the_global_cap_the_server_stops_accepting_until_a_slot_frees() {
    let server = server_with("max_connections = 4\nmax_connections_per_address = 4\n");
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(tls(&server).await);
    }
    // The fifth TCP connect lands in the kernel backlog; no TLS answer while at the cap.
    let fifth = tls_connect(&server, &[]);
    tokio::pin!(fifth);
    assert!(
        tokio::time::timeout(Duration::from_millis(700), &mut fifth)
            .await
            .is_err(),
        "a fifth connection was served while at the cap"
    );
    // One leaves: the waiting connection is accepted and served.
    drop(held.pop());
    let stream = tokio::time::timeout(Duration::from_secs(5), &mut fifth)
        .await
        .expect("accepted once a slot freed")
        .expect("TLS handshake");
    drop(stream);
}

#[tokio::test]
async fn a_body_that_never_finishes_gets_408() {
    let server = server_with("body_read_timeout_secs = 1\n");
    let mut s = tls(&server).await;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ALICE}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"model\":"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let (resp, _, after) = read_until_close(&mut s, Duration::from_secs(10)).await;
    assert_eq!(status_of(&resp), 408, "{}", String::from_utf8_lossy(&resp));
    assert!(
        after < Duration::from_secs(4),
        "answered only after {after:?}"
    );
    assert_normal_client_served(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connections_are_closed_even_when_they_answer_pings() {
    let server = server_with("idle_timeout_secs = 2\n");
    // One that sent a request and went quiet, and one that never opened a stream.
    let (client, after_request) = h2_connect(&server).await;
    let mut client = client.ready().await.unwrap();
    let (resp, _) = client.send_request(h2_get_models(), true).unwrap();
    assert_eq!(resp.await.unwrap().status(), 200);
    let (_silent, silent) = h2_connect(&server).await;
    let started = Instant::now();
    for (what, ended) in [("after a request", after_request), ("never used", silent)] {
        let r = tokio::time::timeout(Duration::from_secs(30), ended).await;
        assert!(
            r.is_ok(),
            "idle HTTP/2 connection ({what}) still open after 30 s"
        );
    }
    eprintln!(
        "idle HTTP/2 connections closed after {:?}",
        started.elapsed()
    );
    assert_normal_client_served(&server).await;
}

/// HTTP/2 keep-alive (`src/http.rs`: a PING after 30 s without frames, 20 s for its ACK):
/// a peer that stops answering — gone without a FIN, behind a dead NAT entry — loses its
/// connection slot long before the idle timeout would free it. The client here speaks
/// raw frames so that it can leave the server's PING unanswered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_peer_that_stops_answering_pings_is_dropped() {
    // An idle timeout far beyond the PING's deadline: only the unanswered PING can close it.
    let server = server_with("idle_timeout_secs = 300\n");
    let mut tls = tls_connect(&server, &[b"h2"]).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    const SETTINGS: u8 = 0x4;
    const PING: u8 = 0x6;
    const GOAWAY: u8 = 0x7;
    const ACK: u8 = 0x1;
    // The preface and an empty SETTINGS frame.
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let started = Instant::now();
    let (mut ping_at, mut goaway) = (None, false);
    loop {
        let mut head = [0u8; 9];
        let read = tokio::time::timeout(Duration::from_secs(120), tls.read_exact(&mut head)).await;
        let Ok(read) = read else {
            panic!(
                "still open after {:?}; PING seen at {ping_at:?}",
                started.elapsed()
            );
        };
        if read.is_err() {
            break; // closed
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let mut payload = vec![0; len];
        if tls.read_exact(&mut payload).await.is_err() {
            break;
        }
        match kind {
            // Acknowledge the server's settings, as a peer must; never answer a PING.
            SETTINGS if flags & ACK == 0 => tls
                .write_all(&[0, 0, 0, SETTINGS, ACK, 0, 0, 0, 0])
                .await
                .unwrap(),
            PING if flags & ACK == 0 => {
                ping_at.get_or_insert(started.elapsed());
            }
            GOAWAY => goaway = true,
            _ => {}
        }
    }
    let closed_at = started.elapsed();
    let ping_at = ping_at.expect("the connection closed without a PING");
    eprintln!("PING after {ping_at:?}, unanswered; closed after {closed_at:?} (GOAWAY: {goaway})");
    assert!(
        closed_at < Duration::from_secs(300),
        "closed by the idle timeout, not the keep-alive"
    );
    assert!(
        closed_at > ping_at,
        "closed before its PING went unanswered"
    );
    assert_normal_client_served(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_connection_is_closed_gracefully_at_its_maximum_lifetime() {
    let server = server_with("idle_timeout_secs = 1\nmax_connection_lifetime_secs = 3\n");
    let (client, ended) = h2_connect(&server).await;
    let mut client = client.ready().await.unwrap();
    let started = Instant::now();
    let mut served = 0;
    // Never idle: a request every 200 ms, until the server says GOAWAY.
    while started.elapsed() < Duration::from_secs(30) {
        client = match client.ready().await {
            Ok(c) => c,
            Err(_) => break,
        };
        let Ok((resp, _)) = client.send_request(h2_get_models(), true) else {
            break;
        };
        match resp.await {
            Ok(r) => {
                assert_eq!(r.status(), 200, "a request in flight was not completed");
                served += 1;
            }
            Err(_) => break,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let lifetime = started.elapsed();
    assert!(
        tokio::time::timeout(Duration::from_secs(10), ended)
            .await
            .is_ok(),
        "the connection did not end"
    );
    assert!(lifetime < Duration::from_secs(30), "never closed");
    assert!(served >= 3, "only {served} requests before the close");
    eprintln!("busy connection closed after {lifetime:?} and {served} requests");
}

/// IPv6: one /48 (65 536 /64s) must not hold more than `max_connections_per_ipv6_48`.
/// SECURITY of the test itself: the addresses (documentation prefix 2001:db8::/32) are
/// added by the test inside a network namespace of its own, on its loopback device; no
/// other address is ever a target.
#[test]
fn one_ipv6_48_cannot_hold_more_connections_than_its_cap() {
    // SAFETY: unshare takes an integer flag; CLONE_NEWNET moves only this test's thread
    // (and the processes it starts) into a new, empty network namespace.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWNET) needs root: {}",
        std::io::Error::last_os_error()
    );
    let ip = |args: &[&str]| {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "ip {args:?}: {out:?}");
    };
    ip(&["link", "set", "lo", "up"]);
    let server_addr = "2001:db8:ffff::1";
    let mut ours: Vec<String> = (1..=8).map(|i| format!("2001:db8:1:{i}::1")).collect();
    ours.push("2001:db8:2::1".into());
    for a in ours.iter().map(String::as_str).chain([server_addr]) {
        ip(&[
            "-6",
            "addr",
            "add",
            &format!("{a}/128"),
            "dev",
            "lo",
            "nodad",
        ]);
    }
    let server = Server::start_with(Options {
        listen: format!("[{server_addr}]:0"),
        server_extra: "max_connections = 64\nmax_connections_per_address = 2\n\
                       max_connections_per_ipv6_48 = 6\n"
            .into(),
        ..Options::default()
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut held = Vec::new();
        let mut refused = 0;
        // Two connections from each of eight /64s of 2001:db8:1::/48.
        for a in &ours[..8] {
            for _ in 0..2 {
                let from: std::net::IpAddr = a.parse().unwrap();
                match Client::connect_from(from, server.api, &server.ca_pem()).await {
                    Ok(mut c) => {
                        assert_eq!(c.get("/v1/models", Some(ALICE)).await.status, 200);
                        held.push(c);
                    }
                    Err(_) => refused += 1,
                }
            }
        }
        eprintln!(
            "one /48 from 8 /64s: {} connections held, {refused} refused",
            held.len()
        );
        assert_eq!(held.len(), 6, "the /48 held more than its cap");
        // Another /48 is not affected.
        let other: std::net::IpAddr = ours[8].parse().unwrap();
        let mut c = Client::connect_from(other, server.api, &server.ca_pem())
            .await
            .unwrap();
        assert_eq!(c.get("/v1/models", Some(ALICE)).await.status, 200);
    });
}
