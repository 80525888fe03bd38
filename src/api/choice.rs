//! One choice of a completion, assembled from the engine's events: its text, its
//! log-probabilities, and (with tools) its parsed tool calls — in the shapes the OpenAI
//! SDKs parse, for whole responses and for stream chunks alike.

use super::tools::{self, Answer};
use crate::engine::{FinishReason, TokenLogprob};
use serde_json::{json, Map, Value};

/// Which endpoint's shape to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Completion,
}

/// The end of a choice as the API reports it.
pub fn finish_str(reason: FinishReason, called_tools: bool) -> &'static str {
    if called_tools {
        "tool_calls"
    } else {
        reason.as_str()
    }
}

/// Log-probabilities in the endpoint's format (None when none were asked for).
/// `offset`: bytes of completion text before the first of these tokens (legacy format).
pub fn logprobs_json(kind: Kind, lps: &[TokenLogprob], offset: &mut usize) -> Value {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match kind {
        Kind::Chat => {
            let content: Vec<Value> = lps
                .iter()
                .map(|t| {
                    let top: Vec<Value> = t
                        .top
                        .iter()
                        .map(|(b, lp)| json!({"token": text(b), "logprob": lp, "bytes": b}))
                        .collect();
                    json!({"token": text(&t.bytes), "logprob": t.logprob, "bytes": t.bytes, "top_logprobs": top})
                })
                .collect();
            json!({"content": content, "refusal": null})
        }
        Kind::Completion => {
            let mut offsets = Vec::with_capacity(lps.len());
            for t in lps {
                offsets.push(*offset);
                *offset += t.bytes.len();
            }
            let top: Vec<Value> = lps
                .iter()
                .map(|t| {
                    let m: Map<String, Value> =
                        t.top.iter().map(|(b, lp)| (text(b), json!(lp))).collect();
                    Value::Object(m)
                })
                .collect();
            json!({
                "tokens": lps.iter().map(|t| text(&t.bytes)).collect::<Vec<_>>(),
                "token_logprobs": lps.iter().map(|t| t.logprob).collect::<Vec<_>>(),
                "top_logprobs": top,
                "text_offset": offsets,
            })
        }
    }
}

/// The assistant message (or its delta) for an answer to a request with tools.
/// Returns the message fields and whether tools were called. Call ids are
/// `call_{random}_{choice}_{i}`: the response's random part keeps them unique.
pub fn tool_message(
    text: &str,
    stream: bool,
    random: &str,
    choice: usize,
) -> (Map<String, Value>, bool) {
    let mut m = Map::new();
    match tools::parse_answer(text) {
        Some(Answer::Calls(calls)) => {
            let list: Vec<Value> = calls
                .into_iter()
                .enumerate()
                .map(|(i, (name, args))| {
                    let mut call = json!({
                        "id": tools::call_id(random, choice, i),
                        "type": "function",
                        "function": {"name": name, "arguments": args},
                    });
                    if let (true, Some(o)) = (stream, call.as_object_mut()) {
                        o.insert("index".into(), json!(i));
                    }
                    call
                })
                .collect();
            m.insert("content".into(), Value::Null);
            m.insert("tool_calls".into(), Value::Array(list));
            (m, true)
        }
        Some(Answer::Content(c)) => {
            m.insert("content".into(), Value::String(c));
            (m, false)
        }
        // Cut short (max_tokens) before the JSON closed: the raw text, as content.
        None => {
            m.insert("content".into(), Value::String(text.to_string()));
            (m, false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lp(b: &str, l: f32) -> TokenLogprob {
        TokenLogprob {
            bytes: b.as_bytes().to_vec(),
            logprob: l,
            top: vec![(b.as_bytes().to_vec(), l), (b"x".to_vec(), -3.0)],
        }
    }

    #[test]
    fn logprob_shapes() {
        let mut off = 0;
        let v = logprobs_json(Kind::Chat, &[lp("Hi", -0.5)], &mut off);
        assert_eq!(v["content"][0]["token"], "Hi");
        assert_eq!(v["content"][0]["bytes"], json!([72, 105]));
        assert_eq!(v["content"][0]["top_logprobs"][1]["token"], "x");
        let v = logprobs_json(Kind::Completion, &[lp("a", -1.0), lp("bc", -2.0)], &mut off);
        assert_eq!(v["text_offset"], json!([0, 1]));
        assert_eq!(v["top_logprobs"][1]["x"], json!(-3.0));
        assert_eq!(off, 3);
    }
}
