/* ops.h — the backend interface: every operation a model forward needs (DiT-MoE, EC-DiT and
 * its text encoder, the SD-VAE), as a table of function pointers with one implementation per
 * backend — ops_cpu.c (the reference, the spec) and kernels/ops_cuda.c (CUDA). Model code
 * (forward.c, ecdit.c, text_encoder.c, vae.c) is a straight sequence of calls into it and
 * never touches tensor memory itself.
 *
 * Memory and compute apart (as ggml's backend split):
 *  - Weights are uploaded once, when a model is bound (bind.c): ops->weight_upload turns host
 *    tensors into moire_tensor handles that live in the backend (a device copy on CUDA, the
 *    host pointer itself on the CPU). Ops take those handles, never model structs and never
 *    host weight pointers, so a freed and reallocated model can never meet stale copies.
 *  - Activations are float/int32 arrays in the backend's memory: from the per-context arena
 *    (moire_arena, arena.c) for everything that lives inside one forward, or from mem_alloc for
 *    what outlives it (the text conditioning of a generate call). Ops that need scratch take
 *    it from the same arena and give it back before they return. After the first forward of a
 *    given size nothing is allocated; the only host synchronisation is download().
 *  - Host data enters through upload() and leaves through download(); nothing else crosses.
 *
 * Every op returns MOIRE_OK or a failure status with moire_last_error() set. Tensors are fp32,
 * row-major. Shapes in the comments: n images, T tokens, D hidden, H heads, hd head_dim,
 * E experts, k top-k, F expert width, C channels, [C, H, W] images.
 */
#ifndef MOIRE_OPS_H
#define MOIRE_OPS_H

#include "moire.h"
#include "sampler_math.h"

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct moire_ops moire_ops;
typedef struct moire_arena moire_arena;
typedef struct moire_graph moire_graph;

typedef enum moire_dtype { MOIRE_DTYPE_F32 = 0, MOIRE_DTYPE_BF16 = 1 } moire_dtype;

/* How a weight is stored by a backend that can narrow it. */
typedef enum moire_weight_use {
    MOIRE_WEIGHT_EXACT = 0, /* always fp32: norms, biases, routers, embedding tables       */
    MOIRE_WEIGHT_GEMM = 1,  /* a GEMM operand: bf16 in a bf16 backend                       */
} moire_weight_use;

/* A weight tensor in a backend's memory: `count` equal parts of [rows, cols] stacked along the
 * first axis (count 1 for a plain tensor; 2E for the gate/up weights of E experts). A device
 * backend stores the parts back to back at `data`; the CPU backend keeps the host pointers
 * (`parts`, NULL when count is 1: then `data` is the tensor). data == NULL: absent. */
typedef struct moire_tensor {
    const void *data;
    const float *const *parts;
    moire_dtype dtype;
    int count;
    int64_t rows, cols;
} moire_tensor;

static inline bool tensor_present(const moire_tensor *t)
{
    return t && t->data;
}

/* Part i as a host fp32 pointer (CPU backend only). */
static inline const float *tensor_part(const moire_tensor *t, int i)
{
    return t->parts ? t->parts[i] : (const float *)t->data + (size_t)i * t->rows * t->cols;
}

/* SwiGLU experts: Expert_e(h) = down_e(SiLU(gate_e(h)) ⊙ up_e(h)).
 *   gate_up: 2·experts parts [hidden, D] — gate_0, up_0, gate_1, up_1, …
 *   down:    experts parts [D, hidden]
 * experts == 0 or hidden == 0: absent (a missing shared expert). One dense MLP is experts 1. */
typedef struct moire_swiglu {
    moire_tensor gate_up;
    moire_tensor down;
    int experts, hidden;
} moire_swiglu;

static inline bool swiglu_present(const moire_swiglu *s)
{
    return s && s->experts > 0 && s->hidden > 0;
}

/* ---- samplers on the backend (sampler.c's device path; formulas in sampler_math.h) ----
 * One call of `sampler_op` does one elementwise piece of a sampling step on backend memory.
 * Its scalars come from row *step of coef (MOIRE_SAMPLER_COEFS doubles per row, see
 * sampler_math.h), both in backend memory, so a captured step replays unchanged: the host
 * never passes a per-step number. State arrays are double (as sampler.c's host loops), the
 * model's input and output float. Shapes: n images of chw = C·h·w state values; the model
 * output holds out_stride floats per image (Co·h·w), ε or v first, the DDPM variance
 * interpolation after it (at + chw). */
/* The ops (moire_sampler_op) are listed in sampler_math.h. */

typedef struct moire_sampler_args {
    moire_sampler_op op;
    int slot;                 /* MODEL_INPUT, DENOISE: 0 or 1                              */
    int n;                    /* images                                                    */
    int64_t chw;              /* state values per image                                    */
    int64_t out_stride;       /* model output floats per image                             */
    int learned_variance;     /* DDPM: read the variance interpolation                     */
    double *y, *y2, *den, *old; /* [n, chw] state, Heun predictor, D, previous D           */
    const double *src;        /* MODEL_INPUT, DENOISE, TO_FLOAT                            */
    double *dst;              /* DENOISE                                                   */
    float *x_in, *t_in;       /* MODEL_INPUT: [n, chw], [n]                                 */
    float *x0;                /* TO_FLOAT: [n, chw]                                        */
    const float *model_out;   /* [n, out_stride]                                           */
    const float *noise;       /* [rows, n, chw]; row NOISE_ROW of the step                  */
    const double *coef;       /* [steps, MOIRE_SAMPLER_COEFS]                               */
    int32_t *step;            /* the row index (ADVANCE increments it)                     */
} moire_sampler_args;

struct moire_ops {
    const char *name; /* "cpu", "cuda" */
    int n_threads;    /* CPU threads for the reference backend and host-side work */
    moire_arena *arena; /* the context's activation arena (set by context.c)        */

    /* ---- memory ---- */

    /* Persistent backend memory (not for use inside a forward: use the arena). NULL +
     * error_fail when out of memory. */
    void *(*mem_alloc)(const moire_ops *ops, size_t bytes);
    void (*mem_free)(const moire_ops *ops, void *ptr);
    /* Host → backend, ordered with the queued work; `src` may be reused once it returns. */
    moire_status (*upload)(const moire_ops *ops, void *dst, const void *src, size_t bytes);
    /* Backend → host: waits for the queued work (the one synchronising call). */
    moire_status (*download)(const moire_ops *ops, void *dst, const void *src, size_t bytes);
    /* Weights: parts[count] host fp32 tensors of [rows, cols] → *out (see moire_tensor). */
    moire_status (*weight_upload)(const moire_ops *ops, moire_tensor *out,
                                  const float *const *parts, int count, int64_t rows,
                                  int64_t cols, moire_weight_use use);
    void (*weight_free)(const moire_ops *ops, moire_tensor *t);

    /* ---- transformer ops ---- */

    /* y[M,N] = x[M,K] · w[N,K]ᵀ + b[N]   (b may be NULL or absent) */
    moire_status (*linear)(const moire_ops *ops, float *y, const float *x, const moire_tensor *w,
                           const moire_tensor *b, int M, int K, int N);

    /* n images of T rows: y[i,t,:] = LN(x[i,t,:]) · (1 + scale_i) + shift_i, LN without affine;
     * shift_i = shift + i·mod_stride (and scale_i likewise), each [D]. y may be x. */
    moire_status (*layernorm_modulate)(const moire_ops *ops, float *y, const float *x,
                                       const float *shift, const float *scale,
                                       int64_t mod_stride, int n, int T, int D, float eps);

    /* y[T,D] = LN(x) · w[D] + b[D]. y may be x. */
    moire_status (*layernorm_affine)(const moire_ops *ops, float *y, const float *x,
                                     const moire_tensor *w, const moire_tensor *b, int T, int D,
                                     float eps);

    /* n images: x[i,t,d] += g · y[i·y_stride + t·D + d], g = gate[i·gate_stride + d], or 1 when
     * gate is NULL (then exactly x + y). y_stride 0 adds the same [T,D] to every image. The
     * product is rounded before the sum. */
    moire_status (*gate_residual)(const moire_ops *ops, float *x, const float *y,
                                  int64_t y_stride, const float *gate, int64_t gate_stride,
                                  int n, int T, int D);

    /* n images: out[i] = per head h: softmax(q_h k_hᵀ / √hd) v_h, heads concatenated, from
     * qkv[i] laid out [T, 3, H, hd]. With q_norm_w present, q and k are first LayerNormed per
     * head over hd with affine (w, b) and `eps` (the qk-norm layout). out [n, T, H·hd]. */
    moire_status (*attention)(const moire_ops *ops, float *out, const float *qkv, int n, int T,
                              int H, int hd, const moire_tensor *q_norm_w,
                              const moire_tensor *q_norm_b, const moire_tensor *k_norm_w,
                              const moire_tensor *k_norm_b, float eps);

    /* out[Tq, H·hd] = per head: softmax(q_h k_hᵀ / √hd) v_h over the first Tk keys only (the
     * rest, text padding, is masked). Rows of q are ldq floats apart and rows of k and v ldkv
     * apart, head h at column h·hd, so a packed [T, 3D] qkv or [L, 2D] kv is used in place.
     * Cross-attention, the text encoder's self-attention and the VAE's (H 1, hd C). */
    moire_status (*cross_attention)(const moire_ops *ops, float *out, const float *q, int ldq,
                                    const float *k, const float *v, int ldkv, int Tq, int Tk,
                                    int H, int hd);

    /* Token-choice router: logits[T,E] = h[T,D] · w[E,D]ᵀ; probs = softmax over E;
     * top_ids[T,k], top_weights[T,k] = the k largest probs (descending; ties → lower expert
     * id), not renormalised. */
    moire_status (*router_topk)(const moire_ops *ops, float *logits, int32_t *top_ids,
                                float *top_weights, const float *h, const moire_tensor *w,
                                int T, int D, int E, int k);

    /* y[T,D] = Σ_j top_weights[t,j] · Expert_{top_ids[t,j]}(h[t]) + Shared(h[t]); the shared
     * expert is skipped when absent. */
    moire_status (*moe_experts)(const moire_ops *ops, float *y, const float *h, int T, int D,
                                const moire_swiglu *experts, const moire_swiglu *shared, int k,
                                const int32_t *top_ids, const float *top_weights);

    /* Expert-choice router for n images of T tokens, h[n·T, D]:
     *   scores[n·T, E] = softmax over E of h · wᵀ (per token; logits accumulate in double, one
     *   token at a time, so identical tokens get identical scores wherever they sit);
     *   per routing group (moire_ec_group_size), expert e takes the C tokens with the largest
     *   scores[:, e], descending, ties → lower token index; tokens[e, M] holds their global
     *   row indices (groups in order, image-major) and gates[e, M] their scores, with
     *   M = n · moire_ec_slots_per_image(T, group, E, capacity_factor). */
    moire_status (*router_expert_choice)(const moire_ops *ops, float *scores, int32_t *tokens,
                                         float *gates, const float *h, const moire_tensor *w,
                                         int n, int T, int group, int D, int E,
                                         float capacity_factor);

    /* y[N,D] = Σ_e Σ_j gates[e,j] · Expert_e(h[tokens[e,j]]) + Shared(h) (shared skipped when
     * absent). A token no expert took gets only the shared expert (or 0). A token appears at
     * most once per expert. */
    moire_status (*moe_expert_choice)(const moire_ops *ops, float *y, const float *h, int N,
                                      int D, const moire_swiglu *experts,
                                      const moire_swiglu *shared, int M, const int32_t *tokens,
                                      const float *gates);

    /* y[T,D] = down(SiLU(gate(h)) ⊙ up(h)): a dense SwiGLU MLP (mlp->experts == 1). */
    moire_status (*swiglu)(const moire_ops *ops, float *y, const float *h, int T, int D,
                           const moire_swiglu *mlp);

    /* ---- elementwise and data movement ---- */

    /* y[count] = SiLU(x) = x / (1 + e^−x); y may be x. */
    moire_status (*silu)(const moire_ops *ops, float *y, const float *x, int64_t count);
    /* y[count] = GELU(x) = x/2 · (1 + erf(x/√2)) (exact); y may be x. */
    moire_status (*gelu)(const moire_ops *ops, float *y, const float *x, int64_t count);
    /* y[count] = max(x, 0); y may be x. */
    moire_status (*relu)(const moire_ops *ops, float *y, const float *x, int64_t count);
    /* y[count] = alpha · x; y may be x. */
    moire_status (*scale)(const moire_ops *ops, float *y, const float *x, float alpha,
                          int64_t count);
    /* y[count] = a + b; y may be a or b. */
    moire_status (*add)(const moire_ops *ops, float *y, const float *a, const float *b,
                        int64_t count);
    /* y[r,:] = table[ids[r],:] for r < rows; table [*, D] (a weight), ids in backend memory. */
    moire_status (*gather_rows)(const moire_ops *ops, float *y, const moire_tensor *table,
                                const int32_t *ids, int rows, int D);
    /* out[p,:] = mean over j < lengths[p] of x[p,j,:]; x [P, L, D], lengths in backend memory. */
    moire_status (*masked_mean_rows)(const moire_ops *ops, float *out, const float *x,
                                     const int32_t *lengths, int P, int L, int D);
    /* y[cols, rows] = x[rows, cols]ᵀ */
    moire_status (*transpose)(const moire_ops *ops, float *y, const float *x, int rows,
                              int cols);
    /* dst[r·dst_ld + c] = src[r·src_ld + c] for r < rows, c < cols (crops and pastes). */
    moire_status (*copy_2d)(const moire_ops *ops, float *dst, int64_t dst_ld, const float *src,
                            int64_t src_ld, int rows, int64_t cols);

    /* ---- sampling step (sampler.c's device path, generate.c's guided model) ---- */

    /* One elementwise piece of a sampling step (moire_sampler_args above). */
    moire_status (*sampler_op)(const moire_ops *ops, const moire_sampler_args *args);
    /* Classifier-free guidance of a CFG batch both[2n, image] (conditional images first):
     * out[i] = both[i], then on the first `guided` floats of each image
     * out = u + scale·(out − u), u = both[n + i] (float, as generate.c's host loop). */
    moire_status (*guidance_combine)(const moire_ops *ops, float *out, const float *both, int n,
                                     int64_t image, int64_t guided, float scale);
    /* DiT patches (dit_common.c's dit_patchify / dit_unpatchify), T = (h/p)·(w/p):
     * forward: dst[n·T, C·p·p] (channel-major patches) from src = x[n, C, h, w];
     * inverse: dst = x[n, C, h, w] from the final layer's src[n·T, p·p·C] (pixel-major). */
    moire_status (*patchify)(const moire_ops *ops, float *dst, const float *src, int n, int C,
                             int h, int w, int p, bool inverse);
    /* freq[n, 256] = the sinusoidal timestep features of t[n] (dit_timestep_frequencies). */
    moire_status (*timestep_frequencies)(const moire_ops *ops, float *freq, const float *t,
                                         int n);

    /* ---- one sampling step as a graph ----
     * graph_begin starts recording the queued work instead of running it; graph_end stops
     * and returns the recording in *graph, or NULL when the backend runs work directly (the
     * CPU: the step has already run, and the caller runs the next one directly too).
     * graph_launch replays a recording (no allocation, no host wait); graph_free drops it.
     * While recording, nothing may allocate, upload, download or wait (the CUDA table
     * refuses with an error naming the call). */
    moire_status (*graph_begin)(const moire_ops *ops);
    moire_status (*graph_end)(const moire_ops *ops, moire_graph **graph);
    moire_status (*graph_launch)(const moire_ops *ops, moire_graph *graph);
    void (*graph_free)(const moire_ops *ops, moire_graph *graph);

    /* ---- image ops: one image [C, H, W] ---- */

    /* y[co, Ho, Wo] = conv(x[ci, H, W]) + b[co], w [co, ci·k·k] (a GEMM weight). Zero
     * padding pad_lo rows/columns before and pad_hi after; Ho = (H + pad_lo + pad_hi − k) /
     * stride + 1 (Wo likewise). */
    moire_status (*conv2d)(const moire_ops *ops, float *y, const float *x, const moire_tensor *w,
                           const moire_tensor *b, int ci, int H, int W, int co, int k,
                           int stride, int pad_lo, int pad_hi);
    /* GroupNorm statistics of x[C, HW] in G groups: stats[G, 2] = (mean, 1/√(var + eps)). */
    moire_status (*group_norm_stats)(const moire_ops *ops, float *stats, const float *x, int C,
                                     int64_t HW, int G, float eps);
    /* y = (x − mean_g) · inv_g · w[c] + b[c] (then SiLU when with_silu), from stats[G, 2].
     * y may be x. */
    moire_status (*group_norm_apply)(const moire_ops *ops, float *y, const float *x,
                                     const float *stats, const moire_tensor *w,
                                     const moire_tensor *b, int C, int64_t HW, int G,
                                     bool with_silu);
    /* y[C, 2H, 2W] = nearest-neighbour ×2 of x[C, H, W]. */
    moire_status (*upsample_nearest2x)(const moire_ops *ops, float *y, const float *x, int C,
                                       int H, int W);
    /* y[C, H/2, W/2] = the mean of each 2×2 block of x[C, H, W] (H, W even). */
    moire_status (*avgpool2)(const moire_ops *ops, float *y, const float *x, int C, int H,
                             int W);

    /* Releases the backend (called by moire_ctx_free). */
    void (*destroy)(moire_ops *ops);
    void *backend; /* the backend's own state (device, stream, handles) */
};

/* ---- the activation arena (arena.c) ----
 * One per context. A pass (a forward, a text encode, a VAE decode) runs between
 * arena_begin and arena_end; inside it, arena_take hands out aligned blocks
 * from one backend allocation, and arena_release(mark) gives back everything taken
 * since arena_mark (ops free their scratch that way, LIFO). A request past the block
 * gets an overflow allocation of its own (counted in `overflows`); the next begin replaces
 * the block with one of the high-water size, so from the second pass of a size on, a pass
 * allocates nothing. Backend memory: kernels may still be reading a released block, which is
 * safe because the backend runs its work in order (one stream). */
struct moire_arena {
    const moire_ops *ops;
    char *base;           /* the block (backend memory)                              */
    size_t size, used;    /* bytes; `used` counts overflow requests too (high water)   */
    size_t high_water;    /* most `used` seen                                          */
    void **overflow;      /* this pass's overflow allocations                         */
    size_t overflow_count, overflow_cap;
    uint64_t overflows;   /* overflow allocations since the arena was made            */
    bool open;
};

void arena_init(moire_arena *arena, const moire_ops *ops);
void arena_destroy(moire_arena *arena);
moire_status arena_begin(moire_arena *arena);
void arena_end(moire_arena *arena);
/* NULL + error_fail on out of memory. */
void *arena_take(moire_arena *arena, size_t bytes);
static inline size_t arena_mark(const moire_arena *arena)
{
    return arena->used;
}
void arena_release(moire_arena *arena, size_t mark);

/* ---- expert choice: capacities (shared by both backends and the model code) ---- */

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

/* ---- backends ---- */

/* Fills `ops` with the CPU reference backend (OpenBLAS GEMMs, OpenMP loops).
 * n_threads 0 = all cores. Fails only when out of memory. */
moire_status ops_cpu_init(moire_ops *ops, int n_threads);

/* Calls of CPU ops since the process started (all threads). A test that runs a model on
 * another backend asserts that this does not move: no op fell back to the host. */
uint64_t ops_cpu_calls(void);

/* The CUDA backend (kernels/; defined only in builds with MOIRE_HAVE_CUDA). The first call
 * loads the backend's shared module libmoire-cuda.so (backend_loader.c). Fills `ops` on
 * the first visible device, or fails (UNSUPPORTED: no module, CUDA runtime, driver or
 * device; BACKEND: a module of another build, or the device would not start) with the
 * reason in moire_last_error(). bf16 = store the GEMM weights as bf16 (fp32 accumulation;
 * fp32 activations); false = fp32 throughout. */
moire_status ops_cuda_init(moire_ops *ops, int n_threads, bool bf16);

/* Backend figures for `moire bench` (kernels/ fills them for CUDA; bench.c for the CPU). */
typedef struct moire_ops_stats {
    char device_name[128];
    double memory_total_bytes;  /* device memory (0 on the CPU)                           */
    double memory_peak_bytes;   /* most allocated: weights, arena, scratch                 */
    double copy_bytes_per_s;    /* measured device-to-device copy (read + write counted)  */
    uint64_t allocations;       /* device allocations since the backend started            */
    uint64_t synchronizations;  /* host waits for the device since the backend started     */
} moire_ops_stats;
/* CUDA only: fills `stats` (measures the copy bandwidth on the first call when
 * measure_bandwidth); never loads the module (a CUDA table means it is loaded). */
moire_status ops_cuda_stats(const moire_ops *ops, moire_ops_stats *stats,
                            bool measure_bandwidth);

/* The CPU backend's GEMM, for host code that is not a model forward (the classifier):
 * C[M,N] = alpha · A[M,K] · op(B), op(B) = Bᵀ for B [N,K] (b_transposed) or B for B [K,N].
 * Split over ops->n_threads by OpenMP with single-threaded OpenBLAS inside (see ops_cpu.c);
 * deterministic for a given thread count. */
void ops_cpu_gemm(const moire_ops *ops, bool b_transposed, int M, int N, int K, float alpha,
                  const float *A, int lda, const float *B, int ldb, float *C, int ldc);

#endif /* MOIRE_OPS_H */
