//! `evaluate`: loss and perplexity of a model on a held-out split, or BLEU / ROUGE / F1 /
//! exact match of generated (or given) outputs. Argument parsing only; the work is in
//! `smelt::evaluate` and `smelt::metrics`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use serde::Serialize;
use smelt::backend::select::{run_on_device, DeviceJob};
use smelt::backend::Backend;
use smelt::data::loader::ShardSet;
use smelt::evaluate::{self, LossReport};
use smelt::metrics::{self, Scores};
use smelt::model::hf::{self, HfModel};
use smelt::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Task {
    /// Mean loss and perplexity on --data's --split (needs --model and --data).
    Loss,
    /// Greedy generation for each `prompt` of --input, scored against its `reference`.
    Generate,
    /// Scores each `prediction` of --input against its `reference` (no model).
    Score,
}

/// Evaluate a language model.
///
/// `evaluate --model DIR --data DIR --split val|test` prints the mean loss per token,
/// perplexity and tokens evaluated: every token of the split is predicted once (windows of
/// --seq-len tokens, the last of each shard shorter). `evaluate --model DIR --task generate
/// --input FILE.jsonl` (records with "prompt" and "reference") generates greedily for each
/// prompt and scores corpus BLEU (sacreBLEU's default, 0-100), ROUGE-1/2/L F-measure
/// (rouge-score with stemming, 0-1) and SQuAD token F1 and exact match (0-100).
/// `evaluate --task score --input FILE.jsonl` (records with "prediction" and "reference")
/// scores existing outputs. --json prints one JSON object (with the scores' ranges under
/// "scales").
#[derive(Parser, Debug)]
#[command(name = "evaluate", version, about, long_about)]
struct Args {
    /// What to evaluate [default: loss, or generate with --input and --model, or score with
    /// --input alone].
    #[arg(long, value_enum)]
    task: Option<Task>,
    /// A model directory: a smelt checkpoint or a Hugging Face GPT-2 save_pretrained folder.
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    /// A data set made by `prepare` (task loss).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// The split to evaluate (task loss).
    #[arg(long, default_value = "val", value_parser = ["val", "test", "train"])]
    split: String,
    /// JSON-lines records (tasks generate and score).
    #[arg(long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// Sequences per batch (task loss).
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Tokens per sequence (task loss) [default: the model's context].
    #[arg(long)]
    seq_len: Option<usize>,
    /// Evaluate at most this many batches (the split's first windows); 0 means the whole
    /// split (task loss).
    #[arg(long, default_value_t = 0)]
    max_batches: usize,
    /// Tokens to generate per prompt (task generate).
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// Compute device for the loss: auto, cpu, cuda or emu.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Matmul/attention arithmetic on CUDA: auto (bf16), bf16 or f32.
    #[arg(long, default_value = "auto")]
    precision: String,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

struct LossJob<'a> {
    model: &'a HfModel,
    set: &'a ShardSet,
    batch: usize,
    seq_len: usize,
    max_batches: usize,
}

impl DeviceJob for LossJob<'_> {
    type Output = LossReport;
    fn run<B: Backend>(self, backend: B) -> Result<LossReport> {
        evaluate::split_loss(
            backend,
            self.model,
            self.set,
            self.batch,
            self.seq_len,
            self.max_batches,
        )
    }
}

fn need<T>(x: Option<T>, what: &str) -> Result<T> {
    x.ok_or_else(|| Error::Config(format!("{what} (see evaluate --help)")))
}

/// What `--json` prints for the generate and score tasks: the scores under their names,
/// the number of examples, and each score's range (`scales`).
#[derive(Serialize)]
struct ScoresReport<'a> {
    examples: usize,
    #[serde(flatten)]
    scores: &'a Scores,
    scales: BTreeMap<&'static str, &'static str>,
}

fn print_scores(s: &Scores, n: usize, json: bool) {
    if json {
        let report = ScoresReport {
            examples: n,
            scores: s,
            scales: Scores::SCALES.into_iter().collect(),
        };
        println!(
            "{}",
            serde_json::to_string(&report).expect("scores serialize")
        );
    } else {
        println!("examples             {n}");
        let rows = [
            ("BLEU", "bleu", s.bleu, 2),
            ("ROUGE-1 F", "rouge1", s.rouge1, 4),
            ("ROUGE-2 F", "rouge2", s.rouge2, 4),
            ("ROUGE-L F", "rougeL", s.rouge_l, 4),
            ("token F1", "f1", s.f1, 2),
            ("exact match", "exact_match", s.exact_match, 2),
        ];
        for (label, key, value, digits) in rows {
            let scale = Scores::scale(key).expect("every score has a scale");
            let label = format!("{label} ({scale})");
            println!("{label:<20} {value:.digits$}");
        }
    }
}

fn run(args: &Args) -> Result<()> {
    let task = match (args.task, &args.input, &args.model) {
        (Some(t), _, _) => t,
        (None, Some(_), Some(_)) => Task::Generate,
        (None, Some(_), None) => Task::Score,
        (None, None, _) => Task::Loss,
    };
    match task {
        Task::Loss => {
            let model = hf::load_model(&need(args.model.clone(), "--model DIR is required")?)?;
            let data = need(args.data.clone(), "--data DIR is required for the loss")?;
            let seq_len = args.seq_len.unwrap_or(model.config.block_size);
            if seq_len == 0 || seq_len > model.config.block_size || args.batch_size == 0 {
                return Err(Error::Config(format!(
                    "--seq-len must be in 1..={} (the model's context) and --batch-size at least 1",
                    model.config.block_size
                )));
            }
            let set = evaluate::open_split(&data, &args.split, &model.tokenizer)?;
            let job = LossJob {
                model: &model,
                set: &set,
                batch: args.batch_size,
                seq_len,
                max_batches: args.max_batches,
            };
            let r = run_on_device(&args.device, &args.precision, job)?;
            if args.json {
                println!("{}", serde_json::to_string(&r).expect("report serializes"));
            } else {
                println!("split              {}", args.split);
                println!("loss (nats/token)  {:.4}", r.loss);
                println!("perplexity         {:.3}", r.perplexity);
                println!("tokens             {}", r.tokens);
            }
        }
        Task::Generate => {
            let model = hf::load_model(&need(args.model.clone(), "--model DIR is required")?)?;
            let input = need(args.input.clone(), "--input FILE.jsonl is required")?;
            let pairs = evaluate::read_pairs(&input, "prompt", "reference")?;
            let (prompts, references): (Vec<String>, Vec<String>) = pairs.into_iter().unzip();
            let predictions = evaluate::greedy_predictions(&model, &prompts, args.max_new_tokens)?;
            print_scores(
                &metrics::score(&predictions, &references),
                prompts.len(),
                args.json,
            );
        }
        Task::Score => {
            let input = need(args.input.clone(), "--input FILE.jsonl is required")?;
            let pairs = evaluate::read_pairs(&input, "prediction", "reference")?;
            let (predictions, references): (Vec<String>, Vec<String>) = pairs.into_iter().unzip();
            print_scores(
                &metrics::score(&predictions, &references),
                predictions.len(),
                args.json,
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = smelt::cli::parse_args::<Args>("evaluate");
    let result = smelt::threads::init(0, "RAYON_NUM_THREADS").and_then(|_| run(&args));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
