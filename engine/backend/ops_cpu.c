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
 */
#include "dit_layout.h"
#include "internal.h"
#include "ops.h"
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

/* Below this many elements a loop runs on the calling thread: a parallel region costs
 * microseconds even when idle threads are ready, far more when they have to be woken. */
#define PARALLEL_MIN_WORK 32768

static float silu(float x)
{
    return x / (1.0f + expf(-x));
}

/* C[M,N] = alpha · A[M,K] · op(B), op(B) = Bᵀ for B [N,K] (b_transposed) or B for B [K,N].
 * Split across the op table's threads by rows of C, or by columns when M is too small to
 * split. Each element's K-reduction is done by one single-threaded sgemm, so for a given
 * thread count results are deterministic. */
static void gemm(const moire_ops *ops, bool b_transposed, int M, int N, int K, float alpha,
                 const float *A, int lda, const float *B, int ldb, float *C, int ldc)
{
    const CBLAS_TRANSPOSE tb = b_transposed ? CblasTrans : CblasNoTrans;
    const int threads = ops->n_threads;
    if (threads <= 1 || 2.0 * M * N * K < 4e6) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, tb, M, N, K, alpha, A, lda, B, ldb, 0.0f, C,
                    ldc);
        return;
    }
    if (M >= 8 * threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int part = 0; part < threads; part++) {
            const int m0 = (int)((int64_t)M * part / threads);
            const int m1 = (int)((int64_t)M * (part + 1) / threads);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, tb, m1 - m0, N, K, alpha,
                        A + (size_t)m0 * lda, lda, B, ldb, 0.0f, C + (size_t)m0 * ldc, ldc);
        }
    } else {
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int part = 0; part < threads; part++) {
            const int n0 = (int)((int64_t)N * part / threads);
            const int n1 = (int)((int64_t)N * (part + 1) / threads);
            const float *b_part = b_transposed ? B + (size_t)n0 * ldb : B + n0;
            if (n1 > n0)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, tb, M, n1 - n0, K, alpha, A, lda,
                            b_part, ldb, 0.0f, C + n0, ldc);
        }
    }
}

void ops_cpu_gemm(const moire_ops *ops, bool b_transposed, int M, int N, int K, float alpha,
                  const float *A, int lda, const float *B, int ldb, float *C, int ldc)
{
    gemm(ops, b_transposed, M, N, K, alpha, A, lda, B, ldb, C, ldc);
}

/* Every op entry counts itself (moire_ops_cpu_calls): a model run on another backend must not
 * move this counter, which is how the tests prove that nothing fell back to the host. */
static atomic_uint_fast64_t cpu_calls;

uint64_t moire_ops_cpu_calls(void)
{
    return (uint64_t)atomic_load(&cpu_calls);
}

#define COUNT_CALL() atomic_fetch_add_explicit(&cpu_calls, 1, memory_order_relaxed)

static const float *host_of(const moire_tensor *t)
{
    return moire_tensor_present(t) ? (const float *)t->data : NULL;
}

/* ---- memory: host memory, weights by reference -------------------------------------- */

static void *cpu_mem_alloc(const moire_ops *ops, size_t bytes)
{
    (void)ops;
    void *p = malloc(bytes ? bytes : 1);
    if (!p)
        moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory (%.1f MB)", bytes / 1e6);
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
        const float **copy = moire_malloc_array((size_t)count, sizeof *copy);
        if (!copy)
            return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory binding weights");
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
    const float *w = host_of(wt), *b = host_of(bt);
    gemm(ops, true, M, N, K, 1.0f, x, K, w, K, y, N);
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
    const float *w = host_of(wt), *b = host_of(bt);
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

/* Each of the `rows` rows of scores[rows, cols] becomes its softmax, in place: the row's
 * maximum subtracted before exp (no overflow), the sum in double. The attention ops' middle
 * step; parallel over rows when the work is large. */
static void softmax_rows(const moire_ops *ops, float *scores, int rows, int cols)
{
#pragma omp parallel for num_threads(ops->n_threads) if ((int64_t)rows * cols > PARALLEL_MIN_WORK)
    for (int t = 0; t < rows; t++) {
        float *row = scores + (size_t)t * cols;
        float max = -FLT_MAX;
        for (int j = 0; j < cols; j++)
            max = fmaxf(max, row[j]);
        double sum = 0.0;
        for (int j = 0; j < cols; j++) {
            row[j] = expf(row[j] - max);
            sum += row[j];
        }
        float inv = (float)(1.0 / sum);
        for (int j = 0; j < cols; j++)
            row[j] *= inv;
    }
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
    const float *q_norm_w = host_of(qnw), *q_norm_b = host_of(qnb);
    const float *k_norm_w = host_of(knw), *k_norm_b = host_of(knb);
    float *q = moire_malloc_array((size_t)T * hd, sizeof(float));
    float *k = moire_malloc_array((size_t)T * hd, sizeof(float));
    float *v = moire_malloc_array((size_t)T * hd, sizeof(float));
    float *o = moire_malloc_array((size_t)T * hd, sizeof(float));
    float *scores = moire_malloc_array((size_t)T * T, sizeof(float));
    if (!q || !k || !v || !o || !scores) {
        free(q), free(k), free(v), free(o), free(scores);
        return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY,
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
            gemm(ops, true, T, T, hd, scale, q, hd, k, hd, scores, T);
            softmax_rows(ops, scores, T, T);
            gemm(ops, false, T, hd, T, 1.0f, scores, T, v, hd, o, hd);
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
        return moire_fail(MOIRE_ERROR_UNSUPPORTED, "router: %d experts, top-%d (up to 1024)",
                          E, k);
    gemm(ops, true, T, E, D, 1.0f, h, D, host_of(wt), D, logits, E);
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

/* Expert e of a stack on m gathered rows: out[m,D] = down(SiLU(gate(x)) ⊙ up(x)).
 * scratch holds 2·m·F floats. */
static void swiglu_rows(const moire_ops *ops, float *out, const float *x, int m, int D,
                        const moire_swiglu *mlp, int e, float *scratch)
{
    const int F = mlp->hidden;
    float *gate = scratch, *up = scratch + (size_t)m * F;
    gemm(ops, true, m, F, D, 1.0f, x, D, moire_tensor_part(&mlp->gate_up, 2 * e), D, gate, F);
    gemm(ops, true, m, F, D, 1.0f, x, D, moire_tensor_part(&mlp->gate_up, 2 * e + 1), D, up, F);
    const int64_t count = (int64_t)m * F;
#pragma omp parallel for num_threads(ops->n_threads) if (count > PARALLEL_MIN_WORK)
    for (int64_t i = 0; i < count; i++)
        gate[i] = silu(gate[i]) * up[i];
    gemm(ops, true, m, D, F, 1.0f, gate, F, moire_tensor_part(&mlp->down, e), F, out, D);
}

static int widest(const moire_swiglu *a, const moire_swiglu *b)
{
    const int wa = moire_swiglu_present(a) ? a->hidden : 0;
    const int wb = moire_swiglu_present(b) ? b->hidden : 0;
    return wa > wb ? wa : wb;
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
    const int max_hidden = widest(experts, shared);
    const size_t rows = (size_t)T;
    int32_t *token_of = moire_malloc_array(rows, sizeof(int32_t));
    float *weight_of = moire_malloc_array(rows, sizeof(float));
    float *gathered = moire_malloc_array(rows * D, sizeof(float));
    float *expert_out = moire_malloc_array(rows * D, sizeof(float));
    float *scratch = moire_malloc_array(2 * rows * (size_t)max_hidden, sizeof(float));
    if (!token_of || !weight_of || !gathered || !expert_out || !scratch) {
        free(token_of), free(weight_of), free(gathered), free(expert_out), free(scratch);
        return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY,
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
        swiglu_rows(ops, expert_out, gathered, m, D, experts, e, scratch);
        /* A token appears at most once per expert, so rows never collide. */
#pragma omp parallel for num_threads(ops->n_threads) if ((int64_t)m * D > PARALLEL_MIN_WORK)
        for (int i = 0; i < m; i++) {
            float *dst = y + (size_t)token_of[i] * D;
            const float *src = expert_out + (size_t)i * D;
            for (int d = 0; d < D; d++)
                dst[d] += weight_of[i] * src[d];
        }
    }
    if (moire_swiglu_present(shared)) {
        swiglu_rows(ops, expert_out, h, T, D, shared, 0, scratch);
        const int64_t count = (int64_t)T * D;
#pragma omp parallel for num_threads(ops->n_threads) if (count > PARALLEL_MIN_WORK)
        for (int64_t i = 0; i < count; i++)
            y[i] += expert_out[i];
    }
    free(token_of), free(weight_of), free(gathered), free(expert_out), free(scratch);
    return MOIRE_OK;
}

/* ---- EC-DiT ops ------------------------------------------------------------------------ */

/* Attention of Tq query rows over the first Tk key rows, one head at a time, like
 * cpu_attention but with separate (strided) q, k and v and no qk-norm. The scores are formed
 * CROSS_ROWS query rows at a time, so the VAE's attention over 16384 positions needs 64 MB,
 * not 1 GB. */
#define CROSS_ROWS 1024
static moire_status cpu_cross_attention(const moire_ops *ops, float *out, const float *q,
                                        int ldq, const float *k, const float *v, int ldkv,
                                        int Tq, int Tk, int H, int hd)
{
    COUNT_CALL();
    const int D = H * hd;
    const float scale = 1.0f / sqrtf((float)hd);
    if (Tq <= 0)
        return MOIRE_OK;
    if (Tk <= 0)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "attention over no keys");
    const int rows_max = Tq < CROSS_ROWS ? Tq : CROSS_ROWS;
    float *qh = moire_malloc_array((size_t)rows_max * hd, sizeof(float));
    float *kh = moire_malloc_array((size_t)Tk * hd, sizeof(float));
    float *vh = moire_malloc_array((size_t)Tk * hd, sizeof(float));
    float *oh = moire_malloc_array((size_t)rows_max * hd, sizeof(float));
    float *scores = moire_malloc_array((size_t)rows_max * Tk, sizeof(float));
    if (!qh || !kh || !vh || !oh || !scores) {
        free(qh), free(kh), free(vh), free(oh), free(scores);
        return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY,
                          "attention of %d over %d tokens needs %.1f MB of scratch memory; use "
                          "a smaller size",
                          Tq, Tk, ((double)rows_max * Tk + 2.0 * (rows_max + Tk) * hd) * 4 / 1e6);
    }
    for (int h = 0; h < H; h++) {
#pragma omp parallel for num_threads(ops->n_threads) if ((int64_t)Tk * hd > PARALLEL_MIN_WORK)
        for (int t = 0; t < Tk; t++) {
            memcpy(kh + (size_t)t * hd, k + (size_t)t * ldkv + h * hd, hd * sizeof(float));
            memcpy(vh + (size_t)t * hd, v + (size_t)t * ldkv + h * hd, hd * sizeof(float));
        }
        for (int t0 = 0; t0 < Tq; t0 += rows_max) {
            const int rows = Tq - t0 < rows_max ? Tq - t0 : rows_max;
            for (int t = 0; t < rows; t++)
                memcpy(qh + (size_t)t * hd, q + (size_t)(t0 + t) * ldq + h * hd,
                       hd * sizeof(float));
            gemm(ops, true, rows, Tk, hd, scale, qh, hd, kh, hd, scores, Tk);
            softmax_rows(ops, scores, rows, Tk);
            gemm(ops, false, rows, hd, Tk, 1.0f, scores, Tk, vh, hd, oh, hd);
            for (int t = 0; t < rows; t++)
                memcpy(out + (size_t)(t0 + t) * D + h * hd, oh + (size_t)t * hd,
                       hd * sizeof(float));
        }
    }
    free(qh), free(kh), free(vh), free(oh), free(scores);
    return MOIRE_OK;
}

typedef struct ec_candidate {
    float score;
    int32_t token;
} ec_candidate;

/* Descending score, then ascending token: the documented tie rule, and a total order, so
 * qsort's instability cannot show. */
static int compare_candidates(const void *a, const void *b)
{
    const ec_candidate *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return (x->token > y->token) - (x->token < y->token);
}

/* 1. scores per token (double dot products and softmax, parallel over tokens);
 * 2. per (group, expert) pair: sort the group's tokens by the expert's score, keep the top C.
 *    This is the synchronisation point of expert choice: a whole group's scores are needed
 *    before any expert can start. */
static moire_status cpu_router_expert_choice(const moire_ops *ops, float *scores,
                                             int32_t *tokens, float *gates, const float *h,
                                             const moire_tensor *wt, int n, int T, int group,
                                             int D, int E, float capacity_factor)
{
    COUNT_CALL();
    if (E < 1 || E > 1024)
        return moire_fail(MOIRE_ERROR_UNSUPPORTED, "expert choice: %d experts (up to 1024)",
                          E);
    const float *w = host_of(wt);
    const int64_t N = (int64_t)n * T;
#pragma omp parallel for num_threads(ops->n_threads) if (N * E * D > PARALLEL_MIN_WORK)
    for (int64_t t = 0; t < N; t++) {
        const float *row = h + t * D;
        double logits[1024];
        double max = -DBL_MAX;
        for (int e = 0; e < E; e++) {
            const float *we = w + (size_t)e * D;
            double acc = 0.0;
            for (int d = 0; d < D; d++)
                acc += (double)row[d] * we[d];
            logits[e] = acc;
            max = acc > max ? acc : max;
        }
        double sum = 0.0;
        for (int e = 0; e < E; e++) {
            logits[e] = exp(logits[e] - max);
            sum += logits[e];
        }
        for (int e = 0; e < E; e++)
            scores[t * E + e] = (float)(logits[e] / sum);
    }

    const int G = moire_ec_group_size(T, group);
    const int groups_per_image = (T + G - 1) / G;
    const int slots = moire_ec_slots_per_image(T, group, E, capacity_factor);
    const int64_t M = (int64_t)n * slots;
    const int64_t pairs = (int64_t)n * groups_per_image * E;
    int failed = 0;
#pragma omp parallel for num_threads(ops->n_threads) schedule(dynamic, 1) \
    if (N * E > PARALLEL_MIN_WORK / 8)
    for (int64_t pair = 0; pair < pairs; pair++) {
        const int e = (int)(pair % E);
        const int64_t g = pair / E;
        const int image = (int)(g / groups_per_image), j = (int)(g % groups_per_image);
        const int start = j * G, S = T - start < G ? T - start : G;
        const int C = moire_ec_capacity(S, E, capacity_factor);
        int offset = image * slots; /* slots of the earlier groups of this image */
        for (int jj = 0; jj < j; jj++)
            offset += moire_ec_capacity(G, E, capacity_factor);
        ec_candidate *cand = moire_malloc_array((size_t)S, sizeof *cand);
        if (!cand) {
#pragma omp atomic write
            failed = 1;
            continue;
        }
        const int64_t first = (int64_t)image * T + start;
        for (int s = 0; s < S; s++) {
            cand[s].score = scores[(first + s) * E + e];
            cand[s].token = (int32_t)(first + s);
        }
        qsort(cand, (size_t)S, sizeof *cand, compare_candidates);
        for (int c = 0; c < C; c++) {
            tokens[e * M + offset + c] = cand[c].token;
            gates[e * M + offset + c] = cand[c].score;
        }
        free(cand);
    }
    if (failed)
        return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory selecting expert tokens");
    return MOIRE_OK;
}

/* Expert by expert in id order (a fixed summation order): gather the expert's M tokens, one
 * dense SwiGLU on them, weighted scatter-add back. Every expert has exactly M rows, the
 * static shape that makes expert choice friendly to batched GEMMs. */
static moire_status cpu_moe_expert_choice(const moire_ops *ops, float *y, const float *h,
                                          int N, int D, const moire_swiglu *experts,
                                          const moire_swiglu *shared, int M,
                                          const int32_t *tokens, const float *gates)
{
    COUNT_CALL();
    const int E = experts->experts;
    const int max_hidden = widest(experts, shared);
    const size_t rows = (size_t)(M > N ? M : N);
    float *gathered = moire_malloc_array((size_t)M * D + 1, sizeof(float));
    float *expert_out = moire_malloc_array(rows * D + 1, sizeof(float));
    float *scratch = moire_malloc_array(2 * rows * (size_t)max_hidden + 1, sizeof(float));
    if (!gathered || !expert_out || !scratch) {
        free(gathered), free(expert_out), free(scratch);
        return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY,
                          "expert-choice MoE over %d tokens needs %.1f MB of scratch memory", N,
                          ((double)M * D + rows * D + 2.0 * rows * max_hidden) * 4 / 1e6);
    }
    memset(y, 0, (size_t)N * D * sizeof(float));
    for (int e = 0; e < E && M > 0; e++) {
        const int32_t *tok = tokens + (size_t)e * M;
        const float *gate = gates + (size_t)e * M;
#pragma omp parallel for num_threads(ops->n_threads) if ((int64_t)M * D > PARALLEL_MIN_WORK)
        for (int i = 0; i < M; i++)
            memcpy(gathered + (size_t)i * D, h + (size_t)tok[i] * D, D * sizeof(float));
        swiglu_rows(ops, expert_out, gathered, M, D, experts, e, scratch);
#pragma omp parallel for num_threads(ops->n_threads) if ((int64_t)M * D > PARALLEL_MIN_WORK)
        for (int i = 0; i < M; i++) {
            float *dst = y + (size_t)tok[i] * D;
            const float *src = expert_out + (size_t)i * D;
            for (int d = 0; d < D; d++)
                dst[d] += gate[i] * src[d];
        }
    }
    if (moire_swiglu_present(shared)) {
        swiglu_rows(ops, expert_out, h, N, D, shared, 0, scratch);
        const int64_t count = (int64_t)N * D;
#pragma omp parallel for num_threads(ops->n_threads) if (count > PARALLEL_MIN_WORK)
        for (int64_t i = 0; i < count; i++)
            y[i] += expert_out[i];
    }
    free(gathered), free(expert_out), free(scratch);
    return MOIRE_OK;
}

static moire_status cpu_swiglu(const moire_ops *ops, float *y, const float *h, int T, int D,
                               const moire_swiglu *mlp)
{
    COUNT_CALL();
    float *scratch = moire_malloc_array(2 * (size_t)T * mlp->hidden + 1, sizeof(float));
    if (!scratch)
        return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY,
                          "an MLP over %d tokens needs %.1f MB of scratch memory", T,
                          2.0 * T * mlp->hidden * 4 / 1e6);
    swiglu_rows(ops, y, h, T, D, mlp, 0, scratch);
    free(scratch);
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
    const float *t = host_of(table);
    for (int r = 0; r < rows; r++) {
        if (ids[r] < 0 || ids[r] >= table->rows)
            return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
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

/* ---- image ops ------------------------------------------------------------------------- */

/* im2col is built in bands of output rows so its scratch stays near this many floats. */
#define CONV_COL_BUDGET ((size_t)4 << 20)

/* y[co, Ho, Wo] = w[co, K] · col[K, Ho·Wo] + b with K = ci·k·k (a 1×1 stride-1 conv is the
 * GEMM on x itself). */
static moire_status cpu_conv2d(const moire_ops *ops, float *y, const float *x,
                               const moire_tensor *wt, const moire_tensor *bt, int ci, int H,
                               int W, int co, int k, int stride, int pad_lo, int pad_hi)
{
    COUNT_CALL();
    const float *w = host_of(wt), *b = host_of(bt);
    const int Ho = (H + pad_lo + pad_hi - k) / stride + 1;
    const int Wo = (W + pad_lo + pad_hi - k) / stride + 1;
    if (Ho <= 0 || Wo <= 0)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "convolution of %dx%d with a %dx%d "
                          "kernel has no output", W, H, k, k);
    const size_t plane_in = (size_t)H * W, plane_out = (size_t)Ho * Wo;
    const int K = ci * k * k;
    if (k == 1 && stride == 1 && pad_lo == 0 && pad_hi == 0) {
        gemm(ops, false, co, (int)plane_out, ci, 1.0f, w, ci, x, (int)plane_in, y,
             (int)plane_out);
    } else {
        size_t band = CONV_COL_BUDGET / ((size_t)K * Wo);
        band = band < 1 ? 1 : (band > (size_t)Ho ? (size_t)Ho : band);
        float *col = moire_malloc_array((size_t)K * band * Wo, sizeof(float));
        if (!col)
            return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY,
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
            gemm(ops, false, co, (int)n, K, 1.0f, w, K, col, (int)n, y + (size_t)oy0 * Wo,
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
static moire_status cpu_group_norm_stats(const moire_ops *ops, float *stats, const float *x,
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

static moire_status cpu_group_norm_apply(const moire_ops *ops, float *y, const float *x,
                                         const float *stats, const moire_tensor *wt,
                                         const moire_tensor *bt, int C, int64_t HW, int G,
                                         bool with_silu)
{
    COUNT_CALL();
    const float *w = host_of(wt), *b = host_of(bt);
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

static moire_status cpu_upsample_nearest2x(const moire_ops *ops, float *y, const float *x,
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

static moire_status cpu_avgpool2(const moire_ops *ops, float *y, const float *x, int C, int H,
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
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "sampler_op: unknown op %d",
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
    return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
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
moire_status moire_ops_cpu_init(moire_ops *ops, int n_threads)
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
        .cross_attention = cpu_cross_attention,
        .router_topk = cpu_router_topk,
        .moe_experts = cpu_moe_experts,
        .router_expert_choice = cpu_router_expert_choice,
        .moe_expert_choice = cpu_moe_expert_choice,
        .swiglu = cpu_swiglu,
        .silu = cpu_silu,
        .gelu = cpu_gelu,
        .relu = cpu_relu,
        .scale = cpu_scale,
        .add = cpu_add,
        .gather_rows = cpu_gather_rows,
        .masked_mean_rows = cpu_masked_mean_rows,
        .transpose = cpu_transpose,
        .copy_2d = cpu_copy_2d,
        .conv2d = cpu_conv2d,
        .group_norm_stats = cpu_group_norm_stats,
        .group_norm_apply = cpu_group_norm_apply,
        .upsample_nearest2x = cpu_upsample_nearest2x,
        .avgpool2 = cpu_avgpool2,
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
