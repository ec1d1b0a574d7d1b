//! Mixed precision as a graph pass, for backends that store activations in bf16 (run after
//! autodiff and fusion, before planning):
//! - every activation and activation gradient becomes bf16;
//! - statistics stay f32: layernorm mean and 1/std, attention and cross-entropy log-sum-exp,
//!   the loss;
//! - parameters, their gradients (every tensor an `AccumulateGrad` adds into an accumulator)
//!   and the optimizer state stay f32, so accumulation and AdamW run on f32 master weights;
//! - a matmul that reads a weight reads its bf16 working copy (tensor-core operands are bf16):
//!   a persistent tensor (`Storage::WorkingCopy`) that the planner places parallel to the
//!   parameters, that the optimizer step writes as it writes the f32 master
//!   (`adamw_multi_bf16`), and that the executor refreshes in one conversion when the masters
//!   change otherwise (initialisation, loading). The passes themselves convert no weights, and
//!   every micro-step of one optimizer step reads the same copies.
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

    // bf16 working copies of the weights that matmuls read: persistent tensors the planner
    // places parallel to the parameters, written by the optimizer step, not by the pass.
    let mut copies: HashMap<TensorId, TensorId> = HashMap::new();
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
                let param = graph
                    .params
                    .iter()
                    .position(|p| p.tensor == x)
                    .expect("a Param tensor is in graph.params");
                let t = graph.tensor(x);
                let (name, shape) = (format!("{}.bf16", t.name), t.shape.clone());
                graph.working_copy(name, &shape, param)
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
    converted += copies.len();

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
