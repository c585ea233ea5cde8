/* ops_cuda.c — the CUDA backend's op table (engine/ops.h): device memory, weights, pinned
 * staging, cuBLASLt GEMMs and the launches of the kernels in the .cu files here.
 * Design and plans: docs/CUDA.md. Every op of the table is implemented on the device; there
 * is no host fallback and no guessing where a pointer lives (ops.h says where each one is).
 *
 * Memory, and why a warmed-up forward allocates nothing and waits for nothing:
 *  - Weights: weight_upload copies a tensor (or a stack of parts, packed back to back) to
 *    device memory once, when the engine binds a model (bind.c); in bf16 mode GEMM weights
 *    are narrowed on the device while uploading. They are freed by weight_free.
 *  - Activations and op scratch come from the context's arena (arena.c), which allocates only
 *    when a pass needs more than any before it.
 *  - Host data goes through pinned staging memory: upload copies into it and queues an
 *    asynchronous copy (no wait); download queues the copy back and synchronises — the one
 *    synchronising call. Staging is reused after each download (the stream is then idle) and
 *    grows only when a pass needs more; the blocks it outgrew are freed at that point.
 * Counters (allocations, synchronisations, bytes allocated and their peak) are kept for
 * moire_ops_cuda_stats and the tests.
 *
 * Errors. Every CUDA/cuBLAS call goes through CUDA_TRY/LT_TRY, which turn a failure into a
 * moire_status with the statement text; out of device memory is MOIRE_ERROR_OUT_OF_MEMORY
 * with the sizes, never a crash.
 */
#include "backend_module.h"
#include "internal.h"
#include "kernels.h"
#include "ops.h"

#include <cublasLt.h>
#include <cublas_api.h>
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- errors --------------------------------------------------------------------------- */

static moire_status cuda_fail(cudaError_t err, const char *what, const char *func)
{
    (void)cudaGetLastError(); /* clear a non-sticky error so the context stays usable */
    if (err == cudaErrorMemoryAllocation) {
        size_t free_bytes = 0, total = 0;
        cudaMemGetInfo(&free_bytes, &total);
        return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY,
                          "GPU out of memory (%s in %s; %.0f MB of %.0f MB free): use a smaller "
                          "size or batch, bf16 weights (MOIRE_CUDA_PRECISION=bf16), or "
                          "--device cpu",
                          what, func, free_bytes / 1e6, total / 1e6);
    }
    return moire_fail(MOIRE_ERROR_BACKEND, "CUDA error %s (%s) in %s: %s", cudaGetErrorName(err),
                      cudaGetErrorString(err), func, what);
}

#define CUDA_TRY(stmt)                                                                     \
    do {                                                                                   \
        cudaError_t err_ = (stmt);                                                         \
        if (err_ != cudaSuccess)                                                           \
            return cuda_fail(err_, #stmt, __func__);                                       \
    } while (0)

static moire_status lt_fail(cublasStatus_t st, const char *what, const char *func)
{
    if (st == CUBLAS_STATUS_ALLOC_FAILED)
        return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "GPU out of memory in cuBLASLt (%s in %s)",
                          what, func);
    return moire_fail(MOIRE_ERROR_BACKEND, "cuBLASLt error %s in %s: %s",
                      cublasGetStatusString(st), func, what);
}

#define LT_TRY(stmt)                                                                       \
    do {                                                                                   \
        cublasStatus_t st_ = (stmt);                                                       \
        if (st_ != CUBLAS_STATUS_SUCCESS)                                                  \
            return lt_fail(st_, #stmt, __func__);                                          \
    } while (0)

/* ---- state ---------------------------------------------------------------------------- */

#define PLAN_CACHE 128

/* One cuBLASLt matmul configuration, column-major: C[m,n] = op(A)·op(B) (+ bias[m]). */
typedef struct lt_key {
    int ta, tb;           /* 1 = transposed                                              */
    int m, n, k;
    int64_t lda, ldb, ldc;
    int bf16;             /* A and B bf16 (else fp32); C always fp32                       */
    int bias;             /* the BIAS epilogue                                            */
    int align;            /* smallest pointer alignment, bytes                            */
} lt_key;

typedef struct lt_plan {
    bool used;
    lt_key key;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a, b, c;
    cublasLtMatmulAlgo_t algo;
} lt_plan;

typedef struct device_allocation {
    void *ptr;
    size_t bytes;
} device_allocation;

typedef struct cuda_backend {
    int device;
    bool bf16;
    cudaStream_t stream;
    cublasLtHandle_t lt;
    void *lt_workspace;
    size_t lt_workspace_bytes;
    lt_plan plans[PLAN_CACHE];
    int next_plan;

    device_allocation *live;    /* mem_alloc'd buffers (their sizes, for the accounting)  */
    size_t live_count, live_cap;

    char *stage;                /* pinned staging for upload/download                     */
    size_t stage_size, stage_used, stage_high;
    void **stage_retired;       /* outgrown pinned blocks, freed after the next wait      */
    size_t stage_retired_count, stage_retired_cap;

    float *weight_stage;        /* device fp32 chunk for narrowing weights to bf16         */

    size_t allocated, peak;     /* device bytes: weights, buffers, workspace              */
    uint64_t allocations, synchronizations;
    char name[128];
    size_t total_memory;
    double copy_bytes_per_s;
    bool capturing;             /* between graph_begin and graph_end (no alloc/copy/wait)  */
} cuda_backend;

#define WEIGHT_STAGE_FLOATS ((size_t)16 << 20)

static cuda_backend *backend_of(const moire_ops *ops)
{
    return (cuda_backend *)ops->backend;
}

static void account(cuda_backend *cb, size_t bytes, bool add)
{
    if (add) {
        cb->allocated += bytes;
        if (cb->allocated > cb->peak)
            cb->peak = cb->allocated;
    } else {
        cb->allocated -= bytes < cb->allocated ? bytes : cb->allocated;
    }
}

static moire_status refuse_while_capturing(const cuda_backend *cb, const char *what)
{
    if (!cb->capturing)
        return MOIRE_OK;
    return moire_fail(MOIRE_ERROR_BACKEND,
                      "%s while a sampling step is being recorded as a CUDA graph: the step "
                      "must not allocate, copy from the host or wait (an engine bug; "
                      "MOIRE_CUDA_GRAPH=0 runs steps without graphs)",
                      what);
}

static moire_status device_alloc(cuda_backend *cb, void **ptr, size_t bytes, const char *what)
{
    *ptr = NULL;
    moire_status refused = refuse_while_capturing(cb, what);
    if (refused != MOIRE_OK)
        return refused;
    if (bytes == 0)
        bytes = 256;
    cudaError_t err = cudaMalloc(ptr, bytes);
    cb->allocations++;
    if (err != cudaSuccess) {
        *ptr = NULL;
        moire_status status = cuda_fail(err, what, "cudaMalloc");
        if (status == MOIRE_ERROR_OUT_OF_MEMORY)
            moire_error_prefix("%s (%.1f MB)", what, bytes / 1e6);
        return status;
    }
    account(cb, bytes, true);
    return MOIRE_OK;
}

static void device_release(cuda_backend *cb, void *ptr, size_t bytes)
{
    if (!ptr)
        return;
    if (cudaFree(ptr) != cudaSuccess)
        (void)cudaGetLastError(); /* a sticky error is reported by the next op */
    account(cb, bytes ? bytes : 256, false);
}

static moire_status synchronize(cuda_backend *cb)
{
    cb->synchronizations++;
    CUDA_TRY(cudaStreamSynchronize(cb->stream));
    return MOIRE_OK;
}

/* ---- memory: buffers ------------------------------------------------------------------ */

static void *cuda_mem_alloc(const moire_ops *ops, size_t bytes)
{
    cuda_backend *cb = backend_of(ops);
    if (cb->live_count == cb->live_cap) {
        const size_t cap = cb->live_cap ? 2 * cb->live_cap : 32;
        device_allocation *grown = realloc(cb->live, cap * sizeof *grown);
        if (!grown) {
            moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory");
            return NULL;
        }
        cb->live = grown;
        cb->live_cap = cap;
    }
    void *ptr;
    if (device_alloc(cb, &ptr, bytes, "a buffer") != MOIRE_OK)
        return NULL;
    cb->live[cb->live_count++] = (device_allocation){ptr, bytes ? bytes : 256};
    return ptr;
}

static void cuda_mem_free(const moire_ops *ops, void *ptr)
{
    cuda_backend *cb = backend_of(ops);
    if (!ptr)
        return;
    for (size_t i = 0; i < cb->live_count; i++)
        if (cb->live[i].ptr == ptr) {
            device_release(cb, ptr, cb->live[i].bytes);
            cb->live[i] = cb->live[--cb->live_count];
            return;
        }
}

/* ---- memory: pinned staging ------------------------------------------------------------ */

/* After a wait the stream is idle, so everything staged is consumed: reuse from the start,
 * and free the blocks the staging outgrew. */
static void stage_reset(cuda_backend *cb)
{
    for (size_t i = 0; i < cb->stage_retired_count; i++)
        cudaFreeHost(cb->stage_retired[i]);
    cb->stage_retired_count = 0;
    cb->stage_used = 0;
}

/* `bytes` of pinned memory, valid until the next wait. Grows (a new block, the old one
 * retired until the next wait) only when a pass stages more than any before. */
static moire_status stage_take(cuda_backend *cb, size_t bytes, char **out)
{
    bytes = (bytes + 255) & ~(size_t)255;
    if (cb->stage_used + bytes > cb->stage_size) {
        if (cb->stage_retired_count == cb->stage_retired_cap) {
            const size_t cap = cb->stage_retired_cap ? 2 * cb->stage_retired_cap : 8;
            void **grown = realloc(cb->stage_retired, cap * sizeof *grown);
            if (!grown)
                return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory");
            cb->stage_retired = grown;
            cb->stage_retired_cap = cap;
        }
        size_t size = cb->stage_high > cb->stage_size ? cb->stage_high : 2 * cb->stage_size;
        if (size < cb->stage_used + bytes)
            size = cb->stage_used + bytes;
        size = (size + ((size_t)1 << 20) - 1) & ~(((size_t)1 << 20) - 1);
        void *block;
        cb->allocations++;
        CUDA_TRY(cudaMallocHost(&block, size));
        if (cb->stage)
            cb->stage_retired[cb->stage_retired_count++] = cb->stage;
        cb->stage = block;
        cb->stage_size = size;
        cb->stage_used = 0;
    }
    *out = cb->stage + cb->stage_used;
    cb->stage_used += bytes;
    if (cb->stage_used > cb->stage_high)
        cb->stage_high = cb->stage_used;
    return MOIRE_OK;
}

static moire_status cuda_upload(const moire_ops *ops, void *dst, const void *src, size_t bytes)
{
    cuda_backend *cb = backend_of(ops);
    if (!bytes)
        return MOIRE_OK;
    char *pinned;
    moire_status status = refuse_while_capturing(cb, "an upload");
    if (status == MOIRE_OK)
        status = stage_take(cb, bytes, &pinned);
    if (status != MOIRE_OK)
        return status;
    memcpy(pinned, src, bytes);
    CUDA_TRY(cudaMemcpyAsync(dst, pinned, bytes, cudaMemcpyHostToDevice, cb->stream));
    return MOIRE_OK;
}

static moire_status cuda_download(const moire_ops *ops, void *dst, const void *src,
                                  size_t bytes)
{
    cuda_backend *cb = backend_of(ops);
    char *pinned = NULL;
    moire_status status = refuse_while_capturing(cb, "a download");
    if (status == MOIRE_OK && bytes)
        status = stage_take(cb, bytes, &pinned);
    if (status != MOIRE_OK)
        return status;
    if (bytes)
        CUDA_TRY(cudaMemcpyAsync(pinned, src, bytes, cudaMemcpyDeviceToHost, cb->stream));
    /* Errors of earlier kernels surface here. */
    status = synchronize(cb);
    if (status != MOIRE_OK)
        return status;
    if (bytes)
        memcpy(dst, pinned, bytes);
    stage_reset(cb);
    return MOIRE_OK;
}

/* ---- memory: weights ------------------------------------------------------------------ */

static moire_status cuda_weight_upload(const moire_ops *ops, moire_tensor *out,
                                       const float *const *parts, int count, int64_t rows,
                                       int64_t cols, moire_weight_use use)
{
    cuda_backend *cb = backend_of(ops);
    memset(out, 0, sizeof *out);
    if (count < 1 || !parts || !parts[0])
        return MOIRE_OK; /* absent */
    const bool narrow = use == MOIRE_WEIGHT_GEMM && cb->bf16;
    const size_t each = (size_t)rows * (size_t)cols;
    const size_t elem = narrow ? sizeof(uint16_t) : sizeof(float);
    void *dev;
    moire_status status = device_alloc(cb, &dev, each * count * elem, "model weights");
    if (status != MOIRE_OK)
        return status;
    if (narrow && !cb->weight_stage) {
        void *stage;
        status = device_alloc(cb, &stage, WEIGHT_STAGE_FLOATS * sizeof(float),
                              "the weight staging buffer");
        cb->weight_stage = stage;
    }
    for (int i = 0; i < count && status == MOIRE_OK; i++) {
        char *dst = (char *)dev + (size_t)i * each * elem;
        /* From the model's (pageable, often memory-mapped) host memory: a plain copy, which
         * waits; binding happens once per model, never inside a forward. */
        if (!narrow) {
            cudaError_t err = cudaMemcpy(dst, parts[i], each * sizeof(float),
                                         cudaMemcpyHostToDevice);
            if (err != cudaSuccess)
                status = cuda_fail(err, "copying weights", __func__);
            continue;
        }
        for (size_t off = 0; off < each && status == MOIRE_OK; off += WEIGHT_STAGE_FLOATS) {
            const size_t n = each - off < WEIGHT_STAGE_FLOATS ? each - off : WEIGHT_STAGE_FLOATS;
            cudaError_t err = cudaMemcpy(cb->weight_stage, parts[i] + off, n * sizeof(float),
                                         cudaMemcpyHostToDevice);
            if (err == cudaSuccess)
                err = mk_f32_to_bf16((uint16_t *)dst + off, cb->weight_stage, (int64_t)n,
                                     cb->stream);
            if (err == cudaSuccess) /* the stage is reused by the next chunk */
                err = cudaStreamSynchronize(cb->stream);
            if (err != cudaSuccess)
                status = cuda_fail(err, "narrowing weights to bf16", __func__);
        }
    }
    if (status != MOIRE_OK) {
        device_release(cb, dev, each * count * elem);
        return status;
    }
    out->data = dev;
    out->dtype = narrow ? MOIRE_DTYPE_BF16 : MOIRE_DTYPE_F32;
    out->count = count;
    out->rows = rows;
    out->cols = cols;
    return MOIRE_OK;
}

static void cuda_weight_free(const moire_ops *ops, moire_tensor *t)
{
    cuda_backend *cb = backend_of(ops);
    if (t->data) {
        const size_t elem = t->dtype == MOIRE_DTYPE_BF16 ? sizeof(uint16_t) : sizeof(float);
        device_release(cb, (void *)t->data, (size_t)t->count * t->rows * t->cols * elem);
    }
    memset(t, 0, sizeof *t);
}

static const float *f32_of(const moire_tensor *t)
{
    return moire_tensor_present(t) ? (const float *)t->data : NULL;
}

/* Scratch for one op from the context's arena; the op releases it (LIFO) before returning. */
static moire_status scratch(const moire_ops *ops, size_t bytes, void **out)
{
    *out = moire_arena_take(ops->arena, bytes);
    return *out ? MOIRE_OK : MOIRE_ERROR_OUT_OF_MEMORY;
}

/* ---- GEMM: cuBLASLt ------------------------------------------------------------------- */

static int pointer_alignment(const void *p)
{
    uintptr_t v = (uintptr_t)p;
    int a = 256;
    while (a > 4 && v % (uintptr_t)a)
        a /= 2;
    return a;
}

static void plan_destroy(lt_plan *p)
{
    if (!p->used)
        return;
    cublasLtMatmulDescDestroy(p->desc);
    if (p->a)
        cublasLtMatrixLayoutDestroy(p->a);
    if (p->b)
        cublasLtMatrixLayoutDestroy(p->b);
    if (p->c)
        cublasLtMatrixLayoutDestroy(p->c);
    memset(p, 0, sizeof *p);
}

/* Every cuBLASLt call of plan_make: on failure the partly built plan is destroyed (nothing
 * leaks) and the status returned. */
#define PLAN_TRY(stmt)                                                                     \
    do {                                                                                   \
        cublasStatus_t st_ = (stmt);                                                       \
        if (st_ != CUBLAS_STATUS_SUCCESS) {                                                \
            plan_destroy(p);                                                               \
            return lt_fail(st_, #stmt, __func__);                                          \
        }                                                                                  \
    } while (0)

static moire_status plan_make(cuda_backend *cb, lt_plan *p, const lt_key *key)
{
    memset(p, 0, sizeof *p);
    const cudaDataType_t in_type = key->bf16 ? CUDA_R_16BF : CUDA_R_32F;
    LT_TRY(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    p->used = true; /* from here on plan_destroy releases what exists */
    const cublasOperation_t ta = key->ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t tb = key->tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    PLAN_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta,
                                            sizeof ta));
    PLAN_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb,
                                            sizeof tb));
    if (key->bias) {
        const cublasLtEpilogue_t ep = CUBLASLT_EPILOGUE_BIAS;
        const cudaDataType_t bias_type = CUDA_R_32F;
        PLAN_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep,
                                                sizeof ep));
        PLAN_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                                                &bias_type, sizeof bias_type));
    }
    /* Stored shapes: A is m×k (k×m when transposed), B is k×n (n×k when transposed). */
    PLAN_TRY(cublasLtMatrixLayoutCreate(&p->a, in_type, (uint64_t)(key->ta ? key->k : key->m),
                                        (uint64_t)(key->ta ? key->m : key->k), key->lda));
    PLAN_TRY(cublasLtMatrixLayoutCreate(&p->b, in_type, (uint64_t)(key->tb ? key->n : key->k),
                                        (uint64_t)(key->tb ? key->k : key->n), key->ldb));
    PLAN_TRY(cublasLtMatrixLayoutCreate(&p->c, CUDA_R_32F, (uint64_t)key->m, (uint64_t)key->n,
                                        key->ldc));

    cublasLtMatmulPreference_t pref;
    PLAN_TRY(cublasLtMatmulPreferenceCreate(&pref));
    const uint32_t al = (uint32_t)key->align;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                         &cb->lt_workspace_bytes,
                                         sizeof cb->lt_workspace_bytes);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al,
                                         sizeof al);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al,
                                         sizeof al);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al,
                                         sizeof al);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al,
                                         sizeof al);
    cublasLtMatmulHeuristicResult_t result;
    int found = 0;
    cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(cb->lt, p->desc, p->a, p->b, p->c, p->c,
                                                       pref, 1, &result, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (st != CUBLAS_STATUS_SUCCESS || found == 0) {
        plan_destroy(p);
        return moire_fail(MOIRE_ERROR_BACKEND,
                          "cuBLASLt has no algorithm for a %s GEMM %dx%dx%d%s (%s)",
                          key->bf16 ? "bf16" : "fp32", key->m, key->n, key->k,
                          key->bias ? " with bias" : "", cublasGetStatusString(st));
    }
    p->algo = result.algo;
    p->key = *key;
    return MOIRE_OK;
}
#undef PLAN_TRY

static moire_status plan_get(cuda_backend *cb, const lt_key *key, lt_plan **out)
{
    for (int i = 0; i < PLAN_CACHE; i++) {
        lt_plan *p = &cb->plans[i];
        if (p->used && memcmp(&p->key, key, sizeof *key) == 0) {
            *out = p;
            return MOIRE_OK;
        }
    }
    lt_plan *p = &cb->plans[cb->next_plan];
    cb->next_plan = (cb->next_plan + 1) % PLAN_CACHE;
    plan_destroy(p);
    moire_status status = plan_make(cb, p, key);
    if (status != MOIRE_OK)
        return status;
    *out = p;
    return MOIRE_OK;
}

/* Column-major C[m,n] (ld ldc, fp32) = op(A)·op(B) (+ bias[m] when bias is non-NULL and the
 * epilogue exists for the shape; else added by a kernel). A, B fp32 or both bf16. */
static moire_status lt_gemm(cuda_backend *cb, bool ta, bool tb, int m, int n, int k,
                            const void *A, int64_t lda, const void *B, int64_t ldb, bool bf16,
                            float *C, int64_t ldc, const float *bias)
{
    if (m <= 0 || n <= 0)
        return MOIRE_OK;
    int align = pointer_alignment(A);
    const int ab = pointer_alignment(B), ac = pointer_alignment(C);
    align = ab < align ? ab : align;
    align = ac < align ? ac : align;
    lt_key key;
    memset(&key, 0, sizeof key); /* compared with memcmp: no stray padding bytes */
    key.ta = ta, key.tb = tb, key.m = m, key.n = n, key.k = k;
    key.lda = lda, key.ldb = ldb, key.ldc = ldc, key.bf16 = bf16, key.bias = bias != NULL;
    key.align = align;
    lt_plan *p;
    moire_status status = plan_get(cb, &key, &p);
    bool epilogue = bias != NULL;
    if (status != MOIRE_OK && bias) { /* no bias epilogue for this shape: add it apart */
        moire_error_clear();
        key.bias = 0;
        epilogue = false;
        status = plan_get(cb, &key, &p);
    }
    if (status != MOIRE_OK)
        return status;
    if (epilogue)
        LT_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                              sizeof bias));
    const float one = 1.0f, zero = 0.0f;
    LT_TRY(cublasLtMatmul(cb->lt, p->desc, &one, A, p->a, B, p->b, &zero, C, p->c, C, p->c,
                          &p->algo, cb->lt_workspace, cb->lt_workspace_bytes, cb->stream));
    if (bias && !epilogue) /* C is [n rows of m] row-major: the bias runs along m */
        CUDA_TRY(mk_add_bias(C, bias, n, m, cb->stream));
    return MOIRE_OK;
}

/* y[M,N] = x[M,K]·w[N,K]ᵀ + b[N]: column-major yᵀ (N×M, ld N) = op(A)·B with A = w as a
 * K×N matrix (ld K, transposed) and B = xᵀ as K×M (ld K). The bias epilogue adds b[N] per
 * row of yᵀ. A bf16 weight takes a bf16 copy of x (scratch). */
static moire_status linear_rows(const moire_ops *ops, float *y, const float *x,
                                const moire_tensor *w, const float *b, int M, int K, int N)
{
    cuda_backend *cb = backend_of(ops);
    if (M <= 0 || N <= 0)
        return MOIRE_OK;
    const bool bf16 = w->dtype == MOIRE_DTYPE_BF16;
    const size_t mark = moire_arena_mark(ops->arena);
    const void *x_in = x;
    if (bf16) {
        void *x16;
        moire_status status = scratch(ops, (size_t)M * K * sizeof(uint16_t), &x16);
        if (status != MOIRE_OK)
            return status;
        CUDA_TRY(mk_f32_to_bf16(x16, x, (int64_t)M * K, cb->stream));
        x_in = x16;
    }
    moire_status status = lt_gemm(cb, true, false, N, M, K, w->data, K, x_in, K, bf16, y, N, b);
    moire_arena_release(ops->arena, mark);
    return status;
}

/* ---- transformer ops ------------------------------------------------------------------ */

static moire_status cuda_linear(const moire_ops *ops, float *y, const float *x,
                                const moire_tensor *w, const moire_tensor *b, int M, int K,
                                int N)
{
    return linear_rows(ops, y, x, w, f32_of(b), M, K, N);
}

static moire_status cuda_layernorm_modulate(const moire_ops *ops, float *y, const float *x,
                                            const float *shift, const float *scale,
                                            int64_t mod_stride, int n, int T, int D, float eps)
{
    CUDA_TRY(mk_layernorm_modulate_n(y, x, shift, scale, mod_stride, n, T, D, eps,
                                     backend_of(ops)->stream));
    return MOIRE_OK;
}

static moire_status cuda_layernorm_affine(const moire_ops *ops, float *y, const float *x,
                                          const moire_tensor *w, const moire_tensor *b, int T,
                                          int D, float eps)
{
    CUDA_TRY(mk_layernorm_affine(y, x, f32_of(w), f32_of(b), T, D, eps,
                                 backend_of(ops)->stream));
    return MOIRE_OK;
}

static moire_status cuda_gate_residual(const moire_ops *ops, float *x, const float *y,
                                       int64_t y_stride, const float *gate,
                                       int64_t gate_stride, int n, int T, int D)
{
    CUDA_TRY(mk_gate_residual_n(x, y, y_stride, gate, gate_stride, n, T, D,
                                backend_of(ops)->stream));
    return MOIRE_OK;
}

/* Attention in bf16 mode (--precision bf16) goes to the tensor cores (attention_mma.cu) for
 * head sizes up to 128, with q, k, v packed to bf16 in arena scratch; fp32 mode and wider
 * heads (the VAE's 512) keep the fp32 SIMT kernels of attention.cu. */
static bool attention_on_tensor_cores(const moire_ops *ops, int hd)
{
    return backend_of(ops)->bf16 && mk_attention_mma_supported(hd);
}

static moire_status cuda_attention(const moire_ops *ops, float *out, const float *qkv, int n,
                                   int T, int H, int hd, const moire_tensor *qnw,
                                   const moire_tensor *qnb, const moire_tensor *knw,
                                   const moire_tensor *knb, float eps)
{
    const float *qw = f32_of(qnw);
    if (qw && (!f32_of(qnb) || !f32_of(knw) || !f32_of(knb)))
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "CUDA attention: the qk-norm layout needs all four norm tensors");
    const float *qb = qw ? f32_of(qnb) : NULL, *kw = qw ? f32_of(knw) : NULL,
                *kb = qw ? f32_of(knb) : NULL;
    if (n > 0 && T > 0 && H > 0 && attention_on_tensor_cores(ops, hd)) {
        const size_t mark = moire_arena_mark(ops->arena);
        void *workspace = NULL; /* bf16 q, k, v: n·T·3·H·⌈hd/16⌉·16 values */
        moire_status status =
            scratch(ops, mk_attention_mma_workspace(n, T, T, H, hd), &workspace);
        if (status == MOIRE_OK) {
            cudaError_t err = mk_attention_n_mma(out, qkv, n, T, H, hd, qw, qb, kw, kb, eps,
                                                 workspace, backend_of(ops)->stream);
            if (err != cudaSuccess)
                status = cuda_fail(err, "mk_attention_n_mma", __func__);
        }
        moire_arena_release(ops->arena, mark);
        return status;
    }
    CUDA_TRY(mk_attention_n(out, qkv, n, T, H, hd, qw, qb, kw, kb, eps,
                            backend_of(ops)->stream));
    return MOIRE_OK;
}

static moire_status cuda_cross_attention(const moire_ops *ops, float *out, const float *q,
                                         int ldq, const float *k, const float *v, int ldkv,
                                         int Tq, int Tk, int H, int hd)
{
    if (Tq > 0 && Tk <= 0)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "attention over no keys");
    if (Tq > 0 && H > 0 && attention_on_tensor_cores(ops, hd)) {
        const size_t mark = moire_arena_mark(ops->arena);
        void *workspace = NULL; /* bf16 q [Tq], k and v [Tk], per head ⌈hd/16⌉·16 values */
        moire_status status =
            scratch(ops, mk_attention_mma_workspace(1, Tq, Tk, H, hd), &workspace);
        if (status == MOIRE_OK) {
            cudaError_t err = mk_cross_attention_mma(out, q, ldq, k, v, ldkv, Tq, Tk, H, hd,
                                                     workspace, backend_of(ops)->stream);
            if (err != cudaSuccess)
                status = cuda_fail(err, "mk_cross_attention_mma", __func__);
        }
        moire_arena_release(ops->arena, mark);
        return status;
    }
    CUDA_TRY(mk_cross_attention(out, q, ldq, k, v, ldkv, Tq, Tk, H, hd,
                                backend_of(ops)->stream));
    return MOIRE_OK;
}

static moire_status cuda_router_topk(const moire_ops *ops, float *logits, int32_t *top_ids,
                                     float *top_weights, const float *h, const moire_tensor *w,
                                     int T, int D, int E, int k)
{
    cuda_backend *cb = backend_of(ops);
    if (E > MK_MOE_MAX_EXPERTS || k < 1 || k > E)
        return moire_fail(MOIRE_ERROR_UNSUPPORTED,
                          "CUDA router: %d experts, top-%d (supported: up to %d experts)", E, k,
                          MK_MOE_MAX_EXPERTS);
    moire_status status = linear_rows(ops, logits, h, w, NULL, T, D, E);
    if (status != MOIRE_OK)
        return status;
    CUDA_TRY(mk_router_topk(top_ids, top_weights, logits, T, E, k, cb->stream));
    return MOIRE_OK;
}

static size_t align_up(size_t bytes)
{
    return (bytes + 255) & ~(size_t)255;
}

static int is_bf16(const moire_swiglu *s)
{
    return s->gate_up.dtype == MOIRE_DTYPE_BF16;
}

/* out[rows, D] = down(SiLU(gate(h)) ⊙ up(h)) for the rows of a stack of SwiGLU experts, in
 * the grouped mode (offsets from mk_moe_route) or the dense one (offsets NULL, E 1).
 * bf16 weights whose shapes allow it (mk_moe_mma_supported) go to the tensor cores
 * (moe_mma.cu; the intermediate activations in bf16, so `act` needs rows·F·2 bytes);
 * fp32 weights and other shapes to the SIMT kernels (moe.cu; act rows·F·4 bytes). */
static cudaError_t swiglu_gemms(cuda_backend *cb, float *out, void *act, const float *h,
                                const moire_swiglu *sw, const int32_t *offsets,
                                const int32_t *tile_offsets, const int32_t *sorted_token,
                                int dense_rows, int E, int D, int max_tiles)
{
    const int F = sw->hidden;
    if (is_bf16(sw) && mk_moe_mma_supported(D, F)) {
        cudaError_t err = mk_moe_gate_up_mma_bf16(act, h, sw->gate_up.data, offsets,
                                                  tile_offsets, sorted_token, dense_rows, E, D,
                                                  F, max_tiles, cb->stream);
        if (err == cudaSuccess)
            err = mk_moe_down_mma_bf16(out, act, sw->down.data, offsets, tile_offsets,
                                       dense_rows, E, D, F, max_tiles, cb->stream);
        return err;
    }
    cudaError_t err = mk_moe_gate_up(act, h, sw->gate_up.data, is_bf16(sw), offsets,
                                     tile_offsets, sorted_token, dense_rows, E, D, F, max_tiles,
                                     cb->stream);
    if (err == cudaSuccess)
        err = mk_moe_down(out, act, sw->down.data, is_bf16(sw), offsets, tile_offsets,
                          dense_rows, E, D, F, max_tiles, cb->stream);
    return err;
}

static moire_status cuda_moe_experts(const moire_ops *ops, float *y, const float *h, int T,
                                     int D, const moire_swiglu *experts,
                                     const moire_swiglu *shared, int k, const int32_t *top_ids,
                                     const float *top_weights)
{
    cuda_backend *cb = backend_of(ops);
    const int E = experts->experts, F = experts->hidden;
    if (T <= 0)
        return MOIRE_OK;
    if (E < 1 || E > MK_MOE_MAX_EXPERTS || k < 1 || k > E)
        return moire_fail(MOIRE_ERROR_UNSUPPORTED,
                          "CUDA MoE: %d experts, top-%d (supported: up to %d experts)", E, k,
                          MK_MOE_MAX_EXPERTS);
    const int S = moire_swiglu_present(shared) ? shared->hidden : 0;

    /* Scratch, carved from one arena block: the dispatch arrays, then the activations. */
    const int P = T * k;
    const int max_tiles = (P + MK_MOE_TILE_M - 1) / MK_MOE_TILE_M + E;
    const size_t sz_off = align_up((size_t)(E + 1) * sizeof(int32_t));
    const size_t sz_pair_i = align_up((size_t)P * sizeof(int32_t));
    const size_t sz_pair_f = align_up((size_t)P * sizeof(float));
    const size_t sz_act = align_up((size_t)P * F * sizeof(float));
    const size_t sz_rows = align_up((size_t)P * D * sizeof(float));
    const size_t sz_sact = S > 0 ? align_up((size_t)T * S * sizeof(float)) : 0;
    const size_t sz_sout = S > 0 ? align_up((size_t)T * D * sizeof(float)) : 0;
    const size_t total = 2 * sz_off + 2 * sz_pair_i + sz_pair_f + sz_act + sz_rows + sz_sact +
                         sz_sout;
    const size_t mark = moire_arena_mark(ops->arena);
    char *base;
    moire_status status = scratch(ops, total, (void **)&base);
    if (status != MOIRE_OK)
        return status;
    int32_t *offsets = (int32_t *)base;
    int32_t *tile_offsets = (int32_t *)(base += sz_off);
    int32_t *sorted_token = (int32_t *)(base += sz_off);
    int32_t *slot_of_pair = (int32_t *)(base += sz_pair_i);
    float *sorted_weight = (float *)(base += sz_pair_i);
    float *act = (float *)(base += sz_pair_f);
    float *rows = (float *)(base += sz_act);
    float *shared_act = (float *)(base += sz_rows);
    float *shared_out = (float *)(base += sz_sact);

    cudaError_t err = mk_moe_route(offsets, tile_offsets, sorted_token, sorted_weight,
                                   slot_of_pair, top_ids, top_weights, T, k, E, cb->stream);
    if (err == cudaSuccess)
        err = swiglu_gemms(cb, rows, act, h, experts, offsets, tile_offsets, sorted_token, 0, E,
                           D, max_tiles);
    if (err == cudaSuccess && S > 0)
        err = swiglu_gemms(cb, shared_out, shared_act, h, shared, NULL, NULL, NULL, T, 1, D, 0);
    if (err == cudaSuccess)
        err = mk_moe_combine(y, S > 0 ? shared_out : NULL, rows, slot_of_pair, top_weights, T,
                             D, k, cb->stream);
    moire_arena_release(ops->arena, mark);
    if (err != cudaSuccess)
        return cuda_fail(err, "the MoE kernels", __func__);
    return MOIRE_OK;
}

static moire_status cuda_router_expert_choice(const moire_ops *ops, float *scores,
                                              int32_t *tokens, float *gates, const float *h,
                                              const moire_tensor *w, int n, int T, int group,
                                              int D, int E, float capacity_factor)
{
    if (E < 1 || E > MK_MOE_MAX_EXPERTS)
        return moire_fail(MOIRE_ERROR_UNSUPPORTED,
                          "CUDA expert choice: %d experts (supported: up to %d)", E,
                          MK_MOE_MAX_EXPERTS);
    CUDA_TRY(mk_router_expert_choice(scores, tokens, gates, h, f32_of(w), n, T, group, D, E,
                                     capacity_factor, backend_of(ops)->stream));
    return MOIRE_OK;
}

static moire_status cuda_moe_expert_choice(const moire_ops *ops, float *y, const float *h,
                                           int N, int D, const moire_swiglu *experts,
                                           const moire_swiglu *shared, int M,
                                           const int32_t *tokens, const float *gates)
{
    const int E = experts->experts, F = experts->hidden;
    const int S = moire_swiglu_present(shared) ? shared->hidden : 0;
    if (S > 0 && is_bf16(shared) != is_bf16(experts))
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "CUDA expert-choice MoE: shared and routed experts differ in dtype");
    const size_t mark = moire_arena_mark(ops->arena);
    void *workspace;
    moire_status status =
        scratch(ops, mk_moe_expert_choice_workspace(N, D, F, S, E, M), &workspace);
    if (status != MOIRE_OK)
        return status;
    cudaError_t err = mk_moe_expert_choice(
        y, h, N, D, experts->gate_up.data, experts->down.data, F,
        S > 0 ? shared->gate_up.data : NULL, S > 0 ? shared->down.data : NULL, S,
        is_bf16(experts), E, M, tokens, gates, workspace, backend_of(ops)->stream);
    moire_arena_release(ops->arena, mark);
    if (err != cudaSuccess)
        return cuda_fail(err, "the expert-choice MoE kernels", __func__);
    return MOIRE_OK;
}

static moire_status cuda_swiglu(const moire_ops *ops, float *y, const float *h, int T, int D,
                                const moire_swiglu *mlp)
{
    cuda_backend *cb = backend_of(ops);
    const int F = mlp->hidden;
    if (T <= 0)
        return MOIRE_OK;
    const size_t mark = moire_arena_mark(ops->arena);
    void *act;
    moire_status status = scratch(ops, (size_t)T * F * sizeof(float), &act);
    if (status != MOIRE_OK)
        return status;
    cudaError_t err = swiglu_gemms(cb, y, act, h, mlp, NULL, NULL, NULL, T, 1, D, 0);
    moire_arena_release(ops->arena, mark);
    if (err != cudaSuccess)
        return cuda_fail(err, "the SwiGLU kernels", __func__);
    return MOIRE_OK;
}

/* ---- elementwise and data movement ---------------------------------------------------- */

#define STREAM(ops) (backend_of(ops)->stream)

static moire_status cuda_silu(const moire_ops *ops, float *y, const float *x, int64_t count)
{
    CUDA_TRY(mk_silu(y, x, count, STREAM(ops)));
    return MOIRE_OK;
}

static moire_status cuda_gelu(const moire_ops *ops, float *y, const float *x, int64_t count)
{
    CUDA_TRY(mk_gelu_erf(y, x, count, STREAM(ops)));
    return MOIRE_OK;
}

static moire_status cuda_relu(const moire_ops *ops, float *y, const float *x, int64_t count)
{
    CUDA_TRY(mk_relu(y, x, count, STREAM(ops)));
    return MOIRE_OK;
}

static moire_status cuda_scale(const moire_ops *ops, float *y, const float *x, float alpha,
                               int64_t count)
{
    CUDA_TRY(mk_scale(y, x, alpha, count, STREAM(ops)));
    return MOIRE_OK;
}

static moire_status cuda_add(const moire_ops *ops, float *y, const float *a, const float *b,
                             int64_t count)
{
    CUDA_TRY(mk_add(y, a, b, count, STREAM(ops)));
    return MOIRE_OK;
}

static moire_status cuda_gather_rows(const moire_ops *ops, float *y, const moire_tensor *table,
                                     const int32_t *ids, int rows, int D)
{
    CUDA_TRY(mk_gather_rows(y, f32_of(table), ids, rows, D, STREAM(ops)));
    return MOIRE_OK;
}

static moire_status cuda_masked_mean_rows(const moire_ops *ops, float *out, const float *x,
                                          const int32_t *lengths, int P, int L, int D)
{
    CUDA_TRY(mk_masked_mean_rows(out, x, lengths, P, L, D, STREAM(ops)));
    return MOIRE_OK;
}

static moire_status cuda_transpose(const moire_ops *ops, float *y, const float *x, int rows,
                                   int cols)
{
    CUDA_TRY(mk_transpose(y, x, rows, cols, STREAM(ops)));
    return MOIRE_OK;
}

static moire_status cuda_copy_2d(const moire_ops *ops, float *dst, int64_t dst_ld,
                                 const float *src, int64_t src_ld, int rows, int64_t cols)
{
    CUDA_TRY(mk_copy_2d(dst, dst_ld, src, src_ld, rows, cols, STREAM(ops)));
    return MOIRE_OK;
}

/* ---- the sampling step: sampler update, guidance, patches (sampler.cu) -------------------- */

static moire_status cuda_sampler_op(const moire_ops *ops, const moire_sampler_args *a)
{
    CUDA_TRY(mk_sampler_op((int)a->op, a->slot, a->n, a->chw, a->out_stride,
                           a->learned_variance, a->y, a->y2, a->den, a->old, a->src, a->dst,
                           a->x_in, a->t_in, a->x0, a->model_out, a->noise, a->coef, a->step,
                           STREAM(ops)));
    return MOIRE_OK;
}

static moire_status cuda_guidance_combine(const moire_ops *ops, float *out, const float *both,
                                          int n, int64_t image, int64_t guided, float scale)
{
    CUDA_TRY(mk_guidance_combine(out, both, n, image, guided, scale, STREAM(ops)));
    return MOIRE_OK;
}

static moire_status cuda_patchify(const moire_ops *ops, float *dst, const float *src, int n,
                                  int C, int h, int w, int p, bool inverse)
{
    CUDA_TRY(mk_patchify(dst, src, n, C, h, w, p, inverse ? 1 : 0, STREAM(ops)));
    return MOIRE_OK;
}

static moire_status cuda_timestep_frequencies(const moire_ops *ops, float *freq, const float *t,
                                              int n)
{
    CUDA_TRY(mk_timestep_frequencies(freq, t, n, 256, STREAM(ops)));
    return MOIRE_OK;
}

/* ---- the sampling step as a CUDA graph ------------------------------------------------------
 * Stream capture of the context's one stream: every op queued between graph_begin and
 * graph_end is recorded, not run. The refusals above (device_alloc, upload, download) turn
 * anything that cannot be replayed into an error instead of a graph that silently reuses a
 * stale host copy. */

/* Replays in flight per graph. The host queues a replay only once the one GRAPH_AHEAD launches
 * back has finished (polled, not waited for: cudaEventQuery and a short sleep), so the device
 * always has the next step queued while progress reports and cancellation stay within
 * GRAPH_AHEAD steps of the device instead of racing to the end of the run. */
#define GRAPH_AHEAD 2
#define GRAPH_POLL_NS 100000L

struct moire_graph {
    cudaGraphExec_t exec;
    cudaEvent_t done[GRAPH_AHEAD]; /* recorded after each launch, used round robin          */
    bool pending[GRAPH_AHEAD];
    int next;
};

/* Until `event` has completed, without a host wait (see GRAPH_AHEAD). */
static moire_status poll_event(cudaEvent_t event)
{
    for (;;) {
        cudaError_t err = cudaEventQuery(event);
        if (err == cudaSuccess)
            return MOIRE_OK;
        if (err != cudaErrorNotReady)
            return cuda_fail(err, "cudaEventQuery(an earlier step)", __func__);
        struct timespec pause = {0, GRAPH_POLL_NS};
        nanosleep(&pause, NULL);
    }
}

static void cuda_graph_free(const moire_ops *ops, moire_graph *graph);

static moire_status cuda_graph_begin(const moire_ops *ops)
{
    cuda_backend *cb = backend_of(ops);
    if (cb->capturing)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "graph_begin: already recording");
    CUDA_TRY(cudaStreamBeginCapture(cb->stream, cudaStreamCaptureModeThreadLocal));
    cb->capturing = true;
    return MOIRE_OK;
}

static moire_status cuda_graph_end(const moire_ops *ops, moire_graph **out)
{
    cuda_backend *cb = backend_of(ops);
    *out = NULL;
    if (!cb->capturing)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "graph_end: not recording");
    cb->capturing = false;
    cudaGraph_t graph = NULL;
    CUDA_TRY(cudaStreamEndCapture(cb->stream, &graph));
    moire_graph *g = calloc(1, sizeof *g);
    if (!g) {
        cudaGraphDestroy(graph);
        return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory for a CUDA graph");
    }
    cudaError_t err = cudaGraphInstantiate(&g->exec, graph, 0);
    cudaGraphDestroy(graph);
    if (err != cudaSuccess) {
        free(g);
        return cuda_fail(err, "cudaGraphInstantiate(the sampling step)", __func__);
    }
    for (int i = 0; i < GRAPH_AHEAD && err == cudaSuccess; i++)
        err = cudaEventCreateWithFlags(&g->done[i], cudaEventDisableTiming);
    if (err != cudaSuccess) {
        cuda_graph_free(ops, g);
        return cuda_fail(err, "cudaEventCreateWithFlags(a step's completion)", __func__);
    }
    *out = g;
    return MOIRE_OK;
}

static moire_status cuda_graph_launch(const moire_ops *ops, moire_graph *graph)
{
    if (!graph)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "graph_launch: no graph");
    const int slot = graph->next;
    if (graph->pending[slot]) {
        moire_status status = poll_event(graph->done[slot]);
        if (status != MOIRE_OK)
            return status;
    }
    CUDA_TRY(cudaGraphLaunch(graph->exec, STREAM(ops)));
    CUDA_TRY(cudaEventRecord(graph->done[slot], STREAM(ops)));
    graph->pending[slot] = true;
    graph->next = (slot + 1) % GRAPH_AHEAD;
    return MOIRE_OK;
}

static void cuda_graph_free(const moire_ops *ops, moire_graph *graph)
{
    (void)ops;
    if (!graph)
        return;
    /* an event or graph still in use is released by the driver once its work completes */
    for (int i = 0; i < GRAPH_AHEAD; i++)
        if (graph->done[i])
            cudaEventDestroy(graph->done[i]);
    if (graph->exec && cudaGraphExecDestroy(graph->exec) != cudaSuccess)
        (void)cudaGetLastError();
    free(graph);
}

/* ---- image ops ------------------------------------------------------------------------- */

/* im2col scratch per band of output rows (floats): bounded whatever the image size. */
#define CONV_COL_BUDGET ((size_t)32 << 20)

/* y[co, Ho·Wo] = w[co, K] · col[K, Ho·Wo] (+ b): in column-major terms yᵀ (Ho·Wo × co, ld
 * Ho·Wo) = colᵀ (band × K, ld band) · wᵀ (K × co, ld K), one GEMM per band of output rows. */
static moire_status cuda_conv2d(const moire_ops *ops, float *y, const float *x,
                                const moire_tensor *w, const moire_tensor *b, int ci, int H,
                                int W, int co, int k, int stride, int pad_lo, int pad_hi)
{
    cuda_backend *cb = backend_of(ops);
    const int Ho = (H + pad_lo + pad_hi - k) / stride + 1;
    const int Wo = (W + pad_lo + pad_hi - k) / stride + 1;
    if (Ho <= 0 || Wo <= 0)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "convolution of %dx%d with a %dx%d "
                          "kernel has no output", W, H, k, k);
    const int K = ci * k * k;
    const int64_t plane = (int64_t)Ho * Wo;
    const bool bf16 = w->dtype == MOIRE_DTYPE_BF16;
    const bool direct = k == 1 && stride == 1 && pad_lo == 0 && pad_hi == 0;
    size_t band = direct ? (size_t)Ho : CONV_COL_BUDGET / ((size_t)K * Wo);
    band = band < 1 ? 1 : (band > (size_t)Ho ? (size_t)Ho : band);
    const size_t mark = moire_arena_mark(ops->arena);
    float *col = NULL;
    uint16_t *col16 = NULL;
    moire_status status = MOIRE_OK;
    if (!direct)
        status = scratch(ops, (size_t)K * band * Wo * sizeof(float), (void **)&col);
    if (status == MOIRE_OK && bf16)
        status = scratch(ops, (size_t)K * band * Wo * sizeof(uint16_t), (void **)&col16);
    for (int oy0 = 0; oy0 < Ho && status == MOIRE_OK; oy0 += (int)band) {
        const int rows = Ho - oy0 < (int)band ? Ho - oy0 : (int)band;
        const int64_t n = (int64_t)rows * Wo;
        const float *src = x; /* direct: the input itself, [ci, H·W] */
        int64_t ld = plane;
        if (!direct) {
            cudaError_t err = mk_im2col_band(col, x, ci, H, W, k, stride, pad_lo, Wo, oy0, rows,
                                             cb->stream);
            if (err != cudaSuccess) {
                status = cuda_fail(err, "im2col", __func__);
                break;
            }
            src = col;
            ld = n;
        }
        const void *A = src;
        if (bf16) {
            /* the band (or the whole direct input: then band = Ho and ld = n) narrowed to
               match the weights */
            cudaError_t err = mk_f32_to_bf16(col16, src, (int64_t)K * n, cb->stream);
            if (err != cudaSuccess) {
                status = cuda_fail(err, "narrowing the conv input", __func__);
                break;
            }
            A = col16;
        }
        if (status == MOIRE_OK)
            status = lt_gemm(cb, false, false, (int)n, co, K, A, ld, w->data, K, bf16,
                             y + (size_t)oy0 * Wo, plane, NULL);
    }
    if (status == MOIRE_OK && moire_tensor_present(b)) {
        cudaError_t err = mk_add_channel_bias(y, f32_of(b), co, plane, cb->stream);
        if (err != cudaSuccess)
            status = cuda_fail(err, "conv bias", __func__);
    }
    moire_arena_release(ops->arena, mark);
    return status;
}

static moire_status cuda_group_norm_stats(const moire_ops *ops, float *stats, const float *x,
                                          int C, int64_t HW, int G, float eps)
{
    CUDA_TRY(mk_group_norm_stats(stats, x, C, HW, G, eps, STREAM(ops)));
    return MOIRE_OK;
}

static moire_status cuda_group_norm_apply(const moire_ops *ops, float *y, const float *x,
                                          const float *stats, const moire_tensor *w,
                                          const moire_tensor *b, int C, int64_t HW, int G,
                                          bool with_silu)
{
    CUDA_TRY(mk_group_norm_apply(y, x, stats, f32_of(w), f32_of(b), C, HW, G, with_silu,
                                 STREAM(ops)));
    return MOIRE_OK;
}

static moire_status cuda_upsample_nearest2x(const moire_ops *ops, float *y, const float *x,
                                            int C, int H, int W)
{
    CUDA_TRY(mk_upsample_nearest2x(y, x, C, H, W, STREAM(ops)));
    return MOIRE_OK;
}

static moire_status cuda_avgpool2(const moire_ops *ops, float *y, const float *x, int C, int H,
                                  int W)
{
    CUDA_TRY(mk_avgpool2(y, x, C, H, W, STREAM(ops)));
    return MOIRE_OK;
}

/* ---- life cycle ----------------------------------------------------------------------- */

static void cuda_destroy(moire_ops *ops)
{
    cuda_backend *cb = backend_of(ops);
    if (!cb)
        return;
    if (cb->stream)
        cudaStreamSynchronize(cb->stream);
    for (int i = 0; i < PLAN_CACHE; i++)
        plan_destroy(&cb->plans[i]);
    for (size_t i = 0; i < cb->live_count; i++)
        device_release(cb, cb->live[i].ptr, cb->live[i].bytes);
    free(cb->live);
    stage_reset(cb);
    free(cb->stage_retired);
    if (cb->stage)
        cudaFreeHost(cb->stage);
    device_release(cb, cb->weight_stage, WEIGHT_STAGE_FLOATS * sizeof(float));
    device_release(cb, cb->lt_workspace, cb->lt_workspace_bytes);
    if (cb->lt)
        cublasLtDestroy(cb->lt);
    if (cb->stream)
        cudaStreamDestroy(cb->stream);
    free(cb);
    ops->backend = NULL;
}

static moire_status backend_start(cuda_backend *cb)
{
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
        (void)cudaGetLastError();
        return moire_fail(MOIRE_ERROR_UNSUPPORTED, "no usable CUDA driver or GPU (%s)",
                          cudaGetErrorString(err));
    }
    if (count == 0)
        return moire_fail(MOIRE_ERROR_UNSUPPORTED, "the CUDA driver reports no GPU");
    const char *env = getenv("MOIRE_CUDA_DEVICE");
    cb->device = env ? atoi(env) : 0;
    if (cb->device < 0 || cb->device >= count)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "MOIRE_CUDA_DEVICE=%s: there are %d CUDA devices (0..%d)", env, count,
                          count - 1);
    struct cudaDeviceProp prop;
    CUDA_TRY(cudaGetDeviceProperties(&prop, cb->device));
    if (prop.major < 8)
        return moire_fail(MOIRE_ERROR_UNSUPPORTED,
                          "GPU %s has compute capability %d.%d; the CUDA backend needs 8.0 or "
                          "newer (built for 9.0)",
                          prop.name, prop.major, prop.minor);
    snprintf(cb->name, sizeof cb->name, "%.100s (sm_%d%d, %d SMs)", prop.name, prop.major,
             prop.minor, prop.multiProcessorCount);
    cb->total_memory = prop.totalGlobalMem;
    CUDA_TRY(cudaSetDevice(cb->device));
    CUDA_TRY(cudaStreamCreateWithFlags(&cb->stream, cudaStreamNonBlocking));
    LT_TRY(cublasLtCreate(&cb->lt));
    cb->lt_workspace_bytes = (size_t)32 << 20;
    return device_alloc(cb, &cb->lt_workspace, cb->lt_workspace_bytes, "cuBLASLt workspace");
}

moire_status moire_cuda_backend_init(moire_ops *ops, int n_threads, bool bf16)
{
    cuda_backend *cb = calloc(1, sizeof *cb);
    if (!cb)
        return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory");
    cb->bf16 = bf16;
    moire_status status = backend_start(cb);
    if (status != MOIRE_OK) {
        moire_ops tmp = {.backend = cb};
        cuda_destroy(&tmp);
        return status;
    }
    static const moire_ops prototype = {
        .name = "cuda",
        .mem_alloc = cuda_mem_alloc,
        .mem_free = cuda_mem_free,
        .upload = cuda_upload,
        .download = cuda_download,
        .weight_upload = cuda_weight_upload,
        .weight_free = cuda_weight_free,
        .linear = cuda_linear,
        .layernorm_modulate = cuda_layernorm_modulate,
        .layernorm_affine = cuda_layernorm_affine,
        .gate_residual = cuda_gate_residual,
        .attention = cuda_attention,
        .cross_attention = cuda_cross_attention,
        .router_topk = cuda_router_topk,
        .moe_experts = cuda_moe_experts,
        .router_expert_choice = cuda_router_expert_choice,
        .moe_expert_choice = cuda_moe_expert_choice,
        .swiglu = cuda_swiglu,
        .silu = cuda_silu,
        .gelu = cuda_gelu,
        .relu = cuda_relu,
        .scale = cuda_scale,
        .add = cuda_add,
        .gather_rows = cuda_gather_rows,
        .masked_mean_rows = cuda_masked_mean_rows,
        .transpose = cuda_transpose,
        .copy_2d = cuda_copy_2d,
        .conv2d = cuda_conv2d,
        .group_norm_stats = cuda_group_norm_stats,
        .group_norm_apply = cuda_group_norm_apply,
        .upsample_nearest2x = cuda_upsample_nearest2x,
        .avgpool2 = cuda_avgpool2,
        .sampler_op = cuda_sampler_op,
        .guidance_combine = cuda_guidance_combine,
        .patchify = cuda_patchify,
        .timestep_frequencies = cuda_timestep_frequencies,
        .graph_begin = cuda_graph_begin,
        .graph_end = cuda_graph_end,
        .graph_launch = cuda_graph_launch,
        .graph_free = cuda_graph_free,
        .destroy = cuda_destroy,
    };
    *ops = prototype;
    ops->n_threads = n_threads > 0 ? n_threads : 1;
    ops->backend = cb;
    return MOIRE_OK;
}

moire_status moire_cuda_backend_stats(const moire_ops *ops, moire_ops_stats *stats,
                                      bool measure_bandwidth)
{
    memset(stats, 0, sizeof *stats);
    if (!ops->backend || ops->destroy != cuda_destroy)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "not a CUDA op table");
    cuda_backend *cb = backend_of(ops);
    if (measure_bandwidth && cb->copy_bytes_per_s == 0.0) {
        const size_t saved_peak = cb->peak; /* the probe is not the workload's memory */
        /* Device-to-device copy of 512 MB, read + write counted, best of 5 after a warm-up. */
        const size_t bytes = (size_t)512 << 20;
        void *a = NULL, *b = NULL;
        cudaEvent_t start = NULL, stop = NULL;
        moire_status status = device_alloc(cb, &a, bytes, "the bandwidth probe");
        if (status == MOIRE_OK)
            status = device_alloc(cb, &b, bytes, "the bandwidth probe");
        if (status == MOIRE_OK && (cudaEventCreate(&start) != cudaSuccess ||
                                   cudaEventCreate(&stop) != cudaSuccess))
            status = moire_fail(MOIRE_ERROR_BACKEND, "cudaEventCreate failed");
        float best_ms = 0.0f;
        for (int i = 0; status == MOIRE_OK && i < 6; i++) {
            cudaEventRecord(start, cb->stream);
            cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, cb->stream);
            cudaEventRecord(stop, cb->stream);
            cudaError_t err = cudaEventSynchronize(stop);
            if (err != cudaSuccess) {
                status = cuda_fail(err, "bandwidth probe", __func__);
                break;
            }
            float ms = 0.0f;
            cudaEventElapsedTime(&ms, start, stop);
            if (i > 0 && (best_ms == 0.0f || ms < best_ms))
                best_ms = ms;
        }
        if (start)
            cudaEventDestroy(start);
        if (stop)
            cudaEventDestroy(stop);
        device_release(cb, a, bytes);
        device_release(cb, b, bytes);
        cb->peak = saved_peak;
        if (status != MOIRE_OK)
            return status;
        cb->copy_bytes_per_s = best_ms > 0.0f ? 2.0 * bytes / (best_ms * 1e-3) : 0.0;
    }
    snprintf(stats->device_name, sizeof stats->device_name, "%s", cb->name);
    stats->memory_total_bytes = (double)cb->total_memory;
    stats->memory_peak_bytes = (double)cb->peak;
    stats->copy_bytes_per_s = cb->copy_bytes_per_s;
    stats->allocations = cb->allocations;
    stats->synchronizations = cb->synchronizations;
    return MOIRE_OK;
}
