//! Chat prompt rendering: the model's Jinja template (minijinja, `engine::template`), or
//! llama.cpp's built-in renderer when the template does not compile or render there.
//! Raw completion prompts pass through unchanged.

use crate::engine::reasoning::{self, ReasoningFormat};
use crate::engine::template::{self, ChatTemplate};
use crate::engine::{EngineError, Prompt};
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::token::LlamaToken;

/// How chat prompts are rendered: the model's Jinja template (minijinja), or llama.cpp's
/// built-in renderer when the template does not compile or render there.
pub enum Renderer {
    Jinja(Box<ChatTemplate>),
    Builtin(LlamaChatTemplate),
    None,
}

/// A prompt ready to decode.
pub(super) struct Rendered {
    pub tokens: Vec<LlamaToken>,
    /// The template opened the thinking block at the prompt's end
    /// (`reasoning::prompt_opens`; always false without a reasoning format).
    pub opens_reasoning: bool,
}

/// The prompt as the model's tokens; an empty one is refused.
pub(super) fn prompt_tokens(
    model: &LlamaModel,
    renderer: &Renderer,
    prompt: &Prompt,
    reasoning: Option<ReasoningFormat>,
) -> Result<Rendered, EngineError> {
    let (text, parse_special) = render_prompt(model, renderer, prompt)?;
    let tokens = model.vocab().tokenize(text.as_bytes(), true, parse_special);
    if tokens.is_empty() {
        return Err(EngineError::EmptyPrompt);
    }
    let opens_reasoning = reasoning.is_some_and(|f| reasoning::prompt_opens(f, &text));
    Ok(Rendered {
        tokens,
        opens_reasoning,
    })
}

/// The prompt text, and whether its special-token markers are to be parsed (a chat
/// template's own markers are; raw completion text never is).
fn render_prompt(
    model: &LlamaModel,
    renderer: &Renderer,
    prompt: &Prompt,
) -> Result<(String, bool), EngineError> {
    let (messages, tools, effort) = match prompt {
        Prompt::Text(t) => return Ok((t.clone(), false)),
        Prompt::Chat {
            messages,
            tools,
            effort,
        } => (messages, tools, *effort),
    };
    let text = match renderer {
        Renderer::Jinja(t) => {
            let text = t.render_effort(messages, tools, effort).map_err(|e| {
                tracing::info!(error = %e, "chat template refused the messages");
                EngineError::Template
            })?;
            // Templates that write the BOS text themselves: tokenizing adds it already.
            let bos = model
                .vocab()
                .token_to_piece(model.vocab().bos(), true, None);
            match text.as_bytes().strip_prefix(bos.as_slice()) {
                Some(rest) if !bos.is_empty() => String::from_utf8_lossy(rest).into_owned(),
                _ => text,
            }
        }
        Renderer::Builtin(template) => {
            let msgs = template::flatten(messages)
                .into_iter()
                .map(|m| LlamaChatMessage::new(m.role, m.content))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| EngineError::Template)?;
            model
                .apply_chat_template(template, &msgs, true)
                .map_err(|e| {
                    tracing::warn!(error = %e, "chat template failed");
                    EngineError::Template
                })?
        }
        Renderer::None => return Err(EngineError::NoTemplate),
    };
    Ok((text, true))
}
