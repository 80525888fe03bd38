//! MiniMax M3: every line behind its `]<]minimax[>[` mark; a `<tool_call>` block of
//! `<invoke name="NAME">` elements, each argument an element named after it
//! (`<city>Paris</city>`); thinking in `<mm:think>`.

use super::{Body, Family, Sep};

pub static FAMILY: Family = Family {
    name: "minimax-m3",
    models: "MiniMax M3",
    renders: &["]<]minimax[>[<invoke name=\"get_weather\">"],
    source: &[],
    opener: "]<]minimax[>[<tool_call>\n]<]minimax[>[<invoke name=\"",
    triggers: &["<invoke name=\""],
    json_at_start: false,
    call_open: &["<invoke name=\""],
    noise: &[
        "]<]minimax[>[<tool_call>",
        "]<]minimax[>[</tool_call>",
        "]<]minimax[>[",
    ],
    body: Body::Params {
        sep: Sep {
            find: ">",
            lark: "\"\\\">\"",
        },
        param: "]<]minimax[>[<",
        key_close: Sep {
            find: ">",
            lark: "\">\"",
        },
        value_close: "]<]minimax[>[</",
        close_names_key: true,
        end: "]<]minimax[>[</invoke>",
    },
    closer: "\n]<]minimax[>[</tool_call>",
    repeats: true,
    reasoning: "<mm:think>",
};

#[cfg(test)]
mod tests {
    use super::super::vectors::{check, Vector};

    #[test]
    fn vectors() {
        check(
            &super::FAMILY,
            "get_weather\">]<]minimax[>[<city>Paris]<]minimax[>[</city>]<]minimax[>[</invoke>",
            &[
                Vector { name: "plain", text: "Sure.", content: "Sure.", calls: &[] },
                Vector {
                    name: "two calls, typed",
                    text: "]<]minimax[>[<tool_call>\n]<]minimax[>[<invoke name=\"add\">]<]minimax[>[<a>1]<]minimax[>[</a>]<]minimax[>[<b>2]<]minimax[>[</b>]<]minimax[>[</invoke>\n]<]minimax[>[<invoke name=\"get_weather\">]<]minimax[>[<city>Oslo]<]minimax[>[</city>]<]minimax[>[</invoke>\n]<]minimax[>[</tool_call>",
                    content: "",
                    calls: &[("add", r#"{"a":1,"b":2}"#), ("get_weather", r#"{"city":"Oslo"}"#)],
                },
                Vector {
                    name: "cut in the closing element",
                    text: "Looking.]<]minimax[>[<tool_call>\n]<]minimax[>[<invoke name=\"get_weather\">]<]minimax[>[<city>Oslo]<]minimax[>[</ci",
                    content: "Looking.",
                    calls: &[],
                },
            ],
        );
    }
}
