//! `kernels/matmul.cu` under emulation: the tensor-core matmul `out = op(a) · op(b) (+ bias)`
//! with bf16 inputs and f32 accumulation (and optionally `gelu_out = gelu(out)` in the same
//! pass), with f32 outputs (`matmul_bf16`) or bf16 outputs (`matmul_bf16_to_bf16`), and the
//! self-tests of the tensor-core wrappers
//! (`kernels/tensor_core.cuh`: mma.sync fragment layout, ldmatrix). bf16 values are their
//! `u16` bit patterns (`__nv_bfloat16` is one `unsigned short`).

use super::{Dim3, LaunchDims};

unsafe extern "C" {
    fn smelt_emu_matmul_bf16(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        out: *mut f32,
        gelu_out: *mut f32,
        a: *const u16,
        b: *const u16,
        bias: *const f32,
        m: i32,
        k: i32,
        n: i32,
        trans_a: i32,
        trans_b: i32,
    );
    fn smelt_emu_matmul_bf16_to_bf16(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        out: *mut u16,
        gelu_out: *mut u16,
        a: *const u16,
        b: *const u16,
        bias: *const f32,
        m: i32,
        k: i32,
        n: i32,
        trans_a: i32,
        trans_b: i32,
    );
    fn smelt_emu_mma_bf16_selftest(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        d: *mut f32,
        a: *const u16,
        b: *const u16,
        c: *const f32,
    );
    fn smelt_emu_ldmatrix_selftest(
        grid: Dim3,
        block: Dim3,
        smem: u32,
        out: *mut u32,
        src: *const u16,
    );
}

/// Output tile of one block (rows of `out` × columns), as in `kernels/matmul.cu`.
pub const TILE_M: u32 = 64;
pub const TILE_N: u32 = 64;
/// Threads per block (4 warps, 2×2, each 32×32 of the tile).
pub const THREADS: u32 = 128;
/// Dynamic shared memory per block: 3 stages × (A + B tile) × 64 × 40 bf16.
pub const SMEM_BYTES: u32 = 3 * 2 * 64 * 40 * 2;

/// The launch of `matmul_bf16` for an `(m, n)` output: one block per 64×64 tile (grid x over
/// columns, y over rows). `m` and `n` must be at least 1.
pub fn matmul_bf16_launch(m: usize, n: usize) -> LaunchDims {
    let tiles = |len: usize, tile: u32| {
        u32::try_from(len.div_ceil(tile as usize)).expect("matmul_bf16: too many tiles")
    };
    let grid = Dim3 {
        x: tiles(n, TILE_N),
        y: tiles(m, TILE_M),
        z: 1,
    };
    assert!(grid.y <= 65535, "matmul_bf16: m too large for grid.y");
    LaunchDims {
        grid,
        block: Dim3::x(THREADS),
        smem: SMEM_BYTES,
    }
}

/// `f32 → bf16` bit pattern, round to nearest even (every NaN → 0x7fff), as
/// `__float2bfloat16`.
pub fn f32_to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        return 0x7fff;
    }
    (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

/// bf16 bit pattern → `f32` (exact).
pub fn bf16_to_f32(x: u16) -> f32 {
    f32::from_bits(u32::from(x) << 16)
}

/// Element-wise [`f32_to_bf16`].
pub fn to_bf16(x: &[f32]) -> Vec<u16> {
    x.iter().map(|&v| f32_to_bf16(v)).collect()
}

fn dim(kernel: &str, len: usize, what: &str) -> i32 {
    i32::try_from(len).unwrap_or_else(|_| panic!("{kernel}: {what} must be below 2^31"))
}

/// The checks both matmul wrappers make on their arguments' lengths; returns `(m, k, n)` as
/// the kernel's `int`s and the launch, or `None` when the output is empty (nothing to launch).
#[allow(clippy::too_many_arguments)]
fn prepare(
    kernel: &str,
    out_len: usize,
    gelu_len: Option<usize>,
    a_len: usize,
    b_len: usize,
    bias: Option<&[f32]>,
    m: usize,
    k: usize,
    n: usize,
) -> Option<([i32; 3], LaunchDims)> {
    assert_eq!(out_len, m * n, "{kernel}: out must be m*n");
    if let Some(g) = gelu_len {
        assert_eq!(g, m * n, "{kernel}: gelu_out must be m*n");
    }
    assert_eq!(a_len, m * k, "{kernel}: a must be m*k");
    assert_eq!(b_len, k * n, "{kernel}: b must be k*n");
    if let Some(bias) = bias {
        assert_eq!(bias.len(), n, "{kernel}: bias must be n");
    }
    let mkn = [
        dim(kernel, m, "m"),
        dim(kernel, k, "k"),
        dim(kernel, n, "n"),
    ];
    dim(kernel, m * k, "m*k");
    dim(kernel, k * n, "k*n");
    dim(kernel, m * n, "m*n");
    if m == 0 || n == 0 {
        return None;
    }
    Some((mkn, matmul_bf16_launch(m, n)))
}

/// `out (m,n) = op(a) · op(b) (+ bias)`: `a` is `(m,k)` row-major, or `(k,m)` with `trans_a`;
/// `b` is `(k,n)`, or `(n,k)` with `trans_b` (bf16 bit patterns); f32 accumulation. With
/// `gelu_out` (`m*n`), the epilogue also writes `gelu_out = gelu(out)` (GPT-2's tanh GELU, the
/// formula of `gelu_forward`), `out` keeping the pre-activation.
#[allow(clippy::too_many_arguments)]
pub fn matmul_bf16(
    out: &mut [f32],
    gelu_out: Option<&mut [f32]>,
    a: &[u16],
    b: &[u16],
    bias: Option<&[f32]>,
    m: usize,
    k: usize,
    n: usize,
    trans_a: bool,
    trans_b: bool,
) {
    let gelu_len = gelu_out.as_ref().map(|g| g.len());
    let Some(([mi, ki, ni], d)) = prepare(
        "matmul_bf16",
        out.len(),
        gelu_len,
        a.len(),
        b.len(),
        bias,
        m,
        k,
        n,
    ) else {
        return;
    };
    let bias_ptr = bias.map_or(std::ptr::null(), <[f32]>::as_ptr);
    let gelu_ptr = gelu_out.map_or(std::ptr::null_mut(), <[f32]>::as_mut_ptr);
    // SAFETY: out and gelu_out (or null) hold m*n elements (written, and disjoint from each
    // other and from the inputs by the borrow rules), a m*k, b k*n, bias n or null (read); u16
    // has the layout of __nv_bfloat16.
    unsafe {
        smelt_emu_matmul_bf16(
            d.grid,
            d.block,
            d.smem,
            out.as_mut_ptr(),
            gelu_ptr,
            a.as_ptr(),
            b.as_ptr(),
            bias_ptr,
            mi,
            ki,
            ni,
            i32::from(trans_a),
            i32::from(trans_b),
        )
    }
}

/// [`matmul_bf16`] with bf16 outputs (bit patterns): the f32 sum `v = op(a) · op(b) (+ bias)`
/// is rounded to nearest even into `out`, and with `gelu_out` (`m*n`) `gelu(v)` of the unrounded
/// `v`, rounded, into `gelu_out`. Same launch as `matmul_bf16` ([`matmul_bf16_launch`]).
#[allow(clippy::too_many_arguments)]
pub fn matmul_bf16_to_bf16(
    out: &mut [u16],
    gelu_out: Option<&mut [u16]>,
    a: &[u16],
    b: &[u16],
    bias: Option<&[f32]>,
    m: usize,
    k: usize,
    n: usize,
    trans_a: bool,
    trans_b: bool,
) {
    let gelu_len = gelu_out.as_ref().map(|g| g.len());
    let Some(([mi, ki, ni], d)) = prepare(
        "matmul_bf16_to_bf16",
        out.len(),
        gelu_len,
        a.len(),
        b.len(),
        bias,
        m,
        k,
        n,
    ) else {
        return;
    };
    let bias_ptr = bias.map_or(std::ptr::null(), <[f32]>::as_ptr);
    let gelu_ptr = gelu_out.map_or(std::ptr::null_mut(), <[u16]>::as_mut_ptr);
    // SAFETY: out and gelu_out (or null) hold m*n elements (written, and disjoint from each
    // other and from the inputs by the borrow rules), a m*k, b k*n, bias n or null (read); u16
    // has the layout of __nv_bfloat16.
    unsafe {
        smelt_emu_matmul_bf16_to_bf16(
            d.grid,
            d.block,
            d.smem,
            out.as_mut_ptr(),
            gelu_ptr,
            a.as_ptr(),
            b.as_ptr(),
            bias_ptr,
            mi,
            ki,
            ni,
            i32::from(trans_a),
            i32::from(trans_b),
        )
    }
}

/// [`matmul_bf16`] on f32 inputs, rounded to bf16 first (round to nearest even).
#[allow(clippy::too_many_arguments)]
pub fn matmul_bf16_f32(
    out: &mut [f32],
    gelu_out: Option<&mut [f32]>,
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    m: usize,
    k: usize,
    n: usize,
    trans_a: bool,
    trans_b: bool,
) {
    matmul_bf16(
        out,
        gelu_out,
        &to_bf16(a),
        &to_bf16(b),
        bias,
        m,
        k,
        n,
        trans_a,
        trans_b,
    );
}

/// One warp-level `mma.sync.m16n8k16` (bf16, f32 accumulation) through fragments built by
/// the PTX ISA layout: `d (16×8) = a (16×16) · b (16×8) + c`, all row-major.
pub fn mma_bf16_selftest(d: &mut [f32; 128], a: &[u16; 256], b: &[u16; 128], c: &[f32; 128]) {
    // SAFETY: fixed-size arrays of the sizes the one-warp kernel reads and writes.
    unsafe {
        smelt_emu_mma_bf16_selftest(
            Dim3::x(1),
            Dim3::x(32),
            0,
            d.as_mut_ptr(),
            a.as_ptr(),
            b.as_ptr(),
            c.as_ptr(),
        )
    }
}

/// `ldmatrix.x4` and `.x4.trans` on a 16×16 bf16 matrix (row-major) in shared memory, matrix
/// `i` = rows `(i&1)*8..`, cols `(i>>1)*8..`: `out[lane*8 + i]` is register `i` of `lane`
/// without, `out[lane*8 + 4 + i]` with `.trans`.
pub fn ldmatrix_selftest(out: &mut [u32; 256], src: &[u16; 256]) {
    // SAFETY: fixed-size arrays; the kernel copies src to 512 bytes of dynamic shared memory.
    unsafe {
        smelt_emu_ldmatrix_selftest(Dim3::x(1), Dim3::x(32), 512, out.as_mut_ptr(), src.as_ptr())
    }
}
