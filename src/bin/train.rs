//! `train`: trains a GPT-2 model. With no arguments it trains a small model on the bundled
//! Shakespeare corpus on the CPU. Argument parsing only; the work is in `smelt::train`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Parser;
use smelt::train::state::Resume;
use smelt::train::{self, Outcome, RunConfig, RunOptions};

/// Train a GPT-2 language model.
#[derive(Parser, Debug)]
#[command(
    name = "train",
    version,
    after_help = "`train --help` lists every key of --config.",
    after_long_help = CONFIG_KEYS
)]
struct Args {
    /// TOML file with the run's settings (the keys are listed below); defaults train the
    /// bundled model.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Run directory for the checkpoint and summary.json [default: runs/default].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Optimizer steps to run [default: 1500].
    #[arg(long)]
    max_steps: Option<usize>,
    /// Sequences per micro-batch [default: 16].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Tokens per sequence, at most the model's block_size [default: 128].
    #[arg(long)]
    seq_len: Option<usize>,
    /// Peak learning rate; the schedule's floor, train.min_lr, is a tenth of it unless set
    /// [default: 3e-3].
    #[arg(long)]
    lr: Option<f32>,
    /// Seed for initialisation and batch order [default: 1337].
    #[arg(long)]
    seed: Option<u64>,
    /// Compute device: auto (CUDA if a GPU and kernels are present, else cpu), cpu, cuda, or
    /// emu (the CUDA kernels emulated on the CPU; slow, for testing) [default: auto].
    #[arg(long)]
    device: Option<String>,
    /// Matmul/attention arithmetic on CUDA: auto (bf16), bf16 (tensor cores) or f32
    /// [default: auto].
    #[arg(long)]
    precision: Option<String>,
    /// A data set made by `prepare`; without it, --corpus is prepared (and cached) first.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Text to prepare when --data is not given: files or a folder [default: data/shakespeare].
    #[arg(long, value_name = "PATH")]
    corpus: Option<PathBuf>,
    /// Continue a run from a checkpoint: a checkpoints/step_NNNNNNN folder, or a run
    /// directory (its latest checkpoint). The run keeps its settings; only --max-steps (to
    /// extend it), --stop-at-step, --device and --precision may be given.
    #[arg(long, value_name = "DIR")]
    resume: Option<PathBuf>,
    /// Stop after this many steps (saving a checkpoint) while keeping the learning-rate
    /// schedule of --max-steps; continue later with --resume.
    #[arg(long, value_name = "STEPS")]
    stop_at_step: Option<usize>,
    /// Fine-tune: start from this model directory (a smelt checkpoint or a Hugging Face
    /// GPT-2 save_pretrained folder: model.safetensors, config.json, tokenizer.json); its
    /// config replaces [model] and the data is tokenized with its tokenizer.
    #[arg(long, value_name = "DIR")]
    init_from: Option<PathBuf>,
    /// Plain periodic log lines instead of the live progress bar.
    #[arg(long)]
    no_progress: bool,
}

/// The long help's list of every key of `--config` (each `RunConfig` field; a test holds
/// the list to the struct).
const CONFIG_KEYS: &str = "\
Settings come from a TOML file (--config); every key is optional, unknown keys are errors,
and the flags above override the file. The keys, with their defaults:

[model]
  n_layer = 4             transformer blocks
  n_head = 4              attention heads; must divide n_embd
  n_embd = 128            width
  block_size = 128        longest sequence (GPT-2's n_positions)
  vocab_size = 2048       tokens of the BPE trained when data.tokenizer is \"bpe\"; any
                          other tokenizer (--data, gpt2, a path) sets the vocabulary
[data]
  dir                     a data set made by `prepare` (--data); if unset, corpus is prepared
  corpus = \"data/shakespeare\"   files or folders (.txt, .jsonl, .gz) to prepare (--corpus)
  tokenizer = \"bpe\"       bpe (model.vocab_size tokens) | gpt2 | path/to/tokenizer.json
  val_fraction = 0.1      share of documents for validation
  test_fraction = 0.05    share of documents for test
  cache = \"runs/data\"     where automatic preparations are cached
[train]
  device = \"auto\"         auto | cpu | cuda | emu (--device)
  precision = \"auto\"      CUDA only: auto (= bf16) | bf16 | f32 (--precision)
  out = \"runs/default\"    run directory (--out)
  batch_size = 16         sequences per micro-batch (--batch-size)
  seq_len = 128           tokens per sequence, <= model.block_size (--seq-len)
  grad_accum = 1          micro-batches per optimizer step
  max_steps = 1500        optimizer steps (--max-steps)
  lr = 3e-3               peak learning rate (--lr)
  min_lr                  floor of the cosine decay; unset: lr / 10
  warmup_steps = 30       linear warmup
  eval_every = 100        validation every N steps (and at the end)
  eval_batches = 8        validation batches per evaluation
  seed = 1337             initialisation and batch order (--seed)
  sample_tokens = 160     tokens generated at the end
  max_seconds = 0         stop early (and save) after this long; 0 = no limit
  threads = 0             CPU threads; 0 = one per core
  checkpoint_every = 0    resumable checkpoint every N steps; 0 = at each evaluation
  keep_checkpoints = 3    step checkpoints of the current line kept; 0 = all
  stop_at_step = 0        stop (and save) after N steps, keeping max_steps' schedule
  init_from               fine-tune from this model directory (--init-from)
[optimizer]               AdamW, decoupled weight decay on matrices only
  beta1 = 0.9
  beta2 = 0.95
  eps = 1e-8
  weight_decay = 0.1
  grad_clip = 1.0         global-norm clipping; 0 = off

The run directory receives checkpoint/ (the final model: model.safetensors, config.json,
generation_config.json, tokenizer.json), checkpoints/step_NNNNNNN/ (resumable; `latest` names
the newest), metrics.jsonl, loss.svg and summary.json.";

/// Applies the flags to `cfg`.
fn apply_flags(args: &Args, cfg: &mut RunConfig) {
    let t = &mut cfg.train;
    if let Some(v) = args.out.clone() {
        t.out = v;
    }
    if let Some(v) = args.max_steps {
        t.max_steps = v;
    }
    if let Some(v) = args.batch_size {
        t.batch_size = v;
    }
    if let Some(v) = args.seq_len {
        t.seq_len = v;
    }
    if let Some(v) = args.lr {
        t.lr = v;
    }
    if let Some(v) = args.seed {
        t.seed = v;
    }
    if let Some(v) = args.device.clone() {
        t.device = v;
    }
    if let Some(v) = args.precision.clone() {
        t.precision = v;
    }
    if let Some(v) = args.stop_at_step {
        t.stop_at_step = v;
    }
    if let Some(v) = args.init_from.clone() {
        t.init_from = Some(v);
    }
    if let Some(v) = args.corpus.clone() {
        cfg.data.corpus = v;
    }
    if let Some(v) = args.data.clone() {
        cfg.data.dir = Some(v);
    }
}

/// Stops the run after the current step on the first Ctrl-C; exits at once on the second.
fn stop_flag() -> Option<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    let seen = flag.clone();
    let set = ctrlc::set_handler(move || {
        if seen.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted again: exiting without saving (the last checkpoint is whole)");
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: stopping after this step and saving a checkpoint (Ctrl-C again to quit now)");
    });
    match set {
        Ok(()) => Some(flag),
        Err(e) => {
            eprintln!("note: Ctrl-C will not save a checkpoint: {e}");
            None
        }
    }
}

fn main() -> ExitCode {
    let args = smelt::cli::parse_args::<Args>("train");
    let result = (|| {
        let (cfg, resume) = match &args.resume {
            Some(dir) => {
                if let Some(path) = &args.config {
                    return Err(smelt::Error::Config(format!(
                        "--config {} cannot be combined with --resume: a resumed run keeps the settings of its checkpoint",
                        path.display()
                    )));
                }
                let resume = Resume::open(dir)?;
                let mut cfg = resume.state.config.clone();
                // The stop that ended the saved run is spent: run on unless asked again.
                cfg.train.stop_at_step = 0;
                apply_flags(&args, &mut cfg);
                if let Some(out) = &args.out {
                    let same = |a: &std::path::Path, b: &std::path::Path| {
                        a.canonicalize()
                            .ok()
                            .zip(b.canonicalize().ok())
                            .is_some_and(|(a, b)| a == b)
                    };
                    if !same(out, &resume.run_dir()) {
                        return Err(smelt::Error::Config(format!(
                            "--out {} with --resume: a resumed run continues in its own directory {}",
                            out.display(),
                            resume.run_dir().display()
                        )));
                    }
                }
                (cfg, Some(resume))
            }
            None => {
                let mut cfg = match &args.config {
                    Some(path) => RunConfig::from_file(path)?,
                    None => RunConfig::default(),
                };
                apply_flags(&args, &mut cfg);
                (cfg, None)
            }
        };
        let opts = RunOptions {
            live: !args.no_progress,
            resume,
            stop: stop_flag(),
        };
        train::run_with(cfg, opts)
    })();
    match result {
        Ok(Outcome::Interrupted { step, checkpoint }) => {
            let run_dir = checkpoint
                .parent()
                .and_then(|p| p.parent())
                .unwrap_or(std::path::Path::new("."));
            eprintln!(
                "interrupted after step {step}: checkpoint saved to {}; continue with `train --resume {}`",
                checkpoint.display(),
                run_dir.display()
            );
            ExitCode::from(130)
        }
        Ok(Outcome::Finished(s)) => {
            println!(
                "--- prompt ---\n{}--- sample ---\n{}\n--------------",
                s.sample_prompt, s.sample
            );
            let over = match s.train_loss_steps {
                1 => "the last step".to_string(),
                n => format!("mean of the last {n} steps"),
            };
            println!(
                "done: {} steps in {:.1}s | train loss {:.4} ({over}) | val loss {:.4} | unigram entropy {:.4} | {:.0} tok/s",
                s.steps, s.seconds, s.train_loss, s.val_loss, s.unigram_entropy, s.tokens_per_second
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
