//! Cohere Command R7B and Command A (Cohere2): `<|START_ACTION|>` and a JSON list of
//! `{"tool_call_id", "tool_name", "parameters"}` objects, `<|END_ACTION|>`; thinking in
//! `<|START_THINKING|>`.

use super::{Body, Family};

pub static FAMILY: Family = Family {
    name: "command-r7b",
    models: "Command R7B, Command A (Cohere2)",
    renders: &["<|START_ACTION|>[\n    {\"tool_call_id\": \"0\", \"tool_name\": \"get_weather\""],
    source: &[],
    opener: "<|START_ACTION|>",
    triggers: &["<|START_ACTION|>"],
    json_at_start: false,
    call_open: &["<|START_ACTION|>"],
    noise: &["<|START_RESPONSE|>", "<|END_RESPONSE|>"],
    body: Body::Object {
        name: "tool_name",
        args: "parameters",
        id: Some("tool_call_id"),
        list: true,
    },
    closer: "<|END_ACTION|>",
    repeats: false,
    reasoning: "<|START_THINKING|>",
};

#[cfg(test)]
mod tests {
    use super::super::vectors::{check, Vector};

    #[test]
    fn vectors() {
        check(
            &super::FAMILY,
            r#"[{"tool_call_id":"0","tool_name":"get_weather","parameters":{"city":"Paris"}}]"#,
            &[
                Vector {
                    name: "a response",
                    text: "<|START_RESPONSE|>Hello.<|END_RESPONSE|>",
                    content: "Hello.",
                    calls: &[],
                },
                Vector {
                    name: "two calls",
                    text: "<|START_ACTION|>[\n    {\"tool_call_id\": \"0\", \"tool_name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}},\n    {\"tool_call_id\": \"1\", \"tool_name\": \"add\", \"parameters\": {\"a\": 1}}\n]<|END_ACTION|>",
                    content: "",
                    calls: &[("get_weather", r#"{"city":"Paris"}"#), ("add", r#"{"a":1}"#)],
                },
                Vector {
                    name: "cut in the second call",
                    text: "<|START_ACTION|>[{\"tool_call_id\": \"0\", \"tool_name\": \"add\", \"parameters\": {\"a\": 1}}, {\"tool_call_id\": \"1\", \"tool_na",
                    content: "",
                    calls: &[("add", r#"{"a":1}"#)],
                },
            ],
        );
    }
}
