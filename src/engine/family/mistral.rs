//! Mistral v3 tokenizer (Nemo, Small up to 3.1, Mixtral 8x22B): `[TOOL_CALLS]` and one
//! JSON list of every call.

use super::Family;

pub static FAMILY: Family = Family {
    name: "mistral",
    models: "Mistral Nemo, Mistral Small ≤ 3.1",
    renders: &["[TOOL_CALLS][{\"name\": \"get_weather\""],
    source: &["[TOOL_CALLS]"],
    opener: "[TOOL_CALLS]",
    triggers: &["[TOOL_CALLS]"],
    json_at_start: false,
    call_open: &["[TOOL_CALLS]"],
    noise: &[],
    body: super::JSON_LIST,
    closer: "",
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
                Vector { name: "plain", text: "Bonjour.", content: "Bonjour.", calls: &[] },
                Vector {
                    name: "two calls",
                    text: "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}, {\"name\": \"add\", \"arguments\": {\"a\": 1}}]",
                    content: "",
                    calls: &[("get_weather", r#"{"city":"Paris"}"#), ("add", r#"{"a":1}"#)],
                },
                Vector {
                    name: "cut in the second call",
                    text: "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}, {\"name\": \"add\", \"argu",
                    content: "",
                    calls: &[("get_weather", r#"{"city":"Paris"}"#)],
                },
                Vector {
                    name: "text then a call",
                    text: "Checking.[TOOL_CALLS][{\"name\": \"add\", \"arguments\": {\"a\": 1}}]",
                    content: "Checking.",
                    calls: &[("add", r#"{"a":1}"#)],
                },
            ],
        );
    }
}
