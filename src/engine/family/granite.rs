//! IBM Granite 3.x: `<|tool_call|>` and a JSON list of calls.

use super::Family;

pub static FAMILY: Family = Family {
    name: "granite",
    models: "Granite 3.x",
    renders: &["<|tool_call|>[{\"name\": \"get_weather\""],
    source: &["<|tool_call|>"],
    opener: "<|tool_call|>",
    triggers: &["<|tool_call|>"],
    json_at_start: false,
    call_open: &["<|tool_call|>"],
    noise: &[],
    body: super::JSON_LIST,
    closer: "",
    repeats: false,
    reasoning: "<think>",
};

#[cfg(test)]
mod tests {
    use super::super::vectors::{check, Vector};

    #[test]
    fn vectors() {
        check(
            &super::FAMILY,
            r#"[{"name":"get_weather","arguments":{"city":"Paris"}}]"#,
            &[
                Vector {
                    name: "plain",
                    text: "Hello.",
                    content: "Hello.",
                    calls: &[],
                },
                Vector {
                    name: "one call",
                    text: "<|tool_call|>[{\"name\": \"add\", \"arguments\": {\"a\": 1, \"b\": 2}}]",
                    content: "",
                    calls: &[("add", r#"{"a":1,"b":2}"#)],
                },
            ],
        );
    }
}
