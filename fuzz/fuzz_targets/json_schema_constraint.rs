//! JSON Schemas and tool lists through the real request validation and the real
//! constraint compiler (llguidance), with an approximate byte-level token trie so no
//! model is needed. The first byte picks what the rest is: a `response_format` schema
//! (even) or a `tools` list (odd); the bytes after the first NUL steer a walk through
//! the compiled constraint.
//!
//! The contract (issue 15): every input is refused with a 400, or becomes a constraint
//! that compiles within its limits, allows a first token, and — fed only tokens its own
//! masks allow — never reaches a state where no token can continue. Running out of fuel
//! or budget mid-walk is allowed (that request would end with a clean error).
#![no_main]
use libfuzzer_sys::fuzz_target;
use llama_gguf_inference::api::chat::ChatCompletionRequest;
use llama_gguf_inference::api::json::parse_json;
use llama_gguf_inference::config::{ConstraintsConfig, LimitsConfig};
use llama_gguf_inference::engine::constraint::{
    ApproximateTokEnv, CompileError, ConstraintCompiler, ConstraintError, TokenizerEnv,
};
use std::sync::OnceLock;

/// Tokens fed to a compiled constraint per input.
const WALK: usize = 48;

fn compiler() -> &'static ConstraintCompiler {
    static C: OnceLock<ConstraintCompiler> = OnceLock::new();
    C.get_or_init(|| {
        let env = ApproximateTokEnv::single_byte_env();
        ConstraintCompiler::new(&env, ConstraintsConfig::default().settings()).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let (json, steer) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let Ok(json) = std::str::from_utf8(json) else {
        return;
    };
    let body = if which % 2 == 0 {
        format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],"response_format":{{"type":"json_schema","json_schema":{{"name":"f","schema":{json}}}}}}}"#
        )
    } else {
        format!(r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],"tools":{json}}}"#)
    };
    let Ok(request) = parse_json::<ChatCompletionRequest>(body.as_bytes()) else {
        return;
    };
    let generation = match request.validate(&LimitsConfig::default()) {
        Ok(g) => g,
        Err(e) => {
            assert_eq!(e.status.as_u16(), 400, "{}", e.message);
            return;
        }
    };
    let Some(schema) = generation.json_schema else {
        return;
    };
    let mut constraint = match compiler().compile_blocking(&schema.schema) {
        Ok(c) => c,
        Err(CompileError::Refused(_) | CompileError::AcceptsNothing) => return,
        Err(e) => panic!("a blocking compile cannot {e:?}"),
    };
    let eos = compiler_eos();
    for i in 0..WALK {
        let mask = match constraint.mask() {
            Ok(m) => m,
            Err(ConstraintError::TooExpensive) => return,
            Err(ConstraintError::Dead) => panic!("dead after {i} allowed tokens"),
        };
        let allowed = mask.to_list();
        assert!(!allowed.is_empty());
        let pick = steer.get(i).copied().unwrap_or(0) as usize;
        let token = allowed[pick % allowed.len()];
        if token == eos {
            return;
        }
        match constraint.consume(token) {
            Ok(()) => {}
            Err(ConstraintError::TooExpensive) => return,
            Err(ConstraintError::Dead) => panic!("an allowed token was refused after {i}"),
        }
    }
});

/// The approximate vocabulary's end-of-sequence token (its last).
fn compiler_eos() -> u32 {
    ApproximateTokEnv::single_byte().tok_trie().eos_token()
}
