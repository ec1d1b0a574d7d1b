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
//!   trainer_state.json         step, loader position, batch order, run config, losses, line
//!   metrics.jsonl              the run's metrics.jsonl up to this step (restored on resume)
//! RUN/checkpoints/latest             the name of the newest save of the run's current line
//! RUN/checkpoint/                    the final export: the first four files only
//! ```
//! A step checkpoint is written into `step_NNNNNNN.tmp/`, every file and the directory
//! fsynced, then renamed to its final name and the parent fsynced, and only then named by
//! `latest`: a crash at any moment leaves every earlier checkpoint whole, and at worst a
//! `.tmp` directory that readers ignore. A pruned checkpoint is first renamed to
//! `step_NNNNNNN.pruned.tmp`, then removed. The export `checkpoint/` is swapped in the same
//! way. [`repair`] undoes or removes what an interrupted save or prune left behind.

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
    /// The run's `metrics.jsonl` up to this step, kept so that resuming this checkpoint
    /// restores exactly its own history.
    pub metrics: &'a [u8],
}

/// The name of a parameter's first (`exp_avg`) or second (`exp_avg_sq`) AdamW moment in
/// `optimizer.safetensors`.
pub fn optimizer_tensor_name(moment: &str, param: &str) -> String {
    format!("{moment}.{param}")
}

/// The copy of the run's metrics a step checkpoint carries.
pub const METRICS_COPY: &str = "metrics.jsonl";

/// The file in the checkpoints folder that names the newest save of the run's current line.
pub const LATEST: &str = "latest";

/// Saves the checkpoint after `step` steps as `checkpoints/step_NNNNNNN/` (atomically, see
/// the module docs) and records it as the run's latest. Returns the directory.
pub fn save_step(
    checkpoints: &Path,
    step: usize,
    config: &GptConfig,
    weights: &[NamedTensor],
    tokenizer: &Tokenizer,
    state: &TrainingState,
) -> Result<PathBuf> {
    let created = !checkpoints.exists();
    fs::create_dir_all(checkpoints).map_err(|e| Error::io(checkpoints, e))?;
    if created {
        if let Some(parent) = checkpoints.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
    }
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
    write_synced(&tmp.join(METRICS_COPY), state.metrics)?;
    swap_in(&tmp, &dir, &checkpoints.join(format!("{name}.old.tmp")))?;
    set_latest(checkpoints, &name)?;
    Ok(dir)
}

/// Points `checkpoints/latest` at the step checkpoint `name` (replaced atomically).
fn set_latest(checkpoints: &Path, name: &str) -> Result<()> {
    let path = checkpoints.join(LATEST);
    let tmp = checkpoints.join(format!("{LATEST}.tmp"));
    write_synced(&tmp, format!("{name}\n").as_bytes())?;
    fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    sync_dir(checkpoints)
}

/// The newest save of the run's current line: the step checkpoint `checkpoints/latest`
/// names or, in runs saved before that file existed, the highest step. None when the folder
/// holds no step checkpoint. An error when `latest` names one that is not there.
pub fn latest(checkpoints: &Path) -> Result<Option<PathBuf>> {
    let path = checkpoints.join(LATEST);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(list_steps(checkpoints)?.pop().map(|(_, dir)| dir))
        }
        Err(e) => return Err(Error::io(&path, e)),
    };
    let name = text.trim();
    let dir = checkpoints.join(name);
    if parse_step_dir_name(name).is_none() || !dir.is_dir() {
        let whole: Vec<String> = list_steps(checkpoints)?
            .iter()
            .map(|(_, p)| p.display().to_string())
            .collect();
        return Err(Error::Checkpoint(format!(
            "{} names '{name}', which is not a checkpoint there; resume one explicitly with --resume DIR (checkpoints: {})",
            path.display(),
            if whole.is_empty() { "none".into() } else { whole.join(", ") }
        )));
    }
    Ok(Some(dir))
}

/// Removes a step checkpoint: renamed to `NAME.pruned.tmp` first, so that a removal cut
/// short leaves a name readers ignore and [`repair`] finishes, never a half-empty `step_N`.
pub fn remove_step(dir: &Path) -> Result<()> {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let parent = dir.parent().unwrap_or(Path::new("."));
    let doomed = parent.join(format!("{name}.pruned.tmp"));
    if doomed.exists() {
        fs::remove_dir_all(&doomed).map_err(|e| Error::io(&doomed, e))?;
    }
    fs::rename(dir, &doomed).map_err(|e| Error::io(dir, e))?;
    sync_dir(parent)?;
    fs::remove_dir_all(&doomed).map_err(|e| Error::io(&doomed, e))
}

/// Whether `name` is one of the temporary names saves use (`X.tmp`, `.X.tmp-PID`, a
/// component `tmp` anywhere as in `.loss.tmp.png`).
fn is_temporary(name: &str) -> bool {
    name.split('.').any(|c| c == "tmp" || c.starts_with("tmp-"))
}

/// The name a save moved aside before swapping its replacement in: `step_N.old.tmp` →
/// `step_N`, `.checkpoint.old-PID` → `checkpoint`.
fn moved_aside(name: &str) -> Option<&str> {
    if let Some(base) = name.strip_suffix(".old.tmp") {
        return Some(base);
    }
    let (base, pid) = name.strip_prefix('.')?.rsplit_once(".old-")?;
    (!pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())).then_some(base)
}

/// Repairs one folder: restores what a save moved aside and did not replace, removes
/// temporaries. Returns a line per repair.
fn repair_folder(folder: &Path) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let entries = match fs::read_dir(folder) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(done),
        Err(e) => return Err(Error::io(folder, e)),
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    // Restores first: a `.tmp` beside them may be the unfinished replacement.
    for name in &names {
        let Some(base) = moved_aside(name) else {
            continue;
        };
        let (aside, original) = (folder.join(name), folder.join(base));
        if !original.exists() {
            fs::rename(&aside, &original).map_err(|e| Error::io(&aside, e))?;
            sync_dir(folder)?;
            done.push(format!(
                "restored {} from {} (a save was interrupted between its two renames)",
                original.display(),
                aside.display()
            ));
        }
    }
    for name in &names {
        let path = folder.join(name);
        if !is_temporary(name) || !path.exists() {
            continue;
        }
        let removed = if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        removed.map_err(|e| Error::io(&path, e))?;
        done.push(format!(
            "removed {} (left by an interrupted save or prune)",
            path.display()
        ));
    }
    Ok(done)
}

/// Repairs what interrupted work left in a run directory, before a run uses it, and returns
/// a line per repair:
/// - a checkpoint a save moved aside (`.checkpoint.old-PID`, `checkpoints/step_N.old.tmp`)
///   and was killed before renaming its replacement in: moved back;
/// - unfinished copies and temporary files (`.checkpoint.tmp-PID`, `step_N.tmp`,
///   `step_N.pruned.tmp`, `metrics.jsonl.tmp`, ...): removed;
/// - step checkpoints with files missing that are older than the latest: the remains of a
///   prune killed half-way (by versions that did not rename before removing): removed.
pub fn repair(run_dir: &Path) -> Result<Vec<String>> {
    let mut done = repair_folder(run_dir)?;
    let checkpoints = run_dir.join(CHECKPOINTS);
    done.extend(repair_folder(&checkpoints)?);
    let newest = latest(&checkpoints)
        .ok()
        .flatten()
        .and_then(|dir| parse_step_dir_name(&dir.file_name()?.to_string_lossy()));
    for (step, dir) in list_steps(&checkpoints)? {
        let missing = TRAINING_FILES.iter().find(|f| !dir.join(f).is_file());
        if let (Some(missing), Some(newest)) = (missing, newest) {
            if step < newest {
                remove_step(&dir)?;
                done.push(format!(
                    "removed {}: an incomplete checkpoint (it lacks {missing}) older than the latest, left by an interrupted prune",
                    dir.display()
                ));
            }
        }
    }
    Ok(done)
}

/// The run directory a `--resume` argument belongs to (a step checkpoint's run, a run
/// directory, or its checkpoints folder's), whether or not that checkpoint is there now.
pub fn run_dir_of(resume: &Path) -> Option<PathBuf> {
    let name = resume.file_name()?.to_string_lossy();
    if is_temporary(&name) {
        return None;
    }
    let parent = |p: &Path| {
        p.parent()
            .map(|q| {
                if q.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    q.to_path_buf()
                }
            })
            .unwrap_or_else(|| PathBuf::from("."))
    };
    if parse_step_dir_name(&name).is_some() || resume.join("trainer_state.json").is_file() {
        Some(parent(&parent(resume)))
    } else if resume.join(CHECKPOINTS).is_dir() {
        Some(resume.to_path_buf())
    } else if name == CHECKPOINTS {
        Some(parent(resume))
    } else {
        None
    }
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
/// (or its `checkpoints/` folder), meaning its [`latest`] checkpoint. Checks that every
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
        match latest(&folder)? {
            Some(latest) => latest,
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

/// Reads every tensor of a safetensors file as f32 (F32, or I64/I32 converted). Refuses a
/// file holding NaN or infinite values (what a diverged update writes), naming the first
/// such tensor by name.
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
    let mut non_finite: Vec<&String> = out
        .iter()
        .filter(|(_, (_, values))| values.iter().any(|v| !v.is_finite()))
        .map(|(name, _)| name)
        .collect();
    non_finite.sort();
    if let Some(first) = non_finite.first() {
        return Err(Error::Checkpoint(format!(
            "{}: tensor '{first}' holds NaN or infinite values ({} of {} tensors do): a diverged run wrote it; use an earlier checkpoint",
            path.display(),
            non_finite.len(),
            out.len()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_and_moved_aside_names() {
        for name in [
            "step_0000010.tmp",
            "step_0000010.pruned.tmp",
            ".checkpoint.tmp-4242",
            "metrics.jsonl.tmp",
            ".loss.tmp.png",
            "latest.tmp",
        ] {
            assert!(is_temporary(name), "{name}");
        }
        for name in [
            "step_0000010",
            "latest",
            "metrics.jsonl",
            "checkpoint",
            "tmpfile",
        ] {
            assert!(!is_temporary(name), "{name}");
        }
        assert_eq!(moved_aside("step_0000010.old.tmp"), Some("step_0000010"));
        assert_eq!(moved_aside(".checkpoint.old-4242"), Some("checkpoint"));
        assert_eq!(moved_aside(".checkpoint.old-"), None);
        assert_eq!(moved_aside("checkpoint.old-12"), None);
        assert_eq!(moved_aside("step_0000010.tmp"), None);
    }
}
