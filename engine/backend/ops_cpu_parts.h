/* ops_cpu_parts.h — what the files of the CPU backend (ops_cpu.c, ops_cpu_common.c,
 * ops_cpu_ecdit.c, ops_cpu_image.c) share, private to them: the threading threshold, the op
 * counter, the helpers of ops_cpu_common.c, and the op entries the other parts lend the op
 * table of ops_cpu.c. */
#ifndef MOIRE_OPS_CPU_PARTS_H
#define MOIRE_OPS_CPU_PARTS_H

#include "ops.h"

#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* Below this many elements a loop runs on the calling thread: a parallel region costs
 * microseconds even when idle threads are ready, far more when they have to be woken. */
#define PARALLEL_MIN_WORK 32768

static inline float silu(float x)
{
    return x / (1.0f + expf(-x));
}

/* Every op entry counts itself (ops_cpu_calls): a model run on another backend must not
 * move this counter, which is how the tests prove that nothing fell back to the host. */
extern atomic_uint_fast64_t ops_cpu_call_count;
#define COUNT_CALL() atomic_fetch_add_explicit(&ops_cpu_call_count, 1, memory_order_relaxed)

/* ---- ops_cpu_common.c ------------------------------------------------------------------- */

/* The host array of a bound weight (NULL when absent). */
const float *ops_cpu_host_of(const moire_tensor *t);

/* Each of the `rows` rows of scores[rows, cols] becomes its softmax, in place. */
void ops_cpu_softmax_rows(const moire_ops *ops, float *scores, int rows, int cols);

/* Expert e of a stack on m gathered rows: out[m,D] = down(SiLU(gate(x)) ⊙ up(x)).
 * scratch holds 2·m·F floats. */
void ops_cpu_swiglu_rows(const moire_ops *ops, float *out, const float *x, int m, int D,
                         const moire_swiglu *mlp, int e, float *scratch);

/* The wider hidden size of two SwiGLU stacks (0 for an absent one). */
int ops_cpu_widest(const moire_swiglu *a, const moire_swiglu *b);

/* ---- ops_cpu_ecdit.c -------------------------------------------------------------------- */

moire_status ops_cpu_cross_attention(const moire_ops *ops, float *out, const float *q,
                                     int ldq, const float *k, const float *v, int ldkv,
                                     int Tq, int Tk, int H, int hd);
moire_status ops_cpu_router_expert_choice(const moire_ops *ops, float *scores,
                                          int32_t *tokens, float *gates, const float *h,
                                          const moire_tensor *wt, int n, int T, int group,
                                          int D, int E, float capacity_factor);
moire_status ops_cpu_moe_expert_choice(const moire_ops *ops, float *y, const float *h,
                                       int N, int D, const moire_swiglu *experts,
                                       const moire_swiglu *shared, int M,
                                       const int32_t *tokens, const float *gates);
moire_status ops_cpu_swiglu(const moire_ops *ops, float *y, const float *h, int T, int D,
                            const moire_swiglu *mlp);

/* ---- ops_cpu_image.c -------------------------------------------------------------------- */

moire_status ops_cpu_conv2d(const moire_ops *ops, float *y, const float *x,
                            const moire_tensor *wt, const moire_tensor *bt, int ci, int H,
                            int W, int co, int k, int stride, int pad_lo, int pad_hi);
moire_status ops_cpu_group_norm_stats(const moire_ops *ops, float *stats, const float *x,
                                      int C, int64_t HW, int G, float eps);
moire_status ops_cpu_group_norm_apply(const moire_ops *ops, float *y, const float *x,
                                      const float *stats, const moire_tensor *wt,
                                      const moire_tensor *bt, int C, int64_t HW, int G,
                                      bool with_silu);
moire_status ops_cpu_upsample_nearest2x(const moire_ops *ops, float *y, const float *x,
                                        int C, int H, int W);
moire_status ops_cpu_avgpool2(const moire_ops *ops, float *y, const float *x, int C, int H,
                              int W);

#endif /* MOIRE_OPS_CPU_PARTS_H */
