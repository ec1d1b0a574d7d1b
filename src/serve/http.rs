//! The HTTP front end of the generation engine: an OpenAI-style completions API.
//!
//! - `POST /v1/completions`: `{"prompt", "max_tokens", "temperature", "top_p", "stop", "seed",
//!   "stream", "stream_options", "model"}` → a `text_completion`, or with `"stream": true`
//!   server-sent events, one `data: {chunk}` per new piece of text, a last chunk with
//!   `finish_reason` and `usage`, then `data: [DONE]`. With `"stream_options":
//!   {"include_usage": true}` the chunks are OpenAI's: each has `"usage": null`, and a chunk
//!   with no choices and the usage comes before `[DONE]`.
//! - What standard OpenAI clients send at its "off" value is accepted: `n` and `best_of` 1,
//!   `echo` false, `logprobs` null, `frequency_penalty` and `presence_penalty` 0,
//!   `logit_bias` {}, `suffix` null or "", `user` (ignored); any other value is refused (400
//!   naming the field), since this server cannot honour it. A one-string array as `prompt`
//!   is that string.
//! - `model`, when given, must be the served model's name (else 404 `model_not_found`, as
//!   OpenAI and vLLM answer).
//! - `GET /v1/models`: the one model served.
//! - `GET /health`: `{"status": "ok", "active", "queued"}`.
//! - `GET /`: a small page to try it in a browser.
//!
//! Errors are OpenAI-shaped, `{"error": {"message", "type", "param", "code"}}`: 400
//! `invalid_request_error` naming the field (`param`) for malformed JSON, wrong types, unknown
//! fields and out-of-range values (numbers are checked after conversion to the type used, so
//! a `top_p` of 1e-300, 0 in f32, is refused); 404 for an unknown model or endpoint; 408
//! when the body does not arrive within the body timeout (the connection is then closed);
//! 413 for a body over the limit; 429 `server_busy` with `Retry-After: 1` when the engine's
//! queue is full; 500 `server_error` when generation fails; 503 `server_shutting_down` for a
//! request that arrives once the shutdown began (on a connection opened before) or that the
//! shutdown stopped before it generated anything.
//!
//! `finish_reason` is `"stop"` (a stop string or `<|endoftext|>`), `"length"` (`max_tokens`)
//! or, not in OpenAI's set, `"shutdown"` (the server stopped the generation while shutting
//! down). A stop string cuts the text before it and cancels the generation (the engine's
//! receiver is dropped), as does a client that goes away mid-stream.

use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::generate::{check_sampling, BadSampling};
use crate::serve::connections::{self, ConnectionLimits};
use crate::serve::engine::{Engine, FinishReason, GenEvent, GenRequest};
use crate::text_stream::TextStream;

/// Limits and names of one server.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// The model's name in responses and `/v1/models`; a request naming another is refused.
    pub model_name: String,
    /// Largest request body in bytes; a larger one is answered 413.
    pub max_body_bytes: usize,
    /// Longest wait for a request's whole body, from when the handler starts reading it; a
    /// body late past it is answered 408 and its connection closed.
    pub body_timeout: Duration,
    /// Longest prompt in tokens; a longer one is answered 400 (`param: "prompt"`).
    pub max_prompt_tokens: usize,
    /// Largest `max_tokens` a request may ask for.
    pub max_tokens_limit: usize,
}

/// Most stop strings a request may give (as OpenAI).
pub const MAX_STOPS: usize = 4;
/// `max_tokens` when the request does not say.
pub const DEFAULT_MAX_TOKENS: usize = 16;
/// Largest temperature a request may ask for (as OpenAI).
pub const MAX_TEMPERATURE: f32 = 2.0;

struct AppState {
    engine: Engine,
    opts: HttpOptions,
    started: u64,
    /// Set once the shutdown began: new requests are answered 503, not 429.
    shutting_down: AtomicBool,
}

/// The service's routes over `engine`.
pub fn router(engine: Engine, opts: HttpOptions) -> Router {
    app(new_state(engine, opts))
}

fn new_state(engine: Engine, opts: HttpOptions) -> Arc<AppState> {
    Arc::new(AppState {
        engine,
        opts,
        started: unix_now(),
        shutting_down: AtomicBool::new(false),
    })
}

fn app(state: Arc<AppState>) -> Router {
    let limit = state.opts.max_body_bytes;
    Router::new()
        .route("/", get(index))
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/completions", post(completions))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Serves `router(engine, opts)` on `listener` under `limits` until `shutdown` resolves;
/// then stops accepting and returns once the requests in flight are answered or the grace
/// period is over (see [`connections::serve`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: Engine,
    opts: HttpOptions,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let state = new_state(engine, opts);
    let flag = state.clone();
    let shutdown = async move {
        shutdown.await;
        flag.shutting_down.store(true, Ordering::SeqCst);
    };
    connections::serve(listener, app(state), limits, shutdown).await
}

/// Resolves at the first Ctrl-C (SIGINT) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

// ---------------------------------------------------------------------------------------
// Errors

/// An error answer: status and the OpenAI error object.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<String>,
    code: Option<&'static str>,
}

impl ApiError {
    fn invalid(param: Option<&str>, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(str::to_string),
            code: None,
        }
    }

    fn field(param: &str, message: impl Into<String>) -> Self {
        Self::invalid(Some(param), message)
    }

    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
        }
    }

    /// The HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The field at fault, if any.
    pub fn param(&self) -> Option<&str> {
        self.param.as_deref()
    }

    fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.status, Json(self.body())).into_response();
        let headers = res.headers_mut();
        match self.status {
            StatusCode::TOO_MANY_REQUESTS => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            // The rest of a late body may still come: this connection is not reused.
            StatusCode::REQUEST_TIMEOUT => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        res
    }
}

// ---------------------------------------------------------------------------------------
// Requests

/// A validated `POST /v1/completions` body.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionRequest {
    pub prompt: String,
    pub max_tokens: usize,
    pub temperature: f32,
    pub top_p: f32,
    pub stop: Vec<String>,
    pub seed: Option<u64>,
    pub stream: bool,
    /// `stream_options.include_usage`: OpenAI's usage chunk at the end of the stream.
    pub include_usage: bool,
}

/// Every field a completions request may have.
const KNOWN_FIELDS: [&str; 18] = [
    "model",
    "prompt",
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "stream",
    "stream_options",
    "n",
    "best_of",
    "echo",
    "logprobs",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "suffix",
    "user",
];

/// A request's JSON object, read field by field in the types the server uses; every error
/// names its field. A field given as null counts as absent (as OpenAI).
struct Fields<'a>(&'a Map<String, Value>);

impl<'a> Fields<'a> {
    fn get(&self, k: &str) -> Option<&'a Value> {
        self.0.get(k).filter(|v| !v.is_null())
    }

    /// A number as the f32 it is used as: the checks that follow see the converted value.
    fn f32(&self, k: &str, default: f32) -> Result<f32, ApiError> {
        match self.get(k) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .map(|x| x as f32)
                .filter(|x| x.is_finite())
                .ok_or_else(|| {
                    ApiError::field(k, format!("{k} must be a number (in f32 range), not {v}"))
                }),
        }
    }

    /// A whole number from `lo` to `hi`, as a u64.
    fn uint(&self, k: &str, lo: u64, hi: u64) -> Result<Option<u64>, ApiError> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if (lo..=hi).contains(&n) => Ok(Some(n)),
                _ => Err(ApiError::field(
                    k,
                    format!("{k} must be an integer from {lo} to {hi}, not {v}"),
                )),
            },
        }
    }

    fn bool(&self, k: &str) -> Result<Option<bool>, ApiError> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(ApiError::field(k, format!("{k} must be true or false"))),
        }
    }

    /// A field this server only has at one value (what OpenAI does when it is "off"): any
    /// value other than `off` is refused, naming the field.
    fn only(&self, k: &str, off: &[Value], why: &str) -> Result<(), ApiError> {
        match self.get(k) {
            Some(v) if !off.iter().any(|o| numbers_equal(o, v) || o == v) => Err(ApiError::field(
                k,
                format!("{k} {v} is not supported: {why}"),
            )),
            _ => Ok(()),
        }
    }
}

/// 0 and 0.0 (and 1 and 1.0) are the same value for the "off" checks.
fn numbers_equal(a: &Value, b: &Value) -> bool {
    matches!((a.as_f64(), b.as_f64()), (Some(x), Some(y)) if x == y)
}

/// Maps a sampling setting refused by [`check_sampling`] to its field.
fn sampling_error(bad: BadSampling, fields: &Fields) -> ApiError {
    let k = match bad {
        BadSampling::Temperature(_) => "temperature",
        BadSampling::TopP(_) => "top_p",
    };
    let given = fields.get(k).map(Value::to_string).unwrap_or_default();
    ApiError::field(
        k,
        format!(
            "{k} {}, not {given} ({} as a 32-bit float)",
            bad.rule(),
            bad.value()
        ),
    )
}

/// Parses and checks a completions body against `opts`; every error names the field at
/// fault.
pub fn parse_completion(body: &[u8], opts: &HttpOptions) -> Result<CompletionRequest, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(None, format!("the body is not valid JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(ApiError::invalid(None, "the body must be a JSON object"));
    };
    if let Some(k) = obj.keys().find(|k| !KNOWN_FIELDS.contains(&k.as_str())) {
        return Err(ApiError::field(
            k,
            format!(
                "unknown field {k:?}; this server accepts {}",
                KNOWN_FIELDS.join(", ")
            ),
        ));
    }
    let fields = Fields(&obj);

    match fields.get("model") {
        None => {}
        Some(Value::String(m)) if *m == opts.model_name => {}
        Some(Value::String(m)) => {
            return Err(ApiError {
                status: StatusCode::NOT_FOUND,
                message: format!(
                    "the model {m:?} does not exist; this server serves {:?}",
                    opts.model_name
                ),
                kind: "invalid_request_error",
                param: Some("model".into()),
                code: Some("model_not_found"),
            })
        }
        Some(_) => return Err(ApiError::field("model", "model must be a string")),
    }
    let prompt = match fields.get("prompt") {
        None => return Err(ApiError::field("prompt", "prompt is required")),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => match a.as_slice() {
            [Value::String(s)] => s.clone(),
            _ => {
                return Err(ApiError::field(
                    "prompt",
                    "prompt must be a string (or an array of exactly one string)",
                ))
            }
        },
        Some(_) => return Err(ApiError::field("prompt", "prompt must be a string")),
    };
    if prompt.is_empty() {
        return Err(ApiError::field("prompt", "prompt must not be empty"));
    }
    let limit = opts.max_tokens_limit;
    let max_tokens = match fields.uint("max_tokens", 1, limit as u64)? {
        None => DEFAULT_MAX_TOKENS.min(limit),
        Some(n) => n as usize,
    };
    let temperature = fields.f32("temperature", 1.0)?;
    let top_p = fields.f32("top_p", 1.0)?;
    check_sampling(temperature, top_p).map_err(|bad| sampling_error(bad, &fields))?;
    if temperature > MAX_TEMPERATURE {
        return Err(ApiError::field(
            "temperature",
            format!("temperature must be from 0 to {MAX_TEMPERATURE}, not {temperature}"),
        ));
    }
    let stop = match fields.get("stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => {
            if a.len() > MAX_STOPS {
                return Err(ApiError::field(
                    "stop",
                    format!("stop takes at most {MAX_STOPS} strings, not {}", a.len()),
                ));
            }
            a.iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    ApiError::field("stop", "stop must be a string or an array of strings")
                })?
        }
        Some(_) => {
            return Err(ApiError::field(
                "stop",
                "stop must be a string or an array of strings",
            ))
        }
    };
    if stop.iter().any(String::is_empty) {
        return Err(ApiError::field("stop", "stop strings must not be empty"));
    }
    let seed = fields.uint("seed", 0, u64::MAX)?;
    let stream = fields.bool("stream")?.unwrap_or(false);
    let include_usage = match fields.get("stream_options") {
        None => false,
        Some(_) if !stream => {
            return Err(ApiError::field(
                "stream_options",
                "stream_options is only allowed when stream is true",
            ))
        }
        Some(Value::Object(o)) => {
            if let Some(k) = o.keys().find(|k| k.as_str() != "include_usage") {
                return Err(ApiError::field(
                    "stream_options",
                    format!("unknown stream option {k:?}; this server accepts include_usage"),
                ));
            }
            match o.get("include_usage") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    return Err(ApiError::field(
                        "stream_options",
                        "stream_options.include_usage must be true or false",
                    ))
                }
            }
        }
        Some(_) => {
            return Err(ApiError::field(
                "stream_options",
                "stream_options must be an object",
            ))
        }
    };
    fields.only(
        "n",
        &[json!(1)],
        "this server returns one choice per request",
    )?;
    fields.only(
        "best_of",
        &[json!(1)],
        "this server returns one choice per request",
    )?;
    fields.only("echo", &[json!(false)], "the prompt is not echoed")?;
    fields.only("logprobs", &[], "log probabilities are not returned")?;
    for penalty in ["frequency_penalty", "presence_penalty"] {
        fields.only(penalty, &[json!(0)], "penalties are not applied (only 0)")?;
    }
    fields.only(
        "logit_bias",
        &[json!({})],
        "logit biases are not applied (only {})",
    )?;
    fields.only("suffix", &[json!("")], "suffixes are not supported")?;
    if fields.get("user").is_some_and(|u| !u.is_string()) {
        return Err(ApiError::field("user", "user must be a string"));
    }
    Ok(CompletionRequest {
        prompt,
        max_tokens,
        temperature,
        top_p,
        stop,
        seed,
        stream,
        include_usage,
    })
}

// ---------------------------------------------------------------------------------------
// Handlers

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn random_u64() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(N.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

async fn index() -> Html<&'static str> {
    Html(INDEX_HTML)
}

async fn health(State(st): State<Arc<AppState>>) -> Json<Value> {
    let s = st.engine.stats();
    Json(json!({"status": "ok", "active": s.active, "queued": s.queued}))
}

async fn models(State(st): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{
            "id": st.opts.model_name,
            "object": "model",
            "created": st.started,
            "owned_by": "smelt",
        }],
    }))
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "no such endpoint; try POST /v1/completions, GET /v1/models, GET /health or GET /",
    )
}

fn finish_name(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Length => "length",
        FinishReason::EndOfText => "stop",
        FinishReason::Shutdown => "shutdown",
    }
}

/// How a generation ended, seen from the HTTP side.
enum End {
    Finished(&'static str),
    Failed(String),
}

/// Reads the whole body within the body timeout and the size limit.
async fn read_body(st: &AppState, req: Request) -> Result<Bytes, ApiError> {
    let timeout = st.opts.body_timeout;
    match tokio::time::timeout(timeout, Bytes::from_request(req, &())).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            format!(
                "the request body did not arrive within {} s",
                timeout.as_secs_f64()
            ),
        )),
        Ok(Err(rej)) if rej.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!(
                "the request body is over the limit of {} bytes",
                st.opts.max_body_bytes
            ),
        )),
        Ok(Err(rej)) => Err(ApiError::invalid(
            None,
            format!("cannot read the request body: {rej}"),
        )),
        Ok(Ok(body)) => Ok(body),
    }
}

async fn completions(State(st): State<Arc<AppState>>, req: Request) -> Result<Response, ApiError> {
    let body = read_body(&st, req).await?;
    let req = parse_completion(&body, &st.opts)?;
    let tokenizer = st.engine.tokenizer();
    let ids = tokenizer
        .encode(&req.prompt)
        .map_err(|e| ApiError::field("prompt", format!("cannot tokenize the prompt: {e}")))?;
    if ids.is_empty() {
        return Err(ApiError::field("prompt", "the prompt encodes to no tokens"));
    }
    if ids.len() > st.opts.max_prompt_tokens {
        return Err(ApiError::field(
            "prompt",
            format!(
                "the prompt is {} tokens; this server takes at most {}",
                ids.len(),
                st.opts.max_prompt_tokens
            ),
        ));
    }
    let prompt_tokens = ids.len();
    let rx = st
        .engine
        .submit(GenRequest {
            prompt: ids,
            max_tokens: req.max_tokens,
            temperature: req.temperature,
            top_p: req.top_p,
            top_k: 0,
            seed: req.seed.unwrap_or_else(random_u64),
        })
        .map_err(|_| {
            if st.shutting_down.load(Ordering::SeqCst) {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server_shutting_down",
                    "the server is shutting down",
                )
            } else {
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "server_busy",
                    "the server is busy (its queue is full); retry in a moment",
                )
            }
        })?;
    let meta = Meta {
        id: format!("cmpl-{:016x}", random_u64()),
        created: unix_now(),
        model: st.opts.model_name.clone(),
        prompt_tokens,
        include_usage: req.include_usage,
    };
    let text = TextStream::new(tokenizer, req.stop);
    if req.stream {
        Ok(stream_response(rx, text, meta))
    } else {
        complete(rx, text, meta).await
    }
}

struct Meta {
    id: String,
    created: u64,
    model: String,
    prompt_tokens: usize,
    /// OpenAI's `stream_options.include_usage`: `"usage": null` in every chunk, then a
    /// chunk with no choices and the usage.
    include_usage: bool,
}

impl Meta {
    fn usage(&self, completion_tokens: usize) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": self.prompt_tokens + completion_tokens,
        })
    }

    fn object(&self, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }

    fn choice(text: &str, finish: Option<&str>) -> Value {
        json!([{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}])
    }

    /// The whole (non-streamed) completion.
    fn completion(&self, text: &str, finish: &str, completion_tokens: usize) -> Value {
        let mut v = self.object(Self::choice(text, Some(finish)));
        v["usage"] = self.usage(completion_tokens);
        v
    }

    /// A streamed piece of text.
    fn piece(&self, text: &str) -> Value {
        let mut v = self.object(Self::choice(text, None));
        if self.include_usage {
            v["usage"] = Value::Null;
        }
        v
    }

    /// The chunks that end a stream: the finish reason with the usage, or (include_usage)
    /// the finish reason, then the usage in a chunk of its own with no choices.
    fn ending(&self, finish: &str, completion_tokens: usize) -> Vec<Value> {
        let mut last = self.object(Self::choice("", Some(finish)));
        if !self.include_usage {
            last["usage"] = self.usage(completion_tokens);
            return vec![last];
        }
        last["usage"] = Value::Null;
        let mut usage = self.object(json!([]));
        usage["usage"] = self.usage(completion_tokens);
        vec![last, usage]
    }
}

/// Waits for the next piece of text or the end; drops nothing (the caller owns `rx`).
async fn next_piece(
    rx: &mut UnboundedReceiver<GenEvent>,
    text: &mut TextStream,
) -> Result<String, End> {
    loop {
        match rx.recv().await {
            Some(GenEvent::Token(id)) => {
                let piece = text.push(id).map_err(|e| End::Failed(e.to_string()))?;
                if text.stopped() {
                    // The caller sees `stopped` and drops the receiver: generation cancelled.
                    return Ok(piece);
                }
                if !piece.is_empty() {
                    return Ok(piece);
                }
            }
            Some(GenEvent::Finished(r)) => return Err(End::Finished(finish_name(r))),
            Some(GenEvent::Failed(m)) => return Err(End::Failed(m)),
            None => return Err(End::Failed("the engine stopped without finishing".into())),
        }
    }
}

fn generation_failed(m: &str) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        format!("generation failed: {m}"),
    )
}

async fn complete(
    mut rx: UnboundedReceiver<GenEvent>,
    mut text: TextStream,
    meta: Meta,
) -> Result<Response, ApiError> {
    let end = loop {
        match next_piece(&mut rx, &mut text).await {
            Ok(_) if text.stopped() => break End::Finished("stop"),
            Ok(_) => {}
            Err(end) => break end,
        }
    };
    drop(rx);
    let reason = match end {
        End::Failed(m) => return Err(generation_failed(&m)),
        End::Finished("shutdown") if text.tokens() == 0 => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_shutting_down",
                "the server is shutting down",
            ))
        }
        End::Finished(r) => r,
    };
    text.finish()
        .map_err(|e| generation_failed(&e.to_string()))?;
    let v = meta.completion(text.text(), reason, text.tokens());
    Ok(Json(v).into_response())
}

enum Phase {
    Running(UnboundedReceiver<GenEvent>, TextStream),
    Done,
}

fn stream_response(rx: UnboundedReceiver<GenEvent>, text: TextStream, meta: Meta) -> Response {
    let meta = Arc::new(meta);
    let events = futures_util::stream::unfold(
        (Phase::Running(rx, text), VecDeque::<Event>::new()),
        move |(phase, mut pending)| {
            let meta = meta.clone();
            async move {
                if let Some(e) = pending.pop_front() {
                    return Some((Ok::<Event, Infallible>(e), (phase, pending)));
                }
                let Phase::Running(mut rx, mut text) = phase else {
                    return None;
                };
                let data = |v: Value| Event::default().data(v.to_string());
                let end = match next_piece(&mut rx, &mut text).await {
                    Ok(piece) if !text.stopped() => {
                        let e = data(meta.piece(&piece));
                        return Some((Ok(e), (Phase::Running(rx, text), pending)));
                    }
                    Ok(piece) => {
                        // A stop string: cancel now (drop the receiver), send what precedes it.
                        drop(rx);
                        if !piece.is_empty() {
                            pending.push_back(data(meta.piece(&piece)));
                        }
                        End::Finished("stop")
                    }
                    Err(end) => {
                        drop(rx);
                        end
                    }
                };
                let end = match (end, text.finish()) {
                    (End::Finished(reason), Ok(rest)) => {
                        if !rest.is_empty() {
                            pending.push_back(data(meta.piece(&rest)));
                        }
                        Ok(reason)
                    }
                    (End::Finished(_), Err(e)) => Err(e.to_string()),
                    (End::Failed(m), _) => Err(m),
                };
                match end {
                    Ok(reason) => {
                        for chunk in meta.ending(reason, text.tokens()) {
                            pending.push_back(data(chunk));
                        }
                        pending.push_back(Event::default().data("[DONE]"));
                    }
                    Err(m) => pending.push_back(data(generation_failed(&m).body())),
                }
                let first = pending.pop_front().expect("at least one event");
                Some((Ok(first), (Phase::Done, pending)))
            }
        },
    );
    Sse::new(events).into_response()
}

const INDEX_HTML: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>smelt</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:15px/1.45 system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;color:#222}
textarea{width:100%;height:7rem;font:14px monospace;box-sizing:border-box}
#out{white-space:pre-wrap;font:14px monospace;background:#f4f4f4;padding:.7rem;min-height:4rem;border-radius:4px}
#out b{font-weight:normal;color:#777}
label{margin-right:1rem} input[type=number]{width:5rem} #status{color:#777;margin-left:1rem}
</style></head><body>
<h1>smelt</h1>
<textarea id="prompt">ROMEO:</textarea>
<p><label>max tokens <input id="max" type="number" value="64" min="1"></label>
<label>temperature <input id="temp" type="number" value="0.8" min="0" max="2" step="0.1"></label>
<button id="go">Generate</button><span id="status"></span></p>
<div id="out"></div>
<script>
const $ = id => document.getElementById(id);
$('go').onclick = async () => {
  const out = $('out'), status = $('status'), prompt = $('prompt').value;
  out.textContent = ''; const p = document.createElement('b'); p.textContent = prompt; out.appendChild(p);
  const gen = document.createTextNode(''); out.appendChild(gen);
  $('go').disabled = true; status.textContent = 'generating…';
  try {
    const res = await fetch('/v1/completions', {method: 'POST', headers: {'Content-Type': 'application/json'},
      body: JSON.stringify({prompt, max_tokens: +$('max').value, temperature: +$('temp').value, stream: true})});
    if (!res.ok) { const e = await res.json(); throw new Error(e.error ? e.error.message : res.statusText); }
    const reader = res.body.getReader(), dec = new TextDecoder(); let buf = '';
    for (;;) {
      const {value, done} = await reader.read(); if (done) break;
      buf += dec.decode(value, {stream: true});
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const ev = buf.slice(0, i); buf = buf.slice(i + 2);
        for (const line of ev.split('\n')) {
          if (!line.startsWith('data:')) continue;
          const d = line.slice(5).trim();
          if (d === '[DONE]') { status.textContent = 'done'; continue; }
          const c = JSON.parse(d);
          if (c.error) throw new Error(c.error.message);
          gen.textContent += c.choices[0].text;
          if (c.choices[0].finish_reason) status.textContent = 'finished: ' + c.choices[0].finish_reason +
            (c.usage ? ' (' + c.usage.completion_tokens + ' tokens)' : '');
        }
      }
    }
  } catch (e) { status.textContent = 'error: ' + e.message; }
  $('go').disabled = false;
};
</script></body></html>
"#;
