//! Hermes / Qwen (2.5, 3, QwQ), Hermes 2 Pro and 3, Granite 4.x, MiMo, Bielik,
//! Reka: each call a JSON object in its own `<tool_call>` block.

use super::Family;

pub static FAMILY: Family = Family {
    name: "hermes",
    models: "Qwen 2.5/3, QwQ, Hermes 2 Pro/3, Granite 4.x, MiMo-VL, Bielik, Reka",
    renders: &["<tool_call>\n{\"name\": \"get_weather\""],
    // A template that writes the opener and the JSON object in one string literal.
    source: &["<tool_call>\\n{\"name\""],
    opener: "<tool_call>\n",
    triggers: &["<tool_call>"],
    json_at_start: false,
    call_open: &["<tool_call>"],
    noise: &["</tool_call>"],
    body: super::JSON_CALL,
    closer: "\n</tool_call>",
    repeats: true,
    reasoning: "<think>",
};

#[cfg(test)]
mod tests {
    use super::super::vectors::{check, Vector};

    #[test]
    fn vectors() {
        check(
            &super::FAMILY,
            r#"{"name":"get_weather","arguments":{"city":"Paris"}}"#,
            &[
                Vector { name: "plain", text: "It is sunny.", content: "It is sunny.", calls: &[] },
                Vector {
                    name: "one call",
                    text: "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
                    content: "",
                    calls: &[("get_weather", r#"{"city":"Paris"}"#)],
                },
                Vector {
                    name: "text then two calls",
                    text: "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1, \"b\": 2}}\n</tool_call>",
                    content: "Let me check.",
                    calls: &[("get_weather", r#"{"city":"Paris"}"#), ("add", r#"{"a":1,"b":2}"#)],
                },
                Vector {
                    name: "arguments as a JSON string",
                    text: "<tool_call>\n{\"name\": \"add\", \"arguments\": \"{\\\"a\\\": 3}\"}\n</tool_call>",
                    content: "",
                    calls: &[("add", r#"{"a":3}"#)],
                },
                Vector {
                    name: "a marker inside a string argument",
                    text: "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"</tool_call><tool_call>\"}}\n</tool_call>",
                    content: "",
                    calls: &[("get_weather", r#"{"city":"</tool_call><tool_call>"}"#)],
                },
                Vector {
                    name: "cut in the second call",
                    text: "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_weather\", \"argu",
                    content: "",
                    calls: &[("get_weather", r#"{"city":"Paris"}"#)],
                },
                Vector {
                    name: "reasoning left in the answer, then a call",
                    text: "<think>\nweather?\n</think>\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
                    content: "<think>\nweather?\n</think>",
                    calls: &[("get_weather", r#"{"city":"Paris"}"#)],
                },
                Vector {
                    name: "not JSON after the opener stays text",
                    text: "<tool_call>get_weather(Paris)</tool_call>",
                    content: "<tool_call>get_weather(Paris)</tool_call>",
                    calls: &[],
                },
            ],
        );
    }
}
