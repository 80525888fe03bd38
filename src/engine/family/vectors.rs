//! The test driver every family's vectors run through: real-looking model output, written
//! from the family's documented format, parsed and compared with the calls and text a
//! client must get; and the family's call grammar, compiled by the real llguidance over a
//! byte-level vocabulary, accepting the family's own call text.

use super::{parse, CallGrammar, Declared, Family, ToolSyntax};
use crate::engine::constraint::{ApproximateTokEnv, ConstraintCompiler};
use serde_json::{json, Value};

/// One output and what a client gets from it.
pub struct Vector {
    pub name: &'static str,
    pub text: &'static str,
    pub content: &'static str,
    /// (function, arguments as compact JSON).
    pub calls: &'static [(&'static str, &'static str)],
}

/// The tools the vectors declare: a string parameter and an integer one.
pub fn functions() -> Vec<(String, Value)> {
    vec![
        (
            "get_weather".into(),
            json!({"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}),
        ),
        (
            "add".into(),
            json!({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                   "required": ["a"]}),
        ),
    ]
}

/// Every vector parses as written, and `call` (what follows the family's opener in a call
/// of `get_weather` for Paris, up to its closer) is accepted whole by the family's call
/// grammar and parses back, after the opener, as that call.
pub fn check(f: &'static Family, call: &str, vectors: &[Vector]) {
    let syntax = ToolSyntax(f);
    let fns = functions();
    for v in vectors {
        let got = parse(syntax, v.text, &Declared(&fns));
        let calls: Vec<(String, String)> = v
            .calls
            .iter()
            .map(|(n, a)| (n.to_string(), a.to_string()))
            .collect();
        assert_eq!(
            (got.content.as_str(), &got.calls),
            (v.content, &calls),
            "{}: vector {:?}",
            f.name,
            v.name
        );
    }
    // The grammar accepts the family's own call text, to its end.
    let env = ApproximateTokEnv::single_byte_env();
    let settings = crate::config::ConstraintsConfig::default().settings();
    let compiler = ConstraintCompiler::new(&env, settings).unwrap();
    let grammar = syntax.grammar(&fns, 2, &|_| None);
    let mut c = compiler
        .compile_call_blocking(&grammar)
        .unwrap_or_else(|e| panic!("{}: {e:?}\n{grammar:?}", f.name));
    c.consume_text(call)
        .unwrap_or_else(|e| panic!("{}: grammar refuses {call:?}: {e:?}\n{grammar:?}", f.name));
    assert!(c.is_complete(), "{}: {call:?} is not a whole call", f.name);
    let whole = format!("{}{call}{}", f.opener, f.closer);
    let back = parse(syntax, &whole, &Declared(&fns));
    assert_eq!(
        back.calls,
        vec![("get_weather".to_string(), r#"{"city":"Paris"}"#.to_string())],
        "{}: {whole:?}",
        f.name
    );
    assert_eq!(back.content, "", "{}: {whole:?}", f.name);
    if let CallGrammar::Lark(g) = &grammar {
        // Client names are quoted literals, never grammar.
        assert!(g.contains("\"get_weather\""), "{g}");
    }
}
