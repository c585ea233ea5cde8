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

#include <math.h>

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

    /* ---- EC-DiT (docs/ECDIT.md) ---- */

    /* out[Tq,D] = per head h: softmax(q_h k_hᵀ / √hd) v_h over the first Tk keys only (the
     * rest, text padding, is masked). Rows of q are ldq floats apart and rows of k and v ldkv
     * apart, heads at column offsets h·hd, so a packed [T, 3D] qkv or [L, 2D] kv is used in
     * place. Used for cross-attention and the text encoder's self-attention. */
    moire_status (*cross_attention)(const moire_ops *ops, float *out, const float *q, int ldq,
                                    const float *k, const float *v, int ldkv, int Tq, int Tk,
                                    int H, int hd);

    /* Expert-choice router for n images of T tokens, h[n·T, D]:
     *   scores[n·T, E] = softmax over E of h · wᵀ (per token; logits accumulate in double, one
     *   token at a time, so identical tokens get identical scores wherever they sit);
     *   per routing group (moire_ec_groups), expert e takes the C tokens with the largest
     *   scores[:, e], descending, ties → lower token index; tokens[e, M] holds their global
     *   row indices (groups in order, image-major) and gates[e, M] their scores, with
     *   M = n · moire_ec_slots_per_image(T, group, E, capacity_factor). */
    moire_status (*router_expert_choice)(const moire_ops *ops, float *scores, int32_t *tokens,
                                         float *gates, const float *h, const float *w, int n,
                                         int T, int group, int D, int E,
                                         float capacity_factor);

    /* y[N,D] = Σ_e Σ_j gates[e,j] · Expert_e(h[tokens[e,j]]) + Shared(h) with SwiGLU experts
     * (experts[E]; shared skipped when NULL or its hidden is 0). A token no expert took gets
     * only the shared expert (or 0). A token appears at most once per expert. */
    moire_status (*moe_expert_choice)(const moire_ops *ops, float *y, const float *h, int N,
                                      int D, const dit_swiglu_weights *experts,
                                      const dit_swiglu_weights *shared, int E, int M,
                                      const int32_t *tokens, const float *gates);

    /* y[T,D] = down(SiLU(gate(h)) ⊙ up(h)): a dense SwiGLU MLP. */
    moire_status (*swiglu)(const moire_ops *ops, float *y, const float *h, int T, int D,
                           const dit_swiglu_weights *mlp);

    /* ---- Backends whose tensors live outside host memory (CUDA) ----
     * All NULL in the CPU table: the moire_ops_* helpers below then fall back to malloc,
     * memcpy and free, so host code can be written once for both kinds of backend.
     *
     * Activations (the y, x, h, qkv, logits, top_ids, … arguments above) live in memory
     * from mem_alloc. Model weights (linear w and b, the attention norm weights, the router
     * w, the experts of a block) are always host pointers into a moire_model: a device
     * backend keeps its own copy, made once on first use and kept until bind_model is
     * called with another model (or NULL, which drops every copy: tests call it between
     * cases, since a freed host buffer's address can come back with other data). */
    void *(*mem_alloc)(const moire_ops *ops, size_t bytes); /* NULL + moire_fail: OOM     */
    void (*mem_free)(const moire_ops *ops, void *ptr);
    moire_status (*upload)(const moire_ops *ops, void *dst, const void *src, size_t bytes);
    /* Waits for the queued work, then copies (the only synchronising hook). */
    moire_status (*download)(const moire_ops *ops, void *dst, const void *src, size_t bytes);
    moire_status (*bind_model)(const moire_ops *ops, const moire_model *model);
    /* y[count] = SiLU(x[count]) = x / (1 + e^−x); y may be x. */
    moire_status (*silu)(const moire_ops *ops, float *y, const float *x, int64_t count);
    /* Releases the backend (called by moire_ctx_free). */
    void (*destroy)(moire_ops *ops);
    void *backend; /* the backend's own state (device, stream, handles, weight cache) */
};

/* True when the backend's tensors are host memory (the CPU reference). */
static inline bool moire_ops_on_host(const moire_ops *ops)
{
    return ops->mem_alloc == NULL;
}

/* Expert-choice capacity of a routing group of S tokens: C = ⌈S·f_c/E⌉, clamped to S (an
 * expert cannot take a token twice). S·f_c is exact in double and a division whose exact
 * result is an integer is exact, so C is the same everywhere (ecdit_ref.py: capacity). */
static inline int moire_ec_capacity(int S, int E, float capacity_factor)
{
    double c = ceil((double)S * (double)capacity_factor / E);
    return c >= S ? S : (int)c;
}

/* The routing groups of one image of T tokens: one group when `group` is 0 or ≥ T, else
 * consecutive groups of `group` tokens with a shorter last one. Groups never span images. */
static inline int moire_ec_group_size(int T, int group)
{
    return group <= 0 || group >= T ? T : group;
}

/* Σ over the groups of one image of their capacity C. */
static inline int moire_ec_slots_per_image(int T, int group, int E, float capacity_factor)
{
    const int G = moire_ec_group_size(T, group);
    int slots = 0;
    for (int start = 0; start < T; start += G)
        slots += moire_ec_capacity(T - start < G ? T - start : G, E, capacity_factor);
    return slots;
}

/* Fills `ops` with the CPU reference backend (OpenBLAS GEMMs, OpenMP loops).
 * n_threads 0 = all cores. */
void moire_ops_cpu_init(moire_ops *ops, int n_threads);

/* The CUDA backend (kernels/; defined only in builds with MOIRE_HAVE_CUDA). Fills `ops` on
 * the first visible device, or fails (UNSUPPORTED: no driver or device; BACKEND: the
 * device would not start) with the reason in moire_last_error(). n_threads is kept for the
 * host code that still runs on the CPU (VAE, text encoder, EC-DiT). bf16 = store the GEMM
 * weights as bf16 (fp32 accumulation; fp32 activations); false = fp32 throughout. */
moire_status moire_ops_cuda_init(moire_ops *ops, int n_threads, bool bf16);

/* Backend figures for `moire bench` (kernels/ fills them for CUDA; bench.c for the CPU). */
typedef struct moire_ops_stats {
    char device_name[128];
    double memory_total_bytes;  /* device memory (0 on the CPU)                           */
    double memory_peak_bytes;   /* most allocated through mem_alloc + weight copies       */
    double copy_bytes_per_s;    /* measured device-to-device copy (read + write counted)  */
} moire_ops_stats;
/* CUDA only: fills `stats` (measures the copy bandwidth on the first call). */
moire_status moire_ops_cuda_stats(const moire_ops *ops, moire_ops_stats *stats);

/* The CPU backend's GEMM, for other host code (the SD-VAE, vae.c):
 * C[M,N] = alpha · A[M,K] · op(B), op(B) = Bᵀ for B [N,K] (b_transposed) or B for B [K,N].
 * Split over ops->n_threads by OpenMP with single-threaded OpenBLAS inside (see ops_cpu.c);
 * deterministic for a given thread count. */
void moire_cpu_gemm(const moire_ops *ops, bool b_transposed, int M, int N, int K, float alpha,
                    const float *A, int lda, const float *B, int ldb, float *C, int ldc);

#endif /* MOIRE_OPS_H */
