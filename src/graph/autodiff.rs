//! Reverse-mode autodiff: walks the forward ops backwards and appends, for each, the ops
//! that compute the gradients of its inputs. Gradients of a tensor used several times are
//! summed with `Add`; gradients of parameters are added straight into their accumulators
//! (`AccumulateGrad`), which also carries gradient accumulation across micro-batches.

use std::collections::HashMap;

use super::{Graph, Op, Storage, TensorId};
use crate::backend::MatmulShape;
use crate::error::{Error, Result};

/// Appends the backward pass of `graph.loss` to the graph and creates one gradient
/// accumulator per parameter (`Param::grad`).
pub fn append_backward(graph: &mut Graph) -> Result<()> {
    let loss = graph
        .loss
        .ok_or_else(|| Error::Config("graph has no loss to differentiate".into()))?;
    if graph.ops.len() != graph.forward_len {
        return Err(Error::Config("backward pass already appended".into()));
    }
    let mut accumulators = HashMap::new();
    for i in 0..graph.params.len() {
        let p = graph.params[i].tensor;
        let (name, shape) = (
            format!("grad.{}", graph.tensor(p).name),
            graph.tensor(p).shape.clone(),
        );
        graph.tensors.push(super::Tensor {
            name,
            shape,
            storage: Storage::GradAccum(i),
            dtype: crate::backend::DType::F32,
        });
        let acc = TensorId(graph.tensors.len() - 1);
        graph.params[i].grad = Some(acc);
        accumulators.insert(p, acc);
    }

    let mut ad = Autodiff {
        graph,
        accumulators,
        pending: HashMap::new(),
    };
    let forward: Vec<Op> = ad.graph.ops.clone();
    for op in forward.iter().rev() {
        ad.backward_of(op, loss)?;
    }
    Ok(())
}

struct Autodiff<'g> {
    graph: &'g mut Graph,
    accumulators: HashMap<TensorId, TensorId>,
    /// Gradient contributions not yet summed, per non-parameter tensor.
    pending: HashMap<TensorId, Vec<TensorId>>,
}

impl Autodiff<'_> {
    /// A new gradient tensor shaped like `of`.
    fn grad_tensor(&mut self, of: TensorId) -> TensorId {
        let t = self.graph.tensor(of);
        let (name, shape) = (format!("d.{}", t.name), t.shape.clone());
        self.graph.activation(name, &shape)
    }

    fn emit(&mut self, op: Op) {
        self.graph.ops.push(op);
    }

    /// Records `grad` as one contribution to the gradient of `of`.
    fn contribute(&mut self, of: TensorId, grad: TensorId) {
        match self.accumulators.get(&of) {
            Some(&into) => self.emit(Op::AccumulateGrad { grad, into }),
            None => self.pending.entry(of).or_default().push(grad),
        }
    }

    /// The full gradient of `of` (the sum of its contributions), or None if nothing
    /// downstream depends on it.
    fn take_grad(&mut self, of: TensorId) -> Option<TensorId> {
        let parts = self.pending.remove(&of)?;
        let mut sum = parts[0];
        for &part in &parts[1..] {
            let out = self.grad_tensor(of);
            self.emit(Op::Add {
                a: sum,
                b: part,
                out,
            });
            sum = out;
        }
        Some(sum)
    }

    fn backward_of(&mut self, op: &Op, root: TensorId) -> Result<()> {
        match *op {
            Op::CrossEntropy {
                logits,
                targets,
                loss,
                lse,
                n,
                v,
                vp,
            } => {
                if loss != root {
                    return Err(Error::Config(
                        "cross-entropy must be the graph's loss".into(),
                    ));
                }
                let dlogits = self.grad_tensor(logits);
                self.emit(Op::CrossEntropyBackward {
                    logits,
                    lse,
                    targets,
                    dlogits,
                    n,
                    v,
                    vp,
                });
                self.contribute(logits, dlogits);
            }
            Op::Embedding {
                tokens,
                wte,
                wpe,
                out,
                b,
                t,
                c,
            } => {
                let Some(dout) = self.take_grad(out) else {
                    return Ok(());
                };
                let (dwte, dwpe) = (self.grad_tensor(wte), self.grad_tensor(wpe));
                self.emit(Op::EmbeddingBackward {
                    tokens,
                    dout,
                    dwte,
                    dwpe,
                    b,
                    t,
                    c,
                });
                self.contribute(wte, dwte);
                self.contribute(wpe, dwpe);
            }
            Op::Matmul {
                a,
                b,
                bias,
                out,
                shape: s,
            } => {
                let Some(dout) = self.take_grad(out) else {
                    return Ok(());
                };
                // out = op(A)·op(B). For A: d op(A) = dout·op(B)ᵀ, transposed back when A is
                // stored transposed. For B likewise with op(A)ᵀ·dout.
                let da = self.grad_tensor(a);
                let (x, y, shape) = if s.trans_a {
                    (b, dout, mm(s.k, s.n, s.m, s.trans_b, true))
                } else {
                    (dout, b, mm(s.m, s.n, s.k, false, !s.trans_b))
                };
                self.emit(Op::Matmul {
                    a: x,
                    b: y,
                    bias: None,
                    out: da,
                    shape,
                });
                let db = self.grad_tensor(b);
                let (x, y, shape) = if s.trans_b {
                    (dout, a, mm(s.n, s.m, s.k, true, s.trans_a))
                } else {
                    (a, dout, mm(s.k, s.m, s.n, !s.trans_a, false))
                };
                self.emit(Op::Matmul {
                    a: x,
                    b: y,
                    bias: None,
                    out: db,
                    shape,
                });
                self.contribute(a, da);
                self.contribute(b, db);
                if let Some(bias) = bias {
                    let dbias = self.grad_tensor(bias);
                    self.emit(Op::SumRows {
                        x: dout,
                        out: dbias,
                        m: s.m,
                        n: s.n,
                    });
                    self.contribute(bias, dbias);
                }
            }
            Op::LayerNorm {
                x,
                weight,
                bias,
                out,
                mean,
                rstd,
                n,
                c,
                ..
            } => {
                let Some(dout) = self.take_grad(out) else {
                    return Ok(());
                };
                let dx = self.grad_tensor(x);
                let dweight = self.grad_tensor(weight);
                let dbias = self.grad_tensor(bias);
                self.emit(Op::LayerNormBackward {
                    dout,
                    x,
                    weight,
                    mean,
                    rstd,
                    dx,
                    dweight,
                    dbias,
                    n,
                    c,
                });
                self.contribute(x, dx);
                self.contribute(weight, dweight);
                self.contribute(bias, dbias);
            }
            Op::Gelu { x, out } => {
                let Some(dout) = self.take_grad(out) else {
                    return Ok(());
                };
                let dx = self.grad_tensor(x);
                self.emit(Op::GeluBackward { x, dout, dx });
                self.contribute(x, dx);
            }
            Op::Add { a, b, out } => {
                // The gradient passes through unchanged to both inputs: no op, no copy.
                let Some(dout) = self.take_grad(out) else {
                    return Ok(());
                };
                self.contribute(a, dout);
                self.contribute(b, dout);
            }
            Op::Attention {
                qkv,
                out,
                lse,
                shape,
            } => {
                let Some(dout) = self.take_grad(out) else {
                    return Ok(());
                };
                let dqkv = self.grad_tensor(qkv);
                self.emit(Op::AttentionBackward {
                    dout,
                    qkv,
                    out,
                    lse,
                    dqkv,
                    shape,
                });
                self.contribute(qkv, dqkv);
            }
            Op::EmbeddingBackward { .. }
            | Op::SumRows { .. }
            | Op::LayerNormBackward { .. }
            | Op::GeluBackward { .. }
            | Op::AttentionBackward { .. }
            | Op::CrossEntropyBackward { .. }
            | Op::AccumulateGrad { .. } => {
                return Err(Error::Config(format!(
                    "op {} has no backward rule (it belongs to a backward pass)",
                    op.kind()
                )))
            }
            Op::MatmulGelu { .. } | Op::AddLayerNorm { .. } => {
                return Err(Error::Config(format!(
                    "op {} comes from a graph pass: differentiate the graph first",
                    op.kind()
                )))
            }
        }
        Ok(())
    }
}

fn mm(m: usize, k: usize, n: usize, trans_a: bool, trans_b: bool) -> MatmulShape {
    MatmulShape {
        m,
        k,
        n,
        trans_a,
        trans_b,
    }
}
