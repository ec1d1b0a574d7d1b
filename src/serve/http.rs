//! The HTTP front end of the generation engine: an OpenAI-style completions API.
//!
//! - `POST /v1/completions`: `{"prompt", "max_tokens", "temperature", "top_p", "stop", "seed",
//!   "stream", "model"}` → a `text_completion`, or with `"stream": true` server-sent events,
//!   one `data: {chunk}` per new piece of text, a last chunk with `finish_reason` and `usage`,
//!   then `data: [DONE]`.
//! - `GET /v1/models`: the one model served, named after its directory.
//! - `GET /health`: `{"status": "ok", "active", "queued"}`.
//! - `GET /`: a small page to try it in a browser.
//!
//! Errors are OpenAI-shaped, `{"error": {"message", "type", "param", "code"}}`: 400
//! `invalid_request_error` naming the field (`param`) for malformed JSON, wrong types, unknown
//! fields and out-of-range values; 413 for a body over the limit; 429 `server_busy` with
//! `Retry-After: 1` when the engine's queue is full; 500 `server_error` when generation fails;
//! 503 `server_shutting_down` for a request that arrives once the shutdown began (on a
//! connection opened before) or that the shutdown stopped before it generated anything.
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
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::data::Tokenizer;
use crate::serve::engine::{Engine, FinishReason, GenEvent, GenRequest};

/// Limits and names of one server.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// The model's name in responses and `/v1/models` (its directory's name).
    pub model_name: String,
    /// Largest request body in bytes; a larger one is answered 413.
    pub max_body_bytes: usize,
    /// Longest prompt in tokens; a longer one is answered 400 (`param: "prompt"`).
    pub max_prompt_tokens: usize,
    /// Largest `max_tokens` a request may ask for.
    pub max_tokens_limit: usize,
}

/// Most stop strings a request may give (as OpenAI).
pub const MAX_STOPS: usize = 4;
/// `max_tokens` when the request does not say.
pub const DEFAULT_MAX_TOKENS: usize = 16;

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

/// Serves `router(engine, opts)` on `listener` until `shutdown` resolves; then stops
/// accepting and returns once the requests in flight are answered.
pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: Engine,
    opts: HttpOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = new_state(engine, opts);
    let flag = state.clone();
    let shutdown = async move {
        shutdown.await;
        flag.shutting_down.store(true, Ordering::SeqCst);
    };
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
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
}

impl ApiError {
    fn invalid(param: Option<&str>, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(str::to_string),
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
        }
    }

    fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": null,
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.status, Json(self.body())).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
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
}

/// Parses and checks a completions body; every error names the field at fault.
pub fn parse_completion(
    body: &[u8],
    max_tokens_limit: usize,
) -> Result<CompletionRequest, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(None, format!("the body is not valid JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(ApiError::invalid(None, "the body must be a JSON object"));
    };
    const KNOWN: [&str; 8] = [
        "model",
        "prompt",
        "max_tokens",
        "temperature",
        "top_p",
        "stop",
        "seed",
        "stream",
    ];
    if let Some(k) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(ApiError::field(
            k,
            format!(
                "unknown field {k:?}; this server accepts {}",
                KNOWN.join(", ")
            ),
        ));
    }
    // A field given as null counts as absent (as OpenAI).
    let get = |k: &str| obj.get(k).filter(|v| !v.is_null());

    if let Some(m) = get("model") {
        if !m.is_string() {
            return Err(ApiError::field("model", "model must be a string"));
        }
    }
    let prompt = match get("prompt") {
        None => return Err(ApiError::field("prompt", "prompt is required")),
        Some(Value::String(s)) if s.is_empty() => {
            return Err(ApiError::field("prompt", "prompt must not be empty"))
        }
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(ApiError::field("prompt", "prompt must be a string")),
    };
    let max_tokens = match get("max_tokens") {
        None => DEFAULT_MAX_TOKENS.min(max_tokens_limit),
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 && n <= max_tokens_limit as u64 => n as usize,
            _ => {
                return Err(ApiError::field(
                    "max_tokens",
                    format!("max_tokens must be an integer from 1 to {max_tokens_limit}, not {v}"),
                ))
            }
        },
    };
    let number = |k: &str, default: f32, ok: fn(f64) -> bool, range: &str| match get(k) {
        None => Ok(default),
        Some(v) => match v.as_f64() {
            Some(x) if x.is_finite() && ok(x) => Ok(x as f32),
            _ => Err(ApiError::field(
                k,
                format!("{k} must be a number {range}, not {v}"),
            )),
        },
    };
    let temperature = number(
        "temperature",
        1.0,
        |x| (0.0..=2.0).contains(&x),
        "from 0 to 2",
    )?;
    let top_p = number("top_p", 1.0, |x| x > 0.0 && x <= 1.0, "in (0, 1]")?;
    let stop = match get("stop") {
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
    let seed = match get("seed") {
        None => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| {
            ApiError::field(
                "seed",
                format!("seed must be an integer from 0 to 2^64-1, not {v}"),
            )
        })?),
    };
    let stream = match get("stream") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::field("stream", "stream must be true or false")),
    };
    Ok(CompletionRequest {
        prompt,
        max_tokens,
        temperature,
        top_p,
        stop,
        seed,
        stream,
    })
}

// ---------------------------------------------------------------------------------------
// Text from tokens

/// The completion's text as tokens arrive: decoded whole each time (so multi-byte characters
/// split over tokens come out right), cut at the first stop string, and handed out in pieces
/// that never end in a possible start of a stop string or an unfinished UTF-8 character.
pub struct TextStream {
    tokens: Vec<u32>,
    text: String,
    sent: usize,
    stops: Vec<String>,
    stopped: bool,
}

impl TextStream {
    pub fn new(stops: Vec<String>) -> Self {
        TextStream {
            tokens: Vec::new(),
            text: String::new(),
            sent: 0,
            stops,
            stopped: false,
        }
    }

    /// Adds a token; returns the text that may be sent now (possibly empty). After a stop
    /// string appears, [`stopped`](Self::stopped) is true and no more tokens should come.
    pub fn push(&mut self, id: u32, tokenizer: &Tokenizer) -> crate::Result<String> {
        self.tokens.push(id);
        self.text = tokenizer.decode(&self.tokens)?;
        if let Some(i) = self
            .stops
            .iter()
            .filter_map(|s| self.text.find(s.as_str()))
            .min()
        {
            self.text.truncate(i);
            self.stopped = true;
        }
        let mut end = self.text.len();
        if !self.stopped {
            end -= held_back(&self.text, &self.stops);
            while self.text[..end].ends_with('\u{FFFD}') {
                end -= '\u{FFFD}'.len_utf8();
            }
        }
        Ok(self.take(end))
    }

    /// The text not yet handed out (at the end of the generation).
    pub fn finish(&mut self) -> String {
        self.take(self.text.len())
    }

    fn take(&mut self, end: usize) -> String {
        match self.text.get(self.sent..end) {
            Some(s) if !s.is_empty() => {
                let s = s.to_string();
                self.sent = end;
                s
            }
            _ => String::new(),
        }
    }

    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Tokens received (up to the one that completed a stop string).
    pub fn completion_tokens(&self) -> usize {
        self.tokens.len()
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

/// The longest suffix of `text` (on a char boundary) that is a proper prefix of a stop
/// string: it may still become one, so it is held back.
fn held_back(text: &str, stops: &[String]) -> usize {
    let mut best = 0;
    for s in stops {
        for (i, _) in s.char_indices().skip(1) {
            if i > best && text.ends_with(&s[..i]) {
                best = i;
            }
        }
    }
    best
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

async fn completions(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|rej| {
        if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                format!(
                    "the request body is over the limit of {} bytes",
                    st.opts.max_body_bytes
                ),
            )
        } else {
            ApiError::invalid(None, format!("cannot read the request body: {rej}"))
        }
    })?;
    let req = parse_completion(&body, st.opts.max_tokens_limit)?;
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
    };
    let text = TextStream::new(req.stop);
    if req.stream {
        Ok(stream_response(st, rx, text, meta))
    } else {
        complete(&st, rx, text, meta).await
    }
}

struct Meta {
    id: String,
    created: u64,
    model: String,
    prompt_tokens: usize,
}

impl Meta {
    fn usage(&self, completion_tokens: usize) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": self.prompt_tokens + completion_tokens,
        })
    }

    fn chunk(&self, text: &str, finish: Option<&str>, usage: Option<Value>) -> Value {
        let mut v = json!({
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}],
        });
        if let Some(u) = usage {
            v["usage"] = u;
        }
        v
    }
}

/// Waits for the next piece of text or the end; drops nothing (the caller owns `rx`).
async fn next_piece(
    rx: &mut UnboundedReceiver<GenEvent>,
    text: &mut TextStream,
    tokenizer: &Tokenizer,
) -> Result<String, End> {
    loop {
        match rx.recv().await {
            Some(GenEvent::Token(id)) => {
                let piece = text
                    .push(id, tokenizer)
                    .map_err(|e| End::Failed(e.to_string()))?;
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

async fn complete(
    st: &AppState,
    mut rx: UnboundedReceiver<GenEvent>,
    mut text: TextStream,
    meta: Meta,
) -> Result<Response, ApiError> {
    let tokenizer = st.engine.tokenizer();
    let end = loop {
        match next_piece(&mut rx, &mut text, tokenizer).await {
            Ok(_) if text.stopped() => break End::Finished("stop"),
            Ok(_) => {}
            Err(end) => break end,
        }
    };
    drop(rx);
    let reason = match end {
        End::Failed(m) => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                format!("generation failed: {m}"),
            ))
        }
        End::Finished("shutdown") if text.completion_tokens() == 0 => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_shutting_down",
                "the server is shutting down",
            ))
        }
        End::Finished(r) => r,
    };
    text.finish();
    let n = text.completion_tokens();
    let v = meta.chunk(text.text(), Some(reason), Some(meta.usage(n)));
    Ok(Json(v).into_response())
}

enum Phase {
    Running(UnboundedReceiver<GenEvent>, TextStream),
    Done,
}

fn stream_response(
    st: Arc<AppState>,
    rx: UnboundedReceiver<GenEvent>,
    text: TextStream,
    meta: Meta,
) -> Response {
    let meta = Arc::new(meta);
    let events = futures_util::stream::unfold(
        (Phase::Running(rx, text), VecDeque::<Event>::new()),
        move |(phase, mut pending)| {
            let st = st.clone();
            let meta = meta.clone();
            async move {
                if let Some(e) = pending.pop_front() {
                    return Some((Ok::<Event, Infallible>(e), (phase, pending)));
                }
                let Phase::Running(mut rx, mut text) = phase else {
                    return None;
                };
                let data = |v: Value| Event::default().data(v.to_string());
                let end = match next_piece(&mut rx, &mut text, st.engine.tokenizer()).await {
                    Ok(piece) if !text.stopped() => {
                        let e = data(meta.chunk(&piece, None, None));
                        return Some((Ok(e), (Phase::Running(rx, text), pending)));
                    }
                    Ok(piece) => {
                        // A stop string: cancel now (drop the receiver), send what precedes it.
                        drop(rx);
                        if !piece.is_empty() {
                            pending.push_back(data(meta.chunk(&piece, None, None)));
                        }
                        End::Finished("stop")
                    }
                    Err(end) => {
                        drop(rx);
                        end
                    }
                };
                match end {
                    End::Finished(reason) => {
                        let rest = text.finish();
                        if !rest.is_empty() {
                            pending.push_back(data(meta.chunk(&rest, None, None)));
                        }
                        let usage = meta.usage(text.completion_tokens());
                        pending.push_back(data(meta.chunk("", Some(reason), Some(usage))));
                        pending.push_back(Event::default().data("[DONE]"));
                    }
                    End::Failed(m) => {
                        let err = ApiError::new(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "server_error",
                            format!("generation failed: {m}"),
                        );
                        pending.push_back(data(err.body()));
                    }
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
