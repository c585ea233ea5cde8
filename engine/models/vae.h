/* vae.h — the SD-VAE internals generate.c uses: one image at a time, no argument checks and no
 * reset of the context's cancel flag (a cancel during generation must stop the decode too). */
#ifndef MOIRE_VAE_H
#define MOIRE_VAE_H

#include "moire.h"

/* latent [z, h, w] (model space) → rgb [3, h·f, w·f], f = downscale; tiled when tile > 0 and
 * the latent is larger than tile on a side. */
moire_status vae_decode_image(moire_ctx *ctx, const moire_vae *vae, int h, int w,
                              const float *latent, float *rgb, int tile, int overlap);
/* rgb [3, H, W] in [-1, 1] (H, W multiples of f) → latent [z, H/f, W/f] (model space). */
moire_status vae_encode_image(moire_ctx *ctx, const moire_vae *vae, int height, int width,
                              const float *rgb, float *latent);

#endif /* MOIRE_VAE_H */
