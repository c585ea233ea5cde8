/* kernels.h — the C interface of the CUDA kernels (the .cu files here) to the host side of the
 * backend (ops_cuda.c). Plain C types only, so ops_cuda.c stays C11 and the .cu files need
 * no engine header. Every launcher enqueues on `stream` and returns the launch error
 * (cudaGetLastError()); none synchronises.
 *
 * All tensors are device pointers, row-major, fp32 unless the name says bf16 (stored as
 * uint16_t: the top half of an IEEE float, round-to-nearest-even). Shapes as in ops.h.
 */
#ifndef MOIRE_KERNELS_H
#define MOIRE_KERNELS_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* dst[count] (bf16) = src[count] (fp32), round to nearest even. */
cudaError_t mk_f32_to_bf16(uint16_t *dst, const float *src, int64_t count, cudaStream_t stream);

/* y[T,D] = LN(x) · (1 + scale[D]) + shift[D], LN without affine; y may be x. */
cudaError_t mk_layernorm_modulate(float *y, const float *x, const float *shift,
                                  const float *scale, int T, int D, float eps,
                                  cudaStream_t stream);

/* x[T,D] += gate[D] ⊙ y[T,D] (rounded like the CPU: product, then sum). */
cudaError_t mk_gate_residual(float *x, const float *y, const float *gate, int T, int D,
                             cudaStream_t stream);

/* y[count] = x / (1 + e^−x) */
cudaError_t mk_silu(float *y, const float *x, int64_t count, cudaStream_t stream);

/* y[M,N] += b[N] */
cudaError_t mk_add_bias(float *y, const float *b, int M, int N, cudaStream_t stream);

/* Attention over one image (ops.h `attention`): qkv[T, 3, H, hd] → out[T, H·hd], online
 * softmax (no T×T matrix), optional per-head LayerNorm of q and k (norm pointers non-NULL).
 * hd ≤ 128. */
cudaError_t mk_attention(float *out, const float *qkv, int T, int H, int hd,
                         const float *q_norm_w, const float *q_norm_b, const float *k_norm_w,
                         const float *k_norm_b, float eps, cudaStream_t stream);

/* Router: probs = softmax(logits[T,E]) (sum in double, like the CPU), top-k by repeated
 * selection (ties → lower id), not renormalised. E ≤ 256. */
cudaError_t mk_router_topk(int32_t *top_ids, float *top_weights, const float *logits, int T,
                           int E, int k, cudaStream_t stream);

/* MoE dispatch without host synchronisation (moe.cu). P = T·k (token, expert) pairs.
 *   route: offsets[E+1] (pairs per expert, exclusive scan), tile_offsets[E+1] (M-tiles of
 *   MK_MOE_TILE_M rows per expert, scanned), sorted_token[P], sorted_weight[P] (pairs grouped
 *   by expert, token order inside an expert), slot_of_pair[P] (where pair t·k+j went).
 * One block; deterministic. E ≤ MK_MOE_MAX_EXPERTS. */
#define MK_MOE_TILE_M 64
#define MK_MOE_MAX_EXPERTS 256
cudaError_t mk_moe_route(int32_t *offsets, int32_t *tile_offsets, int32_t *sorted_token,
                         float *sorted_weight, int32_t *slot_of_pair, const int32_t *top_ids,
                         const float *top_weights, int T, int k, int E, cudaStream_t stream);

/* Grouped GEMM 1 with the SwiGLU fused: for each expert e and each of its sorted rows r,
 *   act[r, f] = SiLU(h[tok[r]] · Wg[e,f]) · (h[tok[r]] · Wu[e,f]),  f < F,
 * where w_gate_up[e] is [2F, D] (gate rows, then up rows), fp32 or bf16 (`bf16` ≠ 0).
 * Grouped mode: offsets/tile_offsets/sorted_token from mk_moe_route; max_tiles bounds the
 * grid (worst case ⌈P/64⌉ + E) and blocks past the device-side tile count exit at once.
 * Dense mode (offsets NULL: the shared expert): one group of dense_rows rows, tok = identity,
 * E must be 1. */
cudaError_t mk_moe_gate_up(float *act, const float *h, const void *w_gate_up, int bf16,
                           const int32_t *offsets, const int32_t *tile_offsets,
                           const int32_t *sorted_token, int dense_rows, int E, int D, int F,
                           int max_tiles, cudaStream_t stream);

/* Grouped GEMM 2: out[r, :D] = act[r, :F] · Wd[e]ᵀ, w_down[e] is [D, F]; modes as above. */
cudaError_t mk_moe_down(float *out, const float *act, const void *w_down, int bf16,
                        const int32_t *offsets, const int32_t *tile_offsets, int dense_rows,
                        int E, int D, int F, int max_tiles, cudaStream_t stream);

/* y[t,:] = base[t,:] (or 0 when base is NULL) + Σ_j w[t,j] · rows[slot_of_pair[t·k+j], :],
 * j in order (deterministic: no atomics). */
cudaError_t mk_moe_combine(float *y, const float *base, const float *rows,
                           const int32_t *slot_of_pair, const float *top_weights, int T, int D,
                           int k, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* MOIRE_KERNELS_H */
