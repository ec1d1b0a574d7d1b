//! `serve`: an OpenAI-style completions server over the continuous-batching engine.
//! Argument parsing and start-up only; the work is in `smelt::serve`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use smelt::model::hf;
use smelt::serve::engine::{Engine, EngineConfig};
use smelt::serve::http::{self, HttpOptions};
use smelt::{Error, Result};

/// Serve a GPT-2 model over HTTP: POST /v1/completions (OpenAI completions, with streaming),
/// GET /v1/models, GET /health and a page to try it at GET /.
///
/// Prints `listening on http://ADDR` once it accepts requests (with --addr HOST:0, ADDR has
/// the port the system chose). Requests are batched continuously on the CPU, up to
/// --max-batch at a time; up to --max-queue more wait, and further ones are answered 429.
/// SIGTERM or Ctrl-C stops accepting, finishes the requests in flight and exits 0; a second
/// one exits at once (130).
#[derive(Parser, Debug)]
#[command(name = "serve", version, about, long_about)]
struct Args {
    /// Model directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// Address to listen on (HOST:PORT; port 0 picks a free one).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8080")]
    addr: String,
    /// Where generation runs: the CPU (auto means the CPU for now; GPU serving is not
    /// available yet).
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    device: DeviceArg,
    /// Most requests generated together (one batch).
    #[arg(long, value_name = "N", default_value_t = 16)]
    max_batch: usize,
    /// Most requests waiting for a place in the batch; beyond, requests get 429.
    #[arg(long, value_name = "N", default_value_t = 64)]
    max_queue: usize,
    /// Largest request body in bytes (larger: 413).
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Longest prompt in tokens (longer: 400); default and maximum: the model's context.
    #[arg(long, value_name = "N")]
    max_prompt_tokens: Option<usize>,
    /// Largest max_tokens a request may ask for.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    max_tokens_limit: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum DeviceArg {
    Auto,
    Cpu,
    Cuda,
}

/// The model's name: its directory's name (of the absolute path, so `.` works too).
fn model_name(dir: &Path) -> String {
    let abs = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    abs.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".to_string())
}

fn run(args: Args) -> Result<()> {
    let bad = |m: String| Err(Error::Config(m));
    match args.device {
        DeviceArg::Cuda => return Err(Error::Device(
            "--device cuda: GPU serving is not available yet; serve with --device cpu (or auto)"
                .into(),
        )),
        DeviceArg::Auto | DeviceArg::Cpu => {}
    }
    if args.max_batch == 0 {
        return bad("--max-batch must be at least 1".into());
    }
    if args.max_body_bytes == 0 {
        return bad("--max-body-bytes must be at least 1".into());
    }
    if args.max_tokens_limit == 0 {
        return bad("--max-tokens-limit must be at least 1".into());
    }
    let model = hf::load_model(&args.model)?;
    let context = model.config.block_size;
    let max_prompt_tokens = args.max_prompt_tokens.unwrap_or(context);
    if max_prompt_tokens == 0 || max_prompt_tokens > context {
        return bad(format!(
            "--max-prompt-tokens must be from 1 to the model's context ({context}), not {max_prompt_tokens}"
        ));
    }
    if args.device == DeviceArg::Auto {
        eprintln!("note: --device auto: serving on the CPU (GPU serving is not available yet)");
    }
    let opts = HttpOptions {
        model_name: model_name(&args.model),
        max_body_bytes: args.max_body_bytes,
        max_prompt_tokens,
        max_tokens_limit: args.max_tokens_limit,
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Config(format!("cannot start the async runtime: {e}")))?;
    let engine = Engine::start(
        model,
        EngineConfig {
            max_batch: args.max_batch,
            max_queue: args.max_queue,
        },
    )?;
    let served = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(&args.addr)
            .await
            .map_err(|e| Error::Config(format!("cannot listen on {}: {e}", args.addr)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Config(format!("cannot listen on {}: {e}", args.addr)))?;
        println!("listening on http://{addr}");
        eprintln!(
            "serving {} ({} layers, context {context}) on the CPU: batch {}, queue {}",
            opts.model_name,
            engine.config().n_layer,
            args.max_batch,
            args.max_queue
        );
        let on_signal = {
            let engine = engine.clone();
            async move {
                http::shutdown_signal().await;
                let s = engine.stats();
                eprintln!(
                    "shutting down: finishing {} active and {} queued requests (again to quit now)",
                    s.active, s.queued
                );
                engine.begin_shutdown();
                tokio::spawn(async {
                    http::shutdown_signal().await;
                    eprintln!("stopped at once");
                    std::process::exit(130);
                });
            }
        };
        http::serve(listener, engine.clone(), opts, on_signal)
            .await
            .map_err(|e| Error::Config(format!("the server failed: {e}")))
    });
    engine.begin_shutdown();
    engine.join();
    served?;
    eprintln!("stopped");
    Ok(())
}

fn main() -> ExitCode {
    let args: Args = smelt::cli::parse_args("serve");
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
