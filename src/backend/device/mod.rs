//! The device backend: the [`crate::backend::Backend`] trait implemented once, over a
//! [`Runtime`] that provides memory and kernel launches. Two runtimes exist:
//! - `crate::backend::cuda::CudaRuntime`: a GPU through cudarc, the kernels of the embedded
//!   fatbin, CUDA graphs;
//! - [`emu::EmuRuntime`]: the same kernels compiled for the CPU through the emulation layer,
//!   so `cargo test` runs the whole device backend (and whole training steps) without a GPU.

mod backend;
#[cfg(smelt_emulation)]
pub mod emu;
mod runtime;
#[cfg(smelt_emulation)]
pub mod sanitizer;

pub use crate::backend::kernels::Kernel;
pub use backend::{DeviceArena, DeviceBackend, DeviceIndices, Precision};
pub use runtime::{Arch, Arg, Runtime, Slot};
