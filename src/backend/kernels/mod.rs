//! Every kernel of `kernels/*.cu`, declared once. A module per `.cu` file, named after it,
//! holds one [`kernels!`] row per kernel of that file: its name, its parameters with their
//! types, and its launch geometry. From the row come
//! - `<module>::<kernel>::KERNEL`, the [`Kernel`] a [`Runtime`] launches (by name in the GPU's
//!   fatbin, or in the emulation's kernel table),
//! - `<module>::<kernel>::launch(rt, args…)`, the typed launcher over any runtime with the row's
//!   geometry, and `launch_with(rt, dims, args…)` for the rare caller that picks the geometry,
//! - the check that the row's parameter types are the `.cu` signature's: the emulation's kernel
//!   table carries each kernel's C++ parameter types, and `EmuRuntime` compares them with the
//!   row before the kernel's first launch (the `kernels` test checks every row and that every
//!   kernel of `kernels/*.cu` has one).
//!
//! Kernels that only make sense in a sequence (a partial-sum kernel and its final pass, a cast
//! before a tensor-core kernel) have that sequence beside them, with the scratch it needs, as a
//! plain function over a [`Runtime`]: the device backend and the tests call the same sequence.

use crate::backend::device::Arg;
use crate::backend::launch::{Dim3, LaunchDims};

pub mod adamw;
pub mod attention;
pub mod attention_tc;
pub mod attention_tc_backward;
pub mod cross_entropy;
pub mod elementwise;
pub mod embedding;
pub mod emu_selftest;
pub mod layernorm;
pub mod matmul;
pub mod matmul_f32;
pub mod matmul_wgmma;
pub mod reduce;

/// `__nv_bfloat16` in kernel declarations: a marker type (bf16 values are moved as `u16` bit
/// patterns; see `matmul::f32_to_bf16`).
#[allow(non_camel_case_types)]
pub enum bf16 {}

/// A kernel of `kernels/*.cu`: its `extern "C"` name and parameter types (the C types, named
/// as Rust names them: `f32*`, `const bf16*`, `i32`, …).
#[derive(Debug)]
pub struct Kernel {
    pub name: &'static str,
    pub params: &'static [&'static str],
    /// The Rust module that declares it (for messages).
    pub declared_in: &'static str,
}

impl Kernel {
    /// The parameter types joined by commas, as the emulation's kernel table spells them.
    pub fn signature(&self) -> String {
        self.params.join(",")
    }
}

impl PartialEq for Kernel {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for Kernel {}

/// A Rust type standing for a kernel parameter's C type, with the value a launcher takes for
/// it: pointers are device addresses (`u64`, 0 = null), scalars themselves.
pub trait KernelParam {
    /// The C type as the emulation's kernel table names it.
    const C_TYPE: &'static str;
    type Value: Copy;
    fn arg(value: Self::Value) -> Arg;
}

/// Element types of kernel pointers. `bf16` is `__nv_bfloat16`.
macro_rules! pointee_types {
    ($($t:ty => $name:literal,)*) => {$(
        impl KernelParam for *mut $t {
            const C_TYPE: &'static str = concat!($name, "*");
            type Value = u64;
            fn arg(value: u64) -> Arg {
                Arg::Ptr(value)
            }
        }
        impl KernelParam for *const $t {
            const C_TYPE: &'static str = concat!("const ", $name, "*");
            type Value = u64;
            fn arg(value: u64) -> Arg {
                Arg::Ptr(value)
            }
        }
    )*};
}
pointee_types! {
    f32 => "f32",
    bf16 => "bf16",
    i32 => "i32",
    i64 => "i64",
    u32 => "u32",
    u16 => "u16",
    u64 => "u64",
}

macro_rules! scalar_types {
    ($($t:ty => $name:literal, $variant:ident;)*) => {$(
        impl KernelParam for $t {
            const C_TYPE: &'static str = $name;
            type Value = $t;
            fn arg(value: $t) -> Arg {
                Arg::$variant(value)
            }
        }
    )*};
}
scalar_types! {
    i32 => "i32", I32;
    i64 => "i64", I64;
    f32 => "f32", F32;
}

/// `const __grid_constant__ TensorMap` (kernels/hopper.cuh), passed by value.
impl KernelParam for crate::backend::tensor_map::TensorMap {
    const C_TYPE: &'static str = "tensor_map";
    type Value = crate::backend::tensor_map::TensorMap;
    fn arg(value: Self::Value) -> Arg {
        Arg::TensorMap(value)
    }
}

/// Declares the kernels of one `.cu` file, a row each:
///
/// ```text
/// kernels! {
///     /// out = gelu(x), n elements.
///     fn gelu_forward(out: *mut f32, x: *const f32, n: i32) => elementwise_dims(n, 4);
/// }
/// ```
///
/// The expression after `=>` is the launch geometry ([`LaunchDims`]); it may use the parameters
/// (pointers as `u64` addresses, scalars as their values) and the items of the module. Each
/// row becomes a module named after the kernel with `KERNEL`, `launch` and `launch_with`; the
/// file's module also gets `KERNELS`, all of its rows.
macro_rules! kernels {
    ($(
        $(#[doc = $doc:expr])*
        fn $name:ident($($param:ident: $ty:ty),* $(,)?) => $dims:expr;
    )*) => {
        $(
            $(#[doc = $doc])*
            pub mod $name {
                #[allow(unused_imports)]
                use super::*;
                use $crate::backend::device::Runtime;
                use $crate::backend::kernels::{Kernel, KernelParam};
                use $crate::backend::launch::LaunchDims;

                /// The kernel, as runtimes launch it.
                pub static KERNEL: Kernel = Kernel {
                    name: stringify!($name),
                    params: &[$(<$ty as KernelParam>::C_TYPE),*],
                    declared_in: module_path!(),
                };

                /// Launches the kernel with its declared geometry.
                ///
                /// # Safety
                /// Every pointer addresses memory of `rt` large enough for what the kernel
                /// touches at these sizes (see the kernel's documentation).
                #[allow(clippy::too_many_arguments, unused_variables)]
                pub unsafe fn launch<R: Runtime + ?Sized>(
                    rt: &R,
                    $($param: <$ty as KernelParam>::Value),*
                ) -> $crate::error::Result<()> {
                    let dims: LaunchDims = $dims;
                    // SAFETY: the caller's contract, with the declared geometry.
                    unsafe { launch_with(rt, dims, $($param),*) }
                }

                /// Launches the kernel over `dims`.
                ///
                /// # Safety
                /// As [`launch`], and `dims` is a geometry the kernel supports.
                #[allow(clippy::too_many_arguments)]
                pub unsafe fn launch_with<R: Runtime + ?Sized>(
                    rt: &R,
                    dims: LaunchDims,
                    $($param: <$ty as KernelParam>::Value),*
                ) -> $crate::error::Result<()> {
                    let args = [$(<$ty as KernelParam>::arg($param)),*];
                    // SAFETY: `args` follows the declaration, which EmuRuntime checks against
                    // the .cu signature; the pointers are the caller's contract.
                    unsafe { rt.launch(&KERNEL, dims, &args) }
                }
            }
        )*

        /// Every kernel this module declares.
        pub static KERNELS: &[&$crate::backend::kernels::Kernel] = &[$(&$name::KERNEL),*];
    };
}
pub(crate) use kernels;

/// Every kernel declared, file by file.
pub fn all() -> impl Iterator<Item = &'static Kernel> {
    [
        adamw::KERNELS,
        attention::KERNELS,
        attention_tc::KERNELS,
        attention_tc_backward::KERNELS,
        cross_entropy::KERNELS,
        elementwise::KERNELS,
        embedding::KERNELS,
        emu_selftest::KERNELS,
        layernorm::KERNELS,
        matmul::KERNELS,
        matmul_f32::KERNELS,
        matmul_wgmma::KERNELS,
        reduce::KERNELS,
    ]
    .into_iter()
    .flatten()
    .copied()
}

/// `ceil(a / b)` blocks, at least 1 (a grid never has zero blocks; kernels check bounds).
pub fn blocks(a: usize, b: usize) -> u32 {
    u32::try_from(a.div_ceil(b).max(1)).expect("grid too large")
}

/// A 1-D launch: `grid` blocks of `block` threads, no dynamic shared memory.
pub fn linear(grid: u32, block: u32) -> LaunchDims {
    LaunchDims {
        grid: Dim3::x(grid),
        block: Dim3::x(block),
        smem: 0,
    }
}

/// `x` as a C `int` argument; panics when it does not fit (sizes in a graph are far below 2^31).
pub fn int(x: usize) -> i32 {
    i32::try_from(x).expect("kernel size argument does not fit a C int")
}

/// `x` as a C `long` argument.
pub fn long(x: usize) -> i64 {
    i64::try_from(x).expect("kernel size argument does not fit a C long")
}

/// A region of scratch device memory handed to a kernel sequence: `bytes` at `addr`.
#[derive(Clone, Copy, Debug)]
pub struct Scratch {
    pub addr: u64,
    pub bytes: usize,
}

/// Scratch regions start at multiples of this many bytes.
pub const SCRATCH_ALIGN: usize = 256;

impl Scratch {
    /// The bytes a sequence needs for regions of these sizes, each aligned.
    pub fn bytes_for(sizes: &[usize]) -> usize {
        sizes
            .iter()
            .map(|s| s.next_multiple_of(SCRATCH_ALIGN))
            .sum()
    }

    /// The addresses of regions of these sizes, laid out as [`Scratch::bytes_for`] counts them.
    pub fn split(&self, sizes: &[usize]) -> Vec<u64> {
        assert!(
            Scratch::bytes_for(sizes) <= self.bytes,
            "scratch of {} bytes is too small for {sizes:?}",
            self.bytes
        );
        let mut at = self.addr;
        sizes
            .iter()
            .map(|s| {
                let here = at;
                at += s.next_multiple_of(SCRATCH_ALIGN) as u64;
                here
            })
            .collect()
    }
}
