//! Launch geometry types shared by the kernel declarations (`backend::kernels`), the
//! device backend (`backend::device`) and the GPU tests: a launch is the same on both.

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
