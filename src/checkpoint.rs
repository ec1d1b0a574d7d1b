//! Checkpoints: a directory that Hugging Face `transformers` reads as a GPT-2 model.
//!
//! ```text
//! checkpoint/
//!   model.safetensors    parameters under HF GPT-2 names and layouts, tied lm_head not stored
//!   config.json          GPT2Config fields
//!   tokenizer.json       the tokenizer
//! ```
//! Written into a temporary sibling directory, each file fsynced, then renamed into place, so
//! an interrupted save never leaves a half-written checkpoint where a whole one was.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::Path;

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

/// Saves a checkpoint directory at `dir`, replacing any previous one only once the new one
/// is complete on disk.
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
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    write_synced(&tmp.join("model.safetensors"), &safetensors_bytes(weights)?)?;
    let config_json =
        serde_json::to_vec_pretty(&hf_config_json(config, tokenizer.eot())).expect("json");
    write_synced(&tmp.join("config.json"), &config_json)?;
    tokenizer.save(&tmp.join("tokenizer.json"))?;
    fs::File::open(tmp.join("tokenizer.json"))
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(tmp.join("tokenizer.json"), e))?;
    // Swap: move the old checkpoint aside, the new one in, then drop the old one.
    let old = parent.join(format!(".{name}.old-{}", std::process::id()));
    if dir.exists() {
        fs::rename(dir, &old).map_err(|e| Error::io(dir, e))?;
    }
    fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))?;
    if old.exists() {
        fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
    }
    Ok(())
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
