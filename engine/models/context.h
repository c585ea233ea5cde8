/* context.h — the moire_ctx internals shared by forward.c and generate.c. */
#ifndef MOIRE_CONTEXT_H
#define MOIRE_CONTEXT_H

#include "bind.h"
#include "moire.h"
#include "ops.h"

#include <stdatomic.h>

struct moire_ctx {
    moire_ctx_params params;
    moire_ops ops;          /* the backend's op table */
    moire_arena arena;      /* activations of one pass (ops.h); ops.arena points here */
    bind_slot bindings[BINDING_SLOTS]; /* models uploaded to the backend (bind.h)          */
    uint64_t bind_clock;
    atomic_int cancel_requested;
    moire_debug_tensor_fn debug_fn;
    void *debug_user_data;
    struct routing_recorder *routing; /* set by generate.c for a run with a routing map;
                                         the forward passes report to it (routing_map.h) */
};

/* Logs through the context's callback (no-op when none). */
void ctx_log(const moire_ctx *ctx, moire_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The DiT-MoE forward pass (forward.c): moire_forward() without argument checks. */
moire_status dit_forward(moire_ctx *ctx, const moire_model *model, int n, int h, int w,
                         const float *x, const float *t, const int32_t *class_ids,
                         float *out);

/* The same on backend arrays: x [n, C, h, w], t [n], class_ids [n] and out [n, Co, h, w] in
 * the context's backend memory, positions [T, D] from dit_positions_on_backend. Uploads and
 * downloads nothing, so a sampling step built on it can be recorded as a graph. */
moire_status dit_forward_on_backend(moire_ctx *ctx, const moire_model *model, int n, int h,
                                    int w, const float *x, const float *t,
                                    const int32_t *class_ids, const float *positions,
                                    float *out);

#endif /* MOIRE_CONTEXT_H */
