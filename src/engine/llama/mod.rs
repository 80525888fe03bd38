//! The only module that touches llama.cpp (through `llama-cpp-2`): loading the model
//! and running the continuous-batching loop (`batcher`).
//!
//! One dedicated OS thread owns the backend, the model and one context with
//! `n_seq_max = parallel` sequences. The KV cache is *not* unified: each sequence gets its
//! own `context` cells (n_ctx = context × parallel). Chosen because a sequence can then
//! never run out of cache because of its neighbours (every admitted request is
//! guaranteed the room it was validated for), memory is fixed and reported at start-up,
//! and attention per sequence only spans that sequence's cells. The price — a slot's
//! cells are idle while it is — is what the prefix cache puts to use.
//!
//! llama.cpp's log lines go through `tracing`, never raw to stderr; prompts are never logged.

// FFI-adjacent calls (setpriority); llama-cpp-2 wraps llama.cpp itself.
#![allow(unsafe_code)]
// Indices here are slot numbers and positions the batcher itself owns, not client
// input; a step that panicked anyway is caught and answered (`Batcher::run`).
#![allow(clippy::indexing_slicing)]

mod batcher;
mod embed;
mod render;
mod sampling;

use super::constraint::ConstraintCompiler;
use super::{EngineHandle, EngineParams, EngineStats, Intake, LoadedModel};
use crate::config::{FlashAttention, KvCacheType, SplitMode};
use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::{LlamaModelParams, LlamaSplitMode};
use llama_cpp_2::model::LlamaModel;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;

/// Route llama.cpp/ggml logs into `tracing` (call once, early).
pub fn route_logs() {
    llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
}

/// Start the engine thread. The model loads on that thread; `loaded` reports the outcome.
pub fn spawn(
    params: &EngineParams,
    stats: Arc<EngineStats>,
) -> Result<(EngineHandle, oneshot::Receiver<Result<LoadedModel, String>>), String> {
    let settings = params.clone();
    #[cfg(feature = "test-hooks")]
    let load_gate = std::env::var_os("LGI_TEST_LOAD_GATE").map(std::path::PathBuf::from);
    let intake = Intake::new(params.queue_depth, stats.clone());
    let (loaded_tx, loaded_rx) = oneshot::channel();
    let handle = EngineHandle::new(intake.clone(), params.context);
    let engine_handle = handle.clone();
    std::thread::Builder::new()
        .name("engine".into())
        .spawn(move || {
            #[cfg(feature = "test-hooks")]
            hold_load_until(load_gate.as_deref());
            engine_thread(settings, intake, engine_handle, stats, loaded_tx)
        })
        .map_err(|e| format!("cannot start the engine thread: {e}"))?;
    Ok((handle, loaded_rx))
}

/// Test hook (never in a release): `LGI_TEST_LOAD_GATE=PATH` holds the model load until
/// PATH exists, so a test sees the loading state for as long as it needs, on any
/// hardware (at most two minutes, so a test that forgets to release cannot hang).
#[cfg(feature = "test-hooks")]
fn hold_load_until(gate: Option<&std::path::Path>) {
    let Some(gate) = gate else {
        return;
    };
    use std::time::Duration;
    let until = Instant::now() + Duration::from_secs(120);
    while !gate.exists() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn engine_thread(
    s: EngineParams,
    intake: Arc<Intake>,
    handle: EngineHandle,
    stats: Arc<EngineStats>,
    loaded: oneshot::Sender<Result<LoadedModel, String>>,
) {
    lower_priority();
    let started = Instant::now();
    let backend = match LlamaBackend::init() {
        Ok(b) => b,
        Err(e) => {
            let _ = loaded.send(Err(format!("llama.cpp backend init failed: {e}")));
            return;
        }
    };
    log_devices(&s);
    let mut last_logged = -1i32;
    let model_params = LlamaModelParams::default()
        .with_n_gpu_layers(s.gpu_layers)
        .with_main_gpu(s.main_gpu as i32)
        .with_split_mode(match s.split_mode {
            SplitMode::None => LlamaSplitMode::None,
            SplitMode::Layer => LlamaSplitMode::Layer,
            SplitMode::Row => LlamaSplitMode::Row,
        })
        .with_progress_callback(move |p| {
            // At least every 10%, so a slow load of a big model is visibly alive.
            let step = (p * 10.0) as i32;
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
        .with_n_ctx(NonZeroU32::new(s.context.saturating_mul(s.parallel)))
        .with_kv_unified(false)
        .with_n_batch(s.batch)
        .with_n_ubatch(s.batch)
        .with_n_seq_max(s.parallel)
        .with_n_threads(s.threads as i32)
        .with_n_threads_batch(s.threads_batch as i32)
        .with_flash_attention_policy(flash_attention_policy(s.flash_attention))
        .with_type_k(kv_type(s.kv_cache_type))
        .with_type_v(kv_type(s.kv_cache_type));
    log_offload(&model, &s);
    let ctx = match model.new_context(&backend, ctx_params) {
        Ok(c) => c,
        Err(e) => {
            let _ = loaded.send(Err(format!("llama.cpp could not create a context: {e}")));
            return;
        }
    };
    let (embed_params, embed_mode) = embedding_params(&model, s.context, s.batch, s.threads as i32);
    let embed_ctx = if s.embeddings {
        match model.new_context(&backend, embed_params) {
            Ok(c) => Some((c, embed_mode)),
            Err(e) => {
                let _ = loaded.send(Err(format!(
                    "llama.cpp could not create the embeddings context (model.embeddings): {e}"
                )));
                return;
            }
        }
    } else {
        None
    };
    // The token trie for constrained decoding, once per model; requests compile their
    // schemas against it on the blocking pool.
    let trie_started = Instant::now();
    match ConstraintCompiler::new(&token_env(&model), s.constraints.clone()) {
        Ok(c) => handle.set_constraints(c),
        Err(e) => {
            let _ = loaded.send(Err(e));
            return;
        }
    }
    tracing::info!(
        vocabulary = model.n_vocab(),
        build_ms = trie_started.elapsed().as_millis() as u64,
        "constrained decoding ready (llguidance token trie)"
    );
    let renderer = match chat_renderer(&model, s.chat_template.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            let _ = loaded.send(Err(e));
            return;
        }
    };
    let info = LoadedModel {
        context: s.context,
        n_ctx_train: model.n_ctx_train(),
        n_params: model.n_params(),
        size_bytes: model.size(),
        load_time: started.elapsed(),
        renderer: match &renderer {
            render::Renderer::Jinja(t) if t.supports_tools() => "jinja (renders tools)",
            render::Renderer::Jinja(_) => "jinja",
            render::Renderer::Builtin(_) => "llama.cpp built-in",
            render::Renderer::None => "none",
        },
        template_caps: match &renderer {
            render::Renderer::Jinja(t) => Some(t.capabilities().describe()),
            _ => None,
        },
        parallel: s.parallel,
        kv_bytes_per_slot: (kv_bytes_per_token(&model) as f64 / 2.0
            * s.kv_cache_type.bytes_per_value()
            * f64::from(s.context)) as u64,
        threads: s.threads,
        threads_batch: s.threads_batch,
    };
    // Readiness is start-up's to declare, after seccomp (lib.rs), not the engine's.
    if loaded.send(Ok(info)).is_err() {
        return;
    }
    batcher::Batcher::new(batcher::Parts {
        model: &model,
        ctx,
        embed_ctx,
        renderer,
        parallel: s.parallel,
        context: s.context,
        prefix_cache: s.prefix_cache,
        intake,
        stats,
    })
    .run();
}

/// llguidance's view of the vocabulary: each token's bytes; a token with no text of its
/// own (a control token) is its special-token form behind toktrie's 0xFF marker, so no
/// JSON output can ever contain it. Every end-of-generation token counts as EOS.
fn token_env(model: &LlamaModel) -> toktrie::TokEnv {
    let vocab = model.vocab();
    let n_vocab = model.n_vocab().max(0) as u32;
    let eot = vocab.eot().0;
    let eos = if eot >= 0 { eot } else { vocab.eos().0 }.max(0) as u32;
    let mut ends = vec![eos];
    let mut words = Vec::with_capacity(n_vocab as usize);
    for id in 0..n_vocab as i32 {
        let token = llama_cpp_2::token::LlamaToken(id);
        if vocab.is_eog(token) && id as u32 != eos {
            ends.push(id as u32);
        }
        let text = vocab.token_to_piece(token, false, None);
        if text.is_empty() {
            let special = vocab.token_to_piece(token, true, None);
            if special.is_empty() {
                words.push(Vec::new());
            } else {
                let mut marked = Vec::with_capacity(special.len() + 1);
                marked.push(toktrie::TokTrie::SPECIAL_TOKEN_MARKER);
                marked.extend(special);
                words.push(marked);
            }
        } else {
            words.push(text);
        }
    }
    let info = toktrie::TokRxInfo::new(n_vocab, eos);
    let trie = toktrie::TokTrie::from(&info, &words).with_eos_tokens(&ends);
    Arc::new(super::constraint::ApproximateTokEnv::new(trie))
}

/// The chat template: the configured one (`model.chat_template_file`'s text or a
/// `model.chat_template` family) when set (an error if it does not
/// work with this model's special tokens), else the model file's, compiled with minijinja
/// and tried on a probe conversation; llama.cpp's built-in renderer if that fails
/// (logged); none without any template (warned once: chat requests get a 400 naming the
/// key).
fn chat_renderer(model: &LlamaModel, configured: Option<&str>) -> Result<render::Renderer, String> {
    use crate::engine::template::{self, ChatTemplate};
    let piece =
        |t| String::from_utf8_lossy(&model.vocab().token_to_piece(t, true, None)).into_owned();
    let (bos, eos) = (piece(model.vocab().bos()), piece(model.vocab().eos()));
    let probe = template::probe();
    if let Some(source) = configured {
        return ChatTemplate::new(source, &bos, &eos)
            .and_then(|t| t.render(&probe, &[]).map(|_| t))
            .map(|t| render::Renderer::Jinja(Box::new(t)))
            .map_err(|e| format!("the configured chat template (model.chat_template_file or model.chat_template): {e}"));
    }
    let Ok(builtin) = model.chat_template(None) else {
        tracing::warn!(
            "the model file has no chat template and neither model.chat_template_file nor \
             model.chat_template is set: \
             chat requests (/v1/chat/completions, /v1/responses) get a 400 until it is"
        );
        return Ok(render::Renderer::None);
    };
    let source = builtin.to_string().unwrap_or_default();
    match ChatTemplate::new(&source, &bos, &eos).and_then(|t| t.render(&probe, &[]).map(|_| t)) {
        Ok(t) => Ok(render::Renderer::Jinja(Box::new(t))),
        Err(e) => {
            tracing::warn!(error = %e, "the model's Jinja chat template cannot be used; falling back to llama.cpp's built-in renderer");
            Ok(render::Renderer::Builtin(builtin))
        }
    }
}

/// The embeddings context: one sequence of up to `context` tokens.
/// - A model that declares its pooling (an embedding model, often with bidirectional
///   attention) computes each input in one batch with that pooling.
/// - A generative model (causal attention, no pooling declared) gets mean pooling, as
///   llama.cpp's server does with `--pooling mean` — but computed here from per-token
///   embeddings, `batch` tokens per engine step. SECURITY: a long input then delays
///   the generating sequences by at most one such chunk per step (issue 15), and
///   causal attention makes the chunked result the same as a single batch's.
fn embedding_params(
    model: &LlamaModel,
    context: u32,
    batch: u32,
    threads: i32,
) -> (LlamaContextParams, embed::EmbedMode) {
    let declared = model
        .meta_val_str("general.architecture")
        .ok()
        .and_then(|arch| model.meta_val_str(&format!("{arch}.pooling_type")).ok());
    let (pooling, mode, step) = match declared.as_deref() {
        Some("1") => (LlamaPoolingType::Mean, embed::EmbedMode::Whole, context),
        Some("2") => (LlamaPoolingType::Cls, embed::EmbedMode::Whole, context),
        Some("3") => (LlamaPoolingType::Last, embed::EmbedMode::Whole, context),
        _ => (
            LlamaPoolingType::None,
            embed::EmbedMode::MeanChunked(batch.min(context) as usize),
            batch.min(context),
        ),
    };
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(context))
        .with_n_batch(step)
        .with_n_ubatch(step)
        .with_n_seq_max(1)
        .with_embeddings(true)
        .with_pooling_type(pooling)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    (params, mode)
}

/// Nice value of the engine thread and of the llama.cpp/OpenMP workers it starts (they
/// inherit it). The HTTP and health threads stay at 0, so when they have work — a health
/// probe, a TLS record, an SSE chunk — they run before generation instead of waiting for
/// a time slice behind it. Their work is tiny; generation speed is unchanged.
const ENGINE_NICE: libc::c_int = 5;

fn lower_priority() {
    // SAFETY: setpriority takes plain integers; `who` = 0 is the calling thread (Linux
    // nice values are per thread). Raising one's own nice value needs no privilege.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, ENGINE_NICE) };
    if rc != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "cannot lower the engine's priority; health checks may wait behind generation"
        );
    }
}

/// K and V bytes one token takes in the cache at llama.cpp's default f16 cells:
/// 2 (K and V) × layers × KV heads × head size × 2 bytes. An estimate for the start-up
/// report (models with unusual head sizes differ a little); llama.cpp logs its own figure.
/// llama.cpp's flash-attention policy values (enum llama_flash_attn_type).
fn flash_attention_policy(f: FlashAttention) -> i32 {
    match f {
        FlashAttention::Auto => -1,
        FlashAttention::Off => 0,
        FlashAttention::On => 1,
    }
}

fn kv_type(t: KvCacheType) -> llama_cpp_2::context::params::KvCacheType {
    use llama_cpp_2::context::params::KvCacheType as L;
    match t {
        KvCacheType::F16 => L::F16,
        KvCacheType::Bf16 => L::BF16,
        KvCacheType::Q8_0 => L::Q8_0,
        KvCacheType::Q4_0 => L::Q4_0,
    }
}

/// Log every compute device llama.cpp sees (name, memory), so an operator can tell at a
/// glance whether the GPU was found and how much VRAM is free before the load.
fn log_devices(s: &EngineParams) {
    let devices = llama_cpp_2::list_llama_ggml_backend_devices();
    for d in &devices {
        tracing::info!(
            index = d.index,
            backend = %d.backend,
            name = %d.name,
            description = %d.description,
            memory_total_mib = d.memory_total / (1024 * 1024),
            memory_free_mib = d.memory_free / (1024 * 1024),
            "compute device"
        );
    }
    let gpus = devices
        .iter()
        .filter(|d| d.backend.eq_ignore_ascii_case("cuda"))
        .count();
    if gpus > 1 {
        // llama.cpp's load log (routed here) then names each device's buffer size.
        tracing::info!(
            gpus,
            split_mode = s.split_mode.name(),
            main_gpu = s.main_gpu,
            "several GPUs: the model is split over them (layer: in proportion to free memory)"
        );
    }
    if cfg!(feature = "cuda") && gpus == 0 {
        tracing::warn!("CUDA build but no CUDA device is visible: the model runs on the CPU (check the driver, /dev/nvidia*, and --gpus all)");
    } else if !cfg!(feature = "cuda") && s.gpu_layers > 0 {
        tracing::info!("CPU build: model.gpu_layers is ignored");
    }
}

/// Log how many layers go to the GPU (llama.cpp offloads the output layer as one more).
fn log_offload(model: &LlamaModel, s: &EngineParams) {
    let layers = model.n_layer();
    let offloaded = if cfg!(feature = "cuda") {
        s.gpu_layers.min(layers + 1)
    } else {
        0
    };
    tracing::info!(
        offloaded_layers = offloaded,
        total_layers = layers + 1,
        main_gpu = s.main_gpu,
        flash_attention = ?s.flash_attention,
        kv_cache_type = ?s.kv_cache_type,
        "model layers on the GPU"
    );
}

fn kv_bytes_per_token(model: &LlamaModel) -> u64 {
    let head_dim = model.n_embd().max(0) as u64 / u64::from(model.n_head().max(1));
    2 * u64::from(model.n_layer()) * u64::from(model.n_head_kv()) * head_dim * 2
}
