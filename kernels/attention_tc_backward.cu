#include "common.cuh"
#include "tensor_core.cuh"

// attention_tc_backward.cu: the causal attention backward of attention.cu
// (attention_backward_dkdv / attention_backward_dq) with all five products on tensor cores,
// FlashAttention-2 style and deterministic (no atomics: every output element is summed by one
// thread in a fixed order). The partner of attention_forward_bf16 (attention_tc.cu).
//
// Inputs: qkv (b, t, 3c) and dout (b, t, c) in bf16; lse (b, nh, t) f32 from the forward;
// dsum (b, nh, t) f32 = D_i = Σ_d dO_id·O_id from the f32 attention_backward_preprocess
// (attention.cu, unchanged). Output: dqkv (b, t, 3c) bf16, Q part by attention_backward_dq_bf16,
// K and V parts by attention_backward_dkdv_bf16 (disjoint columns; the two kernels are
// independent and may run in either order). Each element is summed in f32 registers by one
// thread and rounded to bf16 (nearest even) once, as it is stored: the same bits as an f32
// dqkv then cast_f32_to_bf16. scale = 1/sqrt(hs). With P = exp(scale·S − lse)
// recomputed from S = Q·Kᵀ (causal mask j ≤ i) and dP = dO·Vᵀ:
//   dS = P ∘ (dP − D),  dV = Pᵀ·dO,  dK = scale · dSᵀ·Q,  dQ = scale · dS·K.
// (scale is applied once to the f32 accumulators at the end, not to dS.)
//
// Head size: hs % 16 == 0 and hs ≤ ATB_MAX_HS (128) (GPT-2: 64); a template on hs, compiled
// once per head size as its own kernels attention_backward_{dkdv,dq}_bf16_hs<HS> (at the end),
// as the forward.
//
// Tiling: ATB_BLOCK (64) rows per block = 4 warps × 16 rows (one m16 tile per warp), 128
// threads. The streamed operand comes in tiles of INNER rows: 64 for hs ≤ 64, 32 up to 112,
// 16 at 128 (it bounds the S/dP registers next to the 2 × hs/8 × 4 accumulators of dK, dV, and
// keeps shared memory under 48 KiB, so no opt-in is needed). blockIdx.y = b*nh + h.
//   attention_backward_dkdv_bf16: block = key tile k0 = 64·blockIdx.x (ascending: the first
//     key tile sees the most queries, heaviest first). K, V of the tile stay in shared memory;
//     query tiles q0 = k0, k0 + INNER, .. < t stream through (Q, dO, lse, D). Per warp (16
//     keys): Sᵀ = K_w·Qᵀ and dPᵀ = V_w·dOᵀ (16 × INNER, C fragments), then Pᵀ and dSᵀ, rounded
//     to bf16 straight into A fragments (the C layout of two n8 tiles is the A layout of one
//     k16 step), dV += Pᵀ·dO and dK += dSᵀ·Q (16 × hs f32 accumulators in registers).
//   attention_backward_dq_bf16: block = query tile q0 (descending, heaviest first); Q, dO stay
//     in shared memory, key tiles k0 = 0, INNER, .. < min(q0 + 64, t) stream through (K, V).
//     Per warp (16 queries): S = Q_w·Kᵀ, dP = dO_w·Vᵀ, dS, dQ += dS·K (16 × hs accumulators);
//     lse and D of the lane's two rows are registers.
// A warp whose rows cannot see any column of the current tile (all keys after all queries, or
// rows past t) skips the tile's mma work (warp-uniform; the block barriers stay unconditional).
// The mask (j ≤ i, i < t) is applied only on tiles that can need it (diagonal, last).
//
// Fragments: A operands (K_w, V_w / Q_w, dO_w: [row][d] in shared memory) by ldmatrix_x4 per
// k16 step; B of the A·Bᵀ products ([col][d] tiles, k-contiguous) by ldmatrix_x4; B of the
// P·X products (X = dO, Q, K stored [k][d], k-outer) by ldmatrix_x4_trans. All tiles have
// row stride hs + 8 bf16 (16 bytes of padding: ldmatrix's 8 row reads hit distinct banks).
// Rows past t are zero-filled (they are B operands of the P·X products: 0·garbage could be
// NaN). Loads are cp.async 16-byte chunks when the base pointer is 16-byte aligned, element by
// element otherwise; per tile two cp.async groups, so the second operand's copy overlaps the
// first product.
//
// Dynamic shared memory (bytes), at most 45.3 KiB (hs = 112), so never above 48 KiB:
//   dkdv: 2·INNER floats (lse, D of the query tile) + (2·64 + 2·INNER)·(hs + 8)·2
//         = 36.5 KiB at hs = 64, 42.6 KiB at hs = 128;
//   dq:   (2·64 + 2·INNER)·(hs + 8)·2 = 36 KiB at hs = 64, 42.5 KiB at hs = 128.

#define ATB_BLOCK 64
#define ATB_THREADS 128
#define ATB_MAX_HS 128

// Rows of the streamed tile per step, by head size (see the top).
template <int HS>
struct AtbInner {
    static constexpr int value = HS <= 64 ? 64 : (HS <= 112 ? 32 : 16);
};

// Rows [row0, row0 + rows) of one head's (t, hs) bf16 slice (global row stride ld) into shared
// memory `dst` (row stride sld); rows past t are zero. All threads take part.
static __device__ __forceinline__ void atb_load_tile(__nv_bfloat16* dst, int sld,
                                                     const __nv_bfloat16* __restrict__ src,
                                                     long long ld, int row0, int rows, int t,
                                                     int hs, bool vec) {
    const int chunks = hs / 8;  // 16-byte chunks per row
    const __nv_bfloat16 zero = __ushort_as_bfloat16(0);
    for (int e = threadIdx.x; e < rows * chunks; e += ATB_THREADS) {
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
static __device__ __forceinline__ unsigned atb_pack_bf16(float a, float b) {
    return (unsigned)__bfloat16_as_ushort(__float2bfloat16(a)) |
           ((unsigned)__bfloat16_as_ushort(__float2bfloat16(b)) << 16);
}

// acc (16 × NT·8, C fragments) += A·Bᵀ over k = 0..HS: A = the 16 rows at a_s, B = the NT·8 rows
// at b_s, both stored [row][k] with row stride sld. The whole warp calls it.
template <int HS, int NT>
static __device__ __forceinline__ void atb_mma_abt(float (&acc)[NT][4],
                                                   const __nv_bfloat16* a_s,
                                                   const __nv_bfloat16* b_s, int sld, int li,
                                                   int lj) {
    SMELT_UNROLL
    for (int kk = 0; kk < HS / 16; kk++) {
        // Matrix li: rows (li&1)*8.., k kk*16 + (li>>1)*8.. (a[0..3] order).
        unsigned af[4];
        ldmatrix_x4(af, a_s + ((li & 1) * 8 + lj) * sld + kk * 16 + (li >> 1) * 8);
        SMELT_UNROLL
        for (int p = 0; p < NT / 2; p++) {
            // Matrix li: rows p*16 + (li>>1)*8.. (n8 tile 2p or 2p+1), k kk*16 + (li&1)*8..
            // (b[0] or b[1]).
            unsigned r[4];
            ldmatrix_x4(r, b_s + (p * 16 + (li >> 1) * 8 + lj) * sld + kk * 16 + (li & 1) * 8);
            const unsigned b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
            mma_m16n8k16_bf16(acc[2 * p], af, b0, acc[2 * p]);
            mma_m16n8k16_bf16(acc[2 * p + 1], af, b1, acc[2 * p + 1]);
        }
    }
}

// acc (16 × HS, C fragments) += A·X: A = 16 × KS·16 in bf16 A fragments (one per k16 step),
// X = the KS·16 rows at x_s, stored [k][d] with row stride sld (read transposed).
template <int HS, int KS>
static __device__ __forceinline__ void atb_mma_ax(float (&acc)[HS / 8][4], const unsigned (&a)[KS][4],
                                                  const __nv_bfloat16* x_s, int sld, int li,
                                                  int lj) {
    SMELT_UNROLL
    for (int kk = 0; kk < KS; kk++) {
        SMELT_UNROLL
        for (int p = 0; p < HS / 16; p++) {
            // Matrix li: d p*16 + (li>>1)*8.. (n8 tile 2p or 2p+1), k kk*16 + (li&1)*8.. (b[0]
            // or b[1]); stored [k][d], so transposed.
            unsigned r[4];
            ldmatrix_x4_trans(r, x_s + (kk * 16 + (li & 1) * 8 + lj) * sld + p * 16 +
                                     (li >> 1) * 8);
            const unsigned b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
            mma_m16n8k16_bf16(acc[2 * p], a[kk], b0, acc[2 * p]);
            mma_m16n8k16_bf16(acc[2 * p + 1], a[kk], b1, acc[2 * p + 1]);
        }
    }
}

// C fragments (16 × NT·8 f32) as bf16 A fragments of NT/2 k16 steps.
template <int NT>
static __device__ __forceinline__ void atb_to_a(unsigned (&a)[NT / 2][4], const float (&x)[NT][4]) {
    SMELT_UNROLL
    for (int kk = 0; kk < NT / 2; kk++) {
        a[kk][0] = atb_pack_bf16(x[2 * kk][0], x[2 * kk][1]);
        a[kk][1] = atb_pack_bf16(x[2 * kk][2], x[2 * kk][3]);
        a[kk][2] = atb_pack_bf16(x[2 * kk + 1][0], x[2 * kk + 1][1]);
        a[kk][3] = atb_pack_bf16(x[2 * kk + 1][2], x[2 * kk + 1][3]);
    }
}

template <int NT>
static __device__ __forceinline__ void atb_zero(float (&x)[NT][4]) {
    SMELT_UNROLL
    for (int n = 0; n < NT; n++) x[n][0] = x[n][1] = x[n][2] = x[n][3] = 0.0f;
}

// ---------------------------------------------------------------------------------------------
// dK, dV: one block per key tile
// ---------------------------------------------------------------------------------------------

template <int HS>
static __device__ __forceinline__ void atb_dkdv(__nv_bfloat16* __restrict__ dqkv,
                                                const __nv_bfloat16* __restrict__ dout,
                                                const __nv_bfloat16* __restrict__ qkv,
                                                const float* __restrict__ lse,
                                                const float* __restrict__ dsum, int t, int c,
                                                int nh) {
    constexpr int QT = AtbInner<HS>::value;  // queries per streamed tile
    constexpr int NT = QT / 8;               // n8 tiles over the queries
    constexpr int sld = HS + 8, dtiles = HS / 8;
    const int bh = blockIdx.y, bi = bh / nh, h = bh % nh;
    const int k0 = blockIdx.x * ATB_BLOCK;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int g = lane >> 2, tq = lane & 3;   // mma groupID, threadID_in_group
    const int li = lane >> 3, lj = lane & 7;  // ldmatrix: matrix li, row lj
    const float scale = 1.0f / sqrtf((float)HS);
    const long long ld = 3LL * c;
    const __nv_bfloat16* q_g = qkv + (long long)bi * t * ld + h * HS;
    const __nv_bfloat16* k_g = q_g + c;
    const __nv_bfloat16* v_g = q_g + 2 * c;
    const __nv_bfloat16* do_g = dout + (long long)bi * t * c + h * HS;
    const float* lse_g = lse + (long long)bh * t;
    const float* d_g = dsum + (long long)bh * t;
    const bool vec_qkv = (reinterpret_cast<unsigned long long>(qkv) & 15) == 0;
    const bool vec_do = (reinterpret_cast<unsigned long long>(dout) & 15) == 0;

    float* lse_s = smem;                                              // (QT)
    float* dd_s = lse_s + QT;                                         // (QT)
    __nv_bfloat16* k_s = reinterpret_cast<__nv_bfloat16*>(dd_s + QT);  // (64, hs+8)
    __nv_bfloat16* v_s = k_s + ATB_BLOCK * sld;                        // (64, hs+8)
    __nv_bfloat16* q_s = v_s + ATB_BLOCK * sld;                        // (QT, hs+8)
    __nv_bfloat16* do_s = q_s + QT * sld;                              // (QT, hs+8)

    atb_load_tile(k_s, sld, k_g, ld, k0, ATB_BLOCK, t, HS, vec_qkv);
    atb_load_tile(v_s, sld, v_g, ld, k0, ATB_BLOCK, t, HS, vec_qkv);
    cp_async_commit();

    float dk[dtiles][4], dv[dtiles][4];
    atb_zero(dk);
    atb_zero(dv);
    const int kw0 = k0 + warp * 16;  // the warp's first key; the lane's: kw0 + g, kw0 + g + 8
    const __nv_bfloat16* kw_s = k_s + warp * 16 * sld;
    const __nv_bfloat16* vw_s = v_s + warp * 16 * sld;

    for (int q0 = k0; q0 < t; q0 += QT) {
        __syncthreads();  // the previous query tile is no longer read
        atb_load_tile(q_s, sld, q_g, ld, q0, QT, t, HS, vec_qkv);
        cp_async_commit();
        atb_load_tile(do_s, sld, do_g, c, q0, QT, t, HS, vec_do);
        cp_async_commit();
        if (threadIdx.x < QT) {
            const int i = q0 + threadIdx.x;
            lse_s[threadIdx.x] = i < t ? lse_g[i] : 0.0f;
            dd_s[threadIdx.x] = i < t ? d_g[i] : 0.0f;
        }
        cp_async_wait<1>();  // K, V (first tile) and Q have landed
        __syncthreads();

        // Warp-uniform: some key of the warp is < t and ≤ the tile's last query.
        const bool active = kw0 < t && kw0 < q0 + QT;
        float s[NT][4];
        atb_zero(s);
        if (active) atb_mma_abt<HS, NT>(s, kw_s, q_s, sld, li, lj);  // Sᵀ = K_w·Qᵀ

        cp_async_wait<0>();  // dO has landed
        __syncthreads();

        if (active) {
            float dp[NT][4];
            atb_zero(dp);
            atb_mma_abt<HS, NT>(dp, vw_s, do_s, sld, li, lj);  // dPᵀ = V_w·dOᵀ
            // Keys after queries (diagonal tiles) or queries past t (last tile).
            const bool masked = q0 < kw0 + 16 || q0 + QT > t;
            SMELT_UNROLL
            for (int nt = 0; nt < NT; nt++) {
                SMELT_UNROLL
                for (int e = 0; e < 4; e++) {
                    const int il = nt * 8 + 2 * tq + (e & 1);  // query, in the tile
                    const int i = q0 + il, j = kw0 + g + 8 * (e >> 1);
                    float p = expf(s[nt][e] * scale - lse_s[il]);
                    float ds = p * (dp[nt][e] - dd_s[il]);
                    if (masked && (j > i || i >= t)) p = ds = 0.0f;
                    s[nt][e] = p;
                    dp[nt][e] = ds;
                }
            }
            unsigned pa[NT / 2][4], dsa[NT / 2][4];
            atb_to_a<NT>(pa, s);
            atb_to_a<NT>(dsa, dp);
            atb_mma_ax<HS, NT / 2>(dv, pa, do_s, sld, li, lj);   // dV += Pᵀ·dO
            atb_mma_ax<HS, NT / 2>(dk, dsa, q_s, sld, li, lj);   // dK += dSᵀ·Q
        }
    }

    SMELT_UNROLL
    for (int hr = 0; hr < 2; hr++) {
        const int j = kw0 + g + 8 * hr;
        if (j < t) {
            __nv_bfloat16* dk_g = dqkv + ((long long)bi * t + j) * ld + c + h * HS;
            __nv_bfloat16* dv_g = dk_g + c;
            SMELT_UNROLL
            for (int dt = 0; dt < dtiles; dt++) {
                SMELT_UNROLL
                for (int e = 0; e < 2; e++) {
                    dk_g[dt * 8 + 2 * tq + e] = __float2bfloat16(dk[dt][2 * hr + e] * scale);
                    dv_g[dt * 8 + 2 * tq + e] = __float2bfloat16(dv[dt][2 * hr + e]);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// dQ: one block per query tile
// ---------------------------------------------------------------------------------------------

template <int HS>
static __device__ __forceinline__ void atb_dq(__nv_bfloat16* __restrict__ dqkv,
                                              const __nv_bfloat16* __restrict__ dout,
                                              const __nv_bfloat16* __restrict__ qkv,
                                              const float* __restrict__ lse,
                                              const float* __restrict__ dsum, int t, int c,
                                              int nh) {
    constexpr int KT = AtbInner<HS>::value;  // keys per streamed tile
    constexpr int NT = KT / 8;               // n8 tiles over the keys
    constexpr int sld = HS + 8, dtiles = HS / 8;
    const int bh = blockIdx.y, bi = bh / nh, h = bh % nh;
    const int q0 = (gridDim.x - 1 - blockIdx.x) * ATB_BLOCK;  // heaviest (last) tile first
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int g = lane >> 2, tq = lane & 3;
    const int li = lane >> 3, lj = lane & 7;
    const float scale = 1.0f / sqrtf((float)HS);
    const long long ld = 3LL * c;
    const __nv_bfloat16* q_g = qkv + (long long)bi * t * ld + h * HS;
    const __nv_bfloat16* k_g = q_g + c;
    const __nv_bfloat16* v_g = q_g + 2 * c;
    const __nv_bfloat16* do_g = dout + (long long)bi * t * c + h * HS;
    const float* lse_g = lse + (long long)bh * t;
    const float* d_g = dsum + (long long)bh * t;
    const bool vec_qkv = (reinterpret_cast<unsigned long long>(qkv) & 15) == 0;
    const bool vec_do = (reinterpret_cast<unsigned long long>(dout) & 15) == 0;

    __nv_bfloat16* q_s = reinterpret_cast<__nv_bfloat16*>(smem);  // (64, hs+8)
    __nv_bfloat16* do_s = q_s + ATB_BLOCK * sld;                   // (64, hs+8)
    __nv_bfloat16* k_s = do_s + ATB_BLOCK * sld;                   // (KT, hs+8)
    __nv_bfloat16* v_s = k_s + KT * sld;                           // (KT, hs+8)

    atb_load_tile(q_s, sld, q_g, ld, q0, ATB_BLOCK, t, HS, vec_qkv);
    atb_load_tile(do_s, sld, do_g, c, q0, ATB_BLOCK, t, HS, vec_do);
    cp_async_commit();

    const int qw0 = q0 + warp * 16;  // the warp's first query; the lane's: qw0 + g, qw0 + g + 8
    float lse_r[2], d_r[2];
    SMELT_UNROLL
    for (int hr = 0; hr < 2; hr++) {
        const int i = qw0 + g + 8 * hr;
        lse_r[hr] = i < t ? lse_g[i] : 0.0f;
        d_r[hr] = i < t ? d_g[i] : 0.0f;
    }
    float dq[dtiles][4];
    atb_zero(dq);
    const __nv_bfloat16* qw_s = q_s + warp * 16 * sld;
    const __nv_bfloat16* dow_s = do_s + warp * 16 * sld;

    const int kv_end = min(q0 + ATB_BLOCK, t);
    for (int k0 = 0; k0 < kv_end; k0 += KT) {
        __syncthreads();  // the previous key tile is no longer read
        atb_load_tile(k_s, sld, k_g, ld, k0, KT, t, HS, vec_qkv);
        cp_async_commit();
        atb_load_tile(v_s, sld, v_g, ld, k0, KT, t, HS, vec_qkv);
        cp_async_commit();
        cp_async_wait<1>();  // Q, dO (first tile) and K have landed
        __syncthreads();

        // Warp-uniform: some query of the warp is < t and ≥ the tile's first key.
        const bool active = qw0 < t && qw0 + 15 >= k0;
        float s[NT][4];
        atb_zero(s);
        if (active) atb_mma_abt<HS, NT>(s, qw_s, k_s, sld, li, lj);  // S = Q_w·Kᵀ

        cp_async_wait<0>();  // V has landed
        __syncthreads();

        if (active) {
            float dp[NT][4];
            atb_zero(dp);
            atb_mma_abt<HS, NT>(dp, dow_s, v_s, sld, li, lj);  // dP = dO_w·Vᵀ
            // Keys after queries (diagonal tiles) or queries past t (last tile).
            const bool masked = k0 + KT > qw0 || qw0 + 16 > t;
            SMELT_UNROLL
            for (int nt = 0; nt < NT; nt++) {
                SMELT_UNROLL
                for (int e = 0; e < 4; e++) {
                    const int hr = e >> 1;
                    const int i = qw0 + g + 8 * hr, j = k0 + nt * 8 + 2 * tq + (e & 1);
                    const float p = expf(s[nt][e] * scale - lse_r[hr]);
                    float ds = p * (dp[nt][e] - d_r[hr]);
                    if (masked && (j > i || i >= t)) ds = 0.0f;
                    dp[nt][e] = ds;
                }
            }
            unsigned dsa[NT / 2][4];
            atb_to_a<NT>(dsa, dp);
            atb_mma_ax<HS, NT / 2>(dq, dsa, k_s, sld, li, lj);  // dQ += dS·K
        }
    }

    SMELT_UNROLL
    for (int hr = 0; hr < 2; hr++) {
        const int i = qw0 + g + 8 * hr;
        if (i < t) {
            __nv_bfloat16* dq_g = dqkv + ((long long)bi * t + i) * ld + h * HS;
            SMELT_UNROLL
            for (int dt = 0; dt < dtiles; dt++) {
                dq_g[dt * 8 + 2 * tq] = __float2bfloat16(dq[dt][2 * hr] * scale);
                dq_g[dt * 8 + 2 * tq + 1] = __float2bfloat16(dq[dt][2 * hr + 1] * scale);
            }
        }
    }
}

// One kernel per supported head size (hs % 16 == 0, hs <= ATB_MAX_HS) and pass, each compiled
// for its own register count; the Rust side picks the instance by c / nh. An instance given
// another head size writes nothing. The dK/dV kernels declare one block per SM as enough
// (`__launch_bounds__(ATB_THREADS, 1)`): without it ptxas caps hs = 96 at 168 registers (three
// blocks per SM on sm_80) and spills; with it no instance changes its blocks per SM.
template <int HS>
static __device__ __forceinline__ void atb_dkdv_instance(__nv_bfloat16* dqkv,
                                                         const __nv_bfloat16* dout,
                                                         const __nv_bfloat16* qkv,
                                                         const float* lse, const float* dsum,
                                                         int b, int t, int c, int nh) {
    (void)b;  // the batch is gridDim.y / nh
    if (c == HS * nh) atb_dkdv<HS>(dqkv, dout, qkv, lse, dsum, t, c, nh);
}

template <int HS>
static __device__ __forceinline__ void atb_dq_instance(__nv_bfloat16* dqkv,
                                                       const __nv_bfloat16* dout,
                                                       const __nv_bfloat16* qkv, const float* lse,
                                                       const float* dsum, int b, int t, int c,
                                                       int nh) {
    (void)b;
    if (c == HS * nh) atb_dq<HS>(dqkv, dout, qkv, lse, dsum, t, c, nh);
}

extern "C" __global__ void __launch_bounds__(ATB_THREADS, 1) attention_backward_dkdv_bf16_hs16(
    __nv_bfloat16* dqkv, const __nv_bfloat16* dout, const __nv_bfloat16* qkv, const float* lse,
    const float* dsum, int b, int t, int c, int nh) {
    atb_dkdv_instance<16>(dqkv, dout, qkv, lse, dsum, b, t, c, nh);
}
extern "C" __global__ void __launch_bounds__(ATB_THREADS, 1) attention_backward_dkdv_bf16_hs32(
    __nv_bfloat16* dqkv, const __nv_bfloat16* dout, const __nv_bfloat16* qkv, const float* lse,
    const float* dsum, int b, int t, int c, int nh) {
    atb_dkdv_instance<32>(dqkv, dout, qkv, lse, dsum, b, t, c, nh);
}
extern "C" __global__ void __launch_bounds__(ATB_THREADS, 1) attention_backward_dkdv_bf16_hs48(
    __nv_bfloat16* dqkv, const __nv_bfloat16* dout, const __nv_bfloat16* qkv, const float* lse,
    const float* dsum, int b, int t, int c, int nh) {
    atb_dkdv_instance<48>(dqkv, dout, qkv, lse, dsum, b, t, c, nh);
}
extern "C" __global__ void __launch_bounds__(ATB_THREADS, 1) attention_backward_dkdv_bf16_hs64(
    __nv_bfloat16* dqkv, const __nv_bfloat16* dout, const __nv_bfloat16* qkv, const float* lse,
    const float* dsum, int b, int t, int c, int nh) {
    atb_dkdv_instance<64>(dqkv, dout, qkv, lse, dsum, b, t, c, nh);
}
extern "C" __global__ void __launch_bounds__(ATB_THREADS, 1) attention_backward_dkdv_bf16_hs80(
    __nv_bfloat16* dqkv, const __nv_bfloat16* dout, const __nv_bfloat16* qkv, const float* lse,
    const float* dsum, int b, int t, int c, int nh) {
    atb_dkdv_instance<80>(dqkv, dout, qkv, lse, dsum, b, t, c, nh);
}
extern "C" __global__ void __launch_bounds__(ATB_THREADS, 1) attention_backward_dkdv_bf16_hs96(
    __nv_bfloat16* dqkv, const __nv_bfloat16* dout, const __nv_bfloat16* qkv, const float* lse,
    const float* dsum, int b, int t, int c, int nh) {
    atb_dkdv_instance<96>(dqkv, dout, qkv, lse, dsum, b, t, c, nh);
}
extern "C" __global__ void __launch_bounds__(ATB_THREADS, 1) attention_backward_dkdv_bf16_hs112(
    __nv_bfloat16* dqkv, const __nv_bfloat16* dout, const __nv_bfloat16* qkv, const float* lse,
    const float* dsum, int b, int t, int c, int nh) {
    atb_dkdv_instance<112>(dqkv, dout, qkv, lse, dsum, b, t, c, nh);
}
extern "C" __global__ void __launch_bounds__(ATB_THREADS, 1) attention_backward_dkdv_bf16_hs128(
    __nv_bfloat16* dqkv, const __nv_bfloat16* dout, const __nv_bfloat16* qkv, const float* lse,
    const float* dsum, int b, int t, int c, int nh) {
    atb_dkdv_instance<128>(dqkv, dout, qkv, lse, dsum, b, t, c, nh);
}
extern "C" __global__ void __launch_bounds__(ATB_THREADS) attention_backward_dq_bf16_hs16(
    __nv_bfloat16* dqkv, const __nv_bfloat16* dout, const __nv_bfloat16* qkv, const float* lse,
    const float* dsum, int b, int t, int c, int nh) {
    atb_dq_instance<16>(dqkv, dout, qkv, lse, dsum, b, t, c, nh);
}
extern "C" __global__ void __launch_bounds__(ATB_THREADS) attention_backward_dq_bf16_hs32(
    __nv_bfloat16* dqkv, const __nv_bfloat16* dout, const __nv_bfloat16* qkv, const float* lse,
    const float* dsum, int b, int t, int c, int nh) {
    atb_dq_instance<32>(dqkv, dout, qkv, lse, dsum, b, t, c, nh);
}
extern "C" __global__ void __launch_bounds__(ATB_THREADS) attention_backward_dq_bf16_hs48(
    __nv_bfloat16* dqkv, const __nv_bfloat16* dout, const __nv_bfloat16* qkv, const float* lse,
    const float* dsum, int b, int t, int c, int nh) {
    atb_dq_instance<48>(dqkv, dout, qkv, lse, dsum, b, t, c, nh);
}
extern "C" __global__ void __launch_bounds__(ATB_THREADS) attention_backward_dq_bf16_hs64(
    __nv_bfloat16* dqkv, const __nv_bfloat16* dout, const __nv_bfloat16* qkv, const float* lse,
    const float* dsum, int b, int t, int c, int nh) {
    atb_dq_instance<64>(dqkv, dout, qkv, lse, dsum, b, t, c, nh);
}
extern "C" __global__ void __launch_bounds__(ATB_THREADS) attention_backward_dq_bf16_hs80(
    __nv_bfloat16* dqkv, const __nv_bfloat16* dout, const __nv_bfloat16* qkv, const float* lse,
    const float* dsum, int b, int t, int c, int nh) {
    atb_dq_instance<80>(dqkv, dout, qkv, lse, dsum, b, t, c, nh);
}
extern "C" __global__ void __launch_bounds__(ATB_THREADS) attention_backward_dq_bf16_hs96(
    __nv_bfloat16* dqkv, const __nv_bfloat16* dout, const __nv_bfloat16* qkv, const float* lse,
    const float* dsum, int b, int t, int c, int nh) {
    atb_dq_instance<96>(dqkv, dout, qkv, lse, dsum, b, t, c, nh);
}
extern "C" __global__ void __launch_bounds__(ATB_THREADS) attention_backward_dq_bf16_hs112(
    __nv_bfloat16* dqkv, const __nv_bfloat16* dout, const __nv_bfloat16* qkv, const float* lse,
    const float* dsum, int b, int t, int c, int nh) {
    atb_dq_instance<112>(dqkv, dout, qkv, lse, dsum, b, t, c, nh);
}
extern "C" __global__ void __launch_bounds__(ATB_THREADS) attention_backward_dq_bf16_hs128(
    __nv_bfloat16* dqkv, const __nv_bfloat16* dout, const __nv_bfloat16* qkv, const float* lse,
    const float* dsum, int b, int t, int c, int nh) {
    atb_dq_instance<128>(dqkv, dout, qkv, lse, dsum, b, t, c, nh);
}
