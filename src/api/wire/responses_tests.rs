//! The Responses wire, whole and streamed, on the same events: event order, sequence
//! numbers, output indexes (reasoning item first), tool calls, cut-offs and failures.

use super::super::{testing, Shape};
use super::*;
use crate::engine::Event;

fn wire() -> ResponsesWire {
    let echo = match json!({"temperature": 1.0, "tools": []}) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    ResponsesWire::new("r".into(), 7, "m".into(), echo)
}

fn answer(words: &[&str], reason: FinishReason) -> Vec<Event> {
    let mut v = vec![Event::Started { prompt_tokens: 5 }];
    v.extend(words.iter().map(|w| Event::Text((*w).to_string())));
    v.push(Event::Finished {
        reason,
        usage: Usage {
            prompt_tokens: 5,
            completion_tokens: words.len() as u32,
            cached_tokens: 2,
            reasoning_tokens: 0,
        },
    });
    v
}

fn shape(tools: bool, stream: bool) -> Shape {
    Shape {
        logprobs: false,
        tools,
        syntax: None,
        functions: Default::default(),
        stream,
    }
}

fn names(events: &[(Option<String>, Value)]) -> Vec<&str> {
    events
        .iter()
        .map(|(name, data)| {
            // The `event:` line and the `type` field agree.
            assert_eq!(data["type"].as_str(), name.as_deref());
            name.as_deref().unwrap_or("")
        })
        .collect()
}

#[test]
fn text_whole_and_streamed_agree() {
    let whole = testing::whole(
        &mut wire(),
        shape(false, false),
        answer(&["Hi", " there"], FinishReason::Stop),
    );
    assert_eq!(whole["object"], "response");
    assert_eq!(whole["id"], "resp_r");
    assert_eq!(whole["status"], "completed");
    assert_eq!(whole["output"][0]["type"], "message");
    assert_eq!(whole["output"][0]["content"][0]["text"], "Hi there");
    assert_eq!(whole["usage"]["input_tokens"], 5);
    assert_eq!(whole["usage"]["input_tokens_details"]["cached_tokens"], 2);
    assert_eq!(whole["usage"]["total_tokens"], 7);
    assert_eq!(whole["temperature"], 1.0, "settings are echoed");
    let (_, events) = testing::stream(
        &mut wire(),
        shape(false, true),
        answer(&["Hi", " there"], FinishReason::Stop),
    );
    assert_eq!(
        names(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let seqs: Vec<u64> = events
        .iter()
        .map(|(_, d)| d["sequence_number"].as_u64().unwrap_or(u64::MAX))
        .collect();
    assert_eq!(seqs, (0..10).collect::<Vec<u64>>());
    assert_eq!(events[0].1["response"]["status"], "in_progress");
    assert_eq!(events[6].1["text"], "Hi there");
    let done = &events[9].1["response"];
    assert_eq!(done["output"], whole["output"]);
    assert_eq!(done["usage"], whole["usage"]);
    assert_eq!(events[2].1["item"]["id"], done["output"][0]["id"]);
}

#[test]
fn tool_calls_whole_and_streamed_agree() {
    let call = r#"{"tool_calls":[{"name":"f","arguments":{"a":1}},{"name":"g","arguments":{}}]}"#;
    let whole = testing::whole(
        &mut wire(),
        shape(true, false),
        answer(&[call], FinishReason::Stop),
    );
    assert_eq!(whole["output"][0]["type"], "function_call");
    assert_eq!(whole["output"][0]["call_id"], "call_r_0_0");
    assert_eq!(whole["output"][0]["arguments"], r#"{"a":1}"#);
    assert_eq!(whole["output"][1]["name"], "g");
    let (_, events) = testing::stream(
        &mut wire(),
        shape(true, true),
        answer(&[call], FinishReason::Stop),
    );
    // Each call's item opens as soon as its name is written, its arguments follow as
    // written (here the whole answer is one piece); the items close at the end.
    let want = [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ];
    assert_eq!(names(&events), want);
    assert_eq!(events[2].1["item"]["name"], "f");
    assert_eq!(events[3].1["delta"], r#"{"a":1}"#);
    assert_eq!(events[4].1["output_index"], 1);
    assert_eq!(events[5].1["delta"], "{}");
    assert_eq!(events[7].1["item"], whole["output"][0]);
    assert_eq!(events[10].1["response"]["output"], whole["output"]);
}

#[test]
fn cut_short_is_incomplete_and_failures_are_response_failed() {
    let whole = testing::whole(
        &mut wire(),
        shape(false, false),
        answer(&["Hi"], FinishReason::Length),
    );
    assert_eq!(whole["status"], "incomplete");
    assert_eq!(whole["incomplete_details"]["reason"], "max_output_tokens");
    let (_, events) = testing::stream(
        &mut wire(),
        shape(false, true),
        answer(&["Hi"], FinishReason::Length),
    );
    assert_eq!(
        events.last().map(|e| e.0.as_deref()),
        Some(Some("response.incomplete"))
    );
    let failing = vec![
        Event::Started { prompt_tokens: 1 },
        Event::Text("a".into()),
        Event::Failed(crate::engine::EngineError::Internal),
    ];
    let (_, events) = testing::stream(&mut wire(), shape(false, true), failing);
    let (name, data) = events.last().expect("events");
    assert_eq!(name.as_deref(), Some("response.failed"));
    assert_eq!(data["response"]["status"], "failed");
    assert_eq!(data["response"]["error"]["code"], "internal_error");
}

#[test]
fn thinking_is_a_reasoning_item_before_the_answer() {
    let events = || testing::thought(FinishReason::Stop, &["Fo", "ur"]);
    let whole = testing::whole(&mut wire(), shape(false, false), events());
    assert_eq!(whole["output"][0]["type"], "reasoning", "{whole}");
    assert_eq!(whole["output"][0]["id"], "rs_r");
    assert_eq!(
        whole["output"][0]["content"],
        json!([{"type": "reasoning_text", "text": "Two and two."}])
    );
    assert_eq!(whole["output"][0]["summary"], json!([]));
    assert_eq!(whole["output"][1]["type"], "message");
    assert_eq!(whole["output"][1]["content"][0]["text"], "Four");
    assert_eq!(
        whole["usage"]["output_tokens_details"]["reasoning_tokens"],
        4
    );

    let (_, events) = testing::stream(&mut wire(), shape(false, true), events());
    assert_eq!(
        names(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.reasoning_text.delta",
            "response.reasoning_text.delta",
            "response.reasoning_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let index = |i: usize| events[i].1["output_index"].clone();
    assert_eq!(
        (index(4), index(6), index(8)),
        (json!(0), json!(0), json!(0))
    );
    assert_eq!(
        (index(9), index(11), index(15)),
        (json!(1), json!(1), json!(1))
    );
    assert_eq!(events[6].1["text"], "Two and two.");
    assert_eq!(events[8].1["item"]["status"], "completed");
    // The last event's response equals the whole body's output.
    assert_eq!(events[16].1["response"]["output"], whole["output"]);

    // Cut inside the thinking: incomplete, the reasoning item alone, in both forms.
    let cut = || testing::thought(FinishReason::Length, &[]);
    let whole = testing::whole(&mut wire(), shape(false, false), cut());
    assert_eq!(whole["status"], "incomplete");
    assert_eq!(whole["output"].as_array().map(Vec::len), Some(1), "{whole}");
    assert_eq!(whole["output"][0]["status"], "incomplete");
    let (_, events) = testing::stream(&mut wire(), shape(false, true), cut());
    let last = &events[events.len() - 1].1;
    assert_eq!(last["type"], "response.incomplete");
    assert_eq!(last["response"]["output"], whole["output"]);
    assert!(!names(&events).contains(&"response.output_text.delta"));
}
