//! GPT-2 architecture settings.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::memory;

/// The vocabulary is padded to a multiple of this (as llm.c does) so the LM head's matmul
/// has friendly sizes; the padded logits are ignored by the loss and never sampled.
pub const VOCAB_PAD: usize = 64;

/// Architecture of a GPT-2 model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GptConfig {
    pub n_layer: usize,
    pub n_head: usize,
    pub n_embd: usize,
    /// Longest sequence the model accepts (GPT-2's n_positions).
    pub block_size: usize,
    /// The tokenizer's vocabulary size (unpadded).
    pub vocab_size: usize,
}

impl Default for GptConfig {
    fn default() -> Self {
        GptConfig {
            n_layer: 4,
            n_head: 4,
            n_embd: 128,
            block_size: 128,
            vocab_size: 2048,
        }
    }
}

/// Layer-norm epsilon of GPT-2.
pub const LAYER_NORM_EPS: f32 = 1e-5;

/// Host memory a model takes per transformer block besides its values, at least: the
/// graph's tensors (name, shape, storage), ops and plan, or a weight map's entries. Measured
/// with a counting allocator (n_embd 1): ~9.8 KB per block for a forward graph, ~18.6 KB for
/// a training graph, ~2.2 KB for a weight map. Counting it lets a config of many tiny blocks
/// (`n_layer = 1000000000`) be refused before its graph or its list of tensors is built.
pub const BOOKKEEPING_BYTES_PER_LAYER: u64 = 2048;

impl GptConfig {
    /// vocab_size rounded up to a multiple of [`VOCAB_PAD`].
    pub fn padded_vocab(&self) -> usize {
        self.vocab_size.div_ceil(VOCAB_PAD) * VOCAB_PAD
    }

    pub fn head_size(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Checks that the sizes make a model.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Config(msg));
        if self.n_layer == 0 || self.n_head == 0 || self.n_embd == 0 {
            return bad("model: n_layer, n_head and n_embd must all be at least 1".into());
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return bad(format!(
                "model: n_embd ({}) is not divisible by n_head ({}); pick n_embd a multiple of n_head",
                self.n_embd, self.n_head
            ));
        }
        if self.block_size == 0 {
            return bad("model: block_size must be at least 1".into());
        }
        if self.vocab_size < 2 {
            return bad(format!(
                "model: vocab_size ({}) must be at least 2",
                self.vocab_size
            ));
        }
        // Parameters, gradients and two AdamW moments, 4 bytes each, must be addressable:
        // then no size derived from the parameters overflows.
        if self
            .padded_params()
            .and_then(|p| p.checked_mul(16))
            .is_none()
        {
            let c = self.n_embd as f64;
            let approx = self.n_layer as f64 * 12.0 * c * c
                + (self.vocab_size as f64 + self.block_size as f64) * c;
            return bad(format!(
                "model: n_layer {}, n_embd {}, block_size {} and vocab_size {} make about {approx:.2e} parameters, more than a 64-bit machine can address; use a smaller model",
                self.n_layer, self.n_embd, self.block_size, self.vocab_size
            ));
        }
        Ok(())
    }

    /// Number of trainable parameters (with the unpadded vocabulary, wte counted once);
    /// saturates at `usize::MAX` for sizes [`GptConfig::validate`] refuses.
    pub fn num_params(&self) -> usize {
        self.params_with_vocab(self.vocab_size as u64)
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(usize::MAX)
    }

    /// Parameters with `vocab` rows of `wte`, in checked arithmetic (None on overflow).
    fn params_with_vocab(&self, vocab: u64) -> Option<u64> {
        let c = self.n_embd as u64;
        // ln_1, c_attn, c_proj, ln_2, c_fc, mlp c_proj: 12·c² weights and 13·c biases/gains.
        let per_layer = c.checked_mul(c)?.checked_mul(12)?.checked_add(13 * c)?;
        vocab
            .checked_mul(c)?
            .checked_add((self.block_size as u64).checked_mul(c)?)?
            .checked_add((self.n_layer as u64).checked_mul(per_layer)?)?
            .checked_add(2 * c)
    }

    /// Parameters as the training graph holds them (vocabulary padded to [`VOCAB_PAD`]).
    fn padded_params(&self) -> Option<u64> {
        let vp = (self.vocab_size as u64).checked_next_multiple_of(VOCAB_PAD as u64)?;
        self.params_with_vocab(vp)
    }

    /// Host bytes that holding this model's weights takes at least: 4 per parameter (f32)
    /// plus [`BOOKKEEPING_BYTES_PER_LAYER`] per block. None beyond 2^64.
    pub fn weight_bytes(&self) -> Option<u64> {
        self.params_with_vocab(self.vocab_size as u64)?
            .checked_mul(4)?
            .checked_add((self.n_layer as u64).checked_mul(BOOKKEEPING_BYTES_PER_LAYER)?)
    }

    /// Checks that this machine can hold the model's weights, before any is read
    /// (a model directory's config.json).
    pub fn check_weights_fit(&self) -> Result<()> {
        memory::check(
            &format!(
                "a model of {} layers, n_embd {}, n_positions {} and vocab_size {} ({} parameters)",
                self.n_layer,
                self.n_embd,
                self.block_size,
                self.vocab_size,
                self.num_params()
            ),
            self.weight_bytes(),
            "this config.json describes a model too large for this machine",
        )
    }

    /// Checks, before a graph for batches of `batch` × `seq_len` tokens is built, that
    /// every tensor size the graph builder forms fits in 64 bits (in bytes) and that this
    /// machine can hold the graph's bookkeeping. The planner checks its own sums, and the
    /// arena is checked where a backend allocates it (the planner knows its size).
    pub fn check_graph(&self, batch: usize, seq_len: usize) -> Result<()> {
        let too_big = || {
            Error::Config(format!(
                "a batch of {batch} sequences of {seq_len} tokens for a model of n_embd {} and vocab_size {} would need more than 2^64 bytes; lower the batch size or the sequence length",
                self.n_embd, self.vocab_size
            ))
        };
        let n = (batch as u64)
            .checked_mul(seq_len as u64)
            .ok_or_else(too_big)?;
        let vp = self.padded_vocab() as u64;
        // The widest activations: the logits (n, vp) and the MLP's hidden layer (n, 4c);
        // every other one (attention's (b, heads, t) statistics included) is narrower.
        for width in [vp, 4 * self.n_embd as u64] {
            n.checked_mul(width)
                .and_then(|e| e.checked_mul(4))
                .ok_or_else(too_big)?;
        }
        memory::check(
            &format!("the graph of a {}-layer model", self.n_layer),
            (self.n_layer as u64).checked_mul(BOOKKEEPING_BYTES_PER_LAYER),
            "use fewer layers (model.n_layer)",
        )
    }
}
