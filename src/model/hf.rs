//! Loading a Hugging Face GPT-2 directory: what `save_pretrained` writes, or our own
//! checkpoint (`checkpoint::save` writes the same three files).
//!
//! ```text
//! DIR/config.json         GPT2Config: n_layer, n_head, n_embd, n_positions, vocab_size, ...
//! DIR/model.safetensors   weights, with or without the `transformer.` prefix; F32, F16 or BF16
//! DIR/tokenizer.json      a byte-level BPE with an <|endoftext|> token
//! ```
//!
//! The weights come back under our names (`transformer.h.0.attn.c_attn.weight`, ...) in
//! Hugging Face's Conv1D layout `(in, out)`, as f32, with `wte` holding exactly `vocab_size`
//! rows: what [`crate::model::Gpt::load`] and [`crate::infer::KvModel::new`] take.
//! `lm_head.weight` is ignored when it is tied to (or equal to) `wte`; an untied head is
//! unsupported. Only safetensors is read: pickle files (`pytorch_model.bin`) never are.
//!
//! Every failure is one [`Error`] line naming the file and what is wrong.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::Dtype;
use safetensors::SafeTensors;
use serde_json::Value;

use super::config::{GptConfig, LAYER_NORM_EPS};
use crate::data::Tokenizer;
use crate::error::{Error, Result};

/// Tensors under our names: name → (shape, values as f32).
pub type Weights = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// A loaded model directory.
pub struct HfModel {
    pub config: GptConfig,
    pub weights: Weights,
    pub tokenizer: Tokenizer,
}

/// Loads `dir` (config.json, model.safetensors, tokenizer.json) as
/// `(config, weights under our names, tokenizer)`.
pub fn load(dir: &Path) -> Result<(GptConfig, Weights, Tokenizer)> {
    let m = load_model(dir)?;
    Ok((m.config, m.weights, m.tokenizer))
}

/// [`load`] as a struct.
pub fn load_model(dir: &Path) -> Result<HfModel> {
    if !dir.is_dir() {
        return Err(Error::Checkpoint(format!(
            "{}: not a model directory (it does not exist or is not a folder)",
            dir.display()
        )));
    }
    let (config, tie) = load_config(&dir.join("config.json"))?;
    let weights = load_weights(&dir.join("model.safetensors"), &config, tie)?;
    let tok_path = dir.join("tokenizer.json");
    if !tok_path.is_file() {
        return Err(Error::Checkpoint(format!(
            "{}: missing; the model directory needs its tokenizer",
            tok_path.display()
        )));
    }
    let tokenizer = Tokenizer::load(&tok_path)?;
    if tokenizer.vocab_size() > config.vocab_size {
        return Err(Error::Checkpoint(format!(
            "{}: the tokenizer has {} tokens but config.json's vocab_size is {}",
            tok_path.display(),
            tokenizer.vocab_size(),
            config.vocab_size
        )));
    }
    Ok(HfModel {
        config,
        weights,
        tokenizer,
    })
}

/// Reads a GPT2Config `config.json`; returns our config and whether the LM head is tied.
pub fn load_config(path: &Path) -> Result<(GptConfig, bool)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let bad = |msg: String| Error::Checkpoint(format!("{}: {msg}", path.display()));
    let json: Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let obj = json
        .as_object()
        .ok_or_else(|| bad("not a JSON object".into()))?;
    let size = |key: &str| -> Result<usize> {
        match obj.get(key) {
            None => Err(bad(format!("missing `{key}`"))),
            Some(v) => v
                .as_u64()
                .filter(|&n| n > 0)
                .map(|n| n as usize)
                .ok_or_else(|| bad(format!("`{key}` must be a positive integer, not {v}"))),
        }
    };
    if let Some(t) = obj.get("model_type") {
        if t.as_str() != Some("gpt2") {
            return Err(bad(format!(
                "model_type is {t}; only GPT-2 (\"gpt2\") models are supported"
            )));
        }
    }
    let config = GptConfig {
        n_layer: size("n_layer")?,
        n_head: size("n_head")?,
        n_embd: size("n_embd")?,
        block_size: size("n_positions")?,
        vocab_size: size("vocab_size")?,
    };
    config.validate().map_err(|e| bad(e.to_string()))?;
    // Before anything is sized by it (the list of expected tensors, the weights).
    config.check_weights_fit().map_err(|e| bad(e.to_string()))?;

    let flag = |key: &str, default: bool| -> Result<bool> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(bad(format!("`{key}` must be true or false, not {v}"))),
        }
    };
    let unsupported = |what: String| bad(format!("unsupported config: {what}"));
    if let Some(eps) = obj.get("layer_norm_epsilon") {
        let ok = eps
            .as_f64()
            .is_some_and(|e| (e - LAYER_NORM_EPS as f64).abs() <= 1e-9);
        if !ok {
            return Err(unsupported(format!(
                "layer_norm_epsilon is {eps}; only {LAYER_NORM_EPS:e} is supported"
            )));
        }
    }
    if let Some(act) = obj.get("activation_function") {
        // All three are the tanh approximation of GELU that GPT-2 uses.
        let ok = matches!(
            act.as_str(),
            Some("gelu_new" | "gelu_pytorch_tanh" | "gelu_fast")
        );
        if !ok {
            return Err(unsupported(format!(
                "activation_function is {act}; only the tanh GELU (gelu_new, gelu_pytorch_tanh) is supported"
            )));
        }
    }
    match obj.get("n_inner") {
        None | Some(Value::Null) => {}
        Some(v) if v.as_u64() == Some(4 * config.n_embd as u64) => {}
        Some(v) => {
            return Err(unsupported(format!(
                "n_inner is {v}; only 4*n_embd ({}) is supported",
                4 * config.n_embd
            )))
        }
    }
    if flag("scale_attn_by_inverse_layer_idx", false)? {
        return Err(unsupported(
            "scale_attn_by_inverse_layer_idx is true; only false is supported".into(),
        ));
    }
    if !flag("scale_attn_weights", true)? {
        return Err(unsupported(
            "scale_attn_weights is false; only true is supported".into(),
        ));
    }
    if flag("add_cross_attention", false)? {
        return Err(unsupported(
            "add_cross_attention is true; only decoder-only GPT-2 is supported".into(),
        ));
    }
    // reorder_and_upcast_attn only changes the precision of the attention scores, which we
    // compute in f32 anyway.
    flag("reorder_and_upcast_attn", false)?;
    let tie = flag("tie_word_embeddings", true)?;
    Ok((config, tie))
}

/// Our name for a stored tensor name, or None for buffers that carry no weights.
fn our_name(stored: &str) -> Option<String> {
    let bare = stored.strip_prefix("transformer.").unwrap_or(stored);
    // Old checkpoints store the causal mask buffers `h.N.attn.bias` / `h.N.attn.masked_bias`.
    if bare.starts_with("h.")
        && (bare.ends_with(".attn.bias") || bare.ends_with(".attn.masked_bias"))
    {
        return None;
    }
    Some(format!("transformer.{bare}"))
}

/// The shape of every tensor a GPT-2 of `cfg` has, under our names (Conv1D `(in, out)`).
pub fn expected_shapes(cfg: &GptConfig) -> Vec<(String, Vec<usize>)> {
    let c = cfg.n_embd;
    let mut out = vec![
        (
            "transformer.wte.weight".to_string(),
            vec![cfg.vocab_size, c],
        ),
        (
            "transformer.wpe.weight".to_string(),
            vec![cfg.block_size, c],
        ),
    ];
    for l in 0..cfg.n_layer {
        let p = format!("transformer.h.{l}");
        for (name, shape) in [
            ("ln_1.weight", vec![c]),
            ("ln_1.bias", vec![c]),
            ("attn.c_attn.weight", vec![c, 3 * c]),
            ("attn.c_attn.bias", vec![3 * c]),
            ("attn.c_proj.weight", vec![c, c]),
            ("attn.c_proj.bias", vec![c]),
            ("ln_2.weight", vec![c]),
            ("ln_2.bias", vec![c]),
            ("mlp.c_fc.weight", vec![c, 4 * c]),
            ("mlp.c_fc.bias", vec![4 * c]),
            ("mlp.c_proj.weight", vec![4 * c, c]),
            ("mlp.c_proj.bias", vec![c]),
        ] {
            out.push((format!("{p}.{name}"), shape));
        }
    }
    out.push(("transformer.ln_f.weight".to_string(), vec![c]));
    out.push(("transformer.ln_f.bias".to_string(), vec![c]));
    out
}

/// IEEE half precision → f32 (exact).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h as u32) & 0x8000) << 16;
    let exp = ((h >> 10) & 0x1f) as u32;
    let mant = (h & 0x3ff) as u32;
    let bits = match (exp, mant) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: m · 2^-24, exact in f32.
            let v = m as f32 * f32::from_bits(0x3380_0000);
            sign | v.to_bits()
        }
        (31, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 112) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// bfloat16 → f32 (exact).
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

fn to_f32(dtype: Dtype, data: &[u8]) -> Option<Vec<f32>> {
    let u16s = |f: fn(u16) -> f32| {
        data.chunks_exact(2)
            .map(|b| f(u16::from_le_bytes([b[0], b[1]])))
            .collect()
    };
    Some(match dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => u16s(f16_to_f32),
        Dtype::BF16 => u16s(bf16_to_f32),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
            .collect(),
        _ => return None,
    })
}

/// Reads `model.safetensors` and checks it against `cfg`: every tensor present with its
/// shape, nothing else (but ignorable buffers and a tied `lm_head.weight`).
pub fn load_weights(path: &Path, cfg: &GptConfig, tie: bool) -> Result<Weights> {
    let bad = |msg: String| Error::Checkpoint(format!("{}: {msg}", path.display()));
    if !path.is_file() {
        let dir = path.parent().unwrap_or(Path::new("."));
        let hint = if dir.join("model.safetensors.index.json").is_file() {
            "; sharded checkpoints (model.safetensors.index.json) are not supported"
        } else if dir.join("pytorch_model.bin").is_file() {
            "; only safetensors is read (pickle files such as pytorch_model.bin never are): \
             convert with save_pretrained(..., safe_serialization=True)"
        } else {
            ""
        };
        return Err(bad(format!("missing{hint}")));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let expected: HashMap<String, Vec<usize>> = expected_shapes(cfg).into_iter().collect();
    let mut out = Weights::new();
    let mut lm_head = None;
    for (stored, view) in st.tensors() {
        if stored == "lm_head.weight" {
            lm_head = Some(view);
            continue;
        }
        let Some(name) = our_name(&stored) else {
            continue;
        };
        let Some(want) = expected.get(&name) else {
            return Err(bad(format!(
                "unexpected tensor '{stored}': a GPT-2 with this config.json ({} layers) has no such weight",
                cfg.n_layer
            )));
        };
        if view.shape() != want.as_slice() {
            return Err(bad(format!(
                "tensor '{stored}' has shape {:?}, config.json implies {:?}",
                view.shape(),
                want
            )));
        }
        let values = to_f32(view.dtype(), view.data()).ok_or_else(|| {
            bad(format!(
                "tensor '{stored}' has dtype {:?}; only F32, F16, BF16 and F64 are supported",
                view.dtype()
            ))
        })?;
        if out.insert(name.clone(), (want.clone(), values)).is_some() {
            return Err(bad(format!(
                "tensor '{name}' is stored twice (with and without the `transformer.` prefix)"
            )));
        }
    }
    if let Some((name, _)) = expected_shapes(cfg)
        .into_iter()
        .find(|(n, _)| !out.contains_key(n))
    {
        let stored = name.strip_prefix("transformer.").unwrap_or(&name);
        return Err(bad(format!(
            "missing tensor '{name}' (or '{stored}') that config.json's architecture needs"
        )));
    }
    // A diverged run's weights would give NaN losses and garbage tokens without a word.
    if let Some((name, _)) = expected_shapes(cfg)
        .into_iter()
        .find(|(n, _)| out[n].1.iter().any(|v| !v.is_finite()))
    {
        return Err(bad(format!(
            "tensor '{name}' holds NaN or infinite values: the model is unusable (saved by a diverged run?); use an earlier checkpoint"
        )));
    }
    if let Some(view) = lm_head {
        let wte = &out["transformer.wte.weight"];
        let same = view.shape() == wte.0.as_slice()
            && to_f32(view.dtype(), view.data()).is_some_and(|v| v == wte.1);
        if !tie && !same {
            return Err(bad(
                "unsupported: lm_head.weight is not tied to transformer.wte.weight (tie_word_embeddings is false)"
                    .into(),
            ));
        }
    } else if !tie {
        // Untied but no head stored: transformers would initialise it randomly; refuse.
        return Err(bad(
            "tie_word_embeddings is false but lm_head.weight is missing".into(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_conversions_are_exact() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x3800), 0.5);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
        assert_eq!(bf16_to_f32(0xc040), -3.0);
    }

    #[test]
    fn names_with_and_without_prefix() {
        assert_eq!(
            our_name("h.0.ln_1.weight").as_deref(),
            Some("transformer.h.0.ln_1.weight")
        );
        assert_eq!(
            our_name("transformer.wte.weight").as_deref(),
            Some("transformer.wte.weight")
        );
        assert_eq!(our_name("h.3.attn.bias"), None);
        assert_eq!(our_name("transformer.h.3.attn.masked_bias"), None);
        assert!(our_name("h.3.attn.c_attn.bias").is_some());
    }
}
