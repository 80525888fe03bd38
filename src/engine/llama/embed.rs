//! Embeddings on their own small context, between the generating sequences' steps: one
//! job at a time, one input (or, for a generative model, one chunk of `model.batch`
//! tokens) per engine step.
//!
//! SECURITY: a long input delays the generating sequences by at most one chunk per step
//! (issue 15); a job stops when its client leaves and at limits.max_generation_secs; at
//! most `MAX_WAITING_EMBEDDINGS` jobs wait here, so embeddings cannot drain the bounded
//! intake into an unbounded list. Client token ids are checked against the vocabulary and
//! client text is never parsed for control tokens.

use super::sampling::vocab_token;
use crate::engine::{EmbedInput, EmbedRequest, Embeddings, EngineError, EngineStats};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Embeddings jobs taken from the intake while another is computed. Beyond this the
/// engine takes no new job until one finishes, so embeddings cannot drain the bounded
/// intake into an unbounded list here.
const MAX_WAITING_EMBEDDINGS: usize = 4;

/// How the embeddings context computes an input (see `embedding_params` in `mod.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbedMode {
    /// The model's declared pooling, the whole input in one batch.
    Whole,
    /// Mean of per-token embeddings, this many tokens per engine step.
    MeanChunked(usize),
}

/// An embeddings job in progress: a chunk of one input per engine step, between the
/// generating sequences' steps.
struct EmbedJob {
    job: EmbedRequest,
    next: usize,
    /// The input being computed in chunks (MeanChunked).
    current: Option<ChunkedInput>,
    vectors: Vec<Vec<f32>>,
    prompt_tokens: u32,
    admitted: Instant,
}

struct ChunkedInput {
    tokens: Vec<LlamaToken>,
    done: usize,
    sum: Vec<f64>,
}

/// The embeddings context and its jobs.
pub(super) struct Embedder<'m> {
    /// A second, small context computing embeddings (`model.embeddings`).
    ctx: Option<(LlamaContext<'m>, EmbedMode)>,
    /// The job being computed, if any, and those taken from the intake behind it.
    current: Option<EmbedJob>,
    waiting: VecDeque<EmbedRequest>,
}

impl<'m> Embedder<'m> {
    pub(super) fn new(ctx: Option<(LlamaContext<'m>, EmbedMode)>) -> Self {
        Self {
            ctx,
            current: None,
            waiting: VecDeque::new(),
        }
    }

    /// Room for another job from the intake.
    pub(super) fn can_take(&self) -> bool {
        self.waiting.len() < MAX_WAITING_EMBEDDINGS
    }

    /// No job in progress (the engine may sleep on the intake).
    pub(super) fn is_idle(&self) -> bool {
        self.current.is_none()
    }

    /// Take a job: computed now if none is, else queued behind the one in progress.
    pub(super) fn start(&mut self, job: EmbedRequest, stats: &EngineStats) {
        if self.current.is_some() {
            self.waiting.push_back(job);
            return;
        }
        if self.ctx.is_none() {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            let _ = job.reply.send(Err(EngineError::EmbeddingsDisabled));
            return;
        }
        let n = job.inputs.len();
        tracing::info!(key_id = %job.key_id, inputs = n, "embeddings started");
        self.current = Some(EmbedJob {
            job,
            next: 0,
            current: None,
            vectors: Vec::with_capacity(n),
            prompt_tokens: 0,
            admitted: Instant::now(),
        });
    }

    /// Embed the next input of the job in progress (one `decode` on the embeddings
    /// context, at most `context` tokens), then give the step back to generation.
    /// SECURITY: a large job cannot stall the other sequences for more than one input at
    /// a time; it stops when its client leaves and obeys limits.max_generation_secs.
    pub(super) fn step(&mut self, model: &LlamaModel, context: u32, stats: &EngineStats) {
        if self.current.is_none() {
            if let Some(next) = self.waiting.pop_front() {
                self.start(next, stats);
            }
        }
        let Some(mut e) = self.current.take() else {
            return;
        };
        if e.job.reply.is_closed() {
            tracing::info!(key_id = %e.job.key_id, done = e.next, "embeddings cancelled: client went away");
            stats.cancelled.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if e.admitted.elapsed() >= e.job.deadline {
            tracing::info!(key_id = %e.job.key_id, done = e.next, "embeddings deadline reached (limits.max_generation_secs)");
            stats.failed.fetch_add(1, Ordering::Relaxed);
            let _ = e.job.reply.send(Err(EngineError::DeadlineExceeded));
            return;
        }
        let (Some((ctx, mode)), Some(input)) = (self.ctx.as_mut(), e.job.inputs.get(e.next)) else {
            finish(e, stats);
            return;
        };
        let outcome = match *mode {
            EmbedMode::Whole => embed_one(model, ctx, input, e.next, context).map(Some),
            EmbedMode::MeanChunked(chunk) => embed_chunk(model, ctx, &mut e, chunk, context),
        };
        match outcome {
            Ok(None) => self.current = Some(e),
            Ok(Some((v, n))) => {
                e.vectors.push(v);
                e.prompt_tokens = e.prompt_tokens.saturating_add(n);
                e.next += 1;
                if e.next == e.job.inputs.len() {
                    finish(e, stats);
                } else {
                    self.current = Some(e);
                }
            }
            Err(err) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                let _ = e.job.reply.send(Err(err));
            }
        }
    }
}

fn finish(e: EmbedJob, stats: &EngineStats) {
    tracing::info!(
        key_id = %e.job.key_id,
        inputs = e.vectors.len(),
        prompt_tokens = e.prompt_tokens,
        total_ms = e.admitted.elapsed().as_millis() as u64,
        "embeddings finished"
    );
    stats
        .prompt_tokens
        .fetch_add(e.prompt_tokens as u64, Ordering::Relaxed);
    let _ = e.job.reply.send(Ok(Embeddings {
        vectors: e.vectors,
        prompt_tokens: e.prompt_tokens,
    }));
}

/// An input's tokens, checked: not empty, within the context.
fn embed_tokens(
    model: &LlamaModel,
    input: &EmbedInput,
    index: usize,
    context: u32,
) -> Result<Vec<LlamaToken>, EngineError> {
    let n_vocab = model.n_vocab();
    let tokens: Vec<LlamaToken> = match input {
        // SECURITY: client text never becomes control tokens.
        EmbedInput::Text(t) => model.vocab().tokenize(t.as_bytes(), true, false),
        EmbedInput::Tokens(ids) => ids
            .iter()
            .map(|&id| vocab_token(id, n_vocab))
            .collect::<Result<_, _>>()?,
    };
    let n = u32::try_from(tokens.len()).unwrap_or(u32::MAX);
    if n == 0 {
        return Err(EngineError::EmptyPrompt);
    }
    if n > context {
        return Err(EngineError::InputTooLong {
            index,
            tokens: n,
            context,
        });
    }
    Ok(tokens)
}

/// One chunk of the job's current input (MeanChunked): its tokens at their positions in
/// the sequence, one embedding per token summed up. Returns the input's L2-normalised
/// mean and token count once its last chunk is done, None before.
fn embed_chunk(
    model: &LlamaModel,
    ctx: &mut LlamaContext<'_>,
    e: &mut EmbedJob,
    chunk: usize,
    context: u32,
) -> Result<Option<(Vec<f32>, u32)>, EngineError> {
    let mut input = match e.current.take() {
        Some(i) => i,
        None => {
            let input = e.job.inputs.get(e.next).ok_or(EngineError::Internal)?;
            ctx.clear_kv_cache();
            ChunkedInput {
                tokens: embed_tokens(model, input, e.next, context)?,
                done: 0,
                sum: Vec::new(),
            }
        }
    };
    let take = (input.tokens.len() - input.done).min(chunk.max(1));
    let mut batch = LlamaBatch::new(take, 1);
    for (j, &t) in input.tokens[input.done..input.done + take]
        .iter()
        .enumerate()
    {
        batch
            .add(t, (input.done + j) as i32, &[0], true)
            .map_err(|_| EngineError::Internal)?;
    }
    ctx.decode(&mut batch).map_err(|err| {
        tracing::error!(error = %err, "embeddings decode failed");
        EngineError::Internal
    })?;
    for j in 0..take {
        let v = ctx.embeddings_ith(j as i32).map_err(|err| {
            tracing::error!(error = %err, "no token embedding");
            EngineError::Internal
        })?;
        if input.sum.is_empty() {
            input.sum = vec![0.0; v.len()];
        }
        for (s, x) in input.sum.iter_mut().zip(v) {
            *s += f64::from(*x);
        }
    }
    input.done += take;
    if input.done < input.tokens.len() {
        e.current = Some(input);
        return Ok(None);
    }
    ctx.clear_kv_cache();
    let n = input.tokens.len();
    let norm = input.sum.iter().map(|x| x * x).sum::<f64>().sqrt();
    // The mean's direction is the sum's: normalising the sum gives the same vector.
    let scale = if norm > 0.0 { 1.0 / norm } else { 0.0 };
    let vector = input.sum.iter().map(|x| (x * scale) as f32).collect();
    Ok(Some((vector, n as u32)))
}

/// Embed one input on `ctx` in one batch with the model's pooling (its cache cleared
/// before and after); the L2-normalised vector and the input's token count.
fn embed_one(
    model: &LlamaModel,
    ctx: &mut LlamaContext<'_>,
    input: &EmbedInput,
    index: usize,
    context: u32,
) -> Result<(Vec<f32>, u32), EngineError> {
    let tokens = embed_tokens(model, input, index, context)?;
    let n = tokens.len() as u32;
    ctx.clear_kv_cache();
    let mut batch = LlamaBatch::new(tokens.len(), 1);
    for (pos, &t) in tokens.iter().enumerate() {
        batch
            .add(t, pos as i32, &[0], true)
            .map_err(|_| EngineError::Internal)?;
    }
    ctx.decode(&mut batch).map_err(|e| {
        tracing::error!(error = %e, "embeddings decode failed");
        EngineError::Internal
    })?;
    let v = ctx.embeddings_seq_ith(0).map_err(|e| {
        tracing::error!(error = %e, "no pooled embedding");
        EngineError::Internal
    })?;
    let norm = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let scale = if norm > 0.0 { (1.0 / norm) as f32 } else { 0.0 };
    let vector = v.iter().map(|x| x * scale).collect();
    ctx.clear_kv_cache();
    Ok((vector, n))
}
