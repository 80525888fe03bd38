//! OpenAI-shaped errors: `{"error": {"message", "type", "param", "code"}}` with the status
//! code the OpenAI API uses, so SDK error classes and retry logic behave.
//!
//! SECURITY: messages are built from fixed text and validated field names only; nothing
//! here echoes a credential, a prompt or a request body.

use crate::auth::AuthError;
use crate::engine::constraint::{CompileError, ConstraintError};
use crate::engine::EngineError;
use hyper::StatusCode;

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u64>,
    /// `Allow` header value for 405.
    pub allow: Option<&'static str>,
    /// Close the connection after this response (HTTP/1 `Connection: close`).
    pub close: bool,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            param: None,
            code: None,
            retry_after: None,
            allow: None,
            close: false,
        }
    }

    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// The same error with `from` in its `param` replaced by `to` (an endpoint that
    /// writes a shared field in its own shape, e.g. Responses' flat function tools).
    pub fn with_param_renamed(mut self, from: &str, to: &str) -> Self {
        self.param = self.param.map(|p| p.replacen(from, to, 1));
        self
    }

    pub fn invalid(message: impl Into<String>, param: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message).with_param(param)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    pub fn unknown_url(method: &str, path: &str) -> Self {
        // The path is echoed only after being reduced to safe characters and length.
        let shown = crate::sanitize::shown(path, 128);
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("Invalid URL ({method} {shown})"),
        )
        .with_code("unknown_url")
    }

    pub fn method_not_allowed(allow: &'static str) -> Self {
        let mut e = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            format!("Method not allowed; this path accepts {allow}"),
        )
        .with_code("method_not_allowed");
        e.allow = Some(allow);
        e
    }

    pub fn model_not_found(requested: &str) -> Self {
        let shown = crate::sanitize::shown(requested, 128);
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("The model `{shown}` does not exist or you do not have access to it."),
        )
        .with_param("model")
        .with_code("model_not_found")
    }

    pub fn payload_too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("Request body is larger than {limit} bytes"),
        )
        .with_code("request_too_large")
    }

    /// 429 `rate_limit_exceeded` with Retry-After: `retry_after` rounded up, at least 1 s.
    fn rate_limited(message: impl Into<String>, retry_after: std::time::Duration) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message)
            .with_code("rate_limit_exceeded");
        e.retry_after = Some(retry_after.as_secs_f64().ceil().max(1.0) as u64);
        e
    }

    pub fn token_rate_limited(limit: u32, retry_after: std::time::Duration) -> Self {
        Self::rate_limited(
            format!("Rate limit reached: {limit} tokens per minute for this key"),
            retry_after,
        )
    }

    pub fn too_many_generations(limit: usize) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            format!("Too many concurrent requests for this key (limit {limit})"),
        )
        .with_code("rate_limit_exceeded");
        e.retry_after = Some(1);
        e
    }

    pub fn length_required() -> Self {
        Self::new(
            StatusCode::LENGTH_REQUIRED,
            "invalid_request_error",
            "request bodies must be sent with Content-Length (Transfer-Encoding is not accepted)",
        )
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request_error",
            "Content-Type must be application/json",
        )
        .with_code("unsupported_media_type")
    }

    pub fn body_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            "The request body was not received in time",
        )
        .with_code("request_timeout")
    }

    pub fn overloaded(retry_after: u64) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "The server is busy; retry after the indicated delay",
        )
        .with_code("overloaded");
        e.retry_after = Some(retry_after);
        e
    }

    pub fn not_ready() -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "The model is still loading",
        )
        .with_code("model_loading");
        e.retry_after = Some(5);
        e
    }

    /// `/v1/responses/{id}…`: nothing is stored, so nothing can be fetched by id.
    pub fn response_not_stored() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "This server does not store responses: none can be retrieved, cancelled or deleted by id. Every response is returned (or streamed) in full when it is created.",
        )
        .with_code("response_not_found")
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "The server had an error while processing your request",
        )
        .with_code("internal_error")
    }

    pub fn from_auth(e: &AuthError) -> Self {
        match e {
            AuthError::Missing => Self::new(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "Missing API key: send `Authorization: Bearer KEY_ID:API_KEY`",
            )
            .with_code("missing_api_key"),
            AuthError::Malformed | AuthError::Invalid => Self::new(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "Incorrect API key provided",
            )
            .with_code("invalid_api_key"),
            AuthError::Expired => Self::new(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "This API key has expired",
            )
            .with_code("expired_api_key"),
            AuthError::RateLimited { retry_after, limit } => Self::rate_limited(
                format!("Rate limit reached: {limit} requests per minute for this key"),
                *retry_after,
            ),
            AuthError::TooManyFailures { retry_after } => Self::rate_limited(
                "Too many failed authentication attempts from this address",
                *retry_after,
            ),
            AuthError::VerifierBusy { retry_after } => Self::rate_limited(
                "Too many authentication attempts in progress; try again shortly",
                *retry_after,
            ),
            AuthError::Internal => Self::internal(),
        }
    }

    pub fn from_engine(e: &EngineError) -> Self {
        match e {
            EngineError::ContextExceeded { prompt_tokens, max_tokens, context } => Self::invalid(
                format!(
                    "This model's maximum context length is {context} tokens. However, you requested \
                     {} tokens ({prompt_tokens} in the messages, {max_tokens} in the completion). \
                     Please reduce the length of the messages or completion.",
                    *prompt_tokens as u64 + *max_tokens as u64
                ),
                "messages",
            )
            .with_code("context_length_exceeded"),
            EngineError::EmptyPrompt => Self::invalid("The prompt is empty", "messages"),
            EngineError::Template => Self::invalid(
                "The model's chat template cannot render these messages",
                "messages",
            ),
            EngineError::NoTemplate => Self::invalid(
                "This model file has no chat template, so chat messages cannot be rendered; \
                 the operator must set `model.chat_template_file` or `model.chat_template` \
                 (raw /v1/completions work)",
                "messages",
            )
            .with_code("no_chat_template"),
            EngineError::Constraint(ConstraintError::TooExpensive) => Self::bad_request(
                "The output constraint (JSON schema or tools) was too expensive to enforce at \
                 one step (constraints.mask_budget_ms or its fuel limits); simplify the schema",
            )
            .with_code("constraint_too_expensive"),
            EngineError::Constraint(ConstraintError::Dead) => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "The output constraint (JSON schema or tools) reached a state no token can \
                 continue; the request was ended",
            )
            .with_code("constraint_dead_end"),
            EngineError::UnknownToken(id) => Self::invalid(
                format!("Token id {id} is not in the model's vocabulary"),
                "logit_bias",
            ),
            EngineError::InputTooLong { index, tokens, context } => Self::invalid(
                format!(
                    "This model's maximum context length is {context} tokens; input {index} has {tokens}"
                ),
                format!("input[{index}]"),
            )
            .with_code("context_length_exceeded"),
            EngineError::EmbeddingsDisabled => {
                Self::bad_request("Embeddings are not enabled on this server")
            }
            EngineError::DeadlineExceeded => Self::new(
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request_error",
                "The request took longer than the server allows (limits.max_generation_secs)",
            )
            .with_code("timeout"),
            EngineError::Internal => Self::internal(),
        }
    }

    /// A constraint (JSON schema at `param`) that was not compiled.
    /// SECURITY: llguidance's message may quote the client's own schema back to it; it
    /// is cut to a printable line (`constraint::client_message`) and never logged.
    pub fn from_compile(e: &CompileError, param: &str, timeout_ms: u128) -> Self {
        match e {
            CompileError::Refused(why) => {
                Self::invalid(format!("The JSON schema cannot be enforced: {why}"), param)
                    .with_code("invalid_json_schema")
            }
            CompileError::AcceptsNothing => {
                Self::invalid("No output can satisfy this JSON schema", param)
                    .with_code("invalid_json_schema")
            }
            CompileError::Timeout => Self::invalid(
                format!(
                    "The JSON schema took longer than {timeout_ms} ms to compile \
                     (constraints.compile_timeout_ms); simplify it"
                ),
                param,
            )
            .with_code("invalid_json_schema"),
            CompileError::Busy => Self::overloaded(1),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn shape_matches_openai() {
        let v = ApiError::invalid("temperature must be between 0 and 2", "temperature").body();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "temperature");
        assert!(v["error"]["code"].is_null());
        let e = ApiError::from_auth(&AuthError::RateLimited {
            retry_after: Duration::from_millis(1500),
            limit: 3,
        });
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.retry_after, Some(2));
    }

    #[test]
    fn unknown_url_does_not_echo_control_bytes_or_long_paths() {
        let e = ApiError::unknown_url("GET", &format!("/x\u{1b}[31m{}", "a".repeat(500)));
        assert!(!e.message.contains('\u{1b}'));
        assert!(e.message.len() < 200);
    }
}
