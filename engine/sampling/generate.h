/* generate.h — internals of generate.c exposed for the tests: the whole pipeline up to (not
 * including) the conversion to 8-bit images. */
#ifndef MOIRE_GENERATE_H
#define MOIRE_GENERATE_H

#include "moire.h"

/* The generation parameters with every default resolved against the model. */
typedef struct moire_resolved_params {
    moire_sampler sampler;
    moire_schedule schedule;
    int steps;
    float cfg_scale;
    moire_cfg_mode cfg_mode;     /* never DEFAULT                                    */
    int guided_channels;         /* channels CFG applies to                          */
    int class_id, uncond_class_id;
    int width, height;           /* pixels                                           */
    int model_h, model_w;        /* the model's input grid (latents or pixels)       */
} moire_resolved_params;

moire_status generate_resolve_params(const moire_model *model, const moire_generate_params *params,
                                     moire_resolved_params *out);

/* The level estimate DMCMC chains of this run use: CLASSIFIER (the model's noise-level
 * classifier) or RESIDUAL; AUTO resolved by the run's size. An explicit CLASSIFIER that
 * cannot be honoured is answered CLASSIFIER here; the run itself fails with the reason. */
moire_dmcmc_level generate_resolve_dmcmc_level(const moire_model *model,
                                               const moire_dmcmc_params *params,
                                               const moire_resolved_params *resolved);

/* Runs the sampler for images [first, first + count) of the batch and returns the final
 * model-space samples out[count, C, model_h, model_w]. */
moire_status generate_samples(moire_ctx *ctx, const moire_model *model,
                              const moire_generate_params *params, int first, int count,
                              const moire_callbacks *callbacks, float *out);

/* Model space → 8-bit image (pixel models: [-1,1] → 0..255; latent models: the approximate
 * linear latent→RGB map, upsampled to width×height). x: [C, model_h, model_w]. */
moire_image *generate_decode_to_image(const moire_model *model, const float *x, int model_h,
                                      int model_w, int width, int height);

#endif /* MOIRE_GENERATE_H */
