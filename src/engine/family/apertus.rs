//! Swiss AI Apertus: `<|tools_prefix|>` and a JSON list of `{NAME: arguments}` objects,
//! `<|tools_suffix|>`.

use super::{Body, Family};

pub static FAMILY: Family = Family {
    name: "apertus",
    models: "Apertus",
    renders: &["<|tools_prefix|>[{\"get_weather\": "],
    source: &[],
    opener: "<|tools_prefix|>",
    triggers: &["<|tools_prefix|>"],
    json_at_start: false,
    call_open: &["<|tools_prefix|>"],
    noise: &[],
    body: Body::Keyed,
    closer: "<|tools_suffix|>",
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
            r#"[{"get_weather":{"city":"Paris"}}]"#,
            &[
                Vector { name: "plain", text: "Grüezi.", content: "Grüezi.", calls: &[] },
                Vector {
                    name: "two calls",
                    text: "<|tools_prefix|>[{\"get_weather\": {\"city\": \"Bern\"}}, {\"add\": {\"a\": 1}}]<|tools_suffix|>",
                    content: "",
                    calls: &[("get_weather", r#"{"city":"Bern"}"#), ("add", r#"{"a":1}"#)],
                },
                Vector {
                    name: "cut in the second call",
                    text: "<|tools_prefix|>[{\"get_weather\": {\"city\": \"Bern\"}}, {\"add\": {\"a\"",
                    content: "",
                    calls: &[("get_weather", r#"{"city":"Bern"}"#)],
                },
            ],
        );
    }
}
