//! `prepare`: turns text files into a tokenizer and token shards (llm.c's layout), or checks a
//! data set in place (`--verify`). Argument parsing only; the work is in `smelt::data::prepare`
//! and `smelt::data::dataset`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use smelt::data::clean::CleanOptions;
use smelt::data::pieces::DEFAULT_PIECE_BYTES;
use smelt::data::prepare::{self, Manifest, PrepareOptions, TokenizerChoice, SPLITS};
use smelt::data::source::{OnInvalid, SourceOptions};
use smelt::data::Dataset;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum InvalidPolicy {
    /// Skip the document and count it.
    Skip,
    /// Stop with an error naming the file and line.
    Fail,
}

/// Prepare a text corpus for training: clean it, build a tokenizer, split it into
/// train/val/test by a hash of each piece's content, and write token shards in llm.c's layout
/// (DIR/train_000000.bin, val_..., test_...) beside DIR/tokenizer.json and DIR/manifest.json.
///
/// Inputs are files or folders (searched recursively) of .txt (one document per file) and
/// .jsonl (one document per line, in the field --text-field), optionally gzip'd (.gz).
/// Documents are read, cleaned, split and encoded in pieces of about --piece-kb, cut at
/// paragraph breaks (else line breaks, else spaces), so memory stays flat whatever the size
/// of a document, and a corpus of one file still fills every split.
#[derive(Parser, Debug)]
#[command(name = "prepare", version, about, long_about)]
struct Args {
    /// Text files or folders.
    #[arg(required_unless_present = "verify", value_name = "INPUT")]
    inputs: Vec<PathBuf>,
    /// Output folder for shards, tokenizer.json and manifest.json.
    #[arg(long, value_name = "DIR", required_unless_present = "verify")]
    out: Option<PathBuf>,
    /// Check the data set in DIR instead of preparing one: every shard's header, size, token
    /// ids, and token count and sha256 against manifest.json, and tokenizer.json's sha256
    /// (a folder of llm.c shards, which records no sha256: headers, sizes and ids only).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["inputs", "out"])]
    verify: Option<PathBuf>,
    /// `gpt2` (GPT-2's tokenizer, built in), `bpe` (train a byte-level BPE on the corpus),
    /// or the path of a tokenizer.json.
    #[arg(long, default_value = "bpe", value_name = "gpt2|bpe|PATH")]
    tokenizer: String,
    /// Vocabulary size for `--tokenizer bpe`.
    #[arg(long, default_value_t = 8192)]
    vocab_size: usize,
    /// Share of the text (by piece) for validation.
    #[arg(long, default_value_t = 0.1)]
    val_fraction: f64,
    /// Share of the text (by piece) for test.
    #[arg(long, default_value_t = 0.05)]
    test_fraction: f64,
    /// Documents are cut into pieces of about this many KiB (1024 bytes), each assigned to a
    /// split on its own; smaller pieces spread a small corpus more evenly.
    #[arg(long, default_value_t = (DEFAULT_PIECE_BYTES >> 10) as u64,
          value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    piece_kb: u64,
    /// Tokens per shard file.
    #[arg(long, default_value_t = 100_000_000)]
    shard_tokens: u64,
    /// JSON field that holds the text in .jsonl files.
    #[arg(long, default_value = "text")]
    text_field: String,
    /// Drop documents shorter than this many characters.
    #[arg(long, default_value_t = 64)]
    min_chars: usize,
    /// Keep exact duplicate documents.
    #[arg(long)]
    no_dedup: bool,
    /// What to do with invalid UTF-8, malformed JSON lines and records without the field.
    #[arg(long, value_enum, default_value = "skip")]
    on_invalid: InvalidPolicy,
    /// At most this many MB of training text are used to train the BPE tokenizer.
    #[arg(long, default_value_t = 256)]
    bpe_sample_mb: usize,
    /// Print the manifest summary as one JSON object (for scripts).
    #[arg(long)]
    json: bool,
    /// Plain periodic log lines instead of live progress bars.
    #[arg(long)]
    no_progress: bool,
}

/// The summary `--json` prints and the table shows.
fn summary(m: &Manifest, out: &std::path::Path) -> serde_json::Value {
    let splits: serde_json::Map<String, serde_json::Value> = SPLITS
        .iter()
        .filter_map(|s| m.splits.get(*s).map(|sp| (s, sp)))
        .map(|(s, sp)| {
            (
                s.to_string(),
                serde_json::json!({"documents": sp.documents, "pieces": sp.pieces, "tokens": sp.tokens, "shards": sp.shards.len()}),
            )
        })
        .collect();
    serde_json::json!({
        "out": out,
        "tokenizer": m.tokenizer.kind,
        "vocab_size": m.tokenizer.vocab_size,
        "token_width": m.token_width,
        "splits": splits,
        "documents_read": m.sources.documents,
        "pieces_read": m.sources.pieces,
        "warnings": m.warnings,
        "dropped_short": m.cleaning.dropped_short,
        "dropped_duplicate": m.cleaning.dropped_duplicate,
        "skipped_invalid": m.sources.skipped_invalid_utf8 + m.sources.skipped_bad_json + m.sources.skipped_missing_field + m.sources.skipped_too_large,
        "text_mb": m.text_bytes as f64 / 1e6,
        "seconds": m.seconds,
        "tokenizer_seconds": m.tokenizer_seconds,
        "mb_per_second": m.text_bytes as f64 / 1e6 / m.seconds.max(1e-9),
        "mb_per_second_without_tokenizer": m.text_bytes as f64 / 1e6 / (m.seconds - m.tokenizer_seconds).max(1e-9),
    })
}

/// `prepare --verify DIR`: one line per shard and a summary on stdout (or `--json`: one
/// object); a failure ends with one `error:` line naming the first bad file.
fn verify(dir: &std::path::Path, json: bool) -> ExitCode {
    let checked = Dataset::open(dir).and_then(|d| {
        d.verify(|c| {
            let name = c.path.file_name().unwrap_or_default().to_string_lossy();
            match &c.problem {
                _ if json => {}
                None => println!("ok    {:<5} {name} ({} tokens)", c.split, c.tokens),
                Some(p) => println!("FAIL  {:<5} {name}: {p}", c.split),
            }
        })
    });
    match checked {
        Ok(v) if json => {
            println!(
                "{}",
                serde_json::json!({"dir": dir, "shards": v.shards, "tokens": v.tokens, "sha256_checked": v.sha256_checked})
            );
            ExitCode::SUCCESS
        }
        Ok(v) => {
            println!(
                "verified {}: {} shards, {} tokens; {}",
                dir.display(),
                v.shards,
                v.tokens,
                if v.sha256_checked {
                    "every sha256 is the manifest's"
                } else {
                    "no manifest, so no sha256 to compare: headers, sizes and token ids checked"
                }
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let a = smelt::cli::parse_args::<Args>("prepare");
    // The CPU thread pool first: a process limit on threads is one error line, not a panic.
    if let Err(e) = smelt::threads::init(0, "RAYON_NUM_THREADS") {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    if let Some(dir) = &a.verify {
        return verify(dir, a.json);
    }
    let out = a.out.clone().expect("clap requires --out without --verify");
    let opts = PrepareOptions {
        inputs: a.inputs.clone(),
        tokenizer: TokenizerChoice::parse(&a.tokenizer, a.vocab_size),
        val_fraction: a.val_fraction,
        test_fraction: a.test_fraction,
        shard_tokens: a.shard_tokens,
        source: SourceOptions {
            text_field: a.text_field.clone(),
            on_invalid: match a.on_invalid {
                InvalidPolicy::Skip => OnInvalid::Skip,
                InvalidPolicy::Fail => OnInvalid::Fail,
            },
            piece_bytes: (a.piece_kb << 10) as usize,
            ..SourceOptions::default()
        },
        clean: CleanOptions {
            min_chars: a.min_chars,
            dedup: !a.no_dedup,
        },
        bpe_sample_bytes: a.bpe_sample_mb << 20,
        ..PrepareOptions::default()
    };
    match prepare::prepare(&opts, &out, !a.no_progress && !a.json) {
        Ok(m) => {
            let s = summary(&m, &out);
            if a.json {
                println!("{s}");
            } else {
                println!(
                    "prepared {} in {:.1}s ({:.1} MB of text, {:.1} MB/s); tokenizer {} ({} tokens, {:?})",
                    out.display(),
                    m.seconds,
                    m.text_bytes as f64 / 1e6,
                    s["mb_per_second"].as_f64().unwrap_or(0.0),
                    m.tokenizer.kind,
                    m.tokenizer.vocab_size,
                    m.token_width
                );
                println!(
                    "{:<6} {:>10} {:>8} {:>14} {:>7}",
                    "split", "documents", "pieces", "tokens", "shards"
                );
                for name in SPLITS {
                    if let Some(sp) = m.splits.get(name) {
                        println!(
                            "{name:<6} {:>10} {:>8} {:>14} {:>7}",
                            sp.documents,
                            sp.pieces,
                            sp.tokens,
                            sp.shards.len()
                        );
                    }
                }
                println!(
                    "read {} documents in {} pieces; dropped {} short documents, {} duplicate pieces; skipped {} invalid",
                    m.sources.documents,
                    m.sources.pieces,
                    m.cleaning.dropped_short,
                    m.cleaning.dropped_duplicate,
                    s["skipped_invalid"]
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
