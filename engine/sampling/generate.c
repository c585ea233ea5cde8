/* generate.c — moire_generate(): from a prompt and settings to finished 8-bit images.
 *
 * It resolves defaults against the model, turns the prompt into conditioning, wraps the
 * forward pass as the classifier-free-guided model function the samplers call (conditional
 * and unconditional halves in one batched forward), converts init images and masks into
 * model space, reports progress and previews, and converts the samples into images.
 *
 * Latent-space models (DiT-MoE's SD-VAE latents) are decoded with the SD-VAE when
 * params->vae is set (vae.c; init images are encoded with it). Without one, and for per-step
 * previews, a fixed linear latent→RGB map is used; it gives recognisable colours and layout
 * but not the real detail, and moire_generate logs a warning saying so.
 */
#include "context.h"
#include "dmcmc.h"
#include "ecdit.h"
#include "generate.h"
#include "internal.h"
#include "memory_estimate.h"
#include "model.h"
#include "routing_map.h"
#include "sampler.h"
#include "vae.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Images are made in chunks of this many so memory stays bounded for big batches. */
#define GENERATE_CHUNK 8
#define GENERATE_MAX_BATCH 1000
#define GENERATE_MAX_SIDE 8192
/* Latent-space models work on SD-VAE latents, 8 pixels per latent pixel. */
#define LATENT_DOWNSCALE 8

/* The commonly used approximate SD latent → RGB matrix (rows: latent channels 0-3). */
static const float latent_to_rgb[4][3] = {
    {0.298f, 0.207f, 0.208f},
    {0.187f, 0.286f, 0.173f},
    {-0.158f, 0.189f, 0.264f},
    {-0.184f, -0.271f, -0.473f},
};

moire_generate_params moire_generate_params_default(void)
{
    moire_generate_params params;
    memset(&params, 0, sizeof params);
    params.class_id = -1;
    params.seed = 42;
    params.steps = 0;
    params.cfg_scale = -1.0f;
    params.cfg_mode = MOIRE_CFG_DEFAULT;
    params.sampler = MOIRE_SAMPLER_DEFAULT;
    params.schedule = MOIRE_SCHEDULE_DEFAULT;
    params.batch_count = 1;
    params.strength = 0.75f;
    return params;
}

static int scale_of(const moire_model *model)
{
    return model->config.space == MOIRE_SPACE_LATENT ? LATENT_DOWNSCALE : 1;
}

moire_status generate_resolve_params(const moire_model *model, const moire_generate_params *params,
                                     moire_resolved_params *out)
{
    const moire_model_config *cfg = &model->config;
    memset(out, 0, sizeof *out);

    moire_sampler default_sampler;
    int default_steps;
    float default_cfg;
    moire_model_get_defaults(model, &default_sampler, &default_steps, &default_cfg);
    out->sampler = params->sampler == MOIRE_SAMPLER_DEFAULT ? default_sampler : params->sampler;
    if ((int)out->sampler < 0 || out->sampler >= MOIRE_SAMPLER_COUNT_)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "unknown sampler %d", (int)out->sampler);
    out->schedule = params->schedule == MOIRE_SCHEDULE_DEFAULT ? MOIRE_SCHEDULE_UNIFORM
                                                               : params->schedule;
    if ((int)out->schedule < 0 || out->schedule >= MOIRE_SCHEDULE_COUNT_)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "unknown schedule %d", (int)out->schedule);
    out->steps = params->steps > 0 ? params->steps : default_steps;
    if (params->steps < 0 || out->steps > 10000)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "steps %d is out of range: use 1..10000 (0 = the model default, %d)",
                          params->steps, default_steps);
    if (out->sampler == MOIRE_SAMPLER_DMCMC) /* its steps are the integrator's */
        out->steps = params->dmcmc ? params->dmcmc->integrator_steps
                                   : moire_dmcmc_params_default().integrator_steps;
    out->cfg_scale = params->cfg_scale < 0.0f ? default_cfg : params->cfg_scale;
    if (!isfinite(params->cfg_scale) || out->cfg_scale > 100.0f)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "CFG scale %g is out of range: use 0..100 (1 = no guidance)",
                          (double)params->cfg_scale);

    out->cfg_mode = params->cfg_mode;
    if (out->cfg_mode == MOIRE_CFG_DEFAULT)
        out->cfg_mode = cfg->objective == MOIRE_OBJECTIVE_DDPM_EPS ? MOIRE_CFG_FIRST_THREE
                                                                   : MOIRE_CFG_ALL_CHANNELS;
    if (out->cfg_mode != MOIRE_CFG_FIRST_THREE && out->cfg_mode != MOIRE_CFG_ALL_CHANNELS)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "unknown CFG mode %d", (int)params->cfg_mode);
    out->guided_channels = out->cfg_mode == MOIRE_CFG_FIRST_THREE && cfg->in_channels > 3
                               ? 3
                               : cfg->in_channels;

    /* Conditioning. Text models (EC-DiT) take the prompt and the negative prompt as they are
       (run_chunk encodes them; the empty prompt is the unconditional one); class models
       resolve them to class ids. */
    if (model->family == MOIRE_FAMILY_EC_DIT) {
        if (params->class_id >= 0)
            return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                              "model %s is text-conditioned: give a prompt, not a class number",
                              model->name);
    } else if (params->class_id >= 0) {
        if (params->class_id >= cfg->num_classes)
            return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                              "class %d is out of range: this model has classes 0..%d",
                              params->class_id, cfg->num_classes - 1);
        out->class_id = params->class_id;
    } else if (params->prompt && params->prompt[0]) {
        moire_status status = moire_model_resolve_class(model, params->prompt, &out->class_id);
        if (status != MOIRE_OK)
            return status;
    } else {
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "no prompt: give a prompt (a class name of this model) or a class "
                          "number");
    }
    out->uncond_class_id = cfg->num_classes; /* the null class */
    if (model->family != MOIRE_FAMILY_EC_DIT && params->negative_prompt &&
        params->negative_prompt[0]) {
        moire_status status =
            moire_model_resolve_class(model, params->negative_prompt, &out->uncond_class_id);
        if (status != MOIRE_OK) {
            moire_error_prefix("negative prompt");
            return status;
        }
    }

    /* Size: pixels for the user, the model grid for the sampler. */
    const int scale = scale_of(model);
    out->width = params->width > 0 ? params->width : cfg->input_size * scale;
    out->height = params->height > 0 ? params->height : cfg->input_size * scale;
    const int multiple = cfg->patch_size * scale;
    if (params->width < 0 || params->height < 0 || out->width > GENERATE_MAX_SIDE ||
        out->height > GENERATE_MAX_SIDE)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "size %dx%d is out of range: use 1..%d pixels per side", params->width,
                          params->height, GENERATE_MAX_SIDE);
    if (out->width % multiple || out->height % multiple)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "size %dx%d is not a multiple of %d: this model needs width and height "
                          "divisible by %d (e.g. %dx%d)",
                          out->width, out->height, multiple, multiple,
                          (out->width / multiple + 1) * multiple,
                          (out->height / multiple + 1) * multiple);
    out->model_w = out->width / scale;
    out->model_h = out->height / scale;

    if (params->batch_count < 1 || params->batch_count > GENERATE_MAX_BATCH)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "batch count %d is out of range (1..%d)",
                          params->batch_count, GENERATE_MAX_BATCH);
    if (params->mask && !params->init_image)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "a mask needs an init image (inpainting keeps the unmasked part of it)");
    if (params->init_image) {
        if (!(params->strength > 0.0f && params->strength <= 1.0f))
            return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                              "strength %g is out of range: use a value in (0, 1]",
                              (double)params->strength);
    }
    if (!(params->eta >= 0.0f && params->eta <= 1.0f))
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "eta %g is out of range (0..1)",
                          (double)params->eta);
    return MOIRE_OK;
}

/* ---- the guided model function ------------------------------------------------------- */

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

static moire_status guided_model_call(void *user_data, const float *x_in, const float *t,
                                      float *out)
{
    guided_model *g = user_data;
    const moire_model_config *cfg = &g->model->config;
    const size_t in_size = (size_t)cfg->in_channels * g->h * g->w;
    const size_t out_size = (size_t)cfg->out_channels * g->h * g->w;
    const bool guided = g->resolved->cfg_scale != 1.0f;
    const int n = g->n, batch = guided ? 2 * n : n;

    memcpy(g->x2, x_in, n * in_size * sizeof(float));
    memcpy(g->t2, t, n * sizeof(float));
    for (int i = 0; i < n; i++)
        g->y2[i] = g->resolved->class_id;
    if (guided) {
        memcpy(g->x2 + n * in_size, x_in, n * in_size * sizeof(float));
        memcpy(g->t2 + n, t, n * sizeof(float));
        for (int i = 0; i < n; i++)
            g->y2[n + i] = g->resolved->uncond_class_id;
    }
    g->nfe++;
    if (g->ctx->routing)
        routing_recorder_count_evaluation(g->ctx->routing);
    moire_status status = g->text ? ecdit_forward(g->ctx, g->model, batch, g->h, g->w, g->x2,
                                                  g->t2, g->text, g->prompt_of, g->out2)
                                  : dit_forward(g->ctx, g->model, batch, g->h, g->w, g->x2,
                                                g->t2, g->y2, g->out2);
    if (status != MOIRE_OK)
        return status;
    /* a NaN or an infinity here (damaged weights, or finite ones so large they overflow)
       would end as a garbage image with exit status 0: stop with the model's name instead */
    status = numeric_check_finite(g->out2, (size_t)batch * out_size, g->model->name,
                                  "the model's output");
    if (status != MOIRE_OK)
        return status;

    memcpy(out, g->out2, n * out_size * sizeof(float));
    if (guided) {
        /* out = uncond + s·(cond − uncond) on the guided channels; the rest (variance, and
         * channel 3 in the official DDPM mode) come from the conditional half. */
        const float s = g->resolved->cfg_scale;
        const size_t plane = (size_t)g->h * g->w;
        for (int i = 0; i < n; i++)
            for (int ch = 0; ch < g->resolved->guided_channels; ch++) {
                float *o = out + i * out_size + ch * plane;
                const float *u = g->out2 + (n + i) * out_size + ch * plane;
                for (size_t j = 0; j < plane; j++)
                    o[j] = u[j] + s * (o[j] - u[j]);
            }
    }
    return MOIRE_OK;
}

/* The guided model on backend arrays (sampler.h's device_model): x_in [n, C, h, w], t [n]
 * and out [n, Co, h, w] live in the context's backend, and so does everything here — the
 * CFG batch, the forward and the guidance — so the sampler can record the whole step as one
 * graph. The CPU table runs the same ops on host memory, with the same numbers as
 * guided_model_call. The per-step finiteness check of guided_model_call would need a
 * download; here the finished sample is checked instead (decode_result). */
static moire_status guided_model_call_on_backend(void *user_data, const float *x_in,
                                                 const float *t, float *out)
{
    guided_model *g = user_data;
    const moire_ops *ops = &g->ctx->ops;
    const moire_model_config *cfg = &g->model->config;
    const int64_t in_size = (int64_t)cfg->in_channels * g->h * g->w;
    const int64_t out_size = (int64_t)cfg->out_channels * g->h * g->w;
    const bool guided = g->resolved->cfg_scale != 1.0f;
    const int n = g->n, batch = guided ? 2 * n : n;
    moire_status status = MOIRE_OK;
    for (int half = 0; half < (guided ? 2 : 1) && status == MOIRE_OK; half++) {
        status = ops->copy_2d(ops, g->dev_x2 + half * n * in_size, 0, x_in, 0, 1, n * in_size);
        if (status == MOIRE_OK)
            status = ops->copy_2d(ops, g->dev_t2 + half * n, 0, t, 0, 1, n);
    }
    g->nfe++;
    if (status == MOIRE_OK)
        status = g->text ? ecdit_forward_on_backend(g->ctx, g->model, batch, g->h, g->w,
                                                    g->dev_x2, g->dev_t2, g->text, g->prompt_of,
                                                    g->dev_positions, g->dev_out2)
                         : dit_forward_on_backend(g->ctx, g->model, batch, g->h, g->w,
                                                  g->dev_x2, g->dev_t2, g->dev_y2,
                                                  g->dev_positions, g->dev_out2);
    /* out = uncond + s·(cond − uncond) on the guided channels, as guided_model_call */
    if (status == MOIRE_OK)
        status = ops->guidance_combine(
            ops, out, g->dev_out2, n, out_size,
            guided ? (int64_t)g->resolved->guided_channels * g->h * g->w : 0,
            g->resolved->cfg_scale);
    return status;
}

static void guided_model_release_backend(guided_model *g)
{
    if (!g->ctx)
        return;
    const moire_ops *ops = &g->ctx->ops;
    void *bufs[] = {g->dev_x2, g->dev_t2, g->dev_out2, g->dev_positions, g->dev_y2};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        if (bufs[i])
            ops->mem_free(ops, bufs[i]);
    g->dev_x2 = g->dev_t2 = g->dev_out2 = g->dev_positions = NULL;
    g->dev_y2 = NULL;
}

/* Allocates the backend batch, uploads the class ids and the position table (once per
 * chunk; the steps then upload nothing). */
static moire_status guided_model_bind_backend(guided_model *g)
{
    const moire_ops *ops = &g->ctx->ops;
    const moire_model_config *cfg = &g->model->config;
    const size_t in_size = (size_t)cfg->in_channels * g->h * g->w;
    const size_t out_size = (size_t)cfg->out_channels * g->h * g->w;
    const size_t batch = 2 * (size_t)g->n;
    g->dev_x2 = ops->mem_alloc(ops, batch * in_size * sizeof(float));
    g->dev_t2 = g->dev_x2 ? ops->mem_alloc(ops, batch * sizeof(float)) : NULL;
    g->dev_out2 = g->dev_t2 ? ops->mem_alloc(ops, batch * out_size * sizeof(float)) : NULL;
    g->dev_y2 = g->dev_out2 ? ops->mem_alloc(ops, batch * sizeof(int32_t)) : NULL;
    const float *pos_embed = g->text ? g->model->ecdit->weights.pos_embed
                                     : g->model->weights.pos_embed;
    g->dev_positions = g->dev_y2 ? dit_positions_on_backend(ops, cfg, pos_embed, g->h, g->w)
                                 : NULL;
    moire_status status = g->dev_positions ? MOIRE_OK : MOIRE_ERROR_OUT_OF_MEMORY;
    if (status == MOIRE_OK && !g->text) {
        for (int i = 0; i < g->n; i++) {
            g->y2[i] = g->resolved->class_id;
            g->y2[g->n + i] = g->resolved->uncond_class_id;
        }
        status = ops->upload(ops, g->dev_y2, g->y2, batch * sizeof(int32_t));
    }
    if (status != MOIRE_OK)
        guided_model_release_backend(g);
    return status;
}

/* ---- image ↔ model space -------------------------------------------------------------- */

/* Bilinear sample of channel `ch` of an 8-bit image at continuous pixel coordinates
 * (pixel centres at integer + 0.5), clamped at the border; result in [0, 1]. */
static float sample_bilinear(const moire_image *img, int ch, float fx, float fy)
{
    float x = fx - 0.5f, y = fy - 0.5f;
    int x0 = (int)floorf(x), y0 = (int)floorf(y);
    float ax = x - x0, ay = y - y0;
    int x1 = x0 + 1, y1 = y0 + 1;
    x0 = x0 < 0 ? 0 : (x0 >= img->width ? img->width - 1 : x0);
    x1 = x1 < 0 ? 0 : (x1 >= img->width ? img->width - 1 : x1);
    y0 = y0 < 0 ? 0 : (y0 >= img->height ? img->height - 1 : y0);
    y1 = y1 < 0 ? 0 : (y1 >= img->height ? img->height - 1 : y1);
    const int c = img->channels;
#define PX(xx, yy) (img->pixels[((size_t)(yy) * img->width + (xx)) * c + ch] / 255.0f)
    return (1 - ay) * ((1 - ax) * PX(x0, y0) + ax * PX(x1, y0)) +
           ay * ((1 - ax) * PX(x0, y1) + ax * PX(x1, y1));
#undef PX
}

/* Mean of channel `ch` over the image area that maps to cell (gx, gy) of a gw × gh grid:
 * area averaging, so downscaling a mask or image does not alias. Result in [0, 1]. */
static float sample_area(const moire_image *img, int ch, int gx, int gy, int gw, int gh)
{
    const float sx = (float)img->width / gw, sy = (float)img->height / gh;
    const int steps = 4; /* 4×4 bilinear taps per cell */
    float sum = 0.0f;
    for (int j = 0; j < steps; j++)
        for (int i = 0; i < steps; i++)
            sum += sample_bilinear(img, ch, (gx + (i + 0.5f) / steps) * sx,
                                   (gy + (j + 0.5f) / steps) * sy);
    return sum / (steps * steps);
}

/* RGB value of image pixel area (gx, gy) in [-1, 1] for channel rgb (0..2); gray images
 * repeat their one channel; alpha is composited over mid-gray for models without alpha. */
static float image_channel(const moire_image *img, int rgb, int gx, int gy, int gw, int gh,
                           bool model_has_alpha)
{
    int src = img->channels >= 3 ? rgb : 0;
    float v = sample_area(img, src, gx, gy, gw, gh);
    if (!model_has_alpha && (img->channels == 4 || img->channels == 2)) {
        float a = sample_area(img, img->channels - 1, gx, gy, gw, gh);
        v = a * v + (1 - a) * 0.5f;
    }
    return 2.0f * v - 1.0f;
}

/* Converts the init image into model space: x[C, h, w]. Pixel models take the image
 * directly; latent models go through the SD-VAE encoder when one is given (the image is
 * area-resampled to the VAE's f·h × f·w grid first), otherwise they get the least-squares
 * inverse of the latent→RGB preview map applied to the image averaged over 8×8 blocks. */
static moire_status encode_image(moire_ctx *ctx, const moire_model *model, const moire_vae *vae,
                                 const moire_image *img, float *x, int h, int w)
{
    const moire_model_config *cfg = &model->config;
    const size_t plane = (size_t)h * w;
    if (vae && cfg->space == MOIRE_SPACE_LATENT) {
        const moire_vae_info *info = moire_vae_get_info(vae);
        const int f = info->downscale, H = f * h, W = f * w, C = info->image_channels;
        const bool rgba = C == 4, img_alpha = img->channels == 4 || img->channels == 2;
        float *rgb = moire_malloc_array((size_t)C * H * W, sizeof(float));
        if (!rgb)
            return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory for the init image");
        for (int c = 0; c < C; c++) /* an RGBA VAE gets straight alpha (opaque without one) */
            for (int gy = 0; gy < H; gy++)
                for (int gx = 0; gx < W; gx++)
                    rgb[((size_t)c * H + gy) * W + gx] =
                        c < 3 ? image_channel(img, c, gx, gy, W, H, rgba)
                              : img_alpha ? 2.0f * sample_area(img, img->channels - 1, gx, gy,
                                                               W, H) - 1.0f
                                          : 1.0f;
        moire_status status = vae_encode_image(ctx, vae, H, W, rgb, x);
        free(rgb);
        if (status != MOIRE_OK)
            moire_error_prefix("init image");
        return status;
    }
    if (cfg->space == MOIRE_SPACE_PIXEL) {
        const bool has_alpha = cfg->in_channels == 4;
        for (int gy = 0; gy < h; gy++)
            for (int gx = 0; gx < w; gx++)
                for (int ch = 0; ch < cfg->in_channels; ch++) {
                    float v;
                    if (ch < 3)
                        v = image_channel(img, cfg->in_channels == 1 ? 0 : ch, gx, gy, w, h,
                                          has_alpha);
                    else
                        v = (img->channels == 4 || img->channels == 2)
                                ? 2.0f * sample_area(img, img->channels - 1, gx, gy, w, h) - 1.0f
                                : 1.0f;
                    x[ch * plane + (size_t)gy * w + gx] = v;
                }
        return MOIRE_OK;
    }
    /* pinv(M) for M = latent_to_rgb (4×3): latent = M (MᵀM)⁻¹ rgb. */
    double mtm[3][3] = {{0}};
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++)
            for (int l = 0; l < 4; l++)
                mtm[a][b] += (double)latent_to_rgb[l][a] * latent_to_rgb[l][b];
    double det = mtm[0][0] * (mtm[1][1] * mtm[2][2] - mtm[1][2] * mtm[2][1]) -
                 mtm[0][1] * (mtm[1][0] * mtm[2][2] - mtm[1][2] * mtm[2][0]) +
                 mtm[0][2] * (mtm[1][0] * mtm[2][1] - mtm[1][1] * mtm[2][0]);
    double inv[3][3];
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++) {
            int a1 = (b + 1) % 3, a2 = (b + 2) % 3, b1 = (a + 1) % 3, b2 = (a + 2) % 3;
            inv[a][b] = (mtm[a1][b1] * mtm[a2][b2] - mtm[a1][b2] * mtm[a2][b1]) / det;
        }
    for (int gy = 0; gy < h; gy++)
        for (int gx = 0; gx < w; gx++) {
            float rgb[3];
            for (int c = 0; c < 3; c++)
                rgb[c] = image_channel(img, c, gx, gy, w, h, false);
            for (int l = 0; l < cfg->in_channels; l++) {
                double v = 0.0;
                if (l < 4)
                    for (int a = 0; a < 3; a++)
                        for (int b = 0; b < 3; b++)
                            v += latent_to_rgb[l][a] * inv[a][b] * rgb[b];
                x[l * plane + (size_t)gy * w + gx] = (float)v;
            }
        }
    return MOIRE_OK;
}

static uint8_t to_byte(float v) /* v in [-1, 1] */
{
    float u = (v + 1.0f) * 127.5f + 0.5f;
    /* !(u >= 0) also catches NaN, whose conversion to an integer is undefined behaviour */
    return (uint8_t)(!(u >= 0.0f) ? 0.0f : (u > 255.0f ? 255.0f : u));
}

moire_image *generate_decode_to_image(const moire_model *model, const float *x, int model_h,
                                      int model_w, int width, int height)
{
    const moire_model_config *cfg = &model->config;
    const size_t plane = (size_t)model_h * model_w;
    if (cfg->space == MOIRE_SPACE_PIXEL) {
        int channels = cfg->in_channels >= 4 ? 4 : (cfg->in_channels == 3 ? 3 : 1);
        moire_image *img = moire_image_new(model_w, model_h, channels);
        if (!img)
            return NULL;
        for (size_t j = 0; j < plane; j++)
            for (int c = 0; c < channels; c++)
                img->pixels[j * channels + c] = to_byte(x[c * plane + j]);
        return img;
    }
    /* Latent: RGB at the latent grid, then bilinear upsampling to the requested size. */
    moire_image *small = moire_image_new(model_w, model_h, 3);
    moire_image *img = moire_image_new(width, height, 3);
    if (!small || !img) {
        moire_image_free(small), moire_image_free(img);
        return NULL;
    }
    for (size_t j = 0; j < plane; j++)
        for (int c = 0; c < 3; c++) {
            float v = 0.0f;
            for (int l = 0; l < 4 && l < cfg->in_channels; l++)
                v += latent_to_rgb[l][c] * x[l * plane + j];
            small->pixels[j * 3 + c] = to_byte(v);
        }
    for (int y = 0; y < height; y++)
        for (int xx = 0; xx < width; xx++)
            for (int c = 0; c < 3; c++) {
                float v = sample_bilinear(small, c, (xx + 0.5f) * model_w / width,
                                          (y + 0.5f) * model_h / height);
                img->pixels[((size_t)y * width + xx) * 3 + c] = (uint8_t)(v * 255.0f + 0.5f);
            }
    moire_image_free(small);
    return img;
}

/* The final image of a sample: through the SD-VAE decoder when one is given for a latent
 * model (tiled above MOIRE_VAE_TILE latent pixels; resampled to width × height when the VAE's
 * downscale is not the model's 8), otherwise generate_decode_to_image. x: [C, model_h, model_w]. */
static moire_status decode_result(moire_ctx *ctx, const moire_model *model, const moire_vae *vae,
                                  const float *x, const moire_resolved_params *resolved,
                                  moire_image **out)
{
    const int h = resolved->model_h, w = resolved->model_w;
    *out = NULL;
    moire_status finite = numeric_check_finite(x, (size_t)model->config.in_channels * h * w,
                                               model->name, "the sample");
    if (finite != MOIRE_OK)
        return finite;
    if (!vae || model->config.space != MOIRE_SPACE_LATENT) {
        *out = generate_decode_to_image(model, x, h, w, resolved->width, resolved->height);
        return *out ? MOIRE_OK
                    : moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory for the result image");
    }
    const moire_vae_info *info = moire_vae_get_info(vae);
    const int f = info->downscale, H = f * h, W = f * w, C = info->image_channels;
    const size_t plane = (size_t)H * W;
    float *rgb = moire_malloc_array(C * plane, sizeof(float)); /* RGB or RGBA (straight) */
    moire_image *img = moire_image_new(W, H, C);
    moire_status status = rgb && img ? MOIRE_OK
                                     : moire_fail(MOIRE_ERROR_OUT_OF_MEMORY,
                                                  "out of memory for the VAE decode of %dx%d", W, H);
    if (status == MOIRE_OK)
        status = vae_decode_image(ctx, vae, h, w, x, rgb, MOIRE_VAE_TILE, MOIRE_VAE_TILE_OVERLAP);
    if (status == MOIRE_OK)
        for (size_t j = 0; j < plane; j++)
            for (int c = 0; c < C; c++)
                img->pixels[j * C + c] = to_byte(rgb[c * plane + j]);
    free(rgb);
    if (status == MOIRE_OK && (W != resolved->width || H != resolved->height)) {
        moire_image *sized = moire_image_new(resolved->width, resolved->height, C);
        if (!sized)
            status = moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory for the result image");
        for (int y = 0; sized && y < sized->height; y++)
            for (int xx = 0; xx < sized->width; xx++)
                for (int c = 0; c < C; c++) {
                    float v = sample_bilinear(img, c, (xx + 0.5f) * W / sized->width,
                                              (y + 0.5f) * H / sized->height);
                    sized->pixels[((size_t)y * sized->width + xx) * C + c] =
                        (uint8_t)(v * 255.0f + 0.5f);
                }
        moire_image_free(img);
        img = sized;
    }
    if (status != MOIRE_OK) {
        moire_image_free(img);
        return status;
    }
    *out = img;
    return MOIRE_OK;
}

/* A VAE must produce the model's latent channels. */
static moire_status check_vae(const moire_model *model, const moire_vae *vae)
{
    if (!vae || model->config.space != MOIRE_SPACE_LATENT)
        return MOIRE_OK;
    const moire_vae_info *info = moire_vae_get_info(vae);
    if (info->latent_channels != model->config.in_channels)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "the VAE has %d latent channels but %s works on %d; use the SD KL-f8 "
                          "VAE (sd-vae-ft-mse) the model was trained with",
                          info->latent_channels, model->name, model->config.in_channels);
    return MOIRE_OK;
}

/* ---- the sampling run ------------------------------------------------------------------ */

typedef struct step_reporter {
    moire_ctx *ctx;
    const moire_model *model;
    const moire_callbacks *callbacks;
    const moire_resolved_params *resolved;
    int first, count, batch_count;
    int steps_done_before; /* steps of earlier chunks, for the time estimate */
    int total_steps;
    double started;
} step_reporter;

static bool on_step(void *user_data, int step, int step_count, int nfe, const float *x0)
{
    step_reporter *r = user_data;
    if (atomic_load(&r->ctx->cancel_requested))
        return false;
    const moire_callbacks *cb = r->callbacks;
    if (!cb)
        return true;
    moire_progress progress = {
        .image_index = r->first,
        .image_count = r->batch_count,
        .step = step,
        .step_count = step_count,
        .nfe = nfe,
        .elapsed_s = clock_now_seconds() - r->started,
        .remaining_s = -1.0,
    };
    const int done = r->steps_done_before + step;
    if (done > 0)
        progress.remaining_s = progress.elapsed_s / done * (r->total_steps - done);
    if (cb->preview && cb->preview_interval > 0 && x0 &&
        (step % cb->preview_interval == 0 || step == step_count)) {
        moire_image *img = generate_decode_to_image(r->model, x0, r->resolved->model_h,
                                                    r->resolved->model_w, r->resolved->width,
                                                    r->resolved->height);
        if (img) {
            cb->preview(&progress, img, cb->user_data);
            moire_image_free(img);
        }
    }
    if (cb->progress && !cb->progress(&progress, cb->user_data))
        return false;
    return !atomic_load(&r->ctx->cancel_requested);
}

/* What every sampling run of a chunk of images needs: the guided model function over a
 * batched forward, the text conditioning of text models, one seed per image. */
typedef struct chunk_setup {
    guided_model g;
    ecdit_text_cond text;
    uint64_t *seeds; /* [count] seed + first + i */
} chunk_setup;

static void chunk_setup_free(chunk_setup *c)
{
    guided_model_release_backend(&c->g);
    free(c->g.x2), free(c->g.t2), free(c->g.y2), free(c->g.out2), free(c->g.prompt_of);
    free(c->seeds);
    ecdit_text_cond_free(&c->text);
    memset(c, 0, sizeof *c);
}

static moire_status chunk_setup_init(moire_ctx *ctx, const moire_model *model,
                                     const moire_generate_params *params,
                                     const moire_resolved_params *resolved, int first, int count,
                                     chunk_setup *c)
{
    const moire_model_config *cfg = &model->config;
    const int h = resolved->model_h, w = resolved->model_w;
    const size_t in_size = (size_t)cfg->in_channels * h * w;
    const size_t out_size = (size_t)cfg->out_channels * h * w;
    const int batch = 2 * count;
    memset(c, 0, sizeof *c);
    guided_model *g = &c->g;
    *g = (guided_model){.ctx = ctx, .model = model, .resolved = resolved, .n = count, .h = h,
                        .w = w};
    g->x2 = moire_malloc_array(batch * in_size, sizeof(float));
    g->t2 = moire_malloc_array(batch, sizeof(float));
    g->y2 = moire_malloc_array(batch, sizeof(int32_t));
    g->out2 = moire_malloc_array(batch * out_size, sizeof(float));
    c->seeds = moire_malloc_array(count, sizeof(uint64_t));
    if (!g->x2 || !g->t2 || !g->y2 || !g->out2 || !c->seeds) {
        chunk_setup_free(c);
        return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY,
                          "out of memory for %d image(s) of %dx%d; use a smaller batch or size",
                          count, resolved->width, resolved->height);
    }
    for (int i = 0; i < count; i++)
        c->seeds[i] = params->seed + (uint64_t)(first + i);
    if (model->family == MOIRE_FAMILY_EC_DIT) {
        /* the text does not change between steps: encode the two prompts once */
        const char *texts[2] = {params->prompt ? params->prompt : "",
                                params->negative_prompt ? params->negative_prompt : ""};
        g->prompt_of = moire_malloc_array(batch, sizeof(int));
        moire_status status = g->prompt_of ? ecdit_text_encode(ctx, model, 2, texts, &c->text)
                                           : moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory");
        if (status != MOIRE_OK) {
            chunk_setup_free(c);
            return status;
        }
        for (int i = 0; i < batch; i++)
            g->prompt_of[i] = i < count ? 0 : 1;
        g->text = &c->text;
        if (first == 0 && (c->text.unknown_words || c->text.dropped_words))
            ctx_log(ctx, MOIRE_LOG_WARNING,
                    "%d word(s) of the prompts are not in the vocabulary of %s (they "
                    "count as [UNK]) and %d are past its %d-token limit (dropped)",
                          c->text.unknown_words, model->name, c->text.dropped_words,
                          model->config.text_max_tokens);
    }
    return MOIRE_OK;
}

static moire_status run_chunk(moire_ctx *ctx, const moire_model *model,
                              const moire_generate_params *params,
                              const moire_resolved_params *resolved, int first, int count,
                              step_reporter *reporter, float *out)
{
    const moire_model_config *cfg = &model->config;
    const int h = resolved->model_h, w = resolved->model_w;
    const size_t in_size = (size_t)cfg->in_channels * h * w;
    if (ctx->routing)
        routing_recorder_set_chunk(ctx->routing, first, count);
    chunk_setup setup;
    moire_status status = chunk_setup_init(ctx, model, params, resolved, first, count, &setup);
    if (status != MOIRE_OK)
        return status;
    float *init = params->init_image ? moire_malloc_array(count * in_size, sizeof(float)) : NULL;
    float *mask = params->mask ? moire_malloc_array((size_t)h * w, sizeof(float)) : NULL;
    if ((params->init_image && !init) || (params->mask && !mask)) {
        status = moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory for the init image");
        goto done;
    }
    if (init) {
        status = check_vae(model, params->vae);
        if (status == MOIRE_OK)
            status = encode_image(ctx, model, params->vae, params->init_image, init, h, w);
        if (status != MOIRE_OK)
            goto done;
        for (int i = 1; i < count; i++)
            memcpy(init + i * in_size, init, in_size * sizeof(float));
    }
    if (mask) {
        for (int gy = 0; gy < h; gy++)
            for (int gx = 0; gx < w; gx++)
                mask[(size_t)gy * w + gx] = sample_area(params->mask, 0, gx, gy, w, h);
    }

    moire_sample_request request = {
        .config = cfg,
        .sampler = resolved->sampler,
        .schedule = resolved->schedule,
        .steps = resolved->steps,
        .eta = params->eta,
        .n = count,
        .h = h,
        .w = w,
        .seeds = setup.seeds,
        .init = init,
        .strength = params->strength,
        .mask = mask,
        .model = guided_model_call,
        .model_user_data = &setup.g,
        .on_step = reporter ? on_step : NULL,
        .on_step_user_data = reporter,
        .x0_every = -1,
    };
    const moire_callbacks *cb = reporter ? reporter->callbacks : NULL;
    if (cb && cb->preview && cb->preview_interval > 0)
        request.x0_every = cb->preview_interval; /* the previews' steps only */
    /* The step on the context's backend (device model, graphs on CUDA) unless something
     * needs the host in the middle of a forward: the routing map and the debug callback. */
    if (!ctx->routing && !ctx->debug_fn) {
        status = guided_model_bind_backend(&setup.g);
        if (status != MOIRE_OK)
            goto done;
        request.ops = &ctx->ops;
        request.device_model = guided_model_call_on_backend;
    }
    status = moire_sample(&request, out, NULL);
done:
    free(init), free(mask);
    chunk_setup_free(&setup);
    return status;
}

/* ---- DMCMC chains and streams (docs/DMCMC.md) ------------------------------------------- */

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

/* DMCMC progress: one "step" per model evaluation of the current phase. */
static bool stream_progress(void *user_data, int done, int total)
{
    moire_stream *st = user_data;
    if (atomic_load(&st->ctx->cancel_requested))
        return false;
    if (!st->has_callbacks || !st->callbacks.progress)
        return true;
    moire_progress progress = {
        .image_index = st->first,
        .image_count = st->params.batch_count,
        .step = done,
        .step_count = total,
        .nfe = done,
        .elapsed_s = clock_now_seconds() - st->started,
        .remaining_s = -1.0,
    };
    if (!st->callbacks.progress(&progress, st->callbacks.user_data))
        return false;
    return !atomic_load(&st->ctx->cancel_requested);
}

/* The dmcmc level hook over the model's noise-level classifier. */
static moire_status classifier_level(void *user_data, const float *states, int n, double *sigma)
{
    return moire_classifier_estimate_sigma(user_data, states, n, sigma);
}

/* The classifier the chains read their levels from (NULL: the residual estimate), for the
 * run's params->level; an error when CLASSIFIER is asked for and cannot be honoured. */
static moire_status choose_level_classifier(const moire_model *model,
                                            const moire_dmcmc_params *params,
                                            const moire_resolved_params *resolved,
                                            const moire_classifier **out)
{
    *out = NULL;
    const moire_classifier *levels = model->level_classifier;
    const int size = levels ? moire_classifier_input_size(levels) : 0;
    const bool fits = levels && resolved->model_h == size && resolved->model_w == size;
    if (params->level == MOIRE_DMCMC_LEVEL_CLASSIFIER) {
        if (!levels)
            return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                              "the model %s has no noise-level classifier (MODEL-levels"
                              ".safetensors beside it): use the residual level estimate, or "
                              "train one with tools/train/train_level_classifier.py",
                              model->name);
        if (!fits)
            return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                              "the noise-level classifier of %s reads %d×%d states but this "
                              "run's are %d×%d: generate at the model's size, or use the "
                              "residual level estimate", model->name, size, size,
                              resolved->model_w, resolved->model_h);
    }
    if (params->level != MOIRE_DMCMC_LEVEL_RESIDUAL && fits)
        *out = levels;
    return MOIRE_OK;
}

moire_dmcmc_level generate_resolve_dmcmc_level(const moire_model *model,
                                               const moire_dmcmc_params *params,
                                               const moire_resolved_params *resolved)
{
    if (params->level != MOIRE_DMCMC_LEVEL_AUTO)
        return params->level;
    const moire_classifier *levels = NULL;
    return choose_level_classifier(model, params, resolved, &levels) == MOIRE_OK && levels
               ? MOIRE_DMCMC_LEVEL_CLASSIFIER
               : MOIRE_DMCMC_LEVEL_RESIDUAL;
}

/* Chains for images [first, first + count): from noise, or from `source` [count, C, h, w]
 * (model space) when it is given. */
static moire_status stream_open(moire_ctx *ctx, const moire_model *model,
                                const moire_generate_params *params,
                                const moire_resolved_params *resolved,
                                const moire_callbacks *callbacks, int first, int count,
                                const float *source, moire_stream **out)
{
    *out = NULL;
    if (params->init_image || params->mask)
        return moire_fail(MOIRE_ERROR_UNSUPPORTED,
                          "the dmcmc sampler makes new images from its chains; img2img and "
                          "inpainting need one of the other samplers (e.g. euler)");
    moire_stream *st = calloc(1, sizeof *st);
    if (!st)
        return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory for a DMCMC stream");
    st->ctx = ctx;
    st->model = model;
    st->params = *params;
    st->dmcmc = params->dmcmc ? *params->dmcmc : moire_dmcmc_params_default();
    st->params.dmcmc = &st->dmcmc;
    st->resolved = *resolved;
    if (callbacks) {
        st->callbacks = *callbacks;
        st->has_callbacks = true;
    }
    st->first = first;
    st->count = count;
    st->started = clock_now_seconds();
    const moire_model_config *cfg = &model->config;
    const size_t in_size = (size_t)cfg->in_channels * resolved->model_h * resolved->model_w;
    moire_status status = chunk_setup_init(ctx, model, &st->params, &st->resolved, first, count,
                                           &st->setup);
    if (status != MOIRE_OK) {
        free(st);
        return status;
    }
    st->setup.g.resolved = &st->resolved; /* the stream's own copy outlives the caller's */
    st->samples = moire_malloc_array(count * in_size, sizeof(float));
    if (!st->samples)
        status = moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory for a DMCMC stream");
    const moire_classifier *levels = NULL;
    if (status == MOIRE_OK)
        status = choose_level_classifier(model, &st->dmcmc, resolved, &levels);
    if (status == MOIRE_OK) {
        const moire_dmcmc_hooks hooks = {
            .progress = stream_progress,
            .progress_user_data = st,
            .level = levels ? classifier_level : NULL,
            /* estimate_sigma only reads the classifier: the cast drops no promise. */
            .level_user_data = (void *)levels,
        };
        status = source ? dmcmc_new_from_states(cfg, &st->dmcmc, count, resolved->model_h,
                                                resolved->model_w, st->setup.seeds, source,
                                                guided_model_call, &st->setup.g, &hooks,
                                                &st->chains)
                        : dmcmc_new_with_hooks(cfg, &st->dmcmc, count, resolved->model_h,
                                               resolved->model_w, st->setup.seeds,
                                               guided_model_call, &st->setup.g, &hooks,
                                               &st->chains);
    }
    if (status != MOIRE_OK) {
        moire_stream_free(st);
        return status;
    }
    *out = st;
    return MOIRE_OK;
}

/* One emission into st->samples. */
static moire_status stream_emit(moire_stream *st)
{
    st->phase++;
    return dmcmc_next(st->chains, st->samples);
}

moire_status moire_stream_new(moire_ctx *ctx, const moire_model *model,
                              const moire_generate_params *params,
                              const moire_callbacks *callbacks, moire_stream **out_stream)
{
    if (!ctx || !model || !params || !out_stream)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "moire_stream_new: a required pointer is NULL");
    *out_stream = NULL;
    moire_generate_params p = *params;
    p.sampler = MOIRE_SAMPLER_DMCMC;
    moire_resolved_params resolved;
    moire_status status = generate_resolve_params(model, &p, &resolved);
    if (status == MOIRE_OK)
        status = check_vae(model, p.vae);
    if (status != MOIRE_OK)
        return status;
    atomic_store(&ctx->cancel_requested, 0);
    return stream_open(ctx, model, &p, &resolved, callbacks, 0, p.batch_count, NULL, out_stream);
}

moire_stream_params moire_stream_params_default(void)
{
    moire_stream_params p = {.mode = MOIRE_STREAM_NEW_PICTURES, .source = NULL,
                             .variation_strength = 0.5f, .guard_distance = -1.0f};
    return p;
}

void moire_variation_settings(float strength, float *sigma, float *eta)
{
    const double t = fmin(fmax((double)strength, 0.0), 1.0);
    const double s = 0.05 * pow(60.0, t); /* 0.05 … 3 */
    if (sigma)
        *sigma = (float)s;
    if (eta) /* a = η/(2σ²) = strength/4; a floor keeps the step legal at strength 0 */
        *eta = (float)fmax(0.5 * t * s * s, 1e-5);
}

/* The plain new-pictures stream: remembers the most NFE any progress report gave, and
 * passes the report on. */
static bool plain_stream_progress(const moire_progress *progress, void *user_data)
{
    moire_stream *st = user_data;
    if (progress->nfe > st->progress_nfe)
        st->progress_nfe = progress->nfe;
    if (st->has_callbacks && st->callbacks.progress)
        return st->callbacks.progress(progress, st->callbacks.user_data);
    return true;
}

static void plain_stream_preview(const moire_progress *progress, const moire_image *preview,
                                 void *user_data)
{
    moire_stream *st = user_data;
    if (st->has_callbacks && st->callbacks.preview)
        st->callbacks.preview(progress, preview, st->callbacks.user_data);
}

/* One round of the plain new-pictures stream: a moire_generate run with the round's seeds. */
static moire_status plain_stream_next(moire_stream *st, moire_image ***out_images, int *out_count)
{
    moire_generate_params p = st->params;
    p.seed = st->params.seed + (uint64_t)st->rounds * (uint64_t)st->count;
    p.batch_count = st->count;
    moire_callbacks cb = {.progress = plain_stream_progress,
                          .preview = st->has_callbacks ? plain_stream_preview : NULL,
                          .preview_interval = st->has_callbacks ? st->callbacks.preview_interval : 0,
                          .user_data = st};
    st->progress_nfe = 0;
    moire_status status = moire_generate(st->ctx, st->model, &p, &cb, out_images, out_count);
    if (status != MOIRE_OK)
        return status;
    st->rounds++;
    st->plain_nfe = st->progress_nfe;
    st->plain_nfe_total += st->progress_nfe;
    return MOIRE_OK;
}

moire_status moire_stream_open(moire_ctx *ctx, const moire_model *model,
                               const moire_generate_params *params,
                               const moire_stream_params *stream_params,
                               const moire_callbacks *callbacks, moire_stream **out_stream)
{
    if (!ctx || !model || !params || !out_stream)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "moire_stream_open: a required pointer is NULL");
    *out_stream = NULL;
    const moire_stream_params sp = stream_params ? *stream_params : moire_stream_params_default();
    if (sp.mode == MOIRE_STREAM_CHAINS)
        return moire_stream_new(ctx, model, params, callbacks, out_stream);
    if (sp.mode != MOIRE_STREAM_NEW_PICTURES && sp.mode != MOIRE_STREAM_VARIATIONS)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "unknown stream mode %d", (int)sp.mode);
    if (params->init_image || params->mask)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "a stream makes new pictures: leave out the init image and mask (for "
                          "variations of a picture, give it as the stream's source)");
    if (!(sp.guard_distance <= 10.0f)) /* NaN too */
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "stream guard distance %g is out of range: use 0 (off) .. 10, or < 0 "
                          "for the default", (double)sp.guard_distance);
    moire_generate_params p = *params;
    moire_resolved_params resolved;
    moire_status status;

    if (sp.mode == MOIRE_STREAM_NEW_PICTURES) {
        status = generate_resolve_params(model, &p, &resolved);
        if (status != MOIRE_OK)
            return status;
        if (resolved.sampler != MOIRE_SAMPLER_DMCMC) {
            status = check_vae(model, p.vae);
            if (status != MOIRE_OK)
                return status;
            moire_stream *st = calloc(1, sizeof *st);
            if (!st)
                return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory for a stream");
            st->ctx = ctx;
            st->model = model;
            st->params = p;
            st->params.dmcmc = NULL;
            /* each round is a run of its own: a routing map per round would leak the last */
            st->params.routing_map = NULL;
            st->resolved = resolved;
            if (callbacks) {
                st->callbacks = *callbacks;
                st->has_callbacks = true;
            }
            st->count = p.batch_count;
            st->started = clock_now_seconds();
            st->mode = sp.mode;
            *out_stream = st;
            return MOIRE_OK;
        }
    } else if (!sp.source) {
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "a variations stream needs the picture to vary (its source)");
    } else if (!(sp.variation_strength >= 0.0f && sp.variation_strength <= 1.0f)) {
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT,
                          "variation strength %g is out of range: use 0..1",
                          (double)sp.variation_strength);
    }

    /* The chain modes. */
    moire_dmcmc_params dmcmc = p.dmcmc ? *p.dmcmc : moire_dmcmc_params_default();
    dmcmc.guard_distance = sp.guard_distance < 0.0f ? MOIRE_STREAM_GUARD_DEFAULT : sp.guard_distance;
    if (sp.mode == MOIRE_STREAM_VARIATIONS) {
        float sigma, eta;
        moire_variation_settings(sp.variation_strength, &sigma, &eta);
        dmcmc.eta = eta;
        dmcmc.sigma_init = sigma;
        dmcmc.sigma_low = fminf(dmcmc.sigma_low, 0.5f * sigma);
        dmcmc.sigma_high = fmaxf(dmcmc.sigma_high, 2.0f * sigma);
        dmcmc.kick_sigma = fminf(2.0f * sigma, dmcmc.sigma_high);
        dmcmc.burn_in = 0;
    }
    p.sampler = MOIRE_SAMPLER_DMCMC;
    p.dmcmc = &dmcmc;
    status = generate_resolve_params(model, &p, &resolved);
    if (status == MOIRE_OK)
        status = check_vae(model, p.vae);
    if (status != MOIRE_OK)
        return status;
    atomic_store(&ctx->cancel_requested, 0);
    float *source = NULL;
    if (sp.mode == MOIRE_STREAM_VARIATIONS) {
        const size_t in_size =
            (size_t)model->config.in_channels * resolved.model_h * resolved.model_w;
        source = moire_malloc_array((size_t)p.batch_count * in_size, sizeof(float));
        if (!source)
            return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory for the source picture");
        status = encode_image(ctx, model, p.vae, sp.source, source, resolved.model_h,
                              resolved.model_w);
        for (int i = 1; status == MOIRE_OK && i < p.batch_count; i++)
            memcpy(source + i * in_size, source, in_size * sizeof(float));
        if (status != MOIRE_OK) {
            free(source);
            return status;
        }
    }
    status = stream_open(ctx, model, &p, &resolved, callbacks, 0, p.batch_count, source,
                         out_stream);
    free(source);
    if (status == MOIRE_OK)
        (*out_stream)->mode = sp.mode;
    return status;
}

moire_status moire_stream_next(moire_stream *st, moire_image ***out_images, int *out_count)
{
    if (!st || !out_images || !out_count)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "moire_stream_next: NULL argument");
    *out_images = NULL;
    *out_count = 0;
    if (!st->chains)
        return plain_stream_next(st, out_images, out_count);
    atomic_store(&st->ctx->cancel_requested, 0);
    moire_status status = stream_emit(st);
    if (status != MOIRE_OK)
        return status;
    moire_image **images = calloc((size_t)st->count, sizeof *images);
    if (!images)
        return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory");
    const size_t in_size = (size_t)st->model->config.in_channels * st->resolved.model_h *
                           st->resolved.model_w;
    for (int i = 0; i < st->count && status == MOIRE_OK; i++)
        status = decode_result(st->ctx, st->model, st->params.vae, st->samples + i * in_size,
                               &st->resolved, &images[i]);
    if (status != MOIRE_OK) {
        moire_images_free(images, st->count);
        return status;
    }
    if (st->has_callbacks && st->callbacks.preview) {
        moire_progress progress = {.image_index = 0, .image_count = st->count,
                                   .step = 1, .step_count = 1,
                                   .nfe = dmcmc_get_stats(st->chains)->nfe_per_sample,
                                   .elapsed_s = clock_now_seconds() - st->started,
                                   .remaining_s = 0.0};
        st->callbacks.preview(&progress, images[0], st->callbacks.user_data);
    }
    *out_images = images;
    *out_count = st->count;
    return MOIRE_OK;
}

void moire_stream_get_info(const moire_stream *st, moire_stream_info *info)
{
    memset(info, 0, sizeof *info);
    if (st && !st->chains) { /* the plain new-pictures stream: nothing is paid once */
        info->emitted = st->rounds;
        info->nfe_per_image = st->plain_nfe;
        info->nfe_total = st->plain_nfe_total;
        return;
    }
    if (!st)
        return;
    const moire_dmcmc_stats *stats = dmcmc_get_stats(st->chains);
    info->emitted = stats->emitted;
    info->nfe_per_image = stats->nfe_per_sample;
    info->nfe_one_off = stats->nfe_burn_in;
    info->nfe_reseed = stats->nfe_reseed;
    info->reseeds = stats->reseeds;
    info->mean_start_sigma = stats->mean_start_sigma;
    info->level = stats->level_classifier ? MOIRE_DMCMC_LEVEL_CLASSIFIER
                                          : MOIRE_DMCMC_LEVEL_RESIDUAL;
    info->kicks = stats->kicks;
    info->nfe_total = stats->nfe_burn_in + stats->nfe_reseed +
                      stats->emitted * stats->nfe_per_sample;
    info->chains = true;
}

void moire_stream_free(moire_stream *st)
{
    if (!st)
        return;
    dmcmc_free(st->chains);
    chunk_setup_free(&st->setup);
    free(st->samples);
    free(st);
}

/* moire_generate with the dmcmc sampler: fresh chains for the chunk, one emission. */
static moire_status run_chunk_dmcmc(moire_ctx *ctx, const moire_model *model,
                                    const moire_generate_params *params,
                                    const moire_resolved_params *resolved, int first, int count,
                                    const moire_callbacks *callbacks, float *out)
{
    if (ctx->routing)
        routing_recorder_set_chunk(ctx->routing, first, count);
    moire_stream *st = NULL;
    moire_status status = stream_open(ctx, model, params, resolved, callbacks, first, count, NULL,
                                      &st);
    if (status == MOIRE_OK)
        status = stream_emit(st);
    if (status == MOIRE_OK)
        memcpy(out, st->samples,
               (size_t)count * model->config.in_channels * resolved->model_h * resolved->model_w *
                   sizeof(float));
    moire_stream_free(st);
    return status;
}

moire_status moire_generate_samples(moire_ctx *ctx, const moire_model *model,
                                    const moire_generate_params *params, int first, int count,
                                    const moire_callbacks *callbacks, float *out)
{
    if (!ctx || !model || !params || !out)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "a required pointer is NULL");
    moire_resolved_params resolved;
    moire_status status = generate_resolve_params(model, params, &resolved);
    if (status != MOIRE_OK)
        return status;
    atomic_store(&ctx->cancel_requested, 0);
    if (resolved.sampler == MOIRE_SAMPLER_DMCMC)
        return run_chunk_dmcmc(ctx, model, params, &resolved, first, count, callbacks, out);
    step_reporter reporter = {.ctx = ctx, .model = model, .callbacks = callbacks,
                              .resolved = &resolved, .first = first, .count = count,
                              .batch_count = count, .total_steps = resolved.steps,
                              .started = clock_now_seconds()};
    return run_chunk(ctx, model, params, &resolved, first, count, &reporter, out);
}

moire_status moire_generate(moire_ctx *ctx, const moire_model *model,
                            const moire_generate_params *params,
                            const moire_callbacks *callbacks, moire_image ***out_images,
                            int *out_count)
{
    if (!ctx || !model || !params || !out_images || !out_count)
        return moire_fail(MOIRE_ERROR_INVALID_ARGUMENT, "moire_generate: a required pointer is NULL");
    *out_images = NULL;
    *out_count = 0;
    moire_resolved_params resolved;
    moire_status status = generate_resolve_params(model, params, &resolved);
    if (status != MOIRE_OK)
        return status;
    atomic_store(&ctx->cancel_requested, 0);
    status = check_vae(model, params->vae);
    if (status != MOIRE_OK)
        return status;
    if (model->config.space == MOIRE_SPACE_LATENT && !params->vae)
        ctx_log(ctx, MOIRE_LOG_WARNING,
                "%s works in SD-VAE latent space; without the VAE decoder the image is an "
                "approximate colour preview of the latents",
                model->name);

    const moire_model_config *cfg = &model->config;
    const int batch = params->batch_count;
    const size_t in_size = (size_t)cfg->in_channels * resolved.model_h * resolved.model_w;
    const int chunk_max = batch < GENERATE_CHUNK ? batch : GENERATE_CHUNK;
    /* refuse a job that cannot fit before the first step (memory_estimate.c) */
    status = memory_estimate_check(ctx, model, chunk_max, resolved.width, resolved.height,
                                   resolved.model_h, resolved.model_w,
                                   resolved.cfg_scale != 1.0f, params->vae != NULL);
    if (status != MOIRE_OK)
        return status;
    float *samples = moire_malloc_array(chunk_max * in_size, sizeof(float));
    moire_image **images = calloc((size_t)batch, sizeof *images);
    if (!samples || !images) {
        free(samples), free(images);
        return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory for a batch of %d", batch);
    }
    step_reporter reporter = {.ctx = ctx, .model = model, .callbacks = callbacks,
                              .resolved = &resolved, .batch_count = batch,
                              .total_steps = resolved.steps * ((batch + chunk_max - 1) / chunk_max),
                              .started = clock_now_seconds()};
    /* The routing map (moire.h, "Routing maps"): the forward passes report to the recorder
       while it hangs on the context. */
    routing_recorder *recorder = NULL;
    if (params->routing_map) {
        *params->routing_map = NULL;
        recorder = routing_recorder_new(model, batch, resolved.model_h / cfg->patch_size,
                                        resolved.model_w / cfg->patch_size);
        if (!recorder) {
            free(samples), free(images);
            return moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory for the routing map");
        }
    }
    ctx->routing = recorder;
    for (int first = 0; first < batch && status == MOIRE_OK; first += chunk_max) {
        const int count = batch - first < chunk_max ? batch - first : chunk_max;
        reporter.first = first;
        reporter.count = count;
        status = resolved.sampler == MOIRE_SAMPLER_DMCMC
                     ? run_chunk_dmcmc(ctx, model, params, &resolved, first, count, callbacks,
                                       samples)
                     : run_chunk(ctx, model, params, &resolved, first, count, &reporter, samples);
        reporter.steps_done_before += resolved.steps;
        for (int i = 0; i < count && status == MOIRE_OK; i++)
            status = decode_result(ctx, model, params->vae, samples + i * in_size, &resolved,
                                   &images[first + i]);
    }
    free(samples);
    ctx->routing = NULL;
    if (recorder && status == MOIRE_OK) {
        *params->routing_map = routing_recorder_finish(recorder);
        if (!*params->routing_map)
            status = moire_fail(MOIRE_ERROR_OUT_OF_MEMORY, "out of memory for the routing map");
    } else {
        routing_recorder_free(recorder);
    }
    if (status != MOIRE_OK) {
        moire_images_free(images, batch);
        return status;
    }
    *out_images = images;
    *out_count = batch;
    return MOIRE_OK;
}

void moire_images_free(moire_image **images, int count)
{
    if (!images)
        return;
    for (int i = 0; i < count; i++)
        moire_image_free(images[i]);
    free(images);
}
