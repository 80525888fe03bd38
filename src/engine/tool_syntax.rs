//! Native tool-call formats: models trained to call tools in their family's own syntax
//! answer in it, and the calls are parsed back into OpenAI `tool_calls`.
//!
//! | family | a call in the model's output |
//! |---|---|
//! | Hermes (Qwen 2.5/3, Hermes 2 Pro/3, many fine-tunes) | `<tool_call>\n{"name": …, "arguments": {…}}\n</tool_call>`, repeated for parallel calls |
//! | Llama 3.1+ (JSON tool calling) | `{"name": …, "parameters": {…}}` as the whole answer, optionally after `<|python_tag|>` |
//! | Mistral (v3 tokenizer: Nemo, Small, …) | `[TOOL_CALLS][{"name": …, "arguments": {…}}, …]` |
//!
//! With `tool_choice: "auto"` the model writes free text until it opens a call (the
//! family's trigger); from there the call is constrained to a declared function and its
//! `parameters` (lazily: the constraint starts at the trigger). With `required` or a named
//! function the engine writes the opener itself, so the answer is a call. `ToolRun` is
//! that state machine (pure, generic over the token type); `parse` turns a finished
//! answer back into text and calls.
//!
//! SECURITY / robustness: the parser never panics on any text (fuzzed: `tool_calls`
//! target); a malformed or cut-off call stays text in the answer rather than becoming a
//! call the client did not get constrained. Triggers are matched on the model's output
//! only; the opener and closer the engine forces are constants of the format.

use serde::Deserialize;
use serde_json::{json, Value};

/// `model.tool_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolFormatSetting {
    /// The family's syntax when the chat template shows one, else `generic`.
    #[default]
    Auto,
    /// llama.cpp's generic JSON envelope (`{"tool_calls": […]}`), for any template.
    Generic,
    Hermes,
    Llama3,
    Mistral,
}

impl ToolFormatSetting {
    /// The native syntax in use (None: the generic format), from the setting and the
    /// effective chat template's text.
    pub fn resolve(self, template: Option<&str>) -> Option<ToolSyntax> {
        match self {
            ToolFormatSetting::Generic => None,
            ToolFormatSetting::Hermes => Some(ToolSyntax::Hermes),
            ToolFormatSetting::Llama3 => Some(ToolSyntax::Llama3),
            ToolFormatSetting::Mistral => Some(ToolSyntax::Mistral),
            ToolFormatSetting::Auto => {
                let t = template?;
                if t.contains("<tool_call>") {
                    Some(ToolSyntax::Hermes)
                } else if t.contains("[TOOL_CALLS]") {
                    Some(ToolSyntax::Mistral)
                } else if t.contains("<|python_tag|>") {
                    Some(ToolSyntax::Llama3)
                } else {
                    None
                }
            }
        }
    }
}

/// A family's tool-call syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolSyntax {
    Hermes,
    Llama3,
    Mistral,
}

/// Most calls one answer may make (as the generic format's `MAX_PARALLEL_CALLS`).
pub const MAX_CALLS: u32 = 8;

impl ToolSyntax {
    pub fn name(self) -> &'static str {
        match self {
            ToolSyntax::Hermes => "hermes",
            ToolSyntax::Llama3 => "llama3",
            ToolSyntax::Mistral => "mistral",
        }
    }

    /// What the engine writes to open a call when one is required.
    pub fn opener(self) -> &'static str {
        match self {
            ToolSyntax::Hermes => "<tool_call>\n",
            // The JSON object itself opens the call.
            ToolSyntax::Llama3 => "",
            ToolSyntax::Mistral => "[TOOL_CALLS]",
        }
    }

    /// What the engine writes after a call's JSON is complete.
    pub fn closer(self) -> &'static str {
        match self {
            ToolSyntax::Hermes => "\n</tool_call>",
            ToolSyntax::Llama3 | ToolSyntax::Mistral => "",
        }
    }

    /// The key of a call's arguments.
    pub fn arguments_key(self) -> &'static str {
        match self {
            ToolSyntax::Llama3 => "parameters",
            ToolSyntax::Hermes | ToolSyntax::Mistral => "arguments",
        }
    }

    /// Several calls come as several opened blocks (Hermes); the others write one value
    /// (Mistral's list holds every call; Llama 3 makes one call).
    fn repeats(self) -> bool {
        self == ToolSyntax::Hermes
    }

    /// The JSON Schema of what follows the opener: one call (Hermes, Llama 3) or the list
    /// of calls (Mistral), each naming one of `functions` (name, parameters schema).
    pub fn call_schema(self, functions: &[(String, Value)], max_calls: u32) -> Value {
        let calls: Vec<Value> = functions
            .iter()
            .map(|(name, parameters)| {
                json!({
                    "type": "object",
                    "properties": {"name": {"const": name}, self.arguments_key(): parameters},
                    "required": ["name", self.arguments_key()],
                    "additionalProperties": false
                })
            })
            .collect();
        let one = json!({"anyOf": calls});
        match self {
            ToolSyntax::Mistral => json!({
                "type": "array", "items": one, "minItems": 1, "maxItems": max_calls.max(1)
            }),
            ToolSyntax::Hermes | ToolSyntax::Llama3 => one,
        }
    }

    /// Where, in free text, the model opens a call: the trigger's byte range in `window`
    /// and whether the trigger text is itself the start of the constrained value.
    /// `at_start`: `window` is the whole answer so far.
    fn find_trigger(self, window: &str, at_start: bool) -> Option<(usize, usize, bool)> {
        let literal = |t: &str| window.find(t).map(|at| (at, at + t.len(), false));
        match self {
            ToolSyntax::Hermes => literal("<tool_call>"),
            ToolSyntax::Mistral => literal("[TOOL_CALLS]"),
            ToolSyntax::Llama3 => literal("<|python_tag|>").or_else(|| {
                let lead = window.len() - window.trim_start().len();
                (at_start && window[lead..].starts_with('{')).then_some((lead, lead, true))
            }),
        }
    }

    /// Longest trigger text (the free-text window keeps this much minus one).
    fn trigger_len(self) -> usize {
        match self {
            ToolSyntax::Hermes => "<tool_call>".len(),
            ToolSyntax::Mistral => "[TOOL_CALLS]".len(),
            ToolSyntax::Llama3 => "<|python_tag|>".len(),
        }
    }
}

/// A finished answer in a native syntax: the text outside calls and the calls made
/// (function name, arguments as JSON text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub content: String,
    pub calls: Vec<(String, String)>,
}

/// Parse a finished answer. A call that is cut off or not a `{name, arguments}` object
/// leaves the whole answer as text (no calls), so nothing unconstrained becomes a call.
pub fn parse(syntax: ToolSyntax, text: &str) -> Parsed {
    let as_text = || Parsed {
        content: text.trim().to_string(),
        calls: Vec::new(),
    };
    let key = syntax.arguments_key();
    match syntax {
        ToolSyntax::Hermes => {
            let (mut content, mut calls, mut rest) = (String::new(), Vec::new(), text);
            while let Some(at) = rest.find("<tool_call>") {
                content.push_str(&rest[..at]);
                let body = &rest[at + "<tool_call>".len()..];
                let (json, next) = match body.find("</tool_call>") {
                    Some(end) => (&body[..end], &body[end + "</tool_call>".len()..]),
                    // The model ended without the closer: the call must be whole JSON.
                    None => (body, ""),
                };
                match call(json, key) {
                    Some(c) => calls.push(c),
                    // Cut inside the call (no closer; `max_tokens`): the calls before it
                    // and the text before it, never the cut call as text.
                    None if next.is_empty() && !body.contains("</tool_call>") => {
                        rest = "";
                        break;
                    }
                    None => return as_text(),
                }
                rest = next;
            }
            content.push_str(rest);
            Parsed {
                content: content.trim().to_string(),
                calls,
            }
        }
        ToolSyntax::Llama3 => {
            let body = text.trim_start();
            let tagged = body.strip_prefix("<|python_tag|>");
            let body = tagged.unwrap_or(body);
            if !body.trim_start().starts_with('{') {
                return as_text();
            }
            match call(body, key) {
                Some(c) => Parsed {
                    content: String::new(),
                    calls: vec![c],
                },
                // After the tag it was a call, cut short: nothing to return as text.
                None if tagged.is_some() => Parsed {
                    content: String::new(),
                    calls: Vec::new(),
                },
                None => as_text(),
            }
        }
        ToolSyntax::Mistral => {
            let Some(at) = text.find("[TOOL_CALLS]") else {
                return as_text();
            };
            let list = text[at + "[TOOL_CALLS]".len()..].trim();
            let items = match serde_json::from_str::<Value>(list) {
                Ok(Value::Array(items)) => items,
                // Cut inside the list: the calls that closed before the cut.
                Err(_) if list.starts_with('[') => closed_elements(&list[1..]),
                _ => return as_text(),
            };
            let mut calls = Vec::with_capacity(items.len());
            for item in &items {
                match call_value(item, key) {
                    Some(c) => calls.push(c),
                    None => return as_text(),
                }
            }
            Parsed {
                content: text[..at].trim().to_string(),
                calls,
            }
        }
    }
}

/// The elements of a JSON array cut short (`rest` follows its `[`): every element that
/// closed before the cut, in order.
pub fn closed_elements(mut rest: &str) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        rest = rest.trim_start();
        let mut values = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
        let Some(Ok(v)) = values.next() else {
            return out;
        };
        out.push(v);
        rest = rest.get(values.byte_offset()..).unwrap_or("").trim_start();
        match rest.strip_prefix(',') {
            Some(r) => rest = r,
            None => return out,
        }
    }
}

/// One `{"name": …, key: {…}}` call in JSON text.
fn call(json: &str, key: &str) -> Option<(String, String)> {
    call_value(&serde_json::from_str::<Value>(json.trim()).ok()?, key)
}

fn call_value(v: &Value, key: &str) -> Option<(String, String)> {
    let name = v.get("name")?.as_str()?.to_string();
    let args = v.get(key)?;
    // Some models write the arguments as a JSON string; the API carries JSON text.
    let args = match args {
        Value::String(s) => serde_json::from_str::<Value>(s).ok()?.to_string(),
        Value::Object(_) => args.to_string(),
        _ => return None,
    };
    Some((name, args))
}

/// What a request asks of the tool-call syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToolPlan {
    pub syntax: ToolSyntax,
    /// `tool_choice` `required` or a named function: the engine opens the call.
    pub force: bool,
    /// Calls one answer may make (1 without `parallel_tool_calls`).
    pub max_calls: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Free text; the trigger is watched for.
    Free,
    /// The engine writes the opener (next token index).
    Opening(usize),
    /// A call's JSON, under the call constraint.
    Call,
    /// The engine writes the closer (next token index).
    Closing(usize),
    /// Every call allowed was made: the answer ends.
    Done,
}

/// What the engine must do after a token of free text.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Nothing,
    /// A call began: start a fresh call constraint and feed it `prefix` (the part of the
    /// value already written, leading whitespace dropped).
    CallStarts {
        prefix: String,
    },
}

/// One generation's tool-call state: free text, a forced opener, a constrained call, a
/// forced closer, then free text again (Hermes, parallel calls) or the end.
#[derive(Debug)]
pub struct ToolRun<T> {
    plan: ToolPlan,
    phase: Phase,
    opener: Vec<T>,
    closer: Vec<T>,
    /// Free text not yet ruled out as the start of a trigger.
    window: String,
    /// No answer text other than whitespace yet.
    at_start: bool,
    calls: u32,
    /// A forced opener ended: the call constraint must start (taken by the engine).
    call_pending: bool,
}

impl<T: Copy> ToolRun<T> {
    /// `opener`/`closer`: the tokens of the syntax's `opener()`/`closer()` for this model.
    pub fn new(plan: ToolPlan, opener: Vec<T>, closer: Vec<T>) -> Self {
        let mut run = Self {
            plan,
            phase: Phase::Free,
            opener,
            closer,
            window: String::new(),
            at_start: true,
            calls: 0,
            call_pending: false,
        };
        if plan.force {
            run.open();
        }
        run
    }

    fn open(&mut self) {
        if self.opener.is_empty() {
            self.phase = Phase::Call;
            self.call_pending = true;
        } else {
            self.phase = Phase::Opening(0);
        }
    }

    /// The token to write instead of sampling (an opener or closer in progress).
    pub fn forced(&mut self) -> Option<T> {
        match self.phase {
            Phase::Opening(i) => {
                let t = *self.opener.get(i)?;
                if i + 1 == self.opener.len() {
                    self.phase = Phase::Call;
                    self.call_pending = true;
                } else {
                    self.phase = Phase::Opening(i + 1);
                }
                Some(t)
            }
            Phase::Closing(i) => {
                let t = *self.closer.get(i)?;
                if i + 1 == self.closer.len() {
                    self.after_call();
                } else {
                    self.phase = Phase::Closing(i + 1);
                }
                Some(t)
            }
            Phase::Free | Phase::Call | Phase::Done => None,
        }
    }

    /// A forced opener just ended: true once, when the call constraint must start.
    pub fn take_call_start(&mut self) -> bool {
        std::mem::take(&mut self.call_pending)
    }

    /// The next token is part of a call: the call constraint applies.
    pub fn in_call(&self) -> bool {
        self.phase == Phase::Call
    }

    /// Every call allowed was made: the engine ends the answer.
    pub fn done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// The call constraint accepted a whole call: the closer follows (or the next call,
    /// or the end).
    pub fn call_complete(&mut self) {
        if self.closer.is_empty() {
            self.after_call();
        } else {
            self.phase = Phase::Closing(0);
        }
    }

    fn after_call(&mut self) {
        self.calls += 1;
        self.window.clear();
        self.phase = if self.plan.syntax.repeats() && self.calls < self.plan.max_calls {
            Phase::Free
        } else {
            Phase::Done
        };
    }

    /// A sampled token's answer text, in free text: is a call opening?
    pub fn push(&mut self, text: &str) -> Step {
        if self.phase != Phase::Free {
            return Step::Nothing;
        }
        self.window.push_str(text);
        let syntax = self.plan.syntax;
        if let Some((start, end, inclusive)) = syntax.find_trigger(&self.window, self.at_start) {
            let from = if inclusive { start } else { end };
            let prefix = self.window[from..].trim_start().to_string();
            self.window.clear();
            self.phase = Phase::Call;
            return Step::CallStarts { prefix };
        }
        if !self.window.trim().is_empty() {
            self.at_start = false;
        }
        // Keep only what may still be the start of a trigger.
        let keep = syntax.trigger_len() - 1;
        if self.window.len() > keep {
            let mut cut = self.window.len() - keep;
            while !self.window.is_char_boundary(cut) {
                cut += 1;
            }
            self.window.drain(..cut);
        }
        Step::Nothing
    }
}

#[cfg(test)]
#[path = "tool_syntax_tests.rs"]
mod tests;
