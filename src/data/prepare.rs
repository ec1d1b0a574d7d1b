//! The `prepare` pipeline: text files → cleaned documents → tokenizer → train/val/test
//! split by document → token shards (llm.c layout) + `tokenizer.json` + `manifest.json`.
//!
//! Memory stays bounded whatever the corpus size: documents stream from disk one at a time
//! and are encoded in batches of about `batch_bytes`; the only state that grows is the
//! de-duplication set (16 bytes per distinct document). BPE training reads a sample of at
//! most `bpe_sample_bytes` of training text.
//!
//! Everything is written into a staging folder inside `out` and moved into place only when
//! complete, manifest last: a run that fails or is interrupted before that leaves the
//! previous data set in `out` untouched, and a data set without its manifest is not one.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::clean::{CleanOptions, CleanStats, Cleaner};
use super::shard::{ShardInfo, ShardWriter, TokenWidth};
use super::source::{self, SourceFile, SourceOptions, SourceStats};
use super::tokenizer::Tokenizer;
use crate::error::{Error, Result};
use crate::progress::{Progress, Unit};

/// Which tokenizer to use.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenizerChoice {
    /// GPT-2's own (50,257 tokens), built in.
    Gpt2,
    /// A byte-level BPE trained on the corpus's training split.
    Bpe { vocab_size: usize },
    /// An existing `tokenizer.json`.
    File(PathBuf),
}

impl TokenizerChoice {
    /// Parses `gpt2`, `bpe` (with `vocab_size`) or a path to a `tokenizer.json`.
    pub fn parse(text: &str, vocab_size: usize) -> Self {
        match text {
            "gpt2" => TokenizerChoice::Gpt2,
            "bpe" => TokenizerChoice::Bpe { vocab_size },
            path => TokenizerChoice::File(PathBuf::from(path)),
        }
    }
}

/// Everything `prepare` needs to know.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrepareOptions {
    pub inputs: Vec<PathBuf>,
    pub tokenizer: TokenizerChoice,
    pub val_fraction: f64,
    pub test_fraction: f64,
    /// Tokens per shard file.
    pub shard_tokens: u64,
    pub source: SourceOptions,
    pub clean: CleanOptions,
    /// At most this much training text is used to train a BPE tokenizer.
    pub bpe_sample_bytes: usize,
    /// Documents are encoded in parallel in batches of about this many bytes.
    pub batch_bytes: usize,
}

impl Default for PrepareOptions {
    fn default() -> Self {
        PrepareOptions {
            inputs: Vec::new(),
            tokenizer: TokenizerChoice::Bpe { vocab_size: 2048 },
            val_fraction: 0.1,
            test_fraction: 0.05,
            shard_tokens: 100_000_000,
            source: SourceOptions::default(),
            clean: CleanOptions::default(),
            bpe_sample_bytes: 256 << 20,
            batch_bytes: 8 << 20,
        }
    }
}

/// The three splits, in manifest order.
pub const SPLITS: [&str; 3] = ["train", "val", "test"];

/// One split in the manifest.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SplitManifest {
    pub documents: u64,
    pub tokens: u64,
    pub shards: Vec<ShardInfo>,
}

/// The tokenizer in the manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenizerManifest {
    pub kind: String,
    pub vocab_size: usize,
    pub eot: u32,
    pub sha256: String,
}

/// `manifest.json`: what a prepared data set holds and how it was made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub token_width: TokenWidth,
    pub tokenizer: TokenizerManifest,
    pub splits: BTreeMap<String, SplitManifest>,
    pub sources: SourceStats,
    pub cleaning: CleanStats,
    pub options: PrepareOptions,
    /// Bytes of text read (uncompressed) and seconds taken, in all and for building the
    /// tokenizer (BPE training with its sampling pass; loading otherwise).
    pub text_bytes: u64,
    pub seconds: f64,
    pub tokenizer_seconds: f64,
}

pub const MANIFEST_FORMAT: &str = "smelt-shards-v1";

impl Manifest {
    /// Reads `DIR/manifest.json`; an error if there is none.
    pub fn load(dir: &Path) -> Result<Self> {
        Self::read(dir)?.ok_or_else(|| {
            Error::Data(format!(
                "{}: no such file; is {} a data set made by `prepare`?",
                dir.join("manifest.json").display(),
                dir.display()
            ))
        })
    }

    /// Reads `DIR/manifest.json` if there is one (`None` when the file does not exist).
    /// Any manifest that is there must parse and be consistent (format, end-of-text id,
    /// shard names, token totals): a damaged one is an error, never taken for no manifest.
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join("manifest.json");
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let damaged = |what: String| {
            Error::Data(format!(
                "{}: {what}; prepare the data set again (or, for a folder of llm.c shards, remove manifest.json)",
                path.display()
            ))
        };
        let m: Manifest = serde_json::from_str(&text)
            .map_err(|e| damaged(format!("not a valid manifest ({e})")))?;
        m.check().map_err(damaged)?;
        Ok(Some(m))
    }

    /// What a manifest must hold to describe a data set: our format, an end-of-text id
    /// inside the vocabulary, shard names that are plain file names (nothing outside the
    /// folder), and per split a token count equal to its shards'.
    fn check(&self) -> std::result::Result<(), String> {
        if self.format != MANIFEST_FORMAT {
            return Err(format!("format '{}' is not {MANIFEST_FORMAT}", self.format));
        }
        let t = &self.tokenizer;
        if t.eot as usize >= t.vocab_size {
            return Err(format!(
                "tokenizer.eot {} is not below tokenizer.vocab_size {}",
                t.eot, t.vocab_size
            ));
        }
        for (name, split) in &self.splits {
            for shard in &split.shards {
                let plain =
                    Path::new(&shard.file).file_name() == Some(std::ffi::OsStr::new(&shard.file));
                if !plain || shard.file.is_empty() {
                    return Err(format!(
                        "split {name}: shard '{}' is not a file name inside the data set",
                        shard.file
                    ));
                }
            }
            let sum: u64 = split.shards.iter().map(|s| s.num_tokens).sum();
            if sum != split.tokens {
                return Err(format!(
                    "split {name} records {} tokens but its shards record {sum}",
                    split.tokens
                ));
            }
        }
        Ok(())
    }

    /// Paths of a split's shards inside `dir`.
    pub fn shard_paths(&self, dir: &Path, split: &str) -> Vec<PathBuf> {
        self.splits
            .get(split)
            .map(|s| s.shards.iter().map(|sh| dir.join(&sh.file)).collect())
            .unwrap_or_default()
    }
}

/// Which split (0 train, 1 val, 2 test) a document goes to, from the hash of its content
/// alone ([`document_hash`]): the same corpus always gives the same split, whatever the
/// order of files or the machine.
pub fn split_of(hash: u64, val_fraction: f64, test_fraction: f64) -> usize {
    let u = (hash >> 11) as f64 / (1u64 << 53) as f64;
    if u < test_fraction {
        2
    } else if u < test_fraction + val_fraction {
        1
    } else {
        0
    }
}

/// Streams every cleaned document of the corpus to `sink` with its split, reporting bytes.
fn for_each_document(
    files: &[SourceFile],
    opts: &PrepareOptions,
    progress: &mut Progress,
    sources: &mut SourceStats,
    cleaner: &mut Cleaner,
    sink: &mut dyn FnMut(usize, String) -> Result<bool>,
) -> Result<()> {
    let mut done_bytes = 0u64;
    for file in files {
        let mut stop = false;
        let status = format!("{}", file.path.display());
        source::read_documents(
            file,
            &opts.source,
            sources,
            &mut |n| {
                done_bytes += n;
                progress.set(done_bytes, &status);
            },
            &mut |raw| {
                if stop {
                    return Ok(());
                }
                if let Some((text, hash)) = cleaner.clean_hashed(&raw) {
                    let split = split_of(hash, opts.val_fraction, opts.test_fraction);
                    stop = !sink(split, text)?;
                }
                Ok(())
            },
        )?;
        if stop {
            break;
        }
    }
    Ok(())
}

/// Shards of one split, rolled over every `shard_tokens`.
struct SplitWriter {
    name: &'static str,
    dir: PathBuf,
    width: TokenWidth,
    shard_tokens: u64,
    current: Option<ShardWriter>,
    done: SplitManifest,
}

impl SplitWriter {
    fn write(&mut self, mut tokens: &[u32]) -> Result<()> {
        while !tokens.is_empty() {
            if self.current.is_none() {
                let file = format!("{}_{:06}.bin", self.name, self.done.shards.len());
                self.current = Some(ShardWriter::create(&self.dir.join(file), self.width)?);
            }
            let writer = self.current.as_mut().expect("just created");
            let room = (self.shard_tokens - writer.num_tokens()) as usize;
            let (now, later) = tokens.split_at(room.min(tokens.len()));
            writer.write_tokens(now)?;
            self.done.tokens += now.len() as u64;
            tokens = later;
            if writer.num_tokens() >= self.shard_tokens {
                self.close_shard()?;
            }
        }
        Ok(())
    }

    fn close_shard(&mut self) -> Result<()> {
        if let Some(writer) = self.current.take() {
            self.done.shards.push(writer.finish()?);
        }
        Ok(())
    }
}

/// Runs the pipeline into `out`. `live` enables terminal progress bars.
pub fn prepare(opts: &PrepareOptions, out: &Path, live: bool) -> Result<Manifest> {
    let started = Instant::now();
    if !(0.0..1.0).contains(&(opts.val_fraction + opts.test_fraction))
        || opts.val_fraction < 0.0
        || opts.test_fraction < 0.0
    {
        return Err(Error::Config(
            "--val-fraction and --test-fraction must be >= 0 and sum to less than 1".into(),
        ));
    }
    if opts.shard_tokens == 0 {
        return Err(Error::Config("--shard-tokens must be at least 1".into()));
    }
    let files = source::discover(&opts.inputs)?;
    let total_bytes: u64 = files.iter().map(|f| f.size).sum();

    // Tokenizer.
    let tokenizer_started = Instant::now();
    let tokenizer = match &opts.tokenizer {
        TokenizerChoice::Gpt2 => Tokenizer::gpt2()?,
        TokenizerChoice::File(path) => Tokenizer::load(path)?,
        TokenizerChoice::Bpe { vocab_size } => {
            let mut progress = Progress::new("bpe sample", total_bytes, Unit::Bytes, live);
            let (mut sample, mut sample_bytes) = (Vec::new(), 0usize);
            let mut cleaner = Cleaner::new(opts.clean.clone());
            let mut sources = SourceStats::default();
            for_each_document(
                &files,
                opts,
                &mut progress,
                &mut sources,
                &mut cleaner,
                &mut |split, text| {
                    if split == 0 {
                        sample_bytes += text.len();
                        sample.push(text);
                    }
                    Ok(sample_bytes < opts.bpe_sample_bytes)
                },
            )?;
            progress.finish();
            if cleaner.stats().kept == 0 {
                return Err(empty_corpus(&sources, cleaner.stats(), opts));
            }
            if sample.is_empty() {
                return Err(Error::Data(
                    "no training documents to train the BPE tokenizer on (after cleaning)".into(),
                ));
            }
            let t = Instant::now();
            let tokenizer = Tokenizer::train(sample.iter(), *vocab_size)?;
            eprintln!(
                "prepare: trained BPE tokenizer ({} tokens) on {:.1} MB in {:.1}s",
                tokenizer.vocab_size(),
                sample_bytes as f64 / 1e6,
                t.elapsed().as_secs_f64()
            );
            tokenizer
        }
    };
    let tokenizer_seconds = tokenizer_started.elapsed().as_secs_f64();
    let width = TokenWidth::for_vocab(tokenizer.vocab_size());

    // Staging folder: complete files move into `out` only at the end.
    fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let staging = out.join(format!(".prepare-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
    let result = encode_all(opts, &files, total_bytes, &tokenizer, width, &staging, live);
    let (splits, sources, cleaning) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
    };

    let manifest = Manifest {
        format: MANIFEST_FORMAT.into(),
        token_width: width,
        tokenizer: TokenizerManifest {
            kind: tokenizer.kind().to_string(),
            vocab_size: tokenizer.vocab_size(),
            eot: tokenizer.eot(),
            sha256: tokenizer.sha256()?,
        },
        splits,
        text_bytes: sources.bytes,
        sources,
        cleaning,
        options: opts.clone(),
        seconds: started.elapsed().as_secs_f64(),
        tokenizer_seconds,
    };
    publish(out, &staging, &tokenizer, &manifest)?;
    Ok(manifest)
}

fn empty_corpus(sources: &SourceStats, cleaning: &CleanStats, opts: &PrepareOptions) -> Error {
    Error::Data(format!(
        "the corpus is empty after cleaning: {} documents read, {} shorter than {} characters (--min-chars), {} duplicates",
        sources.documents, cleaning.dropped_short, opts.clean.min_chars, cleaning.dropped_duplicate
    ))
}

type Encoded = (BTreeMap<String, SplitManifest>, SourceStats, CleanStats);

/// The main pass: clean, split, encode in parallel batches, write shards into `staging`.
fn encode_all(
    opts: &PrepareOptions,
    files: &[SourceFile],
    total_bytes: u64,
    tokenizer: &Tokenizer,
    width: TokenWidth,
    staging: &Path,
    live: bool,
) -> Result<Encoded> {
    let mut writers: Vec<SplitWriter> = SPLITS
        .iter()
        .map(|name| SplitWriter {
            name,
            dir: staging.to_path_buf(),
            width,
            shard_tokens: opts.shard_tokens,
            current: None,
            done: SplitManifest::default(),
        })
        .collect();
    let eot = tokenizer.eot();
    let flush = |batch: &mut Vec<(usize, String)>, writers: &mut [SplitWriter]| -> Result<()> {
        let (splits, docs): (Vec<usize>, Vec<String>) = batch.drain(..).unzip();
        let encoded = tokenizer.encode_batch(&docs)?;
        let mut buffer = Vec::new();
        for (split, ids) in splits.into_iter().zip(encoded) {
            // As llm.c: every document starts with <|endoftext|>.
            buffer.clear();
            buffer.push(eot);
            buffer.extend_from_slice(&ids);
            writers[split].write(&buffer)?;
            writers[split].done.documents += 1;
        }
        Ok(())
    };

    let mut progress = Progress::new("prepare", total_bytes, Unit::Bytes, live);
    let mut sources = SourceStats::default();
    let mut cleaner = Cleaner::new(opts.clean.clone());
    let (mut batch, mut batch_bytes) = (Vec::new(), 0usize);
    for_each_document(
        files,
        opts,
        &mut progress,
        &mut sources,
        &mut cleaner,
        &mut |split, text| {
            batch_bytes += text.len();
            batch.push((split, text));
            if batch_bytes >= opts.batch_bytes {
                flush(&mut batch, &mut writers)?;
                batch_bytes = 0;
            }
            Ok(true)
        },
    )?;
    flush(&mut batch, &mut writers)?;
    progress.finish();
    let cleaning = cleaner.stats().clone();
    if cleaning.kept == 0 {
        return Err(empty_corpus(&sources, &cleaning, opts));
    }
    let mut splits = BTreeMap::new();
    for mut w in writers {
        w.close_shard()?;
        splits.insert(w.name.to_string(), w.done);
    }
    Ok((splits, sources, cleaning))
}

/// Moves the staged shards and tokenizer into `out`, removes the files of any previous data
/// set there, and writes the manifest last.
fn publish(out: &Path, staging: &Path, tokenizer: &Tokenizer, manifest: &Manifest) -> Result<()> {
    tokenizer.save(&staging.join("tokenizer.json"))?;
    let _ = fs::remove_file(out.join("manifest.json"));
    for entry in fs::read_dir(out).map_err(|e| Error::io(out, e))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_shard =
            SPLITS.iter().any(|s| name.starts_with(&format!("{s}_"))) && name.ends_with(".bin");
        if is_shard {
            fs::remove_file(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
        }
    }
    for entry in fs::read_dir(staging)
        .map_err(|e| Error::io(staging, e))?
        .flatten()
    {
        let to = out.join(entry.file_name());
        fs::rename(entry.path(), &to).map_err(|e| Error::io(&to, e))?;
    }
    fs::remove_dir(staging).map_err(|e| Error::io(staging, e))?;
    let json = serde_json::to_vec_pretty(manifest).expect("manifest serializes");
    let tmp = out.join("manifest.json.tmp");
    fs::write(&tmp, json).map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, out.join("manifest.json")).map_err(|e| Error::io(out.join("manifest.json"), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::clean::document_hash;

    #[test]
    fn split_is_by_content_and_follows_the_fractions() {
        let docs: Vec<String> = (0..20000).map(|i| format!("document number {i}")).collect();
        let mut counts = [0usize; 3];
        for d in &docs {
            counts[split_of(document_hash(d), 0.1, 0.05)] += 1;
        }
        assert!(
            (counts[1] as f64 / 20000.0 - 0.1).abs() < 0.01,
            "{counts:?}"
        );
        assert!(
            (counts[2] as f64 / 20000.0 - 0.05).abs() < 0.01,
            "{counts:?}"
        );
        let h = document_hash("same text");
        assert_eq!(split_of(h, 0.1, 0.05), split_of(h, 0.1, 0.05));
    }
}
