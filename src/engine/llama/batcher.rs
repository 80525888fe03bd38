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

use super::embed::{EmbedMode, Embedder};
use super::render::{prompt_tokens, Renderer};
use super::sampling::{build_sampler, token_logprob, Sampler};
use crate::engine::constraint::ConstraintError;
use crate::engine::output::TextOut;
use crate::engine::prefix::{self, PrefixCache, SlotView};
use crate::engine::reasoning::Run;
use crate::engine::steer::{Pick, Steer};
use crate::engine::tool_syntax::ToolRun;
use crate::engine::{
    completion_budget, EngineError, EngineStats, Event, FinishReason, GenerateRequest, Intake, Job,
    Usage,
};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// A request being served in a slot.
struct Active {
    key_id: Arc<str>,
    events: UnboundedSender<Event>,
    sampler: Sampler,
    /// Forced tokens, the output constraint in force, and token bytes to events (UTF-8,
    /// stop strings, the reasoning split, native tool calls): `engine::steer`.
    steer: Steer<LlamaToken>,
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

pub struct Batcher<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    /// Embeddings jobs, one chunk per step between the generating sequences' steps.
    embedder: Embedder<'m>,
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

/// What a batcher is built from: the loaded model's contexts and renderer, the engine's
/// parameters, and the intake and counters it shares with the HTTP side.
pub struct Parts<'m> {
    pub model: &'m LlamaModel,
    pub ctx: LlamaContext<'m>,
    pub embed_ctx: Option<(LlamaContext<'m>, EmbedMode)>,
    pub renderer: Renderer,
    pub parallel: u32,
    /// Context window of one sequence.
    pub context: u32,
    pub prefix_cache: PrefixCache,
    pub intake: Arc<Intake>,
    pub stats: Arc<EngineStats>,
}

impl<'m> Batcher<'m> {
    pub fn new(parts: Parts<'m>) -> Self {
        let Parts {
            model,
            ctx,
            embed_ctx,
            renderer,
            parallel,
            context,
            prefix_cache,
            intake,
            stats,
        } = parts;
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
            embedder: Embedder::new(embed_ctx),
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
        #[cfg(feature = "test-hooks")]
        test_step_delay();
        let dropped = self.intake.drop_abandoned();
        if dropped > 0 {
            self.stats
                .cancelled
                .fetch_add(dropped as u64, Ordering::Relaxed);
        }
        self.admit();
        self.retire_abandoned();
        self.embedder.step(self.model, self.context, &self.stats);
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
        while self.embedder.can_take() && self.slots.iter().any(|s| s.active.is_none()) {
            let wait = self.active_count() == 0 && self.embedder.is_idle();
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
                    self.embedder.start(e, &self.stats);
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
        let format = job.reasoning.map(|plan| plan.format);
        let rendered = prompt_tokens(self.model, &self.renderer, &job.prompt, format)?;
        let prompt = rendered.tokens;
        let prompt_tokens = u32::try_from(prompt.len()).unwrap_or(u32::MAX);
        if job.count_only {
            let _ = job.events.send(Event::Started { prompt_tokens });
            let usage = Usage {
                prompt_tokens,
                ..Usage::default()
            };
            let reason = FinishReason::Stop;
            let _ = job.events.send(Event::Finished { reason, usage });
            return Ok(());
        }
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
        let sampler = build_sampler(self.model.n_vocab(), &job)?;
        // The texts the engine may write itself (a spent thinking budget's closer, a tool
        // call's opener and closer): constants of the format, as this model's tokens (its
        // own marker tokens where the vocabulary has them).
        let tokens = |text: &str| self.model.vocab().tokenize(text.as_bytes(), false, true);
        let reasoning = job.reasoning.map(|plan| {
            Run::new(
                plan,
                rendered.opens_reasoning,
                tokens(&plan.format.forced_close()),
            )
        });
        let tools = job.tools.map(|plan| {
            let (opener, closer) = (tokens(plan.syntax.opener()), tokens(plan.syntax.closer()));
            ToolRun::new(plan, opener, closer)
        });
        if job.events.send(Event::Started { prompt_tokens }).is_err() {
            self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        self.stats.active.fetch_add(1, Ordering::Relaxed);
        slot.active = Some(Box::new(Active {
            sampler,
            logprobs: job.logprobs,
            key_id: job.key_id,
            events: job.events,
            steer: Steer::new(TextOut::new(job.stop, reasoning), tools, job.constraint),
            prompt,
            budget,
            usage: Usage {
                prompt_tokens,
                completion_tokens: 0,
                cached_tokens: reuse as u32,
                reasoning_tokens: 0,
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
            let (token, constrained) = match a.steer.pick() {
                Pick::Forced(t) => {
                    // The sampler's penalties see it as if it had been drawn.
                    a.sampler.accept(t);
                    (t, false)
                }
                Pick::Free => (a.sampler.sample(self.ctx.get_logits_ith(idx)), false),
                Pick::Constrained(c) => {
                    match a.sampler.constrained(c, self.ctx.get_logits_ith(idx)) {
                        Ok(t) => (t, true),
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
            if let Some(reason) = self.accept(i, token, constrained) {
                self.finish(i, reason);
            }
        }
    }

    /// Stream one chosen token (`constrained`: sampled under the output constraint);
    /// returns why the completion ends, if it does.
    fn accept(&mut self, i: usize, token: LlamaToken, constrained: bool) -> Option<FinishReason> {
        let model = self.model;
        let vocab = model.vocab();
        let a = self.slots[i].active.as_deref_mut()?;
        if vocab.is_eog(token) {
            return Some(FinishReason::Stop);
        }
        let bytes = vocab.token_to_piece(token, a.steer.render_special(), None);
        let (pieces, calls_done) = match a.steer.accept(token.0 as u32, &bytes, constrained) {
            Ok(step) => step,
            Err(e) => {
                self.fail(i, e);
                return None;
            }
        };
        let a = self.slots[i].active.as_deref_mut()?;
        a.usage.completion_tokens += 1;
        let stopped = pieces.stopped || calls_done;
        if !pieces.send(&a.events) {
            // Client gone: the next step frees the sequence.
            a.next = Some(token);
            return None;
        }
        if stopped {
            // A stop string was found (nothing held back is released: `TextOut`), or
            // every native tool call allowed was made.
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
        a.usage.reasoning_tokens = a.steer.reasoning_tokens();
        tracing::info!(
            key_id = %a.key_id,
            prompt_tokens = a.usage.prompt_tokens,
            cached_tokens = a.usage.cached_tokens,
            completion_tokens = a.usage.completion_tokens,
            reasoning_tokens = a.usage.reasoning_tokens,
            finish_reason = reason.as_str(),
            first_token_ms = a.first_token.map(|d| d.as_millis() as u64),
            total_ms = elapsed.as_millis() as u64,
            "generation finished"
        );
        if let Some(r) = a.steer.report() {
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
        // A client gone by now is noticed by the next step.
        a.steer.finish().send(&a.events);
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

/// Test hook (never in a release): `LGI_TEST_STEP_DELAY_MS=N` sleeps N ms before every
/// engine step (generation or embeddings), so a test that must catch a stream mid-way (drain on SIGTERM, a reload
/// during a stream) holds it open on any hardware, instead of hoping the CPU is slow.
#[cfg(feature = "test-hooks")]
fn test_step_delay() {
    static DELAY: std::sync::OnceLock<Option<Duration>> = std::sync::OnceLock::new();
    let delay = DELAY.get_or_init(|| {
        std::env::var("LGI_TEST_STEP_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis)
    });
    if let Some(d) = delay {
        std::thread::sleep(*d);
    }
}
