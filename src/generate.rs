//! Text generation by sampling, one token at a time.
//!
//! This version recomputes the whole window for every new token through an inference graph
//! of batch 1; a KV cache (generation at O(context) per token) is the next step.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::Gpt;
use crate::rng::Rng;

/// How to pick each next token.
#[derive(Clone, Copy, Debug)]
pub struct SampleOptions {
    pub max_new_tokens: usize,
    /// 0 means greedy (always the most likely token).
    pub temperature: f32,
    /// Sample only among the k most likely tokens; 0 means all.
    pub top_k: usize,
    pub seed: u64,
}

/// Picks a token from one row of logits (only the first `vocab` entries are real).
pub fn pick_token(logits: &[f32], vocab: usize, opts: &SampleOptions, rng: &mut Rng) -> u32 {
    let logits = &logits[..vocab];
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, &x)| {
                if x > best.1 {
                    (i, x)
                } else {
                    best
                }
            })
            .0 as u32
    };
    if opts.temperature <= 0.0 {
        return argmax();
    }
    let mut order: Vec<u32> = (0..vocab as u32).collect();
    if opts.top_k > 0 && opts.top_k < vocab {
        order.select_nth_unstable_by(opts.top_k - 1, |&a, &b| {
            logits[b as usize].total_cmp(&logits[a as usize])
        });
        order.truncate(opts.top_k);
    }
    let max = order
        .iter()
        .map(|&i| logits[i as usize])
        .fold(f32::NEG_INFINITY, f32::max);
    let weights: Vec<f64> = order
        .iter()
        .map(|&i| (((logits[i as usize] - max) / opts.temperature) as f64).exp())
        .collect();
    let mut r = rng.uniform() * weights.iter().sum::<f64>();
    for (&i, &w) in order.iter().zip(&weights) {
        r -= w;
        if r <= 0.0 {
            return i;
        }
    }
    *order.last().unwrap_or(&0)
}

/// Continues `prompt` by up to `max_new_tokens` tokens; calls `on_token` for each as it is
/// produced, and stops early at `stop` (which is not emitted) if given.
pub fn sample<B: Backend>(
    model: &mut Gpt<B>,
    prompt: &[u32],
    opts: &SampleOptions,
    stop: Option<u32>,
    mut on_token: impl FnMut(u32),
) -> Result<Vec<u32>> {
    if model.batch != 1 {
        return Err(Error::Config(
            "generation needs a model built with batch 1".into(),
        ));
    }
    if prompt.is_empty() {
        return Err(Error::Data(
            "the prompt is empty; give at least one token".into(),
        ));
    }
    let (t, vp, vocab) = (
        model.seq_len,
        model.config.padded_vocab(),
        model.config.vocab_size,
    );
    let mut rng = Rng::new(opts.seed);
    let mut context = prompt.to_vec();
    let mut generated = Vec::new();
    let mut window = vec![0u32; t];
    for _ in 0..opts.max_new_tokens {
        let start = context.len().saturating_sub(t);
        let live = &context[start..];
        window[..live.len()].copy_from_slice(live);
        window[live.len()..].fill(0); // causal attention: padding after the live tokens is never seen
        model.set_batch(&window, None)?;
        model.forward()?;
        let logits = model.logits()?;
        let row = &logits[(live.len() - 1) * vp..live.len() * vp];
        let next = pick_token(row, vocab, opts, &mut rng);
        if Some(next) == stop {
            break;
        }
        on_token(next);
        generated.push(next);
        context.push(next);
    }
    Ok(generated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_and_top_k_pick_from_the_right_set() {
        let logits = [0.1, 3.0, 2.9, -1.0, 100.0];
        let greedy = SampleOptions {
            max_new_tokens: 1,
            temperature: 0.0,
            top_k: 0,
            seed: 1,
        };
        let mut rng = Rng::new(3);
        assert_eq!(pick_token(&logits, 4, &greedy, &mut rng), 1); // column 4 is padding
        let top2 = SampleOptions {
            temperature: 1.0,
            top_k: 2,
            ..greedy
        };
        for _ in 0..200 {
            let t = pick_token(&logits, 4, &top2, &mut rng);
            assert!(t == 1 || t == 2);
        }
    }
}
