/* ops_cuda_ops.c — the CUDA backend's op entries that launch the kernels of the .cu files
 * here (kernels.h) or cuBLASLt GEMMs: dense layers, LayerNorms, attention, routers and MoE
 * experts, the EC-DiT ops, elementwise and data movement, the sampling step's pieces and the
 * image ops. ops_cuda.c holds memory, the GEMM plans, graphs and the op table; docs/CUDA.md.
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
    const size_t mark = arena_mark(ops->arena);
    const void *x_in = x;
    if (bf16) {
        void *x16;
        moire_status status = ops_cuda_scratch(ops, (size_t)M * K * sizeof(uint16_t), &x16);
        if (status != MOIRE_OK)
            return status;
        CUDA_TRY(mk_f32_to_bf16(x16, x, (int64_t)M * K, cb->stream));
        x_in = x16;
    }
    moire_status status = ops_cuda_lt_gemm(cb, true, false, N, M, K, w->data, K, x_in, K, bf16, y, N, b);
    arena_release(ops->arena, mark);
    return status;
}

/* ---- transformer ops ------------------------------------------------------------------ */

moire_status ops_cuda_linear(const moire_ops *ops, float *y, const float *x,
                             const moire_tensor *w, const moire_tensor *b, int M, int K,
                             int N)
{
    return linear_rows(ops, y, x, w, ops_cuda_f32_of(b), M, K, N);
}

moire_status ops_cuda_layernorm_modulate(const moire_ops *ops, float *y, const float *x,
                                         const float *shift, const float *scale,
                                         int64_t mod_stride, int n, int T, int D, float eps)
{
    CUDA_TRY(mk_layernorm_modulate_n(y, x, shift, scale, mod_stride, n, T, D, eps,
                                     backend_of(ops)->stream));
    return MOIRE_OK;
}

moire_status ops_cuda_layernorm_affine(const moire_ops *ops, float *y, const float *x,
                                       const moire_tensor *w, const moire_tensor *b, int T,
                                       int D, float eps)
{
    CUDA_TRY(mk_layernorm_affine(y, x, ops_cuda_f32_of(w), ops_cuda_f32_of(b), T, D, eps,
                                 backend_of(ops)->stream));
    return MOIRE_OK;
}

moire_status ops_cuda_gate_residual(const moire_ops *ops, float *x, const float *y,
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

moire_status ops_cuda_attention(const moire_ops *ops, float *out, const float *qkv, int n,
                                int T, int H, int hd, const moire_tensor *qnw,
                                const moire_tensor *qnb, const moire_tensor *knw,
                                const moire_tensor *knb, float eps)
{
    const float *qw = ops_cuda_f32_of(qnw);
    if (qw && (!ops_cuda_f32_of(qnb) || !ops_cuda_f32_of(knw) || !ops_cuda_f32_of(knb)))
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "CUDA attention: the qk-norm layout needs all four norm tensors");
    const float *qb = qw ? ops_cuda_f32_of(qnb) : NULL, *kw = qw ? ops_cuda_f32_of(knw) : NULL,
                *kb = qw ? ops_cuda_f32_of(knb) : NULL;
    if (n > 0 && T > 0 && H > 0 && attention_on_tensor_cores(ops, hd)) {
        const size_t mark = arena_mark(ops->arena);
        void *workspace = NULL; /* bf16 q, k, v: n·T·3·H·⌈hd/16⌉·16 values */
        moire_status status =
            ops_cuda_scratch(ops, mk_attention_mma_workspace(n, T, T, H, hd), &workspace);
        if (status == MOIRE_OK) {
            cudaError_t err = mk_attention_n_mma(out, qkv, n, T, H, hd, qw, qb, kw, kb, eps,
                                                 workspace, backend_of(ops)->stream);
            if (err != cudaSuccess)
                status = ops_cuda_fail(err, "mk_attention_n_mma", __func__);
        }
        arena_release(ops->arena, mark);
        return status;
    }
    CUDA_TRY(mk_attention_n(out, qkv, n, T, H, hd, qw, qb, kw, kb, eps,
                            backend_of(ops)->stream));
    return MOIRE_OK;
}

moire_status ops_cuda_cross_attention(const moire_ops *ops, float *out, const float *q,
                                      int ldq, const float *k, const float *v, int ldkv,
                                      int Tq, int Tk, int H, int hd)
{
    if (Tq > 0 && Tk <= 0)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "attention over no keys");
    if (Tq > 0 && H > 0 && attention_on_tensor_cores(ops, hd)) {
        const size_t mark = arena_mark(ops->arena);
        void *workspace = NULL; /* bf16 q [Tq], k and v [Tk], per head ⌈hd/16⌉·16 values */
        moire_status status =
            ops_cuda_scratch(ops, mk_attention_mma_workspace(1, Tq, Tk, H, hd), &workspace);
        if (status == MOIRE_OK) {
            cudaError_t err = mk_cross_attention_mma(out, q, ldq, k, v, ldkv, Tq, Tk, H, hd,
                                                     workspace, backend_of(ops)->stream);
            if (err != cudaSuccess)
                status = ops_cuda_fail(err, "mk_cross_attention_mma", __func__);
        }
        arena_release(ops->arena, mark);
        return status;
    }
    CUDA_TRY(mk_cross_attention(out, q, ldq, k, v, ldkv, Tq, Tk, H, hd,
                                backend_of(ops)->stream));
    return MOIRE_OK;
}

moire_status ops_cuda_router_topk(const moire_ops *ops, float *logits, int32_t *top_ids,
                                  float *top_weights, const float *h, const moire_tensor *w,
                                  int T, int D, int E, int k)
{
    cuda_backend *cb = backend_of(ops);
    if (E > MK_MOE_MAX_EXPERTS || k < 1 || k > E)
        return error_fail(MOIRE_ERROR_UNSUPPORTED,
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

moire_status ops_cuda_moe_experts(const moire_ops *ops, float *y, const float *h, int T,
                                  int D, const moire_swiglu *experts,
                                  const moire_swiglu *shared, int k, const int32_t *top_ids,
                                  const float *top_weights)
{
    cuda_backend *cb = backend_of(ops);
    const int E = experts->experts, F = experts->hidden;
    if (T <= 0)
        return MOIRE_OK;
    if (E < 1 || E > MK_MOE_MAX_EXPERTS || k < 1 || k > E)
        return error_fail(MOIRE_ERROR_UNSUPPORTED,
                          "CUDA MoE: %d experts, top-%d (supported: up to %d experts)", E, k,
                          MK_MOE_MAX_EXPERTS);
    const int S = swiglu_present(shared) ? shared->hidden : 0;

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
    const size_t mark = arena_mark(ops->arena);
    char *base;
    moire_status status = ops_cuda_scratch(ops, total, (void **)&base);
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
    arena_release(ops->arena, mark);
    if (err != cudaSuccess)
        return ops_cuda_fail(err, "the MoE kernels", __func__);
    return MOIRE_OK;
}

moire_status ops_cuda_router_expert_choice(const moire_ops *ops, float *scores,
                                           int32_t *tokens, float *gates, const float *h,
                                           const moire_tensor *w, int n, int T, int group,
                                           int D, int E, float capacity_factor)
{
    if (E < 1 || E > MK_MOE_MAX_EXPERTS)
        return error_fail(MOIRE_ERROR_UNSUPPORTED,
                          "CUDA expert choice: %d experts (supported: up to %d)", E,
                          MK_MOE_MAX_EXPERTS);
    CUDA_TRY(mk_router_expert_choice(scores, tokens, gates, h, ops_cuda_f32_of(w), n, T, group, D, E,
                                     capacity_factor, backend_of(ops)->stream));
    return MOIRE_OK;
}

moire_status ops_cuda_moe_expert_choice(const moire_ops *ops, float *y, const float *h,
                                        int N, int D, const moire_swiglu *experts,
                                        const moire_swiglu *shared, int M,
                                        const int32_t *tokens, const float *gates)
{
    const int E = experts->experts, F = experts->hidden;
    const int S = swiglu_present(shared) ? shared->hidden : 0;
    if (S > 0 && is_bf16(shared) != is_bf16(experts))
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "CUDA expert-choice MoE: shared and routed experts differ in dtype");
    const size_t mark = arena_mark(ops->arena);
    void *workspace;
    moire_status status =
        ops_cuda_scratch(ops, mk_moe_expert_choice_workspace(N, D, F, S, E, M), &workspace);
    if (status != MOIRE_OK)
        return status;
    cudaError_t err = mk_moe_expert_choice(
        y, h, N, D, experts->gate_up.data, experts->down.data, F,
        S > 0 ? shared->gate_up.data : NULL, S > 0 ? shared->down.data : NULL, S,
        is_bf16(experts), E, M, tokens, gates, workspace, backend_of(ops)->stream);
    arena_release(ops->arena, mark);
    if (err != cudaSuccess)
        return ops_cuda_fail(err, "the expert-choice MoE kernels", __func__);
    return MOIRE_OK;
}

moire_status ops_cuda_swiglu(const moire_ops *ops, float *y, const float *h, int T, int D,
                             const moire_swiglu *mlp)
{
    cuda_backend *cb = backend_of(ops);
    const int F = mlp->hidden;
    if (T <= 0)
        return MOIRE_OK;
    const size_t mark = arena_mark(ops->arena);
    void *act;
    moire_status status = ops_cuda_scratch(ops, (size_t)T * F * sizeof(float), &act);
    if (status != MOIRE_OK)
        return status;
    cudaError_t err = swiglu_gemms(cb, y, act, h, mlp, NULL, NULL, NULL, T, 1, D, 0);
    arena_release(ops->arena, mark);
    if (err != cudaSuccess)
        return ops_cuda_fail(err, "the SwiGLU kernels", __func__);
    return MOIRE_OK;
}

/* ---- elementwise and data movement ---------------------------------------------------- */


moire_status ops_cuda_silu(const moire_ops *ops, float *y, const float *x, int64_t count)
{
    CUDA_TRY(mk_silu(y, x, count, STREAM(ops)));
    return MOIRE_OK;
}

moire_status ops_cuda_gelu(const moire_ops *ops, float *y, const float *x, int64_t count)
{
    CUDA_TRY(mk_gelu_erf(y, x, count, STREAM(ops)));
    return MOIRE_OK;
}

moire_status ops_cuda_relu(const moire_ops *ops, float *y, const float *x, int64_t count)
{
    CUDA_TRY(mk_relu(y, x, count, STREAM(ops)));
    return MOIRE_OK;
}

moire_status ops_cuda_scale(const moire_ops *ops, float *y, const float *x, float alpha,
                            int64_t count)
{
    CUDA_TRY(mk_scale(y, x, alpha, count, STREAM(ops)));
    return MOIRE_OK;
}

moire_status ops_cuda_add(const moire_ops *ops, float *y, const float *a, const float *b,
                          int64_t count)
{
    CUDA_TRY(mk_add(y, a, b, count, STREAM(ops)));
    return MOIRE_OK;
}

moire_status ops_cuda_gather_rows(const moire_ops *ops, float *y, const moire_tensor *table,
                                  const int32_t *ids, int rows, int D)
{
    CUDA_TRY(mk_gather_rows(y, ops_cuda_f32_of(table), ids, rows, D, STREAM(ops)));
    return MOIRE_OK;
}

moire_status ops_cuda_masked_mean_rows(const moire_ops *ops, float *out, const float *x,
                                       const int32_t *lengths, int P, int L, int D)
{
    CUDA_TRY(mk_masked_mean_rows(out, x, lengths, P, L, D, STREAM(ops)));
    return MOIRE_OK;
}

moire_status ops_cuda_transpose(const moire_ops *ops, float *y, const float *x, int rows,
                                int cols)
{
    CUDA_TRY(mk_transpose(y, x, rows, cols, STREAM(ops)));
    return MOIRE_OK;
}

moire_status ops_cuda_copy_2d(const moire_ops *ops, float *dst, int64_t dst_ld,
                              const float *src, int64_t src_ld, int rows, int64_t cols)
{
    CUDA_TRY(mk_copy_2d(dst, dst_ld, src, src_ld, rows, cols, STREAM(ops)));
    return MOIRE_OK;
}

/* ---- the sampling step: sampler update, guidance, patches (sampler.cu) -------------------- */

moire_status ops_cuda_sampler_op(const moire_ops *ops, const moire_sampler_args *a)
{
    CUDA_TRY(mk_sampler_op((int)a->op, a->slot, a->n, a->chw, a->out_stride,
                           a->learned_variance, a->y, a->y2, a->den, a->old, a->src, a->dst,
                           a->x_in, a->t_in, a->x0, a->model_out, a->noise, a->coef, a->step,
                           STREAM(ops)));
    return MOIRE_OK;
}

moire_status ops_cuda_guidance_combine(const moire_ops *ops, float *out, const float *both,
                                       int n, int64_t image, int64_t guided, float scale)
{
    CUDA_TRY(mk_guidance_combine(out, both, n, image, guided, scale, STREAM(ops)));
    return MOIRE_OK;
}

moire_status ops_cuda_patchify(const moire_ops *ops, float *dst, const float *src, int n,
                               int C, int h, int w, int p, bool inverse)
{
    CUDA_TRY(mk_patchify(dst, src, n, C, h, w, p, inverse ? 1 : 0, STREAM(ops)));
    return MOIRE_OK;
}

moire_status ops_cuda_timestep_frequencies(const moire_ops *ops, float *freq, const float *t,
                                           int n)
{
    CUDA_TRY(mk_timestep_frequencies(freq, t, n, 256, STREAM(ops)));
    return MOIRE_OK;
}

/* ---- image ops ------------------------------------------------------------------------- */

/* im2col scratch per band of output rows (floats): bounded whatever the image size. */
#define CONV_COL_BUDGET ((size_t)32 << 20)

/* y[co, Ho·Wo] = w[co, K] · col[K, Ho·Wo] (+ b): in column-major terms yᵀ (Ho·Wo × co, ld
 * Ho·Wo) = colᵀ (band × K, ld band) · wᵀ (K × co, ld K), one GEMM per band of output rows. */
moire_status ops_cuda_conv2d(const moire_ops *ops, float *y, const float *x,
                             const moire_tensor *w, const moire_tensor *b, int ci, int H,
                             int W, int co, int k, int stride, int pad_lo, int pad_hi)
{
    cuda_backend *cb = backend_of(ops);
    const int Ho = (H + pad_lo + pad_hi - k) / stride + 1;
    const int Wo = (W + pad_lo + pad_hi - k) / stride + 1;
    if (Ho <= 0 || Wo <= 0)
        return error_fail(MOIRE_ERROR_INVALID_ARGUMENT, "convolution of %dx%d with a %dx%d "
                          "kernel has no output", W, H, k, k);
    const int K = ci * k * k;
    const int64_t plane = (int64_t)Ho * Wo;
    const bool bf16 = w->dtype == MOIRE_DTYPE_BF16;
    const bool direct = k == 1 && stride == 1 && pad_lo == 0 && pad_hi == 0;
    size_t band = direct ? (size_t)Ho : CONV_COL_BUDGET / ((size_t)K * Wo);
    band = band < 1 ? 1 : (band > (size_t)Ho ? (size_t)Ho : band);
    const size_t mark = arena_mark(ops->arena);
    float *col = NULL;
    uint16_t *col16 = NULL;
    moire_status status = MOIRE_OK;
    if (!direct)
        status = ops_cuda_scratch(ops, (size_t)K * band * Wo * sizeof(float), (void **)&col);
    if (status == MOIRE_OK && bf16)
        status = ops_cuda_scratch(ops, (size_t)K * band * Wo * sizeof(uint16_t), (void **)&col16);
    for (int oy0 = 0; oy0 < Ho && status == MOIRE_OK; oy0 += (int)band) {
        const int rows = Ho - oy0 < (int)band ? Ho - oy0 : (int)band;
        const int64_t n = (int64_t)rows * Wo;
        const float *src = x; /* direct: the input itself, [ci, H·W] */
        int64_t ld = plane;
        if (!direct) {
            cudaError_t err = mk_im2col_band(col, x, ci, H, W, k, stride, pad_lo, Wo, oy0, rows,
                                             cb->stream);
            if (err != cudaSuccess) {
                status = ops_cuda_fail(err, "im2col", __func__);
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
                status = ops_cuda_fail(err, "narrowing the conv input", __func__);
                break;
            }
            A = col16;
        }
        if (status == MOIRE_OK)
            status = ops_cuda_lt_gemm(cb, false, false, (int)n, co, K, A, ld, w->data, K, bf16,
                                      y + (size_t)oy0 * Wo, plane, NULL);
    }
    if (status == MOIRE_OK && tensor_present(b)) {
        cudaError_t err = mk_add_channel_bias(y, ops_cuda_f32_of(b), co, plane, cb->stream);
        if (err != cudaSuccess)
            status = ops_cuda_fail(err, "conv bias", __func__);
    }
    arena_release(ops->arena, mark);
    return status;
}

moire_status ops_cuda_group_norm_stats(const moire_ops *ops, float *stats, const float *x,
                                       int C, int64_t HW, int G, float eps)
{
    CUDA_TRY(mk_group_norm_stats(stats, x, C, HW, G, eps, STREAM(ops)));
    return MOIRE_OK;
}

moire_status ops_cuda_group_norm_apply(const moire_ops *ops, float *y, const float *x,
                                       const float *stats, const moire_tensor *w,
                                       const moire_tensor *b, int C, int64_t HW, int G,
                                       bool with_silu)
{
    CUDA_TRY(mk_group_norm_apply(y, x, stats, ops_cuda_f32_of(w), ops_cuda_f32_of(b), C, HW, G, with_silu,
                                 STREAM(ops)));
    return MOIRE_OK;
}

moire_status ops_cuda_upsample_nearest2x(const moire_ops *ops, float *y, const float *x,
                                         int C, int H, int W)
{
    CUDA_TRY(mk_upsample_nearest2x(y, x, C, H, W, STREAM(ops)));
    return MOIRE_OK;
}

moire_status ops_cuda_avgpool2(const moire_ops *ops, float *y, const float *x, int C, int H,
                               int W)
{
    CUDA_TRY(mk_avgpool2(y, x, C, H, W, STREAM(ops)));
    return MOIRE_OK;
}

