//! The training run: corpus → tokenizer → token streams → GPT → AdamW steps with periodic
//! validation and resumable checkpoints → sample → exported checkpoint and `summary.json`.
//! The run directory also gets the training record: `metrics.jsonl` and `loss.svg`.

pub mod config;
pub mod data;
pub mod divergence;
pub mod plot;
pub mod record;
pub mod state;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

pub use config::RunConfig;
use divergence::{check_grad_norm, check_loss, non_finite_state, Divergence};
use plot::write_loss_chart;
use record::{EvalMetrics, Metrics, StepMetrics};
use state::{TrainerState, ValPoint};

use crate::backend::cpu::CpuBackend;
use crate::backend::select::{self, DeviceJob};
use crate::backend::{AdamWStep, Backend};
use crate::checkpoint;
use crate::data::batches::Batch;
use crate::error::{Error, Result};
use crate::generate::{self, SampleOptions};
use crate::model::{hf, Gpt};
use crate::optim::{clip_factor, LrSchedule};
use crate::progress::{format_duration, Progress, Unit};

/// What a run reports at the end (also written as `summary.json`).
#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    /// Mean training loss over the last `train_loss_steps` steps (10% of the run).
    pub train_loss: f32,
    pub train_loss_steps: usize,
    /// Training loss of the last step alone.
    pub last_train_loss: f32,
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
    /// The end-of-run sample: the prompt, and the text the model generated after it.
    pub sample_prompt: String,
    pub sample: String,
    pub config: RunConfig,
}

/// Training, as a job for whichever backend `train.device` selects.
struct TrainJob {
    cfg: RunConfig,
    opts: RunOptions,
}

impl DeviceJob for TrainJob {
    type Output = Outcome;
    fn run<B: Backend>(self, backend: B) -> Result<Outcome> {
        run_on(backend, self.cfg, self.opts)
    }
}

/// Resolves the run's device and trains on it.
fn run_on_device(cfg: RunConfig, opts: RunOptions) -> Result<Outcome> {
    let (device, precision) = (cfg.train.device.clone(), cfg.train.precision.clone());
    select::run_on_device(&device, &precision, TrainJob { cfg, opts })
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

/// How to run: the progress bar, a checkpoint to resume from, a flag that stops the run.
#[derive(Default)]
pub struct RunOptions {
    /// The live terminal progress bar (else plain log lines).
    pub live: bool,
    /// Continue from this checkpoint (its config must be the run's, see
    /// [`state::Resume::check_config`]).
    pub resume: Option<state::Resume>,
    /// Set (e.g. by a Ctrl-C handler) to stop after the current step, saving a checkpoint.
    pub stop: Option<Arc<AtomicBool>>,
}

/// How a run ended.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Trained to the end (or to `max_seconds` / `stop_at_step`) and exported.
    Finished(Box<RunSummary>),
    /// Stopped by [`RunOptions::stop`] after `step` steps; `checkpoint` resumes it.
    Interrupted { step: usize, checkpoint: PathBuf },
}

/// Runs training as configured. `live` enables the terminal progress bar.
pub fn run(cfg: RunConfig, live: bool) -> Result<RunSummary> {
    let opts = RunOptions {
        live,
        ..RunOptions::default()
    };
    match run_with(cfg, opts)? {
        Outcome::Finished(summary) => Ok(*summary),
        Outcome::Interrupted { .. } => unreachable!("no stop flag was given"),
    }
}

/// Runs training as configured, resuming and stopping as `opts` says.
pub fn run_with(mut cfg: RunConfig, opts: RunOptions) -> Result<Outcome> {
    if let Some(r) = &opts.resume {
        cfg.train.out = r.run_dir();
        r.check_config(&cfg)?;
    } else if let Some(dir) = cfg.train.init_from.clone() {
        // The imported model defines the architecture and the tokenizer.
        let (model, _) = hf::load_config(&dir.join("config.json"))?;
        cfg.model = model;
        cfg.data.tokenizer = dir.join("tokenizer.json").to_string_lossy().into_owned();
    }
    cfg.resolve();
    // Settings first: a bad one is the error to report, whatever the run directory holds.
    cfg.validate()?;
    if opts.resume.is_none() {
        // (A resumed run's directory is repaired when its checkpoint is opened.)
        for repair in checkpoint::repair(&cfg.train.out)? {
            eprintln!("cleanup: {repair}");
        }
        // Never delete an earlier run's checkpoints: continue it or train elsewhere.
        let checkpoints = cfg.train.out.join(checkpoint::CHECKPOINTS);
        let earlier = checkpoint::list_steps(&checkpoints)?;
        if !earlier.is_empty() {
            return Err(Error::Config(format!(
                "{} holds {} checkpoints of an earlier run: continue it with --resume {}, or choose another --out",
                checkpoints.display(),
                earlier.len(),
                cfg.train.out.display()
            )));
        }
    }
    crate::threads::init(cfg.train.threads, "train.threads")?;
    run_on_device(cfg, opts)
}

/// Everything a checkpoint's trainer state is made of, as the loop keeps it.
struct Progression {
    train_losses: Vec<f32>,
    val_losses: Vec<ValPoint>,
    train_seconds: f64,
    /// Seconds of the run before this process (when resumed).
    elapsed_before: f64,
    /// The line of checkpoints this run saves into, and the step it started from.
    line: String,
    parent: Option<usize>,
}

/// Saves the step checkpoint after `step` steps (with a copy of the metrics so far), makes
/// it the run's latest, and prunes the line's older checkpoints.
fn save_checkpoint<B: Backend>(
    model: &Gpt<B>,
    cfg: &RunConfig,
    data: &data::TrainData,
    step: usize,
    p: &Progression,
    metrics: &mut Metrics,
    started: &Instant,
) -> Result<PathBuf> {
    let state = TrainerState {
        step,
        loader: data.train.position(),
        batch_order: data.train.order(),
        config: cfg.clone(),
        data_dir: data.dir.clone(),
        train_losses: p.train_losses.clone(),
        val_losses: p.val_losses.clone(),
        train_seconds: p.train_seconds,
        elapsed_seconds: p.elapsed_before + started.elapsed().as_secs_f64(),
        line: p.line.clone(),
        parent: p.parent,
    };
    let json = serde_json::to_vec_pretty(&state).expect("trainer state serializes");
    let optimizer = state::optimizer_state(model)?;
    metrics.sync()?;
    let t = &cfg.train;
    let checkpoints = t.out.join(checkpoint::CHECKPOINTS);
    let dir = checkpoint::save_step(
        &checkpoints,
        step,
        &cfg.model,
        &model.state()?,
        &data.tokenizer,
        &checkpoint::TrainingState {
            optimizer: &optimizer,
            trainer_state: &json,
            metrics: &metrics.contents()?,
        },
    )?;
    state::prune_line(&checkpoints, &p.line, t.keep_checkpoints)?;
    Ok(dir)
}

/// Ends a diverged run: the progress bar cleared, the one-line error.
fn stop(progress: &Progress, d: Divergence, cfg: &RunConfig, last_good: &Option<PathBuf>) -> Error {
    progress.finish();
    d.into_error(cfg, last_good.as_deref())
}

/// Trains on `backend`.
fn run_on<B: Backend>(backend: B, mut cfg: RunConfig, opts: RunOptions) -> Result<Outcome> {
    let started = Instant::now();
    let live = opts.live;
    let t = cfg.train.clone();
    eprintln!("device: {}", backend.name());

    let imported = match (&t.init_from, &opts.resume) {
        (Some(dir), None) => Some(hf::load_model(dir)?),
        _ => None,
    };
    let configured_vocab = cfg.model.vocab_size;
    let mut data = data::open(&mut cfg, live)?;
    if imported.is_none() && opts.resume.is_none() && configured_vocab != cfg.model.vocab_size {
        eprintln!(
            "note: model.vocab_size ({configured_vocab}) is not used: the vocabulary is the data set's tokenizer's ({} tokens, {})",
            cfg.model.vocab_size,
            data.dir.join("tokenizer.json").display()
        );
    }
    if let Some(m) = &imported {
        // data::open sized the vocabulary by the tokenizer; the imported weights may have
        // more rows (GPT-2: 50257 tokens). The data must be tokenized by the model's tokenizer.
        let model_json = t.init_from.as_ref().map(|d| d.join("tokenizer.json"));
        crate::data::dataset::same_tokenizer(
            &data.dir,
            &data.tokenizer,
            &m.tokenizer,
            model_json.as_deref(),
        )?;
        cfg.model = m.config;
    }
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
    let resume = opts.resume.as_ref();
    let (line, parent) = resume.map_or((state::new_line_id(), None), |r| r.lineage());
    let mut progression = Progression {
        train_losses: Vec::with_capacity(t.max_steps),
        val_losses: Vec::new(),
        train_seconds: 0.0,
        elapsed_before: 0.0,
        line,
        parent,
    };
    match resume {
        Some(r) => {
            let s = &r.state;
            if s.config.model != cfg.model {
                return Err(Error::Checkpoint(format!(
                    "--resume {}: the data set's tokenizer has {} tokens but the checkpoint's model has {}",
                    r.dir.display(),
                    cfg.model.vocab_size,
                    s.config.model.vocab_size
                )));
            }
            if data.train.order() != s.batch_order {
                return Err(Error::Checkpoint(format!(
                    "--resume {}: the checkpoint's batch order {:?} is not this run's {:?}",
                    r.dir.display(),
                    s.batch_order,
                    data.train.order()
                )));
            }
            if data.dir != s.data_dir {
                eprintln!(
                    "note: the checkpoint trained on {}, this run reads {}",
                    s.data_dir.display(),
                    data.dir.display()
                );
            }
            model.load(&checkpoint::read_safetensors(
                &r.dir.join("model.safetensors"),
            )?)?;
            state::load_optimizer_state(
                &mut model,
                &checkpoint::read_safetensors(&r.dir.join("optimizer.safetensors"))?,
            )?;
            data.train.seek(s.loader)?;
            progression.train_losses.extend_from_slice(&s.train_losses);
            progression.val_losses = s.val_losses.clone();
            progression.train_seconds = s.train_seconds;
            progression.elapsed_before = s.elapsed_seconds;
        }
        None => match &imported {
            Some(m) => {
                model.load(&m.weights)?;
                eprintln!(
                    "model: initialised from {}",
                    t.init_from.as_ref().expect("imported").display()
                );
            }
            None => model.init_gpt2(t.seed)?,
        },
    }
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

    let first_step = resume.map_or(0, |r| r.state.step);
    let mut metrics = match resume {
        Some(r) => Metrics::resume(&t.out, &r.dir, r.state.step)?,
        None => Metrics::create(&t.out)?,
    };
    let plot_path = t.out.join("loss.svg");

    let schedule = LrSchedule {
        max_lr: t.lr,
        min_lr: cfg.min_lr(),
        warmup_steps: t.warmup_steps,
        total_steps: t.max_steps,
    };
    let checkpoint_every = if t.checkpoint_every == 0 {
        t.eval_every
    } else {
        t.checkpoint_every
    };
    let mut progress = Progress::new("step", t.max_steps as u64, Unit::Steps, live);
    let tokens_per_step = t.batch_size * t.seq_len * t.grad_accum;
    let mut val_loss = progression
        .val_losses
        .last()
        .map_or(f32::NAN, |v| v.val_loss);
    let mut stopped_early = false;
    progress.println(&format!(
        "schedule: the learning rate warms up to {:e} over {} steps, then decays to {:e} (train.min_lr) by step {}",
        t.lr,
        t.warmup_steps,
        cfg.min_lr(),
        t.max_steps
    ));
    match resume {
        Some(r) => {
            progress.set(first_step as u64, "");
            progress.println(&format!(
                "resumed from {} at step {first_step} of {}",
                r.dir.display(),
                t.max_steps
            ));
            if let (true, Some(latest)) = (r.branches(), &r.latest) {
                progress.println(&format!(
                    "note: {} is not the run's latest checkpoint ({}): this starts a new line from step {first_step}; --resume {} now continues it, and its saves replace the other line's checkpoints of the same steps",
                    r.dir.display(),
                    latest.display(),
                    t.out.display()
                ));
            }
        }
        None => {
            val_loss = evaluate(&mut model, &val_batches)?;
            metrics.eval(&EvalMetrics { step: 0, val_loss })?;
            progression.val_losses.push(ValPoint { step: 0, val_loss });
            progress.println(&format!(
                "step 0: val loss {val_loss:.4} | unigram entropy {unigram_entropy:.4}"
            ));
        }
    }
    // The newest checkpoint known to be good (saved by this run, or the one it resumed):
    // where a diverged run can go back to.
    let mut last_good = resume.map(|r| r.dir.clone());
    for step in first_step..t.max_steps {
        let step_start = Instant::now();
        let lr = schedule.lr(step);
        model.exec.zero_grads();
        let mut loss = 0.0;
        for _ in 0..t.grad_accum {
            let batch = data.train.next_batch()?;
            model.set_batch(&batch.inputs, Some(&batch.targets))?;
            loss += model.forward_backward()? / t.grad_accum as f32;
        }
        check_loss(step + 1, loss).map_err(|d| stop(&progress, d, &cfg, &last_good))?;
        // The accumulators hold the sum of the micro-batch gradients: scale by 1/accum.
        let norm = model.exec.grad_norm() / t.grad_accum as f64;
        check_grad_norm(step + 1, loss, norm).map_err(|d| stop(&progress, d, &cfg, &last_good))?;
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
        if let Some((region, tensor)) = non_finite_state(&model)? {
            let d = Divergence::Update {
                step: step + 1,
                region,
                tensor,
                lr,
                norm,
            };
            return Err(stop(&progress, d, &cfg, &last_good));
        }
        let step_seconds = step_start.elapsed().as_secs_f64();
        progression.train_seconds += step_seconds;
        progression.train_losses.push(loss);
        let done = step + 1;
        metrics.step(&StepMetrics {
            step: done,
            train_loss: loss,
            lr,
            grad_norm: norm,
            tokens_per_second: tokens_per_step as f64 / step_seconds.max(1e-9),
        })?;
        let tok_s =
            (progression.train_losses.len() * tokens_per_step) as f64 / progression.train_seconds;
        let eta = (t.max_steps - done) as f64 * started.elapsed().as_secs_f64()
            / (done - first_step) as f64;
        progress.set(
            done as u64,
            &format!(
                "step loss {loss:.4} | lr {lr:.2e} | norm {norm:.2} | {tok_s:.0} tok/s | ETA {}",
                format_duration(eta)
            ),
        );
        let interrupted = opts
            .stop
            .as_ref()
            .is_some_and(|flag| flag.load(Ordering::SeqCst));
        let out_of_time = t.max_seconds > 0.0 && started.elapsed().as_secs_f64() > t.max_seconds;
        let stop_here = t.stop_at_step > 0 && done >= t.stop_at_step;
        let last = done == t.max_steps || out_of_time || stop_here;
        if done % t.eval_every == 0 || last {
            val_loss = evaluate(&mut model, &val_batches)?;
            if !val_loss.is_finite() {
                let d = Divergence::ValLoss {
                    step: done,
                    val_loss,
                };
                return Err(stop(&progress, d, &cfg, &last_good));
            }
            // The training loss over the steps since the previous evaluation.
            let since = progression.val_losses.last().map_or(0, |v| v.step);
            let recent = &progression.train_losses[since.min(done - 1)..done];
            let recent_mean = recent.iter().sum::<f32>() / recent.len() as f32;
            metrics.eval(&EvalMetrics {
                step: done,
                val_loss,
            })?;
            progression.val_losses.push(ValPoint {
                step: done,
                val_loss,
            });
            progress.println(&format!(
                "step {done}: train loss {recent_mean:.4} (mean of steps {}-{done}) | val loss {val_loss:.4} | unigram entropy {unigram_entropy:.4}",
                done + 1 - recent.len()
            ));
            write_loss_chart(
                &plot_path,
                &progression.train_losses,
                &progression.val_losses,
            )?;
        }
        if done % checkpoint_every == 0 || last || interrupted {
            let dir = save_checkpoint(
                &model,
                &cfg,
                &data,
                done,
                &progression,
                &mut metrics,
                &started,
            )?;
            last_good = Some(dir);
        }
        if interrupted {
            progress.finish();
            write_loss_chart(
                &plot_path,
                &progression.train_losses,
                &progression.val_losses,
            )?;
            let checkpoint = last_good.expect("saved above");
            return Ok(Outcome::Interrupted {
                step: done,
                checkpoint,
            });
        }
        if last && done < t.max_steps {
            let why = if out_of_time {
                format!("train.max_seconds ({}) reached", t.max_seconds)
            } else {
                format!("train.stop_at_step ({}) reached", t.stop_at_step)
            };
            progress.println(&format!(
                "stopping after {done} steps: {why}; continue with --resume {}",
                t.out.display()
            ));
            stopped_early = true;
            break;
        }
    }
    progress.finish();
    let losses = &progression.train_losses;
    let train_seconds = progression.train_seconds;

    // A sample from the trained model: continue the first line of the validation text.
    let mut sampler = Gpt::new(CpuBackend::new(), cfg.model, 1, t.seq_len, false)?;
    sampler.copy_params_from(&model)?;
    let prompt = data.tokenizer.encode(&format!("{}\n", data.prompt))?;
    let sample_opts = SampleOptions {
        max_new_tokens: t.sample_tokens,
        temperature: 0.8,
        top_k: 40,
        seed: t.seed,
    };
    let ids = generate::sample(
        &mut sampler,
        &prompt,
        &sample_opts,
        Some(data.tokenizer.eot()),
        |_| {},
    )?;
    let sample = data.tokenizer.decode(&ids)?;

    std::fs::create_dir_all(&t.out).map_err(|e| Error::io(&t.out, e))?;
    let ckpt = t.out.join("checkpoint");
    checkpoint::save(&ckpt, &cfg.model, &model.state()?, &data.tokenizer)?;
    let tail = (losses.len() / 10).max(1);
    let summary = RunSummary {
        train_loss: losses[losses.len() - tail..].iter().sum::<f32>() / tail as f32,
        train_loss_steps: tail,
        last_train_loss: *losses.last().expect("at least one step"),
        val_loss,
        unigram_entropy,
        steps: losses.len(),
        seconds: progression.elapsed_before + started.elapsed().as_secs_f64(),
        tokens_per_second: (losses.len() * tokens_per_step) as f64 / train_seconds,
        params: cfg.model.num_params(),
        device: model.exec.backend.name(),
        stopped_early,
        data_dir: data.dir.clone(),
        epochs: data.train.epoch_fraction(),
        loader_position: data.train.position(),
        sample_prompt: format!("{}\n", data.prompt),
        sample,
        config: cfg.clone(),
    };
    let json = serde_json::to_vec_pretty(&summary).expect("summary serializes");
    write_atomic(&t.out.join("summary.json"), &json)?;
    if let Some(dir) = &last_good {
        eprintln!("resumable checkpoint: {}", dir.display());
    }
    eprintln!("checkpoint: {}", ckpt.display());
    Ok(Outcome::Finished(Box::new(summary)))
}
