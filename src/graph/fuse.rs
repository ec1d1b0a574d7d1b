//! Fusion of adjacent forward ops into one kernel call, after autodiff (which works on the
//! unfused ops) and before planning:
//! - `Matmul` then `Gelu` of its output → [`Op::MatmulGelu`] (GELU as the matmul epilogue);
//! - `Add` then `LayerNorm` of its output → [`Op::AddLayerNorm`] (the residual connection and
//!   the next layernorm in one pass over the rows).
//!
//! Every tensor keeps its meaning (the fused op writes all the tensors the pair wrote), so the
//! backward ops are untouched; only the number of launches and the passes over memory drop.

use super::{Graph, Op};

/// Fuses the forward ops of `graph` in place; returns how many pairs were fused.
pub fn fuse_forward(graph: &mut Graph) -> usize {
    let forward_len = graph.forward_len;
    let mut ops = Vec::with_capacity(graph.ops.len());
    let mut fused = 0;
    let mut i = 0;
    while i < graph.ops.len() {
        let next = if i + 1 < forward_len {
            graph.ops.get(i + 1)
        } else {
            None
        };
        let pair = match (&graph.ops[i], next) {
            (
                &Op::Matmul {
                    a,
                    b,
                    bias,
                    out,
                    shape,
                },
                Some(&Op::Gelu { x, out: act }),
            ) if x == out => Some(Op::MatmulGelu {
                a,
                b,
                bias,
                out,
                act,
                shape,
            }),
            (
                &Op::Add { a, b, out: sum },
                Some(&Op::LayerNorm {
                    x,
                    weight,
                    bias,
                    out,
                    mean,
                    rstd,
                    n,
                    c,
                    eps,
                }),
            ) if x == sum => Some(Op::AddLayerNorm {
                a,
                b,
                sum,
                weight,
                bias,
                out,
                mean,
                rstd,
                n,
                c,
                eps,
            }),
            _ => None,
        };
        match pair {
            Some(op) => {
                ops.push(op);
                fused += 1;
                i += 2;
            }
            None => {
                ops.push(graph.ops[i].clone());
                i += 1;
            }
        }
    }
    graph.ops = ops;
    graph.forward_len = forward_len - fused;
    fused
}
