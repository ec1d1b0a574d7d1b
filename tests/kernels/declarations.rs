//! Every kernel's Rust declaration (`smelt::backend::kernels`) against the emulation's kernel
//! table, which build.rs makes from every `extern "C" __global__` of `kernels/*.cu` with the
//! parameter types the C++ compiler sees.

use std::collections::BTreeMap;

use smelt::backend::device::emu::emulated_kernels;
use smelt::backend::kernels;

#[test]
fn every_kernel_is_declared_once_with_its_cu_signature() {
    let defined: BTreeMap<&str, &str> = emulated_kernels().into_iter().collect();
    let mut declared = BTreeMap::new();
    for k in kernels::all() {
        assert!(
            declared.insert(k.name, k.declared_in).is_none(),
            "kernel {} is declared twice",
            k.name
        );
        let Some(signature) = defined.get(k.name) else {
            panic!(
                "{} declares {}, which kernels/*.cu does not define",
                k.declared_in, k.name
            );
        };
        assert_eq!(
            &k.signature(),
            signature,
            "kernel {}: the declaration in {} differs from the .cu signature",
            k.name,
            k.declared_in
        );
    }
    let undeclared: Vec<&&str> = defined
        .keys()
        .filter(|n| !declared.contains_key(*n))
        .collect();
    assert!(
        undeclared.is_empty(),
        "kernels of kernels/*.cu with no declaration in src/backend/kernels: {undeclared:?}"
    );
}

#[test]
fn a_declaration_that_differs_from_the_cu_signature_is_refused_at_launch() {
    use smelt::backend::device::{Arg, Runtime};
    use smelt::backend::kernels::{linear, Kernel};
    // gelu_forward is (f32*, const f32*, i32); this row forgets the count.
    static WRONG: Kernel = Kernel {
        name: "gelu_forward",
        params: &["f32*", "const f32*"],
        declared_in: "a test",
    };
    let rt = smelt::backend::device::emu::EmuRuntime::new();
    // SAFETY: refused before anything runs.
    let err = unsafe { rt.launch(&WRONG, linear(1, 32), &[Arg::Ptr(0), Arg::Ptr(0)]) }
        .expect_err("a wrong declaration must not launch");
    let msg = err.to_string();
    assert!(
        msg.contains("gelu_forward") && msg.contains("f32*,const f32*,i32"),
        "{msg}"
    );
}

/// The harness's buffers on the emulation are bounded by the sanitizer: a kernel reading one
/// element past an input, or the pad before a misaligned one, fails its launch (so a test
/// body cannot pass while its kernel reads outside its operands).
#[test]
fn reads_outside_a_test_buffer_fail_on_the_emulation() {
    use super::harness::Dev;
    use smelt::backend::kernels::emu_selftest::emu_san_copy;
    use smelt::backend::launch::{Dim3, LaunchDims};

    let dev = Dev::emu();
    assert!(
        dev.sanitized(),
        "run the kernel tests without SMELT_EMU_SANITIZE=0"
    );
    let n = 37;
    let x = dev.normal(n, 1.0, 0.0);
    let one_block = LaunchDims {
        grid: Dim3::x(1),
        block: Dim3::x(64),
        smem: 0,
    };
    for (input, shift, fails) in [
        (dev.f32s(&x), 0, false),
        (dev.f32s(&x), 1, true),
        (dev.f32s_misaligned(&x), 0, false),
        (dev.f32s_misaligned(&x), 1, true),
        (dev.f32s_misaligned(&x), -1, true),
    ] {
        let out = dev.f32_out(n);
        // SAFETY: n outputs; reads x[t + shift] for t < n, one past either end when shifted
        // (inside the emulation's guard gap or the pad, which the sanitizer reports).
        let run = unsafe {
            emu_san_copy::launch_with(&dev.rt, one_block, out.addr, input.addr, n as i32, shift)
        };
        match run {
            Err(e) if fails => {
                let e = e.to_string();
                assert!(e.contains("kernel emu_san_copy"), "{e}");
                assert!(
                    e.contains("out of bounds") || e.contains("uninitialized read"),
                    "{e}"
                );
            }
            Err(e) => panic!("shift {shift}: {e}"),
            Ok(()) if fails => panic!("shift {shift}: a read outside the buffer went unreported"),
            Ok(()) => {
                let got = dev.read_f32(&out, "copy");
                dev.same_bits("copy", &got, &x);
            }
        }
    }
}
