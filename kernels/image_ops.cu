/* image_ops.cu — the image kernels of the SD-VAE (engine/vae.c) and the noise-level
 * classifier (engine/classifier.c), one image [C, H, W] at a time: im2col for the
 * convolutions (the GEMM is cuBLAS's), channel bias, GroupNorm (+SiLU), nearest ×2
 * upsampling, transpose, scale/add/ReLU, 2×2 average pooling and a strided 2-D copy for
 * tiles. tests/gpu/test_cuda_kernels.c checks each against a plain C copy of the CPU code.
 *
 * GroupNorm statistics are two-pass in double (vae.c sums in double too): a group of a
 * 512² decode holds up to a million values, where an fp32 sum would drift. One block per
 * group, a fixed reduction order: the same bits every run.
 */
#include "kernels.h"
#include "launch.h"
#include "reduce.cuh"

#include <cuda_runtime.h>

/* ---- im2col ---------------------------------------------------------------------------- */

/* One thread per column element; consecutive threads write consecutive output columns. */
static __global__ void im2col_kernel(float *col, const float *x, int H, int W, int k,
                                     int stride, int pad_lo, int Wo, int oy0, int rows,
                                     int64_t count)
{
    const int64_t n = (int64_t)rows * Wo;
    MK_GRID_STRIDE(i, count) {
        const int64_t kk = i / n;
        const int64_t within = i - kk * n;
        const int row = (int)(within / Wo), ox = (int)(within - (int64_t)row * Wo);
        const int c = (int)(kk / (k * k)), ky = (int)(kk / k % k), kx = (int)(kk % k);
        const int iy = (oy0 + row) * stride - pad_lo + ky;
        const int ix = ox * stride - pad_lo + kx;
        col[i] = iy >= 0 && iy < H && ix >= 0 && ix < W ? x[((int64_t)c * H + iy) * W + ix]
                                                        : 0.0f;
    }
}

extern "C" cudaError_t mk_im2col_band(float *col, const float *x, int ci, int H, int W, int k,
                                      int stride, int pad_lo, int Wo, int oy0, int rows,
                                      cudaStream_t stream)
{
    const int64_t count = (int64_t)ci * k * k * rows * Wo;
    if (count <= 0)
        return cudaSuccess;
    if (stride <= 0)
        return cudaErrorInvalidValue;
    MK_LAUNCH(mk_grid_for(count, 256), 256, 0, stream, im2col_kernel)(col, x, H, W, k, stride,
                                                                     pad_lo, Wo, oy0, rows,
                                                                     count);
    return cudaGetLastError();
}

extern "C" cudaError_t mk_im2col(float *col, const float *x, int ci, int H, int W, int k,
                                 int stride, int pad_lo, int pad_hi, int Ho, int Wo,
                                 cudaStream_t stream)
{
    (void)pad_hi; /* it only decides Ho and Wo, which the caller passes */
    return mk_im2col_band(col, x, ci, H, W, k, stride, pad_lo, Wo, 0, Ho, stream);
}

/* ---- channel bias ---------------------------------------------------------------------- */

static __global__ void add_channel_bias_kernel(float *y, const float *b, int64_t HW,
                                               int64_t count)
{
    MK_GRID_STRIDE(i, count) y[i] += b[i / HW];
}

extern "C" cudaError_t mk_add_channel_bias(float *y, const float *b, int C, int64_t HW,
                                           cudaStream_t stream)
{
    const int64_t count = (int64_t)C * HW;
    if (C <= 0 || HW <= 0)
        return cudaSuccess;
    MK_LAUNCH(mk_grid_for(count, 256), 256, 0, stream, add_channel_bias_kernel)(y, b, HW, count);
    return cudaGetLastError();
}

/* ---- GroupNorm ------------------------------------------------------------------------- */

#define GN_THREADS 1024

/* Mean and 1/√(var + eps) of one group's count values, two-pass in double (every thread of
 * the block gets both). */
static __device__ void gn_statistics(const float *xg, int64_t count, float eps, double *scratch,
                                     double *mean_out, double *inv_out)
{
    double s = 0.0;
    for (int64_t i = threadIdx.x; i < count; i += blockDim.x)
        s += xg[i];
    const double mean = mk_block_sum(s, scratch) / (double)count;
    double sq = 0.0;
    for (int64_t i = threadIdx.x; i < count; i += blockDim.x) {
        const double d = xg[i] - mean;
        sq += d * d;
    }
    *mean_out = mean;
    *inv_out = 1.0 / sqrt(mk_block_sum(sq, scratch) / (double)count + (double)eps);
}

/* vae.c group_norm: a = inv·w[c], b = bias[c] − mean·inv·w[c] (in double, rounded to float),
 * y = x·a + b, SiLU when asked. */
static __device__ __forceinline__ void gn_coefficients(double mean, double inv, float w,
                                                       float bias, float *a, float *b)
{
    *a = (float)(inv * w);
    *b = (float)(bias - mean * inv * w);
}

static __device__ __forceinline__ float gn_finish(float v, int with_silu)
{
    return with_silu ? v / (1.0f + expf(-v)) : v;
}

/* One block per group: statistics, then the group's channels normalised in place-safe order
 * (each element is read and written by the same thread after the statistics). */
static __global__ void __launch_bounds__(GN_THREADS)
group_norm_kernel(float *y, const float *x, const float *w, const float *b, int per,
                  int64_t HW, float eps, int with_silu)
{
    __shared__ double scratch[33];
    const int g = blockIdx.x;
    const int64_t count = (int64_t)per * HW, base = (int64_t)g * count;
    double mean, inv;
    gn_statistics(x + base, count, eps, scratch, &mean, &inv);
    for (int cc = 0; cc < per; cc++) {
        const int c = g * per + cc;
        float a, bb;
        gn_coefficients(mean, inv, w[c], b[c], &a, &bb);
        const float *xc = x + (int64_t)c * HW;
        float *yc = y + (int64_t)c * HW;
        for (int64_t i = threadIdx.x; i < HW; i += blockDim.x)
            yc[i] = gn_finish(xc[i] * a + bb, with_silu);
    }
}

static __global__ void __launch_bounds__(GN_THREADS)
group_norm_stats_kernel(float *mean_inv, const float *x, int per, int64_t HW, float eps)
{
    __shared__ double scratch[33];
    const int g = blockIdx.x;
    const int64_t count = (int64_t)per * HW;
    double mean, inv;
    gn_statistics(x + (int64_t)g * count, count, eps, scratch, &mean, &inv);
    if (threadIdx.x == 0) {
        mean_inv[2 * g] = (float)mean;
        mean_inv[2 * g + 1] = (float)inv;
    }
}

static __global__ void group_norm_apply_kernel(float *y, const float *x, const float *mean_inv,
                                               const float *w, const float *b, int per,
                                               int64_t HW, int with_silu, int64_t count)
{
    MK_GRID_STRIDE(i, count) {
        const int c = (int)(i / HW), g = c / per;
        float a, bb;
        gn_coefficients(mean_inv[2 * g], mean_inv[2 * g + 1], w[c], b[c], &a, &bb);
        y[i] = gn_finish(x[i] * a + bb, with_silu);
    }
}

extern "C" cudaError_t mk_group_norm(float *y, const float *x, const float *w, const float *b,
                                     int C, int64_t HW, int G, float eps, int with_silu,
                                     cudaStream_t stream)
{
    if (C <= 0 || HW <= 0)
        return cudaSuccess;
    if (G <= 0 || C % G != 0)
        return cudaErrorInvalidValue;
    MK_LAUNCH(G, GN_THREADS, 0, stream, group_norm_kernel)(y, x, w, b, C / G, HW, eps,
                                                          with_silu);
    return cudaGetLastError();
}

extern "C" cudaError_t mk_group_norm_stats(float *mean_inv, const float *x, int C, int64_t HW,
                                           int G, float eps, cudaStream_t stream)
{
    if (C <= 0 || HW <= 0)
        return cudaSuccess;
    if (G <= 0 || C % G != 0)
        return cudaErrorInvalidValue;
    MK_LAUNCH(G, GN_THREADS, 0, stream, group_norm_stats_kernel)(mean_inv, x, C / G, HW, eps);
    return cudaGetLastError();
}

extern "C" cudaError_t mk_group_norm_apply(float *y, const float *x, const float *mean_inv,
                                           const float *w, const float *b, int C, int64_t HW,
                                           int G, int with_silu, cudaStream_t stream)
{
    const int64_t count = (int64_t)C * HW;
    if (C <= 0 || HW <= 0)
        return cudaSuccess;
    if (G <= 0 || C % G != 0)
        return cudaErrorInvalidValue;
    MK_LAUNCH(mk_grid_for(count, 256), 256, 0, stream, group_norm_apply_kernel)(
        y, x, mean_inv, w, b, C / G, HW, with_silu, count);
    return cudaGetLastError();
}

/* ---- resampling ------------------------------------------------------------------------ */

static __global__ void upsample_nearest2x_kernel(float *y, const float *x, int H, int W,
                                                 int64_t count)
{
    const int W2 = 2 * W;
    const int64_t plane2 = (int64_t)4 * H * W;
    MK_GRID_STRIDE(i, count) {
        const int64_t c = i / plane2, within = i - c * plane2;
        const int oy = (int)(within / W2), ox = (int)(within - (int64_t)oy * W2);
        y[i] = x[(c * H + oy / 2) * W + ox / 2];
    }
}

extern "C" cudaError_t mk_upsample_nearest2x(float *y, const float *x, int C, int H, int W,
                                             cudaStream_t stream)
{
    const int64_t count = (int64_t)C * 4 * H * W;
    if (C <= 0 || H <= 0 || W <= 0)
        return cudaSuccess;
    MK_LAUNCH(mk_grid_for(count, 256), 256, 0, stream, upsample_nearest2x_kernel)(y, x, H, W,
                                                                                 count);
    return cudaGetLastError();
}

static __global__ void avgpool2_kernel(float *y, const float *x, int H, int W, int64_t count)
{
    const int Ho = H / 2, Wo = W / 2;
    const int64_t plane = (int64_t)Ho * Wo;
    MK_GRID_STRIDE(i, count) {
        const int64_t c = i / plane, within = i - c * plane;
        const int oy = (int)(within / Wo), ox = (int)(within - (int64_t)oy * Wo);
        const float *p = x + (c * H + 2 * oy) * W + 2 * ox;
        y[i] = 0.25f * ((p[0] + p[1]) + (p[W] + p[W + 1]));
    }
}

extern "C" cudaError_t mk_avgpool2(float *y, const float *x, int C, int H, int W,
                                   cudaStream_t stream)
{
    const int64_t count = (int64_t)C * (H / 2) * (W / 2);
    if (count <= 0)
        return cudaSuccess;
    MK_LAUNCH(mk_grid_for(count, 256), 256, 0, stream, avgpool2_kernel)(y, x, H, W, count);
    return cudaGetLastError();
}

/* ---- transpose and copies -------------------------------------------------------------- */

#define TR_TILE 32
#define TR_ROWS 8

/* 32×32 tiles through shared memory (padded against bank conflicts): reads and writes both
 * coalesced. Blocks of 32×8 threads, each thread moves 4 elements; grid.y strides over the
 * row tiles past 65535. */
static __global__ void transpose_kernel(float *y, const float *x, int rows, int cols)
{
    __shared__ float tile[TR_TILE][TR_TILE + 1];
    const int c0 = blockIdx.x * TR_TILE;
    for (int64_t r0 = (int64_t)blockIdx.y * TR_TILE; r0 < rows;
         r0 += (int64_t)gridDim.y * TR_TILE) {
        __syncthreads(); /* the previous tile is written out */
        for (int j = threadIdx.y; j < TR_TILE; j += TR_ROWS) {
            const int64_t r = r0 + j;
            const int c = c0 + threadIdx.x;
            if (r < rows && c < cols)
                tile[j][threadIdx.x] = x[r * cols + c];
        }
        __syncthreads();
        for (int j = threadIdx.y; j < TR_TILE; j += TR_ROWS) {
            const int c = c0 + j;
            const int64_t r = r0 + threadIdx.x;
            if (r < rows && c < cols)
                y[(int64_t)c * rows + r] = tile[threadIdx.x][j];
        }
    }
}

extern "C" cudaError_t mk_transpose(float *y, const float *x, int rows, int cols,
                                    cudaStream_t stream)
{
    if (rows <= 0 || cols <= 0)
        return cudaSuccess;
    const int64_t row_tiles = ((int64_t)rows + TR_TILE - 1) / TR_TILE;
    const dim3 grid((unsigned)((cols + TR_TILE - 1) / TR_TILE),
                    (unsigned)(row_tiles > 65535 ? 65535 : row_tiles));
    MK_LAUNCH(grid, dim3(TR_TILE, TR_ROWS), 0, stream, transpose_kernel)(y, x, rows, cols);
    return cudaGetLastError();
}

static __global__ void copy_2d_kernel(float *dst, int64_t dst_ld, const float *src,
                                      int64_t src_ld, int64_t cols, int64_t count)
{
    MK_GRID_STRIDE(i, count) {
        const int64_t r = i / cols, c = i - r * cols;
        dst[r * dst_ld + c] = src[r * src_ld + c];
    }
}

extern "C" cudaError_t mk_copy_2d(float *dst, int64_t dst_ld, const float *src, int64_t src_ld,
                                  int rows, int64_t cols, cudaStream_t stream)
{
    const int64_t count = (int64_t)rows * cols;
    if (rows <= 0 || cols <= 0)
        return cudaSuccess;
    MK_LAUNCH(mk_grid_for(count, 256), 256, 0, stream, copy_2d_kernel)(dst, dst_ld, src, src_ld,
                                                                      cols, count);
    return cudaGetLastError();
}

/* ---- element-wise ---------------------------------------------------------------------- */

static __global__ void scale_kernel(float *y, const float *x, float alpha, int64_t count)
{
    MK_GRID_STRIDE(i, count) y[i] = alpha * x[i];
}

static __global__ void add_kernel(float *y, const float *a, const float *b, int64_t count)
{
    MK_GRID_STRIDE(i, count) y[i] = a[i] + b[i];
}

static __global__ void relu_kernel(float *y, const float *x, int64_t count)
{
    MK_GRID_STRIDE(i, count) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

extern "C" cudaError_t mk_scale(float *y, const float *x, float alpha, int64_t count,
                                cudaStream_t stream)
{
    if (count <= 0)
        return cudaSuccess;
    MK_LAUNCH(mk_grid_for(count, 256), 256, 0, stream, scale_kernel)(y, x, alpha, count);
    return cudaGetLastError();
}

extern "C" cudaError_t mk_add(float *y, const float *a, const float *b, int64_t count,
                              cudaStream_t stream)
{
    if (count <= 0)
        return cudaSuccess;
    MK_LAUNCH(mk_grid_for(count, 256), 256, 0, stream, add_kernel)(y, a, b, count);
    return cudaGetLastError();
}

extern "C" cudaError_t mk_relu(float *y, const float *x, int64_t count, cudaStream_t stream)
{
    if (count <= 0)
        return cudaSuccess;
    MK_LAUNCH(mk_grid_for(count, 256), 256, 0, stream, relu_kernel)(y, x, count);
    return cudaGetLastError();
}
