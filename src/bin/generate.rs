//! `generate`: continues a prompt with a GPT-2 model on the CPU, with a KV cache.
//! Argument parsing and printing only; the work is in `smelt::infer` and `smelt::generate`.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use smelt::generate::{check_sampling, pick_token_top_p, BadSampling, SampleOptions};
use smelt::infer::KvModel;
use smelt::model::hf;
use smelt::rng::Rng;
use smelt::text_stream::TextStream;
use smelt::{Error, Result};

/// Generate text with a GPT-2 model on the CPU.
///
/// The model directory holds config.json, model.safetensors and tokenizer.json: a checkpoint
/// written by `train` (run/checkpoint) or a Hugging Face GPT-2 saved with `save_pretrained`.
/// Tokens are printed as they are produced. Generation stops after --max-new-tokens, at the
/// tokenizer's <|endoftext|> (unless --ignore-eot), or when the generated text contains a
/// --stop string (which is not printed). A prompt longer than the model's context keeps its
/// last n_positions tokens; past the context, the window slides by half.
#[derive(Parser, Debug)]
#[command(name = "generate", version, about, long_about)]
struct Args {
    /// Model directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// The prompt; read from stdin when absent.
    #[arg(long, value_name = "TEXT")]
    prompt: Option<String>,
    /// Most tokens to generate.
    #[arg(long, value_name = "N", default_value_t = 100)]
    max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy (always the most likely token).
    #[arg(
        long,
        value_name = "T",
        default_value_t = 0.8,
        allow_negative_numbers = true
    )]
    temperature: f32,
    /// Sample only among the K most likely tokens (0: all).
    #[arg(long, value_name = "K", default_value_t = 0)]
    top_k: usize,
    /// Nucleus sampling: only among the most likely tokens whose probabilities sum to P
    /// (0 < P <= 1; 1: all).
    #[arg(
        long,
        value_name = "P",
        default_value_t = 1.0,
        allow_negative_numbers = true
    )]
    top_p: f32,
    /// Seed of the sampler.
    #[arg(long, value_name = "S", default_value_t = 1337)]
    seed: u64,
    /// Stop when the generated text contains STRING (not printed); repeatable. The string is
    /// taken as it is, without escapes: `--stop "\n"` is a backslash and an n. For a newline
    /// in bash, write `--stop $'\n'` (two: `--stop $'\n\n'`).
    #[arg(long, value_name = "STRING")]
    stop: Vec<String>,
    /// Go on past <|endoftext|> instead of stopping there.
    #[arg(long)]
    ignore_eot: bool,
    /// Print one JSON object {"text": ..., "tokens": [...]} at the end instead of streaming:
    /// the generated text (without the prompt, cut before a --stop string) and the generated
    /// token ids (up to the one that completed the stop string; <|endoftext|> excluded).
    #[arg(long)]
    json: bool,
    /// Print timings (prefill, tokens/s) to stderr at the end.
    #[arg(long)]
    stats: bool,
}

fn run(args: &Args) -> Result<()> {
    let bad = |m: String| Err(Error::Config(m));
    if let Err(e) = check_sampling(args.temperature, args.top_p) {
        let flag = match e {
            BadSampling::Temperature(_) => "--temperature",
            BadSampling::TopP(_) => "--top-p",
        };
        return bad(format!("{flag} {}, not {}", e.rule(), e.value()));
    }
    if let Some(s) = args.stop.iter().find(|s| s.is_empty()) {
        return bad(format!("--stop must not be empty, got {s:?}"));
    }
    let prompt = match &args.prompt {
        Some(p) => p.clone(),
        None => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| Error::io("<stdin>", e))?;
            s
        }
    };
    if prompt.is_empty() {
        return bad("the prompt is empty; give --prompt TEXT or text on stdin".into());
    }

    let t0 = Instant::now();
    let (config, weights, tokenizer) = hf::load(&args.model)?;
    let mut model = KvModel::new(config, &weights)?;
    drop(weights);
    let load_s = t0.elapsed().as_secs_f64();
    let ids = tokenizer.encode(&prompt)?;
    if ids.is_empty() {
        return bad("the prompt encodes to no tokens".into());
    }

    let opts = SampleOptions {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_k: args.top_k,
        seed: args.seed,
    };
    let mut rng = Rng::new(args.seed);
    let vocab = config.vocab_size;
    let eot = tokenizer.eot();
    let mut out = std::io::stdout().lock();
    let mut tokens: Vec<u32> = Vec::new();
    let mut text = TextStream::new(&tokenizer, args.stop.clone());
    let mut failure: Option<Error> = None;
    let mut first_token_at = None;
    let t1 = Instant::now();
    model.generate(
        &ids,
        args.max_new_tokens,
        |logits| pick_token_top_p(logits, vocab, &opts, args.top_p, &mut rng),
        |id| {
            first_token_at.get_or_insert_with(|| t1.elapsed().as_secs_f64());
            if id == eot && !args.ignore_eot {
                return false;
            }
            tokens.push(id);
            let printed = text.push(id).and_then(|piece| {
                if args.json || piece.is_empty() {
                    return Ok(());
                }
                out.write_all(piece.as_bytes())
                    .and_then(|_| out.flush())
                    .map_err(|e| Error::io("<stdout>", e))
            });
            if let Err(e) = printed {
                failure = Some(e);
                return false;
            }
            !text.stopped()
        },
    )?;
    if let Some(e) = failure {
        return Err(e);
    }
    let rest = text.finish()?;
    let gen_s = t1.elapsed().as_secs_f64();
    if args.json {
        let obj = serde_json::json!({"text": text.text(), "tokens": tokens});
        writeln!(out, "{obj}").map_err(|e| Error::io("<stdout>", e))?;
    } else {
        out.write_all(rest.as_bytes())
            .map_err(|e| Error::io("<stdout>", e))?;
        writeln!(out).map_err(|e| Error::io("<stdout>", e))?;
    }
    if args.stats {
        let first = first_token_at.unwrap_or(gen_s);
        let n = tokens.len();
        eprintln!(
            "load {load_s:.2}s | prompt {} tokens, prefill+first token {first:.3}s | {n} new tokens in {gen_s:.3}s: {:.1} tokens/s overall, {:.1} tokens/s after the first",
            ids.len(),
            n as f64 / gen_s.max(1e-9),
            n.saturating_sub(1) as f64 / (gen_s - first).max(1e-9),
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Args = smelt::cli::parse_args("generate");
    // The CPU thread pool first: a process limit on threads is one error line, not a panic.
    match smelt::threads::init(0, "RAYON_NUM_THREADS").and_then(|_| run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
