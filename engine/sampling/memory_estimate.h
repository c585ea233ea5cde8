/* memory_estimate.h — the memory a generation needs, checked before it starts (see
 * memory_estimate.c for the model of the allocations). */
#ifndef MOIRE_MEMORY_ESTIMATE_H
#define MOIRE_MEMORY_ESTIMATE_H

#include "moire.h"

#include <stdbool.h>

/* Bytes of working memory (beyond the loaded weights) for one chunk of n images of
 * width × height pixels on a model grid of model_h × model_w; guided = classifier-free
 * guidance (two forward rows per image); vae = decoded through an SD-VAE. */
double memory_estimate_bytes(const moire_model *model, int n, int width, int height,
                             int model_h, int model_w, bool guided, bool vae);

/* MOIRE_OK when the estimate fits the memory available to ctx's backend (or that is
 * unknown); otherwise MOIRE_ERROR_OUT_OF_MEMORY naming the need, what is available and the
 * largest size of the same shape that fits. */
moire_status memory_estimate_check(const moire_ctx *ctx, const moire_model *model,
                                   int n, int width, int height, int model_h,
                                   int model_w, bool guided, bool vae);

#endif /* MOIRE_MEMORY_ESTIMATE_H */
