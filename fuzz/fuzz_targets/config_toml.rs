//! The config file: TOML parsing, defaults, path resolution and the validation pass must
//! answer any text with a config or a list of issues, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(issues) =
            llama_gguf_inference::config::Config::parse(text, std::path::Path::new("/etc/lgi"))
        {
            assert!(!issues.is_empty());
            for i in issues {
                assert!(!i.key.is_empty(), "every issue names a key");
            }
        }
    }
});
