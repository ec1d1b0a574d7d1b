//! The ops of the graph. Each variant names its input and output tensors and carries the
//! sizes its kernel needs; the executor maps each to one backend call.

use super::{IndexId, TensorId};
use crate::backend::{AttentionShape, MatmulShape};

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// out (b,t,c) = wte[tokens] + wpe[0..t].
    Embedding {
        tokens: IndexId,
        wte: TensorId,
        wpe: TensorId,
        out: TensorId,
        b: usize,
        t: usize,
        c: usize,
    },
    EmbeddingBackward {
        tokens: IndexId,
        dout: TensorId,
        dwte: TensorId,
        dwpe: TensorId,
        b: usize,
        t: usize,
        c: usize,
    },
    /// out = op(a) · op(b) (+ bias): linear layers (with bias), the tied LM head, and every
    /// matmul of the backward pass.
    Matmul {
        a: TensorId,
        b: TensorId,
        bias: Option<TensorId>,
        out: TensorId,
        shape: MatmulShape,
    },
    /// A linear layer with its GELU as the matmul's epilogue (made by [`super::fuse`]):
    /// out = op(a) · op(b) (+ bias) and act = gelu(out), both kept (the GELU's backward reads
    /// out).
    MatmulGelu {
        a: TensorId,
        b: TensorId,
        bias: Option<TensorId>,
        out: TensorId,
        act: TensorId,
        shape: MatmulShape,
    },
    /// The residual connection fused with the layernorm that follows it (made by
    /// [`super::fuse`]): sum = a + b, out = layernorm(sum), saving mean and 1/std.
    AddLayerNorm {
        a: TensorId,
        b: TensorId,
        sum: TensorId,
        weight: TensorId,
        bias: TensorId,
        out: TensorId,
        mean: TensorId,
        rstd: TensorId,
        n: usize,
        c: usize,
        eps: f32,
    },
    /// out (n) = Σ_rows x (m,n).
    SumRows {
        x: TensorId,
        out: TensorId,
        m: usize,
        n: usize,
    },
    LayerNorm {
        x: TensorId,
        weight: TensorId,
        bias: TensorId,
        out: TensorId,
        mean: TensorId,
        rstd: TensorId,
        n: usize,
        c: usize,
        eps: f32,
    },
    LayerNormBackward {
        dout: TensorId,
        x: TensorId,
        weight: TensorId,
        mean: TensorId,
        rstd: TensorId,
        dx: TensorId,
        dweight: TensorId,
        dbias: TensorId,
        n: usize,
        c: usize,
    },
    Gelu {
        x: TensorId,
        out: TensorId,
    },
    GeluBackward {
        x: TensorId,
        dout: TensorId,
        dx: TensorId,
    },
    /// out = a + b (the residual connection; also sums gradient contributions).
    Add {
        a: TensorId,
        b: TensorId,
        out: TensorId,
    },
    /// Causal multi-head self-attention over qkv (b,t,3c), as one op.
    Attention {
        qkv: TensorId,
        out: TensorId,
        lse: TensorId,
        shape: AttentionShape,
    },
    AttentionBackward {
        dout: TensorId,
        qkv: TensorId,
        out: TensorId,
        lse: TensorId,
        dqkv: TensorId,
        shape: AttentionShape,
    },
    /// loss (1) = mean over rows of −log softmax(logits)[target]; the vocabulary is padded
    /// from `v` to `vp` columns, which the softmax ignores.
    CrossEntropy {
        logits: TensorId,
        targets: IndexId,
        loss: TensorId,
        lse: TensorId,
        n: usize,
        v: usize,
        vp: usize,
    },
    /// The loss is the graph's root, so its gradient is the constant 1.
    CrossEntropyBackward {
        logits: TensorId,
        lse: TensorId,
        targets: IndexId,
        dlogits: TensorId,
        n: usize,
        v: usize,
        vp: usize,
    },
    /// into += grad: adds one gradient contribution into a parameter's accumulator, which
    /// also carries gradient accumulation across micro-batches.
    AccumulateGrad {
        grad: TensorId,
        into: TensorId,
    },
}

impl Op {
    /// The tensors this op reads.
    pub fn inputs(&self) -> Vec<TensorId> {
        match *self {
            Op::Embedding { wte, wpe, .. } => vec![wte, wpe],
            Op::EmbeddingBackward { dout, .. } => vec![dout],
            Op::Matmul { a, b, bias, .. } => {
                [Some(a), Some(b), bias].into_iter().flatten().collect()
            }
            Op::MatmulGelu { a, b, bias, .. } => {
                [Some(a), Some(b), bias].into_iter().flatten().collect()
            }
            Op::AddLayerNorm {
                a, b, weight, bias, ..
            } => vec![a, b, weight, bias],
            Op::SumRows { x, .. } => vec![x],
            Op::LayerNorm {
                x, weight, bias, ..
            } => vec![x, weight, bias],
            Op::LayerNormBackward {
                dout,
                x,
                weight,
                mean,
                rstd,
                ..
            } => vec![dout, x, weight, mean, rstd],
            Op::Gelu { x, .. } => vec![x],
            Op::GeluBackward { x, dout, .. } => vec![x, dout],
            Op::Add { a, b, .. } => vec![a, b],
            Op::Attention { qkv, .. } => vec![qkv],
            Op::AttentionBackward {
                dout,
                qkv,
                out,
                lse,
                ..
            } => vec![dout, qkv, out, lse],
            Op::CrossEntropy { logits, .. } => vec![logits],
            Op::CrossEntropyBackward { logits, lse, .. } => vec![logits, lse],
            Op::AccumulateGrad { grad, into } => vec![grad, into],
        }
    }

    /// The tensors this op writes.
    pub fn outputs(&self) -> Vec<TensorId> {
        match *self {
            Op::Embedding { out, .. } => vec![out],
            Op::EmbeddingBackward { dwte, dwpe, .. } => vec![dwte, dwpe],
            Op::Matmul { out, .. } => vec![out],
            Op::MatmulGelu { out, act, .. } => vec![out, act],
            Op::AddLayerNorm {
                sum,
                out,
                mean,
                rstd,
                ..
            } => vec![sum, out, mean, rstd],
            Op::SumRows { out, .. } => vec![out],
            Op::LayerNorm {
                out, mean, rstd, ..
            } => vec![out, mean, rstd],
            Op::LayerNormBackward {
                dx, dweight, dbias, ..
            } => vec![dx, dweight, dbias],
            Op::Gelu { out, .. } => vec![out],
            Op::GeluBackward { dx, .. } => vec![dx],
            Op::Add { out, .. } => vec![out],
            Op::Attention { out, lse, .. } => vec![out, lse],
            Op::AttentionBackward { dqkv, .. } => vec![dqkv],
            Op::CrossEntropy { loss, lse, .. } => vec![loss, lse],
            Op::CrossEntropyBackward { dlogits, .. } => vec![dlogits],
            Op::AccumulateGrad { .. } => vec![],
        }
    }

    /// A short name for logs and profiles.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Embedding { .. } => "embedding",
            Op::EmbeddingBackward { .. } => "embedding_backward",
            Op::Matmul { .. } => "matmul",
            Op::MatmulGelu { .. } => "matmul_gelu",
            Op::AddLayerNorm { .. } => "add_layernorm",
            Op::SumRows { .. } => "sum_rows",
            Op::LayerNorm { .. } => "layernorm",
            Op::LayerNormBackward { .. } => "layernorm_backward",
            Op::Gelu { .. } => "gelu",
            Op::GeluBackward { .. } => "gelu_backward",
            Op::Add { .. } => "add",
            Op::Attention { .. } => "attention",
            Op::AttentionBackward { .. } => "attention_backward",
            Op::CrossEntropy { .. } => "cross_entropy",
            Op::CrossEntropyBackward { .. } => "cross_entropy_backward",
            Op::AccumulateGrad { .. } => "accumulate_grad",
        }
    }
}
