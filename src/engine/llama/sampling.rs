//! Sampling: each request's own sampler chain, constrained sampling (only the tokens the
//! output constraint allows enter the chain), client token ids checked against the
//! vocabulary, and logprobs from the model's raw distribution.

use crate::engine::constraint::{Constraint, ConstraintError};
use crate::engine::{EngineError, GenerateRequest, TokenLogprob};
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::logit_bias::LlamaLogitBias;
use llama_cpp_2::token::LlamaToken;

/// Tokens the repetition penalties look back over (llama.cpp's default).
const PENALTY_LAST_N: i32 = 64;

/// The request's own sampler chain; sequences never share sampler state. Order as in
/// llama.cpp's common sampler: bias, penalties, truncation, temperature, draw (the output
/// constraint, when there is one, is applied before the chain: `constrained_sample`).
pub(super) fn build_sampler(
    n_vocab: i32,
    req: &GenerateRequest,
) -> Result<LlamaSampler, EngineError> {
    let s = req.sampling;
    let mut chain = Vec::new();
    if !req.logit_bias.is_empty() {
        let mut biases = Vec::with_capacity(req.logit_bias.len());
        for &(id, bias) in &req.logit_bias {
            biases.push(LlamaLogitBias::new(vocab_token(id, n_vocab)?, bias));
        }
        chain.push(LlamaSampler::logit_bias(n_vocab, &biases));
    }
    if s.presence_penalty != 0.0 || s.frequency_penalty != 0.0 || s.repeat_penalty != 1.0 {
        chain.push(LlamaSampler::penalties(
            n_vocab,
            PENALTY_LAST_N,
            s.repeat_penalty,
            s.frequency_penalty,
            s.presence_penalty,
        ));
    }
    if s.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
    } else {
        if s.top_k > 0 {
            chain.push(LlamaSampler::top_k(s.top_k as i32));
        }
        if s.top_p < 1.0 {
            chain.push(LlamaSampler::top_p(s.top_p, 1));
        }
        if s.min_p > 0.0 {
            chain.push(LlamaSampler::min_p(s.min_p, 1));
        }
        chain.push(LlamaSampler::temp(s.temperature));
        chain.push(LlamaSampler::dist(s.seed));
    }
    Ok(LlamaSampler::chain_simple(chain))
}

/// Sample under a constraint: only the tokens its mask allows enter the sampler chain,
/// and the token drawn must be one of them.
/// SECURITY: the mask is computed in Rust with fuel limits and a time budget
/// (`Constraint::mask`); nothing about it reaches llama.cpp except the candidate list,
/// which holds valid vocabulary ids only.
pub(super) fn constrained_sample(
    c: &mut Constraint,
    sampler: &mut LlamaSampler,
    logits: &[f32],
) -> Result<LlamaToken, ConstraintError> {
    let mask = c.mask()?;
    let allowed = logits
        .iter()
        .enumerate()
        .filter(|(id, _)| mask.is_allowed(*id as u32))
        .map(|(id, &logit)| LlamaTokenData::new(LlamaToken(id as i32), logit, 0.0));
    let mut candidates = LlamaTokenDataArray::from_iter(allowed, false);
    if candidates.data.is_empty() {
        // The mask allows only ids beyond the model's logits (cannot happen with the
        // model's own vocabulary): nothing can be sampled.
        return Err(ConstraintError::Dead);
    }
    sampler.apply(&mut candidates);
    let token = candidates.selected_token().ok_or(ConstraintError::Dead)?;
    if !mask.is_allowed(token.0 as u32) {
        return Err(ConstraintError::Dead);
    }
    sampler.accept(token);
    Ok(token)
}

/// A client-supplied token id, checked against the vocabulary.
/// SECURITY: llama.cpp indexes its arrays with token ids unchecked.
pub(super) fn vocab_token(id: i32, n_vocab: i32) -> Result<LlamaToken, EngineError> {
    if (0..n_vocab).contains(&id) {
        Ok(LlamaToken(id))
    } else {
        Err(EngineError::UnknownToken(id))
    }
}

/// Log-probability of `token` under the model's raw distribution at this position, and
/// the `top` most likely tokens (OpenAI reports the model's distribution, not the one
/// after temperature, penalties, bias or grammar). One pass over the vocabulary.
pub(super) fn token_logprob(
    model: &LlamaModel,
    logits: &[f32],
    token: LlamaToken,
    top: u32,
) -> TokenLogprob {
    let (logprob, best) = logprob_top(logits, token.0, top);
    let piece = |t: i32| model.vocab().token_to_piece(LlamaToken(t), false, None);
    TokenLogprob {
        bytes: piece(token.0),
        logprob,
        top: best.into_iter().map(|(t, lp)| (piece(t), lp)).collect(),
    }
}

/// The numbers behind `token_logprob`: the log-probability of `token` and the `top` most
/// likely ids with theirs, best first.
fn logprob_top(logits: &[f32], token: i32, top: u32) -> (f32, Vec<(i32, f32)>) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    let log_z = f64::from(max) + sum.ln();
    let lp = |l: f32| (f64::from(l) - log_z) as f32;
    let mut best: Vec<(i32, f32)> = Vec::with_capacity(top as usize + 1);
    if top > 0 {
        for (i, &l) in logits.iter().enumerate() {
            if best.len() < top as usize || l > best[best.len() - 1].1 {
                let at = best.partition_point(|&(_, b)| b >= l);
                best.insert(at, (i as i32, l));
                best.truncate(top as usize);
            }
        }
    }
    let chosen = logits
        .get(token as usize)
        .copied()
        .unwrap_or(f32::NEG_INFINITY);
    (
        lp(chosen),
        best.into_iter().map(|(t, l)| (t, lp(l))).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Sampling;

    #[test]
    fn logprobs_are_the_raw_distribution_best_first() {
        // ln(e^2 / (e^2 + e^1 + e^0)) etc., written out.
        let z = (2f64.exp() + 1f64.exp() + 1.0).ln();
        let (lp, top) = logprob_top(&[1.0, 2.0, 0.0], 0, 2);
        assert!((f64::from(lp) - (1.0 - z)).abs() < 1e-6);
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), [1, 0]);
        assert!((f64::from(top[0].1) - (2.0 - z)).abs() < 1e-6);
    }

    /// Per-token sampling cost at large vocabularies (issue 30): the sampler chains this
    /// engine builds, over logits the size of Gemma 3's (262,144), Qwen's (151,936) and
    /// the test model's (49,152) vocabularies, with the candidate array rebuilt every token
    /// as llama.cpp's `llama_sampler_sample` does. Printed and written to
    /// `target/sampling.md`, never asserted (`make bench`).
    #[test]
    #[ignore = "benchmark: run with `make bench`"]
    fn bench_sampling_large_vocabularies() {
        use std::fmt::Write as _;
        use std::time::Instant;
        const TOKENS: u32 = 300;
        let cases: [(&str, Sampling, Option<u32>); 4] = [
            (
                "greedy",
                Sampling {
                    temperature: 0.0,
                    ..Sampling::default()
                },
                None,
            ),
            (
                "OpenAI defaults (temperature 1, top_p 1)",
                Sampling::default(),
                None,
            ),
            (
                "temperature 0.7, top_p 0.9, presence and frequency penalties",
                Sampling {
                    temperature: 0.7,
                    top_p: 0.9,
                    presence_penalty: 0.5,
                    frequency_penalty: 0.5,
                    ..Sampling::default()
                },
                None,
            ),
            (
                "the same with logprobs, top_logprobs 5",
                Sampling {
                    temperature: 0.7,
                    top_p: 0.9,
                    presence_penalty: 0.5,
                    frequency_penalty: 0.5,
                    ..Sampling::default()
                },
                Some(5),
            ),
        ];
        let mut md = String::from(
            "## Sampling per token at large vocabularies\n\n\
             `engine::llama::sampling` (`bench_sampling_large_vocabularies`): this engine's sampler \
             chains and logprobs over synthetic logits, the candidate array rebuilt each token \
             as llama.cpp does; µs per token on one core.\n\n\
             | chain | 49,152 | 151,936 | 262,144 |\n|---|---|---|---|\n",
        );
        for (name, sampling, logprobs) in cases {
            let mut row = format!("| {name} |");
            for n_vocab in [49_152i32, 151_936, 262_144] {
                // A fixed, uneven distribution: a few likely tokens over a long tail.
                let mut logits: Vec<f32> = (0..n_vocab)
                    .map(|i| {
                        ((i.wrapping_mul(2_654_435_761u32 as i32) >> 16) % 1000) as f32 / 100.0
                    })
                    .collect();
                logits[7] = 30.0;
                logits[11] = 29.5;
                let req = request(sampling);
                let mut sampler = build_sampler(n_vocab, &req).unwrap();
                let start = Instant::now();
                for _ in 0..TOKENS {
                    let data = logits
                        .iter()
                        .enumerate()
                        .map(|(id, &l)| LlamaTokenData::new(LlamaToken(id as i32), l, 0.0));
                    let mut candidates = LlamaTokenDataArray::from_iter(data, false);
                    sampler.apply(&mut candidates);
                    let token = candidates.selected_token().unwrap();
                    sampler.accept(token);
                    if let Some(top) = logprobs {
                        std::hint::black_box(logprob_top(&logits, token.0, top));
                    }
                }
                let us = start.elapsed().as_secs_f64() * 1e6 / f64::from(TOKENS);
                let _ = write!(row, " {us:.0} |");
            }
            println!("{row}");
            md.push_str(&row);
            md.push('\n');
        }
        let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/sampling.md");
        std::fs::write(out, md).unwrap();
    }

    fn request(sampling: Sampling) -> GenerateRequest {
        let (events, _) = tokio::sync::mpsc::unbounded_channel();
        GenerateRequest {
            key_id: "bench".into(),
            owner: "bench".into(),
            prompt: crate::engine::Prompt::Text(String::new()),
            max_tokens: None,
            default_max_tokens: 1,
            stop: Vec::new(),
            sampling,
            constraint: None,
            logit_bias: Vec::new(),
            logprobs: None,
            events,
            deadline: std::time::Duration::from_secs(1),
            count_only: false,
            reasoning: None,
            tools: None,
        }
    }
}
