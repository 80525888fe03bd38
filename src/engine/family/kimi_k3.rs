//! Kimi K3: a `tools` block of `<|open|>call tool="NAME" index="N"<|sep|>` elements, each
//! argument an `<|open|>argument key="KEY" type="T"<|sep|>VALUE<|close|>argument<|sep|>`
//! element; thinking in a `think` block.

use super::{Body, Family, Sep};

pub static FAMILY: Family = Family {
    name: "kimi-k3",
    models: "Kimi K3",
    renders: &["<|open|>call tool=\"get_weather\""],
    source: &[],
    opener: "<|open|>tools<|sep|><|open|>call tool=\"",
    triggers: &["<|open|>call tool=\""],
    json_at_start: false,
    call_open: &["<|open|>call tool=\""],
    noise: &[
        "<|open|>tools<|sep|>",
        "<|close|>tools<|sep|>",
        "<|open|>response<|sep|>",
        "<|close|>response<|sep|>",
        "<|close|>message<|sep|>",
    ],
    body: Body::Params {
        sep: Sep {
            find: "<|sep|>",
            lark: "\"\\\" index=\\\"\" /[0-9]{1,2}/ \"\\\"\" {{<|sep|>}}",
        },
        param: "<|open|>argument key=\"",
        key_close: Sep {
            find: "<|sep|>",
            lark: "\"\\\" type=\\\"\" /[a-z]{1,12}/ \"\\\"\" {{<|sep|>}}",
        },
        value_close: "<|close|>argument<|sep|>",
        close_names_key: false,
        end: "<|close|>call<|sep|>",
    },
    closer: "<|close|>tools<|sep|>",
    repeats: false,
    reasoning: "<|open|>think<|sep|>",
};

#[cfg(test)]
mod tests {
    use super::super::vectors::{check, Vector};

    #[test]
    fn vectors() {
        check(
            &super::FAMILY,
            "get_weather\" index=\"1\"<|sep|><|open|>argument key=\"city\" type=\"string\"<|sep|>Paris<|close|>argument<|sep|><|close|>call<|sep|>",
            &[
                Vector {
                    name: "a response",
                    text: "<|open|>response<|sep|>Hi.<|close|>response<|sep|>",
                    content: "Hi.",
                    calls: &[],
                },
                Vector {
                    name: "one call, typed",
                    text: "<|open|>tools<|sep|><|open|>call tool=\"add\" index=\"1\"<|sep|><|open|>argument key=\"a\" type=\"integer\"<|sep|>4<|close|>argument<|sep|><|close|>call<|sep|><|close|>tools<|sep|>",
                    content: "",
                    calls: &[("add", r#"{"a":4}"#)],
                },
                Vector {
                    name: "cut in the value",
                    text: "<|open|>tools<|sep|><|open|>call tool=\"get_weather\" index=\"1\"<|sep|><|open|>argument key=\"city\" type=\"string\"<|sep|>Par",
                    content: "",
                    calls: &[],
                },
            ],
        );
    }
}
