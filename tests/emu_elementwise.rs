//! `kernels/elementwise.cu`, run on the CPU through the CUDA emulation, against the CPU
//! reference kernels (`smelt::backend::cpu::kernels`).
//!
//! Inputs are fresh random numbers each run, seeded from the clock; failures print the seed
//! and `SMELT_SEED=<seed> cargo test --release --test emu_elementwise` replays it. Sizes are
//! odd and include one larger than a full grid (so the grid-stride loops wrap), each with
//! 16-byte aligned buffers (the float4 path) and misaligned ones (the scalar path). Outputs
//! are poisoned with NaN first, and the elements around each output must stay untouched.
//! f32 kernels must match to ‖emu − cpu‖ / ‖cpu‖ < 1e-5; casts bit for bit against a Rust
//! round-to-nearest-even reference (NaN → 0x7fff, ±inf, subnormals, ties).

use smelt::backend::cpu::kernels as cpu;
use smelt::backend::emu::elementwise as emu;
use smelt::rng::Rng;

/// f32 CUDA kernels vs the CPU: relative error bound (docs: DESIGN).
const TOL: f64 = 1e-5;

/// Canary value around each output view, to catch out-of-bounds writes.
const CANARY: f32 = 1234.5;

/// Elements in one full grid of the f32 kernels (then the grid-stride loop wraps).
const GRID_ELEMENTS: usize = emu::MAX_BLOCKS as usize * emu::BLOCK as usize * emu::F32_PER_THREAD;

fn sizes() -> [usize; 5] {
    [1, 7, 1000, 12345, GRID_ELEMENTS + 4099]
}

fn seed() -> u64 {
    match std::env::var("SMELT_SEED") {
        Ok(s) => s.parse().expect("SMELT_SEED must be a u64"),
        Err(_) => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            now.expect("clock after 1970").as_nanos() as u64
        }
    }
}

fn normals(rng: &mut Rng, n: usize, scale: f64) -> Vec<f32> {
    (0..n).map(|_| (rng.normal() * scale) as f32).collect()
}

/// A buffer with room for an `n`-element view at a chosen 16-byte alignment, canaries
/// elsewhere.
struct Buf {
    data: Vec<f32>,
    off: usize,
    n: usize,
}

impl Buf {
    /// `aligned`: the view starts on a 16-byte boundary; otherwise it starts 4 bytes past one.
    fn new(n: usize, aligned: bool) -> Buf {
        let data = vec![CANARY; n + 8];
        let addr = data.as_ptr() as usize;
        assert_eq!(addr % 4, 0);
        let first_aligned = (16 - addr % 16) % 16 / 4;
        let off = if aligned {
            first_aligned
        } else {
            first_aligned + 1
        };
        Buf { data, off, n }
    }
    fn filled(values: &[f32], aligned: bool) -> Buf {
        let mut b = Buf::new(values.len(), aligned);
        b.view_mut().copy_from_slice(values);
        b
    }
    fn poisoned(n: usize, aligned: bool) -> Buf {
        let mut b = Buf::new(n, aligned);
        b.view_mut().fill(f32::NAN);
        b
    }
    fn view(&self) -> &[f32] {
        &self.data[self.off..self.off + self.n]
    }
    fn view_mut(&mut self) -> &mut [f32] {
        &mut self.data[self.off..self.off + self.n]
    }
    /// Panics if anything outside the view changed.
    fn check_canaries(&self, what: &str) {
        let outside = self.data[..self.off]
            .iter()
            .chain(&self.data[self.off + self.n..]);
        for v in outside {
            assert_eq!(
                v.to_bits(),
                CANARY.to_bits(),
                "{what}: wrote outside its output"
            );
        }
    }
}

/// ‖a − b‖ / ‖b‖ in f64 (0 when both are zero); NaN anywhere in `a` gives infinity.
fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    if a.iter().any(|v| v.is_nan()) {
        return f64::INFINITY;
    }
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let d = x as f64 - y as f64;
        num += d * d;
        den += (y as f64) * (y as f64);
    }
    if num == 0.0 {
        0.0
    } else {
        (num / den).sqrt()
    }
}

fn check_close(what: &str, got: &[f32], want: &[f32], seed: u64) {
    let err = rel_err(got, want);
    println!("{what:<45} rel err {err:.2e}");
    assert!(
        err < TOL,
        "{what}: relative error {err:.3e} >= {TOL:.0e} (reproduce with SMELT_SEED={seed})"
    );
}

fn check_exact(what: &str, got: &[f32], want: &[f32], seed: u64) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits(),
            "{what}: element {i}: {g} != {w} (reproduce with SMELT_SEED={seed})"
        );
    }
}

/// The (aligned out, aligned inputs) combinations each kernel runs with: float4 path, scalar
/// path, and a mixed one (scalar: one misaligned pointer is enough).
const ALIGNMENTS: [(bool, bool); 3] = [(true, true), (false, false), (true, false)];

#[test]
fn gelu_forward_matches_cpu() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    for n in sizes() {
        for (ao, ai) in ALIGNMENTS {
            let x = normals(&mut rng, n, 3.0);
            let mut want = vec![0.0f32; n];
            cpu::gelu_forward(&mut want, &x);
            let xb = Buf::filled(&x, ai);
            let mut out = Buf::poisoned(n, ao);
            emu::gelu_forward(out.view_mut(), xb.view());
            let what = format!("gelu_forward n={n} aligned=({ao},{ai})");
            check_close(&what, out.view(), &want, seed);
            out.check_canaries(&what);
        }
    }
}

#[test]
fn gelu_backward_matches_cpu() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    for n in sizes() {
        for (ao, ai) in ALIGNMENTS {
            let x = normals(&mut rng, n, 3.0);
            let dout = normals(&mut rng, n, 1.0);
            let mut want = vec![0.0f32; n];
            cpu::gelu_backward(&mut want, &x, &dout);
            let (xb, db) = (Buf::filled(&x, ai), Buf::filled(&dout, ao));
            let mut dx = Buf::poisoned(n, ao);
            emu::gelu_backward(dx.view_mut(), xb.view(), db.view());
            let what = format!("gelu_backward n={n} aligned=({ao},{ai})");
            check_close(&what, dx.view(), &want, seed);
            dx.check_canaries(&what);
        }
    }
}

#[test]
fn gelu_extreme_inputs_match_cpu() {
    // Large magnitudes (exp overflows to inf: gelu -> 0 or x), zeros, tiny values. Beyond
    // |x| ~ 1e12 the backward formula itself overflows (x^3 · 0 = NaN, on the CPU too).
    let moderate: Vec<f32> = vec![
        0.0, -0.0, 1e-30, -1e-30, 1e-3, -1e-3, 5.0, -5.0, 10.0, -10.0, 30.0, -30.0, 88.0, -88.0,
        1e4, -1e4,
    ];
    let mut x = moderate.clone();
    x.extend([3e38, -3e38, f32::INFINITY]);
    let mut want = vec![0.0f32; x.len()];
    let mut got = vec![f32::NAN; x.len()];
    cpu::gelu_forward(&mut want, &x);
    emu::gelu_forward(&mut got, &x);
    check_close("gelu_forward extremes", &got[..16], &want[..16], 0);
    check_exact("gelu_forward extremes", &got[16..], &want[16..], 0);

    let x = moderate;
    let dout: Vec<f32> = x.iter().map(|v| 1.0 + v.abs().min(1.0)).collect();
    let mut want = vec![0.0f32; x.len()];
    let mut got = vec![f32::NAN; x.len()];
    cpu::gelu_backward(&mut want, &x, &dout);
    emu::gelu_backward(&mut got, &x, &dout);
    check_close("gelu_backward extremes", &got, &want, 0);
}

#[test]
fn add_matches_cpu() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    for n in sizes() {
        for (ao, ai) in ALIGNMENTS {
            let a = normals(&mut rng, n, 1.0);
            let b = normals(&mut rng, n, 1.0);
            let mut want = vec![0.0f32; n];
            cpu::add(&mut want, &a, &b);
            let (ab, bb) = (Buf::filled(&a, ai), Buf::filled(&b, ao));
            let mut out = Buf::poisoned(n, ao);
            emu::add(out.view_mut(), ab.view(), bb.view());
            let what = format!("add n={n} aligned=({ao},{ai})");
            check_close(&what, out.view(), &want, seed);
            check_exact(&what, out.view(), &want, seed);
            out.check_canaries(&what);
        }
    }
    // The same buffer as both inputs.
    let a = normals(&mut rng, 1001, 1.0);
    let mut out = vec![f32::NAN; a.len()];
    emu::add(&mut out, &a, &a);
    let want: Vec<f32> = a.iter().map(|v| v + v).collect();
    check_exact("add a+a", &out, &want, seed);
}

#[test]
fn add_into_matches_cpu() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    for n in sizes() {
        for (ad, as_) in ALIGNMENTS {
            let dst = normals(&mut rng, n, 1.0);
            let src = normals(&mut rng, n, 1.0);
            let mut want = dst.clone();
            cpu::add_into(&mut want, &src);
            let mut db = Buf::filled(&dst, ad);
            let sb = Buf::filled(&src, as_);
            emu::add_into(db.view_mut(), sb.view());
            let what = format!("add_into n={n} aligned=({ad},{as_})");
            check_close(&what, db.view(), &want, seed);
            check_exact(&what, db.view(), &want, seed);
            db.check_canaries(&what);
        }
    }
}

#[test]
fn empty_inputs_are_fine() {
    emu::gelu_forward(&mut [], &[]);
    emu::gelu_backward(&mut [], &[], &[]);
    emu::add(&mut [], &[], &[]);
    emu::add_into(&mut [], &[]);
    emu::cast_f32_to_bf16(&mut [], &[]);
    emu::cast_bf16_to_f32(&mut [], &[]);
}

#[test]
fn launch_geometry() {
    for n in [
        0usize,
        1,
        1024,
        1025,
        GRID_ELEMENTS,
        GRID_ELEMENTS + 1,
        1 << 30,
    ] {
        for d in [
            emu::gelu_forward_launch(n),
            emu::gelu_backward_launch(n),
            emu::add_launch(n),
            emu::add_into_launch(n),
        ] {
            assert_eq!(d.block.x, emu::BLOCK);
            assert_eq!(
                (d.grid.y, d.grid.z, d.block.y, d.block.z, d.smem),
                (1, 1, 1, 1, 0)
            );
            let want = n
                .div_ceil(emu::F32_PER_THREAD * emu::BLOCK as usize)
                .clamp(1, emu::MAX_BLOCKS as usize);
            assert_eq!(d.grid.x as usize, want, "n={n}");
        }
        for d in [
            emu::cast_f32_to_bf16_launch(n),
            emu::cast_bf16_to_f32_launch(n),
        ] {
            let want = n
                .div_ceil(emu::BLOCK as usize)
                .clamp(1, emu::MAX_BLOCKS as usize);
            assert_eq!(d.grid.x as usize, want, "n={n}");
        }
    }
}

// ----------------------------------------------------------------------------
// bf16 casts

/// f32 → bf16 bits, round to nearest even, from the definition: keep the upper 16 bits, round
/// up (away from zero in magnitude: +1 on the bit pattern) if the dropped half is above a
/// half-ulp, or exactly half and the kept pattern is odd. Rounding up from the largest finite
/// value gives infinity, as it should. Every NaN becomes the canonical 0x7fff, as CUDA's.
fn bf16_reference(x: f32) -> u16 {
    if x.is_nan() {
        return 0x7fff;
    }
    let bits = x.to_bits();
    let kept = (bits >> 16) as u16;
    let dropped = bits & 0xffff;
    let round_up = dropped > 0x8000 || (dropped == 0x8000 && kept & 1 == 1);
    if round_up {
        kept + 1
    } else {
        kept
    }
}

#[test]
fn bf16_reference_known_values() {
    let cases: [(f32, u16); 16] = [
        (0.0, 0x0000),
        (-0.0, 0x8000),
        (1.0, 0x3f80),
        (-2.0, 0xc000),
        (f32::INFINITY, 0x7f80),
        (f32::NEG_INFINITY, 0xff80),
        (f32::NAN, 0x7fff),
        (-f32::NAN, 0x7fff),
        (f32::MAX, 0x7f80),                    // rounds up to infinity
        (f32::from_bits(0x3f80_8000), 0x3f80), // 1 + 2^-8: tie, even stays
        (f32::from_bits(0x3f81_8000), 0x3f82), // tie, odd rounds up
        (f32::from_bits(0x3f80_8001), 0x3f81), // just above the tie
        (f32::from_bits(0x3f80_7fff), 0x3f80), // just below
        (f32::from_bits(0x0000_0001), 0x0000), // smallest subnormal rounds to 0
        (f32::from_bits(0x0000_8001), 0x0001), // rounds to the smallest bf16 subnormal
        (f32::from_bits(0x007f_ffff), 0x0080), // largest subnormal rounds to min normal
    ];
    for (x, want) in cases {
        assert_eq!(
            bf16_reference(x),
            want,
            "bf16({x:e} = {:#010x})",
            x.to_bits()
        );
    }
}

/// Special values, every upper half with the interesting lower halves, and random patterns.
fn cast_inputs(rng: &mut Rng) -> Vec<f32> {
    let mut bits: Vec<u32> = vec![
        0x0000_0000,
        0x8000_0000,
        0x7f80_0000,
        0xff80_0000,
        0x7fc0_0000,
        0xffc0_0000,
        0x7f80_0001,
        0x7fbf_ffff,
        0xffff_ffff,
        0x7f7f_ffff,
        0xff7f_ffff,
        0x7f7f_8000,
        0x7f7e_8000,
        0x0000_0001,
        0x8000_0001,
        0x007f_ffff,
        0x0000_8000,
        0x0001_8000,
    ];
    for hi in 0..=0xffffu32 {
        for lo in [0x0000u32, 0x0001, 0x7fff, 0x8000, 0x8001, 0xffff] {
            bits.push(hi << 16 | lo);
        }
    }
    bits.extend((0..100_001).map(|_| rng.next_u64() as u32));
    bits.into_iter().map(f32::from_bits).collect()
}

#[test]
fn cast_f32_to_bf16_is_round_to_nearest_even() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let x = cast_inputs(&mut rng);
    for offset in [0usize, 1] {
        let x = &x[offset..];
        let mut out = vec![0xdeadu16; x.len()];
        emu::cast_f32_to_bf16(&mut out, x);
        for (i, (&v, &got)) in x.iter().zip(&out).enumerate() {
            let want = bf16_reference(v);
            assert!(
                got == want,
                "cast_f32_to_bf16: element {i}: {:#010x} -> {got:#06x}, want {want:#06x} \
                 (reproduce with SMELT_SEED={seed})",
                v.to_bits()
            );
        }
    }
    for n in sizes() {
        let x = normals(&mut rng, n, 10.0);
        let mut out = vec![0xdeadu16; n];
        emu::cast_f32_to_bf16(&mut out, &x);
        let want: Vec<u16> = x.iter().map(|&v| bf16_reference(v)).collect();
        assert!(out == want, "cast_f32_to_bf16 n={n} (SMELT_SEED={seed})");
    }
}

#[test]
fn cast_bf16_to_f32_is_exact_for_every_pattern() {
    let all: Vec<u16> = (0..=u16::MAX).collect();
    for offset in [0usize, 1, 3] {
        let x = &all[offset..];
        let mut out = vec![f32::from_bits(0x7fc0_dead); x.len()];
        emu::cast_bf16_to_f32(&mut out, x);
        for (&h, &f) in x.iter().zip(&out) {
            assert_eq!(f.to_bits(), (h as u32) << 16, "cast_bf16_to_f32({h:#06x})");
        }
    }
}

#[test]
fn bf16_round_trip_of_representable_values_is_identity() {
    // Every non-NaN bf16 survives bf16 → f32 → bf16.
    let all: Vec<u16> = (0..=u16::MAX)
        .filter(|&h| !f32::from_bits((h as u32) << 16).is_nan())
        .collect();
    let mut f = vec![0.0f32; all.len()];
    emu::cast_bf16_to_f32(&mut f, &all);
    let mut back = vec![0u16; all.len()];
    emu::cast_f32_to_bf16(&mut back, &f);
    assert!(back == all);
}
