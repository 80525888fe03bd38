//! MiniMax M1: a `<tool_calls>` block with one JSON call object per line.

use super::Family;

pub static FAMILY: Family = Family {
    name: "minimax-m1",
    models: "MiniMax M1",
    renders: &["<tool_calls>\n{\"name\": \"get_weather\""],
    source: &[],
    opener: "<tool_calls>\n",
    triggers: &["<tool_calls>"],
    json_at_start: false,
    call_open: &["<tool_calls>"],
    noise: &[],
    body: super::JSON_CALL,
    closer: "\n</tool_calls>",
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
                Vector { name: "plain", text: "Sure.", content: "Sure.", calls: &[] },
                Vector {
                    name: "two calls in one block",
                    text: "<tool_calls>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n{\"name\": \"add\", \"arguments\": {\"a\": 1}}\n</tool_calls>",
                    content: "",
                    calls: &[("get_weather", r#"{"city":"Paris"}"#), ("add", r#"{"a":1}"#)],
                },
                Vector {
                    name: "cut in the second line",
                    text: "<tool_calls>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n{\"name\": \"ad",
                    content: "",
                    calls: &[("get_weather", r#"{"city":"Paris"}"#)],
                },
            ],
        );
    }
}
