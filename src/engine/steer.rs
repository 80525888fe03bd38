//! What decides each token of one generation besides the model: the tokens the engine
//! writes itself (a spent thinking budget's closer, a native tool call's opener and
//! closer), which output constraint applies to the next token (none while the model
//! thinks or writes free text before a call; the whole-output schema, or the current
//! call's), and what each token's text means (`output`: UTF-8, stop strings, reasoning).
//!
//! Pure Rust over token ids and bytes, generic over the engine's token type, so the whole
//! sequence — free text, trigger, constrained call, closer, end — is unit-tested with a
//! real llguidance constraint over a byte-level vocabulary.
//!
//! SECURITY: a token is checked against the constraint exactly when it was sampled under
//! it; forced tokens are constants of the format, never client text.

use super::constraint::{Constraint, ConstraintError, ConstraintReport};
use super::output::{Pieces, TextOut};
use super::tool_syntax::{Step, ToolRun};

/// How the next token is chosen.
pub enum Pick<'a, T> {
    /// Written by the engine (not sampled).
    Forced(T),
    /// Sampled from what this constraint allows.
    Constrained(&'a mut Constraint),
    /// Sampled freely.
    Free,
}

/// One generation's steering.
pub struct Steer<T> {
    output: TextOut<T>,
    tools: Option<ToolRun<T>>,
    /// The constraint in force: the request's (JSON schema, generic tools) for the whole
    /// output, or the current native call's.
    constraint: Option<Constraint>,
    /// Native tools: the compiled call constraint, forked for each call.
    call: Option<Constraint>,
}

impl<T: Copy> Steer<T> {
    /// `constraint`: the request's compiled constraint; with native `tools` it is the
    /// constraint of one call.
    pub fn new(
        output: TextOut<T>,
        tools: Option<ToolRun<T>>,
        constraint: Option<Constraint>,
    ) -> Self {
        let (constraint, call) = match tools {
            Some(_) => (None, constraint),
            None => (constraint, None),
        };
        let mut steer = Self {
            output,
            tools,
            constraint,
            call,
        };
        steer.start_pending_call();
        steer
    }

    /// A forced opener ended (or the format has none): the call's constraint starts.
    fn start_pending_call(&mut self) {
        if self.tools.as_mut().is_some_and(ToolRun::take_call_start) {
            self.constraint = self.call.as_ref().map(Constraint::fork);
        }
    }

    /// Token text is rendered with special tokens (a native syntax's opener may be one,
    /// e.g. Mistral's `[TOOL_CALLS]`).
    pub fn render_special(&self) -> bool {
        self.tools.is_some()
    }

    /// How to choose the next token.
    pub fn pick(&mut self) -> Pick<'_, T> {
        if let Some(t) = self.output.forced() {
            return Pick::Forced(t);
        }
        // While the template's thinking block runs nothing else applies.
        if self.output.constraint_waits() {
            return Pick::Free;
        }
        if let Some(t) = self.tools.as_mut().and_then(ToolRun::forced) {
            self.start_pending_call();
            return Pick::Forced(t);
        }
        let applies = self.tools.as_ref().is_none_or(ToolRun::in_call);
        match self.constraint.as_mut() {
            Some(c) if applies => Pick::Constrained(c),
            _ => Pick::Free,
        }
    }

    /// One chosen token (`id`, its text `bytes`); `constrained`: it was sampled under the
    /// constraint (`Pick::Constrained`). Returns its text and whether the answer is over
    /// (every allowed call made); an error ends the request.
    pub fn accept(
        &mut self,
        id: u32,
        bytes: &[u8],
        constrained: bool,
    ) -> Result<(Pieces, bool), ConstraintError> {
        if constrained {
            if let Some(c) = self.constraint.as_mut() {
                c.consume(id)?;
            }
        }
        let pieces = self.output.push(bytes);
        let Some(run) = self.tools.as_mut() else {
            return Ok((pieces, false));
        };
        if constrained && run.in_call() {
            if self
                .constraint
                .as_mut()
                .is_some_and(Constraint::is_complete)
            {
                run.call_complete();
            }
        } else if let Step::CallStarts { prefix } = run.push(&pieces.content) {
            // The model opened a call in free text: the call's constraint starts here,
            // past what it already wrote of it.
            let mut c = self.call.as_ref().map(Constraint::fork);
            if let Some(c) = c.as_mut() {
                c.consume_text(&prefix)?;
                if c.is_complete() {
                    run.call_complete();
                }
            }
            self.constraint = c;
        }
        let done = run.done();
        Ok((pieces, done))
    }

    /// The generation ended: what is still held back.
    pub fn finish(&mut self) -> Pieces {
        self.output.finish()
    }

    pub fn reasoning_tokens(&self) -> u32 {
        self.output.reasoning_tokens()
    }

    /// The constraint's timings, for the log line (the last call's with native tools).
    pub fn report(&self) -> Option<ConstraintReport> {
        self.constraint.as_ref().map(Constraint::report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::constraint::{ApproximateTokEnv, ConstraintCompiler};
    use crate::engine::tool_syntax::{ToolPlan, ToolSyntax};
    use serde_json::json;

    /// A real constraint over a one-byte-per-token vocabulary (token id = byte).
    fn call_constraint(syntax: ToolSyntax) -> Constraint {
        let env = ApproximateTokEnv::single_byte_env();
        let settings = crate::config::ConstraintsConfig::default().settings();
        let compiler = ConstraintCompiler::new(&env, settings).unwrap();
        let functions = vec![(
            "add".to_string(),
            json!({"type": "object", "properties": {"a": {"type": "integer"}},
                   "required": ["a"], "additionalProperties": false}),
        )];
        compiler
            .compile_call_blocking(&syntax.grammar(&functions, 2, &|_| None))
            .unwrap()
    }

    fn bytes(s: &str) -> Vec<u8> {
        s.bytes().collect()
    }

    /// Drive a generation: the "model" wants to write `model` (byte by byte); under a
    /// constraint it writes the allowed byte it wanted, else the first allowed one.
    /// Returns the whole text and whether the steering ended it.
    fn drive(steer: &mut Steer<u8>, model: &str) -> (String, bool) {
        let mut wanted = model.bytes();
        let mut text = String::new();
        for _ in 0..400 {
            let (token, constrained) = match steer.pick() {
                Pick::Forced(t) => (t, false),
                Pick::Free => match wanted.next() {
                    Some(b) => (b, false),
                    None => break,
                },
                Pick::Constrained(c) => {
                    let mask = c.mask().unwrap();
                    let want = wanted.next();
                    // Else a byte that closes a value first, so the output ends.
                    let allowed = |b: &u8| mask.is_allowed(u32::from(*b));
                    let b = match want {
                        Some(b) if allowed(&b) => b,
                        _ => [b'}', b']', b'"']
                            .into_iter()
                            .chain(0u8..=255)
                            .find(allowed)
                            .unwrap(),
                    };
                    (b, true)
                }
            };
            let (pieces, done) = steer
                .accept(u32::from(token), &[token], constrained)
                .unwrap();
            text.push_str(&pieces.content);
            if done {
                return (text, true);
            }
        }
        text.push_str(&steer.finish().content);
        (text, false)
    }

    fn hermes(force: bool) -> Steer<u8> {
        let plan = ToolPlan {
            syntax: ToolSyntax::HERMES,
            force,
            max_calls: 1,
        };
        let run = ToolRun::new(
            plan,
            bytes(ToolSyntax::HERMES.opener()),
            bytes(ToolSyntax::HERMES.closer()),
        );
        Steer::new(
            TextOut::new(Vec::new(), None),
            Some(run),
            Some(call_constraint(ToolSyntax::HERMES)),
        )
    }

    #[test]
    fn auto_text_then_a_constrained_call_then_the_end() {
        // The model wants an invalid call after its trigger; the constraint corrects it
        // from the trigger on (compact JSON: no newline before it), the engine closes
        // it, and the answer ends there.
        let (text, ended) = drive(
            &mut hermes(false),
            "Let me add. <tool_call>\n{\"name\": \"sub\"} and more",
        );
        assert!(ended);
        assert!(
            text.starts_with("Let me add. <tool_call>{\"name\":\"add\",\"arguments\":{\"a\":"),
            "{text}"
        );
        assert!(text.ends_with("}}\n</tool_call>"), "{text}");
        let parsed = crate::engine::tool_syntax::parse(
            ToolSyntax::HERMES,
            &text,
            &crate::engine::family::Untyped,
        );
        assert_eq!(parsed.calls.len(), 1, "{text}");
        assert_eq!(parsed.content, "Let me add.");
    }

    #[test]
    fn auto_without_a_trigger_is_free_text() {
        let (text, ended) = drive(&mut hermes(false), "No tools needed.");
        assert_eq!((text.as_str(), ended), ("No tools needed.", false));
    }

    #[test]
    fn required_opens_the_call_itself() {
        let (text, ended) = drive(&mut hermes(true), "I would rather chat.");
        assert!(ended);
        assert!(text.starts_with("<tool_call>\n{\"name\":\"add\""), "{text}");
        assert_eq!(
            crate::engine::tool_syntax::parse(
                ToolSyntax::HERMES,
                &text,
                &crate::engine::family::Untyped
            )
            .calls
            .len(),
            1
        );
    }

    #[test]
    fn a_call_begun_in_the_trigger_token_is_checked_from_its_start() {
        // Llama 3: the JSON itself opens the call; the first bytes came before the
        // constraint and are fed to it.
        let plan = ToolPlan {
            syntax: ToolSyntax::LLAMA3,
            force: false,
            max_calls: 1,
        };
        let run = ToolRun::new(plan, Vec::new(), Vec::new());
        let mut steer = Steer::new(
            TextOut::new(Vec::new(), None),
            Some(run),
            Some(call_constraint(ToolSyntax::LLAMA3)),
        );
        let (text, ended) = drive(
            &mut steer,
            "{\"name\": \"add\", \"parameters\": {\"a\": 7}}",
        );
        assert!(ended, "{text}");
        assert!(text.starts_with("{\"name\":"), "{text}");
        let parsed = crate::engine::tool_syntax::parse(
            ToolSyntax::LLAMA3,
            &text,
            &crate::engine::family::Untyped,
        );
        assert_eq!(parsed.calls.len(), 1, "{text}");
    }

    #[test]
    fn without_native_tools_the_constraint_applies_from_the_first_token() {
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}},
                            "required": ["a"], "additionalProperties": false});
        let env = ApproximateTokEnv::single_byte_env();
        let compiler =
            ConstraintCompiler::new(&env, crate::config::ConstraintsConfig::default().settings())
                .unwrap();
        let c = compiler.compile_blocking(&schema).unwrap();
        let mut steer: Steer<u8> = Steer::new(TextOut::new(Vec::new(), None), None, Some(c));
        assert!(matches!(steer.pick(), Pick::Constrained(_)));
    }
}
