//! The `prepare` pipeline: text files → documents in pieces → cleaned pieces → tokenizer →
//! train/val/test split by piece → token shards (llm.c layout) + `tokenizer.json` +
//! `manifest.json`.
//!
//! Memory stays bounded whatever the size of the corpus and of its documents: documents
//! stream from disk a piece (~16 KiB, [`crate::data::pieces`]) at a time and are encoded in
//! batches of about `batch_bytes`; the only state that grows is the de-duplication set (16
//! bytes per distinct piece). BPE training is fed the training pieces as they are read, at
//! most `bpe_sample_bytes` of them, and holds only its word counts.
//!
//! Each piece goes to a split by the hash of its text, so a corpus of one large file still
//! fills every split. In the shards, `<|endoftext|>` marks where the text does not go on:
//! it starts each document, and each piece whose predecessor in the document went to
//! another split (or was dropped as a duplicate); a piece that continues the piece written
//! just before it follows it directly, so the pieces of a document read as its whole text.
//!
//! Everything is written into a staging folder inside `out` and moved into place only when
//! complete, manifest last: a run that fails or is interrupted before that leaves the
//! previous data set in `out` untouched, and a data set without its manifest is not one.

use std::collections::BTreeMap;
use std::fs;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::clean::{CleanOptions, CleanPiece, CleanStats, Cleaner};
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
    /// Documents with at least one piece in this split.
    pub documents: u64,
    /// Pieces in this split.
    #[serde(default)]
    pub pieces: u64,
    pub tokens: u64,
    pub shards: Vec<ShardInfo>,
}

/// A split with fewer tokens than this is reported as tiny: 8 batches of 16 × 128 tokens,
/// what a default `train` run evaluates on.
pub const TINY_SPLIT_TOKENS: u64 = 8 * 16 * 128;

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
    /// What `prepare` warned about (empty or tiny splits), one line each.
    #[serde(default)]
    pub warnings: Vec<String>,
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

/// Which split (0 train, 1 val, 2 test) a piece goes to, from the hash of its content
/// alone ([`crate::data::clean::document_hash`]): the same corpus always gives the same
/// split, whatever the order of files or the machine.
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

/// Streams every cleaned piece of the corpus to `sink` with its split, reporting bytes;
/// `sink` returning `Break` stops the reading.
fn for_each_piece(
    files: &[SourceFile],
    opts: &PrepareOptions,
    progress: &mut Progress,
    sources: &mut SourceStats,
    cleaner: &mut Cleaner,
    sink: &mut dyn FnMut(usize, CleanPiece) -> Result<ControlFlow<()>>,
) -> Result<()> {
    let mut done_bytes = 0u64;
    for file in files {
        let mut flow = ControlFlow::Continue(());
        let status = format!("{}", file.path.display());
        source::read_pieces(
            file,
            &opts.source,
            sources,
            &mut |n| {
                done_bytes += n;
                progress.set(done_bytes, &status);
            },
            &mut |raw| {
                for piece in cleaner.push(&raw.text, raw.index, raw.last) {
                    let split = split_of(piece.hash, opts.val_fraction, opts.test_fraction);
                    flow = sink(split, piece)?;
                    if flow.is_break() {
                        break;
                    }
                }
                Ok(flow)
            },
        )?;
        if flow.is_break() {
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
    /// The last piece written, as (document, index).
    last_piece: Option<(u64, u64)>,
}

impl SplitWriter {
    /// Writes a piece's tokens, after `<|endoftext|>` unless the piece continues the one
    /// written just before it (the text goes on). So, as in llm.c's shards, every document
    /// starts with `<|endoftext|>`, and so does every place where the text jumps.
    fn write_piece(&mut self, document: u64, index: u64, ids: &[u32], eot: u32) -> Result<()> {
        let continues = index > 0 && self.last_piece == Some((document, index - 1));
        if !continues {
            self.write(&[eot])?;
        }
        self.write(ids)?;
        if self.last_piece.map(|(d, _)| d) != Some(document) {
            self.done.documents += 1;
        }
        self.done.pieces += 1;
        self.last_piece = Some((document, index));
        Ok(())
    }

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
            train_bpe(&files, opts, total_bytes, *vocab_size, live)?
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
    let warnings = split_warnings(&splits, &sources, opts);
    for w in &warnings {
        eprintln!("warning: {w}");
    }

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
        warnings,
    };
    publish(out, &staging, &tokenizer, &manifest)?;
    Ok(manifest)
}

/// Trains the BPE tokenizer on the training pieces, at most `bpe_sample_bytes` of them. A
/// thread reads and cleans them into a short queue that the trainer consumes, so neither a
/// sample nor a whole document is ever held: only the trainer's word counts grow.
fn train_bpe(
    files: &[SourceFile],
    opts: &PrepareOptions,
    total_bytes: u64,
    vocab_size: usize,
    live: bool,
) -> Result<Tokenizer> {
    let started = Instant::now();
    let (queue, pieces) = mpsc::sync_channel::<String>(64);
    let (trained, read) = std::thread::scope(|scope| {
        let reader = scope.spawn(move || -> Result<(SourceStats, CleanStats, usize)> {
            let mut progress = Progress::new("bpe sample", total_bytes, Unit::Bytes, live);
            let mut cleaner = Cleaner::new(opts.clean.clone());
            let mut sources = SourceStats::default();
            let mut sample_bytes = 0usize;
            for_each_piece(
                files,
                opts,
                &mut progress,
                &mut sources,
                &mut cleaner,
                &mut |split, piece| {
                    if split != 0 {
                        return Ok(ControlFlow::Continue(()));
                    }
                    sample_bytes += piece.text.len();
                    // A closed queue: the trainer has stopped (and says why).
                    if queue.send(piece.text).is_err() || sample_bytes >= opts.bpe_sample_bytes {
                        return Ok(ControlFlow::Break(()));
                    }
                    Ok(ControlFlow::Continue(()))
                },
            )?;
            progress.finish();
            Ok((sources, cleaner.stats().clone(), sample_bytes))
        });
        let trained = Tokenizer::train(pieces.into_iter(), vocab_size);
        (trained, reader.join())
    });
    let (sources, cleaning, sample_bytes) = match read {
        Ok(read) => read?,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    if cleaning.kept == 0 {
        return Err(empty_corpus(&sources, &cleaning, opts));
    }
    if sample_bytes == 0 {
        return Err(Error::Data(
            "no training documents to train the BPE tokenizer on (after cleaning)".into(),
        ));
    }
    let tokenizer = trained?;
    eprintln!(
        "prepare: trained BPE tokenizer ({} tokens) on {:.1} MB in {:.1}s",
        tokenizer.vocab_size(),
        sample_bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    Ok(tokenizer)
}

/// One line per split that is empty or has fewer than [`TINY_SPLIT_TOKENS`] tokens, among
/// the splits given a share of the corpus.
fn split_warnings(
    splits: &BTreeMap<String, SplitManifest>,
    sources: &SourceStats,
    opts: &PrepareOptions,
) -> Vec<String> {
    let pieces: u64 = splits.values().map(|s| s.pieces).sum();
    let shares = [
        1.0 - opts.val_fraction - opts.test_fraction,
        opts.val_fraction,
        opts.test_fraction,
    ];
    // Cutting documents finer helps only where some document is more than one piece.
    let finer = if sources.pieces > sources.documents {
        ", or a smaller --piece-kb to cut documents into more pieces"
    } else {
        ""
    };
    let mut warnings = Vec::new();
    for (name, share) in SPLITS.into_iter().zip(shares) {
        let Some(split) = splits.get(name).filter(|_| share > 0.0) else {
            continue;
        };
        let advice = match name {
            "train" => "lower --val-fraction and --test-fraction".to_string(),
            _ => format!("a larger --{name}-fraction"),
        };
        if split.tokens == 0 {
            warnings.push(format!(
                "the {name} split is empty: none of the {pieces} pieces of text fell in its share ({share:.3}); {advice}{finer}"
            ));
        } else if split.tokens < TINY_SPLIT_TOKENS {
            warnings.push(format!(
                "the {name} split is tiny: {} tokens in {} pieces, fewer than {TINY_SPLIT_TOKENS} (8 batches of 16 x 128, what `train` evaluates by default); {advice}{finer}",
                split.tokens, split.pieces
            ));
        }
    }
    warnings
}

fn empty_corpus(sources: &SourceStats, cleaning: &CleanStats, opts: &PrepareOptions) -> Error {
    Error::Data(format!(
        "the corpus is empty after cleaning: {} documents read, {} shorter than {} characters (--min-chars), {} duplicate pieces",
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
            last_piece: None,
        })
        .collect();
    let eot = tokenizer.eot();
    let flush = |batch: &mut Vec<(usize, CleanPiece)>, writers: &mut [SplitWriter]| -> Result<()> {
        let (places, texts): (Vec<_>, Vec<String>) = batch
            .drain(..)
            .map(|(split, p)| ((split, p.document, p.index), p.text))
            .unzip();
        let encoded = tokenizer.encode_batch(&texts)?;
        for ((split, document, index), ids) in places.into_iter().zip(encoded) {
            writers[split].write_piece(document, index, &ids, eot)?;
        }
        Ok(())
    };

    let mut progress = Progress::new("prepare", total_bytes, Unit::Bytes, live);
    let mut sources = SourceStats::default();
    let mut cleaner = Cleaner::new(opts.clean.clone());
    let (mut batch, mut batch_bytes) = (Vec::new(), 0usize);
    for_each_piece(
        files,
        opts,
        &mut progress,
        &mut sources,
        &mut cleaner,
        &mut |split, piece| {
            batch_bytes += piece.text.len();
            batch.push((split, piece));
            if batch_bytes >= opts.batch_bytes {
                flush(&mut batch, &mut writers)?;
                batch_bytes = 0;
            }
            Ok(ControlFlow::Continue(()))
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
