#include "common.cuh"
#include "tensor_core.cuh"

// attention_tc.cu: the causal attention forward of attention.cu (attention_forward) with both
// products on tensor cores: S = Q·Kᵀ and O += P·V as mma.sync m16n8k16 (bf16 in, f32
// accumulate), FlashAttention-2 style. Same layouts and results as attention_forward:
// qkv (b, t, 3c) here in bf16; out (b, t, c) bf16, merged heads (the f32 result rounded to
// nearest even as it is stored: the same bits as an f32 out then cast_f32_to_bf16, without the
// f32 round trip through memory); lse (b, nh, t) f32 = log Σ_{j≤i} exp(scale · q_i·k_j);
// scale = 1/sqrt(hs).
//
// Head size: hs % 16 == 0 and hs ≤ ATC_MAX_HS (128) (GPT-2: 64); other sizes use the f32
// attention_forward. The body is a template on hs (register arrays sized exactly), compiled
// once per head size as its own kernel, attention_forward_bf16_hs<HS> (at the end).
//
// Tiling: ATC_BM (64) queries per block, 4 warps of 16 query rows (one m16 tile each); keys in
// tiles of ATC_BN (64). blockIdx.y = b*nh + h, blockIdx.x = query tile, heaviest (last) first.
// Per warp in registers: the Q fragments (hs/16 k-steps × 4 regs), S (8 n8 tiles × 4 f32), O
// (hs/8 n8 tiles × 4 f32), running max m and sum l of its two rows per lane (groupID and
// groupID + 8 of the mma fragment; a row's 4 lanes are a quad, reduced with 2 shuffles).
// P is converted to bf16 straight from the S accumulator registers into the A fragment of the
// P·V mma (the C layout of two n8 tiles is the A layout of one k16 step); the running sum l
// uses the f32 probabilities, as FlashAttention-2 does.
//
// Shared memory (dynamic, bf16): two tiles of ATC_BN rows × (hs + 8) (row padding of 16 bytes
// so ldmatrix's 8 row reads hit distinct banks): K and V. Q is first staged in the K buffer,
// moved to registers with ldmatrix, then the buffer is reused. Per key tile, K and V are two
// cp.async groups: the wait for K lets V's copy overlap Q·Kᵀ and the softmax. 18 KiB at hs = 64,
// 34 KiB at hs = 128.
// Q·Kᵀ: A = Q tile (row-major [query][d]) via ldmatrix_x4; B = Kᵀ (K stored [key][d], i.e.
// k-contiguous) via ldmatrix_x4. P·V: B = V stored [key][d] (k-outer) via ldmatrix_x4_trans.
// Rows past t are zero-filled (V's must be: 0 · garbage could be NaN). Only the diagonal key
// tile (k0 == q0) needs the causal mask; it also masks keys ≥ t for every row < t.
// cp.async 16-byte chunks need 16-byte aligned global addresses: used when qkv is 16-byte
// aligned (hs and c are multiples of 8 here), element by element otherwise.

#define ATC_BM 64
#define ATC_BN 64
#define ATC_THREADS 128
#define ATC_MAX_HS 128
#define ATC_NTILES (ATC_BN / 8)       // n8 tiles over the keys

// Rows [row0, row0 + ATC_BN) of one head's (t, hs) bf16 slice (global row stride ld) into
// shared memory `dst` (row stride sld); rows past t are zero. All threads take part.
static __device__ __forceinline__ void atc_load_tile(__nv_bfloat16* dst, int sld,
                                                     const __nv_bfloat16* __restrict__ src,
                                                     long long ld, int row0, int t, int hs,
                                                     bool vec) {
    const int chunks = hs / 8;  // 16-byte chunks per row
    const __nv_bfloat16 zero = __ushort_as_bfloat16(0);
    for (int e = threadIdx.x; e < ATC_BN * chunks; e += ATC_THREADS) {
        const int r = e / chunks, d = (e % chunks) * 8;
        const int row = row0 + r;
        __nv_bfloat16* s = dst + r * sld + d;
        const __nv_bfloat16* g = src + (long long)row * ld + d;
        if (row < t && vec) {
            cp_async_16(s, g);
        } else {
            SMELT_UNROLL
            for (int k = 0; k < 8; k++) s[k] = row < t ? g[k] : zero;
        }
    }
}

// Two floats as a packed bf16 pair (lo = a, the lower column), round to nearest even.
static __device__ __forceinline__ unsigned atc_pack_bf16(float a, float b) {
    return (unsigned)__bfloat16_as_ushort(__float2bfloat16(a)) |
           ((unsigned)__bfloat16_as_ushort(__float2bfloat16(b)) << 16);
}

// The kernel for one head size HS (compile time, so the fragment arrays are exactly sized:
// with a runtime hs and guarded loops ptxas spills at hs = 128).
template <int HS>
static __device__ __forceinline__ void atc_forward(__nv_bfloat16* __restrict__ out,
                                                   float* __restrict__ lse,
                                                   const __nv_bfloat16* __restrict__ qkv, int t,
                                                   int c, int nh) {
    constexpr int hs = HS;
    const int bh = blockIdx.y, bi = bh / nh, h = bh % nh;
    const int q0 = (gridDim.x - 1 - blockIdx.x) * ATC_BM;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int g = lane >> 2, tq = lane & 3;  // mma groupID, threadID_in_group
    const int li = lane >> 3, lj = lane & 7;  // ldmatrix: matrix li, row lj
    const float scale = 1.0f / sqrtf((float)hs);
    const long long ld = 3LL * c;
    const __nv_bfloat16* q_g = qkv + (long long)bi * t * ld + h * hs;
    const __nv_bfloat16* k_g = q_g + c;
    const __nv_bfloat16* v_g = q_g + 2 * c;
    const bool vec = (reinterpret_cast<unsigned long long>(qkv) & 15) == 0;
    constexpr int sld = hs + 8;
    constexpr int ksteps = hs / 16, dtiles = hs / 8;  // k16 steps, n8 tiles over the head

    __nv_bfloat16* k_s = reinterpret_cast<__nv_bfloat16*>(smem);  // (64, hs+8); Q first
    __nv_bfloat16* v_s = k_s + ATC_BN * sld;                        // (64, hs+8)

    // Q tile -> registers (A fragments of the warp's 16 rows, one per k16 step).
    atc_load_tile(k_s, sld, q_g, ld, q0, t, hs, vec);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    unsigned qf[ksteps][4];
    SMELT_UNROLL
    for (int kk = 0; kk < ksteps; kk++) {
        // Matrix li: rows (li&1)*8.., cols kk*16 + (li>>1)*8.. (a[0..3] order).
        ldmatrix_x4(qf[kk], k_s + (warp * 16 + (li & 1) * 8 + lj) * sld + kk * 16 + (li >> 1) * 8);
    }

    float o[dtiles][4];
    SMELT_UNROLL
    for (int dt = 0; dt < dtiles; dt++) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.0f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    const int row_lo = q0 + warp * 16 + g;  // this lane's rows: row_lo and row_lo + 8

    const int kv_end = min(q0 + ATC_BM, t);
    for (int k0 = 0; k0 < kv_end; k0 += ATC_BN) {
        __syncthreads();  // Q (first tile) or the previous K, V are no longer read
        atc_load_tile(k_s, sld, k_g, ld, k0, t, hs, vec);
        cp_async_commit();
        atc_load_tile(v_s, sld, v_g, ld, k0, t, hs, vec);
        cp_async_commit();
        cp_async_wait<1>();  // K has landed
        __syncthreads();

        // S = Q · Kᵀ for the warp's 16 rows × 64 keys.
        float s[ATC_NTILES][4];
        SMELT_UNROLL
        for (int nt = 0; nt < ATC_NTILES; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
        SMELT_UNROLL
        for (int kk = 0; kk < ksteps; kk++) {
            SMELT_UNROLL
            for (int p = 0; p < ATC_NTILES / 2; p++) {
                // Matrix li: keys p*16 + (li>>1)*8.. (n8 tile 2p or 2p+1), d kk*16 +
                // (li&1)*8.. (b[0] or b[1]).
                unsigned r[4];
                ldmatrix_x4(r, k_s + (p * 16 + (li >> 1) * 8 + lj) * sld + kk * 16 +
                                   (li & 1) * 8);
                const unsigned b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
                mma_m16n8k16_bf16(s[2 * p], qf[kk], b0, s[2 * p]);
                mma_m16n8k16_bf16(s[2 * p + 1], qf[kk], b1, s[2 * p + 1]);
            }
        }

        // Online softmax over the tile, rows row_lo (regs 0,1) and row_lo + 8 (regs 2,3).
        const bool diag = k0 + ATC_BN > q0;  // only the diagonal tile has masked keys
        float alpha[2];
        SMELT_UNROLL
        for (int hr = 0; hr < 2; hr++) {
            const int i = row_lo + 8 * hr;
            float mx = -INFINITY;
            SMELT_UNROLL
            for (int nt = 0; nt < ATC_NTILES; nt++) {
                SMELT_UNROLL
                for (int e = 0; e < 2; e++) {
                    const int j = k0 + nt * 8 + 2 * tq + e;
                    float v = s[nt][2 * hr + e] * scale;
                    if (diag && (j > i || j >= t)) v = -INFINITY;
                    s[nt][2 * hr + e] = v;
                    mx = fmaxf(mx, v);
                }
            }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            // Key 0 (first tile) is visible to every row, so m_new is finite.
            const float m_new = fmaxf(m[hr], mx);
            alpha[hr] = expf(m[hr] - m_new);
            float sum = 0.0f;
            SMELT_UNROLL
            for (int nt = 0; nt < ATC_NTILES; nt++) {
                SMELT_UNROLL
                for (int e = 0; e < 2; e++) {
                    const float p = expf(s[nt][2 * hr + e] - m_new);
                    s[nt][2 * hr + e] = p;
                    sum += p;
                }
            }
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            sum += __shfl_xor_sync(0xffffffffu, sum, 2);
            l[hr] = l[hr] * alpha[hr] + sum;
            m[hr] = m_new;
        }
        SMELT_UNROLL
        for (int dt = 0; dt < dtiles; dt++) {
            o[dt][0] *= alpha[0];
            o[dt][1] *= alpha[0];
            o[dt][2] *= alpha[1];
            o[dt][3] *= alpha[1];
        }

        cp_async_wait<0>();  // V has landed
        __syncthreads();

        // O += P · V: k16 step kk covers keys kk*16.. = S n8 tiles 2kk, 2kk+1.
        SMELT_UNROLL
        for (int kk = 0; kk < ATC_BN / 16; kk++) {
            const unsigned pa[4] = {atc_pack_bf16(s[2 * kk][0], s[2 * kk][1]),
                                    atc_pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                                    atc_pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                    atc_pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
            SMELT_UNROLL
            for (int p = 0; p < dtiles / 2; p++) {
                // Matrix li: d p*16 + (li>>1)*8.. (n8 tile 2p or 2p+1), keys kk*16 +
                // (li&1)*8.. (b[0] or b[1]); stored [key][d], so transposed.
                unsigned r[4];
                ldmatrix_x4_trans(r, v_s + (kk * 16 + (li & 1) * 8 + lj) * sld + p * 16 +
                                         (li >> 1) * 8);
                const unsigned b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
                mma_m16n8k16_bf16(o[2 * p], pa, b0, o[2 * p]);
                mma_m16n8k16_bf16(o[2 * p + 1], pa, b1, o[2 * p + 1]);
            }
        }
    }

    SMELT_UNROLL
    for (int hr = 0; hr < 2; hr++) {
        const int i = row_lo + 8 * hr;
        if (i < t) {
            const float inv = 1.0f / l[hr];
            __nv_bfloat16* o_g = out + ((long long)bi * t + i) * c + h * hs;
            SMELT_UNROLL
            for (int dt = 0; dt < dtiles; dt++) {
                o_g[dt * 8 + 2 * tq] = __float2bfloat16(o[dt][2 * hr] * inv);
                o_g[dt * 8 + 2 * tq + 1] = __float2bfloat16(o[dt][2 * hr + 1] * inv);
            }
            if (tq == 0) lse[(long long)bh * t + i] = m[hr] + logf(l[hr]);
        }
    }
}

// One kernel per supported head size (hs % 16 == 0, hs <= ATC_MAX_HS), each compiled for its
// own register count (a single kernel switching over head sizes would run hs = 64 with
// hs = 128's registers). The Rust side picks the instance by c / nh; an instance given another
// head size writes nothing.
template <int HS>
static __device__ __forceinline__ void atc_instance(__nv_bfloat16* out, float* lse,
                                                    const __nv_bfloat16* qkv, int b, int t,
                                                    int c, int nh) {
    (void)b;  // the batch is gridDim.y / nh
    if (c == HS * nh) atc_forward<HS>(out, lse, qkv, t, c, nh);
}

extern "C" __global__ void __launch_bounds__(ATC_THREADS) attention_forward_bf16_hs16(
    __nv_bfloat16* out, float* lse, const __nv_bfloat16* qkv, int b, int t, int c, int nh) {
    atc_instance<16>(out, lse, qkv, b, t, c, nh);
}
extern "C" __global__ void __launch_bounds__(ATC_THREADS) attention_forward_bf16_hs32(
    __nv_bfloat16* out, float* lse, const __nv_bfloat16* qkv, int b, int t, int c, int nh) {
    atc_instance<32>(out, lse, qkv, b, t, c, nh);
}
extern "C" __global__ void __launch_bounds__(ATC_THREADS) attention_forward_bf16_hs48(
    __nv_bfloat16* out, float* lse, const __nv_bfloat16* qkv, int b, int t, int c, int nh) {
    atc_instance<48>(out, lse, qkv, b, t, c, nh);
}
extern "C" __global__ void __launch_bounds__(ATC_THREADS) attention_forward_bf16_hs64(
    __nv_bfloat16* out, float* lse, const __nv_bfloat16* qkv, int b, int t, int c, int nh) {
    atc_instance<64>(out, lse, qkv, b, t, c, nh);
}
extern "C" __global__ void __launch_bounds__(ATC_THREADS) attention_forward_bf16_hs80(
    __nv_bfloat16* out, float* lse, const __nv_bfloat16* qkv, int b, int t, int c, int nh) {
    atc_instance<80>(out, lse, qkv, b, t, c, nh);
}
extern "C" __global__ void __launch_bounds__(ATC_THREADS) attention_forward_bf16_hs96(
    __nv_bfloat16* out, float* lse, const __nv_bfloat16* qkv, int b, int t, int c, int nh) {
    atc_instance<96>(out, lse, qkv, b, t, c, nh);
}
extern "C" __global__ void __launch_bounds__(ATC_THREADS) attention_forward_bf16_hs112(
    __nv_bfloat16* out, float* lse, const __nv_bfloat16* qkv, int b, int t, int c, int nh) {
    atc_instance<112>(out, lse, qkv, b, t, c, nh);
}
extern "C" __global__ void __launch_bounds__(ATC_THREADS) attention_forward_bf16_hs128(
    __nv_bfloat16* out, float* lse, const __nv_bfloat16* qkv, int b, int t, int c, int nh) {
    atc_instance<128>(out, lse, qkv, b, t, c, nh);
}
