/* attention.cu — attention on the device (online softmax, no Tq×Tk matrix anywhere): the
 * DiT's self-attention over a packed qkv with optional qk-norm, one image or n at once
 * (mk_attention, mk_attention_n), and cross-attention with strided q, k, v and a key count
 * (mk_cross_attention: EC-DiT's cross-attention to the text, the text encoder's masked
 * self-attention, the VAE's single-head attention with hd 512).
 *
 * Two kernels, picked by head size:
 *  - attention_small_kernel<NV> (hd ≤ 128, NV = ⌈hd/32⌉): a block = 16 query rows of one
 *    head (4 warps × 4 rows); K/V stream through shared memory 32 keys at a time, lane j
 *    scores key j against a q row broadcast from shared memory, then p_j is broadcast by
 *    shuffle and each lane accumulates its NV output columns. Rows of k in shared memory
 *    are padded by one float so lane j reading row j hits a different bank each.
 *  - attention_wide_kernel<NV, ROWS, BK> (128 < hd ≤ 1024; the VAE's single head of 512):
 *    8 warps × ROWS query rows; q rows live in registers, distributed over the lanes (lane
 *    owns columns lane + 32·i),
 *    so a score is a per-lane partial dot product plus a warp sum; BK keys per shared
 *    tile. Slower per FLOP than the small kernel, but its registers and shared memory do
 *    not grow with hd × rows.
 * Both: m' = max(m, max_j s_j), p_j = e^(s_j − m'), l = l·e^(m−m') + Σ p_j,
 * o = o·e^(m−m') + Σ_j p_j v_j, out = o / l. q is pre-multiplied by 1/√hd. Every
 * reduction has a fixed order, so a run is bit-reproducible.
 */
#include "kernels.h"
#include "launch.h"

#include <cuda_runtime.h>
#include <stdint.h>

#define ATT_FULL_MASK 0xffffffffu

static __device__ __forceinline__ float att_warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(ATT_FULL_MASK, v, o);
    return v;
}

static __device__ __forceinline__ float att_warp_max(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(ATT_FULL_MASK, v, o));
    return v;
}

/* Where one launch reads and writes. Head h of image z (blockIdx.y, blockIdx.z) starts at
 * column h·hd of q + z·q_batch (rows ldq apart), k/v + z·kv_batch (rows ldkv apart) and
 * out + z·o_batch (rows ldo apart). Softmax over keys [0, Tk). Norm pointers: per-head
 * LayerNorm of q and k over hd with affine (the qk-norm layout), or NULL. */
struct attention_args {
    float *out;
    const float *q, *k, *v;
    int64_t ldq, ldkv, ldo;
    int64_t q_batch, kv_batch, o_batch;
    int Tq, Tk, hd;
    const float *q_norm_w, *q_norm_b, *k_norm_w, *k_norm_b;
    float eps, scale;
};

#define ATT_BQ 16
#define ATT_BK 32
#define ATT_ROWS_PER_WARP (ATT_BQ / 4)

/* Loads (and optionally LayerNorms) one head row of hd floats into dst with one warp. */
template <int NV>
static __device__ __forceinline__ void att_load_head_row(float *dst, const float *src, int hd,
                                                         bool valid, const float *norm_w,
                                                         const float *norm_b, float eps,
                                                         float out_scale)
{
    const int lane = threadIdx.x & 31;
    float v[NV];
#pragma unroll
    for (int i = 0; i < NV; i++) {
        const int d = lane + 32 * i;
        v[i] = valid && d < hd ? src[d] : 0.0f;
    }
    if (norm_w && valid) {
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < NV; i++)
            s += v[i];
        const float mean = att_warp_sum(s) / hd;
        float sq = 0.0f;
#pragma unroll
        for (int i = 0; i < NV; i++) {
            const int d = lane + 32 * i;
            const float c = d < hd ? v[i] - mean : 0.0f;
            sq += c * c;
        }
        const float inv = 1.0f / sqrtf(att_warp_sum(sq) / hd + eps);
#pragma unroll
        for (int i = 0; i < NV; i++) {
            const int d = lane + 32 * i;
            v[i] = d < hd ? ((v[i] - mean) * inv) * norm_w[d] + norm_b[d] : 0.0f;
        }
    }
#pragma unroll
    for (int i = 0; i < NV; i++)
        dst[lane + 32 * i] = v[i] * out_scale;
}

template <int NV>
static __global__ void __launch_bounds__(128) attention_small_kernel(attention_args a)
{
    constexpr int W = 32 * NV;
    __shared__ float qs[ATT_BQ][W];
    __shared__ float ks[ATT_BK][W + 1];
    __shared__ float vs[ATT_BK][W];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int hd = a.hd, Tq = a.Tq, Tk = a.Tk;
    const int64_t head = blockIdx.y, image = blockIdx.z;
    const int q0 = blockIdx.x * ATT_BQ;
    const float *qbase = a.q + image * a.q_batch + head * hd;
    const float *kbase = a.k + image * a.kv_batch + head * hd;
    const float *vbase = a.v + image * a.kv_batch + head * hd;
    const bool normed = a.q_norm_w != NULL;

    for (int r = warp; r < ATT_BQ; r += 4) {
        const int q = q0 + r;
        att_load_head_row<NV>(qs[r], qbase + (q < Tq ? q : 0) * a.ldq, hd, q < Tq,
                              normed ? a.q_norm_w : NULL, a.q_norm_b, a.eps, a.scale);
    }

    float m[ATT_ROWS_PER_WARP], l[ATT_ROWS_PER_WARP], o[ATT_ROWS_PER_WARP][NV];
#pragma unroll
    for (int r = 0; r < ATT_ROWS_PER_WARP; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
#pragma unroll
        for (int i = 0; i < NV; i++)
            o[r][i] = 0.0f;
    }

    for (int k0 = 0; k0 < Tk; k0 += ATT_BK) {
        __syncthreads(); /* previous tile fully consumed (and q rows written, first time) */
        for (int r = warp; r < ATT_BK; r += 4) {
            const int key = k0 + r;
            const bool valid = key < Tk;
            const int64_t row = valid ? key : 0;
            att_load_head_row<NV>(ks[r], kbase + row * a.ldkv, hd, valid,
                                  normed ? a.k_norm_w : NULL, a.k_norm_b, a.eps, 1.0f);
#pragma unroll
            for (int i = 0; i < NV; i++) {
                const int d = lane + 32 * i;
                vs[r][d] = valid && d < hd ? vbase[row * a.ldkv + d] : 0.0f;
            }
        }
        __syncthreads();
        const bool key_valid = k0 + lane < Tk;
#pragma unroll
        for (int r = 0; r < ATT_ROWS_PER_WARP; r++) {
            const int qr = warp * ATT_ROWS_PER_WARP + r;
            float s = 0.0f;
            for (int d = 0; d < hd; d++)
                s += qs[qr][d] * ks[lane][d];
            s = key_valid ? s : -INFINITY;
            const float m_new = fmaxf(m[r], att_warp_max(s));
            const float p = key_valid ? expf(s - m_new) : 0.0f;
            const float alpha = expf(m[r] - m_new); /* e^−∞ = 0 on the first tile */
            l[r] = l[r] * alpha + att_warp_sum(p);
            m[r] = m_new;
#pragma unroll
            for (int i = 0; i < NV; i++)
                o[r][i] *= alpha;
            for (int j = 0; j < ATT_BK; j++) {
                const float pj = __shfl_sync(ATT_FULL_MASK, p, j);
#pragma unroll
                for (int i = 0; i < NV; i++)
                    o[r][i] += pj * vs[j][lane + 32 * i];
            }
        }
    }

    float *obase = a.out + image * a.o_batch + head * hd;
#pragma unroll
    for (int r = 0; r < ATT_ROWS_PER_WARP; r++) {
        const int q = q0 + warp * ATT_ROWS_PER_WARP + r;
        if (q >= Tq)
            continue;
        const float inv = 1.0f / l[r];
#pragma unroll
        for (int i = 0; i < NV; i++) {
            const int d = lane + 32 * i;
            if (d < hd)
                obase[(int64_t)q * a.ldo + d] = o[r][i] * inv;
        }
    }
}

/* ROWS query rows per warp (ATT_WIDE_WARPS warps), BK keys per shared tile; no qk-norm (hd >
 * 128 only occurs in cross-attention). ROWS·NV is kept ≤ 32 so q and o fit in registers. */
#define ATT_WIDE_WARPS 8
template <int NV, int ROWS, int BK>
static __global__ void __launch_bounds__(32 * ATT_WIDE_WARPS)
attention_wide_kernel(attention_args a)
{
    constexpr int W = 32 * NV;
    __shared__ float ks[BK][W];
    __shared__ float vs[BK][W];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int hd = a.hd, Tq = a.Tq, Tk = a.Tk;
    const int64_t head = blockIdx.y, image = blockIdx.z;
    const int q0 = blockIdx.x * (ATT_WIDE_WARPS * ROWS) + warp * ROWS;
    const float *qbase = a.q + image * a.q_batch + head * hd;
    const float *kbase = a.k + image * a.kv_batch + head * hd;
    const float *vbase = a.v + image * a.kv_batch + head * hd;

    float q[ROWS][NV], o[ROWS][NV], m[ROWS], l[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; r++) {
        const int row = q0 + r;
        const float *src = qbase + (int64_t)(row < Tq ? row : 0) * a.ldq;
#pragma unroll
        for (int i = 0; i < NV; i++) {
            const int d = lane + 32 * i;
            q[r][i] = row < Tq && d < hd ? src[d] * a.scale : 0.0f;
            o[r][i] = 0.0f;
        }
        m[r] = -INFINITY;
        l[r] = 0.0f;
    }

    for (int k0 = 0; k0 < Tk; k0 += BK) {
        __syncthreads(); /* the previous tile is consumed */
        for (int idx = threadIdx.x; idx < BK * W; idx += blockDim.x) {
            const int j = idx / W, d = idx % W, key = k0 + j;
            const bool ok = key < Tk && d < hd;
            ks[j][d] = ok ? kbase[(int64_t)key * a.ldkv + d] : 0.0f;
            vs[j][d] = ok ? vbase[(int64_t)key * a.ldkv + d] : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int r = 0; r < ROWS; r++) {
            float s[BK];
            float tile_max = -INFINITY;
#pragma unroll
            for (int j = 0; j < BK; j++) {
                float partial = 0.0f;
#pragma unroll
                for (int i = 0; i < NV; i++)
                    partial += q[r][i] * ks[j][lane + 32 * i];
                s[j] = k0 + j < Tk ? att_warp_sum(partial) : -INFINITY;
                tile_max = fmaxf(tile_max, s[j]);
            }
            const float m_new = fmaxf(m[r], tile_max);
            const float alpha = expf(m[r] - m_new);
            float psum = 0.0f;
#pragma unroll
            for (int j = 0; j < BK; j++) {
                s[j] = k0 + j < Tk ? expf(s[j] - m_new) : 0.0f;
                psum += s[j];
            }
            l[r] = l[r] * alpha + psum;
            m[r] = m_new;
#pragma unroll
            for (int i = 0; i < NV; i++) {
                float acc = o[r][i] * alpha;
#pragma unroll
                for (int j = 0; j < BK; j++)
                    acc += s[j] * vs[j][lane + 32 * i];
                o[r][i] = acc;
            }
        }
    }

    float *obase = a.out + image * a.o_batch + head * hd;
#pragma unroll
    for (int r = 0; r < ROWS; r++) {
        const int row = q0 + r;
        if (row >= Tq)
            continue;
        const float inv = 1.0f / l[r];
#pragma unroll
        for (int i = 0; i < NV; i++) {
            const int d = lane + 32 * i;
            if (d < hd)
                obase[(int64_t)row * a.ldo + d] = o[r][i] * inv;
        }
    }
}

template <int NV, int ROWS, int BK>
static void att_launch_wide(const attention_args &a, int H, int n, cudaStream_t stream)
{
    constexpr int rows_per_block = ATT_WIDE_WARPS * ROWS;
    const dim3 grid((unsigned)((a.Tq + rows_per_block - 1) / rows_per_block), (unsigned)H,
                    (unsigned)n);
    MK_LAUNCH(grid, 32 * ATT_WIDE_WARPS, 0, stream, attention_wide_kernel<NV, ROWS, BK>)(a);
}

/* Launches the kernel for a.hd over H heads and n images. Limits: 1 ≤ hd ≤ 1024, qk-norm
 * only with hd ≤ 128, H and n ≤ 65535, Tk ≥ 1. */
static cudaError_t att_launch(const attention_args &a, int H, int n, cudaStream_t stream)
{
    if (a.Tq <= 0 || n <= 0)
        return cudaSuccess;
    if (a.hd <= 0 || a.hd > 1024 || H <= 0 || H > 65535 || n > 65535 || a.Tk <= 0 ||
        (a.q_norm_w && a.hd > 128))
        return cudaErrorInvalidValue;
    const int nv = (a.hd + 31) / 32;
    if (nv <= 4) {
        const dim3 grid((unsigned)((a.Tq + ATT_BQ - 1) / ATT_BQ), (unsigned)H, (unsigned)n);
        switch (nv) {
        case 1:
            MK_LAUNCH(grid, 128, 0, stream, attention_small_kernel<1>)(a);
            break;
        case 2:
            MK_LAUNCH(grid, 128, 0, stream, attention_small_kernel<2>)(a);
            break;
        case 3:
            MK_LAUNCH(grid, 128, 0, stream, attention_small_kernel<3>)(a);
            break;
        default:
            MK_LAUNCH(grid, 128, 0, stream, attention_small_kernel<4>)(a);
            break;
        }
    } else if (nv <= 8) {
        att_launch_wide<8, 2, 8>(a, H, n, stream);
    } else if (nv <= 12) {
        att_launch_wide<12, 1, 8>(a, H, n, stream);
    } else if (nv <= 16) {
        att_launch_wide<16, 1, 8>(a, H, n, stream);
    } else if (nv <= 24) {
        att_launch_wide<24, 1, 4>(a, H, n, stream);
    } else {
        att_launch_wide<32, 1, 4>(a, H, n, stream);
    }
    return cudaGetLastError();
}

/* ---- launchers ------------------------------------------------------------------- */

extern "C" cudaError_t mk_attention_n(float *out, const float *qkv, int n, int T, int H, int hd,
                                      const float *q_norm_w, const float *q_norm_b,
                                      const float *k_norm_w, const float *k_norm_b, float eps,
                                      cudaStream_t stream)
{
    if (n <= 0 || T <= 0)
        return cudaSuccess;
    if (hd <= 0 || hd > 128 || H <= 0)
        return cudaErrorInvalidValue;
    const int64_t D = (int64_t)H * hd;
    attention_args a = {};
    a.out = out;
    a.q = qkv;
    a.k = qkv + D;
    a.v = qkv + 2 * D;
    a.ldq = a.ldkv = 3 * D;
    a.ldo = D;
    a.q_batch = a.kv_batch = (int64_t)T * 3 * D;
    a.o_batch = (int64_t)T * D;
    a.Tq = a.Tk = T;
    a.hd = hd;
    a.q_norm_w = q_norm_w; /* both norms or neither (ops.h) */
    a.q_norm_b = q_norm_b;
    a.k_norm_w = q_norm_w ? k_norm_w : NULL;
    a.k_norm_b = k_norm_b;
    a.eps = eps;
    a.scale = 1.0f / sqrtf((float)hd);
    return att_launch(a, H, n, stream);
}

extern "C" cudaError_t mk_attention(float *out, const float *qkv, int T, int H, int hd,
                                    const float *q_norm_w, const float *q_norm_b,
                                    const float *k_norm_w, const float *k_norm_b, float eps,
                                    cudaStream_t stream)
{
    return mk_attention_n(out, qkv, 1, T, H, hd, q_norm_w, q_norm_b, k_norm_w, k_norm_b, eps,
                          stream);
}

/* ---- cross-attention ------------------------------------------------------------------ */

extern "C" cudaError_t mk_cross_attention(float *out, const float *q, int ldq, const float *k,
                                          const float *v, int ldkv, int Tq, int Tk, int H,
                                          int hd, cudaStream_t stream)
{
    if (Tq <= 0)
        return cudaSuccess;
    attention_args a = {};
    a.out = out;
    a.q = q;
    a.k = k;
    a.v = v;
    a.ldq = ldq;
    a.ldkv = ldkv;
    a.ldo = (int64_t)H * hd;
    a.Tq = Tq;
    a.Tk = Tk;
    a.hd = hd;
    a.scale = 1.0f / sqrtf((float)hd);
    return att_launch(a, H, 1, stream);
}
