//! `healthcheck --config FILE`: the container HEALTHCHECK and the orchestrator probe,
//! served by the binary itself so a runtime image needs no shell, curl or wget.
//!
//! It reads only `server.health_listen` from the config, connects to that port (a
//! wildcard address is probed on loopback), asks `GET /ready` over plain HTTP/1.1 and
//! exits 0 when the answer is 200 (model loaded), 1 otherwise (loading, down, refused).
//! SECURITY: it never touches the TLS port, keys or model; every step has a deadline,
//! and the reply read is capped.

use crate::config::Config;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

/// Longest one probe may take per step (connect, write, read).
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Most reply bytes read: the status line is all that matters.
const MAX_REPLY: u64 = 4096;

/// Probe the health port named in the config; Ok(message) when ready.
pub fn run(config_path: &Path) -> Result<String, String> {
    let cfg = Config::load(config_path).map_err(|e| e.to_string())?;
    let addr = probe_addr(cfg.listen_addrs().health);
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)
        .map_err(|e| format!("not healthy: cannot connect to the health port {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(PROBE_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(PROBE_TIMEOUT)))
        .map_err(|e| format!("not healthy: {e}"))?;
    stream
        .write_all(b"GET /ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("not healthy: cannot send the probe to {addr}: {e}"))?;
    let mut reply = Vec::new();
    stream
        .take(MAX_REPLY)
        .read_to_end(&mut reply)
        .map_err(|e| format!("not healthy: no answer from {addr}: {e}"))?;
    let text = String::from_utf8_lossy(&reply);
    let status = text.split_whitespace().nth(1).unwrap_or("none");
    if status == "200" {
        Ok(format!("ready ({addr} /ready → 200)"))
    } else {
        Err(format!("not ready: {addr} /ready answered {status}"))
    }
}

/// Where to probe: the configured address, with a wildcard replaced by loopback.
fn probe_addr(health: SocketAddr) -> SocketAddr {
    let ip = match health.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, health.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_are_probed_on_loopback() {
        let a: SocketAddr = "0.0.0.0:8081".parse().unwrap();
        assert_eq!(probe_addr(a), "127.0.0.1:8081".parse().unwrap());
        let b: SocketAddr = "[::]:8081".parse().unwrap();
        assert_eq!(probe_addr(b), "[::1]:8081".parse().unwrap());
        let c: SocketAddr = "10.0.0.5:9000".parse().unwrap();
        assert_eq!(probe_addr(c), c);
    }
}
