//! The planner and autodiff on the real GPT-2 graph: tensors live at the same time never
//! share memory, reuse really happens, and the backward pass has the expected structure.

use smelt::backend::cpu::CpuBackend;
use smelt::graph::{Op, Storage};
use smelt::model::{Gpt, GptConfig};

fn gpt(n_layer: usize, training: bool) -> Gpt<CpuBackend> {
    let config = GptConfig {
        n_layer,
        n_head: 3,
        n_embd: 48,
        block_size: 20,
        vocab_size: 101,
    };
    Gpt::new(CpuBackend::new(), config, 3, 17, training).unwrap()
}

#[test]
fn live_tensors_never_overlap_and_memory_is_reused() {
    for training in [true, false] {
        let m = gpt(3, training);
        let (g, plan) = (&m.exec.graph, &m.exec.plan);
        // Independent liveness: first write .. last read or write, per tensor.
        let n = g.tensors.len();
        let (mut first, mut last) = (vec![usize::MAX; n], vec![0; n]);
        for (i, op) in g.ops.iter().enumerate() {
            for id in op.outputs().into_iter().chain(op.inputs()) {
                first[id.0] = first[id.0].min(i);
                last[id.0] = last[id.0].max(i);
            }
        }
        let persistent = |i: usize| g.tensors[i].storage != Storage::Activation;
        for a in 0..n {
            for b in a + 1..n {
                let both_live =
                    persistent(a) || persistent(b) || (first[a] <= last[b] && first[b] <= last[a]);
                if both_live && first[a] != usize::MAX && first[b] != usize::MAX {
                    assert!(
                        !plan.views[a].overlaps(&plan.views[b]),
                        "{} and {} are live together but share memory",
                        g.tensors[a].name,
                        g.tensors[b].name
                    );
                }
            }
            assert!(plan.views[a].end() <= plan.total);
        }
        let (planned, naive) = plan.activation_bytes();
        assert!(planned < naive, "no reuse: {planned} vs {naive}");
    }
}

#[test]
fn backward_pass_structure() {
    let m = gpt(2, true);
    let g = &m.exec.graph;
    let backward = &g.ops[g.forward_len..];
    // One accumulation per parameter use: wte is used twice (embedding and tied head).
    let accumulations = backward
        .iter()
        .filter(|op| matches!(op, Op::AccumulateGrad { .. }))
        .count();
    assert_eq!(accumulations, g.params.len() + 1);
    // Every param has a gradient accumulator of its own shape.
    for p in &g.params {
        let grad = p.grad.expect("accumulator");
        assert_eq!(g.tensor(grad).shape, g.tensor(p.tensor).shape);
    }
    // The residual stream fans out to layernorm and the next residual add: its gradient
    // contributions are summed with one Add per fan-out point (2 per layer).
    let adds = backward
        .iter()
        .filter(|op| matches!(op, Op::Add { .. }))
        .count();
    assert_eq!(adds, 2 * 2);
    // An inference graph has no backward pass and no loss.
    let m = gpt(2, false);
    assert_eq!(m.exec.graph.forward_len, m.exec.graph.ops.len());
}

#[test]
fn forward_ops_are_fused_into_epilogues() {
    let config = GptConfig {
        n_layer: 3,
        n_head: 2,
        n_embd: 16,
        block_size: 8,
        vocab_size: 50,
    };
    let m = Gpt::new(CpuBackend::new(), config, 2, 8, true).unwrap();
    let forward = &m.exec.graph.ops[..m.exec.graph.forward_len];
    let count = |f: fn(&Op) -> bool| forward.iter().filter(|op| f(op)).count();
    // One GELU per layer, in its c_fc matmul's epilogue; each residual add feeds the next
    // layernorm (ln_2, the next layer's ln_1, or ln_f).
    assert_eq!(count(|op| matches!(op, Op::MatmulGelu { .. })), 3);
    assert_eq!(count(|op| matches!(op, Op::AddLayerNorm { .. })), 6);
    assert_eq!(
        count(|op| matches!(op, Op::Gelu { .. } | Op::Add { .. })),
        0
    );
    // Only the first layernorm (ln_1 of layer 0, after the embedding) stands alone.
    assert_eq!(count(|op| matches!(op, Op::LayerNorm { .. })), 1);
    // Nothing in the backward pass is fused away.
    let backward = &m.exec.graph.ops[m.exec.graph.forward_len..];
    assert_eq!(
        backward
            .iter()
            .filter(|op| matches!(op, Op::GeluBackward { .. }))
            .count(),
        3
    );
}
