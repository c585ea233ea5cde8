/* dit_common.h — pieces shared by the DiT-MoE (forward.c) and EC-DiT (ecdit.c) forward
 * passes: on the host, patchify/unpatchify, the 256-d timestep frequencies and the 2-D
 * sin-cos positions (shared/reference/ditmoe.md §1.2); over the ops table, the embedding
 * trunk, the final layer, and the hand-over of inputs, outputs and debug tensors. */
#ifndef MOIRE_DIT_COMMON_H
#define MOIRE_DIT_COMMON_H

#include "moire.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct moire_ops moire_ops;
typedef struct moire_tensor moire_tensor;
typedef struct moire_arena moire_arena;
typedef struct model_bound model_bound;

#include "dit_layout.h"

/* pos[T, D] for a gh × gw grid: the checkpoint's table (stored, may be NULL) on the trained
 * grid — bit fidelity with the official code — else recomputed, MAE convention: channels
 * [0, D/2) encode the column, [D/2, D) the row, each [sin(p·ω), cos(p·ω)], ω_i = 10000^(−i/(D/4)). */
void dit_positions(float *pos, const float *stored, int trained_grid, int gh, int gw, int D);

/* tokens[n, T, D] += pos[T, D] */
void dit_add_positions(float *tokens, const float *pos, int n, int T, int D);

/* ---- over the ops table (buffers in the backend's memory) ---- */

/* Takes `count` elements of `size` bytes from the context's arena; on failure sets *status
 * (once) and returns NULL, so a forward can take all its buffers and check once. */
void *dit_take(moire_arena *arena, size_t count, size_t size, moire_status *status);

/* Uploads a host array to a backend buffer (*status on failure; nothing after a failure). */
void dit_upload(const moire_ops *ops, void *dst, const void *src, size_t bytes,
                moire_status *status);

/* The trunk both families start with: tokens[n·T, D] = patch embedding of x[n, C, h, w]
 * + positions; cond[n, D] = MLP(freq(t[n])). `t_hidden` [n, D] is scratch. x and t are host
 * arrays when device_positions is NULL; otherwise they are backend arrays and
 * device_positions[T, D] the positions of this size (dit_positions_on_backend), and nothing
 * is uploaded (a step that can be recorded as a graph). */
moire_status dit_embed(const moire_ops *ops, const moire_model_config *cfg,
                       const model_bound *mb, const float *pos_embed_host, int n, int h, int w,
                       const float *x, const float *t, const float *device_positions,
                       float *tokens, float *cond, float *t_hidden, moire_ctx *debug_ctx);

/* The positions [T, D] of an h × w input in backend memory (ops->mem_free it), for
 * dit_embed's backend form; NULL + error_fail on failure. */
float *dit_positions_on_backend(const moire_ops *ops, const moire_model_config *cfg,
                                const float *pos_embed_host, int h, int w);

/* The adaLN final layer both families end with: modulation[n, 2D] = Linear(cond_act) as
 * (shift, scale), then head[n·T, head_dim] = Linear(LayerNorm(tokens)·(1 + scale) + shift).
 * tokens[n·T, D]; `modulation` and `normed[n·T, D]` are scratch. */
moire_status dit_final_layer(const moire_ops *ops, float *head, float *normed, float *modulation,
                             const float *tokens, const float *cond_act,
                             const moire_tensor *adaLN_weight, const moire_tensor *adaLN_bias,
                             const moire_tensor *linear_weight, const moire_tensor *linear_bias,
                             int n, int T, int D, int head_dim, float eps);

/* head[n·T, p·p·Co] (backend) → out[n, Co, h, w]: on the host (the forward's one
 * download), or in backend memory when out_on_backend. */
moire_status dit_output(moire_ctx *ctx, const float *head, int n, int Co, int h, int w, int p,
                        float *out, bool out_on_backend);

/* Hands a backend tensor of floats to the context's debug callback (a host copy on device
 * backends; nothing when no callback is set). */
void dit_emit(const moire_ctx *ctx, const char *name, int layer, const float *data, int ndim,
              int64_t d0, int64_t d1, int64_t d2);
/* The same for int32 data, handed over as floats. */
void dit_emit_ids(const moire_ctx *ctx, const char *name, int layer, const int32_t *ids,
                  int ndim, int64_t d0, int64_t d1);

/* A host copy of `bytes` of a backend buffer (free() it), or NULL + *status. */
void *dit_download_copy(const moire_ops *ops, const void *src, size_t bytes,
                        moire_status *status);

#endif /* MOIRE_DIT_COMMON_H */
