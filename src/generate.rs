//! Text generation by sampling, one token at a time.
//!
//! [`sample`] recomputes the whole window for every new token through an inference graph of
//! batch 1 (the reference); [`crate::infer::KvModel`] generates at O(context) per token with a
//! KV cache, picking tokens with the same [`pick_token`] / [`pick_token_top_p`].

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

/// A sampling setting out of its range, as sampling sees it: in f32.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BadSampling {
    /// Not 0 (greedy) or a positive finite number.
    Temperature(f32),
    /// Not in (0, 1].
    TopP(f32),
}

impl BadSampling {
    /// What the setting must be, e.g. "must be in (0, 1]"; callers name the setting their
    /// way (a JSON field, a flag) and show the value as it was given.
    pub fn rule(&self) -> &'static str {
        match self {
            BadSampling::Temperature(_) => "must be 0 (greedy) or a positive number",
            BadSampling::TopP(_) => "must be in (0, 1]",
        }
    }

    /// The value refused (as f32).
    pub fn value(&self) -> f32 {
        match *self {
            BadSampling::Temperature(x) | BadSampling::TopP(x) => x,
        }
    }
}

impl std::fmt::Display for BadSampling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadSampling::Temperature(t) => write!(f, "temperature {}, not {t}", self.rule()),
            BadSampling::TopP(p) => write!(f, "top_p {}, not {p}", self.rule()),
        }
    }
}

/// Checks temperature and top-p in the type sampling uses (f32), so that a value that was
/// valid in a wider type but not after the conversion (top-p 1e-300 is 0 in f32, a
/// temperature of 1e39 is infinite) is refused rather than failing later. Every caller (the
/// `generate` flags, the HTTP fields, the serve engine) converts first, then checks here.
pub fn check_sampling(temperature: f32, top_p: f32) -> std::result::Result<(), BadSampling> {
    if !(temperature.is_finite() && temperature >= 0.0) {
        return Err(BadSampling::Temperature(temperature));
    }
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(BadSampling::TopP(top_p));
    }
    Ok(())
}

/// Picks a token from one row of logits (only the first `vocab` entries are real).
pub fn pick_token(logits: &[f32], vocab: usize, opts: &SampleOptions, rng: &mut Rng) -> u32 {
    pick_token_top_p(logits, vocab, opts, 1.0, rng)
}

/// [`pick_token`] with nucleus sampling: after temperature and top-k, sample only among the
/// most likely tokens whose probabilities sum to at least `top_p` (1 or more: all of them).
/// Greedy (temperature 0) ignores `top_k` and `top_p`.
pub fn pick_token_top_p(
    logits: &[f32],
    vocab: usize,
    opts: &SampleOptions,
    top_p: f32,
    rng: &mut Rng,
) -> u32 {
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
    let mut weights: Vec<f64> = order
        .iter()
        .map(|&i| (((logits[i as usize] - max) / opts.temperature) as f64).exp())
        .collect();
    if top_p < 1.0 {
        // Most likely first (ties by id, so the result does not depend on the top-k order).
        let mut pairs: Vec<(u32, f64)> = order.iter().copied().zip(weights).collect();
        pairs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let total: f64 = pairs.iter().map(|p| p.1).sum();
        let (mut cum, mut keep) = (0.0, 0);
        for p in &pairs {
            cum += p.1;
            keep += 1;
            if cum >= top_p as f64 * total {
                break;
            }
        }
        pairs.truncate(keep.max(1));
        (order, weights) = pairs.into_iter().unzip();
    }
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

    #[test]
    fn sampling_settings_are_checked_in_f32() {
        assert_eq!(check_sampling(0.0, 1.0), Ok(()));
        assert_eq!(check_sampling(2.0, 1e-30), Ok(()));
        // Valid as f64, not as the f32 that sampling uses.
        assert_eq!(
            check_sampling(1.0, 1e-300_f64 as f32),
            Err(BadSampling::TopP(0.0))
        );
        assert!(matches!(
            check_sampling(1e39_f64 as f32, 1.0),
            Err(BadSampling::Temperature(t)) if t.is_infinite()
        ));
        assert!(check_sampling(-0.5, 1.0).is_err());
        assert!(check_sampling(f32::NAN, 1.0).is_err());
        assert!(check_sampling(1.0, 1.5).is_err());
        assert!(check_sampling(1.0, f32::NAN).is_err());
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        // Probabilities at temperature 1: about 0.64, 0.24, 0.09, 0.03.
        let logits = [3.0f32, 2.0, 1.0, 0.0];
        let opts = SampleOptions {
            max_new_tokens: 1,
            temperature: 1.0,
            top_k: 0,
            seed: 1,
        };
        let mut rng = Rng::new(5);
        let mut seen = [0usize; 4];
        for _ in 0..2000 {
            seen[pick_token_top_p(&logits, 4, &opts, 0.8, &mut rng) as usize] += 1;
        }
        assert!(seen[0] > 0 && seen[1] > 0, "{seen:?}");
        assert_eq!(seen[2] + seen[3], 0, "{seen:?}");
        for _ in 0..200 {
            assert_eq!(pick_token_top_p(&logits, 4, &opts, 0.1, &mut rng), 0);
        }
        // top_p 1 is plain sampling: every token shows up.
        let mut all = [0usize; 4];
        for _ in 0..4000 {
            all[pick_token_top_p(&logits, 4, &opts, 1.0, &mut rng) as usize] += 1;
        }
        assert!(all.iter().all(|&n| n > 0), "{all:?}");
    }
}
