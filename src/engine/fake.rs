//! A deterministic stand-in for the llama.cpp engine (`fake-engine` feature: the
//! in-process test tier and the fuzz targets; never in a release build).
//!
//! It reads the same intake and answers with the same event sequence the real engine
//! does, so the whole HTTP/API stack above it (routes, auth, limits, validation,
//! constraint compiles, SSE, errors) runs unchanged:
//! - a generation streams the words of `ANSWER`, one per token, up to its `max_tokens`
//!   (then `finish_reason` "length", else "stop"), and stops when its client leaves;
//! - a constrained generation (JSON schema, tools) walks its real llguidance constraint
//!   over a one-byte-per-token vocabulary, preferring the token that closes a value, so
//!   the output is valid for the schema;
//! - generations run side by side (a thread each), as the real engine batches them;
//! - embeddings are a fixed unit vector per input;
//! - the prompt counts one token per 4 bytes of its text (at least 1).
//!
//! - a chat whose last message begins with `SCRIPT` is answered with the rest of that
//!   message, as a model would write it (three bytes per token, through the real output
//!   path: stop strings and the reasoning split), so a model family's real-looking output
//!   goes through parsing and every wire format (issue 29's vectors).
//!
//! It does not apply logprobs, logit_bias, or (outside a script) stop strings and the
//! reasoning split (those are the real engine's and its tests'). A test can hold every generation after its first token with
//! `Gate` (`EngineParams::fake_gate`), to observe a stream mid-way without depending on
//! how fast tokens come.

use super::constraint::{ApproximateTokEnv, ConstraintCompiler};
use super::{
    EmbedInput, Embeddings, EngineHandle, EngineParams, EngineStats, Event, FinishReason,
    GenerateRequest, Intake, Job, LoadedModel, Prompt, Spawned, Usage,
};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A chat's last message that begins with this is a script: the rest is the answer.
pub const SCRIPT: &str = "[fake engine script]";

/// What an unconstrained generation says, one word per token.
pub const ANSWER: &str = "The quick brown fox jumps over the lazy dog.";
/// How long a held generation waits for the gate before it gives up (a test that
/// forgets to open it fails with a truncated answer instead of hanging).
const GATE_LIMIT: Duration = Duration::from_secs(60);

/// Holds generations after their first token while closed (open by default).
#[derive(Debug, Default)]
pub struct Gate {
    closed: Mutex<bool>,
    changed: Condvar,
}

impl Gate {
    pub fn close(&self) {
        *self.lock() = true;
    }

    pub fn open(&self) {
        *self.lock() = false;
        self.changed.notify_all();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, bool> {
        self.closed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait while closed; false if it stayed closed for `GATE_LIMIT`.
    fn pass(&self) -> bool {
        let guard = self.lock();
        let (guard, timeout) = self
            .changed
            .wait_timeout_while(guard, GATE_LIMIT, |closed| *closed)
            .unwrap_or_else(|p| p.into_inner());
        drop(guard);
        !timeout.timed_out()
    }
}

/// Start the fake engine thread; it is "loaded" at once.
pub fn spawn(params: &EngineParams, stats: Arc<EngineStats>) -> Result<Spawned, String> {
    let intake = Intake::new(params.queue_depth, stats.clone());
    let handle = EngineHandle::new(intake.clone(), params.context);
    let env = ApproximateTokEnv::single_byte_env();
    handle.set_constraints(ConstraintCompiler::new(&env, params.constraints.clone())?);
    let eos = env.tok_trie().eos_token();
    let gate = params.fake_gate.clone();
    let (loaded_tx, loaded_rx) = oneshot::channel();
    let _ = loaded_tx.send(Ok(LoadedModel {
        context: params.context,
        n_ctx_train: params.context,
        n_params: 0,
        size_bytes: 0,
        load_time: Duration::ZERO,
        renderer: "fake engine",
        template_caps: None,
        parallel: params.parallel,
        kv_bytes_per_slot: 0,
        threads: params.threads,
        threads_batch: params.threads_batch,
    }));
    std::thread::Builder::new()
        .name("fake-engine".into())
        .spawn(move || {
            while let Some(job) = intake.next(true) {
                match job {
                    // Each generation on its own thread, so one held by the gate does
                    // not hold the others (the real engine batches them).
                    Job::Generate(g) => {
                        let (gate, stats) = (gate.clone(), stats.clone());
                        std::thread::spawn(move || generate(*g, eos, &gate, &stats));
                    }
                    Job::Embed(e) => {
                        let vectors = e.inputs.iter().map(|_| vec![0.6, 0.8]).collect();
                        let prompt_tokens = e.inputs.iter().map(input_tokens).sum();
                        let _ = e.reply.send(Ok(Embeddings {
                            vectors,
                            prompt_tokens,
                        }));
                    }
                }
            }
        })
        .map_err(|e| format!("cannot start the fake engine thread: {e}"))?;
    Ok((handle, loaded_rx))
}

fn text_tokens(text: &str) -> u32 {
    (text.len() as u32).div_ceil(4).max(1)
}

fn input_tokens(input: &EmbedInput) -> u32 {
    match input {
        EmbedInput::Text(t) => text_tokens(t),
        EmbedInput::Tokens(t) => t.len() as u32,
    }
}

fn prompt_tokens(prompt: &Prompt) -> u32 {
    match prompt {
        Prompt::Text(t) => text_tokens(t),
        Prompt::Chat {
            messages, tools, ..
        } => {
            let bytes: usize = messages.iter().map(|m| m.content.len() + 8).sum::<usize>()
                + tools.iter().map(|t| t.to_string().len()).sum::<usize>();
            (bytes as u32).div_ceil(4).max(1)
        }
    }
}

/// One generation, start to finish, on the engine thread.
fn generate(mut job: GenerateRequest, eos: u32, gate: &Gate, stats: &EngineStats) {
    let prompt_tokens = prompt_tokens(&job.prompt);
    let max_tokens = job.max_tokens.unwrap_or(job.default_max_tokens);
    let started = Instant::now();
    if job.events.send(Event::Started { prompt_tokens }).is_err() {
        stats.cancelled.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if job.count_only {
        let usage = Usage {
            prompt_tokens,
            ..Usage::default()
        };
        let reason = FinishReason::Stop;
        let _ = job.events.send(Event::Finished { reason, usage });
        return;
    }
    stats.active.fetch_add(1, Ordering::Relaxed);
    if let Some(script) = scripted(&job.prompt) {
        let (reason, usage) = play(&job, &script, max_tokens, prompt_tokens);
        stats.active.fetch_sub(1, Ordering::Relaxed);
        stats.completed.fetch_add(1, Ordering::Relaxed);
        let _ = job.events.send(Event::Finished { reason, usage });
        return;
    }
    let mut completion = 0u32;
    let mut words = ANSWER.split_inclusive(' ');
    let reason = loop {
        if completion >= max_tokens || started.elapsed() > job.deadline {
            break Some(FinishReason::Length);
        }
        if completion == 1 && !gate.pass() {
            break Some(FinishReason::Length);
        }
        let piece = match job.constraint.as_mut() {
            Some(c) => match next_constrained(c, eos) {
                Ok(Some(byte)) => String::from_utf8_lossy(&[byte]).into_owned(),
                Ok(None) => break Some(FinishReason::Stop),
                Err(e) => {
                    let _ = job
                        .events
                        .send(Event::Failed(super::EngineError::Constraint(e)));
                    break None;
                }
            },
            None => match words.next() {
                Some(w) => w.to_string(),
                None => break Some(FinishReason::Stop),
            },
        };
        completion += 1;
        if job.events.send(Event::Text(piece)).is_err() {
            // The client left: stop, as the real engine frees the sequence.
            stats.cancelled.fetch_add(1, Ordering::Relaxed);
            stats.active.fetch_sub(1, Ordering::Relaxed);
            return;
        }
    };
    stats.active.fetch_sub(1, Ordering::Relaxed);
    match reason {
        Some(reason) => {
            stats.completed.fetch_add(1, Ordering::Relaxed);
            stats
                .prompt_tokens
                .fetch_add(u64::from(prompt_tokens), Ordering::Relaxed);
            stats
                .completion_tokens
                .fetch_add(u64::from(completion), Ordering::Relaxed);
            let _ = job.events.send(Event::Finished {
                reason,
                usage: Usage {
                    prompt_tokens,
                    completion_tokens: completion,
                    cached_tokens: 0,
                    reasoning_tokens: 0,
                },
            });
        }
        None => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The script of a chat whose last message holds one (`SCRIPT`).
fn scripted(prompt: &Prompt) -> Option<String> {
    match prompt {
        Prompt::Chat { messages, .. } => messages
            .last()
            .and_then(|m| m.content.strip_prefix(SCRIPT))
            .map(str::to_string),
        Prompt::Text(_) => None,
    }
}

/// Write a script through the real output path, three bytes per token (markers arrive
/// split), up to `max_tokens` tokens.
fn play(
    job: &GenerateRequest,
    script: &str,
    max_tokens: u32,
    prompt_tokens: u32,
) -> (FinishReason, Usage) {
    let reasoning = job
        .reasoning
        .map(|plan| super::reasoning::Run::<u8>::new(plan, false, Vec::new()));
    let mut out = super::output::TextOut::new(job.stop.clone(), reasoning);
    let mut tokens = 0u32;
    let mut reason = FinishReason::Stop;
    for chunk in script.as_bytes().chunks(3) {
        if tokens == max_tokens {
            reason = FinishReason::Length;
            break;
        }
        tokens += 1;
        let pieces = out.push(chunk);
        let stopped = pieces.stopped;
        if !pieces.send(&job.events) || stopped {
            break;
        }
    }
    out.finish().send(&job.events);
    let usage = Usage {
        prompt_tokens,
        completion_tokens: tokens,
        cached_tokens: 0,
        reasoning_tokens: out.reasoning_tokens(),
    };
    (reason, usage)
}

/// The byte a constrained walk emits next (None: the constraint allows the end).
/// Preference: end, then what closes a value, then digits and letters, then anything.
fn next_constrained(
    c: &mut super::constraint::Constraint,
    eos: u32,
) -> Result<Option<u8>, super::constraint::ConstraintError> {
    let mask = c.mask()?;
    if mask.is_allowed(eos) {
        return Ok(None);
    }
    let pick = b"\"}]0a:,{[ "
        .iter()
        .map(|&b| u32::from(b))
        .find(|&t| mask.is_allowed(t))
        .or_else(|| (0..256u32).find(|&t| mask.is_allowed(t)));
    let Some(token) = pick else {
        return Err(super::constraint::ConstraintError::Dead);
    };
    c.consume(token)?;
    Ok(u8::try_from(token).ok())
}
