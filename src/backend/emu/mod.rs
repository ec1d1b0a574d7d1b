//! The CUDA kernels of `kernels/*.cu`, compiled for the CPU by `build.rs` against the
//! emulation header `kernels/emu/cuda_emu.h` and launched here through FFI, so every kernel is
//! checked against the CPU backend in `cargo test` on machines without a GPU.
//!
//! Each kernel file ends its kernels with `SMELT_EMU_EXPORT` lines that define
//! `smelt_emu_<kernel>(grid, block, dynamic_smem_bytes, args...)`; the submodules declare
//! them and wrap each in a safe function that takes slices and computes the launch geometry
//! (the same geometry the CUDA backend will use).

pub mod attention;
pub mod elementwise;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod optim;
pub mod reduce;

/// CUDA's `dim3`, as the emulated launchers take it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dim3 {
    pub x: u32,
    pub y: u32,
    pub z: u32,
}

impl Dim3 {
    pub fn x(x: u32) -> Self {
        Dim3 { x, y: 1, z: 1 }
    }
}

/// Grid, block and dynamic shared memory (bytes) of one launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchDims {
    pub grid: Dim3,
    pub block: Dim3,
    pub smem: u32,
}
