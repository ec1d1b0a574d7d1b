//! Mixed precision as a graph pass, for backends that store activations in bf16 (run after
//! autodiff and fusion, before planning):
//! - every activation and activation gradient becomes bf16;
//! - statistics stay f32: layernorm mean and 1/std, attention and cross-entropy log-sum-exp,
//!   the loss;
//! - parameters, their gradients (every tensor an `AccumulateGrad` adds into an accumulator)
//!   and the optimizer state stay f32, so accumulation and AdamW run on f32 master weights;
//! - a matmul that reads a weight reads its bf16 working copy, made by a `Convert` op at the
//!   start of the pass from the f32 master (tensor-core operands are bf16).
//!
//! Kernels then load bf16, compute in f32 and store bf16; matmuls and attention run on tensor
//! cores with f32 accumulation.

use std::collections::{HashMap, HashSet};

use super::{Graph, Op, Storage, TensorId};
use crate::backend::DType;
use crate::error::{Error, Result};

/// Gives `graph` bf16 activations and bf16 weight copies for its matmuls; returns the number
/// of tensors stored in bf16.
pub fn store_activations_in_bf16(graph: &mut Graph) -> Result<usize> {
    let mut keep_f32: HashSet<TensorId> = HashSet::new();
    for op in &graph.ops {
        match *op {
            Op::AccumulateGrad { grad, .. } => {
                keep_f32.insert(grad);
            }
            Op::LayerNorm { mean, rstd, .. } | Op::AddLayerNorm { mean, rstd, .. } => {
                keep_f32.extend([mean, rstd]);
            }
            Op::Attention { lse, .. } => {
                keep_f32.insert(lse);
            }
            Op::CrossEntropy { loss, lse, .. } => {
                keep_f32.extend([loss, lse]);
            }
            _ => {}
        }
    }
    let mut converted = 0;
    for (i, t) in graph.tensors.iter_mut().enumerate() {
        if t.storage == Storage::Activation && !keep_f32.contains(&TensorId(i)) {
            t.dtype = DType::Bf16;
            converted += 1;
        }
    }

    // bf16 working copies of the weights that matmuls read.
    let mut copies: HashMap<TensorId, TensorId> = HashMap::new();
    let mut converts = Vec::new();
    for i in 0..graph.ops.len() {
        let (a, b) = match graph.ops[i] {
            Op::Matmul { a, b, .. } | Op::MatmulGelu { a, b, .. } => (a, b),
            _ => continue,
        };
        let mut copy_of = |graph: &mut Graph, x: TensorId| -> TensorId {
            if graph.tensor(x).storage != Storage::Param {
                return x;
            }
            *copies.entry(x).or_insert_with(|| {
                let t = graph.tensor(x);
                let (name, shape) = (format!("{}.bf16", t.name), t.shape.clone());
                let copy = graph.activation(name, &shape);
                graph.tensors[copy.0].dtype = DType::Bf16;
                converts.push(Op::Convert { x, out: copy });
                copy
            })
        };
        let (a2, b2) = (copy_of(graph, a), copy_of(graph, b));
        match &mut graph.ops[i] {
            Op::Matmul { a, b, .. } | Op::MatmulGelu { a, b, .. } => {
                *a = a2;
                *b = b2;
            }
            _ => unreachable!("matched above"),
        }
    }
    converted += converts.len();
    graph.forward_len += converts.len();
    graph.ops.splice(0..0, converts);

    // Ops whose kernels take one dtype for all their operands.
    for op in &graph.ops {
        if let Op::Add { a, b, out } = *op {
            let dtypes = [a, b, out].map(|id| graph.tensor(id).dtype);
            if dtypes.iter().any(|&d| d != dtypes[0]) {
                return Err(Error::Config(format!(
                    "precision pass: add '{}' mixes dtypes {dtypes:?}",
                    graph.tensor(out).name
                )));
            }
        }
    }
    Ok(converted)
}
