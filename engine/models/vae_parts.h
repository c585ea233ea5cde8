/* vae_parts.h — what vae_load.c (loading and binding the SD-VAE's weights) and vae.c (the
 * decoder and encoder on the backend) share, private to those two files: the weight structs,
 * the limits, and the binding of the weights to the context's backend. */
#ifndef MOIRE_VAE_PARTS_H
#define MOIRE_VAE_PARTS_H

#include "moire.h"
#include "vae.h"

#include <stdbool.h>
#include <stdint.h>

#define VAE_MAX_RESNETS (8 + 1)     /* layers_per_block ≤ 8; the decoder has one more     */
#define VAE_GN_EPS 1e-6             /* GroupNorm ε of the KL-f8 autoencoder               */
#define VAE_MAX_SIDE 1024           /* latent pixels per side (8192 image pixels at f8)    */
#define VAE_MAX_CHANNELS 8192

/* ------------------------------------------------------------------------------------------
 * Weights
 * ---------------------------------------------------------------------------------------- */

typedef struct vae_conv {
    const float *weight; /* [co, ci, k, k]  (attention projections: [C, C] or [C, C, 1, 1]) */
    const float *bias;   /* [co]                                                            */
    int co, ci, k;
    int slot;            /* its weight and bias in a backend binding: tensors 2·slot, 2·slot+1 */
} vae_conv;

typedef struct vae_norm {
    const float *weight; /* [C] */
    const float *bias;   /* [C] */
    int channels;        /* C */
    int slot;            /* as vae_conv */
} vae_norm;

typedef struct vae_resnet {
    vae_norm norm1;      /* over ci                                                   */
    vae_conv conv1;      /* 3×3, ci → co                                              */
    vae_norm norm2;      /* over co                                                   */
    vae_conv conv2;      /* 3×3, co → co                                              */
    vae_conv shortcut;   /* 1×1 ci → co when ci ≠ co (conv_shortcut | nin_shortcut)    */
} vae_resnet;

typedef struct vae_attention {
    vae_norm norm;          /* group_norm | norm                                       */
    vae_conv q, k, v, proj; /* to_q … to_out.0 | query … proj_attn | q … proj_out       */
} vae_attention;

typedef struct vae_mid {
    vae_resnet resnet1, resnet2; /* mid_block.resnets.0/1 | mid.block_1/2 */
    vae_attention attn;          /* mid_block.attentions.0 | mid.attn_1   */
} vae_mid;

/* One resolution level, in execution order: encoder levels[0] is full resolution, decoder
 * levels[0] the lowest (diffusers up_blocks.0; LDM up.{levels−1}). */
typedef struct vae_level {
    vae_resnet resnets[VAE_MAX_RESNETS];
    int resnet_count;
    vae_conv resample; /* downsamplers.0.conv / upsamplers.0.conv; weight NULL at the last level */
} vae_level;

typedef struct vae_coder {
    vae_conv conv_in;
    vae_level levels[MOIRE_VAE_MAX_LEVELS];
    vae_mid mid;
    vae_norm norm_out; /* conv_norm_out | norm_out */
    vae_conv conv_out;
} vae_coder;

struct moire_vae {
    moire_vae_info info;
    vae_conv quant_conv;      /* 1×1, 2z → 2z (encoder side)  */
    vae_conv post_quant_conv; /* 1×1, z → z (decoder side)    */
    vae_coder encoder, decoder;
    st_file *file;
    float *arena;             /* converted F16/BF16 weights   */
    char *path;
    uint64_t serial;          /* the key of its bindings (bind.h) */
    int slot_count;           /* convolutions and norms, numbered by assign_slots */
};

/* The VAE's weights on the context's backend, uploaded on first use (bind.h): *out holds
 * tensors 2·slot (weight) and 2·slot + 1 (bias) of every numbered layer. vae_load.c. */
moire_status vae_bind(moire_ctx *ctx, const moire_vae *vae, const moire_tensor **out);

#endif /* MOIRE_VAE_PARTS_H */
