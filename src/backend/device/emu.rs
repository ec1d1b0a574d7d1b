//! [`EmuRuntime`]: the device runtime on the CPU. Kernels run through the emulation of
//! `kernels/emu/cuda_emu.h`, launched by name with the same arguments and geometry as on a GPU,
//! so the whole device backend (argument lists, scratch memory, kernel sequences, graph
//! capture and replay) is tested in `cargo test` on machines without one.

use std::alloc::{self, Layout};
use std::cell::RefCell;
use std::ffi::c_void;
use std::ptr::NonNull;

use super::{sanitizer, Arg, Kernel, Runtime};
use crate::backend::launch::LaunchDims;
use crate::error::{Error, Result};

/// Host memory standing in for device memory: 256-byte aligned like `cuMemAlloc`, owned
/// through a raw pointer (kernels write through addresses, never through references). The
/// sanitizer tracks it: [`sanitizer::GUARD_BYTES`] of poisoned memory (0xff) on each side are
/// part of the allocation, so an access just outside lands somewhere recognised; unwritten
/// contents are 0xff too.
pub struct EmuBuffer {
    /// The first byte of the contents (after the guard gap).
    ptr: NonNull<u8>,
    /// The whole allocation, guard gaps included.
    layout: Layout,
    bytes: usize,
}

impl EmuBuffer {
    fn new(bytes: usize, zeroed: bool) -> Result<Self> {
        let guard = sanitizer::GUARD_BYTES;
        let layout = bytes
            .checked_add(2 * guard)
            .and_then(|total| Layout::from_size_align(total, 256).ok())
            .ok_or_else(|| Error::Device(format!("cannot allocate {bytes} bytes")))?;
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe {
            if zeroed {
                alloc::alloc_zeroed(layout)
            } else {
                alloc::alloc(layout)
            }
        };
        let raw = NonNull::new(raw).ok_or_else(|| {
            Error::Device(format!("out of host memory for a {bytes}-byte buffer"))
        })?;
        // SAFETY: the guard gaps (and, unless zeroed, the contents) lie inside the allocation.
        unsafe {
            if zeroed {
                std::ptr::write_bytes(raw.as_ptr(), 0xff, guard);
                std::ptr::write_bytes(raw.as_ptr().add(guard + bytes), 0xff, guard);
            } else {
                std::ptr::write_bytes(raw.as_ptr(), 0xff, layout.size());
            }
        }
        // SAFETY: guard < layout.size().
        let ptr = unsafe { NonNull::new_unchecked(raw.as_ptr().add(guard)) };
        sanitizer::register(ptr.as_ptr(), bytes, zeroed);
        Ok(EmuBuffer { ptr, layout, bytes })
    }

    fn check(&self, offset: usize, len: usize) -> Result<()> {
        if offset.checked_add(len).is_none_or(|end| end > self.bytes) {
            return Err(Error::Device(format!(
                "copy of {len} bytes at {offset} outside a {}-byte buffer",
                self.bytes
            )));
        }
        Ok(())
    }
}

impl Drop for EmuBuffer {
    fn drop(&mut self) {
        sanitizer::unregister(self.ptr.as_ptr());
        // SAFETY: allocated in `new` with this layout, `GUARD_BYTES` before `ptr`.
        unsafe {
            alloc::dealloc(
                self.ptr.as_ptr().sub(sanitizer::GUARD_BYTES),
                self.layout,
            )
        }
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

    fn run(&self, launch: &EmuLaunch) -> Result<()> {
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
        match sanitizer::take_findings() {
            Some(findings) => Err(findings.to_error()),
            None => Ok(()),
        }
    }
}

impl Runtime for EmuRuntime {
    type Buffer = EmuBuffer;
    type Graph = Vec<EmuLaunch>;

    fn name(&self) -> String {
        "emu (the CUDA kernels, emulated on the CPU)".into()
    }

    fn alloc(&self, bytes: usize) -> Result<EmuBuffer> {
        EmuBuffer::new(bytes, true)
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
        // SAFETY: inside the allocation (checked).
        sanitizer::mark_written(unsafe { buf.ptr.as_ptr().add(offset) }, src.len());
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
            Some(recording) => {
                recording.push(launch);
                Ok(())
            }
            None => self.run(&launch),
        }
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
            self.run(launch)?;
        }
        Ok(())
    }

    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
}
