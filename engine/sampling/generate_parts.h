/* generate_parts.h — what generate.c, generate_image.c and generate_stream.c share (private
 * to those three files): the guided model function's batch, a chunk's sampling setup, the
 * stream object, and the functions each part lends the others. */
#ifndef MOIRE_GENERATE_PARTS_H
#define MOIRE_GENERATE_PARTS_H

#include "dmcmc.h"
#include "ecdit.h"
#include "generate.h"
#include "moire.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct guided_model {
    moire_ctx *ctx;
    const moire_model *model;
    const moire_resolved_params *resolved;
    int n, h, w;
    float *x2;        /* [2n, C, h, w]  the batched input                 */
    float *t2;        /* [2n]                                              */
    int32_t *y2;      /* [2n]          conditional then unconditional ids  */
    float *out2;      /* [2n, Co, h, w]                                    */
    int nfe;
    /* text models: prompt 0 = the prompt, 1 = the negative (or empty) one */
    const ecdit_text_cond *text;
    int *prompt_of;   /* [2n]          0 for the conditional half, then 1  */
    /* The same batch in the context's backend memory, for guided_model_call_on_backend
     * (NULL until guided_model_bind_backend). */
    float *dev_x2, *dev_t2, *dev_out2, *dev_positions;
    int32_t *dev_y2;
} guided_model;

/* What every sampling run of a chunk of images needs: the guided model function over a
 * batched forward, the text conditioning of text models, one seed per image. */
typedef struct chunk_setup {
    guided_model g;
    ecdit_text_cond text;
    uint64_t *seeds; /* [count] seed + first + i */
} chunk_setup;

struct moire_stream {
    moire_ctx *ctx;
    const moire_model *model;
    moire_generate_params params;
    moire_dmcmc_params dmcmc;
    moire_resolved_params resolved;
    moire_callbacks callbacks;
    bool has_callbacks;
    int first, count;        /* the chains are images [first, first + count) of the batch */
    chunk_setup setup;
    moire_dmcmc *chains;
    float *samples;          /* [count, C, h, w]                                          */
    double started;
    int phase;               /* 0 = burn-in, k = emission k                              */
    /* moire_stream_open's streams */
    moire_stream_mode mode;
    int rounds;              /* rounds emitted (the plain new-pictures stream)           */
    int plain_nfe;           /* model evaluations per image of its last round            */
    int plain_nfe_total;     /* … of all its rounds                                       */
    int progress_nfe;        /* scratch: the most NFE a progress report gave this round  */
};

/* ---- generate_image.c --------------------------------------------------------------------- */

/* The mean of channel `ch` of an 8-bit image over grid cell (gx, gy) of a gw×gh grid, in [0, 1]. */
float generate_sample_area(const moire_image *img, int ch, int gx, int gy, int gw, int gh);

/* An init image into model space x[C, h, w] (with the VAE for latent models when given). */
moire_status generate_encode_image(moire_ctx *ctx, const moire_model *model, const moire_vae *vae,
                                   const moire_image *img, float *x, int h, int w);

/* One finished model-space sample x[C, model_h, model_w] → *out, an image of the run's size. */
moire_status generate_decode_result(moire_ctx *ctx, const moire_model *model,
                                    const moire_vae *vae, const float *x,
                                    const moire_resolved_params *resolved, moire_image **out);

/* A VAE must produce the model's latent channels. */
moire_status generate_check_vae(const moire_model *model, const moire_vae *vae);

/* ---- generate.c: the DMCMC chains under a stream ------------------------------------------ */

moire_status generate_stream_open(moire_ctx *ctx, const moire_model *model,
                                  const moire_generate_params *params,
                                  const moire_resolved_params *resolved,
                                  const moire_callbacks *callbacks, int first, int count,
                                  const float *source, moire_stream **out);

moire_status generate_stream_emit(moire_stream *st);

#endif /* MOIRE_GENERATE_PARTS_H */
