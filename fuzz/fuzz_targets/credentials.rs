//! Authorization header values and keys-file text: the first byte picks which parser.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    if which & 1 == 0 {
        let _ = llama_gguf_inference::auth::parse_authorization(rest);
    } else if let Ok(text) = std::str::from_utf8(rest) {
        let _ = llama_gguf_inference::keys::parse_keys(text);
    }
});
