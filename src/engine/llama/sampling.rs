//! Sampling: each request's own sampler chain, constrained sampling (only the tokens the
//! output constraint allows enter the chain), client token ids checked against the
//! vocabulary, and logprobs from the model's raw distribution.

use crate::engine::constraint::{Constraint, ConstraintError};
use crate::engine::{EngineError, GenerateRequest, Sampling, TokenLogprob};
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::logit_bias::LlamaLogitBias;
use llama_cpp_2::token::LlamaToken;
use std::collections::{HashMap, VecDeque};

/// Tokens the repetition penalties look back over (llama.cpp's default).
const PENALTY_LAST_N: usize = 64;

/// A request's own sampler; sequences never share sampler state. llama.cpp's chain does
/// the bias, truncation, temperature and the draw; the repetition penalties are applied
/// here (`Penalties`).
pub(super) struct Sampler {
    chain: LlamaSampler,
    penalties: Option<Penalties>,
    /// Greedy with no bias and no penalties: the most likely token is read straight
    /// from the logits (the chain would first copy the whole vocabulary into a candidate
    /// array: 1 ms per token at 262,144 tokens).
    plain_greedy: bool,
}

/// Build a request's sampler. Order as in llama.cpp's common sampler: bias, penalties,
/// truncation, temperature, draw (the output constraint, when there is one, comes before
/// all of it: `Sampler::constrained`).
pub(super) fn build_sampler(n_vocab: i32, req: &GenerateRequest) -> Result<Sampler, EngineError> {
    let s = req.sampling;
    let mut chain = Vec::new();
    if !req.logit_bias.is_empty() {
        let mut biases = Vec::with_capacity(req.logit_bias.len());
        for &(id, bias) in &req.logit_bias {
            biases.push(LlamaLogitBias::new(vocab_token(id, n_vocab)?, bias));
        }
        chain.push(LlamaSampler::logit_bias(n_vocab, &biases));
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
    let penalties = Penalties::new(&s);
    Ok(Sampler {
        plain_greedy: s.temperature <= 0.0 && req.logit_bias.is_empty() && penalties.is_none(),
        chain: LlamaSampler::chain_simple(chain),
        penalties,
    })
}

/// The index of the largest logit, the first of equals (as llama.cpp's greedy sampler
/// picks); 0 for none.
fn first_max(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best
}

/// Candidates from `logits` (those `keep` allows), in ascending id order.
fn candidates(logits: &[f32], keep: impl Fn(usize) -> bool) -> LlamaTokenDataArray {
    let kept = logits
        .iter()
        .enumerate()
        .filter(|(id, _)| keep(*id))
        .map(|(id, &logit)| LlamaTokenData::new(LlamaToken(id as i32), logit, 0.0));
    LlamaTokenDataArray::from_iter(kept, false)
}

impl Sampler {
    /// Draw the next token from this position's logits.
    pub(super) fn sample(&mut self, logits: &[f32]) -> LlamaToken {
        if self.plain_greedy {
            let token = LlamaToken(first_max(logits) as i32);
            self.accept(token);
            return token;
        }
        let mut candidates = candidates(logits, |_| true);
        let token = self.draw(&mut candidates);
        self.accept(token);
        token
    }

    /// Sample under a constraint: only the tokens its mask allows enter the sampler,
    /// and the token drawn must be one of them.
    /// SECURITY: the mask is computed in Rust with fuel limits and a time budget
    /// (`Constraint::mask`); nothing about it reaches llama.cpp except the candidate
    /// list, which holds valid vocabulary ids only.
    pub(super) fn constrained(
        &mut self,
        c: &mut Constraint,
        logits: &[f32],
    ) -> Result<LlamaToken, ConstraintError> {
        let mask = c.mask()?;
        let mut candidates = candidates(logits, |id| mask.is_allowed(id as u32));
        if candidates.data.is_empty() {
            // The mask allows only ids beyond the model's logits (cannot happen with the
            // model's own vocabulary): nothing can be sampled.
            return Err(ConstraintError::Dead);
        }
        let token = self.draw(&mut candidates);
        if !mask.is_allowed(token.0 as u32) {
            return Err(ConstraintError::Dead);
        }
        self.accept(token);
        Ok(token)
    }

    /// Record a token as chosen: drawn, or forced by the engine (the penalties see a
    /// forced token as if it had been drawn).
    pub(super) fn accept(&mut self, token: LlamaToken) {
        self.chain.accept(token);
        if let Some(p) = &mut self.penalties {
            p.accept(token);
        }
    }

    /// Penalties, then the chain, over candidates in id order; the token it selects.
    fn draw(&mut self, candidates: &mut LlamaTokenDataArray) -> LlamaToken {
        if let Some(p) = &self.penalties {
            p.apply(candidates);
        }
        self.chain.apply(candidates);
        // The chain always ends in a draw (greedy or dist), which selects a candidate;
        // were it not to, the most likely one is the answer.
        candidates.selected_token().unwrap_or_else(|| {
            candidates
                .data
                .iter()
                .max_by(|a, b| a.logit().total_cmp(&b.logit()))
                .map_or(LlamaToken(0), |d| d.id())
        })
    }
}

/// Repetition, frequency and presence penalties over the last `PENALTY_LAST_N` tokens,
/// with llama.cpp's formula. Its own penalties sampler looks every candidate up in a
/// hash map: 262,144 lookups per token on a Gemma-sized vocabulary, ~15 ms (issue 30's
/// `bench_sampling_large_vocabularies`). This touches only the window's tokens.
struct Penalties {
    window: VecDeque<LlamaToken>,
    /// How often each token of the window occurs in it (at most `PENALTY_LAST_N` keys).
    counts: HashMap<i32, u32>,
    repeat: f32,
    frequency: f32,
    presence: f32,
}

impl Penalties {
    /// None when every penalty is off.
    fn new(s: &Sampling) -> Option<Self> {
        let off =
            s.repeat_penalty == 1.0 && s.frequency_penalty == 0.0 && s.presence_penalty == 0.0;
        (!off).then(|| Self {
            window: VecDeque::with_capacity(PENALTY_LAST_N + 1),
            counts: HashMap::with_capacity(PENALTY_LAST_N + 1),
            repeat: s.repeat_penalty,
            frequency: s.frequency_penalty,
            presence: s.presence_penalty,
        })
    }

    fn accept(&mut self, token: LlamaToken) {
        *self.counts.entry(token.0).or_insert(0) += 1;
        self.window.push_back(token);
        if self.window.len() > PENALTY_LAST_N {
            if let Some(old) = self.window.pop_front() {
                if let Some(n) = self.counts.get_mut(&old.0) {
                    *n -= 1;
                    if *n == 0 {
                        self.counts.remove(&old.0);
                    }
                }
            }
        }
    }

    /// Penalize the window's tokens among `candidates`, which are in ascending id order
    /// (as built from the logits): each found by binary search.
    fn apply(&self, candidates: &mut LlamaTokenDataArray) {
        for (&id, &count) in &self.counts {
            let Ok(at) = candidates.data.binary_search_by_key(&id, |d| d.id().0) else {
                continue;
            };
            let Some(d) = candidates.data.get_mut(at) else {
                continue;
            };
            let mut logit = d.logit();
            // A negative logit is multiplied (dividing would make it more likely), as
            // llama.cpp does.
            if logit <= 0.0 {
                logit *= self.repeat;
            } else {
                logit /= self.repeat;
            }
            logit -= count as f32 * self.frequency + self.presence;
            d.set_logit(logit);
        }
        candidates.sorted = false;
    }
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

    #[test]
    fn logprobs_are_the_raw_distribution_best_first() {
        // ln(e^2 / (e^2 + e^1 + e^0)) etc., written out.
        let z = (2f64.exp() + 1f64.exp() + 1.0).ln();
        let (lp, top) = logprob_top(&[1.0, 2.0, 0.0], 0, 2);
        assert!((f64::from(lp) - (1.0 - z)).abs() < 1e-6);
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), [1, 0]);
        assert!((f64::from(top[0].1) - (2.0 - z)).abs() < 1e-6);
    }

    /// The penalties give the logits llama.cpp's own penalties sampler gives, over a
    /// history longer than the window (so tokens leave it).
    #[test]
    fn penalties_match_llama_cpp_penalties_sampler() {
        let n_vocab = 1000;
        let logits: Vec<f32> = (0..n_vocab)
            .map(|i| ((i * 37) % 200) as f32 / 10.0 - 10.0)
            .collect();
        let history: Vec<i32> = (0..150).map(|i| (i * i * 7 + 3) % 90).collect();
        let sampling = Sampling {
            repeat_penalty: 1.3,
            frequency_penalty: 0.4,
            presence_penalty: 0.6,
            ..Sampling::default()
        };
        let mut ours = Penalties::new(&sampling).unwrap();
        let mut reference = LlamaSampler::penalties(
            n_vocab,
            PENALTY_LAST_N as i32,
            sampling.repeat_penalty,
            sampling.frequency_penalty,
            sampling.presence_penalty,
        );
        for &t in &history {
            ours.accept(LlamaToken(t));
            reference.accept(LlamaToken(t));
        }
        let (mut a, mut b) = (candidates(&logits, |_| true), candidates(&logits, |_| true));
        ours.apply(&mut a);
        reference.apply(&mut b);
        let changed = a
            .data
            .iter()
            .zip(&logits)
            .filter(|(d, &l)| d.logit() != l)
            .count();
        assert!(
            changed > 10,
            "the window's tokens are penalized ({changed})"
        );
        for (x, y) in a.data.iter().zip(&b.data) {
            assert_eq!(x.id(), y.id());
            assert!((x.logit() - y.logit()).abs() < 1e-5, "{:?} {:?}", x, y);
        }
    }

    /// The plain greedy path picks what llama.cpp's greedy sampler picks, ties included.
    #[test]
    fn plain_greedy_matches_llama_cpp_greedy() {
        let mut model = LanguageModelLike::new(5000);
        let req = crate::engine::test_request(Sampling {
            temperature: 0.0,
            ..Sampling::default()
        });
        let mut ours = build_sampler(5000, &req).unwrap();
        assert!(ours.plain_greedy);
        let mut reference = LlamaSampler::greedy();
        for t in 0..50 {
            let mut logits = model.step(t).to_vec();
            if t % 5 == 0 {
                // A tie for the top: the first of the two wins.
                let top = first_max(&logits);
                let other = (top + 1 + t as usize) % logits.len();
                logits[other] = logits[top];
            }
            let mut candidates = candidates(&logits, |_| true);
            reference.apply(&mut candidates);
            assert_eq!(ours.sample(&logits), candidates.selected_token().unwrap());
        }
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
        // What an application tuning its output typically sends.
        let tuned = Sampling {
            temperature: 0.7,
            top_p: 0.9,
            presence_penalty: 0.5,
            frequency_penalty: 0.5,
            ..Sampling::default()
        };
        let cases: [(&str, Sampling, Option<u32>); 6] = [
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
                "temperature 0.7, top_p 0.9",
                Sampling {
                    temperature: 0.7,
                    top_p: 0.9,
                    ..Sampling::default()
                },
                None,
            ),
            (
                "temperature 0.7, presence and frequency penalties",
                Sampling {
                    temperature: 0.7,
                    presence_penalty: 0.5,
                    frequency_penalty: 0.5,
                    ..Sampling::default()
                },
                None,
            ),
            (
                "temperature 0.7, top_p 0.9, presence and frequency penalties",
                tuned,
                None,
            ),
            ("the same with logprobs, top_logprobs 5", tuned, Some(5)),
        ];
        let mut md = String::from(
            "## Sampling per token at large vocabularies\n\n\
             `engine::llama::sampling` (`bench_sampling_large_vocabularies`): this engine's \
             `Sampler` and logprobs over synthetic logits shaped like a language model's (a \
             bell-shaped bulk, a few peaked tokens), the candidate array refilled each token; µs \
             per token on one core. The last row is llama.cpp's own penalties sampler in the \
             chain, as before issue 30.\n\n\
             | chain | 49,152 | 151,936 | 262,144 |\n|---|---|---|---|\n",
        );
        for (name, sampling, logprobs) in cases {
            let mut row = format!("| {name} |");
            for n_vocab in [49_152i32, 151_936, 262_144] {
                let mut model = LanguageModelLike::new(n_vocab as usize);
                let req = crate::engine::test_request(sampling);
                let mut sampler = build_sampler(n_vocab, &req).unwrap();
                let start = Instant::now();
                for t in 0..TOKENS {
                    let logits = model.step(t);
                    let token = sampler.sample(logits);
                    if let Some(top) = logprobs {
                        std::hint::black_box(logprob_top(logits, token.0, top));
                    }
                }
                let us = start.elapsed().as_secs_f64() * 1e6 / f64::from(TOKENS);
                let _ = write!(row, " {us:.0} |");
            }
            println!("{row}");
            md.push_str(&row);
            md.push('\n');
        }
        // The reference: llama.cpp's penalties sampler doing the penalties in the chain.
        let mut row =
            "| temperature 0.7, presence and frequency penalties by llama.cpp's sampler |"
                .to_string();
        for n_vocab in [49_152i32, 151_936, 262_144] {
            let mut model = LanguageModelLike::new(n_vocab as usize);
            let mut chain = LlamaSampler::chain_simple([
                LlamaSampler::penalties(n_vocab, PENALTY_LAST_N as i32, 1.0, 0.5, 0.5),
                LlamaSampler::temp(0.7),
                LlamaSampler::dist(0),
            ]);
            let start = Instant::now();
            for t in 0..TOKENS {
                let mut candidates = candidates(model.step(t), |_| true);
                chain.apply(&mut candidates);
                let token = candidates.selected_token().unwrap();
                chain.accept(token);
            }
            let us = start.elapsed().as_secs_f64() * 1e6 / f64::from(TOKENS);
            let _ = write!(row, " {us:.0} |");
        }
        println!("{row}");
        md.push_str(&row);
        md.push('\n');
        let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/sampling.md");
        std::fs::write(out, md).unwrap();
    }

    /// Logits shaped like a confident language model's at each step: a bell-shaped bulk
    /// (mean -4, σ ≈ 2.3, from a fixed hash, no RNG) and five tokens well above it that
    /// hold most of the probability (the first about 0.6) and change from step to step,
    /// as a model's favourites do (so the penalties meet tokens it no longer prefers).
    struct LanguageModelLike {
        logits: Vec<f32>,
        bulk: Vec<f32>,
        peaks: Vec<usize>,
    }

    impl LanguageModelLike {
        fn new(n: usize) -> Self {
            let bulk: Vec<f32> = (0..n)
                .map(|i| (unit(i, 1) + unit(i, 2) + unit(i, 3) + unit(i, 4) - 2.0) * 4.0 - 4.0)
                .collect();
            Self {
                logits: bulk.clone(),
                bulk,
                peaks: Vec::new(),
            }
        }

        /// The logits of step `t`.
        fn step(&mut self, t: u32) -> &[f32] {
            for &id in &self.peaks {
                self.logits[id] = self.bulk[id];
            }
            let n = self.logits.len();
            self.peaks = (0..5)
                .map(|k| (unit(t as usize, 10 + k) * n as f32) as usize % n)
                .collect();
            for (k, &id) in self.peaks.iter().enumerate() {
                self.logits[id] = 14.0 - k as f32;
            }
            &self.logits
        }
    }

    /// A number in [0, 1) from `i` and `k`, the same on every run.
    fn unit(i: usize, k: u64) -> f32 {
        let h =
            (i as u64 ^ k.wrapping_mul(0xD6E8_FEB8_6659_FD93)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        ((h >> 40) as f32) / (1u64 << 24) as f32
    }
}
