//! Checkpoints: directories that Hugging Face `transformers` reads as a GPT-2 model, and
//! that a training run resumes from.
//!
//! ```text
//! RUN/checkpoints/step_0000500/      one per save, the last `train.keep_checkpoints` kept
//!   model.safetensors          parameters under HF GPT-2 names and layouts, tied lm_head not stored
//!   config.json                GPT2Config fields
//!   generation_config.json     GenerationConfig: bos/eos = end of text, max_length, do_sample
//!   tokenizer.json             the tokenizer
//!   optimizer.safetensors      AdamW moments: `exp_avg.NAME`, `exp_avg_sq.NAME` per parameter
//!   trainer_state.json         step, loader position, batch order, run config, losses
//! RUN/checkpoint/                    the final export: the first four files only
//! ```
//! A step checkpoint is written into `step_NNNNNNN.tmp/`, every file and the directory
//! fsynced, then renamed to its final name and the parent fsynced: a crash at any moment
//! leaves every earlier checkpoint whole, and at worst a `.tmp` directory that readers ignore
//! and the next save removes. The export `checkpoint/` is swapped in the same way.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::data::Tokenizer;
use crate::error::{Error, Result};
use crate::model::config::LAYER_NORM_EPS;
use crate::model::gpt::NamedTensor;
use crate::model::GptConfig;

/// Tensors read from a safetensors file: name → (shape, values as f32).
pub type TensorMap = HashMap<String, (Vec<usize>, Vec<f32>)>;

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = fs::File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(bytes).map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))
}

/// Serializes named f32 tensors as safetensors bytes.
pub fn safetensors_bytes(tensors: &[NamedTensor]) -> Result<Vec<u8>> {
    let bytes: Vec<&[u8]> = tensors
        .iter()
        .map(|t| bytemuck::cast_slice(&t.data))
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| {
            Ok((
                t.name.clone(),
                TensorView::new(Dtype::F32, t.shape.clone(), b)?,
            ))
        })
        .collect::<std::result::Result<Vec<_>, safetensors::SafeTensorError>>()
        .map_err(|e| Error::Checkpoint(format!("serializing weights: {e}")))?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::Checkpoint(format!("serializing weights: {e}")))
}

/// The `config.json` of a transformers GPT2LMHeadModel with this architecture.
pub fn hf_config_json(config: &GptConfig, eot: u32) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.block_size,
        "n_ctx": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": LAYER_NORM_EPS,
        "initializer_range": 0.02,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "tie_word_embeddings": true,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "torch_dtype": "float32"
    })
}

/// The `generation_config.json` of transformers' GenerationConfig for this model.
pub fn generation_config_json(config: &GptConfig, eot: u32) -> serde_json::Value {
    serde_json::json!({
        "bos_token_id": eot,
        "eos_token_id": eot,
        "max_length": config.block_size,
        "do_sample": true,
        "transformers_version": "4.0.0"
    })
}

/// The folder of step checkpoints inside a run directory.
pub const CHECKPOINTS: &str = "checkpoints";

/// The files a checkpoint must hold to resume training from it.
pub const TRAINING_FILES: [&str; 6] = [
    "model.safetensors",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "optimizer.safetensors",
    "trainer_state.json",
];

/// `step_0000500`: the directory name of the checkpoint after `step` steps.
pub fn step_dir_name(step: usize) -> String {
    format!("step_{step:07}")
}

/// The step of a directory named `step_NNNNNNN` (exactly; `.tmp` and other names are None).
pub fn parse_step_dir_name(name: &str) -> Option<usize> {
    let digits = name.strip_prefix("step_")?;
    (digits.len() >= 7 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// Flushes a directory's entries (new files, renames) to disk. A no-op where directories
/// cannot be opened as files (Windows).
pub fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        fs::File::open(dir)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn sync_file(path: &Path) -> Result<()> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(path, e))
}

/// Writes the model files (weights, config, generation config, tokenizer) into `dir`,
/// each fsynced.
fn write_model_files(
    dir: &Path,
    config: &GptConfig,
    weights: &[NamedTensor],
    tokenizer: &Tokenizer,
) -> Result<()> {
    write_synced(&dir.join("model.safetensors"), &safetensors_bytes(weights)?)?;
    let json = |v: &serde_json::Value| serde_json::to_vec_pretty(v).expect("json");
    write_synced(
        &dir.join("config.json"),
        &json(&hf_config_json(config, tokenizer.eot())),
    )?;
    write_synced(
        &dir.join("generation_config.json"),
        &json(&generation_config_json(config, tokenizer.eot())),
    )?;
    tokenizer.save(&dir.join("tokenizer.json"))?;
    sync_file(&dir.join("tokenizer.json"))
}

/// A fresh, empty directory `path` (removing whatever a crashed earlier attempt left there).
fn fresh_dir(path: &Path) -> Result<()> {
    if path.exists() {
        fs::remove_dir_all(path).map_err(|e| Error::io(path, e))?;
    }
    fs::create_dir_all(path).map_err(|e| Error::io(path, e))
}

/// Renames the complete directory `tmp` to `dir`, replacing an existing `dir` (moved aside
/// to `aside` first, then removed), and fsyncs the parent.
fn swap_in(tmp: &Path, dir: &Path, aside: &Path) -> Result<()> {
    sync_dir(tmp)?;
    if aside.exists() {
        fs::remove_dir_all(aside).map_err(|e| Error::io(aside, e))?;
    }
    if dir.exists() {
        fs::rename(dir, aside).map_err(|e| Error::io(dir, e))?;
    }
    fs::rename(tmp, dir).map_err(|e| Error::io(dir, e))?;
    let parent = dir.parent().unwrap_or(Path::new("."));
    sync_dir(if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    })?;
    if aside.exists() {
        fs::remove_dir_all(aside).map_err(|e| Error::io(aside, e))?;
    }
    Ok(())
}

/// Saves a checkpoint directory at `dir` (the model files only: the final export), replacing
/// any previous one only once the new one is complete on disk.
pub fn save(
    dir: &Path,
    config: &GptConfig,
    weights: &[NamedTensor],
    tokenizer: &Tokenizer,
) -> Result<()> {
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    fresh_dir(&tmp)?;
    write_model_files(&tmp, config, weights, tokenizer)?;
    let old = parent.join(format!(".{name}.old-{}", std::process::id()));
    swap_in(&tmp, dir, &old)
}

/// What a step checkpoint holds besides the model files.
pub struct TrainingState<'a> {
    /// AdamW moments, named as [`optimizer_tensor_name`] says.
    pub optimizer: &'a [NamedTensor],
    /// `trainer_state.json`'s bytes.
    pub trainer_state: &'a [u8],
}

/// The name of a parameter's first (`exp_avg`) or second (`exp_avg_sq`) AdamW moment in
/// `optimizer.safetensors`.
pub fn optimizer_tensor_name(moment: &str, param: &str) -> String {
    format!("{moment}.{param}")
}

/// Saves the checkpoint after `step` steps as `checkpoints/step_NNNNNNN/` (atomically, see
/// the module docs), removes leftover `.tmp` directories of interrupted saves, and keeps only
/// the `keep` latest step checkpoints (all when `keep` is 0). Returns the directory.
pub fn save_step(
    checkpoints: &Path,
    step: usize,
    config: &GptConfig,
    weights: &[NamedTensor],
    tokenizer: &Tokenizer,
    state: &TrainingState,
    keep: usize,
) -> Result<PathBuf> {
    let created = !checkpoints.exists();
    fs::create_dir_all(checkpoints).map_err(|e| Error::io(checkpoints, e))?;
    if created {
        if let Some(parent) = checkpoints.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
    }
    remove_leftovers(checkpoints)?;
    let name = step_dir_name(step);
    let dir = checkpoints.join(&name);
    let tmp = checkpoints.join(format!("{name}.tmp"));
    fresh_dir(&tmp)?;
    write_model_files(&tmp, config, weights, tokenizer)?;
    // One metadata key: safetensors writes a map's keys in hash order, and the same state
    // should give the same bytes.
    write_synced(
        &tmp.join("optimizer.safetensors"),
        &safetensors_bytes(state.optimizer)?,
    )?;
    write_synced(&tmp.join("trainer_state.json"), state.trainer_state)?;
    swap_in(&tmp, &dir, &checkpoints.join(format!("{name}.old.tmp")))?;
    if keep > 0 {
        let steps = list_steps(checkpoints)?;
        let excess = steps.len().saturating_sub(keep);
        for (s, path) in steps.into_iter().take(excess) {
            if s != step {
                fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
            }
        }
    }
    Ok(dir)
}

/// Removes the `*.tmp` directories that interrupted saves left in `checkpoints`.
fn remove_leftovers(checkpoints: &Path) -> Result<()> {
    let entries = fs::read_dir(checkpoints).map_err(|e| Error::io(checkpoints, e))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() && path.extension().is_some_and(|x| x == "tmp") {
            fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

/// The whole step checkpoints in `checkpoints` (named `step_NNNNNNN`; `.tmp` directories
/// ignored), oldest first. Empty when the folder does not exist.
pub fn list_steps(checkpoints: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let entries = match fs::read_dir(checkpoints) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(checkpoints, e)),
    };
    let mut steps: Vec<(usize, PathBuf)> = entries
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| {
            let step = parse_step_dir_name(&e.file_name().to_string_lossy())?;
            Some((step, e.path()))
        })
        .collect();
    steps.sort();
    Ok(steps)
}

/// The checkpoint to resume from for `dir`: a step checkpoint itself, or a run directory
/// (or its `checkpoints/` folder), meaning its latest step checkpoint. Checks that every
/// file of [`TRAINING_FILES`] is there. Errors are one line naming the directory.
pub fn resolve_resume(dir: &Path) -> Result<PathBuf> {
    let shown = dir.display();
    if !dir.is_dir() {
        return Err(Error::Checkpoint(format!(
            "--resume {shown}: no such directory; give a run directory or one of its checkpoints/step_NNNNNNN folders"
        )));
    }
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let step_dir = if name.ends_with(".tmp") {
        return Err(Error::Checkpoint(format!(
            "--resume {shown}: this is an unfinished checkpoint (its save was interrupted); resume from the run directory to take the latest whole one"
        )));
    } else if dir.join("trainer_state.json").exists() || parse_step_dir_name(&name).is_some() {
        dir.to_path_buf()
    } else {
        let folder = if dir.join(CHECKPOINTS).is_dir() {
            dir.join(CHECKPOINTS)
        } else if name == CHECKPOINTS {
            dir.to_path_buf()
        } else {
            return Err(Error::Checkpoint(format!(
                "--resume {shown}: neither a checkpoint (no trainer_state.json) nor a run directory (no {CHECKPOINTS}/)"
            )));
        };
        match list_steps(&folder)?.pop() {
            Some((_, latest)) => latest,
            None => {
                return Err(Error::Checkpoint(format!(
                    "--resume {shown}: {} holds no whole checkpoint to resume from",
                    folder.display()
                )))
            }
        }
    };
    if let Some(missing) = TRAINING_FILES.iter().find(|f| !step_dir.join(f).is_file()) {
        return Err(Error::Checkpoint(format!(
            "--resume: checkpoint {} is incomplete: it lacks {missing}",
            step_dir.display()
        )));
    }
    Ok(step_dir)
}

/// Reads every tensor of a safetensors file as f32 (F32, or I64/I32 converted).
pub fn read_safetensors(path: &Path) -> Result<TensorMap> {
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| {
        Error::Checkpoint(format!("{}: not a safetensors file: {e}", path.display()))
    })?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect(),
            Dtype::I64 => data
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f32)
                .collect(),
            Dtype::I32 => data
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as f32)
                .collect(),
            other => {
                return Err(Error::Checkpoint(format!(
                    "{}: tensor '{name}' has dtype {other:?}; only F32 weights are supported",
                    path.display()
                )))
            }
        };
        out.insert(name, (view.shape().to_vec(), values));
    }
    Ok(out)
}
