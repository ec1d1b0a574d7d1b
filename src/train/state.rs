//! The training state a checkpoint holds besides the weights, and resuming from it.
//!
//! What a run needs to continue exactly: the weights (`model.safetensors`, which on every
//! backend are the f32 master weights), the AdamW moments (`optimizer.safetensors`), the
//! step (AdamW's bias correction and the learning-rate schedule follow from it), and where
//! the batches come from. Batches are the only randomness of training: the loader walks a
//! permutation of the windows per epoch drawn from (`train.seed`, epoch), so its position
//! (epoch, index) plus the order is the whole RNG state. Initialisation draws from the seed
//! once before step 1, and the end-of-run sample reseeds, so neither has state to keep.
//!
//! Lines: the checkpoints a run saves form a line. Resuming the run's latest checkpoint
//! continues its line; resuming an earlier one starts a new line from it (recorded as the
//! line's `parent`), and `checkpoints/latest` then follows the new line. Pruning removes
//! only the current line's own older checkpoints, so the checkpoint a line started from
//! stays, and each checkpoint carries the metrics of its own history.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::RunConfig;
use crate::backend::Backend;
use crate::checkpoint::{self, optimizer_tensor_name};
use crate::data::loader::{LoaderPosition, Order};
use crate::error::{Error, Result};
use crate::model::gpt::NamedTensor;
use crate::model::Gpt;

/// `trainer_state.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps done.
    pub step: usize,
    /// Where the training loader stands: the next batch starts here.
    pub loader: LoaderPosition,
    /// The batch order, whose seed with the loader's epoch draws each epoch's permutation:
    /// with `loader`, the whole random state of training.
    pub batch_order: Order,
    /// The run's settings (model.vocab_size as the data set's tokenizer set it).
    pub config: RunConfig,
    /// The data set trained on.
    pub data_dir: PathBuf,
    /// Training loss of every step so far (index i is step i + 1).
    pub train_losses: Vec<f32>,
    /// Every validation so far.
    pub val_losses: Vec<ValPoint>,
    /// Seconds spent in optimizer steps, and in the whole run, so far.
    pub train_seconds: f64,
    pub elapsed_seconds: f64,
    /// The line of checkpoints this one belongs to ("" in checkpoints saved before lines).
    #[serde(default)]
    pub line: String,
    /// The step of the checkpoint the line started from (None: from initialisation).
    #[serde(default)]
    pub parent: Option<usize>,
}

/// A new line's id: unique enough within one run directory (time and process).
pub fn new_line_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos:x}-{:x}", std::process::id())
}

/// The line a step checkpoint belongs to, read from its trainer state (None if unreadable).
fn line_of(step_dir: &Path) -> Option<String> {
    #[derive(Deserialize)]
    struct LineOnly {
        #[serde(default)]
        line: String,
    }
    let bytes = std::fs::read(step_dir.join("trainer_state.json")).ok()?;
    serde_json::from_slice::<LineOnly>(&bytes)
        .ok()
        .map(|l| l.line)
}

/// Keeps the newest `keep` step checkpoints of `line` (all when `keep` is 0) and removes its
/// older ones. Checkpoints of other lines, among them the one `line` started from, stay.
pub fn prune_line(checkpoints: &Path, line: &str, keep: usize) -> Result<()> {
    if keep == 0 {
        return Ok(());
    }
    let mine: Vec<PathBuf> = checkpoint::list_steps(checkpoints)?
        .into_iter()
        .filter(|(_, dir)| line_of(dir).as_deref() == Some(line))
        .map(|(_, dir)| dir)
        .collect();
    let excess = mine.len().saturating_sub(keep);
    for dir in &mine[..excess] {
        checkpoint::remove_step(dir)?;
    }
    Ok(())
}

/// One validation: the loss after `step` steps.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ValPoint {
    pub step: usize,
    pub val_loss: f32,
}

/// A checkpoint to resume from, resolved and read.
#[derive(Clone, Debug)]
pub struct Resume {
    /// The step checkpoint directory.
    pub dir: PathBuf,
    pub state: TrainerState,
    /// The run's latest checkpoint (None when `checkpoints/latest` is broken). Resuming
    /// any other checkpoint starts a new line.
    pub latest: Option<PathBuf>,
}

impl Resume {
    /// Repairs what interrupted saves left in the run directory (saying so on stderr),
    /// resolves `dir` (a step checkpoint, or a run directory: its latest checkpoint) and
    /// reads its trainer state.
    pub fn open(dir: &Path) -> Result<Self> {
        if let Some(run) = checkpoint::run_dir_of(dir) {
            for repair in checkpoint::repair(&run)? {
                eprintln!("cleanup: {repair}");
            }
        }
        let dir = checkpoint::resolve_resume(dir)?;
        let path = dir.join("trainer_state.json");
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let state: TrainerState = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Checkpoint(format!(
                "{}: not a trainer state this version reads: {e}",
                path.display()
            ))
        })?;
        if state.train_losses.len() != state.step {
            return Err(Error::Checkpoint(format!(
                "{}: step {} but {} losses recorded",
                path.display(),
                state.step,
                state.train_losses.len()
            )));
        }
        let checkpoints = dir.parent().unwrap_or(Path::new("."));
        let latest = checkpoint::latest(checkpoints).ok().flatten();
        Ok(Resume { dir, state, latest })
    }

    /// Whether the resumed run starts a new line (the checkpoint is not the run's latest).
    pub fn branches(&self) -> bool {
        self.latest.as_ref().and_then(|l| l.file_name()) != self.dir.file_name()
    }

    /// The line the resumed run saves into, and the step that line started from.
    pub fn lineage(&self) -> (String, Option<usize>) {
        if self.branches() {
            (new_line_id(), Some(self.state.step))
        } else {
            (self.state.line.clone(), self.state.parent)
        }
    }

    /// The run directory the checkpoint belongs to (`RUN/checkpoints/step_N` → `RUN`).
    pub fn run_dir(&self) -> PathBuf {
        // The resolved checkpoint is a step checkpoint, so this always finds its run.
        checkpoint::run_dir_of(&self.dir).unwrap_or_else(|| PathBuf::from("."))
    }

    /// Checks a resumed run's settings against the saved ones: only the keys that change
    /// neither the model, the data nor the trajectory so far may differ (`train.max_steps`
    /// may extend the run). One-line error naming the first setting that may not change.
    pub fn check_config(&self, new: &RunConfig) -> Result<()> {
        const MAY_CHANGE: [&str; 10] = [
            "train.max_steps",
            "train.stop_at_step",
            "train.device",
            "train.precision",
            "train.threads",
            "train.max_seconds",
            "train.out",
            "train.checkpoint_every",
            "train.keep_checkpoints",
            "train.sample_tokens",
        ];
        let old = serde_json::to_value(&self.state.config).expect("config serializes");
        let now = serde_json::to_value(new).expect("config serializes");
        for (section, keys) in old.as_object().expect("object") {
            for (key, was) in keys.as_object().expect("sections are tables") {
                let name = format!("{section}.{key}");
                let is = &now[section][key];
                if is != was && !MAY_CHANGE.contains(&name.as_str()) {
                    return Err(Error::Config(format!(
                        "--resume: {name} was {was} in {} and cannot change to {is}: a resumed run keeps its model, data and training settings (only --max-steps, --stop-at-step, --device and --precision may differ)",
                        self.dir.display()
                    )));
                }
            }
        }
        if new.train.max_steps <= self.state.step {
            return Err(Error::Config(format!(
                "--resume: {} is at step {} and train.max_steps is {}: pass --max-steps above {} to train further",
                self.dir.display(),
                self.state.step,
                new.train.max_steps,
                self.state.step
            )));
        }
        Ok(())
    }
}

const MOMENTS: [&str; 2] = ["exp_avg", "exp_avg_sq"];

/// The AdamW moments of every parameter in Hugging Face layout (vocabulary unpadded, like
/// [`Gpt::state`]), named `exp_avg.PARAM` and `exp_avg_sq.PARAM`.
pub fn optimizer_state<B: Backend>(model: &Gpt<B>) -> Result<Vec<NamedTensor>> {
    let (exec, cfg) = (&model.exec, &model.config);
    let mut out = Vec::with_capacity(2 * exec.graph.params.len());
    for (moment, region) in MOMENTS.iter().zip([exec.plan.adam_m, exec.plan.adam_v]) {
        for p in &exec.graph.params {
            let t = exec.graph.tensor(p.tensor);
            let view = exec.plan.parallel(exec.plan.view(p.tensor), region);
            let mut data = exec.read_region(view)?;
            let mut shape = t.shape.clone();
            if t.name == "transformer.wte.weight" {
                shape[0] = cfg.vocab_size;
                data.truncate(cfg.vocab_size * cfg.n_embd);
            }
            out.push(NamedTensor {
                name: optimizer_tensor_name(moment, &t.name),
                shape,
                data,
            });
        }
    }
    Ok(out)
}

/// Loads the AdamW moments saved by [`optimizer_state`]; every moment of every parameter
/// must be there with its shape, and nothing else.
pub fn load_optimizer_state<B: Backend>(
    model: &mut Gpt<B>,
    tensors: &HashMap<String, (Vec<usize>, Vec<f32>)>,
) -> Result<()> {
    let vocab = model.config.vocab_size;
    let exec = &mut model.exec;
    let mut expected_names = 0;
    for (moment, region) in MOMENTS.iter().zip([exec.plan.adam_m, exec.plan.adam_v]) {
        let params: Vec<_> = exec.graph.params.iter().map(|p| p.tensor).collect();
        for id in params {
            let t = exec.graph.tensor(id).clone();
            let name = optimizer_tensor_name(moment, &t.name);
            let mut expected = t.shape.clone();
            let is_wte = t.name == "transformer.wte.weight";
            if is_wte {
                expected[0] = vocab;
            }
            let (shape, data) = tensors.get(&name).ok_or_else(|| {
                Error::Checkpoint(format!("optimizer state lacks tensor '{name}'"))
            })?;
            if *shape != expected {
                return Err(Error::Checkpoint(format!(
                    "optimizer tensor '{name}' has shape {shape:?}, the model needs {expected:?}"
                )));
            }
            let mut full = data.clone();
            if is_wte {
                full.resize(t.numel(), 0.0);
            }
            let view = exec.plan.parallel(exec.plan.view(id), region);
            exec.write_region(view, &full)?;
            expected_names += 1;
        }
    }
    if tensors.len() != expected_names {
        return Err(Error::Checkpoint(format!(
            "optimizer state holds {} tensors, this model has {expected_names} moments",
            tensors.len()
        )));
    }
    Ok(())
}
