//! The config's own tests: defaults, named errors, ranges, the reference file.

use super::*;
use std::path::Path;

const MINIMAL: &str = "[auth]\nkeys_file = \"keys\"\n[model]\npath = \"m.gguf\"\n";

fn parse(text: &str) -> Result<Config, Vec<ConfigIssue>> {
    Config::parse(text, Path::new("/etc/lgi"))
}

#[test]
fn minimal_config_gets_defaults_and_resolves_paths() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.model.path, Path::new("/etc/lgi/m.gguf"));
    assert_eq!(c.auth.keys_file, Path::new("/etc/lgi/keys"));
    assert_eq!(c.model.context, 4096);
    assert_eq!(c.model_id(), "m");
    assert_eq!(c.server.listen, "127.0.0.1:8443");
    assert_eq!(
        c.tls.self_signed_names,
        vec!["localhost", "127.0.0.1", "::1"]
    );
    assert_eq!(c.model.gpu_layers, GpuLayers::All);
    assert_eq!(c.model.chat_template_file, None);
    let c = parse(&format!("{MINIMAL}chat_template_file = \"chatml.jinja\"\n")).unwrap();
    assert_eq!(
        c.model.chat_template_file.as_deref(),
        Some(Path::new("/etc/lgi/chatml.jinja"))
    );
}

#[test]
fn unknown_key_is_named() {
    let issues = parse(&format!("{MINIMAL}contxt = 5\n")).unwrap_err();
    assert_eq!(issues[0].key, "contxt");
    assert!(
        issues[0].message.contains("unknown field"),
        "{}",
        issues[0].message
    );
}

#[test]
fn missing_model_path_is_named() {
    let issues = parse("[auth]\nkeys_file = \"k\"\n[model]\nid = \"x\"\n").unwrap_err();
    assert_eq!(issues[0].key, "path");
    assert!(issues[0].message.contains("required"));
}

#[test]
fn every_range_error_is_reported_at_once() {
    let text = "[server]\nlisten = \"nope\"\nhealth_listen = \"127.0.0.1:8443\"\n\
                [auth]\nkeys_file = \"k\"\n[model]\npath = \"m.bin\"\ncontext = 1\nparallel = 0\n\
                [limits]\nmax_tokens = 0\n[tls]\ncert = \"c.pem\"\n";
    let issues = parse(text).unwrap_err();
    let keys: Vec<&str> = issues.iter().map(|i| i.key.as_str()).collect();
    for k in [
        "server.listen",
        "model.path",
        "model.context",
        "model.parallel",
        "limits.max_tokens",
        "tls.key",
    ] {
        assert!(keys.contains(&k), "{k} missing from {keys:?}");
    }
}

#[test]
fn same_port_for_both_listeners_is_refused() {
    let text = format!(
        "{MINIMAL}[server]\nlisten = \"0.0.0.0:9000\"\nhealth_listen = \"127.0.0.1:9000\"\n"
    );
    let issues = parse(&text).unwrap_err();
    assert_eq!(issues[0].key, "server.health_listen");
}

#[test]
fn gpu_layers_accepts_all_or_number_only() {
    let c = parse(&format!("{MINIMAL}gpu_layers = 12\n")).unwrap();
    assert_eq!(c.model.gpu_layers, GpuLayers::Count(12));
    let issues = parse(&format!("{MINIMAL}gpu_layers = \"most\"\n")).unwrap_err();
    assert!(
        issues[0].message.contains("\"all\""),
        "{}",
        issues[0].message
    );
}

#[test]
fn reference_config_parses_and_states_the_defaults() {
    let text = include_str!("../../config/reference.toml");
    let c = Config::parse(text, Path::new("/etc/lgi")).unwrap();
    let d = LimitsConfig::default();
    assert_eq!(c.limits.max_body_bytes, d.max_body_bytes);
    assert_eq!(c.limits.max_tokens, d.max_tokens);
    assert_eq!(c.limits.queue_depth, d.queue_depth);
    assert_eq!(c.limits.max_generation_secs, d.max_generation_secs);
    assert_eq!(c.limits.max_prompt_bytes, d.max_prompt_bytes);
    let s = ServerConfig::default();
    assert_eq!(c.server.listen, s.listen);
    assert_eq!(c.server.max_connections, s.max_connections);
    assert_eq!(
        c.server.max_connections_per_address,
        s.max_connections_per_address
    );
    assert_eq!(
        c.server.max_requests_per_connection,
        s.max_requests_per_connection
    );
    assert_eq!(c.server.max_header_bytes, s.max_header_bytes);
    assert_eq!(c.server.max_headers, s.max_headers);
    assert_eq!(c.server.http2, s.http2);
    assert_eq!(
        c.server.max_connections_per_ipv6_48,
        s.max_connections_per_ipv6_48
    );
    assert_eq!(c.server.idle_timeout_secs, s.idle_timeout_secs);
    assert_eq!(
        c.server.max_connection_lifetime_secs,
        s.max_connection_lifetime_secs
    );
    assert_eq!(
        c.auth.max_queued_verifications,
        default_queued_verifications()
    );
    assert_eq!(
        c.auth.failed_auth_tracked_addresses,
        default_tracked_addresses()
    );
    assert_eq!(
        c.server.header_read_timeout_secs,
        s.header_read_timeout_secs
    );
    assert_eq!(c.logging.level, LoggingConfig::default().level);
    assert_eq!(
        c.tls.self_signed_names,
        TlsConfig::default().self_signed_names
    );
    assert_eq!(c.model.context, default_context());
    assert_eq!(c.auth.default_requests_per_minute, default_rpm());
    assert_eq!(
        c.auth.failed_auth_per_minute_per_address,
        default_failed_auth()
    );
    assert_eq!(
        c.auth.max_concurrent_generations_per_key,
        default_generations_per_key()
    );
    let sb = SandboxConfig::default();
    assert_eq!(c.sandbox.landlock, sb.landlock);
    assert_eq!(c.sandbox.seccomp, sb.seccomp);
    assert_eq!(c.sandbox.allow_root, sb.allow_root);
    assert_eq!(c.sandbox.user, None);
}

#[test]
fn value_errors_name_their_key_and_never_an_empty_one() {
    let issues = parse(&format!("{MINIMAL}[limits]\nmax_tokens = \"many\"\n")).unwrap_err();
    assert_eq!(issues[0].key, "limits.max_tokens");
    // Found by fuzzing (fuzz/fuzz_targets/config_toml.rs): a line with no key name.
    for text in [" = \"x\"\n", "[]\n = 1\n", "a = \n", "[\"\"]"] {
        for issue in parse(text).unwrap_err() {
            assert!(!issue.key.is_empty(), "{text:?}: {issue:?}");
        }
    }
}

#[test]
fn sandbox_settings_are_checked_by_name() {
    let c = parse(&format!(
        "{MINIMAL}[sandbox]\nuser = \"65534\"\nlandlock = \"best-effort\"\nseccomp = \"kill\"\nextra_read_paths = [\"cuda\"]\n"
    ))
    .unwrap();
    assert_eq!(c.sandbox.user.as_deref(), Some("65534"));
    assert_eq!(c.sandbox.landlock, LandlockMode::BestEffort);
    assert_eq!(c.sandbox.seccomp, SeccompMode::Kill);
    assert_eq!(
        c.sandbox.extra_read_paths,
        vec![PathBuf::from("/etc/lgi/cuda")]
    );

    let issues = parse(&format!("{MINIMAL}[sandbox]\nuser = \"-rf /\"\n")).unwrap_err();
    assert_eq!(issues[0].key, "sandbox.user");
    let issues = parse(&format!("{MINIMAL}[sandbox]\ngroup = \"llama\"\n")).unwrap_err();
    assert_eq!(issues[0].key, "sandbox.group");
    let issues = parse(&format!("{MINIMAL}[sandbox]\nlandlock = \"maybe\"\n")).unwrap_err();
    assert!(issues[0].key.contains("landlock"), "{:?}", issues[0]);
    assert!(issues[0].message.contains("best-effort"), "{:?}", issues[0]);
}

#[test]
fn engine_keys_are_checked_and_named() {
    use crate::engine::prefix::PrefixCache;
    let c = parse(MINIMAL).unwrap();
    assert_eq!(
        (c.model.parallel, c.model.prefix_cache),
        (4, PrefixCache::PerKey)
    );
    assert_eq!(c.server.async_workers, 0);
    let c = parse(&format!(
        "{MINIMAL}prefix_cache = \"shared\"\nparallel = 8\n"
    ))
    .unwrap();
    assert_eq!(
        (c.model.parallel, c.model.prefix_cache),
        (8, PrefixCache::Shared)
    );
    let issues = parse(&format!("{MINIMAL}prefix_cache = \"everyone\"\n")).unwrap_err();
    assert!(issues[0].key.contains("prefix_cache"), "{:?}", issues[0]);
    assert!(issues[0].message.contains("per-key"), "{:?}", issues[0]);
    let issues = parse(&format!("{MINIMAL}parallel = 16\nbatch = 8\n")).unwrap_err();
    assert_eq!(issues[0].key, "model.batch");
    assert!(issues[0].message.contains("model.parallel"));
}

#[test]
fn bad_log_level_is_named() {
    let issues = parse(&format!("{MINIMAL}[logging]\nlevel = \"info,,=[\"\n")).unwrap_err();
    assert_eq!(issues[0].key, "logging.level");
}

#[test]
fn aliases_are_names_not_repeats_of_the_id() {
    let with = |list: &str| parse(&format!("{MINIMAL}aliases = {list}\n"));
    assert_eq!(
        with("[\"gpt-4o\", \"old\"]").unwrap().model.aliases.len(),
        2
    );
    for (list, why) in [
        ("[\"m\"]", "listed twice"),
        ("[\"a\", \"a\"]", "listed twice"),
        ("[\"two words\"]", "without spaces"),
        ("[\"\"]", "1-128 characters"),
    ] {
        let issues = with(list).unwrap_err();
        assert!(
            issues
                .iter()
                .any(|i| i.key == "model.aliases" && i.message.contains(why)),
            "{list}: {issues:?}"
        );
    }
}
