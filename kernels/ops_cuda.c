/* ops_cuda.c — the CUDA backend's op table (engine/ops.h): device memory, the weight cache,
 * cuBLASLt GEMMs and the launches of the kernels in elementwise.cu and moe.cu.
 * Design and plans: docs/CUDA.md.
 *
 * Memory. Activations live in device buffers from mem_alloc (forward.c allocates them once
 * per call). Model weights arrive as host pointers (ops.h) and are copied to the device on
 * first use, then found again by pointer: a hash table keyed by (host pointer, kind), cleared
 * when another model is bound. Experts are packed per block as [E, 2F, D] (gate rows, then
 * up rows) and [E, D, F], so the grouped GEMMs address expert e by offset. In bf16 mode the
 * GEMM weights are stored as bf16 (converted on the device while uploading); LayerNorm
 * weights, biases and the router stay fp32 (routing decisions must not flip).
 *
 * Host synchronisation happens only in download (results, debug tensors) and when a
 * scratch buffer has to grow (cudaFree); the MoE path reads every size from device memory.
 *
 * Host fallback. An op called with host activations (the EC-DiT forward and the text
 * encoder still use host buffers) runs on the CPU reference table instead, so such models
 * keep working in a CUDA context, on the CPU.
 *
 * Errors. Every CUDA/cuBLAS call goes through CUDA_TRY/LT_TRY, which turn a failure into a
 * moire_status with the statement text; out of device memory is MOIRE_ERROR_OUT_OF_MEMORY
 * with the sizes, never a crash.
 */
#include "internal.h"
#include "kernels.h"
#include "model.h"
#include "ops.h"

#include <cublasLt.h>
#include <cublas_api.h>
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

enum weight_kind {
    WK_F32 = 0,      /* kept fp32: norms, biases, router, the embedding MLP's biases       */
    WK_GEMM = 1,     /* a linear weight: bf16 in bf16 mode                                 */
    WK_EXPERTS_GU,   /* a block's experts, gate ‖ up packed: [E, 2F, D]                    */
    WK_EXPERTS_DOWN, /* a block's experts, down: [E, D, F]                                 */
    WK_SHARED_GU,    /* the shared expert, gate ‖ up: [2S, D]                              */
};

typedef struct weight_entry {
    const void *host; /* NULL = empty slot */
    int kind;
    size_t count;     /* elements */
    void *dev;
} weight_entry;

typedef struct device_block {
    void *ptr;
    size_t bytes;
} device_block;

enum { SCRATCH_X16, SCRATCH_MOE, SCRATCH_STAGE, SCRATCH_COUNT };

#define PLAN_CACHE 64

typedef struct lt_plan {
    bool used;
    int M, K, N, align;
    bool bf16, bias, epilogue;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a, b, c;
    cublasLtMatmulAlgo_t algo;
} lt_plan;

typedef struct cuda_backend {
    int device;
    bool bf16;
    cudaStream_t stream;
    cublasLtHandle_t lt;
    void *lt_workspace;
    size_t lt_workspace_bytes;
    lt_plan plans[PLAN_CACHE];
    int next_plan;

    const moire_model *model;   /* whose weights the cache holds (NULL: ad-hoc weights) */
    weight_entry *weights;      /* open addressing, capacity a power of two             */
    size_t weight_cap, weight_used;

    device_block *blocks;       /* activations from mem_alloc: host/device detection    */
    size_t block_count, block_cap;

    device_block scratch[SCRATCH_COUNT];
    size_t allocated, peak;     /* bytes through this backend (weights, buffers, scratch) */

    moire_ops cpu;              /* the reference, for calls with host activations        */
    char name[128];
    size_t total_memory;
    double copy_bytes_per_s;
} cuda_backend;

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

static moire_status device_alloc(cuda_backend *cb, void **ptr, size_t bytes, const char *what)
{
    *ptr = NULL;
    if (bytes == 0)
        bytes = 256;
    cudaError_t err = cudaMalloc(ptr, bytes);
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
    cudaFree(ptr);
    account(cb, bytes ? bytes : 256, false);
}

/* A scratch buffer of at least `bytes`, grown (never shrunk) on demand. Growing frees the old
 * one (cudaFree waits for the device), so a warm-up call sizes everything before a graph
 * capture could begin. */
static moire_status scratch_get(cuda_backend *cb, int slot, size_t bytes, void **out)
{
    device_block *s = &cb->scratch[slot];
    if (s->bytes < bytes) {
        device_release(cb, s->ptr, s->bytes);
        s->ptr = NULL;
        s->bytes = 0;
        const size_t want = bytes + bytes / 4;
        moire_status status = device_alloc(cb, &s->ptr, want, "scratch memory");
        if (status != MOIRE_OK)
            return status;
        s->bytes = want;
    }
    *out = s->ptr;
    return MOIRE_OK;
}

/* ---- activations: allocation registry ------------------------------------------------- */

static bool is_device(const cuda_backend *cb, const void *ptr)
{
    const char *p = ptr;
    for (size_t i = 0; i < cb->block_count; i++) {
        const char *base = cb->blocks[i].ptr;
        if (p >= base && p < base + cb->blocks[i].bytes)
            return true;
    }
    return false;
}

static void *cuda_mem_alloc(const moire_ops *ops, size_t bytes)
{
    cuda_backend *cb = backend_of(ops);
    if (cb->block_count == cb->block_cap) {
        size_t cap = cb->block_cap ? 2 * cb->block_cap : 32;
        device_block *grown = realloc(cb->blocks, cap * sizeof *grown);
        if (!grown) {
            moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory");
            return NULL;
        }
        cb->blocks = grown;
        cb->block_cap = cap;
    }
    void *ptr;
    if (device_alloc(cb, &ptr, bytes, "a forward-pass buffer") != MOIRE_OK)
        return NULL;
    cb->blocks[cb->block_count++] = (device_block){ptr, bytes ? bytes : 256};
    return ptr;
}

static void cuda_mem_free(const moire_ops *ops, void *ptr)
{
    cuda_backend *cb = backend_of(ops);
    if (!ptr)
        return;
    for (size_t i = 0; i < cb->block_count; i++)
        if (cb->blocks[i].ptr == ptr) {
            device_release(cb, ptr, cb->blocks[i].bytes);
            cb->blocks[i] = cb->blocks[--cb->block_count];
            return;
        }
}

static moire_status cuda_upload(const moire_ops *ops, void *dst, const void *src, size_t bytes)
{
    cuda_backend *cb = backend_of(ops);
    /* From pageable memory the call returns once `src` has been staged, so the caller may
     * free it at once; the copy itself stays ordered in the stream. */
    CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cb->stream));
    return MOIRE_OK;
}

static moire_status cuda_download(const moire_ops *ops, void *dst, const void *src,
                                  size_t bytes)
{
    cuda_backend *cb = backend_of(ops);
    CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, cb->stream));
    /* Errors of earlier kernels surface here. */
    CUDA_TRY(cudaStreamSynchronize(cb->stream));
    return MOIRE_OK;
}

/* ---- weights -------------------------------------------------------------------------- */

static size_t weight_slot(const cuda_backend *cb, const void *host, int kind)
{
    uint64_t h = (uint64_t)(uintptr_t)host * 0x9E3779B97F4A7C15ull ^ (uint64_t)kind * 0x632BE5ABull;
    return (size_t)(h >> 17) & (cb->weight_cap - 1);
}

static weight_entry *weight_find(cuda_backend *cb, const void *host, int kind)
{
    if (!cb->weight_cap)
        return NULL;
    for (size_t i = weight_slot(cb, host, kind);; i = (i + 1) & (cb->weight_cap - 1)) {
        weight_entry *e = &cb->weights[i];
        if (!e->host)
            return NULL;
        if (e->host == host && e->kind == kind)
            return e;
    }
}

static size_t kind_element_bytes(const cuda_backend *cb, int kind)
{
    return kind == WK_F32 || !cb->bf16 ? sizeof(float) : sizeof(uint16_t);
}

static void weights_clear(cuda_backend *cb)
{
    for (size_t i = 0; i < cb->weight_cap; i++)
        if (cb->weights[i].host)
            device_release(cb, cb->weights[i].dev,
                           cb->weights[i].count * kind_element_bytes(cb, cb->weights[i].kind));
    free(cb->weights);
    cb->weights = NULL;
    cb->weight_cap = cb->weight_used = 0;
}

static moire_status weight_insert(cuda_backend *cb, const void *host, int kind, size_t count,
                                  void *dev)
{
    if (2 * (cb->weight_used + 1) > cb->weight_cap) {
        size_t cap = cb->weight_cap ? 2 * cb->weight_cap : 1024;
        weight_entry *old = cb->weights;
        size_t old_cap = cb->weight_cap;
        cb->weights = calloc(cap, sizeof *cb->weights);
        if (!cb->weights) {
            cb->weights = old;
            return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory");
        }
        cb->weight_cap = cap;
        for (size_t i = 0; i < old_cap; i++)
            if (old[i].host) {
                size_t j = weight_slot(cb, old[i].host, old[i].kind);
                while (cb->weights[j].host)
                    j = (j + 1) & (cap - 1);
                cb->weights[j] = old[i];
            }
        free(old);
    }
    size_t j = weight_slot(cb, host, kind);
    while (cb->weights[j].host)
        j = (j + 1) & (cb->weight_cap - 1);
    cb->weights[j] = (weight_entry){host, kind, count, dev};
    cb->weight_used++;
    return MOIRE_OK;
}

/* Copies count floats from the host to dev as fp32, or as bf16 when `to_bf16` (through a
 * staging buffer, converted on the device). */
static moire_status copy_weight(cuda_backend *cb, void *dev, const float *host, size_t count,
                                bool to_bf16)
{
    if (!to_bf16) {
        CUDA_TRY(cudaMemcpyAsync(dev, host, count * sizeof(float), cudaMemcpyHostToDevice,
                                 cb->stream));
        return MOIRE_OK;
    }
    const size_t chunk = (size_t)16 << 20;
    void *stage;
    moire_status status = scratch_get(cb, SCRATCH_STAGE, chunk * sizeof(float), &stage);
    if (status != MOIRE_OK)
        return status;
    for (size_t off = 0; off < count; off += chunk) {
        const size_t n = count - off < chunk ? count - off : chunk;
        CUDA_TRY(cudaMemcpyAsync(stage, host + off, n * sizeof(float), cudaMemcpyHostToDevice,
                                 cb->stream));
        CUDA_TRY(mk_f32_to_bf16((uint16_t *)dev + off, stage, (int64_t)n, cb->stream));
    }
    return MOIRE_OK;
}

/* The device copy of a plain weight tensor (fp32, or bf16 for WK_GEMM in bf16 mode). */
static moire_status weight_get(cuda_backend *cb, const float *host, size_t count, int kind,
                               const void **dev_out)
{
    *dev_out = NULL;
    if (!host)
        return MOIRE_OK;
    weight_entry *e = weight_find(cb, host, kind);
    if (e && e->count == count) {
        *dev_out = e->dev;
        return MOIRE_OK;
    }
    if (e) /* same address, other size: a stale entry of freed host memory */
        return moire_fail(MOIRE_ERROR_BACKEND,
                          "CUDA weight cache: a weight changed size at the same address; "
                          "bind the model again (ops->bind_model)");
    const bool to_bf16 = kind != WK_F32 && cb->bf16;
    void *dev;
    moire_status status = device_alloc(cb, &dev, count * kind_element_bytes(cb, kind),
                                       "model weights");
    if (status == MOIRE_OK)
        status = copy_weight(cb, dev, host, count, to_bf16);
    if (status == MOIRE_OK)
        status = weight_insert(cb, host, kind, count, dev);
    if (status != MOIRE_OK) {
        device_release(cb, dev, count * kind_element_bytes(cb, kind));
        return status;
    }
    *dev_out = dev;
    return MOIRE_OK;
}

/* A packed group: `parts` host tensors of `each` floats, one after another on the device. */
static moire_status weight_get_packed(cuda_backend *cb, const void *key, int kind,
                                      const float *const *parts, int part_count, size_t each,
                                      const void **dev_out)
{
    const size_t count = each * part_count;
    weight_entry *e = weight_find(cb, key, kind);
    if (e && e->count == count) {
        *dev_out = e->dev;
        return MOIRE_OK;
    }
    if (e)
        return moire_fail(MOIRE_ERROR_BACKEND,
                          "CUDA weight cache: experts changed shape at the same address; bind "
                          "the model again (ops->bind_model)");
    const size_t elem = kind_element_bytes(cb, kind);
    void *dev;
    moire_status status = device_alloc(cb, &dev, count * elem, "expert weights");
    for (int i = 0; status == MOIRE_OK && i < part_count; i++)
        status = copy_weight(cb, (char *)dev + (size_t)i * each * elem, parts[i], each,
                             cb->bf16);
    if (status == MOIRE_OK)
        status = weight_insert(cb, key, kind, count, dev);
    if (status != MOIRE_OK) {
        device_release(cb, dev, count * elem);
        return status;
    }
    *dev_out = dev;
    return MOIRE_OK;
}

static moire_status cuda_bind_model(const moire_ops *ops, const moire_model *model)
{
    cuda_backend *cb = backend_of(ops);
    if (model && model == cb->model)
        return MOIRE_OK;
    CUDA_TRY(cudaStreamSynchronize(cb->stream));
    weights_clear(cb);
    cb->model = model;
    return MOIRE_OK;
}

/* ---- host fallback -------------------------------------------------------------------- */

/* True when every non-NULL pointer is host memory (the op then runs on the CPU); false when
 * all are device buffers; a mix is an error. */
static moire_status check_pointers(cuda_backend *cb, const char *op, bool *on_host, int count,
                                   ...)
{
    va_list args;
    va_start(args, count);
    int host = 0, device = 0;
    for (int i = 0; i < count; i++) {
        const void *p = va_arg(args, const void *);
        if (!p)
            continue;
        if (is_device(cb, p))
            device++;
        else
            host++;
    }
    va_end(args);
    *on_host = host > 0 && device == 0;
    if (host && device)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "CUDA %s: some tensors are in host memory and some on the device", op);
    return MOIRE_OK;
}

#define HOST_FALLBACK(op, call, ...)                                                       \
    do {                                                                                   \
        bool on_host_;                                                                     \
        moire_status st_ = check_pointers(cb, op, &on_host_, __VA_ARGS__);                 \
        if (st_ != MOIRE_OK)                                                               \
            return st_;                                                                    \
        if (on_host_)                                                                      \
            return (call);                                                                 \
    } while (0)

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
    cublasLtMatrixLayoutDestroy(p->a);
    cublasLtMatrixLayoutDestroy(p->b);
    cublasLtMatrixLayoutDestroy(p->c);
    memset(p, 0, sizeof *p);
}

/* Column-major view of y[M,N] = x[M,K]·w[N,K]ᵀ: yᵀ (N×M, ld N) = op(A)·B with A = w as a
 * K×N matrix (ld K, transposed) and B = xᵀ as K×M (ld K). The bias epilogue adds b[N] per
 * row of yᵀ. */
static moire_status plan_make(cuda_backend *cb, lt_plan *p, int M, int K, int N, bool bf16,
                              bool bias, int align, bool epilogue)
{
    memset(p, 0, sizeof *p);
    const cudaDataType_t in_type = bf16 ? CUDA_R_16BF : CUDA_R_32F;
    LT_TRY(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    p->used = true; /* from here on plan_destroy releases what exists */
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    LT_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    LT_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    if (bias && epilogue) {
        const cublasLtEpilogue_t ep = CUBLASLT_EPILOGUE_BIAS;
        const cudaDataType_t bias_type = CUDA_R_32F;
        LT_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep,
                                              sizeof ep));
        LT_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                                              &bias_type, sizeof bias_type));
    }
    LT_TRY(cublasLtMatrixLayoutCreate(&p->a, in_type, (uint64_t)K, (uint64_t)N, K));
    LT_TRY(cublasLtMatrixLayoutCreate(&p->b, in_type, (uint64_t)K, (uint64_t)M, K));
    LT_TRY(cublasLtMatrixLayoutCreate(&p->c, CUDA_R_32F, (uint64_t)N, (uint64_t)M, N));

    cublasLtMatmulPreference_t pref;
    LT_TRY(cublasLtMatmulPreferenceCreate(&pref));
    const uint32_t al = (uint32_t)align;
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
                          bf16 ? "bf16" : "fp32", M, K, N, epilogue && bias ? " with bias" : "",
                          cublasGetStatusString(st));
    }
    p->algo = result.algo;
    p->M = M, p->K = K, p->N = N, p->align = align;
    p->bf16 = bf16, p->bias = bias, p->epilogue = epilogue;
    return MOIRE_OK;
}

static moire_status plan_get(cuda_backend *cb, int M, int K, int N, bool bf16, bool bias,
                             int align, lt_plan **out)
{
    for (int i = 0; i < PLAN_CACHE; i++) {
        lt_plan *p = &cb->plans[i];
        if (p->used && p->M == M && p->K == K && p->N == N && p->bf16 == bf16 &&
            p->bias == bias && p->align == align) {
            *out = p;
            return MOIRE_OK;
        }
    }
    lt_plan *p = &cb->plans[cb->next_plan];
    cb->next_plan = (cb->next_plan + 1) % PLAN_CACHE;
    plan_destroy(p);
    moire_status status = plan_make(cb, p, M, K, N, bf16, bias, align, true);
    if (status != MOIRE_OK && bias) { /* no bias epilogue for this shape: add it apart */
        moire_error_clear();
        status = plan_make(cb, p, M, K, N, bf16, bias, align, false);
        if (status == MOIRE_OK)
            p->bias = true;
    }
    if (status != MOIRE_OK)
        return status;
    *out = p;
    return MOIRE_OK;
}

/* y[M,N] = x[M,K]·w[N,K]ᵀ + b[N]; w on the device in the mode's GEMM dtype when
 * w_is_gemm, else fp32; b fp32 or NULL. */
static moire_status gemm(cuda_backend *cb, float *y, const float *x, const void *w,
                         bool w_bf16, const float *b, int M, int K, int N)
{
    if (M <= 0 || N <= 0)
        return MOIRE_OK;
    const void *x_in = x;
    if (w_bf16) {
        void *x16;
        moire_status status = scratch_get(cb, SCRATCH_X16, (size_t)M * K * sizeof(uint16_t),
                                          &x16);
        if (status != MOIRE_OK)
            return status;
        CUDA_TRY(mk_f32_to_bf16(x16, x, (int64_t)M * K, cb->stream));
        x_in = x16;
    }
    int align = pointer_alignment(x_in);
    const int aw = pointer_alignment(w), ay = pointer_alignment(y);
    align = aw < align ? aw : align;
    align = ay < align ? ay : align;
    lt_plan *p;
    moire_status status = plan_get(cb, M, K, N, w_bf16, b != NULL, align, &p);
    if (status != MOIRE_OK)
        return status;
    if (b && p->epilogue)
        LT_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &b,
                                              sizeof b));
    const float one = 1.0f, zero = 0.0f;
    LT_TRY(cublasLtMatmul(cb->lt, p->desc, &one, w, p->a, x_in, p->b, &zero, y, p->c, y, p->c,
                          &p->algo, cb->lt_workspace, cb->lt_workspace_bytes, cb->stream));
    if (b && !p->epilogue)
        CUDA_TRY(mk_add_bias(y, b, M, N, cb->stream));
    return MOIRE_OK;
}

/* ---- ops ------------------------------------------------------------------------------ */

static moire_status cuda_linear(const moire_ops *ops, float *y, const float *x, const float *w,
                                const float *b, int M, int K, int N)
{
    cuda_backend *cb = backend_of(ops);
    HOST_FALLBACK("linear", cb->cpu.linear(&cb->cpu, y, x, w, b, M, K, N), 2, y, x);
    const void *dw, *db;
    moire_status status = weight_get(cb, w, (size_t)N * K, WK_GEMM, &dw);
    if (status == MOIRE_OK)
        status = weight_get(cb, b, (size_t)N, WK_F32, &db);
    if (status != MOIRE_OK)
        return status;
    return gemm(cb, y, x, dw, cb->bf16, db, M, K, N);
}

static moire_status cuda_layernorm_modulate(const moire_ops *ops, float *y, const float *x,
                                            const float *shift, const float *scale, int T,
                                            int D, float eps)
{
    cuda_backend *cb = backend_of(ops);
    HOST_FALLBACK("layernorm_modulate",
                  cb->cpu.layernorm_modulate(&cb->cpu, y, x, shift, scale, T, D, eps), 4, y, x,
                  shift, scale);
    CUDA_TRY(mk_layernorm_modulate(y, x, shift, scale, T, D, eps, cb->stream));
    return MOIRE_OK;
}

static moire_status cuda_gate_residual(const moire_ops *ops, float *x, const float *y,
                                       const float *gate, int T, int D)
{
    cuda_backend *cb = backend_of(ops);
    HOST_FALLBACK("gate_residual", cb->cpu.gate_residual(&cb->cpu, x, y, gate, T, D), 3, x, y,
                  gate);
    CUDA_TRY(mk_gate_residual(x, y, gate, T, D, cb->stream));
    return MOIRE_OK;
}

static moire_status cuda_silu(const moire_ops *ops, float *y, const float *x, int64_t count)
{
    cuda_backend *cb = backend_of(ops);
    bool on_host;
    moire_status status = check_pointers(cb, "silu", &on_host, 2, y, x);
    if (status != MOIRE_OK)
        return status;
    if (on_host) {
        for (int64_t i = 0; i < count; i++)
            y[i] = x[i] / (1.0f + expf(-x[i]));
        return MOIRE_OK;
    }
    CUDA_TRY(mk_silu(y, x, count, cb->stream));
    return MOIRE_OK;
}

static moire_status cuda_attention(const moire_ops *ops, float *out, const float *qkv, int T,
                                   int H, int hd, const float *q_norm_w, const float *q_norm_b,
                                   const float *k_norm_w, const float *k_norm_b, float eps)
{
    cuda_backend *cb = backend_of(ops);
    HOST_FALLBACK("attention",
                  cb->cpu.attention(&cb->cpu, out, qkv, T, H, hd, q_norm_w, q_norm_b, k_norm_w,
                                    k_norm_b, eps),
                  2, out, qkv);
    if (hd > 128)
        return moire_fail(MOIRE_ERROR_UNSUPPORTED,
                          "CUDA attention supports head_dim up to 128 (this model has %d); use "
                          "--device cpu",
                          hd);
    const void *qw = NULL, *qb = NULL, *kw = NULL, *kb = NULL;
    moire_status status = MOIRE_OK;
    if (q_norm_w) {
        status = weight_get(cb, q_norm_w, (size_t)hd, WK_F32, &qw);
        if (status == MOIRE_OK)
            status = weight_get(cb, q_norm_b, (size_t)hd, WK_F32, &qb);
        if (status == MOIRE_OK)
            status = weight_get(cb, k_norm_w, (size_t)hd, WK_F32, &kw);
        if (status == MOIRE_OK)
            status = weight_get(cb, k_norm_b, (size_t)hd, WK_F32, &kb);
        if (status != MOIRE_OK)
            return status;
        if (!qb || !kw || !kb)
            return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                              "CUDA attention: the qk-norm layout needs all four norm tensors");
    }
    CUDA_TRY(mk_attention(out, qkv, T, H, hd, qw, qb, kw, kb, eps, cb->stream));
    return MOIRE_OK;
}

static moire_status cuda_router_topk(const moire_ops *ops, float *logits, int32_t *top_ids,
                                     float *top_weights, const float *h, const float *w, int T,
                                     int D, int E, int k)
{
    cuda_backend *cb = backend_of(ops);
    HOST_FALLBACK("router_topk",
                  cb->cpu.router_topk(&cb->cpu, logits, top_ids, top_weights, h, w, T, D, E, k),
                  4, logits, top_ids, top_weights, h);
    if (E > MK_MOE_MAX_EXPERTS || k < 1 || k > E)
        return moire_fail(MOIRE_ERROR_UNSUPPORTED,
                          "CUDA router: %d experts, top-%d (supported: up to %d experts)", E, k,
                          MK_MOE_MAX_EXPERTS);
    const void *dw;
    moire_status status = weight_get(cb, w, (size_t)E * D, WK_F32, &dw);
    if (status != MOIRE_OK)
        return status;
    status = gemm(cb, logits, h, dw, false, NULL, T, D, E);
    if (status != MOIRE_OK)
        return status;
    CUDA_TRY(mk_router_topk(top_ids, top_weights, logits, T, E, k, cb->stream));
    return MOIRE_OK;
}

static size_t align_up(size_t bytes)
{
    return (bytes + 255) & ~(size_t)255;
}

static moire_status cuda_moe_experts(const moire_ops *ops, float *y, const float *h, int T,
                                     int D, const dit_block_weights *block, int E, int k,
                                     const int32_t *top_ids, const float *top_weights)
{
    cuda_backend *cb = backend_of(ops);
    HOST_FALLBACK("moe_experts",
                  cb->cpu.moe_experts(&cb->cpu, y, h, T, D, block, E, k, top_ids, top_weights),
                  4, y, h, top_ids, top_weights);
    if (T <= 0)
        return MOIRE_OK;
    if (E < 1 || E > MK_MOE_MAX_EXPERTS || k < 1 || k > E)
        return moire_fail(MOIRE_ERROR_UNSUPPORTED,
                          "CUDA MoE: %d experts, top-%d (supported: up to %d experts)", E, k,
                          MK_MOE_MAX_EXPERTS);
    const int F = block->experts[0].hidden;
    for (int e = 1; e < E; e++)
        if (block->experts[e].hidden != F)
            return moire_fail(MOIRE_ERROR_UNSUPPORTED,
                              "CUDA MoE: experts of different widths (%d and %d) are not "
                              "supported; use --device cpu",
                              F, block->experts[e].hidden);
    const int S = block->shared_experts.hidden;

    /* Device copies: [E, 2F, D] gate ‖ up and [E, D, F] down (packed once per block). */
    const float **parts = malloc((size_t)2 * E * sizeof *parts);
    if (!parts)
        return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory");
    for (int e = 0; e < E; e++) {
        parts[2 * e] = block->experts[e].gate_proj_weight;
        parts[2 * e + 1] = block->experts[e].up_proj_weight;
    }
    const void *w_gu, *w_down, *s_gu = NULL, *s_down = NULL;
    moire_status status = weight_get_packed(cb, block->experts, WK_EXPERTS_GU, parts, 2 * E,
                                            (size_t)F * D, &w_gu);
    for (int e = 0; e < E; e++)
        parts[e] = block->experts[e].down_proj_weight;
    if (status == MOIRE_OK)
        status = weight_get_packed(cb, block->experts, WK_EXPERTS_DOWN, parts, E, (size_t)D * F,
                                   &w_down);
    if (status == MOIRE_OK && S > 0) {
        parts[0] = block->shared_experts.gate_proj_weight;
        parts[1] = block->shared_experts.up_proj_weight;
        status = weight_get_packed(cb, block->shared_experts.gate_proj_weight, WK_SHARED_GU,
                                   parts, 2, (size_t)S * D, &s_gu);
        if (status == MOIRE_OK)
            status = weight_get(cb, block->shared_experts.down_proj_weight, (size_t)D * S,
                                WK_GEMM, &s_down);
    }
    free(parts);
    if (status != MOIRE_OK)
        return status;

    /* Scratch, carved from one block: the dispatch arrays, then the activations. */
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
    char *base;
    status = scratch_get(cb, SCRATCH_MOE, total, (void **)&base);
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

    const int bf16 = cb->bf16;
    CUDA_TRY(mk_moe_route(offsets, tile_offsets, sorted_token, sorted_weight, slot_of_pair,
                          top_ids, top_weights, T, k, E, cb->stream));
    CUDA_TRY(mk_moe_gate_up(act, h, w_gu, bf16, offsets, tile_offsets, sorted_token, 0, E, D, F,
                            max_tiles, cb->stream));
    CUDA_TRY(mk_moe_down(rows, act, w_down, bf16, offsets, tile_offsets, 0, E, D, F, max_tiles,
                         cb->stream));
    if (S > 0) {
        CUDA_TRY(mk_moe_gate_up(shared_act, h, s_gu, bf16, NULL, NULL, NULL, T, 1, D, S, 0,
                                cb->stream));
        CUDA_TRY(mk_moe_down(shared_out, shared_act, s_down, bf16, NULL, NULL, T, 1, D, S, 0,
                             cb->stream));
    }
    CUDA_TRY(mk_moe_combine(y, S > 0 ? shared_out : NULL, rows, slot_of_pair, top_weights, T, D,
                            k, cb->stream));
    return MOIRE_OK;
}

/* ---- EC-DiT: on the CPU until ported (the EC-DiT forward uses host buffers) ------------ */

static moire_status not_on_cuda(const char *op)
{
    return moire_fail(MOIRE_ERROR_UNSUPPORTED,
                      "%s is not on the CUDA backend yet (EC-DiT models run on the CPU: "
                      "--device cpu)",
                      op);
}

static moire_status cuda_cross_attention(const moire_ops *ops, float *out, const float *q,
                                         int ldq, const float *k, const float *v, int ldkv,
                                         int Tq, int Tk, int H, int hd)
{
    cuda_backend *cb = backend_of(ops);
    HOST_FALLBACK("cross_attention",
                  cb->cpu.cross_attention(&cb->cpu, out, q, ldq, k, v, ldkv, Tq, Tk, H, hd), 4,
                  out, q, k, v);
    return not_on_cuda("cross-attention");
}

static moire_status cuda_router_expert_choice(const moire_ops *ops, float *scores,
                                              int32_t *tokens, float *gates, const float *h,
                                              const float *w, int n, int T, int group, int D,
                                              int E, float capacity_factor)
{
    cuda_backend *cb = backend_of(ops);
    HOST_FALLBACK("router_expert_choice",
                  cb->cpu.router_expert_choice(&cb->cpu, scores, tokens, gates, h, w, n, T,
                                               group, D, E, capacity_factor),
                  4, scores, tokens, gates, h);
    return not_on_cuda("expert-choice routing");
}

static moire_status cuda_moe_expert_choice(const moire_ops *ops, float *y, const float *h, int N,
                                           int D, const dit_swiglu_weights *experts,
                                           const dit_swiglu_weights *shared, int E, int M,
                                           const int32_t *tokens, const float *gates)
{
    cuda_backend *cb = backend_of(ops);
    HOST_FALLBACK("moe_expert_choice",
                  cb->cpu.moe_expert_choice(&cb->cpu, y, h, N, D, experts, shared, E, M, tokens,
                                            gates),
                  4, y, h, tokens, gates);
    return not_on_cuda("the expert-choice MoE");
}

static moire_status cuda_swiglu(const moire_ops *ops, float *y, const float *h, int T, int D,
                                const dit_swiglu_weights *mlp)
{
    cuda_backend *cb = backend_of(ops);
    HOST_FALLBACK("swiglu", cb->cpu.swiglu(&cb->cpu, y, h, T, D, mlp), 2, y, h);
    return not_on_cuda("the dense SwiGLU");
}

/* ---- life cycle ----------------------------------------------------------------------- */

static void cuda_destroy(moire_ops *ops)
{
    cuda_backend *cb = backend_of(ops);
    if (!cb)
        return;
    cudaStreamSynchronize(cb->stream);
    weights_clear(cb);
    for (int i = 0; i < PLAN_CACHE; i++)
        plan_destroy(&cb->plans[i]);
    for (int i = 0; i < SCRATCH_COUNT; i++)
        device_release(cb, cb->scratch[i].ptr, cb->scratch[i].bytes);
    for (size_t i = 0; i < cb->block_count; i++)
        cudaFree(cb->blocks[i].ptr);
    free(cb->blocks);
    if (cb->lt_workspace)
        cudaFree(cb->lt_workspace);
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
    CUDA_TRY(cudaMalloc(&cb->lt_workspace, cb->lt_workspace_bytes));
    return MOIRE_OK;
}

moire_status moire_ops_cuda_init(moire_ops *ops, int n_threads, bool bf16)
{
    cuda_backend *cb = calloc(1, sizeof *cb);
    if (!cb)
        return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory");
    moire_ops_cpu_init(&cb->cpu, n_threads);
    cb->bf16 = bf16;
    moire_status status = backend_start(cb);
    if (status != MOIRE_OK) {
        moire_ops tmp = {.backend = cb};
        cuda_destroy(&tmp);
        return status;
    }
    static const moire_ops prototype = {
        .name = "cuda",
        .linear = cuda_linear,
        .layernorm_modulate = cuda_layernorm_modulate,
        .gate_residual = cuda_gate_residual,
        .attention = cuda_attention,
        .router_topk = cuda_router_topk,
        .moe_experts = cuda_moe_experts,
        .cross_attention = cuda_cross_attention,
        .router_expert_choice = cuda_router_expert_choice,
        .moe_expert_choice = cuda_moe_expert_choice,
        .swiglu = cuda_swiglu,
        .mem_alloc = cuda_mem_alloc,
        .mem_free = cuda_mem_free,
        .upload = cuda_upload,
        .download = cuda_download,
        .bind_model = cuda_bind_model,
        .silu = cuda_silu,
        .destroy = cuda_destroy,
    };
    *ops = prototype;
    ops->n_threads = cb->cpu.n_threads;
    ops->backend = cb;
    return MOIRE_OK;
}

moire_status moire_ops_cuda_stats(const moire_ops *ops, moire_ops_stats *stats)
{
    memset(stats, 0, sizeof *stats);
    if (!ops->backend || ops->destroy != cuda_destroy)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "not a CUDA op table");
    cuda_backend *cb = backend_of(ops);
    if (cb->copy_bytes_per_s == 0.0) {
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
    return MOIRE_OK;
}
