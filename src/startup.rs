//! Start-up, in the order the security argument needs (DESIGN.md "Startup order"):
//! prepare (config, keys, TLS material, GGUF header) → bind both listeners → lock down
//! → settings → tokio runtime → `server::run`.
//!
//! SECURITY: `serve` runs on the process's only thread until `sandbox::lock_down` has
//! applied identity, capabilities, no_new_privs and Landlock (which act on the calling
//! thread and on threads created after it): so the tokio runtime, the engine thread and
//! llama.cpp's threads are all created inside the sandbox. The core count is read before
//! lock-down, because Landlock hides /proc and /sys afterwards.

use crate::config::Config;
use crate::engine::template;
use crate::settings::Settings;
use crate::{auth, gguf, keys, logging, sandbox, server, signals, tls};
use std::path::Path;
use std::sync::Arc;

/// Everything validated before any socket is bound or the model is loaded.
struct Prepared {
    cfg: Config,
    keys: auth::KeyStore,
    tls: tls::TlsMaterial,
    tls_config: Arc<rustls::ServerConfig>,
    /// The pair handshakes get; SIGHUP replaces it (`tls::Reload`).
    tls_switch: Arc<tls::CertSwitch>,
    gguf: gguf::GgufSummary,
    /// The configured chat template's text: `model.chat_template_file` (read and checked
    /// here) or the `model.chat_template` family's; None: the model file's own.
    chat_template: Option<String>,
    /// Keys the `user_tag` HMAC in logs (`logging.user_tag_key_file`, or random).
    user_tag_key: ring::hmac::Key,
}

/// Keys, TLS material, GGUF header and the user-tag key, every problem collected (not
/// only the first) and named by its key; shared by `serve` and `check-config`.
fn prepare(cfg: Config, config_path: &Path) -> Result<Prepared, String> {
    let mut problems = Vec::new();
    fn keep<T>(problems: &mut Vec<String>, r: Result<T, String>) -> Option<T> {
        r.map_err(|e| problems.push(e)).ok()
    }
    let keys_file = &cfg.auth.keys_file;
    let keys = keep(
        &mut problems,
        keys::load_keys_file(keys_file)
            .map_err(|errors| {
                errors
                    .iter()
                    .map(|e| format!("auth.keys_file ({}): {e}", keys_file.display()))
                    .collect::<Vec<_>>()
                    .join("\n  - ")
            })
            .and_then(|entries| {
                auth::KeyStore::new(entries, (&cfg.auth).into())
                    .map_err(|e| format!("auth.keys_file: {e}"))
            }),
    );
    let tls = keep(
        &mut problems,
        tls::load_material(&cfg.tls)
            .and_then(|m| tls::server_config(&m, cfg.server.http2).map(|c| (m, c))),
        // (material, (config, switch))
    );
    let gguf = keep(
        &mut problems,
        gguf::check_file(&cfg.model.path)
            .map_err(|e| format!("model.path ({}): {e}", cfg.model.path.display())),
    );
    let user_tag_key = keep(
        &mut problems,
        logging::user_tag_key(cfg.logging.user_tag_key_file.as_deref()),
    );
    let chat_template = match (&cfg.model.chat_template_file, cfg.model.chat_template) {
        (Some(path), _) => keep(&mut problems, template::read_file(path)).map(Some),
        (None, Some(family)) => Some(Some(family.source().to_string())),
        (None, None) => Some(None),
    };
    match (keys, tls, gguf, user_tag_key, chat_template) {
        (
            Some(keys),
            Some((tls, (tls_config, tls_switch))),
            Some(gguf),
            Some(user_tag_key),
            Some(chat_template),
        ) if problems.is_empty() => Ok(Prepared {
            cfg,
            keys,
            tls,
            tls_config,
            tls_switch,
            gguf,
            chat_template,
            user_tag_key,
        }),
        _ => {
            let mut msg = format!("cannot start with {}:\n", config_path.display());
            for p in problems {
                msg.push_str(&format!("  - {p}\n"));
            }
            Err(msg)
        }
    }
}

/// `check-config`: validate everything start-up would, without binding or loading.
pub fn check_config(config_path: &Path) -> Result<String, String> {
    let cfg = Config::load(config_path).map_err(|e| e.to_string())?;
    let p = prepare(cfg, config_path)?;
    let addrs = p.cfg.listen_addrs();
    let plan = sandbox::plan(&p.cfg, (addrs.api.port(), addrs.health.port()))?;
    let mut settings = Settings::resolve(&p.cfg, crate::cores::physical_cores());
    settings.apply_template(
        &p.cfg,
        p.chat_template.clone(),
        p.gguf.chat_template.as_deref(),
    );
    let mut out = format!(
        "config OK: {}\n  sandbox: {} (details: `policy --config FILE`)\n  listen {} (TLS), health {}\n  {} key(s) in {}\n  TLS certificate ({:?}) SHA-256 {}\n  model {} (id {:?}): GGUF v{}, {} tensors, architecture {}, chat template {}",
        config_path.display(),
        plan.identity,
        p.cfg.server.listen,
        p.cfg.server.health_listen,
        p.keys.len(),
        p.cfg.auth.keys_file.display(),
        p.tls.source,
        p.tls_switch.current().fingerprint,
        p.cfg.model.path.display(),
        settings.api.model_id,
        p.gguf.version,
        p.gguf.tensor_count,
        p.gguf.architecture.as_deref().unwrap_or("unknown"),
        if p.gguf.has_chat_template { "present" } else { "missing" },
    );
    out.push_str(&format!(
        "\n  GPU placement (CUDA builds): gpu_layers {}, split_mode \"{}\", main_gpu {} (\"layer\": each visible GPU takes layers in proportion to its free memory; start-up logs every device and llama.cpp's buffer size on each)",
        match p.cfg.model.gpu_layers {
            crate::config::GpuLayers::All => "all".to_string(),
            crate::config::GpuLayers::Count(n) => n.to_string(),
        },
        p.cfg.model.split_mode.name(),
        p.cfg.model.main_gpu,
    ));
    out.push_str(&template_check(&p));
    for d in &settings.derived {
        out.push_str(&format!(
            "\n  {} = {} on this machine ({})",
            d.key, d.value, d.why
        ));
    }
    Ok(out)
}

/// The effective chat template for `check-config`: where it comes from, its hash, and
/// the sample conversation (system, user, a tool call, its result) rendered with it.
fn template_check(p: &Prepared) -> String {
    let configured = configured(&p.cfg, p.chat_template.as_deref());
    let Some((origin, source)) = template::effective(configured, p.gguf.chat_template.as_deref())
    else {
        return "\n  chat template: none (the model file has none; set model.chat_template_file or model.chat_template, or chat requests get a 400)".into();
    };
    let mut out = format!(
        "\n  chat template: {} (SHA-256 {})",
        origin_text(&origin),
        template::sha256_hex(&source)
    );
    let template = template::ChatTemplate::new(&source, "", "");
    if let Ok(t) = &template {
        out.push_str(&format!(
            "\n  chat template capabilities (detected): {}",
            t.capabilities().describe()
        ));
    }
    let rendered = template
        .and_then(|t| t.render(&template::sample_conversation(), &template::sample_tools()));
    match rendered {
        Ok(text) => {
            out.push_str(
                "\n  sample conversation (system, user, tool call, tool result, reply) renders as:",
            );
            for line in text.lines() {
                out.push_str("\n    | ");
                out.push_str(line);
            }
        }
        Err(e) => out.push_str(&format!(
            "\n  WARNING: the sample conversation does not render: {e}"
        )),
    }
    out
}

/// The template the config names, if any (`text`: the file's, as `prepare` read it).
fn configured<'a>(cfg: &'a Config, text: Option<&'a str>) -> template::Configured<'a> {
    match (&cfg.model.chat_template_file, cfg.model.chat_template, text) {
        (Some(path), _, Some(text)) => template::Configured::File(path, text),
        (None, Some(family), _) => template::Configured::Family(family),
        _ => template::Configured::None,
    }
}

fn origin_text(o: &template::TemplateOrigin) -> String {
    match o {
        template::TemplateOrigin::File(p) => format!("model.chat_template_file {}", p.display()),
        template::TemplateOrigin::Family(f) => {
            format!("model.chat_template = \"{}\" (built in)", f.name())
        }
        template::TemplateOrigin::ModelFile => "the model file's tokenizer.chat_template".into(),
    }
}

/// `template`: the chat template start-up would use, its origin and SHA-256, then its
/// source.
pub fn template(config_path: &Path) -> Result<String, String> {
    let cfg = Config::load(config_path).map_err(|e| e.to_string())?;
    let path = &cfg.model.path;
    let g = gguf::check_file(path).map_err(|e| format!("model.path ({}): {e}", path.display()))?;
    let text = match &cfg.model.chat_template_file {
        Some(p) => Some(template::read_file(p)?),
        None => None,
    };
    match template::effective(configured(&cfg, text.as_deref()), g.chat_template.as_deref()) {
        Some((origin, source)) => Ok(format!(
            "# chat template: {}\n# SHA-256 {}\n{source}\n",
            origin_text(&origin),
            template::sha256_hex(&source)
        )),
        None => Err(format!(
            "{} has no chat template and neither model.chat_template_file nor model.chat_template is set",
            path.display()
        )),
    }
}

/// `policy`: print the sandbox start-up would apply for this config.
pub fn policy(config_path: &Path) -> Result<String, String> {
    let cfg = Config::load(config_path).map_err(|e| e.to_string())?;
    let addrs = cfg.listen_addrs();
    let plan = sandbox::plan(&cfg, (addrs.api.port(), addrs.health.port()))?;
    Ok(sandbox::describe(&plan, config_path, true))
}

/// How `serve` ends: serve until a signal, or run the sandbox self-test and exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Serve,
    SelfTestSandbox,
}

/// `serve`: the whole start-up order, then serve until SIGTERM/SIGINT.
pub fn serve(config_path: &Path, mode: Mode) -> Result<(), String> {
    if cfg!(feature = "fake-engine") {
        // SECURITY: a test build must never pass for a server.
        return Err(
            "this binary was built with the `fake-engine` test feature and cannot serve".into(),
        );
    }
    // Config, keys, TLS material, GGUF header. Logging needs the config first.
    let cfg = Config::load(config_path).map_err(|e| e.to_string())?;
    logging::init(&cfg.logging)?;
    let p = prepare(cfg, config_path)?;
    tracing::info!(
        keys = p.keys.len(),
        model = %p.cfg.model.path.display(),
        architecture = p.gguf.architecture.as_deref().unwrap_or("unknown"),
        tensors = p.gguf.tensor_count,
        "configuration, keys and GGUF header checked"
    );
    let served = p.tls_switch.current();
    tracing::info!(
        source = ?p.tls.source,
        sha256 = %served.fingerprint,
        not_after = %tls::rfc3339(served.validity.not_after),
        "TLS certificate (pin this fingerprint for a self-signed deployment)"
    );
    if let Some(why) = served.not_valid_at(time::OffsetDateTime::now_utc()) {
        // Start anyway: there is no other pair to serve, and a pinned client may not care.
        tracing::warn!(problem = %why, "TLS certificate cannot be verified by clients now; renew it and send SIGHUP");
    }

    // Bind both listeners with std sockets (a root start can take port 443 here).
    let addrs = p.cfg.listen_addrs();
    let listeners = server::Listeners {
        api: bind(addrs.api, "server.listen")?,
        health: bind(addrs.health, "server.health_listen")?,
    };
    let (api_addr, health_addr) = listeners.local_addrs()?;
    tracing::info!(api = %api_addr, health = %health_addr, "listening");
    let (api_port, health_port) = (api_addr.port(), health_addr.port());

    // Lock down, while this is still the only thread (sandbox::lock_down checks).
    let plan = sandbox::plan(&p.cfg, (api_port, health_port))?;
    let self_test = match mode {
        Mode::SelfTestSandbox => Some(sandbox::selftest::prepare(
            api_port,
            p.cfg.model.path.clone(),
        )?),
        Mode::Serve => None,
    };
    let mut settings = Settings::resolve(&p.cfg, crate::cores::physical_cores());
    // The configured template (a file read and checked by `prepare`, or a family), else
    // the model file's; it decides the reasoning format.
    settings.apply_template(
        &p.cfg,
        p.chat_template.clone(),
        p.gguf.chat_template.as_deref(),
    );
    if let Some(source) = &p.chat_template {
        let origin = match &p.cfg.model.chat_template_file {
            Some(path) => format!("model.chat_template_file {}", path.display()),
            None => "model.chat_template (built in)".into(),
        };
        let sha256 = template::sha256_hex(source);
        tracing::info!(origin = %origin, sha256 = %sha256, "chat template configured");
    }
    for d in &settings.derived {
        tracing::info!(key = d.key, value = %d.value, why = %d.why, "setting derived");
    }
    let lock = sandbox::lock_down(&plan)?;
    sandbox::check_model_readable(&p.cfg)?;

    // Runtime, then the server (engine, seccomp, ready, API).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.async_workers)
        // argon2 has its own threads (auth::argon2_pool); the blocking pool compiles
        // constraints and re-reads the keys file.
        .max_blocking_threads(settings.blocking_threads)
        .thread_name("async")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let launch = server::Launch {
        system_fingerprint: gguf::system_fingerprint(
            &p.cfg.model.path,
            &p.gguf,
            p.chat_template.as_deref(),
        ),
        settings,
        keys: p.keys,
        tls: p.tls_config,
        tls_reload: tls::reload_for(&p.cfg.tls, &p.tls_switch),
        tls_switch: p.tls_switch,
        user_tag_key: p.user_tag_key,
        keys_file: p.cfg.auth.keys_file.clone(),
        seccomp: p.cfg.sandbox.seccomp,
        lock: Some(lock),
        self_test,
    };
    runtime.block_on(async {
        let stop = signals::Stop::watch()?;
        server::run(launch, listeners, stop.wait()).await
    })
}

fn bind(addr: std::net::SocketAddr, key: &str) -> Result<std::net::TcpListener, String> {
    let l =
        std::net::TcpListener::bind(addr).map_err(|e| format!("{key}: cannot bind {addr}: {e}"))?;
    l.set_nonblocking(true).map_err(|e| format!("{key}: {e}"))?;
    Ok(l)
}
