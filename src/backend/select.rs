//! Choosing a backend by name (`--device auto|cpu|cuda|emu`, `--precision auto|bf16|f32`) for
//! work that is generic over [`Backend`]: the caller's job runs with the chosen backend's type.

use super::cpu::CpuBackend;
use super::cuda::{probe, CudaRuntime};
#[cfg(smelt_emulation)]
use super::device::emu::EmuRuntime;
use super::device::{DeviceBackend, Precision};
use super::Backend;
use crate::error::{Error, Result};

/// Work to run on whichever backend is chosen.
pub trait DeviceJob {
    type Output;
    fn run<B: Backend>(self, backend: B) -> Result<Self::Output>;
}

/// The device backends' precision for a `--precision` value (`auto` is bf16).
pub fn precision(requested: &str) -> Result<Precision> {
    match requested {
        "auto" | "bf16" => Ok(Precision::Bf16),
        "f32" => Ok(Precision::F32),
        other => Err(Error::Config(format!(
            "precision '{other}' is not one of auto, bf16, f32"
        ))),
    }
}

/// Runs `job` on `device`: `cpu`; `cuda` (GPU 0; one line saying what is missing without
/// one); `emu` (the CUDA kernels emulated on the CPU: slow, for tests); `auto` (CUDA when this
/// build has kernels and a GPU is present, else the CPU, saying which and why on stderr).
pub fn run_on_device<J: DeviceJob>(
    device: &str,
    precision_name: &str,
    job: J,
) -> Result<J::Output> {
    let precision = precision(precision_name)?;
    if precision_name != "auto" && device == "cpu" {
        eprintln!("note: precision applies to CUDA; the CPU computes in f32");
    }
    match device {
        "cpu" => job.run(CpuBackend::new()),
        "cuda" => job.run(DeviceBackend::new(CudaRuntime::new(0)?, precision)),
        #[cfg(smelt_emulation)]
        "emu" => job.run(DeviceBackend::new(EmuRuntime::new(), precision)),
        #[cfg(not(smelt_emulation))]
        "emu" => Err(Error::Config(
            "device emu: this build has no kernel emulation (it needs a host C++ compiler at build time)"
                .into(),
        )),
        "auto" => match probe() {
            Ok(_) => {
                eprintln!("device auto: a GPU and CUDA kernels are present: using CUDA");
                job.run(DeviceBackend::new(CudaRuntime::new(0)?, precision))
            }
            Err(why) => {
                eprintln!("device auto: using the CPU, since {why}");
                job.run(CpuBackend::new())
            }
        },
        other => Err(Error::Config(format!(
            "device '{other}' is not one of auto, cpu, cuda, emu"
        ))),
    }
}
