//! Continuous batching: many requests share the model, one `decode` per step.
//!
//! The context holds `parallel` sequences, each with its own slice of the KV cache
//! (`kv_unified = false`; see `mod.rs` for why). Every step:
//! 1. admit waiting requests into idle slots (fair order from the intake; the slot whose
//!    cache shares the longest prompt prefix with the request is chosen, see `prefix`);
//! 2. drop sequences whose client went away or whose deadline passed, freeing their KV
//!    cells at once;
//! 3. build one batch: the next token of every generating sequence, then prompt tokens of
//!    prefilling sequences (round-robin, up to the batch size) — so a long prompt delays
//!    the others by at most one chunk;
//! 4. one `decode`, then each sequence with fresh logits samples with its own sampler
//!    chain (temperature, top_p, seed, penalties) and streams its piece. A sequence with
//!    an output constraint first asks it (Rust, `engine::constraint`) which tokens may
//!    come next; only those reach the sampler chain.
//!
//! SECURITY / robustness:
//! - A panic inside a step (llama-cpp-2 has `expect`s) is caught: every request in
//!   flight is answered with an internal error, the KV cache is cleared, and the engine
//!   keeps serving.
//! - No client-shaped grammar reaches llama.cpp: constraints are llguidance matchers,
//!   and one that dies (no allowed token, a refused token, a mask over its budget) ends
//!   its own request with an error while the others go on.
//! - Raw completion prompts are tokenized with `parse_special = false`, so client text
//!   cannot forge control tokens. Chat prompts are rendered by the model's template,
//!   whose own markers must be parsed as special tokens (see SECURITY.md).
//! - Nothing here logs prompt or completion text; the per-request line carries counts.

use super::super::constraint::{Constraint, ConstraintError};
use super::super::prefix::{self, PrefixCache, SlotView};
use super::super::template::{self, ChatTemplate};
use super::super::text::{StopMatcher, Utf8Assembler};
use super::super::{
    completion_budget, EmbedInput, EmbedRequest, Embeddings, EngineError, EngineStats, Event,
    FinishReason, GenerateRequest, Intake, Job, Prompt, TokenLogprob, Usage,
};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::logit_bias::LlamaLogitBias;
use llama_cpp_2::token::LlamaToken;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// Embeddings jobs taken from the intake while another is computed. Beyond this the
/// engine takes no new job until one finishes, so embeddings cannot drain the bounded
/// intake into an unbounded list here.
const MAX_WAITING_EMBEDDINGS: usize = 4;

/// Tokens the repetition penalties look back over (llama.cpp's default).
const PENALTY_LAST_N: i32 = 64;

/// A request being served in a slot.
struct Active {
    key_id: Arc<str>,
    events: UnboundedSender<Event>,
    sampler: LlamaSampler,
    /// The output constraint (JSON schema, tools), if any.
    constraint: Option<Constraint>,
    utf8: Utf8Assembler,
    stops: StopMatcher,
    prompt: Vec<LlamaToken>,
    budget: u32,
    /// Alternatives reported per token when logprobs were asked for.
    logprobs: Option<u32>,
    usage: Usage,
    admitted: Instant,
    deadline: Duration,
    /// Sampled and streamed, to be decoded in the next step (absent while prefilling).
    next: Option<LlamaToken>,
    /// Tokens this step's batch carries for the sequence, and where its logits are.
    in_batch: usize,
    logits_at: Option<i32>,
    first_token: Option<Duration>,
}

/// One sequence of the context.
struct Slot {
    seq: i32,
    /// Tokens whose K/V the sequence holds, from position 0: the prefix cache.
    cached: Vec<LlamaToken>,
    /// The key whose request filled `cached`.
    owner: Option<Arc<str>>,
    last_used: u64,
    active: Option<Box<Active>>,
}

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

pub struct Batcher<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    /// A second, small context computing embeddings (`model.embeddings`).
    embed_ctx: Option<(LlamaContext<'m>, EmbedMode)>,
    /// The embeddings job being computed, if any (one at a time), and those taken from
    /// the intake behind it (at most MAX_WAITING_EMBEDDINGS).
    embedding: Option<EmbedJob>,
    waiting_embeddings: std::collections::VecDeque<EmbedRequest>,
    batch: LlamaBatch<'static>,
    batch_size: usize,
    renderer: Renderer,
    /// Context window of one sequence.
    context: u32,
    prefix_cache: PrefixCache,
    slots: Vec<Slot>,
    intake: Arc<Intake>,
    stats: Arc<EngineStats>,
    /// Where prefill round-robin starts next step.
    rr: usize,
    clock: u64,
}

impl<'m> Batcher<'m> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        model: &'m LlamaModel,
        ctx: LlamaContext<'m>,
        embed_ctx: Option<(LlamaContext<'m>, EmbedMode)>,
        renderer: Renderer,
        parallel: u32,
        context: u32,
        prefix_cache: PrefixCache,
        intake: Arc<Intake>,
        stats: Arc<EngineStats>,
    ) -> Self {
        let batch_size = ctx.n_batch().max(1) as usize;
        let slots = (0..parallel as i32)
            .map(|seq| Slot {
                seq,
                cached: Vec::new(),
                owner: None,
                last_used: 0,
                active: None,
            })
            .collect();
        Self {
            model,
            ctx,
            embed_ctx,
            embedding: None,
            waiting_embeddings: std::collections::VecDeque::new(),
            batch: LlamaBatch::new(batch_size, 1),
            batch_size,
            renderer,
            context,
            prefix_cache,
            slots,
            intake,
            stats,
            rr: 0,
            clock: 0,
        }
    }

    /// Serve forever (the process ends the thread).
    pub fn run(mut self) {
        loop {
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| self.step()));
            if outcome.is_err() {
                tracing::error!(
                    "engine step panicked; requests in flight answered with an internal error"
                );
                self.fail_all();
            }
        }
    }

    fn active_count(&self) -> usize {
        self.slots.iter().filter(|s| s.active.is_some()).count()
    }

    fn step(&mut self) {
        let dropped = self.intake.drop_abandoned();
        if dropped > 0 {
            self.stats
                .cancelled
                .fetch_add(dropped as u64, Ordering::Relaxed);
        }
        self.admit();
        self.retire_abandoned();
        self.embed_step();
        if self.fill_batch() == 0 {
            return;
        }
        if let Err(e) = self.ctx.decode(&mut self.batch) {
            tracing::error!(error = %e, "decode failed; its requests answered with an internal error");
            self.fail_all();
            return;
        }
        self.after_decode();
    }

    /// Move waiting requests into idle slots. Sleeps on the intake when nothing runs.
    /// Embeddings jobs run one at a time, one input per step, while the generating
    /// sequences keep stepping; those that arrive meanwhile wait here in order (a few at
    /// most: beyond that nothing more is taken until one finishes).
    fn admit(&mut self) {
        while self.waiting_embeddings.len() < MAX_WAITING_EMBEDDINGS
            && self.slots.iter().any(|s| s.active.is_none())
        {
            let wait = self.active_count() == 0 && self.embedding.is_none();
            let Some(job) = self.intake.next(wait) else {
                return;
            };
            if job.is_abandoned() {
                // SECURITY: the client left while queued; spend nothing on it.
                self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let job = match job {
                Job::Generate(g) => *g,
                Job::Embed(e) => {
                    self.start_embedding(e);
                    continue;
                }
            };
            let events = job.events.clone();
            if let Err(e) = self.start(job) {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                let _ = events.send(Event::Failed(e));
            }
        }
    }

    fn start(&mut self, job: GenerateRequest) -> Result<(), EngineError> {
        let (text, parse_special) = render_prompt(self.model, &self.renderer, &job.prompt)?;
        let prompt = self
            .model
            .vocab()
            .tokenize(text.as_bytes(), true, parse_special);
        drop(text);
        if prompt.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        let prompt_tokens = u32::try_from(prompt.len()).unwrap_or(u32::MAX);
        let budget = completion_budget(
            prompt_tokens,
            job.max_tokens,
            job.default_max_tokens,
            self.context,
        )?;
        let views: Vec<SlotView<'_, LlamaToken>> = self
            .slots
            .iter()
            .map(|s| SlotView {
                idle: s.active.is_none(),
                owner: s.owner.as_deref(),
                cached: &s.cached,
                last_used: s.last_used,
            })
            .collect();
        let choice = prefix::choose(&views, &job.owner, &prompt, self.prefix_cache)
            .ok_or(EngineError::Internal)?;
        let slot = &mut self.slots[choice.slot];
        let mut reuse = choice.reuse;
        // Forget what the new prompt does not share. Some models (recurrent, sliding
        // window) cannot drop part of a sequence: then drop all of it.
        if self
            .ctx
            .kv_cache_seq_rm(slot.seq, Some(reuse as u32), None)
            .is_err()
        {
            reuse = 0;
            let _ = self
                .ctx
                .clear_kv_cache_seq(Some(slot.seq as u32), None, None);
        }
        slot.cached.truncate(reuse);
        slot.owner = Some(job.owner.clone());
        let sampler = build_sampler(self.model, &job)?;
        if job.events.send(Event::Started { prompt_tokens }).is_err() {
            self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        self.stats.active.fetch_add(1, Ordering::Relaxed);
        slot.active = Some(Box::new(Active {
            sampler,
            constraint: job.constraint,
            logprobs: job.logprobs,
            key_id: job.key_id,
            events: job.events,
            utf8: Utf8Assembler::default(),
            stops: StopMatcher::new(job.stop),
            prompt,
            budget,
            usage: Usage {
                prompt_tokens,
                completion_tokens: 0,
                cached_tokens: reuse as u32,
            },
            admitted: Instant::now(),
            deadline: job.deadline,
            next: None,
            in_batch: 0,
            logits_at: None,
            first_token: None,
        }));
        Ok(())
    }

    /// Free the sequences whose client went away (their KV cells at once) and end those
    /// past their deadline.
    fn retire_abandoned(&mut self) {
        for i in 0..self.slots.len() {
            let Some(a) = &self.slots[i].active else {
                continue;
            };
            if a.events.is_closed() {
                tracing::info!(
                    key_id = %a.key_id,
                    completion_tokens = a.usage.completion_tokens,
                    "generation cancelled: client went away"
                );
                self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .completion_tokens
                    .fetch_add(a.usage.completion_tokens as u64, Ordering::Relaxed);
                self.free(i);
            } else if a.admitted.elapsed() >= a.deadline {
                // SECURITY: no request holds a sequence beyond limits.max_generation_secs.
                tracing::info!(
                    key_id = %a.key_id,
                    completion_tokens = a.usage.completion_tokens,
                    "generation deadline reached (limits.max_generation_secs)"
                );
                self.finish(i, FinishReason::Length);
            }
        }
    }

    /// Put this step's tokens in the batch; returns how many.
    fn fill_batch(&mut self) -> usize {
        self.batch.clear();
        let mut n = 0usize;
        // Generating sequences first: one token each, each with logits.
        for slot in &mut self.slots {
            let Some(a) = slot.active.as_deref_mut() else {
                continue;
            };
            a.in_batch = 0;
            a.logits_at = None;
            if let Some(tok) = a.next {
                if self
                    .batch
                    .add(tok, slot.cached.len() as i32, &[slot.seq], true)
                    .is_ok()
                {
                    a.in_batch = 1;
                    a.logits_at = Some(n as i32);
                    n += 1;
                }
            }
        }
        // Then prompt chunks, round-robin over prefilling sequences, up to the batch size.
        let count = self.slots.len();
        for k in 0..count {
            let i = (self.rr + k) % count;
            let slot = &mut self.slots[i];
            let Some(a) = slot.active.as_deref_mut() else {
                continue;
            };
            if a.next.is_some() {
                continue;
            }
            let room = self.batch_size - n;
            if room == 0 {
                break;
            }
            let done = slot.cached.len();
            let take = a.prompt.len().saturating_sub(done).min(room);
            for j in 0..take {
                let pos = done + j;
                let last = pos + 1 == a.prompt.len();
                if self
                    .batch
                    .add(a.prompt[pos], pos as i32, &[slot.seq], last)
                    .is_err()
                {
                    break;
                }
                a.in_batch += 1;
                if last {
                    a.logits_at = Some(n as i32);
                }
                n += 1;
            }
        }
        self.rr = (self.rr + 1) % count.max(1);
        n
    }

    /// Record what the batch put in each sequence's cache, then sample where logits are.
    fn after_decode(&mut self) {
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            let Some(a) = slot.active.as_deref_mut() else {
                continue;
            };
            match a.next.take() {
                Some(tok) if a.in_batch == 1 => slot.cached.push(tok),
                Some(tok) => a.next = Some(tok),
                None => {
                    let done = slot.cached.len();
                    slot.cached
                        .extend_from_slice(&a.prompt[done..done + a.in_batch]);
                }
            }
            let Some(idx) = a.logits_at else {
                continue;
            };
            let token = match a.constraint.as_mut() {
                None => a.sampler.sample(&self.ctx, idx),
                Some(c) => {
                    match constrained_sample(c, &mut a.sampler, self.ctx.get_logits_ith(idx)) {
                        Ok(t) => t,
                        Err(e) => {
                            self.fail(i, e);
                            continue;
                        }
                    }
                }
            };
            if let Some(top) = a.logprobs {
                let report = token_logprob(self.model, self.ctx.get_logits_ith(idx), token, top);
                // A closed channel is noticed by the next step.
                let _ = a.events.send(Event::Token(report));
            }
            if a.first_token.is_none() {
                a.first_token = Some(a.admitted.elapsed());
            }
            if let Some(reason) = self.accept(i, token) {
                self.finish(i, reason);
            }
        }
    }

    /// Stream one sampled token; returns why the completion ends, if it does.
    fn accept(&mut self, i: usize, token: LlamaToken) -> Option<FinishReason> {
        let model = self.model;
        let vocab = model.vocab();
        let a = self.slots[i].active.as_deref_mut()?;
        if vocab.is_eog(token) {
            return Some(FinishReason::Stop);
        }
        if let Some(c) = a.constraint.as_mut() {
            if let Err(e) = c.consume(token.0 as u32) {
                self.fail(i, e);
                return None;
            }
        }
        let a = self.slots[i].active.as_deref_mut()?;
        a.usage.completion_tokens += 1;
        let piece = a.utf8.push(&vocab.token_to_piece(token, false, None));
        let step = a.stops.push(&piece);
        if !step.emit.is_empty() && a.events.send(Event::Text(step.emit)).is_err() {
            // Client gone: the next step frees the sequence.
            a.next = Some(token);
            return None;
        }
        if step.stopped {
            // The stop string was found: nothing the matcher holds may be released.
            a.stops = StopMatcher::new(Vec::new());
            a.utf8 = Utf8Assembler::default();
            return Some(FinishReason::Stop);
        }
        if a.usage.completion_tokens >= a.budget {
            return Some(FinishReason::Length);
        }
        a.next = Some(token);
        None
    }

    /// Complete a request: release what the UTF-8 assembler and the stop matcher hold,
    /// send the usage, keep the cache for prefix reuse (unless reuse is off).
    fn finish(&mut self, i: usize, reason: FinishReason) {
        let Some(mut a) = self.slots[i].active.take() else {
            return;
        };
        // Counters and the log line first, so a client that has seen the end of its
        // completion also sees it counted on /metrics.
        let elapsed = a.admitted.elapsed();
        tracing::info!(
            key_id = %a.key_id,
            prompt_tokens = a.usage.prompt_tokens,
            cached_tokens = a.usage.cached_tokens,
            completion_tokens = a.usage.completion_tokens,
            finish_reason = reason.as_str(),
            first_token_ms = a.first_token.map(|d| d.as_millis() as u64),
            total_ms = elapsed.as_millis() as u64,
            "generation finished"
        );
        if let Some(r) = a.constraint.as_ref().map(Constraint::report) {
            // Counts and times only; the schema itself is never logged.
            tracing::info!(
                key_id = %a.key_id,
                compile_us = r.compile_us,
                masks = r.masks,
                mask_p50_us = r.mask_p50_us,
                mask_p99_us = r.mask_p99_us,
                mask_max_us = r.mask_max_us,
                "constraint timings"
            );
        }
        let s = &self.stats;
        s.active.fetch_sub(1, Ordering::Relaxed);
        s.completed.fetch_add(1, Ordering::Relaxed);
        s.prompt_tokens
            .fetch_add(a.usage.prompt_tokens as u64, Ordering::Relaxed);
        s.cached_tokens
            .fetch_add(a.usage.cached_tokens as u64, Ordering::Relaxed);
        s.completion_tokens
            .fetch_add(a.usage.completion_tokens as u64, Ordering::Relaxed);
        let tail = a.stops.push(&a.utf8.finish());
        let mut rest = tail.emit;
        if !tail.stopped {
            rest.push_str(&a.stops.finish());
        }
        if !rest.is_empty() {
            let _ = a.events.send(Event::Text(rest));
        }
        let _ = a.events.send(Event::Finished {
            reason,
            usage: a.usage,
        });
        self.clock += 1;
        self.slots[i].last_used = self.clock;
        if self.prefix_cache == PrefixCache::Off {
            self.clear_slot(i);
        }
    }

    /// End one request whose constraint died: it gets an error, its KV cells are freed,
    /// every other sequence goes on.
    fn fail(&mut self, i: usize, e: ConstraintError) {
        if let Some(a) = self.slots[i].active.take() {
            tracing::info!(
                key_id = %a.key_id,
                completion_tokens = a.usage.completion_tokens,
                reason = ?e,
                "generation ended by its output constraint"
            );
            self.stats.active.fetch_sub(1, Ordering::Relaxed);
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
            let _ = a.events.send(Event::Failed(EngineError::Constraint(e)));
        }
        self.clear_slot(i);
    }

    /// End a sequence without an answer (client gone): its KV cells are freed now.
    fn free(&mut self, i: usize) {
        if self.slots[i].active.take().is_some() {
            self.stats.active.fetch_sub(1, Ordering::Relaxed);
        }
        self.clear_slot(i);
    }

    fn clear_slot(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        let _ = self
            .ctx
            .clear_kv_cache_seq(Some(slot.seq as u32), None, None);
        slot.cached.clear();
        slot.owner = None;
    }

    fn start_embedding(&mut self, job: EmbedRequest) {
        if self.embedding.is_some() {
            self.waiting_embeddings.push_back(job);
            return;
        }
        if self.embed_ctx.is_none() {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
            let _ = job.reply.send(Err(EngineError::EmbeddingsDisabled));
            return;
        }
        let n = job.inputs.len();
        tracing::info!(key_id = %job.key_id, inputs = n, "embeddings started");
        self.embedding = Some(EmbedJob {
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
    fn embed_step(&mut self) {
        if self.embedding.is_none() {
            if let Some(next) = self.waiting_embeddings.pop_front() {
                self.start_embedding(next);
            }
        }
        let Some(mut e) = self.embedding.take() else {
            return;
        };
        if e.job.reply.is_closed() {
            tracing::info!(key_id = %e.job.key_id, done = e.next, "embeddings cancelled: client went away");
            self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if e.admitted.elapsed() >= e.job.deadline {
            tracing::info!(key_id = %e.job.key_id, done = e.next, "embeddings deadline reached (limits.max_generation_secs)");
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
            let _ = e.job.reply.send(Err(EngineError::DeadlineExceeded));
            return;
        }
        let (Some((ctx, mode)), Some(input)) = (self.embed_ctx.as_mut(), e.job.inputs.get(e.next))
        else {
            self.finish_embedding(e);
            return;
        };
        let outcome = match *mode {
            EmbedMode::Whole => embed_one(self.model, ctx, input, e.next, self.context).map(Some),
            EmbedMode::MeanChunked(chunk) => {
                embed_chunk(self.model, ctx, &mut e, chunk, self.context)
            }
        };
        match outcome {
            Ok(None) => self.embedding = Some(e),
            Ok(Some((v, n))) => {
                e.vectors.push(v);
                e.prompt_tokens = e.prompt_tokens.saturating_add(n);
                e.next += 1;
                if e.next == e.job.inputs.len() {
                    self.finish_embedding(e);
                } else {
                    self.embedding = Some(e);
                }
            }
            Err(err) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                let _ = e.job.reply.send(Err(err));
            }
        }
    }

    fn finish_embedding(&mut self, e: EmbedJob) {
        tracing::info!(
            key_id = %e.job.key_id,
            inputs = e.vectors.len(),
            prompt_tokens = e.prompt_tokens,
            total_ms = e.admitted.elapsed().as_millis() as u64,
            "embeddings finished"
        );
        self.stats
            .prompt_tokens
            .fetch_add(e.prompt_tokens as u64, Ordering::Relaxed);
        let _ = e.job.reply.send(Ok(Embeddings {
            vectors: e.vectors,
            prompt_tokens: e.prompt_tokens,
        }));
    }

    /// After a failed decode or a panic: answer everyone in flight, start clean.
    fn fail_all(&mut self) {
        for i in 0..self.slots.len() {
            if let Some(a) = self.slots[i].active.take() {
                self.stats.active.fetch_sub(1, Ordering::Relaxed);
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                let _ = a.events.send(Event::Failed(EngineError::Internal));
            }
            self.slots[i].cached.clear();
            self.slots[i].owner = None;
        }
        self.ctx.clear_kv_cache();
    }
}

/// How chat prompts are rendered: the model's Jinja template (minijinja), or llama.cpp's
/// built-in renderer when the template does not compile or render there.
pub enum Renderer {
    Jinja(Box<ChatTemplate>),
    Builtin(LlamaChatTemplate),
    None,
}

fn render_prompt(
    model: &LlamaModel,
    renderer: &Renderer,
    prompt: &Prompt,
) -> Result<(String, bool), EngineError> {
    let (messages, tools) = match prompt {
        Prompt::Text(t) => return Ok((t.clone(), false)),
        Prompt::Chat { messages, tools } => (messages, tools),
    };
    let text = match renderer {
        Renderer::Jinja(t) => {
            let text = t.render(messages, tools).map_err(|e| {
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
        Renderer::None => return Err(EngineError::Template),
    };
    Ok((text, true))
}

/// The request's own sampler chain; sequences never share sampler state. Order as in
/// llama.cpp's common sampler: bias, penalties, truncation, temperature, draw (the output
/// constraint, when there is one, is applied before the chain: `constrained_sample`).
fn build_sampler(model: &LlamaModel, req: &GenerateRequest) -> Result<LlamaSampler, EngineError> {
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
fn constrained_sample(
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
fn vocab_token(id: i32, n_vocab: i32) -> Result<LlamaToken, EngineError> {
    if (0..n_vocab).contains(&id) {
        Ok(LlamaToken(id))
    } else {
        Err(EngineError::UnknownToken(id))
    }
}

/// Log-probability of `token` under the model's raw distribution at this position, and
/// the `top` most likely tokens (OpenAI reports the model's distribution, not the one
/// after temperature, penalties, bias or grammar). One pass over the vocabulary.
fn token_logprob(model: &LlamaModel, logits: &[f32], token: LlamaToken, top: u32) -> TokenLogprob {
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
