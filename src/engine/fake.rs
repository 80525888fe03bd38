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
//! - one step loop serves every generation, one token each per step, as the real engine
//!   batches them (a generation held by the gate does not hold the others);
//! - embeddings are a fixed unit vector per input;
//! - the prompt counts one token per 4 bytes of its text (at least 1).
//!
//! - a completion or chat that begins with `FLOOD` gets `ANSWER` over and over until its
//!   `max_tokens`, through the real output path, at zero model cost, optionally paced to
//!   one step per N µs (`FLOOD` then N) like a device's forward pass: the load of the
//!   serving-path benchmark (`tests/serving_path.rs`);
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
use super::output::TextOut;
use super::{
    EmbedInput, Embeddings, EngineHandle, EngineParams, EngineStats, Event, FinishReason,
    GenerateRequest, Intake, Job, LoadedModel, Prompt, Spawned, Usage,
};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::oneshot;

/// A chat's last message that begins with this is a script: the rest is the answer.
pub const SCRIPT: &str = "[fake engine script]";

/// A completion prompt or a chat's last message that begins with this is answered with
/// `ANSWER`'s words over and over until `max_tokens`, through the real output path: the
/// serving-path benchmark's load (`tests/serving_path.rs`).
pub const FLOOD: &str = "[fake engine flood]";

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

    fn is_closed(&self) -> bool {
        *self.lock()
    }

    /// Wait while closed, at most `limit`.
    fn wait_open(&self, limit: Duration) {
        let guard = self.lock();
        let _ = self
            .changed
            .wait_timeout_while(guard, limit, |closed| *closed);
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
        .spawn(move || serve(&intake, eos, &gate, &stats))
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

/// What a running generation writes next.
enum Source {
    /// `ANSWER`'s words in order, one per token (sent as they are).
    Words(usize),
    /// `ANSWER`'s words over and over until `max_tokens`, through the real output path,
    /// at most one step per `Duration` (`FLOOD`).
    Flood(usize, Box<TextOut<u8>>, Duration),
    /// The job's constraint, walked one byte per token.
    Constrained,
    /// A script's bytes, three per token, through the real output path (`SCRIPT`).
    Script {
        bytes: Vec<u8>,
        at: usize,
        out: Box<TextOut<u8>>,
    },
}

/// One generation in the step loop.
struct Running {
    job: GenerateRequest,
    prompt_tokens: u32,
    max_tokens: u32,
    started: Instant,
    completion: u32,
    source: Source,
    /// Since when the gate has held it after its first token.
    held_since: Option<Instant>,
}

/// How one step left a generation.
enum Stepped {
    Wrote,
    Held,
    Done(Option<FinishReason>),
    /// Its client left.
    Gone,
}

/// The engine loop: like the real batcher, every running generation gets one token per
/// step, on this one thread; it sleeps on the intake when nothing runs.
fn serve(intake: &Intake, eos: u32, gate: &Gate, stats: &EngineStats) {
    let mut running: Vec<Running> = Vec::new();
    let mut next_step = Instant::now();
    loop {
        while let Some(job) = intake.next(running.is_empty()) {
            match job {
                Job::Generate(g) => {
                    if let Some(r) = start(*g, stats) {
                        running.push(r);
                    }
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
        let mut wrote = false;
        running.retain_mut(|r| match step(r, eos, gate) {
            Stepped::Wrote => {
                wrote = true;
                true
            }
            Stepped::Held => true,
            Stepped::Gone => {
                stats.cancelled.fetch_add(1, Ordering::Relaxed);
                stats.active.fetch_sub(1, Ordering::Relaxed);
                false
            }
            Stepped::Done(reason) => {
                end(r, reason, stats);
                false
            }
        });
        if !wrote && !running.is_empty() {
            // Everything running is held by the gate: wait for it (or for new work).
            gate.wait_open(HELD_POLL);
        }
        if let Some(period) = pace(&running) {
            // Paced like a device's forward pass: the next step starts one period after
            // this one did (at once when the serving path fell behind).
            next_step += period;
            let now = Instant::now();
            match next_step.checked_duration_since(now) {
                Some(wait) => std::thread::sleep(wait),
                None => next_step = now,
            }
        } else {
            next_step = Instant::now();
        }
    }
}

/// How long the loop sleeps while every generation is held before it looks again (for
/// new requests and gate limits).
const HELD_POLL: Duration = Duration::from_millis(10);

/// Admit a generation: report its start; None when it needs no steps.
fn start(job: GenerateRequest, stats: &EngineStats) -> Option<Running> {
    let prompt_tokens = prompt_tokens(&job.prompt);
    let max_tokens = job.max_tokens.unwrap_or(job.default_max_tokens);
    if job.events.send(Event::Started { prompt_tokens }).is_err() {
        stats.cancelled.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    if job.count_only {
        let usage = Usage {
            prompt_tokens,
            ..Usage::default()
        };
        let reason = FinishReason::Stop;
        let _ = job.events.send(Event::Finished { reason, usage });
        return None;
    }
    stats.active.fetch_add(1, Ordering::Relaxed);
    let output = || {
        let reasoning = job
            .reasoning
            .map(|plan| super::reasoning::Run::<u8>::new(plan, false, Vec::new()));
        Box::new(TextOut::new(job.stop.clone(), reasoning))
    };
    let source = if let Some(script) = scripted(&job.prompt) {
        Source::Script {
            bytes: script.into_bytes(),
            at: 0,
            out: output(),
        }
    } else if job.constraint.is_some() {
        Source::Constrained
    } else if let Some(period) = flooded(&job.prompt) {
        Source::Flood(0, output(), period)
    } else {
        Source::Words(0)
    };
    Some(Running {
        job,
        prompt_tokens,
        max_tokens,
        started: Instant::now(),
        completion: 0,
        source,
        held_since: None,
    })
}

/// One token of one generation.
fn step(r: &mut Running, eos: u32, gate: &Gate) -> Stepped {
    if r.job.events.is_closed() {
        return Stepped::Gone;
    }
    // A script plays to its end (no gate, no deadline); the rest keep the real limits.
    let scripted = matches!(r.source, Source::Script { .. });
    if !scripted {
        if r.completion >= r.max_tokens || r.started.elapsed() > r.job.deadline {
            return Stepped::Done(Some(FinishReason::Length));
        }
        if r.completion == 1 && gate.is_closed() {
            let since = *r.held_since.get_or_insert_with(Instant::now);
            if since.elapsed() > GATE_LIMIT {
                return Stepped::Done(Some(FinishReason::Length));
            }
            return Stepped::Held;
        }
    }
    let words = || ANSWER.split_inclusive(' ');
    let sent = match &mut r.source {
        Source::Words(at) => {
            let Some(word) = words().nth(*at) else {
                return Stepped::Done(Some(FinishReason::Stop));
            };
            *at += 1;
            r.job.events.send(Event::Text(word.to_string())).is_ok()
        }
        Source::Flood(at, out, _) => {
            // The answer's words in turn, from the first again after the last.
            let word = words().nth(*at).unwrap_or_else(|| {
                *at = 0;
                words().next().unwrap_or(" ")
            });
            *at += 1;
            r.completion += 1;
            return emit(out, word.as_bytes(), &r.job.events);
        }
        Source::Constrained => {
            let Some(c) = r.job.constraint.as_mut() else {
                return Stepped::Done(None);
            };
            match next_constrained(c, eos) {
                Ok(Some(byte)) => {
                    let piece = String::from_utf8_lossy(&[byte]).into_owned();
                    r.job.events.send(Event::Text(piece)).is_ok()
                }
                Ok(None) => return Stepped::Done(Some(FinishReason::Stop)),
                Err(e) => {
                    let _ = r
                        .job
                        .events
                        .send(Event::Failed(super::EngineError::Constraint(e)));
                    return Stepped::Done(None);
                }
            }
        }
        Source::Script { bytes, at, out } => {
            return play(
                bytes,
                at,
                out,
                &mut r.completion,
                r.max_tokens,
                &r.job.events,
            )
        }
    };
    if !sent {
        // The client left: stop, as the real engine frees the sequence.
        return Stepped::Gone;
    }
    r.completion += 1;
    Stepped::Wrote
}

/// One token of a script: its next three bytes (markers arrive split), until the script
/// or `max_tokens` ends.
fn play(
    bytes: &[u8],
    at: &mut usize,
    out: &mut TextOut<u8>,
    completion: &mut u32,
    max_tokens: u32,
    events: &UnboundedSender<Event>,
) -> Stepped {
    let Some(rest) = bytes.get(*at..).filter(|rest| !rest.is_empty()) else {
        return Stepped::Done(Some(FinishReason::Stop));
    };
    if *completion >= max_tokens {
        return Stepped::Done(Some(FinishReason::Length));
    }
    let chunk = rest.get(..3).unwrap_or(rest);
    *at += chunk.len();
    *completion += 1;
    emit(out, chunk, events)
}

/// One token's bytes through the real output path: sent, or the client gone, or a stop
/// string found.
fn emit(out: &mut TextOut<u8>, bytes: &[u8], events: &UnboundedSender<Event>) -> Stepped {
    let pieces = out.push(bytes);
    let stopped = pieces.stopped;
    if !pieces.send(events) {
        return Stepped::Gone;
    }
    if stopped {
        Stepped::Done(Some(FinishReason::Stop))
    } else {
        Stepped::Wrote
    }
}

/// Finish a generation: what the output path holds, then the usage (None: it failed
/// and has been told).
fn end(r: &mut Running, reason: Option<FinishReason>, stats: &EngineStats) {
    stats.active.fetch_sub(1, Ordering::Relaxed);
    let Some(reason) = reason else {
        stats.failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let mut reasoning_tokens = 0;
    if let Source::Script { out, .. } | Source::Flood(_, out, _) = &mut r.source {
        out.finish().send(&r.job.events);
        reasoning_tokens = out.reasoning_tokens();
    }
    stats.completed.fetch_add(1, Ordering::Relaxed);
    stats
        .prompt_tokens
        .fetch_add(u64::from(r.prompt_tokens), Ordering::Relaxed);
    stats
        .completion_tokens
        .fetch_add(u64::from(r.completion), Ordering::Relaxed);
    let _ = r.job.events.send(Event::Finished {
        reason,
        usage: Usage {
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion,
            cached_tokens: 0,
            reasoning_tokens,
        },
    });
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

/// A completion prompt or a chat's last message that begins with `FLOOD`: the step
/// period it asks for (microseconds after the marker; zero or none: as fast as it goes).
fn flooded(prompt: &Prompt) -> Option<Duration> {
    let text = match prompt {
        Prompt::Chat { messages, .. } => messages.last().map(|m| m.content.as_str())?,
        Prompt::Text(t) => t,
    };
    let period = text.strip_prefix(FLOOD)?;
    Some(Duration::from_micros(period.trim().parse().unwrap_or(0)))
}

/// The step period the running floods ask for: the shortest (a GPU's step time).
fn pace(running: &[Running]) -> Option<Duration> {
    running
        .iter()
        .filter_map(|r| match r.source {
            Source::Flood(_, _, period) if !period.is_zero() => Some(period),
            _ => None,
        })
        .min()
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
