//! The CUDA kernels of `kernels/*.cu`, compiled for the CPU by `build.rs` against the
//! emulation header `kernels/emu/cuda_emu.h` and launched here through FFI, so every kernel is
//! checked against the CPU backend in `cargo test` on machines without a GPU.
//!
//! Each kernel file ends its kernels with `SMELT_EMU_EXPORT` lines that define
//! `smelt_emu_<kernel>(grid, block, dynamic_smem_bytes, args...)`; the submodules declare
//! them and wrap each in a safe function that takes slices and computes the launch geometry
//! (the same geometry the CUDA backend will use).

pub mod attention;
pub mod attention_tc;
pub mod elementwise;
pub mod matmul;
pub mod matmul_f32;
pub mod norm;
pub mod optim;
pub mod reduce;

pub use super::launch::{Dim3, LaunchDims};
