//! build.rs's search for nvcc (`build/nvcc.rs`, shared with build.rs): it finds nvcc where
//! each source says, and watches the places where a missing nvcc would appear, so that cargo
//! re-runs the build script (and compiles the kernels) once `tools/setup_cuda.sh` has
//! installed the wheels after a CPU-only build, or once nvcc lands on `PATH`.

#[path = "../build/nvcc.rs"]
mod nvcc;

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

mod common;
use common::TempDir;

/// An environment with only these variables.
fn env(vars: &[(&str, &Path)]) -> impl Fn(&str) -> Option<OsString> {
    let map: HashMap<String, OsString> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_os_str().to_owned()))
        .collect();
    move |k| map.get(k).cloned()
}

fn fake_nvcc(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, "#!/bin/sh\n").unwrap();
}

/// The wheel layout `tools/setup_cuda.sh` makes under a crate root.
fn wheel_nvcc(root: &Path) -> PathBuf {
    root.join("tools/.venv-cuda/lib/python3.11/site-packages/nvidia/cu13/bin/nvcc")
}

#[test]
fn a_crate_built_without_nvcc_watches_where_setup_cuda_installs_it() {
    let root = TempDir::new("nvcc-wheel");
    std::fs::create_dir_all(root.path("tools")).unwrap();
    let empty_path = root.path("empty-bin");
    std::fs::create_dir_all(&empty_path).unwrap();
    let vars = env(&[("PATH", &empty_path)]);

    // No venv yet: tools/ is watched (the venv will be created inside it).
    let before = nvcc::find_nvcc(&root, &vars);
    assert_eq!(before.nvcc, None);
    assert!(before.watch.contains(&root.path("tools")), "{before:?}");
    assert!(before.watch.contains(&empty_path), "{before:?}");

    // A venv without the compiler yet: the deepest existing folder on the way is watched.
    let site = root.path("tools/.venv-cuda/lib/python3.11/site-packages");
    std::fs::create_dir_all(&site).unwrap();
    let partial = nvcc::find_nvcc(&root, &vars);
    assert_eq!(partial.nvcc, None);
    assert!(partial.watch.contains(&site), "{partial:?}");

    // After setup_cuda.sh: found; the compiler itself is watched, and so are the PATH folders
    // searched before it (an nvcc appearing there would be found first).
    fake_nvcc(&wheel_nvcc(&root));
    let after = nvcc::find_nvcc(&root, &vars);
    assert_eq!(after.nvcc, Some(wheel_nvcc(&root)));
    assert_eq!(after.watch, vec![empty_path.clone(), wheel_nvcc(&root)]);
}

#[test]
fn path_comes_before_the_wheels_and_its_folders_are_watched() {
    let root = TempDir::new("nvcc-path");
    fake_nvcc(&wheel_nvcc(&root));
    let bin = root.path("cuda/bin");
    std::fs::create_dir_all(&bin).unwrap();
    let vars = env(&[("PATH", &bin)]);
    let wheel = nvcc::find_nvcc(&root, &vars);
    assert_eq!(wheel.nvcc, Some(wheel_nvcc(&root)));
    fake_nvcc(&bin.join("nvcc"));
    let on_path = nvcc::find_nvcc(&root, &vars);
    assert_eq!(on_path.nvcc, Some(bin.join("nvcc")));
}

#[test]
fn explicit_choices_and_opt_out() {
    let root = TempDir::new("nvcc-explicit");
    let home = root.path("cuda-home");
    fake_nvcc(&home.join("bin/nvcc"));
    let found = nvcc::find_nvcc(&root, &env(&[("CUDA_HOME", &home)]));
    assert_eq!(found.nvcc, Some(home.join("bin/nvcc")));

    // NVCC names one file: nothing else is taken when it is missing.
    fake_nvcc(&wheel_nvcc(&root));
    let missing = root.path("nowhere/nvcc");
    let none = nvcc::find_nvcc(&root, &env(&[("NVCC", &missing)]));
    assert_eq!(none.nvcc, None);

    let off = nvcc::find_nvcc(&root, &env(&[("SMELT_NO_NVCC", Path::new("1"))]));
    assert_eq!(off, nvcc::NvccSearch::default());
}

#[test]
fn nothing_outside_the_crate_tools_and_path_folders_is_watched() {
    // A watched folder is scanned on every build: never the crate root (target/ changes on
    // every build) nor a folder above a missing PATH entry.
    let root = TempDir::new("nvcc-scope");
    let vars = env(&[("PATH", Path::new("/no/such/dir/bin"))]);
    let s = nvcc::find_nvcc(&root, &vars);
    assert_eq!(s.nvcc, None);
    assert!(s.watch.is_empty(), "{s:?}");
}

#[test]
fn every_variable_the_search_reads_re_runs_the_build_script() {
    // build.rs emits rerun-if-env-changed for ENV_VARS: each variable the search reads must be
    // there, or a change of it (PATH gaining a CUDA folder) would go unnoticed.
    let root = TempDir::new("nvcc-vars");
    let read = std::cell::RefCell::new(Vec::new());
    let spy = |k: &str| {
        read.borrow_mut().push(k.to_string());
        None
    };
    nvcc::find_nvcc(&root, &spy);
    let read = read.into_inner();
    assert!(read.iter().any(|k| k == "PATH"), "{read:?}");
    for k in &read {
        assert!(
            nvcc::ENV_VARS.contains(&k.as_str()),
            "{k} is read but not watched"
        );
    }
}
