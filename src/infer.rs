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

use rayon::prelude::*;

use crate::backend::cpu::kernels;
use crate::error::{Error, Result};
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

/// A GPT-2 for inference on the CPU, with a KV cache.
pub struct KvModel {
    config: GptConfig,
    /// `(vocab, c)`: the embedding and the tied LM head.
    wte: Vec<f32>,
    /// `(n_positions, c)`.
    wpe: Vec<f32>,
    layers: Vec<Layer>,
    lnf_w: Vec<f32>,
    lnf_b: Vec<f32>,
    /// Per layer, `(n_positions, c)` keys and values; rows `..len` are live.
    k_cache: Vec<Vec<f32>>,
    v_cache: Vec<Vec<f32>>,
    len: usize,
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

/// `out (n) = w (n,k) · x (k) + bias`, rows split over rayon threads.
fn gemv(out: &mut [f32], w: &[f32], x: &[f32], bias: Option<&[f32]>) {
    let k = x.len();
    debug_assert_eq!(w.len(), out.len() * k);
    let rows_per_task = (16384 / k.max(1)).max(1);
    out.par_chunks_mut(rows_per_task)
        .zip(w.par_chunks(rows_per_task * k))
        .enumerate()
        .for_each(|(ti, (o, wc))| {
            for (r, (o, row)) in o.iter_mut().zip(wc.chunks_exact(k)).enumerate() {
                let b = bias.map_or(0.0, |b| b[ti * rows_per_task + r]);
                *o = dot(row, x) + b;
            }
        });
}

fn layernorm(out: &mut [f32], x: &[f32], w: &[f32], b: &[f32], n: usize, c: usize) {
    let (mut mean, mut rstd) = (vec![0.0; n], vec![0.0; n]);
    kernels::layernorm_forward(out, &mut mean, &mut rstd, x, w, b, n, c, LAYER_NORM_EPS);
}

impl KvModel {
    /// Builds the model from weights under our (Hugging Face) names and Conv1D `(in, out)`
    /// layout, `wte` with `vocab_size` (or the padded number of) rows. Every tensor must be
    /// present with its shape; unknown names are an error.
    pub fn new(config: GptConfig, weights: &Weights) -> Result<Self> {
        config.validate()?;
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
        let cache = vec![vec![0.0f32; config.block_size * c]; config.n_layer];
        Ok(KvModel {
            config,
            wte,
            wpe,
            layers,
            lnf_w,
            lnf_b,
            k_cache: cache.clone(),
            v_cache: cache,
            len: 0,
        })
    }

    pub fn config(&self) -> &GptConfig {
        &self.config
    }

    /// Number of tokens in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Empties the cache.
    pub fn reset(&mut self) {
        self.len = 0;
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

    /// Logits `(vocab)` of one final hidden state `x (c)`.
    fn head(&self, x: &[f32]) -> Vec<f32> {
        let c = self.config.n_embd;
        let mut h = vec![0.0; c];
        layernorm(&mut h, x, &self.lnf_w, &self.lnf_b, 1, c);
        let mut logits = vec![0.0; self.config.vocab_size];
        gemv(&mut logits, &self.wte, &h, None);
        logits
    }

    /// Starts a new sequence: empties the cache, runs `tokens` (1 ..= n_positions of them)
    /// and returns the logits `(vocab_size)` of the last position.
    pub fn prefill(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
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
        for &id in tokens {
            self.check_token(id)?;
        }
        self.len = 0;
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
                self.k_cache[l][p * c..][..c].copy_from_slice(&row[c..2 * c]);
                self.v_cache[l][p * c..][..c].copy_from_slice(&row[2 * c..]);
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
        self.len = t;
        Ok(self.head(&x[(t - 1) * c..]))
    }

    /// Appends `token` at position [`KvModel::len`] and returns its logits `(vocab_size)`.
    /// Costs O(len) attention plus one pass over the weights. An error when the cache is
    /// empty (call [`KvModel::prefill`] first) or full (`n_positions` tokens).
    pub fn step(&mut self, token: u32) -> Result<Vec<f32>> {
        let (c, nh) = (self.config.n_embd, self.config.n_head);
        let hs = c / nh;
        let pos = self.len;
        if pos == 0 {
            return Err(Error::Data(
                "step needs a started sequence: call prefill first".into(),
            ));
        }
        if pos >= self.config.block_size {
            return Err(Error::Data(format!(
                "the context is full ({} positions); prefill a shorter window to go on",
                self.config.block_size
            )));
        }
        self.check_token(token)?;
        let mut x: Vec<f32> = self.wte[token as usize * c..][..c]
            .iter()
            .zip(&self.wpe[pos * c..][..c])
            .map(|(a, b)| a + b)
            .collect();
        let mut h = vec![0.0f32; c];
        let mut qkv = vec![0.0f32; 3 * c];
        let mut att = vec![0.0f32; c];
        let mut proj = vec![0.0f32; c];
        let mut fc = vec![0.0f32; 4 * c];
        let mut act = vec![0.0f32; 4 * c];
        let scale = 1.0 / (hs as f32).sqrt();
        let n = pos + 1;
        for (l, layer) in self.layers.iter().enumerate() {
            layernorm(&mut h, &x, &layer.ln1_w, &layer.ln1_b, 1, c);
            gemv(&mut qkv, &layer.attn_w, &h, Some(&layer.attn_b));
            self.k_cache[l][pos * c..][..c].copy_from_slice(&qkv[c..2 * c]);
            self.v_cache[l][pos * c..][..c].copy_from_slice(&qkv[2 * c..]);
            let (kc, vc) = (&self.k_cache[l][..n * c], &self.v_cache[l][..n * c]);
            let q = &qkv[..c];
            att.par_chunks_mut(hs).enumerate().for_each(|(hd, out)| {
                let qh = &q[hd * hs..][..hs];
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
            gemv(&mut proj, &layer.proj_w, &att, Some(&layer.proj_b));
            x.iter_mut().zip(&proj).for_each(|(x, p)| *x += p);
            layernorm(&mut h, &x, &layer.ln2_w, &layer.ln2_b, 1, c);
            gemv(&mut fc, &layer.fc_w, &h, Some(&layer.fc_b));
            kernels::gelu_forward(&mut act, &fc);
            gemv(&mut proj, &layer.fc_proj_w, &act, Some(&layer.fc_proj_b));
            x.iter_mut().zip(&proj).for_each(|(x, p)| *x += p);
        }
        self.len = n;
        Ok(self.head(&x))
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
        let window = self.config.block_size;
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
            logits = if self.len == window {
                let keep = (window / 2).max(1);
                self.prefill(&context[context.len() - keep..])?
            } else {
                self.step(next)?
            };
        }
    }
}
