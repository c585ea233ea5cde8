/* elementwise.cu — the small kernels of the CUDA backend: LayerNorm·modulate, gate·residual,
 * SiLU, bias, fp32 → bf16, the router's softmax + top-k, and attention (online softmax, no
 * T×T matrix). fp32 throughout; each is judged against engine/ops_cpu.c by tests/gpu/.
 *
 * Precision notes (why the results match the CPU reference to ~1e-6 relative):
 *  - LayerNorm statistics are two-pass (mean, then squared deviations) in fp32 with a
 *    tree reduction; the CPU sums in double. Both are far inside 1e-4.
 *  - gate·residual rounds the product before the sum (__fmul_rn/__fadd_rn), as the C code
 *    compiled with -std=c11 (no FP contraction) does, so the residual stream does not pick
 *    up a different rounding at every block.
 *  - The router sums its softmax in double like the CPU, so the top-k picks agree except on
 *    true near-ties.
 */
#include "kernels.h"
#include "launch.h"

#include <cfloat>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#define FULL_MASK 0xffffffffu

static __device__ __forceinline__ float warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

static __device__ __forceinline__ float warp_max(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

/* Sum over the block; `scratch` holds 33 floats. Every thread gets the result. */
static __device__ float block_sum(float v, float *scratch)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int warps = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads(); /* the previous call's readers are done with scratch */
    if (lane == 0)
        scratch[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float s = lane < warps ? scratch[lane] : 0.0f;
        s = warp_sum(s);
        if (lane == 0)
            scratch[32] = s;
    }
    __syncthreads();
    return scratch[32];
}

/* ---- fp32 → bf16 ---------------------------------------------------------------------- */

static __global__ void f32_to_bf16_kernel(uint16_t *dst, const float *src, int64_t count)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < count;
         i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = __bfloat16_as_ushort(__float2bfloat16_rn(src[i]));
}

static unsigned grid_for(int64_t count, int threads)
{
    int64_t blocks = (count + threads - 1) / threads;
    if (blocks > 65535 * 8)
        blocks = 65535 * 8;
    return (unsigned)(blocks > 0 ? blocks : 1);
}

extern "C" cudaError_t mk_f32_to_bf16(uint16_t *dst, const float *src, int64_t count,
                                      cudaStream_t stream)
{
    if (count <= 0)
        return cudaSuccess;
    MK_LAUNCH(grid_for(count, 256), 256, 0, stream, f32_to_bf16_kernel)(dst, src, count);
    return cudaGetLastError();
}

/* ---- LayerNorm · modulate ------------------------------------------------------------- */

/* One block per row. Each thread reads, reduces and writes the same elements, so y may be x. */
static __global__ void layernorm_modulate_kernel(float *y, const float *x, const float *shift,
                                                 const float *scale, int D, float eps)
{
    __shared__ float scratch[33];
    const size_t row = blockIdx.x;
    const float *xr = x + row * D;
    float *yr = y + row * D;
    float s = 0.0f;
    for (int d = threadIdx.x; d < D; d += blockDim.x)
        s += xr[d];
    const float mean = block_sum(s, scratch) / D;
    float sq = 0.0f;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        const float c = xr[d] - mean;
        sq += c * c;
    }
    const float inv = 1.0f / sqrtf(block_sum(sq, scratch) / D + eps);
    for (int d = threadIdx.x; d < D; d += blockDim.x)
        yr[d] = ((xr[d] - mean) * inv) * (1.0f + scale[d]) + shift[d];
}

extern "C" cudaError_t mk_layernorm_modulate(float *y, const float *x, const float *shift,
                                             const float *scale, int T, int D, float eps,
                                             cudaStream_t stream)
{
    if (T <= 0)
        return cudaSuccess;
    const int threads = D >= 1024 ? 256 : D >= 256 ? 128 : 64;
    MK_LAUNCH(T, threads, 0, stream, layernorm_modulate_kernel)(y, x, shift, scale, D, eps);
    return cudaGetLastError();
}

/* ---- gate · residual, SiLU, bias ----------------------------------------------------- */

static __global__ void gate_residual_kernel(float *x, const float *y, const float *gate,
                                            int64_t count, int D)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < count;
         i += (int64_t)gridDim.x * blockDim.x)
        x[i] = __fadd_rn(x[i], __fmul_rn(gate[i % D], y[i]));
}

extern "C" cudaError_t mk_gate_residual(float *x, const float *y, const float *gate, int T,
                                        int D, cudaStream_t stream)
{
    const int64_t count = (int64_t)T * D;
    if (count <= 0)
        return cudaSuccess;
    MK_LAUNCH(grid_for(count, 256), 256, 0, stream, gate_residual_kernel)(x, y, gate, count, D);
    return cudaGetLastError();
}

static __global__ void silu_kernel(float *y, const float *x, int64_t count)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < count;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float v = x[i];
        y[i] = v / (1.0f + expf(-v));
    }
}

extern "C" cudaError_t mk_silu(float *y, const float *x, int64_t count, cudaStream_t stream)
{
    if (count <= 0)
        return cudaSuccess;
    MK_LAUNCH(grid_for(count, 256), 256, 0, stream, silu_kernel)(y, x, count);
    return cudaGetLastError();
}

static __global__ void add_bias_kernel(float *y, const float *b, int64_t count, int N)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < count;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] += b[i % N];
}

extern "C" cudaError_t mk_add_bias(float *y, const float *b, int M, int N, cudaStream_t stream)
{
    const int64_t count = (int64_t)M * N;
    if (count <= 0)
        return cudaSuccess;
    MK_LAUNCH(grid_for(count, 256), 256, 0, stream, add_bias_kernel)(y, b, count, N);
    return cudaGetLastError();
}

/* ---- router: softmax + top-k ---------------------------------------------------------- */

/* One thread per token (E ≤ 256 probabilities in local memory): small next to the router
 * GEMM, and the same arithmetic as cpu_router_topk, tie rule included. */
static __global__ void router_topk_kernel(int32_t *top_ids, float *top_weights,
                                          const float *logits, int T, int E, int k)
{
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= T)
        return;
    const float *row = logits + (size_t)t * E;
    float probs[MK_MOE_MAX_EXPERTS];
    float max = -FLT_MAX;
    for (int e = 0; e < E; e++)
        max = fmaxf(max, row[e]);
    double sum = 0.0;
    for (int e = 0; e < E; e++) {
        probs[e] = expf(row[e] - max);
        sum += probs[e];
    }
    for (int e = 0; e < E; e++)
        probs[e] = (float)(probs[e] / sum);
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int e = 0; e < E; e++) {
            if (probs[e] < 0.0f)
                continue;
            if (best < 0 || probs[e] > probs[best])
                best = e;
        }
        top_ids[(size_t)t * k + j] = best;
        top_weights[(size_t)t * k + j] = probs[best];
        probs[best] = -1.0f;
    }
}

extern "C" cudaError_t mk_router_topk(int32_t *top_ids, float *top_weights, const float *logits,
                                      int T, int E, int k, cudaStream_t stream)
{
    if (T <= 0)
        return cudaSuccess;
    if (E > MK_MOE_MAX_EXPERTS || k > E)
        return cudaErrorInvalidValue;
    MK_LAUNCH((T + 127) / 128, 128, 0, stream, router_topk_kernel)(top_ids, top_weights, logits, T,
                                                             E, k);
    return cudaGetLastError();
}

/* ---- attention ------------------------------------------------------------------------ *
 * One block = 16 query rows of one head, 4 warps × 4 rows. Keys and values stream through
 * shared memory 32 at a time (one key per lane for the scores); the softmax is online
 * (running max m, running sum l, rescaled output), so no T×T matrix exists anywhere.
 *   1. load the block's q rows (LayerNormed per head in the qk-norm layout), scaled 1/√hd;
 *   2. per key tile: load k (normed) and v; each warp, per row: lane j scores key j,
 *      m' = max(m, max_j s_j), p_j = e^(s_j − m'), l = l·e^(m−m') + Σ p_j,
 *      o = o·e^(m−m') + Σ_j p_j v_j (p_j broadcast by shuffle, lanes own hd columns);
 *   3. out = o / l.
 * NV = ⌈hd/32⌉ columns per lane (hd 64 → 2, 72 and 88 → 3, 128 → 4). Rows of k in shared
 * memory are padded by one float so lane j reading row j hits a different bank each. */
#define ATT_BQ 16
#define ATT_BK 32
#define ATT_ROWS_PER_WARP (ATT_BQ / 4)

/* Loads (and optionally LayerNorms) one head row of hd floats into dst with one warp. */
template <int NV>
static __device__ __forceinline__ void load_head_row(float *dst, const float *src, int hd,
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
        const float mean = warp_sum(s) / hd;
        float sq = 0.0f;
#pragma unroll
        for (int i = 0; i < NV; i++) {
            const int d = lane + 32 * i;
            const float c = d < hd ? v[i] - mean : 0.0f;
            sq += c * c;
        }
        const float inv = 1.0f / sqrtf(warp_sum(sq) / hd + eps);
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
static __global__ void __launch_bounds__(128)
attention_kernel(float *out, const float *qkv, int T, int H, int hd, const float *q_norm_w,
                 const float *q_norm_b, const float *k_norm_w, const float *k_norm_b, float eps,
                 float scale)
{
    constexpr int W = 32 * NV;
    __shared__ float qs[ATT_BQ][W];
    __shared__ float ks[ATT_BK][W + 1];
    __shared__ float vs[ATT_BK][W];
    const int D = H * hd, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int head = blockIdx.y, q0 = blockIdx.x * ATT_BQ;
    const size_t row_stride = (size_t)3 * D;

    for (int r = warp; r < ATT_BQ; r += 4) {
        const int q = q0 + r;
        load_head_row<NV>(qs[r], qkv + (size_t)q * row_stride + head * hd, hd, q < T,
                          q_norm_w, q_norm_b, eps, scale);
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

    for (int k0 = 0; k0 < T; k0 += ATT_BK) {
        __syncthreads(); /* previous tile fully consumed (and q rows written, first time) */
        for (int r = warp; r < ATT_BK; r += 4) {
            const int key = k0 + r;
            const float *src = qkv + (size_t)key * row_stride + D + head * hd;
            load_head_row<NV>(ks[r], src, hd, key < T, k_norm_w, k_norm_b, eps, 1.0f);
#pragma unroll
            for (int i = 0; i < NV; i++) {
                const int d = lane + 32 * i;
                vs[r][d] = key < T && d < hd ? src[D + d] : 0.0f;
            }
        }
        __syncthreads();
        const bool key_valid = k0 + lane < T;
#pragma unroll
        for (int r = 0; r < ATT_ROWS_PER_WARP; r++) {
            const int qr = warp * ATT_ROWS_PER_WARP + r;
            float s = 0.0f;
            for (int d = 0; d < hd; d++)
                s += qs[qr][d] * ks[lane][d];
            s = key_valid ? s : -INFINITY;
            const float m_new = fmaxf(m[r], warp_max(s));
            const float p = key_valid ? expf(s - m_new) : 0.0f;
            const float alpha = expf(m[r] - m_new); /* e^−∞ = 0 on the first tile */
            l[r] = l[r] * alpha + warp_sum(p);
            m[r] = m_new;
#pragma unroll
            for (int i = 0; i < NV; i++)
                o[r][i] *= alpha;
            for (int j = 0; j < ATT_BK; j++) {
                const float pj = __shfl_sync(FULL_MASK, p, j);
#pragma unroll
                for (int i = 0; i < NV; i++)
                    o[r][i] += pj * vs[j][lane + 32 * i];
            }
        }
    }

#pragma unroll
    for (int r = 0; r < ATT_ROWS_PER_WARP; r++) {
        const int q = q0 + warp * ATT_ROWS_PER_WARP + r;
        if (q >= T)
            continue;
        const float inv = 1.0f / l[r];
#pragma unroll
        for (int i = 0; i < NV; i++) {
            const int d = lane + 32 * i;
            if (d < hd)
                out[(size_t)q * D + head * hd + d] = o[r][i] * inv;
        }
    }
}

extern "C" cudaError_t mk_attention(float *out, const float *qkv, int T, int H, int hd,
                                    const float *q_norm_w, const float *q_norm_b,
                                    const float *k_norm_w, const float *k_norm_b, float eps,
                                    cudaStream_t stream)
{
    if (T <= 0)
        return cudaSuccess;
    if (hd <= 0 || hd > 128 || H <= 0 || H > 65535)
        return cudaErrorInvalidValue;
    const dim3 grid((unsigned)((T + ATT_BQ - 1) / ATT_BQ), (unsigned)H);
    const float scale = 1.0f / sqrtf((float)hd);
    const int nv = (hd + 31) / 32;
    if (!q_norm_w) /* both norms or neither (ops.h) */
        k_norm_w = NULL;
    switch (nv) {
    case 1:
        MK_LAUNCH(grid, 128, 0, stream, attention_kernel<1>)(out, qkv, T, H, hd, q_norm_w, q_norm_b,
                                                      k_norm_w, k_norm_b, eps, scale);
        break;
    case 2:
        MK_LAUNCH(grid, 128, 0, stream, attention_kernel<2>)(out, qkv, T, H, hd, q_norm_w, q_norm_b,
                                                      k_norm_w, k_norm_b, eps, scale);
        break;
    case 3:
        MK_LAUNCH(grid, 128, 0, stream, attention_kernel<3>)(out, qkv, T, H, hd, q_norm_w, q_norm_b,
                                                      k_norm_w, k_norm_b, eps, scale);
        break;
    default:
        MK_LAUNCH(grid, 128, 0, stream, attention_kernel<4>)(out, qkv, T, H, hd, q_norm_w, q_norm_b,
                                                      k_norm_w, k_norm_b, eps, scale);
        break;
    }
    return cudaGetLastError();
}
