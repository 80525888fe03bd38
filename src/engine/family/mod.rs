//! Model families' own tool-call syntax: the registry. Each family is one file in this
//! folder holding one [`Family`] value — how its chat template is recognised, how a
//! call opens and closes, how the function and its arguments are written — and the
//! vectors of real-looking output it is tested with. Everything a family needs is built
//! from that value here, once: the parser of finished answers ([`parse`]), the grammar
//! the engine constrains a call with ([`Family::grammar`]), the triggers `ToolRun`
//! watches free text for, and the README's family table ([`table`]). Adding a family is
//! adding one file and one line in [`FAMILIES`].
//!
//! The shapes a call can take ([`Body`]):
//! - a JSON object naming the function (`{"name": …, "arguments": {…}}`), alone or in a
//!   JSON list (Hermes, Llama 3, Mistral v3, Command R7B, …);
//! - the function's name, a separator, then its arguments as a JSON object (Mistral
//!   `[ARGS]`, DeepSeek, Kimi K2, harmony, functionary);
//! - the function's name, then one XML-like element per argument (Qwen3-Coder, GLM,
//!   MiniMax M2, DeepSeek DSML, Seed-OSS, …).
//!
//! SECURITY / robustness: pure Rust over text the model produced; the parser never
//! panics on any text (fuzzed: `tool_calls` target, every family). A call that is
//! malformed leaves the answer as text (nothing unconstrained becomes a call); a call cut
//! off by the end of the output is dropped with everything after it, so a family's
//! markers never reach the client as the answer. The texts the engine forces (opener,
//! closer) and the grammar's literals are constants of the family; the only client text
//! in a grammar is a declared function's name and parameter names, written as quoted
//! literals (`lark_str`), and its parameter schemas, which the schema checks vetted.

mod apertus;
mod apriel;
mod command_r7b;
mod command_r_plus;
mod deepseek_dsml;
mod deepseek_r1;
mod deepseek_v3;
mod firefunction;
mod functionary_v31;
mod functionary_v32;
mod gemma4;
mod gigachat;
mod glm;
mod granite;
mod harmony;
mod hermes;
mod hy3;
mod kimi_k2;
mod kimi_k3;
mod lfm2;
mod llama3;
mod minicpm;
mod minimax_m1;
mod minimax_m2;
mod minimax_m3;
mod mistral;
mod mistral_args;
mod muse;
mod nemotron;
pub mod progress;
mod python;
mod qwen3_coder;
mod seed_oss;
mod solar;

#[cfg(test)]
mod vectors;

use serde_json::{json, Value};

/// Every family, most specific first: detection takes the first that matches (Qwen3-Coder
/// before Hermes, whose `<tool_call>` it shares).
pub static FAMILIES: &[&Family] = &[
    &harmony::FAMILY,
    &qwen3_coder::FAMILY,
    &seed_oss::FAMILY,
    &glm::FAMILY,
    &hy3::FAMILY,
    &minimax_m3::FAMILY,
    &minimax_m2::FAMILY,
    &muse::FAMILY,
    &deepseek_dsml::FAMILY_V32,
    &deepseek_dsml::FAMILY_V4,
    &deepseek_v3::FAMILY,
    &deepseek_r1::FAMILY,
    &kimi_k2::FAMILY,
    &kimi_k3::FAMILY,
    &mistral_args::FAMILY,
    &mistral::FAMILY,
    &command_r7b::FAMILY,
    &command_r_plus::FAMILY,
    &nemotron::FAMILY,
    &apriel::FAMILY,
    &minimax_m1::FAMILY,
    &granite::FAMILY,
    &functionary_v31::FAMILY,
    &functionary_v32::FAMILY,
    &gemma4::FAMILY,
    &lfm2::FAMILY,
    &apertus::FAMILY,
    &firefunction::FAMILY,
    &solar::FAMILY,
    &gigachat::FAMILY,
    &gigachat::FAMILY_V3,
    &minicpm::FAMILY,
    &hermes::FAMILY,
    &llama3::FAMILY,
];

/// Most calls one answer may make.
pub const MAX_CALLS: u32 = 8;

/// One family's tool-call syntax.
#[derive(Debug)]
pub struct Family {
    /// `model.tool_format` names it so.
    pub name: &'static str,
    /// The models whose templates use it (README).
    pub models: &'static str,
    /// Recognised when the template, rendering the sample conversation's call, writes
    /// every one of these (empty: never from the render)…
    pub renders: &'static [&'static str],
    /// …or, for templates that render no call of their own, when its source holds every
    /// one of these (empty: never from the source).
    pub source: &'static [&'static str],
    /// What the engine writes to open a call when one is required.
    pub opener: &'static str,
    /// Texts in the model's free output that open a call (the constraint starts after).
    pub triggers: &'static [&'static str],
    /// A JSON object at the very start of the answer is a call (Llama 3).
    pub json_at_start: bool,
    /// Where each call starts, for the parser (the texts in `triggers` or their tails).
    pub call_open: &'static [&'static str],
    /// Markers around a group of calls, dropped from the text (e.g. DeepSeek's
    /// `<｜tool▁calls▁begin｜>`), and other family markers that are never answer text.
    pub noise: &'static [&'static str],
    pub body: Body,
    /// What the engine writes after the constrained part of a call (the parser skips it).
    pub closer: &'static str,
    /// Several calls come as several opened blocks; else one value holds every call (a
    /// list) or the answer makes one call.
    pub repeats: bool,
    /// The family's thinking opener (README only; `engine::reasoning` holds the formats
    /// it splits, chosen from the template on their own).
    pub reasoning: &'static str,
}

/// How a call's function and arguments are written after its opener.
#[derive(Debug, Clone, Copy)]
pub enum Body {
    /// A JSON object with the function's name under `name` and its arguments (an object,
    /// or a JSON string holding one) under `args`; `id`: an optional call-id key the
    /// model writes first; `list`: the calls come as one JSON list.
    Object {
        name: &'static str,
        args: &'static str,
        id: Option<&'static str>,
        list: bool,
    },
    /// A JSON list of objects, each with one key: the function's name, its value the
    /// arguments (`[{"get_weather": {"city": "Paris"}}]`, Apertus).
    Keyed,
    /// The name, then `sep`, then the arguments as a JSON object; `pre`: what comes
    /// before the name (Solar Open writes a call id there).
    Named { pre: Option<Sep>, sep: Sep },
    /// The name, then the arguments as `{key:value,…}` with bare keys and strings
    /// between `quote` marks (Gemma 4: `get_weather{city:<|"|>Paris<|"|>}`), keys in
    /// sorted order as the family's template writes them.
    Braced { quote: &'static str },
    /// A Python list of calls: `[NAME(key=value, …), …]` (`python`).
    Pythonic,
    /// The name, then `sep`, then each argument as `param` KEY `key_close` VALUE
    /// `value_close` (then KEY and `>` again when `close_names_key`, as in
    /// `<city>Paris</city>`), and `end` after the last.
    Params {
        sep: Sep,
        param: &'static str,
        key_close: Sep,
        value_close: &'static str,
        close_names_key: bool,
        end: &'static str,
    },
}

/// The most common body: `{"name": …, "arguments": {…}}`.
pub const JSON_CALL: Body = Body::Object {
    name: "name",
    args: "arguments",
    id: None,
    list: false,
};

/// A JSON list of `{"name": …, "arguments": {…}}` calls.
pub const JSON_LIST: Body = Body::Object {
    name: "name",
    args: "arguments",
    id: None,
    list: true,
};

/// A separator the model writes between two parts of a call: the parser skips past the
/// end of `find`; the grammar writes `lark` (a Lark fragment; `{{X}}` is the marker X,
/// the model's special token where it has one).
#[derive(Debug, Clone, Copy)]
pub struct Sep {
    pub find: &'static str,
    pub lark: &'static str,
}

/// Characters that end a function's or parameter's name in the parser.
const NAME_STOP: &[char] = &['<', '>', '"', '\'', ':', '[', '\n', ' ', '(', '{', '|'];

/// A handle on a family (what the rest of the server passes around).
#[derive(Clone, Copy)]
pub struct ToolSyntax(pub &'static Family);

impl PartialEq for ToolSyntax {
    fn eq(&self, other: &Self) -> bool {
        self.0.name == other.0.name
    }
}
impl Eq for ToolSyntax {}

impl std::fmt::Debug for ToolSyntax {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.name)
    }
}

/// The constraint of one call (what follows the opener, up to the closer).
#[derive(Debug, Clone, PartialEq)]
pub enum CallGrammar {
    /// A JSON Schema (object bodies).
    Schema(Value),
    /// A Lark grammar (llguidance's dialect; JSON parts as `%json`).
    Lark(String),
}

impl ToolSyntax {
    pub const HERMES: ToolSyntax = ToolSyntax(&hermes::FAMILY);
    pub const LLAMA3: ToolSyntax = ToolSyntax(&llama3::FAMILY);
    pub const MISTRAL: ToolSyntax = ToolSyntax(&mistral::FAMILY);

    /// The family `model.tool_format` names.
    pub fn named(name: &str) -> Option<Self> {
        FAMILIES
            .iter()
            .find(|f| f.name == name)
            .map(|f| ToolSyntax(f))
    }

    /// The family whose syntax a chat template shows, in how it writes the sample
    /// conversation's tool call (`template::sample_conversation`), else in its text.
    pub fn of_template(source: &str) -> Option<Self> {
        use super::template::{sample_conversation, sample_tools, ChatTemplate};
        let rendered = ChatTemplate::new(source, "", "")
            .and_then(|t| t.render(&sample_conversation(), &sample_tools()))
            .unwrap_or_default();
        Self::detect(source, &rendered)
    }

    /// The family whose syntax a template shows: `rendered` is the template's render of
    /// the sample conversation (with its tool call), `source` its text.
    pub fn detect(source: &str, rendered: &str) -> Option<Self> {
        let all = |hay: &str, needles: &[&str]| {
            !needles.is_empty() && needles.iter().all(|n| hay.contains(n))
        };
        FAMILIES
            .iter()
            .find(|f| all(rendered, f.renders))
            .or_else(|| FAMILIES.iter().find(|f| all(source, f.source)))
            .map(|f| ToolSyntax(f))
    }

    pub fn name(self) -> &'static str {
        self.0.name
    }

    pub fn family(self) -> &'static Family {
        self.0
    }

    pub fn opener(self) -> &'static str {
        self.0.opener
    }

    pub fn closer(self) -> &'static str {
        self.0.closer
    }

    pub fn repeats(self) -> bool {
        self.0.repeats
    }

    /// Where, in free text, the model opens a call: the trigger's byte range in `window`
    /// and whether the trigger text is itself the start of the constrained value.
    /// `at_start`: `window` is the whole answer so far.
    pub fn find_trigger(self, window: &str, at_start: bool) -> Option<(usize, usize, bool)> {
        let found = self
            .0
            .triggers
            .iter()
            .filter_map(|t| window.find(t).map(|at| (at, at + t.len(), false)))
            .min_by_key(|&(at, _, _)| at);
        found.or_else(|| {
            let lead = window.len() - window.trim_start().len();
            (self.0.json_at_start && at_start && window[lead..].starts_with('{'))
                .then_some((lead, lead, true))
        })
    }

    /// Longest trigger text (the free-text window keeps this much minus one).
    pub fn trigger_len(self) -> usize {
        self.0.triggers.iter().map(|t| t.len()).max().unwrap_or(1)
    }

    /// The constraint of one call to one of `functions` (name, parameters schema); a
    /// list body holds up to `max_calls`. `special`: the model's special token for a
    /// marker text, where it has one.
    pub fn grammar(
        self,
        functions: &[(String, Value)],
        max_calls: u32,
        special: &dyn Fn(&str) -> Option<u32>,
    ) -> CallGrammar {
        match self.0.body {
            Body::Object {
                name,
                args,
                id,
                list,
            } => {
                let calls: Vec<Value> = functions
                    .iter()
                    .map(|(f, parameters)| {
                        let mut props = serde_json::Map::new();
                        if let Some(id) = id {
                            props.insert(id.into(), json!({"type": "string", "maxLength": 16}));
                        }
                        props.insert(name.into(), json!({"const": f}));
                        props.insert(args.into(), parameters.clone());
                        json!({"type": "object", "properties": props,
                            "required": [name, args], "additionalProperties": false})
                    })
                    .collect();
                let one = json!({"anyOf": calls});
                CallGrammar::Schema(match list {
                    true => json!({"type": "array", "items": one, "minItems": 1,
                        "maxItems": max_calls.max(1)}),
                    false => one,
                })
            }
            Body::Keyed => {
                let calls: Vec<Value> = functions
                    .iter()
                    .map(|(f, parameters)| {
                        json!({"type": "object", "properties": {f.as_str(): parameters},
                            "required": [f], "additionalProperties": false})
                    })
                    .collect();
                CallGrammar::Schema(json!({"type": "array", "items": {"anyOf": calls},
                    "minItems": 1, "maxItems": max_calls.max(1)}))
            }
            Body::Named { pre, sep } => {
                let sep = markers(sep.lark, special);
                let pre = pre.map_or(String::new(), |p| markers(p.lark, special) + " ");
                CallGrammar::Lark(alternatives(functions, |i, f, params| {
                    format!(
                        "c{i}: {pre}{} {sep} %json {}\n",
                        lark_str(f),
                        super::constraint::as_enforced(params)
                    )
                }))
            }
            Body::Braced { quote } => {
                let q = markers(&format!("{{{{{quote}}}}}"), special);
                let style = ArgList {
                    open: "{",
                    close: "}",
                    assign: ":",
                    string: format!("{q} /[^<]*/ {q}"),
                    boolean: "(\"true\" | \"false\")",
                    sorted: true,
                };
                CallGrammar::Lark(alternatives(functions, |i, f, params| {
                    arg_list_rules(i, f, params, &style)
                }))
            }
            Body::Pythonic => {
                let style = ArgList {
                    open: "(",
                    close: ")",
                    assign: "=",
                    string: "/'([^'\\\\\\n]|\\\\.)*'/".to_string(),
                    boolean: "(\"True\" | \"False\")",
                    sorted: false,
                };
                let mut g = alternatives(functions, |i, f, params| {
                    arg_list_rules(i, f, params, &style)
                });
                // `[call, call, …]`, at most `max_calls` calls.
                g = g.replacen("start:", "call:", 1);
                let mut list = "call".to_string();
                for _ in 1..max_calls.max(1) {
                    list = format!("call (\",\" \" \"? {list})?");
                }
                CallGrammar::Lark(format!("start: \"[\" {list} \"]\"\n{g}"))
            }
            Body::Params {
                sep,
                param,
                key_close,
                value_close,
                close_names_key,
                end,
            } => {
                let sep = markers(sep.lark, special);
                let key_close = markers(key_close.lark, special);
                // A string value is text up to the closer: neither `<` nor the closer's
                // first character (MiniMax M3's begins with `]`).
                let text = match value_close.chars().next() {
                    Some(c) if c != '<' && c.is_ascii_punctuation() => format!("/[^<\\{c}]*/"),
                    _ => "/[^<]*/".to_string(),
                };
                let (param, value_close, end) = (
                    lark_str(param),
                    lark_str(value_close),
                    lark_str(end.trim_start()),
                );
                CallGrammar::Lark(alternatives(functions, |i, f, params| {
                    let mut rule = format!("c{i}: {} {sep}", lark_str(f));
                    let mut defs = String::new();
                    let required = required_keys(params);
                    let props = params.get("properties").and_then(Value::as_object);
                    for (j, (key, schema)) in props.into_iter().flatten().enumerate() {
                        let value = match is_string(schema) {
                            true => text.clone(),
                            false => format!(
                                "\"\\n\"? %json {} \"\\n\"?",
                                super::constraint::as_enforced(schema)
                            ),
                        };
                        let optional = if required.contains(&key.as_str()) {
                            ""
                        } else {
                            "?"
                        };
                        rule.push_str(&format!(" p{i}_{j}{optional}"));
                        let named = match close_names_key {
                            true => format!(" {} \">\"", lark_str(key)),
                            false => String::new(),
                        };
                        defs.push_str(&format!(
                            "p{i}_{j}: {param} {} {key_close} {value} {value_close}{named} \"\\n\"?\n",
                            lark_str(key)
                        ));
                    }
                    format!("{rule} {end}\n{defs}")
                }))
            }
        }
    }
}

/// How a call's arguments are written as a list of `key<assign>value` (Gemma 4's braces,
/// Python's call syntax).
struct ArgList<'a> {
    open: &'a str,
    close: &'a str,
    assign: &'a str,
    /// A string value's Lark fragment.
    string: String,
    /// `true`/`false` in the family's spelling.
    boolean: &'a str,
    /// Keys in sorted order (as Gemma 4's template writes them), else the schema's.
    sorted: bool,
}

/// A call's rules: `NAME` `open`, its parameters each required one once and each optional
/// one at most once, comma-separated, then `close`. `s{i}_{j}_{f}`: the parameters from
/// the j-th on, `f` = 1 while none was written yet (no comma before the next).
fn arg_list_rules(i: usize, f: &str, params: &Value, style: &ArgList<'_>) -> String {
    let required = required_keys(params);
    let mut props: Vec<(&String, &Value)> = params
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.iter().collect())
        .unwrap_or_default();
    if style.sorted {
        props.sort_by(|a, b| a.0.cmp(b.0));
    }
    let n = props.len();
    let start = if n == 0 {
        String::new()
    } else {
        format!(" s{i}_0_1")
    };
    let (open, close, assign) = (
        lark_str(style.open),
        lark_str(style.close),
        lark_str(style.assign),
    );
    let mut g = format!("c{i}: {} {open}{start} {close}\n", lark_str(f));
    for (j, (key, schema)) in props.iter().enumerate() {
        let value = match schema.get("type").and_then(Value::as_str) {
            Some("string") => style.string.clone(),
            Some("boolean") => style.boolean.to_string(),
            _ => format!("%json {}", super::constraint::as_enforced(schema)),
        };
        let next = |first: u8| match j + 1 == n {
            true => String::new(),
            false => format!(" s{i}_{}_{first}", j + 1),
        };
        for first in [0u8, 1] {
            let comma = if first == 1 { "" } else { "\",\" \" \"? " };
            let take = format!("{comma}{} {assign} {value}{}", lark_str(key), next(0));
            let rule = match (required.contains(&key.as_str()), j + 1 == n) {
                (true, _) => take,
                (false, true) => format!("({take})?"),
                (false, false) => format!("{take} |{}", next(first)),
            };
            g.push_str(&format!("s{i}_{j}_{first}: {rule}\n"));
        }
    }
    g
}

/// A parameters schema's required keys.
pub fn required_keys(params: &Value) -> Vec<&str> {
    params
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// `start` as one alternative per function, each rule written by `rule(index, name,
/// parameters)`.
fn alternatives(
    functions: &[(String, Value)],
    rule: impl Fn(usize, &str, &Value) -> String,
) -> String {
    let names: Vec<String> = (0..functions.len()).map(|i| format!("c{i}")).collect();
    let mut g = format!("start: {}\n", names.join(" | "));
    for (i, (f, params)) in functions.iter().enumerate() {
        g.push_str(&rule(i, f, params));
    }
    g
}

/// A Lark string literal for `s` (JSON escaping, which llguidance's Lark reads).
fn lark_str(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// A Lark fragment with its `{{X}}` markers as the special token X (`<[id]>`) where the
/// model has one, else as the literal text X.
fn markers(fragment: &str, special: &dyn Fn(&str) -> Option<u32>) -> String {
    let mut out = String::new();
    let mut rest = fragment;
    while let Some(at) = rest.find("{{") {
        out.push_str(&rest[..at]);
        let Some(end) = rest[at..].find("}}") else {
            break;
        };
        let marker = &rest[at + 2..at + end];
        match special(marker) {
            Some(id) => out.push_str(&format!("<[{id}]>")),
            None => out.push_str(&lark_str(marker)),
        }
        rest = &rest[at + end + 2..];
    }
    out.push_str(rest);
    out
}

/// A parameter whose value is written as bare text (a string schema).
fn is_string(schema: &Value) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("string")
}

/// The parameter schemas of the declared functions, to read XML-like argument values:
/// a string parameter's text is the string; any other is JSON text.
pub trait ParamTypes {
    fn is_string(&self, function: &str, key: &str) -> bool;
}

/// No declared schemas: every value that is valid JSON is read as JSON.
pub struct Untyped;

impl ParamTypes for Untyped {
    fn is_string(&self, _: &str, _: &str) -> bool {
        false
    }
}

/// The declared functions (name, parameters schema).
pub struct Declared<'a>(pub &'a [(String, Value)]);

impl ParamTypes for Declared<'_> {
    fn is_string(&self, function: &str, key: &str) -> bool {
        self.0
            .iter()
            .find(|(f, _)| f == function)
            .is_some_and(|(_, p)| {
                p.get("properties")
                    .and_then(|props| props.get(key))
                    .is_some_and(is_string)
            })
    }
}

/// A finished answer: the text outside calls and the calls made (function name,
/// arguments as JSON text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub content: String,
    pub calls: Vec<(String, String)>,
}

/// What reading one call gave.
enum Read {
    /// The calls (one, or a list's) and the bytes of the body they took.
    Calls(Vec<(String, String)>, usize),
    /// The text ended inside the call.
    Cut(Vec<(String, String)>),
    /// Not a call of this family.
    Malformed,
}

/// Parse a finished answer in `syntax`. A malformed call leaves the whole answer as text,
/// as written (no calls); a call cut off by the end of the text is dropped, with the calls and text
/// before it kept.
pub fn parse(syntax: ToolSyntax, text: &str, types: &dyn ParamTypes) -> Parsed {
    let f = syntax.0;
    // A malformed call: the model's text as it wrote it.
    let as_text = || Parsed {
        content: text.trim().to_string(),
        calls: Vec::new(),
    };
    let (mut content, mut calls) = (String::new(), Vec::new());
    let mut rest = text;
    // Llama 3: the whole answer is one JSON call.
    let lead = text.len() - text.trim_start().len();
    let mut at_start = f.json_at_start && text[lead..].starts_with('{');
    loop {
        let opened = match at_start {
            true => Some((lead, lead)),
            false => find_open(f, rest),
        };
        at_start = false;
        let Some((at, body_at)) = opened else {
            content.push_str(rest);
            break;
        };
        content.push_str(&rest[..at]);
        let body = &rest[body_at..];
        match read_call(f, body, types) {
            Read::Calls(c, used) => {
                if calls.len() + c.len() > MAX_CALLS as usize {
                    return as_text();
                }
                calls.extend(c);
                rest = skip_closer(f, &body[used..]);
            }
            Read::Cut(c) => {
                calls.extend(c.into_iter().take(MAX_CALLS as usize));
                break;
            }
            Read::Malformed => return as_text(),
        }
    }
    Parsed {
        content: clean(f, &content),
        calls,
    }
}

/// The first call opener in `text`: where it starts and where the call's body does (the
/// first listed opener wins at one place: the longer ones are listed first).
fn find_open(f: &Family, text: &str) -> Option<(usize, usize)> {
    f.call_open
        .iter()
        .filter_map(|o| text.find(o).map(|at| (at, at + o.len())))
        .min_by_key(|&(at, _)| at)
}

/// The answer text without the family's markers, trimmed.
fn clean(f: &Family, text: &str) -> String {
    let mut t = text.to_string();
    for n in f.noise {
        t = t.replace(n, "");
    }
    t.trim().to_string()
}

/// Past the closer the engine or the model wrote after a call (whitespace before it
/// allowed); nothing when the text ends inside the closer (the engine's closer cut by
/// `max_tokens` is no answer text); the rest unchanged when it is not there.
fn skip_closer<'a>(f: &Family, rest: &'a str) -> &'a str {
    let closer = f.closer.trim();
    let trimmed = rest.trim_start();
    if closer.is_empty() {
        return rest;
    }
    match trimmed.strip_prefix(closer) {
        Some(after) => after,
        None if !trimmed.is_empty() && closer.starts_with(trimmed) => "",
        None => rest,
    }
}

fn read_call(f: &Family, body: &str, types: &dyn ParamTypes) -> Read {
    match f.body {
        Body::Object {
            name,
            args,
            list: false,
            ..
        } => {
            // One object, or several in a row (one block holding a call per line).
            let mut calls = Vec::new();
            let mut used = 0;
            loop {
                let rest = &body[used..];
                let lead = rest.len() - rest.trim_start().len();
                if !rest[lead..].starts_with('{') {
                    break;
                }
                match json_value(&rest[lead..]) {
                    Ok((v, n)) => match object_call(&v, name, args) {
                        Some(c) => {
                            calls.push(c);
                            used += lead + n;
                        }
                        None => return Read::Malformed,
                    },
                    Err(true) => return Read::Cut(calls),
                    Err(false) => return Read::Malformed,
                }
            }
            match calls.is_empty() {
                true if body.trim().is_empty() => Read::Cut(calls),
                true => Read::Malformed,
                false => Read::Calls(calls, used),
            }
        }
        Body::Object {
            name,
            args,
            list: true,
            ..
        } => {
            let lead = body.len() - body.trim_start().len();
            let rest = &body[lead..];
            if rest.is_empty() {
                return Read::Cut(Vec::new());
            }
            let (items, n) = match json_value(rest) {
                Ok((Value::Array(items), n)) => (items, n),
                Err(true) if rest.starts_with('[') => {
                    let closed = crate::engine::tool_syntax::closed_elements(&rest[1..]);
                    let calls: Option<Vec<_>> =
                        closed.iter().map(|v| object_call(v, name, args)).collect();
                    return calls.map_or(Read::Malformed, Read::Cut);
                }
                _ => return Read::Malformed,
            };
            let calls: Option<Vec<_>> = items.iter().map(|v| object_call(v, name, args)).collect();
            match calls {
                Some(c) if !c.is_empty() => Read::Calls(c, lead + n),
                _ => Read::Malformed,
            }
        }
        Body::Keyed => {
            let lead = body.len() - body.trim_start().len();
            let rest = &body[lead..];
            if rest.is_empty() {
                return Read::Cut(Vec::new());
            }
            let (items, n, cut) = match json_value(rest) {
                Ok((Value::Array(items), n)) => (items, n, false),
                Err(true) if rest.starts_with('[') => (
                    crate::engine::tool_syntax::closed_elements(&rest[1..]),
                    0,
                    true,
                ),
                _ => return Read::Malformed,
            };
            let calls: Option<Vec<_>> = items.iter().map(keyed_call).collect();
            match (calls, cut) {
                (Some(c), true) => Read::Cut(c),
                (Some(c), false) if !c.is_empty() => Read::Calls(c, lead + n),
                _ => Read::Malformed,
            }
        }
        Body::Pythonic => {
            let lead = body.len() - body.trim_start().len();
            let rest = &body[lead..];
            if rest.is_empty() {
                return Read::Cut(Vec::new());
            }
            let (calls, end) = python::calls(rest);
            let whole: Vec<(String, String)> = calls
                .into_iter()
                .filter(|c| c.end.is_some())
                .map(|c| {
                    let args: serde_json::Map<String, Value> = c.args.into_iter().collect();
                    (c.name, Value::Object(args).to_string())
                })
                .collect();
            match end {
                python::End::Closed(n) if !whole.is_empty() => Read::Calls(whole, lead + n),
                python::End::Closed(_) | python::End::Malformed => Read::Malformed,
                python::End::Open => Read::Cut(whole),
            }
        }
        Body::Braced { quote } => {
            let Some((function, after)) = name_then(body, "{") else {
                return cut_or_malformed(body, f);
            };
            let start = body.len() - after.len() - 1;
            match braced_json(&body[start..], quote) {
                Ok((json, Some(used))) => match serde_json::from_str::<Value>(&json) {
                    Ok(o @ Value::Object(_)) => {
                        Read::Calls(vec![(function, o.to_string())], start + used)
                    }
                    _ => Read::Malformed,
                },
                Ok((_, None)) => Read::Cut(Vec::new()),
                Err(_) => Read::Malformed,
            }
        }
        Body::Named { pre, sep } => {
            let named = match pre {
                Some(p) => match body.find(p.find) {
                    Some(at) => &body[at + p.find.len()..],
                    None => return cut_or_malformed(body, f),
                },
                None => body,
            };
            let Some((function, after)) = name_then(named, sep.find) else {
                return cut_or_malformed(body, f);
            };
            let start = body.len() - after.len();
            let lead = after.len() - after.trim_start().len();
            match json_value(&after[lead..]) {
                Ok((Value::Object(o), n)) => Read::Calls(
                    vec![(function, Value::Object(o).to_string())],
                    start + lead + n,
                ),
                Ok(_) => Read::Malformed,
                Err(true) => Read::Cut(Vec::new()),
                Err(false) => Read::Malformed,
            }
        }
        Body::Params { sep, .. } => {
            let Some((function, rest)) = name_then(body, sep.find) else {
                return cut_or_malformed(body, f);
            };
            let (args, end) = read_params(&f.body, &function, rest, types);
            match end {
                ParamsEnd::Closed(n) => {
                    let args: serde_json::Map<String, Value> = args.into_iter().collect();
                    let used = body.len() - rest.len() + n;
                    Read::Calls(vec![(function, Value::Object(args).to_string())], used)
                }
                ParamsEnd::Open => Read::Cut(Vec::new()),
                ParamsEnd::Malformed => Read::Malformed,
            }
        }
    }
}

/// A braced value (`{key:<|"|>text<|"|>,n:1}`, from its `{`) as JSON text, written left
/// to right: bare keys and quoted strings come out once they are whole. With the length
/// of the value once it is closed (None: the text ends inside it); Err: not such a value
/// (with what was read before the malformed part).
fn braced_json(text: &str, quote: &str) -> Result<(String, Option<usize>), String> {
    let mut out = String::new();
    let mut stack: Vec<char> = Vec::new();
    let mut expect_key = false;
    let mut i = 0;
    while let Some(rest) = text.get(i..).filter(|r| !r.is_empty()) {
        if let Some(inner) = rest.strip_prefix(quote) {
            let Some(end) = inner.find(quote) else {
                return Ok((out, None));
            };
            out.push_str(&Value::String(inner[..end].to_string()).to_string());
            i += 2 * quote.len() + end;
            continue;
        }
        if quote.starts_with(rest) {
            // The text ends inside a quote mark.
            return Ok((out, None));
        }
        let Some(c) = rest.chars().next() else {
            return Ok((out, None));
        };
        if c == '"' {
            match json_value(rest) {
                Ok((_, n)) => {
                    out.push_str(&rest[..n]);
                    i += n;
                    continue;
                }
                Err(true) => return Ok((out, None)),
                Err(false) => return Err(out),
            }
        }
        if expect_key && !c.is_whitespace() && c != '}' {
            let Some(colon) = rest.find(':') else {
                return Ok((out, None));
            };
            let key = rest[..colon].trim();
            if key.is_empty() || key.contains(['{', '}', ',', '[', ']']) {
                return Err(out);
            }
            out.push_str(&Value::String(key.to_string()).to_string());
            i += colon;
            expect_key = false;
            continue;
        }
        match c {
            '{' => {
                stack.push('}');
                expect_key = true;
            }
            '[' => stack.push(']'),
            // The guard pops the opener a closer must match.
            '}' | ']' if stack.pop() != Some(c) => return Err(out),
            ',' => expect_key = stack.last() == Some(&'}'),
            _ => {}
        }
        out.push(c);
        i += c.len_utf8();
        if stack.is_empty() {
            return Ok((out, Some(i)));
        }
    }
    Ok((out, None))
}

/// How far an XML-like argument list went.
enum ParamsEnd {
    /// Its end came: the bytes of the text up to and with it.
    Closed(usize),
    /// The text ends inside it.
    Open,
    /// Something else than an argument or the end follows.
    Malformed,
}

/// The XML-like arguments at the start of `text` (after the function's name and its
/// separator) in a `Body::Params` shape: those read whole, in order, and how far the
/// list went. The finished parse and the streamed view both read them so.
fn read_params(
    body: &Body,
    function: &str,
    text: &str,
    types: &dyn ParamTypes,
) -> (Vec<(String, Value)>, ParamsEnd) {
    let Body::Params {
        param,
        key_close,
        value_close,
        close_names_key,
        end,
        ..
    } = *body
    else {
        return (Vec::new(), ParamsEnd::Malformed);
    };
    let end = end.trim();
    let mut args = Vec::new();
    let mut rest = text;
    loop {
        let t = rest.trim_start();
        if let Some(after) = t.strip_prefix(end) {
            return (args, ParamsEnd::Closed(text.len() - after.len()));
        }
        let Some(p) = t.strip_prefix(param) else {
            // Unexpected text before the end: open while the end may still come.
            let state = match t.contains(end) || !(end.starts_with(t) || param.starts_with(t)) {
                true if !t.is_empty() => ParamsEnd::Malformed,
                _ => ParamsEnd::Open,
            };
            return (args, state);
        };
        let key = &p[..p.find(NAME_STOP).unwrap_or(p.len())];
        let Some(v_at) = p.find(key_close.find) else {
            return (args, ParamsEnd::Open);
        };
        let v = &p[v_at + key_close.find.len()..];
        let Some(v_end) = v.find(value_close) else {
            return (args, ParamsEnd::Open);
        };
        if key.is_empty() {
            return (args, ParamsEnd::Malformed);
        }
        rest = &v[v_end + value_close.len()..];
        if close_names_key {
            let named = format!("{key}>");
            rest = match rest.strip_prefix(named.as_str()) {
                Some(r) => r,
                None if named.starts_with(rest) => return (args, ParamsEnd::Open),
                None => return (args, ParamsEnd::Malformed),
            };
        }
        args.push((
            key.to_string(),
            param_value(function, key, &v[..v_end], types),
        ));
    }
}

/// One XML-like argument's value: a string parameter's text (one newline each side
/// dropped, as the families write them), any other parameter's JSON (its text as a
/// string when it is not JSON).
fn param_value(function: &str, key: &str, raw: &str, types: &dyn ParamTypes) -> Value {
    let raw = raw.strip_prefix('\n').unwrap_or(raw);
    let raw = raw.strip_suffix('\n').unwrap_or(raw);
    match types.is_string(function, key) {
        true => Value::String(raw.to_string()),
        false => {
            serde_json::from_str(raw.trim()).unwrap_or_else(|_| Value::String(raw.to_string()))
        }
    }
}

/// A call whose name ran to the end of the text (or its separator never came) was cut;
/// one with a separator elsewhere is malformed.
fn cut_or_malformed(body: &str, f: &Family) -> Read {
    let ends = f.call_open.iter().any(|o| body.contains(o)) || body.contains(f.closer.trim());
    match ends && !f.closer.trim().is_empty() {
        true => Read::Malformed,
        false => Read::Cut(Vec::new()),
    }
}

/// The function name at the start of `body` and the text after `sep` (None: the name
/// is empty or not ended yet, or `sep` never comes).
fn name_then<'a>(body: &'a str, sep: &str) -> Option<(String, &'a str)> {
    let t = body.trim_start();
    // A name running to the end of the text may still grow.
    let end = t.find(NAME_STOP)?;
    let name = &t[..end];
    let at = t[end..].find(sep)?;
    if name.is_empty() {
        return None;
    }
    Some((name.to_string(), &t[end + at + sep.len()..]))
}

/// The JSON value at the start of `text`; Err(true) when the text ends inside it.
fn json_value(text: &str) -> Result<(Value, usize), bool> {
    let mut values = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    match values.next() {
        Some(Ok(v)) => Ok((v, values.byte_offset())),
        Some(Err(e)) => Err(e.is_eof()),
        None => Err(true),
    }
}

/// One `{NAME: {…}}` call (the keyed body).
fn keyed_call(v: &Value) -> Option<(String, String)> {
    let o = v.as_object()?;
    let (name, args) = o.iter().next().filter(|_| o.len() == 1)?;
    args.is_object().then(|| (name.clone(), args.to_string()))
}

/// One `{name: …, args: {…}}` call.
fn object_call(v: &Value, name: &str, args: &str) -> Option<(String, String)> {
    let function = v.get(name)?.as_str()?.to_string();
    let args = match v.get(args)? {
        // Some models write the arguments as a JSON string; the API carries JSON text.
        Value::String(s) => match serde_json::from_str::<Value>(s).ok()? {
            o @ Value::Object(_) => o.to_string(),
            _ => return None,
        },
        o @ Value::Object(_) => o.to_string(),
        _ => return None,
    };
    Some((function, args))
}

/// The README's family table (between its markers; a test keeps it in step).
pub fn table() -> String {
    let mut t = String::from(
        "| `model.tool_format` | models (templates in the corpus) | a call | arguments | reasoning |\n|---|---|---|---|---|\n",
    );
    for f in FAMILIES {
        let args = match f.body {
            Body::Object { list: true, .. } => "JSON list of call objects",
            Body::Object { .. } => "JSON call object",
            Body::Keyed => "JSON list of {name: arguments}",
            Body::Braced { .. } => "name, then {key:value} (quoted strings)",
            Body::Pythonic => "Python list of calls",
            Body::Named { .. } => "name, then a JSON object",
            Body::Params { .. } => "name, then one element per argument",
        };
        let opens = match (f.opener.trim(), f.json_at_start) {
            ("", true) => "`{` at the start".to_string(),
            (o, _) => format!("`{}`", o.replace('\n', "⏎").replace('|', "\\|")),
        };
        t.push_str(&format!(
            "| `{}` | {} | {opens} | {args} | {} |\n",
            f.name,
            f.models,
            if f.reasoning.is_empty() {
                "—".to_string()
            } else {
                format!("`{}`", f.reasoning.replace('|', "\\|"))
            }
        ));
    }
    t
}
