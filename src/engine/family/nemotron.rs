//! NVIDIA Nemotron Nano v2: `<TOOLCALL>` and a JSON list of calls, `</TOOLCALL>`.

use super::Family;

pub static FAMILY: Family = Family {
    name: "nemotron",
    models: "Nemotron Nano v2",
    renders: &["<TOOLCALL>[{\"name\": \"get_weather\""],
    source: &[],
    opener: "<TOOLCALL>",
    triggers: &["<TOOLCALL>"],
    json_at_start: false,
    call_open: &["<TOOLCALL>"],
    noise: &[],
    body: super::JSON_LIST,
    closer: "</TOOLCALL>",
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
                Vector { name: "plain", text: "Yes.", content: "Yes.", calls: &[] },
                Vector {
                    name: "text then a call",
                    text: "Let me check.\n<TOOLCALL>[{\"name\": \"add\", \"arguments\": {\"a\": 1}}]</TOOLCALL>",
                    content: "Let me check.",
                    calls: &[("add", r#"{"a":1}"#)],
                },
                Vector {
                    name: "cut",
                    text: "<TOOLCALL>[{\"name\": \"add\", \"argum",
                    content: "",
                    calls: &[],
                },
            ],
        );
    }
}
