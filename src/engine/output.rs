//! One sequence's output path, token by token: bytes → complete UTF-8 (`text`) → stop
//! strings (`text`) → the reasoning split (`reasoning`) → events. The real engine's
//! batcher runs it for every sampled token; it is pure Rust (generic over the token type),
//! so the whole path is unit-tested without a model.
//!
//! SECURITY: no part of a stop string or of a reasoning marker reaches the client, and
//! after a stop nothing held back is released (it would be text past the stop).

use super::reasoning::{Out, Run};
use super::text::{StopMatcher, Utf8Assembler};
use super::Event;
use tokio::sync::mpsc::UnboundedSender;

/// What one token (or the end) released.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pieces {
    pub reasoning: String,
    pub content: String,
    /// A stop string was found: the generation ends here.
    pub stopped: bool,
}

impl Pieces {
    /// Send the pieces in order (thinking first); false when the client has gone.
    pub fn send(self, events: &UnboundedSender<Event>) -> bool {
        let sent = |e: Event| events.send(e).is_ok();
        (self.reasoning.is_empty() || sent(Event::Reasoning(self.reasoning)))
            && (self.content.is_empty() || sent(Event::Text(self.content)))
    }

    fn from_out(out: Out, stopped: bool) -> Self {
        Self {
            reasoning: out.reasoning,
            content: out.content,
            stopped,
        }
    }
}

/// The output path of one generation.
#[derive(Debug)]
pub struct TextOut<T> {
    utf8: Utf8Assembler,
    stops: StopMatcher,
    reasoning: Option<Run<T>>,
    /// A stop string ended the output: nothing more passes.
    stopped: bool,
}

impl<T: Copy> TextOut<T> {
    pub fn new(stops: Vec<String>, reasoning: Option<Run<T>>) -> Self {
        Self {
            utf8: Utf8Assembler::default(),
            stops: StopMatcher::new(stops),
            reasoning,
            stopped: false,
        }
    }

    /// One sampled (or forced) token's bytes.
    pub fn push(&mut self, bytes: &[u8]) -> Pieces {
        if self.stopped {
            return Pieces {
                stopped: true,
                ..Pieces::default()
            };
        }
        let text = self.utf8.push(bytes);
        let step = self.stops.push(&text);
        self.stopped = step.stopped;
        let out = match self.reasoning.as_mut() {
            Some(run) => run.push(&step.emit),
            None => Out {
                reasoning: String::new(),
                content: step.emit,
            },
        };
        Pieces::from_out(out, step.stopped)
    }

    /// The generation ended: what is still held (an incomplete character, a possible
    /// stop-string start, a partial reasoning marker), unless a stop string ended it.
    pub fn finish(&mut self) -> Pieces {
        let mut text = String::new();
        if !self.stopped {
            let tail = self.stops.push(&self.utf8.finish());
            text = tail.emit;
            if !tail.stopped {
                text.push_str(&self.stops.finish());
            }
        }
        self.stopped = true;
        let out = match self.reasoning.as_mut() {
            Some(run) => {
                let mut out = run.push(&text);
                let end = run.finish();
                out.reasoning.push_str(&end.reasoning);
                out.content.push_str(&end.content);
                out
            }
            None => Out {
                reasoning: String::new(),
                content: text,
            },
        };
        Pieces::from_out(out, false)
    }

    /// The token to emit instead of sampling (a spent thinking budget's closer).
    pub fn forced(&mut self) -> Option<T> {
        self.reasoning.as_mut()?.forced()
    }

    /// The output constraint must not apply to the next token (it is still thinking).
    pub fn constraint_waits(&self) -> bool {
        self.reasoning.as_ref().is_some_and(Run::constraint_waits)
    }

    /// Tokens spent thinking so far.
    pub fn reasoning_tokens(&self) -> u32 {
        self.reasoning.as_ref().map_or(0, Run::tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::reasoning::Plan;

    fn think(opened: bool) -> Option<Run<u32>> {
        let plan = Plan {
            format: crate::engine::reasoning::THINK,
            budget: None,
        };
        Some(Run::new(plan, opened, Vec::new()))
    }

    /// Every token through the path, then its end: (reasoning, content, stopped).
    fn run(out: &mut TextOut<u32>, tokens: &[&[u8]]) -> (String, String, bool) {
        let (mut r, mut c, mut stopped) = (String::new(), String::new(), false);
        for t in tokens {
            let p = out.push(t);
            r.push_str(&p.reasoning);
            c.push_str(&p.content);
            if p.stopped {
                stopped = true;
                break;
            }
        }
        let p = out.finish();
        (r + &p.reasoning, c + &p.content, stopped)
    }

    #[test]
    fn plain_text_passes_with_stop_strings_applied() {
        let mut out = TextOut::new(vec!["END".into()], None);
        let got = run(&mut out, &[b"Hello E", b"N", b"D more"]);
        assert_eq!(got, ("".into(), "Hello ".into(), true));
    }

    #[test]
    fn thinking_and_answer_come_out_split() {
        let snow = "☃".as_bytes();
        let mut out = TextOut::new(Vec::new(), think(true));
        let tokens: [&[u8]; 5] = [b"cold ", &snow[..2], &snow[2..], b"</think>\n\n", b"Snow."];
        let got = run(&mut out, &tokens);
        assert_eq!(got, ("cold ☃".into(), "Snow.".into(), false));
        assert_eq!(out.reasoning_tokens(), 4);
    }

    #[test]
    fn a_stop_inside_the_thinking_ends_it_truthfully() {
        // The stop string is found in the thinking: what came before it (a partial closer
        // included) is reasoning, the answer is empty, and nothing after it passes.
        let mut out = TextOut::new(vec!["STOP".into()], think(true));
        let got = run(&mut out, &[b"a</th", b"STOP", b"ink>answer"]);
        assert_eq!(got, ("a</th".into(), "".into(), true));
    }

    #[test]
    fn a_cut_mid_character_releases_a_replacement() {
        let mut out = TextOut::new(Vec::new(), think(false));
        let got = run(&mut out, &[b"<think>x", &"☃".as_bytes()[..1]]);
        assert_eq!(got, ("x\u{FFFD}".into(), "".into(), false));
    }
}
