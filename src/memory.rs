//! Large host allocations, asked for before they are made.
//!
//! Rust aborts the process when the allocator refuses (`memory allocation of N bytes
//! failed`), and an allocation the allocator grants but the machine cannot back ends in the
//! kernel's OOM killer later. Every allocation whose size comes from user input (a model's
//! config, a batch size, a vocabulary size) goes through [`check`] or [`zeroed_vec`]
//! instead: sizes are computed with checked arithmetic (`None` = more than 2^64 bytes), compared
//! with what this machine can give ([`available`]), and the allocation itself is fallible,
//! so a refusal is one [`Error`] line naming the bytes asked and available.

use std::path::Path;

use indicatif::HumanBytes;

use crate::error::{Error, Result};

/// Bytes this process can still be given, with where the figure comes from; `None` where
/// the platform does not tell (the allocator's answer is then the only check).
///
/// On Linux: `MemAvailable` + `SwapFree` from `/proc/meminfo` (memory the kernel can hand
/// out without swapping out other programs' working sets, plus swap), lowered to the room
/// left under a cgroup memory limit (v2 `memory.max`, v1 `memory.limit_in_bytes`), which is
/// what bounds a container.
pub fn available() -> Option<(u64, &'static str)> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = meminfo.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        kib.checked_mul(1024)
    };
    let mut best = (
        field("MemAvailable:")?.saturating_add(field("SwapFree:").unwrap_or(0)),
        "MemAvailable + SwapFree",
    );
    let cgroups = [
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ];
    for (limit, usage) in cgroups {
        if let (Some(limit), Some(usage)) = (read_u64(limit), read_u64(usage)) {
            let room = limit.saturating_sub(usage);
            if room < best.0 {
                best = (room, "the cgroup's memory limit");
            }
        }
    }
    Some(best)
}

/// A file holding one number (`max`, the cgroup v2 "no limit", is not one).
fn read_u64(path: impl AsRef<Path>) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Checks that `bytes` (None: more than 2^64) can be allocated on this machine before it
/// is. `what` names the allocation in the error ("the model's arena", ...), `hint` says what
/// to lower.
pub fn check(what: &str, bytes: Option<u64>, hint: &str) -> Result<()> {
    let Some(bytes) = bytes else {
        return Err(Error::Config(format!(
            "{what} would need more than 2^64 bytes, more than any machine can address; {hint}"
        )));
    };
    match available() {
        Some((free, source)) if bytes > free => Err(Error::Config(format!(
            "{what} needs {} ({bytes} bytes) but this machine has {} available ({source}); {hint}",
            HumanBytes(bytes),
            HumanBytes(free)
        ))),
        _ => Ok(()),
    }
}

/// Bytes of `len` values of `T` (None on overflow).
pub fn bytes_of<T>(len: usize) -> Option<u64> {
    (len as u64).checked_mul(std::mem::size_of::<T>() as u64)
}

/// A zeroed `Vec` of `len` values, checked with [`check`] first and allocated fallibly
/// (zeroed pages come from the OS lazily, as with `vec![0; len]`).
pub fn zeroed_vec<T: bytemuck::Zeroable>(what: &str, len: usize, hint: &str) -> Result<Vec<T>> {
    let bytes = bytes_of::<T>(len);
    check(what, bytes, hint)?;
    bytemuck::allocation::try_zeroed_vec(len).map_err(|()| {
        Error::Config(format!(
            "{what}: the allocator refused {} ({} bytes); {hint}",
            HumanBytes(bytes.unwrap_or(u64::MAX)),
            bytes.unwrap_or(u64::MAX)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_than_available_is_an_error_naming_both_sizes() {
        let Some((free, _)) = available() else {
            return; // not Linux: nothing to compare with
        };
        let e = check("the test's buffer", Some(free + 1), "ask for less")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("{} bytes", free + 1)) && e.contains("available"),
            "{e}"
        );
        assert!(e.ends_with("ask for less"), "{e}");
        assert!(check("a small buffer", Some(1024), "").is_ok());
    }

    #[test]
    fn overflowing_sizes_are_an_error() {
        let e = check("x", None, "lower it").unwrap_err().to_string();
        assert!(e.contains("more than 2^64 bytes"), "{e}");
        assert_eq!(bytes_of::<f32>(usize::MAX), None);
        assert!(zeroed_vec::<f32>("x", usize::MAX, "").is_err());
        let v: Vec<f32> = zeroed_vec("small", 10, "").unwrap();
        assert_eq!(v, vec![0.0; 10]);
    }
}
