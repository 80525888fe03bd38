//! Request bodies: the first byte picks the endpoint (chat, completions, embeddings,
//! responses — whose input items are read one by one by their `type`), the
//! rest is the body. Parsing and validation — JSON Schemas, tools, tool history,
//! logit_bias, embedding inputs included — must answer every input with a typed result,
//! never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llama_gguf_inference::api::embeddings::EmbeddingsRequest;
use llama_gguf_inference::api::chat::ChatCompletionRequest;
use llama_gguf_inference::api::completions::CompletionRequest;
use llama_gguf_inference::api::json::parse_json;
use llama_gguf_inference::api::responses::ResponsesRequest;
use llama_gguf_inference::config::LimitsConfig;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let limits = LimitsConfig::default();
    match which % 4 {
        0 => {
            if let Ok(r) = parse_json::<ChatCompletionRequest>(body) {
                let _ = r.validate(&limits);
            }
        }
        1 => {
            if let Ok(r) = parse_json::<CompletionRequest>(body) {
                let _ = r.validate(&limits);
            }
        }
        2 => {
            if let Ok(r) = parse_json::<EmbeddingsRequest>(body) {
                let _ = r.validate(&limits);
            }
        }
        _ => {
            if let Ok(r) = parse_json::<ResponsesRequest>(body) {
                let _ = r.validate(&limits);
            }
        }
    }
});
