//! CPU inference with a KV cache: generation at O(context) per token.
//!
//! [`KvModel`] holds a GPT-2's weights in f32, each linear layer transposed to `(out, in)` so
//! that the one-token step is a matrix-vector product streaming contiguous rows, and a cache
//! of every layer's keys and values for up to `n_positions` (`block_size`) positions.
//!
//! - [`KvModel::prefill`] starts a new sequence: it runs the whole prompt at once (matmuls
//!   and causal attention from `backend::cpu::kernels`), fills the cache, and returns the
//!   logits of the last position;
//! - [`KvModel::step`] appends one token: its Q, K, V, attention over the cached positions
//!   only, and its logits.
//!
//! Logits have `vocab_size` entries (the padded vocabulary of the training graph is not
//! materialised). The cache holds at most `n_positions` tokens; `step` on a full cache is an
//! error. [`KvModel::generate`] slides instead: when the cache is full it keeps the last
//! `n_positions / 2` tokens (re-encoded at positions `0..`) and goes on, so long generations
//! cost one half-window prefill every `n_positions / 2` tokens.
//!
//! The weights ([`GptWeights`]) and the per-sequence cache ([`KvCache`]) are separate so that
//! one set of weights can serve many sequences: [`GptWeights::step_batch`] advances several
//! sequences by one token each in one pass over the weights (continuous batching in
//! `serve::engine`). Every row of a batched step is computed exactly as a lone
//! [`KvModel::step`] computes it (the same dot products in the same order, attention per
//! sequence against its own cache), so a sequence's logits do not depend on who else is in
//! the batch: [`KvModel::step`] *is* `step_batch` with one sequence.

use rayon::prelude::*;

use crate::backend::cpu::kernels;
use crate::error::{Error, Result};
use crate::memory;
use crate::model::config::LAYER_NORM_EPS;
use crate::model::hf::Weights;
use crate::model::GptConfig;

/// One transformer block's weights, linear layers as `(out, in)`.
struct Layer {
    ln1_w: Vec<f32>,
    ln1_b: Vec<f32>,
    attn_w: Vec<f32>,
    attn_b: Vec<f32>,
    proj_w: Vec<f32>,
    proj_b: Vec<f32>,
    ln2_w: Vec<f32>,
    ln2_b: Vec<f32>,
    fc_w: Vec<f32>,
    fc_b: Vec<f32>,
    fc_proj_w: Vec<f32>,
    fc_proj_b: Vec<f32>,
}

/// A GPT-2's weights laid out for CPU inference (f32, linear layers as `(out, in)`); no
/// per-sequence state, so one instance serves any number of [`KvCache`]s.
pub struct GptWeights {
    config: GptConfig,
    /// `(vocab, c)`: the embedding and the tied LM head.
    wte: Vec<f32>,
    /// `(n_positions, c)`.
    wpe: Vec<f32>,
    layers: Vec<Layer>,
    lnf_w: Vec<f32>,
    lnf_b: Vec<f32>,
}

/// One sequence's keys and values: per layer, `(n_positions, c)`; rows `..len` are live.
pub struct KvCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    len: usize,
    capacity: usize,
}

impl KvCache {
    /// An empty cache for up to `config.block_size` positions.
    pub fn new(config: &GptConfig) -> Self {
        let cache = vec![vec![0.0f32; config.block_size * config.n_embd]; config.n_layer];
        KvCache {
            k: cache.clone(),
            v: cache,
            len: 0,
            capacity: config.block_size,
        }
    }

    /// [`KvCache::new`] after checking that this machine has the memory for it.
    pub fn try_new(config: &GptConfig) -> Result<Self> {
        let values = (config.block_size as u64)
            .checked_mul(config.n_embd as u64)
            .and_then(|n| n.checked_mul(2 * config.n_layer as u64));
        memory::check(
            &format!("a KV cache of {} positions", config.block_size),
            values.and_then(|n| n.checked_mul(4)),
            "the model's n_positions is too large for this machine",
        )?;
        Ok(Self::new(config))
    }

    /// Number of tokens in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Most tokens the cache holds (`n_positions`).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Empties the cache.
    pub fn reset(&mut self) {
        self.len = 0;
    }
}

/// A GPT-2 for inference on the CPU, with a KV cache: [`GptWeights`] and one [`KvCache`].
pub struct KvModel {
    weights: GptWeights,
    cache: KvCache,
}

/// `(rows, cols)` row-major → `(cols, rows)`.
fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for (i, row) in x.chunks_exact(cols).enumerate() {
        for (j, &v) in row.iter().enumerate() {
            out[j * rows + i] = v;
        }
    }
    out
}

/// `Σ a[i] b[i]` with 8 independent accumulators (vectorises).
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `out (m,n) = x (m,k) · wᵀ + bias` for `w (n,k)`: the linear layer of `m` rows at once.
///
/// Every output is `dot(w row, x row) + bias`, the same arithmetic whatever `m` and whatever
/// the other rows, so a row's result does not depend on the batch it is computed in (a
/// `gemm` does not promise that: its blocking and its matrix-vector path depend on `m`).
/// Weight rows are split over rayon threads and each task runs its rows against all `m`
/// inputs while they sit in cache, so the weights stream from memory once per call: the
/// point of batching decode steps, which are bound by memory bandwidth.
fn linear_rows(out: &mut [f32], w: &[f32], x: &[f32], bias: Option<&[f32]>, m: usize) {
    if m == 0 {
        return;
    }
    let (k, n) = (x.len() / m, out.len() / m);
    debug_assert_eq!(x.len(), m * k);
    debug_assert_eq!(out.len(), m * n);
    debug_assert_eq!(w.len(), n * k);
    let rows_per_task = (16384 / k.max(1)).max(1);
    // Results land as (n, m): each task owns a contiguous block of it.
    let fill = |dst: &mut [f32]| {
        dst.par_chunks_mut(rows_per_task * m)
            .zip(w.par_chunks(rows_per_task * k))
            .enumerate()
            .for_each(|(ti, (o, wc))| {
                for (r, (o, row)) in o.chunks_exact_mut(m).zip(wc.chunks_exact(k)).enumerate() {
                    let b = bias.map_or(0.0, |b| b[ti * rows_per_task + r]);
                    for (o, xr) in o.iter_mut().zip(x.chunks_exact(k)) {
                        *o = dot(row, xr) + b;
                    }
                }
            });
    };
    if m == 1 {
        fill(out);
    } else {
        let mut t = vec![0.0f32; n * m];
        fill(&mut t);
        for (j, col) in t.chunks_exact(m).enumerate() {
            for (i, &v) in col.iter().enumerate() {
                out[i * n + j] = v;
            }
        }
    }
}

fn layernorm(out: &mut [f32], x: &[f32], w: &[f32], b: &[f32], n: usize, c: usize) {
    let (mut mean, mut rstd) = (vec![0.0; n], vec![0.0; n]);
    kernels::layernorm_forward(out, &mut mean, &mut rstd, x, w, b, n, c, LAYER_NORM_EPS);
}

impl GptWeights {
    /// Takes the weights under our (Hugging Face) names and Conv1D `(in, out)` layout, `wte`
    /// with `vocab_size` (or the padded number of) rows. Every tensor must be present with
    /// its shape; unknown names are an error.
    pub fn new(config: GptConfig, weights: &Weights) -> Result<Self> {
        config.validate()?;
        // This copy (transposed) comes on top of `weights`.
        memory::check(
            "the weights laid out for inference",
            config.weight_bytes(),
            "use a smaller model",
        )?;
        let c = config.n_embd;
        let mut used = 0usize;
        let mut take = |name: String, shape: &[usize]| -> Result<Vec<f32>> {
            let (have, data) = weights
                .get(&name)
                .ok_or_else(|| Error::Checkpoint(format!("weights lack tensor '{name}'")))?;
            used += 1;
            let padded_wte = name == "transformer.wte.weight"
                && have.len() == 2
                && have[0] == config.padded_vocab()
                && have[1] == c;
            if have.as_slice() != shape && !padded_wte {
                return Err(Error::Checkpoint(format!(
                    "tensor '{name}' has shape {have:?}, the model config needs {shape:?}"
                )));
            }
            if data.len() != have.iter().product::<usize>() {
                return Err(Error::Checkpoint(format!(
                    "tensor '{name}' has {} values for shape {have:?}",
                    data.len()
                )));
            }
            let n: usize = shape.iter().product();
            Ok(data[..n].to_vec())
        };
        let wte = take("transformer.wte.weight".into(), &[config.vocab_size, c])?;
        let wpe = take("transformer.wpe.weight".into(), &[config.block_size, c])?;
        let mut layers = Vec::with_capacity(config.n_layer);
        for l in 0..config.n_layer {
            let p = format!("transformer.h.{l}");
            let mut lin = |name: &str, fan_in: usize, fan_out: usize| -> Result<_> {
                let w = take(format!("{p}.{name}.weight"), &[fan_in, fan_out])?;
                let b = take(format!("{p}.{name}.bias"), &[fan_out])?;
                Ok((transpose(&w, fan_in, fan_out), b))
            };
            let (attn_w, attn_b) = lin("attn.c_attn", c, 3 * c)?;
            let (proj_w, proj_b) = lin("attn.c_proj", c, c)?;
            let (fc_w, fc_b) = lin("mlp.c_fc", c, 4 * c)?;
            let (fc_proj_w, fc_proj_b) = lin("mlp.c_proj", 4 * c, c)?;
            layers.push(Layer {
                ln1_w: take(format!("{p}.ln_1.weight"), &[c])?,
                ln1_b: take(format!("{p}.ln_1.bias"), &[c])?,
                attn_w,
                attn_b,
                proj_w,
                proj_b,
                ln2_w: take(format!("{p}.ln_2.weight"), &[c])?,
                ln2_b: take(format!("{p}.ln_2.bias"), &[c])?,
                fc_w,
                fc_b,
                fc_proj_w,
                fc_proj_b,
            });
        }
        let lnf_w = take("transformer.ln_f.weight".into(), &[c])?;
        let lnf_b = take("transformer.ln_f.bias".into(), &[c])?;
        if used != weights.len() {
            let known = crate::model::hf::expected_shapes(&config);
            if let Some(extra) = weights.keys().find(|k| !known.iter().any(|(n, _)| n == *k)) {
                return Err(Error::Checkpoint(format!(
                    "weights hold tensor '{extra}' that a GPT-2 with this config does not have"
                )));
            }
        }
        Ok(GptWeights {
            config,
            wte,
            wpe,
            layers,
            lnf_w,
            lnf_b,
        })
    }

    pub fn config(&self) -> &GptConfig {
        &self.config
    }

    /// An empty cache sized for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(&self.config)
    }

    fn check_token(&self, id: u32) -> Result<()> {
        if id as usize >= self.config.vocab_size {
            return Err(Error::Data(format!(
                "token id {id} is outside the vocabulary (size {})",
                self.config.vocab_size
            )));
        }
        Ok(())
    }

    fn check_cache(&self, cache: &KvCache) -> Result<()> {
        let want = (self.config.n_layer, self.config.block_size);
        if (cache.k.len(), cache.capacity) != want
            || cache
                .k
                .iter()
                .any(|k| k.len() != want.1 * self.config.n_embd)
        {
            return Err(Error::Config(
                "the KV cache was made for another model config".into(),
            ));
        }
        Ok(())
    }

    /// Logits `(m, vocab)` of `m` final hidden states `x (m, c)`.
    fn head(&self, x: &[f32], m: usize) -> Vec<f32> {
        let c = self.config.n_embd;
        let mut h = vec![0.0; m * c];
        layernorm(&mut h, x, &self.lnf_w, &self.lnf_b, m, c);
        let mut logits = vec![0.0; m * self.config.vocab_size];
        linear_rows(&mut logits, &self.wte, &h, None, m);
        logits
    }

    /// Starts a new sequence in `cache`: empties it, runs `tokens` (1 ..= n_positions of them)
    /// and returns the logits `(vocab_size)` of the last position.
    pub fn prefill(&self, cache: &mut KvCache, tokens: &[u32]) -> Result<Vec<f32>> {
        let (c, nh) = (self.config.n_embd, self.config.n_head);
        let t = tokens.len();
        if t == 0 {
            return Err(Error::Data("prefill needs at least one token".into()));
        }
        if t > self.config.block_size {
            return Err(Error::Data(format!(
                "{t} tokens do not fit the model's context of {} positions",
                self.config.block_size
            )));
        }
        self.check_cache(cache)?;
        for &id in tokens {
            self.check_token(id)?;
        }
        cache.len = 0;
        let mut x = vec![0.0f32; t * c];
        for (p, (row, &id)) in x.chunks_exact_mut(c).zip(tokens).enumerate() {
            let e = &self.wte[id as usize * c..][..c];
            let pe = &self.wpe[p * c..][..c];
            for ((o, &a), &b) in row.iter_mut().zip(e).zip(pe) {
                *o = a + b;
            }
        }
        let mut h = vec![0.0f32; t * c];
        let mut qkv = vec![0.0f32; t * 3 * c];
        let mut att = vec![0.0f32; t * c];
        let mut lse = vec![0.0f32; nh * t];
        let mut proj = vec![0.0f32; t * c];
        let mut fc = vec![0.0f32; t * 4 * c];
        let mut act = vec![0.0f32; t * 4 * c];
        for (l, layer) in self.layers.iter().enumerate() {
            layernorm(&mut h, &x, &layer.ln1_w, &layer.ln1_b, t, c);
            let b = Some(layer.attn_b.as_slice());
            kernels::matmul(&mut qkv, &h, &layer.attn_w, b, t, c, 3 * c, false, true);
            for (p, row) in qkv.chunks_exact(3 * c).enumerate() {
                cache.k[l][p * c..][..c].copy_from_slice(&row[c..2 * c]);
                cache.v[l][p * c..][..c].copy_from_slice(&row[2 * c..]);
            }
            kernels::attention_forward(&mut att, &mut lse, &qkv, 1, t, c, nh);
            let b = Some(layer.proj_b.as_slice());
            kernels::matmul(&mut proj, &att, &layer.proj_w, b, t, c, c, false, true);
            x.iter_mut().zip(&proj).for_each(|(x, p)| *x += p);
            layernorm(&mut h, &x, &layer.ln2_w, &layer.ln2_b, t, c);
            let b = Some(layer.fc_b.as_slice());
            kernels::matmul(&mut fc, &h, &layer.fc_w, b, t, c, 4 * c, false, true);
            kernels::gelu_forward(&mut act, &fc);
            let b = Some(layer.fc_proj_b.as_slice());
            kernels::matmul(
                &mut proj,
                &act,
                &layer.fc_proj_w,
                b,
                t,
                4 * c,
                c,
                false,
                true,
            );
            x.iter_mut().zip(&proj).for_each(|(x, p)| *x += p);
        }
        cache.len = t;
        Ok(self.head(&x[(t - 1) * c..], 1))
    }

    /// Advances every sequence of `batch` by one token: appends `token` to its `cache` (at
    /// position `cache.len()`) and returns the logits `(batch.len(), vocab_size)`, row `i`
    /// for `batch[i]`. One pass over the weights for the whole batch: the linear layers run
    /// on all rows together, attention per sequence over its own cache. Row `i` equals what
    /// a lone step of `batch[i]` returns, bit for bit. An error (nothing changed) when a
    /// cache is empty (prefill first) or full (`n_positions` tokens), or a token is outside
    /// the vocabulary.
    pub fn step_batch(&self, batch: &mut [(&mut KvCache, u32)]) -> Result<Vec<f32>> {
        let (c, nh) = (self.config.n_embd, self.config.n_head);
        let hs = c / nh;
        let m = batch.len();
        for (cache, token) in batch.iter() {
            self.check_cache(cache)?;
            if cache.len == 0 {
                return Err(Error::Data(
                    "step needs a started sequence: call prefill first".into(),
                ));
            }
            if cache.len >= self.config.block_size {
                return Err(Error::Data(format!(
                    "the context is full ({} positions); prefill a shorter window to go on",
                    self.config.block_size
                )));
            }
            self.check_token(*token)?;
        }
        if m == 0 {
            return Ok(Vec::new());
        }
        let mut x = vec![0.0f32; m * c];
        for (row, (cache, token)) in x.chunks_exact_mut(c).zip(batch.iter()) {
            let e = &self.wte[*token as usize * c..][..c];
            let pe = &self.wpe[cache.len * c..][..c];
            for ((o, &a), &b) in row.iter_mut().zip(e).zip(pe) {
                *o = a + b;
            }
        }
        let mut h = vec![0.0f32; m * c];
        let mut qkv = vec![0.0f32; m * 3 * c];
        let mut att = vec![0.0f32; m * c];
        let mut proj = vec![0.0f32; m * c];
        let mut fc = vec![0.0f32; m * 4 * c];
        let mut act = vec![0.0f32; m * 4 * c];
        let scale = 1.0 / (hs as f32).sqrt();
        for (l, layer) in self.layers.iter().enumerate() {
            layernorm(&mut h, &x, &layer.ln1_w, &layer.ln1_b, m, c);
            linear_rows(&mut qkv, &layer.attn_w, &h, Some(&layer.attn_b), m);
            for (row, (cache, _)) in qkv.chunks_exact(3 * c).zip(batch.iter_mut()) {
                let pos = cache.len;
                cache.k[l][pos * c..][..c].copy_from_slice(&row[c..2 * c]);
                cache.v[l][pos * c..][..c].copy_from_slice(&row[2 * c..]);
            }
            // Per sequence: its keys and values up to and including the new position.
            let kv: Vec<(&[f32], &[f32])> = batch
                .iter()
                .map(|(cache, _)| {
                    let n = (cache.len + 1) * c;
                    (&cache.k[l][..n], &cache.v[l][..n])
                })
                .collect();
            // One task per (sequence, head).
            att.par_chunks_mut(hs).enumerate().for_each(|(ih, out)| {
                let (i, hd) = (ih / nh, ih % nh);
                let (kc, vc) = kv[i];
                let qh = &qkv[i * 3 * c + hd * hs..][..hs];
                let mut scores: Vec<f32> = kc
                    .chunks_exact(c)
                    .map(|k| dot(qh, &k[hd * hs..][..hs]) * scale)
                    .collect();
                let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0f32;
                for s in &mut scores {
                    *s = (*s - max).exp();
                    sum += *s;
                }
                out.fill(0.0);
                for (p, v) in scores.iter().zip(vc.chunks_exact(c)) {
                    let p = p / sum;
                    for (o, &v) in out.iter_mut().zip(&v[hd * hs..][..hs]) {
                        *o += p * v;
                    }
                }
            });
            linear_rows(&mut proj, &layer.proj_w, &att, Some(&layer.proj_b), m);
            x.iter_mut().zip(&proj).for_each(|(x, p)| *x += p);
            layernorm(&mut h, &x, &layer.ln2_w, &layer.ln2_b, m, c);
            linear_rows(&mut fc, &layer.fc_w, &h, Some(&layer.fc_b), m);
            kernels::gelu_forward(&mut act, &fc);
            linear_rows(&mut proj, &layer.fc_proj_w, &act, Some(&layer.fc_proj_b), m);
            x.iter_mut().zip(&proj).for_each(|(x, p)| *x += p);
        }
        for (cache, _) in batch.iter_mut() {
            cache.len += 1;
        }
        Ok(self.head(&x, m))
    }
}

/// Tokens kept when a full cache slides (see the module doc): the last half window, which
/// is prefilled again. One policy for [`KvModel::generate`] and the serve engine.
pub fn slide_keep(window: usize) -> usize {
    (window / 2).max(1)
}

impl KvModel {
    /// Builds the model from weights under our (Hugging Face) names and Conv1D `(in, out)`
    /// layout, `wte` with `vocab_size` (or the padded number of) rows. Every tensor must be
    /// present with its shape; unknown names are an error.
    pub fn new(config: GptConfig, weights: &Weights) -> Result<Self> {
        let weights = GptWeights::new(config, weights)?;
        let cache = KvCache::try_new(weights.config())?;
        Ok(KvModel { weights, cache })
    }

    pub fn config(&self) -> &GptConfig {
        self.weights.config()
    }

    /// The weights, shared layout with the batched decoder.
    pub fn weights(&self) -> &GptWeights {
        &self.weights
    }

    /// Number of tokens in the cache.
    pub fn len(&self) -> usize {
        self.cache.len
    }

    pub fn is_empty(&self) -> bool {
        self.cache.len == 0
    }

    /// Empties the cache.
    pub fn reset(&mut self) {
        self.cache.len = 0;
    }

    /// Starts a new sequence: empties the cache, runs `tokens` (1 ..= n_positions of them)
    /// and returns the logits `(vocab_size)` of the last position.
    pub fn prefill(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.weights.prefill(&mut self.cache, tokens)
    }

    /// Appends `token` at position [`KvModel::len`] and returns its logits `(vocab_size)`.
    /// Costs O(len) attention plus one pass over the weights. An error when the cache is
    /// empty (call [`KvModel::prefill`] first) or full (`n_positions` tokens).
    pub fn step(&mut self, token: u32) -> Result<Vec<f32>> {
        self.weights.step_batch(&mut [(&mut self.cache, token)])
    }

    /// Continues `prompt` by up to `max_new_tokens` tokens. `pick` chooses each token from
    /// the logits `(vocab_size)`; `on_token` sees each chosen token and returns false to stop
    /// (that token is kept in the result). A prompt longer than `n_positions` keeps its last
    /// `n_positions` tokens; when the cache fills up, the window slides (see the module doc).
    pub fn generate(
        &mut self,
        prompt: &[u32],
        max_new_tokens: usize,
        mut pick: impl FnMut(&[f32]) -> u32,
        mut on_token: impl FnMut(u32) -> bool,
    ) -> Result<Vec<u32>> {
        if prompt.is_empty() {
            return Err(Error::Data(
                "the prompt is empty; give at least one token".into(),
            ));
        }
        let window = self.weights.config.block_size;
        let mut context = prompt.to_vec();
        let mut generated = Vec::new();
        if max_new_tokens == 0 {
            return Ok(generated);
        }
        let mut logits = self.prefill(&context[context.len().saturating_sub(window)..])?;
        loop {
            let next = pick(&logits);
            generated.push(next);
            context.push(next);
            if !on_token(next) || generated.len() == max_new_tokens {
                return Ok(generated);
            }
            logits = if self.cache.len == window {
                self.prefill(&context[context.len() - slide_keep(window)..])?
            } else {
                self.step(next)?
            };
        }
    }
}
