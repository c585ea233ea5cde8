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
 * ops_cuda_stats and the tests.
 *
 * Errors. Every CUDA/cuBLAS call goes through CUDA_TRY/LT_TRY, which turn a failure into a
 * moire_status with the statement text; out of device memory is MOIRE_ERROR_OUT_OF_MEMORY
 * with the sizes, never a crash.
 *
 * Split by job: this file holds the errors, the backend's state, memory (buffers, staging,
 * weights), the cuBLASLt GEMM, the sampling step as a CUDA graph, and the op table with the
 * life cycle; ops_cuda_ops.c the op entries that launch kernels (dense, attention, MoE,
 * elementwise, sampling step, image ops). ops_cuda_parts.h is what they share.
 */
#include "backend_module.h"
#include "internal.h"
#include "kernels.h"
#include "ops.h"
#include "ops_cuda_parts.h"

#include <cublasLt.h>
#include <cublas_api.h>
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- errors --------------------------------------------------------------------------- */

moire_status ops_cuda_fail(cudaError_t err, const char *what, const char *func)
{
    (void)cudaGetLastError(); /* clear a non-sticky error so the context stays usable */
    if (err == cudaErrorMemoryAllocation) {
        size_t free_bytes = 0, total = 0;
        cudaMemGetInfo(&free_bytes, &total);
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY,
                          "GPU out of memory (%s in %s; %.0f MB of %.0f MB free): use a smaller "
                          "size or batch, bf16 weights (MOIRE_CUDA_PRECISION=bf16), or "
                          "--device cpu",
                          what, func, free_bytes / 1e6, total / 1e6);
    }
    return error_fail(MOIRE_ERROR_BACKEND, "CUDA error %s (%s) in %s: %s", cudaGetErrorName(err),
                      cudaGetErrorString(err), func, what);
}


moire_status ops_cuda_lt_fail(cublasStatus_t st, const char *what, const char *func)
{
    if (st == CUBLAS_STATUS_ALLOC_FAILED)
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "GPU out of memory in cuBLASLt (%s in %s)",
                          what, func);
    return error_fail(MOIRE_ERROR_BACKEND, "cuBLASLt error %s in %s: %s",
                      cublasGetStatusString(st), func, what);
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
    return error_fail(MOIRE_ERROR_BACKEND,
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
        moire_status status = ops_cuda_fail(err, what, "cudaMalloc");
        if (status == MOIRE_ERROR_OUT_OF_MEMORY)
            error_prefix("%s (%.1f MB)", what, bytes / 1e6);
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
            error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory");
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
                return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory");
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
                status = ops_cuda_fail(err, "copying weights", __func__);
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
                status = ops_cuda_fail(err, "narrowing weights to bf16", __func__);
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

const float *ops_cuda_f32_of(const moire_tensor *t)
{
    return tensor_present(t) ? (const float *)t->data : NULL;
}

/* Scratch for one op from the context's arena; the op releases it (LIFO) before returning. */
moire_status ops_cuda_scratch(const moire_ops *ops, size_t bytes, void **out)
{
    *out = arena_take(ops->arena, bytes);
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
            return ops_cuda_lt_fail(st_, #stmt, __func__);                                          \
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
        return error_fail(MOIRE_ERROR_BACKEND,
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
moire_status ops_cuda_lt_gemm(cuda_backend *cb, bool ta, bool tb, int m, int n, int k,
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
        error_clear();
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
            return ops_cuda_fail(err, "cudaEventQuery(an earlier step)", __func__);
        struct timespec pause = {0, GRAPH_POLL_NS};
        nanosleep(&pause, NULL);
    }
}

static void cuda_graph_free(const moire_ops *ops, moire_graph *graph);

static moire_status cuda_graph_begin(const moire_ops *ops)
{
    cuda_backend *cb = backend_of(ops);
    if (cb->capturing)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "graph_begin: already recording");
    CUDA_TRY(cudaStreamBeginCapture(cb->stream, cudaStreamCaptureModeThreadLocal));
    cb->capturing = true;
    return MOIRE_OK;
}

static moire_status cuda_graph_end(const moire_ops *ops, moire_graph **out)
{
    cuda_backend *cb = backend_of(ops);
    *out = NULL;
    if (!cb->capturing)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "graph_end: not recording");
    cb->capturing = false;
    cudaGraph_t graph = NULL;
    CUDA_TRY(cudaStreamEndCapture(cb->stream, &graph));
    moire_graph *g = calloc(1, sizeof *g);
    if (!g) {
        cudaGraphDestroy(graph);
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory for a CUDA graph");
    }
    cudaError_t err = cudaGraphInstantiate(&g->exec, graph, 0);
    cudaGraphDestroy(graph);
    if (err != cudaSuccess) {
        free(g);
        return ops_cuda_fail(err, "cudaGraphInstantiate(the sampling step)", __func__);
    }
    for (int i = 0; i < GRAPH_AHEAD && err == cudaSuccess; i++)
        err = cudaEventCreateWithFlags(&g->done[i], cudaEventDisableTiming);
    if (err != cudaSuccess) {
        cuda_graph_free(ops, g);
        return ops_cuda_fail(err, "cudaEventCreateWithFlags(a step's completion)", __func__);
    }
    *out = g;
    return MOIRE_OK;
}

static moire_status cuda_graph_launch(const moire_ops *ops, moire_graph *graph)
{
    if (!graph)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "graph_launch: no graph");
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
        return error_fail(MOIRE_ERROR_UNSUPPORTED, "no usable CUDA driver or GPU (%s)",
                          cudaGetErrorString(err));
    }
    if (count == 0)
        return error_fail(MOIRE_ERROR_UNSUPPORTED, "the CUDA driver reports no GPU");
    const char *env = getenv("MOIRE_CUDA_DEVICE");
    cb->device = env ? atoi(env) : 0;
    if (cb->device < 0 || cb->device >= count)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "MOIRE_CUDA_DEVICE=%s: there are %d CUDA devices (0..%d)", env, count,
                          count - 1);
    struct cudaDeviceProp prop;
    CUDA_TRY(cudaGetDeviceProperties(&prop, cb->device));
    if (prop.major < 8)
        return error_fail(MOIRE_ERROR_UNSUPPORTED,
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

moire_status cuda_backend_init(moire_ops *ops, int n_threads, bool bf16)
{
    cuda_backend *cb = calloc(1, sizeof *cb);
    if (!cb)
        return error_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory");
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
        .linear = ops_cuda_linear,
        .layernorm_modulate = ops_cuda_layernorm_modulate,
        .layernorm_affine = ops_cuda_layernorm_affine,
        .gate_residual = ops_cuda_gate_residual,
        .attention = ops_cuda_attention,
        .cross_attention = ops_cuda_cross_attention,
        .router_topk = ops_cuda_router_topk,
        .moe_experts = ops_cuda_moe_experts,
        .router_expert_choice = ops_cuda_router_expert_choice,
        .moe_expert_choice = ops_cuda_moe_expert_choice,
        .swiglu = ops_cuda_swiglu,
        .silu = ops_cuda_silu,
        .gelu = ops_cuda_gelu,
        .relu = ops_cuda_relu,
        .scale = ops_cuda_scale,
        .add = ops_cuda_add,
        .gather_rows = ops_cuda_gather_rows,
        .masked_mean_rows = ops_cuda_masked_mean_rows,
        .transpose = ops_cuda_transpose,
        .copy_2d = ops_cuda_copy_2d,
        .conv2d = ops_cuda_conv2d,
        .group_norm_stats = ops_cuda_group_norm_stats,
        .group_norm_apply = ops_cuda_group_norm_apply,
        .upsample_nearest2x = ops_cuda_upsample_nearest2x,
        .avgpool2 = ops_cuda_avgpool2,
        .sampler_op = ops_cuda_sampler_op,
        .guidance_combine = ops_cuda_guidance_combine,
        .patchify = ops_cuda_patchify,
        .timestep_frequencies = ops_cuda_timestep_frequencies,
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

moire_status cuda_backend_stats(const moire_ops *ops, moire_ops_stats *stats,
                                bool measure_bandwidth)
{
    memset(stats, 0, sizeof *stats);
    if (!ops->backend || ops->destroy != cuda_destroy)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "not a CUDA op table");
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
            status = error_fail(MOIRE_ERROR_BACKEND, "cudaEventCreate failed");
        float best_ms = 0.0f;
        for (int i = 0; status == MOIRE_OK && i < 6; i++) {
            cudaEventRecord(start, cb->stream);
            cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, cb->stream);
            cudaEventRecord(stop, cb->stream);
            cudaError_t err = cudaEventSynchronize(stop);
            if (err != cudaSuccess) {
                status = ops_cuda_fail(err, "bandwidth probe", __func__);
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
