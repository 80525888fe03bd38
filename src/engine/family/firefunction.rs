//! Fireworks firefunction v2 (Llama 3 based): ` functools` and a JSON list of calls.

use super::Family;

pub static FAMILY: Family = Family {
    name: "firefunction",
    models: "firefunction v2",
    renders: &["functools[{\"name\": \"get_weather\""],
    source: &[],
    opener: " functools",
    triggers: &["functools"],
    json_at_start: false,
    call_open: &["functools"],
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
                Vector { name: "plain", text: "Sure thing.", content: "Sure thing.", calls: &[] },
                Vector {
                    name: "two calls",
                    text: " functools[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}, {\"name\": \"add\", \"arguments\": {\"a\": 2}}]",
                    content: "",
                    calls: &[("get_weather", r#"{"city":"Paris"}"#), ("add", r#"{"a":2}"#)],
                },
            ],
        );
    }
}
