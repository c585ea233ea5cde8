/* dit_common.h — pieces shared by the DiT-MoE (forward.c) and EC-DiT (ecdit.c) forward
 * passes: on the host, patchify/unpatchify, the 256-d timestep frequencies and the 2-D
 * sin-cos positions (shared/reference/ditmoe.md §1.2); over the ops table, the final layer. */
#ifndef MOIRE_DIT_COMMON_H
#define MOIRE_DIT_COMMON_H

#include "moire.h"

#include <stddef.h>

/* ops.h includes model.h, which includes this file: the op table by name only. */
typedef struct moire_ops moire_ops;

#define DIT_TIMESTEP_FREQ_DIM 256

/* x[n, C, h, w] → patches[n·T, C·p·p], T = (h/p)·(w/p), token = row·(w/p) + col; each patch
 * flattened as (channel, row-in-patch, col-in-patch), like a conv weight [D, C, p, p]. */
void dit_patchify(float *patches, const float *x, int n, int C, int h, int w, int p);

/* head[n·T, p·p·Co] → out[n, Co, h, w]: head[i, r·gw + c, (pi·p + pj)·Co + ch] is
 * out[i, ch, r·p + pi, c·p + pj]. */
void dit_unpatchify(float *out, const float *head, int n, int Co, int h, int w, int p);

/* t[n] → out[n, 256]: [cos(t·f_i), sin(t·f_i)], f_i = exp(−ln(10000)·i/128), cos first. */
void dit_timestep_frequencies(float *out, const float *t, int n);

/* pos[T, D] for a gh × gw grid: the checkpoint's table (stored, may be NULL) on the trained
 * grid — bit fidelity with the official code — else recomputed, MAE convention: channels
 * [0, D/2) encode the column, [D/2, D) the row, each [sin(p·ω), cos(p·ω)], ω_i = 10000^(−i/(D/4)). */
void dit_positions(float *pos, const float *stored, int trained_grid, int gh, int gw, int D);

/* tokens[n, T, D] += pos[T, D] */
void dit_add_positions(float *tokens, const float *pos, int n, int T, int D);

/* The adaLN final layer both families end with: modulation[n, 2D] = Linear(cond_act) as
 * (shift, scale), then head[n·T, head_dim] = Linear(LayerNorm(tokens)·(1 + scale) + shift).
 * tokens[n·T, D]; `modulation` and `normed[n·T, D]` are scratch; buffers are the ops'. */
moire_status dit_final_layer(const moire_ops *ops, float *head, float *normed, float *modulation,
                             const float *tokens, const float *cond_act,
                             const float *adaLN_weight, const float *adaLN_bias,
                             const float *linear_weight, const float *linear_bias, int n, int T,
                             int D, int head_dim, float eps);

#endif /* MOIRE_DIT_COMMON_H */
