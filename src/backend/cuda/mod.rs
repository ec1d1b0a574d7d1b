//! CUDA: the kernels `build.rs` compiles from `kernels/*.cu` (embedded as one fatbin), the
//! discovery of a usable GPU, and [`CudaRuntime`], the GPU under the device backend
//! (`backend::device::DeviceBackend<CudaRuntime>`): one context, one stream, launches through
//! cudarc, CUDA graphs for replay.

pub mod occupancy;
mod runtime;
pub use runtime::CudaRuntime;

use crate::error::{Error, Result};

/// The fatbin of all kernels (sm_80 + PTX, sm_90a), when nvcc was found at build time.
#[cfg(smelt_fatbin)]
pub const FATBIN: Option<&[u8]> = Some(include_bytes!(concat!(env!("OUT_DIR"), "/smelt.fatbin")));
#[cfg(not(smelt_fatbin))]
pub const FATBIN: Option<&[u8]> = None;

/// Why CUDA cannot be used here. Displays as a short reason without parentheses, to sit
/// inside one line of output; [`Unavailable::remedy`] says what would change it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// This binary was built without nvcc, so it holds no kernels.
    NoKernels,
    /// libcuda could not be loaded.
    NoDriver,
    /// The driver loaded but failed.
    DriverFailed(String),
    NoGpu,
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unavailable::NoKernels => write!(f, "this build has no CUDA kernels"),
            Unavailable::NoDriver => write!(f, "no CUDA driver, libcuda.so, is installed"),
            Unavailable::DriverFailed(e) => write!(f, "the CUDA driver failed: {e}"),
            Unavailable::NoGpu => write!(f, "the CUDA driver finds no GPU"),
        }
    }
}

impl Unavailable {
    /// What would make CUDA usable.
    pub fn remedy(&self) -> &'static str {
        match self {
            Unavailable::NoKernels => {
                "build smelt from source on a machine with the CUDA compiler (see the CUDA section of the README)"
            }
            Unavailable::NoDriver => "install the NVIDIA driver",
            Unavailable::DriverFailed(_) | Unavailable::NoGpu => "check the GPU with nvidia-smi",
        }
    }
}

/// Checks that CUDA can run here: kernels built into this binary, a driver, a GPU. Returns the
/// number of GPUs, or why CUDA cannot be used.
pub fn probe() -> std::result::Result<usize, Unavailable> {
    if FATBIN.is_none() {
        return Err(Unavailable::NoKernels);
    }
    // cudarc panics when libcuda is absent: ask first.
    // SAFETY: only tries to dlopen libcuda and reports whether it could.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(Unavailable::NoDriver);
    }
    let count = cudarc::driver::CudaContext::device_count()
        .map_err(|e| Unavailable::DriverFailed(e.to_string()))?;
    if count < 1 {
        return Err(Unavailable::NoGpu);
    }
    Ok(count as usize)
}

/// [`probe`] as an error for a run that asked for CUDA.
pub fn require() -> Result<usize> {
    probe().map_err(|why| {
        Error::Device(format!(
            "device cuda: {why}; {}, or use --device cpu",
            why.remedy()
        ))
    })
}
