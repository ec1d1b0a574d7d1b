//! What the device backend needs from a device: memory, kernel launches with CUDA's argument
//! convention, and recording launches for replay. [`super::emu::EmuRuntime`] provides it on
//! the CPU through the kernel emulation; `crate::backend::cuda::CudaRuntime` on a GPU.

use crate::backend::kernels::Kernel;
use crate::backend::launch::LaunchDims;
use crate::backend::tensor_map::{TensorMap, TensorMapSpec};
use crate::error::Result;

/// One kernel argument, as the kernel's C parameter sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arg {
    /// A device address (`T*`); 0 is a null pointer.
    Ptr(u64),
    /// `int`.
    I32(i32),
    /// `long` (64-bit on the platforms we build for).
    I64(i64),
    /// `float`.
    F32(f32),
    /// `const __grid_constant__ TensorMap` (128 bytes).
    TensorMap(TensorMap),
}

/// An argument's bytes where cuLaunchKernel's `kernelParams` points: an 8-byte slot with the
/// value's bytes first (little-endian), the rest zero; or the whole tensor map.
#[derive(Clone, Copy, Debug)]
pub enum Slot {
    Word(u64),
    Map(TensorMap),
}

impl Slot {
    /// Where the parameter's bytes are (valid while `self` is neither moved nor dropped).
    pub fn as_mut_ptr(&mut self) -> *mut std::ffi::c_void {
        match self {
            Slot::Word(w) => w as *mut u64 as *mut std::ffi::c_void,
            Slot::Map(m) => m as *mut TensorMap as *mut std::ffi::c_void,
        }
    }
}

impl Arg {
    pub fn slot(self) -> Slot {
        match self {
            Arg::Ptr(p) => Slot::Word(p),
            Arg::I32(v) => Slot::Word(u64::from(v as u32)),
            Arg::I64(v) => Slot::Word(v as u64),
            Arg::F32(v) => Slot::Word(u64::from(v.to_bits())),
            Arg::TensorMap(m) => Slot::Map(m),
        }
    }
}

/// The device's generation, as far as kernel choice goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// sm_80 .. sm_89: mma.sync, cp.async.
    Ampere,
    /// sm_90 (sm_90a code): also wgmma, bulk tensor copies, mbarrier transactions.
    Hopper,
}

/// A device: byte buffers, launches of the kernels of `kernels/*.cu`, graph capture.
///
/// Launches and copies are ordered (one stream); copies to the host wait for the launches
/// before them. A runtime may run launches asynchronously, so a failure can surface at a
/// later call.
pub trait Runtime {
    /// A block of device memory.
    type Buffer;
    /// A recorded sequence of launches.
    type Graph;

    /// The device, for the log ("cuda: NVIDIA H200 (...)").
    fn name(&self) -> String;
    /// `bytes` of device memory, aligned to at least 256 bytes. Its contents are undefined
    /// until written (the emulation's sanitizer reports a kernel reading them).
    fn alloc(&self, bytes: usize) -> Result<Self::Buffer>;
    /// `bytes` of zeroed device memory, aligned to at least 256 bytes.
    fn alloc_zeroed(&self, bytes: usize) -> Result<Self::Buffer>;
    /// The device address of the buffer's first byte.
    fn address(&self, buf: &Self::Buffer) -> u64;
    /// Copies `src` into the buffer at byte `offset`.
    fn upload(&self, buf: &mut Self::Buffer, offset: usize, src: &[u8]) -> Result<()>;
    /// Copies from the buffer at byte `offset` into `dst`, after every earlier launch.
    fn download(&self, buf: &Self::Buffer, offset: usize, dst: &mut [u8]) -> Result<()>;
    /// Launches `kernel` over `dims` with `args` (its parameter list, in order). Callers use
    /// the typed launchers of `backend::kernels`, which build `args` from the declaration.
    ///
    /// # Safety
    /// `args` must match the kernel's parameters in number and type, every pointer must
    /// address device memory of this runtime large enough for what the kernel touches at
    /// these sizes, and `dims` must be a launch geometry the kernel supports.
    unsafe fn launch(&self, kernel: &'static Kernel, dims: LaunchDims, args: &[Arg]) -> Result<()>;
    /// From now on, launches are recorded instead of run, until [`Runtime::end_capture`].
    fn begin_capture(&self) -> Result<()>;
    fn end_capture(&self) -> Result<Self::Graph>;
    /// Runs a recorded sequence again, with the arguments it was recorded with.
    fn replay(&self, graph: &Self::Graph) -> Result<()>;
    /// Waits for every launch so far; reports a failure of any of them.
    fn synchronize(&self) -> Result<()>;
    /// The device's generation: which kernels it can run.
    fn arch(&self) -> Arch;
    /// Streaming multiprocessors: the size of a persistent grid.
    fn multiprocessors(&self) -> u32;
    /// The tensor map of `spec` (validated first), for kernels' bulk tensor copies.
    fn tensor_map(&self, spec: &TensorMapSpec) -> Result<TensorMap>;
}
