//! Mistral's newer tokenizers (Small 3.2, Devstral, Ministral 3, Magistral): each call
//! is `[TOOL_CALLS]` NAME `[ARGS]` and its arguments as a JSON object.

use super::{Body, Family, Sep};

pub static FAMILY: Family = Family {
    name: "mistral-args",
    models: "Mistral Small 3.2, Devstral, Ministral 3, Magistral",
    renders: &["[TOOL_CALLS]get_weather[ARGS]"],
    source: &["[TOOL_CALLS]", "[ARGS]"],
    opener: "[TOOL_CALLS]",
    triggers: &["[TOOL_CALLS]"],
    json_at_start: false,
    call_open: &["[TOOL_CALLS]"],
    noise: &[],
    body: Body::Named {
        pre: None,
        sep: Sep {
            find: "[ARGS]",
            lark: "{{[ARGS]}}",
        },
    },
    closer: "",
    repeats: true,
    reasoning: "[THINK]",
};

#[cfg(test)]
mod tests {
    use super::super::vectors::{check, Vector};

    #[test]
    fn vectors() {
        check(
            &super::FAMILY,
            r#"get_weather[ARGS]{"city":"Paris"}"#,
            &[
                Vector { name: "plain", text: "Salut.", content: "Salut.", calls: &[] },
                Vector {
                    name: "two calls",
                    text: "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Paris\"}[TOOL_CALLS]add[ARGS]{\"a\": 4}",
                    content: "",
                    calls: &[("get_weather", r#"{"city":"Paris"}"#), ("add", r#"{"a":4}"#)],
                },
                Vector {
                    name: "cut in the arguments",
                    text: "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Par",
                    content: "",
                    calls: &[],
                },
                Vector {
                    name: "cut in the name",
                    text: "Sure. [TOOL_CALLS]get_wea",
                    content: "Sure.",
                    calls: &[],
                },
                Vector {
                    name: "a marker inside a string argument",
                    text: "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"[TOOL_CALLS]x[ARGS]\"}",
                    content: "",
                    calls: &[("get_weather", r#"{"city":"[TOOL_CALLS]x[ARGS]"}"#)],
                },
            ],
        );
    }
}
