/* ops_cpu.c — the CPU reference implementation of the ops interface (ops.h), fp32. Weights
 * are the model's own host arrays (binding copies nothing); activations are host memory.
 *
 * This backend is the spec every other backend is judged against, so clarity wins over
 * speed where they conflict: reductions (LayerNorm statistics, softmax sums) accumulate in
 * double, and the MoE is computed expert by expert in a fixed order.
 *
 * Threads: one runtime only. OpenMP splits each GEMM into row (or column) blocks and OpenBLAS
 * runs single-threaded inside each block (context.c sets it to 1 thread). Letting OpenBLAS's
 * own pthread pool run next to OpenMP teams made both spin against each other: on 2 cores a
 * tiny forward took 800 ms instead of 2 ms.
 *
 * Split by job: this file holds the memory, dense transformer, elementwise and sampling-step
 * ops and the op table; ops_cpu_ecdit.c the EC-DiT ops, ops_cpu_image.c the image ops,
 * ops_cpu_common.c the GEMM and helpers they all use (ops_cpu_parts.h).
 */
#include "dit_layout.h"
#include "internal.h"
#include "ops.h"
#include "ops_cpu_parts.h"
#include "sampler_math.h"

#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif


/* ---- memory: host memory, weights by reference -------------------------------------- */

static void *cpu_mem_alloc(const moire_ops *ops, size_t bytes)
{
    (void)ops;
    void *p = malloc(bytes ? bytes : 1);
    if (!p)
        error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory (%.1f MB)", bytes / 1e6);
    return p;
}

static void cpu_mem_free(const moire_ops *ops, void *ptr)
{
    (void)ops;
    free(ptr);
}

static moire_status cpu_copy(const moire_ops *ops, void *dst, const void *src, size_t bytes)
{
    (void)ops;
    if (bytes)
        memmove(dst, src, bytes);
    return MOIRE_OK;
}

/* The CPU computes on the model's own host arrays: no copy, so binding costs nothing. Only
 * a stack of parts needs its pointer array. */
static moire_status cpu_weight_upload(const moire_ops *ops, moire_tensor *out,
                                      const float *const *parts, int count, int64_t rows,
                                      int64_t cols, moire_weight_use use)
{
    (void)ops, (void)use;
    memset(out, 0, sizeof *out);
    if (count < 1 || !parts || !parts[0])
        return MOIRE_OK; /* absent */
    out->dtype = MOIRE_DTYPE_F32;
    out->count = count;
    out->rows = rows;
    out->cols = cols;
    out->data = parts[0];
    if (count > 1) {
        const float **copy = malloc_array((size_t)count, sizeof *copy);
        if (!copy)
            return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory binding weights");
        memcpy(copy, parts, (size_t)count * sizeof *copy);
        out->parts = copy;
    }
    return MOIRE_OK;
}

static void cpu_weight_free(const moire_ops *ops, moire_tensor *t)
{
    (void)ops;
    free((void *)t->parts);
    memset(t, 0, sizeof *t);
}

/* ---- transformer ops -------------------------------------------------------------------- */

/* y[M,N] = x[M,K] · w[N,K]ᵀ + b[N] */
static moire_status cpu_linear(const moire_ops *ops, float *y, const float *x,
                               const moire_tensor *wt, const moire_tensor *bt, int M, int K,
                               int N)
{
    COUNT_CALL();
    if (M <= 0 || N <= 0)
        return MOIRE_OK;
    const float *w = ops_cpu_host_of(wt), *b = ops_cpu_host_of(bt);
    ops_cpu_gemm(ops, true, M, N, K, 1.0f, x, K, w, K, y, N);
    if (b) {
#pragma omp parallel for num_threads(ops->n_threads) if ((int64_t)M * N > PARALLEL_MIN_WORK)
        for (int m = 0; m < M; m++) {
            float *row = y + (size_t)m * N;
            for (int n = 0; n < N; n++)
                row[n] += b[n];
        }
    }
    return MOIRE_OK;
}

/* One row: (x − mean) / sqrt(var + eps), statistics in double. */
static void layernorm_row(float *y, const float *x, int D, float eps)
{
    double sum = 0.0;
    for (int d = 0; d < D; d++)
        sum += x[d];
    double mean = sum / D;
    double sq = 0.0;
    for (int d = 0; d < D; d++) {
        double c = x[d] - mean;
        sq += c * c;
    }
    double inv = 1.0 / sqrt(sq / D + (double)eps);
    for (int d = 0; d < D; d++)
        y[d] = (float)((x[d] - mean) * inv);
}

/* y[i,t,:] = LN(x[i,t,:]) · (1 + scale_i) + shift_i */
static moire_status cpu_layernorm_modulate(const moire_ops *ops, float *y, const float *x,
                                           const float *shift, const float *scale,
                                           int64_t mod_stride, int n, int T, int D, float eps)
{
    COUNT_CALL();
    const int64_t rows = (int64_t)n * T;
#pragma omp parallel for num_threads(ops->n_threads) if (rows * D > PARALLEL_MIN_WORK)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t image = r / T;
        const float *sh = shift + image * mod_stride, *sc = scale + image * mod_stride;
        float *out = y + (size_t)r * D;
        layernorm_row(out, x + (size_t)r * D, D, eps);
        for (int d = 0; d < D; d++)
            out[d] = out[d] * (1.0f + sc[d]) + sh[d];
    }
    return MOIRE_OK;
}

/* y[T,D] = LN(x) · w + b (the text encoder's LayerNorm; statistics in double). */
static moire_status cpu_layernorm_affine(const moire_ops *ops, float *y, const float *x,
                                         const moire_tensor *wt, const moire_tensor *bt, int T,
                                         int D, float eps)
{
    COUNT_CALL();
    const float *w = ops_cpu_host_of(wt), *b = ops_cpu_host_of(bt);
#pragma omp parallel for num_threads(ops->n_threads) if ((int64_t)T * D > PARALLEL_MIN_WORK)
    for (int t = 0; t < T; t++) {
        float *out = y + (size_t)t * D;
        layernorm_row(out, x + (size_t)t * D, D, eps);
        for (int d = 0; d < D; d++)
            out[d] = out[d] * w[d] + b[d];
    }
    return MOIRE_OK;
}

/* x[i,t,:] += gate_i ⊙ y[i,t,:] (gate NULL: x += y) */
static moire_status cpu_gate_residual(const moire_ops *ops, float *x, const float *y,
                                      int64_t y_stride, const float *gate, int64_t gate_stride,
                                      int n, int T, int D)
{
    COUNT_CALL();
    const int64_t rows = (int64_t)n * T;
#pragma omp parallel for num_threads(ops->n_threads) if (rows * D > PARALLEL_MIN_WORK)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t image = r / T, t = r % T;
        float *xr = x + (size_t)r * D;
        const float *yr = y + image * y_stride + t * D;
        if (gate) {
            const float *g = gate + image * gate_stride;
            for (int d = 0; d < D; d++)
                xr[d] += g[d] * yr[d];
        } else {
            for (int d = 0; d < D; d++)
                xr[d] += yr[d];
        }
    }
    return MOIRE_OK;
}

/* Per image and head: gather q, k, v into contiguous [T, hd] (LayerNormed for the qk-norm
 * layout), S = q·kᵀ/√hd as one GEMM, row softmax, o = S·v as another GEMM. The [T, T] score
 * matrix is materialised one head at a time: fine for a reference (4096 tokens → 64 MB). */
static moire_status cpu_attention(const moire_ops *ops, float *out, const float *qkv, int n,
                                  int T, int H, int hd, const moire_tensor *qnw,
                                  const moire_tensor *qnb, const moire_tensor *knw,
                                  const moire_tensor *knb, float eps)
{
    COUNT_CALL();
    const int D = H * hd;
    const float scale = 1.0f / sqrtf((float)hd);
    const float *q_norm_w = ops_cpu_host_of(qnw), *q_norm_b = ops_cpu_host_of(qnb);
    const float *k_norm_w = ops_cpu_host_of(knw), *k_norm_b = ops_cpu_host_of(knb);
    float *q = malloc_array((size_t)T * hd, sizeof(float));
    float *k = malloc_array((size_t)T * hd, sizeof(float));
    float *v = malloc_array((size_t)T * hd, sizeof(float));
    float *o = malloc_array((size_t)T * hd, sizeof(float));
    float *scores = malloc_array((size_t)T * T, sizeof(float));
    if (!q || !k || !v || !o || !scores) {
        free(q), free(k), free(v), free(o), free(scores);
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY,
                          "attention over %d tokens needs %.1f MB of scratch memory; use a "
                          "smaller size",
                          T, ((double)T * T + 4.0 * T * hd) * 4 / 1e6);
    }
    for (int image = 0; image < n; image++) {
        const float *qkv_i = qkv + (size_t)image * T * 3 * D;
        float *out_i = out + (size_t)image * T * D;
        for (int h = 0; h < H; h++) {
#pragma omp parallel for num_threads(ops->n_threads) if ((int64_t)T * hd > PARALLEL_MIN_WORK)
            for (int t = 0; t < T; t++) {
                const float *row = qkv_i + (size_t)t * 3 * D;
                float *qt = q + (size_t)t * hd, *kt = k + (size_t)t * hd;
                float *vt = v + (size_t)t * hd;
                memcpy(qt, row + h * hd, hd * sizeof(float));
                memcpy(kt, row + D + h * hd, hd * sizeof(float));
                memcpy(vt, row + 2 * D + h * hd, hd * sizeof(float));
                if (q_norm_w) {
                    layernorm_row(qt, qt, hd, eps);
                    layernorm_row(kt, kt, hd, eps);
                    for (int d = 0; d < hd; d++) {
                        qt[d] = qt[d] * q_norm_w[d] + q_norm_b[d];
                        kt[d] = kt[d] * k_norm_w[d] + k_norm_b[d];
                    }
                }
            }
            ops_cpu_gemm(ops, true, T, T, hd, scale, q, hd, k, hd, scores, T);
            ops_cpu_softmax_rows(ops, scores, T, T);
            ops_cpu_gemm(ops, false, T, hd, T, 1.0f, scores, T, v, hd, o, hd);
#pragma omp parallel for num_threads(ops->n_threads) if ((int64_t)T * hd > PARALLEL_MIN_WORK)
            for (int t = 0; t < T; t++)
                memcpy(out_i + (size_t)t * D + h * hd, o + (size_t)t * hd, hd * sizeof(float));
        }
    }
    free(q), free(k), free(v), free(o), free(scores);
    return MOIRE_OK;
}

/* logits = h·wᵀ, softmax over E, top-k by repeated selection (descending; on equal
 * probabilities the lower expert id wins, which is what a stable sort gives). */
static moire_status cpu_router_topk(const moire_ops *ops, float *logits, int32_t *top_ids,
                                    float *top_weights, const float *h, const moire_tensor *wt,
                                    int T, int D, int E, int k)
{
    COUNT_CALL();
    if (E > 1024 || k < 1 || k > E)
        return error_fail(MOIRE_ERROR_UNSUPPORTED, "router: %d experts, top-%d (up to 1024)",
                          E, k);
    ops_cpu_gemm(ops, true, T, E, D, 1.0f, h, D, ops_cpu_host_of(wt), D, logits, E);
#pragma omp parallel for num_threads(ops->n_threads) if ((int64_t)T * E > PARALLEL_MIN_WORK)
    for (int t = 0; t < T; t++) {
        const float *row = logits + (size_t)t * E;
        float probs[1024];
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
                    continue; /* already taken */
                if (best < 0 || probs[e] > probs[best])
                    best = e;
            }
            top_ids[(size_t)t * k + j] = best;
            top_weights[(size_t)t * k + j] = probs[best];
            probs[best] = -1.0f;
        }
    }
    return MOIRE_OK;
}

/* Routed experts then the shared one. Tokens are grouped per expert (in token order), each
 * expert runs as dense GEMMs on its gathered rows, and its weighted output is added back.
 * Experts are visited in id order so the summation order is fixed. */
static moire_status cpu_moe_experts(const moire_ops *ops, float *y, const float *h, int T,
                                    int D, const moire_swiglu *experts,
                                    const moire_swiglu *shared, int k, const int32_t *top_ids,
                                    const float *top_weights)
{
    COUNT_CALL();
    const int E = experts->experts;
    const int max_hidden = ops_cpu_widest(experts, shared);
    const size_t rows = (size_t)T;
    int32_t *token_of = malloc_array(rows, sizeof(int32_t));
    float *weight_of = malloc_array(rows, sizeof(float));
    float *gathered = malloc_array(rows * D, sizeof(float));
    float *expert_out = malloc_array(rows * D, sizeof(float));
    float *scratch = malloc_array(2 * rows * (size_t)max_hidden, sizeof(float));
    if (!token_of || !weight_of || !gathered || !expert_out || !scratch) {
        free(token_of), free(weight_of), free(gathered), free(expert_out), free(scratch);
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY,
                          "MoE over %d tokens needs %.1f MB of scratch memory", T,
                          (2.0 * T * D + 2.0 * T * max_hidden) * 4 / 1e6);
    }
    memset(y, 0, rows * D * sizeof(float));
    for (int e = 0; e < E; e++) {
        int m = 0;
        for (int t = 0; t < T; t++)
            for (int j = 0; j < k; j++)
                if (top_ids[(size_t)t * k + j] == e) {
                    token_of[m] = t;
                    weight_of[m] = top_weights[(size_t)t * k + j];
                    m++;
                }
        if (m == 0)
            continue;
#pragma omp parallel for num_threads(ops->n_threads) if ((int64_t)m * D > PARALLEL_MIN_WORK)
        for (int i = 0; i < m; i++)
            memcpy(gathered + (size_t)i * D, h + (size_t)token_of[i] * D, D * sizeof(float));
        ops_cpu_swiglu_rows(ops, expert_out, gathered, m, D, experts, e, scratch);
        /* A token appears at most once per expert, so rows never collide. */
#pragma omp parallel for num_threads(ops->n_threads) if ((int64_t)m * D > PARALLEL_MIN_WORK)
        for (int i = 0; i < m; i++) {
            float *dst = y + (size_t)token_of[i] * D;
            const float *src = expert_out + (size_t)i * D;
            for (int d = 0; d < D; d++)
                dst[d] += weight_of[i] * src[d];
        }
    }
    if (swiglu_present(shared)) {
        ops_cpu_swiglu_rows(ops, expert_out, h, T, D, shared, 0, scratch);
        const int64_t count = (int64_t)T * D;
#pragma omp parallel for num_threads(ops->n_threads) if (count > PARALLEL_MIN_WORK)
        for (int64_t i = 0; i < count; i++)
            y[i] += expert_out[i];
    }
    free(token_of), free(weight_of), free(gathered), free(expert_out), free(scratch);
    return MOIRE_OK;
}

/* ---- elementwise and data movement ---------------------------------------------------- */

static moire_status cpu_silu(const moire_ops *ops, float *y, const float *x, int64_t count)
{
    COUNT_CALL();
#pragma omp parallel for num_threads(ops->n_threads) if (count > PARALLEL_MIN_WORK)
    for (int64_t i = 0; i < count; i++)
        y[i] = silu(x[i]);
    return MOIRE_OK;
}

static moire_status cpu_gelu(const moire_ops *ops, float *y, const float *x, int64_t count)
{
    COUNT_CALL();
#pragma omp parallel for num_threads(ops->n_threads) if (count > PARALLEL_MIN_WORK)
    for (int64_t i = 0; i < count; i++)
        y[i] = (float)(0.5 * x[i] * (1.0 + erf(x[i] / sqrt(2.0))));
    return MOIRE_OK;
}

static moire_status cpu_relu(const moire_ops *ops, float *y, const float *x, int64_t count)
{
    COUNT_CALL();
#pragma omp parallel for num_threads(ops->n_threads) if (count > PARALLEL_MIN_WORK)
    for (int64_t i = 0; i < count; i++)
        y[i] = x[i] > 0.0f ? x[i] : 0.0f;
    return MOIRE_OK;
}

static moire_status cpu_scale(const moire_ops *ops, float *y, const float *x, float alpha,
                              int64_t count)
{
    COUNT_CALL();
#pragma omp parallel for num_threads(ops->n_threads) if (count > PARALLEL_MIN_WORK)
    for (int64_t i = 0; i < count; i++)
        y[i] = alpha * x[i];
    return MOIRE_OK;
}

static moire_status cpu_add(const moire_ops *ops, float *y, const float *a, const float *b,
                            int64_t count)
{
    COUNT_CALL();
#pragma omp parallel for num_threads(ops->n_threads) if (count > PARALLEL_MIN_WORK)
    for (int64_t i = 0; i < count; i++)
        y[i] = a[i] + b[i];
    return MOIRE_OK;
}

static moire_status cpu_gather_rows(const moire_ops *ops, float *y, const moire_tensor *table,
                                    const int32_t *ids, int rows, int D)
{
    COUNT_CALL();
    (void)ops;
    const float *t = ops_cpu_host_of(table);
    for (int r = 0; r < rows; r++) {
        if (ids[r] < 0 || ids[r] >= table->rows)
            return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                              "row %d of a table of %lld rows", ids[r], (long long)table->rows);
        memcpy(y + (size_t)r * D, t + (size_t)ids[r] * D, (size_t)D * sizeof(float));
    }
    return MOIRE_OK;
}

static moire_status cpu_masked_mean_rows(const moire_ops *ops, float *out, const float *x,
                                         const int32_t *lengths, int P, int L, int D)
{
    COUNT_CALL();
    (void)ops;
    for (int p = 0; p < P; p++) {
        const int len = lengths[p] < 1 ? 1 : (lengths[p] > L ? L : lengths[p]);
        for (int d = 0; d < D; d++) {
            double sum = 0.0;
            for (int j = 0; j < len; j++)
                sum += x[((size_t)p * L + j) * D + d];
            out[(size_t)p * D + d] = (float)(sum / len);
        }
    }
    return MOIRE_OK;
}

static moire_status cpu_transpose(const moire_ops *ops, float *y, const float *x, int rows,
                                  int cols)
{
    COUNT_CALL();
#pragma omp parallel for num_threads(ops->n_threads) if ((int64_t)rows * cols > PARALLEL_MIN_WORK)
    for (int c = 0; c < cols; c++)
        for (int r = 0; r < rows; r++)
            y[(size_t)c * rows + r] = x[(size_t)r * cols + c];
    return MOIRE_OK;
}

static moire_status cpu_copy_2d(const moire_ops *ops, float *dst, int64_t dst_ld,
                                const float *src, int64_t src_ld, int rows, int64_t cols)
{
    COUNT_CALL();
    (void)ops;
    for (int r = 0; r < rows; r++)
        memmove(dst + (size_t)r * dst_ld, src + (size_t)r * src_ld, (size_t)cols * sizeof(float));
    return MOIRE_OK;
}

/* ---- sampling step ------------------------------------------------------------------------
 * sampler.c's host loops, moved here unchanged (same expressions, double state) so the CPU
 * image stays bit-identical; the scalars come from the step's coefficient row. */

static moire_status cpu_sampler_op(const moire_ops *ops, const moire_sampler_args *a)
{
    (void)ops;
    COUNT_CALL();
    if (a->op == MOIRE_SAMPLER_OP_ADVANCE) {
        *a->step += 1;
        return MOIRE_OK;
    }
    const double *c = a->coef + (size_t)*a->step * MOIRE_SAMPLER_COEFS;
    const size_t total = (size_t)a->n * (size_t)a->chw, chw = (size_t)a->chw;
    const float *noise = a->noise ? a->noise + (size_t)c[MOIRE_COEF_NOISE_ROW] * total : NULL;
    switch (a->op) {
    case MOIRE_SAMPLER_OP_MODEL_INPUT: {
        const double scale = c[a->slot ? MOIRE_COEF_IN_SCALE1 : MOIRE_COEF_IN_SCALE0];
        const double time = c[a->slot ? MOIRE_COEF_TIME1 : MOIRE_COEF_TIME0];
        for (size_t j = 0; j < total; j++)
            a->x_in[j] = (float)(scale * a->src[j]);
        for (int b = 0; b < a->n; b++)
            a->t_in[b] = (float)time;
        return MOIRE_OK;
    }
    case MOIRE_SAMPLER_OP_DENOISE: {
        const double s = c[a->slot ? MOIRE_COEF_LEVEL1 : MOIRE_COEF_LEVEL0];
        for (int b = 0; b < a->n; b++) {
            size_t base = (size_t)b * chw;
            const float *out = a->model_out + (size_t)b * (size_t)a->out_stride;
            for (size_t j = 0; j < chw; j++)
                a->dst[base + j] = a->src[base + j] - s * (double)out[j];
        }
        return MOIRE_OK;
    }
    case MOIRE_SAMPLER_OP_DDPM:
        for (int b = 0; b < a->n; b++) {
            size_t base = (size_t)b * chw;
            const float *out = a->model_out + (size_t)b * (size_t)a->out_stride;
            for (size_t j = 0; j < chw; j++) {
                double var = a->learned_variance ? (double)out[chw + j] : 0.0;
                double nz = noise ? (double)noise[base + j] : 0.0;
                a->y[base + j] = moire_sampler_ddpm(c, a->y[base + j], (double)out[j],
                                                    a->learned_variance, var, nz,
                                                    &a->den[base + j]);
            }
        }
        return MOIRE_OK;
    case MOIRE_SAMPLER_OP_RF_EULER: {
        const double t = c[MOIRE_COEF_A], dt = c[MOIRE_COEF_B];
        for (int b = 0; b < a->n; b++) {
            size_t base = (size_t)b * chw;
            const float *out = a->model_out + (size_t)b * (size_t)a->out_stride;
            for (size_t j = 0; j < chw; j++) {
                double z = a->y[base + j], v = (double)out[j];
                a->den[base + j] = z - t * v;
                a->y[base + j] = z - dt * v;
            }
        }
        return MOIRE_OK;
    }
    case MOIRE_SAMPLER_OP_EULER: {
        const double s = c[MOIRE_COEF_A], ds = c[MOIRE_COEF_C];
        for (size_t j = 0; j < total; j++)
            a->y[j] += ds * (a->y[j] - a->den[j]) / s;
        return MOIRE_OK;
    }
    case MOIRE_SAMPLER_OP_HEUN_PREDICT: {
        const double s = c[MOIRE_COEF_A], ds = c[MOIRE_COEF_C];
        for (size_t j = 0; j < total; j++)
            a->y2[j] = a->y[j] + ds * (a->y[j] - a->den[j]) / s;
        return MOIRE_OK;
    }
    case MOIRE_SAMPLER_OP_HEUN_CORRECT: {
        const double s = c[MOIRE_COEF_A], s_next = c[MOIRE_COEF_B], ds = c[MOIRE_COEF_C];
        for (size_t j = 0; j < total; j++) {
            double d1 = (a->y[j] - a->den[j]) / s;
            double d2 = (a->y2[j] - a->old[j]) / s_next;
            a->y[j] += ds * 0.5 * (d1 + d2);
        }
        return MOIRE_OK;
    }
    case MOIRE_SAMPLER_OP_DDIM:
        for (size_t j = 0; j < total; j++)
            a->y[j] = moire_sampler_ddim(c, a->y[j], a->den[j],
                                         noise ? (double)noise[j] : 0.0);
        return MOIRE_OK;
    case MOIRE_SAMPLER_OP_DPMPP_2M:
        for (size_t j = 0; j < total; j++) {
            a->y[j] = moire_sampler_dpmpp_2m(c, a->y[j], a->den[j], a->old[j]);
            a->old[j] = a->den[j];
        }
        return MOIRE_OK;
    case MOIRE_SAMPLER_OP_TO_FLOAT:
        for (size_t j = 0; j < total; j++)
            a->x0[j] = (float)a->src[j];
        return MOIRE_OK;
    default:
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "sampler_op: unknown op %d",
                          (int)a->op);
    }
}

static moire_status cpu_guidance_combine(const moire_ops *ops, float *out, const float *both,
                                         int n, int64_t image, int64_t guided, float scale)
{
    (void)ops;
    COUNT_CALL();
    if (out != both)
        memmove(out, both, (size_t)n * (size_t)image * sizeof(float));
    for (int i = 0; i < n; i++) {
        float *o = out + (size_t)i * (size_t)image;
        const float *u = both + ((size_t)n + (size_t)i) * (size_t)image;
        for (int64_t j = 0; j < guided; j++)
            o[j] = u[j] + scale * (o[j] - u[j]);
    }
    return MOIRE_OK;
}

static moire_status cpu_patchify(const moire_ops *ops, float *dst, const float *src, int n,
                                 int C, int h, int w, int p, bool inverse)
{
    (void)ops;
    COUNT_CALL();
    if (inverse)
        dit_unpatchify(dst, src, n, C, h, w, p);
    else
        dit_patchify(dst, src, n, C, h, w, p);
    return MOIRE_OK;
}

static moire_status cpu_timestep_frequencies(const moire_ops *ops, float *freq, const float *t,
                                             int n)
{
    (void)ops;
    COUNT_CALL();
    dit_timestep_frequencies(freq, t, n);
    return MOIRE_OK;
}

/* The CPU runs work as it is issued: nothing to record, graph_end hands back no graph and
 * the caller keeps running its steps directly. */
static moire_status cpu_graph_begin(const moire_ops *ops)
{
    (void)ops;
    return MOIRE_OK;
}

static moire_status cpu_graph_end(const moire_ops *ops, moire_graph **graph)
{
    (void)ops;
    *graph = NULL;
    return MOIRE_OK;
}

static moire_status cpu_graph_launch(const moire_ops *ops, moire_graph *graph)
{
    (void)ops;
    (void)graph;
    return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                      "graph_launch: the CPU backend records no graphs (graph_end gave none)");
}

static void cpu_graph_free(const moire_ops *ops, moire_graph *graph)
{
    (void)ops;
    (void)graph;
}

static int default_thread_count(void)
{
#ifdef _OPENMP
    return omp_get_num_procs();
#else
    return 1;
#endif
}

static void cpu_destroy(moire_ops *ops)
{
    ops->backend = NULL;
}

/* Fills `ops` with the CPU backend; the table is owned by the caller (one per context). */
moire_status ops_cpu_init(moire_ops *ops, int n_threads)
{
    static const moire_ops prototype = {
        .name = "cpu",
        .mem_alloc = cpu_mem_alloc,
        .mem_free = cpu_mem_free,
        .upload = cpu_copy,
        .download = cpu_copy,
        .weight_upload = cpu_weight_upload,
        .weight_free = cpu_weight_free,
        .linear = cpu_linear,
        .layernorm_modulate = cpu_layernorm_modulate,
        .layernorm_affine = cpu_layernorm_affine,
        .gate_residual = cpu_gate_residual,
        .attention = cpu_attention,
        .cross_attention = ops_cpu_cross_attention,
        .router_topk = cpu_router_topk,
        .moe_experts = cpu_moe_experts,
        .router_expert_choice = ops_cpu_router_expert_choice,
        .moe_expert_choice = ops_cpu_moe_expert_choice,
        .swiglu = ops_cpu_swiglu,
        .silu = cpu_silu,
        .gelu = cpu_gelu,
        .relu = cpu_relu,
        .scale = cpu_scale,
        .add = cpu_add,
        .gather_rows = cpu_gather_rows,
        .masked_mean_rows = cpu_masked_mean_rows,
        .transpose = cpu_transpose,
        .copy_2d = cpu_copy_2d,
        .conv2d = ops_cpu_conv2d,
        .group_norm_stats = ops_cpu_group_norm_stats,
        .group_norm_apply = ops_cpu_group_norm_apply,
        .upsample_nearest2x = ops_cpu_upsample_nearest2x,
        .avgpool2 = ops_cpu_avgpool2,
        .sampler_op = cpu_sampler_op,
        .guidance_combine = cpu_guidance_combine,
        .patchify = cpu_patchify,
        .timestep_frequencies = cpu_timestep_frequencies,
        .graph_begin = cpu_graph_begin,
        .graph_end = cpu_graph_end,
        .graph_launch = cpu_graph_launch,
        .graph_free = cpu_graph_free,
        .destroy = cpu_destroy,
    };
    *ops = prototype;
    ops->n_threads = n_threads > 0 ? n_threads : default_thread_count();
    return MOIRE_OK;
}
