//! GPT-2 architecture settings.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

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
        Ok(())
    }

    /// Number of trainable parameters (with the unpadded vocabulary, wte counted once).
    pub fn num_params(&self) -> usize {
        let c = self.n_embd;
        let per_layer = 2 * c
            + (c * 3 * c + 3 * c)
            + (c * c + c)
            + 2 * c
            + (c * 4 * c + 4 * c)
            + (4 * c * c + c);
        self.vocab_size * c + self.block_size * c + self.n_layer * per_layer + 2 * c
    }
}
