/* sampler.cu — the sampling step's own kernels: the sampler update (engine/ops.h
 * `sampler_op`), classifier-free guidance, DiT patchify/unpatchify and the timestep features,
 * so a whole step (CFG forward + guidance + update) stays on the device and can be captured
 * as one CUDA graph (docs/CUDA.md).
 *
 * The update's formulas are engine/backend/sampler_math.h's, compiled here as device functions: the
 * same text as the CPU table, in double. The step's scalars are read from row *step of the
 * coefficient table in device memory, never passed by value, so a recorded graph replays
 * from step to step unchanged. Differences from the CPU come only from the math library
 * (exp/cos/sin of the device), and from nvcc contracting products into FMAs; both far inside
 * the bf16 tolerance the tests use for a whole generation.
 */
#include "kernels.h"
#include "launch.h"
#include "reduce.cuh"

#include <cuda_runtime.h>
#include <math.h>

#define MOIRE_SAMPLER_FN static __device__ inline
#include "sampler_math.h"

typedef struct sampler_kernel_args {
    int op, slot, n;
    int64_t chw, out_stride;
    int learned;
    double *y, *y2, *den, *old;
    const double *src;
    double *dst;
    float *x_in, *t_in, *x0;
    const float *model_out, *noise;
    const double *coef;
    int32_t *step;
} sampler_kernel_args;

static __global__ void sampler_kernel(sampler_kernel_args a)
{
    const int64_t first = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    if (a.op == MOIRE_SAMPLER_OP_ADVANCE) {
        if (first == 0)
            *a.step += 1;
        return;
    }
    const double *c = a.coef + (int64_t)*a.step * MOIRE_SAMPLER_COEFS;
    const int64_t total = (int64_t)a.n * a.chw;
    const float *noise =
        a.noise ? a.noise + (int64_t)c[MOIRE_COEF_NOISE_ROW] * total : (const float *)0;
    for (int64_t i = first; i < total; i += stride) {
        const int64_t b = i / a.chw, j = i - b * a.chw;
        const float *out = a.model_out ? a.model_out + b * a.out_stride : (const float *)0;
        switch (a.op) {
        case MOIRE_SAMPLER_OP_MODEL_INPUT: {
            const double scale = c[a.slot ? MOIRE_COEF_IN_SCALE1 : MOIRE_COEF_IN_SCALE0];
            a.x_in[i] = (float)(scale * a.src[i]);
            if (i < a.n)
                a.t_in[i] = (float)c[a.slot ? MOIRE_COEF_TIME1 : MOIRE_COEF_TIME0];
            break;
        }
        case MOIRE_SAMPLER_OP_DENOISE:
            a.dst[i] = a.src[i] - c[a.slot ? MOIRE_COEF_LEVEL1 : MOIRE_COEF_LEVEL0] *
                                      (double)out[j];
            break;
        case MOIRE_SAMPLER_OP_DDPM: {
            double var = a.learned ? (double)out[a.chw + j] : 0.0;
            double nz = noise ? (double)noise[i] : 0.0;
            double x0;
            a.y[i] = moire_sampler_ddpm(c, a.y[i], (double)out[j], a.learned, var, nz, &x0);
            a.den[i] = x0;
            break;
        }
        case MOIRE_SAMPLER_OP_RF_EULER: {
            const double z = a.y[i], v = (double)out[j];
            a.den[i] = z - c[MOIRE_COEF_A] * v;
            a.y[i] = z - c[MOIRE_COEF_B] * v;
            break;
        }
        case MOIRE_SAMPLER_OP_EULER:
            a.y[i] += c[MOIRE_COEF_C] * (a.y[i] - a.den[i]) / c[MOIRE_COEF_A];
            break;
        case MOIRE_SAMPLER_OP_HEUN_PREDICT:
            a.y2[i] = a.y[i] + c[MOIRE_COEF_C] * (a.y[i] - a.den[i]) / c[MOIRE_COEF_A];
            break;
        case MOIRE_SAMPLER_OP_HEUN_CORRECT: {
            const double d1 = (a.y[i] - a.den[i]) / c[MOIRE_COEF_A];
            const double d2 = (a.y2[i] - a.old[i]) / c[MOIRE_COEF_B];
            a.y[i] += c[MOIRE_COEF_C] * 0.5 * (d1 + d2);
            break;
        }
        case MOIRE_SAMPLER_OP_DDIM:
            a.y[i] = moire_sampler_ddim(c, a.y[i], a.den[i], noise ? (double)noise[i] : 0.0);
            break;
        case MOIRE_SAMPLER_OP_DPMPP_2M:
            a.y[i] = moire_sampler_dpmpp_2m(c, a.y[i], a.den[i], a.old[i]);
            a.old[i] = a.den[i];
            break;
        case MOIRE_SAMPLER_OP_TO_FLOAT:
            a.x0[i] = (float)a.src[i];
            break;
        default:
            break;
        }
    }
}

extern "C" cudaError_t mk_sampler_op(int op, int slot, int n, int64_t chw, int64_t out_stride,
                                     int learned_variance, double *y, double *y2, double *den,
                                     double *old, const double *src, double *dst, float *x_in,
                                     float *t_in, float *x0, const float *model_out,
                                     const float *noise, const double *coef, int32_t *step,
                                     cudaStream_t stream)
{
    if (op < 0 || op > MOIRE_SAMPLER_OP_ADVANCE)
        return cudaErrorInvalidValue;
    sampler_kernel_args a = {op,   slot, n,    chw, out_stride, learned_variance,
                             y,    y2,   den,  old, src,        dst,
                             x_in, t_in, x0,   model_out,       noise,
                             coef, step};
    const int64_t total = op == MOIRE_SAMPLER_OP_ADVANCE ? 1 : (int64_t)n * chw;
    if (total <= 0)
        return cudaSuccess;
    MK_LAUNCH(mk_grid_for(total, 256), 256, 0, stream, sampler_kernel)(a);
    return cudaGetLastError();
}

/* ---- classifier-free guidance ---------------------------------------------------------- */

static __global__ void guidance_kernel(float *out, const float *both, int n, int64_t image,
                                       int64_t guided, float scale)
{
    const int64_t total = (int64_t)n * image;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t j = i % image;
        float o = both[i];
        if (j < guided) { /* rounded as the host loop: difference, product, sum */
            const float u = both[total + i];
            o = __fadd_rn(u, __fmul_rn(scale, __fsub_rn(o, u)));
        }
        out[i] = o;
    }
}

extern "C" cudaError_t mk_guidance_combine(float *out, const float *both, int n, int64_t image,
                                           int64_t guided, float scale, cudaStream_t stream)
{
    const int64_t total = (int64_t)n * image;
    if (total <= 0)
        return cudaSuccess;
    MK_LAUNCH(mk_grid_for(total, 256), 256, 0, stream, guidance_kernel)(out, both, n, image,
                                                                       guided, scale);
    return cudaGetLastError();
}

/* ---- DiT patches and timestep features -------------------------------------------------- */

/* One thread per element of x[n, C, h, w]; the patch element it maps to as in dit_common.c:
 * forward patches [n·T, C·p·p] (channel, row, column in the patch), inverse head
 * [n·T, p·p·C] (row, column, channel). */
static __global__ void patchify_kernel(float *dst, const float *src, int n, int C, int h, int w,
                                       int p, int inverse)
{
    const int gw = w / p, T = (h / p) * gw;
    const int64_t total = (int64_t)n * C * h * w;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total;
         e += (int64_t)gridDim.x * blockDim.x) {
        const int x = (int)(e % w), y = (int)((e / w) % h);
        const int ch = (int)((e / ((int64_t)w * h)) % C);
        const int64_t i = e / ((int64_t)w * h * C);
        const int64_t token = i * T + (int64_t)(y / p) * gw + x / p;
        const int pi = y % p, pj = x % p;
        if (inverse)
            dst[e] = src[token * p * p * C + (int64_t)(pi * p + pj) * C + ch];
        else
            dst[token * C * p * p + (int64_t)(ch * p + pi) * p + pj] = src[e];
    }
}

extern "C" cudaError_t mk_patchify(float *dst, const float *src, int n, int C, int h, int w,
                                   int p, int inverse, cudaStream_t stream)
{
    const int64_t total = (int64_t)n * C * h * w;
    if (total <= 0)
        return cudaSuccess;
    MK_LAUNCH(mk_grid_for(total, 256), 256, 0, stream, patchify_kernel)(dst, src, n, C, h, w, p,
                                                                       inverse);
    return cudaGetLastError();
}

static __global__ void timestep_kernel(float *freq, const float *t, int n, int dim)
{
    const int half = dim / 2;
    const int64_t total = (int64_t)n * half;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total;
         e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t i = e / half;
        const int j = (int)(e % half);
        const double arg = (double)t[i] * exp(-log(10000.0) * j / half);
        freq[i * dim + j] = (float)cos(arg);
        freq[i * dim + half + j] = (float)sin(arg);
    }
}

extern "C" cudaError_t mk_timestep_frequencies(float *freq, const float *t, int n, int dim,
                                               cudaStream_t stream)
{
    const int64_t total = (int64_t)n * (dim / 2);
    if (total <= 0)
        return cudaSuccess;
    MK_LAUNCH(mk_grid_for(total, 256), 256, 0, stream, timestep_kernel)(freq, t, n, dim);
    return cudaGetLastError();
}
