/* ops_cuda_parts.h — what ops_cuda.c and ops_cuda_ops.c share, private to the CUDA backend:
 * the error macros, the backend's state, and the functions each file lends the other. */
#ifndef MOIRE_OPS_CUDA_PARTS_H
#define MOIRE_OPS_CUDA_PARTS_H

#include "ops.h"

#include <cublasLt.h>
#include <cuda_runtime_api.h>
#include <stdbool.h>
#include <stdint.h>

/* ---- errors (ops_cuda.c) ---------------------------------------------------------------- */

/* A CUDA error as a moire_status naming the statement and the function; out of device
 * memory is MOIRE_ERROR_OUT_OF_MEMORY with the sizes. */
moire_status ops_cuda_fail(cudaError_t err, const char *what, const char *func);

/* A cuBLASLt error as a moire_status. */
moire_status ops_cuda_lt_fail(cublasStatus_t st, const char *what, const char *func);

#define CUDA_TRY(stmt)                                                                     \
    do {                                                                                   \
        cudaError_t err_ = (stmt);                                                         \
        if (err_ != cudaSuccess)                                                           \
            return ops_cuda_fail(err_, #stmt, __func__);                                       \
    } while (0)
#define LT_TRY(stmt)                                                                       \
    do {                                                                                   \
        cublasStatus_t st_ = (stmt);                                                       \
        if (st_ != CUBLAS_STATUS_SUCCESS)                                                  \
            return ops_cuda_lt_fail(st_, #stmt, __func__);                                          \
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

static inline cuda_backend *backend_of(const moire_ops *ops)
{
    return (cuda_backend *)ops->backend;
}

#define STREAM(ops) (backend_of(ops)->stream)

/* ---- ops_cuda.c ------------------------------------------------------------------------- */

/* The fp32 device array of a bound weight (NULL when absent). */
const float *ops_cuda_f32_of(const moire_tensor *t);

/* Scratch for one op from the context's arena; the op releases it (LIFO) before returning. */
moire_status ops_cuda_scratch(const moire_ops *ops, size_t bytes, void **out);

/* One cuBLASLt GEMM (column-major, plans cached per shape). */
moire_status ops_cuda_lt_gemm(cuda_backend *cb, bool ta, bool tb, int m, int n, int k,
                              const void *A, int64_t lda, const void *B, int64_t ldb, bool bf16,
                              float *C, int64_t ldc, const float *bias);

/* ---- ops_cuda_ops.c: the op entries of the table ---------------------------------------- */

moire_status ops_cuda_linear(const moire_ops *ops, float *y, const float *x,
                             const moire_tensor *w, const moire_tensor *b, int M, int K,
                             int N);
moire_status ops_cuda_layernorm_modulate(const moire_ops *ops, float *y, const float *x,
                                         const float *shift, const float *scale,
                                         int64_t mod_stride, int n, int T, int D, float eps);
moire_status ops_cuda_layernorm_affine(const moire_ops *ops, float *y, const float *x,
                                       const moire_tensor *w, const moire_tensor *b, int T,
                                       int D, float eps);
moire_status ops_cuda_gate_residual(const moire_ops *ops, float *x, const float *y,
                                    int64_t y_stride, const float *gate,
                                    int64_t gate_stride, int n, int T, int D);
moire_status ops_cuda_attention(const moire_ops *ops, float *out, const float *qkv, int n,
                                int T, int H, int hd, const moire_tensor *qnw,
                                const moire_tensor *qnb, const moire_tensor *knw,
                                const moire_tensor *knb, float eps);
moire_status ops_cuda_cross_attention(const moire_ops *ops, float *out, const float *q,
                                      int ldq, const float *k, const float *v, int ldkv,
                                      int Tq, int Tk, int H, int hd);
moire_status ops_cuda_router_topk(const moire_ops *ops, float *logits, int32_t *top_ids,
                                  float *top_weights, const float *h, const moire_tensor *w,
                                  int T, int D, int E, int k);
moire_status ops_cuda_moe_experts(const moire_ops *ops, float *y, const float *h, int T,
                                  int D, const moire_swiglu *experts,
                                  const moire_swiglu *shared, int k, const int32_t *top_ids,
                                  const float *top_weights);
moire_status ops_cuda_router_expert_choice(const moire_ops *ops, float *scores,
                                           int32_t *tokens, float *gates, const float *h,
                                           const moire_tensor *w, int n, int T, int group,
                                           int D, int E, float capacity_factor);
moire_status ops_cuda_moe_expert_choice(const moire_ops *ops, float *y, const float *h,
                                        int N, int D, const moire_swiglu *experts,
                                        const moire_swiglu *shared, int M,
                                        const int32_t *tokens, const float *gates);
moire_status ops_cuda_swiglu(const moire_ops *ops, float *y, const float *h, int T, int D,
                             const moire_swiglu *mlp);
moire_status ops_cuda_silu(const moire_ops *ops, float *y, const float *x, int64_t count);
moire_status ops_cuda_gelu(const moire_ops *ops, float *y, const float *x, int64_t count);
moire_status ops_cuda_relu(const moire_ops *ops, float *y, const float *x, int64_t count);
moire_status ops_cuda_scale(const moire_ops *ops, float *y, const float *x, float alpha,
                            int64_t count);
moire_status ops_cuda_add(const moire_ops *ops, float *y, const float *a, const float *b,
                          int64_t count);
moire_status ops_cuda_gather_rows(const moire_ops *ops, float *y, const moire_tensor *table,
                                  const int32_t *ids, int rows, int D);
moire_status ops_cuda_masked_mean_rows(const moire_ops *ops, float *out, const float *x,
                                       const int32_t *lengths, int P, int L, int D);
moire_status ops_cuda_transpose(const moire_ops *ops, float *y, const float *x, int rows,
                                int cols);
moire_status ops_cuda_copy_2d(const moire_ops *ops, float *dst, int64_t dst_ld,
                              const float *src, int64_t src_ld, int rows, int64_t cols);
moire_status ops_cuda_sampler_op(const moire_ops *ops, const moire_sampler_args *a);
moire_status ops_cuda_guidance_combine(const moire_ops *ops, float *out, const float *both,
                                       int n, int64_t image, int64_t guided, float scale);
moire_status ops_cuda_patchify(const moire_ops *ops, float *dst, const float *src, int n,
                               int C, int h, int w, int p, bool inverse);
moire_status ops_cuda_timestep_frequencies(const moire_ops *ops, float *freq, const float *t,
                                           int n);
moire_status ops_cuda_conv2d(const moire_ops *ops, float *y, const float *x,
                             const moire_tensor *w, const moire_tensor *b, int ci, int H,
                             int W, int co, int k, int stride, int pad_lo, int pad_hi);
moire_status ops_cuda_group_norm_stats(const moire_ops *ops, float *stats, const float *x,
                                       int C, int64_t HW, int G, float eps);
moire_status ops_cuda_group_norm_apply(const moire_ops *ops, float *y, const float *x,
                                       const float *stats, const moire_tensor *w,
                                       const moire_tensor *b, int C, int64_t HW, int G,
                                       bool with_silu);
moire_status ops_cuda_upsample_nearest2x(const moire_ops *ops, float *y, const float *x,
                                         int C, int H, int W);
moire_status ops_cuda_avgpool2(const moire_ops *ops, float *y, const float *x, int C, int H,
                               int W);

#endif /* MOIRE_OPS_CUDA_PARTS_H */
