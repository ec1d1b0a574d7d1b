//! The settings of a training run, read from TOML. Every key has a default, so an empty
//! file (or none) trains the bundled model; unknown keys are errors, not silently ignored.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::GptConfig;
use crate::optim::AdamWConfig;

/// Where the tokens come from: a data set made by `prepare` (`dir`), or else a text corpus
/// that the run prepares itself through the same pipeline, cached under `cache`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// A prepared data set (manifest.json, tokenizer.json, shards); overrides `corpus`.
    pub dir: Option<PathBuf>,
    /// Text to prepare when `dir` is not set: files or a folder (.txt, .jsonl, .gz).
    pub corpus: PathBuf,
    /// Tokenizer for automatic preparation: `bpe` (of model.vocab_size tokens), `gpt2`, or
    /// the path of a tokenizer.json.
    pub tokenizer: String,
    /// Share of documents held out for validation / test in automatic preparation.
    pub val_fraction: f64,
    pub test_fraction: f64,
    /// Where automatically prepared data sets are cached.
    pub cache: PathBuf,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            dir: None,
            corpus: PathBuf::from("data/shakespeare"),
            tokenizer: "bpe".into(),
            val_fraction: 0.1,
            test_fraction: 0.05,
            cache: PathBuf::from("runs/data"),
        }
    }
}

/// The training loop's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// `auto` (CUDA when this build has kernels and a GPU is present, else the CPU), `cpu`,
    /// `cuda`, or `emu` (the CUDA kernels emulated on the CPU: slow, for testing).
    pub device: String,
    /// Matmul and attention arithmetic on CUDA: `auto` (bf16 on CUDA), `bf16` (tensor cores,
    /// f32 storage and accumulation) or `f32`. The CPU always computes in f32.
    pub precision: String,
    /// Run directory: checkpoints/, checkpoint/, metrics.jsonl, loss.png, summary.json.
    pub out: PathBuf,
    pub batch_size: usize,
    pub seq_len: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    pub max_steps: usize,
    /// Peak learning rate.
    pub lr: f32,
    /// Floor of the cosine decay; unset means a tenth of `lr` (as nanoGPT), fixed when the
    /// run starts ([`RunConfig::resolve`]) so that a checkpoint records the schedule it used.
    pub min_lr: Option<f32>,
    pub warmup_steps: usize,
    /// Evaluate validation loss every this many steps (and at the end).
    pub eval_every: usize,
    /// Validation batches per evaluation.
    pub eval_batches: usize,
    pub seed: u64,
    /// Tokens to generate as a sample at the end.
    pub sample_tokens: usize,
    /// Stop early (saving as usual) once training has run this long; 0 means no limit.
    pub max_seconds: f64,
    /// CPU threads; 0 means one per core.
    pub threads: usize,
    /// Save a resumable checkpoint (`checkpoints/step_NNNNNNN/`) every this many steps, and
    /// at the end; 0 means at each evaluation.
    pub checkpoint_every: usize,
    /// Step checkpoints to keep (the latest); 0 keeps all.
    pub keep_checkpoints: usize,
    /// Stop (saving a checkpoint as usual) after this many steps while keeping the schedule
    /// of `max_steps`, to continue later with `--resume`; 0 means run to max_steps.
    pub stop_at_step: usize,
    /// Start from the weights of this model directory (a smelt checkpoint or a Hugging Face
    /// GPT-2 `save_pretrained` folder) instead of a fresh initialisation: fine-tuning. Its
    /// config.json replaces [model], and data is tokenized with its tokenizer.json.
    pub init_from: Option<PathBuf>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            device: "auto".into(),
            precision: "auto".into(),
            out: PathBuf::from("runs/default"),
            batch_size: 16,
            seq_len: 128,
            grad_accum: 1,
            max_steps: 1500,
            lr: 3e-3,
            min_lr: None,
            warmup_steps: 30,
            eval_every: 100,
            eval_batches: 8,
            seed: 1337,
            sample_tokens: 160,
            max_seconds: 0.0,
            threads: 0,
            checkpoint_every: 0,
            keep_checkpoints: 3,
            stop_at_step: 0,
            init_from: None,
        }
    }
}

/// A whole run: `[model]`, `[data]`, `[train]`, `[optimizer]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    pub model: GptConfig,
    pub data: DataConfig,
    pub train: TrainConfig,
    pub optimizer: AdamWConfig,
}

impl RunConfig {
    /// Parses TOML text; `origin` names the file in error messages.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let message = e.message().replace('\n', " ");
            let at = line.map(|l| format!(" line {l}:")).unwrap_or_default();
            Error::Config(format!(
                "{origin}:{at} {message}; fix the config (`train --help` lists the keys)"
            ))
        })
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("config {}: {e}", path.display())))?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Fills in the settings whose default follows from others: `train.min_lr` (a tenth of
    /// `train.lr` when unset).
    pub fn resolve(&mut self) {
        let t = &mut self.train;
        t.min_lr.get_or_insert(t.lr / MIN_LR_DIVISOR);
    }

    /// The floor of the learning-rate schedule (see [`TrainConfig::min_lr`]).
    pub fn min_lr(&self) -> f32 {
        let t = &self.train;
        t.min_lr.unwrap_or(t.lr / MIN_LR_DIVISOR)
    }

    /// Checks the settings that do not depend on the data. Every float must be a finite
    /// number (NaN and infinities compare false with everything, so each range check below
    /// is written to fail for them).
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: &str| Err(Error::Config(msg.to_string()));
        self.check_floats()?;
        self.model.validate()?;
        let t = &self.train;
        if t.seq_len > self.model.block_size {
            return Err(Error::Config(format!(
                "train.seq_len ({}) is longer than model.block_size ({}); lower seq_len or raise block_size",
                t.seq_len, self.model.block_size
            )));
        }
        if t.batch_size == 0 || t.seq_len == 0 || t.grad_accum == 0 {
            return bad("train.batch_size, train.seq_len and train.grad_accum must be at least 1");
        }
        if t.max_steps == 0 {
            return bad("train.max_steps must be at least 1");
        }
        if t.eval_every == 0 || t.eval_batches == 0 {
            return bad("train.eval_every and train.eval_batches must be at least 1");
        }
        if !matches!(t.precision.as_str(), "auto" | "bf16" | "f32") {
            return Err(Error::Config(format!(
                "train.precision '{}' is not one of auto, bf16, f32",
                t.precision
            )));
        }
        match t.device.as_str() {
            "auto" | "cpu" | "cuda" | "emu" => Ok(()),
            other => Err(Error::Config(format!(
                "train.device '{other}' is not one of auto, cpu, cuda, emu"
            ))),
        }
    }

    /// Each float setting against its range, naming the key and the value.
    fn check_floats(&self) -> Result<()> {
        let (t, d, o) = (&self.train, &self.data, &self.optimizer);
        let min_lr = self.min_lr();
        let fractions = d.val_fraction + d.test_fraction;
        let checks = [
            FloatCheck::new("train.lr", t.lr, t.lr > 0.0, "a positive number"),
            FloatCheck::new(
                "train.min_lr",
                min_lr,
                (0.0..=t.lr).contains(&min_lr),
                "between 0 and train.lr (unset: train.lr / 10)",
            ),
            FloatCheck::new(
                "train.max_seconds",
                t.max_seconds,
                t.max_seconds >= 0.0,
                "a number of seconds >= 0 (0: no limit)",
            ),
            FloatCheck::new(
                "data.val_fraction",
                d.val_fraction,
                d.val_fraction > 0.0 && d.val_fraction < 1.0,
                "above 0 and below 1",
            ),
            FloatCheck::new(
                "data.test_fraction",
                d.test_fraction,
                d.test_fraction >= 0.0 && fractions < 1.0,
                "at least 0, with data.val_fraction + data.test_fraction below 1",
            ),
            FloatCheck::new(
                "optimizer.beta1",
                o.beta1,
                (0.0..1.0).contains(&o.beta1),
                "in [0, 1)",
            ),
            FloatCheck::new(
                "optimizer.beta2",
                o.beta2,
                (0.0..1.0).contains(&o.beta2),
                "in [0, 1)",
            ),
            FloatCheck::new("optimizer.eps", o.eps, o.eps > 0.0, "a positive number"),
            FloatCheck::new(
                "optimizer.weight_decay",
                o.weight_decay,
                o.weight_decay >= 0.0,
                "a number >= 0",
            ),
            FloatCheck::new(
                "optimizer.grad_clip",
                o.grad_clip,
                o.grad_clip >= 0.0,
                "a number >= 0 (0: no clipping)",
            ),
        ];
        match checks.into_iter().find(|c| !(c.finite && c.in_range)) {
            Some(c) => Err(Error::Config(format!(
                "{} is {}; it must be {}",
                c.key, c.shown, c.want
            ))),
            None => Ok(()),
        }
    }
}

/// One float setting: whether it is finite and in its range, and how to say what it must be.
struct FloatCheck {
    key: &'static str,
    /// The value as its type prints it (`1e38`, `NaN`, `inf`, `0.1`).
    shown: String,
    finite: bool,
    in_range: bool,
    want: &'static str,
}

impl FloatCheck {
    /// `x` as its own type (f32 or f64) shows and judges it.
    fn new<F: num_traits::Float + std::fmt::Debug>(
        key: &'static str,
        x: F,
        in_range: bool,
        want: &'static str,
    ) -> Self {
        FloatCheck {
            key,
            shown: format!("{x:?}"),
            finite: x.is_finite(),
            in_range,
            want,
        }
    }
}

/// An unset `train.min_lr` is `train.lr` divided by this.
pub const MIN_LR_DIVISOR: f32 = 10.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults_and_partial_sections_merge() {
        assert_eq!(RunConfig::from_toml("", "x").unwrap(), RunConfig::default());
        let c = RunConfig::from_toml("[model]\nn_layer = 2\n[train]\nlr = 1e-3\n", "x").unwrap();
        assert_eq!(c.model.n_layer, 2);
        assert_eq!(c.model.n_head, GptConfig::default().n_head);
        assert_eq!(c.train.lr, 1e-3);
    }

    #[test]
    fn unknown_key_and_bad_syntax_are_one_line_errors() {
        let e = RunConfig::from_toml("[train]\nlr = 1e-3\nlearning_rate = 2\n", "c.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("c.toml: line 3") && e.contains("learning_rate"),
            "{e}"
        );
        assert!(!e.contains('\n'));
        let e = RunConfig::from_toml("[train\nlr = ", "c.toml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("c.toml: line 1"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn inconsistent_settings_are_rejected() {
        let mut c = RunConfig::default();
        c.model.n_embd = 130;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("not divisible by n_head"));
        let mut c = RunConfig::default();
        c.train.seq_len = c.model.block_size + 1;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("longer than model.block_size"));
    }

    #[test]
    fn every_float_setting_rejects_nan_and_infinities() {
        type Set = fn(&mut RunConfig, f64);
        let settings: [(&str, Set); 10] = [
            ("train.lr", |c, x| c.train.lr = x as f32),
            ("train.min_lr", |c, x| c.train.min_lr = Some(x as f32)),
            ("train.max_seconds", |c, x| c.train.max_seconds = x),
            ("data.val_fraction", |c, x| c.data.val_fraction = x),
            ("data.test_fraction", |c, x| c.data.test_fraction = x),
            ("optimizer.beta1", |c, x| c.optimizer.beta1 = x as f32),
            ("optimizer.beta2", |c, x| c.optimizer.beta2 = x as f32),
            ("optimizer.eps", |c, x| c.optimizer.eps = x as f32),
            ("optimizer.weight_decay", |c, x| {
                c.optimizer.weight_decay = x as f32
            }),
            ("optimizer.grad_clip", |c, x| {
                c.optimizer.grad_clip = x as f32
            }),
        ];
        for (key, set) in settings {
            for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
                let mut c = RunConfig::default();
                set(&mut c, x);
                let e = c.validate().expect_err(key).to_string();
                assert!(e.starts_with(&format!("{key} is ")), "{key} = {x}: {e}");
            }
        }
        RunConfig::default().validate().unwrap();
    }

    #[test]
    fn min_lr_defaults_to_a_tenth_of_lr_and_resolves_once() {
        let mut c = RunConfig::default();
        c.train.lr = 1e-4;
        assert_eq!(c.min_lr(), 1e-4 / MIN_LR_DIVISOR);
        c.resolve();
        assert_eq!(c.train.min_lr, Some(1e-4 / MIN_LR_DIVISOR));
        // A checkpoint's trainer_state.json written before min_lr was optional still reads.
        let old = r#"{"train": {"lr": 0.003, "min_lr": 0.0003}}"#;
        let c: RunConfig = serde_json::from_str(old).unwrap();
        assert_eq!(c.train.min_lr, Some(3e-4));
    }
}
