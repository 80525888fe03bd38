//! The GGUF header walk must refuse or accept any byte string without panicking or
//! allocating beyond the input's size.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = llama_gguf_inference::gguf::check(data, data.len() as u64);
});
