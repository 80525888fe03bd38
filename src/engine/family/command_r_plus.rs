//! Cohere Command R+ (tool use template): `Action:` and a JSON list of
//! `{"tool_name", "parameters"}` objects in a json code fence.

use super::{Body, Family};

pub static FAMILY: Family = Family {
    name: "command-r-plus",
    models: "Command R+",
    renders: &["Action:\n```json\n[\n    {\n        \"tool_name\": \"get_weather\""],
    source: &["Action:", "tool_name"],
    opener: "Action:\n```json\n",
    triggers: &["```json"],
    json_at_start: false,
    call_open: &["```json"],
    noise: &["Action:", "```"],
    body: Body::Object {
        name: "tool_name",
        args: "parameters",
        id: None,
        list: true,
    },
    closer: "\n```",
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
            r#"[{"tool_name":"get_weather","parameters":{"city":"Paris"}}]"#,
            &[
                Vector { name: "plain", text: "Hello.", content: "Hello.", calls: &[] },
                Vector {
                    name: "one call",
                    text: "Action:\n```json\n[\n    {\n        \"tool_name\": \"add\",\n        \"parameters\": {\"a\": 1}\n    }\n]\n```",
                    content: "",
                    calls: &[("add", r#"{"a":1}"#)],
                },
            ],
        );
    }
}
