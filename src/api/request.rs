//! Request bodies: strict JSON into typed structs, then semantic validation.
//!
//! SECURITY: every body is parsed with `deny_unknown_fields` (an unsupported field is a
//! 400 naming it, never silently ignored), duplicate fields are errors, serde_json's
//! recursion limit bounds nesting, and every number is range-checked with the field
//! named in `param`. The output is the engine's own types, so nothing unvalidated
//! crosses into the engine.

use super::error::ApiError;
use crate::config::LimitsConfig;
use crate::engine::{ChatMessage, Prompt, Sampling};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StopField {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(default)]
    pub name: Option<String>,
}

/// Fields shared by both generation endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<RawMessage>,
    #[serde(default)]
    pub max_tokens: Option<i64>,
    #[serde(default)]
    pub max_completion_tokens: Option<i64>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub stop: Option<StopField>,
    #[serde(default)]
    pub presence_penalty: Option<f64>,
    #[serde(default)]
    pub frequency_penalty: Option<f64>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub n: Option<i64>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub logprobs: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptField {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: PromptField,
    #[serde(default)]
    pub max_tokens: Option<i64>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub stop: Option<StopField>,
    #[serde(default)]
    pub presence_penalty: Option<f64>,
    #[serde(default)]
    pub frequency_penalty: Option<f64>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub n: Option<i64>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub echo: Option<bool>,
    #[serde(default)]
    pub logprobs: Option<i64>,
    #[serde(default)]
    pub best_of: Option<i64>,
    #[serde(default)]
    pub suffix: Option<String>,
}

/// A validated generation request, ready for the engine.
#[derive(Debug)]
pub struct Generation {
    pub model: String,
    pub prompt: Prompt,
    pub max_tokens: Option<u32>,
    pub stop: Vec<String>,
    pub sampling: Sampling,
    pub stream: bool,
    pub include_usage: bool,
}

/// Longest `user` tag accepted (OpenAI documents no limit; we keep it log-friendly).
const MAX_USER_LEN: usize = 256;

/// Deepest JSON nesting accepted. A valid request nests at most 5 levels (body →
/// messages → message → content parts → part); 32 leaves room for clients' extras while
/// keeping the parser's recursion far below serde_json's own limit of 128.
pub const MAX_JSON_DEPTH: usize = 32;

/// Parse a JSON body into `T`, naming the failing field in `param`.
pub fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    if std::str::from_utf8(body).is_err() {
        return Err(ApiError::bad_request("Request body is not valid UTF-8"));
    }
    if json_depth(body) > MAX_JSON_DEPTH {
        return Err(ApiError::bad_request(format!(
            "The JSON body is nested deeper than {MAX_JSON_DEPTH} levels"
        )));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        // SECURITY: a field name is client-chosen; bound what is echoed in `param`.
        let path: String = e.path().to_string().chars().take(64).collect();
        let inner = e.into_inner();
        let msg = describe_json_error(&inner);
        if path.is_empty() || path == "." {
            let param = unknown_field_name(&msg);
            match param {
                Some(p) => ApiError::invalid(msg.clone(), p),
                None => ApiError::bad_request(msg),
            }
        } else {
            ApiError::invalid(msg, path)
        }
    })?;
    de.end()
        .map_err(|_| ApiError::bad_request("Unexpected data after the JSON body"))?;
    Ok(value)
}

/// Deepest `[`/`{` nesting in `body`, ignoring brackets inside strings. A linear scan
/// with no allocation, run before the recursive parser sees the body.
pub fn json_depth(body: &[u8]) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Longest parse-error message returned; serde messages can quote client input.
const MAX_ERROR_MESSAGE: usize = 200;

fn describe_json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let text = e.to_string();
    let msg = match e.classify() {
        Category::Syntax | Category::Eof => {
            format!("We could not parse the JSON body of your request: {text}")
        }
        _ => {
            let cut = text.find(" at line ").unwrap_or(text.len());
            format!("Invalid request body: {}", redact_strings(&text[..cut]))
        }
    };
    // SECURITY: bounded, and never a quoted client string (it may be prompt text).
    msg.chars().take(MAX_ERROR_MESSAGE).collect()
}

/// Replace serde's quoted values (`string "..."`) with a placeholder.
fn redact_strings(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("string \"") {
        out.push_str(&rest[..at]);
        out.push_str("a string");
        let after = &rest[at + "string \"".len()..];
        rest = match after.find("\", ") {
            Some(end) => &after[end + 1..],
            None => "",
        };
    }
    out.push_str(rest);
    out
}

fn unknown_field_name(msg: &str) -> Option<String> {
    let rest = msg.split("unknown field `").nth(1)?;
    Some(rest.split('`').next()?.chars().take(64).collect())
}

fn check_range(
    value: Option<f64>,
    lo: f64,
    hi: f64,
    default: f64,
    param: &str,
) -> Result<f32, ApiError> {
    match value {
        None => Ok(default as f32),
        Some(v) if v.is_finite() && v >= lo && v <= hi => Ok(v as f32),
        Some(_) => Err(ApiError::invalid(
            format!("`{param}` must be a number between {lo} and {hi}"),
            param,
        )),
    }
}

fn check_max_tokens(
    value: Option<i64>,
    param: &str,
    limits: &LimitsConfig,
) -> Result<Option<u32>, ApiError> {
    match value {
        None => Ok(None),
        Some(v) if v >= 1 && v <= limits.max_tokens as i64 => Ok(Some(v as u32)),
        Some(_) => Err(ApiError::invalid(
            format!(
                "`{param}` must be between 1 and {} on this server",
                limits.max_tokens
            ),
            param,
        )),
    }
}

fn check_stop(stop: Option<StopField>, limits: &LimitsConfig) -> Result<Vec<String>, ApiError> {
    let list = match stop {
        None => vec![],
        Some(StopField::One(s)) => vec![s],
        Some(StopField::Many(v)) => v,
    };
    if list.len() > limits.max_stop as usize {
        return Err(ApiError::invalid(
            format!("`stop` may hold at most {} sequences", limits.max_stop),
            "stop",
        ));
    }
    for s in &list {
        if s.is_empty() || s.len() > limits.max_stop_bytes as usize {
            return Err(ApiError::invalid(
                format!(
                    "each stop sequence must be 1 to {} bytes",
                    limits.max_stop_bytes
                ),
                "stop",
            ));
        }
    }
    Ok(list)
}

fn check_n(n: Option<i64>) -> Result<(), ApiError> {
    match n {
        None | Some(1) => Ok(()),
        Some(_) => Err(ApiError::invalid("Only `n` = 1 is supported", "n")),
    }
}

fn check_user(user: &Option<String>) -> Result<(), ApiError> {
    match user {
        Some(u) if u.len() > MAX_USER_LEN => Err(ApiError::invalid(
            format!("`user` must be at most {MAX_USER_LEN} bytes"),
            "user",
        )),
        _ => Ok(()),
    }
}

fn check_stream(
    stream: Option<bool>,
    options: &Option<StreamOptions>,
) -> Result<(bool, bool), ApiError> {
    let stream = stream.unwrap_or(false);
    match options {
        Some(_) if !stream => Err(ApiError::invalid(
            "`stream_options` is only allowed when `stream` is true",
            "stream_options",
        )),
        Some(o) => Ok((true, o.include_usage)),
        None => Ok((stream, false)),
    }
}

/// Seeds are int64 in the API; llama.cpp takes u32. Fold deterministically. Without a
/// seed, a fresh random one is drawn.
fn seed_of(seed: Option<i64>) -> u32 {
    match seed {
        Some(s) => {
            let u = s as u64;
            (u ^ (u >> 32)) as u32
        }
        None => {
            let mut b = [0u8; 4];
            let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
            u32::from_le_bytes(b)
        }
    }
}

fn sampling(
    temperature: Option<f64>,
    top_p: Option<f64>,
    seed: Option<i64>,
    presence: Option<f64>,
    frequency: Option<f64>,
) -> Result<Sampling, ApiError> {
    Ok(Sampling {
        temperature: check_range(temperature, 0.0, 2.0, 1.0, "temperature")?,
        top_p: check_range(top_p, 0.0, 1.0, 1.0, "top_p")?,
        seed: seed_of(seed),
        presence_penalty: check_range(presence, -2.0, 2.0, 0.0, "presence_penalty")?,
        frequency_penalty: check_range(frequency, -2.0, 2.0, 0.0, "frequency_penalty")?,
    })
}

fn check_text(text: &str, param: &str) -> Result<(), ApiError> {
    // SECURITY: llama.cpp takes C strings; an embedded NUL would silently truncate.
    if text.contains('\0') {
        return Err(ApiError::invalid(
            "Text must not contain NUL characters",
            param,
        ));
    }
    Ok(())
}

impl ChatCompletionRequest {
    pub fn validate(self, limits: &LimitsConfig) -> Result<Generation, ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::invalid(
                "`messages` must not be empty",
                "messages",
            ));
        }
        if self.messages.len() > limits.max_messages as usize {
            return Err(ApiError::invalid(
                format!(
                    "`messages` may hold at most {} messages",
                    limits.max_messages
                ),
                "messages",
            ));
        }
        if self.logprobs == Some(true) {
            return Err(ApiError::invalid(
                "`logprobs` is not supported on this server",
                "logprobs",
            ));
        }
        check_n(self.n)?;
        check_user(&self.user)?;
        let (stream, include_usage) = check_stream(self.stream, &self.stream_options)?;
        let max_tokens = match self.max_completion_tokens {
            Some(_) => {
                check_max_tokens(self.max_completion_tokens, "max_completion_tokens", limits)?
            }
            None => check_max_tokens(self.max_tokens, "max_tokens", limits)?,
        };
        let mut total = 0usize;
        let mut messages = Vec::with_capacity(self.messages.len());
        for (i, m) in self.messages.into_iter().enumerate() {
            let role = match m.role.as_str() {
                "system" | "developer" => "system",
                "user" => "user",
                "assistant" => "assistant",
                "tool" | "function" => {
                    return Err(ApiError::invalid(
                        "Tool messages are not supported on this server yet",
                        format!("messages[{i}].role"),
                    ))
                }
                _ => {
                    return Err(ApiError::invalid(
                        "`role` must be one of system, developer, user, assistant",
                        format!("messages[{i}].role"),
                    ))
                }
            };
            if let Some(name) = &m.name {
                check_text(name, &format!("messages[{i}].name"))?;
            }
            let content = match m.content {
                None if role == "assistant" => String::new(),
                None => {
                    return Err(ApiError::invalid(
                        "`content` is required for this role",
                        format!("messages[{i}].content"),
                    ))
                }
                Some(Content::Text(t)) => t,
                Some(Content::Parts(parts)) => {
                    let mut joined = String::new();
                    for (j, p) in parts.into_iter().enumerate() {
                        match (p.kind.as_str(), p.text) {
                            ("text", Some(t)) => joined.push_str(&t),
                            ("text", None) => {
                                return Err(ApiError::invalid(
                                    "A text part needs `text`",
                                    format!("messages[{i}].content[{j}].text"),
                                ))
                            }
                            _ => {
                                return Err(ApiError::invalid(
                                    "Only `text` content parts are supported by this model",
                                    format!("messages[{i}].content[{j}].type"),
                                ))
                            }
                        }
                    }
                    joined
                }
            };
            check_text(&content, &format!("messages[{i}].content"))?;
            total += content.len();
            messages.push(ChatMessage {
                role: role.to_string(),
                content,
            });
        }
        if total > limits.max_prompt_bytes as usize {
            return Err(ApiError::invalid(
                format!(
                    "The messages are longer than {} bytes in total",
                    limits.max_prompt_bytes
                ),
                "messages",
            ));
        }
        Ok(Generation {
            model: self.model,
            prompt: Prompt::Chat(messages),
            max_tokens,
            stop: check_stop(self.stop, limits)?,
            sampling: sampling(
                self.temperature,
                self.top_p,
                self.seed,
                self.presence_penalty,
                self.frequency_penalty,
            )?,
            stream,
            include_usage,
        })
    }
}

impl CompletionRequest {
    pub fn validate(self, limits: &LimitsConfig) -> Result<Generation, ApiError> {
        let prompt = match self.prompt {
            PromptField::One(p) => p,
            PromptField::Many(mut v) if v.len() == 1 => v.remove(0),
            PromptField::Many(_) => {
                return Err(ApiError::invalid(
                    "Only a single prompt string is supported",
                    "prompt",
                ))
            }
        };
        if prompt.is_empty() {
            return Err(ApiError::invalid("`prompt` must not be empty", "prompt"));
        }
        if prompt.len() > limits.max_prompt_bytes as usize {
            return Err(ApiError::invalid(
                format!("`prompt` is longer than {} bytes", limits.max_prompt_bytes),
                "prompt",
            ));
        }
        check_text(&prompt, "prompt")?;
        if self.echo == Some(true) {
            return Err(ApiError::invalid(
                "`echo` is not supported on this server",
                "echo",
            ));
        }
        if matches!(self.logprobs, Some(n) if n != 0) {
            return Err(ApiError::invalid(
                "`logprobs` is not supported on this server",
                "logprobs",
            ));
        }
        if matches!(self.best_of, Some(n) if n != 1) {
            return Err(ApiError::invalid(
                "Only `best_of` = 1 is supported",
                "best_of",
            ));
        }
        if self.suffix.is_some() {
            return Err(ApiError::invalid(
                "`suffix` is not supported by this model",
                "suffix",
            ));
        }
        check_n(self.n)?;
        check_user(&self.user)?;
        let (stream, include_usage) = check_stream(self.stream, &self.stream_options)?;
        Ok(Generation {
            model: self.model,
            prompt: Prompt::Text(prompt),
            max_tokens: check_max_tokens(self.max_tokens, "max_tokens", limits)?,
            stop: check_stop(self.stop, limits)?,
            sampling: sampling(
                self.temperature,
                self.top_p,
                self.seed,
                self.presence_penalty,
                self.frequency_penalty,
            )?,
            stream,
            include_usage,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: &str) -> Result<Generation, ApiError> {
        parse_json::<ChatCompletionRequest>(body.as_bytes())?.validate(&LimitsConfig::default())
    }

    #[test]
    fn json_depth_counts_brackets_outside_strings_only() {
        assert_eq!(json_depth(br#"{"a":[1,{"b":2}]}"#), 3);
        assert_eq!(json_depth(br#"{"a":"[[[[{{{{\"]]]"}"#), 1);
        assert_eq!(json_depth(b"[]"), 1);
        assert_eq!(json_depth(b"42"), 0);
        let deep = format!("{}{}", "[".repeat(33), "]".repeat(33));
        let e = parse_json::<serde_json::Value>(deep.as_bytes()).unwrap_err();
        assert!(e.message.contains("nested deeper than 32"), "{e:?}");
        let ok = format!("{}{}", "[".repeat(32), "]".repeat(32));
        assert!(parse_json::<serde_json::Value>(ok.as_bytes()).is_ok());
        // A body nested past serde_json's own limit gets the same clear answer.
        let very = "[".repeat(100_000);
        assert!(parse_json::<serde_json::Value>(very.as_bytes()).is_err());
    }

    #[test]
    fn accepts_sdk_shaped_chat() {
        let g = chat(
            r#"{"model":"m","messages":[{"role":"system","content":"be brief"},
               {"role":"user","content":[{"type":"text","text":"hi"},{"type":"text","text":"!"}]}],
               "max_tokens":5,"temperature":0,"stop":"END","stream":true,
               "stream_options":{"include_usage":true},"seed":-1}"#,
        )
        .unwrap();
        assert!(g.stream && g.include_usage);
        assert_eq!(g.max_tokens, Some(5));
        assert_eq!(g.stop, vec!["END"]);
        match g.prompt {
            Prompt::Chat(m) => assert_eq!(m[1].content, "hi!"),
            _ => panic!(),
        }
    }

    #[test]
    fn errors_name_the_param() {
        let cases = [
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":3}"#,
                "temperature",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"top_p":-0.1}"#,
                "top_p",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":-1}"#,
                "max_tokens",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":999999}"#,
                "max_tokens",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":"5"}"#,
                "max_tokens",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":2}"#,
                "n",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"bogus":1}"#,
                "bogus",
            ),
            (
                r#"{"model":"m","messages":[{"role":"wizard","content":"x"}]}"#,
                "messages[0].role",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#,
                "messages[0].content[0].type",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user"}]}"#,
                "messages[0].content",
            ),
            (r#"{"model":"m","messages":[]}"#, "messages"),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream_options":{"include_usage":true}}"#,
                "stream_options",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"a\u0000b"}]}"#,
                "messages[0].content",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stop":["a","b","c","d","e"]}"#,
                "stop",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"frequency_penalty":1e300}"#,
                "frequency_penalty",
            ),
        ];
        for (body, param) in cases {
            let e = chat(body).unwrap_err();
            assert_eq!(e.status, hyper::StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
        }
    }

    #[test]
    fn malformed_json_and_trailing_data_are_400() {
        for body in [
            &b"{"[..],
            b"[]",
            b"{\"model\":\"m\"} x",
            b"\xff\xfe",
            b"{\"model\":\"m\",\"model\":\"n\",\"messages\":[]}",
        ] {
            let e = parse_json::<ChatCompletionRequest>(body).unwrap_err();
            assert_eq!(e.status, hyper::StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn type_errors_do_not_echo_client_strings() {
        let e = parse_json::<ChatCompletionRequest>(
            br#"{"model":"m","messages":"my private prompt text, expected by nobody"}"#,
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages"));
        assert!(!e.message.contains("private"), "{}", e.message);
        let long = format!(r#"{{"model":"m","messages":[],"{}":1}}"#, "k".repeat(5000));
        let e = parse_json::<ChatCompletionRequest>(long.as_bytes()).unwrap_err();
        assert!(
            e.message.len() <= MAX_ERROR_MESSAGE * 4,
            "{}",
            e.message.len()
        );
        assert!(e.param.unwrap().len() <= 64);
    }

    #[test]
    fn deep_nesting_is_refused_without_overflow() {
        let body = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse_json::<ChatCompletionRequest>(body.as_bytes()).is_err());
    }

    #[test]
    fn completion_fields() {
        let limits = LimitsConfig::default();
        let ok =
            parse_json::<CompletionRequest>(br#"{"model":"m","prompt":["once"],"max_tokens":3}"#)
                .unwrap()
                .validate(&limits)
                .unwrap();
        assert!(matches!(ok.prompt, Prompt::Text(ref t) if t == "once"));
        for (body, param) in [
            (r#"{"model":"m","prompt":"x","echo":true}"#, "echo"),
            (r#"{"model":"m","prompt":["a","b"]}"#, "prompt"),
            (r#"{"model":"m","prompt":""}"#, "prompt"),
            (r#"{"model":"m","prompt":"x","best_of":3}"#, "best_of"),
        ] {
            let e = parse_json::<CompletionRequest>(body.as_bytes())
                .and_then(|r| r.validate(&limits))
                .unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{body}");
        }
    }

    #[test]
    fn seed_folding_is_deterministic() {
        assert_eq!(seed_of(Some(42)), seed_of(Some(42)));
        assert_ne!(seed_of(Some(42)), seed_of(Some(43)));
    }
}
