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
    model: &LlamaModel,
    req: &GenerateRequest,
) -> Result<LlamaSampler, EngineError> {
    let s = req.sampling;
    let n_vocab = model.n_vocab();
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
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    let log_z = f64::from(max) + sum.ln();
    let lp = |l: f32| (f64::from(l) - log_z) as f32;
    let piece = |t: i32| model.vocab().token_to_piece(LlamaToken(t), false, None);
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
        .get(token.0 as usize)
        .copied()
        .unwrap_or(f32::NEG_INFINITY);
    TokenLogprob {
        bytes: piece(token.0),
        logprob: lp(chosen),
        top: best.into_iter().map(|(t, l)| (piece(t), lp(l))).collect(),
    }
}
