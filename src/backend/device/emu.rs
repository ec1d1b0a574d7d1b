//! [`EmuRuntime`]: the device runtime on the CPU. Kernels run through the emulation of
//! `kernels/emu/cuda_emu.h`, launched by name with the same arguments and geometry as on a GPU,
//! so the whole device backend (argument lists, scratch memory, kernel sequences, graph
//! capture and replay) is tested in `cargo test` on machines without one.

use std::alloc::{self, Layout};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr};
use std::ptr::NonNull;
use std::sync::OnceLock;

use super::{sanitizer, Arch, Arg, Kernel, Runtime, Slot};
use crate::backend::launch::{Dim3, LaunchDims};
use crate::backend::tensor_map::{TensorMap, TensorMapSpec};
use crate::error::{Error, Result};

/// A row of the emulation's kernel table (`smelt_emu_kernel` in `kernels/emu/cuda_emu.h`).
#[repr(C)]
struct TableRow {
    name: *const c_char,
    launch: unsafe extern "C" fn(Dim3, Dim3, u32, *mut *mut c_void),
    signature: unsafe extern "C" fn() -> *const c_char,
}

unsafe extern "C" {
    /// Every `extern "C" __global__` kernel of `kernels/*.cu`, compiled for the CPU (build.rs).
    static smelt_emu_kernels: [TableRow; 0];
    static smelt_emu_kernel_count: u32;
}

/// An emulated kernel: its launcher and its C++ parameter types.
struct EmulatedKernel {
    launch: unsafe extern "C" fn(Dim3, Dim3, u32, *mut *mut c_void),
    signature: String,
}

/// The kernel table by name, read once.
fn table() -> &'static HashMap<&'static str, EmulatedKernel> {
    static TABLE: OnceLock<HashMap<&'static str, EmulatedKernel>> = OnceLock::new();
    TABLE.get_or_init(|| {
        // SAFETY: build.rs defines both symbols in the emulation library: an array of
        // `smelt_emu_kernel_count` rows whose strings are static and NUL-terminated.
        let rows = unsafe {
            std::slice::from_raw_parts(
                std::ptr::addr_of!(smelt_emu_kernels).cast::<TableRow>(),
                smelt_emu_kernel_count as usize,
            )
        };
        rows.iter()
            .map(|row| {
                // SAFETY: see above; `signature` returns a static NUL-terminated string.
                let (name, signature) = unsafe {
                    (
                        CStr::from_ptr(row.name)
                            .to_str()
                            .expect("ASCII kernel name"),
                        CStr::from_ptr((row.signature)())
                            .to_string_lossy()
                            .into_owned(),
                    )
                };
                let kernel = EmulatedKernel {
                    launch: row.launch,
                    signature,
                };
                (name, kernel)
            })
            .collect()
    })
}

/// The names of every kernel the emulation holds, with their C++ parameter types.
pub fn emulated_kernels() -> Vec<(&'static str, &'static str)> {
    let mut all: Vec<_> = table()
        .iter()
        .map(|(name, k)| (*name, k.signature.as_str()))
        .collect();
    all.sort();
    all
}

/// The emulated launcher of `kernel`, after checking that its declaration's parameter types
/// are those of the `.cu` signature.
fn emulated(kernel: &Kernel) -> Result<unsafe extern "C" fn(Dim3, Dim3, u32, *mut *mut c_void)> {
    let found = table().get(kernel.name).ok_or_else(|| {
        Error::Device(format!(
            "kernel {} (declared in {}) is not in kernels/*.cu",
            kernel.name, kernel.declared_in
        ))
    })?;
    let declared = kernel.signature();
    if found.signature != declared {
        return Err(Error::Device(format!(
            "kernel {}: declared in {} as ({declared}), but kernels/*.cu defines ({})",
            kernel.name, kernel.declared_in, found.signature
        )));
    }
    Ok(found.launch)
}

/// What an [`EmuBuffer`]'s guard gaps and never-written contents hold (f32 NaN).
pub const UNWRITTEN_BYTE: u8 = 0xff;

/// Host memory standing in for device memory: 256-byte aligned like `cuMemAlloc`, owned
/// through a raw pointer (kernels write through addresses, never through references). The
/// sanitizer tracks it: [`sanitizer::GUARD_BYTES`] of poisoned memory ([`UNWRITTEN_BYTE`]) on each side are
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
                std::ptr::write_bytes(raw.as_ptr(), UNWRITTEN_BYTE, guard);
                std::ptr::write_bytes(raw.as_ptr().add(guard + bytes), UNWRITTEN_BYTE, guard);
            } else {
                std::ptr::write_bytes(raw.as_ptr(), UNWRITTEN_BYTE, layout.size());
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
        unsafe { alloc::dealloc(self.ptr.as_ptr().sub(sanitizer::GUARD_BYTES), self.layout) }
    }
}

/// One recorded launch.
#[derive(Clone, Debug)]
pub struct EmuLaunch {
    kernel: &'static Kernel,
    dims: LaunchDims,
    args: Vec<Arg>,
}

/// The CPU stand-in for a GPU. Launches run to completion before `launch` returns; while
/// capturing they are recorded instead, as a CUDA stream capture records them.
///
/// It emulates a Hopper GPU (wgmma, bulk tensor copies) with [`EMULATED_MULTIPROCESSORS`]
/// multiprocessors, unless made with [`EmuRuntime::with_arch`] or `SMELT_EMU_ARCH=sm_80`
/// in the environment (then the backend picks the Ampere kernels, as on an A100).
pub struct EmuRuntime {
    arch: Arch,
    capture: RefCell<Option<Vec<EmuLaunch>>>,
    launches: std::cell::Cell<u64>,
    /// Launches run per kernel name (replayed ones included).
    launches_by_kernel: RefCell<std::collections::HashMap<&'static str, u64>>,
}

/// Multiprocessors the emulation reports: few, so that a persistent grid's blocks each take
/// several tiles in tests.
pub const EMULATED_MULTIPROCESSORS: u32 = 3;

impl Default for EmuRuntime {
    fn default() -> Self {
        let arch = match std::env::var("SMELT_EMU_ARCH").as_deref() {
            Ok("sm_80") => Arch::Ampere,
            _ => Arch::Hopper,
        };
        EmuRuntime::with_arch(arch)
    }
}

impl EmuRuntime {
    pub fn new() -> Self {
        EmuRuntime::default()
    }

    /// An emulated device of generation `arch` (which kernels the backend chooses).
    pub fn with_arch(arch: Arch) -> Self {
        EmuRuntime {
            arch,
            capture: RefCell::default(),
            launches: Default::default(),
            launches_by_kernel: RefCell::default(),
        }
    }

    /// Kernel launches run so far (replayed ones included): lets tests see that a replay
    /// really launched the recorded kernels.
    pub fn launches_run(&self) -> u64 {
        self.launches.get()
    }

    /// Launches of the kernel named `name` run so far (replayed ones included): lets tests
    /// see which kernels a pass launches.
    pub fn launches_of(&self, name: &str) -> u64 {
        self.launches_by_kernel
            .borrow()
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    fn run(&self, launch: &EmuLaunch) -> Result<()> {
        let entry = emulated(launch.kernel)?;
        let mut slots: Vec<Slot> = launch.args.iter().map(|a| a.slot()).collect();
        let mut params: Vec<*mut c_void> = slots.iter_mut().map(Slot::as_mut_ptr).collect();
        let d = launch.dims;
        // SAFETY: `launch`'s contract (Runtime::launch) makes the arguments match the kernel
        // and address live buffers; each params[i] points at the slot holding argument i,
        // which the emulated launcher reads as the parameter's type (a scalar from the first
        // bytes of an 8-byte slot, little-endian, or a whole tensor map).
        unsafe { entry(d.grid, d.block, d.smem, params.as_mut_ptr()) };
        self.launches.set(self.launches.get() + 1);
        *self
            .launches_by_kernel
            .borrow_mut()
            .entry(launch.kernel.name)
            .or_insert(0) += 1;
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
        EmuBuffer::new(bytes, false)
    }

    fn alloc_zeroed(&self, bytes: usize) -> Result<EmuBuffer> {
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

    unsafe fn launch(&self, kernel: &'static Kernel, dims: LaunchDims, args: &[Arg]) -> Result<()> {
        let launch = EmuLaunch {
            kernel,
            dims,
            args: args.to_vec(),
        };
        match self.capture.borrow_mut().as_mut() {
            Some(recording) => {
                // A kernel that cannot run fails when recorded, as a CUDA capture would.
                emulated(kernel)?;
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

    fn arch(&self) -> Arch {
        self.arch
    }

    fn multiprocessors(&self) -> u32 {
        EMULATED_MULTIPROCESSORS
    }

    fn tensor_map(&self, spec: &TensorMapSpec) -> Result<TensorMap> {
        spec.validate()?;
        Ok(spec.emulation_encoding())
    }
}
