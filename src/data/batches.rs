//! A training batch: (B, T+1) token windows split into inputs and next-token targets.

/// One batch: inputs and targets, each batch·seq_len ids, row-major (b, t).
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
}
