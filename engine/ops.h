/* ops.h — the small set of operations a DiT-MoE forward pass needs, as a table of function
 * pointers with one implementation per backend (ops_cpu.c is the reference; kernels/ holds
 * the CUDA one). forward.c is a straight sequence of calls into this table.
 *
 * Every op returns MOIRE_OK or a failure status with moire_last_error() set (scratch
 * allocation, device errors). All tensors are fp32, row-major, and live where the backend keeps them (host memory for
 * the CPU backend). Shapes are in the comments: T rows (tokens), D hidden, H heads,
 * hd head_dim, E experts, k top-k.
 */
#ifndef MOIRE_OPS_H
#define MOIRE_OPS_H

#include "model.h"

typedef struct moire_ops moire_ops;

struct moire_ops {
    const char *name; /* "cpu", "cuda" */
    int n_threads;

    /* y[M,N] = x[M,K] · w[N,K]ᵀ + b[N]   (b may be NULL) */
    moire_status (*linear)(const moire_ops *ops, float *y, const float *x, const float *w,
                   const float *b, int M, int K, int N);

    /* y[T,D] = LN(x[T,D]) · (1 + scale[D]) + shift[D]; LN without affine. y may be x. */
    moire_status (*layernorm_modulate)(const moire_ops *ops, float *y, const float *x,
                               const float *shift, const float *scale, int T, int D,
                               float eps);

    /* x[T,D] += gate[D] ⊙ y[T,D] */
    moire_status (*gate_residual)(const moire_ops *ops, float *x, const float *y, const float *gate,
                          int T, int D);

    /* out[T,D] = per head h: softmax(q_h k_hᵀ / √hd) v_h, heads concatenated.
     * qkv[T,3D] is laid out [T, 3, H, hd] (q, k, v blocks of D columns).
     * When q_norm_w is non-NULL, q and k are first LayerNormed per head over hd with
     * affine (w, b) and `eps` (the qk-norm layout). */
    moire_status (*attention)(const moire_ops *ops, float *out, const float *qkv, int T, int H,
                      int hd, const float *q_norm_w, const float *q_norm_b,
                      const float *k_norm_w, const float *k_norm_b, float eps);

    /* Token-choice router: logits[T,E] = h[T,D] · w[E,D]ᵀ; probs = softmax over E;
     * top_ids[T,k], top_weights[T,k] = the k largest probs (descending; ties → lower expert
     * id), not renormalised. */
    moire_status (*router_topk)(const moire_ops *ops, float *logits, int32_t *top_ids,
                        float *top_weights, const float *h, const float *w, int T, int D,
                        int E, int k);

    /* y[T,D] = Σ_j top_weights[t,j] · Expert_{top_ids[t,j]}(h[t]) + Shared(h[t])
     * with SwiGLU experts; the shared expert is skipped when its hidden is 0. */
    moire_status (*moe_experts)(const moire_ops *ops, float *y, const float *h, int T, int D,
                        const dit_block_weights *block, int E, int k, const int32_t *top_ids,
                        const float *top_weights);
};

/* Fills `ops` with the CPU reference backend (OpenBLAS GEMMs, OpenMP loops).
 * n_threads 0 = all cores. */
void moire_ops_cpu_init(moire_ops *ops, int n_threads);

#endif /* MOIRE_OPS_H */
