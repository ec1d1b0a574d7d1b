//! Every kernel of `kernels/*.cu` against its CPU reference (`smelt::backend::cpu::kernels`),
//! one test body per kernel (or kernel sequence), run on the CUDA emulation always and on the
//! GPU when there is one (see `harness`). A module per `.cu` file. Inputs are fresh random
//! numbers (the seed is in every failure; `SMELT_SEED=<seed>` replays it), sizes are odd, and
//! each body includes GPT-2 124M's sizes (T=1024, C=768, head size 64, V=50304), run where the
//! emulation is fast enough or on a GPU only.
//!
//! Run: `cargo test --release --test kernels` (`-- --nocapture` prints each comparison).

mod harness;

mod adamw;
mod attention;
mod cross_entropy;
mod declarations;
mod elementwise;
mod embedding;
mod layernorm;
mod matmul;
mod matmul_f32;
mod matmul_wgmma;
mod reduce;
