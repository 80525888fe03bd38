//! The engine boundary: what the HTTP side may ask of the model, and nothing else.
//!
//! SECURITY / robustness: the HTTP side never blocks on the engine. Requests go into a
//! bounded, fair waiting room (`Intake`: one FIFO per key, keys served round-robin; full
//! → the caller answers 503 with Retry-After) and results come back as events on a
//! per-request channel. The engine notices a dropped receiver (client gone) and stops
//! that generation; a queued request whose client already left is discarded before it
//! costs compute. The intake's mutex is held for queue operations only, never across a
//! model call. Counters are atomics, so the health listener reads them without ever
//! taking a lock the engine holds.
//!
//! llama.cpp itself is touched only in `llama/`, behind the `llama` cargo feature.

pub mod constraint;
pub mod family;
pub mod output;
pub mod prefix;
pub mod queue;
pub mod reasoning;
pub mod steer;
pub mod template;
pub mod template_families;
pub mod text;
pub mod tool_syntax;

#[cfg(feature = "fake-engine")]
pub mod fake;
#[cfg(feature = "llama")]
pub mod llama;

use constraint::{Constraint, ConstraintCompiler, ConstraintError};
use queue::FairQueue;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use tokio::sync::mpsc::UnboundedSender;

/// The engine's parameters, resolved once from the config (`settings::Settings`).
#[derive(Debug, Clone)]
pub struct EngineParams {
    pub path: std::path::PathBuf,
    /// Tokens of KV cache per sequence (`model.context`).
    pub context: u32,
    pub batch: u32,
    /// Generation threads (never 0: resolved from the core count).
    pub threads: u32,
    pub threads_batch: u32,
    /// Layers offloaded to the GPU (`u32::MAX`: all).
    pub gpu_layers: u32,
    pub main_gpu: u32,
    pub split_mode: crate::config::SplitMode,
    pub flash_attention: crate::config::FlashAttention,
    pub kv_cache_type: crate::config::KvCacheType,
    /// Sequences decoded together (llama.cpp's n_seq_max).
    pub parallel: u32,
    pub prefix_cache: prefix::PrefixCache,
    /// Create the embeddings context (`model.embeddings`).
    pub embeddings: bool,
    /// Requests that may wait for a slot (`limits.queue_depth`).
    pub queue_depth: usize,
    pub constraints: constraint::ConstraintSettings,
    /// The text of `model.chat_template_file`, which start-up reads (before lock-down)
    /// and puts here; None: the model file's own template.
    pub chat_template: Option<String>,
    /// The fake engine's hold on generations, for the in-process tests to observe a
    /// stream mid-way (`fake::Gate`).
    #[cfg(feature = "fake-engine")]
    pub fake_gate: Arc<fake::Gate>,
}

/// Facts about the loaded model, for the start-up log.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    pub context: u32,
    pub n_ctx_train: u32,
    pub n_params: u64,
    pub size_bytes: u64,
    pub load_time: std::time::Duration,
    /// How chat prompts are rendered (for the start-up log).
    pub renderer: &'static str,
    /// What the chat template renders, as detected (`template::Caps::describe`).
    pub template_caps: Option<String>,
    pub parallel: u32,
    /// Estimated K+V bytes one sequence's cache takes (f16 cells × `context`).
    pub kv_bytes_per_slot: u64,
    pub threads: u32,
    pub threads_batch: u32,
}

/// Start the engine thread: llama.cpp (`llama`), or the deterministic fake of the
/// in-process tests and fuzzing (`fake-engine`, never in a release). `loaded` reports
/// the model load's outcome.
pub fn spawn(params: &EngineParams, stats: Arc<EngineStats>) -> Result<Spawned, String> {
    #[cfg(feature = "fake-engine")]
    let spawned = fake::spawn(params, stats);
    #[cfg(all(feature = "llama", not(feature = "fake-engine")))]
    let spawned = {
        llama::route_logs();
        llama::spawn(params, stats)
    };
    #[cfg(not(any(feature = "llama", feature = "fake-engine")))]
    let spawned = {
        let _ = (params, stats);
        Err("this binary was built without the `llama` feature and cannot serve a model".into())
    };
    spawned
}

/// The HTTP side's handle and the model load's outcome.
pub type Spawned = (
    EngineHandle,
    tokio::sync::oneshot::Receiver<Result<LoadedModel, String>>,
);

/// One chat message after API validation: a role the template knows, plain text, and
/// for assistant messages the tool calls they made / for tool messages whose result
/// they carry.
#[derive(Debug, Clone)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    pub tool_call_id: Option<String>,
    /// The function a tool result belongs to (found through `tool_call_id`).
    pub name: Option<String>,
    /// How the client sent `content` (a string, text parts, or null): templates that read
    /// parts get them as parts (`template::caps`); `content` is always the joined text.
    pub shape: ContentShape,
    /// An earlier answer's thinking (`reasoning_content`), for templates that render it.
    pub reasoning: Option<String>,
}

/// How a message's `content` arrived.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ContentShape {
    #[default]
    Text,
    /// Text parts, each part's text in order (their concatenation is `content`).
    Parts(Vec<String>),
    /// `null` or absent (an assistant message that only calls tools).
    Null,
}

impl ChatMessage {
    /// A message with text only.
    pub fn text(role: &str, content: String) -> Self {
        Self {
            role: role.to_string(),
            content,
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
            shape: ContentShape::Text,
            reasoning: None,
        }
    }
}

/// A call an assistant message made: `arguments` is the JSON text the API carries.
#[derive(Debug, Clone)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// The prompt: chat messages (rendered by the model's own template, with the OpenAI tool
/// objects for templates that render tools) or raw text.
#[derive(Debug, Clone)]
pub enum Prompt {
    Chat {
        messages: Vec<ChatMessage>,
        tools: Vec<serde_json::Value>,
        /// The request's `reasoning_effort`, for templates that read it (gpt-oss's
        /// `Reasoning:` line, Qwen3's `enable_thinking`).
        effort: Option<reasoning::Effort>,
    },
    Text(String),
}

/// Sampling settings, already range-checked by the API layer.
#[derive(Debug, Clone, Copy)]
pub struct Sampling {
    /// 0 means greedy.
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// llama.cpp-style extensions: 0 = off.
    pub top_k: u32,
    /// 0 = off.
    pub min_p: f32,
    /// 1 = off.
    pub repeat_penalty: f32,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            seed: 0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            top_k: 0,
            min_p: 0.0,
            repeat_penalty: 1.0,
        }
    }
}

/// One generation job.
pub struct GenerateRequest {
    /// The API key it came from: its place in the fair queue (and the log's key id).
    pub key_id: Arc<str>,
    /// The key's identity (`auth::Principal::owner`: id plus a digest of its hash): the
    /// prefix-cache scope, so a reissued id never reuses its predecessor's cache.
    pub owner: Arc<str>,
    pub prompt: Prompt,
    /// Explicit completion budget, or None for "as much as fits, up to `default_max_tokens`".
    pub max_tokens: Option<u32>,
    pub default_max_tokens: u32,
    pub stop: Vec<String>,
    pub sampling: Sampling,
    /// Constrain the output (a JSON Schema compiled by `constraint`, off this thread, by
    /// the API layer; the engine only asks it for token masks).
    pub constraint: Option<Constraint>,
    /// Token id → bias added to its logit (-100 bans, +100 forces), validated count.
    pub logit_bias: Vec<(i32, f32)>,
    /// Report each token's log-probability and this many alternatives (None: off).
    pub logprobs: Option<u32>,
    pub events: UnboundedSender<Event>,
    /// Longest the engine spends generating for this request (from when it starts on it);
    /// beyond it the completion ends with finish_reason "length".
    pub deadline: std::time::Duration,
    /// Only count: render and tokenize the prompt, report `Started`, then finish with no
    /// completion (`POST /v1/responses/input_tokens`).
    pub count_only: bool,
    /// Split the model's thinking out of its answer (chat and Responses requests to a
    /// reasoning model; `engine::reasoning`).
    pub reasoning: Option<reasoning::Plan>,
    /// Tool calls in the model family's own syntax (`engine::tool_syntax`): `constraint`
    /// is then one call's constraint, started at each call's opener.
    pub tools: Option<tool_syntax::ToolPlan>,
}

/// One embeddings job: every input is embedded with the model's pooling, L2-normalised.
pub struct EmbedRequest {
    pub key_id: Arc<str>,
    pub inputs: Vec<EmbedInput>,
    pub reply: tokio::sync::oneshot::Sender<Result<Embeddings, EngineError>>,
    /// Longest the engine spends on the whole job (limits.max_generation_secs).
    pub deadline: std::time::Duration,
}

/// An input as text (tokenized without special tokens) or as token ids.
#[derive(Debug, Clone)]
pub enum EmbedInput {
    Text(String),
    Tokens(Vec<i32>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    pub prompt_tokens: u32,
}

/// What waits in the intake (a generation is boxed: it is much larger than the rest).
pub enum Job {
    Generate(Box<GenerateRequest>),
    Embed(EmbedRequest),
}

impl Job {
    pub fn key_id(&self) -> &Arc<str> {
        match self {
            Job::Generate(g) => &g.key_id,
            Job::Embed(e) => &e.key_id,
        }
    }

    /// The client that asked has gone (its receiver was dropped).
    pub fn is_abandoned(&self) -> bool {
        match self {
            Job::Generate(g) => g.events.is_closed(),
            Job::Embed(e) => e.reply.is_closed(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// What the engine reports for one request, in order: `Started`, any number of
/// `Reasoning` (thinking, split out by `reasoning`), any number of `Text`, then `Finished`
/// — or a single `Failed`. `Token` (log-probabilities) may come before any piece.
///
/// The per-request channel is unbounded on purpose: the engine must never wait for a
/// slow client. Its size is bounded by `max_tokens` pieces.
#[derive(Debug)]
pub enum Event {
    Started {
        prompt_tokens: u32,
    },
    /// Only when `logprobs` was asked: the next sampled token, before its text.
    Token(TokenLogprob),
    /// The model's thinking (only with a `reasoning` plan; always before any `Text`).
    Reasoning(String),
    Text(String),
    Finished {
        reason: FinishReason,
        usage: Usage,
    },
    Failed(EngineError),
}

/// A sampled token's log-probability under the model (before sampling adjustments) and
/// the most likely alternatives at that position.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub bytes: Vec<u8>,
    pub logprob: f32,
    pub top: Vec<(Vec<u8>, f32)>,
}

/// Token counts of one finished completion.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// Leading prompt tokens taken from the prefix cache instead of being computed.
    pub cached_tokens: u32,
    /// Completion tokens spent thinking (markers included).
    pub reasoning_tokens: u32,
}

/// Failures the client should hear about (no prompt text in any of them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineError {
    /// Prompt plus requested completion do not fit the context window.
    ContextExceeded {
        prompt_tokens: u32,
        max_tokens: u32,
        context: u32,
    },
    /// The prompt is empty after templating/tokenizing.
    EmptyPrompt,
    /// The model's chat template could not render these messages.
    Template,
    /// There is no chat template: the model file has none and `model.chat_template_file`
    /// is not set.
    NoTemplate,
    /// The output constraint ended the request mid-generation (no token could continue
    /// it, or one mask was over its budget).
    Constraint(ConstraintError),
    /// A `logit_bias` token id is not in the model's vocabulary.
    UnknownToken(i32),
    /// An embeddings input is longer than the context (index, tokens).
    InputTooLong {
        index: usize,
        tokens: u32,
        context: u32,
    },
    /// Embeddings are not enabled on this server (`model.embeddings`).
    EmbeddingsDisabled,
    /// The job ran past limits.max_generation_secs (embeddings; a completion ends with
    /// finish_reason "length" instead).
    DeadlineExceeded,
    /// Something inside llama.cpp failed; details are in the server log only.
    Internal,
}

/// Counters shared with the health listener. Lock-free by design.
#[derive(Debug, Default)]
pub struct EngineStats {
    pub ready: AtomicBool,
    pub queued: AtomicU64,
    pub active: AtomicU64,
    pub completed: AtomicU64,
    pub cancelled: AtomicU64,
    pub failed: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub completion_tokens: AtomicU64,
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: AtomicU64,
}

impl EngineStats {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// The queue is full; the caller should answer 503 with Retry-After.
#[derive(Debug)]
pub struct QueueFull;

/// The waiting room shared by the HTTP side (producer) and the engine (consumer).
pub struct Intake {
    queue: Mutex<FairQueue<Job>>,
    wake: Condvar,
    stats: Arc<EngineStats>,
}

impl Intake {
    pub fn new(depth: usize, stats: Arc<EngineStats>) -> Arc<Self> {
        Arc::new(Self {
            queue: Mutex::new(FairQueue::new(depth)),
            wake: Condvar::new(),
            stats,
        })
    }

    fn lock(&self) -> MutexGuard<'_, FairQueue<Job>> {
        // The queue's invariants hold between its method calls (none of them can panic
        // half-way), so a poisoned lock still guards a consistent queue.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish_len(&self, q: &FairQueue<Job>) {
        self.stats.queued.store(q.len() as u64, Ordering::Relaxed);
    }

    /// Add a job at the back of its key's line, without waiting.
    pub fn push(&self, req: Job) -> Result<(), QueueFull> {
        let key = req.key_id().clone();
        let mut q = self.lock();
        let pushed = q.push(&key, req).map_err(|_| QueueFull);
        self.publish_len(&q);
        drop(q);
        if pushed.is_ok() {
            self.wake.notify_one();
        }
        pushed
    }

    /// The next job in fair order; with `wait`, sleeps until one arrives.
    pub fn next(&self, wait: bool) -> Option<Job> {
        let mut q = self.lock();
        loop {
            if let Some(job) = q.pop() {
                self.publish_len(&q);
                return Some(job);
            }
            if !wait {
                return None;
            }
            q = self.wake.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Drop queued jobs whose client has gone; returns how many.
    pub fn drop_abandoned(&self) -> usize {
        let mut q = self.lock();
        let n = q.retain(|job| !job.is_abandoned());
        self.publish_len(&q);
        n
    }
}

/// The HTTP side's handle on the engine: the waiting room and the shared counters.
#[derive(Clone)]
pub struct EngineHandle {
    intake: Arc<Intake>,
    pub stats: Arc<EngineStats>,
    /// Context window per sequence, for request validation and /v1/models.
    pub context: u32,
    /// The constraint compiler for the model's vocabulary, set by the engine once the
    /// model is loaded (before it reports ready).
    constraints: Arc<OnceLock<Arc<ConstraintCompiler>>>,
}

impl EngineHandle {
    pub fn new(intake: Arc<Intake>, context: u32) -> Self {
        Self {
            stats: intake.stats.clone(),
            intake,
            context,
            constraints: Arc::new(OnceLock::new()),
        }
    }

    /// The constraint compiler (None until the model is loaded).
    pub fn constraints(&self) -> Option<&Arc<ConstraintCompiler>> {
        self.constraints.get()
    }

    /// Install the constraint compiler (the engine, once, after loading the vocabulary).
    pub fn set_constraints(&self, compiler: ConstraintCompiler) {
        let _ = self.constraints.set(Arc::new(compiler));
    }

    /// Enqueue without waiting.
    pub fn submit(&self, req: GenerateRequest) -> Result<(), QueueFull> {
        self.intake.push(Job::Generate(Box::new(req)))
    }

    /// Enqueue an embeddings job without waiting.
    pub fn submit_embed(&self, req: EmbedRequest) -> Result<(), QueueFull> {
        self.intake.push(Job::Embed(req))
    }
}

/// Resolve the completion budget for a prompt of `prompt_tokens` in a `context` window.
pub fn completion_budget(
    prompt_tokens: u32,
    max_tokens: Option<u32>,
    default_max: u32,
    context: u32,
) -> Result<u32, EngineError> {
    let room = context.saturating_sub(prompt_tokens);
    match max_tokens {
        Some(m) if m <= room => Ok(m),
        None if room > 0 => Ok(default_max.min(room)),
        requested => Err(EngineError::ContextExceeded {
            prompt_tokens,
            max_tokens: requested.unwrap_or(0),
            context,
        }),
    }
}

/// A plain generation job for unit tests: a text prompt, one token, nobody listening.
#[cfg(test)]
pub(crate) fn test_request(sampling: Sampling) -> GenerateRequest {
    let (events, _) = tokio::sync::mpsc::unbounded_channel();
    GenerateRequest {
        key_id: Arc::from("k"),
        owner: Arc::from("k#0"),
        prompt: Prompt::Text("x".into()),
        max_tokens: None,
        default_max_tokens: 1,
        stop: vec![],
        sampling,
        constraint: None,
        logit_bias: vec![],
        logprobs: None,
        events,
        deadline: std::time::Duration::from_secs(1),
        count_only: false,
        reasoning: None,
        tools: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_rules() {
        assert_eq!(completion_budget(10, Some(5), 100, 64), Ok(5));
        assert_eq!(completion_budget(10, None, 100, 64), Ok(54));
        assert_eq!(completion_budget(10, None, 20, 64), Ok(20));
        assert!(matches!(
            completion_budget(60, Some(5), 100, 64),
            Err(EngineError::ContextExceeded {
                prompt_tokens: 60,
                max_tokens: 5,
                context: 64
            })
        ));
        assert!(completion_budget(64, None, 20, 64).is_err());
    }

    #[test]
    fn full_queue_is_refused_not_awaited() {
        let intake = Intake::new(1, Arc::new(EngineStats::default()));
        let h = EngineHandle::new(intake.clone(), 64);
        let make = || test_request(Sampling::default());
        assert!(h.submit(make()).is_ok());
        assert!(h.submit(make()).is_err());
        assert_eq!(h.stats.queued.load(Ordering::Relaxed), 1);
        // Its client (the receiver) is gone: the engine drops it without running it.
        assert_eq!(intake.drop_abandoned(), 1);
        assert_eq!(h.stats.queued.load(Ordering::Relaxed), 0);
        assert!(intake.next(false).is_none());
    }
}
