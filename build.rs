//! Build script: compiles the CUDA kernels in `kernels/` two ways.
//!
//! 1. **For the GPU**, with nvcc: every `kernels/*.cu` goes into one translation unit and one
//!    fatbin (`sm_80` machine code + PTX, and `sm_90a` machine code for Hopper), which the crate
//!    embeds (`cfg(smelt_fatbin)`, `OUT_DIR/smelt.fatbin`). ptxas reports register use; any
//!    spill fails the build. nvcc is looked for in `NVCC`, `CUDA_HOME`/`CUDA_PATH`, `PATH`, and
//!    the PyPI wheels `tools/setup_cuda.sh` installs (`build/nvcc.rs`). Without it the crate
//!    still builds (CPU only) with a cargo warning, and the script re-runs by itself once an
//!    nvcc appears where it looks (the places it would find one are watched).
//! 2. **For the CPU**, with the host C++ compiler: the same sources against an emulation of
//!    CUDA's execution model (`kernels/emu/cuda_emu.h`), followed by a table of every kernel
//!    (`build/kernel_names.rs` finds them), so `cargo test` runs every kernel on machines
//!    without a GPU, under the emulation's sanitizer (g++ instruments the kernels' loads and
//!    stores; `build/shared_decls.rs` rewrites their `__shared__` declarations so that it sees
//!    all of them).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "build/kernel_names.rs"]
mod kernel_names;
#[path = "build/nvcc.rs"]
mod nvcc;
#[path = "build/shared_decls.rs"]
mod shared_decls;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build");
    println!("cargo:rerun-if-changed=kernels");
    for var in nvcc::ENV_VARS {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo::rustc-check-cfg=cfg(smelt_fatbin)");
    println!("cargo::rustc-check-cfg=cfg(smelt_emulation)");

    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let mut kernels: Vec<PathBuf> = fs::read_dir(root.join("kernels"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    kernels.retain(|p| p.extension().is_some_and(|x| x == "cu"));
    kernels.sort();

    build_emulation(&root, &out, &kernels);
    if kernels.is_empty() {
        return;
    }
    let search = nvcc::find_nvcc(&root, &|var| env::var_os(var));
    // Re-run when the nvcc found changes, or when one appears where none was found.
    for path in &search.watch {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    match search.nvcc {
        Some(nvcc) => build_fatbin(&nvcc, &root, &out, &kernels),
        None => println!(
            "cargo:warning=nvcc not found: CUDA kernels not built, CPU backend only. \
             Run `bash tools/setup_cuda.sh` (or set NVCC / CUDA_HOME) to build them."
        ),
    }
}

fn build_fatbin(nvcc: &Path, root: &Path, out: &Path, kernels: &[PathBuf]) {
    // One translation unit: one module to load, kernels found by name.
    let unit = out.join("smelt_kernels.cu");
    let includes: String = kernels
        .iter()
        .map(|k| format!("#include \"{}\"\n", k.display()))
        .collect();
    fs::write(&unit, includes).expect("write kernel unit");
    let fatbin = out.join("smelt.fatbin");
    let output = Command::new(nvcc)
        .arg("-fatbin")
        .arg("-o")
        .arg(&fatbin)
        .arg("-std=c++17")
        .arg("-O3")
        .arg("--use_fast_math")
        .arg("-gencode=arch=compute_80,code=[sm_80,compute_80]")
        .arg("-gencode=arch=compute_90a,code=sm_90a")
        .arg("-Xptxas")
        .arg("-v,-warn-spills")
        .arg("-I")
        .arg(root.join("kernels"))
        .arg(&unit)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", nvcc.display()));
    let log = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        panic!(
            "nvcc failed on kernels/*.cu:\n{log}{}",
            String::from_utf8_lossy(&output.stdout)
        );
    }
    let spills: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("spill") && !l.contains(" 0 bytes spill stores, 0 bytes spill loads")
        })
        .collect();
    if !spills.is_empty() {
        panic!("register spills in CUDA kernels (fix them or change launch bounds):\n{log}");
    }
    fs::write(out.join("ptxas.log"), log.as_bytes()).expect("write ptxas log");
    println!("cargo:rustc-cfg=smelt_fatbin");
}

/// The kernels compiled for the CPU through the emulation header (`kernels/emu/cuda_emu.h`):
/// one C++ translation unit with the header, every kernel file, and then the kernel table
/// `smelt_emu_kernels` (one row per `extern "C" __global__` kernel found in the files) through
/// which `EmuRuntime` launches them by name. That unit is instrumented for the sanitizer (every
/// load and store calls `__asan_*_noabort`, which `kernels/emu/sanitizer.cpp` defines; no ASan
/// runtime) and reads copies of the kernel files whose `__shared__` declarations are rewritten
/// so that g++ instruments every shared-memory access (`build/shared_decls.rs`); the runtime and
/// the sanitizer themselves are compiled without instrumentation, into the same library.
fn build_emulation(root: &Path, out: &Path, kernels: &[PathBuf]) {
    let emu = root.join("kernels/emu");
    let header = emu.join("cuda_emu.h");
    if !header.is_file() || kernels.is_empty() {
        return;
    }
    // kernels/*.cu and *.cuh, rewritten into OUT_DIR/emu_src (found first on the include path).
    let sources = out.join("emu_src");
    fs::create_dir_all(&sources).expect("create OUT_DIR/emu_src");
    for entry in fs::read_dir(root.join("kernels"))
        .expect("read kernels/")
        .flatten()
    {
        let path = entry.path();
        if !path.extension().is_some_and(|x| x == "cu" || x == "cuh") {
            continue;
        }
        let source =
            fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let rewritten =
            shared_decls::rewrite(&source).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let copy = format!("#line 1 \"{}\"\n{rewritten}", path.display());
        fs::write(sources.join(entry.file_name()), copy).expect("write OUT_DIR/emu_src");
    }
    let unit = out.join("smelt_emu.cpp");
    let mut text = format!("#include \"{}\"\n", header.display());
    let mut rows = String::new();
    for k in kernels {
        let copy = sources.join(k.file_name().expect("a kernel file"));
        text.push_str(&format!("#include \"{}\"\n", copy.display()));
        let source = fs::read_to_string(k).unwrap_or_else(|e| panic!("read {}: {e}", k.display()));
        for name in kernel_names::kernel_names(&source) {
            rows.push_str(&format!("    SMELT_EMU_KERNEL({name}),\n"));
        }
    }
    text.push_str(&format!(
        "extern \"C\" const smelt_emu_kernel smelt_emu_kernels[] = {{\n{rows}}};\n\
         extern \"C\" const unsigned smelt_emu_kernel_count =\n    \
         sizeof(smelt_emu_kernels) / sizeof(smelt_emu_kernels[0]);\n"
    ));
    fs::write(&unit, text).expect("write emulation unit");
    let base = || {
        let mut b = cc::Build::new();
        b.cpp(true)
            .include(&sources)
            .include(root.join("kernels"))
            .define("SMELT_EMULATE", None)
            .flag_if_supported("-std=c++17")
            .flag_if_supported("-Wno-unused-parameter")
            .flag_if_supported("-Wno-psabi")
            .opt_level(2);
        b
    };
    let runtime = base()
        .file(emu.join("runtime.cpp"))
        .file(emu.join("sanitizer.cpp"))
        .compile_intermediates();
    let mut kernels_unit = base();
    if !kernels_unit.get_compiler().is_like_gnu() || kernels_unit.get_compiler().is_like_clang() {
        panic!(
            "the CUDA emulation's sanitizer needs g++ (its -fsanitize=kernel-address callbacks)"
        );
    }
    kernels_unit
        .file(&unit)
        .objects(runtime)
        .flag("-fsanitize=kernel-address")
        .flag("-fsanitize-recover=kernel-address")
        .flag("--param=asan-instrumentation-with-call-threshold=0")
        .flag("--param=asan-stack=0")
        .flag("--param=asan-globals=0")
        .compile("smelt_emu");
    println!("cargo:rustc-cfg=smelt_emulation");
}
