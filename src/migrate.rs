//! From the old Python gateway: its environment variables as an equivalent config.toml
//! (`config-from-env`). Every variable it had is either mapped to a key (the line says
//! from which variable) or, when set, written as a comment saying why it has no
//! equivalent. Pure over a lookup function, so it is unit-tested without touching the
//! process environment.
//!
//! SECURITY: nothing here weakens the appliance to match the old defaults: there is no
//! auth-off mode, no wildcard CORS, and the keys file must be converted to argon2 hashes
//! (`hash-keys`) in a folder of its own.

/// The old gateway's variables with no key here, and why (written only when set).
const NO_EQUIVALENT: &[(&str, &str)] = &[
    ("PORT_BACKEND", "there is no separate llama-server: the model runs in this process"),
    ("BACKEND_PORT", "there is no separate llama-server: the model runs in this process"),
    ("EXTRA_ARGS", "llama-server flags have no pass-through; each supported one is a [model] key (see config/reference.toml)"),
    ("LOG_NAME", "logs go to stderr or journald ([logging]), not to files under DATA_DIR"),
    ("LOG_DIR", "logs go to stderr or journald ([logging]), not to files under DATA_DIR"),
    ("WORKER_TYPE", "logs go to stderr or journald ([logging]); tag deployments there"),
    ("DEBUG_SHELL", "no hold-the-container mode; use check-config and policy to inspect"),
];

/// A TOML string (basic string, escaped).
fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A whole number variable, or an error naming it.
fn number(var: &str, value: &str) -> Result<u64, String> {
    value
        .trim()
        .parse::<u64>()
        .map_err(|_| format!("{var}={value:?} is not a whole number"))
}

/// The config.toml equivalent to the old gateway's environment (`get` reads one
/// variable). Errors name the variable.
pub fn config_from_env(get: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let data_dir = get("DATA_DIR").unwrap_or_else(|| "/data".into());
    let host = get("HOST").unwrap_or_else(|| "0.0.0.0".into());
    let port = number("PORT", &get("PORT").unwrap_or_else(|| "8000".into()))?;
    let health = number(
        "PORT_HEALTH",
        &get("PORT_HEALTH").unwrap_or_else(|| "8001".into()),
    )?;
    let model = match (get("MODEL_PATH"), get("MODEL_NAME")) {
        (Some(p), _) => (p, "MODEL_PATH"),
        (None, Some(name)) => {
            let dir = get("MODELS_DIR").unwrap_or_else(|| format!("{data_dir}/models"));
            (format!("{dir}/{name}"), "MODELS_DIR/MODEL_NAME")
        }
        (None, None) => return Err(
            "set MODEL_PATH, or MODEL_NAME (with MODELS_DIR or DATA_DIR), as for the old gateway"
                .into(),
        ),
    };
    let old_keys = get("AUTH_KEYS_FILE").unwrap_or_else(|| format!("{data_dir}/api_keys.txt"));
    let keys = format!("{data_dir}/llama-gguf-inference/keys");

    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line("# config.toml equivalent to the old gateway's environment (llama-gguf-inference config-from-env).".into());
    line("# Check it: llama-gguf-inference check-config --config config.toml".into());
    line(String::new());
    line("[server]".into());
    line(format!(
        "listen = {}  # HOST, PORT; TLS now (clients use https://)",
        quoted(&format!("{host}:{port}"))
    ));
    line(format!(
        "health_listen = {}  # PORT_HEALTH; plain HTTP: /health, /ping, /ready, /metrics",
        quoted(&format!("{host}:{health}"))
    ));
    if let Some(origins) = get("CORS_ORIGINS") {
        let list: Vec<&str> = origins
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .collect();
        if list.contains(&"*") {
            line("# CORS_ORIGINS=*: refused here (any web page could call the API with a user's key); list exact origins in server.cors_allowed_origins".into());
        } else {
            let quoted_list: Vec<String> = list.iter().map(|o| quoted(o)).collect();
            line(format!(
                "cors_allowed_origins = [{}]  # CORS_ORIGINS",
                quoted_list.join(", ")
            ));
        }
    }
    line(String::new());
    line("[auth]".into());
    line(format!(
        "# AUTH_KEYS_FILE {old_keys} holds plaintext keys; convert it into a folder of its own:"
    ));
    line(format!("#   mkdir -p {data_dir}/llama-gguf-inference && llama-gguf-inference hash-keys {old_keys} > {keys}"));
    line("# hash-keys prints each client's new credential (key_id:api_key) on stderr.".into());
    line(format!("keys_file = {}", quoted(&keys)));
    if let Some(rpm) = get("MAX_REQUESTS_PER_MINUTE") {
        line(format!(
            "default_requests_per_minute = {}  # MAX_REQUESTS_PER_MINUTE",
            number("MAX_REQUESTS_PER_MINUTE", &rpm)?
        ));
    }
    if get("AUTH_ENABLED").is_some_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "false" | "0" | "no" | "off"
        )
    }) {
        line("# AUTH_ENABLED=false: refused; this appliance always authenticates (give test clients a key)".into());
    }
    line(String::new());
    line("[model]".into());
    line(format!("path = {}  # {}", quoted(&model.0), model.1));
    if let Some(ctx) = get("CTX") {
        line(format!(
            "context = {}  # CTX (per sequence: memory = parallel × context)",
            number("CTX", &ctx)?
        ));
    } else {
        line("context = 16384  # the old gateway's CTX default".into());
    }
    if let Some(ngl) = get("NGL") {
        let n = number("NGL", &ngl)?;
        match n {
            n if n >= 99 => line("gpu_layers = \"all\"  # NGL=99: every layer".into()),
            n => line(format!("gpu_layers = {n}  # NGL")),
        }
    }
    if let Some(t) = get("THREADS") {
        line(format!(
            "threads = {}  # THREADS (0: one per physical core)",
            number("THREADS", &t)?
        ));
    }
    if let Some(c) = get("MAX_CONCURRENT_REQUESTS") {
        line(format!(
            "parallel = {}  # MAX_CONCURRENT_REQUESTS: sequences generated together",
            number("MAX_CONCURRENT_REQUESTS", &c)?
        ));
    }
    if let Some(q) = get("MAX_QUEUE_SIZE") {
        line(String::new());
        line("[limits]".into());
        line(format!(
            "queue_depth = {}  # MAX_QUEUE_SIZE",
            number("MAX_QUEUE_SIZE", &q)?
        ));
    }
    // The old container ran its gateway as root; this server refuses that on a bare-metal
    // start (the image already runs as uid 65532), so say what to set.
    line(String::new());
    line("# Started as root (systemd, bare metal)? Name the account to drop to:".into());
    line("# [sandbox]".into());
    line(
        "# user = \"llama\"  # useradd --system --no-create-home --shell /usr/sbin/nologin llama"
            .into(),
    );
    let unmapped: Vec<String> = NO_EQUIVALENT
        .iter()
        .filter(|(var, _)| get(var).is_some())
        .map(|(var, why)| format!("# {var}: no equivalent: {why}"))
        .collect();
    if !unmapped.is_empty() {
        line(String::new());
        for u in unmapped {
            line(u);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn run(vars: &[(&str, &str)]) -> Result<String, String> {
        let env: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        config_from_env(&|k| env.get(k).cloned())
    }

    #[test]
    fn the_old_environment_becomes_a_config_that_parses() {
        let out = run(&[
            ("PORT", "9000"),
            ("PORT_HEALTH", "9001"),
            ("MODEL_NAME", "llama.gguf"),
            ("DATA_DIR", "/srv"),
            ("CTX", "8192"),
            ("NGL", "99"),
            ("THREADS", "8"),
            ("MAX_REQUESTS_PER_MINUTE", "200"),
            ("MAX_CONCURRENT_REQUESTS", "4"),
            ("MAX_QUEUE_SIZE", "32"),
            ("AUTH_ENABLED", "false"),
            ("EXTRA_ARGS", "--verbose"),
            ("CORS_ORIGINS", "*"),
        ])
        .unwrap();
        let cfg = crate::config::Config::parse(&out, std::path::Path::new("/etc/lgi"))
            .unwrap_or_else(|e| panic!("{e:?}\n{out}"));
        assert_eq!(cfg.server.listen, "0.0.0.0:9000");
        assert_eq!(cfg.server.health_listen, "0.0.0.0:9001");
        assert_eq!(
            cfg.model.path,
            std::path::Path::new("/srv/models/llama.gguf")
        );
        assert_eq!(cfg.model.context, 8192);
        assert_eq!(cfg.model.gpu_layers, crate::config::GpuLayers::All);
        assert_eq!(cfg.model.threads, 8);
        assert_eq!(cfg.model.parallel, 4);
        assert_eq!(cfg.limits.queue_depth, 32);
        assert_eq!(cfg.auth.default_requests_per_minute, 200);
        assert_eq!(
            cfg.auth.keys_file,
            std::path::Path::new("/srv/llama-gguf-inference/keys")
        );
        assert!(cfg.server.cors_allowed_origins.is_empty());
        for comment in [
            "# AUTH_ENABLED=false: refused",
            "# EXTRA_ARGS: no equivalent",
            "# CORS_ORIGINS=*: refused",
            "hash-keys /srv/api_keys.txt > /srv/llama-gguf-inference/keys",
        ] {
            assert!(out.contains(comment), "{comment} missing:\n{out}");
        }
    }

    #[test]
    fn a_model_path_wins_and_errors_name_the_variable() {
        let out = run(&[
            ("MODEL_PATH", "/m/x.gguf"),
            ("MODEL_NAME", "y.gguf"),
            ("NGL", "20"),
        ])
        .unwrap();
        assert!(out.contains("path = \"/m/x.gguf\"  # MODEL_PATH"), "{out}");
        assert!(out.contains("gpu_layers = 20  # NGL"), "{out}");
        assert!(!out.contains("no equivalent"), "{out}");
        let e = run(&[("MODEL_PATH", "/m/x.gguf"), ("CTX", "big")]).unwrap_err();
        assert!(e.contains("CTX"), "{e}");
        assert!(run(&[]).unwrap_err().contains("MODEL_PATH"));
        // Exact CORS origins carry over.
        let out = run(&[
            ("MODEL_PATH", "/m/x.gguf"),
            ("CORS_ORIGINS", "https://a.example, https://b.example"),
        ])
        .unwrap();
        assert!(
            out.contains("cors_allowed_origins = [\"https://a.example\", \"https://b.example\"]"),
            "{out}"
        );
    }
}
