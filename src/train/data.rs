//! The training run's data: a data set folder (opened by [`Dataset::open`], the rule every
//! binary follows), made on the fly (and cached) when the config names only a text corpus.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::config::{DataConfig, RunConfig};
use crate::data::batches::Batch;
use crate::data::loader::{self, Loader, Order};
use crate::data::prepare::{self, Manifest, PrepareOptions, TokenizerChoice};
use crate::data::{Dataset, Tokenizer};
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

/// The bundled corpus, beside this crate's sources.
const BUNDLED_CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/shakespeare");

/// The corpus to prepare: `corpus` as given, except that the default (a path relative to the
/// repository root) is taken from `bundled` when the working directory `cwd` has no such
/// folder, saying so. Error, saying what to pass instead, if neither has it. A corpus the
/// user chose is used as given (a missing one is reported by name when it is read).
fn resolve_corpus(corpus: &Path, cwd: &Path, bundled: &Path) -> Result<PathBuf> {
    if corpus != DataConfig::default().corpus || cwd.join(corpus).exists() {
        return Ok(corpus.to_path_buf());
    }
    if bundled.is_dir() {
        eprintln!(
            "data: {} is not in {}; using the bundled copy at {}",
            corpus.display(),
            cwd.display(),
            bundled.display()
        );
        return Ok(bundled.to_path_buf());
    }
    Err(Error::Config(format!(
        "the default corpus {} is not in {} (it is relative to the repository root) and the bundled copy ({}) is gone; pass --corpus PATH (text files to prepare) or --data DIR (a data set made by `prepare`)",
        corpus.display(),
        cwd.display(),
        bundled.display()
    )))
}

/// The options automatic preparation of `corpus` uses for this config.
fn prepare_options(cfg: &RunConfig, corpus: PathBuf) -> PrepareOptions {
    PrepareOptions {
        inputs: vec![corpus],
        tokenizer: TokenizerChoice::parse(&cfg.data.tokenizer, cfg.model.vocab_size),
        val_fraction: cfg.data.val_fraction,
        test_fraction: cfg.data.test_fraction,
        ..PrepareOptions::default()
    }
}

/// Prepares `data.corpus` into the cache unless an identical preparation is there already.
/// The cache is relative to the working directory; the log says where it is.
fn prepared_corpus(cfg: &RunConfig, live: bool) -> Result<PathBuf> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let corpus = resolve_corpus(&cfg.data.corpus, &cwd, Path::new(BUNDLED_CORPUS))?;
    let opts = prepare_options(cfg, corpus.clone());
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
    let shown = std::path::absolute(&dir).unwrap_or_else(|_| dir.clone());
    if let Ok(Some(m)) = Manifest::read(&dir) {
        if m.options == opts {
            eprintln!(
                "data: using {} (prepared earlier from {})",
                shown.display(),
                corpus.display()
            );
            return Ok(dir);
        }
    }
    eprintln!(
        "data: preparing {} into {}",
        corpus.display(),
        shown.display()
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

/// Opens (or first prepares) the data set and sets `cfg.model.vocab_size` to its tokenizer's.
pub fn open(cfg: &mut RunConfig, live: bool) -> Result<TrainData> {
    let dir = match &cfg.data.dir {
        Some(dir) => dir.clone(),
        None => prepared_corpus(cfg, live)?,
    };
    let dataset = Dataset::open(&dir)?;
    let tokenizer = dataset.tokenizer().clone();
    let train_set = dataset.split("train")?;
    let val_set = dataset.split("val")?;
    cfg.model.vocab_size = tokenizer.vocab_size();
    let t = &cfg.train;
    let (train_tokens, val_tokens) = (train_set.num_tokens(), val_set.num_tokens());
    let unigram_entropy = val_set.unigram_entropy()?;
    let val_batches =
        loader::sequential_batches(&val_set, t.batch_size, t.seq_len, t.eval_batches)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh empty folder under the system temp dir.
    fn empty_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("smelt-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_default_corpus_falls_back_to_the_bundled_copy_or_says_what_to_pass() {
        let default = DataConfig::default().corpus;
        let elsewhere = empty_dir("resolve-corpus");
        let bundled = Path::new(BUNDLED_CORPUS);
        // In the repository root the relative default is used as it is.
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        assert_eq!(resolve_corpus(&default, root, bundled).unwrap(), default);
        // Elsewhere, the bundled copy.
        assert_eq!(
            resolve_corpus(&default, &elsewhere, bundled).unwrap(),
            bundled
        );
        // Without a bundled copy (an installed binary): one line saying what to pass.
        let gone = elsewhere.join("no-bundled-copy");
        let msg = resolve_corpus(&default, &elsewhere, &gone)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("--corpus PATH") && msg.contains("--data DIR"),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "{msg}");
        // A corpus the user named is theirs, missing or not.
        let mine = Path::new("my/texts");
        assert_eq!(resolve_corpus(mine, &elsewhere, &gone).unwrap(), mine);
        let _ = std::fs::remove_dir_all(&elsewhere);
    }
}
