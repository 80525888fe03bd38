//! Tool calls in a model family's own syntax (the families: `engine::family`): which
//! family `model.tool_format` selects, and the per-generation state machine that
//! watches free text for a call's opener, writes a required call's opener and closer,
//! and says when the call's constraint applies.
//!
//! With `tool_choice: "auto"` the model writes free text until it opens a call (the
//! family's trigger); from there the call is constrained to a declared function and its
//! `parameters` (lazily: the constraint starts at the trigger). With `required` or a named
//! function the engine writes the opener itself, so the answer is a call. `ToolRun` is
//! that state machine (pure, generic over the token type); `family::parse` turns a
//! finished answer back into text and calls.
//!
//! SECURITY / robustness: triggers are matched on the model's output only; the opener
//! and closer the engine forces are constants of the family (fuzzed: `tool_calls`).

use serde::Deserialize;
use serde_json::Value;

pub use super::family::{parse, CallGrammar, Parsed, ToolSyntax, MAX_CALLS};

/// `model.tool_format`: `auto`, `generic`, or a family's name (`engine::family`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum ToolFormatSetting {
    /// The family's syntax when the chat template shows one, else `generic`.
    #[default]
    Auto,
    /// llama.cpp's generic JSON envelope (`{"tool_calls": […]}`), for any template.
    Generic,
    Family(ToolSyntax),
}

impl TryFrom<String> for ToolFormatSetting {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "auto" => Ok(ToolFormatSetting::Auto),
            "generic" => Ok(ToolFormatSetting::Generic),
            name => ToolSyntax::named(name)
                .map(ToolFormatSetting::Family)
                .ok_or_else(|| {
                    let names: Vec<&str> = super::family::FAMILIES.iter().map(|f| f.name).collect();
                    format!(
                        "unknown tool format `{name}`: use auto, generic or one of {}",
                        names.join(", ")
                    )
                }),
        }
    }
}

impl ToolFormatSetting {
    /// The native syntax in use (None: the generic format), from the setting and the
    /// effective chat template's text (`ToolSyntax::of_template`).
    pub fn resolve(self, template: Option<&str>) -> Option<ToolSyntax> {
        match self {
            ToolFormatSetting::Generic => None,
            ToolFormatSetting::Family(s) => Some(s),
            ToolFormatSetting::Auto => ToolSyntax::of_template(template?),
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
