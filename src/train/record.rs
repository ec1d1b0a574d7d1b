//! The training record in the run directory: `metrics.jsonl`, one JSON object per step and
//! per evaluation. (The loss chart drawn from it is [`super::plot`].)

use std::fs;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A line of `metrics.jsonl` for an optimizer step.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepMetrics {
    pub step: usize,
    pub train_loss: f32,
    pub lr: f32,
    pub grad_norm: f64,
    pub tokens_per_second: f64,
}

/// A line of `metrics.jsonl` for an evaluation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalMetrics {
    pub step: usize,
    pub val_loss: f32,
}

/// `metrics.jsonl`, open for appending.
pub struct Metrics {
    path: PathBuf,
    file: fs::File,
}

#[derive(Deserialize)]
struct AnyLine {
    step: usize,
}

impl Metrics {
    /// Starts `run_dir/metrics.jsonl` afresh.
    pub fn create(run_dir: &Path) -> Result<Self> {
        Self::start(run_dir, &[])
    }

    /// Continues the history of the step checkpoint `checkpoint` (after `step` steps): its
    /// own copy of metrics.jsonl, or for checkpoints saved before they carried one, the
    /// run's. Either way only the lines up to `step` are kept: a crashed or interrupted run
    /// may have written more after its last checkpoint, which the resumed run writes again.
    pub fn resume(run_dir: &Path, checkpoint: &Path, step: usize) -> Result<Self> {
        let copy = checkpoint.join(crate::checkpoint::METRICS_COPY);
        let source = if copy.is_file() {
            copy
        } else {
            run_dir.join("metrics.jsonl")
        };
        let mut kept = Vec::new();
        if let Ok(f) = fs::File::open(&source) {
            for line in std::io::BufReader::new(f).lines() {
                let line = line.map_err(|e| Error::io(&source, e))?;
                match serde_json::from_str::<AnyLine>(&line) {
                    Ok(l) if l.step <= step => {
                        kept.extend_from_slice(line.as_bytes());
                        kept.push(b'\n');
                    }
                    _ => {}
                }
            }
        }
        Self::start(run_dir, &kept)
    }

    /// Replaces `run_dir/metrics.jsonl` by `history` (atomically) and opens it to append.
    fn start(run_dir: &Path, history: &[u8]) -> Result<Self> {
        fs::create_dir_all(run_dir).map_err(|e| Error::io(run_dir, e))?;
        let path = run_dir.join("metrics.jsonl");
        let tmp = path.with_extension("jsonl.tmp");
        fs::write(&tmp, history).map_err(|e| Error::io(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        let file = fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(Metrics { path, file })
    }

    /// Everything written so far (a step checkpoint keeps a copy).
    pub fn contents(&self) -> Result<Vec<u8>> {
        fs::read(&self.path).map_err(|e| Error::io(&self.path, e))
    }

    fn write<T: Serialize>(&mut self, line: &T) -> Result<()> {
        let mut bytes = serde_json::to_vec(line).expect("metrics serialize");
        bytes.push(b'\n');
        self.file
            .write_all(&bytes)
            .map_err(|e| Error::io(&self.path, e))
    }

    pub fn step(&mut self, m: &StepMetrics) -> Result<()> {
        self.write(m)
    }

    pub fn eval(&mut self, m: &EvalMetrics) -> Result<()> {
        self.write(m)
    }

    /// Flushes the lines so far to disk (with each checkpoint).
    pub fn sync(&mut self) -> Result<()> {
        self.file.sync_data().map_err(|e| Error::io(&self.path, e))
    }
}
