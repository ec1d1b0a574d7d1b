//! The CPU thread pool: rayon's global pool, started explicitly with a checked size.
//!
//! Left to itself, rayon builds its global pool on first use and panics when the OS refuses
//! a worker thread (a process limit, `ulimit -u`). A failed `build_global` is worse: rayon
//! then never builds a pool again and every later parallel call panics ("The global thread
//! pool has not been initialized"). So binaries call [`init`] before any parallel work (the
//! CPU kernels, `gemm`, `tokenizers` all run on this pool): a refused thread becomes one
//! error line, and a size larger than the machine's parallelism is capped with a warning.

use std::sync::Mutex;

use crate::error::{Error, Result};

/// Threads this machine runs at once (CPU affinity and cgroup quotas included).
pub fn machine_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Starts rayon's global pool with `requested` threads (0: `RAYON_NUM_THREADS` if set, else
/// one per core), capped at [`machine_threads`] with a warning naming `setting`. Returns
/// the pool's size. If a pool already runs (an earlier call or earlier rayon use in this
/// process) it is kept. An error if the OS refuses a thread; rayon cannot start a pool in
/// this process after that, so the caller should stop.
pub fn init(requested: usize, setting: &str) -> Result<usize> {
    let cores = machine_threads();
    let from_env = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0);
    let (wanted, setting) = match (requested, from_env) {
        (0, Some(n)) => (n, "RAYON_NUM_THREADS"),
        (0, None) => (cores, setting),
        (n, _) => (n, setting),
    };
    let threads = if wanted > cores {
        eprintln!(
            "warning: {setting} = {wanted} is more than the {cores} threads this machine runs at once; using {cores}"
        );
        cores
    } else {
        wanted
    };
    // The first thread the OS refused, if any: that, and not an existing pool, is why
    // build_global failed.
    let refused: Mutex<Option<std::io::Error>> = Mutex::new(None);
    let built = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .spawn_handler(|worker| {
            let mut b = std::thread::Builder::new();
            if let Some(name) = worker.name() {
                b = b.name(name.to_owned());
            }
            if let Some(size) = worker.stack_size() {
                b = b.stack_size(size);
            }
            match b.spawn(|| worker.run()) {
                Ok(_) => Ok(()),
                Err(e) => {
                    let kind = e.kind();
                    let message = e.to_string();
                    *refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    Err(std::io::Error::new(kind, message))
                }
            }
        })
        .build_global();
    match (built, refused.into_inner().unwrap_or_else(|p| p.into_inner())) {
        (Ok(()), _) => Ok(threads),
        (Err(_), Some(e)) => Err(Error::Config(format!(
            "cannot start {threads} CPU threads: {e}; lower {setting}, or raise this user's process limit (ulimit -u)"
        ))),
        // The global pool was already built: keep it.
        (Err(_), None) => Ok(rayon::current_num_threads()),
    }
}
