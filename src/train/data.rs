//! The training run's data: a prepared data set, made on the fly (and cached) when the
//! config names only a text corpus.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::config::RunConfig;
use crate::data::batches::Batch;
use crate::data::loader::{self, Loader, Order, ShardSet};
use crate::data::prepare::{self, Manifest, PrepareOptions, TokenizerChoice};
use crate::data::Tokenizer;
use crate::error::{Error, Result};

/// Everything the training loop reads.
pub struct TrainData {
    pub dir: PathBuf,
    pub tokenizer: Tokenizer,
    pub train: Loader,
    pub val_batches: Vec<Batch>,
    pub unigram_entropy: f64,
    /// The first line of the validation text, as a prompt for the sample.
    pub prompt: String,
    pub train_tokens: u64,
    pub val_tokens: u64,
}

/// The options automatic preparation uses for this config.
fn prepare_options(cfg: &RunConfig) -> PrepareOptions {
    PrepareOptions {
        inputs: vec![cfg.data.corpus.clone()],
        tokenizer: TokenizerChoice::parse(&cfg.data.tokenizer, cfg.model.vocab_size),
        val_fraction: cfg.data.val_fraction,
        test_fraction: cfg.data.test_fraction,
        ..PrepareOptions::default()
    }
}

/// Prepares `data.corpus` into the cache unless an identical preparation is there already.
fn prepared_corpus(cfg: &RunConfig, live: bool) -> Result<PathBuf> {
    let opts = prepare_options(cfg);
    let key = serde_json::to_vec(&opts).expect("options serialize");
    let hash: String = Sha256::digest(&key)[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let stem = cfg
        .data
        .corpus
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "corpus".into());
    let dir = cfg.data.cache.join(format!(
        "{stem}-{}-{hash}",
        cfg.data.tokenizer.replace(['/', '\\'], "_")
    ));
    if let Ok(m) = Manifest::load(&dir) {
        if m.options == opts {
            eprintln!(
                "data: using {} (prepared earlier from {})",
                dir.display(),
                cfg.data.corpus.display()
            );
            return Ok(dir);
        }
    }
    eprintln!(
        "data: preparing {} into {}",
        cfg.data.corpus.display(),
        dir.display()
    );
    let m = prepare::prepare(&opts, &dir, live)?;
    eprintln!(
        "data: {:.1} MB of text in {:.1}s ({:.1} MB/s)",
        m.text_bytes as f64 / 1e6,
        m.seconds,
        m.text_bytes as f64 / 1e6 / m.seconds.max(1e-9)
    );
    Ok(dir)
}

fn split_paths(m: &Manifest, dir: &Path, split: &str) -> Result<Vec<PathBuf>> {
    let paths = m.shard_paths(dir, split);
    if paths.is_empty() {
        return Err(Error::Data(format!(
            "data set {} has no {split} shards; prepare it with more documents or a larger --{split}-fraction",
            dir.display()
        )));
    }
    Ok(paths)
}

/// Shards in a folder without a manifest, named as llm.c's scripts name them
/// (`fineweb_train_000001.bin`, `tiny_shakespeare_val.bin`): `.bin` files whose name
/// contains `train` or `val`, sorted. Such data sets are GPT-2 tokenized.
fn llm_c_shards(dir: &Path) -> Option<(Vec<PathBuf>, Vec<PathBuf>)> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .collect();
    names.sort();
    let with = |word: &str| -> Vec<PathBuf> {
        names
            .iter()
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().contains(word))
            })
            .cloned()
            .collect()
    };
    let (train, val) = (with("train"), with("val"));
    (!train.is_empty() && !val.is_empty()).then_some((train, val))
}

/// Opens (or first prepares) the data set and sets `cfg.model.vocab_size` to its tokenizer's.
pub fn open(cfg: &mut RunConfig, live: bool) -> Result<TrainData> {
    let dir = match &cfg.data.dir {
        Some(dir) => dir.clone(),
        None => prepared_corpus(cfg, live)?,
    };
    let (tokenizer, train_paths, val_paths) = match Manifest::load(&dir) {
        Ok(manifest) => {
            let tokenizer = Tokenizer::load(&dir.join("tokenizer.json"))?;
            if tokenizer.vocab_size() != manifest.tokenizer.vocab_size {
                return Err(Error::Data(format!(
                    "{}: tokenizer.json has {} tokens but the manifest says {}",
                    dir.display(),
                    tokenizer.vocab_size(),
                    manifest.tokenizer.vocab_size
                )));
            }
            (
                tokenizer,
                split_paths(&manifest, &dir, "train")?,
                split_paths(&manifest, &dir, "val")?,
            )
        }
        Err(no_manifest) => match llm_c_shards(&dir) {
            Some((train, val)) => {
                eprintln!(
                    "data: {} has no manifest: reading its shards as llm.c's GPT-2 shards",
                    dir.display()
                );
                (Tokenizer::gpt2()?, train, val)
            }
            None => return Err(no_manifest),
        },
    };
    cfg.model.vocab_size = tokenizer.vocab_size();
    let t = &cfg.train;
    let train_set = ShardSet::open(&train_paths, Some(tokenizer.vocab_size()))?;
    let val_set = ShardSet::open(&val_paths, Some(tokenizer.vocab_size()))?;
    let (train_tokens, val_tokens) = (train_set.num_tokens(), val_set.num_tokens());
    let unigram_entropy = val_set.unigram_entropy();
    let val_batches = loader::sequential_batches(&val_set, t.batch_size, t.seq_len, t.eval_batches);
    if val_batches.is_empty() {
        return Err(Error::Data(format!(
            "the validation split of {} ({val_tokens} tokens) is smaller than one batch of {}x{}; lower batch_size or seq_len",
            dir.display(),
            t.batch_size,
            t.seq_len
        )));
    }
    // The sample's prompt: the first non-empty line of the validation text.
    let head: Vec<u32> = val_batches[0].inputs[..t.seq_len.min(64)]
        .iter()
        .copied()
        .filter(|&id| id != tokenizer.eot())
        .collect();
    let text = tokenizer.decode(&head)?;
    let prompt = text
        .lines()
        .map(str::trim_end)
        .find(|l| !l.trim().is_empty())
        .unwrap_or("The")
        .to_string();
    let train = Loader::new(
        train_set,
        t.batch_size,
        t.seq_len,
        Order::Shuffled { seed: t.seed },
    )?;
    Ok(TrainData {
        dir,
        tokenizer,
        train,
        val_batches,
        unigram_entropy,
        prompt,
        train_tokens,
        val_tokens,
    })
}
