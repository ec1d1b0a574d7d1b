//! Evaluation of a model: mean loss and perplexity on a held-out split of a prepared data set,
//! and generation tasks scored with BLEU, ROUGE and SQuAD F1 / exact match ([`crate::metrics`]).

use std::path::Path;

use serde::Serialize;

use crate::backend::Backend;
use crate::data::loader::{sequential_batches, ShardSet};
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
    /// Mean cross-entropy per token (nats).
    pub loss: f64,
    /// exp(loss).
    pub perplexity: f64,
    /// Tokens whose next token was predicted.
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

/// Mean loss over the split's consecutive (seq_len + 1)-token windows, `batch` at a time
/// (at most `max_batches` batches; 0 means all). The windows that do not fill a last batch
/// are left out.
pub fn split_loss<B: Backend>(
    backend: B,
    model: &HfModel,
    set: &ShardSet,
    batch: usize,
    seq_len: usize,
    max_batches: usize,
) -> Result<LossReport> {
    let mut gpt = Gpt::new(backend, model.config, batch, seq_len, true)?;
    gpt.load(&model.weights)?;
    let limit = if max_batches == 0 {
        usize::MAX
    } else {
        max_batches
    };
    let batches = sequential_batches(set, batch, seq_len, limit)?;
    if batches.is_empty() {
        return Err(Error::Data(format!(
            "the split has {} tokens: fewer than one batch of {batch} x {} tokens; lower --batch-size or --seq-len",
            set.num_tokens(),
            seq_len + 1
        )));
    }
    let mut sum = 0.0f64;
    for b in &batches {
        gpt.set_batch(&b.inputs, Some(&b.targets))?;
        sum += gpt.forward()? as f64;
    }
    let loss = sum / batches.len() as f64;
    Ok(LossReport {
        loss,
        perplexity: loss.exp(),
        tokens: (batches.len() * batch * seq_len) as u64,
    })
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
