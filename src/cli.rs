//! Command line: `serve` (default), `check-config`, `policy`, `template`, `healthcheck`,
//! `hash-key`, `gen-key`, `keys`, `hash-keys`, `config-from-env`.
//!
//! Hand-parsed on purpose: ten commands and two options do not earn an argument-parsing
//! dependency in an audited binary. SECURITY: secrets are read from stdin, never from
//! arguments (which other users can see in /proc), and no command echoes a secret it read.

// One-shot commands over the operator's own arguments, never client input: a slice of
// an argument list whose length was just matched.
#![allow(clippy::indexing_slicing)]

use crate::keys;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::PathBuf;

/// Largest secret or plaintext keys file read from stdin.
const MAX_STDIN_BYTES: u64 = 16 * 1024 * 1024;

const USAGE: &str = "\
llama-gguf-inference: serve one GGUF model over the OpenAI API, with TLS and API keys

USAGE:
    llama-gguf-inference [serve] --config FILE     run the server (the default command)
    llama-gguf-inference check-config --config FILE
                                                   validate config, keys file, TLS files and
                                                   the model's GGUF header; exit 0 or 1
    llama-gguf-inference policy --config FILE      print the sandbox start-up will apply
    llama-gguf-inference template --config FILE    print the chat template in use, its
                                                   origin and SHA-256
    llama-gguf-inference healthcheck --config FILE probe the health port's /ready; exit 0
                                                   when the model is loaded, 1 otherwise
    llama-gguf-inference hash-key                  read an api_key on stdin, print its
                                                   argon2id hash for the keys file
    llama-gguf-inference gen-key KEY_ID            print a fresh key (once) and its keys-file line
    llama-gguf-inference keys list|add|remove|rotate (--config FILE | --file KEYS_FILE)
                                                   manage the hashed keys file (`keys --help`)
    llama-gguf-inference hash-keys [FILE]          convert the old gateway's plaintext
                                                   key_id:api_key[:rpm][:expiry] file (FILE or
                                                   stdin) to hashed lines on stdout
    llama-gguf-inference config-from-env           print the config.toml equivalent to the
                                                   old gateway's environment variables

OPTIONS:
    -h, --help       print help (also after a command: `gen-key --help`)
    -V, --version    print the version
";

const SERVE_HELP: &str = "\
llama-gguf-inference serve --config FILE [--self-test-sandbox]

Start the server described by FILE (TOML; see config/reference.toml). Runs in the
foreground, logs to stderr, stops gracefully on SIGTERM or SIGINT.

--self-test-sandbox   start up fully (lock-down, model load, seccomp), then try forbidden
                      actions from a new thread (read /etc/passwd, write /tmp, connect,
                      bind a third port, exec, ptrace, ...), print one line per probe on
                      stdout and exit: 0 if every probe was stopped as the policy says.
                      Run it on each new host (and on GPU hosts with the CUDA build).
";

const POLICY_HELP: &str = "\
llama-gguf-inference policy --config FILE

Print the sandbox that `serve` would apply with FILE on this host: the identity switch,
the capability sets cleared, every Landlock rule with its path, rights and reason, the
TCP ports, the scopes, and the seccomp deny list. Changes nothing.
";

const TEMPLATE_HELP: &str = "\
llama-gguf-inference template --config FILE

Print the chat template `serve` would render chat prompts with: `model.chat_template_file`
when set, else the model file's `tokenizer.chat_template`; a comment names its origin and
its SHA-256 (compare deployments by it). Exit 1 when there is none.
";

const CHECK_HELP: &str = "\
llama-gguf-inference check-config --config FILE

Validate everything start-up would: the TOML file, the keys file (every hash), the TLS
certificate and key (or the self-signed settings), and the model file's GGUF header.
Prints every problem, naming the key, and exits 1; prints a summary and exits 0 if all is well.
";

const HEALTHCHECK_HELP: &str = "\
llama-gguf-inference healthcheck --config FILE

Connect to server.health_listen from FILE (a wildcard address is probed on loopback),
ask GET /ready, and exit 0 if it answers 200 (the model is loaded), 1 otherwise (loading,
not running, refused). For a container HEALTHCHECK or an orchestrator probe: no shell or
HTTP client is needed in the image. Each step times out after 3 seconds.
";

const HASH_KEY_HELP: &str = "\
llama-gguf-inference hash-key

Reads one api_key from stdin (a trailing newline is ignored) and prints its argon2id PHC
string (m=19456 KiB, t=2, p=1). Put it in the keys file as KEY_ID:HASH.
Example: printf '%s' \"$SECRET\" | llama-gguf-inference hash-key
";

const GEN_KEY_HELP: &str = "\
llama-gguf-inference gen-key KEY_ID

Generates a random 256-bit api_key and prints it once, as the full credential clients send
(KEY_ID:API_KEY), followed by the line to add to the keys file. The secret is not stored
anywhere by this command. KEY_ID: 1-64 characters of A-Z a-z 0-9 - _ .
";

const HASH_KEYS_HELP: &str = "\
llama-gguf-inference hash-keys [FILE]

Converts a plaintext keys file of the old Python gateway (key_id:api_key[:rpm][:expiry],
# comments) into this server's hashed format, on stdout. Reads FILE, or stdin without one.
Expiries may be RFC 3339, or as the old tool wrote them: 2027-01-01T00:00:00 and
2027-06-01T12:30:00.123456 (no offset: read as UTC), or 2027-01-01 (midnight UTC).
stderr lists each key's new client credential, key_id:api_key (the old gateway took the
bare api_key). Delete the plaintext file afterwards.
";

const CONFIG_FROM_ENV_HELP: &str = "\
llama-gguf-inference config-from-env

Prints a config.toml equivalent to the old Python gateway's environment (PORT,
PORT_HEALTH, HOST, MODEL_PATH or MODELS_DIR/MODEL_NAME, DATA_DIR, CTX, NGL, THREADS,
AUTH_KEYS_FILE, MAX_REQUESTS_PER_MINUTE, MAX_CONCURRENT_REQUESTS, MAX_QUEUE_SIZE,
CORS_ORIGINS). Each line names the variable it came from; a variable with no equivalent
(AUTH_ENABLED=false, EXTRA_ARGS, PORT_BACKEND, log settings, ...) becomes a comment saying
why. Example: env $(cat old.env) llama-gguf-inference config-from-env > config.toml
";

/// Run the command line; returns the process exit code.
pub fn main(args: Vec<OsString>) -> i32 {
    let args: Vec<String> = match args.into_iter().map(|a| a.into_string()).collect() {
        Ok(a) => a,
        Err(_) => return usage_error("arguments must be valid UTF-8"),
    };
    let (command, rest): (&str, &[String]) = match args.first().map(String::as_str) {
        None => {
            eprint!("{USAGE}");
            return 2;
        }
        Some("-h") | Some("--help") | Some("help") => {
            print!("{USAGE}");
            return 0;
        }
        Some("-V") | Some("--version") => {
            println!("llama-gguf-inference {}", env!("CARGO_PKG_VERSION"));
            return 0;
        }
        Some(
            c @ ("serve" | "check-config" | "policy" | "template" | "healthcheck" | "hash-key"
            | "gen-key" | "keys" | "hash-keys" | "config-from-env"),
        ) => (c, &args[1..]),
        Some(flag) if flag.starts_with('-') => ("serve", &args[..]),
        Some(other) => return usage_error(&format!("unknown command {other:?}")),
    };
    if rest.iter().any(|a| a == "-h" || a == "--help") {
        print!(
            "{}",
            match command {
                "serve" => SERVE_HELP,
                "check-config" => CHECK_HELP,
                "policy" => POLICY_HELP,
                "template" => TEMPLATE_HELP,
                "healthcheck" => HEALTHCHECK_HELP,
                "hash-key" => HASH_KEY_HELP,
                "gen-key" => GEN_KEY_HELP,
                "config-from-env" => CONFIG_FROM_ENV_HELP,
                "keys" => keys::command::HELP,
                _ => HASH_KEYS_HELP,
            }
        );
        return 0;
    }
    match command {
        "serve" => match serve_args(rest) {
            Ok((path, mode)) => match crate::startup::serve(&path, mode) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("llama-gguf-inference: {e}");
                    1
                }
            },
            Err(e) => usage_error(&e),
        },
        "check-config" => match config_arg(rest) {
            Ok(path) => match crate::startup::check_config(&path) {
                Ok(summary) => {
                    println!("{summary}");
                    0
                }
                Err(e) => {
                    eprintln!("{e}");
                    1
                }
            },
            Err(e) => usage_error(&e),
        },
        "policy" => match config_arg(rest) {
            Ok(path) => match crate::startup::policy(&path) {
                Ok(text) => {
                    print!("{text}");
                    0
                }
                Err(e) => {
                    eprintln!("llama-gguf-inference: {e}");
                    1
                }
            },
            Err(e) => usage_error(&e),
        },
        "template" => match config_arg(rest) {
            Ok(path) => match crate::startup::template(&path) {
                Ok(text) => {
                    print!("{text}");
                    0
                }
                Err(e) => {
                    eprintln!("llama-gguf-inference: {e}");
                    1
                }
            },
            Err(e) => usage_error(&e),
        },
        "healthcheck" => match config_arg(rest) {
            Ok(path) => match crate::healthcheck::run(&path) {
                Ok(msg) => {
                    println!("{msg}");
                    0
                }
                Err(e) => {
                    eprintln!("{e}");
                    1
                }
            },
            Err(e) => usage_error(&e),
        },
        "hash-key" => hash_key(rest),
        "gen-key" => gen_key(rest),
        "keys" => keys::command::run(rest),
        "config-from-env" => match rest {
            [] => match crate::migrate::config_from_env(&|k| std::env::var(k).ok()) {
                Ok(text) => {
                    print!("{text}");
                    0
                }
                Err(e) => {
                    eprintln!("llama-gguf-inference: {e}");
                    1
                }
            },
            _ => usage_error("config-from-env takes no arguments: it reads the environment"),
        },
        _ => hash_keys(rest),
    }
}

fn usage_error(msg: &str) -> i32 {
    eprintln!("llama-gguf-inference: {msg}\n\n{USAGE}");
    2
}

fn serve_args(rest: &[String]) -> Result<(PathBuf, crate::startup::Mode), String> {
    const SELF_TEST: &str = "--self-test-sandbox";
    let mode = if rest.iter().any(|a| a == SELF_TEST) {
        crate::startup::Mode::SelfTestSandbox
    } else {
        crate::startup::Mode::Serve
    };
    let rest: Vec<String> = rest.iter().filter(|a| *a != SELF_TEST).cloned().collect();
    Ok((config_arg(&rest)?, mode))
}

fn config_arg(rest: &[String]) -> Result<PathBuf, String> {
    match rest {
        [flag, path] if flag == "--config" || flag == "-c" => Ok(PathBuf::from(path)),
        [one] if one.starts_with("--config=") => Ok(PathBuf::from(&one["--config=".len()..])),
        [] => Err("missing --config FILE".into()),
        _ => Err(format!(
            "unexpected arguments {rest:?}; expected --config FILE"
        )),
    }
}

fn read_stdin() -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    std::io::stdin()
        .take(MAX_STDIN_BYTES)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read stdin: {e}"))?;
    Ok(buf)
}

fn hash_key(rest: &[String]) -> i32 {
    if !rest.is_empty() {
        return usage_error("hash-key takes no arguments; it reads the api_key on stdin");
    }
    let mut secret = match read_stdin() {
        Ok(s) => s,
        Err(e) => return usage_error(&e),
    };
    while matches!(secret.last(), Some(b'\n' | b'\r')) {
        secret.pop();
    }
    if secret.is_empty() {
        return usage_error("no api_key on stdin");
    }
    if secret.contains(&b':') {
        return usage_error("an api_key may not contain ':' (it separates key_id and api_key)");
    }
    match keys::hash_secret(&secret, keys::default_params()) {
        Ok(h) => {
            println!("{h}");
            0
        }
        Err(e) => {
            eprintln!("llama-gguf-inference: {e}");
            1
        }
    }
}

fn gen_key(rest: &[String]) -> i32 {
    let [id] = rest else {
        return usage_error("gen-key needs exactly one KEY_ID");
    };
    if let Err(e) = keys::check_key_id(id) {
        return usage_error(&e);
    }
    let result = keys::generate_secret().and_then(|secret| {
        let hash = keys::hash_secret(secret.as_bytes(), keys::default_params())?;
        Ok((secret, hash))
    });
    match result {
        Ok((secret, hash)) => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "api key (shown once; clients send it as the Bearer token):"
            );
            let _ = writeln!(out, "{id}:{secret}");
            let _ = writeln!(out, "keys file line:");
            let _ = writeln!(out, "{id}:{hash}");
            0
        }
        Err(e) => {
            eprintln!("llama-gguf-inference: {e}");
            1
        }
    }
}

fn hash_keys(rest: &[String]) -> i32 {
    let input = match rest {
        [] => read_stdin(),
        [path] => std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}")),
        _ => return usage_error("hash-keys takes at most one FILE"),
    };
    let text = match input.map(String::from_utf8) {
        Ok(Ok(t)) => t,
        Ok(Err(_)) => return usage_error("the plaintext keys file is not UTF-8"),
        Err(e) => return usage_error(&e),
    };
    match keys::convert_plaintext(&text, keys::default_params()) {
        Ok(converted) => {
            print!("{}", converted.text);
            if converted.naive_expiries > 0 {
                eprintln!(
                    "llama-gguf-inference: {} expiry time(s) had no UTC offset and were read as UTC",
                    converted.naive_expiries
                );
            }
            // SECURITY: the operator's own secrets, from the file they gave, on stderr
            // only (stdout is the hashed file): each client now sends key_id:api_key.
            eprintln!("# Hand each client its new credential (the old gateway took the bare api_key; send it as Authorization: Bearer <credential>):");
            for (id, credential) in &converted.credentials {
                eprintln!("{id}\t{credential}");
            }
            0
        }
        Err(errors) => {
            for e in errors {
                eprintln!("llama-gguf-inference: {e}");
            }
            1
        }
    }
}
