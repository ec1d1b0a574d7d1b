//! Stopping a diverging run before it saves anything broken. Each step is checked where a
//! non-finite number first shows: the loss (before the update), the gradient norm (before
//! the update, which it would poison), the weights and AdamW moments (after the update: a
//! finite loss can still give an update that overflows), and the validation loss. The run
//! stops with one line naming what went non-finite and the settings behind it, before any
//! save, so the newest checkpoint stays the last good one.

use std::path::Path;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::Gpt;

use super::RunConfig;

/// Which part of the optimizer's state a non-finite value is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateRegion {
    Weights,
    /// AdamW's `exp_avg`.
    FirstMoment,
    /// AdamW's `exp_avg_sq`.
    SecondMoment,
}

/// What went non-finite, at which step (1-based: the step being taken).
#[derive(Clone, Debug, PartialEq)]
pub enum Divergence {
    /// The step's training loss, the weights going in being finite.
    Loss { step: usize, loss: f32 },
    /// The gradients, the loss being finite.
    GradNorm { step: usize, loss: f32, norm: f64 },
    /// The AdamW update left a non-finite value in `tensor`'s weights or moments.
    Update {
        step: usize,
        region: StateRegion,
        tensor: String,
        lr: f32,
        norm: f64,
    },
    /// The validation loss after the step, the weights being finite.
    ValLoss { step: usize, val_loss: f32 },
}

/// The first parameter (in model order) whose weights or AdamW moments hold NaN or an
/// infinity, and where.
pub fn non_finite_state<B: Backend>(model: &Gpt<B>) -> Result<Option<(StateRegion, String)>> {
    let exec = &model.exec;
    let plan = &exec.plan;
    for (region, view) in [
        (StateRegion::Weights, plan.params),
        (StateRegion::FirstMoment, plan.adam_m),
        (StateRegion::SecondMoment, plan.adam_v),
    ] {
        // One pass on the backend; NaN and infinities propagate into the sum...
        if exec.sum_squares(view).is_finite() {
            continue;
        }
        // ...which finite values can also overflow: look on the host before concluding.
        let values = exec.read_region(view)?;
        for p in &exec.graph.params {
            let v = plan.parallel(plan.view(p.tensor), view);
            let part = &values[v.offset - view.offset..][..v.len];
            if part.iter().any(|x| !x.is_finite()) {
                return Ok(Some((region, exec.graph.tensor(p.tensor).name.clone())));
            }
        }
    }
    Ok(None)
}

impl Divergence {
    /// The one-line error: what went non-finite, the settings to change, and the checkpoint
    /// that is still good (`last_good`: the newest one saved, if any).
    pub fn into_error(self, cfg: &RunConfig, last_good: Option<&Path>) -> Error {
        let (t, o) = (&cfg.train, &cfg.optimizer);
        let what = match self {
            Divergence::Loss { step, loss } => format!(
                "training diverged at step {step}: the training loss is {loss} though the weights were finite (the forward pass overflowed); lower train.lr ({:?}) or raise train.warmup_steps ({})",
                t.lr, t.warmup_steps
            ),
            Divergence::GradNorm { step, loss, norm } => format!(
                "training diverged at step {step}: the gradient norm is {norm} though the loss ({loss}) was finite (the backward pass overflowed); lower train.lr ({:?})",
                t.lr
            ),
            Divergence::Update {
                step,
                region: StateRegion::Weights,
                tensor,
                lr,
                ..
            } => format!(
                "training diverged at step {step}: the AdamW update made the weights of {tensor} non-finite (learning rate {lr:?} at this step, optimizer.eps {:?}, optimizer.weight_decay {:?}); lower train.lr, raise optimizer.eps or lower optimizer.weight_decay",
                o.eps, o.weight_decay
            ),
            Divergence::Update {
                step,
                region,
                tensor,
                norm,
                ..
            } => format!(
                "training diverged at step {step}: the AdamW update made the {} of {tensor} non-finite: the gradients (norm {norm}) overflow f32 when squared; set optimizer.grad_clip (now {:?}) or lower train.lr ({:?})",
                if region == StateRegion::FirstMoment {
                    "first moment (exp_avg)"
                } else {
                    "second moment (exp_avg_sq)"
                },
                o.grad_clip,
                t.lr
            ),
            Divergence::ValLoss { step, val_loss } => format!(
                "training diverged after step {step}: the validation loss is {val_loss} though the weights are finite; lower train.lr ({:?})",
                t.lr
            ),
        };
        let kept = match last_good {
            Some(dir) => format!(
                "; nothing was saved after the last good checkpoint, {}",
                dir.display()
            ),
            None => "; no checkpoint was saved".into(),
        };
        Error::Data(format!("{what}{kept}"))
    }
}

/// Checks a step's loss (before the update).
pub fn check_loss(step: usize, loss: f32) -> std::result::Result<(), Divergence> {
    if loss.is_finite() {
        Ok(())
    } else {
        Err(Divergence::Loss { step, loss })
    }
}

/// Checks a step's gradient norm (before the update).
pub fn check_grad_norm(step: usize, loss: f32, norm: f64) -> std::result::Result<(), Divergence> {
    if norm.is_finite() {
        Ok(())
    } else {
        Err(Divergence::GradNorm { step, loss, norm })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_named_in_one_line_with_its_settings() {
        let cfg = RunConfig::default();
        let last = Path::new("run/checkpoints/step_0000010");
        let cases = [
            (
                check_loss(11, f32::NAN).unwrap_err(),
                "training loss is NaN",
            ),
            (
                check_grad_norm(11, 3.5, f64::INFINITY).unwrap_err(),
                "gradient norm is inf",
            ),
            (
                Divergence::Update {
                    step: 11,
                    region: StateRegion::Weights,
                    tensor: "transformer.wte.weight".into(),
                    lr: 1e38,
                    norm: 1.0,
                },
                "weights of transformer.wte.weight non-finite (learning rate 1e38",
            ),
            (
                Divergence::Update {
                    step: 11,
                    region: StateRegion::SecondMoment,
                    tensor: "transformer.wpe.weight".into(),
                    lr: 1e-3,
                    norm: 1e30,
                },
                "optimizer.grad_clip",
            ),
            (
                Divergence::ValLoss {
                    step: 11,
                    val_loss: f32::INFINITY,
                },
                "validation loss is inf",
            ),
        ];
        for (d, needle) in cases {
            let e = d.into_error(&cfg, Some(last)).to_string();
            assert!(e.contains(needle), "{needle}: {e}");
            assert!(e.contains("step 11") && e.ends_with("step_0000010"), "{e}");
            assert!(!e.contains('\n'));
        }
        assert!(check_loss(1, 2.5).is_ok() && check_grad_norm(1, 2.5, 0.7).is_ok());
    }
}
