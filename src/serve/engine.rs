//! The generation engine: one model, many requests, continuous batching on the CPU.
//!
//! [`Engine::start`] moves the model into a dedicated `std::thread`. Requests
//! ([`Engine::submit`]) wait in a bounded queue; between decoding steps the thread admits
//! queued requests while fewer than `max_batch` sequences are active, prefills each one's
//! prompt on its own (a full-prompt forward into a fresh [`KvCache`]) and samples its first
//! token. Then every active sequence advances by one token in ONE batched forward
//! ([`GptWeights::step_batch`]): the `m` new tokens' embeddings stacked into an `(m, C)`
//! matrix, every linear layer (QKV, attention projection, MLP, LM head) as one product over
//! the `m` rows that streams the weights once, attention per sequence against its own KV
//! cache. Finished and cancelled sequences leave; their slots are taken at the next step.
//!
//! Results do not depend on the company a request keeps: each row of a batched step is
//! computed exactly as a lone [`crate::infer::KvModel::step`] computes it (bit for bit), and
//! each sequence samples with its own [`Rng`] seeded by its request, through the same
//! [`pick_token_top_p`] as the `generate` binary. So a request's tokens equal
//! `KvModel::generate`'s (and `generate --seed S`'s) for the same prompt and options,
//! whatever else runs.
//!
//! Context: a prompt longer than `n_positions` keeps its last `n_positions` tokens. When a
//! sequence's cache is full, the window slides as in [`crate::infer::KvModel::generate`]:
//! the last `n_positions / 2` tokens are prefilled again (at positions `0..`) and decoding
//! goes on, so `max_tokens` is never cut short by the context.
//!
//! Events: each generated token is sent as [`GenEvent::Token`], except the tokenizer's
//! end-of-text token, which ends the request as [`FinishReason::EndOfText`]; after
//! `max_tokens` tokens it ends as [`FinishReason::Length`]. A request that cannot run (empty
//! prompt, a token outside the vocabulary, a bad temperature or top-p) gets one
//! [`GenEvent::Failed`]. Dropping the receiver cancels: the engine notices before the next
//! step (or when a send fails) and frees the slot.
//!
//! Shutdown: [`Engine::begin_shutdown`] stops admission (submit answers [`Busy`]) and lets
//! every admitted or queued request run to its end; the thread then exits and
//! [`Engine::join`] returns. When the last [`Engine`] handle is dropped without a join, the
//! thread ends the remaining requests with [`FinishReason::Shutdown`] at the next step and
//! exits.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::data::Tokenizer;
use crate::error::{Error, Result};
use crate::generate::{check_sampling, pick_token_top_p, SampleOptions};
use crate::infer::{GptWeights, KvCache};
use crate::model::hf::HfModel;
use crate::model::GptConfig;
use crate::rng::Rng;

/// Capacity of an [`Engine`].
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// Most sequences decoded together (at least 1).
    pub max_batch: usize,
    /// Most requests waiting beyond the batch; a submit past `max_batch + max_queue`
    /// requests in the engine is answered [`Busy`].
    pub max_queue: usize,
}

/// One generation request (token ids in, token ids out).
#[derive(Debug, Clone)]
pub struct GenRequest {
    pub prompt: Vec<u32>,
    /// Most tokens to generate (the end-of-text token, which ends the request, counts).
    pub max_tokens: usize,
    /// 0 = greedy.
    pub temperature: f32,
    /// Nucleus sampling; 1 = off.
    pub top_p: f32,
    /// Sample among the k most likely tokens; 0 = off.
    pub top_k: usize,
    /// Seed of this request's own sampler.
    pub seed: u64,
}

/// Why a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// `max_tokens` tokens were generated.
    Length,
    /// The model produced the end-of-text token (not sent as a token).
    EndOfText,
    /// The engine went away (last handle dropped without a join) before the end.
    Shutdown,
}

/// What a request's receiver gets: tokens, then exactly one `Finished` or `Failed`.
#[derive(Debug, Clone, PartialEq)]
pub enum GenEvent {
    Token(u32),
    Finished(FinishReason),
    Failed(String),
}

/// The engine does not take the request: the queue is full or it is shutting down.
#[derive(Debug)]
pub struct Busy;

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the engine is busy (queue full or shutting down)")
    }
}

impl std::error::Error for Busy {}

/// A snapshot of the engine's counters.
#[derive(Debug, Clone, Copy)]
pub struct EngineStats {
    /// Sequences in the batch now.
    pub active: usize,
    /// Requests waiting for a slot.
    pub queued: usize,
    /// Batched decoding steps run so far.
    pub steps: u64,
    /// Tokens generated so far (including end-of-text tokens).
    pub tokens: u64,
}

/// A handle on the engine thread; clones share it.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Handle>,
}

/// What the handles hold; dropping the last one tells the thread to wind up.
struct Handle {
    shared: Arc<Shared>,
    config: GptConfig,
    tokenizer: Tokenizer,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// What the handles and the engine thread share.
struct Shared {
    state: Mutex<State>,
    /// Signalled on a new request, on shutdown and when the thread ends.
    cv: Condvar,
    cfg: EngineConfig,
}

struct State {
    queue: VecDeque<Pending>,
    active: usize,
    accepting: bool,
    /// Every handle is gone: finish everything with `Shutdown` and exit.
    abandoned: bool,
    /// The thread has ended.
    done: bool,
    steps: u64,
    tokens: u64,
}

struct Pending {
    req: GenRequest,
    tx: UnboundedSender<GenEvent>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain counters behind: still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Engine {
    /// Starts the engine thread (a std::thread) over the model (weights moved in).
    pub fn start(model: HfModel, cfg: EngineConfig) -> Result<Engine> {
        if cfg.max_batch == 0 {
            return Err(Error::Config("the engine needs max_batch >= 1".into()));
        }
        let HfModel {
            config,
            weights,
            tokenizer,
        } = model;
        let gpt = GptWeights::new(config, &weights)?;
        drop(weights);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                active: 0,
                accepting: true,
                abandoned: false,
                done: false,
                steps: 0,
                tokens: 0,
            }),
            cv: Condvar::new(),
            cfg,
        });
        let worker = Worker {
            gpt,
            eot: tokenizer.eot(),
            shared: shared.clone(),
            seqs: Vec::new(),
            spare: Vec::new(),
        };
        let thread = std::thread::Builder::new()
            .name("smelt-engine".into())
            .spawn(move || worker.run())
            .map_err(|e| Error::Config(format!("cannot start the engine thread: {e}")))?;
        Ok(Engine {
            inner: Arc::new(Handle {
                shared,
                config,
                tokenizer,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// Queues a request; events arrive on the returned receiver; the end-of-text token is
    /// not sent as a Token (Finished(EndOfText) instead). Dropping the receiver cancels the
    /// request: the engine frees its slot at the next step.
    pub fn submit(
        &self,
        req: GenRequest,
    ) -> std::result::Result<UnboundedReceiver<GenEvent>, Busy> {
        let shared = &self.inner.shared;
        let mut st = shared.lock();
        let cap = shared.cfg.max_batch + shared.cfg.max_queue;
        if !st.accepting || st.done || st.active + st.queue.len() >= cap {
            return Err(Busy);
        }
        let (tx, rx) = unbounded_channel();
        st.queue.push_back(Pending { req, tx });
        drop(st);
        shared.cv.notify_all();
        Ok(rx)
    }

    /// Stops accepting (submit returns Busy); requests already admitted or queued run to
    /// completion; returns at once.
    pub fn begin_shutdown(&self) {
        self.inner.shared.lock().accepting = false;
        self.inner.shared.cv.notify_all();
    }

    /// Blocks until every request finished and the thread ended. Begins the shutdown first
    /// if nobody did (the thread only ends once it stops accepting).
    pub fn join(&self) {
        self.begin_shutdown();
        let shared = &self.inner.shared;
        let mut st = shared.lock();
        while !st.done {
            st = shared.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        drop(st);
        let handle = self
            .inner
            .thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    pub fn stats(&self) -> EngineStats {
        let st = self.inner.shared.lock();
        EngineStats {
            active: st.active,
            queued: st.queue.len(),
            steps: st.steps,
            tokens: st.tokens,
        }
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.inner.tokenizer
    }

    pub fn config(&self) -> &GptConfig {
        &self.inner.config
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.accepting = false;
        st.abandoned = true;
        drop(st);
        self.shared.cv.notify_all();
    }
}

/// Sets `done` when the thread ends, even by a panic, so that `join` never hangs.
struct DoneGuard(Arc<Shared>);

impl Drop for DoneGuard {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.done = true;
        st.active = 0;
        drop(st);
        self.0.cv.notify_all();
    }
}

/// One active sequence.
struct Seq {
    tx: UnboundedSender<GenEvent>,
    opts: SampleOptions,
    top_p: f32,
    rng: Rng,
    max_tokens: usize,
    generated: usize,
    /// Prompt (after truncation) and generated tokens: the source of a slid window.
    context: Vec<u32>,
    cache: KvCache,
    /// The token to feed at the next batched step.
    next: u32,
}

/// The engine thread's state: the model and the batch.
struct Worker {
    gpt: GptWeights,
    eot: u32,
    shared: Arc<Shared>,
    seqs: Vec<Seq>,
    /// Caches of finished sequences, reused by new ones.
    spare: Vec<KvCache>,
}

/// What became of a sequence after a token.
enum Next {
    /// Needs a batched step with `seq.next`.
    Step,
    /// Ended (its final event sent, or its receiver gone).
    Done,
}

impl Worker {
    fn run(mut self) {
        let _guard = DoneGuard(self.shared.clone());
        let mut tokens = 0u64;
        let mut steps = 0u64;
        loop {
            // Between steps: publish counters, drop cancelled sequences, admit new ones.
            let (gone, live): (Vec<Seq>, Vec<Seq>) = std::mem::take(&mut self.seqs)
                .into_iter()
                .partition(|s| s.tx.is_closed());
            self.seqs = live;
            self.spare.extend(gone.into_iter().map(|s| s.cache));
            let admitted = {
                let mut st = self.shared.lock();
                st.steps = steps;
                st.tokens = tokens;
                loop {
                    if st.abandoned {
                        let queued: Vec<Pending> = st.queue.drain(..).collect();
                        st.active = 0;
                        drop(st);
                        for s in self.seqs.drain(..) {
                            let _ = s.tx.send(GenEvent::Finished(FinishReason::Shutdown));
                        }
                        for p in queued {
                            let _ = p.tx.send(GenEvent::Finished(FinishReason::Shutdown));
                        }
                        return;
                    }
                    let free = self.shared.cfg.max_batch.saturating_sub(self.seqs.len());
                    let take = free.min(st.queue.len());
                    let admitted: Vec<Pending> = st.queue.drain(..take).collect();
                    st.active = self.seqs.len() + admitted.len();
                    if st.active > 0 {
                        break admitted;
                    }
                    if !st.accepting && st.queue.is_empty() {
                        return;
                    }
                    st = self.shared.cv.wait(st).unwrap_or_else(|e| e.into_inner());
                }
            };
            for p in admitted {
                if let Some(seq) = self.start(p, &mut tokens) {
                    self.seqs.push(seq);
                }
            }
            if self.seqs.is_empty() {
                continue;
            }
            // One batched forward for every active sequence.
            let logits = {
                let mut batch: Vec<(&mut KvCache, u32)> = self
                    .seqs
                    .iter_mut()
                    .map(|s| (&mut s.cache, s.next))
                    .collect();
                self.gpt.step_batch(&mut batch)
            };
            steps += 1;
            let vocab = self.gpt.config().vocab_size;
            match logits {
                Ok(logits) => {
                    let seqs = std::mem::take(&mut self.seqs);
                    for (mut seq, row) in seqs.into_iter().zip(logits.chunks_exact(vocab)) {
                        match self.advance(&mut seq, row, &mut tokens) {
                            Next::Step => self.seqs.push(seq),
                            Next::Done => self.spare.push(seq.cache),
                        }
                    }
                }
                Err(e) => {
                    for seq in self.seqs.drain(..) {
                        let _ = seq.tx.send(GenEvent::Failed(e.to_string()));
                        self.spare.push(seq.cache);
                    }
                }
            }
        }
    }

    /// Checks and prefills a new request and emits its first token; `None` when it already
    /// ended (failed, cancelled, or done after one token).
    fn start(&mut self, p: Pending, tokens: &mut u64) -> Option<Seq> {
        let Pending { req, tx } = p;
        if tx.is_closed() {
            return None;
        }
        let fail = |msg: String| {
            let _ = tx.send(GenEvent::Failed(msg));
            None
        };
        if req.prompt.is_empty() {
            return fail("the prompt is empty; give at least one token".into());
        }
        if let Err(bad) = check_sampling(req.temperature, req.top_p) {
            return fail(bad.to_string());
        }
        let vocab = self.gpt.config().vocab_size;
        if let Some(&bad) = req.prompt.iter().find(|&&id| id as usize >= vocab) {
            return fail(format!(
                "token id {bad} is outside the vocabulary (size {vocab})"
            ));
        }
        if req.max_tokens == 0 {
            let _ = tx.send(GenEvent::Finished(FinishReason::Length));
            return None;
        }
        let window = self.gpt.config().block_size;
        let context = req.prompt[req.prompt.len().saturating_sub(window)..].to_vec();
        let mut cache = match self.spare.pop() {
            Some(cache) => cache,
            None => match KvCache::try_new(self.gpt.config()) {
                Ok(cache) => cache,
                Err(e) => return fail(e.to_string()),
            },
        };
        let logits = match self.gpt.prefill(&mut cache, &context) {
            Ok(l) => l,
            Err(e) => {
                self.spare.push(cache);
                return fail(e.to_string());
            }
        };
        let mut seq = Seq {
            tx,
            opts: SampleOptions {
                max_new_tokens: req.max_tokens,
                temperature: req.temperature,
                top_k: req.top_k,
                seed: req.seed,
            },
            top_p: req.top_p,
            rng: Rng::new(req.seed),
            max_tokens: req.max_tokens,
            generated: 0,
            context,
            cache,
            next: 0,
        };
        match self.advance(&mut seq, &logits, tokens) {
            Next::Step => Some(seq),
            Next::Done => {
                self.spare.push(seq.cache);
                None
            }
        }
    }

    /// Picks the next token of `seq` from `logits`, sends it, and gets the sequence ready
    /// for the next batched step (sliding the window when the cache is full), as
    /// `KvModel::generate` does.
    fn advance(&mut self, seq: &mut Seq, logits: &[f32], tokens: &mut u64) -> Next {
        let vocab = self.gpt.config().vocab_size;
        let window = self.gpt.config().block_size;
        let mut slid;
        let mut logits = logits;
        loop {
            let next = pick_token_top_p(logits, vocab, &seq.opts, seq.top_p, &mut seq.rng);
            seq.generated += 1;
            *tokens += 1;
            if next == self.eot {
                let _ = seq.tx.send(GenEvent::Finished(FinishReason::EndOfText));
                return Next::Done;
            }
            if seq.tx.send(GenEvent::Token(next)).is_err() {
                return Next::Done; // cancelled
            }
            if seq.generated >= seq.max_tokens {
                let _ = seq.tx.send(GenEvent::Finished(FinishReason::Length));
                return Next::Done;
            }
            seq.context.push(next);
            if seq.cache.len() < window {
                seq.next = next;
                return Next::Step;
            }
            // The cache is full: re-encode the last half window and go on from there.
            let from = seq.context.len() - crate::infer::slide_keep(window);
            seq.context.drain(..from);
            match self.gpt.prefill(&mut seq.cache, &seq.context) {
                Ok(l) => slid = l,
                Err(e) => {
                    let _ = seq.tx.send(GenEvent::Failed(e.to_string()));
                    return Next::Done;
                }
            }
            logits = &slid;
        }
    }
}
