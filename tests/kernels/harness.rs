//! What every kernel test body uses: a device ([`Dev`]) over any [`Runtime`], buffers with
//! guard zones, fresh random inputs, and the comparison with the CPU reference.
//!
//! [`on_every_runtime!`] turns a test body `fn name<R: Runtime>(dev: &Dev<R>)` into two tests,
//! `name::emu` (the CUDA emulation, always) and `name::cuda` (the GPU: skipped with a note when
//! this machine has none, unless `SMELT_REQUIRE_GPU=1`, which makes a missing GPU a failure, as
//! `tools/gpu-check.sh` sets it; `SMELT_SMALL_CASES=1` leaves out the GPT-2-sized cases).
//!
//! Buffers: the elements start 16-byte aligned, or 4 bytes past that for the misaligned cases.
//! Under the emulation's sanitizer each buffer is an allocation of its own, exactly its
//! elements (after the 4-byte pad of a misaligned one, never written), so memcheck bounds every
//! read and write and initcheck reports a read of the pad. Elsewhere (the GPU, or the emulation
//! with `SMELT_EMU_SANITIZE=0`) a guard zone of [`GUARD`] canary bytes lies before and after the
//! elements; reading a buffer back checks the zones (or the pad), so a kernel writing out of
//! bounds fails there too. Outputs start poisoned (f32 NaN, bf16 0xffff), so an element a
//! kernel leaves unwritten fails.

#![allow(dead_code)]

use std::cell::RefCell;

use smelt::backend::cuda::{probe, CudaRuntime};
use smelt::backend::device::emu::{EmuRuntime, UNWRITTEN_BYTE};
use smelt::backend::device::{sanitizer, Runtime};
use smelt::backend::kernels::Scratch;
use smelt::backend::DType;
use smelt::rng::Rng;

/// Bytes of canary before and after every buffer's elements.
pub const GUARD: usize = 64;
const CANARY: u8 = 0xa5;

/// f32 kernels vs the CPU reference (docs: DESIGN).
pub const TOL_F32: f64 = 1e-5;
/// bf16 results vs the CPU reference rounded to bf16.
pub const TOL_BF16: f64 = 1e-2;

/// A device for one test body: the runtime, and the test's random inputs.
pub struct Dev<R: Runtime> {
    pub rt: R,
    pub rng: RefCell<Rng>,
    pub seed: u64,
}

/// A device buffer: `len` elements of `elem` bytes at `addr`, inside a guarded allocation.
pub struct Buf<R: Runtime> {
    buf: R::Buffer,
    /// Byte offset of the first element in `buf`.
    start: usize,
    /// Bytes before `start` and after the elements that must still hold `guard_byte`.
    guard_before: usize,
    guard_after: usize,
    guard_byte: u8,
    pub len: usize,
    elem: usize,
    pub addr: u64,
}

fn seed() -> u64 {
    match std::env::var("SMELT_SEED") {
        Ok(s) => s.parse().expect("SMELT_SEED must be a u64"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos() as u64,
    }
}

impl Dev<EmuRuntime> {
    pub fn emu() -> Self {
        Dev::new(EmuRuntime::new())
    }
}

impl Dev<CudaRuntime> {
    /// The GPU, or `None` (with a note) when this machine has none and `SMELT_REQUIRE_GPU` is
    /// not set.
    pub fn cuda() -> Option<Self> {
        match probe() {
            Ok(_) => Some(Dev::new(CudaRuntime::new(0).expect("open the GPU"))),
            Err(why) if std::env::var_os("SMELT_REQUIRE_GPU").is_some() => {
                panic!("SMELT_REQUIRE_GPU is set but CUDA cannot run: {why}")
            }
            Err(why) => {
                eprintln!("skipped on cuda: {why}");
                None
            }
        }
    }
}

impl<R: Runtime> Dev<R> {
    fn new(rt: R) -> Self {
        let seed = seed();
        Dev {
            rt,
            rng: RefCell::new(Rng::new(seed)),
            seed,
        }
    }

    /// Whether kernels run through the CPU emulation (slow: GPT-2-sized cases are for GPUs).
    pub fn emulated(&self) -> bool {
        self.rt.name().starts_with("emu")
    }

    /// Whether to run GPT-2-sized cases: on a GPU, and not when `SMELT_SMALL_CASES` is set
    /// (tools/gpu-check.sh sets it under compute-sanitizer, which runs kernels tens of times
    /// slower).
    pub fn large_cases(&self) -> bool {
        !self.emulated() && std::env::var_os("SMELT_SMALL_CASES").is_none()
    }

    /// The cases to run: `small` everywhere, `large` (GPT-2 sizes) where [`Dev::large_cases`].
    pub fn cases<T: Clone>(&self, small: &[T], large: &[T]) -> Vec<T> {
        let mut all = small.to_vec();
        if self.large_cases() {
            all.extend_from_slice(large);
        }
        all
    }

    /// `len` normals times `scale`, plus `shift`.
    pub fn normal(&self, len: usize, scale: f64, shift: f64) -> Vec<f32> {
        let mut rng = self.rng.borrow_mut();
        (0..len)
            .map(|_| (rng.normal() * scale + shift) as f32)
            .collect()
    }

    /// `len` ids uniform in `0..below`.
    pub fn ids(&self, len: usize, below: usize) -> Vec<u32> {
        let mut rng = self.rng.borrow_mut();
        (0..len).map(|_| rng.below(below as u64) as u32).collect()
    }

    /// Whether the emulation's sanitizer bounds every access (see the module's text).
    pub fn sanitized(&self) -> bool {
        self.emulated() && sanitizer::enabled()
    }

    fn alloc_bytes(&self, bytes: &[u8], elem: usize, aligned: bool) -> Buf<R> {
        let pad = if aligned { 0 } else { 4 };
        let (guard_before, guard_after, guard_byte) = if self.sanitized() {
            (pad, 0, UNWRITTEN_BYTE)
        } else {
            (GUARD + pad, GUARD, CANARY)
        };
        let start = guard_before;
        let total = start + bytes.len() + guard_after;
        let mut buf = self.rt.alloc(total.max(1)).expect("device allocation");
        if self.sanitized() {
            self.rt.upload(&mut buf, start, bytes).expect("upload");
        } else {
            let mut image = vec![CANARY; total];
            image[start..start + bytes.len()].copy_from_slice(bytes);
            self.rt.upload(&mut buf, 0, &image).expect("upload");
        }
        let addr = self.rt.address(&buf) + start as u64;
        Buf {
            buf,
            start,
            guard_before,
            guard_after,
            guard_byte,
            len: bytes.len() / elem,
            elem,
            addr,
        }
    }

    /// f32 values on the device (16-byte aligned).
    pub fn f32s(&self, x: &[f32]) -> Buf<R> {
        self.alloc_bytes(bytemuck::cast_slice(x), 4, true)
    }

    /// f32 values starting 4 bytes past a 16-byte boundary (the kernels' scalar paths).
    pub fn f32s_misaligned(&self, x: &[f32]) -> Buf<R> {
        self.alloc_bytes(bytemuck::cast_slice(x), 4, false)
    }

    /// bf16 bit patterns on the device.
    pub fn bf16s(&self, x: &[u16]) -> Buf<R> {
        self.alloc_bytes(bytemuck::cast_slice(x), 2, true)
    }

    pub fn bf16s_misaligned(&self, x: &[u16]) -> Buf<R> {
        self.alloc_bytes(bytemuck::cast_slice(x), 2, false)
    }

    pub fn i32s(&self, x: &[i32]) -> Buf<R> {
        self.alloc_bytes(bytemuck::cast_slice(x), 4, true)
    }

    pub fn i64s(&self, x: &[i64]) -> Buf<R> {
        self.alloc_bytes(bytemuck::cast_slice(x), 8, true)
    }

    /// An f32 output of `len` elements, poisoned with NaN.
    pub fn f32_out(&self, len: usize) -> Buf<R> {
        self.f32s(&vec![f32::NAN; len])
    }

    /// A bf16 output of `len` elements, poisoned with bf16 NaN (0xffff).
    pub fn bf16_out(&self, len: usize) -> Buf<R> {
        self.bf16s(&vec![0xffff; len])
    }

    /// `x` stored as `dtype` (bf16: rounded to nearest even), and the f32 values it holds
    /// there (what the CPU reference gets).
    pub fn upload_as(&self, x: &[f32], dtype: DType) -> (Buf<R>, Vec<f32>) {
        match dtype {
            DType::F32 => (self.f32s(x), x.to_vec()),
            DType::Bf16 => {
                let (bits, wide) = bf16_pair(x);
                (self.bf16s(&bits), wide)
            }
        }
    }

    /// A poisoned output of `len` elements of `dtype`.
    pub fn out_as(&self, len: usize, dtype: DType) -> Buf<R> {
        match dtype {
            DType::F32 => self.f32_out(len),
            DType::Bf16 => self.bf16_out(len),
        }
    }

    /// A buffer of `dtype` read back: its values, and its bit patterns (for [`Dev::same_bits`]).
    pub fn read_as(&self, b: &Buf<R>, dtype: DType, what: &str) -> (Vec<f32>, Vec<u32>) {
        match dtype {
            DType::F32 => {
                let x = self.read_f32(b, what);
                let bits = x.iter().map(|v| v.to_bits()).collect();
                (x, bits)
            }
            DType::Bf16 => {
                let x = self.read_u16(b, what);
                (widen(&x), x.iter().map(|&v| v.into()).collect())
            }
        }
    }

    /// Scratch memory for a kernel sequence (contents undefined).
    pub fn scratch(&self, bytes: usize) -> (R::Buffer, Scratch) {
        let buf = self.rt.alloc(bytes.max(1)).expect("scratch allocation");
        let addr = self.rt.address(&buf);
        (buf, Scratch { addr, bytes })
    }

    /// Scratch memory for a kernel sequence, poisoned with f32 NaN and guarded: a sequence
    /// reading scratch it did not write gets NaN, and `read_f32` of the buffer afterwards
    /// checks the guard zones.
    pub fn scratch_guarded(&self, bytes: usize) -> (Buf<R>, Scratch) {
        let buf = self.f32_out(bytes.div_ceil(4));
        let addr = buf.addr;
        (buf, Scratch { addr, bytes })
    }

    fn bytes(&self, b: &Buf<R>, what: &str) -> Vec<u8> {
        self.rt.synchronize().expect("kernels ran");
        let total = b.start + b.len * b.elem + b.guard_after;
        let mut image = vec![0u8; total];
        self.rt.download(&b.buf, 0, &mut image).expect("download");
        let guards = image[b.start - b.guard_before..b.start]
            .iter()
            .chain(&image[b.start + b.len * b.elem..]);
        assert!(
            guards.into_iter().all(|&x| x == b.guard_byte),
            "{what}: a kernel wrote outside the buffer (guard zone changed; seed {})",
            self.seed
        );
        image[b.start..b.start + b.len * b.elem].to_vec()
    }

    pub fn read_f32(&self, b: &Buf<R>, what: &str) -> Vec<f32> {
        bytemuck::pod_collect_to_vec(&self.bytes(b, what))
    }

    pub fn read_u16(&self, b: &Buf<R>, what: &str) -> Vec<u16> {
        bytemuck::pod_collect_to_vec(&self.bytes(b, what))
    }

    /// ‖got − want‖ / ‖want‖ (‖got − want‖ when want is zero), asserted below `tol`; a NaN
    /// anywhere fails. Printed with the runtime's name (visible with --nocapture).
    pub fn check(&self, what: &str, got: &[f32], want: &[f32], tol: f64) -> f64 {
        assert_eq!(got.len(), want.len(), "{what}: lengths differ");
        let diff: f64 = got
            .iter()
            .zip(want)
            .map(|(&g, &w)| (g as f64 - w as f64).powi(2))
            .sum();
        let norm: f64 = want.iter().map(|&w| (w as f64).powi(2)).sum();
        let err = if norm > 0.0 {
            (diff / norm).sqrt()
        } else {
            diff.sqrt()
        };
        println!("KERNEL-CHECK\t{}\t{what}\t{err:.3e}", self.rt.name());
        assert!(
            err < tol,
            "{what} on {}: relative error {err:e} >= {tol:e} (seed {}; SMELT_SEED replays)",
            self.rt.name(),
            self.seed
        );
        err
    }

    /// Asserts equal bit patterns.
    pub fn same_bits<T: PartialEq + std::fmt::Debug>(&self, what: &str, got: &[T], want: &[T]) {
        assert_eq!(got.len(), want.len(), "{what}: lengths differ");
        if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
            panic!(
                "{what} on {}: element {i} is {:?}, expected {:?} (seed {})",
                self.rt.name(),
                got[i],
                want[i],
                self.seed
            );
        }
        println!("KERNEL-CHECK\t{}\t{what}\texact", self.rt.name());
    }
}

/// bf16 bit pattern of `x`, round to nearest even (NaN → 0x7fff), as `__float2bfloat16`.
pub fn bf16(x: f32) -> u16 {
    smelt::backend::kernels::matmul::f32_to_bf16(x)
}

pub fn widen(x: &[u16]) -> Vec<f32> {
    x.iter()
        .map(|&b| smelt::backend::kernels::matmul::bf16_to_f32(b))
        .collect()
}

/// `x` rounded to bf16 and back.
pub fn rounded(x: &[f32]) -> Vec<f32> {
    x.iter()
        .map(|&v| smelt::backend::kernels::matmul::bf16_to_f32(bf16(v)))
        .collect()
}

/// bf16 inputs: the bit patterns, and their f32 values (what the CPU reference gets).
pub fn bf16_pair(x: &[f32]) -> (Vec<u16>, Vec<f32>) {
    let bits: Vec<u16> = x.iter().map(|&v| bf16(v)).collect();
    let wide = widen(&bits);
    (bits, wide)
}

/// Runs each test body on every runtime: `body::emu` always, `body::cuda` with a GPU.
macro_rules! on_every_runtime {
    ($($body:ident),* $(,)?) => {$(
        mod $body {
            #[test]
            fn emu() {
                super::$body(&crate::harness::Dev::emu());
            }
            #[test]
            fn cuda() {
                if let Some(dev) = crate::harness::Dev::cuda() {
                    super::$body(&dev);
                }
            }
        }
    )*};
}
pub(crate) use on_every_runtime;
