//! [`EmuRuntime`]: the device runtime on the CPU. Kernels run through the emulation of
//! `kernels/emu/cuda_emu.h`, launched by name with the same arguments and geometry as on a GPU,
//! so the whole device backend (argument lists, scratch memory, kernel sequences, graph
//! capture and replay) is tested in `cargo test` on machines without one.

use std::alloc::{self, Layout};
use std::cell::RefCell;
use std::ffi::c_void;
use std::ptr::NonNull;

use super::{Arg, Kernel, Runtime};
use crate::backend::launch::LaunchDims;
use crate::error::{Error, Result};

/// Host memory standing in for device memory: 256-byte aligned like `cuMemAlloc`, zeroed,
/// owned through a raw pointer (kernels write through addresses, never through references).
pub struct EmuBuffer {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl EmuBuffer {
    fn new(bytes: usize) -> Result<Self> {
        let layout = Layout::from_size_align(bytes.max(1), 256)
            .map_err(|_| Error::Device(format!("cannot allocate {bytes} bytes")))?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).ok_or_else(|| {
            Error::Device(format!("out of host memory for a {bytes}-byte buffer"))
        })?;
        Ok(EmuBuffer { ptr, layout })
    }

    fn check(&self, offset: usize, len: usize) -> Result<()> {
        if offset
            .checked_add(len)
            .is_none_or(|end| end > self.layout.size())
        {
            return Err(Error::Device(format!(
                "copy of {len} bytes at {offset} outside a {}-byte buffer",
                self.layout.size()
            )));
        }
        Ok(())
    }
}

impl Drop for EmuBuffer {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// One recorded launch.
#[derive(Clone, Debug)]
pub struct EmuLaunch {
    kernel: Kernel,
    dims: LaunchDims,
    args: Vec<Arg>,
}

/// The CPU stand-in for a GPU. Launches run to completion before `launch` returns; while
/// capturing they are recorded instead, as a CUDA stream capture records them.
#[derive(Default)]
pub struct EmuRuntime {
    capture: RefCell<Option<Vec<EmuLaunch>>>,
    launches: std::cell::Cell<u64>,
}

impl EmuRuntime {
    pub fn new() -> Self {
        EmuRuntime::default()
    }

    /// Kernel launches run so far (replayed ones included): lets tests see that a replay
    /// really launched the recorded kernels.
    pub fn launches_run(&self) -> u64 {
        self.launches.get()
    }

    fn run(&self, launch: &EmuLaunch) {
        let mut slots: Vec<u64> = launch.args.iter().map(|a| a.slot()).collect();
        let mut params: Vec<*mut c_void> = slots
            .iter_mut()
            .map(|s| s as *mut u64 as *mut c_void)
            .collect();
        let d = launch.dims;
        // SAFETY: `launch`'s contract (Runtime::launch) makes the arguments match the kernel
        // and address live buffers; each params[i] points at an 8-byte slot holding argument
        // i, which the emulated launcher reads as the parameter's type (at most 8 bytes,
        // little-endian, first bytes of the slot).
        unsafe { (launch.kernel.emulated())(d.grid, d.block, d.smem, params.as_mut_ptr()) };
        self.launches.set(self.launches.get() + 1);
    }
}

impl Runtime for EmuRuntime {
    type Buffer = EmuBuffer;
    type Graph = Vec<EmuLaunch>;

    fn name(&self) -> String {
        "emu (the CUDA kernels, emulated on the CPU)".into()
    }

    fn alloc(&self, bytes: usize) -> Result<EmuBuffer> {
        EmuBuffer::new(bytes)
    }

    fn address(&self, buf: &EmuBuffer) -> u64 {
        buf.ptr.as_ptr() as u64
    }

    fn upload(&self, buf: &mut EmuBuffer, offset: usize, src: &[u8]) -> Result<()> {
        if self.capture.borrow().is_some() {
            return Err(Error::Device("copy to the device during a capture".into()));
        }
        buf.check(offset, src.len())?;
        // SAFETY: the range lies inside the allocation (checked); src is host memory that
        // cannot overlap a buffer we own exclusively (&mut).
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), buf.ptr.as_ptr().add(offset), src.len())
        };
        Ok(())
    }

    fn download(&self, buf: &EmuBuffer, offset: usize, dst: &mut [u8]) -> Result<()> {
        buf.check(offset, dst.len())?;
        // SAFETY: the range lies inside the allocation (checked); no launch runs concurrently.
        unsafe {
            std::ptr::copy_nonoverlapping(buf.ptr.as_ptr().add(offset), dst.as_mut_ptr(), dst.len())
        };
        Ok(())
    }

    unsafe fn launch(&self, kernel: Kernel, dims: LaunchDims, args: &[Arg]) -> Result<()> {
        let launch = EmuLaunch {
            kernel,
            dims,
            args: args.to_vec(),
        };
        match self.capture.borrow_mut().as_mut() {
            Some(recording) => recording.push(launch),
            None => self.run(&launch),
        }
        Ok(())
    }

    fn begin_capture(&self) -> Result<()> {
        let mut capture = self.capture.borrow_mut();
        if capture.is_some() {
            return Err(Error::Device("a capture is already in progress".into()));
        }
        *capture = Some(Vec::new());
        Ok(())
    }

    fn end_capture(&self) -> Result<Vec<EmuLaunch>> {
        self.capture
            .borrow_mut()
            .take()
            .ok_or_else(|| Error::Device("end of a capture that never began".into()))
    }

    fn replay(&self, graph: &Vec<EmuLaunch>) -> Result<()> {
        for launch in graph {
            self.run(launch);
        }
        Ok(())
    }

    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
}
