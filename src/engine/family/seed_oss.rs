//! ByteDance Seed-OSS: Qwen3-Coder's elements inside a `<seed:tool_call>` block, thinking
//! in `<seed:think>`.

use super::Family;

pub static FAMILY: Family = Family {
    name: "seed-oss",
    models: "Seed-OSS",
    renders: &["<seed:tool_call>\n<function=get_weather>"],
    source: &[],
    opener: "<seed:tool_call>\n<function=",
    triggers: &["<function="],
    json_at_start: false,
    call_open: &["<function="],
    noise: &["<seed:tool_call>", "</seed:tool_call>"],
    body: super::qwen3_coder::BODY,
    closer: "\n</seed:tool_call>",
    repeats: true,
    reasoning: "<seed:think>",
};

#[cfg(test)]
mod tests {
    use super::super::vectors::{check, Vector};

    #[test]
    fn vectors() {
        check(
            &super::FAMILY,
            "get_weather>\n<parameter=city>Paris</parameter>\n</function>",
            &[
                Vector { name: "plain", text: "Fine.", content: "Fine.", calls: &[] },
                Vector {
                    name: "one call",
                    text: "<seed:tool_call>\n<function=add>\n<parameter=a>7</parameter>\n</function>\n</seed:tool_call>",
                    content: "",
                    calls: &[("add", r#"{"a":7}"#)],
                },
                Vector {
                    name: "cut before the parameters",
                    text: "Let me see.<seed:tool_call>\n<function=get_weather>\n",
                    content: "Let me see.",
                    calls: &[],
                },
            ],
        );
    }
}
