//! Batches from a token stream: (B, T+1) windows split into inputs and next-token targets.

use crate::rng::Rng;

/// A stream of token ids, documents separated by `<|endoftext|>`.
pub struct TokenStream {
    pub tokens: Vec<u32>,
}

/// One batch: inputs and targets, each batch·seq_len ids, row-major (b, t).
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
}

impl TokenStream {
    pub fn new(tokens: Vec<u32>) -> Self {
        TokenStream { tokens }
    }

    /// Number of distinct window starts for sequences of `seq_len`.
    pub fn num_windows(&self, seq_len: usize) -> usize {
        self.tokens.len().saturating_sub(seq_len)
    }

    fn window(&self, start: usize, seq_len: usize, batch: &mut Batch) {
        let w = &self.tokens[start..start + seq_len + 1];
        batch.inputs.extend_from_slice(&w[..seq_len]);
        batch.targets.extend_from_slice(&w[1..]);
    }

    /// A training batch of windows at uniformly random positions.
    pub fn random_batch(&self, rng: &mut Rng, batch_size: usize, seq_len: usize) -> Batch {
        let mut batch = Batch {
            inputs: Vec::with_capacity(batch_size * seq_len),
            targets: Vec::with_capacity(batch_size * seq_len),
        };
        let n = self.num_windows(seq_len) as u64;
        for _ in 0..batch_size {
            self.window(rng.below(n) as usize, seq_len, &mut batch);
        }
        batch
    }

    /// `count` batches of non-overlapping windows from the start of the stream, the same on
    /// every call (for validation); fewer if the stream is short.
    pub fn sequential_batches(
        &self,
        batch_size: usize,
        seq_len: usize,
        count: usize,
    ) -> Vec<Batch> {
        let per_batch = batch_size * seq_len;
        let available = self.tokens.len().saturating_sub(1) / per_batch;
        (0..count.min(available))
            .map(|i| {
                let mut batch = Batch {
                    inputs: Vec::with_capacity(per_batch),
                    targets: Vec::with_capacity(per_batch),
                };
                for j in 0..batch_size {
                    self.window((i * batch_size + j) * seq_len, seq_len, &mut batch);
                }
                batch
            })
            .collect()
    }

    /// Entropy in nats of the stream's own token frequencies: the loss of the best model
    /// that ignores context.
    pub fn unigram_entropy(&self) -> f64 {
        let mut counts = std::collections::HashMap::<u32, u64>::new();
        for &t in &self.tokens {
            *counts.entry(t).or_default() += 1;
        }
        let n = self.tokens.len() as f64;
        counts
            .values()
            .map(|&c| {
                let p = c as f64 / n;
                -p * p.ln()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_inputs_shifted_by_one() {
        let s = TokenStream::new((0..100).collect());
        let mut rng = Rng::new(1);
        let b = s.random_batch(&mut rng, 3, 8);
        for row in 0..3 {
            for t in 0..8 {
                assert_eq!(b.targets[row * 8 + t], b.inputs[row * 8 + t] + 1);
            }
        }
        let val = s.sequential_batches(2, 8, 100);
        assert_eq!(val.len(), 6); // 99 usable / 16 per batch
        assert_eq!(val, s.sequential_batches(2, 8, 100));
        assert_eq!(val[1].inputs[0], 16);
    }

    #[test]
    fn unigram_entropy_of_uniform_stream() {
        let s = TokenStream::new((0..4).cycle().take(400).collect());
        assert!((s.unigram_entropy() - 4f64.ln()).abs() < 1e-12);
    }
}
