/* ops_cpu_image.c — the CPU backend's image ops (ops.h) for the SD-VAE and the level
 * classifier: conv2d (im2col + GEMM in bands), GroupNorm statistics and apply, nearest ×2
 * upsampling, 2×2 average pooling. Part of the reference backend (ops_cpu.c).
 */
#include "dit_layout.h"
#include "internal.h"
#include "ops.h"
#include "ops_cpu_parts.h"

#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* ---- image ops ------------------------------------------------------------------------- */

/* im2col is built in bands of output rows so its scratch stays near this many floats. */
#define CONV_COL_BUDGET ((size_t)4 << 20)

/* y[co, Ho, Wo] = w[co, K] · col[K, Ho·Wo] + b with K = ci·k·k (a 1×1 stride-1 conv is the
 * GEMM on x itself). */
moire_status ops_cpu_conv2d(const moire_ops *ops, float *y, const float *x,
                            const moire_tensor *wt, const moire_tensor *bt, int ci, int H,
                            int W, int co, int k, int stride, int pad_lo, int pad_hi)
{
    COUNT_CALL();
    const float *w = ops_cpu_host_of(wt), *b = ops_cpu_host_of(bt);
    const int Ho = (H + pad_lo + pad_hi - k) / stride + 1;
    const int Wo = (W + pad_lo + pad_hi - k) / stride + 1;
    if (Ho <= 0 || Wo <= 0)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "convolution of %dx%d with a %dx%d "
                          "kernel has no output", W, H, k, k);
    const size_t plane_in = (size_t)H * W, plane_out = (size_t)Ho * Wo;
    const int K = ci * k * k;
    if (k == 1 && stride == 1 && pad_lo == 0 && pad_hi == 0) {
        ops_cpu_gemm(ops, false, co, (int)plane_out, ci, 1.0f, w, ci, x, (int)plane_in, y,
                     (int)plane_out);
    } else {
        size_t band = CONV_COL_BUDGET / ((size_t)K * Wo);
        band = band < 1 ? 1 : (band > (size_t)Ho ? (size_t)Ho : band);
        float *col = malloc_array((size_t)K * band * Wo, sizeof(float));
        if (!col)
            return error_fail(MOIRE_ERROR_OUT_OF_MEMORY,
                              "a convolution needs %.1f MB of scratch memory; use a smaller "
                              "size",
                              (double)K * band * Wo * 4 / 1e6);
        for (int oy0 = 0; oy0 < Ho; oy0 += (int)band) {
            const int rows = Ho - oy0 < (int)band ? Ho - oy0 : (int)band;
            const size_t n = (size_t)rows * Wo;
            /* col[(c·k + ky)·k + kx][row·Wo + ox] = x[c][oy·s − pad + ky][ox·s − pad + kx] */
#pragma omp parallel for num_threads(ops->n_threads) if ((size_t)K * n > PARALLEL_MIN_WORK)
            for (int kk = 0; kk < K; kk++) {
                const int c = kk / (k * k), ky = kk / k % k, kx = kk % k;
                const float *src = x + (size_t)c * plane_in;
                float *dst = col + (size_t)kk * n;
                /* output columns whose input column is inside the image */
                int lo = 0, hi = Wo;
                while (lo < Wo && lo * stride - pad_lo + kx < 0)
                    lo++;
                while (hi > lo && (hi - 1) * stride - pad_lo + kx >= W)
                    hi--;
                for (int row = 0; row < rows; row++) {
                    const int iy = (oy0 + row) * stride - pad_lo + ky;
                    float *d = dst + (size_t)row * Wo;
                    if (iy < 0 || iy >= H) {
                        memset(d, 0, (size_t)Wo * sizeof(float));
                        continue;
                    }
                    const float *s = src + (size_t)iy * W - pad_lo + kx;
                    for (int ox = 0; ox < lo; ox++)
                        d[ox] = 0.0f;
                    if (stride == 1)
                        memcpy(d + lo, s + lo, (size_t)(hi - lo) * sizeof(float));
                    else
                        for (int ox = lo; ox < hi; ox++)
                            d[ox] = s[(size_t)ox * stride];
                    for (int ox = hi; ox < Wo; ox++)
                        d[ox] = 0.0f;
                }
            }
            ops_cpu_gemm(ops, false, co, (int)n, K, 1.0f, w, K, col, (int)n, y + (size_t)oy0 * Wo,
                         (int)plane_out);
        }
        free(col);
    }
    if (b) {
#pragma omp parallel for num_threads(ops->n_threads) if ((size_t)co * plane_out > PARALLEL_MIN_WORK)
        for (int o = 0; o < co; o++) {
            float *row = y + (size_t)o * plane_out;
            const float bias = b[o];
            for (size_t j = 0; j < plane_out; j++)
                row[j] += bias;
        }
    }
    return MOIRE_OK;
}

/* Two passes in double per group: the mean, then the squared deviations. */
moire_status ops_cpu_group_norm_stats(const moire_ops *ops, float *stats, const float *x,
                                      int C, int64_t HW, int G, float eps)
{
    COUNT_CALL();
    const int per = C / G;
#pragma omp parallel for num_threads(ops->n_threads) if ((int64_t)C * HW > PARALLEL_MIN_WORK)
    for (int g = 0; g < G; g++) {
        const float *xg = x + (size_t)g * per * HW;
        const size_t count = (size_t)per * HW;
        double sum = 0.0;
        for (size_t i = 0; i < count; i++)
            sum += xg[i];
        const double mean = sum / count;
        double sq = 0.0;
        for (size_t i = 0; i < count; i++) {
            const double d = xg[i] - mean;
            sq += d * d;
        }
        stats[2 * g] = (float)mean;
        stats[2 * g + 1] = (float)(1.0 / sqrt(sq / count + eps));
    }
    return MOIRE_OK;
}

moire_status ops_cpu_group_norm_apply(const moire_ops *ops, float *y, const float *x,
                                      const float *stats, const moire_tensor *wt,
                                      const moire_tensor *bt, int C, int64_t HW, int G,
                                      bool with_silu)
{
    COUNT_CALL();
    const float *w = ops_cpu_host_of(wt), *b = ops_cpu_host_of(bt);
    const int per = C / G;
#pragma omp parallel for num_threads(ops->n_threads) if ((int64_t)C * HW > PARALLEL_MIN_WORK)
    for (int c = 0; c < C; c++) {
        const double mean = stats[2 * (c / per)], inv = stats[2 * (c / per) + 1];
        const float a = (float)(inv * w[c]);
        const float shift = (float)(b[c] - mean * inv * w[c]);
        const float *xc = x + (size_t)c * HW;
        float *yc = y + (size_t)c * HW;
        if (with_silu)
            for (int64_t i = 0; i < HW; i++)
                yc[i] = silu(xc[i] * a + shift);
        else
            for (int64_t i = 0; i < HW; i++)
                yc[i] = xc[i] * a + shift;
    }
    return MOIRE_OK;
}

moire_status ops_cpu_upsample_nearest2x(const moire_ops *ops, float *y, const float *x,
                                        int C, int H, int W)
{
    COUNT_CALL();
    const int W2 = 2 * W;
#pragma omp parallel for num_threads(ops->n_threads) if ((int64_t)C * H * W > PARALLEL_MIN_WORK)
    for (int c = 0; c < C; c++)
        for (int yy = 0; yy < H; yy++) {
            const float *src = x + ((size_t)c * H + yy) * W;
            float *dst = y + ((size_t)c * 2 * H + 2 * yy) * W2;
            for (int xx = 0; xx < W; xx++)
                dst[2 * xx] = dst[2 * xx + 1] = src[xx];
            memcpy(dst + W2, dst, (size_t)W2 * sizeof(float));
        }
    return MOIRE_OK;
}

moire_status ops_cpu_avgpool2(const moire_ops *ops, float *y, const float *x, int C, int H,
                              int W)
{
    COUNT_CALL();
    const int Ho = H / 2, Wo = W / 2;
#pragma omp parallel for num_threads(ops->n_threads) if ((int64_t)C * H * W > PARALLEL_MIN_WORK)
    for (int c = 0; c < C; c++)
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++) {
                const float *p = x + ((size_t)c * H + 2 * oy) * W + 2 * ox;
                y[((size_t)c * Ho + oy) * Wo + ox] = 0.25f * (p[0] + p[1] + p[W] + p[W + 1]);
            }
    return MOIRE_OK;
}

