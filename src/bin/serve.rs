//! `serve`: an OpenAI-style completions server over the continuous-batching engine.
//! Argument parsing and start-up only; the work is in `smelt::serve`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use smelt::model::hf;
use smelt::serve;
use smelt::serve::connections::ConnectionLimits;
use smelt::serve::engine::{Engine, EngineConfig};
use smelt::serve::http::{self, HttpOptions};
use smelt::{Error, Result};

/// Serve a GPT-2 model over HTTP: POST /v1/completions (OpenAI completions, with streaming),
/// GET /v1/models, GET /health and a page to try it at GET /.
///
/// Prints `listening on http://ADDR` once it accepts requests (with --addr HOST:0, ADDR has
/// the port the system chose). Requests are batched continuously on the CPU, up to
/// --max-batch at a time; up to --max-queue more wait, and further ones are answered 429.
/// SIGTERM or Ctrl-C stops accepting, finishes the requests in flight (for at most
/// --shutdown-grace) and exits 0; a second one exits at once (130).
///
/// Slow or idle clients cannot hold the server: a request's head must arrive within
/// --header-timeout (also the longest idle time of a keep-alive connection), its body within
/// --body-timeout (else 408), and at most --max-connections connections are open at once
/// (more wait to be accepted). Streaming responses are never cut by these timeouts.
///
/// The model is named after its directory in responses and /v1/models, or after the train
/// run for RUN/checkpoint ("RUN") and RUN/checkpoints/step_N ("RUN/step_N"); --model-name
/// sets it. A request whose "model" names another model is answered 404.
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
    /// The model's name in responses and /v1/models (default: after the directory or run).
    #[arg(long, value_name = "NAME")]
    model_name: Option<String>,
    /// Seconds a client has to send a request's head (request line and headers), counted
    /// from when the connection waits for it: also how long an idle connection stays open.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 10.0,
        allow_negative_numbers = true
    )]
    header_timeout: f64,
    /// Seconds a client has to send a request's whole body (later: 408, connection closed).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 30.0,
        allow_negative_numbers = true
    )]
    body_timeout: f64,
    /// Most connections open at once; further clients wait to be accepted.
    #[arg(long, value_name = "N", default_value_t = 256)]
    max_connections: usize,
    /// Seconds to wait, once the shutdown began, for open connections (requests in flight)
    /// to finish before they are closed.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 30.0,
        allow_negative_numbers = true
    )]
    shutdown_grace: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum DeviceArg {
    Auto,
    Cpu,
    Cuda,
}

/// `--NAME SECONDS` as a duration: positive and finite (at most a day).
fn seconds(name: &str, secs: f64) -> Result<Duration> {
    const DAY: f64 = 86_400.0;
    if !(secs > 0.0 && secs <= DAY) {
        return Err(Error::Config(format!(
            "--{name} must be a number of seconds above 0 and at most {DAY}, not {secs}"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
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
    if args.max_connections == 0 {
        return bad("--max-connections must be at least 1".into());
    }
    if args
        .model_name
        .as_deref()
        .is_some_and(|n| n.trim().is_empty())
    {
        return bad("--model-name must not be empty".into());
    }
    let limits = ConnectionLimits {
        max_connections: args.max_connections,
        header_timeout: seconds("header-timeout", args.header_timeout)?,
        shutdown_grace: seconds("shutdown-grace", args.shutdown_grace)?,
    };
    let body_timeout = seconds("body-timeout", args.body_timeout)?;
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
        model_name: args
            .model_name
            .clone()
            .unwrap_or_else(|| serve::model_name(&args.model)),
        max_body_bytes: args.max_body_bytes,
        body_timeout,
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
            let grace = limits.shutdown_grace;
            async move {
                http::shutdown_signal().await;
                let s = engine.stats();
                eprintln!(
                    "shutting down: finishing {} active and {} queued requests, for at most {} s (again to quit now)",
                    s.active,
                    s.queued,
                    grace.as_secs_f64()
                );
                engine.begin_shutdown();
                tokio::spawn(async {
                    http::shutdown_signal().await;
                    eprintln!("stopped at once");
                    std::process::exit(130);
                });
            }
        };
        http::serve(listener, engine.clone(), opts, limits, on_signal).await;
        Ok(())
    });
    engine.begin_shutdown();
    engine.join();
    served?;
    eprintln!("stopped");
    Ok(())
}

fn main() -> ExitCode {
    let args: Args = smelt::cli::parse_args("serve");
    // The CPU thread pool first: a process limit on threads is one error line, not a panic.
    match smelt::threads::init(0, "RAYON_NUM_THREADS").and_then(|_| run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
