/* reduce.cuh — warp and block reductions with a fixed summation order (shuffle butterflies,
 * then one warp over the per-warp results), so every kernel built on them gives the same
 * bits run to run: no atomics anywhere. Templated on the type (float for LayerNorm
 * statistics, double for GroupNorm's). Included by the .cu files; all static. */
#ifndef MOIRE_KERNELS_REDUCE_CUH
#define MOIRE_KERNELS_REDUCE_CUH

#include <cuda_runtime.h>

#define MK_FULL_MASK 0xffffffffu

/* Every lane gets the same sum (a + b = b + a, so the butterfly halves agree). */
template <typename T> static __device__ __forceinline__ T mk_warp_sum(T v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(MK_FULL_MASK, v, o);
    return v;
}

/* Sum over the block (blockDim.x a multiple of 32, ≤ 1024); `scratch` holds 33 values.
 * Every thread gets the result. Safe to call repeatedly with the same scratch. */
template <typename T> static __device__ T mk_block_sum(T v, T *scratch)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int warps = (blockDim.x + 31) >> 5;
    v = mk_warp_sum(v);
    __syncthreads(); /* the previous call's readers are done with scratch */
    if (lane == 0)
        scratch[warp] = v;
    __syncthreads();
    if (warp == 0) {
        T s = lane < warps ? scratch[lane] : (T)0;
        s = mk_warp_sum(s);
        if (lane == 0)
            scratch[32] = s;
    }
    __syncthreads();
    return scratch[32];
}

/* LayerNorm statistics of one row xr[D], computed by the whole block, two-pass (the mean,
 * then the squared deviations): *mean and *inv = 1/√(var + eps), the same in every thread.
 * `scratch` as for mk_block_sum. */
static __device__ inline void mk_row_stats(const float *xr, int D, float eps, float *scratch,
                                    float *mean, float *inv)
{
    float s = 0.0f;
    for (int d = threadIdx.x; d < D; d += blockDim.x)
        s += xr[d];
    const float m = mk_block_sum(s, scratch) / D;
    float sq = 0.0f;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        const float c = xr[d] - m;
        sq += c * c;
    }
    *mean = m;
    *inv = 1.0f / sqrtf(mk_block_sum(sq, scratch) / D + eps);
}

/* A grid-stride loop's grid: enough blocks of `threads` for count elements, at most
 * 8·65535 (the loop covers the rest). */
static inline unsigned mk_grid_for(int64_t count, int threads)
{
    int64_t blocks = (count + threads - 1) / threads;
    if (blocks > 65535 * 8)
        blocks = 65535 * 8;
    return (unsigned)(blocks > 0 ? blocks : 1);
}

#define MK_GRID_STRIDE(i, count)                                                           \
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (count);          \
         i += (int64_t)gridDim.x * blockDim.x)

#endif /* MOIRE_KERNELS_REDUCE_CUH */
