//! Test harness: starts the real binary with a generated config and keys, and talks to it
//! over real TLS (rustls client trusting the server's persisted self-signed certificate)
//! with hyper's HTTP/1.1 client. Every server is killed when its `Server` drops.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use llama_gguf_inference::keys;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

#[cfg(feature = "fake-engine")]
pub mod inprocess;

pub const MODEL_ID: &str = "test-model";
pub const BIN: &str = env!("CARGO_BIN_EXE_llama-gguf-inference");

/// Credentials written into every test server's keys file.
pub const ALICE: &str = "alice:alice-secret-0123456789";
/// A second unlimited key (carol): the other tenant whose service must not suffer.
pub const BOB: &str = "carol:carol-secret-0123456789";
pub const LIMITED: &str = "limited:limited-secret-0123456789";
pub const EXPIRED: &str = "expired:expired-secret-0123456789";

/// The test model, at a path the sandbox user can read.
pub fn model_path() -> PathBuf {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(find_model).clone()
}

fn find_model() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        p.exists(),
        "test model missing at {}: run `make test` (it fetches the model) or `.ci/setup`",
        p.display()
    );
    if !is_root() || readable_by_others(&p) {
        return p;
    }
    // Started as root, the server drops to `nobody`, which cannot read a model inside a
    // private checkout (e.g. under /root): use a world-readable copy, made once.
    let dir = std::env::temp_dir().join("llama-gguf-inference-test-model");
    let copy = dir.join(p.file_name().unwrap());
    let same_size = |a: &Path, b: &Path| {
        std::fs::metadata(a).map(|m| m.len()).ok() == std::fs::metadata(b).map(|m| m.len()).ok()
    };
    if !same_size(&p, &copy) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let partial = dir.join(format!("partial-{}", std::process::id()));
        std::fs::copy(&p, &partial).unwrap();
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::rename(&partial, &copy).unwrap();
    }
    copy
}

/// For a test that only means something as root: fails (never passes silently) when not.
/// CI runs the suite as root; run it as root (`sudo make test`) to cover these.
pub fn require_root(why: &str) {
    assert!(
        is_root(),
        "this test needs root ({why}); it fails rather than pass without checking anything"
    );
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Every directory above `p` searchable by others, and `p` readable by others.
fn readable_by_others(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let mode = |q: &Path| {
        std::fs::metadata(q)
            .map(|m| m.permissions().mode())
            .unwrap_or(0)
    };
    mode(p) & 0o004 != 0
        && p.ancestors()
            .skip(1)
            .all(|d| d.as_os_str().is_empty() || mode(d) & 0o001 != 0)
}

/// The `[sandbox]` section every test server gets: as root, drop to `nobody`.
pub fn default_sandbox_section() -> String {
    if is_root() {
        "[sandbox]\nuser = \"nobody\"\n".into()
    } else {
        String::new()
    }
}

pub fn cheap_hash(secret: &str) -> String {
    // The floor the keys file accepts; keeps test start-up fast.
    keys::hash_secret(
        secret.as_bytes(),
        argon2::Params::new(7 * 1024, 1, 1, None).unwrap(),
    )
    .unwrap()
}

pub fn secret(cred: &str) -> &str {
    cred.split_once(':').unwrap().1
}

pub struct Options {
    /// `server.listen` (default "127.0.0.1:0").
    pub listen: String,
    pub extra_toml: String,
    /// The `[sandbox]` section (default: `default_sandbox_section()`).
    pub sandbox: String,
    /// More `[server]` keys (that table may appear only once).
    pub server_extra: String,
    /// More `[auth]` keys.
    pub auth_extra: String,
    /// The `[tls]` table's keys (default: a self-signed pair persisted in `tls/`, whose
    /// certificate `Server::ca_pem` returns).
    pub tls: String,
    /// The keys file's text (default: the four test keys with cheap hashes).
    pub keys_text: Option<String>,
    pub model_section: String,
    /// `model.path` (default: the test model, `model_path()`).
    pub model: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    pub wait_ready: bool,
    /// A program (and its arguments) that runs the binary: `wrapper... BIN serve ...`.
    pub wrapper: Vec<String>,
    /// Where the "listening api=… health=…" line comes from when the log does not go to
    /// stderr (the journald test); None: stderr.
    pub listening: Option<std::sync::mpsc::Receiver<String>>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:0".into(),
            extra_toml: String::new(),
            sandbox: default_sandbox_section(),
            server_extra: String::new(),
            auth_extra: String::new(),
            tls: "self_signed_dir = \"tls\"\n".into(),
            keys_text: None,
            model_section: "context = 1024\nthreads = 2\nembeddings = true\n".into(),
            model: None,
            env: vec![],
            wait_ready: true,
            wrapper: vec![],
            listening: None,
        }
    }
}

/// A server whose engine sleeps 40 ms after every step (test hook), so a stream of N
/// tokens lasts at least N × 40 ms on any hardware: the tests below catch it mid-way by
/// waiting on events, not on how slow the CPU is.
pub fn slow_steps() -> Options {
    if !cfg!(feature = "test-hooks") {
        panic!("this test needs the test-hooks build (`cargo test --release --features test-hooks`, as make test runs it)");
    }
    Options {
        env: vec![("LGI_TEST_STEP_DELAY_MS".into(), "40".into())],
        ..Options::default()
    }
}

pub struct Server {
    child: Child,
    pub api: SocketAddr,
    pub health: SocketAddr,
    pub dir: tempfile::TempDir,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Write the test keys file and a config; return the config path.
pub fn write_config(dir: &Path, opts: &Options) -> PathBuf {
    let keys = opts.keys_text.clone().unwrap_or_else(|| {
        format!(
            "# test keys\nalice:{}\ncarol:{}\nlimited:{}:3\nexpired:{}::2001-01-01T00:00:00Z\n",
            cheap_hash(secret(ALICE)),
            cheap_hash(secret(BOB)),
            cheap_hash(secret(LIMITED)),
            cheap_hash(secret(EXPIRED)),
        )
    });
    std::fs::write(dir.join("keys"), keys).unwrap();
    let config = format!(
        "[server]\nlisten = \"{}\"\nhealth_listen = \"127.0.0.1:0\"\n{}\
         [tls]\n{}\
         [auth]\nkeys_file = \"keys\"\ndefault_requests_per_minute = 0\n{}\
         [model]\npath = \"{}\"\nid = \"{MODEL_ID}\"\n{}\
         {}\n{}",
        opts.listen,
        opts.server_extra,
        opts.tls,
        opts.auth_extra,
        opts.model.clone().unwrap_or_else(model_path).display(),
        opts.model_section,
        opts.sandbox,
        opts.extra_toml,
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, config).unwrap();
    path
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(Options::default())
    }

    pub fn start_with(opts: Options) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), &opts);
        let mut cmd = match opts.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        cmd.args(["serve", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start the server binary");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains(" listening ") {
                    let _ = tx.send(line.clone());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let rx = opts.listening.unwrap_or(rx);
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => l,
            Err(_) => panic!(
                "server did not start; log:\n{}",
                log.lock().unwrap().join("\n")
            ),
        };
        let (api, health) = listening_addrs(&line);
        let server = Server {
            api,
            health,
            child,
            dir,
            log,
        };
        if opts.wait_ready {
            server.wait_ready(Duration::from_secs(60));
        }
        server
    }

    pub fn wait_ready(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if health_get(self.health, "/ready").0 == 200 {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server never became ready; log:\n{}", self.log_text());
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait for the process to exit on its own; its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("tls/cert.pem")
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.api, &self.ca_pem()).await
    }

    /// One metric from the health listener's /metrics.
    pub fn metric(&self, name: &str) -> u64 {
        let (_, body) = health_get(self.health, "/metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("metric {name} missing:\n{body}"))
    }

    /// Poll `cond` until true or `limit` passes (a correctness wait, not a timing assertion).
    pub fn wait_for(&self, what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if cond() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("timed out waiting for {what}; log:\n{}", self.log_text());
    }
}

/// Plain HTTP/1.0 GET against the health port with std sockets: (status, body).
pub fn health_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The (api, health) addresses from the server's "listening api=… health=…" log line.
pub fn listening_addrs(line: &str) -> (SocketAddr, SocketAddr) {
    let field = |name: &str| -> SocketAddr {
        let start = line.find(&format!("{name}=")).unwrap() + name.len() + 1;
        line[start..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    (field("api"), field("health"))
}

/// A raw TLS connection to the API port offering `alpn`, for tests that speak bytes.
pub async fn tls_connect(
    server: &Server,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(server.api).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tls_connector_with(&server.ca_pem(), rustls::DEFAULT_VERSIONS, alpn)
        .connect(name, tcp)
        .await
}

/// An HTTP/2 client over TLS (ALPN h2) and the task driving its connection, which ends
/// when the connection does. The h2 crate answers the server's PINGs by itself, as every
/// client library does.
pub async fn h2_connect(
    server: &Server,
) -> (h2::client::SendRequest<Bytes>, tokio::task::JoinHandle<()>) {
    let tls = tls_connect(server, &[b"h2"]).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (client, conn) = h2::client::handshake(tls).await.unwrap();
    let ended = tokio::spawn(async move {
        let _ = conn.await;
    });
    (client, ended)
}

/// `GET /v1/models` as alice, for an HTTP/2 client.
pub fn h2_get_models() -> hyper::Request<()> {
    hyper::Request::builder()
        .method("GET")
        .uri("https://localhost/v1/models")
        .header("authorization", format!("Bearer {ALICE}"))
        .body(())
        .unwrap()
}

/// A TLS connection to `addr` from the local address `from`.
pub async fn tls_connect_from(
    from: std::net::IpAddr,
    addr: SocketAddr,
    ca_pem: &Path,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let socket = match from {
        std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(from, 0))?;
    let tcp = socket.connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tls_connector_with(ca_pem, rustls::DEFAULT_VERSIONS, alpn)
        .connect(name, tcp)
        .await
}

pub fn tls_connector(ca_pem: &Path) -> tokio_rustls::TlsConnector {
    tls_connector_with(ca_pem, rustls::DEFAULT_VERSIONS, &[])
}

/// A rustls client trusting only the server's certificate, with chosen versions and ALPN.
pub fn tls_connector_with(
    ca_pem: &Path,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca_pem).unwrap();
    for cert in
        <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::pem_slice_iter(
            &pem,
        )
    {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// One kept-alive HTTP/1.1 connection over TLS.
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    conn: tokio::task::JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }
}

impl Client {
    pub async fn connect(addr: SocketAddr, ca_pem: &Path) -> Client {
        let tcp = TcpStream::connect(addr).await.unwrap();
        // Like real HTTP clients: no Nagle delay on small writes.
        tcp.set_nodelay(true).unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = tls_connector(ca_pem).connect(name, tcp).await.unwrap();
        Client::over(tls).await
    }

    /// Like `connect`, from the local address `from` (e.g. 127.0.0.7, or an IPv6 address
    /// the test added); an error when the server refuses the connection.
    pub async fn connect_from(
        from: std::net::IpAddr,
        addr: SocketAddr,
        ca_pem: &Path,
    ) -> std::io::Result<Client> {
        let tls = tls_connect_from(from, addr, ca_pem, &[]).await?;
        Ok(Client::over(tls).await)
    }

    /// Plain HTTP/1.1 (the health port, or a benchmark peer without TLS).
    pub async fn connect_plain(addr: SocketAddr) -> Client {
        let tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        Client::over(tcp).await
    }

    /// HTTP/1.1 over an established stream; the connection task is aborted on drop.
    async fn over<S>(io: S) -> Client
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .unwrap();
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        Client { sender, conn }
    }

    /// Like `send_raw`, but a closed connection is an error, not a panic.
    pub async fn try_send_raw(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, hyper::Error> {
        self.sender.ready().await?;
        self.sender.send_request(req).await
    }

    pub async fn send_raw(&mut self, req: Request<Full<Bytes>>) -> Response<Incoming> {
        self.sender.ready().await.unwrap();
        self.sender.send_request(req).await.unwrap()
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Reply {
        let resp = self.send_raw(req).await;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub async fn get(&mut self, path: &str, cred: Option<&str>) -> Reply {
        self.send(request("GET", path, cred, None)).await
    }

    pub async fn post(&mut self, path: &str, cred: Option<&str>, body: &Value) -> Reply {
        self.send(request("POST", path, cred, Some(body.to_string())))
            .await
    }
}

pub fn request(
    method: &str,
    path: &str,
    cred: Option<&str>,
    body: Option<String>,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    if let Some(c) = cred {
        b = b.header("authorization", format!("Bearer {c}"));
    }
    if body.is_some() {
        b = b.header("content-type", "application/json");
    }
    b.body(Full::new(Bytes::from(body.unwrap_or_default())))
        .unwrap()
}

/// Parse an SSE body into its `data:` payloads.
pub fn sse_events(body: &[u8]) -> Vec<String> {
    String::from_utf8(body.to_vec())
        .unwrap()
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not an SSE data line: {e:?}"))
                .to_string()
        })
        .collect()
}

/// Every event of an SSE body as (event line, data), checking the framing as it goes:
/// each event has an `event:` line naming its `type`, and sequence numbers count up from 0.
pub fn typed_events(body: &[u8]) -> Vec<(String, Value)> {
    let text = String::from_utf8(body.to_vec()).unwrap();
    let events: Vec<(String, Value)> = text
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let (event, data) = e
                .split_once('\n')
                .unwrap_or_else(|| panic!("an event line and a data line: {e:?}"));
            let name = event
                .strip_prefix("event: ")
                .unwrap_or_else(|| panic!("no event line: {e:?}"));
            let data: Value = serde_json::from_str(
                data.strip_prefix("data: ")
                    .unwrap_or_else(|| panic!("no data line: {e:?}")),
            )
            .unwrap();
            assert_eq!(data["type"], name, "event line and type differ: {e}");
            (name.to_string(), data)
        })
        .collect();
    let seqs: Vec<u64> = events
        .iter()
        .map(|(_, d)| d["sequence_number"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (0..events.len() as u64).collect::<Vec<_>>(),
        "sequence numbers"
    );
    events
}

pub fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(n, _)| n.as_str()).collect()
}

/// A server whose chat template is `template` (`model.chat_template_file`, written to a
/// file readable by the user the server drops to), with `model_extra` in `[model]`; the
/// folder holding the file comes back with it (the CLI commands read the file again).
pub fn server_with_template(template: &str, model_extra: &str) -> (Server, tempfile::TempDir) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("template.jinja");
    std::fs::write(&path, template).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let server = Server::start_with(Options {
        model_section: format!(
            "{}chat_template_file = \"{}\"\n{model_extra}",
            Options::default().model_section,
            path.display()
        ),
        ..Options::default()
    });
    (server, dir)
}

/// Run the binary with arguments and optional stdin: (exit code, stdout, stderr).
pub fn run_cli(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    run_cli_env(args, stdin, &[])
}

/// `run_cli` with extra environment variables.
pub fn run_cli_env(
    args: &[&str],
    stdin: Option<&str>,
    env: &[(&str, &str)],
) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// How many chat templates the pinned corpus holds (`.ci/template-corpus`).
pub const TEMPLATE_CORPUS_SIZE: usize = 71;

/// The tool-call syntax each corpus template is served in (`model.tool_format = "auto"`),
/// read by hand from how the template writes the sample call (transformers' render) and
/// from each family's documentation. `generic`: the template has no syntax the server
/// parses natively (the generic JSON envelope serves it).
pub const EXPECTED_FAMILY: &[(&str, &str)] = &[
    ("Apertus-8B-Instruct", "apertus"),
    ("Apriel-1.6-15b-Thinker-fixed", "apriel"),
    ("Bielik-11B-v3.0-Instruct", "hermes"),
    ("ByteDance-Seed-OSS", "seed-oss"),
    ("Cohere2MoE", "command-r7b"),
    ("CohereForAI-c4ai-command-r-plus-tool_use", "command-r-plus"),
    (
        "CohereForAI-c4ai-command-r7b-12-2024-tool_use",
        "command-r7b",
    ),
    ("GLM-4.6", "glm"),
    ("GLM-4.7-Flash", "glm"),
    ("GigaChat3-10B-A1.8B", "gigachat-v3"),
    ("GigaChat3.1-10B-A1.8B", "gigachat"),
    ("HuggingFaceTB-SmolLM3-3B", "generic"),
    ("Kimi-K2-Instruct", "kimi-k2"),
    ("Kimi-K2-Thinking", "kimi-k2"),
    ("Kimi-K3", "kimi-k3"),
    ("LFM2-8B-A1B", "generic"),
    ("LFM2.5-8B-A1B", "lfm2"),
    ("LFM2.5-Instruct", "generic"),
    ("MiMo-VL", "hermes"),
    ("MiniMax-M1", "minimax-m1"),
    ("MiniMax-M2", "minimax-m2"),
    ("MiniMax-M3", "minimax-m3"),
    ("Mistral-Small-3.2-24B-Instruct-2506", "mistral-args"),
    ("NVIDIA-Nemotron-3-Nano-30B-A3B-BF16", "qwen3-coder"),
    ("NVIDIA-Nemotron-Nano-v2", "nemotron"),
    ("NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use", "hermes"),
    ("NousResearch-Hermes-3-Llama-3.1-8B-tool_use", "hermes"),
    ("Qwen-QwQ-32B", "hermes"),
    ("Qwen-Qwen2.5-7B-Instruct", "hermes"),
    ("Qwen-Qwen3-0.6B", "hermes"),
    ("Qwen3-Coder", "qwen3-coder"),
    ("Qwen3.5-4B", "qwen3-coder"),
    ("Reka-Edge", "hermes"),
    ("Spark2.5", "glm"),
    ("StepFun3.5-Flash", "qwen3-coder"),
    ("deepseek-ai-DeepSeek-R1-Distill-Llama-8B", "deepseek-r1"),
    ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", "deepseek-r1"),
    ("deepseek-ai-DeepSeek-V3.1", "deepseek-v3.1"),
    ("deepseek-ai-DeepSeek-V3.2", "deepseek-v3.2"),
    ("deepseek-ai-DeepSeek-V4-Flash-0731", "deepseek-v4"),
    ("deepseek-ai-DeepSeek-V4", "deepseek-v4"),
    ("fireworks-ai-llama-3-firefunction-v2", "firefunction"),
    ("google-gemma-2-2b-it", "generic"),
    ("google-gemma-4-31B-it-interleaved", "gemma4"),
    ("google-gemma-4-31B-it", "gemma4"),
    ("ibm-granite-granite-3.3-2B-Instruct", "granite"),
    ("ibm-granite-granite-4.0", "hermes"),
    ("ibm-granite-granite-4.1", "hermes"),
    ("inclusionai-ling-3.0-flash", "glm"),
    ("llama-cpp-deepseek-r1", "deepseek-r1"),
    ("llama-cpp-rwkv-world", "generic"),
    ("llm-jp-llm-jp-4.1-8b-thinking", "harmony"),
    ("meetkai-functionary-medium-v3.1", "functionary-v3.1"),
    ("meetkai-functionary-medium-v3.2", "functionary-v3.2"),
    ("meta-llama-Llama-3.1-8B-Instruct", "llama3"),
    ("meta-llama-Llama-3.2-3B-Instruct", "llama3"),
    ("meta-llama-Llama-3.3-70B-Instruct", "llama3"),
    ("microsoft-Phi-3.5-mini-instruct", "generic"),
    ("mistralai-Ministral-3-14B-Reasoning-2512", "mistral-args"),
    ("mistralai-Mistral-Nemo-Instruct-2407", "mistral"),
    ("moonshotai-Kimi-K2", "kimi-k2"),
    ("muse-glimmer", "atem"),
    ("openai-gpt-oss-120b", "harmony"),
    ("openbmb-MiniCPM5-1B", "minicpm"),
    ("poolside-Laguna-S-2.1", "glm"),
    ("poolside-Laguna-XS-2.1", "glm"),
    ("poolside-Laguna-XS.2", "glm"),
    ("tencent-Hy3", "hunyuan"),
    ("unsloth-Apriel-1.5", "apriel"),
    ("unsloth-mistral-Devstral-Small-2507", "mistral-args"),
    ("upstage-Solar-Open-100B", "solar"),
];

/// The chat-template corpus (llama.cpp's models/templates/, fetched by
/// `.ci/template-corpus` into target/, never committed), sorted by name; fails, never
/// skips, when set-up did not run.
#[allow(dead_code)] // used by the template tests only
pub fn template_corpus() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/template-corpus/templates");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "no template corpus at {} ({e}): run `bash .ci/setup --sdk` (make test does)",
                dir.display()
            )
        })
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jinja"))
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        TEMPLATE_CORPUS_SIZE,
        "the pinned corpus has {TEMPLATE_CORPUS_SIZE} templates"
    );
    files
}

/// The family a corpus template is expected to be served in (`EXPECTED_FAMILY`).
pub fn expected_family(template: &Path) -> &'static str {
    let name = template.file_stem().unwrap().to_string_lossy();
    EXPECTED_FAMILY
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no expected family for {name}"))
        .1
}

/// A forced tool call answered whole (`body` with a large `max_tokens`): how many
/// completion tokens it took and how many calls it made. The cut-call tests place their
/// `max_tokens` cuts from it, so the cuts fall inside the answer on any hardware.
#[allow(dead_code)] // used by the cut-call tests only
pub async fn whole_call_answer(c: &mut Client, body: &Value) -> (u64, usize) {
    let whole = c
        .post("/v1/chat/completions", Some(ALICE), body)
        .await
        .json();
    assert_eq!(
        whole["choices"][0]["finish_reason"], "tool_calls",
        "{whole}"
    );
    let calls = whole["choices"][0]["message"]["tool_calls"]
        .as_array()
        .map_or(0, Vec::len);
    (whole["usage"]["completion_tokens"].as_u64().unwrap(), calls)
}
