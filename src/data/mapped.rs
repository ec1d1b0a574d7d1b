//! Read-only memory maps of token shards, and what happens when a mapped file shrinks.
//!
//! Shards are read through a map: nothing is copied into RAM, every reader shares the page
//! cache, and a random window costs no system call. A map has one hazard: if another process
//! truncates the file while it is mapped, touching a page past the new end raises SIGBUS,
//! which kills the process without a word. Two guards turn that into one clear line:
//!
//! 1. [`MappedFile::read`] checks the file's current length (one `fstat`) before it hands out
//!    bytes, so a shard truncated since it was opened is an error naming it that the caller
//!    reports like any other (`error: ...`, exit 1, the last checkpoint intact).
//! 2. For a truncation that lands between that check and the copy, a SIGBUS handler looks the
//!    faulting address up among the live maps and, when it is in one, writes one
//!    `error: <shard> ...` line to stderr and exits with status 1 (a process cannot continue
//!    after the fault). A fault outside every map goes to the previous handler (Rust's
//!    stack-overflow check), so nothing else changes.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A file mapped read-only, with its length when mapped.
pub struct MappedFile {
    path: PathBuf,
    file: File,
    map: memmap2::Mmap,
    /// Where the map is registered for the SIGBUS guard (None: not registered).
    guard_slot: Option<usize>,
}

impl std::fmt::Debug for MappedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedFile")
            .field("path", &self.path)
            .field("len", &self.map.len())
            .finish()
    }
}

impl MappedFile {
    /// Maps `file` (already opened from `path`) whole.
    pub fn new(path: &Path, file: File) -> Result<Self> {
        // SAFETY: the map is only read. Files that shrink under it are the hazard this module
        // guards against (see the module docs); shards are otherwise written once, to a
        // temporary name, and renamed into place.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let guard_slot = bus_guard::register(
            map.as_ptr() as usize,
            map.len(),
            &truncated_while_mapped(path),
        );
        Ok(MappedFile {
            path: path.to_path_buf(),
            file,
            map,
            guard_slot,
        })
    }

    /// The file's length when it was mapped.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The bytes `[offset, offset + len)` of the map, after checking that the file still
    /// holds them (panics if the range is outside the map: a caller bug).
    pub fn read(&self, offset: usize, len: usize) -> Result<&[u8]> {
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= self.map.len())
            .unwrap_or_else(|| {
                panic!(
                    "bytes [{offset}, {offset}+{len}) outside a map of {}",
                    self.map.len()
                )
            });
        let now = self
            .file
            .metadata()
            .map_err(|e| Error::io(&self.path, e))?
            .len();
        if now < end as u64 {
            return Err(Error::Data(format!(
                "{}: truncated while in use: {} bytes when opened, {now} now; a data set must not change while a run reads it (restore the shard or prepare the data set again)",
                self.path.display(),
                self.map.len()
            )));
        }
        Ok(&self.map[offset..end])
    }

    /// The whole map, unchecked: a file truncated since cannot be read safely through this
    /// (the SIGBUS guard then ends the process with a line naming it). Prefer [`Self::read`].
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        if let Some(slot) = self.guard_slot {
            bus_guard::unregister(slot);
        }
    }
}

/// The line the SIGBUS guard prints for a fault in `path`'s map.
fn truncated_while_mapped(path: &Path) -> String {
    format!(
        "\nerror: {}: truncated while in use (bus error reading its memory map); a data set must not change while a run reads it: restore the shard or prepare the data set again (the last checkpoint is whole)\n",
        path.display()
    )
}

#[cfg(unix)]
mod bus_guard {
    //! The SIGBUS handler and its registry of live maps: a fixed table of slots read by the
    //! handler with atomics only (a signal handler may not lock or allocate).

    use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
    use std::sync::OnceLock;

    const SLOTS: usize = 4096;
    /// A slot's `start` while it is free, and while it is being filled.
    const FREE: usize = 0;
    const FILLING: usize = usize::MAX;

    struct Slot {
        start: AtomicUsize,
        end: AtomicUsize,
        message: AtomicPtr<u8>,
        message_len: AtomicUsize,
    }

    #[allow(clippy::declare_interior_mutable_const)] // each array element is its own slot
    const EMPTY: Slot = Slot {
        start: AtomicUsize::new(FREE),
        end: AtomicUsize::new(0),
        message: AtomicPtr::new(std::ptr::null_mut()),
        message_len: AtomicUsize::new(0),
    };
    static REGISTRY: [Slot; SLOTS] = [EMPTY; SLOTS];

    /// The handler that was installed before ours (read by our handler only after it is set).
    static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

    /// Registers the map `[start, start + len)`; the handler prints `message` for a fault in
    /// it. None when every slot is taken (the map is then only guarded by the length check).
    pub fn register(start: usize, len: usize, message: &str) -> Option<usize> {
        if len == 0 {
            return None;
        }
        install();
        // Kept for the life of the process: the handler may read it at any moment, and a
        // shard's message is a few hundred bytes, made once per opened shard.
        let message: &'static mut [u8] = Box::leak(message.as_bytes().to_vec().into_boxed_slice());
        for (i, slot) in REGISTRY.iter().enumerate() {
            if slot
                .start
                .compare_exchange(FREE, FILLING, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                slot.message.store(message.as_mut_ptr(), Ordering::Release);
                slot.message_len.store(message.len(), Ordering::Release);
                slot.end.store(start + len, Ordering::Release);
                slot.start.store(start, Ordering::Release);
                return Some(i);
            }
        }
        None
    }

    pub fn unregister(slot: usize) {
        REGISTRY[slot].start.store(FREE, Ordering::Release);
    }

    fn install() {
        PREVIOUS.get_or_init(|| {
            // SAFETY: plain sigaction calls with zeroed, then filled, structs; the handler
            // only reads atomics, writes to stderr and exits.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_sigbus as *const () as usize;
                action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut action.sa_mask);
                let mut previous: libc::sigaction = std::mem::zeroed();
                libc::sigaction(libc::SIGBUS, &action, &mut previous);
                previous
            }
        });
    }

    extern "C" fn on_sigbus(
        signal: libc::c_int,
        info: *mut libc::siginfo_t,
        context: *mut libc::c_void,
    ) {
        // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
        let address = unsafe { (*info).si_addr() } as usize;
        for slot in &REGISTRY {
            let start = slot.start.load(Ordering::Acquire);
            if start == FREE || start == FILLING {
                continue;
            }
            if address >= start && address < slot.end.load(Ordering::Acquire) {
                let message = slot.message.load(Ordering::Acquire);
                let len = slot.message_len.load(Ordering::Acquire);
                // SAFETY: write(2) and _exit are async-signal-safe; the message is leaked,
                // so it lives as long as the process.
                unsafe {
                    libc::write(2, message as *const libc::c_void, len);
                    libc::_exit(1);
                }
            }
        }
        // Not one of our maps: what would have happened without us.
        let Some(previous) = PREVIOUS.get() else {
            return;
        };
        let handler = previous.sa_sigaction;
        // SAFETY: calling the previous handler as it was installed (with SA_SIGINFO: the
        // three-argument form), or restoring the default action so that returning re-raises
        // the fault with it.
        unsafe {
            if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
                libc::sigaction(libc::SIGBUS, previous, std::ptr::null_mut());
            } else if previous.sa_flags & libc::SA_SIGINFO != 0 {
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    std::mem::transmute(handler);
                f(signal, info, context);
            } else {
                let f: extern "C" fn(libc::c_int) = std::mem::transmute(handler);
                f(signal);
            }
        }
    }
}

#[cfg(not(unix))]
mod bus_guard {
    //! No SIGBUS elsewhere: the length check is the guard.
    pub fn register(_start: usize, _len: usize, _message: &str) -> Option<usize> {
        None
    }
    pub fn unregister(_slot: usize) {}
}
