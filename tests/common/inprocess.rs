//! The in-process server of the fast tier: the real `server::run` (routes, auth, limits,
//! SSE, TLS on real sockets) on its own runtime in this process, with the fake engine
//! (`engine::fake`) instead of llama.cpp. Shared by `tests/inprocess.rs` and the
//! serving-path benchmark (`tests/serving_path.rs`).

use super::{Client, Options};
use llama_gguf_inference::auth::KeyStore;
use llama_gguf_inference::config::{Config, SeccompMode};
use llama_gguf_inference::engine::fake::Gate;
use llama_gguf_inference::server::{self, Launch, Listeners};
use llama_gguf_inference::settings::Settings;
use llama_gguf_inference::{keys, logging, tls};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The name of the server runtime's threads (workers and blocking pool; Linux keeps 15
/// bytes of a thread name).
pub const SERVER_THREAD: &str = "lgi-server";

/// One in-process server; stopped (and its thread joined) on drop.
pub struct InProcess {
    pub api: SocketAddr,
    pub health: SocketAddr,
    pub dir: tempfile::TempDir,
    pub gate: Arc<Gate>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl InProcess {
    pub fn start(opts: Options) -> InProcess {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options {
            // Never read: the fake engine loads nothing (and no GGUF check runs).
            model: Some(dir.path().join("not-loaded.gguf")),
            sandbox: String::new(),
            ..opts
        };
        let config = super::write_config(dir.path(), &opts);
        let cfg = Config::load(&config).unwrap();
        let settings = Settings::resolve(&cfg, 2);
        let gate = settings.engine.fake_gate.clone();
        let keys = KeyStore::new(
            keys::load_keys_file(&cfg.auth.keys_file).unwrap(),
            settings.auth,
        )
        .unwrap();
        let material = tls::load_material(&cfg.tls).unwrap();
        let (tls_config, tls_switch) = tls::server_config(&material, cfg.server.http2).unwrap();
        let launch = Launch {
            tls: tls_config,
            tls_switch,
            tls_reload: None,
            keys,
            user_tag_key: logging::user_tag_key(None).unwrap(),
            system_fingerprint: "fp_inprocess".into(),
            keys_file: cfg.auth.keys_file.clone(),
            seccomp: SeccompMode::Off,
            lock: None,
            self_test: None,
            settings,
        };
        let bind = || {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.set_nonblocking(true).unwrap();
            l
        };
        let listeners = Listeners {
            api: bind(),
            health: bind(),
        };
        let (api, health) = listeners.local_addrs().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                // The serving-path benchmark counts this runtime's CPU time by name.
                .thread_name(SERVER_THREAD)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(server::run(launch, listeners, async move {
                let _ = stopped.await;
                "test end"
            }))
        });
        let server = InProcess {
            api,
            health,
            dir,
            gate,
            stop: Some(stop),
            thread: Some(thread),
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let until = std::time::Instant::now() + Duration::from_secs(30);
        while super::health_get(self.health, "/ready").0 != 200 {
            assert!(std::time::Instant::now() < until, "never ready");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.api, &self.dir.path().join("tls/cert.pem")).await
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let ended = t.join();
            if !std::thread::panicking() {
                ended.unwrap().unwrap();
            }
        }
    }
}
