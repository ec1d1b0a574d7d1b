//! Where build.rs finds nvcc, and what it must watch so that cargo re-runs it when the nvcc it
//! would find changes: an nvcc that appears (`tools/setup_cuda.sh` installs the wheels after a
//! CPU-only build), moves, or is replaced. Shared by build.rs and its test
//! (`tests/build_nvcc.rs`), so it uses nothing but std.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The environment variables the search reads; build.rs re-runs when any of them changes.
pub const ENV_VARS: [&str; 5] = ["NVCC", "CUDA_HOME", "CUDA_PATH", "PATH", "SMELT_NO_NVCC"];

/// Where `tools/setup_cuda.sh` installs the CUDA wheels, relative to the crate root.
pub const WHEEL_VENV: &str = "tools/.venv-cuda";

/// The outcome of a search.
#[derive(Debug, Default, PartialEq)]
pub struct NvccSearch {
    /// The nvcc to compile with, if any.
    pub nvcc: Option<PathBuf>,
    /// Existing files and folders whose change means the search could find another nvcc
    /// (for cargo's `rerun-if-changed`; a path that does not exist would make cargo re-run
    /// the build script on every build, so only existing ones are listed).
    pub watch: Vec<PathBuf>,
}

/// Looks for nvcc, in order: `NVCC`, `CUDA_HOME`/`CUDA_PATH` (`bin/nvcc`), each folder of
/// `PATH`, and the wheel venv under `root`. `SMELT_NO_NVCC` set means none. `env` reads an
/// environment variable (build.rs passes `std::env::var_os`).
pub fn find_nvcc(root: &Path, env: &dyn Fn(&str) -> Option<OsString>) -> NvccSearch {
    if env("SMELT_NO_NVCC").is_some() {
        return NvccSearch::default();
    }
    // Each candidate with the folder to watch while it is missing: where it would appear.
    let mut candidates: Vec<(PathBuf, Option<PathBuf>)> = Vec::new();
    if let Some(p) = env("NVCC") {
        // An explicit choice: that file or nothing (the variable changing re-runs the search).
        let p = PathBuf::from(p);
        let dir = p.parent().map(Path::to_path_buf);
        candidates.push((p, dir));
    } else {
        for var in ["CUDA_HOME", "CUDA_PATH"] {
            if let Some(home) = env(var) {
                let bin = PathBuf::from(home).join("bin");
                candidates.push((bin.join("nvcc"), Some(bin)));
            }
        }
        if let Some(path) = env("PATH") {
            for dir in std::env::split_paths(&path).filter(|d| d.is_absolute()) {
                candidates.push((dir.join("nvcc"), Some(dir)));
            }
        }
        let tools = root.join("tools");
        for nvcc in wheel_nvcc_candidates(root) {
            // The deepest existing folder on the way, but never above tools/ (the crate's
            // own folder holds target/, which changes on every build).
            let dir = nvcc
                .ancestors()
                .skip(1)
                .take_while(|d| d.starts_with(&tools))
                .find(|d| d.is_dir())
                .map(Path::to_path_buf);
            candidates.push((nvcc, dir));
        }
    }
    let mut watch = Vec::new();
    for (nvcc, dir) in candidates {
        if nvcc.is_file() {
            watch.push(nvcc.clone());
            return NvccSearch {
                nvcc: Some(nvcc),
                watch,
            };
        }
        if let Some(dir) = dir.filter(|d| d.is_dir() && !watch.contains(d)) {
            watch.push(dir);
        }
    }
    NvccSearch { nvcc: None, watch }
}

/// `tools/.venv-cuda/lib/python3.X/site-packages/nvidia/cu13/bin/nvcc` for each Python the
/// venv has (or, before the venv exists, one path under it, so that the nearest existing
/// folder on its way is watched).
fn wheel_nvcc_candidates(root: &Path) -> Vec<PathBuf> {
    let lib = root.join(WHEEL_VENV).join("lib");
    let tail = "site-packages/nvidia/cu13/bin/nvcc";
    let mut found: Vec<PathBuf> = std::fs::read_dir(&lib)
        .map(|d| d.flatten().map(|e| e.path().join(tail)).collect())
        .unwrap_or_default();
    found.sort();
    if found.is_empty() {
        found.push(lib.join("python3").join(tail));
    }
    found
}
