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
    /// Floor of the cosine decay.
    pub min_lr: f32,
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
            min_lr: 3e-4,
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

    /// Checks the settings that do not depend on the data.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: &str| Err(Error::Config(msg.to_string()));
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
        if !(t.lr > 0.0 && t.lr.is_finite()) || t.min_lr < 0.0 || t.min_lr > t.lr {
            return bad("train.lr must be positive and train.min_lr between 0 and lr");
        }
        if t.eval_every == 0 || t.eval_batches == 0 {
            return bad("train.eval_every and train.eval_batches must be at least 1");
        }
        let d = &self.data;
        if !(d.val_fraction > 0.0
            && d.test_fraction >= 0.0
            && d.val_fraction + d.test_fraction < 1.0)
        {
            return bad(
                "data.val_fraction must be > 0, data.test_fraction >= 0, and their sum < 1",
            );
        }
        let o = &self.optimizer;
        if !(0.0..1.0).contains(&o.beta1)
            || !(0.0..1.0).contains(&o.beta2)
            || o.eps <= 0.0
            || o.weight_decay < 0.0
        {
            return bad("optimizer: beta1 and beta2 must be in [0, 1), eps > 0, weight_decay >= 0");
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
}

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
}
