//! Evaluation of a model: mean loss and perplexity on a held-out split of a prepared data set,
//! and generation tasks scored with BLEU, ROUGE and SQuAD F1 / exact match ([`crate::metrics`]).

use std::path::Path;

use serde::Serialize;

use crate::backend::Backend;
use crate::data::loader::ShardSet;
use crate::data::{Dataset, Tokenizer};
use crate::error::{Error, Result};
use crate::generate::{pick_token, SampleOptions};
use crate::infer::KvModel;
use crate::model::hf::HfModel;
use crate::model::Gpt;
use crate::rng::Rng;

/// The loss of a model on a split.
#[derive(Clone, Debug, Serialize)]
pub struct LossReport {
    /// Mean cross-entropy per predicted token (nats).
    pub loss: f64,
    /// exp(loss).
    pub perplexity: f64,
    /// Tokens whose next token was predicted: every token of the split but each shard's
    /// first (or the first `--max-batches` windows' worth).
    pub tokens: u64,
}

/// Opens a split of a data set folder ([`Dataset::open`]: made by `prepare`, or llm.c
/// shards, as `train --data` reads them), checking that the model's tokenizer tokenizes as
/// the data set's did.
pub fn open_split(data: &Path, split: &str, tokenizer: &Tokenizer) -> Result<ShardSet> {
    let dataset = Dataset::open(data)?;
    dataset.check_tokenizer(tokenizer, None)?;
    dataset.split(split)
}

/// A stretch of one shard whose tokens are predicted: inputs `start .. start + len`,
/// targets one token later.
#[derive(Clone, Copy, Debug)]
struct Window {
    shard: usize,
    start: usize,
    len: usize,
}

/// The split cut into windows that predict each of its tokens once (but each shard's first,
/// which nothing precedes): per shard, the loader's windows of `seq_len + 1` tokens with
/// stride `seq_len`, then one shorter window for the tokens left over.
fn windows(set: &ShardSet, seq_len: usize) -> impl Iterator<Item = Window> + '_ {
    set.shards().iter().enumerate().flat_map(move |(shard, s)| {
        let predicted = s.len().saturating_sub(1);
        (0..predicted).step_by(seq_len).map(move |start| Window {
            shard,
            start,
            len: seq_len.min(predicted - start),
        })
    })
}

/// Mean loss per token over every window of the split ([`windows`]), `batch` windows at a
/// time; with `max_batches` > 0, over the first `max_batches · batch` windows only. The
/// graph has no more rows than there are windows and is no longer than the longest; a batch
/// that does not fill it (the last, the shorter windows) is padded and scored from the
/// logits of its real positions only. A loss that is not finite is an error.
pub fn split_loss<B: Backend>(
    backend: B,
    model: &HfModel,
    set: &ShardSet,
    batch: usize,
    seq_len: usize,
    max_batches: usize,
) -> Result<LossReport> {
    if batch == 0 || seq_len == 0 {
        return Err(Error::Config(
            "the batch size and the sequence length must be at least 1".into(),
        ));
    }
    let limit = match max_batches {
        0 => usize::MAX,
        m => m.saturating_mul(batch),
    };
    let (count, longest) = windows(set, seq_len)
        .take(limit)
        .fold((0usize, 0usize), |(n, l), w| (n + 1, l.max(w.len)));
    if count == 0 {
        return Err(Error::Data(format!(
            "the split has {} tokens in {} shards: no token to predict (a shard needs at least 2)",
            set.num_tokens(),
            set.shards().len()
        )));
    }
    let rows = batch.min(count);
    let mut gpt = Gpt::new(backend, model.config, rows, longest, true)?;
    gpt.load(&model.weights)?;
    let mut total = Total::default();
    let mut pending = Vec::with_capacity(rows);
    for w in windows(set, seq_len).take(limit) {
        pending.push(w);
        if pending.len() == rows {
            score_batch(&mut gpt, set, &pending, &mut total)?;
            pending.clear();
        }
    }
    if !pending.is_empty() {
        score_batch(&mut gpt, set, &pending, &mut total)?;
    }
    let loss = total.nats / total.tokens as f64;
    Ok(LossReport {
        loss,
        perplexity: loss.exp(),
        tokens: total.tokens,
    })
}

/// Summed cross-entropy and the tokens it covers.
#[derive(Default)]
struct Total {
    nats: f64,
    tokens: u64,
}

/// Runs one batch of windows through the graph and adds their losses to `total`.
fn score_batch<B: Backend>(
    gpt: &mut Gpt<B>,
    set: &ShardSet,
    windows: &[Window],
    total: &mut Total,
) -> Result<()> {
    let (rows, cols) = (gpt.batch, gpt.seq_len);
    // Padding (token 0) only ever follows a window's real positions, which causal attention
    // keeps from seeing it, or fills rows of its own.
    let mut inputs = vec![0u32; rows * cols];
    let mut targets = vec![0u32; rows * cols];
    let mut tokens = Vec::with_capacity(cols + 1);
    for (r, w) in windows.iter().enumerate() {
        tokens.clear();
        set.shards()[w.shard].read_into(w.start, w.len + 1, &mut tokens)?;
        inputs[r * cols..r * cols + w.len].copy_from_slice(&tokens[..w.len]);
        targets[r * cols..r * cols + w.len].copy_from_slice(&tokens[1..]);
    }
    gpt.set_batch(&inputs, Some(&targets))?;
    let mean = gpt.forward()?;
    let full = windows.len() == rows && windows.iter().all(|w| w.len == cols);
    let (nats, count) = if full {
        // The graph's own loss: the mean over every position.
        let count = (rows * cols) as u64;
        (mean as f64 * count as f64, count)
    } else {
        let logits = gpt.logits()?;
        let (v, vp) = (gpt.config.vocab_size, gpt.config.padded_vocab());
        let mut nats = 0.0f64;
        let mut count = 0u64;
        for (r, w) in windows.iter().enumerate() {
            for p in 0..w.len {
                let i = r * cols + p;
                nats += cross_entropy(&logits[i * vp..i * vp + v], targets[i] as usize);
                count += 1;
            }
        }
        (nats, count)
    };
    if !nats.is_finite() {
        let w = windows[0];
        return Err(Error::Data(format!(
            "the model's loss is not finite ({nats}) on the {} windows from token {} of {}: its logits overflow f32; the model cannot be evaluated as it is",
            windows.len(),
            w.start,
            set.shards()[w.shard].path().display()
        )));
    }
    total.nats += nats;
    total.tokens += count;
    Ok(())
}

/// `-log softmax(logits)[target]`, in f64 (as the graph's loss, over the real vocabulary).
fn cross_entropy(logits: &[f32], target: usize) -> f64 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
    let sum: f64 = logits.iter().map(|&x| (x as f64 - max).exp()).sum();
    max + sum.ln() - logits[target] as f64
}

/// Greedy continuations of `prompts` (at most `max_new_tokens` tokens each, ending at the
/// tokenizer's end-of-text), decoded, on the CPU with a KV cache.
pub fn greedy_predictions(
    model: &HfModel,
    prompts: &[String],
    max_new_tokens: usize,
) -> Result<Vec<String>> {
    let mut kv = KvModel::new(model.config, &model.weights)?;
    let eot = model.tokenizer.eot();
    let vocab = model.config.vocab_size;
    prompts
        .iter()
        .map(|prompt| {
            let ids = model.tokenizer.encode(prompt)?;
            if ids.is_empty() {
                return Err(Error::Data("a prompt is empty".into()));
            }
            // Greedy, as `generate --temperature 0` chooses.
            let greedy = SampleOptions {
                max_new_tokens,
                temperature: 0.0,
                top_k: 0,
                seed: 0,
            };
            let mut rng = Rng::new(0);
            let pick = |logits: &[f32]| pick_token(logits, vocab, &greedy, &mut rng);
            let mut out = kv.generate(&ids, max_new_tokens, pick, |t| t != eot)?;
            if out.last() == Some(&eot) {
                out.pop();
            }
            model.tokenizer.decode(&out)
        })
        .collect()
}

/// Reads a JSON-lines file of objects with the string fields `a` and `b`; an error names the
/// line that lacks them.
pub fn read_pairs(path: &Path, a: &str, b: &str) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut pairs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |what: String| Error::Data(format!("{}:{}: {what}", path.display(), i + 1));
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(format!("not JSON: {e}")))?;
        let field = |name: &str| -> Result<String> {
            v.get(name)
                .and_then(|x| x.as_str())
                .map(str::to_string)
                .ok_or_else(|| bad(format!("needs a string field \"{name}\"")))
        };
        pairs.push((field(a)?, field(b)?));
    }
    if pairs.is_empty() {
        return Err(Error::Data(format!("{}: no records", path.display())));
    }
    Ok(pairs)
}
