//! GPT-2 as a graph: built once for a fixed (batch, sequence) shape, then run each step.
//!
//! Parameters carry the Hugging Face GPT-2 names and layouts (`transformer.h.0.attn.c_attn.weight`
//! is (in, out), as transformers' Conv1D stores it), so weights move to and from
//! `transformers` without renaming or transposing. The one difference: `transformer.wte.weight`
//! has `padded_vocab()` rows here; the extra rows stay zero and are dropped on export.

use std::collections::HashMap;

use super::config::{GptConfig, LAYER_NORM_EPS};
use crate::backend::DType;
use crate::backend::{AttentionShape, Backend, MatmulShape};
use crate::error::{Error, Result};
use crate::graph::executor::Executor;
use crate::graph::{autodiff, fuse, precision, Graph, IndexId, Op, TensorId};
use crate::rng::Rng;

/// A named parameter tensor in Hugging Face layout (unpadded vocabulary).
#[derive(Clone, Debug, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// A GPT-2 model bound to a backend, for one batch shape.
pub struct Gpt<B: Backend> {
    pub config: GptConfig,
    pub batch: usize,
    pub seq_len: usize,
    pub exec: Executor<B>,
    tokens: IndexId,
    targets: Option<IndexId>,
    logits: TensorId,
    loss: Option<TensorId>,
}

/// A Conv1D-style linear layer `{prefix}`: weight (in, out), bias (out), on x (n, in).
fn linear(
    g: &mut Graph,
    x: TensorId,
    prefix: &str,
    n: usize,
    fan_in: usize,
    fan_out: usize,
) -> TensorId {
    let w = g.param(format!("{prefix}.weight"), &[fan_in, fan_out], true);
    let bias = g.param(format!("{prefix}.bias"), &[fan_out], false);
    let out = g.activation(format!("{prefix}.out"), &[n, fan_out]);
    g.push(Op::Matmul {
        a: x,
        b: w,
        bias: Some(bias),
        out,
        shape: MatmulShape {
            m: n,
            k: fan_in,
            n: fan_out,
            trans_a: false,
            trans_b: false,
        },
    });
    out
}

fn layernorm(g: &mut Graph, x: TensorId, prefix: &str, n: usize, c: usize) -> TensorId {
    let weight = g.param(format!("{prefix}.weight"), &[c], false);
    let bias = g.param(format!("{prefix}.bias"), &[c], false);
    let out = g.activation(format!("{prefix}.out"), &[n, c]);
    let mean = g.activation(format!("{prefix}.mean"), &[n]);
    let rstd = g.activation(format!("{prefix}.rstd"), &[n]);
    g.push(Op::LayerNorm {
        x,
        weight,
        bias,
        out,
        mean,
        rstd,
        n,
        c,
        eps: LAYER_NORM_EPS,
    });
    out
}

fn add(g: &mut Graph, a: TensorId, b: TensorId, name: String, shape: &[usize]) -> TensorId {
    let out = g.activation(name, shape);
    g.push(Op::Add { a, b, out });
    out
}

/// Builds the GPT-2 graph for batch `b` and sequence `t`. With `training`, the graph ends in
/// the cross-entropy loss and has its backward pass appended; otherwise it ends in logits.
fn build_graph(
    cfg: &GptConfig,
    b: usize,
    t: usize,
    training: bool,
) -> (Graph, IndexId, Option<IndexId>, TensorId, Option<TensorId>) {
    let (c, vp, n) = (cfg.n_embd, cfg.padded_vocab(), b * t);
    let mut g = Graph::new();
    let tokens = g.index_input("tokens", n);
    let wte = g.param("transformer.wte.weight", &[vp, c], true);
    let wpe = g.param("transformer.wpe.weight", &[cfg.block_size, c], true);
    let mut x = g.activation("embedding.out", &[n, c]);
    g.push(Op::Embedding {
        tokens,
        wte,
        wpe,
        out: x,
        b,
        t,
        c,
    });
    for l in 0..cfg.n_layer {
        let p = format!("transformer.h.{l}");
        let h = layernorm(&mut g, x, &format!("{p}.ln_1"), n, c);
        let qkv = linear(&mut g, h, &format!("{p}.attn.c_attn"), n, c, 3 * c);
        let att = g.activation(format!("{p}.attn.out"), &[n, c]);
        let lse = g.activation(format!("{p}.attn.lse"), &[b, cfg.n_head, t]);
        g.push(Op::Attention {
            qkv,
            out: att,
            lse,
            shape: AttentionShape {
                b,
                t,
                c,
                n_head: cfg.n_head,
            },
        });
        let proj = linear(&mut g, att, &format!("{p}.attn.c_proj"), n, c, c);
        x = add(&mut g, x, proj, format!("{p}.residual1"), &[n, c]);

        let h = layernorm(&mut g, x, &format!("{p}.ln_2"), n, c);
        let fc = linear(&mut g, h, &format!("{p}.mlp.c_fc"), n, c, 4 * c);
        let act = g.activation(format!("{p}.mlp.gelu"), &[n, 4 * c]);
        g.push(Op::Gelu { x: fc, out: act });
        let proj = linear(&mut g, act, &format!("{p}.mlp.c_proj"), n, 4 * c, c);
        x = add(&mut g, x, proj, format!("{p}.residual2"), &[n, c]);
    }
    let xf = layernorm(&mut g, x, "transformer.ln_f", n, c);
    // Tied LM head: logits = xf · wteᵀ.
    let logits = g.activation("logits", &[n, vp]);
    g.push(Op::Matmul {
        a: xf,
        b: wte,
        bias: None,
        out: logits,
        shape: MatmulShape {
            m: n,
            k: c,
            n: vp,
            trans_a: false,
            trans_b: true,
        },
    });
    if !training {
        g.mark_output(logits);
        return (g, tokens, None, logits, None);
    }
    let targets = g.index_input("targets", n);
    let loss = g.activation("loss", &[1]);
    g.mark_output(loss);
    let lse = g.activation("loss.lse", &[n]);
    g.push(Op::CrossEntropy {
        logits,
        targets,
        loss,
        lse,
        n,
        v: cfg.vocab_size,
        vp,
    });
    g.loss = Some(loss);
    (g, tokens, Some(targets), logits, Some(loss))
}

impl<B: Backend> Gpt<B> {
    /// Builds and plans the model for batches of `batch` sequences of `seq_len` tokens.
    /// Parameters start at zero: call [`Gpt::init_gpt2`] or [`Gpt::load`].
    pub fn new(
        backend: B,
        config: GptConfig,
        batch: usize,
        seq_len: usize,
        training: bool,
    ) -> Result<Self> {
        config.validate()?;
        if batch == 0 || seq_len == 0 {
            return Err(Error::Config(
                "batch_size and seq_len must be at least 1".into(),
            ));
        }
        if seq_len > config.block_size {
            return Err(Error::Config(format!(
                "seq_len ({seq_len}) is longer than the model's block_size ({}); lower seq_len or raise block_size",
                config.block_size
            )));
        }
        config.check_graph(batch, seq_len)?;
        let (mut graph, tokens, targets, logits, loss) =
            build_graph(&config, batch, seq_len, training);
        if training {
            autodiff::append_backward(&mut graph)?;
        }
        fuse::fuse_forward(&mut graph);
        if backend.activation_dtype() == DType::Bf16 {
            precision::store_activations_in_bf16(&mut graph)?;
        }
        let mut exec = Executor::new(backend, graph)?;
        exec.zero_optimizer_state();
        Ok(Gpt {
            config,
            batch,
            seq_len,
            exec,
            tokens,
            targets,
            logits,
            loss,
        })
    }

    /// GPT-2's initialisation: weights N(0, 0.02), the residual projections (`c_proj`)
    /// scaled by 1/sqrt(2·n_layer), biases 0, layernorm gains 1. Padded vocabulary rows stay 0.
    pub fn init_gpt2(&mut self, seed: u64) -> Result<()> {
        let mut rng = Rng::new(seed);
        let residual_std = 0.02 / (2.0 * self.config.n_layer as f64).sqrt();
        let params: Vec<(TensorId, String, usize)> = self
            .exec
            .graph
            .params
            .iter()
            .map(|p| {
                (
                    p.tensor,
                    self.exec.graph.tensor(p.tensor).name.clone(),
                    self.exec.graph.numel(p.tensor),
                )
            })
            .collect();
        for (id, name, len) in params {
            let mut data = vec![0.0f32; len];
            if name.ends_with(".weight") && (name.contains(".ln_") || name.ends_with("ln_f.weight"))
            {
                data.fill(1.0);
            } else if name.ends_with(".weight") {
                let std = if name.ends_with("c_proj.weight") {
                    residual_std
                } else {
                    0.02
                };
                let real = if name == "transformer.wte.weight" {
                    self.config.vocab_size * self.config.n_embd
                } else {
                    len
                };
                for x in &mut data[..real] {
                    *x = (rng.normal() * std) as f32;
                }
            }
            self.exec.write(id, &data)?;
        }
        Ok(())
    }

    /// The parameters in Hugging Face layout, with the vocabulary unpadded.
    pub fn state(&self) -> Result<Vec<NamedTensor>> {
        let mut out = Vec::new();
        for p in &self.exec.graph.params {
            let t = self.exec.graph.tensor(p.tensor);
            let mut data = self.exec.read(p.tensor)?;
            let mut shape = t.shape.clone();
            if t.name == "transformer.wte.weight" {
                shape[0] = self.config.vocab_size;
                data.truncate(self.config.vocab_size * self.config.n_embd);
            }
            out.push(NamedTensor {
                name: t.name.clone(),
                shape,
                data,
            });
        }
        Ok(out)
    }

    /// The accumulated gradients, named and shaped like [`Gpt::state`].
    pub fn grads(&self) -> Result<Vec<NamedTensor>> {
        let mut out = Vec::new();
        for p in &self.exec.graph.params {
            let t = self.exec.graph.tensor(p.tensor);
            let grad = p
                .grad
                .ok_or_else(|| Error::Config("model was built without a backward pass".into()))?;
            let mut data = self.exec.read(grad)?;
            let mut shape = t.shape.clone();
            if t.name == "transformer.wte.weight" {
                shape[0] = self.config.vocab_size;
                data.truncate(self.config.vocab_size * self.config.n_embd);
            }
            out.push(NamedTensor {
                name: t.name.clone(),
                shape,
                data,
            });
        }
        Ok(out)
    }

    /// Loads parameters by Hugging Face name and shape. Every parameter must be present with
    /// its exact shape; unknown names are an error (they signal a different architecture).
    pub fn load(&mut self, tensors: &HashMap<String, (Vec<usize>, Vec<f32>)>) -> Result<()> {
        let mut seen = 0;
        let params: Vec<TensorId> = self.exec.graph.params.iter().map(|p| p.tensor).collect();
        for id in params {
            let t = self.exec.graph.tensor(id).clone();
            let mut expected = t.shape.clone();
            let is_wte = t.name == "transformer.wte.weight";
            if is_wte {
                expected[0] = self.config.vocab_size;
            }
            let (shape, data) = tensors
                .get(&t.name)
                .ok_or_else(|| Error::Checkpoint(format!("weights lack tensor '{}'", t.name)))?;
            // wpe may be longer than our block_size only if the caller chose so; shapes must match.
            if *shape != expected {
                return Err(Error::Checkpoint(format!(
                    "tensor '{}' has shape {:?}, the model config needs {:?}",
                    t.name, shape, expected
                )));
            }
            let mut full = data.clone();
            if is_wte {
                full.resize(t.numel(), 0.0);
            }
            self.exec.write(id, &full)?;
            seen += 1;
        }
        if let Some(extra) = tensors
            .keys()
            .find(|k| self.exec.graph.param_by_name(k).is_none())
        {
            return Err(Error::Checkpoint(format!(
                "weights hold tensor '{extra}' that a GPT-2 with this config does not have"
            )));
        }
        debug_assert_eq!(seen, self.exec.graph.params.len());
        Ok(())
    }

    /// Sets the batch: `tokens` (and, for training graphs, `targets`), batch·seq_len ids each.
    pub fn set_batch(&mut self, tokens: &[u32], targets: Option<&[u32]>) -> Result<()> {
        let v = self.config.vocab_size as u32;
        let check = |ids: &[u32], what: &str| match ids.iter().find(|&&id| id >= v) {
            Some(id) => Err(Error::Data(format!(
                "{what} id {id} is outside the vocabulary (size {v})"
            ))),
            None => Ok(()),
        };
        check(tokens, "token")?;
        self.exec.set_indices(self.tokens, tokens)?;
        match (self.targets, targets) {
            (Some(id), Some(t)) => {
                check(t, "target")?;
                self.exec.set_indices(id, t)
            }
            (None, None) => Ok(()),
            (Some(_), None) => Err(Error::Data("this training graph needs targets".into())),
            (None, Some(_)) => Err(Error::Data("this inference graph takes no targets".into())),
        }
    }

    /// Runs the forward pass; returns the mean loss for training graphs (NaN otherwise).
    pub fn forward(&mut self) -> Result<f32> {
        self.exec.forward()?;
        self.loss()
    }

    /// Forward and backward; the gradients are added into the accumulators.
    pub fn forward_backward(&mut self) -> Result<f32> {
        self.exec.forward_backward()?;
        self.loss()
    }

    /// The mean loss of the last forward pass (NaN for inference graphs).
    fn loss(&self) -> Result<f32> {
        match self.loss {
            Some(loss) => Ok(self.exec.read(loss)?[0]),
            None => Ok(f32::NAN),
        }
    }

    /// The logits of the last forward pass, (batch·seq_len, padded_vocab). In a training
    /// graph they are an activation whose memory the backward pass reuses: read them
    /// between `forward` and `backward`.
    pub fn logits(&self) -> Result<Vec<f32>> {
        self.exec.read(self.logits)
    }

    /// Copies all parameters from another instance of the same config (e.g. the training
    /// model into a generation model with another batch shape).
    pub fn copy_params_from<B2: Backend>(&mut self, other: &Gpt<B2>) -> Result<()> {
        if other.config != self.config {
            return Err(Error::Config(
                "cannot copy parameters between different configs".into(),
            ));
        }
        let data = other.exec.read_region(other.exec.plan.params)?;
        self.exec.write_region(self.exec.plan.params, &data)
    }
}
