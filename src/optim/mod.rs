//! Optimization: AdamW settings, the learning-rate schedule and gradient clipping. The
//! update itself runs on the backend (`Backend::adamw`) over the planner's parallel regions.

pub mod schedule;

pub use schedule::LrSchedule;

use serde::{Deserialize, Serialize};

/// AdamW hyperparameters (decoupled weight decay, applied to matrices only).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamWConfig {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// Clip the global gradient norm to this; 0 disables clipping.
    pub grad_clip: f32,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            grad_clip: 1.0,
        }
    }
}

/// The factor that scales gradients of global norm `norm` down to `max_norm`, exactly as
/// `torch.nn.utils.clip_grad_norm_` computes it (1 when no clipping is needed or it is off).
pub fn clip_factor(norm: f64, max_norm: f32) -> f32 {
    if max_norm <= 0.0 {
        return 1.0;
    }
    let coef = max_norm as f64 / (norm + 1e-6);
    coef.min(1.0) as f32
}

#[cfg(test)]
mod tests {
    use super::clip_factor;

    #[test]
    fn clipping_matches_torch_rule() {
        assert_eq!(clip_factor(0.5, 1.0), 1.0);
        assert!((clip_factor(4.0, 1.0) - 0.25).abs() < 1e-6);
        assert_eq!(clip_factor(100.0, 0.0), 1.0);
    }
}
