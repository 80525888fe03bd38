//! Reasoning models: their thinking split out of the answer. A model of the DeepSeek-R1 /
//! Qwen3 / QwQ families writes `<think>…</think>` before its answer; the engine sends
//! what is inside as reasoning (`Event::Reasoning`) and the rest as the answer
//! (`Event::Text`), counts the thinking tokens, caps them (`reasoning_effort` budgets:
//! once spent, the closing marker is forced and the model answers), and holds an output
//! constraint (JSON schema, tools) back until the thinking is over.
//!
//! SECURITY / robustness: pure Rust over text the model produced, no llama.cpp. A marker
//! is recognised only where the format puts it: the opener at the very start of the
//! output (or already written by the template at the end of the prompt), the closer once;
//! a `<think>` later in the answer, or in a client's message, is plain text. Partial
//! markers are held back (at most one marker's length), so nothing of a marker ever
//! reaches the client and nothing else is lost: every byte of the output comes back out
//! as reasoning or answer, in order.

use super::text::longest_suffix_prefix;
use serde::Deserialize;

/// `model.reasoning_format`: how the model's thinking is marked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum ReasoningSetting {
    /// The format whose opener the chat template mentions, else `none`.
    #[default]
    Auto,
    /// No split: thinking, if any, stays in the answer.
    None,
    /// One of `FORMATS`, by name.
    Format(ReasoningFormat),
}

impl TryFrom<String> for ReasoningSetting {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "auto" => Ok(ReasoningSetting::Auto),
            "none" => Ok(ReasoningSetting::None),
            name => FORMATS
                .iter()
                .find(|f| f.name == name)
                .map(|f| ReasoningSetting::Format(*f))
                .ok_or_else(|| {
                    let names: Vec<&str> = FORMATS.iter().map(|f| f.name).collect();
                    format!(
                        "unknown reasoning format `{name}`: use auto, none or one of {}",
                        names.join(", ")
                    )
                }),
        }
    }
}

/// A reasoning format the engine splits: the thinking between `open` and `close`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReasoningFormat {
    name: &'static str,
    open: &'static str,
    close: &'static str,
    /// What the engine writes around the closer when a thinking budget is spent, so the
    /// model goes on to its answer.
    before_close: &'static str,
    after_close: &'static str,
    /// Headers that may begin the answer after the thinking (harmony's final channel),
    /// dropped in order where present; never answer text.
    answer_headers: &'static [&'static str],
}

/// `<think>…</think>`: DeepSeek-R1 and its distills, Qwen3, QwQ, GLM, Kimi K2, MiniMax M2
/// and their fine-tunes.
pub const THINK: ReasoningFormat = ReasoningFormat {
    name: "think",
    open: "<think>",
    close: "</think>",
    before_close: "\n",
    after_close: "\n\n",
    answer_headers: &[],
};

/// Every format, most specific first: `auto` takes the first whose opener the template
/// mentions.
pub const FORMATS: &[ReasoningFormat] = &[
    // gpt-oss: the analysis channel, then the final channel's message.
    ReasoningFormat {
        name: "harmony",
        open: "<|channel|>analysis<|message|>",
        close: "<|end|>",
        before_close: "",
        after_close: "<|start|>assistant",
        answer_headers: &["<|start|>assistant", "<|channel|>final<|message|>"],
    },
    ReasoningFormat {
        name: "seed",
        open: "<seed:think>",
        close: "</seed:think>",
        before_close: "\n",
        after_close: "\n",
        answer_headers: &[],
    },
    ReasoningFormat {
        name: "hunyuan",
        open: "<think:opensource>",
        close: "</think:opensource>",
        before_close: "",
        after_close: "",
        answer_headers: &[],
    },
    ReasoningFormat {
        name: "command",
        open: "<|START_THINKING|>",
        close: "<|END_THINKING|>",
        before_close: "",
        after_close: "",
        answer_headers: &["<|START_RESPONSE|>"],
    },
    ReasoningFormat {
        name: "gemma4",
        open: "<|channel>thought",
        close: "<channel|>",
        before_close: "",
        after_close: "",
        answer_headers: &[],
    },
    ReasoningFormat {
        name: "minimax-m3",
        open: "<mm:think>",
        close: "</mm:think>",
        before_close: "",
        after_close: "",
        answer_headers: &[],
    },
    ReasoningFormat {
        name: "kimi-k3",
        open: "<|open|>think<|sep|>",
        close: "<|close|>think<|sep|>",
        before_close: "",
        after_close: "",
        answer_headers: &["<|open|>response<|sep|>"],
    },
    ReasoningFormat {
        name: "mistral",
        open: "[THINK]",
        close: "[/THINK]",
        before_close: "",
        after_close: "",
        answer_headers: &[],
    },
    THINK,
];

impl ReasoningFormat {
    pub fn name(self) -> &'static str {
        self.name
    }

    pub fn open(self) -> &'static str {
        self.open
    }

    pub fn close(self) -> &'static str {
        self.close
    }

    /// What the engine writes when a thinking budget is spent: the closer (on its own
    /// line for `<think>`) and what the family writes before its answer (without it a
    /// model may end at once). An output constraint applies from the next token.
    pub fn forced_close(self) -> String {
        format!("{}{}{}", self.before_close, self.close, self.after_close)
    }

    /// Headers that may begin the answer (dropped there).
    pub fn answer_headers(self) -> &'static [&'static str] {
        self.answer_headers
    }
}

impl ReasoningSetting {
    /// The format in use, from the setting and the effective chat template's text.
    pub fn resolve(self, template: Option<&str>) -> Option<ReasoningFormat> {
        match self {
            ReasoningSetting::None => None,
            ReasoningSetting::Format(f) => Some(f),
            ReasoningSetting::Auto => {
                let t = template?;
                FORMATS.iter().find(|f| t.contains(f.open)).copied()
            }
        }
    }
}

/// `reasoning_effort` (chat) / `reasoning.effort` (Responses), as OpenAI names the levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effort {
    None,
    Minimal,
    Low,
    Medium,
    High,
}

impl Effort {
    pub const NAMES: &'static str = "\"none\", \"minimal\", \"low\", \"medium\" or \"high\"";

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "none" => Effort::None,
            "minimal" => Effort::Minimal,
            "low" => Effort::Low,
            "medium" => Effort::Medium,
            "high" => Effort::High,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Effort::None => "none",
            Effort::Minimal => "minimal",
            Effort::Low => "low",
            Effort::Medium => "medium",
            Effort::High => "high",
        }
    }
}

/// Thinking budgets by effort (`model.reasoning_budget_low` / `_medium`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    pub low: u32,
    pub medium: u32,
}

impl Budgets {
    /// The thinking tokens a request may spend (None: no cap but its `max_tokens`).
    /// "none" and "minimal" think not at all: the closer is forced at once.
    pub fn of(self, effort: Option<Effort>) -> Option<u32> {
        match effort? {
            Effort::None | Effort::Minimal => Some(0),
            Effort::Low => Some(self.low),
            Effort::Medium => Some(self.medium),
            Effort::High => None,
        }
    }

    /// The budget of a request: its effort's; without one, a request that forces a tool
    /// call (`tool_choice` required or named) gets the low budget, so that a thinking
    /// model closes its thinking and reaches the call the client was promised (issue 29:
    /// unbounded, a small model thought until `max_tokens` and never called).
    pub fn for_request(self, effort: Option<Effort>, forces_call: bool) -> Option<u32> {
        match effort {
            Some(e) => self.of(Some(e)),
            None if forces_call => Some(self.low),
            None => None,
        }
    }
}

/// What a request asks of the split (the API sets it for chat and Responses requests to
/// a reasoning model; raw completions never have one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub format: ReasoningFormat,
    /// Thinking tokens allowed (None: no cap but `max_tokens`).
    pub budget: Option<u32>,
}

/// Does the rendered prompt end inside an opened thinking block (templates that write
/// `<think>` into the generation prompt, so the model starts thinking at once)? Only the
/// prompt's very end counts: a `<think>` inside a message is the client's text.
pub fn prompt_opens(format: ReasoningFormat, rendered: &str) -> bool {
    rendered.trim_end().ends_with(format.open())
}

/// Text of one piece, by channel (reasoning always comes before the answer).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Out {
    pub reasoning: String,
    pub content: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing but whitespace yet: the opener may still come.
    Start,
    /// Inside the thinking; `fresh`: nothing of it sent yet (leading whitespace dropped).
    Reasoning { fresh: bool },
    /// The answer; `fresh`: nothing of it sent yet (leading whitespace after the closer
    /// dropped).
    Content { fresh: bool },
}

/// The streaming split of one generation's text.
#[derive(Debug)]
pub struct Split {
    format: ReasoningFormat,
    state: State,
    /// Text not released yet: leading whitespace or a partial opener (Start), a partial
    /// closer (Reasoning).
    held: String,
}

impl Split {
    /// `opened`: the prompt already opened the thinking block (`prompt_opens`).
    pub fn new(format: ReasoningFormat, opened: bool) -> Self {
        let state = match opened {
            true => State::Reasoning { fresh: true },
            false => State::Start,
        };
        Self {
            format,
            state,
            held: String::new(),
        }
    }

    /// Inside the thinking block.
    pub fn in_reasoning(&self) -> bool {
        matches!(self.state, State::Reasoning { .. })
    }

    /// The answer has begun (no more thinking can come).
    pub fn in_content(&self) -> bool {
        matches!(self.state, State::Content { .. })
    }

    pub fn push(&mut self, piece: &str) -> Out {
        let mut out = Out::default();
        self.held.push_str(piece);
        loop {
            match self.state {
                State::Start => {
                    let open = self.format.open();
                    let trimmed = self.held.trim_start();
                    if let Some(rest) = trimmed.strip_prefix(open) {
                        self.held = rest.to_string();
                        self.state = State::Reasoning { fresh: true };
                    } else if !trimmed.is_empty() && !open.starts_with(trimmed) {
                        // The answer began without thinking: everything held is answer
                        // (past the format's answer headers).
                        if self.holds_answer_header() {
                            return out;
                        }
                        self.state = State::Content { fresh: false };
                    } else {
                        return out;
                    }
                }
                State::Reasoning { fresh } => {
                    if fresh {
                        let trimmed = self.held.trim_start();
                        if trimmed.is_empty() {
                            self.held.clear();
                            return out;
                        }
                        self.held = trimmed.to_string();
                        self.state = State::Reasoning { fresh: false };
                    }
                    let close = self.format.close();
                    if let Some(at) = self.held.find(close) {
                        out.reasoning.push_str(&self.held[..at]);
                        self.held.drain(..at + close.len());
                        self.state = State::Content { fresh: true };
                        continue;
                    }
                    let keep = longest_suffix_prefix(&self.held, close);
                    let cut = self.held.len() - keep;
                    out.reasoning.push_str(&self.held[..cut]);
                    self.held.drain(..cut);
                    return out;
                }
                State::Content { fresh } => {
                    if fresh && self.holds_answer_header() {
                        return out;
                    }
                    let text = match fresh {
                        true => self.held.trim_start(),
                        false => self.held.as_str(),
                    };
                    if !text.is_empty() {
                        out.content.push_str(text);
                        self.state = State::Content { fresh: false };
                    }
                    self.held.clear();
                    return out;
                }
            }
        }
    }

    /// At the answer's start: drop the format's answer headers that are there (in order);
    /// true while what is held may still be the start of one (wait for more text).
    fn holds_answer_header(&mut self) -> bool {
        for header in self.format.answer_headers() {
            let t = self.held.trim_start();
            if let Some(rest) = t.strip_prefix(header) {
                self.held = rest.to_string();
            } else if !t.is_empty() && header.starts_with(t) {
                return true;
            }
        }
        false
    }

    /// The generation ended: release what is held, in the channel it was in (a partial
    /// closer cut off by `max_tokens` is thinking; whitespace alone at the start is
    /// answer).
    pub fn finish(&mut self) -> Out {
        let held = std::mem::take(&mut self.held);
        match self.state {
            State::Reasoning { fresh: true } | State::Content { fresh: true } => Out::default(),
            State::Reasoning { fresh: false } => Out {
                reasoning: held,
                content: String::new(),
            },
            State::Start | State::Content { fresh: false } => Out {
                reasoning: String::new(),
                content: held,
            },
        }
    }
}

/// One generation's reasoning: the split, the thinking tokens counted against the
/// budget, and the closer forced once the budget is spent. `T` is the engine's token type.
#[derive(Debug)]
pub struct Run<T> {
    split: Split,
    budget: Option<u32>,
    /// Tokens spent thinking (the markers included).
    tokens: u32,
    /// The forced closer's tokens, and how many of them were sent.
    closer: Vec<T>,
    forcing: Option<usize>,
    /// The prompt opened the thinking: an output constraint waits for its end.
    defer_constraint: bool,
}

impl<T: Copy> Run<T> {
    /// `opened`: `prompt_opens` for the rendered prompt; `closer`: the tokens of
    /// `format.forced_close()`.
    pub fn new(plan: Plan, opened: bool, closer: Vec<T>) -> Self {
        Self {
            split: Split::new(plan.format, opened),
            budget: plan.budget,
            tokens: 0,
            closer,
            forcing: None,
            defer_constraint: opened,
        }
    }

    /// The token to emit instead of sampling one: the next token of the closer, once
    /// the thinking budget is spent.
    pub fn forced(&mut self) -> Option<T> {
        if self.forcing.is_none()
            && self.split.in_reasoning()
            && self.budget.is_some_and(|b| self.tokens >= b)
        {
            self.forcing = Some(0);
        }
        let at = self.forcing?;
        let token = *self.closer.get(at)?;
        self.forcing = Some(at + 1);
        Some(token)
    }

    /// An output constraint must not apply yet: the prompt opened the thinking and the
    /// answer has not begun. (Without an opened prompt the constraint applies from the
    /// first token, so a constrained answer cannot think.)
    pub fn constraint_waits(&self) -> bool {
        self.defer_constraint && !self.split.in_content()
    }

    /// One token's text (possibly empty: held by the UTF-8 assembler or a stop matcher).
    pub fn push(&mut self, text: &str) -> Out {
        let before = self.split.in_reasoning();
        let out = self.split.push(text);
        if before || self.split.in_reasoning() {
            self.tokens = self.tokens.saturating_add(1);
        }
        out
    }

    pub fn finish(&mut self) -> Out {
        self.split.finish()
    }

    /// Tokens spent thinking.
    pub fn tokens(&self) -> u32 {
        self.tokens
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every piece through a split, then its end: (reasoning, content).
    fn split(opened: bool, pieces: &[&str]) -> (String, String) {
        let mut s = Split::new(THINK, opened);
        let (mut r, mut c) = (String::new(), String::new());
        for p in pieces {
            let o = s.push(p);
            r.push_str(&o.reasoning);
            c.push_str(&o.content);
        }
        let o = s.finish();
        (r + &o.reasoning, c + &o.content)
    }

    fn pair(r: &str, c: &str) -> (String, String) {
        (r.to_string(), c.to_string())
    }

    #[test]
    fn a_think_block_at_the_start_is_reasoning() {
        let want = pair("Two plus two is four.", "The answer is 4.");
        assert_eq!(
            split(
                false,
                &["<think>\nTwo plus two is four.</think>\n\nThe answer is 4."]
            ),
            want
        );
        // The same, one character per piece: markers split anywhere.
        let text = "<think>\nTwo plus two is four.</think>\n\nThe answer is 4.";
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let pieces: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(split(false, &pieces), want);
    }

    #[test]
    fn a_prompt_that_opened_the_block_starts_in_reasoning() {
        assert_eq!(
            split(true, &["Let me see", ".\n</th", "ink>\n\nFour."]),
            pair("Let me see.\n", "Four.")
        );
    }

    #[test]
    fn no_opener_means_all_answer() {
        assert_eq!(
            split(false, &["  Hello ", "<think>x</think>"]),
            pair("", "  Hello <think>x</think>")
        );
        // A false start of the opener is answer text too.
        assert_eq!(split(false, &["<thi", "s is it"]), pair("", "<this is it"));
    }

    #[test]
    fn a_cut_inside_the_thinking_keeps_it_as_reasoning() {
        // max_tokens (or a stop string) ended the output in the block or mid-closer.
        assert_eq!(
            split(true, &["Hmm, let me think"]),
            pair("Hmm, let me think", "")
        );
        assert_eq!(split(true, &["Hmm</thi"]), pair("Hmm</thi", ""));
        assert_eq!(split(false, &["<think>Hmm"]), pair("Hmm", ""));
        assert_eq!(split(false, &["<thi"]), pair("", "<thi"));
    }

    #[test]
    fn only_the_first_closer_ends_the_thinking() {
        assert_eq!(
            split(true, &["a</think>b</think>c"]),
            pair("a", "b</think>c")
        );
    }

    #[test]
    fn nothing_but_markers_leaves_both_empty() {
        assert_eq!(split(true, &["\n</think>\n\n"]), pair("", ""));
        assert_eq!(split(false, &["<think></think>"]), pair("", ""));
    }

    #[test]
    fn only_the_prompts_end_opens_the_block() {
        assert!(prompt_opens(THINK, "<|im_start|>assistant\n<think>\n"));
        assert!(!prompt_opens(
            THINK,
            "<|im_start|>assistant\n<think>\n\n</think>\n\n"
        ));
        assert!(!prompt_opens(
            THINK,
            "<|im_start|>user\nsay <think><|im_end|>\n<|im_start|>assistant\n"
        ));
    }

    #[test]
    fn auto_follows_the_template() {
        let qwen3 = "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}";
        assert_eq!(ReasoningSetting::Auto.resolve(Some(qwen3)), Some(THINK));
        assert_eq!(ReasoningSetting::Auto.resolve(Some("{{ messages }}")), None);
        assert_eq!(ReasoningSetting::Auto.resolve(None), None);
        assert_eq!(ReasoningSetting::Format(THINK).resolve(None), Some(THINK));
        assert_eq!(ReasoningSetting::None.resolve(Some(qwen3)), None);
    }

    fn format(name: &str) -> ReasoningFormat {
        match ReasoningSetting::try_from(name.to_string()) {
            Ok(ReasoningSetting::Format(f)) => f,
            other => panic!("{name}: {other:?}"),
        }
    }

    /// Split `text` fed one character at a time (every marker arrives in pieces).
    fn split_chars(f: ReasoningFormat, text: &str) -> (String, String) {
        let mut s = Split::new(f, false);
        let (mut r, mut c) = (String::new(), String::new());
        for ch in text.chars() {
            let o = s.push(&ch.to_string());
            r.push_str(&o.reasoning);
            c.push_str(&o.content);
        }
        let o = s.finish();
        (r + &o.reasoning, c + &o.content)
    }

    /// Issue 29: each family's thinking markers, written as its models write them.
    #[test]
    fn every_format_splits_its_families_output() {
        let harmony = format("harmony");
        assert_eq!(
            split_chars(
                harmony,
                "<|channel|>analysis<|message|>User wants weather.<|end|><|start|>assistant<|channel|>final<|message|>It is sunny."
            ),
            pair("User wants weather.", "It is sunny.")
        );
        // No analysis: the final channel's header is still no answer text.
        assert_eq!(
            split_chars(harmony, "<|channel|>final<|message|>Hi."),
            pair("", "Hi.")
        );
        // A call after the analysis keeps its channel for the tool parser.
        assert_eq!(
            split_chars(
                harmony,
                "<|channel|>analysis<|message|>Call it.<|end|><|start|>assistant<|channel|>commentary to=functions.f <|constrain|>json<|message|>{}"
            ),
            pair("Call it.", "<|channel|>commentary to=functions.f <|constrain|>json<|message|>{}")
        );
        assert_eq!(
            split_chars(format("seed"), "<seed:think>hmm</seed:think>\nAnswer."),
            pair("hmm", "Answer.")
        );
        assert_eq!(
            split_chars(
                format("command"),
                "<|START_THINKING|>plan<|END_THINKING|><|START_RESPONSE|>Done."
            ),
            pair("plan", "Done.")
        );
        assert_eq!(
            split_chars(format("mistral"), "[THINK]step[/THINK]Result."),
            pair("step", "Result.")
        );
        assert_eq!(
            split_chars(format("hunyuan"), "<think:opensource>x</think:opensource>y"),
            pair("x", "y")
        );
        assert_eq!(
            split_chars(format("gemma4"), "<|channel>thought\nplan<channel|>Done."),
            pair("plan", "Done.")
        );
        assert_eq!(
            split_chars(
                format("kimi-k3"),
                "<|open|>think<|sep|>hm<|close|>think<|sep|><|open|>response<|sep|>Yes."
            ),
            pair("hm", "Yes.")
        );
        // Text that only starts like a header is answer text.
        assert_eq!(
            split_chars(harmony, "<|channel|>analysis<|message|>a<|end|><|st>"),
            pair("a", "<|st>")
        );
    }

    #[test]
    fn auto_picks_the_format_whose_opener_the_template_mentions() {
        let gpt_oss = "{%- if \"<|channel|>analysis<|message|>\" in message.content %}<think>";
        assert_eq!(
            ReasoningSetting::Auto.resolve(Some(gpt_oss)),
            Some(format("harmony"))
        );
        let seed = "{{ '<seed:think>' + m.reasoning_content + '</seed:think>' }}";
        assert_eq!(
            ReasoningSetting::Auto.resolve(Some(seed)),
            Some(format("seed"))
        );
        let err = ReasoningSetting::try_from("thinking".to_string()).unwrap_err();
        assert!(err.contains("harmony") && err.contains("think"), "{err}");
        assert_eq!(
            format("harmony").forced_close(),
            "<|end|><|start|>assistant"
        );
        assert_eq!(THINK.forced_close(), "\n</think>\n\n");
    }

    #[test]
    fn effort_maps_to_budgets() {
        let b = Budgets {
            low: 10,
            medium: 20,
        };
        assert_eq!(b.of(None), None);
        assert_eq!(b.of(Some(Effort::None)), Some(0));
        assert_eq!(b.of(Some(Effort::Minimal)), Some(0));
        assert_eq!(b.of(Some(Effort::Low)), Some(10));
        assert_eq!(b.of(Some(Effort::Medium)), Some(20));
        assert_eq!(b.of(Some(Effort::High)), None);
        for name in ["none", "minimal", "low", "medium", "high"] {
            assert_eq!(Effort::parse(name).map(Effort::name), Some(name));
        }
        assert_eq!(Effort::parse("max"), None);
        // A forced tool call thinks within the low budget unless the request says more.
        assert_eq!(b.for_request(None, true), Some(10));
        assert_eq!(b.for_request(None, false), None);
        assert_eq!(b.for_request(Some(Effort::High), true), None);
        assert_eq!(b.for_request(Some(Effort::None), true), Some(0));
    }

    /// A run over one-character tokens: what the model "samples" is `model`, except
    /// where the run forces its closer.
    fn drive(budget: Option<u32>, opened: bool, model: &str) -> (String, String, u32) {
        let closer: Vec<char> = THINK.forced_close().chars().collect();
        let plan = Plan {
            format: THINK,
            budget,
        };
        let mut run = Run::new(plan, opened, closer);
        let (mut r, mut c) = (String::new(), String::new());
        let mut sampled = model.chars();
        loop {
            let token = match run.forced() {
                Some(t) => t,
                None => match sampled.next() {
                    Some(t) => t,
                    None => break,
                },
            };
            let o = run.push(&token.to_string());
            r.push_str(&o.reasoning);
            c.push_str(&o.content);
        }
        let o = run.finish();
        (r + &o.reasoning, c + &o.content, run.tokens())
    }

    #[test]
    fn a_spent_budget_forces_the_closer_and_the_answer_follows() {
        // Budget 5: five thinking tokens, then the closer "\n</think>\n\n" (11
        // one-character tokens) is forced; the model's own text goes on as the answer.
        let (r, c, n) = drive(Some(5), true, "abcdefgh");
        assert_eq!((r.as_str(), c.as_str()), ("abcde\n", "fgh"));
        assert_eq!(n, 5 + 9, "the closer's last character ends the thinking");
        // No budget: the model's own closer ends the thinking.
        let (r, c, n) = drive(None, true, "ab</think>cd");
        assert_eq!((r.as_str(), c.as_str(), n), ("ab", "cd", 10));
        // Budget 0 ("none"): the closer comes first; all the model says is answer.
        let (r, c, _) = drive(Some(0), true, "xy");
        assert_eq!((r.as_str(), c.as_str()), ("", "xy"));
    }

    #[test]
    fn the_constraint_waits_only_for_a_block_the_prompt_opened() {
        let plan = Plan {
            format: THINK,
            budget: None,
        };
        let mut run: Run<char> = Run::new(plan, true, Vec::new());
        assert!(run.constraint_waits());
        run.push("hm</thi");
        assert!(run.constraint_waits());
        // From the first token after the closer (whitespace included: the constraint
        // decides whether the answer may start with it).
        run.push("nk>");
        assert!(!run.constraint_waits());
        let run: Run<char> = Run::new(plan, false, Vec::new());
        assert!(!run.constraint_waits());
    }
}
