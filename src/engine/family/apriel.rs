//! ServiceNow Apriel 1.5/1.6: `<tool_calls>` and a JSON list of calls, `</tool_calls>`.

use super::Family;

pub static FAMILY: Family = Family {
    name: "apriel",
    models: "Apriel 1.5, 1.6",
    renders: &["<tool_calls>[{\"name\": \"get_weather\""],
    source: &[],
    opener: "<tool_calls>",
    triggers: &["<tool_calls>"],
    json_at_start: false,
    call_open: &["<tool_calls>"],
    noise: &["[BEGIN FINAL RESPONSE]", "[END FINAL RESPONSE]", "<|end|>"],
    body: super::JSON_LIST,
    closer: "</tool_calls>",
    repeats: false,
    reasoning: "",
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
                    name: "a final response",
                    text: "[BEGIN FINAL RESPONSE]It is 21 C.[END FINAL RESPONSE]",
                    content: "It is 21 C.",
                    calls: &[],
                },
                Vector {
                    name: "two calls",
                    text: "<tool_calls>[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}, {\"name\": \"add\", \"arguments\": {\"a\": 2}}]</tool_calls>",
                    content: "",
                    calls: &[("get_weather", r#"{"city":"Paris"}"#), ("add", r#"{"a":2}"#)],
                },
            ],
        );
    }
}
