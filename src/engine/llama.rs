//! The only module that touches llama.cpp (through `llama-cpp-2`).
//!
//! One dedicated OS thread owns the backend, the model and one context. It takes jobs
//! from the bounded queue one at a time (serial; continuous batching is a later step),
//! renders the chat template from the GGUF, tokenizes, prefills in `batch`-sized
//! chunks, and samples token by token, sending UTF-8-safe pieces to the request's
//! channel. It checks the channel before each token: a client that went away stops its
//! generation at once, and a job whose client left while queued is skipped.
//!
//! SECURITY:
//! - Raw completion prompts are tokenized with `parse_special = false`, so client text
//!   cannot forge control tokens. Chat prompts are rendered by the template, whose own
//!   markers must be parsed as special tokens (see SECURITY.md for what that implies).
//! - A panic inside a job (llama-cpp-2 has `expect`s) is caught, answered as an internal
//!   error, and the engine keeps serving; the KV cache is cleared before every job.
//! - llama.cpp's log lines go through `tracing`, never raw to stderr; prompts are never logged.

use super::text::{StopMatcher, Utf8Assembler};
use super::{
    completion_budget, EngineError, EngineHandle, EngineStats, Event, FinishReason,
    GenerateRequest, Prompt,
};
use crate::config::{Config, GpuLayers};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use std::num::NonZeroU32;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Facts about the loaded model, for the start-up log.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    pub context: u32,
    pub n_ctx_train: u32,
    pub n_params: u64,
    pub size_bytes: u64,
    pub load_time: Duration,
    pub has_template: bool,
}

struct EngineSettings {
    path: PathBuf,
    context: u32,
    batch: u32,
    threads: i32,
    threads_batch: i32,
    gpu_layers: u32,
    /// llama.cpp's n_seq_max; the serial engine uses sequence 0 only.
    parallel: u32,
    #[cfg(feature = "test-hooks")]
    load_delay: Duration,
}

/// Route llama.cpp/ggml logs into `tracing` (call once, early).
pub fn route_logs() {
    llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
}

/// Start the engine thread. The model loads on that thread; `loaded` reports the outcome.
pub fn spawn(
    cfg: &Config,
    stats: Arc<EngineStats>,
) -> Result<(EngineHandle, oneshot::Receiver<Result<LoadedModel, String>>), String> {
    // `serve` replaced 0 ("one per core") by the core count before lock-down.
    let threads = cfg.model.threads.max(1) as i32;
    let settings = EngineSettings {
        path: cfg.model.path.clone(),
        context: cfg.model.context,
        batch: cfg.model.batch,
        threads,
        threads_batch: if cfg.model.threads_batch == 0 {
            threads
        } else {
            cfg.model.threads_batch as i32
        },
        gpu_layers: match cfg.model.gpu_layers {
            GpuLayers::All => u32::MAX,
            GpuLayers::Count(n) => n,
        },
        parallel: cfg.model.parallel,
        #[cfg(feature = "test-hooks")]
        load_delay: std::env::var("LGI_TEST_LOAD_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis)
            .unwrap_or_default(),
    };
    let (queue_tx, queue_rx) = std::sync::mpsc::sync_channel(cfg.limits.queue_depth as usize);
    let (loaded_tx, loaded_rx) = oneshot::channel();
    let thread_stats = stats.clone();
    std::thread::Builder::new()
        .name("engine".into())
        .spawn(move || engine_thread(settings, queue_rx, thread_stats, loaded_tx))
        .map_err(|e| format!("cannot start the engine thread: {e}"))?;
    Ok((
        EngineHandle::new(queue_tx, stats, cfg.model.context),
        loaded_rx,
    ))
}

fn engine_thread(
    s: EngineSettings,
    queue: Receiver<GenerateRequest>,
    stats: Arc<EngineStats>,
    loaded: oneshot::Sender<Result<LoadedModel, String>>,
) {
    #[cfg(feature = "test-hooks")]
    std::thread::sleep(s.load_delay);
    let started = Instant::now();
    let backend = match LlamaBackend::init() {
        Ok(b) => b,
        Err(e) => {
            let _ = loaded.send(Err(format!("llama.cpp backend init failed: {e}")));
            return;
        }
    };
    let mut last_logged = -1i32;
    let model_params = LlamaModelParams::default()
        .with_n_gpu_layers(s.gpu_layers)
        .with_progress_callback(move |p| {
            let step = (p * 4.0) as i32;
            if step > last_logged {
                last_logged = step;
                tracing::info!(progress = format!("{:.0}%", p * 100.0), "loading model");
            }
            true
        });
    let model = match LlamaModel::load_from_file(&backend, &s.path, &model_params) {
        Ok(m) => m,
        Err(e) => {
            let _ = loaded.send(Err(format!(
                "llama.cpp could not load {}: {e}",
                s.path.display()
            )));
            return;
        }
    };
    let ctx_params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(s.context))
        .with_n_batch(s.batch)
        .with_n_ubatch(s.batch)
        .with_n_seq_max(s.parallel)
        .with_n_threads(s.threads)
        .with_n_threads_batch(s.threads_batch);
    let mut ctx = match model.new_context(&backend, ctx_params) {
        Ok(c) => c,
        Err(e) => {
            let _ = loaded.send(Err(format!("llama.cpp could not create a context: {e}")));
            return;
        }
    };
    let template = model.chat_template(None).ok();
    let info = LoadedModel {
        context: ctx.n_ctx(),
        n_ctx_train: model.n_ctx_train(),
        n_params: model.n_params(),
        size_bytes: model.size(),
        load_time: started.elapsed(),
        has_template: template.is_some(),
    };
    stats.ready.store(true, Ordering::Release);
    if loaded.send(Ok(info)).is_err() {
        return;
    }
    let mut batch = LlamaBatch::new(s.batch as usize, 1);
    let context = ctx.n_ctx();
    while let Ok(job) = queue.recv() {
        stats.queued.fetch_sub(1, Ordering::Relaxed);
        if job.events.is_closed() {
            // SECURITY: the client left while queued; spend nothing on it.
            stats.cancelled.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        stats.active.fetch_add(1, Ordering::Relaxed);
        let events = job.events.clone();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            run_job(
                &model,
                &mut ctx,
                &mut batch,
                template.as_ref(),
                context,
                job,
            )
        }));
        stats.active.fetch_sub(1, Ordering::Relaxed);
        match outcome {
            Ok(Ok(JobEnd::Finished {
                prompt_tokens,
                completion_tokens,
            })) => {
                stats.completed.fetch_add(1, Ordering::Relaxed);
                stats
                    .prompt_tokens
                    .fetch_add(prompt_tokens as u64, Ordering::Relaxed);
                stats
                    .completion_tokens
                    .fetch_add(completion_tokens as u64, Ordering::Relaxed);
            }
            Ok(Ok(JobEnd::Cancelled { completion_tokens })) => {
                stats.cancelled.fetch_add(1, Ordering::Relaxed);
                stats
                    .completion_tokens
                    .fetch_add(completion_tokens as u64, Ordering::Relaxed);
                tracing::info!(completion_tokens, "generation cancelled: client went away");
            }
            Ok(Err(e)) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                let _ = events.send(Event::Failed(e));
            }
            Err(_) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!("engine job panicked; request answered with an internal error");
                let _ = events.send(Event::Failed(EngineError::Internal));
            }
        }
    }
    tracing::info!("engine stopped");
}

enum JobEnd {
    Finished {
        prompt_tokens: u32,
        completion_tokens: u32,
    },
    Cancelled {
        completion_tokens: u32,
    },
}

fn render_prompt(
    model: &LlamaModel,
    template: Option<&LlamaChatTemplate>,
    prompt: &Prompt,
) -> Result<(String, bool), EngineError> {
    match prompt {
        Prompt::Text(t) => Ok((t.clone(), false)),
        Prompt::Chat(messages) => {
            let template = template.ok_or(EngineError::Template)?;
            let msgs = messages
                .iter()
                .map(|m| LlamaChatMessage::new(m.role.clone(), m.content.clone()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| EngineError::Template)?;
            let text = model
                .apply_chat_template(template, &msgs, true)
                .map_err(|e| {
                    tracing::warn!(error = %e, "chat template failed");
                    EngineError::Template
                })?;
            Ok((text, true))
        }
    }
}

fn build_sampler(model: &LlamaModel, req: &GenerateRequest) -> LlamaSampler {
    let s = req.sampling;
    let mut chain = Vec::new();
    if s.presence_penalty != 0.0 || s.frequency_penalty != 0.0 {
        chain.push(LlamaSampler::penalties(
            model.n_vocab(),
            64,
            1.0,
            s.frequency_penalty,
            s.presence_penalty,
        ));
    }
    if s.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
    } else {
        if s.top_p < 1.0 {
            chain.push(LlamaSampler::top_p(s.top_p, 1));
        }
        chain.push(LlamaSampler::temp(s.temperature));
        chain.push(LlamaSampler::dist(s.seed));
    }
    LlamaSampler::chain_simple(chain)
}

fn run_job(
    model: &LlamaModel,
    ctx: &mut LlamaContext<'_>,
    batch: &mut LlamaBatch,
    template: Option<&LlamaChatTemplate>,
    context: u32,
    req: GenerateRequest,
) -> Result<JobEnd, EngineError> {
    let started = Instant::now();
    ctx.clear_kv_cache();
    let (text, parse_special) = render_prompt(model, template, &req.prompt)?;
    let vocab = model.vocab();
    let tokens: Vec<LlamaToken> = vocab.tokenize(text.as_bytes(), true, parse_special);
    drop(text);
    if tokens.is_empty() {
        return Err(EngineError::EmptyPrompt);
    }
    let prompt_tokens = u32::try_from(tokens.len()).unwrap_or(u32::MAX);
    let budget = completion_budget(
        prompt_tokens,
        req.max_tokens,
        req.default_max_tokens,
        context,
    )?;
    if req.events.send(Event::Started { prompt_tokens }).is_err() {
        return Ok(JobEnd::Cancelled {
            completion_tokens: 0,
        });
    }

    // Prefill in chunks of the batch size; logits only for the very last prompt token.
    let chunk = batch_capacity(ctx);
    let last = tokens.len() - 1;
    for (ci, part) in tokens.chunks(chunk).enumerate() {
        batch.clear();
        for (j, tok) in part.iter().enumerate() {
            let pos = ci * chunk + j;
            batch
                .add(*tok, pos as i32, &[0], pos == last)
                .map_err(|_| EngineError::Internal)?;
        }
        ctx.decode(batch).map_err(|e| {
            tracing::error!(error = %e, "prefill decode failed");
            EngineError::Internal
        })?;
        if req.events.is_closed() {
            return Ok(JobEnd::Cancelled {
                completion_tokens: 0,
            });
        }
    }

    let mut sampler = build_sampler(model, &req);
    let mut utf8 = Utf8Assembler::default();
    let mut stops = StopMatcher::new(req.stop.clone());
    let mut n_past = tokens.len() as i32;
    let mut completion_tokens: u32 = 0;
    let mut logits_idx = batch.n_tokens() - 1;
    let mut stop_string_hit = false;
    let reason = loop {
        if req.events.is_closed() {
            return Ok(JobEnd::Cancelled { completion_tokens });
        }
        let token = sampler.sample(ctx, logits_idx);
        if vocab.is_eog(token) {
            break FinishReason::Stop;
        }
        completion_tokens += 1;
        let piece = utf8.push(&vocab.token_to_piece(token, false, None));
        let step = stops.push(&piece);
        if !step.emit.is_empty() && req.events.send(Event::Text(step.emit)).is_err() {
            return Ok(JobEnd::Cancelled { completion_tokens });
        }
        if step.stopped {
            stop_string_hit = true;
            break FinishReason::Stop;
        }
        if completion_tokens >= budget {
            break FinishReason::Length;
        }
        // SECURITY: one request cannot hold the (serial) engine beyond its deadline.
        if started.elapsed() >= req.deadline {
            tracing::info!(
                completion_tokens,
                "generation deadline reached (limits.max_generation_secs)"
            );
            break FinishReason::Length;
        }
        batch.clear();
        batch
            .add(token, n_past, &[0], true)
            .map_err(|_| EngineError::Internal)?;
        n_past += 1;
        ctx.decode(batch).map_err(|e| {
            tracing::error!(error = %e, "decode failed");
            EngineError::Internal
        })?;
        logits_idx = 0;
    };
    // Ended by length or end-of-generation: release what the UTF-8 assembler and the stop
    // matcher still hold (a stop string may still complete inside that tail).
    if !stop_string_hit {
        let tail = stops.push(&utf8.finish());
        let mut rest = tail.emit;
        if !tail.stopped {
            rest.push_str(&stops.finish());
        }
        if !rest.is_empty() {
            let _ = req.events.send(Event::Text(rest));
        }
    }
    let _ = req.events.send(Event::Finished {
        reason,
        prompt_tokens,
        completion_tokens,
    });
    Ok(JobEnd::Finished {
        prompt_tokens,
        completion_tokens,
    })
}

fn batch_capacity(ctx: &LlamaContext<'_>) -> usize {
    ctx.n_batch().max(1) as usize
}
