//! The training run: corpus → tokenizer → token streams → GPT → AdamW steps with periodic
//! validation → sample → checkpoint and `summary.json`.

pub mod config;
pub mod data;

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

pub use config::RunConfig;

use crate::backend::cpu::CpuBackend;
use crate::backend::cuda::CudaRuntime;
use crate::backend::device::emu::EmuRuntime;
use crate::backend::device::{DeviceBackend, Precision};
use crate::backend::{AdamWStep, Backend};
use crate::checkpoint;
use crate::data::batches::Batch;
use crate::error::{Error, Result};
use crate::generate::{self, SampleOptions};
use crate::model::Gpt;
use crate::optim::{clip_factor, LrSchedule};
use crate::progress::{format_duration, Progress, Unit};

/// What a run reports at the end (also written as `summary.json`).
#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    /// Mean training loss over the last 10% of steps.
    pub train_loss: f32,
    pub val_loss: f32,
    pub unigram_entropy: f64,
    pub steps: usize,
    /// Wall time of the whole run, data preparation included.
    pub seconds: f64,
    /// Training tokens per second (optimizer steps only, evaluation excluded).
    pub tokens_per_second: f64,
    pub params: usize,
    pub device: String,
    pub stopped_early: bool,
    /// The data set trained on, and where its loader stopped (epochs seen, and the exact
    /// position a resumed run continues from).
    pub data_dir: std::path::PathBuf,
    pub epochs: f64,
    pub loader_position: crate::data::loader::LoaderPosition,
    pub sample: String,
    pub config: RunConfig,
}

/// The matmul/attention arithmetic a run asked for, on a device backend.
fn precision(requested: &str) -> Precision {
    match requested {
        "f32" => Precision::F32,
        _ => Precision::Bf16,
    }
}

/// Resolves the run's device and trains on it.
fn run_on_device(cfg: RunConfig, live: bool) -> Result<RunSummary> {
    let t = &cfg.train;
    if t.precision != "auto" && t.device == "cpu" {
        eprintln!("note: train.precision applies to CUDA; the CPU computes in f32");
    }
    match t.device.as_str() {
        "cpu" => run_on(CpuBackend::new(), cfg, live),
        "cuda" => {
            let backend = DeviceBackend::new(CudaRuntime::new(0)?, precision(&t.precision));
            run_on(backend, cfg, live)
        }
        "emu" => {
            let backend = DeviceBackend::new(EmuRuntime::new(), precision(&t.precision));
            run_on(backend, cfg, live)
        }
        "auto" => match crate::backend::cuda::probe() {
            Ok(_) => {
                let backend = DeviceBackend::new(CudaRuntime::new(0)?, precision(&t.precision));
                eprintln!("device auto: a GPU and CUDA kernels are present: using CUDA");
                run_on(backend, cfg, live)
            }
            Err(why) => {
                eprintln!("device auto: CUDA unavailable ({why}): using the CPU");
                run_on(CpuBackend::new(), cfg, live)
            }
        },
        other => Err(Error::Config(format!(
            "device '{other}' is not one of auto, cpu, cuda, emu"
        ))),
    }
}

/// Mean loss over validation batches (forward only).
fn evaluate<B: Backend>(model: &mut Gpt<B>, batches: &[Batch]) -> Result<f32> {
    let mut sum = 0.0f64;
    for b in batches {
        model.set_batch(&b.inputs, Some(&b.targets))?;
        sum += model.forward()? as f64;
    }
    Ok((sum / batches.len() as f64) as f32)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Runs training as configured. `live` enables the terminal progress bar.
pub fn run(cfg: RunConfig, live: bool) -> Result<RunSummary> {
    cfg.validate()?;
    if cfg.train.threads > 0 {
        // Fails only if a pool already exists (e.g. a second run in one process): keep it.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(cfg.train.threads)
            .build_global();
    }
    run_on_device(cfg, live)
}

/// Trains on `backend`.
fn run_on<B: Backend>(backend: B, mut cfg: RunConfig, live: bool) -> Result<RunSummary> {
    let started = Instant::now();
    let t = cfg.train.clone();
    eprintln!("device: {}", backend.name());

    let mut data = data::open(&mut cfg, live)?;
    let unigram_entropy = data.unigram_entropy;
    eprintln!(
        "data: {}: tokenizer {} tokens; {} train / {} val tokens",
        data.dir.display(),
        cfg.model.vocab_size,
        data.train_tokens,
        data.val_tokens
    );
    let val_batches = std::mem::take(&mut data.val_batches);

    let mut model = Gpt::new(backend, cfg.model, t.batch_size, t.seq_len, true)?;
    model.init_gpt2(t.seed)?;
    let (planned, naive) = model.exec.plan.activation_bytes();
    eprintln!(
        "model: {} layers, {} heads, {} wide, block {}, vocab {} (padded {}): {:.2}M parameters",
        cfg.model.n_layer,
        cfg.model.n_head,
        cfg.model.n_embd,
        cfg.model.block_size,
        cfg.model.vocab_size,
        cfg.model.padded_vocab(),
        cfg.model.num_params() as f64 / 1e6
    );
    eprintln!(
        "memory plan: activations {:.1} MB planned vs {:.1} MB one-buffer-per-tensor ({:.1}x less); arena {:.1} MB",
        planned as f64 / 1e6,
        naive as f64 / 1e6,
        naive as f64 / planned.max(1) as f64,
        model.exec.plan.total as f64 * 4.0 / 1e6
    );

    let schedule = LrSchedule {
        max_lr: t.lr,
        min_lr: t.min_lr,
        warmup_steps: t.warmup_steps,
        total_steps: t.max_steps,
    };
    let mut progress = Progress::new("step", t.max_steps as u64, Unit::Steps, live);
    let tokens_per_step = t.batch_size * t.seq_len * t.grad_accum;
    let mut train_seconds = 0.0;
    let mut losses = Vec::with_capacity(t.max_steps);
    let mut val_loss = f32::NAN;
    let mut stopped_early = false;
    progress.println(&format!(
        "step 0: val loss {:.4} | unigram entropy {unigram_entropy:.4}",
        evaluate(&mut model, &val_batches)?
    ));
    for step in 0..t.max_steps {
        let step_start = Instant::now();
        let lr = schedule.lr(step);
        model.exec.zero_grads();
        let mut loss = 0.0;
        for _ in 0..t.grad_accum {
            let batch = data.train.next_batch();
            model.set_batch(&batch.inputs, Some(&batch.targets))?;
            loss += model.forward_backward()? / t.grad_accum as f32;
        }
        if !loss.is_finite() {
            return Err(Error::Data(format!(
                "training diverged: loss is {loss} at step {}; lower train.lr",
                step + 1
            )));
        }
        // The accumulators hold the sum of the micro-batch gradients: scale by 1/accum.
        let norm = model.exec.grad_norm() / t.grad_accum as f64;
        let clip = clip_factor(norm, cfg.optimizer.grad_clip);
        model.exec.adamw(
            &AdamWStep {
                lr,
                beta1: cfg.optimizer.beta1,
                beta2: cfg.optimizer.beta2,
                eps: cfg.optimizer.eps,
                step: step as u64 + 1,
                grad_scale: clip / t.grad_accum as f32,
            },
            cfg.optimizer.weight_decay,
        );
        train_seconds += step_start.elapsed().as_secs_f64();
        losses.push(loss);
        let done = step + 1;
        let tok_s = (done * tokens_per_step) as f64 / train_seconds;
        let eta = (t.max_steps - done) as f64 * started.elapsed().as_secs_f64() / done as f64;
        progress.set(
            done as u64,
            &format!(
                "loss {loss:.4} | lr {lr:.2e} | norm {norm:.2} | {tok_s:.0} tok/s | ETA {}",
                format_duration(eta)
            ),
        );
        let out_of_time = t.max_seconds > 0.0 && started.elapsed().as_secs_f64() > t.max_seconds;
        if done % t.eval_every == 0 || done == t.max_steps || out_of_time {
            val_loss = evaluate(&mut model, &val_batches)?;
            progress.println(&format!(
                "step {done}: train loss {loss:.4} | val loss {val_loss:.4} | unigram entropy {unigram_entropy:.4}"
            ));
        }
        if out_of_time && done < t.max_steps {
            progress.println(&format!(
                "stopping after {done} steps: train.max_seconds ({}) reached",
                t.max_seconds
            ));
            stopped_early = true;
            break;
        }
    }
    progress.finish();

    // A sample from the trained model: continue the first line of the validation text.
    let mut sampler = Gpt::new(CpuBackend::new(), cfg.model, 1, t.seq_len, false)?;
    sampler.copy_params_from(&model)?;
    let prompt = data.tokenizer.encode(&format!("{}\n", data.prompt))?;
    let opts = SampleOptions {
        max_new_tokens: t.sample_tokens,
        temperature: 0.8,
        top_k: 40,
        seed: t.seed,
    };
    let ids = generate::sample(
        &mut sampler,
        &prompt,
        &opts,
        Some(data.tokenizer.eot()),
        |_| {},
    )?;
    let sample = data
        .tokenizer
        .decode(&[prompt.as_slice(), ids.as_slice()].concat())?;

    std::fs::create_dir_all(&t.out).map_err(|e| Error::io(&t.out, e))?;
    let ckpt = t.out.join("checkpoint");
    checkpoint::save(&ckpt, &cfg.model, &model.state()?, &data.tokenizer)?;
    let tail = (losses.len() / 10).max(1);
    let summary = RunSummary {
        train_loss: losses[losses.len() - tail..].iter().sum::<f32>() / tail as f32,
        val_loss,
        unigram_entropy,
        steps: losses.len(),
        seconds: started.elapsed().as_secs_f64(),
        tokens_per_second: (losses.len() * tokens_per_step) as f64 / train_seconds,
        params: cfg.model.num_params(),
        device: model.exec.backend.name(),
        stopped_early,
        data_dir: data.dir.clone(),
        epochs: data.train.epoch_fraction(),
        loader_position: data.train.position(),
        sample,
        config: cfg.clone(),
    };
    let json = serde_json::to_vec_pretty(&summary).expect("summary serializes");
    write_atomic(&t.out.join("summary.json"), &json)?;
    eprintln!("checkpoint: {}", ckpt.display());
    Ok(summary)
}
