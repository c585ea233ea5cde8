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

/* The same over n images of T rows, x/y [n, T, D]: image i uses shift + i·mod_stride and
 * scale + i·mod_stride (mod_stride 0: one modulation for all). y may be x. */
cudaError_t mk_layernorm_modulate_n(float *y, const float *x, const float *shift,
                                    const float *scale, int64_t mod_stride, int n, int T,
                                    int D, float eps, cudaStream_t stream);

/* x[T,D] += gate[D] ⊙ y[T,D] (rounded like the CPU: product, then sum). */
cudaError_t mk_gate_residual(float *x, const float *y, const float *gate, int T, int D,
                             cudaStream_t stream);

/* x[i,t,d] += g · y[i·y_stride + t·D + d] over n images of [T, D], g = gate[i·gate_stride + d]
 * (product rounded before the sum), or exactly x + y when gate is NULL. y_stride 0
 * broadcasts one [T, D] over all images (e.g. position embeddings). */
cudaError_t mk_gate_residual_n(float *x, const float *y, int64_t y_stride, const float *gate,
                               int64_t gate_stride, int n, int T, int D, cudaStream_t stream);

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

/* mk_attention over n images at once, one launch: qkv [n, T, 3D] → out [n, T, D]. */
cudaError_t mk_attention_n(float *out, const float *qkv, int n, int T, int H, int hd,
                           const float *q_norm_w, const float *q_norm_b,
                           const float *k_norm_w, const float *k_norm_b, float eps,
                           cudaStream_t stream);

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

/* The same two GEMMs on tensor cores (moe_mma.cu: mma.sync m16n8k16 bf16, fp32 accumulation,
 * the activations rounded to bf16 as they are loaded, 128-row × 64-column tiles, cp.async
 * double buffering), for bf16 weights only. Same arguments and modes as mk_moe_gate_up /
 * mk_moe_down without `bf16` (tile_offsets is accepted and unused: the 128-row tiles are
 * derived from offsets on the device; max_tiles is mk_moe_route's 64-row bound). Use them
 * when mk_moe_mma_supported(D, F): D and F multiples of 8 (else cudaErrorInvalidValue). */
int mk_moe_mma_supported(int D, int F);
cudaError_t mk_moe_gate_up_mma(float *act, const float *h, const void *w_gate_up,
                               const int32_t *offsets, const int32_t *tile_offsets,
                               const int32_t *sorted_token, int dense_rows, int E, int D, int F,
                               int max_tiles, cudaStream_t stream);
cudaError_t mk_moe_down_mma(float *out, const float *act, const void *w_down,
                            const int32_t *offsets, const int32_t *tile_offsets, int dense_rows,
                            int E, int D, int F, int max_tiles, cudaStream_t stream);
/* The same pair with the intermediate activations in bf16: gate_up writes act [P, F] as bf16
 * (RNE), down reads it with cp.async. The values are the ones the fp32 pair rounds to on
 * its way into the tensor cores, so down's result is the same; the act traffic halves (down
 * re-reads act once per 64-column tile). */
cudaError_t mk_moe_gate_up_mma_bf16(uint16_t *act, const float *h, const void *w_gate_up,
                                    const int32_t *offsets, const int32_t *tile_offsets,
                                    const int32_t *sorted_token, int dense_rows, int E, int D,
                                    int F, int max_tiles, cudaStream_t stream);
cudaError_t mk_moe_down_mma_bf16(float *out, const uint16_t *act, const void *w_down,
                                 const int32_t *offsets, const int32_t *tile_offsets,
                                 int dense_rows, int E, int D, int F, int max_tiles,
                                 cudaStream_t stream);

/* Unit test of kernels/mma.cuh (one warp): d[16,16] = a[16,16] · B + c[16,16] in bf16 with fp32
 * accumulation, B given twice: bt[n][k] (= Bᵀ, the weights' layout) and b[k][n]. mode 0: mma
 * with the fragments loaded by the PTX ISA's formulas; 1: ldmatrix.x4 of a and bt; 2:
 * ldmatrix.x4 of a, ldmatrix.x4.trans of b; 3: chained, as flash attention does it:
 * d = bf16(a · B) · B + c, the fp32 accumulators of a · B turned into the second product's A
 * fragment by mma_accum_to_a_bf16. */
cudaError_t mk_mma_fragment_test(float *d, const uint16_t *a, const uint16_t *bt,
                                 const uint16_t *b, const float *c, int mode,
                                 cudaStream_t stream);

/* y[t,:] = base[t,:] (or 0 when base is NULL) + Σ_j w[t,j] · rows[slot_of_pair[t·k+j], :],
 * j in order (deterministic: no atomics). */
cudaError_t mk_moe_combine(float *y, const float *base, const float *rows,
                           const int32_t *slot_of_pair, const float *top_weights, int T, int D,
                           int k, cudaStream_t stream);

/* ---- EC-DiT and its text encoder (ecdit.cu) ------------------------------------------ */

/* ops.h cross_attention: out[Tq, H·hd] (rows H·hd apart) = per head h: softmax(q_h k_hᵀ/√hd) v_h
 * over the first Tk keys; rows of q ldq floats apart, rows of k and v ldkv apart, head h at
 * column h·hd of each. 1 ≤ hd ≤ 1024 (hd > 128, e.g. the VAE's single head of 512, takes a
 * slower kernel), Tk ≥ 1 (else cudaErrorInvalidValue, like the CPU's "no keys"). */
cudaError_t mk_cross_attention(float *out, const float *q, int ldq, const float *k,
                               const float *v, int ldkv, int Tq, int Tk, int H, int hd,
                               cudaStream_t stream);

/* The same two attentions on tensor cores (attention_mma.cu: flash-style, mma.sync bf16 with
 * fp32 scores and softmax statistics, P rounded to bf16 for P·V), for 1 ≤ hd ≤ 128
 * (mk_attention_mma_supported). q, k and v are first packed to bf16 (q and k LayerNormed once
 * per token when the norms are given) in `workspace`, device memory of
 * mk_attention_mma_workspace(n, Tq, Tk, H, hd) bytes (self-attention: Tq = Tk = T; cross: n =
 * 1), which must stay untouched until the launches have run. Two launches for all n images.
 * Unsupported hd, Tk ≤ 0 or no workspace: cudaErrorInvalidValue. */
int mk_attention_mma_supported(int hd);
size_t mk_attention_mma_workspace(int n, int Tq, int Tk, int H, int hd);
cudaError_t mk_attention_n_mma(float *out, const float *qkv, int n, int T, int H, int hd,
                               const float *q_norm_w, const float *q_norm_b,
                               const float *k_norm_w, const float *k_norm_b, float eps,
                               void *workspace, cudaStream_t stream);
cudaError_t mk_cross_attention_mma(float *out, const float *q, int ldq, const float *k,
                                   const float *v, int ldkv, int Tq, int Tk, int H, int hd,
                                   void *workspace, cudaStream_t stream);

/* ops.h router_expert_choice, as cpu_router_expert_choice: scores[n·T, E] = softmax over E of
 * h[n·T, D] · w[E, D]ᵀ (logits accumulated in double in d order, softmax in double: the
 * same bits as the CPU); per image and routing group (moire_ec_group_size), expert e takes
 * the C = moire_ec_capacity(S, E, f) tokens with the largest scores[:, e], descending, ties
 * → lower token index: tokens[E, M] (global row indices), gates[E, M] (their scores),
 * M = n · moire_ec_slots_per_image(T, group, E, f). E ≤ MK_MOE_MAX_EXPERTS. Groups of up to
 * MK_EC_SORT_MAX tokens are sorted in shared memory; larger ones select their C-th key by
 * radix selection and sort the C keys when C ≤ MK_EC_SORT_MAX, else take an O(S²) ranking
 * (all exact, same results). */
#define MK_EC_SORT_MAX 4096
cudaError_t mk_router_expert_choice(float *scores, int32_t *tokens, float *gates, const float *h,
                                    const float *w, int n, int T, int group, int D, int E,
                                    float capacity_factor, cudaStream_t stream);

/* Bytes of device workspace mk_moe_expert_choice needs (256-byte aligned pieces). */
size_t mk_moe_expert_choice_workspace(int N, int D, int F, int S, int E, int M);

/* ops.h moe_expert_choice: y[N, D] = Shared(h) (S > 0, else 0) + Σ_e Σ_j gates[e,j] ·
 * Expert_e(h[tokens[e,j]]) with SwiGLU experts packed as in moe.cu: w_gate_up [E, 2F, D]
 * (gate rows, then up rows), w_down [E, D, F]; shared s_gate_up [2S, D], s_down [D, S];
 * fp32 or bf16 (uint16) weights (`bf16` ≠ 0). tokens/gates [E, M]; a token at most once per
 * expert. The sum runs over experts in id order, no atomics (bit-reproducible).
 * `workspace` holds mk_moe_expert_choice_workspace(N, D, F, S, E, M) bytes. */
cudaError_t mk_moe_expert_choice(float *y, const float *h, int N, int D, const void *w_gate_up,
                                 const void *w_down, int F, const void *s_gate_up,
                                 const void *s_down, int S, int bf16, int E, int M,
                                 const int32_t *tokens, const float *gates, void *workspace,
                                 cudaStream_t stream);

/* y[T, D] = LN(x) · w + b (statistics two-pass in fp32); y may be x. */
cudaError_t mk_layernorm_affine(float *y, const float *x, const float *w, const float *b, int T,
                                int D, float eps, cudaStream_t stream);

/* y[count] = 0.5·x·(1 + erf(x/√2)), in double like text_encoder.c; y may be x. */
cudaError_t mk_gelu_erf(float *y, const float *x, int64_t count, cudaStream_t stream);

/* y[r, :] = table[ids[r], :] for r < rows; table [*, D]. */
cudaError_t mk_gather_rows(float *y, const float *table, const int32_t *ids, int rows, int D,
                           cudaStream_t stream);

/* out[p, d] = mean over j < lengths[p] of x[p, j, d], x [P, L, D] (sum in double in j order,
 * like text_encoder.c). lengths are clamped to L; a length ≤ 0 gives 0. */
cudaError_t mk_masked_mean_rows(float *out, const float *x, const int32_t *lengths, int P, int L,
                                int D, cudaStream_t stream);

/* ---- image ops (image_ops.cu), one image [C, H, W] ------------------------------------ */

/* col[(c·k + ky)·k + kx][oy·Wo + ox] = x[c][oy·s − pad_lo + ky][ox·s − pad_lo + kx], 0 outside
 * the image (vae.c conv2d; pad_hi only decides Ho and Wo, which the caller passes). */
cudaError_t mk_im2col(float *col, const float *x, int ci, int H, int W, int k, int stride,
                      int pad_lo, int pad_hi, int Ho, int Wo, cudaStream_t stream);

/* The same for output rows [oy0, oy0 + rows) only (a band, as vae.c does to bound the
 * column buffer): col [ci·k·k, rows·Wo]. */
cudaError_t mk_im2col_band(float *col, const float *x, int ci, int H, int W, int k, int stride,
                           int pad_lo, int Wo, int oy0, int rows, cudaStream_t stream);

/* y[c, i] += b[c], y [C, HW]. */
cudaError_t mk_add_channel_bias(float *y, const float *b, int C, int64_t HW, cudaStream_t stream);

/* vae.c group_norm: y[C, HW] = GroupNorm(x) · w + b over G groups of C/G channels, then SiLU
 * when with_silu; statistics two-pass in double. y may be x. C % G == 0. */
cudaError_t mk_group_norm(float *y, const float *x, const float *w, const float *b, int C,
                          int64_t HW, int G, float eps, int with_silu, cudaStream_t stream);

/* The statistics alone: mean_inv[g] = {mean, 1/√(var + eps)} of group g of x[C, HW]. */
cudaError_t mk_group_norm_stats(float *mean_inv, const float *x, int C, int64_t HW, int G,
                                float eps, cudaStream_t stream);

/* y = GroupNorm(x) · w + b (+ SiLU) with statistics from mk_group_norm_stats (possibly of
 * another tensor: tiled decoding normalises a tile with the whole image's). y may be x. */
cudaError_t mk_group_norm_apply(float *y, const float *x, const float *mean_inv, const float *w,
                                const float *b, int C, int64_t HW, int G, int with_silu,
                                cudaStream_t stream);

/* y[C, 2H, 2W] = nearest-neighbour ×2 of x[C, H, W]. */
cudaError_t mk_upsample_nearest2x(float *y, const float *x, int C, int H, int W,
                                  cudaStream_t stream);

/* y[cols, rows] = x[rows, cols]ᵀ (y must not overlap x). */
cudaError_t mk_transpose(float *y, const float *x, int rows, int cols, cudaStream_t stream);

/* y = alpha · x; y = a + b; y = max(x, 0). Element-wise over count; y may alias an input. */
cudaError_t mk_scale(float *y, const float *x, float alpha, int64_t count, cudaStream_t stream);
cudaError_t mk_add(float *y, const float *a, const float *b, int64_t count, cudaStream_t stream);
cudaError_t mk_relu(float *y, const float *x, int64_t count, cudaStream_t stream);

/* y[C, H/2, W/2] = 0.25 · ((x00 + x01) + (x10 + x11)) (classifier.c avgpool2). */
cudaError_t mk_avgpool2(float *y, const float *x, int C, int H, int W, cudaStream_t stream);

/* dst[r·dst_ld + c] = src[r·src_ld + c] for r < rows, c < cols (tile crop and paste). */
cudaError_t mk_copy_2d(float *dst, int64_t dst_ld, const float *src, int64_t src_ld, int rows,
                       int64_t cols, cudaStream_t stream);

/* ---- the sampling step (sampler.cu) ---- */

/* One piece of a sampling step: engine/ops.h `sampler_op`, its fields as arguments (op is a
 * moire_sampler_op value). All pointers device memory; coef and step pick the scalars. */
cudaError_t mk_sampler_op(int op, int slot, int n, int64_t chw, int64_t out_stride,
                          int learned_variance, double *y, double *y2, double *den, double *old,
                          const double *src, double *dst, float *x_in, float *t_in, float *x0,
                          const float *model_out, const float *noise, const double *coef,
                          int32_t *step, cudaStream_t stream);

/* out[n, image] = both[n] with out = u + scale·(out − u) on the first `guided` floats of each
 * image, u = both[n + i] (ops.h `guidance_combine`). out may be both. */
cudaError_t mk_guidance_combine(float *out, const float *both, int n, int64_t image,
                                int64_t guided, float scale, cudaStream_t stream);

/* DiT patchify (inverse 0: dst[n·T, C·p·p] from x[n, C, h, w]) or unpatchify (inverse 1:
 * dst x[n, C, h, w] from src[n·T, p·p·C]). */
cudaError_t mk_patchify(float *dst, const float *src, int n, int C, int h, int w, int p,
                        int inverse, cudaStream_t stream);

/* freq[n, dim] = cos | sin of t[i]·10000^(−j/(dim/2)), computed in double. */
cudaError_t mk_timestep_frequencies(float *freq, const float *t, int n, int dim,
                                    cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* MOIRE_KERNELS_H */
