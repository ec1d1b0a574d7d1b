//! CUDA: the kernels `build.rs` compiles from `kernels/*.cu` (embedded as one fatbin), the
//! discovery of a usable GPU, and [`CudaRuntime`], the GPU under the device backend
//! (`backend::device::DeviceBackend<CudaRuntime>`): one context, one stream, launches through
//! cudarc, CUDA graphs for replay.

#[cfg(smelt_emulation)]
mod runtime;
#[cfg(smelt_emulation)]
pub use runtime::CudaRuntime;

use crate::error::{Error, Result};

/// The fatbin of all kernels (sm_80 + PTX, sm_90a), when nvcc was found at build time.
#[cfg(smelt_fatbin)]
pub const FATBIN: Option<&[u8]> = Some(include_bytes!(concat!(env!("OUT_DIR"), "/smelt.fatbin")));
#[cfg(not(smelt_fatbin))]
pub const FATBIN: Option<&[u8]> = None;

/// Checks that CUDA can run here: kernels built into this binary, a driver, a GPU. Returns the
/// number of GPUs, or why CUDA cannot be used (a short reason, for one line of output).
pub fn probe() -> std::result::Result<usize, String> {
    if FATBIN.is_none() {
        return Err(
            "this build has no CUDA kernels (nvcc was not found when it was built: \
                    `bash tools/setup_cuda.sh`, then rebuild)"
                .into(),
        );
    }
    // cudarc panics when libcuda is absent: ask first.
    // SAFETY: only tries to dlopen libcuda and reports whether it could.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("no CUDA driver (libcuda.so) on this machine".into());
    }
    let count = cudarc::driver::CudaContext::device_count()
        .map_err(|e| format!("the CUDA driver failed: {e}"))?;
    if count < 1 {
        return Err("no CUDA GPU found".into());
    }
    Ok(count as usize)
}

/// [`probe`] as an error for a run that asked for CUDA.
pub fn require() -> Result<usize> {
    probe().map_err(|why| Error::Device(format!("device cuda: {why}; use --device cpu")))
}
