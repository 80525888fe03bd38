//! Built-in chat templates by family (`model.chat_template = "chatml"` …), for GGUF files
//! that carry no template or a wrong one. Each is written here from the family's
//! documented prompt format (not copied from a model repository), in the Hugging Face
//! Jinja dialect `engine::template` renders. None of them has a tool syntax of its own, so
//! tool calls and results go through the generic JSON format (`template::flatten`); a
//! family's native tool format needs `model.chat_template_file` with that family's own
//! template.

use serde::Deserialize;

/// The families `model.chat_template` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// `<|im_start|>role\n…<|im_end|>` (Qwen, SmolLM, Hermes, many fine-tunes).
    Chatml,
    /// Llama 3.x: `<|start_header_id|>role<|end_header_id|>\n\n…<|eot_id|>`; tool results
    /// in the `ipython` role.
    Llama3,
    /// Mistral instruct: `[INST] … [/INST]`, the system text before the first user turn,
    /// tool results in `[TOOL_RESULTS] … [/TOOL_RESULTS]`.
    Mistral,
    /// Gemma: `<start_of_turn>user|model\n…<end_of_turn>`, the system text in the first
    /// user turn.
    Gemma,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Chatml => "chatml",
            Family::Llama3 => "llama3",
            Family::Mistral => "mistral",
            Family::Gemma => "gemma",
        }
    }

    /// The template's Jinja source.
    pub fn source(self) -> &'static str {
        match self {
            Family::Chatml => CHATML,
            Family::Llama3 => LLAMA3,
            Family::Mistral => MISTRAL,
            Family::Gemma => GEMMA,
        }
    }
}

const CHATML: &str = "{%- for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

const LLAMA3: &str = "{{- bos_token }}{%- for m in messages %}<|start_header_id|>{{ 'ipython' if m.role == 'tool' else m.role }}<|end_header_id|>\n\n{{ m.content | trim }}<|eot_id|>{%- endfor %}{%- if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}";

const MISTRAL: &str = "{{- bos_token }}{%- set ns = namespace(system='') %}{%- for m in messages %}{%- if m.role == 'system' %}{%- set ns.system = ns.system + m.content + '\n\n' %}{%- elif m.role == 'user' %}[INST] {{ ns.system }}{{ m.content }}[/INST]{%- set ns.system = '' %}{%- elif m.role == 'assistant' %}{{ m.content }}{{ eos_token }}{%- elif m.role == 'tool' %}[TOOL_RESULTS] {{ m.content }}[/TOOL_RESULTS]{%- endif %}{%- endfor %}";

const GEMMA: &str = "{{- bos_token }}{%- set ns = namespace(system='') %}{%- for m in messages %}{%- if m.role == 'system' %}{%- set ns.system = ns.system + m.content + '\n\n' %}{%- else %}<start_of_turn>{{ 'model' if m.role == 'assistant' else 'user' }}\n{{ ns.system }}{{ m.content | trim }}<end_of_turn>\n{% set ns.system = '' %}{%- endif %}{%- endfor %}{%- if add_generation_prompt %}<start_of_turn>model\n{% endif %}";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::template::{probe, sample_conversation, sample_tools, ChatTemplate};

    fn render(f: Family) -> String {
        ChatTemplate::new(f.source(), "<s>", "</s>")
            .and_then(|t| t.render(&sample_conversation(), &sample_tools()))
            .unwrap_or_else(|e| panic!("{}: {e}", f.name()))
    }

    #[test]
    fn chatml_renders_each_turn_in_its_role() {
        let text = render(Family::Chatml);
        assert!(text.starts_with("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is the weather in Paris?<|im_end|>\n"), "{text}");
        // The generic tool format: the call as JSON in the assistant turn, the result in
        // a tool turn.
        assert!(
            text.contains("<|im_start|>assistant\n{\"tool_calls\":[{"),
            "{text}"
        );
        assert!(
            text.contains("<|im_start|>tool\n{\"tool_response\":"),
            "{text}"
        );
        assert!(
            text.ends_with("<|im_start|>user\nThanks!<|im_end|>\n<|im_start|>assistant\n"),
            "{text}"
        );
    }

    #[test]
    fn llama3_uses_headers_and_the_ipython_role_for_tool_results() {
        let text = render(Family::Llama3);
        assert!(text.starts_with("<s><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>"), "{text}");
        assert!(
            text.contains("<|start_header_id|>ipython<|end_header_id|>\n\n{\"tool_response\":"),
            "{text}"
        );
        assert!(
            text.ends_with("<|start_header_id|>assistant<|end_header_id|>\n\n"),
            "{text}"
        );
    }

    #[test]
    fn mistral_puts_the_system_text_in_the_first_instruction() {
        let text = render(Family::Mistral);
        assert!(
            text.starts_with(
                "<s>[INST] You are a helpful assistant.\n\nWhat is the weather in Paris?[/INST]"
            ),
            "{text}"
        );
        assert!(
            text.contains("[TOOL_RESULTS] {\"tool_response\":"),
            "{text}"
        );
        assert!(
            text.contains("It is 21 °C in Paris.</s>[INST] Thanks![/INST]"),
            "{text}"
        );
        assert!(text.ends_with("[/INST]"), "{text}");
    }

    #[test]
    fn gemma_has_user_and_model_turns_only() {
        let text = render(Family::Gemma);
        assert!(text.starts_with("<s><start_of_turn>user\nYou are a helpful assistant.\n\nWhat is the weather in Paris?<end_of_turn>\n"), "{text}");
        assert!(
            text.contains("<start_of_turn>model\nIt is 21 °C in Paris.<end_of_turn>"),
            "{text}"
        );
        assert!(!text.contains("system"), "{text}");
        assert!(text.ends_with("<start_of_turn>model\n"), "{text}");
    }

    #[test]
    fn every_family_renders_the_probe_and_has_no_tool_syntax_of_its_own() {
        for f in [
            Family::Chatml,
            Family::Llama3,
            Family::Mistral,
            Family::Gemma,
        ] {
            let t = ChatTemplate::new(f.source(), "", "").unwrap();
            assert!(t.render(&probe(), &[]).is_ok(), "{}", f.name());
            assert!(!t.supports_tools(), "{} would get tool objects", f.name());
        }
    }
}
