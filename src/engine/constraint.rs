//! Constrained decoding in Rust: a JSON Schema (structured output, tool calls) becomes an
//! llguidance matcher that says, before every sampled token, which tokens may come next.
//!
//! SECURITY / robustness — what this module defends (issue 15):
//! - No client-shaped grammar reaches C or C++ code. llama.cpp's GBNF path
//!   (`json_schema_to_grammar`, the grammar parser and sampler) could abort the process
//!   (`GGML_ABORT`, an uncaught C++ exception) or loop on a hostile schema; llguidance is
//!   safe Rust, catches its own panics, and reports every failure as an error value.
//! - Compilation is bounded three ways: `[constraints]` fuel and size limits inside
//!   llguidance (deterministic), a deadline on the wall clock, and a semaphore on how many
//!   compile at once. It runs on tokio's blocking pool, never on the engine thread.
//! - A schema that compiles must accept some output: the first token mask is computed
//!   at compile time and must allow at least one token, or the request is refused.
//! - Every mask in generation has lexer fuel and Earley-item limits; its wall time is
//!   measured, and a mask over `constraints.mask_budget_ms` ends that request (only that
//!   one) with a clean error. A mask that allows nothing, a token the matcher refuses, or
//!   any llguidance error ends that request the same way; the engine goes on.
//! - Errors never carry the schema's text to the log: llguidance's verbose errors (which
//!   include the grammar and the tokens so far) are off and its own logging is silenced.

use super::family::CallGrammar;
use llguidance::api::{ParserLimits, TopLevelGrammar};
use llguidance::{Matcher, ParserFactory};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use toktrie::{SimpleVob, TokEnv};

pub use toktrie::{ApproximateTokEnv, TokenizerEnv};

/// The operator's constraint limits (`[constraints]`), resolved once at start-up.
#[derive(Debug, Clone)]
pub struct ConstraintSettings {
    /// Longest one schema may take to compile (wall clock, on the blocking pool).
    pub compile_timeout: Duration,
    /// Schemas compiling at the same time, server-wide.
    pub max_concurrent_compiles: usize,
    /// Longest one token mask may take; beyond it the request ends.
    pub mask_budget: Duration,
    /// llguidance's own limits (fuel, items, lexer states, grammar size).
    pub parser: ParserLimits,
}

/// Why a schema was refused before generation. Messages are for the client who sent the
/// schema; they are never logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompileError {
    /// llguidance refused the schema (unsupported, inconsistent, or over a limit).
    Refused(String),
    /// The schema compiled but no output can satisfy it.
    AcceptsNothing,
    /// Compilation took longer than `constraints.compile_timeout_ms`.
    Timeout,
    /// Every compile slot stayed busy for the whole deadline (server overload, not the
    /// client's fault: 503).
    Busy,
}

/// Why a constraint ended its request during generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConstraintError {
    /// No token can continue the output, or the matcher refused the sampled token.
    Dead,
    /// One mask took longer than `constraints.mask_budget_ms`, or ran out of fuel.
    TooExpensive,
}

/// Shared by every request: the token trie of the model's vocabulary (built once at
/// load) and the limits. Cheap to share behind an `Arc`.
pub struct ConstraintCompiler {
    factory: ParserFactory,
    settings: ConstraintSettings,
    slots: Arc<tokio::sync::Semaphore>,
}

impl ConstraintCompiler {
    /// A compiler for the vocabulary in `tok_env` (see `engine::llama` for the model's;
    /// tests and fuzzing use an approximate byte-level one).
    pub fn new(tok_env: &TokEnv, settings: ConstraintSettings) -> Result<Self, String> {
        let mut factory = ParserFactory::new_simple(tok_env)
            .map_err(|e| format!("cannot prepare constrained decoding: {e}"))?;
        // SECURITY: nothing from llguidance on stderr (it would bypass tracing and could
        // print client text), and errors without the grammar or the tokens so far.
        factory.quiet();
        let mut limits = settings.parser.clone();
        limits.verbose_errors = false;
        *factory.limits_mut() = limits;
        Ok(Self {
            factory,
            slots: Arc::new(tokio::sync::Semaphore::new(
                settings.max_concurrent_compiles.max(1),
            )),
            settings,
        })
    }

    /// The model's special token whose text is `marker` (e.g. `<|tool_call_begin|>`).
    pub fn special_token(&self, marker: &str) -> Option<u32> {
        self.factory.tok_env().tok_trie().get_special_token(marker)
    }

    pub fn settings(&self) -> &ConstraintSettings {
        &self.settings
    }

    /// Compile on the calling thread (the blocking pool, a test, or the fuzzer).
    pub fn compile_blocking(&self, schema: &Value) -> Result<Constraint, CompileError> {
        self.compile_grammar(TopLevelGrammar::from_json_schema(as_enforced(schema)))
    }

    /// Compile a model family's call grammar (`engine::family`): a JSON Schema, or a Lark
    /// grammar whose JSON parts are `%json` schemas already in `enforced` form.
    pub fn compile_call_blocking(&self, call: &CallGrammar) -> Result<Constraint, CompileError> {
        match call {
            CallGrammar::Schema(schema) => self.compile_blocking(schema),
            CallGrammar::Lark(lark) => {
                self.compile_grammar(TopLevelGrammar::from_lark(lark.clone()))
            }
        }
    }

    fn compile_grammar(&self, grammar: TopLevelGrammar) -> Result<Constraint, CompileError> {
        let started = Instant::now();
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|e| CompileError::Refused(client_message(&e.to_string())))?;
        let mut matcher = Matcher::new(Ok(parser));
        // SECURITY: the constraint must accept some output. A live first mask means some
        // token starts a string the grammar can still complete (llguidance's lexer and
        // parser only allow viable prefixes).
        let first = matcher
            .compute_mask()
            .map_err(|e| CompileError::Refused(client_message(&e.to_string())))?;
        if first.is_zero() {
            return Err(CompileError::AcceptsNothing);
        }
        Ok(Constraint {
            matcher: Box::new(matcher),
            mask_budget: self.settings.mask_budget,
            compile_time: started.elapsed(),
            mask_micros: Vec::new(),
        })
    }

    /// Compile off the async threads: wait for a slot, then compile on the blocking pool,
    /// both within `compile_timeout`. A compile that overruns keeps its slot until it
    /// finishes (llguidance's fuel bounds that), so overruns cannot pile up.
    pub async fn compile(self: &Arc<Self>, schema: Value) -> Result<Constraint, CompileError> {
        self.compile_call(CallGrammar::Schema(schema)).await
    }

    /// `compile` for a model family's call grammar.
    pub async fn compile_call(
        self: &Arc<Self>,
        grammar: CallGrammar,
    ) -> Result<Constraint, CompileError> {
        let deadline = self.settings.compile_timeout;
        let permit = match tokio::time::timeout(deadline, self.slots.clone().acquire_owned()).await
        {
            Ok(Ok(p)) => p,
            _ => return Err(CompileError::Busy),
        };
        let this = self.clone();
        let job = tokio::task::spawn_blocking(move || {
            let out = this.compile_call_blocking(&grammar);
            drop(permit);
            out
        });
        match tokio::time::timeout(deadline, job).await {
            Ok(Ok(result)) => result,
            // The compile panicked (llguidance catches its own; this is belt and braces).
            Ok(Err(_)) => Err(CompileError::Refused(
                "The schema could not be compiled".into(),
            )),
            Err(_) => Err(CompileError::Timeout),
        }
    }
}

/// One request's constraint: the matcher and its measurements.
pub struct Constraint {
    /// Boxed: a matcher is large, and requests move through queues by value.
    matcher: Box<Matcher>,
    mask_budget: Duration,
    compile_time: Duration,
    /// Wall time of every mask computed in generation, in microseconds (bounded by the
    /// request's completion budget).
    mask_micros: Vec<u32>,
}

impl Constraint {
    /// An independent copy for another choice of the same request (`n` > 1).
    pub fn fork(&self) -> Self {
        Self {
            matcher: Box::new(self.matcher.deep_clone()),
            mask_budget: self.mask_budget,
            compile_time: self.compile_time,
            mask_micros: Vec::new(),
        }
    }

    /// Which tokens may come next (the EOS tokens once the output is complete). Never an
    /// empty mask: that is `Dead`.
    pub fn mask(&mut self) -> Result<SimpleVob, ConstraintError> {
        #[cfg(feature = "test-hooks")]
        if test_dead_after().is_some_and(|n| self.mask_micros.len() >= n) {
            return Err(ConstraintError::Dead);
        }
        let started = Instant::now();
        let mask = self.matcher.compute_mask_or_eos();
        let took = started.elapsed();
        self.mask_micros
            .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
        let mask = mask.map_err(|e| classify(&e.to_string()))?;
        if took > self.mask_budget {
            return Err(ConstraintError::TooExpensive);
        }
        if mask.is_zero() {
            return Err(ConstraintError::Dead);
        }
        Ok(mask)
    }

    /// Advance past a sampled token; an error means the matcher refused it.
    pub fn consume(&mut self, token: u32) -> Result<(), ConstraintError> {
        if self.matcher.is_stopped() {
            // Complete: only EOS was allowed, and EOS ends the request before this.
            return Err(ConstraintError::Dead);
        }
        self.matcher
            .consume_token(token)
            .map_err(|e| classify(&e.to_string()))
    }

    /// The output is one whole value: nothing but the end may follow (a native tool call
    /// is complete, and the engine writes its closer).
    pub fn is_complete(&mut self) -> bool {
        self.matcher.is_stopped() || self.matcher.is_accepting().unwrap_or(false)
    }

    /// Advance past text the model wrote before the constraint started (the start of a
    /// call in the same token as its trigger), tokenized with the constraint's own
    /// vocabulary; an error means the text cannot start a valid value.
    pub fn consume_text(&mut self, text: &str) -> Result<(), ConstraintError> {
        if text.is_empty() {
            return Ok(());
        }
        let env = self.matcher.tok_env().map_err(|_| ConstraintError::Dead)?;
        let tokens = env.tokenize_bytes(text.as_bytes());
        self.matcher
            .consume_tokens(&tokens)
            .map_err(|e| classify(&e.to_string()))
    }

    /// Compile time and mask-time percentiles, for the request's log line.
    pub fn report(&self) -> ConstraintReport {
        let mut sorted = self.mask_micros.clone();
        sorted.sort_unstable();
        let at = |q: f64| -> u32 {
            if sorted.is_empty() {
                return 0;
            }
            let i = ((sorted.len() - 1) as f64 * q).round() as usize;
            sorted.get(i).copied().unwrap_or(0)
        };
        ConstraintReport {
            compile_us: u64::try_from(self.compile_time.as_micros()).unwrap_or(u64::MAX),
            masks: sorted.len(),
            mask_p50_us: at(0.5),
            mask_p99_us: at(0.99),
            mask_max_us: sorted.last().copied().unwrap_or(0),
        }
    }
}

/// An llguidance failure: its lexer and parser limits (fuel, items) report themselves as
/// "lexer error" / "parser error"; anything else means no token can continue.
fn classify(m: &str) -> ConstraintError {
    if m.contains("lexer error") || m.contains("parser error") || m.contains("fuel") {
        ConstraintError::TooExpensive
    } else {
        ConstraintError::Dead
    }
}

/// Test hook (never in a release): `LGI_TEST_CONSTRAINT_DEAD_AFTER=N` makes every
/// constraint report a dead end after N masks, so the integration tests can watch one
/// request end mid-generation while the others go on.
#[cfg(feature = "test-hooks")]
fn test_dead_after() -> Option<usize> {
    static AFTER: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *AFTER.get_or_init(|| {
        std::env::var("LGI_TEST_CONSTRAINT_DEAD_AFTER")
            .ok()
            .and_then(|v| v.parse().ok())
    })
}

/// What a finished request's log line says about its constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConstraintReport {
    pub compile_us: u64,
    pub masks: usize,
    pub mask_p50_us: u32,
    pub mask_p99_us: u32,
    pub mask_max_us: u32,
}

/// The schema as this server enforces it (the behaviour the API documented under
/// llama.cpp's converter, kept):
/// - compact JSON (no free whitespace between tokens): a model cannot spend its budget
///   on indentation, and the output is what OpenAI's strict mode returns;
/// - an object schema that lists `properties` and says nothing of
///   `additionalProperties` allows no other keys (llama.cpp's converter and OpenAI's
///   strict mode both read it so); schemas directly under `allOf` are left open, since
///   closing each branch would forbid the others' properties.
pub fn as_enforced(schema: &Value) -> Value {
    let mut s = schema.clone();
    close_objects(&mut s, false);
    if let Value::Object(root) = &mut s {
        root.insert(
            "x-guidance".into(),
            serde_json::json!({"whitespace_flexible": false}),
        );
    }
    s
}

fn close_objects(v: &mut Value, under_all_of: bool) {
    let Value::Object(o) = v else {
        return;
    };
    if !under_all_of && o.contains_key("properties") && !o.contains_key("additionalProperties") {
        o.insert("additionalProperties".into(), Value::Bool(false));
    }
    for (key, sub) in o.iter_mut() {
        match key.as_str() {
            "properties" | "$defs" | "definitions" => {
                if let Value::Object(m) = sub {
                    m.values_mut().for_each(|x| close_objects(x, false));
                }
            }
            "items" | "additionalProperties" => close_objects(sub, false),
            "prefixItems" | "anyOf" | "oneOf" | "allOf" => {
                if let Value::Array(l) = sub {
                    let all_of = key == "allOf";
                    l.iter_mut().for_each(|x| close_objects(x, all_of));
                }
            }
            _ => {}
        }
    }
}

/// Longest compile message passed back to the client.
/// llguidance's refusal in this server's words, for the 400 it becomes.
/// SECURITY: the compiler's own text is never shown: it names internals (grammar
/// states, `<non-verbose/>` placeholders) and, for a panic it caught, a backtrace with
/// file paths. Known causes get a sentence of their own; anything else one generic
/// sentence. The API layer adds where (the `param` path); `api::schema` refuses the
/// common causes earlier, naming the path inside the schema.
fn client_message(raw: &str) -> String {
    const KNOWN: &[(&str, &str)] = &[
        (
            "NoExtensionBias",
            "its references never reach a schema that describes a value (a `$ref` cycle)",
        ),
        (
            "integer range",
            "an integer range the constraint cannot be built for (keep bounds within 2^53 - 1)",
        ),
        ("Infinite numbers", "a bound is not a finite number"),
        ("Definition not found", "a `$ref` names no definition"),
        ("Reference segment", "a `$ref` names no definition"),
        ("schema too large", "it is too large to enforce"),
        (
            "intersection stack level",
            "its `allOf` branches nest too deeply to enforce",
        ),
        ("regex", "a `pattern` this server cannot enforce"),
        ("multipleOf", "a `multipleOf` this server cannot enforce"),
    ];
    match KNOWN.iter().find(|(needle, _)| raw.contains(needle)) {
        Some((_, why)) => why.to_string(),
        None => "it cannot be turned into a constraint on this server; simplify it".into(),
    }
}

/// The limits llguidance uses by default, with the reasons the operator reads in
/// config/reference.toml; `config` maps `[constraints]` onto them.
pub fn parser_limits(
    max_items_in_row: usize,
    initial_lexer_fuel: u64,
    step_lexer_fuel: u64,
    step_max_items: usize,
    max_lexer_states: usize,
    max_grammar_size: usize,
) -> ParserLimits {
    ParserLimits {
        max_items_in_row,
        initial_lexer_fuel,
        step_lexer_fuel,
        step_max_items,
        max_lexer_states,
        max_grammar_size,
        precompute_large_lexemes: true,
        verbose_errors: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compiler() -> Arc<ConstraintCompiler> {
        let env = ApproximateTokEnv::single_byte_env();
        let settings = ConstraintSettings {
            compile_timeout: Duration::from_secs(5),
            max_concurrent_compiles: 2,
            mask_budget: Duration::from_secs(5),
            parser: ParserLimits::default(),
        };
        Arc::new(ConstraintCompiler::new(&env, settings).unwrap())
    }

    /// Drive `text` byte by byte (the approximate vocabulary is single bytes) through the
    /// constraint: every byte must be allowed by the mask in front of it.
    fn accepts(c: &mut Constraint, text: &str) -> bool {
        for b in text.bytes() {
            match c.mask() {
                Ok(m) if m.is_allowed(u32::from(b)) => {}
                _ => return false,
            }
            if c.consume(u32::from(b)).is_err() {
                return false;
            }
        }
        true
    }

    #[test]
    fn a_call_is_complete_at_its_closing_brace_and_may_start_from_text() {
        let c = compiler();
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}},
                            "required": ["a"]});
        let mut k = c.compile_blocking(&schema).unwrap();
        k.consume_text("{\"a\"").unwrap();
        assert!(!k.is_complete());
        assert!(accepts(&mut k, ":12"));
        assert!(!k.is_complete(), "a number may go on");
        assert!(accepts(&mut k, "}"));
        assert!(k.is_complete());
        let mut k = c.compile_blocking(&schema).unwrap();
        assert!(
            k.consume_text("[").is_err(),
            "text that cannot start the value"
        );
    }

    #[test]
    fn a_schema_compiles_and_only_valid_output_passes() {
        let c = compiler();
        let schema = json!({"type": "object", "properties": {"age": {"type": "integer", "minimum": 1, "maximum": 9}}, "required": ["age"], "additionalProperties": false});
        let mut ok = c.compile_blocking(&schema).unwrap();
        assert!(accepts(&mut ok, r#"{"age":7}"#));
        // Complete: only EOS (the last token of the approximate vocabulary) is allowed.
        let end = ok.mask().unwrap();
        assert_eq!(end.num_set(), 1);
        let mut bad = c.compile_blocking(&schema).unwrap();
        assert!(!accepts(&mut bad, r#"{"age":12}"#));
        let mut other = c.compile_blocking(&schema).unwrap();
        assert!(!accepts(&mut other, r#"{"name": "x"}"#));
        let r = ok.report();
        assert_eq!(r.masks, r#"{"age":7}"#.len() + 1);
        assert!(r.mask_p50_us <= r.mask_p99_us && r.mask_p99_us <= r.mask_max_us);
    }

    #[test]
    fn contradictions_llguidance_sees_are_refused_not_run() {
        let c = compiler();
        for schema in [
            json!({"type": "integer", "minimum": 5, "maximum": 3}),
            json!({"type": "string", "minLength": 5, "maxLength": 2}),
            json!({"type": "array", "minItems": 5, "maxItems": 2}),
            json!({"allOf": [{"type": "string"}, {"type": "integer"}]}),
        ] {
            let e = c.compile_blocking(&schema).err();
            assert!(
                matches!(
                    e,
                    Some(CompileError::Refused(_) | CompileError::AcceptsNothing)
                ),
                "{schema}: {e:?}"
            );
        }
    }

    #[test]
    fn listed_properties_close_the_object_and_json_is_compact() {
        let c = compiler();
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        let mut k = c.compile_blocking(&schema).unwrap();
        assert!(accepts(&mut k, r#"{"a":1}"#));
        let mut extra = c.compile_blocking(&schema).unwrap();
        assert!(!accepts(&mut extra, r#"{"a":1,"b""#));
        let mut spaced = c.compile_blocking(&schema).unwrap();
        assert!(!accepts(&mut spaced, r#"{ "#));
        // Said explicitly, extra keys stay allowed; a bare object stays open.
        let open = json!({"type": "object", "properties": {"a": {}}, "additionalProperties": true});
        assert!(accepts(
            &mut c.compile_blocking(&open).unwrap(),
            r#"{"b":1"#
        ));
        let bare = json!({"type": "object"});
        assert!(accepts(
            &mut c.compile_blocking(&bare).unwrap(),
            r#"{"b":1"#
        ));
    }

    #[test]
    fn a_fork_is_independent() {
        let c = compiler();
        let mut a = c.compile_blocking(&json!({"enum": ["yes", "no"]})).unwrap();
        let mut b = a.fork();
        assert!(accepts(&mut a, r#""yes""#));
        assert!(accepts(&mut b, r#""no""#));
    }

    #[test]
    fn an_overrun_mask_budget_ends_the_request() {
        let env = ApproximateTokEnv::single_byte_env();
        let settings = ConstraintSettings {
            compile_timeout: Duration::from_secs(5),
            max_concurrent_compiles: 1,
            mask_budget: Duration::ZERO,
            parser: ParserLimits::default(),
        };
        let c = ConstraintCompiler::new(&env, settings).unwrap();
        let mut k = c.compile_blocking(&json!({"type": "string"})).unwrap();
        assert_eq!(k.mask().err(), Some(ConstraintError::TooExpensive));
    }

    #[test]
    fn step_fuel_exhaustion_is_an_error_not_a_stall() {
        let env = ApproximateTokEnv::single_byte_env();
        let settings = ConstraintSettings {
            compile_timeout: Duration::from_secs(5),
            max_concurrent_compiles: 1,
            mask_budget: Duration::from_secs(5),
            parser: parser_limits(2000, 1_000_000, 1, 1, 250_000, 500_000),
        };
        let c = ConstraintCompiler::new(&env, settings).unwrap();
        // With one unit of fuel even the first mask cannot be computed: refused up front.
        // The first step (`{`, forced) is cheap; the next one runs out of fuel: an error
        // for this request, at once, not a long computation.
        let mut k = c.compile_blocking(&json!({"type": "object"})).unwrap();
        assert!(k.mask().unwrap().is_allowed(u32::from(b'{')));
        let step = k
            .consume(u32::from(b'{'))
            .and_then(|()| k.mask().map(|_| ()));
        assert_eq!(step.err(), Some(ConstraintError::TooExpensive));
        assert!(k.mask().is_err(), "a dead constraint stays dead");
    }

    #[tokio::test]
    async fn async_compile_uses_the_blocking_pool_and_waits_for_a_slot_within_the_deadline() {
        let env = ApproximateTokEnv::single_byte_env();
        let c = Arc::new(
            ConstraintCompiler::new(
                &env,
                ConstraintSettings {
                    compile_timeout: Duration::from_millis(100),
                    max_concurrent_compiles: 1,
                    mask_budget: Duration::from_secs(1),
                    parser: ParserLimits::default(),
                },
            )
            .unwrap(),
        );
        assert!(c.compile(json!({"type": "boolean"})).await.is_ok());
        // Every slot busy for the whole deadline: Busy (a 503), not an unbounded wait.
        let held = c.slots.clone().acquire_owned().await.unwrap();
        let e = c.compile(json!({"type": "boolean"})).await.err();
        assert_eq!(e, Some(CompileError::Busy));
        drop(held);
        assert!(c.compile(json!({"type": "boolean"})).await.is_ok());
    }

    #[test]
    fn compiler_text_never_reaches_the_client() {
        // The two refusals issue 31 found, as llguidance words them (a `$ref` cycle, an
        // integer bound at -2^63; the second is a caught panic in a debug build).
        let c = compiler();
        let cycle = json!({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"});
        match c.compile_blocking(&cycle).err() {
            Some(CompileError::Refused(m)) => assert_eq!(
                m,
                "its references never reach a schema that describes a value (a `$ref` cycle)"
            ),
            other => panic!("{other:?}"),
        }
        let low = json!({"type": "integer", "maximum": i64::MIN});
        match c.compile_blocking(&low).err() {
            Some(CompileError::Refused(m)) => {
                assert!(
                    !m.contains("panic") && !m.contains("Failed") && !m.contains("min="),
                    "{m}"
                );
            }
            other => panic!("{other:?}"),
        }
        // Unknown causes: one generic sentence, nothing of the original.
        let m = client_message("NoSuchThing?<non-verbose/> at src/x.rs:1");
        assert_eq!(
            m,
            "it cannot be turned into a constraint on this server; simplify it"
        );
    }
}
