//! OpenAI gpt-oss (harmony) and templates in its style (llm-jp 4.1 thinking): a call is a
//! `commentary` message addressed `to=functions.NAME`, its arguments a JSON object ended
//! by `<|call|>`; the answer is the `final` channel's message; thinking is the
//! `analysis` channel (`engine::reasoning`).

use super::{Body, Family, Sep};

pub static FAMILY: Family = Family {
    name: "harmony",
    models: "gpt-oss, llm-jp 4.1 thinking",
    renders: &["to=functions.get_weather<|channel|>commentary"],
    source: &[],
    opener: "<|channel|>commentary to=functions.",
    triggers: &["to=functions."],
    json_at_start: false,
    call_open: &["to=functions."],
    noise: &[
        "<|start|>assistant",
        "<|channel|>final<|message|>",
        "<|channel|>commentary<|message|>",
        "<|channel|>commentary",
        "<|channel|>analysis<|message|>",
        "<|end|>",
        "<|return|>",
        "<|call|>",
    ],
    body: Body::Named {
        pre: None,
        sep: Sep {
            find: "<|message|>",
            lark: "\" \" {{<|constrain|>}} \"json\" {{<|message|>}}",
        },
    },
    closer: "<|call|>",
    repeats: false,
    reasoning: "<|channel|>analysis",
};

#[cfg(test)]
mod tests {
    use super::super::vectors::{check, Vector};

    #[test]
    fn vectors() {
        check(
            &super::FAMILY,
            r#"get_weather <|constrain|>json<|message|>{"city":"Paris"}"#,
            &[
                Vector {
                    name: "the final channel",
                    text: "<|channel|>final<|message|>It is sunny.<|return|>",
                    content: "It is sunny.",
                    calls: &[],
                },
                Vector {
                    name: "a call, recipient in the header",
                    text: "<|start|>assistant to=functions.add<|channel|>commentary json<|message|>{\"a\": 5}<|call|>",
                    content: "",
                    calls: &[("add", r#"{"a":5}"#)],
                },
                Vector {
                    name: "a call, recipient in the channel",
                    text: "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{\"city\": \"Paris\"}<|call|>",
                    content: "",
                    calls: &[("get_weather", r#"{"city":"Paris"}"#)],
                },
                Vector {
                    name: "cut in the arguments",
                    text: "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{\"ci",
                    content: "",
                    calls: &[],
                },
            ],
        );
    }
}
