//! The emulation's sanitizer, Rust side: the findings of a launch (racecheck, initcheck,
//! memcheck, late cp.async; `kernels/emu/cuda_emu.h` says what each catches) and the tracking
//! of [`super::emu::EmuRuntime`]'s buffers that initcheck and memcheck need: their bounds, with
//! a guard gap on each side, and which bytes were ever written.
//!
//! `SMELT_EMU_SANITIZE=0` turns the checks off (for speed comparisons); `=abort` prints a
//! launch's findings and aborts (for launches that do not go through `EmuRuntime`).

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr};

use crate::backend::launch::Dim3;
use crate::error::Error;

/// Bytes owned by each `EmuRuntime` buffer on either side of its contents: an access there is
/// out of bounds of that buffer (and the memory is never another buffer's).
pub const GUARD_BYTES: usize = 4096;

/// What a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A read of a shared byte that another thread wrote, with no barrier between.
    RaceReadAfterWrite,
    /// A write of a shared byte that another thread wrote, with no barrier between.
    RaceWriteAfterWrite,
    /// A write of a shared byte that another thread read, with no barrier between.
    RaceWriteAfterRead,
    /// A read of shared memory this block never wrote, or of a buffer's bytes never written.
    Uninitialized,
    /// An access leaving its buffer (or the launch's dynamic shared memory).
    OutOfBounds,
    /// An access to a cp.async destination before a wait covers its group.
    CpAsyncPending,
    /// A cp.async outside shared memory or not 16-byte aligned.
    CpAsyncInvalid,
    /// An access to bytes a bulk tensor copy writes, not ordered after the wait on its
    /// mbarrier phase (no wait, the wrong parity, or the wrong barrier).
    BulkCopyUnwaited,
    /// A wgmma read shared memory threads wrote without a `fence.proxy.async` (and a barrier)
    /// between.
    ProxyFenceMissing,
    /// A wgmma read bytes a bulk copy wrote with another swizzle than its descriptor's.
    SwizzleMismatch,
    /// A shared-memory operand of a wgmma in flight changed before its `wgmma.wait_group`.
    WgmmaOperandChanged,
}

/// What the reported thread did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    Atomic,
    CpAsync,
    /// A bulk tensor copy's issue or landing.
    BulkCopy,
    /// A wgmma's read of its shared-memory operands.
    Wgmma,
}

/// Where the address lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    /// An `EmuRuntime` buffer (or its guard gap).
    Global,
    /// `extern __shared__ float smem[]`.
    DynamicShared,
    /// A static `__shared__` variable.
    StaticShared,
    /// Neither (a cp.async destination outside shared memory).
    Other,
}

/// One finding, as `smelt_emu_report` in `kernels/emu/sanitizer.h` lays it out.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Report {
    kind: u32,
    access: u32,
    space: u32,
    /// Bytes of the access.
    pub size: u32,
    kernel: [c_char; 64],
    /// The block of the thread that made the access.
    pub block: Dim3,
    /// The thread that made the access.
    pub thread: Dim3,
    other: Dim3,
    has_other: u32,
    reserved: u32,
    /// The first byte found wrong.
    pub address: u64,
    /// `address` from the buffer's first byte (negative: before it), or in dynamic shared
    /// memory.
    pub offset: i64,
    /// The buffer's size, or the launch's dynamic shared memory.
    pub region_bytes: u64,
}

impl Report {
    pub fn kind(&self) -> Kind {
        match self.kind {
            1 => Kind::RaceReadAfterWrite,
            2 => Kind::RaceWriteAfterWrite,
            3 => Kind::RaceWriteAfterRead,
            4 => Kind::Uninitialized,
            5 => Kind::OutOfBounds,
            6 => Kind::CpAsyncPending,
            7 => Kind::CpAsyncInvalid,
            8 => Kind::BulkCopyUnwaited,
            9 => Kind::ProxyFenceMissing,
            10 => Kind::SwizzleMismatch,
            _ => Kind::WgmmaOperandChanged,
        }
    }

    pub fn access(&self) -> Access {
        match self.access {
            1 => Access::Read,
            2 => Access::Write,
            3 => Access::Atomic,
            4 => Access::CpAsync,
            5 => Access::BulkCopy,
            _ => Access::Wgmma,
        }
    }

    pub fn space(&self) -> Space {
        match self.space {
            1 => Space::Global,
            2 => Space::DynamicShared,
            3 => Space::StaticShared,
            _ => Space::Other,
        }
    }

    /// The kernel's name.
    pub fn kernel(&self) -> &str {
        // SAFETY: the emulation writes a NUL-terminated name into the 64 bytes.
        let name = unsafe { CStr::from_ptr(self.kernel.as_ptr()) };
        name.to_str().unwrap_or("(non-UTF-8 kernel name)")
    }

    /// The other thread of a race, or the thread whose cp.async is pending.
    pub fn other_thread(&self) -> Option<Dim3> {
        (self.has_other != 0).then_some(self.other)
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut buf = [0 as c_char; 512];
        // SAFETY: `self` is a report the emulation wrote; the buffer's size is passed.
        unsafe { smelt_emu_sanitizer_describe(self, buf.as_mut_ptr(), buf.len()) };
        // SAFETY: describe NUL-terminates within the buffer.
        let text = unsafe { CStr::from_ptr(buf.as_ptr()) };
        f.write_str(&text.to_string_lossy())
    }
}

impl std::fmt::Debug for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Report({self})")
    }
}

unsafe extern "C" {
    fn smelt_emu_sanitizer_enabled() -> c_int;
    fn smelt_emu_sanitizer_register(
        base: *const c_void,
        bytes: usize,
        guard: usize,
        written: c_int,
    );
    fn smelt_emu_sanitizer_unregister(base: *const c_void);
    fn smelt_emu_sanitizer_mark_written(addr: *const c_void, bytes: usize);
    fn smelt_emu_sanitizer_take_reports(out: *mut Report, capacity: usize, kept: *mut usize)
        -> u64;
    fn smelt_emu_sanitizer_describe(
        report: *const Report,
        buf: *mut c_char,
        capacity: usize,
    ) -> usize;
}

/// Whether the sanitizer runs (`SMELT_EMU_SANITIZE` is not `0`).
pub fn enabled() -> bool {
    // SAFETY: reads an environment setting once.
    unsafe { smelt_emu_sanitizer_enabled() != 0 }
}

/// Tracks a buffer of `bytes` at `base`, owning [`GUARD_BYTES`] on each side; `written`: its
/// bytes count as written (zeroed memory).
pub(crate) fn register(base: *const u8, bytes: usize, written: bool) {
    // SAFETY: records the range; the memory is not touched.
    unsafe { smelt_emu_sanitizer_register(base.cast(), bytes, GUARD_BYTES, c_int::from(written)) }
}

/// Stops tracking the buffer at `base` (before its memory is freed).
pub(crate) fn unregister(base: *const u8) {
    // SAFETY: forgets the range registered at `base`, if any.
    unsafe { smelt_emu_sanitizer_unregister(base.cast()) }
}

/// The host wrote `bytes` at `addr` (inside a tracked buffer).
pub(crate) fn mark_written(addr: *const u8, bytes: usize) {
    // SAFETY: updates the written map of the buffer holding the range, if any.
    unsafe { smelt_emu_sanitizer_mark_written(addr.cast(), bytes) }
}

/// The findings of one launch: the first few (at most 8), and how many in all.
#[derive(Clone, Debug, Default)]
pub struct Findings {
    pub kept: Vec<Report>,
    pub total: u64,
}

impl Findings {
    /// The launch's error: its first finding, and how many more.
    pub fn to_error(&self) -> Error {
        let first = self
            .kept
            .first()
            .map_or_else(String::new, |r| r.to_string());
        let more = match self.total.saturating_sub(1) {
            0 => String::new(),
            n => format!(" (and {n} more findings in this launch)"),
        };
        Error::Device(format!("sanitizer: {first}{more}"))
    }
}

thread_local! {
    static LAST_FAILED: RefCell<Findings> = RefCell::new(Findings::default());
}

/// The findings of the last launch this thread made through the emulation (taken: a second
/// call returns none), kept also as [`last_failed_launch`] when there are any.
pub(crate) fn take_findings() -> Option<Findings> {
    let mut kept = [Report {
        kind: 0,
        access: 0,
        space: 0,
        size: 0,
        kernel: [0; 64],
        block: Dim3::x(0),
        thread: Dim3::x(0),
        other: Dim3::x(0),
        has_other: 0,
        reserved: 0,
        address: 0,
        offset: 0,
        region_bytes: 0,
    }; 8];
    let mut n = 0usize;
    // SAFETY: the emulation copies at most `kept.len()` reports and says how many.
    let total = unsafe { smelt_emu_sanitizer_take_reports(kept.as_mut_ptr(), kept.len(), &mut n) };
    if total == 0 {
        return None;
    }
    let findings = Findings {
        kept: kept[..n].to_vec(),
        total,
    };
    LAST_FAILED.with(|last| *last.borrow_mut() = findings.clone());
    Some(findings)
}

/// The findings of the last launch on this thread that had any (for tests that look at them
/// after `EmuRuntime::launch` returned its error).
pub fn last_failed_launch() -> Findings {
    LAST_FAILED.with(|last| last.borrow().clone())
}
