//! The chat-template corpus end to end (issue 28): for each of the 71 real templates
//! (llama.cpp's models/templates/, fetched by `.ci/template-corpus`), the real binary
//! starts with `model.chat_template_file` set to it and serves, over TLS with a key, with
//! the real test model: a plain chat, a named tool call after a tool-result turn (the
//! second turn of every agent loop), and a `required` one streamed — in the tool syntax of
//! the template's family (`EXPECTED_FAMILY`, which the server's log must name). One
//! server start per template. (Byte parity with transformers is `template_parity.rs`, in the fast tier.)

mod common;

use common::*;
use serde_json::{json, Value};

fn tools() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}}])
}

/// A tool-result turn, then a forced call: the model must call get_weather again.
/// 160 tokens: the test model's vocabulary has none of the families' markers as tokens,
/// so an opener such as DeepSeek's `<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>` takes it
/// dozens of tokens (a model of the family writes each marker as one).
fn agent_turn(stream: bool) -> Value {
    // Whole: a named call; streamed: `required` (the one tool): both forced choices.
    let choice = match stream {
        false => json!({"type": "function", "function": {"name": "get_weather"}}),
        true => json!("required"),
    };
    json!({"model": MODEL_ID, "max_tokens": 160, "temperature": 0, "stream": stream,
        "tools": tools(),
        "tool_choice": choice, "parallel_tool_calls": false,
        "messages": [
            {"role": "system", "content": "You answer questions about the weather."},
            {"role": "user", "content": "Weather in Paris, then in Rome?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1",
                "type": "function", "function": {"name": "get_weather",
                "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "21 C, sunny"}]})
}

/// What went wrong for one template, or None.
async fn serve(template: &std::path::Path) -> Option<String> {
    let server = Server::start_with(Options {
        // 4096: the longest templates put ~1 800 tokens of tool instructions around
        // this conversation (the test model was trained on 8192). A forced call on a
        // thinking template thinks within the low budget: 4 tokens here, so the call
        // fits in `max_tokens`.
        model_section: format!(
            "context = 4096\nthreads = 2\nreasoning_budget_low = 4\n\
             chat_template_file = \"{}\"\n",
            template.display()
        ),
        ..Options::default()
    });
    // The family `model.tool_format = "auto"` chose, from the server's own log line.
    let family = server
        .log_text()
        .lines()
        .find(|l| l.contains("model.tool_format"))
        .and_then(|l| l.split("value=").nth(1))
        .map(|v| {
            v.split_whitespace()
                .next()
                .unwrap_or("")
                .trim_matches('"')
                .to_string()
        });
    let expected = expected_family(template);
    if family.as_deref() != Some(expected) {
        return Some(format!("served as {family:?}, its family is {expected}"));
    }
    let mut c = server.client().await;
    let plain = json!({"model": MODEL_ID, "max_tokens": 2, "temperature": 0,
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "Hello!"}]});
    let r = c.post("/v1/chat/completions", Some(ALICE), &plain).await;
    if r.status != 200 {
        return Some(format!(
            "plain chat: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ));
    }
    if r.json()["choices"][0]["message"]["role"] != "assistant" {
        return Some(format!("plain chat: {}", r.json()));
    }

    let r = c
        .post("/v1/chat/completions", Some(ALICE), &agent_turn(false))
        .await;
    if r.status != 200 {
        return Some(format!(
            "tool turn: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ));
    }
    let v = r.json();
    let choice = &v["choices"][0];
    let call = &choice["message"]["tool_calls"][0];
    let args: Option<Value> = call["function"]["arguments"]
        .as_str()
        .and_then(|a| serde_json::from_str(a).ok());
    if choice["finish_reason"] != "tool_calls"
        || call["function"]["name"] != "get_weather"
        || !args.as_ref().is_some_and(|a| a["city"].is_string())
    {
        return Some(format!("tool turn: no get_weather call: {v}"));
    }

    let r = c
        .post("/v1/chat/completions", Some(ALICE), &agent_turn(true))
        .await;
    if r.status != 200 {
        return Some(format!(
            "streamed call: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ));
    }
    let events = sse_events(&r.body);
    if events.last().map(String::as_str) != Some("[DONE]") {
        return Some(format!("streamed call: no [DONE]: {events:?}"));
    }
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let mut name = String::new();
    let mut arguments = String::new();
    let mut finish = Value::Null;
    for ch in &chunks {
        let choice = &ch["choices"][0];
        for d in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            name.push_str(d["function"]["name"].as_str().unwrap_or(""));
            arguments.push_str(d["function"]["arguments"].as_str().unwrap_or(""));
        }
        if !choice["finish_reason"].is_null() {
            finish = choice["finish_reason"].clone();
        }
    }
    let args: Option<Value> = serde_json::from_str(&arguments).ok();
    if finish != "tool_calls"
        || name != "get_weather"
        || !args.as_ref().is_some_and(|a| a["city"].is_string())
    {
        return Some(format!(
            "streamed call: finish {finish}, name {name:?}, arguments {arguments:?}"
        ));
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_corpus_template_serves_chat_a_tool_result_turn_and_a_streamed_call() {
    let mut failed = Vec::new();
    let templates = template_corpus();
    for path in &templates {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        match serve(path).await {
            None => eprintln!("served  {name}"),
            Some(why) => {
                eprintln!("FAILED  {name}: {why}");
                failed.push(format!("{name}: {why}"));
            }
        }
    }
    eprintln!(
        "templates served end to end (plain chat, named call after a tool result, streamed): {}/{}",
        templates.len() - failed.len(),
        templates.len()
    );
    assert!(failed.is_empty(), "{failed:#?}");
}
